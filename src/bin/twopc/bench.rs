//! `twopc bench`: closed-loop load. C transactions are kept in flight,
//! pipelined K to a connection (a transaction answered is replaced at
//! once), for a number of transactions or a duration, at one concurrency
//! or at each of a curve's; the report gives throughput, latency
//! percentiles, outcome
//! counts and the coordinator's log syncs per transaction, and for the
//! processes of the cluster (its own with `--local`, or given with `--pid`)
//! CPU time and write system calls per committed transaction and the
//! coordinator's memory per transaction in flight. `--calibrate` measures
//! the physical floor of a transaction on this machine first. The report
//! ends with the performance targets this run can judge (`targets`).

mod calibrate;
mod procstat;
mod targets;

use crate::cluster::{ClusterOptions, LocalCluster};
use crate::commands::{build_request, EXIT_NO_DECISION, EXIT_USAGE};
use clap::Args;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use twopc::config::{ResourceKind, Runtime, VotePreference};
use twopc::protocol::{Decision, SubmitRequest};
use twopc::security::{ClientSecurity, SecurityArgs};
use twopc::Client;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Coordinator address HOST:PORT, or the members of a replicated coordinator group as HOST:PORT,HOST:PORT (the leader is found and followed); ignored with --local.
    #[arg(long, env = "TWOPC_COORDINATOR", default_value = "127.0.0.1:8080", value_parser = crate::coordinator_members)]
    pub coordinator: String,
    /// Start a throw-away local cluster with this many participants (votes:
    /// commit) and benchmark it.
    #[arg(long)]
    pub local: Option<usize>,
    /// With --local: the participants' resource, `vote` or `kv`. With `kv`
    /// and no --payload, every transaction adds 1 to a key of its client on
    /// every participant (no two clients touch the same key).
    #[arg(long, value_enum, default_value = "vote")]
    pub resource: ResourceKind,
    /// With --local: run the cluster without fsync (benchmark comparison only).
    #[arg(long)]
    pub unsafe_no_fsync: bool,
    /// Transactions in flight, spread over connections of at most
    /// --per-connection each (1..=10000).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Transactions in flight on one connection (pipelined, matched to
    /// their outcomes by request id), 1..=1024: C in flight use
    /// ceil(C / K) connections.
    #[arg(long, default_value_t = 16)]
    pub per_connection: usize,
    /// Run each of these concurrencies in turn (each for --duration or
    /// --transactions) on the same cluster, print the throughput curve and
    /// whether it never falls more than 10% below its peak at a higher
    /// concurrency. Replaces --concurrency.
    #[arg(long, value_delimiter = ',', value_name = "C1,C2,...")]
    pub curve: Option<Vec<usize>>,
    /// Transactions run before the measurement and left out of it. Default:
    /// with --local at 100 or more in flight, the coordinator's
    /// history_limit (10000), so that its memory growth is that of the
    /// transactions in flight, not of the history of ended ones filling
    /// up; else 0.
    #[arg(long)]
    pub warmup: Option<u64>,
    /// A report of an earlier run (`--json` output, a file) to judge the
    /// targets that compare two runs against: durable against
    /// --unsafe-no-fsync, --setsid against the same session, --resource kv
    /// against vote (at 64 in flight, other settings equal).
    #[arg(long, value_name = "FILE")]
    pub compare: Option<std::path::PathBuf>,
    /// Throughput of the minimal 2PC skeleton on this machine, as
    /// CONCURRENCY=TPS (comma-separated), to judge the target of 1.3x it
    /// at 64 and 256 in flight.
    #[arg(long, value_delimiter = ',', value_name = "C=TPS", value_parser = concurrency_tps)]
    pub skeleton_tps: Vec<(usize, f64)>,
    /// Stop after this many transactions.
    #[arg(long, conflicts_with = "duration")]
    pub transactions: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Transaction data (JSON).
    #[arg(long)]
    pub payload: Option<String>,
    /// Participants per transaction (comma-separated); all when omitted.
    #[arg(long, value_delimiter = ',')]
    pub participants: Option<Vec<String>>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// With --local: start each process of the cluster in a session of its
    /// own (setsid), as separately started services are, so the kernel
    /// schedules them as separate groups.
    #[arg(long, requires = "local")]
    pub setsid: bool,
    /// With --local: coordinator processes, 1 or a replicated group of 3
    /// or 5 (the clients follow its leader).
    #[arg(long, default_value_t = 1, requires = "local")]
    pub coordinators: usize,
    /// With --local: the async runtime of the cluster's processes
    /// (`runtime`); their configured default (current-thread) when omitted.
    #[arg(long, value_enum, requires = "local")]
    pub server_runtime: Option<Runtime>,
    /// First measure the physical floor of one transaction on this machine
    /// (two forced writes in sequence on the cluster's disk, plus two
    /// loopback round trips) and report the latency percentiles as
    /// multiples of it. With --coordinators 3 or 5, also the least a group
    /// adds: a forced write on a majority of members sharing this disk,
    /// against one alone.
    #[arg(long)]
    pub calibrate: bool,
    /// A process of a remote cluster to report CPU time and write system
    /// calls for, as NAME=PID (repeatable; the first is taken as the
    /// coordinator for the memory figure). With --local the cluster's own
    /// processes are reported.
    #[arg(long = "pid", value_name = "NAME=PID", value_parser = name_pid, conflicts_with = "local")]
    pub pids: Vec<(String, u32)>,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// A `NAME=PID` argument.
fn name_pid(s: &str) -> Result<(String, u32), String> {
    match s.split_once('=') {
        Some((name, pid)) if !name.is_empty() => match pid.parse::<u32>() {
            Ok(pid) if pid > 0 => Ok((name.to_string(), pid)),
            _ => Err(format!(
                "`{pid}` is not a process id; give NAME=PID, for example coordinator=4242"
            )),
        },
        _ => Err(format!(
            "`{s}` is not NAME=PID; give for example coordinator=4242"
        )),
    }
}

/// A `CONCURRENCY=TPS` argument.
fn concurrency_tps(s: &str) -> Result<(usize, f64), String> {
    let parsed = s.split_once('=').and_then(|(c, t)| {
        let t: f64 = t.parse().ok().filter(|t: &f64| t.is_finite() && *t > 0.0)?;
        Some((c.parse::<usize>().ok().filter(|c| *c > 0)?, t))
    });
    parsed.ok_or_else(|| {
        format!("`{s}` is not CONCURRENCY=TPS; give for example 64=21775 (transactions per second at 64 in flight)")
    })
}

/// The most transactions in flight the bench runs (its client keeps a
/// request per slot; the local cluster's max_in_flight is raised to it).
const CONCURRENCY_MAX: usize = 10_000;

/// The most pipelined submits on one connection: well under what a
/// connection's writer queues on the coordinator (4096 frames).
const PER_CONNECTION_MAX: usize = 1024;

/// history_limit of the local cluster's coordinator (its default, given
/// explicitly so the warm-up matches it).
const LOCAL_HISTORY_LIMIT: u64 = 10_000;

/// Transactions in flight below which the coordinator's memory growth says
/// nothing about them (it is mostly the history of ended transactions and
/// allocator noise): the text report leaves the figure out (the JSON has
/// it).
const RSS_REPORT_IN_FLIGHT_MIN: usize = 100;

/// Processes named one by one in the text report; the others are given as
/// a range.
const PROCESSES_LISTED_MAX: usize = 5;

/// How often the coordinator's resident memory is read during the load.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Totals {
    commits: u64,
    aborts: u64,
    /// Aborts by reason.
    abort_reasons: std::collections::BTreeMap<String, u64>,
    errors: std::collections::BTreeMap<String, u64>,
    latencies_us: Vec<u64>,
}

/// Percentile (0..=100) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // The small epsilon keeps float error (99.9% of 1000 = 999.0000001) from
    // moving the rank up by one.
    let rank = (p * sorted.len() as f64 / 100.0 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Why the flags cannot run, or `None`.
fn usage_error(args: &BenchArgs) -> Option<String> {
    if !matches!(args.coordinators, 1 | 3 | 5) {
        return Some("--coordinators must be 1, 3 or 5".into());
    }
    let in_range = |c: &usize| (1..=CONCURRENCY_MAX).contains(c);
    if !in_range(&args.concurrency) {
        return Some(format!(
            "--concurrency must be between 1 and {CONCURRENCY_MAX}"
        ));
    }
    if let Some(curve) = &args.curve {
        if curve.is_empty() || !curve.iter().all(in_range) {
            return Some(format!(
                "--curve takes concurrencies between 1 and {CONCURRENCY_MAX}, comma-separated, such as 1,4,16,64,256,1024"
            ));
        }
    }
    if !(1..=PER_CONNECTION_MAX).contains(&args.per_connection) {
        return Some(format!(
            "--per-connection must be between 1 and {PER_CONNECTION_MAX}"
        ));
    }
    if args.resource == ResourceKind::Postgres {
        return Some("--resource must be vote or kv".into());
    }
    if args.transactions.is_none() && args.duration.is_none() {
        return Some("give --transactions N or --duration SECONDS".into());
    }
    if let Some(d) = args.duration {
        if !(d.is_finite() && d > 0.0) {
            return Some("--duration must be a positive number of seconds".into());
        }
    }
    None
}

pub async fn bench(args: BenchArgs) -> ExitCode {
    if let Some(e) = usage_error(&args) {
        eprintln!("twopc: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let req = match build_request(args.payload.as_deref(), args.participants.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("twopc: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let compare = match args.compare.as_deref().map(read_report).transpose() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("twopc: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let concurrencies = args.curve.clone().unwrap_or(vec![args.concurrency]);
    let most = concurrencies.iter().copied().max().unwrap_or(1);
    let mut cluster = None;
    let mut security = ClientSecurity::default();
    if args.local.is_none() {
        match args.security.load() {
            Ok(s) => security = s,
            Err(e) => {
                eprintln!("twopc: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let addr = match args.local {
        Some(n) => match LocalCluster::spawn(&local_options(&args, n, most)).await {
            Ok(c) => {
                let a = c.addr.clone();
                security = c.security.clone();
                cluster = Some(c);
                a
            }
            Err(e) => {
                eprintln!("twopc bench: {e}");
                return ExitCode::from(EXIT_NO_DECISION);
            }
        },
        None => args.coordinator.clone(),
    };
    let watch: Vec<(String, u32)> = match &cluster {
        Some(c) => c.pids(),
        None => args.pids.clone(),
    };
    let result = measure(
        &addr,
        &security,
        &args,
        &concurrencies,
        req,
        &watch,
        cluster.as_ref(),
    )
    .await;
    if let Some(c) = cluster {
        c.shutdown().await;
    }
    let report = match result {
        Ok(runs) => assemble(&args, runs, compare.as_ref()),
        Err(e) => {
            eprintln!("twopc bench: {e}");
            return ExitCode::from(EXIT_NO_DECISION);
        }
    };
    if args.json {
        println!("{report}");
    } else {
        print_all(&report);
    }
    ExitCode::SUCCESS
}

/// The local cluster for these flags, with room for `most` in flight.
fn local_options(args: &BenchArgs, participants: usize, most: usize) -> ClusterOptions {
    ClusterOptions {
        participants,
        vote_preference: VotePreference::Commit,
        resource: args.resource,
        unsafe_no_fsync: args.unsafe_no_fsync,
        max_in_flight: most.max(1024),
        // Every client connection and participant, with room to spare.
        max_connections: (most.div_ceil(args.per_connection) + participants + 64).max(1024),
        history_limit: Some(LOCAL_HISTORY_LIMIT),
        // At 10000 in flight a transaction waits its turn behind the
        // others; the vote deadline must not count that as a lost vote.
        timeout_seconds: 60.0,
        setsid: args.setsid,
        runtime: args.server_runtime,
        coordinators: args.coordinators,
        ..ClusterOptions::default()
    }
}

/// Calibrate when asked, warm up, then one run per concurrency.
async fn measure(
    addr: &str,
    security: &ClientSecurity,
    args: &BenchArgs,
    concurrencies: &[usize],
    req: SubmitRequest,
    watch: &[(String, u32)],
    cluster: Option<&LocalCluster>,
) -> Result<Vec<Value>, String> {
    let floor = calibrate_on(args.calibrate, cluster, args.coordinators)
        .await
        .map_err(|e| format!("--calibrate: {e}"))?;
    let most = concurrencies.iter().copied().max().unwrap_or(1);
    let warmup = args.warmup.unwrap_or(
        if args.local.is_some() && most >= RSS_REPORT_IN_FLIGHT_MIN {
            LOCAL_HISTORY_LIMIT
        } else {
            0
        },
    );
    warm_up(addr, security, args, most, &req, warmup).await?;
    let mut runs = Vec::with_capacity(concurrencies.len());
    for &c in concurrencies {
        let mut r = run(addr, security, args, c, req.clone(), watch, floor.as_ref()).await?;
        r["warmup_transactions"] = json!(warmup);
        runs.push(r);
    }
    Ok(runs)
}

/// An earlier `--json` report, for `--compare`.
fn read_report(path: &std::path::Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--compare: cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "--compare: {} is not a bench report ({e}); give the output of `twopc bench ... --json`",
            path.display()
        )
    })
}

/// The whole report: the run (or the curve's runs with their verdict) and
/// the targets.
fn assemble(args: &BenchArgs, runs: Vec<Value>, compare: Option<&Value>) -> Value {
    let curve = args.curve.is_some().then(|| targets::curve_verdict(&runs));
    let judged = targets::judge(&runs, curve.as_ref(), compare, &args.skeleton_tps);
    let mut report = match curve {
        Some(verdict) => json!({ "curve": runs, "curve_verdict": verdict }),
        None => runs.into_iter().next().unwrap_or(Value::Null),
    };
    report["targets"] = judged;
    report
}

fn print_all(r: &Value) {
    match r["curve"].as_array() {
        Some(runs) => {
            for run in runs {
                print_report(run);
            }
            targets::print_curve(runs, &r["curve_verdict"]);
        }
        None => print_report(r),
    }
    targets::print_targets(&r["targets"]);
}

/// With `calibrate`, the floor measured in the local cluster's directory
/// (its disk), or in the temporary directory for a remote cluster.
async fn calibrate_on(
    calibrate: bool,
    cluster: Option<&LocalCluster>,
    members: usize,
) -> Result<Option<calibrate::Floor>, String> {
    if !calibrate {
        return Ok(None);
    }
    let dir = match cluster {
        Some(c) => c.dir().to_path_buf(),
        None => std::env::temp_dir(),
    };
    match tokio::task::spawn_blocking(move || calibrate::measure(&dir, members)).await {
        Ok(r) => r.map(Some),
        Err(e) => Err(format!("the measurement stopped: {e}")),
    }
}

/// The coordinator's status report, `when` saying for the error message
/// which one it is. The connection is opened before the load: a
/// coordinator still busy with the end of a heavy load may not complete a
/// new connection's handshake in time.
async fn status_of(c: &mut Client, when: &str) -> Result<Value, String> {
    c.status()
        .await
        .map_err(|e| format!("asking the coordinator for its status {when}: {e}"))
}

/// Connections for `concurrency` transactions in flight, at most
/// `per_connection` on each, with the window of each (the windows add up to
/// `concurrency` and differ by one at most).
async fn open_connections(
    addr: &str,
    security: &ClientSecurity,
    concurrency: usize,
    per_connection: usize,
) -> Result<Vec<(Client, usize)>, String> {
    let n = concurrency.div_ceil(per_connection);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let window = concurrency / n + usize::from(i < concurrency % n);
        let c = Client::connect_with(addr, security, CLIENT_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        conns.push((c, window));
    }
    Ok(conns)
}

/// How long the bench waits for any one answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// When the load stops, shared by the connections' tasks.
struct Budget {
    /// Transactions still to start.
    remaining: AtomicU64,
    deadline: Option<Instant>,
    /// Set once the load is over (also stops the samplers).
    stop: AtomicBool,
    /// Transactions answered so far, for the progress line.
    done: AtomicU64,
}

impl Budget {
    fn new(transactions: Option<u64>, duration: Option<Duration>) -> Budget {
        Budget {
            remaining: AtomicU64::new(transactions.unwrap_or(u64::MAX)),
            deadline: duration.map(|d| Instant::now() + d),
            stop: AtomicBool::new(false),
            done: AtomicU64::new(0),
        }
    }

    /// Take one transaction to start, if the load is not over.
    fn take(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
            && self.deadline.is_none_or(|d| Instant::now() < d)
            && self
                .remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1))
                .is_ok()
    }
}

/// The request of one slot of one connection. With kv ids, every slot adds
/// to a key of its own on every participant, so no two transactions in
/// flight touch the same key.
fn request_for(
    req: &SubmitRequest,
    kv_ids: Option<&[String]>,
    worker: usize,
    slot: usize,
) -> SubmitRequest {
    let Some(ids) = kv_ids else {
        return req.clone();
    };
    let ops: serde_json::Map<String, Value> = ids
        .iter()
        .map(|id| {
            (
                id.clone(),
                json!([{"op": "add", "key": format!("bench-{worker}-{slot}"), "delta": 1}]),
            )
        })
        .collect();
    SubmitRequest {
        data: json!({ "operations": ops }),
        ..req.clone()
    }
}

/// Keep one connection's window full until the budget is spent: a slot
/// whose transaction is answered starts the next one, submits queued in one
/// turn go out in one write. A connection that breaks counts every
/// transaction still outstanding on it as `no_decision`.
async fn drive(mut client: Client, reqs: Vec<SubmitRequest>, budget: Arc<Budget>) -> Totals {
    let mut t = Totals::default();
    let mut free: Vec<usize> = (0..reqs.len()).rev().collect();
    let mut started: HashMap<u64, (usize, Instant)> = HashMap::with_capacity(reqs.len());
    loop {
        let mut queued = false;
        while let Some(&slot) = free.last() {
            if !budget.take() {
                break;
            }
            free.pop();
            match client.submit_queue(reqs[slot].clone()).await {
                Ok(id) => {
                    started.insert(id, (slot, Instant::now()));
                    queued = true;
                }
                Err(_) => return broken(t, started.len() + 1),
            }
        }
        if queued && client.flush().await.is_err() {
            return broken(t, started.len());
        }
        if started.is_empty() {
            return t;
        }
        let mut reply = Some(client.next_reply().await);
        while let Some(r) = reply {
            let r = match r {
                Ok(r) => r,
                Err(_) => return broken(t, started.len()),
            };
            let Some((slot, t0)) = started.remove(&r.request_id) else {
                return broken(t, started.len());
            };
            free.push(slot);
            match r.result {
                Ok((_, o)) => {
                    t.latencies_us.push(t0.elapsed().as_micros() as u64);
                    match o.decision {
                        Decision::Commit => t.commits += 1,
                        Decision::Abort => {
                            t.aborts += 1;
                            let why = o.reason.unwrap_or_else(|| "none given".into());
                            *t.abort_reasons.entry(why).or_default() += 1;
                        }
                    }
                }
                Err(e) => {
                    let code = e.code().unwrap_or("no_decision").to_string();
                    *t.errors.entry(code).or_default() += 1;
                }
            }
            budget.done.fetch_add(1, Ordering::Relaxed);
            reply = client.ready_reply();
        }
    }
}

/// The totals of a connection that broke with `lost` transactions
/// unanswered.
fn broken(mut t: Totals, lost: usize) -> Totals {
    if lost > 0 {
        *t.errors.entry("no_decision".into()).or_default() += lost as u64;
    }
    t
}

/// Run `transactions` transactions at `concurrency` in flight and forget
/// the figures: the coordinator's history of ended transactions is then
/// full, so the memory measured next grows with what is in flight only.
async fn warm_up(
    addr: &str,
    security: &ClientSecurity,
    args: &BenchArgs,
    concurrency: usize,
    req: &SubmitRequest,
    transactions: u64,
) -> Result<(), String> {
    if transactions == 0 {
        return Ok(());
    }
    let conns = open_connections(addr, security, concurrency, args.per_connection).await?;
    let budget = Arc::new(Budget::new(Some(transactions), None));
    let mut tasks = Vec::new();
    for (worker, (client, window)) in conns.into_iter().enumerate() {
        let reqs = (0..window)
            .map(|slot| request_for(req, None, worker, slot))
            .collect();
        tasks.push(tokio::spawn(drive(client, reqs, budget.clone())));
    }
    let mut lost = 0;
    for t in tasks {
        let t = t.await.map_err(|e| format!("warm-up worker failed: {e}"))?;
        lost += t.errors.values().sum::<u64>();
    }
    if lost > 0 {
        return Err(format!(
            "{lost} of the {transactions} warm-up transactions got no decision; see the cluster's logs"
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run(
    addr: &str,
    security: &ClientSecurity,
    args: &BenchArgs,
    concurrency: usize,
    req: SubmitRequest,
    watch: &[(String, u32)],
    floor: Option<&calibrate::Floor>,
) -> Result<Value, String> {
    let mut status_conn = Client::connect_with(addr, security, CLIENT_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let before = status_of(&mut status_conn, "before the load").await?;
    // Memory before the clients connect: their connections are part of what
    // a transaction in flight costs. The growth to the peak also holds the
    // ended transactions the coordinator remembers (history_limit), unless
    // a warm-up filled that history first (--warmup, on by default with
    // --local from 100 in flight), so per transaction in flight it is an
    // upper bound.
    let rss_pid = watch.first().map(|(_, pid)| *pid);
    let rss_idle = rss_pid.and_then(procstat::sample).map(|s| s.rss_bytes);
    let kv_ids: Option<Vec<String>> = (args.resource == ResourceKind::Kv && args.payload.is_none())
        .then(|| {
            before["participants"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["id"].as_str().map(str::to_string))
                .collect()
        });
    let conns = open_connections(addr, security, concurrency, args.per_connection).await?;
    let mut watched: Vec<procstat::Watched> = watch
        .iter()
        .map(|(name, pid)| procstat::Watched::new(name.clone(), *pid))
        .collect();
    let mut client_proc = procstat::Watched::new("bench client".into(), std::process::id());
    let budget = Arc::new(Budget::new(
        args.transactions,
        args.duration.map(Duration::from_secs_f64),
    ));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (worker, (client, window)) in conns.into_iter().enumerate() {
        let reqs = (0..window)
            .map(|slot| request_for(&req, kv_ids.as_deref(), worker, slot))
            .collect();
        tasks.push(tokio::spawn(drive(client, reqs, budget.clone())));
    }
    let progress = std::io::stderr().is_terminal() && !args.json;
    let ticker = {
        let budget = budget.clone();
        tokio::spawn(async move {
            let mut last = 0;
            while progress && !budget.stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let d = budget.done.load(Ordering::Relaxed);
                eprint!(
                    "\r  {d} transactions, {} txn/s in the last second   ",
                    d - last
                );
                last = d;
            }
        })
    };
    let rss_peak = {
        let budget = budget.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !budget.stop.load(Ordering::Relaxed) {
                if let Some(s) = rss_pid.and_then(procstat::sample) {
                    peak = peak.max(s.rss_bytes);
                }
                tokio::time::sleep(RSS_SAMPLE_EVERY).await;
            }
            peak
        })
    };
    let mut totals = Totals::default();
    for t in tasks {
        let t = t.await.map_err(|e| format!("worker failed: {e}"))?;
        totals.commits += t.commits;
        totals.aborts += t.aborts;
        for (k, v) in t.abort_reasons {
            *totals.abort_reasons.entry(k).or_default() += v;
        }
        for (k, v) in t.errors {
            *totals.errors.entry(k).or_default() += v;
        }
        totals.latencies_us.extend(t.latencies_us);
    }
    let elapsed = start.elapsed().as_secs_f64();
    for w in watched.iter_mut() {
        w.after = procstat::sample(w.pid);
    }
    client_proc.after = procstat::sample(client_proc.pid);
    budget.stop.store(true, Ordering::Relaxed);
    ticker.abort();
    let rss_peak = rss_peak.await.unwrap_or(0);
    if progress {
        eprintln!();
    }
    let after = status_of(&mut status_conn, "after the load").await?;
    totals.latencies_us.sort_unstable();
    let l = &totals.latencies_us;
    let ms = |us: u64| us as f64 / 1000.0;
    let decided = totals.commits + totals.aborts;
    let grew = |key: &str| {
        let n = |v: &Value| v["wal"][key].as_u64().unwrap_or(0);
        n(&after).saturating_sub(n(&before))
    };
    let (syncs, records) = (grew("syncs"), grew("records"));
    let commits = totals.commits;
    let processes: Vec<Value> = watched.iter().map(|w| w.report(commits)).collect();
    let cluster_cpu = (!watched.is_empty())
        .then(|| {
            watched
                .iter()
                .map(|w| w.cpu_us_per_txn(commits))
                .sum::<Option<f64>>()
        })
        .flatten();
    let rss = rss_idle.map(|idle| {
        let growth = rss_peak.saturating_sub(idle);
        json!({
            "idle_bytes": idle,
            "peak_bytes": rss_peak,
            "bytes_per_txn_in_flight": growth as f64 / concurrency as f64,
        })
    });
    let (p50, p99) = (percentile(l, 50.0), percentile(l, 99.0));
    let registered = after["participants"].as_array().map_or(0, |a| a.len());
    Ok(json!({
        "coordinator": addr,
        "setsid": args.setsid,
        "server_runtime": args.server_runtime.map(|r| r.to_string()),
        "processes": processes,
        "cluster_cpu_us_per_txn": cluster_cpu,
        "client_cpu_us_per_txn": client_proc.cpu_us_per_txn(commits),
        "coordinator_rss": rss,
        "calibration": floor.map(|f| f.report(p50, p99)),
        "participants": registered,
        "participants_per_transaction": req.participants.as_ref().map_or(registered, |p| p.len()),
        "concurrency": concurrency,
        "per_connection": args.per_connection,
        "connections": concurrency.div_ceil(args.per_connection),
        "unsafe_no_fsync": args.local.is_some() && args.unsafe_no_fsync,
        "resource": if args.local.is_some() { args.resource.to_string() } else { "unknown (remote cluster)".into() },
        "elapsed_s": elapsed,
        "transactions": decided,
        "throughput_tps": decided as f64 / elapsed.max(1e-9),
        "commits": totals.commits,
        "aborts": totals.aborts,
        "abort_reasons": totals.abort_reasons,
        "errors": totals.errors,
        "latency_ms": {
            "p50": ms(p50),
            "p90": ms(percentile(l, 90.0)),
            "p99": ms(p99),
            "p99_9": ms(percentile(l, 99.9)),
            "max": ms(l.last().copied().unwrap_or(0)),
            "mean": if l.is_empty() { 0.0 } else { l.iter().sum::<u64>() as f64 / l.len() as f64 / 1000.0 },
        },
        "coordinator_log_syncs": syncs,
        "coordinator_syncs_per_txn": if decided == 0 { 0.0 } else { syncs as f64 / decided as f64 },
        "coordinator_log_records": records,
        "coordinator_records_per_sync": if syncs == 0 { 0.0 } else { records as f64 / syncs as f64 },
    }))
}

fn print_report(r: &Value) {
    let l = &r["latency_ms"];
    println!(
        "twopc bench: {} participants, {} in flight{}, {} transactions in {:.2} s",
        r["participants"],
        r["concurrency"],
        if r["unsafe_no_fsync"] == true {
            " (UNSAFE: no fsync)"
        } else {
            ""
        },
        r["transactions"],
        r["elapsed_s"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  throughput   {:.0} txn/s",
        r["throughput_tps"].as_f64().unwrap_or(0.0)
    );
    let ms = |k: &str| crate::commands::fmt_ms(l[k].as_f64().unwrap_or(0.0));
    println!(
        "  latency ms   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        ms("p50"),
        ms("p90"),
        ms("p99"),
        ms("p99_9"),
        ms("max")
    );
    println!(
        "  outcomes     {} committed, {} aborted, errors {}",
        r["commits"], r["aborts"], r["errors"]
    );
    if r["aborts"].as_u64() > Some(0) {
        println!("  aborted by   {}", r["abort_reasons"]);
    }
    println!(
        "  coordinator  {} log syncs, {:.3} per transaction, {:.1} records per sync",
        r["coordinator_log_syncs"],
        r["coordinator_syncs_per_txn"].as_f64().unwrap_or(0.0),
        r["coordinator_records_per_sync"].as_f64().unwrap_or(0.0)
    );
    print_processes(r);
    if let Some(c) = r["calibration"].as_object() {
        let ms = |v: &Value| v.as_f64().unwrap_or(0.0);
        println!(
            "  floor        {:.3} ms (two forced writes {:.3} ms in {}, two loopback round trips {:.3} ms); p50 {:.2}x, p99 {:.2}x the floor",
            ms(&c["floor_ms"]),
            ms(&c["two_forced_writes"]["p50_ms"]),
            c["dir"].as_str().unwrap_or("?"),
            ms(&c["two_loopback_round_trips"]["p50_ms"]),
            ms(&c["p50_over_floor"]),
            ms(&c["p99_over_floor"]),
        );
        if let Some(g) = c.get("group").filter(|g| g.is_object()) {
            println!(
                "  group floor  {:.3} ms added at the least: a forced write on a majority of {} members takes {:.3} ms here, one alone {:.3} ms",
                ms(&g["added_floor_ms"]),
                g["members"],
                ms(&g["majority_forced_write"]["p50_ms"]),
                ms(&c["two_forced_writes"]["p50_ms"]) / 2.0,
            );
        }
    }
}

/// CPU and writes per committed transaction of each watched process, and
/// the coordinator's memory per transaction in flight.
fn print_processes(r: &Value) {
    let Some(procs) = r["processes"].as_array().filter(|p| !p.is_empty()) else {
        return;
    };
    let cell = |v: &Value, digits: usize| match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => "?".into(),
    };
    let names: Vec<String> = procs
        .iter()
        .map(|p| p["name"].as_str().unwrap_or("?").to_string())
        .collect();
    let cpu: Vec<String> = procs
        .iter()
        .map(|p| cell(&p["cpu_us_per_txn"], 1))
        .collect();
    let writes: Vec<String> = procs
        .iter()
        .map(|p| cell(&p["writes_per_txn"], 2))
        .collect();
    // Past a few processes, the first ones and a range for the rest keep
    // the line readable (the JSON has every one).
    let row = |vals: &[String]| {
        let mut cells: Vec<String> = names
            .iter()
            .zip(vals)
            .take(PROCESSES_LISTED_MAX)
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        if names.len() > PROCESSES_LISTED_MAX {
            let rest: Vec<f64> = vals[PROCESSES_LISTED_MAX..]
                .iter()
                .filter_map(|v| v.parse().ok())
                .collect();
            let lo = rest.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = rest.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            cells.push(match rest.is_empty() {
                true => format!("{} more ?", names.len() - PROCESSES_LISTED_MAX),
                false => format!("{} more {lo}..{hi}", names.len() - PROCESSES_LISTED_MAX),
            });
        }
        cells.join("  ")
    };
    println!(
        "  CPU µs/txn   {}  = {} for the cluster (bench client {})",
        row(&cpu),
        cell(&r["cluster_cpu_us_per_txn"], 1),
        cell(&r["client_cpu_us_per_txn"], 1)
    );
    println!(
        "  writes/txn   {}  (write/writev system calls)",
        row(&writes)
    );
    let rss = &r["coordinator_rss"];
    if rss.is_object() && r["concurrency"].as_u64().unwrap_or(0) >= RSS_REPORT_IN_FLIGHT_MIN as u64
    {
        let mib = |v: &Value| v.as_f64().unwrap_or(0.0) / (1024.0 * 1024.0);
        println!(
            "  {} memory  at most {:.1} KiB per transaction in flight (resident {:.1} MiB idle, {:.1} MiB at peak; the growth also holds the client connections{})",
            names[0],
            rss["bytes_per_txn_in_flight"].as_f64().unwrap_or(0.0) / 1024.0,
            mib(&rss["idle_bytes"]),
            mib(&rss["peak_bytes"]),
            match r["warmup_transactions"].as_u64() {
                Some(n) if n > 0 => format!(", and ended transactions past the {n} of the warm-up"),
                _ => ", and the history of ended transactions (no warm-up)".into(),
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_pick_ranks() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), 500);
        assert_eq!(percentile(&v, 99.9), 999);
        assert_eq!(percentile(&v, 100.0), 1000);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn milliseconds_print_with_about_three_digits() {
        use crate::commands::fmt_ms;
        assert_eq!(fmt_ms(0.04), "0.040");
        assert_eq!(fmt_ms(0.4121), "0.412");
        assert_eq!(fmt_ms(4.121), "4.12");
        assert_eq!(fmt_ms(41.21), "41.2");
        assert_eq!(fmt_ms(412.1), "412");
    }
}

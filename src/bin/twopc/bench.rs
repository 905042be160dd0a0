//! `twopc bench`: closed-loop load. C connections each submit one
//! transaction at a time, back to back, for a number of transactions or a
//! duration; the report gives throughput, latency percentiles, outcome
//! counts and the coordinator's log syncs per transaction, and for the
//! processes of the cluster (its own with `--local`, or given with `--pid`)
//! CPU time and write system calls per committed transaction and the
//! coordinator's memory per transaction in flight. `--calibrate` measures
//! the physical floor of a transaction on this machine first.

mod calibrate;
mod procstat;

use crate::cluster::{ClusterOptions, LocalCluster};
use crate::commands::{build_request, EXIT_NO_DECISION, EXIT_USAGE};
use clap::Args;
use serde_json::{json, Value};
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
    /// Coordinator address (ignored with --local).
    #[arg(long, env = "TWOPC_COORDINATOR", default_value = "127.0.0.1:8080", value_parser = crate::host_port)]
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
    /// Transactions in flight (one per connection).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
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
    /// With --local: the async runtime of the cluster's processes
    /// (`runtime`); their configured default (current-thread) when omitted.
    #[arg(long, value_enum, requires = "local")]
    pub server_runtime: Option<Runtime>,
    /// First measure the physical floor of one transaction on this machine
    /// (two forced writes in sequence on the cluster's disk, plus two
    /// loopback round trips) and report the latency percentiles as
    /// multiples of it.
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

/// Transactions in flight below which the coordinator's memory growth says
/// nothing about them (it is mostly the history of ended transactions and
/// allocator noise): the text report leaves the figure out (the JSON has
/// it).
const RSS_REPORT_IN_FLIGHT_MIN: usize = 100;

/// How often the coordinator's resident memory is read during the load.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Totals {
    commits: u64,
    aborts: u64,
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

pub async fn bench(args: BenchArgs) -> ExitCode {
    if args.concurrency == 0 || args.concurrency > 10_000 {
        eprintln!("twopc: --concurrency must be between 1 and 10000");
        return ExitCode::from(EXIT_USAGE);
    }
    if args.resource == ResourceKind::Postgres {
        eprintln!("twopc: --resource must be vote or kv");
        return ExitCode::from(EXIT_USAGE);
    }
    if args.transactions.is_none() && args.duration.is_none() {
        eprintln!("twopc: give --transactions N or --duration SECONDS");
        return ExitCode::from(EXIT_USAGE);
    }
    if let Some(d) = args.duration {
        if !(d.is_finite() && d > 0.0) {
            eprintln!("twopc: --duration must be a positive number of seconds");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let req = match build_request(args.payload.as_deref(), args.participants.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("twopc: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
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
        Some(n) => {
            let opts = ClusterOptions {
                participants: n,
                vote_preference: VotePreference::Commit,
                resource: args.resource,
                unsafe_no_fsync: args.unsafe_no_fsync,
                max_in_flight: args.concurrency.max(1024),
                setsid: args.setsid,
                runtime: args.server_runtime,
                ..ClusterOptions::default()
            };
            match LocalCluster::spawn(&opts).await {
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
            }
        }
        None => args.coordinator.clone(),
    };
    let watch: Vec<(String, u32)> = match &cluster {
        Some(c) => c.pids(),
        None => args.pids.clone(),
    };
    let floor = match calibrate_on(args.calibrate, cluster.as_ref()).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("twopc bench: --calibrate: {e}");
            if let Some(c) = cluster {
                c.shutdown().await;
            }
            return ExitCode::from(EXIT_NO_DECISION);
        }
    };
    let result = run(&addr, &security, &args, req, &watch, floor.as_ref()).await;
    if let Some(c) = cluster {
        c.shutdown().await;
    }
    match result {
        Ok(report) => {
            if args.json {
                println!("{report}");
            } else {
                print_report(&report);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("twopc bench: {e}");
            ExitCode::from(EXIT_NO_DECISION)
        }
    }
}

/// With `calibrate`, the floor measured in the local cluster's directory
/// (its disk), or in the temporary directory for a remote cluster.
async fn calibrate_on(
    calibrate: bool,
    cluster: Option<&LocalCluster>,
) -> Result<Option<calibrate::Floor>, String> {
    if !calibrate {
        return Ok(None);
    }
    let dir = match cluster {
        Some(c) => c.dir().to_path_buf(),
        None => std::env::temp_dir(),
    };
    match tokio::task::spawn_blocking(move || calibrate::measure(&dir)).await {
        Ok(r) => r.map(Some),
        Err(e) => Err(format!("the measurement stopped: {e}")),
    }
}

async fn status_of(addr: &str, security: &ClientSecurity) -> Result<Value, String> {
    let mut c = Client::connect_with(addr, security, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    c.status().await.map_err(|e| e.to_string())
}

async fn run(
    addr: &str,
    security: &ClientSecurity,
    args: &BenchArgs,
    req: SubmitRequest,
    watch: &[(String, u32)],
    floor: Option<&calibrate::Floor>,
) -> Result<Value, String> {
    let before = status_of(addr, security).await?;
    // Memory before the clients connect: their connections are part of what
    // a transaction in flight costs. The growth to the peak also holds the
    // ended transactions the coordinator remembers (history_limit, about
    // 4 KiB each here), so per transaction in flight it is an upper bound,
    // close only when the load is large against the history.
    let rss_pid = watch.first().map(|(_, pid)| *pid);
    let rss_idle = rss_pid.and_then(procstat::sample).map(|s| s.rss_bytes);
    let mut clients = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        clients.push(
            Client::connect_with(addr, security, Duration::from_secs(60))
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let mut watched: Vec<procstat::Watched> = watch
        .iter()
        .map(|(name, pid)| procstat::Watched::new(name.clone(), *pid))
        .collect();
    let mut client_proc = procstat::Watched::new("bench client".into(), std::process::id());
    let remaining = Arc::new(AtomicU64::new(args.transactions.unwrap_or(u64::MAX)));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = args.duration.map(|d| start + Duration::from_secs_f64(d));
    let mut tasks = Vec::new();
    let kv_ids: Option<Vec<String>> = (args.resource == ResourceKind::Kv && args.payload.is_none())
        .then(|| {
            before["participants"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["id"].as_str().map(str::to_string))
                .collect()
        });
    for (worker, mut client) in clients.into_iter().enumerate() {
        let (remaining, done, stop) = (remaining.clone(), done.clone(), stop.clone());
        let req = match &kv_ids {
            Some(ids) => {
                let ops: serde_json::Map<String, Value> = ids
                    .iter()
                    .map(|id| {
                        (
                            id.clone(),
                            json!([{"op": "add", "key": format!("bench-{worker}"), "delta": 1}]),
                        )
                    })
                    .collect();
                SubmitRequest {
                    data: json!({ "operations": ops }),
                    ..req.clone()
                }
            }
            None => req.clone(),
        };
        tasks.push(tokio::spawn(async move {
            let mut t = Totals::default();
            loop {
                if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1))
                    .is_err()
                {
                    break;
                }
                let t0 = Instant::now();
                match client.submit(req.clone()).await {
                    Ok((_, o)) => {
                        t.latencies_us.push(t0.elapsed().as_micros() as u64);
                        match o.decision {
                            Decision::Commit => t.commits += 1,
                            Decision::Abort => t.aborts += 1,
                        }
                    }
                    Err(e) => {
                        let code = e.code().unwrap_or("no_decision").to_string();
                        *t.errors.entry(code).or_default() += 1;
                        if e.code().is_none() {
                            // The connection is unusable; stop this worker.
                            break;
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            t
        }));
    }
    let progress = std::io::stderr().is_terminal() && !args.json;
    let ticker = {
        let done = done.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut last = 0;
            while progress && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let d = done.load(Ordering::Relaxed);
                eprint!(
                    "\r  {d} transactions, {} txn/s in the last second   ",
                    d - last
                );
                last = d;
            }
        })
    };
    let rss_peak = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
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
    stop.store(true, Ordering::Relaxed);
    ticker.abort();
    let rss_peak = rss_peak.await.unwrap_or(0);
    if progress {
        eprintln!();
    }
    let after = status_of(addr, security).await?;
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
            "bytes_per_txn_in_flight": growth as f64 / args.concurrency as f64,
        })
    });
    let (p50, p99) = (percentile(l, 50.0), percentile(l, 99.0));
    Ok(json!({
        "coordinator": addr,
        "setsid": args.setsid,
        "server_runtime": args.server_runtime.map(|r| r.to_string()),
        "processes": processes,
        "cluster_cpu_us_per_txn": cluster_cpu,
        "client_cpu_us_per_txn": client_proc.cpu_us_per_txn(commits),
        "coordinator_rss": rss,
        "calibration": floor.map(|f| f.report(p50, p99)),
        "participants": after["participants"].as_array().map(|a| a.len()).unwrap_or(0),
        "concurrency": args.concurrency,
        "unsafe_no_fsync": args.local.is_some() && args.unsafe_no_fsync,
        "resource": if args.local.is_some() { args.resource.to_string() } else { "unknown (remote cluster)".into() },
        "elapsed_s": elapsed,
        "transactions": decided,
        "throughput_tps": decided as f64 / elapsed.max(1e-9),
        "commits": totals.commits,
        "aborts": totals.aborts,
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
    let row = |vals: &[String]| {
        names
            .iter()
            .zip(vals)
            .map(|(n, v)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join("  ")
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
            "  {} memory  at most {:.1} KiB per transaction in flight (resident {:.1} MiB idle, {:.1} MiB at peak; the growth also holds the client connections and the history of ended transactions)",
            names[0],
            rss["bytes_per_txn_in_flight"].as_f64().unwrap_or(0.0) / 1024.0,
            mib(&rss["idle_bytes"]),
            mib(&rss["peak_bytes"])
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

//! `twopc bank`: the money-transfer workload (the bank test). Accounts live
//! on several `kv` shards; each transfer debits one account (with `min: 0`)
//! and credits an account on another shard in one transaction. Optionally
//! processes are killed (SIGKILL) and restarted during the run. At the end
//! the checker reads every shard and verifies:
//!
//! - the total balance is unchanged and no balance is negative;
//! - every transfer the client saw committed is applied on both sides, none
//!   it saw aborted is applied anywhere, and every transfer is applied on
//!   both shards or on neither (each transfer also writes a unique marker
//!   key `xfer-<n>` on both shards, so its fate can be read back even when
//!   the client never learned it);
//! - balances equal the initial ones plus exactly the applied transfers.

use crate::cluster::{ClusterOptions, LocalCluster};
use crate::commands::{EXIT_NO_DECISION, EXIT_USAGE};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use twopc::config::{ResourceKind, VotePreference};
use twopc::protocol::{Decision, ErrorCode, ParticipantId, SubmitRequest};
use twopc::security::ClientSecurity;
use twopc::{Client, ClientError};

#[derive(Args, Debug, Clone)]
pub struct BankArgs {
    /// kv participants (shards).
    #[arg(long, default_value_t = 3)]
    pub shards: usize,
    /// Accounts, spread round-robin over the shards.
    #[arg(long, default_value_t = 30)]
    pub accounts: usize,
    /// Initial balance of every account.
    #[arg(long, default_value_t = 100)]
    pub initial_balance: i64,
    /// Transfers to attempt.
    #[arg(long, default_value_t = 300)]
    pub transfers: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Kill (SIGKILL) and restart participants and the coordinator during the run.
    #[arg(long)]
    pub chaos: bool,
    /// Arm a crash point (`POINT[:N]`, as `TWOPC_CRASH_AT`) in every process
    /// at its first start: each dies there (SIGKILL) and is restarted.
    #[arg(long, value_name = "POINT[:N]")]
    pub crash_at: Option<String>,
    /// Log segment size of every process, in bytes (at least 4096); small
    /// segments make checkpoints frequent.
    #[arg(long, value_name = "BYTES")]
    pub wal_segment_max_bytes: Option<u64>,
    /// Coordinator processes: 1, or 3 or 5 for a replicated group (with
    /// `--chaos`, leaders are killed too).
    #[arg(long, default_value_t = 1)]
    pub coordinators: usize,
    /// With a group: kill (SIGKILL) the leader this many times during the
    /// run, restarting each one, and measure every takeover (killed → a
    /// new leader ready to decide). The clients stop once the last one is
    /// measured (at most `--transfers` transfers).
    #[arg(long, value_name = "N")]
    pub leader_kills: Option<usize>,
    /// Random seed (printed; use it to replay a run's choices).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What the client saw for one transfer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Seen {
    Committed,
    Aborted,
    /// No decision reached the client (connection lost, timeout).
    Unknown,
}

#[derive(Clone, Debug)]
struct Transfer {
    from: usize,
    to: usize,
    amount: i64,
    seen: Seen,
}

fn account(i: usize) -> String {
    format!("acct-{i:04}")
}

fn marker(n: usize) -> String {
    format!("xfer-{n:06}")
}

pub async fn bank(args: BankArgs) -> ExitCode {
    if args.shards < 2 || args.shards > 16 {
        eprintln!("twopc bank: --shards must be between 2 and 16");
        return ExitCode::from(EXIT_USAGE);
    }
    if args.accounts < args.shards || args.accounts > 10_000 {
        eprintln!("twopc bank: --accounts must be at least --shards and at most 10000");
        return ExitCode::from(EXIT_USAGE);
    }
    if args.concurrency == 0 || args.concurrency > 256 || args.initial_balance < 0 {
        eprintln!("twopc bank: --concurrency must be 1..=256 and --initial-balance non-negative");
        return ExitCode::from(EXIT_USAGE);
    }
    if !matches!(args.coordinators, 1 | 3 | 5) {
        eprintln!("twopc bank: --coordinators must be 1, 3 or 5");
        return ExitCode::from(EXIT_USAGE);
    }
    if args.leader_kills.is_some() && args.coordinators == 1 {
        eprintln!("twopc bank: --leader-kills needs a group: add --coordinators 3 (or 5)");
        return ExitCode::from(EXIT_USAGE);
    }
    if let Some(spec) = &args.crash_at {
        let point = spec.split(':').next().unwrap_or_default();
        if !twopc::crash::POINTS.contains(&point) {
            eprintln!(
                "twopc bank: --crash-at names unknown crash point `{point}`; known points: {}",
                twopc::crash::POINTS.join(", ")
            );
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    if !args.json {
        println!(
            "twopc bank: {} shards, {} accounts x {}, {} transfers, {} clients{}{}, seed {seed}",
            args.shards,
            args.accounts,
            args.initial_balance,
            args.transfers,
            args.concurrency,
            if args.coordinators > 1 {
                format!(", a group of {} coordinators", args.coordinators)
            } else {
                String::new()
            },
            match (args.chaos, args.leader_kills) {
                (_, Some(n)) => format!(", {n} leader kills"),
                (true, None) => ", chaos on".to_string(),
                (false, None) => String::new(),
            }
        );
    }
    let shard_of = |a: usize| a % args.shards;
    let mut seeds = vec![serde_json::Map::new(); args.shards];
    for a in 0..args.accounts {
        seeds[shard_of(a)].insert(account(a), json!(args.initial_balance));
    }
    let opts = ClusterOptions {
        participants: args.shards,
        id_prefix: "s".into(),
        vote_preference: VotePreference::Commit,
        resource: ResourceKind::Kv,
        kv_seeds: seeds.into_iter().map(Value::Object).collect(),
        timeout_seconds: 5.0,
        wal_segment_max_bytes: args.wal_segment_max_bytes,
        crash_at: args.crash_at.clone(),
        coordinators: args.coordinators,
        ..ClusterOptions::default()
    };
    let cluster = match LocalCluster::spawn(&opts).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("twopc bank: {e}");
            return ExitCode::from(EXIT_NO_DECISION);
        }
    };
    let report = run(cluster, &args, seed).await;
    match report {
        Ok((report, ok)) => {
            if args.json {
                println!("{report}");
            } else {
                print_report(&report);
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("twopc bank: {e} (seed {seed})");
            ExitCode::from(1)
        }
    }
}

async fn run(cluster: LocalCluster, args: &BankArgs, seed: u64) -> Result<(Value, bool), String> {
    let cluster = Arc::new(Mutex::new(cluster));
    let mut rng = StdRng::seed_from_u64(seed);
    let shard_of = |a: usize| a % args.shards;
    let shard_id = |s: usize| format!("s{}", s + 1);
    // Plan every transfer up front so a seed replays the same workload.
    let mut plan = Vec::with_capacity(args.transfers);
    while plan.len() < args.transfers {
        let from = rng.random_range(0..args.accounts);
        let to = rng.random_range(0..args.accounts);
        if shard_of(from) == shard_of(to) {
            continue;
        }
        let amount = rng.random_range(1..=(args.initial_balance / 2).max(1));
        plan.push(Transfer {
            from,
            to,
            amount,
            seen: Seen::Unknown,
        });
    }
    let plan = Arc::new(Mutex::new(plan));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let chaos_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failovers = Arc::new(Mutex::new(Vec::<f64>::new()));
    let shards = args.shards;
    let chaos = if let Some(n) = args.leader_kills {
        let (cluster, stop, failovers) = (cluster.clone(), chaos_stop.clone(), failovers.clone());
        let mut crng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
        Some(tokio::spawn(async move {
            let mut kills = Vec::new();
            for _ in 0..n {
                tokio::time::sleep(Duration::from_millis(crng.random_range(200..600))).await;
                let mut c = cluster.lock().await;
                let Some(victim) = c.leader().await else {
                    return Err("no coordinator leads the group".to_string());
                };
                c.kill9(victim).await;
                let took = c
                    .await_takeover(victim, shards, Duration::from_secs(30))
                    .await
                    .ok_or_else(|| {
                        format!("no takeover within 30 s after killing {}", c.name(victim))
                    })?;
                failovers.lock().await.push(took.as_secs_f64() * 1000.0);
                kills.push(format!("{} (leader)", c.name(victim)));
                tokio::time::sleep(Duration::from_millis(crng.random_range(20..300))).await;
                if let Err(e) = c.restart(victim).await {
                    return Err(format!("restarting {}: {e}", c.name(victim)));
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(kills)
        }))
    } else if args.chaos {
        let (cluster, stop, failovers) = (cluster.clone(), chaos_stop.clone(), failovers.clone());
        let mut crng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
        Some(tokio::spawn(async move {
            let mut kills = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(crng.random_range(50..400))).await;
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let mut c = cluster.lock().await;
                // With a group, half the kills are of the leader.
                let leader = match c.coordinators > 1 && crng.random_bool(0.5) {
                    true => c.leader().await,
                    false => None,
                };
                let victim = leader.unwrap_or_else(|| crng.random_range(0..c.len()));
                c.kill9(victim).await;
                if leader.is_some() {
                    if let Some(took) = c
                        .await_takeover(victim, shards, Duration::from_secs(30))
                        .await
                    {
                        failovers.lock().await.push(took.as_secs_f64() * 1000.0);
                    }
                    kills.push(format!("{} (leader)", c.name(victim)));
                } else {
                    kills.push(c.name(victim).to_string());
                }
                tokio::time::sleep(Duration::from_millis(crng.random_range(20..300))).await;
                if let Err(e) = c.restart(victim).await {
                    return Err(format!("restarting {}: {e}", c.name(victim)));
                }
            }
            Ok(kills)
        }))
    } else {
        None
    };
    // Processes that die at an armed crash point come back at once.
    let reviver = args.crash_at.is_some().then(|| {
        let (cluster, stop) = (cluster.clone(), chaos_stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                cluster.lock().await.revive_crashed().await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<(), String>(())
        })
    });
    let (addr, security) = {
        let c = cluster.lock().await;
        (c.addr.clone(), c.security.clone())
    };
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (plan, next, addr) = (plan.clone(), next.clone(), addr.clone());
        let security = security.clone();
        // With --leader-kills the clients stop when the kills are done.
        let stop = args.leader_kills.map(|_| chaos_stop.clone());
        let shards = args.shards;
        // Under chaos, pace the clients so that the run spans many faults.
        let pause = Duration::from_millis(if args.chaos { 15 } else { 0 });
        workers.push(tokio::spawn(async move {
            let mut client: Option<Client> = None;
            loop {
                if stop
                    .as_ref()
                    .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
                {
                    break;
                }
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let t = match plan.lock().await.get(n) {
                    Some(t) => t.clone(),
                    None => break,
                };
                let (sf, st) = (shard_id(t.from % shards), shard_id(t.to % shards));
                let mark = json!({"op": "put", "key": marker(n), "value": {"from": t.from, "to": t.to, "amount": t.amount}});
                let data = json!({"operations": {
                    sf: [{"op": "add", "key": account(t.from), "delta": -t.amount, "min": 0}, mark],
                    st: [{"op": "add", "key": account(t.to), "delta": t.amount}, mark],
                }});
                let req = SubmitRequest {
                    data,
                    participants: None,
                    request_id: None,
                    ..Default::default()
                };
                let seen = submit_once(&mut client, &addr, &security, req).await;
                plan.lock().await[n].seen = seen;
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        }));
    }
    for w in workers {
        w.await.map_err(|e| format!("a client task failed: {e}"))?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    chaos_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut kills = match chaos {
        Some(h) => h.await.map_err(|e| format!("chaos task failed: {e}"))??,
        None => Vec::new(),
    };
    if let Some(h) = reviver {
        h.await.map_err(|e| format!("restart task failed: {e}"))??;
    }
    // Transfers the clients never took (they stopped with the kills).
    let taken = next.load(std::sync::atomic::Ordering::Relaxed);
    let mut plan = plan.lock().await.clone();
    plan.truncate(taken);
    let failovers = failovers.lock().await.clone();
    let mut cluster = Arc::try_unwrap(cluster)
        .map_err(|_| "the cluster is still shared".to_string())?
        .into_inner();
    cluster
        .wait_ready(args.shards, Duration::from_secs(60))
        .await?;
    kills.extend(cluster.crashes().iter().cloned());
    let state = read_all(&addr, &security, args, plan.len()).await;
    cluster.shutdown().await;
    let state = state?;
    let (mut report, ok) = check(args, &plan, &state, seed, elapsed, kills);
    if !failovers.is_empty() {
        report["failover_ms"] = failover_summary(&failovers);
    }
    Ok((report, ok))
}

/// Takeover times in milliseconds: each one, and p50, p99 and max.
fn failover_summary(ms: &[f64]) -> Value {
    let mut sorted = ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at =
        |q: f64| sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1];
    json!({
        "count": sorted.len(),
        "p50": at(0.5),
        "p99": at(0.99),
        "max": sorted[sorted.len() - 1],
        "each": ms,
    })
}

/// Submit on a (re)connected client; any failure to obtain a decision is
/// `Unknown`: the transfer may or may not have committed.
async fn submit_once(
    client: &mut Option<Client>,
    addr: &str,
    security: &ClientSecurity,
    req: SubmitRequest,
) -> Seen {
    for _ in 0..50 {
        if client.is_none() {
            match Client::connect_with(addr, security, Duration::from_secs(15)).await {
                Ok(c) => *client = Some(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        return match c.submit(req).await {
            Ok((_, o)) => match o.decision {
                Decision::Commit => Seen::Committed,
                Decision::Abort => Seen::Aborted,
            },
            // Refused before it started (not ready, overloaded): it never ran.
            Err(ClientError::Refused { code, .. })
                if matches!(
                    code.known(),
                    Some(
                        ErrorCode::NotReady | ErrorCode::Overloaded | ErrorCode::UnknownParticipant
                    )
                ) =>
            {
                Seen::Aborted
            }
            Err(_) => {
                *client = None;
                Seen::Unknown
            }
        };
    }
    Seen::Aborted
}

/// Every shard's committed values of all accounts and markers, read through
/// transactions of `get`s. Retried while in-doubt transactions still hold
/// locks after a chaos run (bounded).
async fn read_all(
    addr: &str,
    security: &ClientSecurity,
    args: &BankArgs,
    transfers: usize,
) -> Result<BTreeMap<String, Value>, String> {
    let mut out = BTreeMap::new();
    // One read transaction per shard and chunk of keys: a kv transaction
    // takes at most 10,000 operations. The workload has stopped, so every
    // chunk sees the final state of its keys (an in-doubt transfer holds the
    // locks of all its keys until it is resolved).
    const READS_PER_TRANSACTION: usize = 5_000;
    let mut reads = Vec::new();
    for s in 0..args.shards {
        let id = format!("s{}", s + 1);
        let mut ops: Vec<Value> = (0..args.accounts)
            .filter(|a| a % args.shards == s)
            .map(|a| json!({"op": "get", "key": account(a)}))
            .collect();
        ops.extend((0..transfers).map(|n| json!({"op": "get", "key": marker(n)})));
        for chunk in ops.chunks(READS_PER_TRANSACTION) {
            reads.push((id.clone(), chunk.to_vec()));
        }
    }
    for (id, ops) in reads {
        let req = SubmitRequest {
            data: json!({"operations": { id.clone(): ops }}),
            participants: None,
            request_id: None,
            ..Default::default()
        };
        let start = Instant::now();
        loop {
            let attempt = async {
                let mut c = Client::connect_with(addr, security, Duration::from_secs(15)).await?;
                c.submit(req.clone()).await
            }
            .await;
            match attempt {
                Ok((_, o)) if o.decision == Decision::Commit => {
                    let reads = o
                        .results
                        .get(&ParticipantId(id.clone()))
                        .and_then(|v| v.as_object())
                        .cloned()
                        .unwrap_or_default();
                    for (k, v) in reads {
                        out.insert(format!("{id}/{k}"), v);
                    }
                    break;
                }
                Ok((_, o)) if start.elapsed() < Duration::from_secs(60) => {
                    // Usually `conflict`: an in-doubt transfer still holds a lock.
                    let _ = o;
                }
                Ok((_, o)) => {
                    return Err(format!(
                        "reading shard {id} kept failing for 60 s: {}",
                        o.reason.unwrap_or_default()
                    ))
                }
                Err(e) if start.elapsed() > Duration::from_secs(60) => {
                    return Err(format!("reading shard {id}: {e}"))
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(out)
}

fn check(
    args: &BankArgs,
    plan: &[Transfer],
    state: &BTreeMap<String, Value>,
    seed: u64,
    elapsed: f64,
    kills: Vec<String>,
) -> (Value, bool) {
    let shard = |a: usize| format!("s{}", a % args.shards + 1);
    let present = |s: &str, n: usize| {
        !state
            .get(&format!("{s}/{}", marker(n)))
            .unwrap_or(&Value::Null)
            .is_null()
    };
    let mut violations: Vec<String> = Vec::new();
    let mut expected: Vec<i64> = vec![args.initial_balance; args.accounts];
    let (mut committed, mut aborted, mut unknown, mut unknown_applied) = (0, 0, 0, 0);
    for (n, t) in plan.iter().enumerate() {
        let (on_from, on_to) = (present(&shard(t.from), n), present(&shard(t.to), n));
        if on_from != on_to {
            violations.push(format!(
                "transfer {n} is applied on {} but not on {}",
                if on_from { shard(t.from) } else { shard(t.to) },
                if on_from { shard(t.to) } else { shard(t.from) }
            ));
        }
        match t.seen {
            Seen::Committed => {
                committed += 1;
                if !(on_from && on_to) {
                    violations.push(format!(
                        "transfer {n} was reported committed but is not applied everywhere"
                    ));
                }
            }
            Seen::Aborted => {
                aborted += 1;
                if on_from || on_to {
                    violations.push(format!("transfer {n} was reported aborted but is applied"));
                }
            }
            Seen::Unknown => {
                unknown += 1;
                if on_from && on_to {
                    unknown_applied += 1;
                }
            }
        }
        if on_from && on_to {
            expected[t.from] -= t.amount;
            expected[t.to] += t.amount;
        }
    }
    let mut total = 0i64;
    for (a, want) in expected.iter().enumerate() {
        let got = state
            .get(&format!("{}/{}", shard(a), account(a)))
            .and_then(|v| v.as_i64());
        match got {
            Some(b) => {
                total += b;
                if b < 0 {
                    violations.push(format!("{} has a negative balance {b}", account(a)));
                }
                if b != *want {
                    violations.push(format!(
                        "{} holds {b}, expected {want} from the applied transfers",
                        account(a)
                    ));
                }
            }
            None => violations.push(format!("{} is missing", account(a))),
        }
    }
    let want_total = args.initial_balance * args.accounts as i64;
    if total != want_total {
        violations.push(format!("total balance is {total}, expected {want_total}"));
    }
    let ok = violations.is_empty();
    let report = json!({
        "seed": seed,
        "shards": args.shards,
        "accounts": args.accounts,
        "transfers": plan.len(),
        "elapsed_s": elapsed,
        "committed": committed,
        "aborted": aborted,
        "unknown": unknown,
        "unknown_applied": unknown_applied,
        "kills": kills,
        "total_balance": total,
        "expected_total": want_total,
        "violations": violations,
        "ok": ok,
    });
    (report, ok)
}

fn print_report(r: &Value) {
    println!(
        "transfers: {} committed, {} aborted, {} without a decision at the client ({} of those applied) in {:.1} s",
        r["committed"],
        r["aborted"],
        r["unknown"],
        r["unknown_applied"],
        r["elapsed_s"].as_f64().unwrap_or(0.0)
    );
    if let Some(k) = r["kills"].as_array() {
        if !k.is_empty() {
            let names: Vec<&str> = k.iter().filter_map(|v| v.as_str()).collect();
            println!(
                "chaos: {} kills (SIGKILL + restart): {}",
                names.len(),
                names.join(", ")
            );
        }
    }
    if let Some(f) = r.get("failover_ms") {
        println!(
            "failover (leader killed → a new leader ready): {} takeovers, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            f["count"],
            f["p50"].as_f64().unwrap_or(0.0),
            f["p99"].as_f64().unwrap_or(0.0),
            f["max"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "total balance: {} (expected {})",
        r["total_balance"], r["expected_total"]
    );
    let v = r["violations"].as_array().cloned().unwrap_or_default();
    if v.is_empty() {
        println!("OK: total unchanged, no negative balance, every transfer applied on both shards or neither, client-visible outcomes respected (seed {})", r["seed"]);
    } else {
        println!("VIOLATIONS ({}), seed {}:", v.len(), r["seed"]);
        for x in v {
            println!("  {}", x.as_str().unwrap_or(""));
        }
    }
}

#[cfg(test)]
#[path = "bank_tests.rs"]
mod tests;

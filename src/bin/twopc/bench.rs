//! `twopc bench`: closed-loop load. C connections each submit one
//! transaction at a time, back to back, for a number of transactions or a
//! duration; the report gives throughput, latency percentiles, outcome
//! counts and the coordinator's log syncs per transaction.

use crate::cluster::{ClusterOptions, LocalCluster};
use crate::commands::{build_request, EXIT_NO_DECISION, EXIT_USAGE};
use clap::Args;
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use twopc::config::{ResourceKind, VotePreference};
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
    #[command(flatten)]
    pub security: SecurityArgs,
}

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
    let result = run(&addr, &security, &args, req).await;
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
) -> Result<Value, String> {
    let before = status_of(addr, security).await?;
    let mut clients = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        clients.push(
            Client::connect_with(addr, security, Duration::from_secs(60))
                .await
                .map_err(|e| e.to_string())?,
        );
    }
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
    stop.store(true, Ordering::Relaxed);
    ticker.abort();
    if progress {
        eprintln!();
    }
    let after = status_of(addr, security).await?;
    totals.latencies_us.sort_unstable();
    let l = &totals.latencies_us;
    let ms = |us: u64| us as f64 / 1000.0;
    let decided = totals.commits + totals.aborts;
    let syncs =
        after["wal"]["syncs"].as_u64().unwrap_or(0) - before["wal"]["syncs"].as_u64().unwrap_or(0);
    Ok(json!({
        "coordinator": addr,
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
            "p50": ms(percentile(l, 50.0)),
            "p90": ms(percentile(l, 90.0)),
            "p99": ms(percentile(l, 99.0)),
            "p99_9": ms(percentile(l, 99.9)),
            "max": ms(l.last().copied().unwrap_or(0)),
            "mean": if l.is_empty() { 0.0 } else { l.iter().sum::<u64>() as f64 / l.len() as f64 / 1000.0 },
        },
        "coordinator_log_syncs": syncs,
        "coordinator_syncs_per_txn": if decided == 0 { 0.0 } else { syncs as f64 / decided as f64 },
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
        "  coordinator  {} log syncs, {:.3} per transaction",
        r["coordinator_log_syncs"],
        r["coordinator_syncs_per_txn"].as_f64().unwrap_or(0.0)
    );
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

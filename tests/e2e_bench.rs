//! `twopc bench` with its own local cluster: the per-process figures come
//! from the cluster's real processes, `--setsid` puts each in a session of
//! its own, and `--calibrate` measures the floor on this machine.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;

fn bench(extra: &[&str]) -> Value {
    let mut args = vec![
        "bench",
        "--local",
        "2",
        "--concurrency",
        "4",
        "--transactions",
        "200",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run_twopc(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bench JSON ({e}): {out}"))
}

/// Every process of the cluster is reported by name with its figures; the
/// coordinator writes at least once per transaction (each outcome goes to
/// its own client's connection), and each participant writes its votes.
#[test]
fn the_cluster_s_processes_are_reported_with_cpu_and_writes_per_transaction() {
    let v = bench(&[]);
    assert_eq!(v["commits"], 200, "{v}");
    let procs = v["processes"].as_array().expect("processes");
    let names: Vec<&str> = procs.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["coordinator", "p1", "p2"], "{v}");
    for p in procs {
        assert!(
            p["cpu_us_per_txn"].as_f64().is_some_and(|c| c >= 0.0),
            "{p}"
        );
        assert!(p["writes_per_txn"].as_f64().is_some_and(|w| w > 0.0), "{p}");
    }
    assert!(procs[0]["writes_per_txn"].as_f64() >= Some(1.0), "{v}");
    let sum: f64 = procs
        .iter()
        .filter_map(|p| p["cpu_us_per_txn"].as_f64())
        .sum();
    let reported = v["cluster_cpu_us_per_txn"].as_f64().expect("cluster CPU");
    assert!((reported - sum).abs() < 1e-6, "{v}");
    let rss = &v["coordinator_rss"];
    assert!(rss["idle_bytes"].as_u64().is_some_and(|b| b > 0), "{v}");
    assert!(
        rss["peak_bytes"].as_u64() >= rss["idle_bytes"].as_u64(),
        "{v}"
    );
    // Without --setsid the cluster shares the bench's session.
    let sessions: BTreeSet<u64> = procs.iter().filter_map(|p| p["session"].as_u64()).collect();
    assert_eq!(sessions.len(), 1, "{v}");
    assert_eq!(v["setsid"], false);
}

#[test]
fn setsid_starts_every_process_in_a_session_of_its_own() {
    let v = bench(&["--setsid"]);
    assert_eq!(v["commits"], 200, "{v}");
    assert_eq!(v["setsid"], true);
    let procs = v["processes"].as_array().expect("processes");
    assert_eq!(procs.len(), 3, "{v}");
    for p in procs {
        assert_eq!(p["session"], p["pid"], "{p}");
    }
}

/// The floor is measured (on the cluster's disk, in its directory) and
/// the latency percentiles are given as multiples of it.
#[test]
fn calibrate_reports_the_floor_and_the_latency_against_it() {
    let v = bench(&["--calibrate"]);
    let c = &v["calibration"];
    assert!(
        c["dir"]
            .as_str()
            .is_some_and(|d| d.contains("twopc-cluster-")),
        "{v}"
    );
    for part in ["two_forced_writes", "two_loopback_round_trips"] {
        assert!(c[part]["samples"].as_u64().is_some_and(|n| n > 0), "{v}");
    }
    let floor = c["floor_ms"].as_f64().expect("floor");
    assert!(floor > 0.0, "{v}");
    let p50 = v["latency_ms"]["p50"].as_f64().expect("p50");
    let ratio = c["p50_over_floor"].as_f64().expect("ratio");
    assert!((ratio * floor - p50).abs() < 0.01, "{v}");
}

/// The servers run on one thread unless told otherwise (the log writer is
/// a thread of its own either way).
#[test]
fn server_runtime_chooses_the_servers_runtime() {
    let threads = |v: &Value| -> Vec<u64> {
        v["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .map(|p| p["threads"].as_u64().expect("threads"))
            .collect()
    };
    let one = bench(&[]);
    assert_eq!(one["commits"], 200, "{one}");
    let many = bench(&["--server-runtime", "multi-thread"]);
    assert_eq!(many["commits"], 200, "{many}");
    assert_eq!(many["server_runtime"], "multi-thread");
    for (a, b) in threads(&one).into_iter().zip(threads(&many)) {
        assert!(a < b, "current-thread {one} vs multi-thread {many}");
    }
}

/// The flags that need a local cluster say so.
#[test]
fn setsid_needs_a_local_cluster_and_pid_a_remote_one() {
    let (code, _, err) = run_twopc(&["bench", "--setsid", "--transactions", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--local"), "{err}");
    let (code, _, err) = run_twopc(&[
        "bench",
        "--local",
        "1",
        "--pid",
        "c=1",
        "--transactions",
        "1",
    ]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run_twopc(&["bench", "--pid", "nonsense", "--transactions", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("NAME=PID"), "{err}");
}

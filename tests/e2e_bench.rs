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
/// coordinator writes at least once per transaction (at 4 in flight a turn
/// carries few transactions, each with a prepare and a decision for every
/// participant), and each participant writes its votes.
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
    assert!(
        c.get("group").is_none(),
        "one coordinator, no group floor: {v}"
    );
}

/// With a coordinator group, the calibration also times a forced write on
/// a majority of as many members, and gives what that adds over one
/// forced write alone.
#[test]
fn calibrate_with_a_group_reports_what_a_majority_s_forced_write_adds() {
    let v = bench(&["--coordinators", "3", "--calibrate"]);
    assert_eq!(
        v["commits"].as_u64().unwrap_or(0) + v["aborts"].as_u64().unwrap_or(0),
        200,
        "{v}"
    );
    let g = &v["calibration"]["group"];
    assert_eq!(g["members"], 3, "{v}");
    let majority = &g["majority_forced_write"];
    assert!(majority["samples"].as_u64().is_some_and(|n| n > 0), "{v}");
    let p50 = majority["p50_ms"].as_f64().expect("majority p50");
    let alone = v["calibration"]["two_forced_writes"]["p50_ms"]
        .as_f64()
        .expect("pair")
        / 2.0;
    let added = g["added_floor_ms"].as_f64().expect("added");
    assert!(
        (added - (p50 - alone).max(0.0)).abs() < 0.002,
        "added is the majority's write less one alone: {v}"
    );
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

/// The targets in a report, by id.
fn target<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["targets"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["id"] == id))
        .unwrap_or_else(|| panic!("no target {id} in {v}"))
}

/// 64 in flight at 16 per connection run on 4 connections, every
/// transaction answered; the warm-up is left out of the figures.
#[test]
fn pipelined_submits_share_connections_and_the_warm_up_is_not_counted() {
    let v = bench_with(&[
        "bench",
        "--local",
        "2",
        "--concurrency",
        "64",
        "--per-connection",
        "16",
        "--transactions",
        "300",
        "--warmup",
        "100",
        "--json",
    ]);
    assert_eq!(v["commits"], 300, "{v}");
    assert_eq!(v["transactions"], 300, "{v}");
    assert_eq!(v["connections"], 4, "{v}");
    assert_eq!(v["per_connection"], 16, "{v}");
    assert_eq!(v["warmup_transactions"], 100, "{v}");
    // An uneven split: 10 in flight at 4 per connection is 3 connections.
    let v = bench_with(&[
        "bench",
        "--local",
        "1",
        "--concurrency",
        "10",
        "--per-connection",
        "4",
        "--transactions",
        "50",
        "--json",
    ]);
    assert_eq!(v["connections"], 3, "{v}");
    assert_eq!(v["commits"], 50, "{v}");
}

/// Every concurrency of the curve is run and reported, with the verdict;
/// a curve other than the target's does not judge the target.
#[test]
fn curve_runs_each_concurrency_and_gives_its_verdict() {
    let (code, out, err) = run_twopc(&[
        "bench",
        "--local",
        "2",
        "--curve",
        "1,4,16",
        "--transactions",
        "40",
        "--json",
    ]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let runs = v["curve"].as_array().expect("curve");
    let cs: Vec<u64> = runs
        .iter()
        .filter_map(|r| r["concurrency"].as_u64())
        .collect();
    assert_eq!(cs, [1, 4, 16], "{v}");
    for r in runs {
        assert_eq!(r["commits"], 40, "{r}");
    }
    let verdict = &v["curve_verdict"];
    assert_eq!(verdict["points"].as_array().map(Vec::len), Some(3), "{v}");
    assert!(
        verdict["never_falls_more_than_10_percent"].is_boolean(),
        "{v}"
    );
    assert_eq!(target(&v, "curve")["met"], Value::Null, "{v}");
    // The text report prints the table and the verdict.
    let (code, out, err) = run_twopc(&[
        "bench",
        "--local",
        "1",
        "--curve",
        "1,2",
        "--transactions",
        "20",
    ]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("curve\n"), "{out}");
    assert!(out.contains("peak "), "{out}");
}

/// A transaction over 64 participants commits, and the report says the
/// target is met.
#[test]
fn sixty_four_participants_commit_one_transaction_each_over_all() {
    let v = bench_with(&[
        "bench",
        "--local",
        "64",
        "--concurrency",
        "4",
        "--transactions",
        "20",
        "--json",
    ]);
    assert_eq!(v["participants"], 64, "{v}");
    assert_eq!(v["participants_per_transaction"], 64, "{v}");
    assert_eq!(v["commits"], 20, "{v}");
    assert_eq!(target(&v, "participants_64")["met"], true, "{v}");
}

/// From 100 in flight on, the coordinator's memory per transaction in
/// flight is reported (in the text too).
#[test]
fn memory_per_transaction_in_flight_is_reported_under_a_large_load() {
    let args = [
        "bench",
        "--local",
        "2",
        "--concurrency",
        "1000",
        "--per-connection",
        "50",
        "--transactions",
        "1000",
        "--warmup",
        "0",
    ];
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let v = bench_with(&json_args);
    assert_eq!(v["commits"], 1000, "{v}");
    assert_eq!(v["connections"], 20, "{v}");
    let per_txn = v["coordinator_rss"]["bytes_per_txn_in_flight"]
        .as_f64()
        .expect("memory per transaction");
    assert!(per_txn >= 0.0, "{v}");
    // Judged at 10000 in flight only.
    assert_eq!(target(&v, "memory_per_txn_in_flight")["met"], Value::Null);
    let (code, out, err) = run_twopc(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("per transaction in flight"), "{out}");
}

/// The targets are printed; a second run compared with the first judges
/// durable against no fsync.
#[test]
fn targets_are_printed_and_compare_judges_a_pair_of_runs() {
    let at_64 = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--local",
            "2",
            "--concurrency",
            "64",
            "--transactions",
            "300",
            "--json",
        ];
        args.extend_from_slice(extra);
        bench_with(&args)
    };
    let no_fsync = at_64(&["--unsafe-no-fsync"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("no-fsync.json");
    std::fs::write(&file, no_fsync.to_string()).expect("write");
    let path = file.to_str().expect("utf-8 path");
    let v = at_64(&["--compare", path]);
    let t = target(&v, "durable_vs_no_fsync");
    assert!(t["met"].is_boolean(), "{t}");
    let ratio =
        v["throughput_tps"].as_f64().unwrap() / no_fsync["throughput_tps"].as_f64().unwrap();
    assert!(
        (t["measured"].as_f64().unwrap() - ratio).abs() < 1e-9,
        "{t}"
    );
    // Runs that differ in more than fsync are not paired.
    assert_eq!(target(&v, "setsid_vs_same_session")["met"], Value::Null);
    let (code, out, err) = run_twopc(&[
        "bench",
        "--local",
        "1",
        "--concurrency",
        "2",
        "--transactions",
        "10",
        "--skeleton-tps",
        "64=1000",
    ]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("targets"), "{out}");
    assert!(
        out.contains("not judged (needs a run at 64 in flight"),
        "{out}"
    );
}

/// Bad values of the new flags are usage errors that say what to give.
#[test]
fn bad_pipelining_curve_and_target_flags_are_usage_errors() {
    for (args, says) in [
        (&["--per-connection", "0"][..], "--per-connection"),
        (&["--per-connection", "2000"][..], "--per-connection"),
        (&["--curve", "1,0"][..], "--curve"),
        (&["--curve", "20000"][..], "--curve"),
        (&["--skeleton-tps", "64"][..], "CONCURRENCY=TPS"),
        (&["--compare", "/nonexistent/report.json"][..], "--compare"),
    ] {
        let mut all = vec!["bench", "--local", "1", "--transactions", "1"];
        all.extend_from_slice(args);
        let (code, _, err) = run_twopc(&all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

fn bench_with(args: &[&str]) -> Value {
    let (code, out, err) = run_twopc(args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bench JSON ({e}): {out}"))
}

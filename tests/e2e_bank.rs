//! The bank workload end to end: real coordinator and kv shard processes,
//! concurrent transfers, SIGKILL chaos, and the checker's verdict.

mod common;

use common::run_twopc;
use serde_json::Value;

fn seed() -> u64 {
    std::env::var("TWOPC_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
        })
}

fn bank(args: &[&str]) -> (i32, Value, String) {
    let (code, out, err) = run_twopc(args);
    let report: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    (code, report, format!("stdout: {out}\nstderr: {err}"))
}

#[test]
fn transfers_without_faults_conserve_money() {
    let (code, r, all) = bank(&["bank", "--transfers", "200", "--seed", "1", "--json"]);
    assert_eq!(code, 0, "{all}");
    assert_eq!(r["ok"], true, "{all}");
    assert_eq!(
        r["unknown"], 0,
        "no faults, so every transfer has an outcome: {all}"
    );
    assert!(r["committed"].as_u64().unwrap_or(0) > 0, "{all}");
    assert_eq!(r["total_balance"], r["expected_total"], "{all}");
}

#[test]
fn transfers_under_sigkill_chaos_stay_atomic() {
    let seed = seed().to_string();
    // Printed before the run: the transfers and the chaos schedule (victims
    // and pauses) are drawn from this seed alone.
    eprintln!("bank chaos: TWOPC_TEST_SEED={seed} replays this run's choices");
    let (code, r, all) = bank(&[
        "bank",
        "--transfers",
        "400",
        "--chaos",
        "--seed",
        &seed,
        "--json",
    ]);
    assert_eq!(code, 0, "seed {seed}: {all}");
    assert_eq!(r["ok"], true, "seed {seed}: {all}");
    assert!(
        r["kills"].as_array().is_some_and(|k| !k.is_empty()),
        "seed {seed}: chaos killed nothing: {all}"
    );
    assert_eq!(
        r["violations"].as_array().map(|v| v.len()),
        Some(0),
        "seed {seed}: {all}"
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    let (code, _, err) = run_twopc(&["bank", "--shards", "1"]);
    assert_eq!(code, 2);
    assert!(err.contains("--shards"), "{err}");
}

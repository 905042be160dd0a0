//! The bank workload end to end: real coordinator and kv shard processes,
//! concurrent transfers, SIGKILL chaos, and the checker's verdict.

mod common;

use common::run_twopc;
use serde_json::Value;

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
    let seed = common::seed().to_string();
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

/// Every process (coordinator and three shards) is killed inside its second
/// and, in a second run, its third log checkpoint, at each checkpoint crash
/// point, while transfers run; tiny segments make checkpoints frequent. Each
/// is restarted on its data directory, and the checker must find money
/// conserved, every transfer on both shards or neither, and every outcome a
/// client was told kept. (With 800 transfers every process reached an
/// eighth checkpoint in runs made to check that, so the third is reached
/// with a wide margin.) Run against a checkpoint written straight into its
/// segment and a snapshot that clears prepared writes, the partial-write
/// runs found a committed transfer applied on one shard only in three of
/// four tries.
#[test]
fn transfers_survive_a_crash_at_every_checkpoint_step() {
    let points: Vec<&str> = twopc::crash::POINTS
        .iter()
        .copied()
        .filter(|p| p.starts_with("wal.checkpoint."))
        .collect();
    assert_eq!(points.len(), 4, "{points:?}");
    for point in points {
        for nth in [2, 3] {
            let spec = format!("{point}:{nth}");
            let (code, r, all) = bank(&[
                "bank",
                "--transfers",
                "800",
                "--seed",
                "1",
                "--crash-at",
                &spec,
                "--wal-segment-max-bytes",
                "4096",
                "--json",
            ]);
            assert_eq!(code, 0, "{spec}: {all}");
            assert_eq!(r["ok"], true, "{spec}: {all}");
            let mut killed: Vec<&str> = r["kills"]
                .as_array()
                .map(|k| k.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            killed.sort();
            let want: Vec<String> = ["coordinator", "s1", "s2", "s3"]
                .iter()
                .map(|n| format!("{n} at {point}"))
                .collect();
            assert_eq!(killed, want, "{spec}: every process dies once: {all}");
            assert_eq!(r["total_balance"], r["expected_total"], "{spec}: {all}");
        }
    }
}

#[test]
fn an_unknown_crash_point_is_a_usage_error() {
    let (code, _, err) = run_twopc(&["bank", "--crash-at", "wal.nowhere"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown crash point `wal.nowhere`")
            && err.contains("wal.checkpoint.partial_write"),
        "{err}"
    );
}

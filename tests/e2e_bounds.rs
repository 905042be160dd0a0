//! Text and data that clients control, end to end with real processes: a
//! large stored value must not be multiplied by the transactions that read
//! it or fail against it (in memory, in logs, in operator lists), and a key
//! with a newline must not forge a log line.
//!
//! Memory is the resident set (`VmRSS` of `/proc/PID/status`) of each
//! process, measured after a warm-up round so that the allocator's steady
//! state is not counted as growth. The bounds are a small fraction of what
//! keeping one copy of the value per transaction would take, and far above
//! what a slow machine changes.

mod common;

use common::*;
use serde_json::{json, Value};
use twopc::protocol::bound::REASON_MAX_BYTES;
use twopc::protocol::Decision;

/// Size of the stored value, in bytes: big, yet a read of it still fits in
/// the default 1 MiB frame.
const VALUE_BYTES: usize = 900 * 1024;
/// Transactions of each kind (reads, failed expects) after the warm-up.
const ROUNDS: usize = 150;
/// Transactions of each kind before the baseline is measured.
const WARM_UP: usize = 10;
/// Most growth of either process's resident set over the rounds. One kept
/// copy of the value per transaction would be ROUNDS * VALUE_BYTES (about
/// 132 MiB) for the reads alone, and the coordinator used to keep several
/// per failed expect.
const RSS_GROWTH_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Most growth of either process's log over the rounds (info level).
/// Logging one copy of the value per failed expect would be about 132 MiB.
const LOG_GROWTH_MAX_BYTES: u64 = 8 * 1024 * 1024;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

fn file_bytes(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// `n` rounds on one connection: each one read of the big value, then one
/// `expect` that fails against it.
fn rounds(addr: &str, n: usize) {
    block_on(async {
        let mut client = twopc::client::Client::connect(addr, PATIENCE)
            .await
            .expect("connect");
        for _ in 0..n {
            round(&mut client).await;
        }
    })
}

async fn round(client: &mut twopc::client::Client) {
    let read = req(json!({"operations": {"p1": [{"op": "get", "key": "big"}]}}));
    let (_, o) = client.submit(read).await.expect("read submit");
    assert_eq!(o.decision, Decision::Commit, "{:?}", o.reason);
    let got = &o.results[&"p1".into()]["big"];
    assert_eq!(
        got.as_str().map(str::len),
        Some(VALUE_BYTES),
        "the submitting client still gets its results"
    );
    let expect = req(json!({"operations": {"p1": [
        {"op": "put", "key": "big", "value": 1, "expect": "something else"}
    ]}}));
    let (_, o) = client.submit(expect).await.expect("expect submit");
    assert_eq!(o.decision, Decision::Abort);
    let reason = o.reason.unwrap_or_default();
    assert!(reason.contains("expect_mismatch"), "{reason}");
    assert!(
        reason.len() <= REASON_MAX_BYTES,
        "outcome reason of {} bytes",
        reason.len()
    );
}

fn assert_reasons_bounded(list: &Value, side: &str) {
    let txns = list["transactions"].as_array().expect("transactions");
    assert!(!txns.is_empty(), "{side}: empty list");
    for t in txns {
        for field in ["reason", "last_error", "heuristic"] {
            if let Some(r) = t.get(field).and_then(Value::as_str) {
                assert!(
                    r.len() <= REASON_MAX_BYTES,
                    "{side}: {field} of {} bytes in {}",
                    r.len(),
                    t["transaction_id"]
                );
                assert!(!r.contains("vvvvvvvv"), "{side}: the value leaks: {field}");
            }
        }
    }
}

#[test]
fn a_large_stored_value_is_not_multiplied_by_transactions() {
    let mut c = Cluster::new();
    let seed = c.path("seed.json");
    std::fs::write(&seed, json!({ "big": "v".repeat(VALUE_BYTES) }).to_string()).unwrap();
    let seed = seed.display().to_string();
    // Info level, as in production: the amplification was in info lines.
    let info = [("RUST_LOG", "info")];
    c.start_coordinator(&["--expected-participants", "1"], &info);
    let (_, admin) =
        c.start_participant_admin("p1", &["--resource", "kv", "--kv-seed-file", &seed], &info);
    c.wait_ready(1);
    rounds(&c.addr(), WARM_UP);
    let coordinator_pid = c.coordinator.as_ref().and_then(Proc::pid).unwrap();
    let participant_pid = c.participants[0].pid().unwrap();
    let rss0 = (rss_bytes(coordinator_pid), rss_bytes(participant_pid));
    let log0 = (
        file_bytes(&c.path("coordinator.log")),
        file_bytes(&c.path("p1.log")),
    );

    rounds(&c.addr(), ROUNDS);

    let rss1 = (rss_bytes(coordinator_pid), rss_bytes(participant_pid));
    let log1 = (
        file_bytes(&c.path("coordinator.log")),
        file_bytes(&c.path("p1.log")),
    );
    let grew = |a: u64, b: u64| b.saturating_sub(a);
    for (side, rss, log) in [
        ("coordinator", grew(rss0.0, rss1.0), grew(log0.0, log1.0)),
        ("participant", grew(rss0.1, rss1.1), grew(log0.1, log1.1)),
    ] {
        eprintln!("{side}: resident set +{rss} bytes, log +{log} bytes");
        assert!(
            rss <= RSS_GROWTH_MAX_BYTES,
            "{side} resident set grew by {rss} bytes over {ROUNDS} rounds"
        );
        assert!(
            log <= LOG_GROWTH_MAX_BYTES,
            "{side} log grew by {log} bytes over {ROUNDS} rounds"
        );
    }

    // Operator lists still answer, and hold no long reason.
    let (code, out, err) = c.twopc(&["txn", "list", "--coordinator", &c.addr(), "--json"]);
    assert_eq!(code, 0, "twopc txn list failed: {err}");
    let list: Value = serde_json::from_str(&out).expect("txn list JSON");
    assert_eq!(list["total"], json!(2 * (ROUNDS + WARM_UP)));
    assert_reasons_bounded(&list, "coordinator");
    let plist = participant_txn_list(&admin, None);
    assert_reasons_bounded(&plist, "participant");
    let aborted = participant_txn_list(&admin, Some("aborted"));
    assert_eq!(aborted["total"], json!(ROUNDS + WARM_UP));

    // `txn show` of a read says its results were not kept.
    let read_id = list["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["decision"] == "commit")
        .map(|t| t["transaction_id"].as_str().unwrap().to_string())
        .expect("a committed read in the list");
    let (code, out, err) = c.twopc(&[
        "txn",
        "show",
        &read_id,
        "--coordinator",
        &c.addr(),
        "--json",
    ]);
    assert_eq!(code, 0, "twopc txn show failed: {err}");
    let shown: Value = serde_json::from_str(&out).expect("txn show JSON");
    assert!(
        shown["results_dropped"]
            .as_str()
            .is_some_and(|s| s.contains("sent in the outcome")),
        "{shown}"
    );
    assert!(shown.get("results").is_none());
}

#[test]
fn a_key_with_a_newline_cannot_forge_a_log_line() {
    let mut c = Cluster::new();
    c.start_coordinator(&["--expected-participants", "1"], &[]);
    c.start_participant("p1", &["--resource", "kv"], &[]);
    c.wait_ready(1);
    // A failed expect on this key puts the key into the abort reason, which
    // both sides log at info.
    // (The formatter already writes ESC as `\x1b`; newline and carriage
    // return are this writer's to escape.)
    let key = "x\nERROR forged: the coordinator lost its log\r\u{1b}[2J";
    let (_, o) = c
        .submit(req(json!({"operations": {"p1": [
            {"op": "delete", "key": key, "expect": 1}
        ]}})))
        .expect("submit");
    assert_eq!(o.decision, Decision::Abort);
    assert!(o.reason.as_deref().unwrap_or("").contains(key), "{o:?}");
    let mut coordinator = c.coordinator.take().unwrap();
    coordinator.terminate();
    c.participants[0].terminate();
    for (side, path) in [
        ("coordinator", c.path("coordinator.log")),
        ("participant", c.path("p1.log")),
    ] {
        let text = std::fs::read_to_string(&path).expect("log");
        assert!(
            text.contains("x\\nERROR forged: the coordinator lost its log\\r"),
            "{side}: the escaped key is missing from the log:\n{text}"
        );
        for line in text.lines() {
            assert!(
                !line.starts_with("ERROR forged"),
                "{side}: a forged line: {line:?}"
            );
            assert!(!line.contains('\u{1b}') && !line.contains('\r'), "{line:?}");
        }
    }
}

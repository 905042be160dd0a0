//! The `twopc` command line against real clusters: exit statuses, the
//! `--json` shapes scripts depend on, the demo and the benchmark.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// Bound on one CLI run; the demo starts and stops a whole cluster.
const CLI_LIMIT: Duration = Duration::from_secs(120);

fn twopc(args: &[&str]) -> (i32, String, String) {
    run_bounded(clean_command(TWOPC).args(args), CLI_LIMIT)
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn parse_json(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{stdout}"))
}

/// p1 votes commit, p2 votes abort.
fn mixed_cluster() -> Cluster {
    let mut c = Cluster::new();
    c.start_coordinator(&["--expected-participants", "2"], &[]);
    c.start_participant("p1", &[], &[]);
    c.start_participant("p2", &["--vote-preference", "abort"], &[]);
    c.wait_ready(2);
    c
}

#[test]
fn submit_json_committed_exits_0() {
    let c = mixed_cluster();
    let addr = c.addr();
    let (code, out, err) = twopc(&[
        "submit",
        "--coordinator",
        &addr,
        "--payload",
        r#"{"order": 42}"#,
        "--participants",
        "p1",
        "--json",
    ]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let v = parse_json(&out);
    assert_eq!(
        keys(&v),
        BTreeSet::from([
            "transaction_id",
            "decision",
            "votes",
            "reason",
            "duration_ms"
        ]),
        "{v}"
    );
    assert!(
        v["transaction_id"].as_str().is_some_and(|t| !t.is_empty()),
        "{v}"
    );
    assert_eq!(v["decision"], "commit", "{v}");
    assert_eq!(v["votes"], json!({"p1": "commit"}), "{v}");
    assert_eq!(v["reason"], Value::Null, "{v}");
    assert!(v["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{v}");
}

#[test]
fn submit_json_aborted_exits_3() {
    let c = mixed_cluster();
    let addr = c.addr();
    let (code, out, err) = twopc(&["submit", "--coordinator", &addr, "--json"]);
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    let v = parse_json(&out);
    assert_eq!(v["decision"], "abort", "{v}");
    assert_eq!(v["votes"]["p2"], "abort", "{v}");
    assert!(
        v["reason"].as_str().is_some_and(|r| r.contains("p2")),
        "{v}"
    );
    // Without --json: a readable outcome, same exit status.
    let (code, out, _) = twopc(&["submit", "--coordinator", &addr, "--participants", "p1,p2"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("ABORTED") && out.contains("p2"), "{out}");
}

#[test]
fn submit_without_a_decision_exits_1() {
    // Nobody listens on this port.
    let addr = format!("127.0.0.1:{}", free_port());
    let (code, out, err) = twopc(&["submit", "--coordinator", &addr, "--json"]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let v = parse_json(&out);
    assert_eq!(keys(&v), BTreeSet::from(["error", "message"]), "{v}");
    assert!(err.contains(&addr), "stderr names the address: {err}");

    // A refusal is not a decision either, and its code reaches --json.
    let c = mixed_cluster();
    let addr = c.addr();
    let (code, out, err) = twopc(&[
        "submit",
        "--coordinator",
        &addr,
        "--participants",
        "p7",
        "--json",
    ]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(parse_json(&out)["error"], "unknown_participant", "{out}");

    // The client's own timeout: a participant that never votes, a
    // coordinator that would wait two minutes for it.
    let mut slow = Cluster::new();
    slow.start_coordinator(
        &["--expected-participants", "1", "--timeout-seconds", "120"],
        &[],
    );
    slow.start_participant("p1", &["--vote-delay-ms", "600000"], &[]);
    slow.wait_ready(1);
    let addr = slow.addr();
    let (code, out, err) = twopc(&[
        "submit",
        "--coordinator",
        &addr,
        "--timeout-seconds",
        "1",
        "--json",
    ]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(parse_json(&out)["error"], "no_decision", "{out}");
}

#[test]
fn submit_usage_errors_exit_2() {
    let c = mixed_cluster();
    let addr = c.addr();
    let (code, out, err) = twopc(&[
        "submit",
        "--coordinator",
        &addr,
        "--payload",
        "{not json",
        "--json",
    ]);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("--payload"), "{err}");
    let (code, _, err) = twopc(&["submit", "--coordinator", &addr, "--participants", ","]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = twopc(&["submit", "--coordinator", &addr, "--no-such-flag"]);
    assert_eq!(code, 2, "{err}");
    // None of these reached the coordinator.
    assert_eq!(settled_counts(&c), (0, 0));
}

#[test]
fn status_json_shape() {
    let c = mixed_cluster();
    let (_, o) = c.submit(req(json!({}))).expect("submit");
    assert_eq!(o.decision, twopc::protocol::Decision::Abort);
    settled_counts(&c);
    let (code, out, err) = twopc(&["status", "--coordinator", &c.addr(), "--json"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let v = parse_json(&out);
    assert_eq!(v["state"], "READY", "{v}");
    let parts = v["participants"]
        .as_array()
        .unwrap_or_else(|| panic!("participants: {v}"));
    let ids: Vec<&str> = parts.iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids, ["p1", "p2"], "{v}");
    for p in parts {
        assert!(
            keys(p).is_superset(&BTreeSet::from([
                "id",
                "connected",
                "alive",
                "last_heartbeat_age_ms"
            ])),
            "{p}"
        );
        assert_eq!(p["connected"], true, "{p}");
        assert!(p["alive"].is_boolean(), "{p}");
        assert!(p["last_heartbeat_age_ms"].is_u64(), "{p}");
    }
    let t = &v["transactions"];
    assert!(
        keys(t).is_superset(&BTreeSet::from([
            "committed",
            "aborted",
            "in_flight",
            "awaiting_acks"
        ])),
        "{t}"
    );
    assert_eq!(t["committed"], 0, "{t}");
    assert_eq!(t["aborted"], 1, "{t}");
    assert_eq!(t["in_flight"], 0, "{t}");
    assert_eq!(t["awaiting_acks"], 0, "{t}");

    // Human form, and the exit status when the coordinator is gone.
    let (code, out, _) = twopc(&["status", "--coordinator", &c.addr()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("READY") && out.contains("p1") && out.contains("p2"),
        "{out}"
    );
    let gone = format!("127.0.0.1:{}", free_port());
    let (code, _, err) = twopc(&["status", "--coordinator", &gone, "--json"]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn demo_prints_a_table_and_a_summary() {
    let (code, out, err) = twopc(&["demo", "--participants", "2", "--transactions", "5"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let header = out
        .lines()
        .find(|l| l.contains("TRANSACTION") && l.contains("DECISION"))
        .unwrap_or_else(|| panic!("no table header:\n{out}"));
    assert!(header.contains("p1") && header.contains("p2"), "{header}");
    // Rows start with their number and show the decision.
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<usize>().is_ok())
        })
        .collect();
    assert_eq!(
        rows.len(),
        5,
        "rows:\n{}\n\nstdout:\n{out}",
        rows.join("\n")
    );
    for (i, row) in rows.iter().enumerate() {
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(words[0], (i + 1).to_string(), "{row}");
        assert!(
            words.contains(&"COMMIT") || words.contains(&"ABORT"),
            "{row}"
        );
    }
    assert!(out.contains("Summary: 5 transactions"), "{out}");
}

#[test]
fn demo_rejects_bad_arguments() {
    let (code, _, err) = twopc(&["demo", "--participants", "0"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = twopc(&["demo", "--vote-preference", "maybe"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("maybe"), "{err}");
}

#[test]
fn bench_reports_every_transaction() {
    let mut c = Cluster::new();
    c.start_coordinator(&["--expected-participants", "2"], &[]);
    c.start_participants(2, &[]);
    c.wait_ready(2);
    let args = [
        "bench",
        "--coordinator",
        &c.addr(),
        "--concurrency",
        "4",
        "--transactions",
        "50",
        "--json",
    ];
    let (code, out, err) = twopc(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let v = parse_json(&out);
    assert_eq!(v["transactions"], 50, "{v}");
    assert_eq!(v["commits"], 50, "{v}");
    assert_eq!(v["aborts"], 0, "{v}");
    assert_eq!(v["errors"], json!({}), "{v}");
    assert_eq!(v["concurrency"], 4, "{v}");
    assert_eq!(v["participants"], 2, "{v}");
    let l = &v["latency_ms"];
    for k in ["p50", "p90", "p99", "max"] {
        assert!(l[k].as_f64().is_some_and(|x| x > 0.0), "latency {k}: {v}");
    }
    assert!(l["p50"].as_f64() <= l["max"].as_f64(), "{v}");
    assert_eq!(settled_counts(&c), (50, 0));
}

/// An address without a port is a usage error (exit 2) naming the flag, and
/// a resolve without a decision names both ways to give one.
#[test]
fn addresses_need_a_port_and_resolve_names_both_decisions() {
    for args in [
        &["status", "--coordinator", "127.0.0.1"][..],
        &["txn", "list", "--participant", "localhost"][..],
        &[
            "txn",
            "resolve",
            "t-1",
            "--participant",
            "127.0.0.1",
            "--abort",
            "--reason",
            "r",
        ][..],
    ] {
        let (code, _, err) = twopc(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("is not HOST:PORT") && err.contains("add the port"),
            "{args:?}: {err}"
        );
    }
    let (code, _, err) = twopc(&[
        "txn",
        "resolve",
        "t-1",
        "--participant",
        "127.0.0.1:1",
        "--reason",
        "r",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--commit|--abort"), "{err}");
}

/// Output into a pipe that closes early (`twopc wal inspect DIR --json |
/// head -c 600`) ends the tool quietly by SIGPIPE, never with a panic.
#[test]
fn a_closed_pipe_ends_the_tool_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let mut wal = twopc::wal::Wal::open(dir.path(), twopc::wal::WalOptions::default())
        .unwrap()
        .wal;
    for i in 0..5000 {
        let r = twopc::Record::End {
            txn: twopc::TxnId(format!("a-fairly-long-transaction-id-{i:06}")),
        };
        wal.write(&twopc::wal::encode_record(&r)).unwrap();
    }
    drop(wal);
    let mut child = clean_command(TWOPC)
        .args(["wal", "inspect"])
        .arg(dir.path())
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn twopc");
    let mut head = [0u8; 600];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut head)
        .expect("600 bytes");
    // The read end is closed here (dropped): the tool's next write fails.
    let status = child.wait().expect("wait");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        status.code() == Some(0) || status.signal() == Some(libc::SIGPIPE),
        "{status:?}: {err}"
    );
}

/// `participants list` and `status` say yes/no alike.
#[test]
fn participant_tables_say_yes_or_no() {
    let c = mixed_cluster();
    for args in [
        &["participants", "list", "--coordinator", &c.addr()][..],
        &["status", "--coordinator", &c.addr()][..],
    ] {
        let (code, out, err) = twopc(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        let rows: Vec<&str> = out
            .lines()
            .filter(|l| l.trim_start().starts_with('p'))
            .collect();
        assert!(!rows.is_empty(), "{args:?}: {out}");
        for row in rows {
            assert!(
                row.contains("yes") && !row.contains("true") && !row.contains("false"),
                "{args:?}: {row}"
            );
        }
    }
}

/// Packaging: shell completions for the whole command tree and a manual
/// page, both on stdout.
#[test]
fn completions_and_the_manual_page_cover_every_command() {
    for (shell, marker) in [
        ("bash", "_twopc()"),
        ("zsh", "#compdef twopc"),
        ("fish", "complete -c twopc"),
    ] {
        let (code, out, err) = twopc(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(
            out.contains(marker),
            "{shell}: {}",
            &out[..out.len().min(200)]
        );
        for sub in ["submit", "status", "txn", "resolve", "keys", "completions"] {
            assert!(out.contains(sub), "{shell} completion lacks `{sub}`");
        }
    }
    let (code, _, err) = twopc(&["completions", "nosh"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = twopc(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(".TH twopc 1"),
        "{}",
        &out[..out.len().min(200)]
    );
    for sub in ["submit", "txn", "keys", "man"] {
        assert!(out.contains(sub), "the manual page lacks `{sub}`");
    }
}

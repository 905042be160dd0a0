//! What operators are told, end to end with real processes: transaction ids
//! a client chooses run at most once (across a coordinator crash too), the
//! assigned id is told before the outcome, an abort nobody doubts is not
//! counted in doubt, and membership changes are refused, forced, told to the
//! participant and kept in the coordinator's log.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// `twopc submit --json` against `c` with `extra` arguments: (exit code,
/// the JSON printed, stderr).
fn submit_cli(c: &Cluster, extra: &[&str]) -> (i32, Value, String) {
    let addr = c.addr();
    let mut args = vec!["submit", "--coordinator", &addr, "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = c.twopc(&args);
    let v = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("submit printed no JSON ({e}): {out:?}; stderr {err}"));
    (code, v, err)
}

fn committed_count(c: &Cluster) -> u64 {
    c.status()["transactions"]["committed"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn a_client_named_transaction_runs_once_even_across_a_coordinator_crash() {
    let mut c = Cluster::new();
    c.start_coordinator(&["--expected-participants", "2"], &[]);
    c.start_participant("p1", &[], &[]);
    c.start_participant("p2", &["--vote-preference", "abort"], &[]);
    c.wait_ready(2);

    // A commit on p1 alone, then the same id again: the recorded outcome,
    // nothing run a second time.
    let (code, first, _) = submit_cli(&c, &["--txn-id", "order-1", "--participants", "p1"]);
    assert_eq!((code, &first["decision"]), (0, &Value::from("commit")));
    assert_eq!(first["transaction_id"], "order-1");
    assert!(first.get("repeated").is_none(), "{first}");
    let (code, again, _) = submit_cli(&c, &["--txn-id", "order-1", "--participants", "p1"]);
    assert_eq!(
        (code, &again["repeated"]),
        (0, &Value::Bool(true)),
        "{again}"
    );
    assert_eq!(again["decision"], "commit");
    c.wait_status("order-1 ended", |s| {
        s["transactions"]["committed"] == 1 && s["transactions"]["awaiting_acks"] == 0
    });

    // An abort (p2 votes abort) is kept too.
    let (code, aborted, _) = submit_cli(&c, &["--txn-id", "order-2"]);
    assert_eq!((code, &aborted["decision"]), (3, &Value::from("abort")));
    let (code, again, _) = submit_cli(&c, &["--txn-id", "order-2"]);
    assert_eq!(
        (code, &again["repeated"]),
        (3, &Value::Bool(true)),
        "{again}"
    );

    // The same id for another request is refused, naming the reuse.
    let (code, refused, err) = submit_cli(&c, &["--txn-id", "order-1", "--participants", "p2"]);
    assert_eq!(code, 1, "{refused} {err}");
    assert!(
        err.contains("already used for a different request"),
        "{err}"
    );

    // After kill -9 and a restart, both ids are answered from the log.
    c.coordinator.as_mut().unwrap().kill9();
    c.restart_coordinator();
    c.wait_ready(2);
    let (code, after, _) = submit_cli(&c, &["--txn-id", "order-1", "--participants", "p1"]);
    assert_eq!(
        (code, &after["repeated"]),
        (0, &Value::Bool(true)),
        "{after}"
    );
    let (code, after, _) = submit_cli(&c, &["--txn-id", "order-2"]);
    assert_eq!(
        (code, &after["repeated"]),
        (3, &Value::Bool(true)),
        "{after}"
    );
    assert_eq!(after["decision"], "abort");
    // Nothing ran again: the restarted coordinator knows order-1 from its
    // log (recovered), not from a new run.
    let addr = c.addr();
    let (code, shown, err) = c.twopc(&["txn", "show", "order-1", "--coordinator", &addr, "--json"]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(shown.trim()).unwrap();
    assert_eq!(shown["recovered"], true, "{shown}");
    assert_eq!(committed_count(&c), 1, "the one commit, from the log");

    // Without --txn-id the assigned id is told on stderr as soon as the
    // transaction starts, and it is the outcome's id.
    let (code, out, err) = submit_cli(&c, &["--participants", "p1"]);
    assert_eq!(code, 0);
    let id = out["transaction_id"].as_str().unwrap().to_string();
    assert!(
        err.contains(&format!("transaction {id} started")),
        "stderr does not name {id}: {err}"
    );
    // A bad id is a usage error naming the rule.
    let (code, _, err) = c.twopc(&[
        "submit",
        "--coordinator",
        &c.addr(),
        "--txn-id",
        "no spaces",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("[A-Za-z0-9_.:-]"), "{err}");
}

/// One GET on the admin port; (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the admin port");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    (head[9..12].parse().unwrap(), body.to_string())
}

/// The value of an unlabelled metric.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
}

fn wait_metric(admin: &str, name: &str, want: f64) {
    let start = Instant::now();
    loop {
        let (_, m) = get(admin, "/metrics");
        let v = metric(&m, name);
        if v == want {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{name} stayed {v}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_with_admin(c: &mut Cluster, expected: &str) -> String {
    let proc = c.start_coordinator(
        &["--expected-participants", expected, "--admin-port", "0"],
        &[],
    );
    let text = wait_log(proc, 0, "admin http listening on ");
    const NEEDLE: &str = "admin http listening on ";
    let at = text.find(NEEDLE).unwrap() + NEEDLE.len();
    text[at..]
        .chars()
        .take_while(|ch| ch.is_ascii_digit() || *ch == '.' || *ch == ':')
        .collect()
}

#[test]
fn an_abort_because_a_participant_is_down_is_not_counted_in_doubt() {
    let mut c = Cluster::new();
    let admin = start_with_admin(&mut c, "3");
    c.start_participants(3, &[]);
    c.wait_ready(3);
    c.participants[2].kill9();
    c.wait_status("p3 gone", |s| connected(s) == 2);
    let (code, out, _) = submit_cli(&c, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out["reason"]
            .as_str()
            .is_some_and(|r| r.contains("participant_unavailable: p3")),
        "{out}"
    );
    // p1 and p2 were asked and acknowledge the abort; p3 was never asked
    // and owes nothing, so nothing stays in doubt while it is down.
    wait_metric(&admin, "twopc_transactions_in_doubt", 0.0);
    let s = c.status();
    assert_eq!(s["transactions"]["aborted"], 1, "{s}");
    assert_eq!(s["transactions"]["awaiting_acks"], 0, "{s}");
}

#[test]
fn removing_a_running_participant_needs_force_and_stops_it() {
    let mut c = Cluster::new();
    let admin = start_with_admin(&mut c, "3");
    c.start_participants(3, &[]);
    c.wait_ready(3);
    let addr = c.addr();

    let (code, _, err) = c.twopc(&["participants", "remove", "p3", "--coordinator", &addr]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(c.participants[2].is_running());

    let (code, out, err) = c.twopc(&[
        "participants",
        "remove",
        "p3",
        "--force",
        "--coordinator",
        &addr,
    ]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("removed p3"), "{out}");
    // The participant is told, does not retry, and says why.
    let status = c.participants[2]
        .wait_exit(PATIENCE)
        .expect("p3 exits after a forced removal");
    assert_eq!(status.code(), Some(3), "{status:?}");
    let log = c.participants[2].log_text();
    assert!(
        log.contains("removed from the cluster by an operator"),
        "{log}"
    );

    // Status, health and metrics agree: two expected, two registered.
    let s = c.status();
    assert_eq!(
        (&s["expected_participants"], &s["participants_registered"]),
        (&Value::from(2), &Value::from(2)),
        "{s}"
    );
    let (code, health) = get(&admin, "/health");
    assert_eq!(code, 200, "{health}");
    let h: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        (&h["expected_participants"], &h["participants_registered"]),
        (&Value::from(2), &Value::from(2)),
        "{h}"
    );
    let (_, m) = get(&admin, "/metrics");
    assert_eq!(metric(&m, "twopc_participants_expected"), 2.0);
    assert_eq!(metric(&m, "twopc_participants_registered"), 2.0);
    let (_, out, _) = c.twopc(&["status", "--coordinator", &addr]);
    assert!(out.contains("READY (2 registered, 2 expected)"), "{out}");

    // The coordinator told it in its log, with the address.
    let clog = c.coordinator.as_ref().unwrap().log_text();
    for needle in [
        "participant p1 registered (a new member)",
        "cluster READY: 3 of 3 expected participants registered",
        "participant p3 removed by an operator (forced, while connected); the cluster expects 2 participant(s)",
    ] {
        assert!(clog.contains(needle), "no {needle:?} in the coordinator log");
    }
    assert!(
        clog.contains("peer=127.0.0.1:"),
        "notices carry the peer address"
    );

    // Membership is in the log: a restarted coordinator knows whom it
    // expects, and p3 coming back is refused and stops.
    c.coordinator.as_mut().unwrap().kill9();
    let (code, wal) = wal_inspect(&c.path("coordinator"));
    assert_eq!(code, 0, "{wal}");
    let changes: Vec<(String, String)> = wal["membership"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["participant"].as_str().unwrap().to_string(),
                m["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        changes.contains(&("p3".into(), "removed".into())),
        "{changes:?}"
    );
    c.restart_coordinator();
    c.wait_ready(2);
    let s = c.status();
    assert_eq!(s["expected_participants"], 2, "{s}");
    assert_eq!(participant_ids(&s), vec!["p1", "p2"], "{s}");
    c.restart_participant(2, &[], &[]);
    let status = c.participants[2]
        .wait_exit(PATIENCE)
        .expect("a removed participant is refused and exits");
    assert_eq!(status.code(), Some(3), "{status:?}");
}

/// One JSON POST on the admin port; (status, body as JSON).
fn post(addr: &str, path: &str, body: &Value) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the admin port");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let body = body.to_string();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    (
        head[9..12].parse().unwrap(),
        serde_json::from_str(body).unwrap(),
    )
}

#[test]
fn a_transaction_id_posted_over_http_runs_once() {
    let mut c = Cluster::new();
    let admin = start_with_admin(&mut c, "1");
    c.start_participants(1, &[]);
    c.wait_ready(1);
    let body = serde_json::json!({"data": {"order": 5}, "transaction_id": "web-5"});
    let (code, first) = post(&admin, "/transactions", &body);
    assert_eq!(code, 200, "{first}");
    assert_eq!(
        (&first["transaction_id"], &first["decision"]),
        (&Value::from("web-5"), &Value::from("commit"))
    );
    assert!(first.get("repeated").is_none(), "{first}");
    let (code, again) = post(&admin, "/transactions", &body);
    assert_eq!(
        (code, &again["repeated"]),
        (200, &Value::Bool(true)),
        "{again}"
    );
    let other = serde_json::json!({"data": {"order": 6}, "transaction_id": "web-5"});
    let (code, refused) = post(&admin, "/transactions", &other);
    assert_eq!(code, 409, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("already used for a different request")),
        "{refused}"
    );
    let bad = serde_json::json!({"transaction_id": "not ok"});
    let (code, refused) = post(&admin, "/transactions", &bad);
    assert_eq!(code, 400, "{refused}");
}

//! A coordinator frozen with SIGSTOP (a stalled VM, a long GC-like pause):
//! its sockets stay open but nothing answers. Clients must give up with a
//! clear error, a participant in doubt must keep asking and stay in doubt
//! (never deciding alone), and after SIGCONT every transaction ends with
//! one outcome that the coordinator and the participants agree on.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Instant;
use twopc::protocol::{Body, Decision, TxnId};

/// The state letter of process `pid` in /proc (`T` once stopped).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    stat.rsplit_once(") ")?.1.chars().next()
}

fn signal(proc: &Proc, sig: i32, want: impl Fn(char) -> bool, what: &str) {
    let pid = proc.pid().expect("a running process");
    // SAFETY: kill(2) on a child this test owns; no memory is involved.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
    let start = Instant::now();
    while !proc_state(pid).is_some_and(&want) {
        assert!(start.elapsed() < PATIENCE, "{} never {what}", proc.name);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A participant's view of transaction `id`.
fn show(admin: &str, id: &str) -> Value {
    ask_participant(
        admin,
        Body::TxnShow {
            txn: TxnId(id.to_string()),
        },
    )
    .unwrap_or_else(|e| panic!("txn show {id} at {admin}: {e}"))
}

/// Poll a participant's view of `id` until `pred` holds.
fn wait_show(admin: &str, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let t = show(admin, id);
        if pred(&t) {
            return t;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "timed out waiting for {what}: {t}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_stopped_coordinator_leaves_participants_in_doubt_and_settles_after_sigcont() {
    let mut c = Cluster::new();
    c.start_coordinator(&["--expected-participants", "2"], &[]);
    // p1 asks about an in-doubt transaction after 0.2 s; p2 would vote only
    // after ten minutes, so the transaction below stays undecided until the
    // test removes p2.
    let (_, p1) = c.start_participant_admin("p1", &["--timeout-seconds", "0.2"], &[]);
    let (_, _) = c.start_participant_admin("p2", &["--vote-delay-ms", "600000"], &[]);
    c.wait_ready(2);

    let addr = c.addr();
    let client = std::thread::spawn(move || submit_to(&addr, req(json!({"paused": true}))));
    let listed = poll_list(&p1);
    let id = listed["transactions"][0]["transaction_id"]
        .as_str()
        .expect("transaction_id")
        .to_string();

    let coordinator = c.coordinator.as_ref().expect("coordinator");
    signal(coordinator, libc::SIGSTOP, |s| s == 'T', "stopped");
    let queries = show(&p1, &id)["queries"].as_u64().expect("queries");

    // A client's submit gets no answer and says so.
    let (code, out, err) = run_twopc(&[
        "submit",
        "--coordinator",
        &c.addr(),
        "--timeout-seconds",
        "1",
    ]);
    assert_eq!(code, 1, "stdout {out}; stderr {err}");
    assert!(
        err.contains("no answer from the coordinator within 1s"),
        "{err}"
    );

    // p1 keeps asking a coordinator that does not answer, and stays in
    // doubt: it has voted commit and must not decide on its own.
    let t = wait_show(&p1, &id, "p1 to ask twice more", |t| {
        t["queries"].as_u64().is_some_and(|q| q >= queries + 2)
    });
    assert_eq!(t["state"], "prepared", "{t}");
    assert!(t["heuristic"].is_null(), "{t}");

    let coordinator = c.coordinator.as_ref().expect("coordinator");
    signal(coordinator, libc::SIGCONT, |s| s != 'T', "resumed");
    // p2 never voted: once it is gone the coordinator can only abort.
    c.participants[1].kill9();
    let (told_id, o) = client
        .join()
        .expect("client thread")
        .expect("the client's outcome after SIGCONT");
    assert_eq!(told_id.0, id);
    assert_eq!(o.decision, Decision::Abort, "{o:?}");
    let p2 = c.restart_participant_admin(1, &[], &[]);
    c.wait_ready(2);
    let t = wait_show(&p1, &id, "p1 to learn the decision", |t| {
        t["state"] != "prepared"
    });
    assert_eq!(t["state"], "aborted", "{t}");
    assert!(t["heuristic"].is_null(), "{t}");

    // The cluster works again, and everything ends with one outcome.
    let (next, o) = c
        .submit(req(json!({"after": "sigcont"})))
        .expect("submit after SIGCONT");
    assert_eq!(o.decision, Decision::Commit, "{next}: {o:?}");
    settled_counts(&c);
    let decided = coordinator_decisions(&c);
    assert_eq!(decided.get(&id).map(String::as_str), Some("abort"));
    assert_eq!(decided.get(&next.0).map(String::as_str), Some("commit"));
    for admin in [&p1, &p2] {
        for t in participant_txn_list(admin, None)["transactions"]
            .as_array()
            .expect("transactions")
        {
            let tid = t["transaction_id"].as_str().expect("transaction_id");
            let want = match decided.get(tid).map(String::as_str) {
                Some("commit") => "committed",
                Some("abort") => "aborted",
                other => panic!("{admin} knows {tid}, the coordinator decided {other:?}"),
            };
            assert_eq!(t["state"], want, "{admin}: {t}");
        }
    }
}

/// Wait until the participant at `admin` holds one transaction in doubt.
fn poll_list(admin: &str) -> Value {
    let start = Instant::now();
    loop {
        let l = participant_txn_list(admin, Some("in-doubt"));
        if l["total"] == 1 {
            return l;
        }
        assert!(start.elapsed() < PATIENCE, "p1 never prepared: {l}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Every transaction the coordinator remembers, with its decision.
fn coordinator_decisions(c: &Cluster) -> BTreeMap<String, String> {
    let (code, out, err) = c.twopc(&["txn", "list", "--coordinator", &c.addr(), "--json"]);
    assert_eq!(code, 0, "txn list: {err}");
    let listed: Value = serde_json::from_str(&out).expect("txn list JSON");
    listed["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .map(|t| {
            let id = t["transaction_id"].as_str().expect("transaction_id");
            let d = t["decision"]
                .as_str()
                .unwrap_or_else(|| panic!("undecided: {t}"));
            (id.to_string(), d.to_string())
        })
        .collect()
}

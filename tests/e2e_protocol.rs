//! The voting protocol end to end: a real coordinator and real participant
//! processes on loopback, driven through the client library. Each test
//! starts its own cluster on ephemeral ports with temporary data
//! directories; readiness is awaited through `status`, never slept for.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use twopc::client::Client;
use twopc::protocol::{Decision, Outcome, ParticipantId, SubmitRequest, Vote};

/// The ids of an outcome's votes, as plain strings.
fn voters(o: &Outcome) -> Vec<String> {
    o.votes.keys().map(|p| p.0.clone()).collect()
}

/// What a client may rely on: COMMIT only with a commit vote from every one
/// of `n` participants; ABORT only with an abort vote or a stated reason.
fn assert_safe(o: &Outcome, n: usize) {
    match o.decision {
        Decision::Commit => {
            assert_eq!(o.votes.len(), n, "commit without every vote: {o:?}");
            assert!(
                o.votes.values().all(|v| *v == Vote::Commit),
                "commit with an abort vote: {o:?}"
            );
            assert_eq!(o.reason, None, "a commit carries no abort reason: {o:?}");
        }
        Decision::Abort => {
            let abort_vote = o.votes.values().any(|v| *v == Vote::Abort);
            assert!(
                abort_vote || o.reason.is_some(),
                "abort without an abort vote or a reason: {o:?}"
            );
            if let Some(voter) = o
                .reason
                .as_deref()
                .and_then(|r| r.strip_prefix("participant "))
                .and_then(|r| r.split(' ').next())
            {
                assert_eq!(
                    o.votes.get(&ParticipantId::from(voter)),
                    Some(&Vote::Abort),
                    "the reason blames {voter}, whose vote is not abort: {o:?}"
                );
            }
        }
    }
}

fn in_flight(s: &Value) -> u64 {
    s["transactions"]["in_flight"].as_u64().unwrap_or(0)
}

fn is_connected(s: &Value, id: &str) -> bool {
    s["participants"]
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p["id"] == id && p["connected"] == true))
}

/// A cluster of `n` participants that vote commit, ready for transactions.
fn committing_cluster(n: usize, coordinator_args: &[&str]) -> Cluster {
    let mut c = Cluster::new();
    let expected = n.to_string();
    let mut args = vec!["--expected-participants", &expected];
    args.extend_from_slice(coordinator_args);
    c.start_coordinator(&args, &[]);
    c.start_participants(n, &[]);
    c.wait_ready(n);
    c
}

/// A submit that involves exactly `ids`.
fn only(ids: &[ParticipantId]) -> SubmitRequest {
    SubmitRequest {
        data: json!({"participants": ids.len()}),
        participants: Some(ids.to_vec()),
        request_id: None,
        ..Default::default()
    }
}

/// Transactions of `n` participants: all commit votes commit, one abort vote
/// aborts. The cluster holds p1..pn voting commit and `nay` voting abort;
/// every transaction names exactly `n` of them.
fn commit_and_abort_with(n: usize) {
    let mut c = Cluster::new();
    let expected = (n + 1).to_string();
    c.start_coordinator(&["--expected-participants", &expected], &[]);
    c.start_participants(n, &[]);
    c.start_participant("nay", &["--vote-preference", "abort"], &[]);
    c.wait_ready(n + 1);
    let ayes: Vec<ParticipantId> = (1..=n).map(|i| ParticipantId(format!("p{i}"))).collect();

    let (txn, o) = c.submit(only(&ayes)).expect("submit");
    assert_eq!(o.decision, Decision::Commit, "{txn}: {o:?}");
    let voted: BTreeSet<&ParticipantId> = o.votes.keys().collect();
    assert_eq!(
        voted,
        ayes.iter().collect(),
        "{txn}: every participant votes"
    );
    assert_safe(&o, n);

    let mut mixed = ayes[1..].to_vec();
    mixed.push("nay".into());
    let (txn, o) = c.submit(only(&mixed)).expect("submit");
    assert_eq!(o.decision, Decision::Abort, "{txn}: {o:?}");
    assert_eq!(
        o.votes.get(&ParticipantId::from("nay")),
        Some(&Vote::Abort),
        "{o:?}"
    );
    let reason = o.reason.clone().unwrap_or_default();
    assert!(reason.starts_with("participant nay voted abort"), "{o:?}");
    assert!(
        o.votes.keys().all(|p| mixed.contains(p)),
        "a vote from outside the transaction: {o:?}"
    );
    assert_safe(&o, n);

    assert_eq!(settled_counts(&c), (1, 1));
}

#[test]
fn three_participants_commit() {
    let c = committing_cluster(3, &[]);
    let (txn, o) = c.submit(req(json!({"order": 42}))).expect("submit");
    assert!(!txn.0.is_empty());
    assert_eq!(o.decision, Decision::Commit, "{o:?}");
    assert_eq!(voters(&o), ["p1", "p2", "p3"]);
    assert!(o.votes.values().all(|v| *v == Vote::Commit), "{o:?}");
    assert_eq!(o.reason, None);
    assert_eq!(settled_counts(&c), (1, 0));
}

#[test]
fn one_abort_vote_aborts_and_names_the_voter() {
    let mut c = Cluster::new();
    c.start_coordinator(&["--expected-participants", "3"], &[]);
    c.start_participant("p1", &[], &[]);
    c.start_participant("p2", &["--vote-preference", "abort"], &[]);
    c.start_participant("p3", &[], &[]);
    c.wait_ready(3);
    let (txn, o) = c.submit(req(json!({"order": 1}))).expect("submit");
    assert_eq!(o.decision, Decision::Abort, "{txn}: {o:?}");
    assert_eq!(
        o.votes.get(&ParticipantId::from("p2")),
        Some(&Vote::Abort),
        "{o:?}"
    );
    let reason = o.reason.clone().expect("an abort states its reason");
    assert!(
        reason.starts_with("participant p2 voted abort"),
        "reason: {reason}"
    );
    assert_safe(&o, 3);
    assert_eq!(settled_counts(&c), (0, 1));
}

#[test]
fn random_votes_obey_the_voting_rules_and_counts_match() {
    let mut c = Cluster::new();
    c.start_coordinator(&["--expected-participants", "3"], &[]);
    c.start_participants(
        3,
        &["--vote-preference", "random", "--commit-probability", "0.8"],
    );
    c.wait_ready(3);
    let addr = c.addr();
    let outcomes: Vec<Outcome> = block_on(async move {
        let mut client = Client::connect(&addr, PATIENCE).await.expect("connect");
        let mut v = Vec::new();
        for i in 0..200 {
            let (_, o) = client.submit(req(json!({ "i": i }))).await.expect("submit");
            v.push(o);
        }
        v
    });
    let mut seen = (0u64, 0u64);
    for o in &outcomes {
        assert_safe(o, 3);
        match o.decision {
            Decision::Commit => seen.0 += 1,
            Decision::Abort => seen.1 += 1,
        }
    }
    // With p(commit) = 0.8 per vote both outcomes occur in 200 transactions
    // (all-commit ~51%); missing one would mean votes are not random.
    assert!(seen.0 > 0 && seen.1 > 0, "committed/aborted {seen:?}");
    assert_eq!(
        settled_counts(&c),
        seen,
        "coordinator counts vs. outcomes the client saw"
    );
}

#[test]
fn a_participant_that_never_votes_is_timed_out() {
    let mut c = Cluster::new();
    c.start_coordinator(
        &["--expected-participants", "2", "--timeout-seconds", "1"],
        &[],
    );
    c.start_participant("p1", &[], &[]);
    c.start_participant("p2", &["--vote-delay-ms", "600000"], &[]);
    c.wait_ready(2);
    let (txn, o) = c.submit(req(json!({"slow": true}))).expect("submit");
    assert_eq!(o.decision, Decision::Abort, "{txn}: {o:?}");
    let reason = o.reason.clone().expect("reason");
    let silent: Vec<&str> = reason
        .strip_prefix("vote_timeout: no vote from ")
        .unwrap_or_else(|| panic!("not a vote timeout: {reason}"))
        .split(", ")
        .collect();
    assert!(silent.contains(&"p2"), "reason: {reason}");
    // The reason names exactly the participants whose vote is missing (p1
    // normally votes in time, but a very slow machine may delay it too).
    for id in ["p1", "p2"] {
        let vote = o.votes.get(&ParticipantId::from(id));
        assert_eq!(silent.contains(&id), vote.is_none(), "{id}: {o:?}");
        assert_ne!(vote, Some(&Vote::Abort), "{id}: {o:?}");
    }
    assert_safe(&o, 2);
}

#[test]
fn a_participant_killed_while_preparing_aborts_the_transaction() {
    let mut c = Cluster::new();
    c.start_coordinator(
        &["--expected-participants", "2", "--timeout-seconds", "120"],
        &[],
    );
    c.start_participant("p1", &[], &[]);
    c.start_participant("p2", &["--vote-delay-ms", "600000"], &[]);
    c.wait_ready(2);
    let addr = c.addr();
    let pending = std::thread::spawn(move || submit_to(&addr, req(json!({"doomed": true}))));
    c.wait_status("the transaction to be in its prepare phase", |s| {
        in_flight(s) >= 1
    });
    c.participants[1].kill9();
    let (txn, o) = pending.join().expect("submit thread").expect("submit");
    assert_eq!(o.decision, Decision::Abort, "{txn}: {o:?}");
    assert_eq!(
        o.reason.as_deref(),
        Some("participant_disconnected: p2"),
        "{o:?}"
    );
    assert_safe(&o, 2);
    c.wait_status("p2 to be seen as disconnected", |s| !is_connected(s, "p2"));
}

/// Sends SIGCONT when dropped, so a failing test leaves no stopped process.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        // SAFETY: kill(2) with a pid of a child this test started.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

#[test]
fn a_stopped_participant_misses_heartbeats_and_its_transactions_abort_fast() {
    let mut c = Cluster::new();
    // The vote deadline is ten minutes: only the heartbeat check can end
    // the transaction. The coordinator gives a participant up after 3 s of
    // silence; participants beat every 100 ms.
    c.start_coordinator(
        &[
            "--expected-participants",
            "2",
            "--timeout-seconds",
            "600",
            "--heartbeat-interval-ms",
            "300",
            "--heartbeat-failure-threshold",
            "10",
        ],
        &[],
    );
    let beat = ["--heartbeat-interval-ms", "100"];
    c.start_participant("p1", &beat, &[]);
    c.start_participant("p2", &beat, &[]);
    c.wait_ready(2);
    let pid = c.participants[1].pid().expect("p2 runs");
    let stopped = Stopped::stop(pid);
    let (txn, o) = c.submit(req(json!({"p2": "is stopped"}))).expect("submit");
    assert_eq!(o.decision, Decision::Abort, "{txn}: {o:?}");
    let reason = o.reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("participant_unavailable: no heartbeat from p2 for "),
        "{reason}"
    );
    assert_eq!(o.votes.get(&ParticipantId::from("p2")), None, "{o:?}");
    assert_safe(&o, 2);
    let s = c.wait_status("p2 to be given up", |s| !is_connected(s, "p2"));
    let p2 = s["participants"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["id"] == "p2"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(p2["alive"], false, "{s}");
    // While p2 is gone, a transaction that needs it aborts at once.
    let (txn, o) = c.submit(req(json!({"again": true}))).expect("submit");
    assert_eq!(o.decision, Decision::Abort, "{txn}: {o:?}");
    assert_eq!(
        o.reason.as_deref(),
        Some("participant_unavailable: p2 is not connected"),
        "{o:?}"
    );
    // Resumed, p2 finds its connection closed, registers again and commits.
    drop(stopped);
    c.wait_status("p2 to register again", |s| is_connected(s, "p2"));
    let (txn, o) = c.submit(req(json!({"p2": "is back"}))).expect("submit");
    assert_eq!(o.decision, Decision::Commit, "{txn}: {o:?}");
}

#[test]
fn two_participants_commit_and_abort() {
    commit_and_abort_with(2);
}

#[test]
fn ten_participants_commit_and_abort() {
    commit_and_abort_with(10);
}

#[test]
fn five_hundred_transactions_fifty_in_flight() {
    const CLIENTS: usize = 50;
    const PER_CLIENT: usize = 10;
    // A generous vote deadline: every transaction must commit, even when a
    // slow machine keeps some of them waiting.
    let c = committing_cluster(3, &["--timeout-seconds", "120"]);
    let addr = c.addr();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let outcomes: Vec<Outcome> = rt.block_on(async move {
        // Connect everyone first so the submits really overlap.
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(Client::connect(&addr, PATIENCE).await.expect("connect"));
        }
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(k, mut client)| {
                tokio::spawn(async move {
                    let mut v = Vec::new();
                    for i in 0..PER_CLIENT {
                        let (_, o) = client
                            .submit(req(json!({"client": k, "i": i})))
                            .await
                            .expect("submit");
                        v.push(o);
                    }
                    v
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("client task"));
        }
        all
    });
    assert_eq!(outcomes.len(), CLIENTS * PER_CLIENT);
    for o in &outcomes {
        assert_eq!(o.decision, Decision::Commit, "{o:?}");
        assert_safe(o, 3);
    }
    assert_eq!(settled_counts(&c), ((CLIENTS * PER_CLIENT) as u64, 0));
}

#[test]
fn a_subset_submit_prepares_only_the_named_participants() {
    let c = committing_cluster(3, &[]);
    let sub = SubmitRequest {
        data: json!({"subset": true}),
        participants: Some(vec!["p1".into(), "p3".into()]),
        request_id: None,
        ..Default::default()
    };
    let (txn, o) = c.submit(sub).expect("submit");
    assert_eq!(o.decision, Decision::Commit, "{txn}: {o:?}");
    assert_eq!(voters(&o), ["p1", "p3"]);
    assert_eq!(settled_counts(&c), (1, 0));
    // p2 never heard of the transaction (p1's debug log names it, so the
    // logs do mention the transactions a participant takes part in).
    assert!(
        c.participants[0].log_text().contains(&txn.0),
        "p1's log lacks {txn}"
    );
    let p2_log = c.participants[1].log_text();
    assert!(!p2_log.contains(&txn.0), "p2 saw {txn}:\n{p2_log}");
}

#[test]
fn a_submit_before_the_cluster_is_ready_is_refused_after_the_deadline() {
    let mut c = Cluster::new();
    c.start_coordinator(
        &["--expected-participants", "2", "--timeout-seconds", "1"],
        &[],
    );
    c.start_participant("p1", &[], &[]);
    c.wait_status("p1 registered", |s| {
        s["state"] == "WAITING_FOR_PARTICIPANTS" && is_connected(s, "p1")
    });
    let err = c
        .submit(req(json!({})))
        .expect_err("no outcome while waiting for participants");
    assert_eq!(err.code(), Some("not_ready"), "{err}");
    assert!(
        err.to_string().contains("WAITING_FOR_PARTICIPANTS"),
        "{err}"
    );
}

#[test]
fn a_waiting_submit_runs_once_the_missing_participant_joins() {
    let mut c = Cluster::new();
    c.start_coordinator(
        &["--expected-participants", "2", "--timeout-seconds", "120"],
        &[],
    );
    c.start_participant("p1", &[], &[]);
    c.wait_status("p1 registered", |s| is_connected(s, "p1"));
    // Submit, then ask for status on the same connection: the coordinator
    // handles one connection's messages in order, so the status reply proves
    // the submit is queued before p2 is even started.
    let mut raw = RawConn::connect(&c.addr());
    raw.send_client_hello();
    assert_eq!(raw.recv().expect("welcome")["message_type"], "welcome");
    raw.send(twopc::protocol::Body::Submit(req(json!({"early": true}))));
    raw.send(twopc::protocol::Body::Status);
    let s = raw.recv().expect("status report");
    assert_eq!(s["message_type"], "status_report", "{s}");
    assert_eq!(s["payload"]["state"], "WAITING_FOR_PARTICIPANTS", "{s}");
    c.start_participant("p2", &[], &[]);
    let m = raw.recv().expect("outcome");
    assert_eq!(m["message_type"], "outcome", "{m}");
    assert_eq!(m["payload"]["decision"], "commit", "{m}");
    assert_eq!(
        m["payload"]["votes"],
        json!({"p1": "commit", "p2": "commit"}),
        "{m}"
    );
}

#[test]
fn a_submit_past_max_in_flight_is_refused_as_overloaded() {
    let mut c = Cluster::new();
    c.start_coordinator(
        &[
            "--expected-participants",
            "1",
            "--max-in-flight",
            "1",
            "--timeout-seconds",
            "120",
        ],
        &[],
    );
    // p1 never votes, so the first transaction holds the only slot until
    // p1 is killed: no race between the two submits.
    let p1 = c.start_participant("p1", &["--vote-delay-ms", "600000"], &[]);
    c.wait_ready(1);
    let addr = c.addr();
    let first = std::thread::spawn(move || submit_to(&addr, req(json!({"first": true}))));
    c.wait_status("the first transaction in flight", |s| in_flight(s) == 1);
    let err = c
        .submit(req(json!({"second": true})))
        .expect_err("second submit refused");
    assert_eq!(err.code(), Some("overloaded"), "{err}");
    c.participants[p1].kill9();
    let (_, o) = first
        .join()
        .expect("first submit thread")
        .expect("first submit");
    assert_eq!(o.decision, Decision::Abort, "{o:?}");
    // The slot is free again: a prompt p1 gets the next transaction through.
    c.wait_status("p1 gone", |s| !is_connected(s, "p1"));
    c.restart_participant(p1, &[], &[]);
    c.wait_ready(1);
    let (_, o) = c
        .submit(req(json!({"third": true})))
        .expect("submit after the slot freed");
    assert_eq!(o.decision, Decision::Commit, "{o:?}");
}

#[test]
fn a_restarted_participant_reregisters_and_commits_again() {
    let mut c = committing_cluster(3, &[]);
    let (_, o) = c.submit(req(json!({"before": true}))).expect("submit");
    assert_eq!(o.decision, Decision::Commit, "{o:?}");
    c.participants[1].kill9();
    // Wait for the coordinator to notice, so the new process cannot be taken
    // for the old connection.
    c.wait_status("p2 disconnected", |s| !is_connected(s, "p2"));
    c.restart_participant(1, &[], &[]);
    c.wait_status("p2 registered again", |s| {
        s["state"] == "READY" && connected(s) == 3
    });
    let (txn, o) = c.submit(req(json!({"after": true}))).expect("submit");
    assert_eq!(o.decision, Decision::Commit, "{txn}: {o:?}");
    assert_eq!(voters(&o), ["p1", "p2", "p3"]);
    assert_eq!(settled_counts(&c), (2, 0));
    let status = c.status();
    let ids: Vec<&str> = status["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["p1", "p2", "p3"],
        "the restarted participant kept its membership: {status}"
    );
}

#[test]
fn sigterm_shuts_every_process_down_cleanly() {
    let mut c = committing_cluster(3, &[]);
    let (_, o) = c.submit(req(json!({}))).expect("submit");
    assert_eq!(o.decision, Decision::Commit, "{o:?}");
    settled_counts(&c);
    // A participant while the coordinator is up, the coordinator, then
    // participants that are trying to reconnect to it.
    let first = c.participants[0].terminate().expect("p1 exits");
    assert!(
        first.success(),
        "p1 exit status {first}:\n{}",
        c.participants[0].log_text()
    );
    let coordinator = c.coordinator.as_mut().expect("coordinator");
    let status = coordinator.terminate().expect("coordinator exits");
    assert!(
        status.success(),
        "coordinator exit status {status}:\n{}",
        coordinator.log_text()
    );
    for p in &mut c.participants[1..] {
        let status = p.terminate().expect("participant exits");
        assert!(
            status.success(),
            "{} exit status {status}:\n{}",
            p.name,
            p.log_text()
        );
    }
}

/// The vote deadline bounds a transaction even when the client keeps
/// waiting: the outcome arrives long before the client's own timeout.
#[test]
fn the_vote_deadline_is_honoured_promptly() {
    let mut c = Cluster::new();
    c.start_coordinator(
        &["--expected-participants", "1", "--timeout-seconds", "0.5"],
        &[],
    );
    c.start_participant("p1", &["--vote-delay-ms", "600000"], &[]);
    c.wait_ready(1);
    let started = std::time::Instant::now();
    let (_, o) = c.submit(req(json!({}))).expect("submit");
    assert_eq!(o.decision, Decision::Abort, "{o:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(o.duration_ms >= 500.0, "decided before the deadline: {o:?}");
}

fn listed(c: &Cluster) -> Vec<String> {
    let (code, out, err) = c.twopc(&["participants", "list", "--coordinator", &c.addr(), "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("participants list --json");
    participant_ids(&v)
}

#[test]
fn participants_join_at_runtime_and_are_removed_only_when_nothing_needs_them() {
    let mut c = Cluster::new();
    c.start_coordinator(
        &[
            "--expected-participants",
            "1",
            "--enable-dynamic-joining",
            "true",
            "--timeout-seconds",
            "600",
            // Newcomers count in submits without named participants at once
            // here; the grace itself is tested in e2e_limits.
            "--join-grace-ms",
            "0",
        ],
        &[],
    );
    c.start_participant("p1", &[], &[]);
    c.wait_ready(1);
    // p2 joins the running cluster and takes part in the next transaction.
    c.start_participant("p2", &[], &[]);
    c.wait_status("p2 to join", |s| is_connected(s, "p2"));
    let (txn, o) = c.submit(req(json!({"joined": true}))).expect("submit");
    assert_eq!(o.decision, Decision::Commit, "{txn}: {o:?}");
    assert_eq!(voters(&o), vec!["p1", "p2"], "{o:?}");
    assert_eq!(listed(&c), vec!["p1", "p2"]);

    // p3 joins and never votes: while its transaction is open it cannot be
    // removed, and the refusal names the transaction.
    c.start_participant("p3", &["--vote-delay-ms", "600000"], &[]);
    c.wait_status("p3 to join", |s| is_connected(s, "p3"));
    let addr = c.addr();
    let pending = std::thread::spawn(move || {
        submit_to(
            &addr,
            only(&[ParticipantId::from("p1"), ParticipantId::from("p3")]),
        )
    });
    c.wait_status("the transaction to wait for p3", |s| in_flight(s) >= 1);
    let (code, out, err) = c.twopc(&["participants", "remove", "p3", "--coordinator", &c.addr()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("participant `p3` is still needed by 1 transaction(s): "),
        "{err}"
    );
    assert!(err.contains("nothing was removed"), "{err}");
    assert_eq!(listed(&c), vec!["p1", "p2", "p3"]);

    // Once p3 is gone and its transaction aborted, it can be removed.
    let p3 = c.participants.len() - 1;
    c.participants[p3].kill9();
    let (txn, o) = pending.join().expect("submit thread").expect("submit");
    assert_eq!(o.decision, Decision::Abort, "{txn}: {o:?}");
    assert!(err.contains(&txn.0), "the refusal named {txn}: {err}");
    let (code, out, err) = c.twopc(&["participants", "remove", "p3", "--coordinator", &c.addr()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("removed p3\n"), "{out}");
    assert_eq!(listed(&c), vec!["p1", "p2"]);
    // A transaction over all participants no longer includes p3.
    let (txn, o) = c.submit(req(json!({"after": "remove"}))).expect("submit");
    assert_eq!(o.decision, Decision::Commit, "{txn}: {o:?}");
    assert_eq!(voters(&o), vec!["p1", "p2"], "{o:?}");
    // Removing it again names the members.
    let (code, _, err) = c.twopc(&["participants", "remove", "p3", "--coordinator", &c.addr()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("participant `p3` is not registered; registered: p1, p2"),
        "{err}"
    );
}

/// Several submits outstanding on one connection: each reply carries the
/// request id of its submit, a refused one included, and every one is
/// answered once.
#[test]
fn pipelined_submits_on_one_connection_are_matched_by_request_id() {
    let c = committing_cluster(2, &[]);
    let addr = c.addr();
    block_on(async move {
        let mut client = Client::connect(&addr, PATIENCE).await.expect("connect");
        let mut sent = BTreeMap::new();
        for i in 0..8 {
            let id = client
                .submit_queue(req(json!({ "n": i })))
                .await
                .expect("queue");
            sent.insert(id, "commit");
        }
        let refused = client
            .submit_queue(only(&[ParticipantId::from("nobody")]))
            .await
            .expect("queue");
        sent.insert(refused, "refused");
        client.flush().await.expect("flush");
        assert_eq!(client.outstanding(), 9);
        let mut answered = BTreeMap::new();
        while client.outstanding() > 0 {
            let r = client.next_reply().await.expect("reply");
            let got = match r.result {
                Ok((_, o)) if o.decision == Decision::Commit => "commit",
                Ok((_, o)) => panic!("unexpected outcome {o:?}"),
                Err(e) => {
                    assert_eq!(e.code(), Some("unknown_participant"), "{e}");
                    "refused"
                }
            };
            assert!(
                answered.insert(r.request_id, got).is_none(),
                "answered twice"
            );
        }
        assert_eq!(answered, sent);
        // The connection still serves a plain submit afterwards.
        let (_, o) = client.submit(req(json!({}))).await.expect("submit");
        assert_eq!(o.decision, Decision::Commit);
    });
}

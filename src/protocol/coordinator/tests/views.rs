//! Operator views: timelines, and the exact JSON of the status report,
//! transaction summaries and details (pinned: tools and documentation read
//! them).

use super::*;

// Timelines: what operators see of one transaction. They never change the
// actions; these tests pin what is recorded and when.

#[test]
fn timeline_of_a_commit_holds_the_commits_until_the_decision_is_durable() {
    let mut c = ready();
    c.handle(10, msg(CLIENT, submit(1)));
    c.handle(12, msg(P1, vote_commit("t-1")));
    c.handle(15, msg(P2, vote_commit("t-1")));
    c.handle(18, Event::Durable { forced: 1 });
    c.handle(19, Event::Durable { forced: 1 });
    c.handle(20, msg(P2, ack("t-1")));
    c.handle(21, msg(P1, ack("t-1")));
    assert_eq!(
        timeline(&c, "t-1"),
        vec![
            (10, Step::Submitted),
            (10, Step::Prepare { to: pid("p1") }),
            (10, Step::Prepare { to: pid("p2") }),
            (
                12,
                Step::Vote {
                    from: pid("p1"),
                    vote: Vote::Commit,
                    reason: None
                }
            ),
            (
                15,
                Step::Vote {
                    from: pid("p2"),
                    vote: Vote::Commit,
                    reason: None
                }
            ),
            (
                15,
                Step::Decided {
                    decision: Decision::Commit,
                    reason: None
                }
            ),
            (15, Step::LogWrite),
            (18, Step::LogDurable),
            (18, sent("p1", Decision::Commit, false)),
            (18, sent("p2", Decision::Commit, false)),
            (
                18,
                Step::Outcome {
                    decision: Decision::Commit
                }
            ),
            (20, Step::Ack { from: pid("p2") }),
            (21, Step::Ack { from: pid("p1") }),
            (21, Step::Ended),
        ]
    );
    // The room a timeline is given at the start is what a commit fills.
    assert_eq!(
        timeline(&c, "t-1").len(),
        super::super::txn::timeline_events_expected(2)
    );
    // The phase stamps the runtime times its microsecond latencies by.
    let t = c.txn(&tid("t-1")).unwrap();
    assert_eq!(
        (t.started_ms, t.decided_ms, t.durable_ms, t.ended_ms),
        (10, Some(15), Some(18), Some(21))
    );
    let s = c.stats();
    assert_eq!((s.committed, s.aborted_total()), (1, 0));
}

#[test]
fn timeline_of_an_abort_has_the_reason_and_no_log_write() {
    let mut c = ready();
    c.handle(0, msg(CLIENT, submit(1)));
    c.handle(4, msg(P2, vote_abort("t-1", Some("no stock"))));
    c.handle(6, msg(P1, ack("t-1")));
    assert_eq!(
        timeline(&c, "t-1"),
        vec![
            (0, Step::Submitted),
            (0, Step::Prepare { to: pid("p1") }),
            (0, Step::Prepare { to: pid("p2") }),
            (
                4,
                Step::Vote {
                    from: pid("p2"),
                    vote: Vote::Abort,
                    reason: Some("no stock".into())
                }
            ),
            (
                4,
                Step::Decided {
                    decision: Decision::Abort,
                    reason: Some("participant p2 voted abort: no stock".into())
                }
            ),
            (4, sent("p1", Decision::Abort, false)),
            (
                4,
                Step::Outcome {
                    decision: Decision::Abort
                }
            ),
            (6, Step::Ack { from: pid("p1") }),
            (6, Step::Ended),
        ]
    );
    let t = c.txn(&tid("t-1")).unwrap();
    assert_eq!(t.abort_cause, Some(AbortCause::VoteAbort));
    assert_eq!(
        t.errors.get(&pid("p2")).map(String::as_str),
        Some("voted abort: no stock")
    );
    assert_eq!(c.stats().aborted(AbortCause::VoteAbort), 1);
}

#[test]
fn timeline_records_resends_queries_and_disconnects() {
    let mut c = ready();
    c.handle(0, msg(CLIENT, submit(1)));
    c.handle(1, msg(P1, vote_commit("t-1")));
    c.handle(1, msg(P2, vote_commit("t-1")));
    c.handle(2, Event::Durable { forced: 1 });
    c.handle(3, msg(P1, ack("t-1")));
    c.handle(500, Event::Tick);
    c.handle(600, Event::Disconnected { conn: P2 });
    c.handle(700, msg(ConnId(9), hello("p2")));
    c.handle(701, msg(ConnId(9), query("t-1")));
    let tail: Vec<(Millis, Step)> = timeline(&c, "t-1").into_iter().skip(12).collect();
    assert_eq!(
        tail,
        vec![
            (500, sent("p2", Decision::Commit, true)),
            (
                600,
                Step::Disconnected {
                    participant: pid("p2")
                }
            ),
            (700, sent("p2", Decision::Commit, true)),
            (701, Step::Query { from: pid("p2") }),
            (701, sent("p2", Decision::Commit, true)),
        ]
    );
    let t = c.txn(&tid("t-1")).unwrap();
    assert_eq!(t.retries, 1);
    assert_eq!(c.stats().resends, 1);
    assert_eq!(
        t.errors.get(&pid("p2")).map(String::as_str),
        Some("disconnected before acknowledging")
    );
}

#[test]
fn timeline_is_capped_and_counts_what_it_left_out() {
    let mut c = ready_with(CoordinatorOptions {
        timeline_max_events: 4,
        ..opts()
    });
    c.handle(0, msg(CLIENT, submit(1)));
    c.handle(1, msg(P1, vote_commit("t-1")));
    c.handle(2, msg(P2, vote_abort("t-1", None)));
    let t = c.txn(&tid("t-1")).unwrap();
    assert_eq!(t.timeline.events().len(), 4);
    // vote p2, decided, abort to p1, outcome
    assert_eq!(t.timeline.dropped(), 4);
    assert_eq!(to_json(&t.detail(2))["timeline_dropped"], 4);
}

#[test]
fn timeline_of_a_recovered_commit_starts_with_recovery() {
    let records = vec![Record::Decision {
        txn: tid("t-7"),
        decision: Decision::Commit,
        participants: pids(&["p1"]),
        client_named: false,
    }];
    let mut c = Coordinator::recover(
        CoordinatorOptions {
            expected_participants: 1,
            ..opts()
        },
        50,
        &records,
    );
    c.handle(60, msg(P1, hello("p1")));
    c.handle(61, msg(P1, ack("t-7")));
    assert_eq!(
        timeline(&c, "t-7"),
        vec![
            (50, Step::Recovered),
            (60, sent("p1", Decision::Commit, true)),
            (61, Step::Ack { from: pid("p1") }),
            (61, Step::Ended),
        ]
    );
}

fn view(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap()
}

#[test]
fn status_view_while_voting_is_pinned() {
    let mut c = voting();
    c.handle(5, msg(P1, vote_commit("t-1")));
    assert_eq!(
        view(c.status_report()),
        json!({
            "state": "READY",
            "expected_participants": 2,
            "participants_registered": 2,
            "participants": [
                {"id": "p1", "connected": true, "alive": true, "last_heartbeat_age_ms": 0},
                {"id": "p2", "connected": true, "alive": true, "last_heartbeat_age_ms": 5},
            ],
            "transactions": {"committed": 0, "aborted": 0, "in_flight": 1, "awaiting_acks": 0},
        })
    );
}

#[test]
fn status_view_with_a_disconnected_and_a_silent_member_is_pinned() {
    let mut c = committed();
    c.handle(15, msg(P1, ack("t-1")));
    c.handle(20, msg(CLIENT, submit(2)));
    c.handle(25, Event::Disconnected { conn: P1 });
    c.handle(3_011, msg(P2, Body::HeartbeatAck));
    // p2 is still connected but silent for longer than the liveness timeout
    // (seen before the next tick gives it up). The aborted t-2 still waits
    // for p1's acknowledgement.
    c.now = 6_100;
    assert_eq!(
        view(c.status_report()),
        json!({
            "state": "READY",
            "expected_participants": 2,
            "participants_registered": 2,
            "participants": [
                {"id": "p1", "connected": false, "alive": false, "last_heartbeat_age_ms": 6_085},
                {"id": "p2", "connected": true, "alive": false, "last_heartbeat_age_ms": 3_089},
            ],
            "transactions": {"committed": 0, "aborted": 0, "in_flight": 0, "awaiting_acks": 2},
        })
    );
}

#[test]
fn status_view_after_a_removal_names_the_removed_member() {
    let mut c = ready();
    run_with_result(&mut c, 1, json!({"rows": [1, 2]}));
    let out = c.handle(50, remove_forced("p2"));
    let report = json!({
        "state": "READY",
        "expected_participants": 1,
        "participants_registered": 1,
        "participants": [
            {"id": "p1", "connected": true, "alive": true, "last_heartbeat_age_ms": 38},
        ],
        "transactions": {"committed": 1, "aborted": 0, "in_flight": 0, "awaiting_acks": 0},
        "removed": "p2",
    });
    assert_eq!(
        out,
        [
            reject(
                P2,
                ErrorCode::Removed,
                "`p2` was removed from the cluster by an operator; stop this participant",
                true
            ),
            Action::Persist {
                record: Record::Removed {
                    participant: pid("p2"),
                    expected: 1,
                },
                sync: true,
            },
            notice(
                None,
                "participant p2 removed by an operator (forced, while connected); the cluster expects 1 participant(s)"
            ),
            send(CLIENT, Body::StatusReport(report), true),
        ]
    );
}

#[test]
fn summary_views_are_pinned() {
    let mut c = voting();
    c.handle(5, msg(P1, vote_commit("t-1")));
    assert_eq!(
        view(c.txn(&tid("t-1")).unwrap().summary(7)),
        json!({
            "transaction_id": "t-1",
            "state": "PREPARE_PHASE",
            "participants": ["p1", "p2"],
            "votes": {"p1": "commit"},
            "decision": null,
            "acks": [],
            "reason": null,
            "age_ms": 7,
            "retries": 0,
            "recovered": false,
            "last_error": null,
            "awaiting_acks_from": [],
        })
    );
    let mut c = committed();
    c.handle(15, msg(P1, ack("t-1")));
    assert_eq!(
        view(c.txn(&tid("t-1")).unwrap().summary(30)),
        json!({
            "transaction_id": "t-1",
            "state": "COMMIT_PHASE",
            "participants": ["p1", "p2"],
            "votes": {"p1": "commit", "p2": "commit"},
            "decision": "commit",
            "acks": ["p1"],
            "reason": null,
            "age_ms": 30,
            "retries": 0,
            "recovered": false,
            "last_error": null,
            "awaiting_acks_from": ["p2"],
        })
    );
    let mut c = voting();
    c.handle(5, msg(P1, vote_abort("t-1", Some("no"))));
    c.handle(6, msg(P2, ack("t-1")));
    assert_eq!(
        view(c.txn(&tid("t-1")).unwrap().summary(9)),
        json!({
            "transaction_id": "t-1",
            "state": "ABORTED",
            "participants": ["p1", "p2"],
            "votes": {"p1": "abort"},
            "decision": "abort",
            "acks": ["p1", "p2"],
            "reason": "participant p1 voted abort: no",
            "age_ms": 9,
            "retries": 0,
            "recovered": false,
            "last_error": null,
            "awaiting_acks_from": [],
        })
    );
}

#[test]
fn detail_view_of_an_abort_is_pinned() {
    let mut c = voting();
    c.handle(5, msg(P1, vote_abort("t-1", Some("no"))));
    assert_eq!(
        view(c.txn(&tid("t-1")).unwrap().detail(9)),
        json!({
            "transaction_id": "t-1",
            "state": "ABORTED",
            "participants": ["p1", "p2"],
            "votes": {"p1": "abort"},
            "decision": "abort",
            "acks": ["p1"],
            "reason": "participant p1 voted abort: no",
            "age_ms": 9,
            "retries": 0,
            "recovered": false,
            "last_error": null,
            "awaiting_acks_from": ["p2"],
            "errors": {"p1": "voted abort: no"},
            "abort_cause": "vote_abort",
            "decided_after_ms": 5,
            "durable_after_ms": null,
            "ended_after_ms": null,
            "timeline": [
                {"at_ms": 0, "event": "submitted"},
                {"at_ms": 0, "event": "prepare", "to": "p1"},
                {"at_ms": 0, "event": "prepare", "to": "p2"},
                {"at_ms": 5, "event": "vote", "from": "p1", "reason": "no", "vote": "abort"},
                {"at_ms": 5, "event": "decided", "decision": "abort", "reason": "participant p1 voted abort: no"},
                {"at_ms": 5, "event": "decision", "decision": "abort", "resend": false, "to": "p2"},
                {"at_ms": 5, "event": "outcome", "decision": "abort"},
            ],
            "timeline_dropped": 0,
        })
    );
}

#[test]
fn detail_view_of_an_ended_commit_with_results_is_pinned() {
    let mut c = ready();
    let id = run_with_result(&mut c, 1, json!({"rows": [1, 2]}));
    c.handle(15, Event::Durable { forced: 1 });
    assert_eq!(
        view(c.txn(&id).unwrap().detail(40)),
        json!({
            "transaction_id": "t-1",
            "state": "COMPLETED",
            "participants": ["p1", "p2"],
            "votes": {"p1": "commit", "p2": "commit"},
            "decision": "commit",
            "acks": ["p1", "p2"],
            "reason": null,
            "age_ms": 30,
            "retries": 0,
            "recovered": false,
            "last_error": null,
            "awaiting_acks_from": [],
            "errors": {},
            "abort_cause": null,
            "decided_after_ms": 1,
            "durable_after_ms": null,
            "ended_after_ms": 2,
            "timeline": [
                {"at_ms": 0, "event": "submitted"},
                {"at_ms": 0, "event": "prepare", "to": "p1"},
                {"at_ms": 0, "event": "prepare", "to": "p2"},
                {"at_ms": 1, "event": "vote", "from": "p1", "vote": "commit"},
                {"at_ms": 1, "event": "vote", "from": "p2", "vote": "commit"},
                {"at_ms": 1, "event": "decided", "decision": "commit"},
                {"at_ms": 1, "event": "log_write"},
                {"at_ms": 2, "event": "ack", "from": "p1"},
                {"at_ms": 2, "event": "ack", "from": "p2"},
                {"at_ms": 2, "event": "ended"},
            ],
            "timeline_dropped": 0,
            "results": {"p1": {"rows": [1, 2]}},
        })
    );
}

#[test]
fn detail_view_of_a_recovered_commit_with_dropped_results_is_pinned() {
    let records = [decision_record("t-9", Decision::Commit, &["p1"])];
    let mut c = Coordinator::recover(opts(), 100, &records);
    c.handle(110, msg(P1, hello("p1")));
    c.handle(120, msg(P1, ack("t-9")));
    let t = c.txns().find(|t| t.id == tid("t-9")).unwrap().clone();
    let mut t = t;
    t.drop_results("dropped to keep history_max_bytes (1); they were sent in the outcome".into());
    assert_eq!(
        view(t.detail(130)),
        json!({
            "transaction_id": "t-9",
            "state": "COMPLETED",
            "participants": ["p1"],
            "votes": {"p1": "commit"},
            "decision": "commit",
            "acks": ["p1"],
            "reason": null,
            "age_ms": 30,
            "retries": 0,
            "recovered": true,
            "last_error": null,
            "awaiting_acks_from": [],
            "errors": {},
            "abort_cause": null,
            "decided_after_ms": 0,
            "durable_after_ms": null,
            "ended_after_ms": 20,
            "timeline": [
                {"at_ms": 0, "event": "recovered"},
                {"at_ms": 10, "event": "decision", "decision": "commit", "resend": true, "to": "p1"},
                {"at_ms": 20, "event": "ack", "from": "p1"},
                {"at_ms": 20, "event": "ended"},
            ],
            "timeline_dropped": 0,
            "results_dropped": "dropped to keep history_max_bytes (1); they were sent in the outcome",
        })
    );
}

#[test]
fn states_serialise_as_their_names() {
    for s in [
        ClusterState::Init,
        ClusterState::WaitingForParticipants,
        ClusterState::Ready,
    ] {
        assert_eq!(view(s), json!(s.as_str()));
    }
    for p in [
        TxnPhase::PreparePhase,
        TxnPhase::CommitPhase,
        TxnPhase::Completed,
        TxnPhase::Aborted,
    ] {
        assert_eq!(view(p), json!(p.as_str()));
    }
}

//! Exact-output tests for the participant core: every test feeds events and
//! asserts the complete list of actions that comes back, in order. A seeded
//! random driver at the end checks the write-ahead rules over many schedules.

use super::*;
use crate::protocol::{Role, PROTOCOL_VERSION};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

const C: ConnId = ConnId(7);

/// Options for the tests of transactions: no heartbeats, so that a tick
/// does only what the transactions need (the session's tests below set
/// their own).
fn opts() -> ParticipantOptions {
    ParticipantOptions {
        id: "p1".into(),
        heartbeat_interval_ms: u64::MAX,
        ..Default::default()
    }
}

fn tid(id: &str) -> TxnId {
    TxnId::from(id)
}

fn pids(ids: &[&str]) -> Vec<ParticipantId> {
    ids.iter().map(|id| ParticipantId::from(*id)).collect()
}

fn msg(body: Body) -> Event {
    Event::Message { body }
}

fn send(body: Body, after_durable: bool) -> Action {
    Action::Send {
        conn: C,
        body,
        after_durable,
    }
}

fn data() -> Value {
    json!({"k": "v"})
}

fn prepare(txn: &str) -> Body {
    Body::Prepare {
        txn: tid(txn),
        participants: pids(&["p1", "p2"]),
        data: data(),
        term: None,
    }
}

fn commit(txn: &str) -> Body {
    Body::Commit {
        txn: tid(txn),
        term: None,
    }
}

fn abort(txn: &str) -> Body {
    Body::Abort {
        txn: tid(txn),
        term: None,
    }
}

fn ack(txn: &str, decision: Decision) -> Body {
    Body::Ack {
        txn: tid(txn),
        decision: Some(decision),
        heuristic: None,
    }
}

fn heuristic_ack(txn: &str, decision: Decision, h: &Heuristic) -> Body {
    Body::Ack {
        txn: tid(txn),
        decision: Some(decision),
        heuristic: Some(h.clone()),
    }
}

fn vote_abort(txn: &str, reason: &str) -> Body {
    Body::VoteAbort {
        txn: tid(txn),
        reason: Some(reason.into()),
    }
}

fn query(txn: &str) -> Body {
    Body::Query { txn: tid(txn) }
}

fn prepared_ok(txn: &str) -> Event {
    Event::ResourcePrepared {
        txn: tid(txn),
        result: Ok(Prepared::state(json!({"writes": 1}))),
    }
}

fn prepared_err(txn: &str, reason: &str) -> Event {
    Event::ResourcePrepared {
        txn: tid(txn),
        result: Err(reason.into()),
    }
}

/// The resource applied the decision as decided.
fn finished_ok(txn: &str) -> Event {
    Event::ResourceFinished {
        txn: tid(txn),
        result: Ok(()),
    }
}

/// The resource found the transaction finished the other way.
fn finished_mixed(txn: &str) -> Event {
    Event::ResourceFinished {
        txn: tid(txn),
        result: Err(rolled_back_by_hand()),
    }
}

fn rolled_back_by_hand() -> Heuristic {
    Heuristic::new(HeuristicKind::Mixed, "the database has aborted it")
}

fn heuristic_record(txn: &str, decision: Decision, h: &Heuristic) -> Record {
    Record::Heuristic {
        txn: tid(txn),
        decision,
        participant: "p1".into(),
        heuristic: h.clone(),
    }
}

fn resolve(txn: &str, decision: Decision, reason: &str) -> Event {
    Event::Resolve {
        txn: tid(txn),
        decision,
        reason: reason.into(),
    }
}

fn prepared_record(txn: &str) -> Record {
    Record::Prepared {
        txn: tid(txn),
        participants: pids(&["p1", "p2"]),
        state: json!({"writes": 1}),
    }
}

fn decided_record(txn: &str, decision: Decision, heuristic: Option<&str>) -> Record {
    Record::Decided {
        txn: tid(txn),
        decision,
        heuristic: heuristic.map(str::to_string),
    }
}

fn persist(record: Record, sync: bool) -> Action {
    Action::Persist { record, sync }
}

fn finish(txn: &str, decision: Decision) -> Action {
    Action::FinishResource {
        txn: tid(txn),
        decision,
    }
}

fn alert(txn: &str, message: &str) -> Action {
    Action::Alert {
        txn: Some(tid(txn)),
        message: message.into(),
    }
}

fn state(p: &Participant, txn: &str) -> Option<PState> {
    p.txn(&tid(txn)).map(|t| t.state)
}

fn hello() -> Body {
    Body::Hello {
        role: Role::Participant,
        id: Some("p1".into()),
        protocol_version: PROTOCOL_VERSION,
    }
}

fn welcome() -> Body {
    Body::Welcome {
        state: "READY".into(),
        term: None,
    }
}

fn registered_notice() -> Action {
    Action::Session(SessionNotice::Registered {
        coordinator_state: "READY".into(),
    })
}

/// A connection opens on `C` (hello goes out) and the coordinator welcomes
/// it; what the welcome made the core do.
fn register(p: &mut Participant, now: Millis) -> Vec<Action> {
    assert_eq!(
        p.handle(now, Event::TransportUp { conn: C }),
        vec![send(hello(), false)]
    );
    assert!(!p.connected());
    let out = p.handle(now, msg(welcome()));
    assert!(p.connected());
    out
}

fn connected_with(opts: ParticipantOptions) -> Participant {
    let mut p = Participant::new(opts, 0);
    assert_eq!(register(&mut p, 0), vec![registered_notice()]);
    p
}

fn connected() -> Participant {
    connected_with(opts())
}

/// Connected, `t1` prepared at 100 and voted commit: in doubt.
fn prepared_with(opts: ParticipantOptions) -> Participant {
    let mut p = connected_with(opts);
    p.handle(100, msg(prepare("t1")));
    let out = p.handle(100, prepared_ok("t1"));
    assert_eq!(out.len(), 2, "{out:?}");
    p
}

fn prepared() -> Participant {
    prepared_with(opts())
}

// ---- voting -------------------------------------------------------------------

#[test]
fn prepare_asks_the_resource() {
    let mut p = connected();
    assert_eq!(
        p.handle(1, msg(prepare("t1"))),
        vec![Action::PrepareResource {
            txn: tid("t1"),
            participants: pids(&["p1", "p2"]),
            data: data(),
        }]
    );
    assert_eq!(state(&p, "t1"), Some(PState::Preparing));
    assert!(p.in_doubt().is_empty());
}

#[test]
fn prepare_without_a_participant_list_is_accepted() {
    let mut p = connected();
    let body = Body::Prepare {
        txn: tid("t1"),
        participants: vec![],
        data: Value::Null,
        term: None,
    };
    assert_eq!(
        p.handle(1, msg(body)),
        vec![Action::PrepareResource {
            txn: tid("t1"),
            participants: vec![],
            data: Value::Null,
        }]
    );
}

#[test]
fn prepare_that_does_not_list_us_is_voted_down() {
    let mut p = connected();
    let body = Body::Prepare {
        txn: tid("t1"),
        participants: pids(&["p2", "p3"]),
        data: data(),
        term: None,
    };
    let voted_down = vec![send(
        vote_abort("t1", "not a listed participant of this transaction (p1)"),
        false,
    )];
    assert_eq!(p.handle(1, msg(body.clone())), voted_down);
    assert_eq!(state(&p, "t1"), Some(PState::Aborted));
    assert_eq!(p.counts(), (0, 1));
    // A duplicate gets the same vote and is not counted again.
    assert_eq!(p.handle(2, msg(body)), voted_down);
    assert_eq!(p.counts(), (0, 1));
}

#[test]
fn resource_ok_persists_prepared_before_voting_commit() {
    let mut p = connected();
    p.handle(1, msg(prepare("t1")));
    assert_eq!(
        p.handle(2, prepared_ok("t1")),
        vec![
            persist(prepared_record("t1"), true),
            send(
                Body::VoteCommit {
                    txn: tid("t1"),
                    result: None
                },
                true
            ),
        ]
    );
    let t = p.txn(&tid("t1")).expect("t1 is known");
    assert_eq!((t.state, t.vote), (PState::Prepared, Some(Vote::Commit)));
    assert_eq!(p.in_doubt(), vec![tid("t1")]);
    assert_eq!(p.counts(), (0, 0));
}

#[test]
fn resource_refusal_votes_abort_without_logging() {
    let mut p = connected();
    p.handle(1, msg(prepare("t1")));
    assert_eq!(
        p.handle(2, prepared_err("t1", "lock conflict")),
        vec![
            finish("t1", Decision::Abort),
            send(vote_abort("t1", "lock conflict"), false),
        ]
    );
    let t = p.txn(&tid("t1")).expect("t1 is known");
    assert_eq!((t.state, t.vote), (PState::Aborted, Some(Vote::Abort)));
    assert_eq!(t.reason.as_deref(), Some("lock conflict"));
    assert_eq!(p.counts(), (0, 1));
    assert!(p.in_doubt().is_empty());
    // No ACK is owed: the coordinator has not decided.
    assert_eq!(p.handle(3, finished_ok("t1")), vec![]);
}

#[test]
fn resource_answers_for_unknown_or_settled_transactions_are_ignored() {
    let mut p = prepared();
    assert_eq!(p.handle(3, prepared_ok("t9")), vec![]);
    assert_eq!(p.handle(3, prepared_ok("t1")), vec![]);
    assert_eq!(p.handle(3, prepared_err("t1", "late")), vec![]);
    assert_eq!(state(&p, "t1"), Some(PState::Prepared));
}

#[test]
fn nothing_is_sent_while_disconnected_and_in_doubt_is_asked_on_return() {
    let mut p = connected();
    p.handle(1, msg(prepare("t1")));
    p.handle(1, Event::TransportDown);
    assert_eq!(
        p.handle(2, prepared_ok("t1")),
        vec![persist(prepared_record("t1"), true)]
    );
    assert_eq!(
        register(&mut p, 3),
        vec![registered_notice(), send(query("t1"), false)]
    );
    assert_eq!(
        p.handle(4, Event::TransportDown),
        vec![Action::Session(SessionNotice::Lost)]
    );
    assert!(!p.connected());
    assert_eq!(p.handle(10_000, Event::Tick), vec![]);
}

// ---- decisions ----------------------------------------------------------------

#[test]
fn commit_while_prepared_is_forced_applied_then_acked() {
    let mut p = prepared();
    assert_eq!(
        p.handle(200, msg(commit("t1"))),
        vec![
            persist(decided_record("t1", Decision::Commit, None), true),
            finish("t1", Decision::Commit),
        ]
    );
    assert_eq!(state(&p, "t1"), Some(PState::Committed));
    assert!(p.txn(&tid("t1")).is_some_and(PTxn::finishing));
    assert_eq!(p.counts(), (1, 0));
    assert!(p.in_doubt().is_empty());
    // The ACK follows the resource's answer.
    assert_eq!(
        p.handle(201, finished_ok("t1")),
        vec![send(ack("t1", Decision::Commit), true)]
    );
    assert!(!p.txn(&tid("t1")).is_some_and(PTxn::finishing));
    // A repeated answer is ignored.
    assert_eq!(p.handle(202, finished_ok("t1")), vec![]);
}

#[test]
fn abort_while_prepared_is_logged_without_sync_then_acked() {
    let mut p = prepared();
    assert_eq!(
        p.handle(200, msg(abort("t1"))),
        vec![
            persist(decided_record("t1", Decision::Abort, None), false),
            finish("t1", Decision::Abort),
        ]
    );
    assert_eq!(state(&p, "t1"), Some(PState::Aborted));
    assert_eq!(p.counts(), (0, 1));
    assert_eq!(
        p.handle(201, finished_ok("t1")),
        vec![send(ack("t1", Decision::Abort), false)]
    );
}

#[test]
fn duplicate_decisions_are_acked_again_and_counted_once() {
    let mut p = prepared();
    p.handle(200, msg(commit("t1")));
    // While the resource works, a repeated decision waits with the first.
    assert_eq!(p.handle(201, msg(commit("t1"))), vec![]);
    assert_eq!(
        p.handle(202, finished_ok("t1")),
        vec![send(ack("t1", Decision::Commit), true)]
    );
    assert_eq!(
        p.handle(203, msg(commit("t1"))),
        vec![send(ack("t1", Decision::Commit), true)]
    );
    assert_eq!(p.counts(), (1, 0));

    let mut p = prepared();
    p.handle(200, msg(abort("t1")));
    p.handle(201, finished_ok("t1"));
    assert_eq!(
        p.handle(202, msg(abort("t1"))),
        vec![send(ack("t1", Decision::Abort), false)]
    );
    assert_eq!(p.counts(), (0, 1));
}

#[test]
fn an_ack_owed_across_a_reconnect_goes_on_the_new_connection() {
    let mut p = prepared();
    p.handle(200, msg(commit("t1")));
    p.handle(201, Event::TransportDown);
    p.handle(202, Event::TransportUp { conn: ConnId(8) });
    p.handle(202, msg(welcome()));
    assert_eq!(
        p.handle(203, finished_ok("t1")),
        vec![Action::Send {
            conn: ConnId(8),
            body: ack("t1", Decision::Commit),
            after_durable: true,
        }]
    );
}

// ---- heuristic outcomes -------------------------------------------------------

#[test]
fn a_heuristic_answer_is_logged_forced_then_reported_in_every_ack() {
    let mut p = prepared();
    p.handle(200, msg(commit("t1")));
    let h = rolled_back_by_hand();
    assert_eq!(
        p.handle(201, finished_mixed("t1")),
        vec![
            persist(heuristic_record("t1", Decision::Commit, &h), true),
            alert(
                "t1",
                "HEURISTIC OUTCOME (mixed): the decision is commit, but the database has aborted it; reconcile the data. The coordinator is told in the ACK."
            ),
            send(heuristic_ack("t1", Decision::Commit, &h), true),
        ]
    );
    let t = p.txn(&tid("t1")).expect("t1 is known");
    assert_eq!(t.state, PState::Committed);
    assert_eq!(t.heuristic_outcome.as_ref(), Some(&h));
    assert_eq!(
        serde_json::to_value(t.view(&tid("t1"), 300)).unwrap()["heuristic_outcome"],
        json!({"kind": "mixed", "detail": "the database has aborted it"})
    );
    // A re-sent COMMIT gets the same report, and no second record.
    assert_eq!(
        p.handle(202, msg(commit("t1"))),
        vec![send(heuristic_ack("t1", Decision::Commit, &h), true)]
    );
    // So does one after a restart from the log.
    let log = vec![
        prepared_record("t1"),
        decided_record("t1", Decision::Commit, None),
        heuristic_record("t1", Decision::Commit, &h),
    ];
    let mut again = Participant::recover(opts(), 0, &log);
    assert_eq!(again.counts(), (1, 0));
    register(&mut again, 1);
    assert_eq!(
        again.handle(2, msg(commit("t1"))),
        vec![send(heuristic_ack("t1", Decision::Commit, &h), true)]
    );
}

#[test]
fn an_abort_the_resource_could_not_carry_out_is_reported_too() {
    let mut p = prepared();
    p.handle(200, msg(abort("t1")));
    let h = Heuristic::new(HeuristicKind::Hazard, "gone, status unknown");
    let out = p.handle(
        201,
        Event::ResourceFinished {
            txn: tid("t1"),
            result: Err(h.clone()),
        },
    );
    assert_eq!(
        out[0],
        persist(heuristic_record("t1", Decision::Abort, &h), true)
    );
    assert_eq!(
        out.last(),
        Some(&send(heuristic_ack("t1", Decision::Abort, &h), true)),
        "{out:?}"
    );
    assert_eq!(out.len(), 3, "{out:?}");
}

#[test]
fn heuristic_outcomes_survive_a_checkpoint() {
    let mut p = connected();
    for txn in ["t1", "t2"] {
        p.handle(1, msg(prepare(txn)));
        p.handle(1, prepared_ok(txn));
    }
    p.handle(2, msg(commit("t1")));
    p.handle(2, finished_mixed("t1"));
    p.handle(2, msg(abort("t2")));
    p.handle(2, finished_mixed("t2"));
    let h = rolled_back_by_hand();
    let live = p.live_records();
    assert_eq!(
        live,
        vec![
            decided_record("t1", Decision::Commit, None),
            heuristic_record("t1", Decision::Commit, &h),
            decided_record("t2", Decision::Abort, None),
            heuristic_record("t2", Decision::Abort, &h),
        ]
    );
    let again = Participant::recover(opts(), 3, &live);
    for txn in ["t1", "t2"] {
        let t = again.txn(&tid(txn)).expect("kept");
        assert_eq!(t.heuristic_outcome.as_ref(), Some(&h), "{txn}");
    }
}

#[test]
fn a_transaction_past_the_history_limit_is_kept_until_its_resource_answers() {
    let mut p = connected_with(ParticipantOptions {
        history_limit: 1,
        ..opts()
    });
    for txn in ["t1", "t2"] {
        p.handle(1, msg(prepare(txn)));
        p.handle(1, prepared_ok(txn));
        p.handle(2, msg(commit(txn)));
    }
    // t1 is past the limit, but its ACK is still owed.
    assert_eq!(state(&p, "t1"), Some(PState::Committed));
    assert_eq!(
        p.handle(3, finished_ok("t1")),
        vec![send(ack("t1", Decision::Commit), true)]
    );
    assert!(p.txn(&tid("t1")).is_none(), "forgotten once answered");
}

#[test]
fn abort_for_an_unknown_transaction_leaves_a_tombstone() {
    let mut p = connected();
    assert_eq!(
        p.handle(1, msg(abort("t1"))),
        vec![send(ack("t1", Decision::Abort), false)]
    );
    assert_eq!(state(&p, "t1"), Some(PState::Aborted));
    assert_eq!(p.counts(), (0, 1));
    // A PREPARE that arrives after the abort is voted down, not prepared.
    assert_eq!(
        p.handle(2, msg(prepare("t1"))),
        vec![send(
            vote_abort("t1", "already aborted by the coordinator"),
            false
        )]
    );
    assert_eq!(p.counts(), (0, 1));
}

#[test]
fn commit_for_an_unknown_transaction_is_acked_and_not_remembered() {
    let mut p = connected();
    assert_eq!(
        p.handle(1, msg(commit("t1"))),
        vec![send(ack("t1", Decision::Commit), false)]
    );
    assert!(p.txn(&tid("t1")).is_none());
    assert_eq!(p.counts(), (0, 0));
}

#[test]
fn abort_while_preparing_is_acked_after_the_resource_answers() {
    for result in [
        Ok(Prepared::state(json!({"writes": 1}))),
        Err("busy".to_string()),
    ] {
        let mut p = connected();
        p.handle(1, msg(prepare("t1")));
        assert_eq!(p.handle(2, msg(abort("t1"))), vec![]);
        assert_eq!(p.handle(3, msg(abort("t1"))), vec![]);
        assert_eq!(state(&p, "t1"), Some(PState::Preparing));
        let answer = Event::ResourcePrepared {
            txn: tid("t1"),
            result,
        };
        assert_eq!(p.handle(4, answer), vec![finish("t1", Decision::Abort)]);
        let t = p.txn(&tid("t1")).expect("t1 is known");
        assert_eq!((t.state, t.vote), (PState::Aborted, Some(Vote::Abort)));
        assert_eq!(p.counts(), (0, 1));
        assert_eq!(
            p.handle(5, finished_ok("t1")),
            vec![send(ack("t1", Decision::Abort), false)]
        );
    }
}

#[test]
fn commit_before_voting_is_refused_with_an_alert() {
    let mut p = connected();
    p.handle(1, msg(prepare("t1")));
    assert_eq!(
        p.handle(2, msg(commit("t1"))),
        vec![alert(
            "t1",
            "COMMIT received before this participant voted; refused"
        )]
    );
    assert_eq!(state(&p, "t1"), Some(PState::Preparing));
    assert_eq!(p.counts(), (0, 0));
}

#[test]
fn conflicting_decisions_raise_an_alert_and_are_not_acked() {
    let mut p = prepared();
    p.handle(200, msg(commit("t1")));
    assert_eq!(
        p.handle(201, msg(abort("t1"))),
        vec![alert(
            "t1",
            "coordinator says abort but this participant already committed; the message is refused"
        )]
    );
    assert_eq!(state(&p, "t1"), Some(PState::Committed));

    let mut p = prepared();
    p.handle(200, msg(abort("t1")));
    assert_eq!(
        p.handle(201, msg(commit("t1"))),
        vec![alert(
            "t1",
            "coordinator says commit but this participant already aborted; the message is refused"
        )]
    );
    assert_eq!(state(&p, "t1"), Some(PState::Aborted));
    assert_eq!(p.counts(), (0, 1));
}

// ---- duplicate PREPARE ------------------------------------------------------

#[test]
fn duplicate_prepare_gets_the_same_vote_again() {
    let mut p = connected();
    p.handle(1, msg(prepare("t1")));
    // Still preparing: the vote follows when the resource answers.
    assert_eq!(p.handle(2, msg(prepare("t1"))), vec![]);
    p.handle(3, prepared_ok("t1"));
    let vote_commit = vec![send(
        Body::VoteCommit {
            txn: tid("t1"),
            result: None,
        },
        true,
    )];
    assert_eq!(p.handle(4, msg(prepare("t1"))), vote_commit);
    p.handle(5, msg(commit("t1")));
    assert_eq!(p.handle(6, msg(prepare("t1"))), vote_commit);

    let mut p = connected();
    p.handle(1, msg(prepare("t2")));
    p.handle(2, prepared_err("t2", "no space"));
    assert_eq!(
        p.handle(3, msg(prepare("t2"))),
        vec![send(vote_abort("t2", "no space"), false)]
    );
}

/// Pins current behaviour, which differs from the doc of `PTxn::vote`
/// ("re-sent unchanged for a duplicate PREPARE"): after voting commit and
/// then receiving ABORT, a duplicate PREPARE is answered VOTE_ABORT without a
/// reason, not the VOTE_COMMIT that was given. Harmless (the coordinator has
/// decided abort and refuses the changed vote), but it is not the same vote.
#[test]
fn duplicate_prepare_after_an_abort_of_a_commit_vote_answers_abort() {
    let mut p = prepared();
    p.handle(200, msg(abort("t1")));
    assert_eq!(
        p.handle(201, msg(prepare("t1"))),
        vec![send(
            Body::VoteAbort {
                txn: tid("t1"),
                reason: None
            },
            false
        )]
    );
}

// ---- in doubt: queries and operator resolution --------------------------------

#[test]
fn in_doubt_transaction_is_queried_with_capped_doubling_backoff() {
    let mut p = prepared_with(ParticipantOptions {
        decision_timeout_ms: 1_000,
        query_max_ms: 3_000,
        ..opts()
    });
    // Prepared at 100: first query at 1_100, then 2_000 and 3_000 (capped) later.
    assert_eq!(p.handle(1_099, Event::Tick), vec![]);
    assert_eq!(p.handle(1_100, Event::Tick), vec![send(query("t1"), false)]);
    assert_eq!(p.handle(3_099, Event::Tick), vec![]);
    assert_eq!(p.handle(3_100, Event::Tick), vec![send(query("t1"), false)]);
    assert_eq!(p.handle(6_099, Event::Tick), vec![]);
    assert_eq!(p.handle(6_100, Event::Tick), vec![send(query("t1"), false)]);
    assert_eq!(p.txn(&tid("t1")).map(|t| t.queries), Some(3));
    // Once decided, no more queries.
    p.handle(6_200, msg(commit("t1")));
    assert_eq!(p.handle(100_000, Event::Tick), vec![]);
}

#[test]
fn default_decision_timeout_is_respected() {
    let mut p = prepared();
    assert_eq!(p.handle(5_099, Event::Tick), vec![]);
    assert_eq!(p.handle(5_100, Event::Tick), vec![send(query("t1"), false)]);
}

#[test]
fn only_transactions_still_in_doubt_are_queried_in_id_order() {
    let mut p = connected_with(ParticipantOptions {
        decision_timeout_ms: 1_000,
        query_max_ms: 1_000,
        ..opts()
    });
    for t in ["t3", "t1", "t2", "t4"] {
        p.handle(100, msg(prepare(t)));
        p.handle(100, prepared_ok(t));
    }
    // A history of ended transactions is never asked about.
    for i in 0..50 {
        let t = format!("done-{i}");
        p.handle(100, msg(prepare(&t)));
        p.handle(100, prepared_ok(&t));
        p.handle(100, msg(commit(&t)));
    }
    assert_eq!(
        p.handle(1_100, Event::Tick),
        ["t1", "t2", "t3", "t4"]
            .iter()
            .map(|t| send(query(t), false))
            .collect::<Vec<_>>()
    );
    p.handle(1_200, msg(commit("t2")));
    p.handle(1_200, msg(abort("t4")));
    assert_eq!(p.in_doubt(), vec![tid("t1"), tid("t3")]);
    assert_eq!(
        p.handle(2_100, Event::Tick),
        vec![send(query("t1"), false), send(query("t3"), false)]
    );
    // Recovered from the log, the same two are in doubt.
    let q = Participant::recover(opts(), 0, &p.live_records());
    assert_eq!(q.in_doubt(), vec![tid("t1"), tid("t3")]);
}
#[test]
fn resolve_of_an_in_doubt_transaction_persists_a_forced_heuristic_outcome() {
    let mut p = prepared();
    assert_eq!(
        p.handle(300, resolve("t1", Decision::Abort, "coordinator lost")),
        vec![
            persist(
                decided_record("t1", Decision::Abort, Some("coordinator lost")),
                true
            ),
            finish("t1", Decision::Abort),
        ]
    );
    let t = p.txn(&tid("t1")).expect("t1 is known");
    assert_eq!(t.state, PState::Aborted);
    assert_eq!(t.heuristic.as_deref(), Some("coordinator lost"));
    assert!(p.in_doubt().is_empty());
    assert_eq!(p.counts(), (0, 1));
    assert_eq!(p.handle(301, finished_ok("t1")), vec![], "no ACK is owed");
    // The coordinator's opposite decision is a mixed outcome: logged,
    // alerted, and reported in the ACK (which stops the re-sending).
    let h = Heuristic::new(
        HeuristicKind::Mixed,
        "an operator aborted this participant's part by hand before the commit decision arrived: coordinator lost",
    );
    assert_eq!(
        p.handle(302, msg(commit("t1"))),
        vec![
            persist(heuristic_record("t1", Decision::Commit, &h), true),
            alert(
                "t1",
                "HEURISTIC OUTCOME (mixed): the decision is commit, but an operator aborted this participant's part by hand before the commit decision arrived: coordinator lost; reconcile the data. The coordinator is told in the ACK."
            ),
            send(heuristic_ack("t1", Decision::Commit, &h), true),
        ]
    );
    assert_eq!(
        p.handle(303, msg(commit("t1"))),
        vec![send(heuristic_ack("t1", Decision::Commit, &h), true)],
        "recorded once"
    );
}

#[test]
fn an_opposite_decision_while_the_operators_finish_runs_is_acked_after_it() {
    let mut p = prepared();
    p.handle(300, resolve("t1", Decision::Abort, "by hand"));
    let out = p.handle(301, msg(commit("t1")));
    assert_eq!(out.len(), 2, "record and alert, no ACK yet: {out:?}");
    let h = p
        .txn(&tid("t1"))
        .and_then(|t| t.heuristic_outcome.clone())
        .expect("recorded");
    assert_eq!(
        p.handle(302, finished_ok("t1")),
        vec![send(heuristic_ack("t1", Decision::Commit, &h), true)]
    );
}

#[test]
fn resolve_that_matches_the_coordinator_is_acked_normally() {
    let mut p = prepared();
    assert_eq!(
        p.handle(300, resolve("t1", Decision::Commit, "checked by hand")),
        vec![
            persist(
                decided_record("t1", Decision::Commit, Some("checked by hand")),
                true
            ),
            finish("t1", Decision::Commit),
        ]
    );
    p.handle(301, finished_ok("t1"));
    assert_eq!(
        p.handle(302, msg(commit("t1"))),
        vec![send(ack("t1", Decision::Commit), true)]
    );
    assert_eq!(p.counts(), (1, 0));
}

#[test]
fn resolve_of_a_transaction_not_in_doubt_is_refused() {
    let mut p = prepared();
    p.handle(200, msg(commit("t1")));
    assert_eq!(
        p.handle(201, resolve("t1", Decision::Abort, "oops")),
        vec![alert(
            "t1",
            "resolve refused: transaction `t1` is committed, not in doubt; nothing to resolve"
        )]
    );
    p.handle(202, msg(prepare("t2")));
    assert_eq!(
        p.handle(203, resolve("t2", Decision::Abort, "oops")),
        vec![alert(
            "t2",
            "resolve refused: transaction `t2` is preparing, not in doubt; nothing to resolve"
        )]
    );
    assert_eq!(
        p.handle(204, resolve("t9", Decision::Commit, "oops")),
        vec![alert(
            "t9",
            "resolve refused: transaction `t9` is not known to this participant"
        )]
    );
    assert_eq!(state(&p, "t1"), Some(PState::Committed));
    assert_eq!(p.counts(), (1, 0));
}

// ---- other messages -------------------------------------------------------------

#[test]
fn other_messages_are_ignored_reported_or_refused() {
    let mut p = connected();
    for quiet in [
        Body::HeartbeatAck,
        Body::Welcome {
            state: "READY".into(),
            term: None,
        },
        Body::StatusReport(json!({})),
    ] {
        assert_eq!(p.handle(1, msg(quiet)), vec![]);
    }
    assert_eq!(
        p.handle(
            1,
            msg(Body::Error {
                code: ErrorCode::Refused.into(),
                message: "duplicate vote".into(),
                request_id: None,
            })
        ),
        vec![Action::Alert {
            txn: None,
            message: "coordinator reported error refused: duplicate vote".into(),
        }]
    );
    assert_eq!(
        p.handle(1, msg(query("t1"))),
        vec![Action::Reject {
            conn: C,
            error: WireError::new(
                ErrorCode::InvalidMessage,
                "a participant does not accept `query`"
            ),
            close: false,
        }]
    );
}

// ---- recovery and history -------------------------------------------------------

#[test]
fn recover_puts_prepared_without_decided_in_doubt() {
    let records = vec![
        prepared_record("t1"),
        prepared_record("t2"),
        decided_record("t2", Decision::Commit, None),
        prepared_record("t3"),
        decided_record("t3", Decision::Abort, Some("operator")),
    ];
    let mut p = Participant::recover(opts(), 50, &records);
    assert_eq!(p.in_doubt(), vec![tid("t1")]);
    assert_eq!(state(&p, "t2"), Some(PState::Committed));
    assert_eq!(state(&p, "t3"), Some(PState::Aborted));
    assert_eq!(
        p.txn(&tid("t3")).and_then(|t| t.heuristic.clone()),
        Some("operator".into())
    );
    let t1 = p.txn(&tid("t1")).expect("t1 is in doubt");
    assert_eq!(t1.vote, Some(Vote::Commit));
    assert_eq!(t1.participants, pids(&["p1", "p2"]));
    assert_eq!(p.counts(), (1, 1));
    assert!(!p.connected());
    // Asked about as soon as the coordinator is reachable.
    assert_eq!(
        register(&mut p, 51),
        vec![registered_notice(), send(query("t1"), false)]
    );
    assert_eq!(p.txn(&tid("t1")).map(|t| t.queries), Some(1));
    // A duplicate PREPARE is answered with the logged vote.
    assert_eq!(
        p.handle(52, msg(prepare("t1"))),
        vec![send(
            Body::VoteCommit {
                txn: tid("t1"),
                result: None
            },
            true
        )]
    );
    // The decision finishes it as if nothing had happened.
    assert_eq!(
        p.handle(53, msg(commit("t1"))),
        vec![
            persist(decided_record("t1", Decision::Commit, None), true),
            finish("t1", Decision::Commit),
        ]
    );
    assert_eq!(
        p.handle(54, finished_ok("t1")),
        vec![send(ack("t1", Decision::Commit), true)]
    );
    assert_eq!(p.counts(), (2, 1));
}

#[test]
fn recovered_in_doubt_transaction_is_queried_again_after_a_short_backoff() {
    let mut p = Participant::recover(opts(), 0, &[prepared_record("t1")]);
    register(&mut p, 0);
    assert_eq!(p.handle(199, Event::Tick), vec![]);
    assert_eq!(p.handle(200, Event::Tick), vec![send(query("t1"), false)]);
}

#[test]
fn recover_counts_a_repeated_decided_record_once() {
    let records = vec![
        prepared_record("t1"),
        decided_record("t1", Decision::Commit, None),
        decided_record("t1", Decision::Commit, None),
        decided_record("t2", Decision::Abort, Some("operator")),
        decided_record("t2", Decision::Abort, Some("operator")),
    ];
    let p = Participant::recover(opts(), 0, &records);
    assert_eq!(p.counts(), (1, 1));
    assert!(p.in_doubt().is_empty());
}

#[test]
fn recover_ignores_coordinator_records() {
    let records = vec![
        Record::Decision {
            txn: tid("t1"),
            decision: Decision::Commit,
            participants: pids(&["p1"]),
            client_named: false,
        },
        Record::End { txn: tid("t1") },
    ];
    let p = Participant::recover(opts(), 0, &records);
    assert!(p.txn(&tid("t1")).is_none());
    assert_eq!(p.counts(), (0, 0));
}

#[test]
fn live_records_keep_in_doubt_commits_and_heuristics() {
    let mut p = connected();
    for txn in ["t1", "t2", "t3", "t4", "t5"] {
        p.handle(1, msg(prepare(txn)));
    }
    for txn in ["t1", "t2", "t3", "t4"] {
        p.handle(2, prepared_ok(txn));
    }
    p.handle(3, msg(commit("t2")));
    p.handle(3, msg(abort("t3")));
    p.handle(3, resolve("t4", Decision::Abort, "by hand"));
    p.handle(3, msg(abort("t6")));
    assert_eq!(
        p.live_records(),
        vec![
            Record::Prepared {
                txn: tid("t1"),
                participants: pids(&["p1", "p2"]),
                state: json!({"writes": 1}),
            },
            decided_record("t2", Decision::Commit, None),
            decided_record("t4", Decision::Abort, Some("by hand")),
        ]
    );
    // Replaying the checkpoint gives the same view.
    let again = Participant::recover(opts(), 4, &p.live_records());
    assert_eq!(again.in_doubt(), vec![tid("t1")]);
    assert_eq!(state(&again, "t2"), Some(PState::Committed));
    assert_eq!(state(&again, "t4"), Some(PState::Aborted));
}

#[test]
fn history_is_bounded_and_never_drops_undecided_transactions() {
    let mut p = connected_with(ParticipantOptions {
        history_limit: 1,
        ..opts()
    });
    p.handle(1, msg(prepare("t0")));
    p.handle(1, prepared_ok("t0"));
    for txn in ["t1", "t2"] {
        p.handle(1, msg(prepare(txn)));
        p.handle(1, prepared_ok(txn));
        p.handle(2, msg(commit(txn)));
        p.handle(2, finished_ok(txn));
    }
    assert!(p.txn(&tid("t1")).is_none());
    assert_eq!(state(&p, "t2"), Some(PState::Committed));
    assert_eq!(state(&p, "t0"), Some(PState::Prepared));
    assert_eq!(p.counts(), (2, 0));
    // A forgotten commit is still acknowledged.
    assert_eq!(
        p.handle(3, msg(commit("t1"))),
        vec![send(ack("t1", Decision::Commit), false)]
    );
}

#[test]
fn outcome_map_lists_every_known_transaction() {
    let mut p = prepared();
    p.handle(200, msg(abort("t2")));
    assert_eq!(
        outcome_map(&p),
        [(tid("t1"), PState::Prepared), (tid("t2"), PState::Aborted)]
            .into_iter()
            .collect()
    );
}

// ---- seeded random schedules -------------------------------------------------

/// One random run against a well-behaved coordinator model: PREPAREs (some
/// duplicated), resource answers, decisions (commit only after a commit vote,
/// some duplicated), disconnects, ticks and restarts from every record the
/// participant asked to persist. After every step the write-ahead rules must
/// hold; a failure names its seed and step so it replays.
struct Sim {
    seed: u64,
    rng: StdRng,
    p: Participant,
    now: Millis,
    conn: Option<ConnId>,
    next_conn: u64,
    log: Vec<Record>,
    /// The connection each transaction's PREPARE was sent on.
    prepared_on: BTreeMap<TxnId, ConnId>,
    /// Transactions whose `PrepareResource` has not been answered.
    preparing: BTreeSet<TxnId>,
    /// Votes the coordinator received.
    votes: BTreeMap<TxnId, Vote>,
    /// The coordinator's decisions.
    decisions: BTreeMap<TxnId, Decision>,
    /// Outcomes applied to the resource; each at most once.
    finished: BTreeMap<TxnId, Decision>,
    /// Transactions whose `FinishResource` has not been answered.
    finishing: BTreeSet<TxnId>,
    next_txn: u32,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim {
            seed,
            rng: StdRng::seed_from_u64(seed),
            p: Participant::new(
                ParticipantOptions {
                    decision_timeout_ms: 300,
                    query_max_ms: 1_000,
                    ..opts()
                },
                0,
            ),
            now: 0,
            conn: None,
            next_conn: 0,
            log: Vec::new(),
            prepared_on: BTreeMap::new(),
            preparing: BTreeSet::new(),
            votes: BTreeMap::new(),
            decisions: BTreeMap::new(),
            finished: BTreeMap::new(),
            finishing: BTreeSet::new(),
            next_txn: 0,
        }
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            return None;
        }
        Some(items[self.rng.random_range(0..items.len())].clone())
    }

    fn undecided(&self) -> Vec<TxnId> {
        (1..=self.next_txn)
            .map(|n| TxnId(format!("t{n}")))
            .filter(|t| !self.decisions.contains_key(t))
            .collect()
    }

    fn random_step(&mut self, step: usize) {
        let ctx = format!("step {step}");
        let roll = self.rng.random_range(0..100);
        let from_coordinator = roll < 20 || (45..70).contains(&roll);
        match (self.conn, from_coordinator) {
            (None, true) => {
                self.next_conn += 1;
                let conn = ConnId(self.next_conn);
                self.conn = Some(conn);
                self.step_event(Event::TransportUp { conn }, &ctx);
                let state = "READY".to_string();
                self.step_event(msg(Body::Welcome { state, term: None }), &ctx);
            }
            (Some(conn), true) if roll < 20 => self.prepare_step(conn, &ctx),
            (Some(_), true) => self.decision_step(&ctx),
            (_, false) => self.local_step(roll, &ctx),
        }
    }

    /// A new transaction, or a duplicate PREPARE of an undecided one sent on
    /// this same connection (the coordinator sends PREPARE once, so it never
    /// reaches a later connection).
    fn prepare_step(&mut self, conn: ConnId, ctx: &str) {
        let again: Vec<TxnId> = self
            .undecided()
            .into_iter()
            .filter(|t| self.prepared_on.get(t) == Some(&conn))
            .collect();
        let txn = match self.pick(&again) {
            Some(t) if self.rng.random_bool(0.3) => t,
            _ => {
                self.next_txn += 1;
                TxnId(format!("t{}", self.next_txn))
            }
        };
        self.prepared_on.insert(txn.clone(), conn);
        let body = Body::Prepare {
            txn,
            participants: pids(&["p1", "p2"]),
            data: Value::Null,
            term: None,
        };
        self.step_event(msg(body), ctx);
    }

    /// The coordinator decides (commit only on a commit vote), or repeats a
    /// decision it took.
    fn decision_step(&mut self, ctx: &str) {
        let undecided = self.undecided();
        let decided: Vec<TxnId> = self.decisions.keys().cloned().collect();
        let txn = if self.rng.random_bool(0.7) {
            self.pick(&undecided)
        } else {
            self.pick(&decided)
        };
        let Some(txn) = txn else {
            return;
        };
        let d = match self.decisions.get(&txn) {
            Some(d) => *d,
            None if self.votes.get(&txn) == Some(&Vote::Commit) && self.rng.random_bool(0.8) => {
                Decision::Commit
            }
            None => Decision::Abort,
        };
        self.decisions.insert(txn.clone(), d);
        self.step_event(msg(Body::decision(txn, d)), ctx);
    }

    /// Events that need no message from the coordinator.
    fn local_step(&mut self, roll: u32, ctx: &str) {
        match roll {
            20..=44 if !self.finishing.is_empty() && self.rng.random_bool(0.4) => {
                // The resource answers a finish: now and then it found the
                // transaction finished the other way.
                let finishing: Vec<TxnId> = self.finishing.iter().cloned().collect();
                if let Some(txn) = self.pick(&finishing) {
                    let result = if self.rng.random_bool(0.9) {
                        Ok(())
                    } else {
                        Err(rolled_back_by_hand())
                    };
                    self.finishing.remove(&txn);
                    self.step_event(Event::ResourceFinished { txn, result }, ctx);
                }
            }
            20..=44 => {
                let preparing: Vec<TxnId> = self.preparing.iter().cloned().collect();
                if let Some(txn) = self.pick(&preparing) {
                    let result = if self.rng.random_bool(0.8) {
                        Ok(Prepared::default())
                    } else {
                        Err("no".to_string())
                    };
                    self.preparing.remove(&txn);
                    self.step_event(Event::ResourcePrepared { txn, result }, ctx);
                }
            }
            70..=77 => {
                if self.conn.take().is_some() {
                    self.step_event(Event::TransportDown, ctx);
                }
            }
            78..=95 => {
                self.now += self.rng.random_range(0..400);
                self.step_event(Event::Tick, ctx);
            }
            _ => {
                // Crash: the resource forgets work in progress, the connection
                // is gone, and the core is rebuilt from its log.
                let opts = self.p.opts.clone();
                self.p = Participant::recover(opts, self.now, &self.log);
                self.preparing.clear();
                self.finishing.clear();
                self.conn = None;
                self.check_state(&format!("seed {}, {ctx}, after restart", self.seed));
            }
        }
    }

    fn step_event(&mut self, event: Event, ctx: &str) {
        let out = self.p.handle(self.now, event.clone());
        let why = format!(
            "seed {}, {ctx}, now {}, event {event:?}",
            self.seed, self.now
        );
        for a in &out {
            self.check_action(a, &why);
        }
        self.check_state(&why);
    }

    fn check_action(&mut self, a: &Action, why: &str) {
        match a {
            Action::Persist { record, sync } => {
                let forced = match record {
                    Record::Prepared { .. } | Record::Heuristic { .. } => true,
                    Record::Decided { decision, .. } => *decision == Decision::Commit,
                    Record::Term { .. } => false,
                    Record::Decision { .. }
                    | Record::End { .. }
                    | Record::Outcome { .. }
                    | Record::Joined { .. }
                    | Record::Removed { .. }
                    | Record::Snapshot { .. } => {
                        panic!("coordinator record from a participant core; {why}")
                    }
                };
                assert!(!forced || *sync, "{record:?} not forced; {why}");
                self.log.push(record.clone());
            }
            Action::PrepareResource { txn, .. } => {
                assert!(
                    self.preparing.insert(txn.clone()),
                    "{txn} prepared twice at once; {why}"
                );
            }
            Action::FinishResource { txn, decision } => {
                let told = self.decisions.get(txn).copied().unwrap_or(Decision::Abort);
                assert_eq!(
                    *decision, told,
                    "{txn} finished against the decision; {why}"
                );
                let before = self.finished.insert(txn.clone(), *decision);
                assert_eq!(before, None, "{txn} finished twice; {why}");
                self.finishing.insert(txn.clone());
            }
            Action::Send {
                conn,
                body,
                after_durable,
            } => {
                assert_eq!(Some(*conn), self.conn, "sent on a dead connection; {why}");
                match body {
                    Body::VoteCommit { txn, .. } => {
                        let logged = self
                            .log
                            .iter()
                            .any(|r| matches!(r, Record::Prepared { txn: t, .. } if t == txn));
                        assert!(
                            *after_durable && logged,
                            "commit vote for {txn} before Prepared is durable; {why}"
                        );
                        let before = self.votes.insert(txn.clone(), Vote::Commit);
                        assert_ne!(before, Some(Vote::Abort), "{txn} vote changed; {why}");
                    }
                    Body::VoteAbort { txn, .. } => {
                        // The coordinator keeps the first vote it received.
                        self.votes.entry(txn.clone()).or_insert(Vote::Abort);
                    }
                    Body::Ack {
                        txn,
                        decision,
                        heuristic,
                    } if self.p.txn(txn).is_some() => {
                        assert!(
                            !self.finishing.contains(txn),
                            "{txn} acked before the resource answered; {why}"
                        );
                        let recorded = self.log.iter().rev().find_map(|r| match r {
                            Record::Heuristic {
                                txn: t, heuristic, ..
                            } if t == txn => Some(heuristic.clone()),
                            _ => None,
                        });
                        assert_eq!(
                            heuristic, &recorded,
                            "{txn}: the ACK must report the logged heuristic outcome; {why}"
                        );
                        assert!(
                            heuristic.is_none() || *after_durable,
                            "{txn}: a heuristic ACK before its record is durable; {why}"
                        );
                        if *decision == Some(Decision::Commit) {
                            let logged = self.log.iter().any(|r| {
                                matches!(r, Record::Decided { txn: t, decision: Decision::Commit, .. } if t == txn)
                            });
                            assert!(
                                *after_durable && logged,
                                "commit of {txn} acked before it is durable; {why}"
                            );
                        }
                    }
                    Body::Ack { .. } | Body::Query { .. } | Body::Hello { .. } => {}
                    other => panic!("unexpected message {other:?}; {why}"),
                }
            }
            // The resource's heuristic answers are told to the operator.
            Action::Alert { message, .. } if message.starts_with("HEURISTIC OUTCOME") => {}
            Action::Session(SessionNotice::Registered { .. } | SessionNotice::Lost) => {}
            Action::Notice { .. } => {}
            Action::Alert { .. }
            | Action::Reject { .. }
            | Action::Close { .. }
            | Action::Session(_) => {
                panic!("a well-behaved coordinator provoked {a:?}; {why}")
            }
        }
    }

    fn check_state(&self, why: &str) {
        for (txn, t) in self.p.txns() {
            let applied = match t.state {
                PState::Committed => Some(Decision::Commit),
                PState::Aborted => Some(Decision::Abort),
                PState::Preparing | PState::Prepared => None,
            };
            if let Some(d) = applied {
                // Unknown to the coordinator means presumed abort.
                let told = self.decisions.get(txn).copied().unwrap_or(Decision::Abort);
                assert_eq!(d, told, "{txn} is {:?}; {why}", t.state);
            }
        }
    }
}

#[test]
fn random_schedules_keep_the_write_ahead_rules() {
    let (mut commits, mut aborts) = (0, 0);
    for seed in 0..200 {
        let mut sim = Sim::new(seed);
        for step in 0..300 {
            sim.random_step(step);
        }
        let (c, a) = sim.p.counts();
        commits += c;
        aborts += a;
    }
    // A driver that never reaches both outcomes would test nothing.
    assert!(
        commits > 500 && aborts > 500,
        "{commits} commits, {aborts} aborts"
    );
}

// ---- deliberate bugs (tests of the checkers) ------------------------------

/// `Fault::VoteBeforePreparedDurable` changes exactly one thing: the vote
/// no longer waits for the `Prepared` record.
#[test]
fn fault_vote_before_durable_only_unmarks_the_vote() {
    let mut p = connected();
    p.inject(crate::protocol::fault::Fault::VoteBeforePreparedDurable);
    p.handle(1, msg(prepare("t1")));
    assert_eq!(
        p.handle(2, prepared_ok("t1")),
        vec![
            persist(prepared_record("t1"), true),
            send(
                Body::VoteCommit {
                    txn: tid("t1"),
                    result: None
                },
                false
            ),
        ]
    );
}

/// `Fault::CommitEveryPrepared`: a COMMIT for `t1` also commits `t2`, which
/// is in doubt too.
#[test]
fn fault_commit_every_prepared_commits_the_others_too() {
    let mut p = prepared();
    p.inject(crate::protocol::fault::Fault::CommitEveryPrepared);
    p.handle(200, msg(prepare("t2")));
    p.handle(200, prepared_ok("t2"));
    assert_eq!(
        p.handle(300, msg(commit("t1"))),
        vec![
            persist(decided_record("t1", Decision::Commit, None), true),
            finish("t1", Decision::Commit),
            persist(decided_record("t2", Decision::Commit, None), true),
            finish("t2", Decision::Commit),
        ]
    );
    assert_eq!(state(&p, "t2"), Some(PState::Committed));
    // Only the COMMIT received is acknowledged.
    assert_eq!(
        p.handle(301, finished_ok("t1")),
        vec![send(ack("t1", Decision::Commit), true)]
    );
    assert_eq!(p.handle(301, finished_ok("t2")), vec![]);
}

// ---- the session with the coordinator -------------------------------------------

/// Heartbeats every second; the coordinator may be silent for three.
fn beating() -> ParticipantOptions {
    ParticipantOptions {
        id: "p1".into(),
        heartbeat_interval_ms: 1_000,
        heartbeat_failure_threshold: 3,
        ..Default::default()
    }
}

fn heartbeat() -> Action {
    send(Body::Heartbeat, false)
}

fn close() -> Action {
    Action::Close { conn: C }
}

fn before_welcome(message_type: &'static str) -> Action {
    Action::Session(SessionNotice::BeforeWelcome { message_type })
}

#[test]
fn a_new_connection_is_greeted_with_hello_and_registered_by_the_first_welcome() {
    let mut p = Participant::new(beating(), 0);
    assert_eq!(p.link(), Link::Down);
    assert_eq!(
        p.handle(1, Event::TransportUp { conn: C }),
        vec![send(hello(), false)]
    );
    assert_eq!(p.link(), Link::Greeting { conn: C });
    assert_eq!(p.handle(2, msg(welcome())), vec![registered_notice()]);
    assert_eq!(p.link(), Link::Registered { conn: C });
    assert!(p.connected());
    // A second welcome is nothing new.
    assert_eq!(p.handle(3, msg(welcome())), vec![]);
}

#[test]
fn messages_before_welcome_are_ignored_with_a_notice() {
    let mut p = Participant::recover(beating(), 0, &[prepared_record("t1")]);
    p.handle(1, Event::TransportUp { conn: C });
    assert_eq!(
        p.handle(2, msg(prepare("t2"))),
        vec![before_welcome("prepare")]
    );
    assert_eq!(
        p.handle(3, msg(commit("t1"))),
        vec![before_welcome("commit")]
    );
    assert_eq!(state(&p, "t2"), None);
    assert_eq!(state(&p, "t1"), Some(PState::Prepared));
    // Nothing of the protocol goes out before welcome either: the query
    // for `t1` waits for the registration.
    assert_eq!(p.handle(5_000, Event::Tick), vec![]);
    assert_eq!(
        p.handle(5_001, msg(welcome())),
        vec![registered_notice(), send(query("t1"), false)]
    );
}

#[test]
fn an_error_before_welcome_is_a_refused_registration() {
    let mut p = Participant::new(beating(), 0);
    p.handle(1, Event::TransportUp { conn: C });
    assert_eq!(
        p.handle(
            2,
            msg(Body::Error {
                code: ErrorCode::DuplicateParticipant.into(),
                message: "participant id `p1` is already connected".into(),
                request_id: None,
            })
        ),
        vec![Action::Session(SessionNotice::Refused {
            code: ErrorCode::DuplicateParticipant.into(),
            message: "participant id `p1` is already connected".into(),
        })]
    );
    // The coordinator closes the connection itself.
    assert_eq!(p.link(), Link::Greeting { conn: C });
}

#[test]
fn a_challenge_before_welcome_closes_the_connection_with_a_notice() {
    let mut p = Participant::new(beating(), 0);
    p.handle(1, Event::TransportUp { conn: C });
    assert_eq!(
        p.handle(
            2,
            msg(Body::Challenge {
                nonce: "00".into(),
                participant_id: None,
            })
        ),
        vec![Action::Session(SessionNotice::SecretRequired), close()]
    );
    assert!(!p.connected());
}

#[test]
fn removed_by_an_operator_stops_the_session_before_or_after_welcome() {
    let removed = |text: &str| {
        msg(Body::Error {
            code: ErrorCode::Removed.into(),
            message: text.into(),
            request_id: None,
        })
    };
    let notice = |text: &str| {
        Action::Session(SessionNotice::Removed {
            message: text.into(),
        })
    };
    // Told while registered (a forced removal)...
    let mut p = Participant::new(beating(), 0);
    p.handle(1, Event::TransportUp { conn: C });
    p.handle(2, msg(welcome()));
    assert_eq!(
        p.handle(3, removed("`p1` was removed")),
        vec![notice("`p1` was removed"), close()]
    );
    // ...or as the answer to its hello after a removal.
    let mut p = Participant::new(beating(), 0);
    p.handle(1, Event::TransportUp { conn: C });
    assert_eq!(
        p.handle(2, removed("may not register again")),
        vec![notice("may not register again"), close()]
    );
}

#[test]
fn heartbeats_go_out_on_the_beat_once_registered() {
    let mut p = Participant::new(beating(), 0);
    // Not connected, then not yet welcomed: the beats pass silently.
    assert_eq!(p.handle(1_000, Event::Tick), vec![]);
    p.handle(1_500, Event::TransportUp { conn: C });
    assert_eq!(p.handle(2_000, Event::Tick), vec![]);
    p.handle(2_100, msg(welcome()));
    assert_eq!(p.handle(2_999, Event::Tick), vec![]);
    assert_eq!(p.handle(3_000, Event::Tick), vec![heartbeat()]);
    assert_eq!(p.handle(3_050, Event::Tick), vec![]);
    assert_eq!(p.handle(3_999, Event::Tick), vec![]);
    assert_eq!(p.handle(4_000, Event::Tick), vec![heartbeat()]);
}

#[test]
fn one_heartbeat_per_interval_however_often_time_is_told() {
    let mut p = Participant::new(beating(), 0);
    register(&mut p, 0);
    let mut beats = 0;
    for now in (0..=10_000).step_by(50) {
        let out = p.handle(now, Event::Tick);
        beats += out.iter().filter(|a| **a == heartbeat()).count();
        if now % 500 == 0 {
            p.handle(now, msg(Body::HeartbeatAck));
        }
    }
    assert_eq!(beats, 10);
    // A stalled process makes up for no missed beat: one now, the next a
    // whole interval later.
    p.handle(14_400, msg(Body::HeartbeatAck));
    assert_eq!(p.handle(14_500, Event::Tick), vec![heartbeat()]);
    assert_eq!(p.handle(15_000, Event::Tick), vec![]);
    p.handle(15_400, msg(Body::HeartbeatAck));
    assert_eq!(p.handle(15_499, Event::Tick), vec![]);
    assert_eq!(p.handle(15_500, Event::Tick), vec![heartbeat()]);
}

#[test]
fn a_silent_coordinator_is_given_up_at_the_beat_after_the_limit() {
    let mut p = Participant::new(beating(), 0);
    register(&mut p, 0);
    // Anything heard counts: a vote's answer as well as a heartbeat's.
    p.handle(500, msg(commit("t9")));
    for now in [1_000, 2_000, 3_000] {
        assert_eq!(p.handle(now, Event::Tick), vec![heartbeat()], "{now}");
    }
    // 3500 ms of silence is more than 3 × 1000.
    assert_eq!(
        p.handle(4_000, Event::Tick),
        vec![
            Action::Session(SessionNotice::Silent {
                silent_ms: 3_500,
                limit_ms: 3_000
            }),
            close()
        ]
    );
}

#[test]
fn losing_the_connection_resets_the_session() {
    let mut p = prepared_with(beating());
    assert_eq!(
        p.handle(200, Event::TransportDown),
        vec![Action::Session(SessionNotice::Lost)]
    );
    assert_eq!(p.link(), Link::Down);
    assert!(!p.connected());
    // Nothing is sent and nothing is let in without a connection.
    assert_eq!(p.handle(1_000, Event::Tick), vec![]);
    assert_eq!(p.handle(1_001, msg(commit("t1"))), vec![]);
    // The next connection starts again from hello; before its welcome,
    // messages are kept out.
    assert_eq!(
        p.handle(1_100, Event::TransportUp { conn: C }),
        vec![send(hello(), false)]
    );
    assert_eq!(
        p.handle(1_101, msg(commit("t1"))),
        vec![before_welcome("commit")]
    );
    assert_eq!(p.handle(2_000, Event::Tick), vec![]);
    assert_eq!(
        p.handle(2_001, msg(welcome())),
        vec![registered_notice(), send(query("t1"), false)]
    );
    assert_eq!(state(&p, "t1"), Some(PState::Prepared));
    // A connection that never got its welcome is not "lost".
    p.handle(2_002, Event::TransportDown);
    p.handle(2_003, Event::TransportUp { conn: C });
    assert_eq!(p.handle(2_004, Event::TransportDown), vec![]);
}

// ---- operator views ---------------------------------------------------------------

fn view_json(reply: AdminReply<'_>) -> Value {
    match reply {
        AdminReply::Status(v) => serde_json::to_value(v),
        AdminReply::TxnList(v) => serde_json::to_value(v),
        AdminReply::Txn(v) => serde_json::to_value(v),
        AdminReply::Refused(e) => panic!("refused: {e:?}"),
    }
    .expect("views serialise")
}

fn refused(reply: AdminReply<'_>) -> WireError {
    match reply {
        AdminReply::Refused(e) => e,
        other => panic!("answered: {other:?}"),
    }
}

fn list(state: Option<&str>, page_max: usize) -> AdminQuery<'_> {
    AdminQuery::TxnList {
        state,
        limit: None,
        cursor: None,
        page: crate::protocol::page::PageLimits::new(page_max, 1 << 20, 1 << 20),
    }
}

fn ids(v: &Value) -> Vec<&str> {
    v["transactions"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| t["transaction_id"].as_str().expect("an id"))
        .collect()
}

/// `t1` in doubt (prepared at 100), `t2` committed at 200, `t3` aborted at
/// 300, `t4` preparing since 400.
fn four_states() -> Participant {
    let mut p = prepared();
    p.handle(150, msg(prepare("t2")));
    p.handle(150, prepared_ok("t2"));
    p.handle(200, msg(commit("t2")));
    p.handle(300, msg(abort("t3")));
    p.handle(400, msg(prepare("t4")));
    p
}

/// The operator's views keep their exact JSON (tools and docs read them).
#[test]
fn status_and_transaction_views_keep_their_json() {
    let mut p = Participant::new(opts(), 0);
    register(&mut p, 0);
    p.handle(
        5,
        Event::Message {
            body: prepare("t-1"),
        },
    );
    p.handle(6, prepared_ok("t-1"));
    p.handle(10, Event::Tick);
    let t1 = json!({
        "transaction_id": "t-1",
        "state": "prepared",
        "participants": ["p1", "p2"],
        "vote": "commit",
        "reason": null,
        "heuristic": null,
        "age_ms": 4,
        "queries": 0,
    });
    assert_eq!(
        view_json(p.admin(10, AdminQuery::Status)),
        json!({
            "id": "p1",
            "connected": true,
            "committed": 0,
            "aborted": 0,
            "in_doubt": [t1],
        })
    );
    assert_eq!(
        view_json(p.admin(10, AdminQuery::TxnShow { txn: &tid("t-1") })),
        t1
    );
    assert_eq!(
        view_json(p.admin(10, list(None, 10))),
        json!({ "total": 1, "transactions": [t1] })
    );
}

#[test]
fn the_transaction_list_is_newest_first_filtered_by_state_and_paged() {
    let p = four_states();
    let all = view_json(p.admin(500, list(None, 10)));
    assert_eq!(ids(&all), ["t4", "t3", "t2", "t1"]);
    assert_eq!(all["total"], 4);
    for (state, want) in [
        ("in-flight", "t4"),
        ("in-doubt", "t1"),
        ("committed", "t2"),
        ("aborted", "t3"),
    ] {
        let v = view_json(p.admin(500, list(Some(state), 10)));
        assert_eq!(ids(&v), [want], "{state}");
        assert_eq!(v["total"], 1, "{state}");
    }
    let cut = view_json(p.admin(500, list(None, 3)));
    assert_eq!(ids(&cut), ["t4", "t3", "t2"]);
    assert_eq!(cut["total"], 4);
    // The cursor continues after the last entry shown.
    let cursor = cut["next"].as_str().expect("a next cursor").to_string();
    let rest = view_json(p.admin(
        500,
        AdminQuery::TxnList {
            state: None,
            limit: Some(3),
            cursor: Some(&cursor),
            page: crate::protocol::page::PageLimits::new(10, 1 << 20, 1 << 20),
        },
    ));
    assert_eq!(ids(&rest), ["t1"]);
    assert!(rest.get("next").is_none(), "{rest}");
    // A cursor that is not one is refused, naming what to pass.
    let bad = refused(p.admin(
        500,
        AdminQuery::TxnList {
            state: None,
            limit: None,
            cursor: Some("zz"),
            page: crate::protocol::page::PageLimits::new(10, 1 << 20, 1 << 20),
        },
    ));
    assert!(bad.message.contains("is not a cursor"), "{}", bad.message);
    // Ties in time are ordered by id, the greater first.
    let mut q = connected();
    q.handle(7, msg(abort("a")));
    q.handle(7, msg(abort("b")));
    assert_eq!(ids(&view_json(q.admin(8, list(None, 10)))), ["b", "a"]);
}

#[test]
fn an_unknown_state_or_transaction_is_refused_with_what_to_ask_instead() {
    let p = four_states();
    assert_eq!(
        refused(p.admin(500, list(Some("done"), 10))),
        WireError::new(
            ErrorCode::InvalidMessage,
            "unknown state `done`; use one of in-flight, in-doubt, committed, aborted, heuristic"
        )
    );
    assert_eq!(
        refused(p.admin(500, AdminQuery::TxnShow { txn: &tid("t9") })),
        WireError::new(
            ErrorCode::UnknownTransaction,
            "transaction `t9` is not known to this participant"
        )
    );
    let t3 = view_json(p.admin(500, AdminQuery::TxnShow { txn: &tid("t3") }));
    assert_eq!(
        (&t3["state"], &t3["age_ms"]),
        (&json!("aborted"), &json!(200))
    );
}

#[test]
fn only_a_transaction_in_doubt_may_be_resolved() {
    let p = four_states();
    assert_eq!(p.check_resolve(&tid("t1")), Ok(()));
    assert_eq!(
        p.check_resolve(&tid("t2")),
        Err(WireError::new(
            ErrorCode::Refused,
            "transaction `t2` is committed, not in doubt; nothing to resolve"
        ))
    );
    assert_eq!(
        p.check_resolve(&tid("t4")).map_err(|e| e.code),
        Err(ErrorCode::Refused)
    );
    assert_eq!(
        p.check_resolve(&tid("t9")).map_err(|e| e.code),
        Err(ErrorCode::UnknownTransaction)
    );
}

/// A welcome from a coordinator group's leader of an older term than one
/// already seen (a deposed leader) registers nothing; a newer one does.
#[test]
fn a_welcome_from_an_older_leader_term_is_refused() {
    let mut p = Participant::new(opts(), 0);
    let term = |t: u64| Body::Welcome {
        state: "READY".into(),
        term: Some(t),
    };
    p.handle(0, Event::TransportUp { conn: C });
    p.handle(0, msg(term(5)));
    assert!(p.connected());
    p.handle(1, Event::TransportDown);
    p.handle(1, Event::TransportUp { conn: C });
    let out = p.handle(2, msg(term(4)));
    assert!(!p.connected(), "a welcome of term 4 after term 5 registers");
    assert!(out.contains(&Action::Session(SessionNotice::StaleTerm {
        term: 4,
        seen: 5,
        message_type: "welcome",
    })));
    assert!(out.contains(&Action::Close { conn: C }));
    assert!(
        !out.iter().any(|a| matches!(a, Action::Persist { .. })),
        "{out:?}"
    );
    // The same or a newer term is welcome; a newer one is logged.
    p.handle(3, Event::TransportDown);
    p.handle(3, Event::TransportUp { conn: C });
    let out = p.handle(4, msg(term(5)));
    assert!(p.connected());
    assert!(
        !out.iter().any(|a| matches!(a, Action::Persist { .. })),
        "the same term is not logged again: {out:?}"
    );
    p.handle(5, Event::TransportDown);
    p.handle(5, Event::TransportUp { conn: C });
    let out = p.handle(6, msg(term(6)));
    assert!(p.connected());
    assert!(out.contains(&Action::Persist {
        record: Record::Term { term: 6 },
        sync: false
    }));
}

/// Every prepare and decision is fenced too, not only the welcome: one
/// from a term older than the highest seen is refused with `not_leader`
/// and the connection closed, and it reaches neither the log nor the
/// resource; a newer term on the connection raises the one seen (and is
/// logged before the vote it leads to).
#[test]
fn a_prepare_or_decision_from_an_older_leader_term_is_refused() {
    let mut p = Participant::new(opts(), 0);
    p.handle(0, Event::TransportUp { conn: C });
    p.handle(
        0,
        msg(Body::Welcome {
            state: "READY".into(),
            term: Some(5),
        }),
    );
    assert!(p.connected());
    let stale = |body: Body| body.with_term(4);
    for body in [
        stale(prepare("t1")),
        stale(commit("t1")),
        stale(abort("t1")),
    ] {
        let kind = body.message_type();
        let out = p.handle(1, msg(body));
        assert!(
            out.contains(&Action::Session(SessionNotice::StaleTerm {
                term: 4,
                seen: 5,
                message_type: kind,
            })),
            "{kind}: {out:?}"
        );
        let refused = out.iter().any(|a| {
            matches!(a, Action::Reject { conn, error, close: true }
                if *conn == C && error.code == ErrorCode::NotLeader
                    && error.message.contains("term 4") && error.message.contains("term 5"))
        });
        assert!(refused, "{kind}: {out:?}");
        assert!(
            !out.iter().any(|a| matches!(
                a,
                Action::Persist { .. }
                    | Action::PrepareResource { .. }
                    | Action::FinishResource { .. }
                    | Action::Send { .. }
            )),
            "{kind} from a deposed leader had an effect: {out:?}"
        );
    }
    assert!(p.txn(&tid("t1")).is_none());
    // The current term and an unstamped message (a single coordinator)
    // pass; a newer term is logged before the resource is asked.
    let out = p.handle(2, msg(prepare("t2").with_term(5)));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::PrepareResource { .. })));
    let out = p.handle(3, msg(prepare("t3")));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::PrepareResource { .. })));
    let out = p.handle(4, msg(prepare("t4").with_term(7)));
    let term_at = out.iter().position(|a| {
        a == &Action::Persist {
            record: Record::Term { term: 7 },
            sync: false,
        }
    });
    let ask_at = out
        .iter()
        .position(|a| matches!(a, Action::PrepareResource { .. }));
    assert!(
        matches!((term_at, ask_at), (Some(a), Some(b)) if a < b),
        "{out:?}"
    );
    let out = p.handle(5, msg(commit("t2").with_term(5)));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Reject { close: true, .. })));
}

/// The highest term seen survives a restart: it is in the log and in
/// every checkpoint, and a recovered participant refuses a welcome from
/// an older term.
#[test]
fn the_highest_term_seen_survives_a_restart_and_a_checkpoint() {
    let records = vec![Record::Term { term: 3 }, Record::Term { term: 8 }];
    let mut p = Participant::recover(opts(), 0, &records);
    assert!(p.live_records().contains(&Record::Term { term: 8 }));
    p.handle(0, Event::TransportUp { conn: C });
    let out = p.handle(
        1,
        msg(Body::Welcome {
            state: "READY".into(),
            term: Some(7),
        }),
    );
    assert!(!p.connected(), "{out:?}");
    assert!(out.contains(&Action::Close { conn: C }));
    // Without a group there is nothing to keep.
    let fresh = Participant::new(opts(), 0);
    assert!(!fresh
        .live_records()
        .iter()
        .any(|r| matches!(r, Record::Term { .. })));
}

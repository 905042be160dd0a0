//! Exact-output tests for the coordinator core, next to the concern each
//! one tests: every test feeds events and asserts the complete list of
//! actions that comes back, in order. This file holds the shared helpers.

use super::*;
use crate::protocol::bound;
use crate::protocol::message::{Outcome, Role};
use crate::protocol::record::Record;
use crate::protocol::stats::AbortCause;
use crate::protocol::timeline::Step;
use crate::protocol::types::PROTOCOL_VERSION;
use serde_json::{json, Value};
use std::collections::BTreeSet;

mod heuristic;
#[cfg(debug_assertions)]
mod invariants;
mod membership;
mod random;
mod timers;
mod txn;
mod views;

const CLIENT: ConnId = ConnId(100);
const P1: ConnId = ConnId(1);
const P2: ConnId = ConnId(2);
const P3: ConnId = ConnId(3);

fn opts() -> CoordinatorOptions {
    CoordinatorOptions {
        expected_participants: 2,
        txn_id_prefix: "t".into(),
        ..Default::default()
    }
}

fn pid(id: &str) -> ParticipantId {
    ParticipantId::from(id)
}

fn tid(id: &str) -> TxnId {
    TxnId::from(id)
}

fn pids(ids: &[&str]) -> Vec<ParticipantId> {
    ids.iter().map(|id| pid(id)).collect()
}

fn msg(conn: ConnId, body: Body) -> Event {
    Event::Message { conn, body }
}

fn send(conn: ConnId, body: Body, after_durable: bool) -> Action {
    Action::Send {
        conn,
        body,
        after_durable,
    }
}

fn reject(conn: ConnId, code: ErrorCode, message: &str, close: bool) -> Action {
    Action::Reject {
        conn,
        error: WireError::new(code, message),
        close,
    }
}

fn persist_commit(txn: &str, participants: &[&str]) -> Action {
    Action::Persist {
        record: Record::Decision {
            txn: tid(txn),
            decision: Decision::Commit,
            participants: pids(participants),
            client_named: false,
        },
        sync: true,
    }
}

/// The commit decision of a transaction whose id the client chose.
fn persist_named_commit(txn: &str, participants: &[&str]) -> Action {
    Action::Persist {
        record: Record::Decision {
            txn: tid(txn),
            decision: Decision::Commit,
            participants: pids(participants),
            client_named: true,
        },
        sync: true,
    }
}

/// `id` became a member (logged, not forced).
fn joined(id: &str) -> Action {
    Action::Persist {
        record: Record::Joined {
            participant: pid(id),
        },
        sync: false,
    }
}

/// An operator notice about the peer on `conn`, if any.
fn notice(conn: Option<ConnId>, message: &str) -> Action {
    Action::Notice {
        conn,
        message: message.into(),
    }
}

/// The live records that are about transactions (membership records are
/// checked in `membership.rs`).
fn txn_records(c: &Coordinator) -> Vec<Record> {
    c.live_records()
        .into_iter()
        .filter(|r| !matches!(r, Record::Joined { .. } | Record::Removed { .. }))
        .collect()
}

/// What the coordinator does when p2 (on `P2`) registers as the second of
/// the two expected participants: logs it, tells it, tells that the
/// cluster is ready, and welcomes it.
fn p2_makes_the_cluster_ready() -> Vec<Action> {
    vec![
        joined("p2"),
        notice(Some(P2), "participant p2 registered (a new member)"),
        notice(
            None,
            "cluster READY: 2 of 2 expected participants registered (p1, p2)",
        ),
        send(P2, welcome(ClusterState::Ready), false),
    ]
}

fn persist_end(txn: &str) -> Action {
    Action::Persist {
        record: Record::End { txn: tid(txn) },
        sync: false,
    }
}

fn hello(id: &str) -> Body {
    Body::Hello {
        role: Role::Participant,
        id: Some(pid(id)),
        protocol_version: PROTOCOL_VERSION,
    }
}

fn client_hello() -> Body {
    Body::Hello {
        role: Role::Client,
        id: None,
        protocol_version: PROTOCOL_VERSION,
    }
}

fn welcome(state: ClusterState) -> Body {
    Body::Welcome {
        state: state.as_str().into(),
        term: None,
    }
}

fn data() -> Value {
    json!({"k": "v"})
}

fn submit(request_id: u64) -> Body {
    Body::Submit(SubmitRequest {
        data: data(),
        participants: None,
        request_id: Some(request_id),
        ..Default::default()
    })
}

fn submit_to(request_id: u64, participants: &[&str]) -> Body {
    Body::Submit(SubmitRequest {
        data: data(),
        participants: Some(pids(participants)),
        request_id: Some(request_id),
        ..Default::default()
    })
}

fn prepare(txn: &str, participants: &[&str]) -> Body {
    Body::Prepare {
        txn: tid(txn),
        participants: pids(participants),
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

fn vote_commit(txn: &str) -> Body {
    Body::VoteCommit {
        txn: tid(txn),
        result: None,
    }
}

fn vote_abort(txn: &str, reason: Option<&str>) -> Body {
    Body::VoteAbort {
        txn: tid(txn),
        reason: reason.map(str::to_string),
    }
}

fn ack(txn: &str) -> Body {
    Body::Ack {
        txn: tid(txn),
        decision: None,
        heuristic: None,
    }
}

fn query(txn: &str) -> Body {
    Body::Query { txn: tid(txn) }
}

fn outcome(
    txn: &str,
    decision: Decision,
    votes: &[(&str, Vote)],
    reason: Option<&str>,
    duration_ms: f64,
) -> Body {
    Body::Outcome {
        txn: tid(txn),
        outcome: Outcome {
            decision,
            votes: votes.iter().map(|(p, v)| (pid(p), *v)).collect(),
            reason: reason.map(str::to_string),
            duration_ms,
            request_id: Some(1),
            results: Default::default(),
            repeated: false,
        },
    }
}

fn error_reply(code: ErrorCode, message: &str, request_id: u64) -> Body {
    Body::Error {
        code: code.into(),
        message: message.into(),
        request_id: Some(request_id),
    }
}

/// A client on `CLIENT`, p1 on `P1` and p2 on `P2`, all said hello at 0.
fn ready_with(opts: CoordinatorOptions) -> Coordinator {
    let mut c = Coordinator::new(opts, 0);
    c.handle(0, msg(CLIENT, client_hello()));
    c.handle(0, msg(P1, hello("p1")));
    c.handle(0, msg(P2, hello("p2")));
    assert_eq!(c.state(), ClusterState::Ready);
    c
}

fn ready() -> Coordinator {
    ready_with(opts())
}

/// `ready_with(opts)` plus one submit at 0: transaction `t-1` is voting.
fn voting_with(opts: CoordinatorOptions) -> Coordinator {
    let mut c = ready_with(opts);
    let out = c.handle(0, msg(CLIENT, submit(1)));
    assert_eq!(out.len(), 2, "{out:?}");
    c
}

fn voting() -> Coordinator {
    voting_with(opts())
}

/// `voting_with(opts)` plus both commit votes at 10: `t-1` is committed and
/// waits for acks.
fn committed_with(opts: CoordinatorOptions) -> Coordinator {
    let mut c = voting_with(opts);
    c.handle(10, msg(P1, vote_commit("t-1")));
    let out = c.handle(10, msg(P2, vote_commit("t-1")));
    assert_eq!(out.len(), 4, "{out:?}");
    c
}

fn committed() -> Coordinator {
    committed_with(opts())
}

fn phase(c: &Coordinator, txn: &str) -> Option<TxnPhase> {
    c.txn(&tid(txn)).map(|t| t.phase)
}

fn decision(c: &Coordinator, txn: &str) -> Option<Decision> {
    c.txn(&tid(txn)).and_then(|t| t.decision)
}

fn decision_record(txn: &str, decision: Decision, participants: &[&str]) -> Record {
    Record::Decision {
        txn: tid(txn),
        decision,
        participants: pids(participants),
        client_named: false,
    }
}

fn remove_forced(id: &str) -> Event {
    msg(
        CLIENT,
        Body::ParticipantRemove {
            id: pid(id),
            force: true,
        },
    )
}

fn remove(id: &str) -> Event {
    msg(
        CLIENT,
        Body::ParticipantRemove {
            id: pid(id),
            force: false,
        },
    )
}

fn timeline(c: &Coordinator, txn: &str) -> Vec<(Millis, Step)> {
    c.txn(&tid(txn))
        .expect("transaction known")
        .timeline
        .events()
        .iter()
        .map(|e| (e.at_ms, e.step.clone()))
        .collect()
}

fn sent(to: &str, decision: Decision, resend: bool) -> Step {
    Step::Decision {
        to: pid(to),
        decision,
        resend,
    }
}

/// Run transaction number `n` (a fresh submit) to its end, p1 returning
/// `result` with its commit vote.
fn run_with_result(c: &mut Coordinator, n: u64, result: Value) -> TxnId {
    let out = c.handle(n * 10, msg(CLIENT, submit(n)));
    assert_eq!(out.len(), 2, "{out:?}");
    let txn = tid(&format!("t-{n}"));
    c.handle(
        n * 10 + 1,
        msg(
            P1,
            Body::VoteCommit {
                txn: txn.clone(),
                result: Some(result),
            },
        ),
    );
    c.handle(n * 10 + 1, msg(P2, vote_commit(&txn.0)));
    c.handle(n * 10 + 2, msg(P1, ack(&txn.0)));
    c.handle(n * 10 + 2, msg(P2, ack(&txn.0)));
    assert_eq!(phase(c, &txn.0), Some(TxnPhase::Completed));
    txn
}

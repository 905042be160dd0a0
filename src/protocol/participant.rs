//! The participant's state machine: voting, applying decisions, asking about
//! transactions left in doubt, and answering duplicates the same way twice.
//! Its session with the coordinator (hello, welcome, heartbeats, silence) is
//! in [`session`]; what operators read of it is in [`views`].
//!
//! Like the coordinator core it is pure: the resource that actually decides a
//! vote (a preference, a key-value store, a database) is reached through the
//! `PrepareResource`/`FinishResource` actions, and its answer comes back as
//! an event.
//!
//! Write-ahead rules expressed here as data:
//! - `Prepared` is persisted with `sync` before VOTE_COMMIT (`after_durable`);
//! - a commit `Decided` is persisted with `sync` before ACK (`after_durable`);
//! - aborts are persisted without sync (presumed abort: forgetting an abort
//!   is safe, the coordinator answers unknown transactions with abort);
//! - a `Heuristic` record is persisted with `sync` before the ACK that
//!   reports it (`after_durable`).
//!
//! An ACK for a decision the resource applies is sent once the resource has
//! answered (`ResourceFinished`), so that it can say whether the decision
//! was carried out as decided: when it was not (a heuristic outcome), the
//! ACK carries the kind and the detail.

mod session;
mod views;

pub use session::{Link, SessionNotice};
pub use views::{AdminQuery, AdminReply, StatusView, TxnView};

use super::heuristic::{Heuristic, HeuristicKind};
use super::message::{Body, ErrorCode, WireError};
use super::record::{Action, Record};
use super::types::{ConnId, Decision, Millis, ParticipantId, TxnId, Vote};
use serde_json::Value;
use session::{Admitted, Session, Timing};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Tunables of the participant core. All durations are milliseconds.
#[derive(Clone, Debug)]
pub struct ParticipantOptions {
    pub id: ParticipantId,
    /// How long a prepared transaction waits for its decision before the
    /// participant asks the coordinator (`query`).
    pub decision_timeout_ms: u64,
    /// Cap of the doubling delay between two queries for the same transaction.
    pub query_max_ms: u64,
    /// How many decided transactions are remembered to answer duplicates.
    pub history_limit: usize,
    /// Ordinary commits (the most recent ones) carried into a checkpoint.
    pub checkpoint_recent_commits: usize,
    /// Between two heartbeats to the coordinator, once registered; the
    /// coordinator's silence is checked at the same beat. `u64::MAX` never
    /// beats (a world without heartbeats, as in the model checker).
    pub heartbeat_interval_ms: u64,
    /// Heartbeat intervals without a word from the coordinator before its
    /// connection is closed (and made again by the runtime).
    pub heartbeat_failure_threshold: u32,
}

impl Default for ParticipantOptions {
    fn default() -> Self {
        ParticipantOptions {
            id: ParticipantId::from("p1"),
            decision_timeout_ms: 5_000,
            query_max_ms: 5_000,
            history_limit: 100_000,
            checkpoint_recent_commits: 100,
            heartbeat_interval_ms: 1_000,
            heartbeat_failure_threshold: 5,
        }
    }
}

/// Where one transaction stands at this participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PState {
    /// The resource is preparing; no vote yet.
    Preparing,
    /// Voted commit and made it durable; waiting for the decision (in doubt).
    Prepared,
    Committed,
    Aborted,
}

impl PState {
    pub fn as_str(self) -> &'static str {
        match self {
            PState::Preparing => "preparing",
            PState::Prepared => "prepared",
            PState::Committed => "committed",
            PState::Aborted => "aborted",
        }
    }
}

/// One transaction as this participant knows it.
#[derive(Clone, Debug)]
pub struct PTxn {
    pub state: PState,
    pub participants: Vec<ParticipantId>,
    /// The vote given, once given (re-sent unchanged for a duplicate PREPARE).
    pub vote: Option<Vote>,
    pub reason: Option<String>,
    /// The operator's reason, when an operator decided by hand (`resolve`).
    pub heuristic: Option<String>,
    /// The decision was not carried out as decided here (logged in a
    /// `Heuristic` record and reported in every ACK for it).
    pub heuristic_outcome: Option<Heuristic>,
    /// The resource is applying the decision and has not answered yet.
    finishing: bool,
    /// The coordinator is owed an ACK of this decision once the resource
    /// answers.
    ack_when_finished: Option<Decision>,
    /// Past the history limit while finishing: dropped once the resource
    /// answers.
    forget_when_finished: bool,
    /// The resource's state logged with `Prepared` (kept for checkpoints).
    pub resource_state: Value,
    pub since_ms: Millis,
    pub queries: u32,
    next_query_ms: Millis,
    query_backoff_ms: u64,
    /// ABORT arrived while the resource was still preparing.
    abort_requested: bool,
}

impl PTxn {
    fn new(state: PState, participants: Vec<ParticipantId>, now: Millis) -> PTxn {
        PTxn {
            state,
            participants,
            vote: None,
            reason: None,
            heuristic: None,
            heuristic_outcome: None,
            finishing: false,
            ack_when_finished: None,
            forget_when_finished: false,
            resource_state: Value::Null,
            since_ms: now,
            queries: 0,
            next_query_ms: 0,
            query_backoff_ms: 0,
            abort_requested: false,
        }
    }

    /// Whether an ABORT arrived while the resource was still preparing (the
    /// abort completes when the resource answers). Read-only, for tests and
    /// inspection.
    pub fn abort_requested(&self) -> bool {
        self.abort_requested
    }

    /// Whether the resource is still applying the decision (the ACK, if
    /// owed, waits for it). Read-only, for tests and inspection.
    pub fn finishing(&self) -> bool {
        self.finishing
    }
}

/// A resource's successful prepare: what to log, and what to report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prepared {
    /// Everything the resource needs to finish after a restart; logged in
    /// the `Prepared` record before the vote leaves.
    pub state: Value,
    /// Results of reads, returned to the client in the outcome.
    pub output: Option<Value>,
}

impl Prepared {
    pub fn state(state: Value) -> Prepared {
        Prepared {
            state,
            output: None,
        }
    }
}

/// Inputs to the participant core.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A connection to the coordinator opened on `conn` (the core says
    /// hello on it).
    TransportUp { conn: ConnId },
    /// The coordinator connection is gone.
    TransportDown,
    /// A message from the coordinator on the current connection, whatever
    /// it is (`welcome`, `challenge` and `error` included).
    Message { body: Body },
    /// The resource finished preparing `txn`: `Ok` to vote commit (its
    /// state goes into the `Prepared` record), `Err(reason)` to vote abort.
    ResourcePrepared {
        txn: TxnId,
        result: Result<Prepared, String>,
    },
    /// The resource finished applying the decision for `txn`: `Ok` when
    /// it carried it out as decided, `Err` with the heuristic outcome when
    /// it could not (its part was finished some other way, or is gone).
    ResourceFinished {
        txn: TxnId,
        result: Result<(), Heuristic>,
    },
    /// An operator decided an in-doubt transaction by hand.
    Resolve {
        txn: TxnId,
        decision: Decision,
        reason: String,
    },
    /// Time passed: heartbeats, the coordinator's silence and queries for
    /// in-doubt transactions may be due.
    Tick,
}

/// The participant core. See the module documentation.
#[derive(Debug)]
pub struct Participant {
    opts: ParticipantOptions,
    /// The connection to the coordinator and its liveness.
    session: Session,
    txns: HashMap<TxnId, PTxn>,
    /// Decided transactions in the order they ended, to bound `txns`.
    ended: VecDeque<TxnId>,
    /// Every transaction in doubt (`Prepared`), in id order, so that a tick
    /// looks at those and not at the whole history kept in `txns`. An id
    /// enters when its transaction becomes `Prepared` and leaves when it is
    /// decided; one whose transaction left `Prepared` some other way is
    /// dropped by the next tick.
    prepared: BTreeSet<TxnId>,
    committed: u64,
    aborted: u64,
    now: Millis,
    /// A deliberate bug, for tests of the checkers only (see `fault`).
    #[cfg(feature = "fault-injection")]
    fault: Option<super::fault::Fault>,
}

impl Participant {
    pub fn new(opts: ParticipantOptions, now: Millis) -> Participant {
        let session = Session::new(now, timing(&opts));
        Participant {
            opts,
            session,
            txns: HashMap::new(),
            ended: VecDeque::new(),
            prepared: BTreeSet::new(),
            committed: 0,
            aborted: 0,
            now,
            #[cfg(feature = "fault-injection")]
            fault: None,
        }
    }

    /// Break this core on purpose (tests of the checkers only).
    #[cfg(feature = "fault-injection")]
    pub fn inject(&mut self, fault: super::fault::Fault) {
        self.fault = Some(fault);
    }

    /// Rebuild from the log. A `Prepared` without a `Decided` is in doubt and
    /// will be asked about as soon as the coordinator is reachable.
    pub fn recover(opts: ParticipantOptions, now: Millis, records: &[Record]) -> Participant {
        let mut p = Participant::new(opts, now);
        for r in records {
            match r {
                Record::Prepared {
                    txn,
                    participants,
                    state,
                } => {
                    let mut t = PTxn::new(PState::Prepared, participants.clone(), now);
                    t.vote = Some(Vote::Commit);
                    t.resource_state = state.clone();
                    p.txns.insert(txn.clone(), t);
                }
                Record::Decided {
                    txn,
                    decision,
                    heuristic,
                } => {
                    let state = match decision {
                        Decision::Commit => PState::Committed,
                        Decision::Abort => PState::Aborted,
                    };
                    // A checkpoint may repeat a record; count each outcome once.
                    let already = p
                        .txns
                        .get(txn)
                        .is_some_and(|t| matches!(t.state, PState::Committed | PState::Aborted));
                    let t = p
                        .txns
                        .entry(txn.clone())
                        .or_insert_with(|| PTxn::new(state, Vec::new(), now));
                    t.state = state;
                    t.heuristic = heuristic.clone();
                    if !already {
                        p.count(*decision);
                        p.ended.push_back(txn.clone());
                    }
                }
                Record::Heuristic {
                    txn,
                    decision,
                    heuristic,
                    ..
                } => {
                    let state = match decision {
                        Decision::Commit => PState::Committed,
                        Decision::Abort => PState::Aborted,
                    };
                    // Follows the transaction's `Decided` record; should that
                    // be gone, the outcome is still known.
                    let t = p
                        .txns
                        .entry(txn.clone())
                        .or_insert_with(|| PTxn::new(state, Vec::new(), now));
                    t.heuristic_outcome = Some(heuristic.clone().bounded());
                }
                Record::Term { term } => p.session.restore_term(*term),
                Record::Decision { .. }
                | Record::End { .. }
                | Record::Outcome { .. }
                | Record::Joined { .. }
                | Record::Removed { .. }
                | Record::Snapshot { .. } => {}
            }
        }
        p.prepared = p
            .txns
            .iter()
            .filter(|(_, t)| t.state == PState::Prepared)
            .map(|(id, _)| id.clone())
            .collect();
        p.trim_history();
        p
    }

    /// Records that must survive a checkpoint: every transaction in doubt,
    /// plus remembered outcomes so duplicates are answered consistently.
    ///
    /// Ordinary commits are kept only for the most recent
    /// `checkpoint_recent_commits` transactions: enough to answer a late
    /// duplicate consistently, while the log stays bounded (a forgotten
    /// commit is re-acknowledged anyway). In-doubt transactions, operators'
    /// decisions and heuristic outcomes are always kept.
    pub fn live_records(&self) -> Vec<Record> {
        let recent: std::collections::HashSet<&TxnId> = self
            .ended
            .iter()
            .rev()
            .filter(|id| {
                self.txns
                    .get(*id)
                    .is_some_and(|t| t.state == PState::Committed)
            })
            .take(self.opts.checkpoint_recent_commits)
            .collect();
        let mut ids: Vec<&TxnId> = self.txns.keys().collect();
        ids.sort();
        let mut v = Vec::new();
        if self.session.seen_term() > 0 {
            v.push(Record::Term {
                term: self.session.seen_term(),
            });
        }
        for id in ids {
            let t = &self.txns[id];
            let kept = t.heuristic.is_some() || t.heuristic_outcome.is_some();
            let decision = match t.state {
                PState::Prepared => {
                    v.push(Record::Prepared {
                        txn: id.clone(),
                        participants: t.participants.clone(),
                        state: t.resource_state.clone(),
                    });
                    continue;
                }
                PState::Committed if kept || recent.contains(id) => Decision::Commit,
                // Aborts need not survive (presumed abort); a heuristic abort
                // does, so operators can still see it.
                PState::Aborted if kept => Decision::Abort,
                PState::Committed | PState::Aborted | PState::Preparing => continue,
            };
            v.push(Record::Decided {
                txn: id.clone(),
                decision,
                heuristic: t.heuristic.clone(),
            });
            if let Some(h) = &t.heuristic_outcome {
                v.push(Record::Heuristic {
                    txn: id.clone(),
                    decision,
                    participant: self.opts.id.clone(),
                    heuristic: h.clone(),
                });
            }
        }
        v
    }

    pub fn id(&self) -> &ParticipantId {
        &self.opts.id
    }

    pub fn txn(&self, id: &TxnId) -> Option<&PTxn> {
        self.txns.get(id)
    }

    pub fn txns(&self) -> impl Iterator<Item = (&TxnId, &PTxn)> {
        self.txns.iter()
    }

    /// Transactions voted commit and not yet decided.
    pub fn in_doubt(&self) -> Vec<TxnId> {
        self.prepared
            .iter()
            .filter(|id| {
                self.txns
                    .get(*id)
                    .is_some_and(|t| t.state == PState::Prepared)
            })
            .cloned()
            .collect()
    }

    pub fn counts(&self) -> (u64, u64) {
        (self.committed, self.aborted)
    }

    /// Registered with the coordinator (welcomed on a live connection).
    pub fn connected(&self) -> bool {
        self.session.link().registered().is_some()
    }

    /// Where the session with the coordinator stands.
    pub fn link(&self) -> Link {
        self.session.link()
    }

    pub fn handle(&mut self, now: Millis, event: Event) -> Vec<Action> {
        self.now = now.max(self.now);
        let mut out = Vec::new();
        match event {
            Event::TransportUp { conn } => self.session.up(self.now, conn, &self.opts.id, &mut out),
            Event::TransportDown => self.session.down(&mut out),
            Event::Message { body } => match self.session.admit(self.now, body, &mut out) {
                Admitted::Protocol(body) => self.on_message(body, &mut out),
                Admitted::Welcomed => {
                    // Ask about everything in doubt right away: the
                    // coordinator may have restarted and the decision may
                    // be waiting.
                    for id in self.in_doubt() {
                        self.query(&id, &mut out);
                    }
                }
                Admitted::Handled => {}
            },
            Event::ResourcePrepared { txn, result } => self.on_prepared(txn, result, &mut out),
            Event::ResourceFinished { txn, result } => self.on_finished(txn, result, &mut out),
            Event::Resolve {
                txn,
                decision,
                reason,
            } => self.on_resolve(txn, decision, reason, &mut out),
            Event::Tick => {
                self.session.tick(self.now, timing(&self.opts), &mut out);
                // This runs on every tick: it looks at the transactions in
                // doubt only (in id order), never at the history.
                let (txns, now) = (&self.txns, self.now);
                let mut due = Vec::new();
                self.prepared.retain(|id| match txns.get(id) {
                    Some(t) if t.state == PState::Prepared => {
                        if t.next_query_ms <= now {
                            due.push(id.clone());
                        }
                        true
                    }
                    _ => false,
                });
                for id in due {
                    self.query(&id, &mut out);
                }
            }
        }
        out
    }

    fn on_message(&mut self, body: Body, out: &mut Vec<Action>) {
        match body {
            Body::Prepare {
                txn,
                participants,
                data,
                ..
            } => self.on_prepare(txn, participants, data, out),
            Body::Commit { txn, .. } => self.on_decision(txn, Decision::Commit, out),
            Body::Abort { txn, .. } => self.on_decision(txn, Decision::Abort, out),
            Body::HeartbeatAck | Body::Welcome { .. } | Body::StatusReport(_) => {}
            Body::Error { code, message, .. } => out.push(Action::Alert {
                txn: None,
                message: format!("coordinator reported error {code}: {message}"),
            }),
            other => {
                if let Some(c) = self.session.link().registered() {
                    out.push(Action::Reject {
                        conn: c,
                        error: WireError::new(
                            ErrorCode::InvalidMessage,
                            format!("a participant does not accept `{}`", other.message_type()),
                        ),
                        close: false,
                    });
                }
            }
        }
    }

    fn on_prepare(
        &mut self,
        txn: TxnId,
        participants: Vec<ParticipantId>,
        data: Value,
        out: &mut Vec<Action>,
    ) {
        if let Some(t) = self.txns.get(&txn) {
            // Duplicate PREPARE: the same vote again (or nothing while the
            // resource is still working). A tombstone answers abort.
            let vote = match t.state {
                PState::Preparing => return,
                PState::Prepared | PState::Committed => Vote::Commit,
                PState::Aborted => Vote::Abort,
            };
            let reason = match (vote, &t.vote) {
                (Vote::Abort, None) => Some("already aborted by the coordinator".to_string()),
                _ => t.reason.clone(),
            };
            self.send(Body::vote(txn, vote, reason), vote == Vote::Commit, out);
            return;
        }
        if !participants.is_empty() && !participants.contains(&self.opts.id) {
            let reason = format!(
                "not a listed participant of this transaction ({})",
                self.opts.id
            );
            let mut t = PTxn::new(PState::Aborted, participants, self.now);
            t.vote = Some(Vote::Abort);
            t.reason = Some(reason.clone());
            self.insert_ended(txn.clone(), t, Decision::Abort);
            self.send(Body::vote(txn, Vote::Abort, Some(reason)), false, out);
            return;
        }
        self.txns.insert(
            txn.clone(),
            PTxn::new(PState::Preparing, participants.clone(), self.now),
        );
        out.push(Action::PrepareResource {
            txn,
            participants,
            data,
        });
    }

    fn on_prepared(&mut self, txn: TxnId, result: Result<Prepared, String>, out: &mut Vec<Action>) {
        let now = self.now;
        let Some(t) = self.txns.get_mut(&txn) else {
            return;
        };
        if t.state != PState::Preparing {
            return;
        }
        match result {
            Ok(prepared) if !t.abort_requested => {
                let Prepared { state, output } = prepared;
                t.state = PState::Prepared;
                self.prepared.insert(txn.clone());
                t.vote = Some(Vote::Commit);
                t.since_ms = now;
                t.query_backoff_ms = self.opts.decision_timeout_ms;
                t.next_query_ms = now + self.opts.decision_timeout_ms;
                out.push(Action::Persist {
                    record: Record::Prepared {
                        txn: txn.clone(),
                        participants: t.participants.clone(),
                        state: state.clone(),
                    },
                    sync: true,
                });
                t.resource_state = state;
                let result = output;
                #[cfg(not(feature = "fault-injection"))]
                let after_durable = true;
                #[cfg(feature = "fault-injection")]
                let after_durable =
                    self.fault != Some(super::fault::Fault::VoteBeforePreparedDurable);
                self.send(Body::VoteCommit { txn, result }, after_durable, out);
            }
            Ok(_) => {
                // The coordinator aborted while we prepared: release the
                // resource, and acknowledge the abort we had deferred once
                // it has.
                t.vote = Some(Vote::Abort);
                t.ack_when_finished = Some(Decision::Abort);
                self.finish(txn, Decision::Abort, out);
            }
            Err(reason) => {
                // Kept for every remembered transaction and sent: bounded
                // whatever the resource wrote.
                let reason = super::bound::reason_owned(reason);
                t.vote = Some(Vote::Abort);
                t.reason = Some(reason.clone());
                // An abort the coordinator sent meanwhile is acknowledged
                // once the resource has released the transaction.
                t.ack_when_finished = t.abort_requested.then_some(Decision::Abort);
                let abort_requested = t.abort_requested;
                self.finish(txn.clone(), Decision::Abort, out);
                if !abort_requested {
                    self.send(Body::vote(txn, Vote::Abort, Some(reason)), false, out);
                }
            }
        }
    }

    fn on_decision(&mut self, txn: TxnId, decision: Decision, out: &mut Vec<Action>) {
        let Some(t) = self.txns.get_mut(&txn) else {
            let ack = Body::Ack {
                txn: txn.clone(),
                decision: Some(decision),
                heuristic: None,
            };
            match decision {
                // A commit for a transaction we no longer remember was applied
                // and forgotten: only decided transactions are ever dropped.
                Decision::Commit => self.send(ack, false, out),
                // An abort before (or without) PREPARE leaves a tombstone so
                // that a late PREPARE is voted down.
                Decision::Abort => {
                    let t = PTxn::new(PState::Aborted, Vec::new(), self.now);
                    self.insert_ended(txn, t, Decision::Abort);
                    self.send(ack, false, out);
                }
            }
            return;
        };
        match (t.state, decision) {
            (PState::Preparing, Decision::Abort) => {
                // Finish once the resource answers; ACK then.
                t.abort_requested = true;
            }
            (PState::Preparing, Decision::Commit) => out.push(Action::Alert {
                txn: Some(txn),
                message: "COMMIT received before this participant voted; refused".into(),
            }),
            (PState::Prepared, d) => {
                // The ACK follows the resource's answer.
                t.ack_when_finished = Some(d);
                self.finish(txn, d, out);
                #[cfg(feature = "fault-injection")]
                if d == Decision::Commit
                    && self.fault == Some(super::fault::Fault::CommitEveryPrepared)
                {
                    for other in self.in_doubt() {
                        self.finish(other, Decision::Commit, out);
                    }
                }
            }
            (PState::Committed, Decision::Commit) | (PState::Aborted, Decision::Abort) => {
                self.ack(txn, decision, out);
            }
            (PState::Committed, Decision::Abort) | (PState::Aborted, Decision::Commit) => {
                let Some(reason) = t.heuristic.clone() else {
                    return out.push(Action::Alert {
                        txn: Some(txn),
                        message: format!(
                            "coordinator says {decision} but this participant already {}; the message is refused",
                            t.state.as_str()
                        ),
                    });
                };
                // An operator decided the other way: the decision cannot be
                // carried out here. Say so, durably, and acknowledge with it
                // so that the coordinator stops re-sending and records it.
                if t.heuristic_outcome.is_none() {
                    let h = Heuristic::new(
                        HeuristicKind::Mixed,
                        format!(
                            "an operator {} this participant's part by hand before the {decision} decision arrived: {reason}",
                            t.state.as_str()
                        ),
                    );
                    self.record_heuristic(&txn, decision, h, out);
                }
                self.ack(txn, decision, out);
            }
        }
    }

    /// The resource answered a `FinishResource`: record a heuristic outcome
    /// if it reported one, and send the ACK owed for the decision.
    fn on_finished(&mut self, txn: TxnId, result: Result<(), Heuristic>, out: &mut Vec<Action>) {
        let Some(t) = self.txns.get_mut(&txn) else {
            return;
        };
        if !t.finishing {
            return;
        }
        t.finishing = false;
        let decision = match t.state {
            PState::Committed => Decision::Commit,
            PState::Aborted => Decision::Abort,
            // Only a decided transaction is finished.
            PState::Preparing | PState::Prepared => return,
        };
        if let Err(h) = result {
            match t.heuristic_outcome.clone() {
                None => self.record_heuristic(&txn, decision, h.bounded(), out),
                // The first outcome stays on record (an operator's decision
                // that contradicted the coordinator's); this one is logged.
                Some(first) => out.push(Action::Alert {
                    txn: Some(txn.clone()),
                    message: format!("{} while applying {decision}, after {first}", h.bounded()),
                }),
            }
        }
        let Some(t) = self.txns.get_mut(&txn) else {
            return;
        };
        let forget = t.forget_when_finished;
        if let Some(acked) = t.ack_when_finished.take() {
            self.ack(txn.clone(), acked, out);
        }
        if forget {
            self.txns.remove(&txn);
        }
    }

    /// Acknowledge `decision`, with the heuristic outcome when there is
    /// one; while the resource is still applying it, once it has answered.
    fn ack(&mut self, txn: TxnId, decision: Decision, out: &mut Vec<Action>) {
        let Some(t) = self.txns.get_mut(&txn) else {
            return;
        };
        if t.finishing {
            t.ack_when_finished = Some(decision);
            return;
        }
        let heuristic = t.heuristic_outcome.clone();
        // A commit ACK, and one reporting a heuristic outcome, wait for the
        // records they rest on.
        let after_durable = decision == Decision::Commit || heuristic.is_some();
        let ack = Body::Ack {
            txn,
            decision: Some(decision),
            heuristic,
        };
        self.send(ack, after_durable, out);
    }

    /// `txn`'s part was not carried out as `decision` says: log it (forced,
    /// before the ACK that reports it) and alert the operator.
    fn record_heuristic(
        &mut self,
        txn: &TxnId,
        decision: Decision,
        h: Heuristic,
        out: &mut Vec<Action>,
    ) {
        let Some(t) = self.txns.get_mut(txn) else {
            return;
        };
        out.push(Action::Persist {
            record: Record::Heuristic {
                txn: txn.clone(),
                decision,
                participant: self.opts.id.clone(),
                heuristic: h.clone(),
            },
            sync: true,
        });
        out.push(Action::Alert {
            txn: Some(txn.clone()),
            message: format!(
                "HEURISTIC OUTCOME ({}): the decision is {decision}, but {}; reconcile the data. The coordinator is told in the ACK.",
                h.kind, h.detail
            ),
        });
        t.heuristic_outcome = Some(h);
    }

    fn on_resolve(
        &mut self,
        txn: TxnId,
        decision: Decision,
        reason: String,
        out: &mut Vec<Action>,
    ) {
        if let Err(e) = self.check_resolve(&txn) {
            return out.push(Action::Alert {
                txn: Some(txn),
                message: format!("resolve refused: {}", e.message),
            });
        }
        let Some(t) = self.txns.get_mut(&txn) else {
            return;
        };
        let reason = super::bound::reason_owned(reason);
        t.heuristic = Some(reason.clone());
        self.finish_with(txn, decision, Some(reason), out);
    }

    /// Apply `decision` to a transaction: record it (forced for commit), then
    /// let the resource finish.
    fn finish(&mut self, txn: TxnId, decision: Decision, out: &mut Vec<Action>) {
        self.finish_with(txn, decision, None, out)
    }

    fn finish_with(
        &mut self,
        txn: TxnId,
        decision: Decision,
        heuristic: Option<String>,
        out: &mut Vec<Action>,
    ) {
        let Some(t) = self.txns.get_mut(&txn) else {
            return;
        };
        let was_prepared = t.state == PState::Prepared;
        if was_prepared {
            self.prepared.remove(&txn);
        }
        t.state = match decision {
            Decision::Commit => PState::Committed,
            Decision::Abort => PState::Aborted,
        };
        t.since_ms = self.now;
        // Only a transaction that reached the log needs its outcome logged.
        if was_prepared {
            out.push(Action::Persist {
                record: Record::Decided {
                    txn: txn.clone(),
                    decision,
                    heuristic: heuristic.clone(),
                },
                sync: decision == Decision::Commit || heuristic.is_some(),
            });
        }
        t.finishing = true;
        out.push(Action::FinishResource {
            txn: txn.clone(),
            decision,
        });
        self.count(decision);
        self.ended.push_back(txn);
        self.trim_history();
    }

    fn insert_ended(&mut self, txn: TxnId, t: PTxn, decision: Decision) {
        self.txns.insert(txn.clone(), t);
        self.count(decision);
        self.ended.push_back(txn);
        self.trim_history();
    }

    fn count(&mut self, d: Decision) {
        match d {
            Decision::Commit => self.committed += 1,
            Decision::Abort => self.aborted += 1,
        }
    }

    fn trim_history(&mut self) {
        while self.ended.len() > self.opts.history_limit {
            if let Some(old) = self.ended.pop_front() {
                let Some(t) = self.txns.get_mut(&old) else {
                    continue;
                };
                match t.state {
                    // Its ACK and outcome wait for the resource's answer.
                    PState::Committed | PState::Aborted if t.finishing => {
                        t.forget_when_finished = true;
                    }
                    PState::Committed | PState::Aborted => {
                        self.txns.remove(&old);
                    }
                    PState::Preparing | PState::Prepared => {}
                }
            }
        }
    }

    fn query(&mut self, id: &TxnId, out: &mut Vec<Action>) {
        let now = self.now;
        let max = self.opts.query_max_ms;
        if let Some(t) = self.txns.get_mut(id) {
            t.queries += 1;
            t.query_backoff_ms = (t.query_backoff_ms.max(100) * 2).min(max);
            t.next_query_ms = now + t.query_backoff_ms;
        }
        self.send(Body::Query { txn: id.clone() }, false, out);
    }

    /// Send on the welcomed connection; nothing goes out without one.
    fn send(&self, body: Body, after_durable: bool, out: &mut Vec<Action>) {
        if let Some(conn) = self.session.link().registered() {
            out.push(Action::Send {
                conn,
                body,
                after_durable,
            });
        }
    }
}

/// The session's timing from the options.
fn timing(opts: &ParticipantOptions) -> Timing {
    Timing {
        interval_ms: opts.heartbeat_interval_ms,
        failure_threshold: opts.heartbeat_failure_threshold,
    }
}

/// Remembered outcome of a transaction, as the participant would answer it.
pub fn outcome_map(p: &Participant) -> BTreeMap<TxnId, PState> {
    p.txns.iter().map(|(k, v)| (k.clone(), v.state)).collect()
}

#[cfg(test)]
#[path = "participant_tests.rs"]
mod tests;

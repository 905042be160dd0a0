//! Transactions: starting one from a submit, collecting votes and
//! acknowledgements, taking the decision, and remembering ended
//! transactions. [`Coordinator::decide`] is the one place a decision is
//! taken, and it checks the safety rules ([`check_decision`]) first.
//! Rebuilding the active transactions from the log lives here too.

use super::{refuse, reject, send, Coordinator, CoordinatorOptions};
use crate::protocol::bound;
use crate::protocol::heuristic::Heuristic;
use crate::protocol::message::{Body, ErrorCode, Outcome, SubmitRequest};
use crate::protocol::record::{Action, Record};
use crate::protocol::stats::{AbortCause, CoordinatorStats};
use crate::protocol::timeline::{Step, Timeline};
use crate::protocol::types::{ConnId, Decision, Millis, ParticipantId, TxnId, Vote};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Most bytes of read results one remembered transaction keeps, so that
/// `txn show` of any transaction fits in a frame; larger results are only
/// told to the client, in its outcome.
pub const RESULTS_KEPT_MAX_BYTES: usize = 64 * 1024;

/// Per-transaction protocol state. Serialised as [`Self::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TxnPhase {
    PreparePhase,
    CommitPhase,
    Completed,
    Aborted,
}

impl TxnPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            TxnPhase::PreparePhase => "PREPARE_PHASE",
            TxnPhase::CommitPhase => "COMMIT_PHASE",
            TxnPhase::Completed => "COMPLETED",
            TxnPhase::Aborted => "ABORTED",
        }
    }
}

/// A client waiting for an outcome.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Waiter {
    pub(super) conn: ConnId,
    pub(super) request_id: Option<u64>,
}

/// One transaction the coordinator is driving or has recently ended.
#[derive(Clone, Debug)]
pub struct Txn {
    pub id: TxnId,
    pub participants: Vec<ParticipantId>,
    pub phase: TxnPhase,
    pub votes: BTreeMap<ParticipantId, Vote>,
    /// Participants that acknowledged the decision, or that owe none: under
    /// presumed abort, those that voted abort or were never asked to
    /// prepare need not acknowledge an abort.
    pub acks: BTreeSet<ParticipantId>,
    pub decision: Option<Decision>,
    pub reason: Option<String>,
    pub started_ms: Millis,
    pub decided_ms: Option<Millis>,
    pub ended_ms: Option<Millis>,
    pub retries: u32,
    /// True for transactions re-driven from the log after a restart.
    pub recovered: bool,
    /// The client chose the id (`transaction_id` in the submit): its
    /// outcome is logged, so that a repeated submit is answered with it
    /// across restarts, and never run twice.
    pub client_named: bool,
    /// A digest of the submit (data and participants) of a client-named
    /// transaction, to refuse the id's reuse for a different request.
    /// Unknown (`None`) for transactions rebuilt from the log.
    pub(super) request_digest: Option<u64>,
    /// The latest problem seen while driving the transaction, for operators.
    pub last_error: Option<String>,
    /// Results the participants returned with their commit votes. Once the
    /// transaction has ended they are kept only within the history's byte
    /// budget (see [`RESULTS_KEPT_MAX_BYTES`]).
    pub results: BTreeMap<ParticipantId, Value>,
    /// Size of `results` as JSON once remembered, counted in the budget.
    pub(super) results_bytes: usize,
    /// Why the results are no longer kept, when they were dropped.
    pub results_dropped: Option<String>,
    /// When the commit decision record became durable.
    pub durable_ms: Option<Millis>,
    /// Why it aborted, as a metric label (`reason` holds the sentence).
    pub abort_cause: Option<AbortCause>,
    /// The latest problem per participant (abort vote reason, missing vote,
    /// disconnect, missing acknowledgement, heuristic outcome), for
    /// operators.
    pub errors: BTreeMap<ParticipantId, String>,
    /// Heuristic outcomes the participants reported in their ACKs: the
    /// decision was not carried out as decided at these participants.
    pub heuristics: BTreeMap<ParticipantId, Heuristic>,
    /// What happened, in order; never read by the protocol.
    pub timeline: Timeline,
    /// Participants PREPARE was never sent to (one was not connected when
    /// the transaction started, so it aborted at once): an abort needs no
    /// acknowledgement from them.
    pub(super) unasked: BTreeSet<ParticipantId>,
    pub(super) deadline_ms: Millis,
    pub(super) next_resend_ms: Millis,
    pub(super) resend_backoff_ms: u64,
    pub(super) waiter: Option<Waiter>,
}

impl Txn {
    pub(super) fn new(
        id: TxnId,
        participants: Vec<ParticipantId>,
        now: Millis,
        deadline_ms: Millis,
        timeline_max_events: usize,
    ) -> Box<Txn> {
        let timeline = Timeline::with_room(
            timeline_max_events,
            timeline_events_expected(participants.len()),
        );
        Box::new(Txn {
            id,
            participants,
            phase: TxnPhase::PreparePhase,
            votes: BTreeMap::new(),
            acks: BTreeSet::new(),
            decision: None,
            reason: None,
            started_ms: now,
            decided_ms: None,
            ended_ms: None,
            retries: 0,
            recovered: false,
            client_named: false,
            request_digest: None,
            last_error: None,
            results: BTreeMap::new(),
            results_bytes: 0,
            results_dropped: None,
            durable_ms: None,
            abort_cause: None,
            errors: BTreeMap::new(),
            heuristics: BTreeMap::new(),
            timeline,
            unasked: BTreeSet::new(),
            deadline_ms,
            next_resend_ms: 0,
            resend_backoff_ms: 0,
            waiter: None,
        })
    }

    /// Forget the read results, saying why (they were told to the client
    /// that submitted, in its outcome).
    pub(super) fn drop_results(&mut self, why: String) {
        self.results.clear();
        self.results_bytes = 0;
        self.results_dropped = Some(why);
    }

    /// The client waiting for this transaction's outcome, if one still is:
    /// its connection and the request id of its submit. Read-only, for
    /// tests and inspection.
    pub fn waiter(&self) -> Option<(ConnId, Option<u64>)> {
        self.waiter.as_ref().map(|w| (w.conn, w.request_id))
    }
}

impl Coordinator {
    /// without an `End` is re-driven; everything else is presumed aborted.
    pub fn recover(opts: CoordinatorOptions, now: Millis, records: &[Record]) -> Coordinator {
        let mut c = Coordinator::new(opts, now);
        for r in records {
            c.replay(now, r);
        }
        c
    }

    /// Apply one record read back from a log (recovery), or committed by
    /// the coordinator group (a member's copy of the leader's state): the
    /// core ends up as [`Coordinator::recover`] would leave it. A core fed
    /// this way is never driven; a leader rebuilds its own from
    /// [`Coordinator::live_records`].
    pub fn replay(&mut self, now: Millis, r: &Record) {
        let c = self;
        {
            match r {
                Record::Decision {
                    txn,
                    decision: Decision::Commit,
                    participants,
                    client_named,
                } => {
                    let max = c.opts.timeline_max_events;
                    let mut t = Txn::new(txn.clone(), participants.clone(), now, now, max);
                    t.client_named = *client_named;
                    t.timeline.assume_durable();
                    t.timeline.record(now, Step::Recovered);
                    t.phase = TxnPhase::CommitPhase;
                    t.decision = Some(Decision::Commit);
                    t.decided_ms = Some(now);
                    t.recovered = true;
                    for p in participants {
                        t.votes.insert(p.clone(), Vote::Commit);
                    }
                    c.active.insert(txn.clone(), t);
                }
                Record::End { txn } => {
                    if let Some(mut t) = c.active.remove(txn) {
                        t.phase = TxnPhase::Completed;
                        t.ended_ms = Some(now);
                        t.acks = t.participants.iter().cloned().collect();
                        c.committed += 1;
                        c.remember(t);
                    }
                }
                Record::Outcome {
                    txn,
                    decision,
                    participants,
                } => {
                    // A client-named transaction's outcome: a commit ends
                    // here (it takes the place of `End`); both are
                    // remembered for repeated submits.
                    if !c.active.contains_key(txn) && c.history_index.contains_key(txn) {
                        if let Some(t) = c.history.iter_mut().rev().find(|t| &t.id == txn) {
                            t.client_named = true;
                        }
                        return;
                    }
                    let max = c.opts.timeline_max_events;
                    let mut t = c.active.remove(txn).unwrap_or_else(|| {
                        let mut t = Txn::new(txn.clone(), participants.clone(), now, now, max);
                        t.timeline.assume_durable();
                        t.timeline.record(now, Step::Recovered);
                        t.decision = Some(*decision);
                        t.decided_ms = Some(now);
                        t.recovered = true;
                        t
                    });
                    t.client_named = true;
                    t.ended_ms = Some(now);
                    t.acks = t.participants.iter().cloned().collect();
                    match decision {
                        Decision::Commit => {
                            t.phase = TxnPhase::Completed;
                            c.committed += 1;
                        }
                        Decision::Abort => {
                            t.phase = TxnPhase::Aborted;
                            c.aborted += 1;
                        }
                    }
                    c.remember(t);
                }
                Record::Joined { participant } => c.recover_member(participant),
                Record::Removed {
                    participant,
                    expected,
                } => c.recover_removal(participant, *expected),
                Record::Heuristic {
                    txn,
                    decision,
                    participant,
                    heuristic,
                } => c.recover_heuristic(txn, *decision, participant, heuristic.clone()),
                // Abort decisions are never logged (presumed abort; a
                // client-named abort is an `Outcome`); participant records
                // do not belong in a coordinator's log and are ignored.
                Record::Decision {
                    decision: Decision::Abort,
                    ..
                }
                | Record::Prepared { .. }
                | Record::Decided { .. }
                | Record::Term { .. }
                | Record::Snapshot { .. } => {}
            }
        }
    }

    /// The records that must survive a log checkpoint: the members; the
    /// commit decisions of transactions that have not ended; the outcomes
    /// of client-named transactions (for repeated submits); and the
    /// heuristic outcomes of every transaction still remembered (for an
    /// ended commit, between its `Decision` and its end, so that it comes
    /// back ended).
    pub fn live_records(&self) -> Vec<Record> {
        let mut txns: Vec<&Txn> = self
            .active
            .values()
            .filter(|t| {
                t.decision == Some(Decision::Commit)
                    || !t.heuristics.is_empty()
                    || (t.client_named && t.decision.is_some())
            })
            .chain(
                self.history
                    .iter()
                    .filter(|t| !t.heuristics.is_empty() || t.client_named),
            )
            .map(|t| &**t)
            .collect();
        txns.sort_by(|a, b| a.id.cmp(&b.id));
        let mut v = self.membership_records();
        for t in txns {
            let decision = t.decision.unwrap_or(Decision::Abort);
            let outcome = Record::Outcome {
                txn: t.id.clone(),
                decision,
                participants: t.participants.clone(),
            };
            match decision {
                Decision::Commit => v.push(Record::Decision {
                    txn: t.id.clone(),
                    decision,
                    participants: t.participants.clone(),
                    client_named: t.client_named,
                }),
                // A client-named abort is remembered before its heuristics
                // are attached to it.
                Decision::Abort if t.client_named => v.push(outcome.clone()),
                Decision::Abort => {}
            }
            for (p, h) in &t.heuristics {
                v.push(Record::Heuristic {
                    txn: t.id.clone(),
                    decision,
                    participant: p.clone(),
                    heuristic: h.clone(),
                });
            }
            if decision == Decision::Commit && t.ended_ms.is_some() {
                v.push(match t.client_named {
                    true => outcome,
                    false => Record::End { txn: t.id.clone() },
                });
            }
        }
        v
    }

    /// A `Heuristic` record read back from the log: attach it to its
    /// transaction (re-driven, or ended), or remember the transaction as
    /// ended with it (an abort, or one whose other records a checkpoint
    /// dropped).
    fn recover_heuristic(
        &mut self,
        txn: &TxnId,
        decision: Decision,
        participant: &ParticipantId,
        h: Heuristic,
    ) {
        let now = self.now;
        let known = self.active.contains_key(txn) || self.history_index.contains_key(txn);
        if !known {
            let max = self.opts.timeline_max_events;
            let mut t = Txn::new(txn.clone(), vec![participant.clone()], now, now, max);
            t.timeline.assume_durable();
            t.timeline.record(now, Step::Recovered);
            t.recovered = true;
            t.decision = Some(decision);
            t.decided_ms = Some(now);
            t.ended_ms = Some(now);
            t.phase = match decision {
                Decision::Commit => TxnPhase::Completed,
                Decision::Abort => TxnPhase::Aborted,
            };
            t.acks.insert(participant.clone());
            self.remember(t);
        }
        if let Some(t) = self.remembered_mut(txn) {
            t.errors.insert(participant.clone(), heuristic_error(&h));
            t.heuristics.insert(participant.clone(), h.bounded());
        }
    }

    /// A transaction by id, active or remembered, to change.
    fn remembered_mut(&mut self, id: &TxnId) -> Option<&mut Txn> {
        match self.active.get_mut(id) {
            Some(t) => Some(t),
            None => self
                .history
                .iter_mut()
                .rev()
                .find(|t| &t.id == id)
                .map(|t| &mut **t),
        }
    }

    /// A transaction by id, active or recently ended.
    pub fn txn(&self, id: &TxnId) -> Option<&Txn> {
        self.active
            .get(id)
            .or_else(|| self.history.iter().rev().find(|t| &t.id == id))
            .map(|t| &**t)
    }

    /// Active transactions followed by recently ended ones.
    pub fn txns(&self) -> impl Iterator<Item = &Txn> {
        self.active
            .values()
            .chain(self.history.iter())
            .map(|t| &**t)
    }

    /// The first `forced` forced writes are durable: mark the commit
    /// decisions they carried.
    pub(super) fn on_forced_durable(&mut self, forced: u64) {
        while let Some((n, _)) = self.awaiting_durable.front() {
            if *n > forced {
                break;
            }
            if let Some((_, txn)) = self.awaiting_durable.pop_front() {
                self.on_durable(&txn);
            }
        }
    }

    fn on_durable(&mut self, txn: &TxnId) {
        let now = self.now;
        // A client-named abort may have ended before its record was durable.
        let t = match self.active.get_mut(txn) {
            Some(t) => t,
            None => match self
                .history
                .iter_mut()
                .rev()
                .find(|t| &t.id == txn && t.decision == Some(Decision::Abort))
            {
                Some(t) => t,
                None => return,
            },
        };
        if t.durable_ms.is_some() {
            return;
        }
        t.durable_ms = Some(now);
        t.timeline.log_durable(now);
    }

    /// A fresh generated id, never one in use or remembered (a client may
    /// have chosen it).
    fn fresh_txn_id(&mut self) -> TxnId {
        loop {
            let id = TxnId(format!("{}-{}", self.opts.txn_id_prefix, self.next_seq));
            self.next_seq += 1;
            if !self.active.contains_key(&id) && !self.history_index.contains_key(&id) {
                return id;
            }
        }
    }

    /// A submit naming an id that is running or remembered: answer it
    /// without running anything (true), or let it start (false).
    fn answer_repeat(
        &mut self,
        id: &TxnId,
        digest: u64,
        waiter: &Waiter,
        report_accepted: bool,
        out: &mut Vec<Action>,
    ) -> bool {
        let now = self.now;
        let (t, active) = match self.active.get_mut(id) {
            Some(t) => (t, true),
            None => match self.history_index.contains_key(id) {
                true => match self.history.iter_mut().rev().find(|t| &t.id == id) {
                    Some(t) => (t, false),
                    None => return false,
                },
                false => return false,
            },
        };
        if t.request_digest.is_some_and(|d| d != digest) {
            refuse(
                out,
                waiter,
                ErrorCode::Refused,
                format!("transaction id `{id}` was already used for a different request (other data or participants); choose a new id"),
            );
            return true;
        }
        let Some(decision) = t.decision else {
            if t.waiter.is_some() {
                refuse(
                    out,
                    waiter,
                    ErrorCode::InProgress,
                    format!("transaction `{id}` is in progress for another connection; follow it with `twopc txn show {id}`, or submit it again later for its outcome"),
                );
            } else {
                // Its client went away: this one waits for the outcome.
                if report_accepted {
                    let (txn, request_id) = (id.clone(), waiter.request_id);
                    send(out, waiter.conn, Body::Accepted { txn, request_id }, false);
                }
                t.waiter = Some(waiter.clone());
            }
            return true;
        };
        t.timeline.record_after_log(now, Step::Outcome { decision });
        let outcome = Outcome {
            decision,
            votes: t.votes.clone(),
            reason: t.reason.clone(),
            duration_ms: t.decided_ms.unwrap_or(now).saturating_sub(t.started_ms) as f64,
            request_id: waiter.request_id,
            results: match decision {
                Decision::Commit => t.results.clone(),
                Decision::Abort => BTreeMap::new(),
            },
            repeated: true,
        };
        // A commit (or a client-named abort) still being made durable is
        // told only once it is.
        let after_durable = active && (decision == Decision::Commit || t.client_named);
        let body = Body::Outcome {
            txn: id.clone(),
            outcome,
        };
        send(out, waiter.conn, body, after_durable);
        true
    }

    pub(super) fn start_txn(
        &mut self,
        waiter: Waiter,
        mut req: SubmitRequest,
        out: &mut Vec<Action>,
    ) {
        let mut digest = None;
        if let Some(id) = &req.transaction_id {
            if !valid_txn_id(&id.0) {
                return refuse(
                    out,
                    &waiter,
                    ErrorCode::InvalidMessage,
                    format!(
                        "transaction_id must be 1-{TXN_ID_MAX_LEN} characters from [A-Za-z0-9_.:-]; got {:?}",
                        bound::reason(&id.0)
                    ),
                );
            }
            let d = request_digest(&req);
            if self.answer_repeat(id, d, &waiter, req.report_accepted, out) {
                return;
            }
            digest = Some(d);
        }
        if self.in_prepare >= self.opts.max_in_flight {
            return refuse(
                out,
                &waiter,
                ErrorCode::Overloaded,
                format!(
                    "{} transactions are already in flight (max_in_flight); retry later",
                    self.in_prepare
                ),
            );
        }
        let operations = match split_operations(&req.data) {
            Ok(ops) => ops,
            Err(msg) => return refuse(out, &waiter, ErrorCode::InvalidMessage, msg),
        };
        // Operations for a participant the submit leaves out would be
        // silently dropped: refuse instead.
        if let (Some(ops), Some(named)) = (&operations, &req.participants) {
            if let Some(p) = ops.keys().find(|p| !named.contains(p)) {
                return refuse(
                    out,
                    &waiter,
                    ErrorCode::InvalidMessage,
                    format!(
                        "`operations` names `{p}`, which is not among the submit's participants ({}); add it to participants or remove its operations",
                        named.iter().map(|p| p.0.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
        let requested = req
            .participants
            .clone()
            .or_else(|| operations.as_ref().map(|o| o.keys().cloned().collect()));
        let participants: Vec<ParticipantId> = match requested {
            Some(list) => {
                let mut seen = BTreeSet::new();
                let list: Vec<ParticipantId> = list
                    .into_iter()
                    .filter(|p| seen.insert(p.clone()))
                    .collect();
                if let Some(unknown) = list.iter().find(|p| !self.members.contains_key(*p)) {
                    return refuse(
                        out,
                        &waiter,
                        ErrorCode::UnknownParticipant,
                        format!(
                            "participant `{unknown}` is not registered; registered: {}",
                            self.member_list()
                        ),
                    );
                }
                list
            }
            None => {
                let (now, grace) = (self.now, self.opts.join_grace_ms);
                self.members
                    .iter()
                    .filter(|(_, m)| m.counts_by_default(now, grace))
                    .map(|(id, _)| id.clone())
                    .collect()
            }
        };
        if participants.is_empty() {
            return refuse(
                out,
                &waiter,
                ErrorCode::UnknownParticipant,
                "the transaction has no participants: name some, or register participants first",
            );
        }
        let id = match &req.transaction_id {
            Some(id) => id.clone(),
            None => self.fresh_txn_id(),
        };
        let mut t = Txn::new(
            id.clone(),
            participants.clone(),
            self.now,
            self.now + self.opts.vote_timeout_ms,
            self.opts.timeline_max_events,
        );
        t.timeline.record(self.now, Step::Submitted);
        t.client_named = req.transaction_id.is_some();
        t.request_digest = digest;
        if req.report_accepted {
            let request_id = waiter.request_id;
            let txn = id.clone();
            send(out, waiter.conn, Body::Accepted { txn, request_id }, false);
        }
        t.waiter = Some(waiter);
        self.in_prepare += 1;
        // Named in a transaction: each is a full member from now on (the
        // transaction may wait for its acknowledgement).
        for p in &participants {
            if let Some(m) = self.members.get_mut(p) {
                if std::mem::replace(&mut m.newcomer, false) {
                    self.log_joined(p, out);
                }
            }
        }
        let mut unreachable = None;
        let last = participants.len().saturating_sub(1);
        for (i, p) in participants.iter().enumerate() {
            // With per-participant operations, each participant sees only
            // its own; otherwise every participant gets the whole data (the
            // last one the request's own, the others a copy).
            let data = match &operations {
                Some(ops) => json!({ "operations": ops.get(p).cloned().unwrap_or(json!([])) }),
                None if i == last => std::mem::take(&mut req.data),
                None => req.data.clone(),
            };
            match self.members.get(p).and_then(|m| m.conn) {
                Some(c) => {
                    t.timeline.record(self.now, Step::Prepare { to: p.clone() });
                    send(
                        out,
                        c,
                        Body::Prepare {
                            txn: id.clone(),
                            participants: participants.clone(),
                            data,
                            term: None,
                        },
                        false,
                    )
                }
                None => {
                    t.errors.insert(
                        p.clone(),
                        "not connected when the transaction started".into(),
                    );
                    unreachable = Some(p.clone());
                    break;
                }
            }
        }
        if let Some(first) = &unreachable {
            // Never asked to prepare: they hold nothing, and under presumed
            // abort the abort needs no acknowledgement from them.
            t.unasked = participants
                .iter()
                .skip_while(|p| *p != first)
                .cloned()
                .collect();
        }
        self.active.insert(id.clone(), t);
        if let Some(p) = unreachable {
            self.decide(
                &id,
                Decision::Abort,
                Some(AbortCause::ParticipantUnavailable),
                format!("participant_unavailable: {p} is not connected"),
                out,
            );
        }
    }

    /// A commit vote, with the read results it may carry: they are kept
    /// when the vote counts (first vote of a member, still voting).
    pub(super) fn on_commit_vote(
        &mut self,
        conn: ConnId,
        from: ParticipantId,
        txn: TxnId,
        result: Option<Value>,
        out: &mut Vec<Action>,
    ) {
        if let (Some(r), Some(t)) = (result, self.active.get_mut(&txn)) {
            if t.phase == TxnPhase::PreparePhase
                && t.participants.contains(&from)
                && !t.votes.contains_key(&from)
            {
                t.results.insert(from.clone(), r);
            }
        }
        self.on_vote(conn, from, txn, Vote::Commit, None, out)
    }

    pub(super) fn on_vote(
        &mut self,
        conn: ConnId,
        from: ParticipantId,
        txn: TxnId,
        vote: Vote,
        reason: Option<String>,
        out: &mut Vec<Action>,
    ) {
        let Some(t) = self.active.get_mut(&txn) else {
            // A vote for a transaction no longer driven here (it ended, or
            // the coordinator restarted and presumes it aborted) is normal
            // after a crash, not an error: a commit voter is told the
            // remembered outcome, or abort by presumption; an abort voter
            // has aborted on its own and needs nothing.
            if vote == Vote::Commit {
                let d = self
                    .history_index
                    .get(&txn)
                    .copied()
                    .unwrap_or(Decision::Abort);
                send(out, conn, Body::decision(txn, d), d == Decision::Commit);
            }
            return;
        };
        if !t.participants.contains(&from) {
            return reject(
                out,
                conn,
                ErrorCode::NotAMember,
                format!("`{from}` is not a participant of transaction `{txn}`; vote ignored"),
                false,
            );
        }
        if let Some(&prev) = t.votes.get(&from) {
            if prev != vote {
                let msg = format!(
                    "`{from}` already voted {} for `{txn}`; the second vote ({}) is ignored",
                    prev.as_str(),
                    vote.as_str()
                );
                t.timeline.record(
                    self.now,
                    Step::LateVote {
                        from: from.clone(),
                        vote,
                    },
                );
                return reject(out, conn, ErrorCode::Refused, msg, false);
            }
            // The same vote again (a participant re-sends after reconnecting):
            // not an error. A commit voter still needs the decision.
            t.timeline.record(
                self.now,
                Step::LateVote {
                    from: from.clone(),
                    vote,
                },
            );
            if let (Some(d), Vote::Commit, false) = (t.decision, vote, t.acks.contains(&from)) {
                self.note_decision_sent(&txn, &from, d, true);
                send(out, conn, Body::decision(txn, d), d == Decision::Commit);
            }
            return;
        }
        if t.phase != TxnPhase::PreparePhase {
            // A vote that crossed the decision on the wire (another
            // participant voted abort, or the deadline fired): normal, not an
            // error. The decision has been or will be sent to this
            // participant; repeat it in case the first one was lost.
            t.timeline.record(
                self.now,
                Step::LateVote {
                    from: from.clone(),
                    vote,
                },
            );
            if let (Some(d), Vote::Commit) = (t.decision, vote) {
                self.note_decision_sent(&txn, &from, d, true);
                send(out, conn, Body::decision(txn, d), d == Decision::Commit);
            }
            return;
        }
        t.votes.insert(from.clone(), vote);
        // A peer's text, kept in several places and logged: bounded here,
        // whatever the participant sent.
        let reason = reason.filter(|r| !r.is_empty()).map(bound::reason_owned);
        t.timeline.record(
            self.now,
            Step::Vote {
                from: from.clone(),
                vote,
                reason: reason.clone(),
            },
        );
        match vote {
            Vote::Abort => {
                let why = match reason {
                    Some(r) => {
                        let error = bound::reason_owned(format!("voted abort: {r}"));
                        t.errors.insert(from.clone(), error);
                        format!("participant {from} voted abort: {r}")
                    }
                    None => {
                        t.errors.insert(from.clone(), "voted abort".into());
                        format!("participant {from} voted abort")
                    }
                };
                self.decide(&txn, Decision::Abort, Some(AbortCause::VoteAbort), why, out);
            }
            Vote::Commit => {
                if t.votes.len() == t.participants.len() {
                    self.decide(&txn, Decision::Commit, None, String::new(), out);
                }
            }
        }
    }

    /// Take the decision for `txn`. This is the single place where the safety
    /// rules are checked; a decision that breaks them is refused.
    pub(super) fn decide(
        &mut self,
        txn: &TxnId,
        decision: Decision,
        cause: Option<AbortCause>,
        reason: String,
        out: &mut Vec<Action>,
    ) {
        let now = self.now;
        let Some(t) = self.active.get_mut(txn) else {
            return;
        };
        if let Err(why) = check_decision(t, decision) {
            // Unreachable by construction; refusing keeps a bug from becoming
            // a split outcome, and the alert makes it visible.
            out.push(Action::Alert {
                txn: Some(txn.clone()),
                message: format!("decision {decision} refused: {why}"),
            });
            return;
        }
        t.decision = Some(decision);
        t.decided_ms = Some(now);
        t.reason = if reason.is_empty() {
            None
        } else {
            Some(bound::reason_owned(reason))
        };
        t.resend_backoff_ms = self.opts.resend_initial_ms;
        t.next_resend_ms = now + t.resend_backoff_ms;
        self.in_prepare -= 1;
        t.timeline.record(
            now,
            Step::Decided {
                decision,
                reason: t.reason.clone(),
            },
        );
        let durable = match decision {
            Decision::Commit => {
                self.stats.committed += 1;
                t.timeline.record(now, Step::LogWrite);
                t.phase = TxnPhase::CommitPhase;
                out.push(Action::Persist {
                    record: Record::Decision {
                        txn: txn.clone(),
                        decision,
                        participants: t.participants.clone(),
                        client_named: t.client_named,
                    },
                    sync: true,
                });
                self.forced_emitted += 1;
                self.awaiting_durable
                    .push_back((self.forced_emitted, txn.clone()));
                true
            }
            Decision::Abort => {
                let cause = cause.unwrap_or(AbortCause::VoteAbort);
                self.stats.count_abort(cause);
                t.abort_cause = Some(cause);
                t.phase = TxnPhase::Aborted;
                if t.client_named {
                    // The client chose the id and may submit it again: the
                    // abort is logged before the client is told, so that
                    // the id is never run a second time.
                    t.timeline.record(now, Step::LogWrite);
                    out.push(Action::Persist {
                        record: Record::Outcome {
                            txn: txn.clone(),
                            decision,
                            participants: t.participants.clone(),
                        },
                        sync: true,
                    });
                    self.forced_emitted += 1;
                    self.awaiting_durable
                        .push_back((self.forced_emitted, txn.clone()));
                } else {
                    // Nothing is logged for an abort: nothing waits for the
                    // log.
                    t.timeline.assume_durable();
                }
                false
            }
        };
        let client_durable = durable || t.client_named;
        for p in &t.participants {
            // A participant that voted abort has already aborted on its own,
            // and one never asked to prepare holds nothing: neither needs a
            // message or owes an acknowledgement (presumed abort). Everyone
            // else gets the decision.
            if t.votes.get(p) == Some(&Vote::Abort) || t.unasked.contains(p) {
                t.acks.insert(p.clone());
                continue;
            }
            if let Some(c) = self.members.get(p).and_then(|m| m.conn) {
                t.timeline.record_after_log(
                    now,
                    Step::Decision {
                        to: p.clone(),
                        decision,
                        resend: false,
                    },
                );
                #[cfg(feature = "fault-injection")]
                let durable = durable
                    && self.fault
                        != Some(crate::protocol::fault::Fault::CommitBeforeDecisionDurable);
                send(out, c, Body::decision(txn.clone(), decision), durable);
            }
        }
        if let Some(w) = t.waiter.take() {
            t.timeline.record_after_log(now, Step::Outcome { decision });
            let outcome = Outcome {
                decision,
                votes: t.votes.clone(),
                reason: t.reason.clone(),
                duration_ms: now.saturating_sub(t.started_ms) as f64,
                request_id: w.request_id,
                results: match decision {
                    Decision::Commit => t.results.clone(),
                    Decision::Abort => BTreeMap::new(),
                },
                repeated: false,
            };
            send(
                out,
                w.conn,
                Body::Outcome {
                    txn: txn.clone(),
                    outcome,
                },
                client_durable,
            );
        }
        self.maybe_end(txn, out);
    }

    /// An ACK. One that reports a heuristic outcome is kept whatever became
    /// of the transaction (see [`Coordinator::note_heuristic`]).
    pub(super) fn on_ack(
        &mut self,
        conn: ConnId,
        from: ParticipantId,
        txn: TxnId,
        acked: Option<Decision>,
        heuristic: Option<Heuristic>,
        out: &mut Vec<Action>,
    ) {
        let Some(t) = self.active.get_mut(&txn) else {
            // Duplicate ack after the end, or for a presumed-abort
            // transaction: harmless, unless it reports a heuristic outcome.
            if let Some(h) = heuristic {
                self.heuristic_after_end(&txn, &from, acked, h, out);
            }
            return;
        };
        if t.decision.is_none() {
            return reject(
                out,
                conn,
                ErrorCode::Refused,
                format!("ack from `{from}` for `{txn}` before any decision; ignored"),
                false,
            );
        }
        if !t.participants.contains(&from) {
            return reject(
                out,
                conn,
                ErrorCode::NotAMember,
                format!("`{from}` is not a participant of transaction `{txn}`; ack ignored"),
                false,
            );
        }
        if t.acks.insert(from.clone()) {
            t.timeline
                .record(self.now, Step::Ack { from: from.clone() });
            t.errors.remove(&from);
        }
        // Before a possible `End`: the log says how the transaction ended.
        if let Some(h) = heuristic {
            self.note_heuristic(&txn, &from, h, out);
        }
        self.maybe_end(&txn, out);
    }

    /// An ACK reporting a heuristic outcome for a transaction that is no
    /// longer active: kept with the remembered transaction, or, when the
    /// coordinator no longer knows it (forgotten, or presumed aborted),
    /// with a transaction remembered for it, decided as the ACK says
    /// (abort, when it does not say).
    fn heuristic_after_end(
        &mut self,
        txn: &TxnId,
        from: &ParticipantId,
        acked: Option<Decision>,
        h: Heuristic,
        out: &mut Vec<Action>,
    ) {
        if self.history_index.contains_key(txn) {
            return self.note_heuristic(txn, from, h, out);
        }
        let now = self.now;
        let decision = acked.unwrap_or(Decision::Abort);
        let max = self.opts.timeline_max_events;
        let mut t = Txn::new(txn.clone(), vec![from.clone()], now, now, max);
        t.timeline.assume_durable();
        t.decision = Some(decision);
        t.decided_ms = Some(now);
        t.ended_ms = Some(now);
        t.phase = match decision {
            Decision::Commit => TxnPhase::Completed,
            Decision::Abort => TxnPhase::Aborted,
        };
        t.reason = Some(format!(
            "not known here when `{from}` reported a heuristic outcome; shown as the ACK says ({decision})"
        ));
        t.acks.insert(from.clone());
        t.timeline.record(now, Step::Ack { from: from.clone() });
        // Recorded before it is remembered: a history of no transactions
        // (`history_limit` 0) forgets it at once, but not the report.
        let (stats, forced) = (&mut self.stats, &mut self.forced_emitted);
        record_heuristic(&mut t, from, h, now, stats, forced, out);
        self.remember(t);
    }

    /// `from` reports that `txn`'s decision was not carried out as decided
    /// at its end: see [`record_heuristic`].
    pub(super) fn note_heuristic(
        &mut self,
        txn: &TxnId,
        from: &ParticipantId,
        h: Heuristic,
        out: &mut Vec<Action>,
    ) {
        let now = self.now;
        let t = match self.active.get_mut(txn) {
            Some(t) => t,
            None => match self.history.iter_mut().rev().find(|t| &t.id == txn) {
                Some(t) => t,
                None => return,
            },
        };
        let (stats, forced) = (&mut self.stats, &mut self.forced_emitted);
        record_heuristic(t, from, h, now, stats, forced, out);
    }

    pub(super) fn maybe_end(&mut self, txn: &TxnId, out: &mut Vec<Action>) {
        let done = self
            .active
            .get(txn)
            .is_some_and(|t| t.acks.len() == t.participants.len());
        if !done {
            return;
        }
        let Some(mut t) = self.active.remove(txn) else {
            return;
        };
        t.ended_ms = Some(self.now);
        t.timeline.record(self.now, Step::Ended);
        match t.decision {
            Some(Decision::Commit) => {
                t.phase = TxnPhase::Completed;
                self.committed += 1;
                let record = match t.client_named {
                    true => Record::Outcome {
                        txn: txn.clone(),
                        decision: Decision::Commit,
                        participants: t.participants.clone(),
                    },
                    false => Record::End { txn: txn.clone() },
                };
                out.push(Action::Persist {
                    record,
                    sync: false,
                });
            }
            Some(Decision::Abort) => {
                t.phase = TxnPhase::Aborted;
                self.aborted += 1;
            }
            None => {}
        }
        self.remember(t);
    }

    pub(super) fn remember(&mut self, mut t: Box<Txn>) {
        if let Some(d) = t.decision {
            self.history_index.insert(t.id.clone(), d);
        }
        if t.decision != Some(Decision::Commit) {
            // Only a commit's results are ever told.
            t.results.clear();
        }
        let bytes: usize = t
            .results
            .iter()
            .map(|(p, v)| p.0.len() + bound::json_bytes(v))
            .sum();
        let keep_max = RESULTS_KEPT_MAX_BYTES.min(self.opts.history_max_bytes);
        if bytes > keep_max {
            t.drop_results(format!(
                "{bytes} bytes of read results, more than the {keep_max} kept per transaction; they were sent in the outcome"
            ));
        } else {
            t.results_bytes = bytes;
            self.history_results_bytes += bytes;
        }
        self.history.push_back(t);
        while self.history.len() > self.opts.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.history_results_bytes -= old.results_bytes;
                self.history_index.remove(&old.id);
            }
        }
        // Over the byte budget: the oldest results go first.
        let budget = self.opts.history_max_bytes;
        for old in self.history.iter_mut() {
            if self.history_results_bytes <= budget {
                break;
            }
            if old.results_bytes > 0 {
                self.history_results_bytes -= old.results_bytes;
                old.drop_results(format!(
                    "dropped to keep history_max_bytes ({budget}); they were sent in the outcome"
                ));
            }
        }
    }

    pub(super) fn on_query(
        &mut self,
        conn: ConnId,
        from: ParticipantId,
        txn: TxnId,
        out: &mut Vec<Action>,
    ) {
        let now = self.now;
        if let Some(t) = self.active.get_mut(&txn) {
            if !t.participants.contains(&from) {
                return reject(
                    out,
                    conn,
                    ErrorCode::NotAMember,
                    format!("`{from}` is not a participant of transaction `{txn}`"),
                    false,
                );
            }
            t.timeline.record(now, Step::Query { from: from.clone() });
            // Still voting: say nothing; the decision will be sent when taken.
            if let Some(d) = t.decision {
                self.note_decision_sent(&txn, &from, d, true);
                send(out, conn, Body::decision(txn, d), true);
            }
            return;
        }
        let d = self
            .history_index
            .get(&txn)
            .copied()
            .unwrap_or(Decision::Abort);
        send(out, conn, Body::decision(txn, d), d == Decision::Commit);
    }

    /// Record in `txn`'s timeline that its decision went to `to` again.
    pub(super) fn note_decision_sent(
        &mut self,
        txn: &TxnId,
        to: &ParticipantId,
        d: Decision,
        resend: bool,
    ) {
        let now = self.now;
        if let Some(t) = self.active.get_mut(txn) {
            let step = Step::Decision {
                to: to.clone(),
                decision: d,
                resend,
            };
            match d {
                Decision::Commit => t.timeline.record_after_log(now, step),
                Decision::Abort => t.timeline.record(now, step),
            }
        }
    }
}

/// Keep `from`'s report of a heuristic outcome for `t`, once per
/// participant: in the transaction (its state becomes heuristic), in the
/// log (forced, so that it survives a crash even for an abort, which is
/// otherwise not logged; `forced` numbers it), in the counters, and told
/// to the operator.
fn record_heuristic(
    t: &mut Txn,
    from: &ParticipantId,
    h: Heuristic,
    now: Millis,
    stats: &mut CoordinatorStats,
    forced: &mut u64,
    out: &mut Vec<Action>,
) {
    if t.heuristics.contains_key(from) {
        return;
    }
    let h = h.bounded();
    let decision = t.decision.unwrap_or(Decision::Abort);
    t.timeline.record(
        now,
        Step::Heuristic {
            from: from.clone(),
            kind: h.kind,
        },
    );
    let error = heuristic_error(&h);
    t.errors.insert(from.clone(), error.clone());
    t.last_error = Some(error);
    t.heuristics.insert(from.clone(), h.clone());
    stats.count_heuristic(h.kind);
    let message = format!(
        "HEURISTIC OUTCOME ({}) reported by {from}: the decision is {decision}, but {}; reconcile the data",
        h.kind, h.detail
    );
    out.push(Action::Persist {
        record: Record::Heuristic {
            txn: t.id.clone(),
            decision,
            participant: from.clone(),
            heuristic: h,
        },
        sync: true,
    });
    *forced += 1;
    out.push(Action::Alert {
        txn: Some(t.id.clone()),
        message,
    });
}

/// A heuristic outcome as a participant's error.
fn heuristic_error(h: &Heuristic) -> String {
    format!("heuristic {}: {}", h.kind, h.detail)
}

/// Per-participant operations of a submit: `{"operations": {"p1": [..]}}`.
/// `Ok(None)` when the data does not use that shape.
fn split_operations(data: &Value) -> Result<Option<BTreeMap<ParticipantId, Value>>, String> {
    let Some(ops) = data.get("operations") else {
        return Ok(None);
    };
    let Some(map) = ops.as_object() else {
        return Err(
            "`operations` must be an object mapping participant ids to lists of operations".into(),
        );
    };
    let mut out = BTreeMap::new();
    for (p, list) in map {
        if !list.is_array() {
            return Err(format!("`operations.{p}` must be a list of operations"));
        }
        out.insert(ParticipantId(p.clone()), list.clone());
    }
    if out.is_empty() {
        return Err("`operations` is empty: name at least one participant".into());
    }
    Ok(Some(out))
}

/// The safety rules, checked before any decision leaves the core.
///
/// - COMMIT only when every participant voted commit.
/// - ABORT only when someone voted abort, or a vote is missing (deadline or
///   disconnect; the caller only decides abort for those reasons).
/// - A decision never changes.
pub fn check_decision(t: &Txn, decision: Decision) -> Result<(), DecisionRefused> {
    if let Some(prev) = t.decision {
        return Err(DecisionRefused::AlreadyDecided(prev));
    }
    let all_commit = t
        .participants
        .iter()
        .all(|p| t.votes.get(p) == Some(&Vote::Commit));
    match (decision, all_commit) {
        (Decision::Commit, true) | (Decision::Abort, false) => Ok(()),
        (Decision::Commit, false) => Err(DecisionRefused::CommitWithoutEveryVote),
        (Decision::Abort, true) => Err(DecisionRefused::AbortAfterEveryCommit),
    }
}

/// Which safety rule a decision would break. The core never takes such a
/// decision; it raises an alert instead, since reaching one is a bug in the
/// core, to be reported with the transaction's timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecisionRefused {
    /// The transaction already has this decision; it never changes.
    #[error("already decided {0}")]
    AlreadyDecided(Decision),
    /// A participant's commit vote is missing or is an abort vote.
    #[error("commit needs a commit vote from every participant")]
    CommitWithoutEveryVote,
    /// Every participant voted commit, so the transaction must commit.
    #[error("every participant voted commit; abort is not allowed")]
    AbortAfterEveryCommit,
}

/// Longest transaction id a client may choose (it becomes part of a
/// PostgreSQL prepared transaction's name, at most 200 bytes).
pub const TXN_ID_MAX_LEN: usize = 100;

/// Transaction ids a client may choose: short and printable, so they can
/// appear in logs, file names and PostgreSQL prepared transaction names.
pub fn valid_txn_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= TXN_ID_MAX_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

/// Timeline events of a transaction with `participants` that commits
/// without a resend: submitted, decided, log write, log durable, outcome
/// and ended, and per participant its prepare, vote, decision and ack.
pub(super) fn timeline_events_expected(participants: usize) -> usize {
    6 + 4 * participants
}

/// What a repeated submit of a client-named id must match: its data and
/// participants (in memory only; the log keeps outcomes, not requests).
fn request_digest(req: &SubmitRequest) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&req.data)
        .unwrap_or_default()
        .hash(&mut h);
    req.participants.hash(&mut h);
    h.finish()
}

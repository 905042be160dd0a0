//! The coordinator's state machine: membership, the voting protocol for many
//! concurrent transactions, and the safety rules that guard every decision.
//!
//! Events go in ([`Coordinator::handle`]), actions come out. The core never
//! touches a socket, a file or a clock: connection ids, message bodies and
//! `now` are handed in by the runtime, and effects are returned as
//! [`Action`]s which the runtime performs in order.
//!
//! Presumed abort: nothing is logged before the decision; only commit
//! decisions are logged (and forced before the first COMMIT leaves); an
//! `End` record follows, unforced, once every participant has acknowledged.
//! A transaction the coordinator does not know is answered as aborted.

use super::bound;
use super::message::{Body, ErrorCode, Outcome, Role, SubmitRequest, WireError};
use super::record::{Action, Record};
use super::stats::{elapsed, AbortCause, CoordinatorStats};
use super::timeline::{Step, Timeline};
use super::types::{ConnId, Decision, Millis, ParticipantId, TxnId, Vote, PROTOCOL_VERSION};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Tunables of the coordinator core. All durations are milliseconds.
#[derive(Clone, Debug)]
pub struct CoordinatorOptions {
    /// Participants that must register before transactions are accepted.
    pub expected_participants: usize,
    /// Vote deadline: a transaction still missing a vote after this long aborts.
    pub vote_timeout_ms: u64,
    /// Upper bound on transactions in the prepare phase at once; a submit past
    /// it is refused with `overloaded`.
    pub max_in_flight: usize,
    /// Upper bound on submits queued while waiting for participants.
    pub max_pending_submits: usize,
    /// Accept participants beyond `expected_participants` once ready.
    pub dynamic_joining: bool,
    /// First delay before a decision is re-sent to a participant that has not
    /// acknowledged; doubles up to `resend_max_ms`.
    pub resend_initial_ms: u64,
    pub resend_max_ms: u64,
    /// A participant whose last heartbeat is older than this is not alive.
    pub liveness_timeout_ms: u64,
    /// How many ended transactions are kept in memory for status and queries.
    pub history_limit: usize,
    /// Bytes of read results (as JSON) kept across the remembered
    /// transactions; past it the oldest transactions' results are dropped
    /// (with a note), the transactions themselves stay.
    pub history_max_bytes: usize,
    /// Prefix of generated transaction ids; must differ between two runs of
    /// the same coordinator (the runtime derives it from the start time).
    pub txn_id_prefix: String,
    /// Most events kept in one transaction's timeline (operators' view;
    /// events past it are counted, not kept).
    pub timeline_max_events: usize,
    /// A participant that joins a ready cluster (dynamic joining) is left
    /// out of submits that do not name their participants until it has
    /// stayed connected this long, or has taken part in a transaction: a
    /// hello followed by a disconnect must not make every such submit abort.
    pub join_grace_ms: u64,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        CoordinatorOptions {
            expected_participants: 1,
            vote_timeout_ms: 30_000,
            max_in_flight: 1024,
            max_pending_submits: 1024,
            dynamic_joining: false,
            resend_initial_ms: 200,
            resend_max_ms: 5_000,
            liveness_timeout_ms: 3_000,
            history_limit: 10_000,
            history_max_bytes: 16 * 1024 * 1024,
            txn_id_prefix: "t".into(),
            timeline_max_events: 128,
            join_grace_ms: 3_000,
        }
    }
}

/// Most bytes of read results one remembered transaction keeps, so that
/// `txn show` of any transaction fits in a frame; larger results are only
/// told to the client, in its outcome.
pub const RESULTS_KEPT_MAX_BYTES: usize = 64 * 1024;

/// Cluster-level state of the coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    Init,
    WaitingForParticipants,
    Ready,
}

impl ClusterState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterState::Init => "INIT",
            ClusterState::WaitingForParticipants => "WAITING_FOR_PARTICIPANTS",
            ClusterState::Ready => "READY",
        }
    }
}

/// Per-transaction protocol state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// What the coordinator knows about one registered participant.
#[derive(Clone, Debug)]
pub struct Member {
    /// The connection it is registered on, if connected.
    pub conn: Option<ConnId>,
    pub last_heartbeat_ms: Millis,
    /// When it registered on its current connection.
    pub joined_ms: Millis,
    /// It joined a cluster that was already ready (dynamic joining) and
    /// has not taken part in a transaction yet: it is not counted among
    /// "every registered participant" before `join_grace_ms`, and it is
    /// forgotten when it goes away.
    pub newcomer: bool,
}

impl Member {
    /// Is it in the participant set of a submit that names none?
    fn counts_by_default(&self, now: Millis, grace_ms: u64) -> bool {
        !self.newcomer || (self.conn.is_some() && now >= self.joined_ms.saturating_add(grace_ms))
    }
}

/// A client waiting for an outcome.
#[derive(Clone, Debug, PartialEq)]
struct Waiter {
    conn: ConnId,
    request_id: Option<u64>,
}

/// One transaction the coordinator is driving or has recently ended.
#[derive(Clone, Debug)]
pub struct Txn {
    pub id: TxnId,
    pub participants: Vec<ParticipantId>,
    pub phase: TxnPhase,
    pub votes: BTreeMap<ParticipantId, Vote>,
    pub acks: BTreeSet<ParticipantId>,
    pub decision: Option<Decision>,
    pub reason: Option<String>,
    pub started_ms: Millis,
    pub decided_ms: Option<Millis>,
    pub ended_ms: Option<Millis>,
    pub retries: u32,
    /// True for transactions re-driven from the log after a restart.
    pub recovered: bool,
    /// The latest problem seen while driving the transaction, for operators.
    pub last_error: Option<String>,
    /// Results the participants returned with their commit votes. Once the
    /// transaction has ended they are kept only within the history's byte
    /// budget (see [`RESULTS_KEPT_MAX_BYTES`]).
    pub results: BTreeMap<ParticipantId, Value>,
    /// Size of `results` as JSON once remembered, counted in the budget.
    results_bytes: usize,
    /// Why the results are no longer kept, when they were dropped.
    pub results_dropped: Option<String>,
    /// When the commit decision record became durable.
    pub durable_ms: Option<Millis>,
    /// Why it aborted, as a metric label (`reason` holds the sentence).
    pub abort_cause: Option<AbortCause>,
    /// The latest problem per participant (abort vote reason, missing vote,
    /// disconnect, missing acknowledgement), for operators.
    pub errors: BTreeMap<ParticipantId, String>,
    /// What happened, in order; never read by the protocol.
    pub timeline: Timeline,
    deadline_ms: Millis,
    next_resend_ms: Millis,
    resend_backoff_ms: u64,
    waiter: Option<Waiter>,
}

impl Txn {
    fn new(
        id: TxnId,
        participants: Vec<ParticipantId>,
        now: Millis,
        deadline_ms: Millis,
        timeline_max_events: usize,
    ) -> Txn {
        Txn {
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
            last_error: None,
            results: BTreeMap::new(),
            results_bytes: 0,
            results_dropped: None,
            durable_ms: None,
            abort_cause: None,
            errors: BTreeMap::new(),
            timeline: Timeline::new(timeline_max_events),
            deadline_ms,
            next_resend_ms: 0,
            resend_backoff_ms: 0,
            waiter: None,
        }
    }

    /// A JSON summary for `status`/`txn show`.
    pub fn summary(&self, now: Millis) -> Value {
        json!({
            "transaction_id": self.id,
            "state": self.phase.as_str(),
            "participants": self.participants,
            "votes": self.votes,
            "decision": self.decision,
            "acks": self.acks,
            "reason": self.reason,
            "age_ms": now.saturating_sub(self.started_ms),
            "retries": self.retries,
            "recovered": self.recovered,
            "last_error": self.last_error,
            "awaiting_acks_from": self.participants.iter().filter(|p| self.decision.is_some() && !self.acks.contains(*p)).collect::<Vec<_>>(),
        })
    }

    /// The summary plus what an operator needs to see one transaction in
    /// full: per-participant errors, the phase times (milliseconds since
    /// the start) and the timeline (times since the start too).
    pub fn detail(&self, now: Millis) -> Value {
        let mut v = self.summary(now);
        let since = |t: Option<Millis>| t.map(|t| elapsed(self.started_ms, t));
        let timeline: Vec<Value> = self
            .timeline
            .events()
            .iter()
            .map(|e| {
                let mut ev = json!(e);
                ev["at_ms"] = json!(elapsed(self.started_ms, e.at_ms));
                ev
            })
            .collect();
        v["errors"] = json!(self.errors);
        v["abort_cause"] = json!(self.abort_cause.map(AbortCause::as_str));
        v["decided_after_ms"] = json!(since(self.decided_ms));
        v["durable_after_ms"] = json!(since(self.durable_ms));
        v["ended_after_ms"] = json!(since(self.ended_ms));
        v["timeline"] = json!(timeline);
        v["timeline_dropped"] = json!(self.timeline.dropped());
        if self.ended_ms.is_some() && !self.results.is_empty() {
            v["results"] = json!(self.results);
        }
        if let Some(why) = &self.results_dropped {
            v["results_dropped"] = json!(why);
        }
        v
    }

    /// Forget the read results, saying why (they were told to the client
    /// that submitted, in its outcome).
    fn drop_results(&mut self, why: String) {
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

    /// Does the transaction match an operator's `--state` filter?
    /// `in-flight`: still voting; `in-doubt`: decided but not acknowledged
    /// by every participant; `committed` / `aborted`: by decision.
    pub fn matches_state(&self, state: &str) -> bool {
        match state {
            "in-flight" => self.phase == TxnPhase::PreparePhase,
            "in-doubt" => self.decision.is_some() && self.ended_ms.is_none(),
            "committed" => self.decision == Some(Decision::Commit),
            "aborted" => self.decision == Some(Decision::Abort),
            _ => false,
        }
    }
}

/// Inputs to the coordinator core.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A frame arrived on `conn` and parsed to `body`.
    Message { conn: ConnId, body: Body },
    /// `conn` closed (EOF, error, or the runtime dropped it).
    Disconnected { conn: ConnId },
    /// Time passed; deadlines and resends are checked.
    Tick,
    /// The first `forced` forced writes this core asked for are durable
    /// (see [`Action::Persist`]: forced writes are numbered in the order the
    /// core emits them). Changes nothing in the protocol (messages that
    /// waited for them are released by the runtime); the core records which
    /// commit decisions that made durable, in their timelines and the
    /// latency figures.
    Durable { forced: u64 },
}

/// Open transactions by kind, with the age of the oldest of each (ms).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenTxns {
    pub in_flight: usize,
    pub in_flight_oldest_ms: u64,
    pub in_doubt: usize,
    pub in_doubt_oldest_ms: u64,
}

/// The coordinator core. See the module documentation.
#[derive(Debug)]
pub struct Coordinator {
    opts: CoordinatorOptions,
    state: ClusterState,
    members: BTreeMap<ParticipantId, Member>,
    /// Connections that said hello, and as whom.
    peers: HashMap<ConnId, Peer>,
    /// Transactions not yet ended (deciding, or waiting for acks). Ordered,
    /// so that the actions of a step come out in the same order on every
    /// run: a seeded simulation must replay exactly.
    active: BTreeMap<TxnId, Txn>,
    /// Recently ended transactions, oldest first, bounded by `history_limit`.
    history: VecDeque<Txn>,
    /// Bytes of read results kept in `history`, bounded by
    /// `history_max_bytes`.
    history_results_bytes: usize,
    history_index: HashMap<TxnId, Decision>,
    /// Submits that arrived before the cluster was ready.
    pending: VecDeque<(Waiter, SubmitRequest, Millis)>,
    next_seq: u64,
    in_prepare: usize,
    committed: u64,
    aborted: u64,
    now: Millis,
    /// Decision counters and phase latencies, for metrics.
    stats: CoordinatorStats,
    /// Forced writes emitted so far: the number of the last one.
    forced_emitted: u64,
    /// Commit decisions whose forced write is not yet known durable, with
    /// that write's number, oldest first.
    awaiting_durable: VecDeque<(u64, TxnId)>,
    /// A deliberate bug, for tests of the checkers only (see `fault`).
    #[cfg(feature = "fault-injection")]
    fault: Option<super::fault::Fault>,
}

#[derive(Clone, Debug, PartialEq)]
enum Peer {
    Participant(ParticipantId),
    Client,
}

impl Coordinator {
    /// A fresh coordinator with no log.
    pub fn new(opts: CoordinatorOptions, now: Millis) -> Coordinator {
        let state = if opts.expected_participants == 0 {
            ClusterState::Ready
        } else {
            ClusterState::WaitingForParticipants
        };
        Coordinator {
            opts,
            state,
            members: BTreeMap::new(),
            peers: HashMap::new(),
            active: BTreeMap::new(),
            history: VecDeque::new(),
            history_results_bytes: 0,
            history_index: HashMap::new(),
            pending: VecDeque::new(),
            next_seq: 1,
            in_prepare: 0,
            committed: 0,
            aborted: 0,
            now,
            stats: CoordinatorStats::default(),
            forced_emitted: 0,
            awaiting_durable: VecDeque::new(),
            #[cfg(feature = "fault-injection")]
            fault: None,
        }
    }

    /// Break this core on purpose (tests of the checkers only).
    #[cfg(feature = "fault-injection")]
    pub fn inject(&mut self, fault: super::fault::Fault) {
        self.fault = Some(fault);
    }

    /// Rebuild from the records found in the log. Every commit decision
    /// without an `End` is re-driven; everything else is presumed aborted.
    pub fn recover(opts: CoordinatorOptions, now: Millis, records: &[Record]) -> Coordinator {
        let mut c = Coordinator::new(opts, now);
        for r in records {
            match r {
                Record::Decision {
                    txn,
                    decision: Decision::Commit,
                    participants,
                } => {
                    let max = c.opts.timeline_max_events;
                    let mut t = Txn::new(txn.clone(), participants.clone(), now, now, max);
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
                // Abort decisions are never logged; participant records do
                // not belong in a coordinator's log and are ignored.
                Record::Decision {
                    decision: Decision::Abort,
                    ..
                }
                | Record::Prepared { .. }
                | Record::Decided { .. }
                | Record::Snapshot { .. } => {}
            }
        }
        c
    }

    /// The records that must survive a log checkpoint: the commit decisions
    /// of transactions that have not ended.
    pub fn live_records(&self) -> Vec<Record> {
        let mut v: Vec<Record> = self
            .active
            .values()
            .filter(|t| t.decision == Some(Decision::Commit))
            .map(|t| Record::Decision {
                txn: t.id.clone(),
                decision: Decision::Commit,
                participants: t.participants.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.txn().cmp(&b.txn()));
        v
    }

    /// Has `conn` said a valid hello? Operator requests are answered only
    /// on such connections.
    pub fn is_greeted(&self, conn: ConnId) -> bool {
        self.peers.contains_key(&conn)
    }

    pub fn state(&self) -> ClusterState {
        self.state
    }

    /// The options the core runs with.
    pub fn options(&self) -> &CoordinatorOptions {
        &self.opts
    }

    pub fn members(&self) -> &BTreeMap<ParticipantId, Member> {
        &self.members
    }

    /// A transaction by id, active or recently ended.
    pub fn txn(&self, id: &TxnId) -> Option<&Txn> {
        self.active
            .get(id)
            .or_else(|| self.history.iter().rev().find(|t| &t.id == id))
    }

    /// Active transactions followed by recently ended ones.
    pub fn txns(&self) -> impl Iterator<Item = &Txn> {
        self.active.values().chain(self.history.iter())
    }

    pub fn counts(&self) -> (u64, u64, usize) {
        (self.committed, self.aborted, self.in_prepare)
    }

    /// Decision counters and phase latency histograms.
    /// Submits queued until the cluster is ready, oldest first: each
    /// client's connection and request id. Read-only, for tests and
    /// inspection.
    pub fn queued_submits(&self) -> impl Iterator<Item = (ConnId, Option<u64>)> + '_ {
        self.pending.iter().map(|(w, _, _)| (w.conn, w.request_id))
    }

    pub fn stats(&self) -> &CoordinatorStats {
        &self.stats
    }

    /// Transactions still voting and transactions decided but not yet
    /// acknowledged by everyone (in doubt at some participant), each with
    /// the age of the oldest: since its start, and since its decision.
    pub fn open_txns(&self) -> OpenTxns {
        let mut o = OpenTxns::default();
        for t in self.active.values() {
            match t.decided_ms {
                None => {
                    o.in_flight += 1;
                    o.in_flight_oldest_ms =
                        o.in_flight_oldest_ms.max(elapsed(t.started_ms, self.now));
                }
                Some(d) => {
                    o.in_doubt += 1;
                    o.in_doubt_oldest_ms = o.in_doubt_oldest_ms.max(elapsed(d, self.now));
                }
            }
        }
        o
    }

    fn on_durable(&mut self, txn: &TxnId) {
        let now = self.now;
        let Some(t) = self.active.get_mut(txn) else {
            return;
        };
        if t.durable_ms.is_some() {
            return;
        }
        t.durable_ms = Some(now);
        t.timeline.log_durable(now);
        if let Some(d) = t.decided_ms {
            self.stats.decision_durable_ms.observe(elapsed(d, now));
        }
    }

    /// Feed one event; returns the actions to perform, in order.
    pub fn handle(&mut self, now: Millis, event: Event) -> Vec<Action> {
        self.now = now.max(self.now);
        let mut out = Vec::new();
        match event {
            Event::Message { conn, body } => self.on_message(conn, body, &mut out),
            Event::Disconnected { conn } => self.on_disconnect(conn, &mut out),
            Event::Tick => self.on_tick(&mut out),
            Event::Durable { forced } => {
                while let Some((n, _)) = self.awaiting_durable.front() {
                    if *n > forced {
                        break;
                    }
                    if let Some((_, txn)) = self.awaiting_durable.pop_front() {
                        self.on_durable(&txn);
                    }
                }
            }
        }
        out
    }

    fn on_message(&mut self, conn: ConnId, body: Body, out: &mut Vec<Action>) {
        let peer = self.peers.get(&conn).cloned();
        // Any message from a participant shows it is alive, not only
        // heartbeats.
        if let Some(Peer::Participant(p)) = &peer {
            if let Some(m) = self.members.get_mut(p) {
                m.last_heartbeat_ms = self.now;
            }
        }
        match (peer, body) {
            (
                None,
                Body::Hello {
                    role,
                    id,
                    protocol_version,
                },
            ) => self.on_hello(conn, role, id, protocol_version, out),
            (Some(_), Body::Hello { .. }) => reject(
                out,
                conn,
                ErrorCode::InvalidMessage,
                "`hello` was already received on this connection",
                false,
            ),
            (None, other) => reject(
                out,
                conn,
                ErrorCode::HelloRequired,
                format!(
                    "`{}` before `hello`; the first message must be hello with a role",
                    other.message_type()
                ),
                true,
            ),
            (Some(_), Body::Heartbeat) => {
                send(out, conn, Body::HeartbeatAck, false);
            }
            (Some(_), Body::Status) => {
                let report = self.status_report();
                send(out, conn, Body::StatusReport(report), false);
            }
            (Some(Peer::Client), Body::Submit(req)) => self.on_submit(conn, req, out),
            (Some(Peer::Client), Body::ParticipantRemove { id }) => self.on_remove(conn, id, out),
            (Some(Peer::Participant(p)), Body::VoteCommit { txn, result }) => {
                if let (Some(r), Some(t)) = (result, self.active.get_mut(&txn)) {
                    if t.phase == TxnPhase::PreparePhase
                        && t.participants.contains(&p)
                        && !t.votes.contains_key(&p)
                    {
                        t.results.insert(p.clone(), r);
                    }
                }
                self.on_vote(conn, p, txn, Vote::Commit, None, out)
            }
            (Some(Peer::Participant(p)), Body::VoteAbort { txn, reason }) => {
                self.on_vote(conn, p, txn, Vote::Abort, reason, out)
            }
            (Some(Peer::Participant(p)), Body::Ack { txn, .. }) => self.on_ack(conn, p, txn, out),
            (Some(Peer::Participant(p)), Body::Query { txn }) => self.on_query(conn, p, txn, out),
            (Some(_), Body::HeartbeatAck) => {}
            (Some(role), other) => reject(
                out,
                conn,
                ErrorCode::InvalidMessage,
                format!(
                    "a {} may not send `{}` to the coordinator",
                    match role {
                        Peer::Participant(_) => "participant",
                        Peer::Client => "client",
                    },
                    other.message_type()
                ),
                false,
            ),
        }
    }

    fn on_hello(
        &mut self,
        conn: ConnId,
        role: Role,
        id: Option<ParticipantId>,
        version: u32,
        out: &mut Vec<Action>,
    ) {
        if version != PROTOCOL_VERSION {
            return reject(
                out,
                conn,
                ErrorCode::UnsupportedVersion,
                format!("protocol_version {version} is not supported; this coordinator speaks {PROTOCOL_VERSION}"),
                true,
            );
        }
        match role {
            Role::Client => {
                self.peers.insert(conn, Peer::Client);
                let state = self.state.as_str().to_string();
                send(out, conn, Body::Welcome { state }, false);
            }
            Role::Participant => {
                let Some(id) = id.filter(|i| valid_participant_id(&i.0)) else {
                    return reject(
                        out,
                        conn,
                        ErrorCode::InvalidMessage,
                        "participant hello needs an `id` of 1-64 characters from [A-Za-z0-9_.-]",
                        true,
                    );
                };
                self.register(conn, id, out);
            }
        }
    }

    fn register(&mut self, conn: ConnId, id: ParticipantId, out: &mut Vec<Action>) {
        if let Some(m) = self.members.get(&id) {
            if m.conn.is_some() {
                return reject(
                    out,
                    conn,
                    ErrorCode::DuplicateParticipant,
                    format!("participant id `{id}` is already connected; ids must be unique (retry after the old connection closes)"),
                    true,
                );
            }
        } else if self.state == ClusterState::Ready
            && !self.opts.dynamic_joining
            && !self.owed_to(&id)
        {
            return reject(
                out,
                conn,
                ErrorCode::MembershipClosed,
                format!(
                    "participant `{id}` is not a member and the cluster is complete ({} participants); set enable_dynamic_joining: true to allow joins",
                    self.members.len()
                ),
                true,
            );
        }
        // A returning member keeps its standing; a new id joining a ready
        // cluster is a newcomer until it takes part in a transaction (one
        // that a recovered decision is owed to has taken part already).
        let newcomer = match self.members.get(&id) {
            Some(m) => m.newcomer,
            None => self.state == ClusterState::Ready && !self.owed_to(&id),
        };
        self.members.insert(
            id.clone(),
            Member {
                conn: Some(conn),
                last_heartbeat_ms: self.now,
                joined_ms: self.now,
                newcomer,
            },
        );
        self.peers.insert(conn, Peer::Participant(id.clone()));
        if self.state == ClusterState::WaitingForParticipants
            && self.members.len() >= self.opts.expected_participants
        {
            self.state = ClusterState::Ready;
        }
        let state = self.state.as_str().to_string();
        send(out, conn, Body::Welcome { state }, false);
        // Give a returning participant every decision it has not acknowledged.
        let owed: Vec<&Txn> = self
            .active
            .values()
            .filter(|t| {
                t.decision.is_some() && t.participants.contains(&id) && !t.acks.contains(&id)
            })
            .collect();
        let mut owed: Vec<(TxnId, Decision)> = owed
            .into_iter()
            .filter_map(|t| Some((t.id.clone(), t.decision?)))
            .collect();
        owed.sort_by(|a, b| a.0.cmp(&b.0));
        for (txn, d) in owed {
            self.note_decision_sent(&txn, &id, d, true);
            send(out, conn, Body::decision(txn, d), true);
        }
        if self.state == ClusterState::Ready {
            self.start_pending(out);
        }
    }

    /// Does an unended transaction (for example one recovered from the log)
    /// still owe `id` its decision? Such a participant may always register,
    /// even when membership is closed.
    fn owed_to(&self, id: &ParticipantId) -> bool {
        self.active
            .values()
            .any(|t| t.decision.is_some() && t.participants.contains(id) && !t.acks.contains(id))
    }

    fn start_pending(&mut self, out: &mut Vec<Action>) {
        while let Some((w, req, _)) = self.pending.pop_front() {
            self.start_txn(w, req, out);
        }
    }

    fn on_submit(&mut self, conn: ConnId, req: SubmitRequest, out: &mut Vec<Action>) {
        let waiter = Waiter {
            conn,
            request_id: req.request_id,
        };
        if self.state != ClusterState::Ready {
            if self.pending.len() >= self.opts.max_pending_submits {
                return refuse(
                    out,
                    &waiter,
                    ErrorCode::Overloaded,
                    "too many submits are waiting for participants to register; retry later",
                );
            }
            let deadline = self.now + self.opts.vote_timeout_ms;
            self.pending.push_back((waiter, req, deadline));
            return;
        }
        self.start_txn(waiter, req, out);
    }

    fn start_txn(&mut self, waiter: Waiter, req: SubmitRequest, out: &mut Vec<Action>) {
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
        let id = TxnId(format!("{}-{}", self.opts.txn_id_prefix, self.next_seq));
        self.next_seq += 1;
        let mut t = Txn::new(
            id.clone(),
            participants.clone(),
            self.now,
            self.now + self.opts.vote_timeout_ms,
            self.opts.timeline_max_events,
        );
        t.timeline.record(self.now, Step::Submitted);
        t.waiter = Some(waiter);
        self.in_prepare += 1;
        // Named in a transaction: each is a full member from now on (the
        // transaction may wait for its acknowledgement).
        for p in &participants {
            if let Some(m) = self.members.get_mut(p) {
                m.newcomer = false;
            }
        }
        let mut unreachable = None;
        for p in &participants {
            // With per-participant operations, each participant sees only
            // its own; otherwise every participant gets the whole data.
            let data = match &operations {
                Some(ops) => json!({ "operations": ops.get(p).cloned().unwrap_or(json!([])) }),
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

    /// Operator: forget a member. Refused while any transaction still
    /// needs it (undecided, or decided and not acknowledged by it): those
    /// would be left waiting for a participant nobody may bring back.
    fn on_remove(&mut self, conn: ConnId, id: ParticipantId, out: &mut Vec<Action>) {
        if !self.members.contains_key(&id) {
            let msg = format!(
                "participant `{id}` is not registered; registered: {}",
                self.member_list()
            );
            return reject(out, conn, ErrorCode::UnknownParticipant, msg, false);
        }
        // An abort needs no acknowledgement to be safe (presumed abort: a
        // participant that comes back in doubt is told abort), so only
        // undecided and committed transactions keep a member.
        let mut needed: Vec<&TxnId> = self
            .active
            .values()
            .filter(|t| {
                t.participants.contains(&id)
                    && !t.acks.contains(&id)
                    && t.decision != Some(Decision::Abort)
            })
            .map(|t| &t.id)
            .collect();
        if !needed.is_empty() {
            needed.sort();
            let total = needed.len();
            let shown: Vec<&str> = needed.iter().take(20).map(|t| t.0.as_str()).collect();
            let msg = format!(
                "participant `{id}` is still needed by {total} transaction(s): {}{}; wait for them to end or resolve them (twopc txn list --state in-doubt), then remove it",
                shown.join(", "),
                if total > shown.len() { ", ..." } else { "" }
            );
            return reject(out, conn, ErrorCode::Refused, msg, false);
        }
        if let Some(c) = self.members.remove(&id).and_then(|m| m.conn) {
            self.peers.remove(&c);
            reject(
                out,
                c,
                ErrorCode::MembershipClosed,
                format!("`{id}` was removed from the cluster by an operator"),
                true,
            );
        }
        // Aborted transactions that waited only for its ACK end now.
        let mut waiting: Vec<TxnId> = self
            .active
            .values()
            .filter(|t| t.participants.contains(&id) && !t.acks.contains(&id))
            .map(|t| t.id.clone())
            .collect();
        waiting.sort();
        for txn in waiting {
            if let Some(t) = self.active.get_mut(&txn) {
                t.acks.insert(id.clone());
                t.errors.insert(
                    id.clone(),
                    "removed by an operator before acknowledging".into(),
                );
            }
            self.maybe_end(&txn, out);
        }
        let mut report = self.status_report();
        report["removed"] = json!(id.0);
        send(out, conn, Body::StatusReport(report), false);
    }

    fn on_vote(
        &mut self,
        conn: ConnId,
        from: ParticipantId,
        txn: TxnId,
        vote: Vote,
        reason: Option<String>,
        out: &mut Vec<Action>,
    ) {
        let Some(t) = self.active.get_mut(&txn) else {
            let known = self.history_index.get(&txn).copied();
            reject(
                out,
                conn,
                ErrorCode::UnknownTransaction,
                format!("vote for transaction `{txn}` which is not in progress here; ignored"),
                false,
            );
            // A participant that voted commit for a transaction we no longer
            // drive must still learn its outcome: the remembered one, or abort
            // by presumption.
            if vote == Vote::Commit {
                let d = known.unwrap_or(Decision::Abort);
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
    fn decide(
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
        self.stats.prepare_ms.observe(elapsed(t.started_ms, now));
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
                // Nothing is logged for an abort: nothing waits for the log.
                t.timeline.assume_durable();
                t.phase = TxnPhase::Aborted;
                false
            }
        };
        for p in &t.participants {
            // A participant that voted abort has already aborted on its own
            // and needs no message; everyone else gets the decision.
            if t.votes.get(p) == Some(&Vote::Abort) {
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
                let durable =
                    durable && self.fault != Some(super::fault::Fault::CommitBeforeDecisionDurable);
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
            };
            send(
                out,
                w.conn,
                Body::Outcome {
                    txn: txn.clone(),
                    outcome,
                },
                durable,
            );
        }
        self.maybe_end(txn, out);
    }

    fn on_ack(&mut self, conn: ConnId, from: ParticipantId, txn: TxnId, out: &mut Vec<Action>) {
        let Some(t) = self.active.get_mut(&txn) else {
            // Duplicate ack after the end, or for a presumed-abort
            // transaction: harmless.
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
        self.maybe_end(&txn, out);
    }

    fn maybe_end(&mut self, txn: &TxnId, out: &mut Vec<Action>) {
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
        if let Some(d) = t.decided_ms {
            self.stats.completion_ms.observe(elapsed(d, self.now));
        }
        match t.decision {
            Some(Decision::Commit) => {
                t.phase = TxnPhase::Completed;
                self.committed += 1;
                out.push(Action::Persist {
                    record: Record::End { txn: txn.clone() },
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

    fn remember(&mut self, mut t: Txn) {
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

    fn on_query(&mut self, conn: ConnId, from: ParticipantId, txn: TxnId, out: &mut Vec<Action>) {
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

    fn on_disconnect(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        let Some(peer) = self.peers.remove(&conn) else {
            return;
        };
        match peer {
            Peer::Client => {
                for t in self.active.values_mut() {
                    if t.waiter.as_ref().is_some_and(|w| w.conn == conn) {
                        t.waiter = None;
                    }
                }
                self.pending.retain(|(w, _, _)| w.conn != conn);
            }
            Peer::Participant(p) => {
                let reason = format!("participant_disconnected: {p}");
                let cause = AbortCause::ParticipantDisconnected;
                self.participant_gone(conn, p, cause, reason, out);
            }
        }
    }

    /// `p`'s connection `conn` is gone (closed, or given up for silence):
    /// what waits for its vote aborts with `reason`; decided transactions
    /// wait for it to come back and acknowledge.
    fn participant_gone(
        &mut self,
        conn: ConnId,
        p: ParticipantId,
        cause: AbortCause,
        reason: String,
        out: &mut Vec<Action>,
    ) {
        if let Some(m) = self.members.get_mut(&p) {
            if m.conn == Some(conn) {
                m.conn = None;
                if m.newcomer {
                    // It never took part: nothing waits for it, and keeping
                    // it would make every submit without named participants
                    // abort until an operator removed it.
                    self.members.remove(&p);
                    return;
                }
            }
        }
        let what = match cause {
            AbortCause::ParticipantUnavailable => "given up for missed heartbeats",
            _ => "disconnected",
        };
        let now = self.now;
        for t in self.active.values_mut() {
            if !t.participants.contains(&p) || t.acks.contains(&p) {
                continue;
            }
            t.timeline.record(
                now,
                Step::Disconnected {
                    participant: p.clone(),
                },
            );
            if t.decision.is_some() {
                t.errors
                    .insert(p.clone(), format!("{what} before acknowledging"));
                t.last_error = Some(format!("participant {p} {what} before acknowledging"));
            } else if !t.votes.contains_key(&p) {
                t.errors.insert(p.clone(), format!("{what} before voting"));
            }
        }
        let mut victims: Vec<TxnId> = self
            .active
            .values()
            .filter(|t| {
                t.phase == TxnPhase::PreparePhase
                    && t.participants.contains(&p)
                    && !t.votes.contains_key(&p)
            })
            .map(|t| t.id.clone())
            .collect();
        victims.sort();
        for id in victims {
            self.decide(&id, Decision::Abort, Some(cause), reason.clone(), out);
        }
    }

    /// Participants silent for longer than the liveness timeout are given
    /// up: their connection is closed (they reconnect if they are alive)
    /// and what waits for their vote aborts now with `participant_unavailable`
    /// instead of at the vote deadline.
    fn check_liveness(&mut self, out: &mut Vec<Action>) {
        let now = self.now;
        let limit = self.opts.liveness_timeout_ms;
        let silent: Vec<(ParticipantId, ConnId, Millis)> = self
            .members
            .iter()
            .filter_map(|(p, m)| {
                let age = now.saturating_sub(m.last_heartbeat_ms);
                m.conn.filter(|_| age > limit).map(|c| (p.clone(), c, age))
            })
            .collect();
        for (p, conn, age) in silent {
            self.peers.remove(&conn);
            reject(
                out,
                conn,
                ErrorCode::ParticipantUnavailable,
                format!("no heartbeat from `{p}` for {age} ms (liveness timeout {limit} ms); closing the connection, reconnect to register again"),
                true,
            );
            let reason = format!("participant_unavailable: no heartbeat from {p} for {age} ms");
            let cause = AbortCause::ParticipantUnavailable;
            self.participant_gone(conn, p, cause, reason, out);
        }
    }

    fn on_tick(&mut self, out: &mut Vec<Action>) {
        self.check_liveness(out);
        let now = self.now;
        // Submits that waited too long for the cluster to become ready.
        while self.pending.front().is_some_and(|(_, _, d)| *d <= now) {
            if let Some((w, _, _)) = self.pending.pop_front() {
                refuse(
                    out,
                    &w,
                    ErrorCode::NotReady,
                    format!(
                        "coordinator is {} ({} of {} participants registered); start the missing participants",
                        self.state.as_str(),
                        self.members.len(),
                        self.opts.expected_participants
                    ),
                );
            }
        }
        let mut expired: Vec<TxnId> = Vec::new();
        let mut resend: Vec<(TxnId, Decision, Vec<ConnId>)> = Vec::new();
        for t in self.active.values_mut() {
            match t.decision {
                None if t.deadline_ms <= now => expired.push(t.id.clone()),
                None => {}
                Some(d) if t.next_resend_ms <= now => {
                    let mut conns: Vec<ConnId> = Vec::new();
                    for p in t.participants.iter().filter(|p| !t.acks.contains(*p)) {
                        t.errors.insert(p.clone(), "no acknowledgement yet".into());
                        if let Some(c) = self.members.get(p).and_then(|m| m.conn) {
                            conns.push(c);
                            t.timeline.record_after_log(
                                now,
                                Step::Decision {
                                    to: p.clone(),
                                    decision: d,
                                    resend: true,
                                },
                            );
                        }
                    }
                    t.resend_backoff_ms = (t.resend_backoff_ms * 2)
                        .clamp(self.opts.resend_initial_ms, self.opts.resend_max_ms);
                    t.next_resend_ms = now + t.resend_backoff_ms;
                    let missing: Vec<&str> = t
                        .participants
                        .iter()
                        .filter(|p| !t.acks.contains(*p))
                        .map(|p| p.0.as_str())
                        .collect();
                    t.last_error = Some(format!("no ack yet from {}", missing.join(", ")));
                    if !conns.is_empty() {
                        t.retries += 1;
                        self.stats.resends += conns.len() as u64;
                        resend.push((t.id.clone(), d, conns));
                    }
                }
                Some(_) => {}
            }
        }
        expired.sort();
        for id in expired {
            let mut missing: Vec<String> = Vec::new();
            if let Some(t) = self.active.get_mut(&id) {
                for p in t.participants.iter().filter(|p| !t.votes.contains_key(*p)) {
                    t.errors
                        .insert(p.clone(), "no vote before the deadline".into());
                    missing.push(p.0.clone());
                }
            }
            self.decide(
                &id,
                Decision::Abort,
                Some(AbortCause::VoteTimeout),
                format!("vote_timeout: no vote from {}", missing.join(", ")),
                out,
            );
        }
        resend.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, d, conns) in resend {
            for c in conns {
                send(out, c, Body::decision(id.clone(), d), d == Decision::Commit);
            }
        }
    }

    /// Record in `txn`'s timeline that its decision went to `to` again.
    fn note_decision_sent(&mut self, txn: &TxnId, to: &ParticipantId, d: Decision, resend: bool) {
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

    fn member_list(&self) -> String {
        let v: Vec<&str> = self.members.keys().map(|p| p.0.as_str()).collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }

    /// The `status_report` payload.
    pub fn status_report(&self) -> Value {
        let now = self.now;
        let participants: Vec<Value> = self
            .members
            .iter()
            .map(|(id, m)| {
                let age = now.saturating_sub(m.last_heartbeat_ms);
                json!({
                    "id": id,
                    "connected": m.conn.is_some(),
                    "alive": m.conn.is_some() && age <= self.opts.liveness_timeout_ms,
                    "last_heartbeat_age_ms": age,
                })
            })
            .collect();
        let awaiting_acks = self.active.len() - self.in_prepare;
        json!({
            "state": self.state.as_str(),
            "expected_participants": self.opts.expected_participants,
            "participants": participants,
            "transactions": {
                "committed": self.committed,
                "aborted": self.aborted,
                "in_flight": self.in_prepare,
                "awaiting_acks": awaiting_acks,
            },
        })
    }
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

/// The `--state` values `txn list` accepts.
pub const TXN_STATES: &[&str] = &["in-flight", "in-doubt", "committed", "aborted"];

/// The safety rules, checked before any decision leaves the core.
///
/// - COMMIT only when every participant voted commit.
/// - ABORT only when someone voted abort, or a vote is missing (deadline or
///   disconnect; the caller only decides abort for those reasons).
/// - A decision never changes.
pub fn check_decision(t: &Txn, decision: Decision) -> Result<(), String> {
    if let Some(prev) = t.decision {
        return Err(format!("already decided {prev}"));
    }
    match decision {
        Decision::Commit => {
            let all = t
                .participants
                .iter()
                .all(|p| t.votes.get(p) == Some(&Vote::Commit));
            if all {
                Ok(())
            } else {
                Err("commit needs a commit vote from every participant".into())
            }
        }
        Decision::Abort => {
            let all_commit = t
                .participants
                .iter()
                .all(|p| t.votes.get(p) == Some(&Vote::Commit));
            if all_commit {
                Err("every participant voted commit; abort is not allowed".into())
            } else {
                Ok(())
            }
        }
    }
}

/// Participant ids are short and printable so they can appear in logs, file
/// names and PostgreSQL gids.
pub fn valid_participant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

fn send(out: &mut Vec<Action>, conn: ConnId, body: Body, after_durable: bool) {
    out.push(Action::Send {
        conn,
        body,
        after_durable,
    });
}

fn reject(
    out: &mut Vec<Action>,
    conn: ConnId,
    code: ErrorCode,
    message: impl Into<String>,
    close: bool,
) {
    out.push(Action::Reject {
        conn,
        error: WireError::new(code, message),
        close,
    });
}

/// Refuse a submit: an `error` reply that carries the client's request id.
fn refuse(out: &mut Vec<Action>, w: &Waiter, code: ErrorCode, message: impl Into<String>) {
    send(
        out,
        w.conn,
        Body::Error {
            code: code.into(),
            message: message.into(),
            request_id: w.request_id,
        },
        false,
    );
}

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod tests;

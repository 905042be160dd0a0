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
//!
//! This file holds the core's state and the dispatch of events; each concern
//! has its own file, and every protocol decision is taken in one of them:
//!
//! - [`membership`]: registration, liveness, departures and removal;
//! - [`txn`]: transactions, votes, acknowledgements and the decision (the
//!   one place the safety rules are checked), recovery from the log;
//! - [`timers`]: vote deadlines, decision resends and queued submits;
//! - [`views`]: what operators read (status, transaction summary and
//!   detail), typed and built from the state, never changing it;
//! - [`invariants`]: what must hold after every event, asserted in debug
//!   builds.

#[cfg(debug_assertions)]
mod invariants;
mod membership;
mod timers;
mod txn;
mod views;

pub use membership::{valid_participant_id, Member};
pub use txn::{
    check_decision, valid_txn_id, DecisionRefused, Txn, TxnPhase, RESULTS_KEPT_MAX_BYTES,
    TXN_ID_MAX_LEN,
};
pub use views::{
    to_json, MemberStatus, OpenTxns, RemovalReport, StatusReport, TimelineEntry, TxnCounts,
    TxnDetail, TxnState, TxnSummary, TXN_STATES,
};

use super::message::SubmitRequest;
use super::message::{Body, ErrorCode, WireError};
use super::record::Action;
use super::stats::CoordinatorStats;
use super::types::{ConnId, Decision, Millis, ParticipantId, TxnId, Vote};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use txn::Waiter;

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

/// Cluster-level state of the coordinator. Serialised as [`Self::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
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

/// The coordinator core. See the module documentation.
#[derive(Debug)]
pub struct Coordinator {
    opts: CoordinatorOptions,
    state: ClusterState,
    members: BTreeMap<ParticipantId, Member>,
    /// Participants the cluster expects: `expected_participants`, less
    /// removals from the ready cluster (logged with each removal).
    expected: usize,
    /// Participants an operator removed (logged): refused with `removed`
    /// while membership is closed.
    removed: BTreeSet<ParticipantId>,
    /// Connections that said hello, and as whom.
    peers: HashMap<ConnId, Peer>,
    /// Transactions not yet ended (deciding, or waiting for acks). Ordered,
    /// so that the actions of a step come out in the same order on every
    /// run: a seeded simulation must replay exactly. Boxed, as in
    /// `history`: a transaction is large, and the map's nodes and the
    /// queue move their values on every insert and removal.
    active: BTreeMap<TxnId, Box<Txn>>,
    /// Recently ended transactions, oldest first, bounded by `history_limit`.
    history: VecDeque<Box<Txn>>,
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
    /// Events since the invariants were last checked (see
    /// [`invariants::due`]).
    #[cfg(debug_assertions)]
    events_unchecked: usize,
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
            expected: opts.expected_participants,
            opts,
            state,
            members: BTreeMap::new(),
            removed: BTreeSet::new(),
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
            #[cfg(debug_assertions)]
            events_unchecked: 0,
        }
    }

    /// Break this core on purpose (tests of the checkers only).
    #[cfg(feature = "fault-injection")]
    pub fn inject(&mut self, fault: super::fault::Fault) {
        self.fault = Some(fault);
    }

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

    pub fn counts(&self) -> (u64, u64, usize) {
        (self.committed, self.aborted, self.in_prepare)
    }

    /// Does the core know `id`, active or remembered? (Without searching
    /// its history.)
    pub fn knows(&self, id: &TxnId) -> bool {
        self.active.contains_key(id) || self.history_index.contains_key(id)
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

    /// Feed one event; returns the actions to perform, in order.
    ///
    /// In debug builds the invariants (`invariants.rs`) are asserted
    /// after every event (with more than 64 transactions active,
    /// after every so many events; see [`invariants::due`]).
    pub fn handle(&mut self, now: Millis, event: Event) -> Vec<Action> {
        #[cfg(debug_assertions)]
        let before = self.counters();
        self.now = now.max(self.now);
        let mut out = Vec::new();
        match event {
            Event::Message { conn, body } => self.on_message(conn, body, &mut out),
            Event::Disconnected { conn } => self.on_disconnect(conn, &mut out),
            Event::Tick => self.on_tick(&mut out),
            Event::Durable { forced } => self.on_forced_durable(forced),
        }
        #[cfg(debug_assertions)]
        {
            self.check_progress(&before);
            self.events_unchecked += 1;
            if invariants::due(self.events_unchecked, self.active.len()) {
                self.events_unchecked = 0;
                self.check_invariants();
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
                let report = views::to_json(&self.status_report());
                send(out, conn, Body::StatusReport(report), false);
            }
            (Some(Peer::Client), Body::Submit(req)) => self.on_submit(conn, req, out),
            (Some(Peer::Client), Body::ParticipantRemove { id, force }) => {
                self.on_remove(conn, id, force, out)
            }
            (Some(Peer::Participant(p)), Body::VoteCommit { txn, result }) => {
                self.on_commit_vote(conn, p, txn, result, out)
            }
            (Some(Peer::Participant(p)), Body::VoteAbort { txn, reason }) => {
                self.on_vote(conn, p, txn, Vote::Abort, reason, out)
            }
            (
                Some(Peer::Participant(p)),
                Body::Ack {
                    txn,
                    decision,
                    heuristic,
                },
            ) => self.on_ack(conn, p, txn, decision, heuristic, out),
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
mod tests;

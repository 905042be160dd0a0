//! What operators read of the coordinator: the status report, transaction
//! summaries (`txn list`) and details (`txn show`), and counts of open
//! transactions for metrics. Each view is a typed struct built from the
//! core's state (it never changes it) and serialised as the JSON that tools
//! and documentation read: a field added, renamed or dropped here changes
//! the operator interface, so the exact JSON is pinned by tests.
//!
//! The runtime adds its own figures (log statistics, connections) to the
//! status report; nothing here knows about them.

use super::txn::Txn;
use super::{ClusterState, Coordinator, TxnPhase};
use crate::protocol::heuristic::{Heuristic, HeuristicKind};
use crate::protocol::stats::{elapsed, AbortCause};
use crate::protocol::timeline::Step;
use crate::protocol::types::{Decision, Millis, ParticipantId, TxnId, Vote};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Open transactions by kind, with the age of the oldest of each (ms).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenTxns {
    pub in_flight: usize,
    pub in_flight_oldest_ms: u64,
    pub in_doubt: usize,
    pub in_doubt_oldest_ms: u64,
}

/// The `--state` values `txn list` accepts.
pub const TXN_STATES: &[&str] = &["in-flight", "in-doubt", "committed", "aborted", "heuristic"];

/// A transaction's state as operators see it: its protocol phase, unless a
/// participant reported a heuristic outcome, which no phase may hide (a
/// transaction so reported is never shown as a clean commit or abort).
/// Serialised as [`Self::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TxnState {
    PreparePhase,
    CommitPhase,
    Completed,
    Aborted,
    /// Some participant's part ended the other way from the decision.
    HeuristicMixed,
    /// Some participant cannot tell how its part ended (and none reported
    /// the other way).
    HeuristicHazard,
}

impl TxnState {
    pub fn as_str(self) -> &'static str {
        match self {
            TxnState::PreparePhase => "PREPARE_PHASE",
            TxnState::CommitPhase => "COMMIT_PHASE",
            TxnState::Completed => "COMPLETED",
            TxnState::Aborted => "ABORTED",
            TxnState::HeuristicMixed => "HEURISTIC_MIXED",
            TxnState::HeuristicHazard => "HEURISTIC_HAZARD",
        }
    }

    /// The state of a transaction in `phase` with the heuristic outcomes
    /// `heuristics`: mixed outranks hazard, either outranks the phase.
    pub fn of(phase: TxnPhase, heuristics: &BTreeMap<ParticipantId, Heuristic>) -> TxnState {
        let kinds = || heuristics.values().map(|h| h.kind);
        if kinds().any(|k| k == HeuristicKind::Mixed) {
            return TxnState::HeuristicMixed;
        }
        if kinds().any(|k| k == HeuristicKind::Hazard) {
            return TxnState::HeuristicHazard;
        }
        match phase {
            TxnPhase::PreparePhase => TxnState::PreparePhase,
            TxnPhase::CommitPhase => TxnState::CommitPhase,
            TxnPhase::Completed => TxnState::Completed,
            TxnPhase::Aborted => TxnState::Aborted,
        }
    }
}

/// The `status_report` payload: the cluster, its members and the
/// transaction counters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusReport {
    pub state: ClusterState,
    /// `expected_participants`, less participants an operator removed
    /// from the ready cluster.
    pub expected_participants: usize,
    /// Members that registered since the coordinator started (readiness
    /// counts these; members known only from the log have not).
    pub participants_registered: usize,
    /// Every member, by id (known from the log or registered).
    pub participants: Vec<MemberStatus>,
    pub transactions: TxnCounts,
}

/// One registered participant in the status report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemberStatus {
    pub id: ParticipantId,
    pub connected: bool,
    /// Connected and heard from within the liveness timeout.
    pub alive: bool,
    pub last_heartbeat_age_ms: u64,
}

/// Transaction counters of the status report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TxnCounts {
    /// Ended with a commit (every acknowledgement received).
    pub committed: u64,
    /// Ended with an abort.
    pub aborted: u64,
    /// Still voting.
    pub in_flight: usize,
    /// Decided, waiting for acknowledgements.
    pub awaiting_acks: usize,
}

/// The reply to an operator's removal: the status after it, naming the
/// participant removed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RemovalReport {
    #[serde(flatten)]
    pub status: StatusReport,
    pub removed: ParticipantId,
}

/// One transaction as `txn list` shows it (and the start of `txn show`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TxnSummary<'a> {
    pub transaction_id: &'a TxnId,
    pub state: TxnState,
    pub participants: &'a [ParticipantId],
    pub votes: &'a BTreeMap<ParticipantId, Vote>,
    pub decision: Option<Decision>,
    pub acks: &'a BTreeSet<ParticipantId>,
    pub reason: Option<&'a str>,
    pub age_ms: u64,
    pub retries: u32,
    pub recovered: bool,
    pub last_error: Option<&'a str>,
    /// Once decided: the participants that have not acknowledged yet.
    pub awaiting_acks_from: Vec<&'a ParticipantId>,
    /// The heuristic outcomes participants reported, by participant;
    /// absent when there are none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub heuristics: &'a BTreeMap<ParticipantId, Heuristic>,
}

/// One transaction in full, as `txn show` shows it: the summary,
/// per-participant errors, the phase times and the timeline, all in
/// milliseconds since the transaction started.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TxnDetail<'a> {
    #[serde(flatten)]
    pub summary: TxnSummary<'a>,
    pub errors: &'a BTreeMap<ParticipantId, String>,
    pub abort_cause: Option<&'static str>,
    pub decided_after_ms: Option<u64>,
    pub durable_after_ms: Option<u64>,
    pub ended_after_ms: Option<u64>,
    pub timeline: Vec<TimelineEntry<'a>>,
    /// Events left out of the timeline past its cap.
    pub timeline_dropped: u32,
    /// The read results, once the transaction has ended and while they
    /// are kept; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<&'a BTreeMap<ParticipantId, Value>>,
    /// Why the results are no longer kept, when they were dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results_dropped: Option<&'a str>,
}

/// A timeline event with its time since the transaction started.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineEntry<'a> {
    pub at_ms: u64,
    #[serde(flatten)]
    pub step: &'a Step,
}

/// A view as JSON, for the replies that carry JSON. Views hold strings,
/// numbers, lists, maps keyed by strings and JSON values only, which always
/// serialise; a failure would be a bug in a view's type.
pub fn to_json(view: &impl Serialize) -> Value {
    serde_json::to_value(view).expect("operator views serialise to JSON")
}

impl Txn {
    /// The transaction as `txn list` shows it, at `now`.
    pub fn summary(&self, now: Millis) -> TxnSummary<'_> {
        let awaiting_acks_from = match self.decision {
            Some(_) => self
                .participants
                .iter()
                .filter(|p| !self.acks.contains(*p))
                .collect(),
            None => Vec::new(),
        };
        TxnSummary {
            transaction_id: &self.id,
            state: TxnState::of(self.phase, &self.heuristics),
            participants: &self.participants,
            votes: &self.votes,
            decision: self.decision,
            acks: &self.acks,
            reason: self.reason.as_deref(),
            age_ms: now.saturating_sub(self.started_ms),
            retries: self.retries,
            recovered: self.recovered,
            last_error: self.last_error.as_deref(),
            awaiting_acks_from,
            heuristics: &self.heuristics,
        }
    }

    /// The transaction as `txn show` shows it, at `now`.
    pub fn detail(&self, now: Millis) -> TxnDetail<'_> {
        let since = |t: Option<Millis>| t.map(|t| elapsed(self.started_ms, t));
        let timeline = self
            .timeline
            .events()
            .iter()
            .map(|e| TimelineEntry {
                at_ms: elapsed(self.started_ms, e.at_ms),
                step: &e.step,
            })
            .collect();
        let ended = self.ended_ms.is_some();
        TxnDetail {
            summary: self.summary(now),
            errors: &self.errors,
            abort_cause: self.abort_cause.map(AbortCause::as_str),
            decided_after_ms: since(self.decided_ms),
            durable_after_ms: since(self.durable_ms),
            ended_after_ms: since(self.ended_ms),
            timeline,
            timeline_dropped: self.timeline.dropped(),
            results: Some(&self.results).filter(|r| ended && !r.is_empty()),
            results_dropped: self.results_dropped.as_deref(),
        }
    }

    /// Does the transaction match an operator's `--state` filter?
    /// `in-flight`: still voting; `in-doubt`: decided but not acknowledged
    /// by every participant; `committed` / `aborted`: by decision;
    /// `heuristic`: a participant reported a heuristic outcome.
    pub fn matches_state(&self, state: &str) -> bool {
        match state {
            "in-flight" => self.phase == TxnPhase::PreparePhase,
            "in-doubt" => self.decision.is_some() && self.ended_ms.is_none(),
            "committed" => self.decision == Some(Decision::Commit),
            "aborted" => self.decision == Some(Decision::Abort),
            "heuristic" => !self.heuristics.is_empty(),
            _ => false,
        }
    }
}

impl Coordinator {
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

    /// The `status_report` payload.
    pub fn status_report(&self) -> StatusReport {
        let now = self.now;
        let participants = self
            .members
            .iter()
            .map(|(id, m)| {
                let age = now.saturating_sub(m.last_heartbeat_ms);
                MemberStatus {
                    id: id.clone(),
                    connected: m.conn.is_some(),
                    alive: m.conn.is_some() && age <= self.opts.liveness_timeout_ms,
                    last_heartbeat_age_ms: age,
                }
            })
            .collect();
        StatusReport {
            state: self.state,
            expected_participants: self.expected,
            participants_registered: self.registered_count(),
            participants,
            transactions: TxnCounts {
                committed: self.committed,
                aborted: self.aborted,
                in_flight: self.in_prepare,
                awaiting_acks: self.active.len() - self.in_prepare,
            },
        }
    }
}

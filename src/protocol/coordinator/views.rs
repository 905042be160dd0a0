//! What operators read of the coordinator: the status report, transaction
//! summaries (`txn list`) and details (`txn show`), and counts of open
//! transactions for metrics. Built from the core's state; never changes it.

use super::txn::Txn;
use super::{Coordinator, TxnPhase};
use crate::protocol::stats::{elapsed, AbortCause};
use crate::protocol::types::{Decision, Millis};
use serde_json::{json, Value};

/// Open transactions by kind, with the age of the oldest of each (ms).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenTxns {
    pub in_flight: usize,
    pub in_flight_oldest_ms: u64,
    pub in_doubt: usize,
    pub in_doubt_oldest_ms: u64,
}

/// The `--state` values `txn list` accepts.
pub const TXN_STATES: &[&str] = &["in-flight", "in-doubt", "committed", "aborted"];

impl Txn {
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

//! What happened to one transaction at the coordinator, in order and with
//! times: the messages it sent and received, its decision, the forced log
//! write of a commit decision and when that write became durable.
//!
//! A timeline is plain data kept by the coordinator core next to the
//! transaction's protocol state. It never influences a decision: it exists
//! for operators (`twopc txn show --diagram`, `GET /transactions/{id}`).
//! Its length is capped so that a transaction that is re-sent its decision
//! for hours cannot grow without bound; events past the cap are counted,
//! not kept.

use super::heuristic::HeuristicKind;
use super::types::{Decision, Millis, ParticipantId, Vote};
use serde::{Deserialize, Serialize};

/// One thing that happened, as seen by the coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Step {
    /// A client's submit started the transaction.
    Submitted,
    /// The transaction was rebuilt from the log after a restart (a commit
    /// decision without an END record).
    Recovered,
    /// PREPARE sent to a participant.
    Prepare { to: ParticipantId },
    /// A vote arrived.
    Vote {
        from: ParticipantId,
        vote: Vote,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A vote that was refused: a repeat, or one that came after the
    /// decision (answered with the decision when it was a commit vote).
    LateVote { from: ParticipantId, vote: Vote },
    /// The decision was taken.
    Decided {
        decision: Decision,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The commit decision record was appended to the log, to be forced.
    LogWrite,
    /// The commit decision record is durable; the messages held for it left.
    LogDurable,
    /// COMMIT or ABORT sent to a participant; `resend` when it was sent
    /// before (no acknowledgement yet, a reconnect, or a query).
    Decision {
        to: ParticipantId,
        decision: Decision,
        #[serde(default)]
        resend: bool,
    },
    /// The outcome went to the waiting client.
    Outcome { decision: Decision },
    /// A participant acknowledged the decision.
    Ack { from: ParticipantId },
    /// A participant's ACK reported a heuristic outcome: the decision was
    /// not carried out as decided there.
    Heuristic {
        from: ParticipantId,
        kind: HeuristicKind,
    },
    /// An in-doubt participant asked for the decision.
    Query { from: ParticipantId },
    /// A participant's connection closed while the transaction needed it.
    Disconnected { participant: ParticipantId },
    /// Every participant acknowledged; the transaction ended.
    Ended,
}

/// A [`Step`] with the time it happened (milliseconds of the runtime's
/// monotonic clock).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    pub at_ms: Millis,
    #[serde(flatten)]
    pub step: Step,
}

/// The bounded, ordered record of one transaction.
///
/// Messages that may only leave once the commit decision is durable are
/// recorded when that happens ([`Timeline::log_durable`]), not when the core
/// asks for them, so the order of the timeline is the order on the wire.
#[derive(Clone, Default, PartialEq)]
pub struct Timeline {
    events: Vec<TimelineEvent>,
    /// Steps waiting for the decision record to be durable.
    held: Vec<Step>,
    /// True once nothing more waits for the log: after `log_durable`, or
    /// from the start for a transaction recovered from the log.
    durable: bool,
    /// Events not kept because the timeline was full.
    dropped: u32,
    /// Most events kept.
    max: usize,
}

impl Timeline {
    /// An empty timeline keeping at most `max` events.
    pub fn new(max: usize) -> Timeline {
        Timeline {
            max,
            ..Timeline::default()
        }
    }

    /// An empty timeline keeping at most `max` events, with room for
    /// `expected` of them (at most `max`) from the start: a transaction's
    /// timeline is kept for as long as the transaction is remembered, so
    /// room for what it will hold costs less, in time and in memory, than
    /// doubling its way there.
    pub fn with_room(max: usize, expected: usize) -> Timeline {
        Timeline {
            events: Vec::with_capacity(expected.min(max)),
            ..Timeline::new(max)
        }
    }

    /// Record `step` at `at`, unless the timeline is full.
    pub fn record(&mut self, at: Millis, step: Step) {
        if self.events.len() < self.max {
            self.events.push(TimelineEvent { at_ms: at, step });
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// Record a message sent with `after_durable`: at once when the
    /// decision record is already durable, otherwise when it becomes so.
    pub fn record_after_log(&mut self, at: Millis, step: Step) {
        if self.durable {
            self.record(at, step);
        } else if self.held.len() < self.max {
            self.held.push(step);
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// The decision record is durable: record that, then the held messages.
    /// Later calls change nothing.
    pub fn log_durable(&mut self, at: Millis) {
        if self.durable {
            return;
        }
        self.durable = true;
        self.record(at, Step::LogDurable);
        for step in std::mem::take(&mut self.held) {
            self.record(at, step);
        }
    }

    /// Mark the log as durable without recording it (a recovered
    /// transaction: its decision was durable before this process started).
    pub fn assume_durable(&mut self) {
        self.durable = true;
    }

    pub fn events(&self) -> &[TimelineEvent] {
        &self.events
    }

    /// Events left out because the cap was reached.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }
}

/// Compact: the model checker formats whole cores with `Debug` in every
/// state, and the timeline never influences behaviour.
impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Timeline({} events, {} held, {} dropped)",
            self.events.len(),
            self.held.len(),
            self.dropped
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str) -> ParticipantId {
        ParticipantId::from(id)
    }

    fn steps(t: &Timeline) -> Vec<(Millis, Step)> {
        t.events()
            .iter()
            .map(|e| (e.at_ms, e.step.clone()))
            .collect()
    }

    #[test]
    fn messages_held_for_the_log_are_recorded_when_it_is_durable() {
        let mut t = Timeline::new(16);
        t.record(0, Step::Submitted);
        t.record(1, Step::LogWrite);
        let commit = Step::Decision {
            to: p("p1"),
            decision: Decision::Commit,
            resend: false,
        };
        t.record_after_log(1, commit.clone());
        t.record(2, Step::Ack { from: p("p9") });
        t.log_durable(5);
        t.log_durable(7);
        assert_eq!(
            steps(&t),
            vec![
                (0, Step::Submitted),
                (1, Step::LogWrite),
                (2, Step::Ack { from: p("p9") }),
                (5, Step::LogDurable),
                (5, commit),
            ]
        );
    }

    #[test]
    fn after_the_log_is_durable_nothing_is_held() {
        let mut t = Timeline::new(16);
        t.assume_durable();
        t.record_after_log(
            3,
            Step::Outcome {
                decision: Decision::Commit,
            },
        );
        assert_eq!(
            steps(&t),
            vec![(
                3,
                Step::Outcome {
                    decision: Decision::Commit
                }
            )]
        );
    }

    #[test]
    fn the_cap_keeps_the_first_events_and_counts_the_rest() {
        let mut t = Timeline::new(2);
        for i in 0..5 {
            t.record(i, Step::Query { from: p("p1") });
        }
        t.record_after_log(9, Step::Ended);
        t.record_after_log(9, Step::Ended);
        t.record_after_log(9, Step::Ended);
        t.log_durable(10);
        assert_eq!(t.events().len(), 2);
        assert_eq!(t.dropped(), 3 + 1 + 3);
    }

    #[test]
    fn events_serialise_flat_with_an_event_tag() {
        let e = TimelineEvent {
            at_ms: 4,
            step: Step::Vote {
                from: p("p2"),
                vote: Vote::Abort,
                reason: Some("no stock".into()),
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"at_ms": 4, "event": "vote", "from": "p2", "vote": "abort", "reason": "no stock"})
        );
        let back: TimelineEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}

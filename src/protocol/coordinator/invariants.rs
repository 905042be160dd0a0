//! What must hold of the coordinator's state after every event, asserted
//! in debug builds (tests, the model checker, the simulator) after each
//! call of [`Coordinator::handle`]. A broken invariant is a bug in the core,
//! never bad input: whatever a peer sends, these hold. Release builds skip
//! the checks; they must never change what the core does.

use super::{Coordinator, Peer, TxnPhase};
use crate::protocol::types::{Decision, Vote};

/// Active transactions up to which the invariants are checked after every
/// event. The model checker, the simulator and the tests stay far below it.
pub(super) const CHECK_EVERY_EVENT_ACTIVE_MAX: usize = 64;

/// Whether the invariants are checked after this event, the
/// `events_unchecked`-th since the last check, with `active` transactions
/// active. A check walks every active transaction; above
/// [`CHECK_EVERY_EVENT_ACTIVE_MAX`] of them it is made after every
/// `active / CHECK_EVERY_EVENT_ACTIVE_MAX` events instead, so that a debug
/// build under load (thousands in flight) spends about as much per event
/// on checks as at the limit, instead of time growing with the square of
/// the load.
pub(super) fn due(events_unchecked: usize, active: usize) -> bool {
    events_unchecked >= active / CHECK_EVERY_EVENT_ACTIVE_MAX
}

/// The counters that only ever grow, taken before an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Counters {
    pub(super) committed: u64,
    pub(super) aborted: u64,
    pub(super) next_seq: u64,
    pub(super) forced_emitted: u64,
}

impl Coordinator {
    /// The counters to compare against after the next event.
    pub(super) fn counters(&self) -> Counters {
        Counters {
            committed: self.committed,
            aborted: self.aborted,
            next_seq: self.next_seq,
            forced_emitted: self.forced_emitted,
        }
    }

    /// No counter went down since `before`: ended transactions stay
    /// counted, transaction ids are never handed out twice, forced writes
    /// are numbered without reuse.
    pub(super) fn check_progress(&self, before: &Counters) {
        let now = self.counters();
        debug_assert!(
            now.committed >= before.committed && now.aborted >= before.aborted,
            "invariant: decision counters never decrease ({before:?} -> {now:?})"
        );
        debug_assert!(
            now.next_seq >= before.next_seq,
            "invariant: the transaction sequence never goes back ({before:?} -> {now:?})"
        );
        debug_assert!(
            now.forced_emitted >= before.forced_emitted,
            "invariant: forced writes are never un-numbered ({before:?} -> {now:?})"
        );
    }

    /// Everything that must hold of the state between two events.
    pub(super) fn check_invariants(&self) {
        self.check_transactions();
        self.check_membership();
        self.check_durability_queue();
    }

    fn check_transactions(&self) {
        let undecided = self
            .active
            .values()
            .filter(|t| t.decision.is_none())
            .count();
        debug_assert_eq!(
            self.in_prepare, undecided,
            "invariant: in_prepare counts the active transactions without a decision"
        );
        for (id, t) in &self.active {
            debug_assert_eq!(id, &t.id, "invariant: active transactions are keyed by id");
            debug_assert!(
                !self.history_index.contains_key(id),
                "invariant: transaction `{id}` is both active and ended"
            );
            debug_assert!(
                t.ended_ms.is_none(),
                "invariant: active transaction `{id}` has an end time"
            );
            let phase_fits = match (t.phase, t.decision) {
                (TxnPhase::PreparePhase, None) => true,
                (TxnPhase::CommitPhase, Some(Decision::Commit)) => true,
                (TxnPhase::Aborted, Some(Decision::Abort)) => true,
                (TxnPhase::PreparePhase | TxnPhase::CommitPhase | TxnPhase::Aborted, _) => false,
                (TxnPhase::Completed, _) => false,
            };
            debug_assert!(
                phase_fits,
                "invariant: the phase of `{id}` ({:?}) fits its decision ({:?})",
                t.phase, t.decision
            );
            debug_assert!(
                t.decision != Some(Decision::Commit)
                    || t.participants
                        .iter()
                        .all(|p| t.votes.get(p) == Some(&Vote::Commit)),
                "invariant: commit decision on `{id}` without a commit vote from every participant"
            );
            debug_assert!(
                t.votes
                    .keys()
                    .chain(t.acks.iter())
                    .all(|p| t.participants.contains(p)),
                "invariant: votes and acks of `{id}` come from its participants"
            );
        }
        debug_assert!(
            self.history_index.len() <= self.history.len(),
            "invariant: the history index names only remembered transactions"
        );
    }

    /// Every participant an active transaction still waits for is a
    /// member: one removed by an operator has been counted as acknowledged
    /// (with the removal as its error), and only a transaction recovered
    /// from the log may name participants that have not registered again
    /// yet. Connected members and the connections that said hello agree.
    fn check_membership(&self) {
        for t in self.active.values() {
            for p in &t.participants {
                debug_assert!(
                    self.members.contains_key(p) || t.acks.contains(p) || t.recovered,
                    "invariant: `{}` waits for `{p}`, which is neither a member nor removed",
                    t.id
                );
            }
        }
        for (id, m) in &self.members {
            if let Some(c) = m.conn {
                debug_assert!(
                    self.peers.get(&c) == Some(&Peer::Participant(id.clone())),
                    "invariant: member `{id}` is connected on {c:?}, which is not registered as it"
                );
            }
        }
    }

    /// Commit decisions waiting for durability are numbered in order, by
    /// numbers already handed out.
    fn check_durability_queue(&self) {
        let numbers: Vec<u64> = self.awaiting_durable.iter().map(|(n, _)| *n).collect();
        debug_assert!(
            numbers.windows(2).all(|w| w[0] < w[1])
                && numbers.last().is_none_or(|n| *n <= self.forced_emitted),
            "invariant: forced writes awaiting durability are in order and were emitted ({numbers:?}, {} emitted)",
            self.forced_emitted
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_follow_every_event_up_to_the_limit_then_every_few() {
        for active in [
            0,
            1,
            CHECK_EVERY_EVENT_ACTIVE_MAX,
            2 * CHECK_EVERY_EVENT_ACTIVE_MAX - 1,
        ] {
            assert!(due(1, active), "{active}");
        }
        let active = 10 * CHECK_EVERY_EVENT_ACTIVE_MAX;
        assert!(!due(9, active));
        assert!(due(10, active));
    }
}

//! Counters the coordinator core keeps about its own decisions, as plain
//! data, read by the runtime for `GET /metrics`. Phase latencies are not
//! here: the core's clock counts whole milliseconds, so the runtime
//! measures them in microseconds (`runtime::timing`).

use super::heuristic::HeuristicKind;
use super::types::Millis;

/// Why a transaction aborted, as a small fixed set (a metric label); the
/// transaction's `reason` holds the sentence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortCause {
    /// A participant voted abort.
    VoteAbort,
    /// A vote was still missing at the deadline.
    VoteTimeout,
    /// A participant's connection closed before it voted.
    ParticipantDisconnected,
    /// A participant was not connected, or missed its heartbeats, before
    /// it voted.
    ParticipantUnavailable,
}

impl AbortCause {
    pub const ALL: [AbortCause; 4] = [
        AbortCause::VoteAbort,
        AbortCause::VoteTimeout,
        AbortCause::ParticipantDisconnected,
        AbortCause::ParticipantUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AbortCause::VoteAbort => "vote_abort",
            AbortCause::VoteTimeout => "vote_timeout",
            AbortCause::ParticipantDisconnected => "participant_disconnected",
            AbortCause::ParticipantUnavailable => "participant_unavailable",
        }
    }

    fn index(self) -> usize {
        match self {
            AbortCause::VoteAbort => 0,
            AbortCause::VoteTimeout => 1,
            AbortCause::ParticipantDisconnected => 2,
            AbortCause::ParticipantUnavailable => 3,
        }
    }
}

/// What the coordinator core counts. Decisions are counted when taken (the
/// status report's `committed`/`aborted` count ended transactions).
#[derive(Clone, Default, PartialEq)]
pub struct CoordinatorStats {
    pub committed: u64,
    aborted: [u64; 4],
    /// Decisions re-sent to participants that had not acknowledged.
    pub resends: u64,
    /// Heuristic outcomes reported in ACKs, by kind (once per transaction
    /// and participant).
    heuristic: [u64; 2],
}

impl CoordinatorStats {
    pub fn count_abort(&mut self, cause: AbortCause) {
        self.aborted[cause.index()] += 1;
    }

    pub fn aborted(&self, cause: AbortCause) -> u64 {
        self.aborted[cause.index()]
    }

    pub fn aborted_total(&self) -> u64 {
        self.aborted.iter().sum()
    }

    pub fn count_heuristic(&mut self, kind: HeuristicKind) {
        self.heuristic[heuristic_index(kind)] += 1;
    }

    /// Heuristic outcomes of `kind` reported so far.
    pub fn heuristic(&self, kind: HeuristicKind) -> u64 {
        self.heuristic[heuristic_index(kind)]
    }
}

fn heuristic_index(kind: HeuristicKind) -> usize {
    match kind {
        HeuristicKind::Mixed => 0,
        HeuristicKind::Hazard => 1,
    }
}

impl std::fmt::Debug for CoordinatorStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CoordinatorStats(committed={}, aborted={:?}, resends={})",
            self.committed, self.aborted, self.resends
        )
    }
}

/// Milliseconds from `from` to `to`, zero if the clock did not move.
pub fn elapsed(from: Millis, to: Millis) -> u64 {
    to.saturating_sub(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aborts_are_counted_by_cause() {
        let mut s = CoordinatorStats::default();
        s.count_abort(AbortCause::VoteTimeout);
        s.count_abort(AbortCause::VoteTimeout);
        s.count_abort(AbortCause::VoteAbort);
        assert_eq!(s.aborted(AbortCause::VoteTimeout), 2);
        assert_eq!(s.aborted(AbortCause::ParticipantDisconnected), 0);
        assert_eq!(s.aborted_total(), 3);
    }

    #[test]
    fn heuristic_outcomes_are_counted_by_kind() {
        let mut s = CoordinatorStats::default();
        s.count_heuristic(HeuristicKind::Mixed);
        s.count_heuristic(HeuristicKind::Mixed);
        s.count_heuristic(HeuristicKind::Hazard);
        assert_eq!(
            HeuristicKind::ALL.map(|k| s.heuristic(k)),
            [2, 1],
            "in the order of HeuristicKind::ALL"
        );
    }
}

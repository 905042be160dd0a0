//! Counters and latency histograms the coordinator core keeps about its own
//! decisions, as plain data. The core owns every timestamp of a transaction,
//! so it is the one place that can measure its phases; the runtime only
//! reads these figures (for `GET /metrics`).

use super::heuristic::HeuristicKind;
use super::types::Millis;

/// Upper bounds (milliseconds, inclusive) of the phase latency buckets.
/// The core's clock has millisecond resolution, so the first bucket holds
/// everything up to one millisecond.
pub const PHASE_BOUNDS_MS: &[u64] = &[
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
];

/// A cumulative-friendly histogram with fixed bounds.
#[derive(Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [u64],
    /// Observations per bucket; the last one is above every bound.
    counts: Vec<u64>,
    sum: u64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: u64) {
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i] += 1;
        self.sum = self.sum.saturating_add(value);
        self.count += 1;
    }

    pub fn bounds(&self) -> &'static [u64] {
        self.bounds
    }

    /// Observations per bucket (not cumulative); one more than `bounds`.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn sum(&self) -> u64 {
        self.sum
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram(n={}, sum={})", self.count, self.sum)
    }
}

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
#[derive(Clone, PartialEq)]
pub struct CoordinatorStats {
    pub committed: u64,
    aborted: [u64; 4],
    /// Decisions re-sent to participants that had not acknowledged.
    pub resends: u64,
    /// Heuristic outcomes reported in ACKs, by kind (once per transaction
    /// and participant).
    heuristic: [u64; 2],
    /// Start of the transaction to its decision.
    pub prepare_ms: Histogram,
    /// Commit decision to its log record being durable.
    pub decision_durable_ms: Histogram,
    /// Decision to the last acknowledgement (the transaction ended).
    pub completion_ms: Histogram,
}

impl Default for CoordinatorStats {
    fn default() -> Self {
        CoordinatorStats {
            committed: 0,
            aborted: [0; 4],
            resends: 0,
            heuristic: [0; 2],
            prepare_ms: Histogram::new(PHASE_BOUNDS_MS),
            decision_durable_ms: Histogram::new(PHASE_BOUNDS_MS),
            completion_ms: Histogram::new(PHASE_BOUNDS_MS),
        }
    }
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
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        let mut h = Histogram::new(&[1, 10]);
        for v in [0, 1, 2, 10, 11, 500] {
            h.observe(v);
        }
        assert_eq!(h.counts(), &[2, 2, 2]);
        assert_eq!(h.count(), 6);
        assert_eq!(h.sum(), 524);
    }

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

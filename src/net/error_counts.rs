//! Counts of `error` frames sent to peers, by code: the connection tasks
//! refuse malformed frames themselves and the event loop refuses requests;
//! both count here, and the metrics page renders the snapshot.

use crate::protocol::{ErrorCode, WireCode};
use std::sync::atomic::{AtomicU64, Ordering};

/// `error` frames sent to peers, by code. Shared by the event loop and the
/// connection tasks (which refuse malformed frames themselves).
#[derive(Debug, Default)]
pub struct ErrorCounts {
    counts: [AtomicU64; ErrorCode::ALL.len()],
}

impl ErrorCounts {
    /// Count one `error` frame sent with `code`.
    pub fn count(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count an error as carried in an `error` frame; a code this build
    /// does not know has no counter.
    pub fn count_wire(&self, code: &WireCode) {
        if let Some(c) = code.known() {
            self.count(c);
        }
    }

    /// Every code with its count, in the order of `ErrorCode::ALL`.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        ErrorCode::ALL
            .iter()
            .zip(self.counts.iter())
            .map(|(c, n)| (c.as_str(), n.load(Ordering::Relaxed)))
            .collect()
    }
}

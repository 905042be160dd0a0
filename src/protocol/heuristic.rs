//! Heuristic outcomes: a participant that could not carry out the decision
//! as decided, because its part of the transaction was finished some other
//! way (by hand, by the database, or lost), says so in its ACK; both logs
//! keep it and the coordinator's views show it.
//!
//! Two kinds, as XA resource managers report them (`HeuristicMixed`,
//! `HeuristicHazard`):
//! - [`HeuristicKind::Mixed`]: this participant's part ended the other way
//!   from the decision (rolled back when the decision was commit, or
//!   committed when it was abort). The other participants applied the
//!   decision, so the transaction as a whole is committed at some and
//!   rolled back at others.
//! - [`HeuristicKind::Hazard`]: this participant cannot tell how its part
//!   ended (its prepared state is gone and nothing says what became of
//!   it). The data may or may not reflect the decision.
//!
//! Plain data, no IO.

use super::bound;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest heuristic detail kept, sent or logged, in bytes: room for what
/// the resource found and an operator's reason.
pub const HEURISTIC_DETAIL_MAX_BYTES: usize = 512;

/// What a participant knows about how its part ended. See the module
/// documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeuristicKind {
    Mixed,
    Hazard,
}

impl HeuristicKind {
    /// Every kind, in a fixed order (metrics label by it).
    pub const ALL: [HeuristicKind; 2] = [HeuristicKind::Mixed, HeuristicKind::Hazard];

    /// The wire and label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HeuristicKind::Mixed => "mixed",
            HeuristicKind::Hazard => "hazard",
        }
    }
}

impl fmt::Display for HeuristicKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A heuristic outcome at one participant: its kind, and what was found,
/// in words an operator can act on (which database transaction, what it
/// holds, who finished it by hand and why).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heuristic {
    pub kind: HeuristicKind,
    pub detail: String,
}

impl Heuristic {
    /// A heuristic outcome with its detail cut to
    /// [`HEURISTIC_DETAIL_MAX_BYTES`].
    pub fn new(kind: HeuristicKind, detail: impl Into<String>) -> Heuristic {
        Heuristic {
            kind,
            detail: bound::truncate(&detail.into(), HEURISTIC_DETAIL_MAX_BYTES),
        }
    }

    /// The same outcome with its detail cut to the bound: for one that
    /// came from a peer or a log, which may not have followed it.
    pub fn bounded(self) -> Heuristic {
        Heuristic::new(self.kind, self.detail)
    }
}

impl fmt::Display for Heuristic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "heuristic {}: {}", self.kind, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_spelt_as_on_the_wire() {
        for k in HeuristicKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        let h: Heuristic = serde_json::from_str(r#"{"kind": "hazard", "detail": "gone"}"#).unwrap();
        assert_eq!(h, Heuristic::new(HeuristicKind::Hazard, "gone"));
        assert!(serde_json::from_str::<Heuristic>(r#"{"kind": "commit", "detail": ""}"#).is_err());
    }

    #[test]
    fn details_are_cut_to_the_bound() {
        let h = Heuristic::new(HeuristicKind::Mixed, "x".repeat(10_000));
        assert!(
            h.detail.len() <= HEURISTIC_DETAIL_MAX_BYTES,
            "{}",
            h.detail.len()
        );
        assert!(h.detail.ends_with(bound::CUT_MARK));
        let from_peer = Heuristic {
            kind: HeuristicKind::Mixed,
            detail: "y".repeat(10_000),
        };
        assert!(from_peer.bounded().detail.len() <= HEURISTIC_DETAIL_MAX_BYTES);
    }
}

//! Deliberate protocol bugs, to show that the checkers catch them.
//!
//! Compiled only with the `fault-injection` feature, which the test suite
//! switches on and no build of the binaries does. A core has no fault until
//! one is injected (`Coordinator::inject` / `Participant::inject`); each
//! fault changes one decision of the core in a way that breaks a safety
//! rule, and nothing else.

/// One known way to break a core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Coordinator: COMMIT goes to the participants without waiting for the
    /// decision record to be durable (`after_durable: false`). A crash before
    /// the sync forgets the decision, and recovery presumes abort while a
    /// participant may already have committed.
    CommitBeforeDecisionDurable,
    /// Participant: VOTE_COMMIT leaves without waiting for the `Prepared`
    /// record to be durable. A crash before the sync forgets the vote and
    /// the resource's prepared work, yet the coordinator may commit on it.
    VoteBeforePreparedDurable,
    /// Participant: a COMMIT for one transaction also commits every other
    /// transaction it holds prepared (in doubt).
    CommitEveryPrepared,
}

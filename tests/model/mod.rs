//! Model checking support for `tests/model_check.rs`: a breadth-first
//! explorer, the real cores in a modelled world, Lamport's `TwoPhase`, and a
//! tiny model with a stuck state for checking the liveness search.

pub mod explore;
pub mod inline;
pub mod quotient;
pub mod stuck;
pub mod system;
pub mod two_phase;

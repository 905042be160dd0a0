//! Model checking support for `tests/model_check.rs`: a breadth-first
//! explorer, the real cores in a modelled world, and Lamport's `TwoPhase`.

pub mod explore;
pub mod inline;
pub mod system;
pub mod two_phase;

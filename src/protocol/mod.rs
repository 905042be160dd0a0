//! The pure protocol core: message model, durable records, and the
//! coordinator and participant state machines with their safety rules.
//!
//! Nothing in this module performs IO, spawns tasks or reads a clock. Time is
//! passed in as [`types::Millis`]; effects come out as [`record::Action`]s.

pub mod bound;
pub mod coordinator;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod heuristic;
pub mod message;
pub mod page;
pub mod participant;
pub mod record;
pub mod stats;
pub mod timeline;
pub mod types;

pub use heuristic::{Heuristic, HeuristicKind};
pub use message::{
    not_leader_address, not_leader_message, plausible_addr, Body, ErrorCode, Message, Outcome,
    Role, SubmitRequest, WireCode, WireError,
};
pub use record::{Action, Record};
pub use types::{ConnId, Decision, Millis, ParticipantId, TxnId, Vote, PROTOCOL_VERSION};

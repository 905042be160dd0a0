//! twopc: a two-phase commit coordinator and participants over framed TCP.
//!
//! - [`protocol`]: the pure state machines and the message model;
//! - [`net`]: frame codec and connections;
//! - [`wal`]: the write-ahead log with group commit;
//! - [`runtime`]: the tokio drivers that execute the cores' actions;
//! - [`resource`]: what a participant votes with;
//! - [`config`]: configuration (defaults < YAML < environment < flags);
//! - [`security`]: shared-secret authentication and TLS for every peer;
//! - [`client`]: the `twopc` client and operator commands;
//! - [`crash`]: crash points for fault injection (`TWOPC_CRASH_AT`);
//! - [`log_writer`]: text logs with control characters escaped.

pub mod cli;
pub mod client;
pub mod config;
pub mod crash;
pub mod log_writer;
pub mod net;
pub mod protocol;
pub mod resource;
pub mod runtime;
pub mod security;
pub mod wal;

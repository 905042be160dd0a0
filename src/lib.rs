//! twopc: a two-phase commit coordinator and participants over framed TCP,
//! with a write-ahead log and crash recovery, embeddable in an application.
//!
//! # The API
//!
//! Everything an application needs is at the crate root:
//!
//! - a coordinator: [`CoordinatorServer`], configured by
//!   [`CoordinatorConfig`], failing to start with [`CoordinatorStartError`];
//! - a participant: [`ParticipantNode`], configured by
//!   [`ParticipantConfig`], failing to start with [`ParticipantStartError`];
//!   [`ParticipantNode::registered`] says when it has joined the coordinator;
//! - what a participant votes with: the [`Resource`] trait, with
//!   [`PrepareResult`], [`Prepared`], [`ResourceError`] and the log
//!   [`Record`]s it recovers from, failing to with [`RecoverError`]; [`NullResource`] votes commit and keeps
//!   nothing;
//! - a client: [`Client`] and [`ClientError`], with [`ClientSecurity`]
//!   ([`Secret`], [`TlsClient`], [`TlsError`]) when the servers require a
//!   shared secret or TLS;
//! - the vocabulary: [`TxnId`], [`ParticipantId`], [`Decision`], [`Vote`],
//!   [`SubmitRequest`], [`Outcome`];
//! - shutdown and failure: both servers' `run()` stop when their
//!   [`CancellationToken`] is cancelled and return `Err(`[`LogFailure`]`)`
//!   when the write-ahead log failed; then the application must stop using
//!   the node and start it again, which recovers from the durable log.
//!
//! The settings those configurations are made of (log level, write-ahead
//! log, kv and PostgreSQL sections) are in [`config`].
//!
//! The library prints nothing and never exits the process; the one
//! exception is [`crash`]'s fault injection, armed only by `TWOPC_CRASH_AT`.
//!
//! # Modules that are not the API
//!
//! `protocol` (the pure state machines and the wire model), `wal` (the
//! write-ahead log), `net` (framing and connections), `runtime` (the tokio
//! drivers), `resource` (the vote preference, the kv store, PostgreSQL),
//! `security` (handshakes, TLS, HTTP signatures), `client` (the client's
//! module) and `crash` (crash points) stay `pub` but hidden from the
//! documentation: the `twopc` binaries and the model, simulation and
//! end-to-end tests reach into them. They may change without notice; the
//! items re-exported here are the stable surface. `log_writer` (escaped text
//! logs) is private to the crate.

#[doc(hidden)]
pub mod client;
pub mod config;
#[doc(hidden)]
pub mod crash;
pub(crate) mod log_writer;
#[doc(hidden)]
pub mod net;
#[doc(hidden)]
pub mod protocol;
#[doc(hidden)]
pub mod replica;
#[doc(hidden)]
pub mod resource;
#[doc(hidden)]
pub mod runtime;
#[doc(hidden)]
pub mod security;
#[doc(hidden)]
pub mod sim;
#[doc(hidden)]
pub mod wal;

pub use client::{Client, ClientError, SubmitReply};
pub use config::{CoordinatorConfig, ParticipantConfig};
pub use futures::future::BoxFuture;
pub use protocol::participant::Prepared;
pub use protocol::{
    Decision, Heuristic, HeuristicKind, Outcome, ParticipantId, Record, SubmitRequest, TxnId, Vote,
};
pub use resource::{
    FinishResult, NullResource, PrepareResult, RecoverError, Resource, ResourceError,
};
pub use runtime::coordinator::{CoordinatorServer, StartError as CoordinatorStartError};
pub use runtime::participant::{ParticipantNode, StartError as ParticipantStartError};
pub use security::auth::Secret;
pub use security::tls::{TlsClient, TlsError};
pub use security::ClientSecurity;
pub use tokio_util::sync::CancellationToken;
pub use wal::LogFailure;

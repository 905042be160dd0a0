//! Connections: the frame codec, a connection's reader (with the handshake
//! gate) and writer, the listener with its connection slots, the connector
//! with its backoff, and the stream type for plain TCP and TLS. It moves
//! frames and enforces who may speak and how much; it takes no protocol
//! decision and knows nothing of the cores, the log or the configuration
//! (what it needs comes in as plain specs).

pub(crate) mod backoff;
pub mod codec;
pub(crate) mod connection;
pub(crate) mod connector;
pub(crate) mod error_counts;
pub(crate) mod listener;
pub mod ports;
pub(crate) mod slots;
pub(crate) mod stream;
pub(crate) mod writer;

pub(crate) use backoff::Backoff;
pub use codec::{codec, encode, frame, read_next, wall_clock_secs, Inbound};
pub(crate) use connection::ConnEvent;
pub(crate) use error_counts::ErrorCounts;
pub(crate) use writer::Outgoing;

//! Connections: the frame codec, a connection's reader (with the handshake
//! gate) and writer, the listener with its connection slots, the connector
//! with its backoff, and the stream type for plain TCP and TLS. It moves
//! frames and enforces who may speak and how much; it takes no protocol
//! decision and knows nothing of the cores, the log or the configuration
//! (what it needs comes in as plain specs).

pub mod backoff;
pub mod codec;
pub mod connection;
pub mod connector;
pub mod error_counts;
pub mod listener;
pub mod slots;
pub mod stream;
pub mod writer;

pub use backoff::Backoff;
pub use codec::{codec, encode, frame, read_next, wall_clock_secs, Inbound};
pub use connection::{spawn_connection, ConnEvent, ConnSpec, Side};
pub use error_counts::ErrorCounts;
pub use writer::{write_loop, Outgoing, SendLimit};

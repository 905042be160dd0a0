//! The only place where the protocol cores meet tokio: connections, timers,
//! the write-ahead log, and execution of the cores' actions in order
//! (persist → sync → send).

pub mod coordinator;
pub mod crash;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod participant;

use crate::net::{self, Inbound, Outgoing};
use crate::protocol::{Body, ConnId, Millis, WireError};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

/// Monotonic milliseconds since the process started; the only clock the
/// cores see.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }
    pub fn now(&self) -> Millis {
        self.0.elapsed().as_millis() as Millis
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::start()
    }
}

/// Frames queued for one connection's writer before it counts as stuck.
pub const CONN_QUEUE_FRAMES: usize = 4096;

/// What a connection's reader reports to the loop that owns the core.
#[derive(Debug)]
pub enum ConnEvent {
    Opened {
        conn: ConnId,
        tx: mpsc::Sender<Outgoing>,
        peer: String,
    },
    Message {
        conn: ConnId,
        body: Body,
    },
    Closed {
        conn: ConnId,
    },
}

/// How to run one connection.
pub struct ConnSpec {
    pub conn: ConnId,
    /// Peer address, for logs.
    pub peer: String,
    pub max_frame_bytes: usize,
    /// A connection that sends nothing for this long is closed.
    pub first_frame_timeout: std::time::Duration,
    /// Connection slot, released when the connection ends.
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Where refused frames are counted (the coordinator's metrics).
    pub errors: Option<std::sync::Arc<metrics::ErrorCounts>>,
}

/// Split a stream into a writer task and a reader task that forwards
/// messages to `events`. Frames that are not valid messages are answered
/// with an `error` frame right here and never reach the core; a broken
/// stream is closed. `first_frame_timeout` closes connections that never
/// say anything.
pub fn spawn_connection<S>(
    stream: S,
    spec: ConnSpec,
    events: mpsc::Sender<ConnEvent>,
    tracker: &tokio_util::task::TaskTracker,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let ConnSpec {
        conn,
        peer,
        max_frame_bytes,
        first_frame_timeout,
        permit,
        errors,
    } = spec;
    let count = move |code: crate::protocol::ErrorCode| {
        if let Some(e) = &errors {
            e.count(code);
        }
    };
    let (rd, wr) = tokio::io::split(stream);
    let mut reader = FramedRead::new(rd, net::codec(max_frame_bytes));
    let writer = FramedWrite::new(wr, net::codec(max_frame_bytes));
    let (tx, rx) = mpsc::channel(CONN_QUEUE_FRAMES);
    tracker.spawn(net::write_loop(writer, rx));
    tracker.spawn(async move {
        // Held for the life of the connection: frees a connection slot.
        let _permit = permit;
        if events
            .send(ConnEvent::Opened {
                conn,
                tx: tx.clone(),
                peer: peer.clone(),
            })
            .await
            .is_err()
        {
            return;
        }
        // Until the first well-formed message, the connection must make
        // progress within the handshake timeout (garbage does not count).
        let handshake_deadline = tokio::time::Instant::now() + first_frame_timeout;
        let mut greeted = false;
        loop {
            let next = if greeted {
                net::read_next(&mut reader, max_frame_bytes).await
            } else {
                match tokio::time::timeout_at(handshake_deadline, net::read_next(&mut reader, max_frame_bytes)).await {
                    Ok(n) => n,
                    Err(_) => {
                        tracing::warn!(%peer, "no valid message within the handshake timeout; closing");
                        count(crate::protocol::ErrorCode::HelloRequired);
                        let err = WireError::new(
                            crate::protocol::ErrorCode::HelloRequired,
                            "no hello within the handshake timeout; closing",
                        );
                        let _ = tx.try_send(Outgoing::Frame(net::encode(Body::error(&err))));
                        let _ = tx.try_send(Outgoing::Close);
                        break;
                    }
                }
            };
            if matches!(next, Some(Inbound::Message(_))) {
                greeted = true;
            }
            match next {
                None => break,
                Some(Inbound::Message(body)) => {
                    if let Some(txn) = body.txn() {
                        tracing::debug!(%peer, transaction_id = %txn, message_type = body.message_type(), "received");
                    }
                    if events.send(ConnEvent::Message { conn, body }).await.is_err() {
                        break;
                    }
                }
                Some(Inbound::Invalid(err)) => {
                    tracing::warn!(%peer, code = err.code.as_str(), "refused frame: {}", err.message);
                    count(err.code);
                    if tx.try_send(Outgoing::Frame(net::encode(Body::error(&err)))).is_err() {
                        break;
                    }
                }
                Some(Inbound::Broken(err)) => {
                    tracing::warn!(%peer, code = err.code.as_str(), "closing connection: {}", err.message);
                    count(err.code);
                    let _ = tx.try_send(Outgoing::Frame(net::encode(Body::error(&err))));
                    let _ = tx.try_send(Outgoing::Close);
                    break;
                }
            }
        }
        let _ = events.send(ConnEvent::Closed { conn }).await;
    });
}

/// Open a process's write-ahead log, saying loudly when fsync is off and
/// what a cut torn tail was.
pub fn open_log(
    dir: &std::path::Path,
    cfg: &crate::config::WalConfig,
) -> Result<crate::wal::Opened, crate::wal::WalError> {
    let opts = crate::wal::WalOptions {
        segment_max_bytes: cfg.segment_max_bytes,
        unsafe_no_fsync: cfg.unsafe_no_fsync,
    };
    if opts.unsafe_no_fsync {
        tracing::warn!("!!! wal.unsafe_no_fsync is ON: votes and decisions are NOT durable; a machine crash can lose or split transactions. Use for benchmarks only. !!!");
    }
    let opened = crate::wal::Wal::open(dir, opts)?;
    if let Some(d) = &opened.torn_tail {
        tracing::warn!(
            file = %d.file.display(),
            offset = d.offset,
            "cut a torn record at the end of the log ({}); it was never acknowledged",
            d.why
        );
    }
    Ok(opened)
}

/// Log an `Alert` action from a core.
pub fn alert(txn: Option<&crate::protocol::TxnId>, message: &str) {
    match txn {
        Some(t) => tracing::error!(transaction_id = %t, "{message}"),
        None => tracing::error!("{message}"),
    }
}

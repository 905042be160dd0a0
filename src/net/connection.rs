//! One connection, from either side: a writer task and a reader task
//! with the handshake gate. The reader answers frames that are not valid
//! messages itself, runs authentication (when on) and the first-message
//! rules, and forwards only what passed to the loop that owns the core as
//! [`ConnEvent`]s. No protocol decision is taken here beyond who may speak.

use super::codec::{self, Inbound};
use super::error_counts::ErrorCounts;
use super::listener::SlotTicket;
use super::writer::{self, Outgoing, SendLimit};
use crate::protocol::{Body, ConnId, ErrorCode, WireError};
use crate::security::auth::{self, PeerHandshake, PeerStep, ServerHandshake, ServerStep};
use crate::security::ServerSecurity;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Frames queued for one connection's writer before it counts as stuck.
/// Messages held for the log are handed over all at once when it syncs:
/// up to one per transaction in flight for one peer (a participant's votes,
/// the coordinator's decisions to one participant), so this must exceed
/// the largest `max_in_flight` in use, or a burst of them closes a healthy
/// connection (seen at 10,000 in flight with 4096). The queue takes memory
/// only for what it holds; a peer that does not read is caught by the byte
/// budget (`send_buffer_max_bytes`) as the writer takes frames.
pub const CONN_QUEUE_FRAMES: usize = 65_536;

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
    /// An operator query (`status`, `txn_list`, `txn_show`) after the
    /// handshake. The connection reads no further once it has
    /// `query_in_flight_max` of them unanswered: `permit` is one of them,
    /// released when the query is answered (or dropped).
    Query {
        conn: ConnId,
        body: Body,
        permit: tokio::sync::OwnedSemaphorePermit,
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
    /// Until the handshake is over (the first valid message, and
    /// authentication when it is on), the connection must make progress
    /// within this time or it is closed.
    pub first_frame_timeout: std::time::Duration,
    /// Connection slot (accepted connections), released when the
    /// connection ends; it may be evicted during the handshake.
    pub slot: Option<SlotTicket>,
    /// Bytes queued for the writer before the peer counts as not reading
    /// and is disconnected.
    pub send_buffer_max_bytes: usize,
    /// Operator queries in flight before the reader stops reading; 0 for
    /// no limit (they are then plain messages).
    pub query_in_flight_max: usize,
    /// Where refused frames are counted (the coordinator's metrics).
    pub errors: Option<Arc<ErrorCounts>>,
    /// Which side of the handshake this process is on.
    pub side: Side,
}

/// The side of a connection, with what it needs to authenticate.
pub enum Side {
    /// We accepted the connection; with a secret, the peer must prove it
    /// knows it before its hello reaches the core.
    Server(Arc<ServerSecurity>),
    /// We opened the connection and send hello; with a handshake, we
    /// answer the server's challenge and check its proof.
    Client(Option<PeerHandshake>),
}

/// Where a connection's handshake stands.
enum Gate {
    /// Authentication runs (server side).
    Server(ServerHandshake, Arc<ServerSecurity>),
    /// Authentication runs (client side).
    Client(PeerHandshake),
    /// Waiting for the first valid message, no authentication.
    FirstMessage { server: bool },
    /// Handshake over: messages flow to the core.
    Open,
}

/// Split a stream into a writer task and a reader task that forwards
/// messages to `events`. Frames that are not valid messages are answered
/// with an `error` frame right here and never reach the core; a broken
/// stream is closed. Authentication (when on) runs here too, so the core
/// only ever sees the hello of an authenticated peer. `first_frame_timeout`
/// closes connections that never complete the handshake.
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
        slot,
        errors,
        side,
        send_buffer_max_bytes,
        query_in_flight_max,
    } = spec;
    let count = move |code: ErrorCode| {
        if let Some(e) = &errors {
            e.count(code);
        }
    };
    let mut gate = match side {
        Side::Server(sec) => match &sec.secret {
            Some(k) => Gate::Server(
                ServerHandshake::new(k.clone(), sec.port.clone(), auth::fresh_nonce()),
                sec,
            ),
            None => Gate::FirstMessage { server: true },
        },
        Side::Client(Some(hs)) => Gate::Client(hs),
        Side::Client(None) => Gate::FirstMessage { server: false },
    };
    let (mut reader, writer) = codec::split(stream, max_frame_bytes);
    let (tx, rx) = mpsc::channel(CONN_QUEUE_FRAMES);
    // Cancelled by the writer when the peer does not read: the reader stops
    // too, so the socket closes and the slot is freed.
    let abort = tokio_util::sync::CancellationToken::new();
    // Cancelled when the reader ends, however it ends: a writer that has
    // closed our side waits for it (the peer's close) only so long.
    let reader_done = tokio_util::sync::CancellationToken::new();
    tracker.spawn(writer::write_loop(
        writer,
        rx,
        SendLimit {
            max_bytes: send_buffer_max_bytes,
            max_frame_bytes,
            peer: peer.clone(),
            close_linger: first_frame_timeout,
            reader_done: reader_done.clone(),
        },
        abort.clone(),
    ));
    let queries = (query_in_flight_max > 0)
        .then(|| Arc::new(tokio::sync::Semaphore::new(query_in_flight_max)));
    tracker.spawn(async move {
        let _reader_done = reader_done.drop_guard();
        // Held for the life of the connection: frees a connection slot.
        let slot = slot;
        let evicted = slot.as_ref().map(|s| s.evicted.clone()).unwrap_or_default();
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
        let send_error_and_close = |err: &WireError| {
            let _ = tx.try_send(Outgoing::Frame(codec::encode(Body::error(err))));
            let _ = tx.try_send(Outgoing::Close);
        };
        let handshake_deadline = tokio::time::Instant::now() + first_frame_timeout;
        // Who the peer proved to be (with authentication on); what it may
        // send depends on it.
        let mut authenticated: Option<auth::Identity> = None;
        loop {
            let next = if matches!(gate, Gate::Open) {
                crate::sim::select! {
                    _ = abort.cancelled() => break,
                    n = codec::read_next(&mut reader, max_frame_bytes) => n,
                }
            } else {
                let read = tokio::time::timeout_at(handshake_deadline, codec::read_next(&mut reader, max_frame_bytes));
                crate::sim::select! {
                    _ = abort.cancelled() => break,
                    _ = evicted.cancelled() => {
                        if let Some(s) = &slot {
                            count(ErrorCode::TooManyConnections);
                            send_error_and_close(&s.evicted_error());
                        }
                        break;
                    }
                    r = read => match r {
                        Ok(n) => n,
                        Err(_) => {
                            count(ErrorCode::HelloRequired);
                            handshake_timed_out(&gate, &peer, first_frame_timeout, &send_error_and_close);
                            let _ = tx.try_send(Outgoing::Close);
                            break;
                        }
                    },
                }
            };
            let body = match next {
                None => break,
                Some(Inbound::Message(body)) => body,
                Some(Inbound::Invalid(err)) => {
                    count(err.code);
                    if let Gate::Server(hs, sec) = &gate {
                        if let ServerStep::Reject(e) = hs.on_invalid(&err) {
                            sec.failures.count(sec.port_label(), "invalid_frame");
                            sec.failures.failed(&peer, &e.message);
                            send_error_and_close(&e);
                        }
                        break;
                    }
                    tracing::warn!(%peer, code = err.code.as_str(), "refused frame: {}", err.message);
                    if tx.try_send(Outgoing::Frame(codec::encode(Body::error(&err)))).is_err() {
                        break;
                    }
                    continue;
                }
                Some(Inbound::Broken(err)) => {
                    count(err.code);
                    if matches!(gate, Gate::Client(_) | Gate::FirstMessage { server: false }) {
                        tracing::warn!(%peer, "the server's first bytes are not a frame: {}; if it uses TLS, configure tls.ca_file (--tls-ca)", err.message);
                    } else {
                        tracing::warn!(%peer, code = err.code.as_str(), "closing connection: {}", err.message);
                    }
                    send_error_and_close(&err);
                    break;
                }
            };
            let forward = match &mut gate {
                Gate::Open => match authenticated.as_ref().map(|i| auth::permits(i, &body)) {
                    Some(Err(e)) => {
                        count(e.code);
                        tracing::warn!(%peer, "refused: {}", e.message);
                        let _ = tx.try_send(Outgoing::Frame(codec::encode(Body::error(&e))));
                        None
                    }
                    _ => Some(body),
                },
                Gate::FirstMessage { server } => {
                    if *server {
                        if let Err(e) = slot.as_ref().map_or(Ok(()), |s| s.authenticated(&body)) {
                            count(e.code);
                            send_error_and_close(&e);
                            break;
                        }
                    }
                    gate = Gate::Open;
                    Some(body)
                }
                Gate::Server(hs, sec) => match hs.on_message(body) {
                    ServerStep::Reply(b) => {
                        let _ = tx.try_send(Outgoing::Frame(codec::encode(b)));
                        None
                    }
                    ServerStep::Accept {
                        reply,
                        hello,
                        identity,
                    } => {
                        if let Err(e) = slot.as_ref().map_or(Ok(()), |s| s.authenticated(&hello)) {
                            count(e.code);
                            send_error_and_close(&e);
                            break;
                        }
                        let _ = tx.try_send(Outgoing::Frame(codec::encode(reply)));
                        tracing::debug!(%peer, "authenticated as {identity}");
                        authenticated = Some(identity);
                        gate = Gate::Open;
                        Some(hello)
                    }
                    ServerStep::Reject(e) => {
                        sec.failures.count(sec.port_label(), hs.rejected_because());
                        sec.failures.failed(&peer, &e.message);
                        send_error_and_close(&e);
                        break;
                    }
                },
                Gate::Client(hs) => match hs.on_message(&body) {
                    PeerStep::Reply(b) => {
                        let _ = tx.try_send(Outgoing::Frame(codec::encode(b)));
                        None
                    }
                    PeerStep::Done => {
                        gate = Gate::Open;
                        None
                    }
                    PeerStep::Fail(why) => {
                        tracing::error!(%peer, "authentication with the server failed: {why}");
                        let _ = tx.try_send(Outgoing::Close);
                        break;
                    }
                },
            };
            if let Some(body) = forward {
                if let Some(txn) = body.txn() {
                    tracing::debug!(%peer, transaction_id = %txn, message_type = body.message_type(), "received");
                }
                let event = match (&queries, is_operator_query(&body)) {
                    (Some(q), true) => {
                        // Stop reading until one of this connection's
                        // queries is answered: a client pipelining queries
                        // waits in its own socket, not in our memory.
                        let permit = crate::sim::select! {
                            _ = abort.cancelled() => break,
                            p = q.clone().acquire_owned() => match p {
                                Ok(p) => p,
                                Err(_) => break,
                            },
                        };
                        ConnEvent::Query { conn, body, permit }
                    }
                    _ => ConnEvent::Message { conn, body },
                };
                if events.send(event).await.is_err() {
                    break;
                }
            }
        }
        let _ = events.send(ConnEvent::Closed { conn }).await;
    });
}

/// Queries an operator may pipeline, answered after protocol traffic.
fn is_operator_query(body: &Body) -> bool {
    matches!(
        body,
        Body::Status | Body::TxnList { .. } | Body::TxnShow { .. }
    )
}

/// The handshake deadline passed: tell a client peer why, then close.
fn handshake_timed_out(
    gate: &Gate,
    peer: &str,
    timeout: std::time::Duration,
    send_error_and_close: &dyn Fn(&WireError),
) {
    match gate {
        Gate::Server(hs, sec) => {
            if let ServerStep::Reject(e) = hs.on_timeout(timeout.as_millis() as u64) {
                sec.failures.count(sec.port_label(), "timeout");
                sec.failures.failed(peer, &e.message);
                send_error_and_close(&e);
            }
        }
        Gate::FirstMessage { server: true } => {
            tracing::warn!(%peer, "no valid message within the handshake timeout; closing");
            send_error_and_close(&WireError::new(
                ErrorCode::HelloRequired,
                "no hello within the handshake timeout; closing",
            ));
        }
        Gate::Client(_) | Gate::FirstMessage { server: false } => {
            tracing::warn!(%peer, "the server did not complete the handshake within {} ms; reconnecting", timeout.as_millis());
        }
        Gate::Open => {}
    }
}

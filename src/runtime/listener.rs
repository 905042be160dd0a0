//! Accepting connections on a listening port (the coordinator's, a
//! participant's admin port): the connection limit, TLS, then the
//! connection task with authentication. One accept loop for every port.

use super::metrics::ErrorCounts;
use super::{spawn_connection, ConnEvent, ConnSpec, Side};
use crate::protocol::{Body, ConnId, ErrorCode, WireError};
use crate::security::ServerSecurity;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How a port serves its connections.
#[derive(Clone)]
pub struct PortSpec {
    /// For logs and error messages: `coordinator port`, `admin port`.
    pub name: &'static str,
    /// The configuration key of the connection limit, for the refusal.
    pub max_connections_key: &'static str,
    pub max_connections: usize,
    pub max_frame_bytes: usize,
    /// TLS handshake, hello and authentication must all finish within it.
    pub handshake_timeout: Duration,
    /// Where connection ids come from; shared by the ports (and the HTTP
    /// submits) of one process so that they never share an id.
    pub conn_ids: Arc<AtomicU64>,
    pub security: Arc<ServerSecurity>,
    /// Where refused frames are counted (the coordinator's metrics).
    pub errors: Option<Arc<ErrorCounts>>,
}

/// Accept until `shutdown`. Past `max_connections`, a new connection is
/// refused at once: `error` `too_many_connections` (plain TCP only; a TLS
/// peer just sees the close) instead of a silent wait in the backlog, so
/// the peer learns why and can retry.
pub async fn accept_loop(
    listener: TcpListener,
    spec: PortSpec,
    events: mpsc::Sender<ConnEvent>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(spec.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("{}: accept failed: {e}", spec.name);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let peer = peer.to_string();
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            refuse(stream, &peer, &spec, &tracker);
            continue;
        };
        let conn = ConnSpec {
            conn: ConnId(spec.conn_ids.fetch_add(1, Ordering::Relaxed)),
            peer,
            max_frame_bytes: spec.max_frame_bytes,
            first_frame_timeout: spec.handshake_timeout,
            permit: Some(permit),
            side: Side::Server(spec.security.clone()),
            errors: spec.errors.clone(),
        };
        match spec.security.tls.clone() {
            None => spawn_connection(stream, conn, events.clone(), &tracker),
            Some(acceptor) => {
                let (events, inner, sec) = (events.clone(), tracker.clone(), spec.security.clone());
                tracker.spawn(async move {
                    let started = tokio::time::Instant::now();
                    let accepted =
                        tokio::time::timeout(conn.first_frame_timeout, acceptor.accept(stream)).await;
                    match accepted {
                        Ok(Ok(tls)) => {
                            // What is left of the handshake time is for hello and authentication.
                            let left = conn.first_frame_timeout.saturating_sub(started.elapsed());
                            let conn = ConnSpec {
                                first_frame_timeout: left.max(Duration::from_millis(1)),
                                ..conn
                            };
                            spawn_connection(tls, conn, events, &inner)
                        }
                        Ok(Err(e)) => {
                            sec.failures.count(sec.port_label(), "tls");
                            sec.failures.failed(
                                &conn.peer,
                                &format!("TLS handshake failed: {e} (a peer without TLS, or one that does not trust this certificate?)"),
                            )
                        }
                        Err(_) => {
                            sec.failures.count(sec.port_label(), "timeout");
                            sec.failures
                                .failed(&conn.peer, "no TLS handshake within the handshake timeout")
                        }
                    }
                });
            }
        }
    }
}

/// Turn away a connection past the limit without waiting on it.
fn refuse(mut stream: TcpStream, peer: &str, spec: &PortSpec, tracker: &TaskTracker) {
    let message = format!(
        "the {} is at its limit of {} connections ({}); retry later, or raise the limit",
        spec.name, spec.max_connections, spec.max_connections_key
    );
    spec.security.failures.failed(peer, &message);
    spec.security
        .failures
        .count(spec.security.port_label(), "no_slot");
    if spec.security.tls.is_none() {
        let err = WireError::new(ErrorCode::TooManyConnections, message);
        let body = crate::net::encode(Body::error(&err));
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        // Best effort and never blocking: a fresh socket's send buffer
        // takes one small frame.
        let _ = stream.try_write(&frame);
    }
    // Close our side, then read what the peer already sent (its hello) for
    // a moment: closing with unread input would reset the connection and
    // could destroy the error frame before the peer reads it.
    tracker.spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let drain = async {
            let mut total = 0usize;
            while let Ok(n @ 1..) = stream.read(&mut sink).await {
                total += n;
                if total > 64 * 1024 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    });
}

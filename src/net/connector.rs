//! The connecting side: keep one connection to a server open, redialling
//! with [`Backoff`] after each loss. Each connection runs as a
//! [`connection`](super::connection) whose events go to the owner's loop;
//! the owner says when a connection is gone (it may close one itself, for
//! a silent server) and when one proved good (the backoff starts over).
//! What is said on the connection is the owner's business, not this
//! module's.

use super::backoff::Backoff;
use super::connection::{spawn_connection, ConnEvent, ConnSpec, Side};
use super::stream;
use crate::protocol::{ConnId, Role};
use crate::security::auth::{self, PeerHandshake, Secret};
use crate::security::tls::TlsClient;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Dial attempts that fail in a row between two warnings in the log.
const WARN_EVERY_ATTEMPTS: u32 = 20;

/// Where to connect and how.
pub struct ConnectorSpec {
    /// What the server is, for the log (`coordinator`).
    pub server: &'static str,
    /// `host:port` of the server.
    pub addr: String,
    /// TLS to the server, when configured.
    pub tls: Option<TlsClient>,
    /// Bounds opening the connection (TCP and TLS) and, separately, the
    /// handshake on it: the server answers a hello at once, so a silent
    /// one is not worth waiting for.
    pub handshake_timeout: Duration,
    /// With a secret, each connection answers the server's challenge to the
    /// hello the owner sends as `role` and `id`.
    pub secret: Option<Arc<Secret>>,
    pub role: Role,
    pub id: Option<String>,
    pub max_frame_bytes: usize,
    pub send_buffer_max_bytes: usize,
    /// Delay between dial attempts.
    pub backoff: Backoff,
}

/// What the owner shares with its connector.
#[derive(Clone, Default)]
pub struct Redial {
    /// Notified by the owner when its connection is gone: dial again.
    pub lost: Arc<Notify>,
    /// Attempts since the last good connection; the owner resets it to 0
    /// once a connection proved good, so the next loss redials quickly.
    pub attempts: Arc<AtomicU32>,
}

impl Redial {
    /// The connection proved good: the next loss starts the backoff over.
    pub fn succeeded(&self) {
        self.attempts.store(0, Ordering::Relaxed);
    }

    /// The owner's connection is gone: dial again (after the backoff).
    pub fn connection_lost(&self) {
        self.lost.notify_one();
    }
}

/// Keep (re)connecting until `shutdown`. Connection ids count up from 1.
pub async fn run(
    spec: ConnectorSpec,
    events: mpsc::Sender<ConnEvent>,
    redial: Redial,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut next_conn = 1u64;
    loop {
        let connected = crate::sim::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(spec.handshake_timeout, stream::connect(&spec.addr, spec.tls.as_ref())) => match r {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no connection within handshake_timeout_ms ({} ms)", spec.handshake_timeout.as_millis())),
            },
        };
        match connected {
            Ok(stream) => {
                let conn = ConnId(next_conn);
                next_conn += 1;
                let handshake = spec.secret.clone().map(|k| {
                    PeerHandshake::new(k, spec.role, spec.id.as_deref(), auth::fresh_nonce())
                });
                let conn_spec = ConnSpec {
                    conn,
                    peer: spec.addr.clone(),
                    max_frame_bytes: spec.max_frame_bytes,
                    first_frame_timeout: spec.handshake_timeout,
                    slot: None,
                    side: Side::Client(handshake),
                    errors: None,
                    send_buffer_max_bytes: spec.send_buffer_max_bytes,
                    query_in_flight_max: 0,
                };
                spawn_connection(stream, conn_spec, events.clone(), &tracker);
                crate::sim::select! {
                    _ = shutdown.cancelled() => return,
                    _ = redial.lost.notified() => {}
                }
            }
            Err(e) => {
                let n = redial.attempts.load(Ordering::Relaxed);
                if n.is_multiple_of(WARN_EVERY_ATTEMPTS) {
                    tracing::warn!(
                        "cannot reach {} at {}: {e}; retrying",
                        spec.server,
                        spec.addr
                    );
                }
            }
        }
        let n = redial.attempts.fetch_add(1, Ordering::Relaxed);
        let delay = spec.backoff.delay_ms(n);
        crate::sim::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
        }
    }
}

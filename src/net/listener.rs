//! Accepting connections on a listening port (the coordinator's, a
//! participant's admin port): connection slots (see [`super::slots`] for
//! the rules), TLS, then the connection task with authentication. One
//! accept loop for every port.

use super::codec;
use super::connection::{spawn_connection, ConnEvent, ConnSpec, Side};
use super::error_counts::ErrorCounts;
use super::slots::{Admit, Pool, Refusal, SlotLimits, Slots};
use crate::protocol::{Body, ConnId, ErrorCode, Role, WireError};
use crate::security::ServerSecurity;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A listening socket: the operating system's, or inside a simulation the
/// simulated network's (`sim` feature). One accept loop serves both.
pub enum Listener {
    Tcp(TcpListener),
    #[cfg(feature = "sim")]
    Sim(turmoil::net::TcpListener),
}

/// A connection [`Listener::accept`] took.
enum Accepted {
    Tcp(TcpStream),
    #[cfg(feature = "sim")]
    Sim(crate::sim::SimStream),
}

impl Listener {
    /// Listen on `addr` (`host:port`): on the simulated network inside a
    /// simulation, else on the operating system's.
    pub async fn bind(addr: &str) -> std::io::Result<Listener> {
        #[cfg(feature = "sim")]
        if crate::sim::active() {
            return turmoil::net::TcpListener::bind(addr)
                .await
                .map(Listener::Sim);
        }
        TcpListener::bind(addr).await.map(Listener::Tcp)
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr(),
            #[cfg(feature = "sim")]
            Listener::Sim(l) => l.local_addr(),
        }
    }

    /// Take the next connection as a plain byte stream (no delay set on a
    /// real socket): for ports that run their own framing (the Raft port).
    pub async fn accept_stream(
        &self,
    ) -> std::io::Result<(super::stream::BoxedStream, std::net::SocketAddr)> {
        let (accepted, addr) = self.accept().await?;
        let stream: super::stream::BoxedStream = match accepted {
            Accepted::Tcp(s) => {
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            #[cfg(feature = "sim")]
            Accepted::Sim(s) => Box::new(s),
        };
        Ok((stream, addr))
    }

    async fn accept(&self) -> std::io::Result<(Accepted, std::net::SocketAddr)> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, a)| (Accepted::Tcp(s), a)),
            #[cfg(feature = "sim")]
            Listener::Sim(l) => l
                .accept()
                .await
                .map(|(s, a)| (Accepted::Sim(crate::sim::SimStream::new(s)), a)),
        }
    }
}

/// Who may keep a reserved slot once its handshake is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReserveFor {
    /// Coordinator port: a hello with role participant, so a restarted
    /// participant registers even while clients hold every shared slot.
    Participants,
    /// Admin port: any connection that completed its handshake (with a
    /// secret: authenticated), so an operator gets in while idle sockets
    /// are turned away.
    Operators,
}

/// How a port serves its connections.
#[derive(Clone)]
pub struct PortSpec {
    /// For logs and error messages: `coordinator port`, `admin port`.
    pub name: &'static str,
    /// The configuration key of the connection limit, for the refusal.
    pub max_connections_key: &'static str,
    /// The configuration key of the reserved slots, for the refusal.
    pub reserved_key: &'static str,
    pub limits: SlotLimits,
    pub reserve_for: ReserveFor,
    pub max_frame_bytes: usize,
    /// From accept to a completed handshake (TLS, hello, authentication):
    /// past it the connection is closed and its slot freed.
    pub preauth_timeout: Duration,
    /// Bytes queued for one connection's writer before it is disconnected.
    pub send_buffer_max_bytes: usize,
    /// Operator queries of one connection waiting for an answer; 0 for no
    /// limit (ports that answer them at once).
    pub query_in_flight_max: usize,
    /// Where connection ids come from; shared by the ports (and the HTTP
    /// submits) of one process so that they never share an id.
    pub conn_ids: Arc<AtomicU64>,
    pub security: Arc<ServerSecurity>,
    /// Where refused frames are counted (the coordinator's metrics).
    pub errors: Option<Arc<ErrorCounts>>,
}

impl PortSpec {
    /// Why a connection is turned away, for the peer and the log.
    fn refusal(&self, why: Refusal, peer: &str) -> String {
        let l = self.limits;
        match why {
            Refusal::AddressBusy => format!(
                "{} connections from {} are still in their handshake on the {} (preauth_max_per_address); complete or close them, then retry",
                l.preauth_per_address, peer_ip(peer), self.name
            ),
            Refusal::Full => format!(
                "the {} is at its limit of {} connections ({}) and all of them completed their handshake; retry later, or raise the limit",
                self.name, l.shared, self.max_connections_key
            ),
            Refusal::NotReserved => format!(
                "the {} is at its limit of {} connections ({}); its {} reserved slots ({}) are kept for {}; retry later, or raise the limit",
                self.name,
                l.shared,
                self.max_connections_key,
                l.reserved,
                self.reserved_key,
                match self.reserve_for {
                    ReserveFor::Participants => "participants",
                    ReserveFor::Operators => "operators that complete their handshake",
                }
            ),
        }
    }
}

fn peer_ip(peer: &str) -> String {
    peer.parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| peer.to_string())
}

/// The slot table of one port, with a way to close each connection still
/// in its handshake when it is evicted.
struct PortSlots {
    table: Mutex<(Slots<ConnId, IpAddr>, HashMap<ConnId, CancellationToken>)>,
}

impl PortSlots {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, (Slots<ConnId, IpAddr>, HashMap<ConnId, CancellationToken>)>
    {
        // Every update of the table is a few plain assignments that cannot
        // panic half-way; a poisoned lock still holds a consistent table.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection's slot: freed when dropped.
pub struct SlotTicket {
    conn: ConnId,
    slots: Arc<PortSlots>,
    spec: Arc<PortSpec>,
    peer: String,
    /// Cancelled when the connection is evicted during its handshake.
    pub evicted: CancellationToken,
}

impl SlotTicket {
    /// The handshake is complete; `first` is the first message that reached
    /// the core (the hello, normally). Refused when the connection holds a
    /// reserved slot it does not qualify for, or was evicted meanwhile.
    pub fn authenticated(&self, first: &Body) -> Result<(), WireError> {
        let qualifies = match self.spec.reserve_for {
            ReserveFor::Participants => matches!(
                first,
                Body::Hello {
                    role: Role::Participant,
                    ..
                }
            ),
            ReserveFor::Operators => true,
        };
        let result = {
            let mut t = self.slots.lock();
            let r = t.0.authenticated(self.conn, qualifies);
            t.1.remove(&self.conn);
            r
        };
        match result {
            Ok(Pool::Shared) => Ok(()),
            Ok(Pool::Reserved) => {
                tracing::info!(peer = %self.peer, "{}: serving a connection from a reserved slot", self.spec.name);
                Ok(())
            }
            Err(why) => {
                let message = self.spec.refusal(why, &self.peer);
                self.spec.security.failures.failed(&self.peer, &message);
                Err(WireError::new(ErrorCode::TooManyConnections, message))
            }
        }
    }

    /// The error a connection evicted during its handshake is closed with
    /// (logged, within the failure log's rate limit).
    pub fn evicted_error(&self) -> WireError {
        self.spec.security.failures.failed(
            &self.peer,
            "closed during its handshake to make room (the port is full)",
        );
        WireError::new(
            ErrorCode::TooManyConnections,
            format!(
                "the {} is full and this connection had not completed its handshake; it was closed to make room: retry, and complete the handshake within preauth_timeout_ms",
                self.spec.name
            ),
        )
    }
}

impl Drop for SlotTicket {
    fn drop(&mut self) {
        let mut t = self.slots.lock();
        t.0.release(self.conn);
        t.1.remove(&self.conn);
    }
}

/// Accept until `shutdown`. A connection that gets no slot is refused at
/// once: `error` `too_many_connections` (plain TCP only; a TLS peer just
/// sees the close) instead of a silent wait in the backlog, so the peer
/// learns why and can retry.
pub async fn accept_loop(
    listener: Listener,
    spec: PortSpec,
    events: mpsc::Sender<ConnEvent>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let spec = Arc::new(spec);
    let slots = Arc::new(PortSlots {
        table: Mutex::new((Slots::new(spec.limits), HashMap::new())),
    });
    loop {
        let (accepted, addr) = crate::sim::select! {
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
        let stream = match accepted {
            Accepted::Tcp(s) => {
                let _ = s.set_nodelay(true);
                s
            }
            // The simulated network has no Nagle to turn off, no TLS and no
            // refusal frame (its ports are never full): admit and serve.
            #[cfg(feature = "sim")]
            Accepted::Sim(s) => {
                let conn = ConnId(spec.conn_ids.fetch_add(1, Ordering::Relaxed));
                let conn = ConnSpec {
                    conn,
                    peer: addr.to_string(),
                    max_frame_bytes: spec.max_frame_bytes,
                    first_frame_timeout: spec.preauth_timeout,
                    slot: None,
                    side: Side::Server(spec.security.clone()),
                    errors: spec.errors.clone(),
                    send_buffer_max_bytes: spec.send_buffer_max_bytes,
                    query_in_flight_max: spec.query_in_flight_max,
                };
                spawn_connection(s, conn, events.clone(), &tracker);
                continue;
            }
        };
        let peer = addr.to_string();
        let conn = ConnId(spec.conn_ids.fetch_add(1, Ordering::Relaxed));
        let evicted = CancellationToken::new();
        let admitted = {
            let mut t = slots.lock();
            let admit = t.0.admit(conn, addr.ip());
            if let Admit::Accept { evict, .. } = &admit {
                if let Some(victim) = evict.and_then(|v| t.1.remove(&v)) {
                    victim.cancel();
                }
                t.1.insert(conn, evicted.clone());
            }
            admit
        };
        if let Admit::Refuse(why) = admitted {
            refuse(stream, &peer, &spec.refusal(why, &peer), &spec, &tracker);
            continue;
        }
        let ticket = SlotTicket {
            conn,
            slots: slots.clone(),
            spec: spec.clone(),
            peer: peer.clone(),
            evicted,
        };
        let conn = ConnSpec {
            conn,
            peer,
            max_frame_bytes: spec.max_frame_bytes,
            first_frame_timeout: spec.preauth_timeout,
            slot: Some(ticket),
            side: Side::Server(spec.security.clone()),
            errors: spec.errors.clone(),
            send_buffer_max_bytes: spec.send_buffer_max_bytes,
            query_in_flight_max: spec.query_in_flight_max,
        };
        match spec.security.tls.clone() {
            None => spawn_connection(stream, conn, events.clone(), &tracker),
            Some(acceptor) => {
                let (events, inner, sec) = (events.clone(), tracker.clone(), spec.security.clone());
                tracker.spawn(async move {
                    let started = tokio::time::Instant::now();
                    let evicted = conn.slot.as_ref().map(|s| s.evicted.clone()).unwrap_or_default();
                    let accepted = crate::sim::select! {
                        _ = evicted.cancelled() => return sec.failures.failed(
                            &conn.peer,
                            "closed during its TLS handshake to make room (the port is full)",
                        ),
                        r = tokio::time::timeout(conn.first_frame_timeout, acceptor.accept(stream)) => r,
                    };
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
                                .failed(&conn.peer, "no TLS handshake within preauth_timeout_ms")
                        }
                    }
                });
            }
        }
    }
}

/// Turn away a connection past the limit without waiting on it.
fn refuse(
    mut stream: TcpStream,
    peer: &str,
    message: &str,
    spec: &PortSpec,
    tracker: &TaskTracker,
) {
    spec.security.failures.failed(peer, message);
    spec.security
        .failures
        .count(spec.security.port_label(), "no_slot");
    if spec.security.tls.is_none() {
        let err = WireError::new(ErrorCode::TooManyConnections, message);
        let frame = codec::frame(&codec::encode(Body::error(&err)));
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

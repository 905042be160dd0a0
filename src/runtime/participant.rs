//! The participant process: keeps one connection to the coordinator
//! (through [`crate::net::connector`]), feeds its events and messages and
//! the time to the participant core (which decides the session: hello,
//! welcome, heartbeats, silence), runs the resource, performs the core's
//! actions in order through the group-commit log, and answers operators on
//! the admin port with the core's views.

use super::executor::{Executor, Local};
use super::http::{AdminServer, HttpOptions};
use super::outbox::{Io, Outbox};
use super::{alert, crash, open_log, Clock};
use crate::config::ParticipantConfig;
use crate::net::connector::{self, ConnectorSpec, Redial};
use crate::net::listener::{self, PortSpec, ReserveFor};
use crate::net::slots::SlotLimits;
use crate::net::{Backoff, ConnEvent};
use crate::protocol::bound;
use crate::protocol::page::PageLimits;
use crate::protocol::participant::{
    AdminQuery, AdminReply, Event, Participant, ParticipantOptions, Prepared, SessionNotice,
    StatusView,
};
use crate::protocol::{Action, Body, ConnId, Decision, ErrorCode, Role, TxnId, WireError};
use crate::resource::{FinishResult, PrepareResult, Resource};
use crate::security::tls::TlsClient;
use crate::security::ServerSecurity;
use crate::wal::{GroupCommit, WalError};
use futures::FutureExt;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A participant that has opened its log and recovered.
pub struct ParticipantNode {
    cfg: ParticipantConfig,
    core: Participant,
    log: GroupCommit,
    clock: Clock,
    resource: Box<dyn Resource>,
    admin: Option<listener::Listener>,
    /// The admin HTTP port (the console), when `admin_http_port` is set.
    admin_http: Option<AdminServer>,
    /// What the admin port requires of operators.
    admin_security: Arc<ServerSecurity>,
    /// TLS to the coordinator, when `tls.ca_file` is set.
    tls: Option<TlsClient>,
    /// True from the first registration with the coordinator on.
    registered: tokio::sync::watch::Sender<bool>,
    removed: tokio::sync::watch::Sender<bool>,
    _lock: crate::wal::DirLock,
}

/// Why a participant could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("the resource could not start: {0}")]
    Resource(#[from] crate::resource::RecoverError),
    /// The resource's initial data (a kv seed) does not fit the log.
    #[error("the resource could not start: initial data: {0}")]
    InitialData(#[source] crate::wal::SnapshotTooLarge),
    #[error("cannot listen on admin address {addr}: {source}; choose another admin_port")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] crate::security::tls::TlsError),
}

/// Connection ids of operator connections start here, far from the ids of
/// coordinator connections.
const ADMIN_CONN_BASE: u64 = 1 << 32;

/// The admin HTTP port's limits: the admin port's connection limit, a
/// request body no larger than a frame, headers (and again the body)
/// within the handshake allowance of an admin connection.
fn http_options(cfg: &ParticipantConfig) -> HttpOptions {
    HttpOptions {
        max_connections: cfg.admin_max_connections,
        max_body_bytes: cfg.max_frame_bytes,
        header_timeout: Duration::from_millis(cfg.preauth_timeout_ms),
        // Every request is answered within one turn of the event loop.
        submit_timeout: Duration::from_secs(10),
        auth_nonces_max: PARTICIPANT_HTTP_NONCES_MAX,
        auth_nonce_ttl_ms: PARTICIPANT_HTTP_NONCE_TTL_MS,
        open_metrics: false,
        allowed_hosts: ["localhost", "127.0.0.1", "::1", cfg.admin_host.as_str()]
            .map(String::from)
            .into(),
        auth_challenges_per_second: PARTICIPANT_HTTP_CHALLENGES_PER_SECOND,
    }
}

/// With a secret: outstanding nonces of the admin HTTP port (an operator or
/// two, not a fleet of scrapers).
const PARTICIPANT_HTTP_NONCES_MAX: usize = 1024;
/// With a secret: milliseconds a nonce of the admin HTTP port stays valid.
const PARTICIPANT_HTTP_NONCE_TTL_MS: u64 = 30_000;
/// With a secret: `GET /auth/challenge` per address and second.
const PARTICIPANT_HTTP_CHALLENGES_PER_SECOND: u32 = 20;

/// Result of a resource's prepare that did not complete at once.
struct PrepareDone {
    txn: TxnId,
    result: Result<Prepared, String>,
}

/// A resource's finish that did not complete at once, done: the actions
/// that waited for it, then its answer.
struct Finished {
    rest: VecDeque<Action>,
    txn: TxnId,
    result: FinishResult,
}

impl ParticipantNode {
    /// Open the log and recover: transactions prepared but undecided are in
    /// doubt and will be asked about once the coordinator is reachable.
    pub async fn start(
        cfg: ParticipantConfig,
        mut resource: Box<dyn Resource>,
    ) -> Result<ParticipantNode, StartError> {
        let clock = Clock::start();
        let admin_security = Arc::new(ServerSecurity::new(
            cfg.secret.clone(),
            &cfg.tls,
            crate::security::auth::Port::ParticipantAdmin(cfg.id.0.clone()),
        )?);
        let tls = TlsClient::from_config(&cfg.tls)?;
        let crate::wal::Opened {
            wal, lock, records, ..
        } = open_log(&cfg.data_dir(), &cfg.wal)?;
        let opts = ParticipantOptions {
            id: cfg.id.clone(),
            decision_timeout_ms: (cfg.timeout_seconds * 1000.0) as u64,
            query_max_ms: cfg.query_max_ms,
            history_limit: cfg.history_limit,
            checkpoint_recent_commits: cfg.checkpoint_recent_commits,
            heartbeat_interval_ms: heartbeat_interval_ms(&cfg),
            heartbeat_failure_threshold: cfg.heartbeat_failure_threshold,
        };
        #[allow(unused_mut)]
        let mut core = Participant::recover(opts, clock.now(), &records);
        #[cfg(feature = "fault-injection")]
        if crate::sim::bug(crate::sim::Bug::VoteBeforePreparedSynced) {
            core.inject(crate::protocol::fault::Fault::VoteBeforePreparedDurable);
        }
        let in_doubt = core.in_doubt();
        resource
            .recover(&records)
            .await
            .map_err(StartError::Resource)?;
        if !in_doubt.is_empty() {
            tracing::warn!(
                count = in_doubt.len(),
                "transactions in doubt after restart; asking the coordinator"
            );
        }
        let admin = match cfg.admin_port {
            Some(port) => {
                let addr = format!("{}:{}", cfg.admin_host, port);
                let l = listener::Listener::bind(&addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?;
                if let Ok(a) = l.local_addr() {
                    tracing::info!("admin listening on {a}");
                }
                Some(l)
            }
            None => None,
        };
        let admin_http = match cfg.admin_http_port {
            Some(port) => {
                let s = AdminServer::bind(&cfg.admin_host, port, http_options(&cfg))
                    .await
                    .map_err(|e| StartError::Bind {
                        addr: e.addr,
                        source: e.source,
                    })?;
                if let Ok(a) = s.local_addr() {
                    tracing::info!("admin http listening on {a}");
                }
                Some(s)
            }
            None => None,
        };
        let mut wal = wal;
        if records.is_empty() {
            // First start of an empty data directory: make the resource's
            // initial data (a kv seed) durable before anything else, as one
            // checkpoint, so that a crash leaves all of it or none (and a
            // restart seeds again).
            if let Some(state) = resource.snapshot() {
                let records =
                    crate::wal::snapshot_records(state).map_err(StartError::InitialData)?;
                wal.checkpoint(&records).map_err(StartError::Wal)?;
            }
        }
        let log = GroupCommit::start(wal, 16_384);
        Ok(ParticipantNode {
            cfg,
            core,
            log,
            clock,
            resource,
            admin,
            admin_http,
            admin_security,
            tls,
            registered: tokio::sync::watch::Sender::new(false),
            removed: tokio::sync::watch::Sender::new(false),
            _lock: lock,
        })
    }

    /// Turns true when the participant first registers with its coordinator
    /// (ready to vote): for an embedder's readiness signal.
    pub fn registered(&self) -> tokio::sync::watch::Receiver<bool> {
        self.registered.subscribe()
    }

    /// Turns true when an operator removed this participant from the
    /// cluster: [`ParticipantNode::run`] then returns `Ok` without having
    /// been asked to stop, and the participant must not be restarted as is
    /// (the `twopc-participant` binary exits with status 3).
    pub fn removed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.removed.subscribe()
    }

    /// The admin HTTP port's address (the console), when enabled.
    pub fn admin_http_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin_http.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// The operator port's address, when enabled.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Run until `shutdown` is cancelled.
    /// Returns when `shutdown` is cancelled, or with the reason when the
    /// log failed (the node stopped; a restart recovers from its log).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), crate::wal::LogFailure> {
        // This node's own tasks stop with it, whatever else the token stops.
        let shutdown = shutdown.child_token();
        let ParticipantNode {
            cfg,
            core,
            log,
            clock,
            resource,
            admin,
            admin_http,
            admin_security,
            tls,
            registered,
            removed,
            _lock,
        } = self;
        let tracker = TaskTracker::new();
        let (admin_tx, admin_rx) = mpsc::channel(256);
        let admin_authenticated = admin_security.secret.is_some();
        // Shared by the TCP admin port and the HTTP one's virtual connections.
        let admin_conn_ids = Arc::new(std::sync::atomic::AtomicU64::new(ADMIN_CONN_BASE + 1));
        if let Some(server) = admin_http {
            server.spawn_participant(
                cfg.id.clone(),
                admin_tx.clone(),
                admin_conn_ids.clone(),
                admin_security.clone(),
                shutdown.clone(),
                &tracker,
            );
        }
        if let Some(l) = admin {
            admin_security.announce("admin port");
            let port = PortSpec {
                name: "admin port",
                max_connections_key: "admin_max_connections",
                reserved_key: "admin_reserved_connections",
                limits: SlotLimits {
                    shared: cfg.admin_max_connections,
                    reserved: cfg.admin_reserved_connections,
                    preauth_per_address: cfg.preauth_max_per_address,
                },
                reserve_for: ReserveFor::Operators,
                max_frame_bytes: cfg.max_frame_bytes,
                preauth_timeout: Duration::from_millis(
                    cfg.preauth_timeout_ms.min(cfg.handshake_timeout_ms),
                ),
                send_buffer_max_bytes: cfg.send_buffer_max_bytes,
                // Answered as they come; the admin port's few slots bound them.
                query_in_flight_max: 0,
                conn_ids: admin_conn_ids,
                security: admin_security,
                errors: None,
            };
            tracker.spawn(listener::accept_loop(
                l,
                port,
                admin_tx,
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        let (ev_tx, ev_rx) = mpsc::channel(1024);
        let (prep_tx, prep_rx) = mpsc::channel(1024);
        let (resume_tx, resume_rx) = mpsc::channel(1024);
        let redial = Redial::default();
        tracker.spawn(connector::run(
            connector_spec(&cfg, tls),
            ev_tx,
            redial.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
        let mut d = Driver {
            out: Outbox::new(log, cfg.wal.segment_max_bytes, cfg.max_frame_bytes),
            exec: Executor::default(),
            cfg,
            core,
            clock,
            resource,
            registered,
            removed,
            redial,
            prep_tx,
            resume_tx,
            queue: VecDeque::new(),
            tracker: tracker.clone(),
            admins: HashSet::new(),
            admin_authenticated,
        };
        let result = d
            .main_loop(ev_rx, prep_rx, resume_rx, admin_rx, shutdown.clone())
            .await;
        tracker.close();
        drop(d);
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
        result
    }
}

/// How the participant reaches its coordinator.
fn connector_spec(cfg: &ParticipantConfig, tls: Option<TlsClient>) -> ConnectorSpec {
    ConnectorSpec {
        server: "coordinator",
        addrs: cfg.coordinator_addrs(),
        tls,
        handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms),
        secret: cfg.secret.clone(),
        role: Role::Participant,
        id: Some(cfg.id.0.clone()),
        max_frame_bytes: cfg.max_frame_bytes,
        send_buffer_max_bytes: cfg.send_buffer_max_bytes,
        backoff: Backoff {
            initial_ms: cfg.reconnect_initial_ms,
            max_ms: cfg.reconnect_max_ms,
        },
    }
}

/// The core's input for a resource's answer: an abort vote carries the
/// error's text as its reason. Logged here, with the kind of refusal.
fn vote_of(txn: &TxnId, result: PrepareResult) -> Result<Prepared, String> {
    result.map_err(|e| {
        let reason = e.to_string();
        tracing::info!(transaction_id = %txn, kind = e.kind(), "voting abort: {}", bound::reason(&reason));
        reason
    })
}

/// The heartbeat interval the core beats at (10 ms at least, as the
/// configuration allows).
fn heartbeat_interval_ms(cfg: &ParticipantConfig) -> u64 {
    cfg.heartbeat_interval_ms.max(10)
}

/// How often the core is told the time: often enough for in-doubt queries
/// to go out close to when they are due, and for every heartbeat to go out
/// on its beat (one per interval, as configured).
fn tick_ms(cfg: &ParticipantConfig) -> u64 {
    heartbeat_interval_ms(cfg).min(50)
}

/// A participant's `status` reply: the core's view and this process's own
/// figures.
#[derive(serde::Serialize)]
struct StatusReply<'a> {
    #[serde(flatten)]
    core: StatusView<'a>,
    wal: serde_json::Value,
    resource: serde_json::Value,
    coordinator: String,
}

/// A typed view as the JSON a reply carries.
fn json(view: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(view).unwrap_or(serde_json::Value::Null)
}

struct Driver {
    cfg: ParticipantConfig,
    core: Participant,
    out: Outbox,
    /// Applies the core's actions to the log and `out`, in order.
    exec: Executor,
    clock: Clock,
    resource: Box<dyn Resource>,
    /// Told of the first registration (readiness).
    registered: tokio::sync::watch::Sender<bool>,
    /// Told when an operator removed this participant: the node stops.
    removed: tokio::sync::watch::Sender<bool>,
    /// Tells the connector when the coordinator connection is gone or
    /// proved good.
    redial: Redial,
    prep_tx: mpsc::Sender<PrepareDone>,
    /// A resource's `finish` that did not complete at once, when it has:
    /// the actions left over after it, and its answer for the core.
    resume_tx: mpsc::Sender<Finished>,
    /// Events produced while performing actions, handled before the next
    /// input so one step's effects stay in order.
    queue: VecDeque<Event>,
    tracker: TaskTracker,
    /// Operator connections that said hello.
    admins: HashSet<ConnId>,
    /// Whether the admin port requires its key (then every operator
    /// connection proved it), for the audit trail of heuristic decisions.
    admin_authenticated: bool,
}

impl Driver {
    async fn main_loop(
        &mut self,
        mut events: mpsc::Receiver<ConnEvent>,
        mut prepared: mpsc::Receiver<PrepareDone>,
        mut resumed: mpsc::Receiver<Finished>,
        mut admin: mpsc::Receiver<ConnEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), crate::wal::LogFailure> {
        let mut tick = tokio::time::interval(Duration::from_millis(tick_ms(&self.cfg)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The last turn's appends go to the writer first, in one piece
            // (waiting only while its queue is full): no new input until
            // the log has taken them, and never a blocked thread.
            if self.out.log.backlogged() {
                self.out.log.drain().await;
            }
            if let Some(why) = self.out.log.failure() {
                return Err(crate::wal::LogFailure(why));
            }
            crate::sim::select! {
                _ = shutdown.cancelled() => break,
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    self.on_conn_event(ev);
                    while let Ok(ev) = events.try_recv() {
                        self.on_conn_event(ev);
                    }
                }
                Some(ev) = admin.recv() => self.on_admin_event(ev),
                Some(p) = prepared.recv() => {
                    self.step(Event::ResourcePrepared { txn: p.txn, result: p.result });
                }
                Some(Finished { rest, txn, result }) = resumed.recv() => {
                    self.run(rest);
                    self.step(Event::ResourceFinished { txn, result });
                }
                ok = self.out.durable_changed() => {
                    if !ok { break; }
                }
                _ = tick.tick() => self.step(Event::Tick),
            }
            self.release();
            if *self.removed.borrow() {
                break;
            }
            if self.out.checkpoint_due() {
                let mut live = self.core.live_records();
                match self.resource.snapshot().map(crate::wal::snapshot_records) {
                    None => self.out.checkpoint(live),
                    Some(Ok(mut snap)) => {
                        snap.append(&mut live);
                        self.out.checkpoint(snap);
                    }
                    Some(Err(e)) => {
                        // Keep the old segments: they still hold everything.
                        tracing::error!(
                            "checkpoint skipped: {e}; the log keeps growing until this is fixed"
                        );
                        self.out.skip_checkpoint();
                    }
                }
            }
        }
        self.out.close_all();
        match self.out.log.failure() {
            Some(why) => Err(crate::wal::LogFailure(why)),
            None => Ok(()),
        }
    }

    /// The coordinator connection's events, for the core. Events of a
    /// connection that is no longer the current one are dropped.
    fn on_conn_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Opened { conn, tx, peer } => {
                self.out.open(conn, tx, peer);
                self.step(Event::TransportUp { conn });
            }
            ConnEvent::Message { conn, body } | ConnEvent::Query { conn, body, .. } => {
                if self.core.link().conn() != Some(conn) {
                    return;
                }
                match body {
                    Body::Error { code, message, .. } if code == ErrorCode::NotLeader => {
                        self.follow_leader(conn, &message)
                    }
                    body => self.step(Event::Message { body }),
                }
            }
            ConnEvent::Closed { conn } => {
                self.out.closed(conn);
                self.exec.forget(conn);
                if self.core.link().conn() == Some(conn) {
                    self.step(Event::TransportDown);
                    self.redial.connection_lost();
                }
            }
        }
    }

    /// The coordinator member on `conn` is not the leader: dial the leader
    /// it names next (else the next member), and close this connection;
    /// its `Closed` event redials. Not the core's business: to the core it
    /// is a connection lost before welcome.
    fn follow_leader(&mut self, conn: ConnId, message: &str) {
        let member = self.out.peer(conn);
        match crate::protocol::not_leader_address(message) {
            Some(leader) => {
                tracing::info!(
                    "coordinator member at {member} is not the leader; following the leader at {leader}"
                );
                self.redial.redirect(leader);
            }
            None => tracing::info!(
                "coordinator member at {member} is not the leader and knows of none yet ({}); \
                 trying the next member",
                bound::reason(message)
            ),
        }
        self.out.close(conn);
    }

    /// The coordinator address shown in the status: the member connected
    /// to, else every member being tried.
    fn coordinator_shown(&self) -> String {
        match self.core.link().conn().map(|c| self.out.peer(c)) {
            Some(addr) if !addr.is_empty() => addr,
            _ => self.cfg.coordinator_addrs().join(","),
        }
    }

    /// Log what the core says about the session, and tell readiness and
    /// the connector about a registration.
    fn on_session(&mut self, notice: SessionNotice) {
        match notice {
            SessionNotice::Registered { coordinator_state } => {
                self.redial.succeeded();
                let coordinator = self.coordinator_shown();
                tracing::info!(%coordinator_state, %coordinator, "registered with the coordinator");
                self.registered
                    .send_if_modified(|r| !std::mem::replace(r, true));
            }
            SessionNotice::Refused { code, message } => {
                tracing::error!(code = %code, "coordinator refused registration: {message}");
            }
            SessionNotice::StaleTerm {
                term,
                seen,
                message_type,
            } => tracing::warn!(
                "a coordinator member sent `{message_type}` as the leader of term {term}, but term {seen} was already led by another member: it was deposed; refused, connecting elsewhere"
            ),
            SessionNotice::SecretRequired => tracing::error!(
                "the coordinator requires the shared secret: configure secret_file (--secret-file) or TWOPC_SECRET"
            ),
            SessionNotice::BeforeWelcome { message_type } => {
                tracing::warn!("`{message_type}` from the coordinator before welcome; ignored");
            }
            SessionNotice::Silent {
                silent_ms,
                limit_ms,
            } => tracing::warn!(
                "coordinator silent for {silent_ms} ms, more than {limit_ms} ms \
                 (heartbeat_interval_ms × heartbeat_failure_threshold); reconnecting"
            ),
            SessionNotice::Lost => {
                tracing::warn!("lost the coordinator connection; reconnecting");
            }
            SessionNotice::Removed { message } => {
                tracing::error!(
                    "removed from the cluster by an operator ({message}); stopping, without retrying"
                );
                self.removed.send_replace(true);
            }
        }
    }

    /// Operator requests: status, txn list/show, resolve. The answers are
    /// the core's views; this adds its own figures to the status.
    fn on_admin_event(&mut self, ev: ConnEvent) {
        let (conn, body) = match ev {
            ConnEvent::Opened { conn, tx, peer } => return self.out.open(conn, tx, peer),
            ConnEvent::Closed { conn } => {
                self.admins.remove(&conn);
                self.exec.forget(conn);
                return self.out.closed(conn);
            }
            ConnEvent::Message { conn, body } | ConnEvent::Query { conn, body, .. } => (conn, body),
        };
        if !self.admins.contains(&conn) {
            match body {
                Body::Hello {
                    role: Role::Client, ..
                } => {
                    self.admins.insert(conn);
                    let state = "participant".to_string();
                    self.out
                        .deliver(conn, Body::Welcome { state, term: None }, None);
                }
                _ => {
                    let e = WireError::new(
                        ErrorCode::HelloRequired,
                        "say hello with role client first",
                    );
                    self.out.deliver(conn, Body::error(&e), None);
                    self.out.close(conn);
                }
            }
            return;
        }
        let now = self.clock.now();
        let page = PageLimits::new(
            self.cfg.query_page_max,
            self.cfg.query_reply_max_bytes,
            self.cfg.max_frame_bytes,
        );
        let query = match &body {
            Body::Status => AdminQuery::Status,
            Body::TxnList {
                state,
                limit,
                cursor,
            } => AdminQuery::TxnList {
                state: state.as_deref(),
                limit: *limit,
                cursor: cursor.as_deref(),
                page,
            },
            Body::TxnShow { txn } => AdminQuery::TxnShow { txn },
            Body::Resolve {
                txn,
                decision,
                reason,
                operator,
            } => {
                return self.resolve(conn, txn.clone(), *decision, reason, operator.as_deref());
            }
            other => {
                let e = WireError::new(
                    ErrorCode::InvalidMessage,
                    format!("the admin port does not accept `{}`", other.message_type()),
                );
                return self.out.deliver(conn, Body::error(&e), None);
            }
        };
        let reply = match self.core.admin(now, query) {
            AdminReply::Status(core) => Body::StatusReport(json(&StatusReply {
                core,
                wal: self.out.log.stats().snapshot(),
                resource: self.resource.status(),
                coordinator: self.coordinator_shown(),
            })),
            AdminReply::TxnList(page) => Body::TxnInfo(json(&page)),
            AdminReply::Txn(view) => Body::TxnInfo(json(&view)),
            AdminReply::Refused(e) => Body::error(&e),
        };
        self.out.deliver(conn, reply, None);
    }

    /// An operator's heuristic decision: refused unless the transaction is
    /// in doubt; else an event for the core, answered with the
    /// transaction's view once its record is durable.
    fn resolve(
        &mut self,
        conn: ConnId,
        txn: TxnId,
        decision: Decision,
        reason: &str,
        operator: Option<&str>,
    ) {
        if let Err(e) = self.core.check_resolve(&txn) {
            return self.out.deliver(conn, Body::error(&e), None);
        }
        // Who and from where go into the durable record with the reason:
        // the audit trail of a heuristic decision.
        let peer = self.out.peer(conn);
        let operator = bound::reason(operator.unwrap_or("an unnamed operator"));
        let proven = if self.admin_authenticated {
            "with this participant's admin key"
        } else {
            "without authentication"
        };
        tracing::warn!(transaction_id = %txn, %decision, %reason, %operator, %peer, proven, "heuristic decision by an operator");
        let reason = format!("{reason} (by {operator}, {proven}, from {peer})");
        self.step(Event::Resolve {
            txn: txn.clone(),
            decision,
            reason,
        });
        let view = match self
            .core
            .admin(self.clock.now(), AdminQuery::TxnShow { txn: &txn })
        {
            AdminReply::Txn(view) => json(&view),
            _ => serde_json::Value::Null,
        };
        // Answer once the heuristic record is durable.
        let (exec, mut io) = self.io();
        exec.send(&mut io, conn, Body::TxnInfo(view), true);
    }

    /// Handle `ev`, then the events that performing its actions produced.
    fn step(&mut self, ev: Event) {
        self.queue.push_back(ev);
        while let Some(ev) = self.queue.pop_front() {
            let actions = self.core.handle(self.clock.now(), ev);
            self.run(actions.into());
        }
    }

    /// Perform actions in order. A resource `finish` that does not complete
    /// at once suspends the rest (the ACK among them) until it has.
    fn run(&mut self, mut actions: VecDeque<Action>) {
        while let Some(action) = actions.pop_front() {
            if let Action::Reject { error, .. } = &action {
                tracing::warn!(
                    code = error.code.as_str(),
                    "refused message from the coordinator: {}",
                    error.message
                );
            }
            let (exec, mut io) = self.io();
            let go_on = match exec.apply(&mut io, action) {
                None => true,
                Some(Local::Alert { txn, message }) => {
                    alert(txn.as_ref(), &message);
                    true
                }
                Some(Local::Notice { message, .. }) => {
                    tracing::info!("{message}");
                    true
                }
                Some(Local::PrepareResource { txn, data, .. }) => {
                    self.prepare(txn, data);
                    true
                }
                Some(Local::FinishResource { txn, decision }) => {
                    self.finish(txn, decision, &mut actions)
                }
                Some(Local::Session(notice)) => {
                    self.on_session(notice);
                    true
                }
            };
            if !go_on {
                return;
            }
        }
    }

    /// Ask the resource to prepare `txn`; its answer comes back as an event.
    fn prepare(&mut self, txn: TxnId, data: serde_json::Value) {
        let mut fut = self.resource.prepare(&txn, &data);
        if self.cfg.vote_delay_ms == 0 {
            if let Some(result) = (&mut fut).now_or_never() {
                let result = vote_of(&txn, result);
                self.queue
                    .push_back(Event::ResourcePrepared { txn, result });
                return;
            }
        }
        let tx = self.prep_tx.clone();
        let delay = Duration::from_millis(self.cfg.vote_delay_ms);
        self.tracker.spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let result = vote_of(&txn, fut.await);
            let _ = tx.send(PrepareDone { txn, result }).await;
        });
    }

    /// Apply a decision to the resource; its answer goes to the core as a
    /// `ResourceFinished` event. Returns false when it did not complete at
    /// once: then `rest` has been taken, to run when it has, before the
    /// answer.
    fn finish(&mut self, txn: TxnId, decision: Decision, rest: &mut VecDeque<Action>) -> bool {
        tracing::debug!(transaction_id = %txn, %decision, "applying decision");
        // Called once per decision: a finish that is not done at the first
        // poll is awaited, never started again.
        let mut fut = self.resource.finish(&txn, decision);
        match (&mut fut).now_or_never() {
            Some(result) => {
                self.queue
                    .push_back(Event::ResourceFinished { txn, result });
                true
            }
            None => {
                let rest = std::mem::take(rest);
                let tx = self.resume_tx.clone();
                self.tracker.spawn(async move {
                    let result = fut.await;
                    let _ = tx.send(Finished { rest, txn, result }).await;
                });
                false
            }
        }
    }

    /// Deliver the held messages the log now allows.
    fn release(&mut self) {
        let (exec, mut io) = self.io();
        exec.release(&mut io);
    }

    /// The executor, and the log and connections it works on.
    fn io(&mut self) -> (&mut Executor, Io<'_, impl FnMut(&mut Outbox, ConnId, Body)>) {
        let io = Io {
            out: &mut self.out,
            deliver: send_checked,
        };
        (&mut self.exec, io)
    }
}

/// Send a message whose durability requirement is met, running the
/// participant's crash points around votes and acknowledgements.
fn send_checked(out: &mut Outbox, conn: ConnId, body: Body) {
    if crash::enabled() {
        const VOTE_SENT: &str = "participant.after_vote_sent";
        match &body {
            Body::VoteCommit { .. } => crash::hit("participant.after_prepare_logged"),
            Body::Ack {
                decision: Some(Decision::Commit),
                ..
            } => crash::hit("participant.after_decision_logged"),
            _ => {}
        }
        if matches!(body, Body::VoteCommit { .. } | Body::VoteAbort { .. })
            && crash::take(VOTE_SENT)
        {
            out.deliver(conn, body, Some(VOTE_SENT));
            crash::halt(VOTE_SENT);
        }
    }
    out.deliver(conn, body, None);
}

//! The participant process: keeps one connection to the coordinator
//! (through [`crate::net::connector`]), feeds its
//! messages to the participant core, runs the resource, and performs the
//! core's actions in order through the group-commit log.

use super::executor::{Executor, Local};
use super::outbox::{Io, Outbox};
use super::query::{txn_page, PageLimits};
use super::{alert, crash, open_log, Clock};
use crate::config::ParticipantConfig;
use crate::net::connector::{self, ConnectorSpec, Redial};
use crate::net::listener::{self, PortSpec, ReserveFor};
use crate::net::slots::SlotLimits;
use crate::net::{Backoff, ConnEvent};
use crate::protocol::bound;
use crate::protocol::coordinator::TXN_STATES;
use crate::protocol::participant::{
    Event, PState, PTxn, Participant, ParticipantOptions, Prepared,
};
use crate::protocol::{Action, Body, ConnId, Decision, ErrorCode, Role, TxnId, PROTOCOL_VERSION};
use crate::resource::{FinishResult, PrepareResult, Resource};
use crate::security::tls::TlsClient;
use crate::security::ServerSecurity;
use crate::wal::{GroupCommit, WalError};
use futures::FutureExt;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
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
    admin: Option<TcpListener>,
    /// What the admin port requires of operators.
    admin_security: Arc<ServerSecurity>,
    /// TLS to the coordinator, when `tls.ca_file` is set.
    tls: Option<TlsClient>,
    /// True from the first registration with the coordinator on.
    registered: tokio::sync::watch::Sender<bool>,
    _lock: crate::wal::DirLock,
}

/// Why a participant could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("the resource could not start: {0}")]
    Resource(String),
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
        };
        let core = Participant::recover(opts, clock.now(), &records);
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
                let l = TcpListener::bind(&addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?;
                if let Ok(a) = l.local_addr() {
                    tracing::info!("admin listening on {a}");
                }
                Some(l)
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
                let records = crate::wal::snapshot_records(state)
                    .map_err(|e| StartError::Resource(format!("initial data: {e}")))?;
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
            admin_security,
            tls,
            registered: tokio::sync::watch::Sender::new(false),
            _lock: lock,
        })
    }

    /// Turns true when the participant first registers with its coordinator
    /// (ready to vote): for an embedder's readiness signal.
    pub fn registered(&self) -> tokio::sync::watch::Receiver<bool> {
        self.registered.subscribe()
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
            admin_security,
            tls,
            registered,
            _lock,
        } = self;
        let tracker = TaskTracker::new();
        let (admin_tx, admin_rx) = mpsc::channel(256);
        let admin_authenticated = admin_security.secret.is_some();
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
                conn_ids: Arc::new(std::sync::atomic::AtomicU64::new(ADMIN_CONN_BASE + 1)),
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
            conn: None,
            welcomed: false,
            registered,
            last_heard: Instant::now(),
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
        addr: format!("{}:{}", cfg.coordinator_host, cfg.coordinator_port),
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

/// Does a participant-side transaction match an operator's `--state`
/// filter? `heuristic`: decided by an operator, or not carried out as
/// decided.
fn participant_state_matches(t: &PTxn, filter: &str) -> bool {
    if filter == "heuristic" {
        return t.heuristic.is_some() || t.heuristic_outcome.is_some();
    }
    matches!(
        (t.state, filter),
        (PState::Preparing, "in-flight")
            | (PState::Prepared, "in-doubt")
            | (PState::Committed, "committed")
            | (PState::Aborted, "aborted")
    )
}

struct Driver {
    cfg: ParticipantConfig,
    core: Participant,
    out: Outbox,
    /// Applies the core's actions to the log and `out`, in order.
    exec: Executor,
    clock: Clock,
    resource: Box<dyn Resource>,
    conn: Option<ConnId>,
    welcomed: bool,
    /// Told of the first registration (readiness).
    registered: tokio::sync::watch::Sender<bool>,
    last_heard: Instant,
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
        let hb_ms = self.cfg.heartbeat_interval_ms.max(10);
        let mut heartbeat = tokio::time::interval(Duration::from_millis(hb_ms));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let silence =
            Duration::from_millis(hb_ms * self.cfg.heartbeat_failure_threshold.max(1) as u64);
        loop {
            // Appends that found the writer's queue full go first: no new
            // input until the log has taken them (never a blocked thread).
            if self.out.log.backlogged() {
                self.out.log.drain().await;
            }
            if let Some(why) = self.out.log.failure() {
                return Err(crate::wal::LogFailure(why));
            }
            tokio::select! {
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
                _ = heartbeat.tick() => {
                    if let (Some(c), true) = (self.conn, self.welcomed) {
                        if self.last_heard.elapsed() > silence {
                            tracing::warn!("coordinator silent for {} ms; reconnecting", silence.as_millis());
                            self.out.close(c);
                        } else {
                            self.out.deliver(c, Body::Heartbeat, None);
                        }
                    }
                }
                _ = tick.tick() => self.step(Event::Tick),
            }
            self.release();
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

    fn on_conn_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Opened { conn, tx, peer } => {
                self.out.open(conn, tx, peer);
                self.conn = Some(conn);
                self.welcomed = false;
                self.last_heard = Instant::now();
                let hello = Body::Hello {
                    role: Role::Participant,
                    id: Some(self.cfg.id.clone()),
                    protocol_version: PROTOCOL_VERSION,
                };
                self.out.deliver(conn, hello, None);
            }
            ConnEvent::Message { conn, body } | ConnEvent::Query { conn, body, .. } => {
                if Some(conn) != self.conn {
                    return;
                }
                self.last_heard = Instant::now();
                match body {
                    Body::Welcome { state } if !self.welcomed => {
                        self.welcomed = true;
                        self.redial.succeeded();
                        tracing::info!(coordinator_state = %state, "registered with the coordinator");
                        self.registered
                            .send_if_modified(|r| !std::mem::replace(r, true));
                        self.step(Event::Connected { conn });
                    }
                    Body::Error { code, message, .. } if !self.welcomed => {
                        tracing::error!(code = %code, "coordinator refused registration: {message}");
                    }
                    Body::Challenge { .. } if !self.welcomed => {
                        tracing::error!("the coordinator requires the shared secret: configure secret_file (--secret-file) or TWOPC_SECRET");
                        self.out.close(conn);
                    }
                    other if self.welcomed => self.step(Event::Message { body: other }),
                    other => tracing::warn!(
                        "`{}` from the coordinator before welcome; ignored",
                        other.message_type()
                    ),
                }
            }
            ConnEvent::Closed { conn } => {
                self.out.closed(conn);
                self.exec.forget(conn);
                if Some(conn) == self.conn {
                    self.conn = None;
                    if self.welcomed {
                        tracing::warn!("lost the coordinator connection; reconnecting");
                    }
                    self.welcomed = false;
                    self.step(Event::Disconnected);
                    self.redial.connection_lost();
                }
            }
        }
    }

    /// Operator requests: status, txn list/show, resolve.
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
        let now = self.clock.now();
        let err = |code: ErrorCode, message: String| Body::Error {
            code: code.into(),
            message,
            request_id: None,
        };
        if !self.admins.contains(&conn) {
            match body {
                Body::Hello {
                    role: Role::Client, ..
                } => {
                    self.admins.insert(conn);
                    let state = "participant".to_string();
                    self.out.deliver(conn, Body::Welcome { state }, None);
                }
                _ => {
                    let e = err(
                        ErrorCode::HelloRequired,
                        "say hello with role client first".into(),
                    );
                    self.out.deliver(conn, e, None);
                    self.out.close(conn);
                }
            }
            return;
        }
        let reply = match body {
            Body::Status => {
                let mut s = self.core.status();
                s["wal"] = self.out.log.stats.snapshot();
                s["resource"] = self.resource.status();
                s["coordinator"] = format!(
                    "{}:{}",
                    self.cfg.coordinator_host, self.cfg.coordinator_port
                )
                .into();
                Body::StatusReport(s)
            }
            Body::TxnList { state: Some(st) } if !TXN_STATES.contains(&st.as_str()) => err(
                ErrorCode::InvalidMessage,
                format!("unknown state `{st}`; use one of {}", TXN_STATES.join(", ")),
            ),
            Body::TxnList { state } => {
                let mut v: Vec<(&TxnId, &PTxn)> = self
                    .core
                    .txns()
                    .filter(|(_, t)| {
                        state
                            .as_deref()
                            .is_none_or(|st| participant_state_matches(t, st))
                    })
                    .collect();
                v.sort_by(|a, b| b.1.since_ms.cmp(&a.1.since_ms).then(b.0.cmp(a.0)));
                let limits = PageLimits::new(
                    self.cfg.query_page_max,
                    self.cfg.query_reply_max_bytes,
                    self.cfg.max_frame_bytes,
                );
                let entries = v.iter().map(|(id, t)| (id.0.clone(), t.summary(id, now)));
                Body::TxnInfo(txn_page(entries, limits))
            }
            Body::TxnShow { txn } => match self.core.txn(&txn) {
                Some(t) => Body::TxnInfo(t.summary(&txn, now)),
                None => err(
                    ErrorCode::UnknownTransaction,
                    format!("transaction `{txn}` is not known to this participant"),
                ),
            },
            Body::Resolve {
                txn,
                decision,
                reason,
                operator,
            } => match self.core.txn(&txn).map(|t| t.state) {
                Some(PState::Prepared) => {
                    // Who and from where go into the durable record with the
                    // reason: the audit trail of a heuristic decision.
                    let peer = self.out.peer(conn);
                    let operator = crate::protocol::bound::reason(
                        operator.as_deref().unwrap_or("an unnamed operator"),
                    );
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
                    let summary = self
                        .core
                        .txn(&txn)
                        .map(|t| t.summary(&txn, now))
                        .unwrap_or_default();
                    // Answer once the heuristic record is durable.
                    let (exec, mut io) = self.io();
                    exec.send(&mut io, conn, Body::TxnInfo(summary), true);
                    return;
                }
                Some(s) => err(
                    ErrorCode::Refused,
                    format!(
                        "transaction `{txn}` is {}, not in doubt; nothing to resolve",
                        s.as_str()
                    ),
                ),
                None => err(
                    ErrorCode::UnknownTransaction,
                    format!("transaction `{txn}` is not known to this participant"),
                ),
            },
            other => err(
                ErrorCode::InvalidMessage,
                format!("the admin port does not accept `{}`", other.message_type()),
            ),
        };
        self.out.deliver(conn, reply, None);
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
                Some(Local::PrepareResource { txn, data, .. }) => {
                    self.prepare(txn, data);
                    true
                }
                Some(Local::FinishResource { txn, decision }) => {
                    self.finish(txn, decision, &mut actions)
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

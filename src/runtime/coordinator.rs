//! The coordinator process: accepts connections, feeds their messages to the
//! coordinator core, and performs the core's actions in order. Records go to
//! the group-commit log; messages that must follow a durable record wait for
//! the log's durable watermark. Operator queries from the HTTP admin API
//! arrive on their own bounded channel and are answered between events.

use super::executor::{Executor, Local};
use super::http::{
    AdminAnswer, AdminCall, AdminChannels, AdminQuery, AdminServer, HttpOptions, TxnListQuery,
};
use super::metrics::{MetricsSnapshot, WalSnapshot};
use super::outbox::{Io, Log, Outbox};
use super::timing::{PhaseTimes, Scope};
use super::{alert, crash, open_log, Clock};
use crate::config::CoordinatorConfig;
use crate::net::listener::{self, PortSpec, ReserveFor};
use crate::net::slots::SlotLimits;
use crate::net::ConnEvent;
use crate::net::ErrorCounts;
use crate::protocol::coordinator::{to_json, Coordinator, CoordinatorOptions, Event, TXN_STATES};
use crate::protocol::page::{
    page, txn_list_page, ListKey, Order, PageLimits, PageRequest, ParamError,
};
use crate::protocol::{Action, Body, ConnId, ErrorCode, Record, TxnId};
use crate::replica::{Group, GroupConfig, GroupError, RaftLog};
use crate::security::ServerSecurity;
use crate::wal::{GroupCommit, WalError};
use serde_json::json;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("cannot listen on {addr}: {source}; choose another port or stop the process using it")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] crate::security::tls::TlsError),
    #[error(transparent)]
    AdminBind(#[from] super::http::BindError),
    #[error(transparent)]
    Group(#[from] GroupError),
}

/// A coordinator that has opened its log and bound its port.
pub struct CoordinatorServer {
    cfg: CoordinatorConfig,
    listener: listener::Listener,
    /// The HTTP admin API, when `admin_port` is set.
    admin: Option<AdminServer>,
    /// The core and its log: the process's own log for a single
    /// coordinator; for a member of a group, the group (the core is built
    /// whenever this member becomes the leader).
    mode: Mode,
    clock: Clock,
    security: Arc<ServerSecurity>,
    _lock: crate::wal::DirLock,
    /// The group's own tasks (Raft port, Raft), stopped with the server.
    group_stop: CancellationToken,
    group_tasks: TaskTracker,
}

enum Mode {
    Single {
        core: Box<Coordinator>,
        log: GroupCommit,
    },
    Group(Group),
}

impl CoordinatorServer {
    /// Open the log, recover the core from it, and bind the listening port.
    pub async fn start(cfg: CoordinatorConfig) -> Result<CoordinatorServer, StartError> {
        let clock = Clock::start();
        let security = Arc::new(ServerSecurity::new(
            cfg.secret.clone(),
            &cfg.tls,
            crate::security::auth::Port::Coordinator,
        )?);
        let group_stop = CancellationToken::new();
        let group_tasks = TaskTracker::new();
        let members = cfg
            .members()
            .map_err(|e| StartError::Group(GroupError::Config(e.to_string())))?;
        let (mode, lock) = if members.is_empty() {
            let crate::wal::Opened {
                wal, lock, records, ..
            } = open_log(&cfg.data_dir, &cfg.wal)?;
            let core = Coordinator::recover(core_options(&cfg), clock.now(), &records);
            let redriven = core
                .txns()
                .filter(|t| t.recovered && t.ended_ms.is_none())
                .count();
            if redriven > 0 {
                tracing::info!(
                    redriven,
                    "recovered commit decisions without END; re-driving them"
                );
            }
            let log = GroupCommit::start(wal, cfg.max_in_flight * 4 + 1024);
            (
                Mode::Single {
                    core: Box::new(core),
                    log,
                },
                lock,
            )
        } else {
            let lock = group_dir_lock(&cfg.data_dir)?;
            let admin = cfg.advertised_admin(&members);
            let gcfg = GroupConfig {
                me: cfg.node_id,
                members,
                dir: cfg.data_dir.join("raft"),
                election_timeout_ms: cfg.raft_election_timeout_ms,
                heartbeat_ms: cfg.raft_heartbeat_ms,
                snapshot_every: cfg.raft_snapshot_every,
                segment_max_bytes: cfg.wal.segment_max_bytes,
                limits: crate::replica::net::PortLimits {
                    max_frame_bytes: cfg.raft_max_frame_bytes,
                    max_connections: cfg.raft_max_connections,
                    handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms),
                    commit_hold: Duration::from_millis(cfg.raft_commit_hold_ms),
                },
                join: cfg.join,
                raft_bind: cfg.raft_bind.clone(),
                admin,
                unsafe_no_fsync: cfg.wal.unsafe_no_fsync,
            };
            if cfg.wal.unsafe_no_fsync {
                tracing::warn!("!!! wal.unsafe_no_fsync is ON: the Raft log is NOT synced; a machine crash can lose or split decisions. Use for benchmarks only. !!!");
            }
            let group = Group::start(
                gcfg,
                core_options(&cfg),
                clock.started(),
                cfg.secret.as_deref(),
                group_stop.clone(),
                group_tasks.clone(),
            )
            .await?;
            (Mode::Group(group), lock)
        };
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let listener = listener::Listener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let admin = match cfg.admin_port {
            Some(port) => Some(AdminServer::bind(&cfg.admin_host, port, http_options(&cfg)).await?),
            None => None,
        };
        Ok(CoordinatorServer {
            cfg,
            listener,
            admin,
            mode,
            clock,
            security,
            _lock: lock,
            group_stop,
            group_tasks,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The HTTP admin API's address, when it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// Serve until `shutdown` is cancelled.
    /// Returns when `shutdown` is cancelled, or with the reason when the
    /// log failed (the node stopped; a restart recovers from its log).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), crate::wal::LogFailure> {
        // This node's own tasks stop with it, whatever else the token stops.
        let shutdown = shutdown.child_token();
        let CoordinatorServer {
            cfg,
            listener,
            admin,
            mode,
            clock,
            security,
            _lock,
            group_stop,
            group_tasks,
        } = self;
        let tracker = TaskTracker::new();
        let (ev_tx, mut ev_rx) = mpsc::channel(cfg.max_connections.max(16) * 4);
        security.announce("coordinator port");
        // Connection ids for TCP connections and HTTP submits alike.
        let conn_ids = Arc::new(AtomicU64::new(1));
        let errors = Arc::new(ErrorCounts::default());
        let (admin_tx, mut admin_rx) = mpsc::channel(cfg.admin_max_connections.max(1) * 2);
        if let Some(admin) = admin {
            let channels = AdminChannels {
                calls: admin_tx,
                events: ev_tx.clone(),
                conn_ids: conn_ids.clone(),
                errors: errors.clone(),
            };
            admin.spawn(channels, security.clone(), shutdown.clone(), &tracker);
        } else {
            drop(admin_tx);
        }
        let port = PortSpec {
            name: "coordinator port",
            max_connections_key: "max_connections",
            reserved_key: "participant_reserved_connections",
            limits: SlotLimits {
                shared: cfg.max_connections,
                reserved: cfg.participant_reserved_connections,
                preauth_per_address: cfg.preauth_max_per_address,
            },
            reserve_for: ReserveFor::Participants,
            max_frame_bytes: cfg.max_frame_bytes,
            preauth_timeout: Duration::from_millis(
                cfg.preauth_timeout_ms.min(cfg.handshake_timeout_ms),
            ),
            send_buffer_max_bytes: cfg.send_buffer_max_bytes,
            query_in_flight_max: cfg.query_in_flight_max,
            conn_ids,
            security: security.clone(),
            errors: Some(errors.clone()),
        };
        tracker.spawn(listener::accept_loop(
            listener,
            port,
            ev_tx,
            shutdown.clone(),
            tracker.clone(),
        ));
        let result = match mode {
            Mode::Single { core, log } => {
                let mut driver =
                    Driver::new(&cfg, *core, log.into(), clock, &errors, &security, None);
                let r = driver
                    .main_loop(&mut ev_rx, &mut admin_rx, shutdown.clone())
                    .await;
                drop(driver);
                r
            }
            Mode::Group(group) => {
                let r = run_member(
                    &cfg,
                    &group,
                    &mut ev_rx,
                    &mut admin_rx,
                    clock,
                    &errors,
                    &security,
                    &shutdown,
                )
                .await;
                let _ = tokio::time::timeout(Duration::from_secs(2), group.raft.shutdown()).await;
                r
            }
        };
        tracker.close();
        // Let writers flush what is queued; bounded so shutdown cannot hang.
        shutdown.cancel();
        group_stop.cancel();
        group_tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), group_tasks.wait()).await;
        result
    }
}

/// Create a group member's data directory and lock it. Inside a
/// simulation its Raft log and snapshot are on simulated disks, and there
/// is no directory.
fn group_dir_lock(dir: &std::path::Path) -> Result<crate::wal::DirLock, StartError> {
    #[cfg(feature = "sim")]
    if crate::sim::disk(&dir.join("raft")).is_some() {
        return Ok(crate::wal::DirLock::none());
    }
    std::fs::create_dir_all(dir).map_err(|source| {
        StartError::Group(GroupError::Storage {
            dir: dir.display().to_string(),
            source,
        })
    })?;
    Ok(crate::wal::DirLock::acquire(dir)?)
}

/// A member of a coordinator group: stand by (answering `not_leader`)
/// until this member leads, then drive a core rebuilt from the group's
/// state until it stops leading; again until `shutdown`.
#[allow(clippy::too_many_arguments)]
async fn run_member(
    cfg: &CoordinatorConfig,
    group: &Group,
    events: &mut mpsc::Receiver<ConnEvent>,
    admin: &mut mpsc::Receiver<AdminCall>,
    clock: Clock,
    errors: &Arc<ErrorCounts>,
    security: &Arc<ServerSecurity>,
    shutdown: &CancellationToken,
) -> Result<(), crate::wal::LogFailure> {
    loop {
        let term = match stand_by(group, events, admin, errors, shutdown).await {
            Ok(Some(term)) => term,
            Ok(None) => return Ok(()),
            // The Raft log failed: stop, so that a restart recovers from
            // what is durable (as with a single coordinator's log).
            Err(why) => return Err(crate::wal::LogFailure(why)),
        };
        // A state this member cannot read stops it, as a damaged log does.
        let records = group
            .machine
            .live_records()
            .map_err(crate::wal::LogFailure)?;
        let core = Coordinator::recover(core_options(cfg), clock.now(), &records);
        let redriven = core
            .txns()
            .filter(|t| t.recovered && t.ended_ms.is_none())
            .count();
        tracing::info!(
            term,
            redriven,
            "this member leads the coordinator group; re-driving the decisions not yet acknowledged"
        );
        let lost = shutdown.child_token();
        tokio::spawn(crate::replica::watch_leadership(
            group.clone(),
            term,
            lost.clone(),
        ));
        let log = RaftLog::start(group, lost.clone());
        let mut driver = Driver::new(
            cfg,
            core,
            Log::Replicated(log),
            clock,
            errors,
            security,
            Some(group.clone()),
        );
        driver.out.term = Some(term);
        let r = driver.main_loop(events, admin, lost.clone()).await;
        lost.cancel();
        // Nothing of this leadership reaches Raft once its log is dropped
        // (see `await_leadership`'s barrier).
        drop(driver);
        r?;
        if shutdown.is_cancelled() {
            return Ok(());
        }
        tracing::warn!(term, "this member no longer leads the coordinator group; its connections were closed and clients and participants go to the new leader");
    }
}

/// Answer every connection with `not_leader` (naming the leader when one
/// is known) and status queries with the group's view, until this member
/// may lead (its term) or `shutdown` (None).
async fn stand_by(
    group: &Group,
    events: &mut mpsc::Receiver<ConnEvent>,
    admin: &mut mpsc::Receiver<AdminCall>,
    errors: &Arc<ErrorCounts>,
    shutdown: &CancellationToken,
) -> Result<Option<u64>, String> {
    let mut conns: HashMap<ConnId, mpsc::Sender<crate::net::Outgoing>> = HashMap::new();
    let leadership = crate::replica::await_leadership(group, shutdown);
    tokio::pin!(leadership);
    let mut admin_open = true;
    let result = loop {
        crate::sim::select! {
            term = &mut leadership => break term,
            ev = events.recv() => match ev {
                None => break Ok(None),
                Some(ConnEvent::Opened { conn, tx, .. }) => {
                    conns.insert(conn, tx);
                }
                Some(ConnEvent::Message { conn, .. } | ConnEvent::Query { conn, .. }) => {
                    if let Some(tx) = conns.remove(&conn) {
                        let v = group.view();
                        // A stale view may still name this member.
                        let leader = v
                            .leader
                            .filter(|l| *l != v.me)
                            .zip(v.leader_addr.clone());
                        let message = crate::protocol::not_leader_message(
                            v.me,
                            v.term,
                            leader.as_ref().map(|(id, a)| (*id, a.as_str())),
                        );
                        errors.count(ErrorCode::NotLeader);
                        let body = Body::Error {
                            code: ErrorCode::NotLeader.into(),
                            message,
                            request_id: None,
                        };
                        let _ = tx.try_send(crate::net::Outgoing::Frame(crate::net::encode(body)));
                        let _ = tx.try_send(crate::net::Outgoing::Close);
                    }
                }
                Some(ConnEvent::Closed { conn }) => {
                    conns.remove(&conn);
                }
            },
            call = admin.recv(), if admin_open => match call {
                None => admin_open = false,
                Some(call) => {
                    let answer = match call.query {
                        AdminQuery::Status => AdminAnswer::Json(follower_status(group)),
                        AdminQuery::Metrics => AdminAnswer::Metrics(Box::new(MetricsSnapshot {
                            group: Some(super::metrics::GroupMetrics::of(&group.view())),
                            errors: MetricsSnapshot::errors_of(errors),
                            ..MetricsSnapshot::default()
                        })),
                        _ => AdminAnswer::NotLeader(not_leader_json(group)),
                    };
                    let _ = call.reply.send(answer);
                }
            },
        }
    };
    // Connections that said nothing yet: the driver that follows does not
    // know them.
    for tx in conns.values() {
        let _ = tx.try_send(crate::net::Outgoing::Close);
    }
    result
}

/// What a member that does not lead answers on its admin API to anything
/// but status, health and metrics: who leads, and where its admin API is.
pub(crate) fn not_leader_json(group: &Group) -> serde_json::Value {
    let v = group.view();
    let (leader, addr, admin) = match v.leader.filter(|l| *l != v.me) {
        Some(l) => (Some(l), v.leader_addr, v.leader_admin),
        None => (None, None, None),
    };
    let message = match (leader, &admin, &addr) {
        (Some(l), Some(a), _) => format!(
            "coordinator member {} is not the leader (term {}); member {l} leads: send the request to its admin API at {a}",
            v.me, v.term
        ),
        (Some(l), None, Some(c)) => format!(
            "coordinator member {} is not the leader (term {}); member {l} leads (its coordinator port is {c}, its admin address is not known here): send the request to its admin API",
            v.me, v.term
        ),
        _ => format!(
            "coordinator member {} is not the leader (term {}) and knows no leader (an election is under way, or no majority is reachable); retry, or try another member",
            v.me, v.term
        ),
    };
    json!({
        "error": ErrorCode::NotLeader.as_str(),
        "message": message,
        "term": v.term,
        "leader": leader,
        "leader_addr": addr,
        "leader_admin": admin,
    })
}

/// `status` on a member that does not lead.
fn follower_status(group: &Group) -> serde_json::Value {
    let mut v = group.view();
    // Raft may still call this member the leader after it stepped down
    // (no majority heard from): it leads nothing here.
    if v.leader == Some(v.me) {
        v.leader = None;
        v.leader_addr = None;
        v.role = "no_quorum";
    }
    let state = if v.leader.is_some_and(|l| l != v.me) {
        "FOLLOWER"
    } else {
        "NO_LEADER"
    };
    json!({
        "state": state,
        "group": v,
    })
}

fn http_options(cfg: &CoordinatorConfig) -> HttpOptions {
    HttpOptions {
        max_connections: cfg.admin_max_connections,
        max_body_bytes: cfg.admin_max_body_bytes,
        header_timeout: Duration::from_millis(cfg.admin_header_timeout_ms),
        // Queued until ready, then the vote deadline, then the log: the core
        // answers well within twice the vote timeout.
        submit_timeout: Duration::from_secs_f64(cfg.timeout_seconds * 2.0 + 10.0),
        auth_nonces_max: cfg.admin_auth_nonces_max,
        auth_nonce_ttl_ms: cfg.admin_auth_nonce_ttl_ms,
        open_metrics: cfg.admin_open_metrics,
        auth_challenges_per_second: cfg.admin_auth_challenges_per_second,
        allowed_hosts: if cfg.admin_allowed_hosts.is_empty() {
            let mut v: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
            v.push(cfg.admin_host.clone());
            v
        } else {
            cfg.admin_allowed_hosts.clone()
        },
    }
}

fn core_options(cfg: &CoordinatorConfig) -> CoordinatorOptions {
    let start_ms = crate::sim::unix_millis();
    CoordinatorOptions {
        expected_participants: cfg.expected_participants,
        vote_timeout_ms: (cfg.timeout_seconds * 1000.0) as u64,
        max_in_flight: cfg.max_in_flight,
        max_pending_submits: cfg.max_in_flight,
        dynamic_joining: cfg.enable_dynamic_joining,
        resend_initial_ms: cfg.resend_initial_ms,
        resend_max_ms: cfg.resend_max_ms,
        liveness_timeout_ms: cfg.heartbeat_interval_ms * cfg.heartbeat_failure_threshold as u64,
        history_limit: cfg.history_limit,
        history_max_bytes: cfg.history_max_bytes,
        timeline_max_events: cfg.timeline_max_events,
        join_grace_ms: cfg.join_grace_ms,
        // Base-36 start time: ids stay unique across restarts.
        // plus a random suffix for two starts within one millisecond.
        txn_id_prefix: format!(
            "{}{}",
            to_base36(start_ms),
            to_base36(crate::sim::random_range(0, 36 * 36 - 1) as u128 + 36 * 36)
        ),
    }
}

fn to_base36(mut n: u128) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

struct Driver {
    core: Coordinator,
    /// The group this member leads, for a member of one.
    group: Option<Group>,
    out: Outbox,
    /// Applies the core's actions to the log and `out`, in order.
    exec: Executor,
    clock: Clock,
    /// Commit decisions of which at least one message left (crash points).
    decision_sent: HashSet<TxnId>,
    /// Decisions sent, by transaction and participant host: only with the
    /// deliberate bug `sim::Bug::DecisionToWrongParticipant` armed (tests
    /// of the simulation's checks); empty otherwise.
    replays: HashSet<(TxnId, String)>,
    /// Error frames sent, by code (metrics).
    errors: Arc<ErrorCounts>,
    /// The ports' security: refused authentications (metrics).
    security: Arc<ServerSecurity>,
    /// The transaction of the message being handled, for log lines about
    /// refusals (which the core words without a transaction field).
    current_txn: Option<TxnId>,
    /// Operator queries waiting for an answer, oldest first, and messages
    /// that came after one on the same connection (replies keep the order
    /// of requests). Each query holds one of its connection's
    /// `query_in_flight_max` permits; the reader sends nothing while they
    /// are all taken, so this holds a few entries per connection.
    queries: VecDeque<(ConnId, Body, Option<OwnedSemaphorePermit>)>,
    /// Entries in `queries`, by connection.
    queued: HashMap<ConnId, usize>,
    /// How much one `txn_list` reply may carry.
    page: PageLimits,
    /// Phase latencies in microseconds (metrics, `txn show`, outcomes).
    times: PhaseTimes,
}

/// Operator queries answered per loop turn, after the turn's protocol
/// events: votes, decisions and heartbeats never wait behind a burst of
/// large replies.
const QUERIES_PER_TURN: usize = 8;

/// Events handled per loop turn before held messages are released; bounds
/// latency while still batching under load.
const EVENTS_PER_TURN: usize = 512;

impl Driver {
    fn new(
        cfg: &CoordinatorConfig,
        core: Coordinator,
        log: Log,
        clock: Clock,
        errors: &Arc<ErrorCounts>,
        security: &Arc<ServerSecurity>,
        group: Option<Group>,
    ) -> Driver {
        Driver {
            core,
            group,
            out: Outbox::new(log, cfg.wal.segment_max_bytes, cfg.max_frame_bytes),
            clock,
            exec: Executor::default(),
            decision_sent: HashSet::new(),
            replays: HashSet::new(),
            errors: errors.clone(),
            security: security.clone(),
            current_txn: None,
            queries: VecDeque::new(),
            queued: HashMap::new(),
            page: PageLimits::new(
                cfg.query_page_max,
                cfg.query_reply_max_bytes,
                cfg.max_frame_bytes,
            ),
            times: PhaseTimes::new(cfg.history_limit),
        }
    }

    async fn main_loop(
        &mut self,
        events: &mut mpsc::Receiver<ConnEvent>,
        admin: &mut mpsc::Receiver<AdminCall>,
        shutdown: CancellationToken,
    ) -> Result<(), crate::wal::LogFailure> {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // False once the admin server is gone (or was never started).
        let mut admin_open = true;
        // The last turn took as many events as a turn may (more are queued).
        let mut full_turn = false;
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
                    self.on_event(ev);
                    let mut handled = 0;
                    while handled < EVENTS_PER_TURN {
                        match events.try_recv() {
                            Ok(ev) => self.on_event(ev),
                            Err(_) => break,
                        }
                        handled += 1;
                    }
                    full_turn = handled == EVENTS_PER_TURN;
                }
                ok = self.out.durable_changed() => {
                    if !ok { break; }
                }
                _ = tick.tick() => self.step(Event::Tick),
                call = admin.recv(), if admin_open => match call {
                    Some(call) => self.on_admin(call),
                    None => admin_open = false,
                },
                // Queries left over from the last turn: answer them now,
                // unless one of the branches above has something first.
                _ = std::future::ready(()), if !self.queries.is_empty() => {}
            }
            self.answer_queries();
            self.note_durable();
            self.release();
            if self.out.checkpoint_due() {
                let live = self.core.live_records();
                self.out.checkpoint(live);
            }
            // Events are still waiting: the next `recv` would be ready at
            // once, and on a current-thread runtime the connections'
            // writers would not run until this task waits. Let them write
            // this turn's messages first, or a burst of submits (thousands
            // in flight) fills a participant's queue (4096 frames) before
            // any of it is written, and the connection is closed.
            if std::mem::take(&mut full_turn) {
                tokio::task::yield_now().await;
            }
        }
        self.out.close_all();
        match self.out.log.failure() {
            Some(why) => Err(crate::wal::LogFailure(why)),
            None => Ok(()),
        }
    }

    /// Tell the core which commit decisions are now durable (before the
    /// messages held for them are released, so timelines keep wire order).
    fn note_durable(&mut self) {
        if let Some(forced) = self.exec.forced_durable(self.out.durable()) {
            self.step(Event::Durable { forced });
        }
    }

    /// Answer a query from the HTTP admin API.
    fn on_admin(&mut self, call: AdminCall) {
        let answer = match call.query {
            AdminQuery::Status => AdminAnswer::Json(self.status_json()),
            AdminQuery::Transactions(list) => match self.txn_list_json(&list) {
                Ok(v) => AdminAnswer::Json(v),
                Err(e) => AdminAnswer::InvalidParam(e),
            },
            AdminQuery::Participants { limit, cursor } => {
                match self.participants_json(limit, cursor.as_deref()) {
                    Ok(v) => AdminAnswer::Json(v),
                    Err(e) => AdminAnswer::InvalidParam(e),
                }
            }
            AdminQuery::Transaction { id } => match self.txn_detail(&id) {
                Some(v) => AdminAnswer::Json(v),
                None => AdminAnswer::NotFound(unknown_txn_message(&id)),
            },
            AdminQuery::Metrics => AdminAnswer::Metrics(Box::new(self.metrics())),
        };
        // The requester may have given up; nothing to do then.
        let _ = call.reply.send(answer);
    }

    fn status_json(&self) -> serde_json::Value {
        let mut report = to_json(&self.core.status_report());
        report["wal"] = self.out.log.stats().snapshot();
        if let Some(g) = &self.group {
            report["group"] = json!(g.view());
        }
        report["connections"] = json!(self.out.connections());
        report
    }

    /// `GET /participants`: one page of the registered participants, by
    /// id (shorter ids first, so `p2` before `p10`).
    fn participants_json(
        &self,
        limit: Option<u64>,
        cursor: Option<&str>,
    ) -> Result<serde_json::Value, ParamError> {
        let req = PageRequest::new(limit, cursor, self.page)?;
        let report = self.core.status_report();
        let mut members: Vec<(ListKey, _)> = report
            .participants
            .into_iter()
            .map(|m| (ListKey::new(0, &m.id.0), m))
            .collect();
        Order::Ascending.sort(&mut members);
        let mut v = page(
            "participants",
            members,
            Order::Ascending,
            &req,
            self.page,
            |m| to_json(&m),
        );
        v["state"] = to_json(&report.state);
        v["expected_participants"] = json!(report.expected_participants);
        Ok(v)
    }

    /// `txn show`: the core's detail, plus the phase times in microseconds
    /// when this process measured them (not for a transaction recovered
    /// from the log, nor one ended so long ago that they were dropped).
    fn txn_detail(&self, id: &TxnId) -> Option<serde_json::Value> {
        let mut v = to_json(&self.core.txn(id)?.detail(self.clock.now()));
        if let Some(s) = self.times.stamps(id) {
            for (key, us) in [
                ("decided_after_us", s.decided_after_us()),
                ("durable_after_us", s.durable_after_us()),
                ("ended_after_us", s.ended_after_us()),
            ] {
                v[key] = json!(us);
            }
        }
        Some(v)
    }

    fn metrics(&self) -> MetricsSnapshot {
        let members = self.core.members();
        MetricsSnapshot {
            ready: self.core.state() == crate::protocol::coordinator::ClusterState::Ready,
            expected_participants: self.core.expected(),
            participants_registered: self.core.registered_count(),
            participants_connected: members.values().filter(|m| m.conn.is_some()).count(),
            stats: self.core.stats().clone(),
            phases: self.times.histograms().clone(),
            open: self.core.open_txns(),
            wal: WalSnapshot::of(self.out.log.stats()),
            connections: self.out.connections(),
            errors: MetricsSnapshot::errors_of(&self.errors),
            auth_failures: self.security.failures.counts(),
            group: self
                .group
                .as_ref()
                .map(|g| super::metrics::GroupMetrics::of(&g.view())),
        }
    }

    fn on_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Opened { conn, tx, peer } => {
                tracing::debug!(%peer, conn = conn.0, "connection opened");
                self.out.open(conn, tx, peer);
            }
            // Operator requests are answered here (they need runtime figures),
            // but only after hello; before it the core refuses them.
            ConnEvent::Message { conn, body } | ConnEvent::Query { conn, body, .. }
                if !self.core.is_greeted(conn) =>
            {
                self.step(Event::Message { conn, body })
            }
            ConnEvent::Query { conn, body, permit } => self.enqueue(conn, body, Some(permit)),
            ConnEvent::Message { conn, body } if self.queued.contains_key(&conn) => {
                self.enqueue(conn, body, None)
            }
            ConnEvent::Message { conn, body } => self.on_message(conn, body),
            ConnEvent::Closed { conn } => {
                // Its waiting queries go (their permits with them).
                if self.queued.remove(&conn).is_some() {
                    self.queries.retain(|(c, _, _)| *c != conn);
                }
                self.out.closed(conn);
                self.exec.forget(conn);
                self.step(Event::Disconnected { conn });
            }
        }
    }

    fn enqueue(&mut self, conn: ConnId, body: Body, permit: Option<OwnedSemaphorePermit>) {
        *self.queued.entry(conn).or_insert(0) += 1;
        self.queries.push_back((conn, body, permit));
    }

    /// Answer up to `QUERIES_PER_TURN` waiting operator queries, and the
    /// messages queued behind them (cheap, and not counted: so the queue
    /// never holds more than one turn's messages besides the queries).
    fn answer_queries(&mut self) {
        let mut answered = 0;
        while answered < QUERIES_PER_TURN {
            let Some((conn, body, permit)) = self.queries.pop_front() else {
                return;
            };
            answered += usize::from(permit.is_some());
            if let Some(n) = self.queued.get_mut(&conn) {
                *n -= 1;
                if *n == 0 {
                    self.queued.remove(&conn);
                }
            }
            // A connection closed for not reading gets no more work done.
            if self.out.is_open(conn) {
                self.on_message(conn, body);
            }
            drop(permit);
        }
    }

    /// A message from a greeted connection.
    fn on_message(&mut self, conn: ConnId, body: Body) {
        match body {
            Body::Status => {
                // Status is answered here so it can include runtime figures.
                let report = self.status_json();
                self.out.deliver(conn, Body::StatusReport(report), None);
            }
            Body::TxnList {
                state,
                limit,
                cursor,
            } => {
                let list = TxnListQuery {
                    state,
                    limit,
                    cursor,
                };
                let reply = match self.txn_list_json(&list) {
                    Ok(v) => Body::TxnInfo(v),
                    Err(e) => self.error_body(ErrorCode::InvalidMessage, e.message),
                };
                self.out.deliver(conn, reply, None);
            }
            Body::TxnShow { txn } => {
                let reply = match self.txn_detail(&txn) {
                    Some(v) => Body::TxnInfo(v),
                    None => {
                        self.error_body(ErrorCode::UnknownTransaction, unknown_txn_message(&txn))
                    }
                };
                self.out.deliver(conn, reply, None);
            }
            Body::GroupChange { add, remove } => self.group_change(conn, add, remove),
            body => self.step(Event::Message { conn, body }),
        }
    }

    /// `twopc cluster add|remove`: change the group's membership through
    /// Raft (a new member is first brought up to date as a learner), and
    /// answer with the group's view once committed, from a task of its own
    /// (it takes as long as the new member needs to catch up).
    fn group_change(&mut self, conn: ConnId, add: Option<String>, remove: Option<u64>) {
        let refuse = |this: &mut Driver, message: String| {
            let body = this.error_body(ErrorCode::Refused, message);
            this.out.deliver(conn, body, None);
        };
        let Some(group) = self.group.clone() else {
            return refuse(
                self,
                "this coordinator is not a member of a group (no `peers`); membership changes need one".into(),
            );
        };
        let Some(tx) = self.out.sender(conn) else {
            return;
        };
        let errors = self.errors.clone();
        tokio::spawn(async move {
            let reply = match crate::replica::change_members(&group, add, remove).await {
                Ok(()) => Body::StatusReport(json!({ "group": group.view() })),
                Err(message) => {
                    errors.count(ErrorCode::Refused);
                    Body::Error {
                        code: ErrorCode::Refused.into(),
                        message,
                        request_id: None,
                    }
                }
            };
            let _ = tx
                .send(crate::net::Outgoing::Frame(crate::net::encode(reply)))
                .await;
        });
    }

    /// An error reply to an operator request, counted.
    fn error_body(&self, code: ErrorCode, message: String) -> Body {
        self.errors.count(code);
        Body::Error {
            code: code.into(),
            message,
            request_id: None,
        }
    }

    /// `txn_list`: one page of the transactions in `list.state` (all when
    /// absent), newest start first, within the page limits
    /// (`query_page_max`, `query_reply_max_bytes`); the parameter at fault
    /// otherwise.
    fn txn_list_json(&self, list: &TxnListQuery) -> Result<serde_json::Value, ParamError> {
        let state = list.state.as_deref();
        if let Some(st) = state {
            if !TXN_STATES.contains(&st) {
                return Err(ParamError {
                    param: "state",
                    message: format!("unknown state `{st}`; use one of {}", TXN_STATES.join(", ")),
                });
            }
        }
        let now = self.clock.now();
        let txns = self
            .core
            .txns()
            .filter(|t| state.is_none_or(|st| t.matches_state(st)))
            .map(|t| (t.started_ms, t.id.0.as_str(), t));
        txn_list_page(txns, list.limit, list.cursor.as_deref(), self.page, |t| {
            to_json(&t.summary(now))
        })
    }

    fn step(&mut self, ev: Event) {
        let (now, now_us) = self.clock.now_with_micros();
        self.current_txn = match &ev {
            Event::Message { body, .. } => body.txn().cloned(),
            Event::Durable { .. } => None,
            Event::Disconnected { .. } | Event::Tick => None,
        };
        let scope = Scope::of(&ev);
        let actions = self.core.handle(now, ev);
        self.times
            .after_step(&self.core, scope, &actions, now, now_us);
        for mut a in actions {
            self.times.refine(&mut a);
            self.perform(a);
        }
        self.current_txn = None;
    }

    /// Run this runtime's hooks for `action` (crash points, metrics, log
    /// lines), then hand it to the executor.
    fn perform(&mut self, action: Action) {
        match &action {
            Action::Persist { record, .. } => match record {
                Record::Decision { .. } => crash::hit("coordinator.before_decision_logged"),
                Record::End { txn } | Record::Outcome { txn, .. } => {
                    crash::hit("coordinator.before_end_logged");
                    self.decision_sent.remove(txn);
                }
                Record::Joined { .. }
                | Record::Removed { .. }
                | Record::Heuristic { .. }
                | Record::Prepared { .. }
                | Record::Decided { .. }
                | Record::Term { .. }
                | Record::Snapshot { .. } => {}
            },
            Action::Send { body, .. } => match body {
                Body::Error { code, .. } => self.errors.count_wire(code),
                Body::Outcome { txn, outcome } => log_outcome(txn, outcome),
                _ => {}
            },
            Action::Reject { conn, error, .. } => {
                let peer = self.out.peer(*conn);
                self.errors.count(error.code);
                let transaction_id = self.current_txn.as_ref().map(|t| t.0.as_str());
                tracing::warn!(%peer, transaction_id, code = error.code.as_str(), "refused: {}", error.message);
            }
            Action::Close { .. }
            | Action::Alert { .. }
            | Action::Notice { .. }
            | Action::Session(_)
            | Action::PrepareResource { .. }
            | Action::FinishResource { .. } => {}
        }
        let (exec, mut io) = self.io();
        let local = exec.apply(&mut io, action);
        drop(io);
        match local {
            None => {}
            Some(Local::Alert { txn, message }) => alert(txn.as_ref(), &message),
            Some(Local::Notice { conn, message }) => match conn {
                Some(c) => tracing::info!(peer = %self.out.peer(c), "{message}"),
                None => tracing::info!("{message}"),
            },
            Some(
                Local::PrepareResource { .. } | Local::FinishResource { .. } | Local::Session(_),
            ) => {
                tracing::error!("coordinator core asked for a participant-only action; ignored");
            }
        }
    }

    /// Deliver the held messages the log now allows.
    fn release(&mut self) {
        let (exec, mut io) = self.io();
        exec.release(&mut io);
    }

    /// The executor, and the log and connections it works on.
    fn io(
        &mut self,
    ) -> (
        &mut Executor,
        Io<'_, impl FnMut(&mut Outbox, ConnId, Body) + '_>,
    ) {
        let decision_sent = &mut self.decision_sent;
        let misroute = crate::sim::bug(crate::sim::Bug::DecisionToWrongParticipant).then(|| {
            let members: Vec<ConnId> = self
                .core
                .members()
                .values()
                .filter_map(|m| m.conn)
                .collect();
            (members, &mut self.replays)
        });
        let mut misroute = misroute;
        let io = Io {
            out: &mut self.out,
            deliver: move |out: &mut Outbox, conn, body| {
                let conn = match misroute.as_mut() {
                    Some((members, replays)) => misrouted(out, members, replays, conn, &body),
                    None => conn,
                };
                send_checked(out, decision_sent, conn, body)
            },
        };
        (&mut self.exec, io)
    }
}

/// The deliberate bug [`crate::sim::Bug::DecisionToWrongParticipant`]:
/// a decision already sent to the host of `conn` goes to another
/// participant's connection. Only ever called with the bug armed.
fn misrouted(
    out: &Outbox,
    members: &[ConnId],
    replays: &mut HashSet<(TxnId, String)>,
    conn: ConnId,
    body: &Body,
) -> ConnId {
    let (Body::Commit { txn, .. } | Body::Abort { txn, .. }) = body else {
        return conn;
    };
    let peer = out.peer(conn);
    let host = peer.rsplit_once(':').map_or(peer.as_str(), |(h, _)| h);
    if replays.insert((txn.clone(), host.to_string())) {
        return conn;
    }
    members
        .iter()
        .copied()
        .find(|c| *c != conn && !out.peer(*c).starts_with(&format!("{host}:")))
        .unwrap_or(conn)
}

/// Send a message whose durability requirement is met, running the crash
/// points that surround the first COMMIT of a transaction.
fn send_checked(out: &mut Outbox, decision_sent: &mut HashSet<TxnId>, conn: ConnId, body: Body) {
    if let Body::Commit { txn, .. } = &body {
        if crash::enabled() && !decision_sent.contains(txn) {
            crash::hit("coordinator.after_decision_logged");
            decision_sent.insert(txn.clone());
            const POINT: &str = "coordinator.after_first_decision_sent";
            if crash::take(POINT) {
                out.deliver(conn, body, Some(POINT));
                crash::halt(POINT);
            }
        }
    }
    out.deliver(conn, body, None);
}

fn unknown_txn_message(txn: &TxnId) -> String {
    format!("transaction `{txn}` is not known here: it never existed, ended long ago (history_limit), or was aborted before a restart (presumed abort)")
}

/// One line per outcome told to a client: aborts at info (with the reason),
/// commits at debug.
fn log_outcome(txn: &TxnId, o: &crate::protocol::Outcome) {
    match o.decision {
        crate::protocol::Decision::Commit => {
            tracing::debug!(transaction_id = %txn, duration_ms = o.duration_ms, "committed")
        }
        crate::protocol::Decision::Abort => tracing::info!(
            transaction_id = %txn,
            duration_ms = o.duration_ms,
            reason = o.reason.as_deref().unwrap_or(""),
            "aborted"
        ),
    }
}

//! The coordinator's HTTP admin API: health, status, participants,
//! transactions (and one's sequence diagram), submit, participant removal,
//! Prometheus metrics and the operator console ([`super::console`]), on
//! its own port; and a participant's admin HTTP port: the console, its
//! status and transactions, and the operator's resolve.
//!
//! The server never touches a core. On the coordinator, reads are
//! [`AdminCall`]s answered by the event loop over a bounded channel; a
//! submit or a removal opens a virtual client connection on the same
//! bounded event channel the TCP connections use (`hello`, the request,
//! then the reply or `error` frame comes back as for any client). On a
//! participant every request is such a virtual connection on its admin
//! channel, as `twopc txn list|show|resolve` sends. Connections are
//! limited before `accept`, request bodies are limited in size, and a
//! connection must send its headers within a deadline. A query parameter
//! an endpoint does not take is refused, never ignored; lists come in
//! pages ([`super::query`]); every refusal has a JSON body.
//!
//! With a shared secret, every endpoint but `GET /health` (and
//! `GET /auth/challenge`, which hands out nonces, and the console's page
//! and assets, which hold no data) needs a proof of it in the
//! `Authorization` header; the checks themselves are the pure functions of
//! [`crate::security::http_auth`], this file only feeds them the request.
//! A removal needs the operator key, as on the TCP port
//! ([`key_auth::permits`]); a participant's port checks every proof under
//! its admin key.

use super::console::{self, diagram::Diagram};
use super::metrics::{render, MetricsSnapshot};
use crate::net::ConnEvent;
use crate::net::ErrorCounts;
use crate::net::Outgoing;
use crate::protocol::page::ParamError;
use crate::protocol::{
    Body, ConnId, ErrorCode, Message, ParticipantId, Role, SubmitRequest, TxnId, PROTOCOL_VERSION,
};
use crate::security::auth::{self as key_auth, fresh_nonce, Identity, Secret, OPERATOR_ID};
use crate::security::http_auth::{self, HttpAuthError, NonceStore, Proof};
use crate::security::ServerSecurity;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A question for the event loop.
#[derive(Debug)]
pub enum AdminQuery {
    /// The status report (as the TCP `status`).
    Status,
    /// One page of transactions, newest first, optionally filtered by state.
    Transactions(TxnListQuery),
    /// One page of the registered participants, by id.
    Participants {
        limit: Option<u64>,
        cursor: Option<String>,
    },
    /// One transaction in full, with its timeline.
    Transaction { id: TxnId },
    /// Figures for `GET /metrics`.
    Metrics,
}

/// What `GET /transactions` and the TCP `txn_list` ask for: a state
/// filter, a page size and where to continue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnListQuery {
    pub state: Option<String>,
    pub limit: Option<u64>,
    pub cursor: Option<String>,
}

/// The event loop's answer.
#[derive(Debug)]
pub enum AdminAnswer {
    Json(Value),
    /// A query parameter was refused (an unknown state filter, a limit out
    /// of range, a cursor of no list).
    InvalidParam(ParamError),
    NotFound(String),
    Metrics(Box<MetricsSnapshot>),
    /// A coordinator group member that does not lead: the body of a 421
    /// naming the leader (see `not_leader_json`).
    NotLeader(Value),
}

/// One query with the channel its answer goes back on.
#[derive(Debug)]
pub struct AdminCall {
    pub query: AdminQuery,
    pub reply: oneshot::Sender<AdminAnswer>,
}

/// Limits of the admin server (all configurable, see `config.yaml`).
#[derive(Clone, Debug)]
pub struct HttpOptions {
    pub max_connections: usize,
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    /// How long a submit waits for its outcome before answering 504.
    pub submit_timeout: Duration,
    /// With a secret: most outstanding nonces of `GET /auth/challenge`.
    pub auth_nonces_max: usize,
    /// With a secret: how long a nonce stays valid, milliseconds.
    pub auth_nonce_ttl_ms: u64,
    /// With a secret: `GET /metrics` needs no proof (for Prometheus).
    pub open_metrics: bool,
    /// Names accepted in the `Host` header (without port).
    pub allowed_hosts: Vec<String>,
    /// With a secret: `GET /auth/challenge` per address and second (burst
    /// twice that).
    pub auth_challenges_per_second: u32,
}

/// Why the admin port could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (admin_port): {source}; choose another admin_port or stop the process using it")]
pub struct BindError {
    pub addr: String,
    #[source]
    pub source: std::io::Error,
}

/// The bound admin port, not yet serving.
pub struct AdminServer {
    listener: TcpListener,
    opts: HttpOptions,
}

/// Which process serves the API.
#[derive(Clone, Debug)]
enum Node {
    /// The coordinator: reads are [`AdminCall`]s, submits and removals
    /// virtual client connections on its event channel.
    Coordinator(mpsc::Sender<AdminCall>),
    /// A participant's admin HTTP port: every request is a virtual
    /// operator connection on its admin channel, as `twopc txn
    /// list|show|resolve --participant` sends on the TCP admin port.
    Participant(ParticipantId),
}

impl Node {
    fn name(&self) -> &'static str {
        match self {
            Node::Coordinator(_) => "coordinator",
            Node::Participant(_) => "participant",
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
struct Ctx {
    node: Node,
    /// Where virtual connections are opened: the coordinator's event
    /// channel, or a participant's admin channel.
    events: mpsc::Sender<ConnEvent>,
    conn_ids: Arc<AtomicU64>,
    submit_timeout: Duration,
    /// Open HTTP connections (a gauge in the metrics).
    open: Arc<AtomicUsize>,
    /// `None`: no secret configured, every endpoint is open.
    auth: Option<Arc<HttpAuth>>,
    /// A request's body must arrive within this (`admin_header_timeout_ms`).
    body_timeout: Duration,
    /// Bytes; largest request body (`admin_max_body_bytes`).
    max_body_bytes: usize,
    /// Names accepted in the `Host` header (`admin_allowed_hosts`).
    allowed_hosts: Arc<Vec<String>>,
}

/// What checking proofs of the secret needs.
struct HttpAuth {
    secret: Arc<Secret>,
    /// On a participant's port: every proof is checked under its admin
    /// key (the key its TCP admin port asks for), whatever `key=` says.
    identity: Option<Identity>,
    /// Behind a lock held only to issue or spend one nonce.
    nonces: Mutex<NonceStore>,
    /// Nonces handed out per address.
    challenges: Mutex<http_auth::ChallengeLimiter>,
    /// The zero of the store's millisecond clock.
    start: Instant,
    /// The coordinator port's security: its rate-limited failure log.
    security: Arc<ServerSecurity>,
    /// Refusals are counted as `unauthorized` error codes (metrics).
    errors: Arc<ErrorCounts>,
}

/// How long a handler waits for room in a channel to the event loop, and
/// for the loop's answer to a read. The loop answers within one turn; only
/// an overloaded coordinator makes these expire.
const LOOP_PATIENCE: Duration = Duration::from_secs(10);

impl AdminServer {
    pub async fn bind(host: &str, port: u16, opts: HttpOptions) -> Result<AdminServer, BindError> {
        let addr = format!("{host}:{port}");
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| BindError { addr, source })?;
        Ok(AdminServer { listener, opts })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown`. `conn_ids` is shared with the TCP accept loop
    /// so that virtual submit connections get ids of their own. With a
    /// secret in `security`, requests must prove it; refusals go to its
    /// failure log and are counted in `errors`.
    pub fn spawn(
        self,
        channels: AdminChannels,
        security: Arc<ServerSecurity>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let node = Node::Coordinator(channels.calls);
        self.serve(
            node,
            channels.events,
            channels.conn_ids,
            channels.errors,
            security,
            shutdown,
            tracker,
        )
    }

    /// Serve a participant's admin HTTP port (the console and its reads
    /// and resolve) until `shutdown`. `admin` is the channel of the TCP
    /// admin port, `conn_ids` its connection numbering (shared, so virtual
    /// connections never take a TCP connection's id). With a secret,
    /// requests prove the participant's admin key.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn_participant(
        self,
        id: ParticipantId,
        admin: mpsc::Sender<ConnEvent>,
        conn_ids: Arc<AtomicU64>,
        security: Arc<ServerSecurity>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let errors = Arc::new(ErrorCounts::default());
        let node = Node::Participant(id);
        self.serve(node, admin, conn_ids, errors, security, shutdown, tracker)
    }

    #[allow(clippy::too_many_arguments)]
    fn serve(
        self,
        node: Node,
        events: mpsc::Sender<ConnEvent>,
        conn_ids: Arc<AtomicU64>,
        errors: Arc<ErrorCounts>,
        security: Arc<ServerSecurity>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let identity = match &node {
            Node::Coordinator(_) => None,
            Node::Participant(id) => Some(Identity::Admin(id.0.clone())),
        };
        let auth = security.secret.clone().map(|secret| {
            Arc::new(HttpAuth {
                secret,
                identity,
                nonces: Mutex::new(NonceStore::new(
                    self.opts.auth_nonces_max.max(1),
                    self.opts.auth_nonce_ttl_ms,
                )),
                challenges: Mutex::new(http_auth::ChallengeLimiter::new(
                    self.opts.auth_challenges_per_second,
                    CHALLENGE_ADDRESSES_MAX,
                )),
                start: Instant::now(),
                security: security.clone(),
                errors,
            })
        });
        match &auth {
            Some(_) if self.opts.open_metrics => tracing::info!(
                "admin http: shared-secret authentication on (GET /health, GET /auth/challenge and, with admin_open_metrics, GET /metrics open)"
            ),
            Some(_) => tracing::info!(
                "admin http: shared-secret authentication on (GET /health and GET /auth/challenge open)"
            ),
            None => tracing::warn!(
                "admin http: no shared secret configured: anyone who reaches this port can read the coordinator's state and submit transactions. Fine on loopback; set secret_file elsewhere"
            ),
        }
        let participant = matches!(node, Node::Participant(_));
        let ctx = Ctx {
            node,
            events,
            conn_ids,
            submit_timeout: self.opts.submit_timeout,
            open: Arc::new(AtomicUsize::new(0)),
            auth,
            body_timeout: self.opts.header_timeout,
            max_body_bytes: self.opts.max_body_bytes,
            allowed_hosts: Arc::new(
                self.opts
                    .allowed_hosts
                    .iter()
                    .map(|h| {
                        h.trim_start_matches('[')
                            .trim_end_matches(']')
                            .to_ascii_lowercase()
                    })
                    .collect(),
            ),
        };
        let router = match participant {
            false => router(
                ctx.clone(),
                self.opts.max_body_bytes,
                self.opts.open_metrics,
            ),
            true => participant_router(ctx.clone(), self.opts.max_body_bytes),
        };
        if security.tls.is_some() {
            tracing::info!("admin http: TLS on (the coordinator's tls.cert_file and tls.key_file)");
        }
        tracker.spawn(accept_loop(
            self.listener,
            router,
            ctx.clone(),
            self.opts,
            ctx.open,
            security,
            shutdown,
            tracker.clone(),
        ));
    }
}

/// How the admin server reaches the rest of the coordinator.
pub struct AdminChannels {
    /// Questions for the event loop.
    pub calls: mpsc::Sender<AdminCall>,
    /// The event channel the TCP connections use (submits).
    pub events: mpsc::Sender<ConnEvent>,
    /// Shared with the TCP accept loop.
    pub conn_ids: Arc<AtomicU64>,
    /// The coordinator's error-code counters.
    pub errors: Arc<ErrorCounts>,
}

fn router(ctx: Ctx, max_body_bytes: usize, open_metrics: bool) -> Router {
    // Only these routes need a proof; the layer lets everything through
    // when no secret is configured.
    let mut protected = Router::new()
        .route("/status", get(status))
        .route("/participants", get(participants))
        .route("/participants/{id}", delete(remove_participant))
        .route("/transactions", get(transactions).post(submit))
        .route("/transactions/{id}", get(transaction))
        .route("/transactions/{id}/diagram", get(transaction_diagram));
    // The console's page and assets hold no data: every figure it shows
    // comes from the routes above, with a proof when a secret is set.
    let mut open = Router::new()
        .route("/health", get(health))
        .route("/auth/challenge", get(challenge))
        .route("/", get(console::page))
        .route("/console.js", get(console::script))
        .route("/console.css", get(console::style));
    if open_metrics {
        open = open.route("/metrics", get(metrics));
    } else {
        protected = protected.route("/metrics", get(metrics));
    }
    // Layers run last-added first: the proof (headers only), then the
    // body, then the query parameters.
    let protected = protected
        .route_layer(middleware::from_fn(check_query))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), read_body))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_proof));
    let open = open
        .route_layer(middleware::from_fn(check_query))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), read_body));
    open.merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(ctx.clone(), check_host))
        .with_state(ctx)
}

/// A participant's admin HTTP port: what a participant knows (its status,
/// its transactions, the one it holds in doubt) and the operator's
/// heuristic resolve, behind the same checks as the coordinator's API.
fn participant_router(ctx: Ctx, max_body_bytes: usize) -> Router {
    let protected = Router::new()
        .route("/status", get(participant_status))
        .route("/transactions", get(participant_transactions))
        .route("/transactions/{id}", get(participant_transaction))
        .route(
            "/transactions/{id}/resolve",
            axum::routing::post(participant_resolve),
        )
        .route_layer(middleware::from_fn(check_query))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), read_body))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_proof));
    let open = Router::new()
        .route("/health", get(health))
        .route("/auth/challenge", get(challenge))
        .route("/", get(console::page))
        .route("/console.js", get(console::script))
        .route("/console.css", get(console::style))
        .route_layer(middleware::from_fn(check_query))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), read_body));
    open.merge(protected)
        .fallback(participant_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(ctx.clone(), check_host))
        .with_state(ctx)
}

async fn participant_not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint on a participant's admin HTTP port: GET / (the console), /health, /auth/challenge, /status, /transactions, /transactions/{id}; POST /transactions/{id}/resolve (README \"Console\")",
    )
}

/// One operator request to the participant, answered with its reply body.
async fn ask_participant(ctx: &Ctx, request: Body) -> Response {
    match exchange(ctx, None, request, LOOP_PATIENCE).await {
        Ok(Body::StatusReport(v)) | Ok(Body::TxnInfo(v)) => Json(v).into_response(),
        Ok(other) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!(
                "unexpected reply `{}` from the participant",
                other.message_type()
            ),
        ),
        Err((status, v)) => (status, Json(v)).into_response(),
    }
}

async fn participant_status(State(ctx): State<Ctx>) -> Response {
    ask_participant(&ctx, Body::Status).await
}

async fn participant_transactions(
    State(ctx): State<Ctx>,
    params: Extension<QueryParams>,
) -> Response {
    let limit = match params.limit() {
        Ok(l) => l,
        Err(e) => return param_error(e.param, e.message),
    };
    let body = Body::TxnList {
        state: params.get("state"),
        limit,
        cursor: params.get("cursor"),
    };
    ask_participant(&ctx, body).await
}

async fn participant_transaction(
    State(ctx): State<Ctx>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    match id {
        Ok(Path(id)) => ask_participant(&ctx, Body::TxnShow { txn: TxnId(id) }).await,
        Err(rej) => bad_path_id(rej, "GET /transactions/ID", "transaction"),
    }
}

/// The body of `POST /transactions/{id}/resolve`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    decision: crate::protocol::Decision,
    reason: String,
    #[serde(default)]
    operator: Option<String>,
}

/// `POST /transactions/{id}/resolve`: decide a transaction this
/// participant holds in doubt by hand, as `twopc txn resolve` does on the
/// TCP admin port (the participant's core refuses anything not in doubt,
/// and logs the decision with the reason).
async fn participant_resolve(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    const SHAPE: &str = r#"send {"decision": "commit" or "abort", "reason": "why (kept in the log)", "operator": "who (optional)"}"#;
    let txn = match id {
        Ok(Path(id)) => TxnId(id),
        Err(rej) => return bad_path_id(rej, "POST /transactions/ID/resolve", "transaction"),
    };
    if !is_json(&headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "POST /transactions/ID/resolve takes a JSON body: send `Content-Type: application/json`",
        );
    }
    let r: ResolveBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidMessage.as_str(),
                format!("the request body is not a valid resolve ({e}); {SHAPE}"),
            )
        }
    };
    if r.reason.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidMessage.as_str(),
            format!("the reason is blank; it is kept in the log with the decision: {SHAPE}"),
        );
    }
    let request = Body::Resolve {
        txn,
        decision: r.decision,
        reason: r.reason,
        operator: r.operator.filter(|o| !o.trim().is_empty()),
    };
    ask_participant(&ctx, request).await
}

/// The host name of a `Host` header value: without the port, IPv6 without
/// its brackets, lower case.
fn host_name(value: &str) -> String {
    let v = value.trim();
    let name = match v.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        // More than one colon without brackets: an IPv6 address, no port.
        None if v.matches(':').count() > 1 => v,
        None => v.rsplit_once(':').map_or(v, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                v
            }
        }),
    };
    name.to_ascii_lowercase()
}

/// Answer only requests addressed to one of this API's names: a web page
/// that rebinds its own DNS name to this address sends its own name in
/// `Host`, and gets nothing.
async fn check_host(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(host_name);
    match host {
        Some(h) if ctx.allowed_hosts.contains(&h) => next.run(req).await,
        Some(h) => error(
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            format!(
                "the Host header names `{}`, which is not one of this admin API's names ({}); \
                 use one of them, or add the name to admin_allowed_hosts",
                h.chars().take(100).collect::<String>(),
                ctx.allowed_hosts.join(", ")
            ),
        ),
        None => error(
            StatusCode::BAD_REQUEST,
            "host_required",
            "the request has no readable Host header; send one naming this admin API",
        ),
    }
}

/// What a connection beyond `admin_max_connections` may still ask: only
/// `GET /health`, so that probes are answered while strangers hold every
/// ordinary slot.
fn health_router(ctx: Ctx) -> Router {
    Router::new()
        .route("/health", get(health))
        .route_layer(middleware::from_fn(check_query))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), read_body))
        .fallback(busy)
        .layer(middleware::from_fn_with_state(ctx.clone(), check_host))
        .with_state(ctx)
}

async fn busy() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::TooManyConnections.as_str(),
        "every admin connection slot is taken (admin_max_connections); only GET /health is answered now; retry shortly",
    )
}

/// Addresses whose `GET /auth/challenge` rate is tracked at once.
const CHALLENGE_ADDRESSES_MAX: usize = 4096;

/// Connections served past `admin_max_connections`, for `GET /health` only.
const HEALTH_SLOTS: usize = 8;
/// How long such a connection has for its whole request.
const HEALTH_DEADLINE: Duration = Duration::from_secs(1);

/// Connections past every slot that are told so at once; more are closed
/// without a word.
const REFUSERS: usize = 64;
/// How long telling one takes at most.
const REFUSE_DEADLINE: Duration = Duration::from_millis(200);

/// Tell a connection that found no slot (plain HTTP only: a TLS client
/// could not read it) and close it cleanly: what it sent is read and
/// dropped first, so that the close does not reset the connection and lose
/// the answer. Bounded in number and time.
fn refuse_connection(
    mut stream: tokio::net::TcpStream,
    plain: bool,
    refusers: &Arc<Semaphore>,
    tracker: &TaskTracker,
) {
    let Ok(permit) = refusers.clone().try_acquire_owned() else {
        return;
    };
    if !plain {
        return;
    }
    tracker.spawn(async move {
        let _permit = permit;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = tokio::time::timeout(REFUSE_DEADLINE, async {
            stream.write_all(REFUSED).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        })
        .await;
    });
}

/// The answer to a connection that finds no slot at all.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 148\r\n\r\n{\"error\":\"too_many_connections\",\"message\":\"every admin connection slot is taken (admin_max_connections); retry shortly or raise the limit\"}";

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    ctx: Ctx,
    opts: HttpOptions,
    open: Arc<AtomicUsize>,
    security: Arc<ServerSecurity>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(opts.max_connections));
    let health_limit = Arc::new(Semaphore::new(HEALTH_SLOTS));
    let refusers = Arc::new(Semaphore::new(REFUSERS));
    let health_only = health_router(ctx);
    loop {
        // Accept at once, then look for a slot: a connection past the limit
        // is answered and closed, never left waiting in the backlog.
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("admin http accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (permit, router, deadline) = match limit.clone().try_acquire_owned() {
            Ok(p) => (p, router.clone(), opts.header_timeout),
            Err(_) => match health_limit.clone().try_acquire_owned() {
                Ok(p) => (
                    p,
                    health_only.clone(),
                    opts.header_timeout.min(HEALTH_DEADLINE),
                ),
                Err(_) => {
                    refuse_connection(stream, security.tls.is_none(), &refusers, &tracker);
                    security.failures.count("http", "no_slot");
                    security.failures.refused(
                        &peer.to_string(),
                        "admin http connection refused",
                        "every slot is taken (admin_max_connections)",
                    );
                    continue;
                }
            },
        };
        let open = open.clone();
        let shutdown = shutdown.clone();
        open.fetch_add(1, Ordering::Relaxed);
        let security = security.clone();
        tracker.spawn(async move {
            let _permit = permit;
            match &security.tls {
                None => serve_connection(stream, peer, router, deadline, shutdown).await,
                // The TLS handshake counts against the header timeout.
                Some(acceptor) => {
                    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            serve_connection(tls, peer, router, deadline, shutdown).await
                        }
                        Ok(Err(e)) => {
                            security.failures.count("http", "tls");
                            security.failures.failed(
                                &peer.to_string(),
                                &format!("admin http: TLS handshake failed: {e} (plain HTTP to a TLS port? use https and the CA of tls.cert_file)"),
                            )
                        }
                        Err(_) => {
                            security.failures.count("http", "timeout");
                            security.failures.failed(
                                &peer.to_string(),
                                "admin http: no TLS handshake within admin_header_timeout_ms",
                            )
                        }
                    }
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tower::ServiceExt;
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        // For logging refused requests with the peer's address.
        req.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "admin http connection ended: {e}");
    }
}

/// `{"error": code, "message": text}` with `status`.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let (status, body) = error_json(status, code, message);
    (status, Json(body)).into_response()
}

/// [`error`] before it becomes a response (a submit's error gets the
/// caller's `request_id` added).
fn error_json(status: StatusCode, code: &str, message: impl Into<String>) -> (StatusCode, Value) {
    (status, json!({ "error": code, "message": message.into() }))
}

impl Ctx {
    async fn ask(&self, query: AdminQuery) -> Result<AdminAnswer, Response> {
        let (reply, answer) = oneshot::channel();
        let busy = || {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the coordinator's event loop did not answer in time; it is overloaded or stopping, retry later",
            )
        };
        let Node::Coordinator(calls) = &self.node else {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "a participant's port asked the coordinator's event loop",
            ));
        };
        calls
            .send_timeout(AdminCall { query, reply }, LOOP_PATIENCE)
            .await
            .map_err(|_| busy())?;
        match tokio::time::timeout(LOOP_PATIENCE, answer).await {
            Ok(Ok(AdminAnswer::NotLeader(v))) => {
                Err((StatusCode::MISDIRECTED_REQUEST, Json(v)).into_response())
            }
            Ok(Ok(a)) => Ok(a),
            _ => Err(busy()),
        }
    }

    async fn json(&self, query: AdminQuery) -> Response {
        match self.ask(query).await {
            Ok(AdminAnswer::Json(v)) => Json(v).into_response(),
            Ok(AdminAnswer::InvalidParam(e)) => param_error(e.param, e.message),
            Ok(AdminAnswer::NotFound(m)) => error(
                StatusCode::NOT_FOUND,
                ErrorCode::UnknownTransaction.as_str(),
                m,
            ),
            Ok(AdminAnswer::Metrics(_) | AdminAnswer::NotLeader(_)) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "unexpected answer from the event loop",
            ),
            Err(resp) => resp,
        }
    }
}

async fn health(State(ctx): State<Ctx>) -> Response {
    if let Node::Participant(id) = &ctx.node {
        // Alive: the event loop answered. Ready: registered with the
        // coordinator.
        return match exchange(&ctx, None, Body::Status, LOOP_PATIENCE).await {
            Ok(Body::StatusReport(s)) if s["connected"] == true => {
                Json(json!({"status": "ok", "participant_id": id.0})).into_response()
            }
            Ok(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "unavailable",
                    "participant_id": id.0,
                    "reason": "not registered with the coordinator; it reconnects by itself, see its log",
                })),
            )
                .into_response(),
            Err((status, v)) => (status, Json(v)).into_response(),
        };
    }
    let s = match ctx.ask(AdminQuery::Status).await {
        Ok(AdminAnswer::Json(s)) => s,
        Ok(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "unexpected answer from the event loop",
            )
        }
        Err(resp) => return resp,
    };
    // A member of a coordinator group that does not lead: healthy as a
    // follower when it knows a leader; unavailable without one (no quorum
    // it can reach, or an election under way).
    if let Some(g) = s.get("group").filter(|g| g["role"] != "leader") {
        let body = json!({
            "status": if g["leader"].is_null() { "unavailable" } else { "ok" },
            "role": if g["leader"].is_null() { "no_quorum" } else { "follower" },
            "term": g["term"],
            "leader": g["leader"],
            "leader_addr": g["leader_addr"],
            "leader_admin": g["leader_admin"],
        });
        if g["leader"].is_null() {
            let mut body = body;
            body["reason"] = json!("no leader: this member cannot reach a majority of the coordinator group, or an election is under way; check the other members");
            return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        }
        return (StatusCode::OK, Json(body)).into_response();
    }
    let role = s.get("group").map(|_| "leader");
    let registered = s["participants_registered"].as_u64().unwrap_or(0);
    let expected = s["expected_participants"].as_u64().unwrap_or(0);
    let state = s["state"].as_str().unwrap_or("UNKNOWN").to_string();
    if state == "READY" {
        let mut body = json!({
            "status": "ok",
            "state": state,
            "participants_registered": registered,
            "expected_participants": expected,
        });
        if let Some(role) = role {
            body["role"] = json!(role);
        }
        return (StatusCode::OK, Json(body)).into_response();
    }
    let mut body = json!({
        "status": "unavailable",
        "state": state,
        "participants_registered": registered,
        "expected_participants": expected,
        "reason": format!(
            "waiting for participants: {registered} of {expected} registered; start the missing participants"
        ),
    });
    if let Some(role) = role {
        body["role"] = json!(role);
    }
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn status(State(ctx): State<Ctx>) -> Response {
    ctx.json(AdminQuery::Status).await
}

async fn participants(State(ctx): State<Ctx>, params: Extension<QueryParams>) -> Response {
    let limit = match params.limit() {
        Ok(l) => l,
        Err(e) => return param_error(e.param, e.message),
    };
    let cursor = params.get("cursor");
    ctx.json(AdminQuery::Participants { limit, cursor }).await
}

async fn transactions(State(ctx): State<Ctx>, params: Extension<QueryParams>) -> Response {
    let limit = match params.limit() {
        Ok(l) => l,
        Err(e) => return param_error(e.param, e.message),
    };
    let list = TxnListQuery {
        state: params.get("state"),
        limit,
        cursor: params.get("cursor"),
    };
    ctx.json(AdminQuery::Transactions(list)).await
}

async fn transaction(State(ctx): State<Ctx>, id: Result<Path<String>, PathRejection>) -> Response {
    match id {
        Ok(Path(id)) => ctx.json(AdminQuery::Transaction { id: TxnId(id) }).await,
        Err(rej) => bad_path_id(rej, "GET /transactions/ID", "transaction"),
    }
}

/// 400 for an id in the path that cannot be read.
fn bad_path_id(rej: PathRejection, form: &str, what: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        format!(
            "cannot read the {what} id in the path ({}); send {form} with the id percent-encoded as UTF-8",
            rej.body_text()
        ),
    )
}

/// `GET /transactions/{id}/diagram`: the transaction's timeline as a
/// sequence diagram, the model the console draws and its Mermaid text
/// (what `twopc txn show --diagram` prints).
async fn transaction_diagram(
    State(ctx): State<Ctx>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match id {
        Ok(Path(id)) => TxnId(id),
        Err(rej) => return bad_path_id(rej, "GET /transactions/ID/diagram", "transaction"),
    };
    let detail = match ctx.ask(AdminQuery::Transaction { id }).await {
        Ok(AdminAnswer::Json(v)) => v,
        Ok(AdminAnswer::NotFound(m)) => {
            return error(
                StatusCode::NOT_FOUND,
                ErrorCode::UnknownTransaction.as_str(),
                m,
            )
        }
        Ok(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "unexpected answer from the event loop",
            )
        }
        Err(resp) => return resp,
    };
    match Diagram::of_detail(&detail) {
        Ok(d) => {
            let mermaid = d.mermaid();
            Json(json!({
                "transaction_id": detail["transaction_id"],
                "actors": d.actors,
                "lines": d.lines,
                "mermaid": mermaid,
            }))
            .into_response()
        }
        Err(why) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", why),
    }
}

/// `DELETE /participants/{id}[?force=true]`: the operator's removal, as
/// `twopc participants remove` sends it on the coordinator port. With a
/// secret it needs the operator key, exactly as there
/// ([`key_auth::permits`]); the core decides whether the removal is
/// allowed and answers with the status after it.
async fn remove_participant(
    State(ctx): State<Ctx>,
    params: Extension<QueryParams>,
    proven: Option<Extension<ProvenIdentity>>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match id {
        Ok(Path(id)) => ParticipantId(id),
        Err(rej) => return bad_path_id(rej, "DELETE /participants/ID", "participant"),
    };
    let force = match params.get("force").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return param_error(
                "force",
                format!(
                    "force `{}` is neither true nor false; give force=true to remove a participant that is still connected (it is told and exits)",
                    shown(other)
                ),
            )
        }
    };
    let body = Body::ParticipantRemove { id, force };
    if let Some(Extension(ProvenIdentity(identity))) = &proven {
        if let Err(e) = key_auth::permits(identity, &body) {
            if let Some(auth) = &ctx.auth {
                auth.errors.count(ErrorCode::Unauthorized);
            }
            return error(
                StatusCode::FORBIDDEN,
                ErrorCode::Unauthorized.as_str(),
                format!(
                    "{}; sign the request with the operator key (key=operator)",
                    e.message
                ),
            );
        }
    }
    let (status, v) = run_virtual(&ctx, Some(OPERATOR_ID), body).await;
    (status, Json(v)).into_response()
}

/// The query parameters each endpoint takes; every other endpoint takes
/// none.
fn params_taken(method: &axum::http::Method, path: &str) -> &'static [&'static str] {
    match (method.as_str(), path) {
        ("GET" | "HEAD", "/transactions") => &["state", "limit", "cursor"],
        ("GET" | "HEAD", "/participants") => &["limit", "cursor"],
        ("DELETE", "/participants/{id}") => &["force"],
        _ => &[],
    }
}

/// A request's query parameters, each given once and each one its
/// endpoint takes (checked by [`check_query`]).
#[derive(Clone, Debug, Default)]
struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// `limit` as a number; its range is the event loop's to check.
    fn limit(&self) -> Result<Option<u64>, ParamError> {
        match self.get("limit") {
            None => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| ParamError {
                param: "limit",
                message: format!(
                    "limit `{}` is not a whole number; give how many entries to return (1 to query_page_max)",
                    shown(&v)
                ),
            }),
        }
    }
}

/// At most 100 characters of client text, for an error message.
fn shown(text: &str) -> String {
    text.chars().take(100).collect()
}

/// 400 `invalid_parameter` naming the query parameter at fault.
fn param_error(param: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "error": "invalid_parameter",
        "message": message.into(),
        "parameter": param,
    });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// Refuse query parameters the endpoint does not take, and any given
/// twice; hand the others to the handler. A misspelt parameter would
/// otherwise be ignored and the answer look like what was asked for.
async fn check_query(mut req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_string(), |m| m.as_str().to_string());
    let taken = params_taken(req.method(), &path);
    let pairs = match Query::<Vec<(String, String)>>::try_from_uri(req.uri()) {
        Ok(Query(pairs)) => pairs,
        Err(rej) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                format!(
                    "cannot read the query string ({}); send name=value pairs joined by &, percent-encoded",
                    rej.body_text()
                ),
            )
        }
    };
    let method = req.method().as_str().to_string();
    for (i, (name, _)) in pairs.iter().enumerate() {
        if !taken.contains(&name.as_str()) {
            let takes = match taken {
                [] => "takes no query parameters".to_string(),
                names => format!("takes only {}", names.join(", ")),
            };
            return param_error(
                &shown(name),
                format!(
                    "unknown query parameter `{}`: {method} {path} {takes}; see docs/openapi.yaml",
                    shown(name)
                ),
            );
        }
        if pairs[..i].iter().any(|(n, _)| n == name) {
            return param_error(
                name,
                format!("query parameter `{name}` is given more than once; give it once"),
            );
        }
    }
    req.extensions_mut().insert(QueryParams(pairs));
    next.run(req).await
}

async fn metrics(State(ctx): State<Ctx>) -> Response {
    match ctx.ask(AdminQuery::Metrics).await {
        Ok(AdminAnswer::Metrics(m)) => {
            let text = render(&m, ctx.open.load(Ordering::Relaxed));
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                text,
            )
                .into_response()
        }
        Ok(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "unexpected answer from the event loop",
        ),
        Err(resp) => resp,
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see docs/openapi.yaml: GET / (the console), /health, /auth/challenge, /status, /participants, /transactions, /transactions/{id}, /transactions/{id}/diagram, /metrics; POST /transactions; DELETE /participants/{id}",
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see docs/openapi.yaml (POST only on /transactions, DELETE only on /participants/{id}, GET everywhere else)",
    )
}

/// `GET /auth/challenge`: a fresh single-use nonce.
async fn challenge(State(ctx): State<Ctx>, req: Request) -> Response {
    // Which process this is (and a participant's id, which the console
    // needs to derive its admin key from the master secret; the TCP
    // challenge of a participant's admin port names it too).
    let mut whoami = json!({ "node": ctx.node.name() });
    if let Node::Participant(id) = &ctx.node {
        whoami["participant_id"] = json!(id.0);
    }
    let Some(auth) = &ctx.auth else {
        let mut body = whoami;
        body["error"] = json!("auth_off");
        body["message"] = json!(format!(
            "this {} has no shared secret configured, so its HTTP admin API needs no authentication: send requests without an Authorization header",
            ctx.node.name()
        ));
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    };
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        let allowed = {
            let mut l = auth.challenges.lock().unwrap_or_else(|p| p.into_inner());
            l.allow(peer.ip(), auth.now_ms())
        };
        if !allowed {
            auth.security.failures.count("http", "challenge_rate");
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "too many GET /auth/challenge from this address (admin_auth_challenges_per_second); ask for a nonce only right before each request",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return resp;
        }
    }
    let nonce = fresh_nonce();
    let ttl_ms = {
        let mut store = auth.nonces.lock().unwrap_or_else(|p| p.into_inner());
        store.issue(nonce.clone(), auth.now_ms());
        store.ttl_ms()
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json({
            let mut body = whoami;
            body["nonce"] = json!(nonce);
            body["expires_in_ms"] = json!(ttl_ms);
            body
        }),
    )
        .into_response()
}

impl HttpAuth {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// 401 with what was wrong; logged (rate-limited) and counted.
    fn refuse(&self, peer: &str, method: &str, path: &str, why: HttpAuthError) -> Response {
        self.security.failures.count("http", why.reason());
        let path: String = path.chars().take(200).collect();
        self.security.failures.refused(
            peer,
            "admin http request refused",
            &format!("{method} {path}: {why}"),
        );
        self.errors.count(ErrorCode::Unauthorized);
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized.as_str(),
            why.to_string(),
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("TWOPC-HMAC challenge=\"/auth/challenge\""),
        );
        resp
    }
}

/// The proof in the request's single `Authorization` header.
fn proof_of(headers: &HeaderMap) -> Result<Proof, HttpAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(match headers.contains_key(header::AUTHORIZATION) {
            true => HttpAuthError::Malformed("more than one Authorization header".into()),
            false => HttpAuthError::Missing,
        });
    };
    let text = value
        .to_str()
        .map_err(|_| HttpAuthError::Malformed("the header is not printable ASCII".into()))?;
    http_auth::parse_authorization(text)
}

/// The body digest a request declares ([`http_auth::BODY_DIGEST_HEADER`]):
/// required when the request has a body, the empty body's otherwise.
fn declared_digest(headers: &HeaderMap) -> Result<String, HttpAuthError> {
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    match headers.get(http_auth::BODY_DIGEST_HEADER) {
        Some(v) => match v.to_str() {
            Ok(d) if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(d.to_ascii_lowercase())
            }
            _ => Err(HttpAuthError::BodyDigest(format!(
                "{} must be the 64 hex digits of the body's SHA-256",
                http_auth::BODY_DIGEST_HEADER
            ))),
        },
        None if has_body => Err(HttpAuthError::BodyDigest(format!(
            "a request with a body must carry {}: <hex SHA-256 of the body> (the value the MAC signs), so that the proof is checked before the body is read",
            http_auth::BODY_DIGEST_HEADER
        ))),
        None => Ok(http_auth::body_digest(b"")),
    }
}

/// The digest a proven request declared, for [`read_body`] to check.
#[derive(Clone)]
struct ProvenDigest(String);

/// Whose key a proven request was signed with (client or operator), for
/// the endpoints only an operator may call.
#[derive(Clone)]
struct ProvenIdentity(Identity);

/// Let the request through only with a valid proof (when a secret is
/// configured). The proof is checked from the headers alone, against the
/// body digest the request declares, before a single body byte is read:
/// a stranger cannot make the server wait for a body. [`read_body`] then
/// checks the body against the declared digest.
async fn require_proof(State(ctx): State<Ctx>, mut req: Request, next: Next) -> Response {
    let Some(auth) = &ctx.auth else {
        return next.run(req).await;
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.to_string());
    let method = req.method().as_str().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    let checked = proof_of(req.headers()).and_then(|mut proof| {
        if let Some(identity) = &auth.identity {
            proof.identity = identity.clone();
        }
        let digest = declared_digest(req.headers())?;
        let mut store = auth.nonces.lock().unwrap_or_else(|p| p.into_inner());
        http_auth::authorize_digest(
            &mut store,
            &auth.secret,
            &proof,
            (&method, &target, &digest),
            auth.now_ms(),
        )
        .map(|()| (digest, proof.identity.clone()))
    });
    match checked {
        Ok((digest, identity)) => {
            req.extensions_mut().insert(ProvenDigest(digest));
            req.extensions_mut().insert(ProvenIdentity(identity));
            next.run(req).await
        }
        Err(why) => auth.refuse(&peer, &method, req.uri().path(), why),
    }
}

/// Read the whole body, bounded by `admin_max_body_bytes` and by the
/// `admin_header_timeout_ms` deadline, and hand the handler the bytes; a
/// proven request's body must match the digest its proof signed.
async fn read_body(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let read = Limited::new(body, ctx.max_body_bytes).collect();
    let bytes = match tokio::time::timeout(ctx.body_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body exceeds admin_max_body_bytes; send a smaller payload or raise the limit",
            )
        }
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("cannot read the request body: {e}"),
            )
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body did not arrive within admin_header_timeout_ms; send the whole request at once",
            )
        }
    };
    if let (Some(ProvenDigest(want)), Some(auth)) =
        (parts.extensions.get::<ProvenDigest>(), &ctx.auth)
    {
        if http_auth::body_digest(&bytes) != *want {
            let peer = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or_else(|| "unknown".to_string(), |c| c.0.to_string());
            let why = HttpAuthError::BodyDigest(format!(
                "the body does not match its {}; sign and declare the digest of exactly the body you send",
                http_auth::BODY_DIGEST_HEADER
            ));
            return auth.refuse(&peer, parts.method.as_str(), parts.uri.path(), why);
        }
    }
    next.run(Request::from_parts(parts, bytes.into())).await
}

/// The fields a `POST /transactions` body may have.
const SUBMIT_FIELDS: &[&str] = &["data", "participants", "request_id", "transaction_id"];

/// A parsed `POST /transactions` body: the submit for the coordinator, and
/// the caller's `request_id` (a string or a non-negative integer), which
/// this API echoes in the reply and in errors itself; it never reaches the
/// coordinator core.
#[derive(Debug, PartialEq)]
pub struct HttpSubmit {
    pub req: SubmitRequest,
    pub request_id: Option<Value>,
}

/// Why a submit body was refused, with the `request_id` to echo when the
/// body got far enough to have a valid one.
#[derive(Debug, PartialEq)]
pub struct SubmitRefusal {
    pub code: ErrorCode,
    pub message: String,
    pub request_id: Option<Value>,
}

/// Parse a submit body: the JSON object of the TCP `submit` payload, with
/// `request_id` a string or an integer, and no other fields.
pub fn parse_submit(bytes: &[u8]) -> Result<HttpSubmit, SubmitRefusal> {
    const SHAPE: &str = r#"send a JSON object such as {"data": {"order": 42}, "participants": ["p1", "p2"], "request_id": "r-7", "transaction_id": "order-42"} (every field optional)"#;
    let refuse = |code, message: String, request_id: &Option<Value>| SubmitRefusal {
        code,
        message,
        request_id: request_id.clone(),
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        refuse(
            ErrorCode::InvalidJson,
            format!("the request body is not valid JSON ({e}); {SHAPE}"),
            &None,
        )
    })?;
    let Value::Object(mut fields) = v else {
        return Err(refuse(
            ErrorCode::InvalidMessage,
            format!("the request body must be a JSON object; {SHAPE}"),
            &None,
        ));
    };
    let request_id = match fields.remove("request_id") {
        None | Some(Value::Null) => None,
        Some(id @ Value::String(_)) => Some(id),
        Some(Value::Number(n)) if n.is_u64() => Some(Value::Number(n)),
        Some(other) => {
            return Err(refuse(
                ErrorCode::InvalidMessage,
                format!(
                    "request_id must be a string or a non-negative integer, not {}; it is echoed in the reply",
                    shown(&other.to_string())
                ),
                &None,
            ))
        }
    };
    if let Some(unknown) = fields.keys().find(|k| !SUBMIT_FIELDS.contains(&k.as_str())) {
        return Err(refuse(
            ErrorCode::InvalidMessage,
            format!(
                "unknown field `{}` in the request body; POST /transactions takes only {}",
                shown(unknown),
                SUBMIT_FIELDS.join(", ")
            ),
            &request_id,
        ));
    }
    let req: SubmitRequest = serde_json::from_value(Value::Object(fields)).map_err(|e| {
        refuse(
            ErrorCode::InvalidMessage,
            format!("the request body is not a valid submit ({e}); {SHAPE}"),
            &request_id,
        )
    })?;
    Ok(HttpSubmit { req, request_id })
}

async fn submit(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !is_json(&headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "POST /transactions takes a JSON body: send `Content-Type: application/json`",
        );
    }
    let bytes = match body {
        Ok(b) => b,
        Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body exceeds admin_max_body_bytes; send a smaller payload or raise the limit",
            )
        }
        Err(rej) => return error(rej.status(), "invalid_body", rej.body_text()),
    };
    match parse_submit(&bytes) {
        Ok(HttpSubmit { req, request_id }) => {
            let mut resp = run_virtual(&ctx, None, Body::Submit(req)).await;
            if let (Some(id), Some(o)) = (request_id, resp.1.as_object_mut()) {
                o.insert("request_id".into(), id);
            }
            (resp.0, Json(resp.1)).into_response()
        }
        Err(r) => {
            let mut body = json!({ "error": r.code.as_str(), "message": r.message });
            if let Some(id) = r.request_id {
                body["request_id"] = id;
            }
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
    }
}

/// Does the request say its body is JSON? A JSON content type makes a
/// browser ask first (a CORS preflight, which this API never grants), so a
/// cross-site form cannot post.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// A virtual client connection: closed on the event loop when dropped, even
/// if the HTTP client went away mid-request.
struct VirtualConn {
    conn: ConnId,
    events: mpsc::Sender<ConnEvent>,
}

impl Drop for VirtualConn {
    fn drop(&mut self) {
        let (events, conn) = (self.events.clone(), self.conn);
        tokio::spawn(async move {
            let _ = events.send(ConnEvent::Closed { conn }).await;
        });
    }
}

/// Send one client request (a submit, or with `id` `operator` a removal) on
/// a virtual connection: the status and JSON body of the reply (the
/// outcome or the status report, or an error).
async fn run_virtual(ctx: &Ctx, id: Option<&str>, request: Body) -> (StatusCode, Value) {
    match exchange(ctx, id, request, ctx.submit_timeout).await {
        Ok(Body::Outcome { txn, outcome }) => (StatusCode::OK, outcome.report(&txn)),
        Ok(Body::StatusReport(v)) => (StatusCode::OK, v),
        Ok(other) => error_json(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("unexpected reply `{}`", other.message_type()),
        ),
        Err(e) => e,
    }
}

/// Open a virtual connection on `ctx.events`, say hello as a client (with
/// `id`), send `request` and wait up to `patience` for the reply: the
/// first frame that is neither the welcome nor a heartbeat, or the error
/// it was (as the status and JSON body to answer with).
async fn exchange(
    ctx: &Ctx,
    id: Option<&str>,
    request: Body,
    patience: Duration,
) -> Result<Body, (StatusCode, Value)> {
    let node = ctx.node.name();
    let conn = ConnId(ctx.conn_ids.fetch_add(1, Ordering::Relaxed));
    // Only the welcome and one reply come back.
    let (tx, mut rx) = mpsc::channel(8);
    let busy = || {
        error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("the {node}'s event loop has no room for the request; it is overloaded or stopping, retry later"),
        )
    };
    let opened = ConnEvent::Opened {
        conn,
        tx,
        peer: "http".into(),
    };
    if ctx
        .events
        .send_timeout(opened, LOOP_PATIENCE)
        .await
        .is_err()
    {
        return Err(busy());
    }
    let _guard = VirtualConn {
        conn,
        events: ctx.events.clone(),
    };
    let hello = Body::Hello {
        role: Role::Client,
        id: id.map(|i| ParticipantId(i.to_string())),
        protocol_version: PROTOCOL_VERSION,
    };
    for body in [hello, request] {
        let ev = ConnEvent::Message { conn, body };
        if ctx.events.send_timeout(ev, LOOP_PATIENCE).await.is_err() {
            return Err(busy());
        }
    }
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let frame = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => {
                return Err(error_json(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    format!(
                        "no answer within {} s; a submit may still complete: look it up with GET /transactions",
                        patience.as_secs()
                    ),
                ))
            }
            Ok(Some(Outgoing::Frame(b))) | Ok(Some(Outgoing::FrameThenCrash(b, _))) => b,
            Ok(Some(Outgoing::Close)) | Ok(None) => {
                return Err(error_json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "closed",
                    format!("the {node} closed the request before answering (it is stopping); retry later"),
                ))
            }
        };
        match Message::decode(&frame) {
            Ok(Body::Error { code, message, .. }) => {
                let status = match code.known() {
                    Some(ErrorCode::NotReady) => StatusCode::SERVICE_UNAVAILABLE,
                    Some(ErrorCode::Overloaded) => StatusCode::TOO_MANY_REQUESTS,
                    // The participant or transaction named in the path.
                    Some(ErrorCode::UnknownParticipant) if id.is_some() => StatusCode::NOT_FOUND,
                    Some(ErrorCode::UnknownTransaction) => StatusCode::NOT_FOUND,
                    Some(ErrorCode::UnknownParticipant | ErrorCode::InvalidMessage) => {
                        StatusCode::BAD_REQUEST
                    }
                    // The transaction id is running for another client, or
                    // was used for another request; a removal or resolve
                    // the core does not allow now.
                    Some(ErrorCode::InProgress | ErrorCode::Refused) => StatusCode::CONFLICT,
                    // A coordinator group member that does not lead.
                    Some(ErrorCode::NotLeader) => StatusCode::MISDIRECTED_REQUEST,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                let mut answer = error_json(status, code.as_str(), message);
                if code.known() == Some(ErrorCode::NotLeader) {
                    name_the_leader(ctx, &mut answer.1).await;
                }
                return Err(answer);
            }
            // The welcome, or anything else a client may ignore.
            Ok(Body::Welcome { .. } | Body::HeartbeatAck) | Err(_) => continue,
            Ok(reply) => return Ok(reply),
        }
    }
}

/// Add to a `not_leader` answer what this member knows of the leader (as
/// the 421 of any other endpoint has it): its id, coordinator port and
/// admin address.
async fn name_the_leader(ctx: &Ctx, body: &mut Value) {
    let Ok(AdminAnswer::Json(status)) = ctx.ask(AdminQuery::Status).await else {
        return;
    };
    let group = &status["group"];
    for key in ["term", "leader", "leader_addr", "leader_admin"] {
        body[key] = group[key].clone();
    }
    if let (Some(admin), Some(message)) = (group["leader_admin"].as_str(), body["message"].as_str())
    {
        body["message"] = json!(format!("{message}; its admin API is at {admin}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port_and_brackets() {
        for (value, want) in [
            ("127.0.0.1:9090", "127.0.0.1"),
            ("LocalHost:80", "localhost"),
            ("localhost", "localhost"),
            ("[::1]:9090", "::1"),
            ("[::1]", "::1"),
            ("evil.example:9090", "evil.example"),
            ("::1", "::1"),
        ] {
            assert_eq!(host_name(value), want, "{value}");
        }
    }

    #[test]
    fn submit_bodies_are_parsed_like_the_tcp_payload() {
        let r = parse_submit(br#"{"data": {"k": 1}, "participants": ["p1"]}"#).unwrap();
        assert_eq!(r.req.data, json!({"k": 1}));
        assert_eq!(r.req.participants.unwrap().len(), 1);
        assert_eq!(r.request_id, None);
        assert_eq!(parse_submit(b"{}").unwrap().req.data, Value::Null);
        let e = parse_submit(b"{not json").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidJson);
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        assert_eq!(
            parse_submit(b"[1]").unwrap_err().code,
            ErrorCode::InvalidMessage
        );
        let e = parse_submit(br#"{"participants": "p1", "request_id": 4}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidMessage);
        assert_eq!(e.request_id, Some(json!(4)), "echoed in the error");
    }

    #[test]
    fn a_request_id_is_a_string_or_an_integer_and_never_reaches_the_core() {
        for id in [json!("order-42"), json!(7), json!(u64::MAX)] {
            let body = json!({ "data": 1, "request_id": id }).to_string();
            let r = parse_submit(body.as_bytes()).unwrap();
            assert_eq!(r.request_id, Some(id));
            assert_eq!(r.req.request_id, None);
        }
        assert_eq!(
            parse_submit(br#"{"request_id": null}"#).unwrap().request_id,
            None
        );
        for bad in [r#"-1"#, r#"1.5"#, r#"true"#, r#"{"a": 1}"#, r#"[1]"#] {
            let body = format!(r#"{{"request_id": {bad}}}"#);
            let e = parse_submit(body.as_bytes()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidMessage, "{bad}");
            assert!(e.message.starts_with("request_id must be"), "{}", e.message);
            assert_eq!(e.request_id, None);
        }
    }

    #[test]
    fn unknown_submit_fields_are_refused_by_name() {
        let e = parse_submit(br#"{"dta": {"k": 1}, "request_id": "r1"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidMessage);
        assert!(e.message.contains("unknown field `dta`"), "{}", e.message);
        assert!(
            e.message.contains("data, participants, request_id"),
            "{}",
            e.message
        );
        assert_eq!(e.request_id, Some(json!("r1")));
    }

    #[test]
    fn each_endpoint_takes_only_its_own_query_parameters() {
        use axum::http::Method;
        assert_eq!(
            params_taken(&Method::GET, "/transactions"),
            &["state", "limit", "cursor"]
        );
        assert_eq!(
            params_taken(&Method::GET, "/participants"),
            &["limit", "cursor"]
        );
        assert!(params_taken(&Method::POST, "/transactions").is_empty());
        assert!(params_taken(&Method::GET, "/transactions/{id}").is_empty());
        assert!(params_taken(&Method::GET, "/status").is_empty());
    }
}

//! `twopc http METHOD PATH`: one request to the HTTP admin API of the
//! coordinator or of a participant (its `admin_http_port`), with the shared-secret proof when a secret is given (a nonce from
//! `GET /auth/challenge`, then the request with its `Authorization`
//! header, on one connection). The MAC itself is
//! [`twopc::security::http_auth`]'s.

use crate::commands::EXIT_USAGE;
use axum::body::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use twopc::security::auth::{is_nonce, Secret};
use twopc::security::tls::{host_of, TlsClient};
use twopc::security::{http_auth, load_secret, secret_from_env};

/// Largest response body read, bytes (a transaction list of 1000 entries
/// is far below it).
const RESPONSE_MAX_BYTES: usize = 64 * 1024 * 1024;

#[derive(Args, Debug)]
pub struct HttpArgs {
    /// HTTP method: GET or POST.
    pub method: String,
    /// Path with optional query, e.g. /status or '/transactions?state=in-doubt'.
    pub path: String,
    /// Request body, e.g. '{"data": {"order": 42}}' for POST /transactions.
    #[arg(long)]
    pub data: Option<String>,
    /// The HTTP admin address: the coordinator's admin_host:admin_port, or a
    /// participant's admin_host:admin_http_port. For a coordinator group,
    /// every member's admin address, comma-separated: the request goes to
    /// the one whose /health says it leads.
    #[arg(
        long,
        visible_alias = "admin",
        env = "TWOPC_COORDINATOR_ADMIN",
        default_value = "127.0.0.1:9090"
    )]
    pub coordinator_admin: String,
    /// File holding the shared secret the coordinator requires (or set TWOPC_SECRET to the secret itself).
    #[arg(long, env = "TWOPC_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify the admin port's TLS certificate;
    /// needed when the coordinator runs with tls.cert_file.
    #[arg(long, env = "TWOPC_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Give up after this many seconds (a submit waits for its outcome).
    #[arg(long, default_value_t = 120)]
    pub timeout_seconds: u64,
}

/// A response: status code and body.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub body: Bytes,
}

/// Send `method path` with `body` to the admin API at `addr`; with `secret`,
/// authenticate it. Errors say what went wrong and what to check.
/// Of the admin addresses of a coordinator group's members (comma
/// separated), the one whose `/health` says it leads: requests that change
/// something (a submit) are only served there.
async fn leader_admin(list: &str, tls: Option<&TlsClient>) -> Result<String, String> {
    let mut seen = Vec::new();
    for addr in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            request(addr, "GET", "/health", b"", None, tls),
        )
        .await;
        let health = match reply {
            Ok(Ok(r)) => serde_json::from_slice::<serde_json::Value>(&r.body).unwrap_or_default(),
            Ok(Err(e)) => {
                seen.push(format!("{addr}: {e}"));
                continue;
            }
            Err(_) => {
                seen.push(format!("{addr}: no answer within 5 s"));
                continue;
            }
        };
        if health["role"] == "leader" {
            return Ok(addr.to_string());
        }
        seen.push(format!(
            "{addr}: {}",
            health["role"].as_str().unwrap_or("not a group member")
        ));
    }
    Err(format!(
        "no member leads the coordinator group (an election may be under way, no majority is up, or the leader is not READY yet); {}",
        seen.join("; ")
    ))
}

pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    secret: Option<&Secret>,
    tls: Option<&TlsClient>,
) -> Result<HttpReply, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}; is the coordinator's admin_port set and is this its address?"))?;
    match tls {
        None => exchange(stream, addr, method, path, body, secret).await,
        Some(tls) => {
            let stream = tls.connect(host_of(addr), stream).await.map_err(|e| {
                format!("{addr}: TLS handshake failed: {e}; is --tls-ca the CA that signed the coordinator's tls.cert_file, and does the certificate name this host?")
            })?;
            exchange(stream, addr, method, path, body, secret).await
        }
    }
}

async fn exchange<S>(
    stream: S,
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    secret: Option<&Secret>,
) -> Result<HttpReply, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| {
            format!("{addr}: HTTP handshake failed: {e}; if the admin port uses TLS, pass --tls-ca")
        })?;
    let driver = tokio::spawn(conn);
    let mut send = async |method: &str, path: &str, body: &[u8], auth: Option<String>| {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr);
        if !body.is_empty() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(a) = auth {
            req = req.header(hyper::header::AUTHORIZATION, a);
            if !body.is_empty() {
                // Lets the server check the proof before reading the body.
                req = req.header(http_auth::BODY_DIGEST_HEADER, http_auth::body_digest(body));
            }
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| format!("invalid request `{method} {path}`: {e}"))?;
        sender
            .ready()
            .await
            .map_err(|e| format!("{addr}: connection lost: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| {
                format!("{addr}: {method} {path} failed: {e}; if the admin port uses TLS (the coordinator has tls.cert_file), pass --tls-ca")
            })?;
        let status = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), RESPONSE_MAX_BYTES)
            .collect()
            .await
            .map_err(|e| format!("{addr}: reading the response failed: {e}"))?
            .to_bytes();
        Ok::<_, String>(HttpReply { status, body })
    };
    let auth = match secret {
        None => None,
        Some(secret) => {
            let c = send("GET", "/auth/challenge", b"", None).await?;
            let (nonce, participant) = nonce_of(&c)?;
            // A participant's admin port takes its admin key only; the
            // coordinator's, the operator key (or else the client key).
            let header = match &participant {
                Some(id) => http_auth::authorization_on_participant(
                    secret, id, &nonce, method, path, body,
                )
                .map_err(|e| {
                    format!("{addr} is participant {id}'s admin port, which takes that participant's admin key: {e}; use the master secret or participant {id}'s own key (`twopc keys derive participant {id}`)")
                })?,
                None => http_auth::authorization(secret, &nonce, method, path, body)
                    .map_err(|e| e.to_string())?,
            };
            Some(header)
        }
    };
    let reply = send(method, path, body, auth).await;
    driver.abort();
    reply
}

/// The nonce of a `GET /auth/challenge` reply, and the participant's id
/// when the port is a participant's.
fn nonce_of(reply: &HttpReply) -> Result<(String, Option<String>), String> {
    let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let node = v["node"].as_str().unwrap_or("coordinator");
    if reply.status == 404 && v["error"] == "auth_off" {
        return Err(format!("a shared secret is given here, but the {node}'s admin API runs without one; configure the same secret_file there, or call without a secret"));
    }
    let participant = v["participant_id"].as_str().map(str::to_string);
    match v["nonce"].as_str() {
        Some(n) if reply.status == 200 && is_nonce(n) => Ok((n.to_string(), participant)),
        _ => Err(format!(
            "GET /auth/challenge answered {} without a nonce: {}; is this the admin HTTP port of a twopc coordinator or participant?",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )),
    }
}

/// The leader's admin address named by a 421 `not_leader` answer.
fn leader_named_by(reply: &HttpReply) -> Option<String> {
    if reply.status != 421 {
        return None;
    }
    let v: Value = serde_json::from_slice(&reply.body).ok()?;
    let admin = v["leader_admin"].as_str()?;
    (v["error"] == "not_leader" && twopc::protocol::plausible_addr(admin))
        .then(|| admin.to_string())
}

/// `twopc http`: print the body on stdout; exit 0 for a 2xx status, 1 for
/// any other status or a failed request (said on stderr), 2 for bad usage.
pub async fn http(a: HttpArgs) -> ExitCode {
    let secret = match load_secret(a.secret_file.as_deref(), secret_from_env()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("twopc http: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let method = a.method.to_ascii_uppercase();
    if !a.path.starts_with('/') {
        eprintln!("twopc http: the path must start with `/`, e.g. /status");
        return ExitCode::from(EXIT_USAGE);
    }
    let tls = match a.tls_ca.as_deref().map(TlsClient::from_ca_file).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("twopc http: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let body = a.data.unwrap_or_default();
    let target = if a.coordinator_admin.contains(',') {
        match leader_admin(&a.coordinator_admin, tls.as_ref()).await {
            Ok(t) => t,
            Err(e) => {
                eprintln!("twopc http: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        a.coordinator_admin.clone()
    };
    // A member that does not lead answers 421 `not_leader` naming the
    // leader's admin address: follow it, a few times at most (the
    // leadership may move while this runs).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.timeout_seconds);
    let mut target = target;
    let mut hops = 0;
    let reply = loop {
        let call = request(
            &target,
            &method,
            &a.path,
            body.as_bytes(),
            secret.as_deref(),
            tls.as_ref(),
        );
        let reply = match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                eprintln!("twopc http: {e}");
                return ExitCode::from(1);
            }
            Err(_) => {
                eprintln!(
                    "twopc http: no answer within {} s (--timeout-seconds)",
                    a.timeout_seconds
                );
                return ExitCode::from(1);
            }
        };
        match leader_named_by(&reply) {
            Some(leader) if hops < 3 && leader != target => {
                eprintln!("twopc http: {target} does not lead the coordinator group; sending to the leader's admin API at {leader}");
                target = leader;
                hops += 1;
            }
            _ => break reply,
        }
    };
    let text = String::from_utf8_lossy(&reply.body);
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    if (200..300).contains(&reply.status) {
        return ExitCode::SUCCESS;
    }
    eprintln!("twopc http: HTTP {}", reply.status);
    if reply.status == 401 && secret.is_none() {
        eprintln!("twopc http: the coordinator requires the shared secret: pass --secret-file FILE or set TWOPC_SECRET");
    }
    ExitCode::from(1)
}

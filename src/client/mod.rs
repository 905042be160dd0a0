//! The client side of the protocol: a connection to a coordinator that says
//! hello as a client (over TLS and with the shared secret when given),
//! submits transactions and asks for status. It only talks to the
//! coordinator; what to do with the answers (print, exit) is its caller's.
//!
//! Submits can be pipelined: [`Client::submit_queue`] sends a submit with a
//! request id of the client's choosing and returns at once, and
//! [`Client::next_reply`] hands out the outcomes in the order they arrive,
//! each with its request id (the coordinator echoes it), so one connection
//! can carry many transactions in flight.
//!
//! The coordinator may be a replicated group whose members refuse a hello
//! with `not_leader` unless they lead: [`Client::connect_with`] takes the
//! members as a comma-separated list, tries them in turn and follows the
//! leader a refusal names ([`Route`] decides where to go next).

use crate::net::codec::{FrameReader, FrameWriter};
use crate::net::stream::{BoxedStream, ConnectError, PlainOpenError};
use crate::net::{self, Inbound};
use crate::protocol::{
    Body, ErrorCode, Outcome, ParticipantId, Role, SubmitRequest, TxnId, WireCode, PROTOCOL_VERSION,
};
use crate::security::auth::{fresh_nonce, Identity, PeerHandshake, PeerStep, OPERATOR_ID};
use crate::security::ClientSecurity;
use futures::FutureExt;
use futures::SinkExt;
use serde_json::Value;
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// Why a client call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the coordinator at {addr}: {source}; is it running, and is the address right?")]
    Unreachable {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from the coordinator within {0:?}")]
    Timeout(Duration),
    #[error("the coordinator refused the request ({code}): {message}")]
    Refused { code: WireCode, message: String },
    #[error("the connection to the coordinator was lost before an answer arrived")]
    Closed,
    #[error("unexpected reply from the coordinator: {0}")]
    Protocol(String),
    #[error("{0}")]
    Tls(String),
    #[error("the server at {addr} speaks TLS; give the CA that signed its certificate with --tls-ca FILE (or TWOPC_TLS_CA)")]
    TlsRequired { addr: String },
    #[error("the server at {addr} requires the shared secret; give it with --secret-file FILE or TWOPC_SECRET")]
    SecretRequired { addr: String },
    #[error("authentication with {addr} failed: {why}")]
    Unauthorized { addr: String, why: String },
    /// Several coordinator members (or a member and the leader it named)
    /// were tried and none took the connection: each with why.
    #[error(
        "no coordinator member took the connection: {}; give the addresses of the running members, \
         comma-separated (HOST:PORT,HOST:PORT), or wait for the group to elect a leader",
        tried_list(.tried)
    )]
    NoMember { tried: Vec<(String, String)> },
}

/// `a:1 (why); b:2 (why)`.
fn tried_list(tried: &[(String, String)]) -> String {
    let each: Vec<String> = tried
        .iter()
        .map(|(a, why)| format!("{a} ({why})"))
        .collect();
    each.join("; ")
}

impl ClientError {
    /// The `error` code in wire spelling (for reports and labels), when
    /// the coordinator refused; match on `Refused { code, .. }` to act on it.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code.as_str()),
            ClientError::SecretRequired { .. } | ClientError::Unauthorized { .. } => {
                Some(ErrorCode::Unauthorized.as_str())
            }
            _ => None,
        }
    }
}

/// One client connection to a coordinator.
pub struct Client {
    reader: FrameReader<BoxedStream>,
    writer: FrameWriter<BoxedStream>,
    max_frame_bytes: usize,
    timeout: Duration,
    pub coordinator_state: String,
    /// Request ids of pipelined submits sent and not answered yet: a reply
    /// naming another id is a protocol error, not someone else's outcome.
    outstanding: HashSet<u64>,
    /// The request id the next pipelined submit gets.
    next_request_id: u64,
}

/// What one pipelined submit came to: its outcome, or why the coordinator
/// refused it (`ClientError::Refused`, with the code to act on).
#[derive(Debug)]
pub struct SubmitReply {
    /// The id [`Client::submit_queue`] returned for the submit.
    pub request_id: u64,
    pub result: Result<(TxnId, Outcome), ClientError>,
}

/// Frames a client accepts; replies are small except status reports.
pub const CLIENT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

impl Client {
    /// Connect over plain TCP without a secret and say hello. `timeout`
    /// bounds every later call too.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        Client::connect_with(addr, &ClientSecurity::default(), timeout).await
    }

    /// Connect (TLS when `security.tls` is set), say hello, and answer the
    /// server's challenge when `security.secret` is set.
    ///
    /// `addr` is one `host:port` or the members of a replicated coordinator
    /// group, comma-separated. They are tried in order (the leader this
    /// process last reached through the same list first), a member that
    /// refuses with `not_leader` is left for the leader it names, and all of
    /// it takes at most `timeout`. With one address and no redirect, the
    /// error is that address's own; after several tries it is
    /// [`ClientError::NoMember`], naming each address and why.
    pub async fn connect_with(
        addr: &str,
        security: &ClientSecurity,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut route = Route::new(members(addr), remembered_leader(addr));
        let mut tried: Vec<(String, String)> = Vec::new();
        let mut last = None;
        while let Some(member) = route.next() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                tried.push((member, "not tried: out of time".into()));
                continue;
            }
            // The time left is shared by the addresses left, so that one
            // member that never answers does not keep the client from the
            // others. Alone, an address has all of `timeout`, as ever.
            let budget = match (tried.is_empty(), route.waiting()) {
                (true, 1) => timeout,
                (_, n) => left / n as u32,
            };
            let opened = tokio::time::timeout(budget, Client::open(&member, security, timeout))
                .await
                .unwrap_or(Err(ClientError::Timeout(budget)));
            let e = match opened {
                Ok(c) => {
                    remember_leader(addr, &member);
                    return Ok(c);
                }
                Err(e) => e,
            };
            match &e {
                ClientError::Refused { code, message } if *code == ErrorCode::NotLeader => {
                    route.not_leader(crate::protocol::not_leader_address(message));
                    tried.push((member, format!("not the leader: {message}")));
                }
                ClientError::Timeout(t) => {
                    tried.push((member, format!("no answer within {} ms", t.as_millis())))
                }
                other => tried.push((member, other.to_string())),
            }
            last = Some(e);
        }
        match (tried.len(), last) {
            (1, Some(e)) => Err(e),
            _ => Err(ClientError::NoMember { tried }),
        }
    }

    async fn open(
        addr: &str,
        security: &ClientSecurity,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        // With a key that can act as an operator, say so: the coordinator
        // then allows operator actions on this connection.
        let operator = security
            .secret
            .as_ref()
            .is_some_and(|k| k.can_prove(&Identity::Operator));
        let id = operator.then(|| ParticipantId(OPERATOR_ID.to_string()));
        let hello = Body::Hello {
            role: Role::Client,
            id: id.clone(),
            protocol_version: PROTOCOL_VERSION,
        };
        let stream: BoxedStream = match &security.tls {
            Some(_) => net::stream::connect(addr, security.tls.as_ref())
                .await
                .map_err(|e| match e {
                    ConnectError::Tcp { source, .. } => ClientError::Unreachable {
                        addr: addr.to_string(),
                        source,
                    },
                    tls @ ConnectError::Tls { .. } => ClientError::Tls(tls.to_string()),
                })?,
            None => plain_with_hello(addr, hello.clone()).await?,
        };
        let (reader, writer) = net::codec::framed(stream, CLIENT_MAX_FRAME_BYTES);
        let mut c = Client {
            reader,
            writer,
            max_frame_bytes: CLIENT_MAX_FRAME_BYTES,
            timeout,
            coordinator_state: String::new(),
            outstanding: HashSet::new(),
            next_request_id: 1,
        };
        if security.tls.is_some() {
            c.send(hello).await?;
        }
        let mut handshake = security.secret.clone().map(|k| {
            PeerHandshake::new(
                k,
                Role::Client,
                id.as_ref().map(|i| i.0.as_str()),
                fresh_nonce(),
            )
        });
        loop {
            let reply = c.recv_raw().await?;
            if let Some(hs) = handshake.as_mut() {
                match hs.on_message(&reply) {
                    PeerStep::Reply(b) => c.send(b).await?,
                    PeerStep::Done => handshake = None,
                    PeerStep::Fail(why) => {
                        return Err(ClientError::Unauthorized {
                            addr: addr.to_string(),
                            why,
                        })
                    }
                }
                continue;
            }
            return match reply {
                Body::Welcome { state, .. } => {
                    c.coordinator_state = state;
                    Ok(c)
                }
                Body::Challenge { .. } => Err(ClientError::SecretRequired {
                    addr: addr.to_string(),
                }),
                Body::Error { code, message, .. } => Err(ClientError::Refused { code, message }),
                other => Err(unexpected(other)),
            };
        }
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    async fn send(&mut self, body: Body) -> Result<(), ClientError> {
        self.writer
            .send(net::encode(body))
            .await
            .map_err(|_| ClientError::Closed)
    }

    async fn recv(&mut self) -> Result<Body, ClientError> {
        match self.recv_raw().await? {
            Body::Error { code, message, .. } => Err(ClientError::Refused { code, message }),
            b => Ok(b),
        }
    }

    /// The next message, `error` included.
    async fn recv_raw(&mut self) -> Result<Body, ClientError> {
        let t = self.timeout;
        let max = self.max_frame_bytes;
        let next = tokio::time::timeout(t, net::read_next(&mut self.reader, max))
            .await
            .map_err(|_| ClientError::Timeout(t))?;
        match next {
            None => Err(ClientError::Closed),
            Some(Inbound::Message(b)) => Ok(b),
            Some(Inbound::Invalid(e)) | Some(Inbound::Broken(e)) => {
                Err(ClientError::Protocol(e.to_string()))
            }
        }
    }

    /// Run one transaction; returns its id and outcome. Not to be mixed
    /// with pipelined submits on the same connection: wait for their
    /// replies first ([`Client::outstanding`] is 0).
    pub async fn submit(&mut self, req: SubmitRequest) -> Result<(TxnId, Outcome), ClientError> {
        self.submit_reporting(req, |_| {}).await
    }

    /// Run one transaction, calling `accepted` with its id as soon as the
    /// coordinator has started it (the request is sent with
    /// `report_accepted`), before the outcome: a caller that loses the
    /// connection afterwards can still look the transaction up.
    pub async fn submit_reporting(
        &mut self,
        mut req: SubmitRequest,
        mut accepted: impl FnMut(&TxnId),
    ) -> Result<(TxnId, Outcome), ClientError> {
        req.report_accepted = true;
        self.send(Body::Submit(req)).await?;
        loop {
            match self.recv().await? {
                Body::Outcome { txn, outcome } => return Ok((txn, outcome)),
                Body::Accepted { txn, .. } => accepted(&txn),
                Body::HeartbeatAck => continue,
                other => return Err(unexpected(other)),
            }
        }
    }

    /// Queue a submit without waiting for its outcome and return the
    /// request id its reply will carry. It is written with the submits
    /// queued after it by the next [`Client::flush`] (or sooner, when the
    /// buffer fills), so a batch costs one write. The coordinator bounds
    /// what it runs at once (`max_in_flight`, error `overloaded` past it),
    /// not what one connection sends.
    pub async fn submit_queue(&mut self, mut req: SubmitRequest) -> Result<u64, ClientError> {
        let id = self.next_request_id;
        self.next_request_id += 1;
        req.request_id = Some(id);
        self.writer
            .feed(net::encode(Body::Submit(req)))
            .await
            .map_err(|_| ClientError::Closed)?;
        self.outstanding.insert(id);
        Ok(id)
    }

    /// Write the submits queued so far.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        SinkExt::<bytes::Bytes>::flush(&mut self.writer)
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Pipelined submits sent and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// The next reply to a pipelined submit, waiting for it (at most the
    /// client's timeout). An `Err` means the connection can carry no more
    /// answers (lost, timed out, or an error not about one submit); every
    /// submit still outstanding then has no known outcome.
    pub async fn next_reply(&mut self) -> Result<SubmitReply, ClientError> {
        loop {
            let body = self.recv_raw().await?;
            if let Some(r) = self.reply_of(body)? {
                return Ok(r);
            }
        }
    }

    /// A reply to a pipelined submit that has already arrived (read with
    /// the frames before it), without waiting for the network; `None` when
    /// there is none yet.
    pub fn ready_reply(&mut self) -> Option<Result<SubmitReply, ClientError>> {
        loop {
            let next = net::read_next(&mut self.reader, self.max_frame_bytes).now_or_never()?;
            let body = match next {
                None => return Some(Err(ClientError::Closed)),
                Some(Inbound::Message(b)) => b,
                Some(Inbound::Invalid(e)) | Some(Inbound::Broken(e)) => {
                    return Some(Err(ClientError::Protocol(e.to_string())))
                }
            };
            match self.reply_of(body) {
                Ok(Some(r)) => return Some(Ok(r)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The reply a message is, `None` for one to skip (an `accepted` or a
    /// heartbeat answer).
    fn reply_of(&mut self, body: Body) -> Result<Option<SubmitReply>, ClientError> {
        let (request_id, result) = match body {
            Body::Outcome { txn, outcome } => (outcome.request_id, Ok((txn, outcome))),
            Body::Error {
                code,
                message,
                request_id: Some(id),
            } => (Some(id), Err(ClientError::Refused { code, message })),
            Body::Error { code, message, .. } => {
                return Err(ClientError::Refused { code, message })
            }
            Body::Accepted { .. } | Body::HeartbeatAck => return Ok(None),
            other => return Err(unexpected(other)),
        };
        match request_id {
            Some(id) if self.outstanding.remove(&id) => Ok(Some(SubmitReply {
                request_id: id,
                result,
            })),
            Some(id) => Err(ClientError::Protocol(format!(
                "a reply for request id {id}, which no submit outstanding has"
            ))),
            None => Err(ClientError::Protocol(
                "an outcome without the request id of its submit".into(),
            )),
        }
    }

    /// The coordinator's status report.
    pub async fn status(&mut self) -> Result<Value, ClientError> {
        self.send(Body::Status).await?;
        match self.recv().await? {
            Body::StatusReport(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Send any request and return the first reply (errors become
    /// `ClientError::Refused`).
    pub async fn request(&mut self, body: Body) -> Result<Body, ClientError> {
        self.send(body).await?;
        self.recv().await
    }

    /// Send raw frame bytes (for tools and tests that probe the server).
    pub async fn send_raw(&mut self, bytes: bytes::Bytes) -> Result<(), ClientError> {
        self.writer
            .send(bytes)
            .await
            .map_err(|_| ClientError::Closed)
    }
}

/// The members named by a `--coordinator` value: comma-separated, blanks
/// around each ignored. A value with none is kept as it is, so that the
/// error names what was given.
fn members(addr: &str) -> Vec<String> {
    let list: Vec<String> = addr
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect();
    match list.is_empty() {
        true => vec![addr.to_string()],
        false => list,
    }
}

/// The member that last took a connection, by the `addr` given for it
/// (one process may talk to several groups): tried first next time.
static LEADERS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
/// Groups [`LEADERS`] remembers at most; the oldest is forgotten first.
const LEADERS_MAX: usize = 16;

fn remembered_leader(addr: &str) -> Option<String> {
    // Inside a simulation the process holds many worlds at once (one per
    // test thread): none remembers another's leader, so a seed replays.
    if crate::sim::active() {
        return None;
    }
    let leaders = LEADERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    leaders
        .iter()
        .find(|(a, _)| a == addr)
        .map(|(_, l)| l.clone())
}

fn remember_leader(addr: &str, leader: &str) {
    let mut leaders = LEADERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    leaders.retain(|(a, _)| a != addr);
    if leaders.len() >= LEADERS_MAX {
        leaders.remove(0);
    }
    leaders.push((addr.to_string(), leader.to_string()));
}

/// Where a client connecting to a coordinator group goes next: the
/// remembered leader, then each member once, in order; a leader named by
/// a `not_leader` refusal goes first. Redirects are bounded (twice the
/// list, and two more) so that members naming each other cannot keep a
/// client going round. Pure.
#[derive(Debug)]
struct Route {
    queue: VecDeque<String>,
    hops: usize,
    hops_max: usize,
}

impl Route {
    fn new(members: Vec<String>, remembered: Option<String>) -> Route {
        let hops_max = 2 * members.len() + 2;
        let mut queue: VecDeque<String> = remembered.into_iter().collect();
        for m in members {
            if !queue.contains(&m) {
                queue.push_back(m);
            }
        }
        Route {
            queue,
            hops: 0,
            hops_max,
        }
    }

    /// The next address to try, or `None` when every one was.
    fn next(&mut self) -> Option<String> {
        self.queue.pop_front()
    }

    /// Addresses left to try, the one just taken included: how many share
    /// the time left.
    fn waiting(&self) -> usize {
        self.queue.len() + 1
    }

    /// The member just tried is not the leader; `leader` is the one it
    /// named, tried next (within the bound on redirects).
    fn not_leader(&mut self, leader: Option<String>) {
        let Some(leader) = leader else { return };
        if self.hops >= self.hops_max {
            return;
        }
        self.hops += 1;
        self.queue.retain(|a| *a != leader);
        self.queue.push_front(leader);
    }
}

/// Plain TCP with the hello sent, or why not.
async fn plain_with_hello(addr: &str, hello: Body) -> Result<BoxedStream, ClientError> {
    net::stream::connect_plain_sending(addr, &net::encode(hello))
        .await
        .map_err(|e| match e {
            PlainOpenError::Unreachable(source) => ClientError::Unreachable {
                addr: addr.to_string(),
                source,
            },
            PlainOpenError::Closed => ClientError::Closed,
            PlainOpenError::ServerSpeaksTls => ClientError::TlsRequired {
                addr: addr.to_string(),
            },
        })
}

fn unexpected(b: Body) -> ClientError {
    ClientError::Protocol(format!("`{}`", b.message_type()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(members: &[&str], remembered: Option<&str>) -> Route {
        Route::new(
            members.iter().map(|m| m.to_string()).collect(),
            remembered.map(String::from),
        )
    }

    #[test]
    fn members_are_split_on_commas_and_one_address_stays_one() {
        assert_eq!(members("127.0.0.1:8080"), ["127.0.0.1:8080"]);
        assert_eq!(members(" a:1 , b:2,,c:3 "), ["a:1", "b:2", "c:3"]);
        assert_eq!(members(""), [""]);
        assert_eq!(members(" , "), [" , "]);
    }

    #[test]
    fn the_remembered_leader_goes_first_and_each_member_once() {
        let mut r = route(&["a:1", "b:2", "c:3"], Some("b:2"));
        let order: Vec<String> = std::iter::from_fn(|| r.next()).collect();
        assert_eq!(order, ["b:2", "a:1", "c:3"]);
        let mut r = route(&["a:1"], Some("z:9"));
        assert_eq!(r.next().as_deref(), Some("z:9"));
        assert_eq!(r.waiting(), 2);
    }

    #[test]
    fn a_named_leader_is_tried_next_and_only_once_in_the_queue() {
        let mut r = route(&["a:1", "b:2", "c:3"], None);
        assert_eq!(r.next().as_deref(), Some("a:1"));
        r.not_leader(Some("c:3".into()));
        assert_eq!(r.next().as_deref(), Some("c:3"));
        // No leader known: the list goes on.
        r.not_leader(None);
        assert_eq!(r.next().as_deref(), Some("b:2"));
        assert_eq!(r.next(), None);
    }

    #[test]
    fn redirects_are_bounded() {
        let mut r = route(&["a:1", "b:2"], None);
        let mut tried = 0;
        while let Some(m) = r.next() {
            tried += 1;
            r.not_leader(Some(if m == "a:1" { "b:2" } else { "a:1" }.into()));
        }
        // The first member, then 2 × 2 + 2 redirects (the second member
        // among them, named before its turn in the list).
        assert_eq!(tried, 7);
    }

    #[test]
    fn a_failure_of_several_members_names_each() {
        let e = ClientError::NoMember {
            tried: vec![
                ("a:1".into(), "connection refused".into()),
                ("b:2".into(), "not the leader: no leader yet".into()),
            ],
        };
        assert_eq!(
            e.to_string(),
            "no coordinator member took the connection: a:1 (connection refused); \
             b:2 (not the leader: no leader yet); give the addresses of the running members, \
             comma-separated (HOST:PORT,HOST:PORT), or wait for the group to elect a leader"
        );
    }
}

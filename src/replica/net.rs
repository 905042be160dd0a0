//! The members' Raft port: openraft's RPCs (append entries, vote, and a
//! snapshot in parts) as length-prefixed JSON frames over TCP, one request
//! and its reply at a time per connection.
//!
//! Every connection starts with a mutual proof of the shared secret when
//! one is configured: the server sends a nonce, the member answers with its
//! id, its own nonce and an HMAC over both under the members' key; the
//! server answers with its HMAC. Without a secret the same exchange runs
//! with empty MACs (loopback only; the configuration checks refuse a group
//! on other addresses without a secret unless `insecure`).

use super::{Member, RaftNode, SnapshotMeta, TypeConfig, Vote};
use crate::security::auth::{fresh_nonce, Identity, Key, Secret};
use futures::Stream;
use futures::{SinkExt, StreamExt};
use openraft::alias::SnapshotOf;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{stream_append_sequential, RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "body", rename_all = "snake_case")]
enum Request {
    Hello {
        member: u64,
        nonce: String,
        mac: String,
        /// The member's admin HTTP address, when it has one: a follower
        /// names its leader's to HTTP clients. Covered by the MAC.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        admin: Option<String>,
    },
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    /// One part of a snapshot, in order from offset 0; the last (`done`) installs it.
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "body", rename_all = "snake_case")]
enum Reply {
    Challenge {
        nonce: String,
    },
    Welcome {
        mac: String,
    },
    Refused {
        message: String,
    },
    Append(Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>),
    Vote(Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>),
    /// A part other than the last was taken.
    SnapshotPart,
    Snapshot(Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>>),
}

/// What both ends need to authenticate a connection.
#[derive(Clone)]
pub struct PortAuth {
    key: Option<Key>,
}

impl PortAuth {
    /// The members' key from the coordinator's secret (none without one).
    pub fn new(secret: Option<&Secret>) -> Result<PortAuth, String> {
        let key = match secret {
            None => None,
            Some(s) => Some(s.key_for(&Identity::Member).map_err(|e| {
                format!("the coordinator group needs the master secret on every member ({e})")
            })?),
        };
        Ok(PortAuth { key })
    }

    fn mac(&self, prover: &str, member: u64, server_nonce: &str, peer_nonce: &str) -> String {
        match &self.key {
            None => String::new(),
            Some(k) => crate::security::auth::hmac_hex(
                k,
                format!("twopc raft\n{prover}\n{member}\n{server_nonce}\n{peer_nonce}").as_bytes(),
            ),
        }
    }

    fn verify(&self, prover: &str, member: u64, sn: &str, pn: &str, mac: &str) -> bool {
        match &self.key {
            None => true,
            Some(k) => crate::security::auth::hmac_verify(
                k,
                format!("twopc raft\n{prover}\n{member}\n{sn}\n{pn}").as_bytes(),
                mac,
            ),
        }
    }
}

/// Who proves the secret in a hello: a member, with its admin address.
fn peer_prover(admin: Option<&str>) -> String {
    match admin {
        None => "peer".into(),
        Some(a) => format!("peer admin={a}"),
    }
}

/// The admin HTTP addresses the members announced in their hellos.
pub type Admins = Arc<std::sync::Mutex<std::collections::BTreeMap<u64, String>>>;

type Conn = Framed<crate::net::stream::BoxedStream, LengthDelimitedCodec>;

fn codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame_bytes)
        .new_codec()
}

async fn send<T: Serialize>(c: &mut Conn, v: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    c.send(bytes::Bytes::from(bytes)).await
}

async fn recv<T: for<'a> Deserialize<'a>>(c: &mut Conn) -> std::io::Result<T> {
    match c.next().await {
        Some(Ok(frame)) => serde_json::from_slice(&frame).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a Raft frame: {e}"),
            )
        }),
        Some(Err(e)) => Err(e),
        None => Err(std::io::ErrorKind::UnexpectedEof.into()),
    }
}

/// Serve the Raft port until `shutdown`.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: crate::net::listener::Listener,
    raft: RaftNode,
    auth: PortAuth,
    me: u64,
    limits: PortLimits,
    admins: Admins,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = crate::sim::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept_stream() => a,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "Raft port at raft_max_connections; connection refused");
            continue;
        };
        let raft = raft.clone();
        let auth = auth.clone();
        let admins = admins.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let mut c = Framed::new(stream, codec(limits.max_frame_bytes));
            crate::sim::select! {
                _ = shutdown.cancelled() => {}
                r = serve_conn(&mut c, &raft, &auth, me, limits.handshake_timeout, &admins) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, "Raft connection ended: {e}");
                    }
                }
            }
        });
    }
}

/// Bounds of the Raft port.
#[derive(Clone, Copy, Debug)]
pub struct PortLimits {
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    /// How long a leader holds back an AppendEntries that carries no
    /// entries, waiting for one that does (see [`fold_commit_notices`]).
    pub commit_hold: Duration,
}

async fn serve_conn(
    c: &mut Conn,
    raft: &RaftNode,
    auth: &PortAuth,
    me: u64,
    handshake_timeout: Duration,
    admins: &Admins,
) -> std::io::Result<()> {
    let nonce = fresh_nonce();
    send(
        c,
        &Reply::Challenge {
            nonce: nonce.clone(),
        },
    )
    .await?;
    let hello = tokio::time::timeout(handshake_timeout, recv::<Request>(c))
        .await
        .map_err(|_| std::io::Error::other("no hello within handshake_timeout_ms"))??;
    let Request::Hello {
        member,
        nonce: peer_nonce,
        mac,
        admin,
    } = hello
    else {
        send(
            c,
            &Reply::Refused {
                message: "hello first".into(),
            },
        )
        .await?;
        return Err(std::io::Error::other("a request before hello"));
    };
    if !auth.verify(
        &peer_prover(admin.as_deref()),
        member,
        &nonce,
        &peer_nonce,
        &mac,
    ) {
        tracing::warn!(
            member,
            "a connection to the Raft port failed authentication: configure the same secret on every member"
        );
        send(
            c,
            &Reply::Refused {
                message: "authentication failed: every member needs the same secret".into(),
            },
        )
        .await?;
        return Err(std::io::Error::other("authentication failed"));
    }
    send(
        c,
        &Reply::Welcome {
            mac: auth.mac("server", me, &nonce, &peer_nonce),
        },
    )
    .await?;
    if let Some(a) = admin.filter(|a| crate::protocol::plausible_addr(a)) {
        admins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(member, a);
    }
    // A snapshot being received: its parts so far.
    let mut snapshot: Vec<u8> = Vec::new();
    loop {
        let req = recv::<Request>(c).await?;
        let reply = match req {
            Request::Hello { .. } => return Err(std::io::Error::other("a second hello")),
            Request::Append(r) => Reply::Append(raft.append_entries(r).await),
            Request::Vote(r) => Reply::Vote(raft.vote(r).await),
            Request::Snapshot {
                vote,
                meta,
                offset,
                data,
                done,
            } => {
                if offset != snapshot.len() as u64 {
                    return Err(std::io::Error::other(format!(
                        "a snapshot part at offset {offset}, expected {}",
                        snapshot.len()
                    )));
                }
                snapshot.extend_from_slice(&data);
                if !done {
                    Reply::SnapshotPart
                } else {
                    let whole = SnapshotOf::<TypeConfig, Vec<u8>> {
                        meta,
                        snapshot: std::mem::take(&mut snapshot),
                    };
                    Reply::Snapshot(raft.install_full_snapshot(vote, whole).await)
                }
            }
        };
        send(c, &reply).await?;
    }
}

/// Makes a client per member for openraft.
pub struct Network {
    pub me: u64,
    pub auth: PortAuth,
    pub limits: PortLimits,
    /// This member's admin HTTP address, announced in its hellos.
    pub admin: Option<String>,
    /// Set when a member refused this one's candidacy holding a longer
    /// log than it: see [`super::elect`].
    pub greater_log: Arc<AtomicBool>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = MemberClient;

    async fn new_client(&mut self, target: u64, node: &Member) -> MemberClient {
        MemberClient {
            me: self.me,
            target,
            addr: node.raft_addr.clone(),
            auth: self.auth.clone(),
            limits: self.limits,
            admin: self.admin.clone(),
            greater_log: self.greater_log.clone(),
            conn: std::sync::Mutex::new(None),
        }
    }
}

/// One member's connection, made on first use and after any failure.
pub struct MemberClient {
    me: u64,
    target: u64,
    addr: String,
    auth: PortAuth,
    limits: PortLimits,
    admin: Option<String>,
    greater_log: Arc<AtomicBool>,
    /// openraft wants its clients `Sync`; the lock is never contended
    /// (calls take `&mut self`).
    conn: std::sync::Mutex<Option<Conn>>,
}

/// How one call failed.
enum CallError {
    Unreachable(std::io::Error),
    Network(std::io::Error),
}

impl MemberClient {
    async fn connect(&self) -> Result<Conn, CallError> {
        let stream = tokio::time::timeout(
            self.limits.handshake_timeout,
            crate::net::stream::connect(&self.addr, None),
        )
        .await
        .map_err(|_| CallError::Unreachable(std::io::ErrorKind::TimedOut.into()))?
        .map_err(|e| CallError::Unreachable(std::io::Error::other(e)))?;
        let mut c = Framed::new(stream, codec(self.limits.max_frame_bytes));
        let handshake = async {
            let Reply::Challenge { nonce } = recv::<Reply>(&mut c).await? else {
                return Err(std::io::Error::other("no challenge from the member"));
            };
            let mine = fresh_nonce();
            send(
                &mut c,
                &Request::Hello {
                    member: self.me,
                    nonce: mine.clone(),
                    mac: self
                        .auth
                        .mac(&peer_prover(self.admin.as_deref()), self.me, &nonce, &mine),
                    admin: self.admin.clone(),
                },
            )
            .await?;
            match recv::<Reply>(&mut c).await? {
                Reply::Welcome { mac } if self.auth.verify("server", self.target, &nonce, &mine, &mac) => Ok(()),
                Reply::Welcome { .. } => Err(std::io::Error::other(format!(
                    "member {} at {} did not prove the secret; configure the same secret on every member",
                    self.target, self.addr
                ))),
                Reply::Refused { message } => Err(std::io::Error::other(message)),
                _ => Err(std::io::Error::other("unexpected reply to hello")),
            }
        };
        tokio::time::timeout(self.limits.handshake_timeout, handshake)
            .await
            .map_err(|_| CallError::Unreachable(std::io::ErrorKind::TimedOut.into()))?
            .map_err(CallError::Unreachable)?;
        Ok(c)
    }

    async fn call(&mut self, req: Request, ttl: Duration) -> Result<Reply, CallError> {
        let kept = self
            .conn
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut c = match kept {
            Some(c) => c,
            None => self.connect().await?,
        };
        let exchange = async {
            send(&mut c, &req).await?;
            recv::<Reply>(&mut c).await
        };
        let reply = tokio::time::timeout(ttl, exchange)
            .await
            .map_err(|_| CallError::Network(std::io::ErrorKind::TimedOut.into()))?
            .map_err(CallError::Network)?;
        *self.conn.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(c);
        Ok(reply)
    }
}

fn rpc_err<E: std::error::Error>(e: CallError) -> RPCError<TypeConfig, E> {
    match e {
        CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
    }
}

fn unexpected<E: std::error::Error>() -> RPCError<TypeConfig, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(
        "the member answered with the wrong kind of reply",
    )))
}

impl RaftNetworkV2<TypeConfig> for MemberClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(Request::Append(rpc), option.hard_ttl())
            .await
            .map_err(rpc_err)?
        {
            Reply::Append(r) => r.map_err(|e| remote(self.target, e)),
            _ => Err(unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mine = rpc.last_log_id;
        match self
            .call(Request::Vote(rpc), option.hard_ttl())
            .await
            .map_err(rpc_err)?
        {
            Reply::Vote(r) => {
                let r = r.map_err(|e| remote(self.target, e))?;
                if r.last_log_id > mine {
                    self.greater_log.store(true, Ordering::Relaxed);
                }
                Ok(r)
            }
            _ => Err(unexpected()),
        }
    }

    /// The snapshot in parts of at most a quarter of a frame (a byte takes
    /// up to four in JSON), each acknowledged before the next.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let part = (self.limits.max_frame_bytes / 4)
            .saturating_sub(4096)
            .max(1024);
        let data = snapshot.snapshot;
        let meta = snapshot.meta;
        let send_all = async {
            let mut offset = 0;
            loop {
                let end = (offset + part).min(data.len());
                let done = end == data.len();
                let req = Request::Snapshot {
                    vote,
                    meta: meta.clone(),
                    offset: offset as u64,
                    data: data[offset..end].to_vec(),
                    done,
                };
                let reply = self
                    .call(req, option.hard_ttl())
                    .await
                    .map_err(|e| match e {
                        CallError::Unreachable(e) => {
                            StreamingError::Unreachable(Unreachable::new(&e))
                        }
                        CallError::Network(e) => StreamingError::Network(NetworkError::new(&e)),
                    })?;
                match (reply, done) {
                    (Reply::SnapshotPart, false) => offset = end,
                    (Reply::Snapshot(Ok(r)), true) => return Ok(r),
                    (Reply::Snapshot(Err(e)), true) => {
                        return Err(StreamingError::Network(NetworkError::new(
                            &std::io::Error::other(format!(
                                "member {} could not install the snapshot: {e}",
                                self.target
                            )),
                        )))
                    }
                    _ => {
                        return Err(StreamingError::Network(NetworkError::new(
                            &std::io::Error::other(
                                "the member answered with the wrong kind of reply",
                            ),
                        )))
                    }
                }
            }
        };
        crate::sim::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = send_all => r,
        }
    }

    /// Replication and heartbeats, one request and its answer at a time as
    /// in openraft's default, but through [`fold_commit_notices`].
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let hold = self.limits.commit_hold;
        stream_append_sequential(self, fold_commit_notices(input, hold), option)
    }

    fn backoff(&self) -> Option<openraft::network::Backoff> {
        // An unreachable member is retried every 100 ms: a restarted member
        // catches up soon after it is back.
        Some(openraft::network::Backoff::new(std::iter::repeat(
            Duration::from_millis(100),
        )))
    }
}

/// Requests of one replication stream, with a request that carries no
/// entries held back up to `hold` for the next one.
///
/// After every commit openraft sends each follower an AppendEntries
/// without entries that only tells it the new commit index, and waits for
/// its answer before sending the next entries. A follower needs that index
/// only to apply decisions it stands by with, and the next request carries
/// it too (openraft reads the commit index afresh for each). So while such
/// a request is held, a request that follows in time replaces it: the
/// message, its answer and the wait are saved. When nothing follows within
/// `hold`, or the stream ends (a heartbeat is a stream of one; so is a probe
/// for the follower's log), the held request goes as it is.
///
/// Nothing is answered for the request that was replaced, so the leader
/// learns nothing it did not hear: openraft credits the follower's answer
/// to the next request to both, dated from when that request was made
/// (before it left). A held request that goes when its hold ends is dated
/// from when it was made too, earlier than it left, which only shortens
/// the lease the leader counts from it. `hold` of zero sends every request
/// as it comes.
fn fold_commit_notices<S>(
    input: S,
    hold: Duration,
) -> BoxStream<'static, AppendEntriesRequest<TypeConfig>>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
{
    Box::pin(futures::stream::unfold(
        input.fuse(),
        move |mut input| async move {
            let mut req = input.next().await?;
            while req.entries.is_empty() && !hold.is_zero() {
                match tokio::time::timeout(hold, input.next()).await {
                    Ok(Some(next)) => req = next,
                    Ok(None) | Err(_) => break,
                }
            }
            Some((req, input))
        },
    ))
}

fn remote<E: std::error::Error>(
    target: u64,
    e: RaftError<TypeConfig, E>,
) -> RPCError<TypeConfig, E> {
    match e {
        RaftError::APIError(e) => RPCError::RemoteError(RemoteError::new(target, e)),
        RaftError::Fatal(f) => RPCError::Network(NetworkError::new(&std::io::Error::other(
            format!("member {target} stopped: {f}"),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CommittedLeaderId, Entry, LogId};
    use super::*;
    use futures::channel::mpsc;
    use openraft::vote::RaftLeaderId;
    use openraft::EntryPayload;

    /// An AppendEntries after index `prev`, carrying entries up to `last`
    /// (none when equal) and the commit index `commit`.
    fn append(prev: u64, last: u64, commit: u64) -> AppendEntriesRequest<TypeConfig> {
        let id = |i| LogId::new(CommittedLeaderId::new(1, 1), i);
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(id(prev)),
            leader_commit: Some(id(commit)),
            entries: (prev + 1..=last)
                .map(|i| Entry {
                    log_id: id(i),
                    payload: EntryPayload::Blank,
                })
                .collect(),
        }
    }

    /// (last entry's index, commit index) of what the fold passed on.
    fn shape(r: &AppendEntriesRequest<TypeConfig>) -> (Option<u64>, u64) {
        (
            r.entries.last().map(|e| e.log_id.index),
            r.leader_commit.unwrap().index,
        )
    }

    /// What the fold passes on of `requests`, a whole stream.
    async fn folded(
        requests: Vec<AppendEntriesRequest<TypeConfig>>,
        hold: Duration,
    ) -> Vec<(Option<u64>, u64)> {
        fold_commit_notices(futures::stream::iter(requests), hold)
            .map(|r| shape(&r))
            .collect()
            .await
    }

    #[tokio::test]
    async fn a_commit_notice_followed_by_entries_is_not_sent() {
        let requests = vec![
            append(0, 2, 0),
            append(2, 2, 2),
            append(2, 2, 2),
            append(2, 3, 2),
        ];
        // Both notices gave way to the entries after them, which carry the
        // same commit index; the hour-long hold was never waited out.
        assert_eq!(
            folded(requests, Duration::from_secs(3600)).await,
            vec![(Some(2), 0), (Some(3), 2)]
        );
    }

    #[tokio::test]
    async fn a_commit_notice_goes_when_nothing_follows() {
        // The stream ends (a heartbeat, a probe): sent at once.
        let requests = vec![append(2, 2, 2)];
        assert_eq!(
            folded(requests, Duration::from_secs(3600)).await,
            vec![(None, 2)]
        );

        // The stream stays open with nothing more: sent when the hold ends.
        let (tx, rx) = mpsc::unbounded();
        tx.unbounded_send(append(2, 2, 2)).unwrap();
        let mut folded = fold_commit_notices(rx, Duration::from_millis(20));
        let first = folded.next().await.map(|r| shape(&r));
        assert_eq!(first, Some((None, 2)));
        drop(tx);
        assert!(folded.next().await.is_none());
    }

    #[tokio::test]
    async fn without_a_hold_every_request_is_sent() {
        let requests = vec![append(0, 2, 0), append(2, 2, 2), append(2, 3, 2)];
        assert_eq!(
            folded(requests, Duration::ZERO).await,
            vec![(Some(2), 0), (None, 2), (Some(3), 2)]
        );
    }

    #[test]
    fn the_admin_address_in_a_hello_is_covered_by_its_mac() {
        let secret = Secret::from_text("members' secret 42").unwrap();
        let auth = PortAuth::new(Some(&secret)).unwrap();
        let (sn, pn) = ("server-nonce", "peer-nonce");
        let admin = peer_prover(Some("10.0.0.1:9090"));
        let mac = auth.mac(&admin, 2, sn, pn);
        assert!(auth.verify(&admin, 2, sn, pn, &mac));
        // Another address, none, or another member: refused.
        assert!(!auth.verify(&peer_prover(Some("10.6.6.6:9090")), 2, sn, pn, &mac));
        assert!(!auth.verify(&peer_prover(None), 2, sn, pn, &mac));
        assert!(!auth.verify(&admin, 3, sn, pn, &mac));
        // A hello without an address proves the plain prover.
        let plain = auth.mac(&peer_prover(None), 2, sn, pn);
        assert!(auth.verify(&peer_prover(None), 2, sn, pn, &plain));
        assert!(!auth.verify(&admin, 2, sn, pn, &plain));
    }

    #[test]
    fn a_hello_without_an_admin_address_reads_as_before() {
        // A member of an earlier build sends no `admin`; one of this build
        // leaves it out when it has no admin API.
        let old = r#"{"type":"hello","body":{"member":2,"nonce":"n","mac":""}}"#;
        let Ok(Request::Hello { member, admin, .. }) = serde_json::from_str::<Request>(old) else {
            panic!("an old hello must parse")
        };
        assert_eq!((member, admin), (2, None));
        let none = Request::Hello {
            member: 2,
            nonce: "n".into(),
            mac: String::new(),
            admin: None,
        };
        assert_eq!(serde_json::to_string(&none).unwrap(), old);
    }
}

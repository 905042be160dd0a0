//! The IO behind a driver's [`Executor`](super::executor::Executor): the
//! group-commit log and the live connections. Which messages may go when is
//! the executor's business; this module only hands frames to connection
//! writers, within the frame limit.

use super::executor;
use crate::net::{self, Outgoing};
use crate::protocol::{Body, ConnId, Record};
use crate::replica::RaftLog;
use crate::wal::{GroupCommit, WalStats};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Where a driver's records go: the process's own group-commit log, or
/// (the leader of a coordinator group) Raft entries.
pub enum Log {
    Local(GroupCommit),
    Replicated(RaftLog),
}

impl From<GroupCommit> for Log {
    fn from(g: GroupCommit) -> Log {
        Log::Local(g)
    }
}

impl Log {
    pub fn append(&mut self, record: &Record, sync: bool) -> u64 {
        match self {
            Log::Local(g) => g.append(record, sync),
            Log::Replicated(r) => r.append(record, sync),
        }
    }
    pub fn barrier(&self) -> u64 {
        match self {
            Log::Local(g) => g.barrier(),
            Log::Replicated(r) => r.barrier(),
        }
    }
    pub fn durable(&self) -> u64 {
        match self {
            Log::Local(g) => g.durable(),
            Log::Replicated(r) => r.durable(),
        }
    }
    fn watch(&self) -> watch::Receiver<u64> {
        match self {
            Log::Local(g) => g.watch(),
            Log::Replicated(r) => r.watch(),
        }
    }
    pub fn backlogged(&self) -> bool {
        match self {
            Log::Local(g) => g.backlogged(),
            Log::Replicated(r) => r.backlogged(),
        }
    }
    pub async fn drain(&mut self) {
        match self {
            Log::Local(g) => g.drain().await,
            Log::Replicated(r) => r.drain().await,
        }
    }
    /// Why the log stopped, once it has. A Raft log does not stop the
    /// process: losing leadership is the driver's business.
    pub fn failure(&self) -> Option<String> {
        match self {
            Log::Local(g) => g.failure(),
            Log::Replicated(_) => None,
        }
    }
    pub fn stats(&self) -> &Arc<WalStats> {
        match self {
            Log::Local(g) => &g.stats,
            Log::Replicated(r) => &r.stats,
        }
    }
    fn bytes_appended(&self) -> u64 {
        match self {
            Log::Local(g) => g.bytes_appended(),
            // Raft snapshots on its own schedule (`raft_snapshot_every`).
            Log::Replicated(_) => 0,
        }
    }
    fn checkpoint(&mut self, live: Vec<Record>) {
        if let Log::Local(g) = self {
            g.checkpoint(live)
        }
    }
}

pub struct Outbox {
    pub log: Log,
    durable: watch::Receiver<u64>,
    /// Ordered by id so that closing them all happens in one order every
    /// run (a simulation replays it).
    conns: BTreeMap<ConnId, (mpsc::Sender<Outgoing>, String)>,
    bytes_at_checkpoint: u64,
    segment_max_bytes: u64,
    /// Largest frame a peer accepts; larger messages are shrunk or dropped
    /// here rather than break the connection.
    max_frame_bytes: usize,
    /// The term this member leads in (a coordinator group's leader): every
    /// welcome, prepare and decision carries it, so participants can refuse
    /// a deposed leader.
    pub term: Option<u64>,
}

impl Outbox {
    pub fn new(log: impl Into<Log>, segment_max_bytes: u64, max_frame_bytes: usize) -> Outbox {
        let log = log.into();
        Outbox {
            max_frame_bytes,
            term: None,
            durable: log.watch(),
            log,
            conns: BTreeMap::new(),
            bytes_at_checkpoint: 0,
            segment_max_bytes,
        }
    }

    pub fn open(&mut self, conn: ConnId, tx: mpsc::Sender<Outgoing>, peer: String) {
        self.conns.insert(conn, (tx, peer));
    }

    pub fn closed(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
    }

    pub fn peer(&self, conn: ConnId) -> String {
        self.conns
            .get(&conn)
            .map(|c| c.1.clone())
            .unwrap_or_default()
    }

    /// The writer queue of `conn`, for a reply sent later by another task.
    pub fn sender(&self, conn: ConnId) -> Option<mpsc::Sender<Outgoing>> {
        self.conns.get(&conn).map(|c| c.0.clone())
    }

    /// Is `conn` still served (not closed, not dropped for not reading)?
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Wait until more of the log is durable. Returns false when the log
    /// writer is gone.
    pub async fn durable_changed(&mut self) -> bool {
        self.durable.changed().await.is_ok()
    }

    /// Highest log sequence number known durable.
    pub fn durable(&self) -> u64 {
        self.log.durable()
    }

    /// Hand a frame to the connection's writer. A peer that does not read
    /// (its queue is full) is disconnected rather than buffered without bound.
    pub fn deliver(&mut self, conn: ConnId, body: Body, crash_after: Option<&'static str>) {
        let Some((tx, peer)) = self.conns.get(&conn) else {
            return;
        };
        let body = match self.term {
            Some(t) => body.with_term(t),
            None => body,
        };
        let txn = body.txn().cloned();
        let transaction_id = txn.as_ref().map(|t| t.0.as_str());
        let message_type = body.message_type();
        let Some(frame) = self.fit(body) else {
            tracing::error!(%peer, transaction_id, "message larger than max_frame_bytes ({}) dropped", self.max_frame_bytes);
            return;
        };
        if transaction_id.is_some() {
            tracing::debug!(%peer, transaction_id, message_type, "sent");
        }
        let item = match crash_after {
            Some(p) => Outgoing::FrameThenCrash(frame, p),
            None => Outgoing::Frame(frame),
        };
        if tx.try_send(item).is_err() {
            tracing::warn!(%peer, transaction_id, "peer is not reading its messages (queue full); closing the connection");
            let _ = tx.try_send(Outgoing::Close);
            self.conns.remove(&conn);
        }
    }

    /// Encode `body` within the frame limit. Read results are the only
    /// unbounded part of a message: when they do not fit they are replaced
    /// by a note, so the vote or the decision itself always gets through.
    fn fit(&self, body: Body) -> Option<bytes::Bytes> {
        let frame = net::encode(body.clone());
        if frame.len() <= self.max_frame_bytes {
            return Some(frame);
        }
        let note = serde_json::json!({
            "error": "results_too_large",
            "message": format!("{} bytes of results exceed max_frame_bytes ({}); read fewer keys per transaction", frame.len(), self.max_frame_bytes),
        });
        let shrunk = match body {
            Body::VoteCommit { txn, .. } => Body::VoteCommit {
                txn,
                result: Some(note),
            },
            Body::Outcome { txn, mut outcome } => {
                for v in outcome.results.values_mut() {
                    *v = note.clone();
                }
                Body::Outcome { txn, outcome }
            }
            _ => return None,
        };
        let frame = net::encode(shrunk);
        (frame.len() <= self.max_frame_bytes).then_some(frame)
    }

    pub fn close(&mut self, conn: ConnId) {
        if let Some((tx, _)) = self.conns.get(&conn) {
            let _ = tx.try_send(Outgoing::Close);
        }
    }

    pub fn close_all(&mut self) {
        for (tx, _) in self.conns.values() {
            let _ = tx.try_send(Outgoing::Close);
        }
    }

    /// True when the log grew past a segment since the last checkpoint; the
    /// caller then passes the live records to [`Outbox::checkpoint`].
    pub fn checkpoint_due(&self) -> bool {
        self.log.bytes_appended() - self.bytes_at_checkpoint > self.segment_max_bytes
    }

    /// Postpone the next checkpoint by one segment's worth of appends.
    pub fn skip_checkpoint(&mut self) {
        self.bytes_at_checkpoint = self.log.bytes_appended();
    }

    pub fn checkpoint(&mut self, live: Vec<Record>) {
        self.bytes_at_checkpoint = self.log.bytes_appended();
        tracing::info!(live = live.len(), "checkpointing the log");
        self.log.checkpoint(live);
    }
}

/// The outbox and log as one executor sees them: frames go through
/// `deliver`, the driver's own hook (its crash points), which ends in
/// [`Outbox::deliver`].
pub(crate) struct Io<'a, F: FnMut(&mut Outbox, ConnId, Body)> {
    pub out: &'a mut Outbox,
    pub deliver: F,
}

impl<F: FnMut(&mut Outbox, ConnId, Body)> executor::Log for Io<'_, F> {
    fn append(&mut self, record: &Record, sync: bool) -> u64 {
        self.out.log.append(record, sync)
    }
    fn barrier(&self) -> u64 {
        self.out.log.barrier()
    }
    fn durable(&self) -> u64 {
        self.out.log.durable()
    }
}

impl<F: FnMut(&mut Outbox, ConnId, Body)> executor::Outbox for Io<'_, F> {
    fn deliver(&mut self, conn: ConnId, body: Body) {
        (self.deliver)(self.out, conn, body)
    }
    fn close(&mut self, conn: ConnId) {
        self.out.close(conn)
    }
}

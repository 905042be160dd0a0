//! Everything a driver needs to perform a core's effects in order: the
//! group-commit log, the live connections, and the messages held back until
//! the log is durable up to the record they depend on.

use super::gate::SendGate;
use crate::net::{self, Outgoing};
use crate::protocol::{Body, ConnId, Record};
use crate::wal::GroupCommit;
use std::collections::HashMap;
use tokio::sync::{mpsc, watch};

pub struct Outbox {
    pub log: GroupCommit,
    durable: watch::Receiver<u64>,
    conns: HashMap<ConnId, (mpsc::Sender<Outgoing>, String)>,
    /// Messages waiting for the log, in order per connection.
    deferred: SendGate<ConnId, Body>,
    bytes_at_checkpoint: u64,
    segment_max_bytes: u64,
    /// Largest frame a peer accepts; larger messages are shrunk or dropped
    /// here rather than break the connection.
    max_frame_bytes: usize,
}

impl Outbox {
    pub fn new(log: GroupCommit, segment_max_bytes: u64, max_frame_bytes: usize) -> Outbox {
        Outbox {
            max_frame_bytes,
            durable: log.watch(),
            log,
            conns: HashMap::new(),
            deferred: SendGate::default(),
            bytes_at_checkpoint: 0,
            segment_max_bytes,
        }
    }

    pub fn open(&mut self, conn: ConnId, tx: mpsc::Sender<Outgoing>, peer: String) {
        self.conns.insert(conn, (tx, peer));
    }

    pub fn closed(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
        self.deferred.forget(conn);
    }

    pub fn peer(&self, conn: ConnId) -> String {
        self.conns
            .get(&conn)
            .map(|c| c.1.clone())
            .unwrap_or_default()
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

    /// Append a record (the writer thread batches and syncs); returns its
    /// log sequence number.
    pub fn persist(&mut self, record: &Record, sync: bool) -> u64 {
        self.log.append(record, sync)
    }

    /// Highest log sequence number known durable.
    pub fn durable(&self) -> u64 {
        self.log.durable()
    }

    /// Queue `body` for `conn`. Returns it back when it may go now; holds it
    /// when it must wait for the log, or behind a message held for `conn`
    /// (see [`SendGate`]).
    pub fn gate(
        &mut self,
        conn: ConnId,
        body: Body,
        after_durable: bool,
    ) -> Option<(ConnId, Body)> {
        let (barrier, durable) = (self.log.barrier(), self.log.durable());
        self.deferred
            .gate(conn, body, after_durable, barrier, durable)
            .map(|b| (conn, b))
    }

    /// Messages whose records are now durable, in order per connection.
    pub fn ready(&mut self) -> Vec<(ConnId, Body)> {
        self.deferred.ready(self.log.durable())
    }

    /// Hand a frame to the connection's writer. A peer that does not read
    /// (its queue is full) is disconnected rather than buffered without bound.
    pub fn deliver(&mut self, conn: ConnId, body: Body, crash_after: Option<&'static str>) {
        let Some((tx, peer)) = self.conns.get(&conn) else {
            return;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Decision, TxnId};
    use crate::wal::{Wal, WalOptions};

    fn outbox(dir: &std::path::Path) -> Outbox {
        let opened = Wal::open(dir, WalOptions::default()).expect("open a log in a temp dir");
        drop(opened.lock);
        Outbox::new(GroupCommit::start(opened.wal, 16), 1 << 20, 1 << 20)
    }

    fn txn(s: &str) -> TxnId {
        TxnId::from(s)
    }

    /// A vote held for its PREPARED record must not be overtaken by a
    /// message produced after it for the same peer (an ACK of an abort that
    /// arrived before the sync completed); other peers are not held up.
    #[tokio::test]
    async fn messages_to_one_peer_leave_in_order_even_when_only_the_first_waits_for_the_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut out = outbox(dir.path());
        let (a, b) = (ConnId(1), ConnId(2));
        let vote = Body::VoteCommit {
            txn: txn("t-1"),
            result: None,
        };
        let ack = Body::Ack {
            txn: txn("t-1"),
            decision: Some(Decision::Abort),
        };
        out.persist(
            &Record::Prepared {
                txn: txn("t-1"),
                participants: vec![],
                state: serde_json::Value::Null,
            },
            true,
        );
        let held_or_sent = out.gate(a, vote.clone(), true);
        if held_or_sent.is_none() {
            // Held (the usual case): the ACK must queue behind it.
            assert_eq!(out.gate(a, ack.clone(), false), None);
            // Another peer's message that need not wait goes at once.
            assert!(out.gate(b, Body::Heartbeat, false).is_some());
            let mut sent = Vec::new();
            while sent.len() < 2 {
                sent.extend(out.ready());
                if sent.len() < 2 {
                    assert!(out.durable_changed().await, "the log writer stopped");
                }
            }
            assert_eq!(sent, vec![(a, vote), (a, ack)]);
        } else {
            // The record was already durable: both go at once, in order.
            assert_eq!(held_or_sent, Some((a, vote)));
            assert_eq!(out.gate(a, ack.clone(), false), Some((a, ack)));
        }
    }
}

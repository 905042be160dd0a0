//! The order in which a process's messages may leave: a message marked
//! `after_durable` waits until the log is durable up to the last record
//! that asked for a sync, and any message waits behind earlier held
//! messages to the same connection, so that a peer sees them in the order
//! the core produced them (an abort's ACK never overtakes the vote before
//! it).
//!
//! Pure bookkeeping: log positions are passed in, nothing is sent here. The
//! runtime's [`Executor`](super::executor::Executor) uses it, in the
//! runtimes and in the deterministic simulator alike.

use std::collections::{BTreeMap, VecDeque};

/// Messages held for the log, per connection, in production order.
#[derive(Debug)]
pub struct SendGate<C: Ord + Copy, M> {
    /// Per connection: (LSN that must be durable first, 0 for "only behind
    /// the messages ahead of it"; the message).
    deferred: BTreeMap<C, VecDeque<(u64, M)>>,
}

impl<C: Ord + Copy, M> Default for SendGate<C, M> {
    fn default() -> Self {
        SendGate {
            deferred: BTreeMap::new(),
        }
    }
}

impl<C: Ord + Copy, M> SendGate<C, M> {
    /// Offer `msg` for `conn`. `barrier` is the LSN of the last appended
    /// record that asked for a sync; `durable` the highest durable LSN.
    /// Returns the message when it may go now, or holds it.
    pub fn gate(
        &mut self,
        conn: C,
        msg: M,
        after_durable: bool,
        barrier: u64,
        durable: u64,
    ) -> Option<M> {
        let lsn = if after_durable { barrier } else { 0 };
        match self.deferred.get_mut(&conn) {
            Some(q) if !q.is_empty() => {
                q.push_back((lsn, msg));
                None
            }
            _ if lsn > durable => {
                self.deferred.entry(conn).or_default().push_back((lsn, msg));
                None
            }
            _ => Some(msg),
        }
    }

    /// Messages that may go now that the log is durable up to `durable`, in
    /// order per connection.
    pub fn ready(&mut self, durable: u64) -> Vec<(C, M)> {
        let mut out = Vec::new();
        for (conn, q) in self.deferred.iter_mut() {
            while q.front().is_some_and(|(lsn, _)| *lsn <= durable) {
                if let Some((_, msg)) = q.pop_front() {
                    out.push((*conn, msg));
                }
            }
        }
        self.deferred.retain(|_, q| !q.is_empty());
        out
    }

    /// The connection is gone: drop what was held for it.
    pub fn forget(&mut self, conn: C) {
        self.deferred.remove(&conn);
    }

    /// Messages held, over all connections.
    pub fn held(&self) -> usize {
        self.deferred.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_waits_behind_a_held_one_to_the_same_peer_only() {
        let mut g: SendGate<u8, &str> = SendGate::default();
        // The vote waits for LSN 5 (durable: 4).
        assert_eq!(g.gate(1, "vote", true, 5, 4), None);
        // The ACK need not wait for the log, but must not overtake the vote.
        assert_eq!(g.gate(1, "ack", false, 5, 4), None);
        // Another peer is not held up.
        assert_eq!(g.gate(2, "heartbeat", false, 5, 4), Some("heartbeat"));
        assert_eq!(g.held(), 2);
        assert_eq!(g.ready(4), vec![]);
        assert_eq!(g.ready(5), vec![(1, "vote"), (1, "ack")]);
        assert_eq!(g.held(), 0);
        // Nothing held and the log durable: straight through.
        assert_eq!(g.gate(1, "commit", true, 5, 5), Some("commit"));
    }

    #[test]
    fn held_messages_of_a_closed_connection_are_dropped() {
        let mut g: SendGate<u8, &str> = SendGate::default();
        assert_eq!(g.gate(1, "vote", true, 2, 1), None);
        g.forget(1);
        assert_eq!(g.ready(2), vec![]);
        assert_eq!(g.gate(1, "ack", false, 2, 1), Some("ack"));
    }
}

//! Applies a core's actions to a log and an outbox, in order: records are
//! appended (and forced writes numbered), messages go out through the
//! [`SendGate`] so that none leaves before the records it depends on are
//! durable, held messages are released as the log becomes durable, and a
//! refusal becomes an error frame. The runtimes and the deterministic
//! simulator all execute actions here, so the ordering rules exist once.
//!
//! Pure bookkeeping: it performs no IO of its own and knows no clock, task
//! or socket; the log and the outbox are whatever the caller passes in.
//! Actions that are not about the log or the wire (alerts, session
//! notices, the resource's prepare and finish) are handed back as [`Local`], so the caller performs
//! them at their place in the sequence. Hooks that belong to one caller
//! (crash points, metrics, log lines, which connection is still live) stay
//! with it: it looks at an action before handing it over, or runs them in
//! its own [`Outbox::deliver`].
//!
//! The log and the outbox are passed as one value (`I: Log + Outbox`): in
//! every user they live together (the runtime's outbox owns its log, a
//! simulated node its disk and its network), and an append may act on the
//! wire (a simulated crash at a sync breaks the node's connections).

use super::gate::SendGate;
use crate::protocol::participant::SessionNotice;
use crate::protocol::{Action, Body, ConnId, Decision, ParticipantId, Record, TxnId};
use serde_json::Value;
use std::collections::VecDeque;

/// The write-ahead log as the executor sees it.
///
/// To ensure correctness: log sequence numbers start at 1 and grow by one
/// per append; `barrier` is the number of the last record appended with
/// `sync`, and `durable` never exceeds what is on disk (a record counts as
/// durable only when everything before it is too).
pub trait Log {
    /// Append `record`; with `sync`, the record must be made durable (the
    /// log may batch it with others). Returns its log sequence number.
    fn append(&mut self, record: &Record, sync: bool) -> u64;
    /// The log sequence number of the last record appended with `sync`.
    fn barrier(&self) -> u64;
    /// The highest log sequence number known durable.
    fn durable(&self) -> u64;
}

/// Where messages go.
///
/// To ensure correctness: frames to one connection leave in the order they
/// are delivered here.
pub trait Outbox {
    /// Send `body` on `conn` now (its durability requirement is met). A
    /// connection that is gone drops it.
    fn deliver(&mut self, conn: ConnId, body: Body);
    /// Close `conn` once what was delivered to it has gone out.
    fn close(&mut self, conn: ConnId);
}

/// An action that is neither about the log nor about the wire: the caller
/// performs it, where it stood in the sequence.
#[derive(Clone, Debug, PartialEq)]
pub enum Local {
    /// As [`Action::Alert`].
    Alert { txn: Option<TxnId>, message: String },
    /// As [`Action::Notice`].
    Notice {
        conn: Option<ConnId>,
        message: String,
    },
    /// As [`Action::PrepareResource`].
    PrepareResource {
        txn: TxnId,
        participants: Vec<ParticipantId>,
        data: Value,
    },
    /// As [`Action::FinishResource`].
    FinishResource { txn: TxnId, decision: Decision },
    /// As [`Action::Session`].
    Session(SessionNotice),
}

/// One process's executor: the messages held for the log, and the count of
/// forced writes.
#[derive(Debug, Default)]
pub struct Executor {
    /// Messages waiting for the log, per connection, in production order.
    gate: SendGate<ConnId, Body>,
    /// Forced writes appended so far; the cores number theirs the same way
    /// (see [`Action::Persist`]).
    forced: u64,
    /// Forced writes not yet known durable: (log sequence number, the
    /// write's number), in append order. Never longer than the forced
    /// writes appended since the log was last seen durable.
    awaiting: VecDeque<(u64, u64)>,
    /// Forced writes known durable.
    forced_durable: u64,
    /// The last count handed out by [`Executor::forced_durable`].
    reported: u64,
}

impl Executor {
    /// Perform `action` on `io`. Returns it, as [`Local`], when it is the
    /// caller's to perform.
    pub fn apply<I: Log + Outbox>(&mut self, io: &mut I, action: Action) -> Option<Local> {
        match action {
            Action::Persist { record, sync } => {
                let lsn = io.append(&record, sync);
                if sync {
                    self.forced += 1;
                    self.awaiting.push_back((lsn, self.forced));
                }
                None
            }
            Action::Send {
                conn,
                body,
                after_durable,
            } => {
                self.send(io, conn, body, after_durable);
                None
            }
            // The refusal answers the message just received: it goes at
            // once, ahead of anything held for the log.
            Action::Reject { conn, error, close } => {
                io.deliver(conn, Body::error(&error));
                if close {
                    io.close(conn);
                }
                None
            }
            Action::Close { conn } => {
                io.close(conn);
                None
            }
            Action::Session(notice) => Some(Local::Session(notice)),
            Action::Alert { txn, message } => Some(Local::Alert { txn, message }),
            Action::Notice { conn, message } => Some(Local::Notice { conn, message }),
            Action::PrepareResource {
                txn,
                participants,
                data,
            } => Some(Local::PrepareResource {
                txn,
                participants,
                data,
            }),
            Action::FinishResource { txn, decision } => {
                Some(Local::FinishResource { txn, decision })
            }
        }
    }

    /// Send `body` on `conn` now, or hold it: until every record appended
    /// with `sync` so far is durable when `after_durable`, and in any case
    /// behind messages already held for `conn`.
    pub fn send<I: Log + Outbox>(
        &mut self,
        io: &mut I,
        conn: ConnId,
        body: Body,
        after_durable: bool,
    ) {
        let (barrier, durable) = (io.barrier(), io.durable());
        if let Some(body) = self.gate.gate(conn, body, after_durable, barrier, durable) {
            io.deliver(conn, body);
        }
    }

    /// Deliver the held messages the log now allows, in order per
    /// connection.
    pub fn release<I: Log + Outbox>(&mut self, io: &mut I) {
        let durable = io.durable();
        self.settle(durable);
        for (conn, body) in self.gate.ready(durable) {
            io.deliver(conn, body);
        }
    }

    /// How many forced writes are durable, now that the log is durable up to
    /// `durable`; `None` when that is no more than last reported. (The
    /// coordinator core is told this count: `Event::Durable { forced }`.)
    pub fn forced_durable(&mut self, durable: u64) -> Option<u64> {
        self.settle(durable);
        (self.forced_durable > self.reported).then(|| {
            self.reported = self.forced_durable;
            self.reported
        })
    }

    /// The connection is gone: drop what was held for it.
    pub fn forget(&mut self, conn: ConnId) {
        self.gate.forget(conn);
    }

    /// Messages held, over all connections.
    pub fn held(&self) -> usize {
        self.gate.held()
    }

    fn settle(&mut self, durable: u64) {
        while let Some(&(lsn, n)) = self.awaiting.front() {
            if lsn > durable {
                break;
            }
            self.forced_durable = n;
            self.awaiting.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorCode, WireError};

    /// A log and an outbox that record what happened, in one list.
    #[derive(Default)]
    struct Io {
        next: u64,
        barrier: u64,
        durable: u64,
        done: Vec<String>,
    }

    impl Log for Io {
        fn append(&mut self, record: &Record, sync: bool) -> u64 {
            self.next += 1;
            if sync {
                self.barrier = self.next;
            }
            let txn = record.txn().map(|t| t.0.clone()).unwrap_or_default();
            self.done
                .push(format!("append {} {txn} sync={sync}", self.next));
            self.next
        }
        fn barrier(&self) -> u64 {
            self.barrier
        }
        fn durable(&self) -> u64 {
            self.durable
        }
    }

    impl Outbox for Io {
        fn deliver(&mut self, conn: ConnId, body: Body) {
            self.done
                .push(format!("deliver {} {}", conn.0, body.message_type()));
        }
        fn close(&mut self, conn: ConnId) {
            self.done.push(format!("close {}", conn.0));
        }
    }

    fn txn(s: &str) -> TxnId {
        TxnId::from(s)
    }

    fn prepared(t: &str) -> Action {
        Action::Persist {
            record: Record::Prepared {
                txn: txn(t),
                participants: vec![],
                state: Value::Null,
            },
            sync: true,
        }
    }

    fn send(conn: u64, body: Body, after_durable: bool) -> Action {
        Action::Send {
            conn: ConnId(conn),
            body,
            after_durable,
        }
    }

    fn vote(t: &str) -> Body {
        Body::VoteCommit {
            txn: txn(t),
            result: None,
        }
    }

    fn ack(t: &str) -> Body {
        Body::Ack {
            txn: txn(t),
            decision: Some(Decision::Abort),
            heuristic: None,
        }
    }

    #[test]
    fn a_vote_waits_for_its_record_and_what_follows_it_waits_behind_it() {
        let (mut ex, mut io) = (Executor::default(), Io::default());
        for a in [
            prepared("t-1"),
            send(1, vote("t-1"), true),
            send(1, ack("t-1"), false),
            send(2, Body::Heartbeat, false),
        ] {
            assert_eq!(ex.apply(&mut io, a), None);
        }
        assert_eq!(io.done, ["append 1 t-1 sync=true", "deliver 2 heartbeat"]);
        assert_eq!(ex.held(), 2);
        ex.release(&mut io);
        assert_eq!(io.done.len(), 2, "the log is not durable yet");
        io.durable = 1;
        ex.release(&mut io);
        assert_eq!(io.done[2..], ["deliver 1 vote_commit", "deliver 1 ack"]);
        assert_eq!(ex.held(), 0);
    }

    #[test]
    fn a_message_that_need_not_wait_goes_at_once() {
        let (mut ex, mut io) = (Executor::default(), Io::default());
        let decided = Action::Persist {
            record: Record::Decided {
                txn: txn("t-1"),
                decision: Decision::Abort,
                heuristic: None,
            },
            sync: false,
        };
        ex.apply(&mut io, decided);
        ex.apply(&mut io, send(1, ack("t-1"), true));
        // Nothing forced is pending: the barrier is durable already.
        assert_eq!(io.done, ["append 1 t-1 sync=false", "deliver 1 ack"]);
    }

    #[test]
    fn a_refusal_is_an_error_frame_ahead_of_held_messages_then_maybe_a_close() {
        let (mut ex, mut io) = (Executor::default(), Io::default());
        ex.apply(&mut io, prepared("t-1"));
        ex.apply(&mut io, send(1, vote("t-1"), true));
        let reject = |close| Action::Reject {
            conn: ConnId(1),
            error: WireError::new(ErrorCode::InvalidMessage, "no"),
            close,
        };
        ex.apply(&mut io, reject(false));
        ex.apply(&mut io, reject(true));
        assert_eq!(
            io.done,
            [
                "append 1 t-1 sync=true",
                "deliver 1 error",
                "deliver 1 error",
                "close 1"
            ]
        );
        assert_eq!(ex.held(), 1);
    }

    #[test]
    fn other_actions_come_back_in_order_untouched() {
        let (mut ex, mut io) = (Executor::default(), Io::default());
        let alert = Action::Alert {
            txn: Some(txn("t-1")),
            message: "refused".into(),
        };
        let prepare = Action::PrepareResource {
            txn: txn("t-1"),
            participants: vec![ParticipantId::from("p1")],
            data: Value::Null,
        };
        let finish = Action::FinishResource {
            txn: txn("t-1"),
            decision: Decision::Commit,
        };
        let back: Vec<Option<Local>> = [alert, prepare, finish]
            .into_iter()
            .map(|a| ex.apply(&mut io, a))
            .collect();
        assert_eq!(
            back,
            [
                Some(Local::Alert {
                    txn: Some(txn("t-1")),
                    message: "refused".into()
                }),
                Some(Local::PrepareResource {
                    txn: txn("t-1"),
                    participants: vec![ParticipantId::from("p1")],
                    data: Value::Null
                }),
                Some(Local::FinishResource {
                    txn: txn("t-1"),
                    decision: Decision::Commit
                }),
            ]
        );
        assert!(io.done.is_empty());
    }

    #[test]
    fn a_close_closes_without_a_frame_and_a_session_notice_comes_back() {
        let (mut ex, mut io) = (Executor::default(), Io::default());
        ex.apply(&mut io, prepared("t-1"));
        ex.apply(&mut io, send(3, vote("t-1"), true));
        assert_eq!(ex.apply(&mut io, Action::Close { conn: ConnId(3) }), None);
        let notice = crate::protocol::participant::SessionNotice::Lost;
        assert_eq!(
            ex.apply(&mut io, Action::Session(notice.clone())),
            Some(Local::Session(notice))
        );
        // The held vote is not turned into a frame by the close.
        assert_eq!(io.done, ["append 1 t-1 sync=true", "close 3"]);
        assert_eq!(ex.held(), 1);
    }

    #[test]
    fn forced_writes_are_counted_in_order_and_reported_once() {
        let (mut ex, mut io) = (Executor::default(), Io::default());
        let end = |t: &str| Action::Persist {
            record: Record::End { txn: txn(t) },
            sync: false,
        };
        // LSNs 1 (forced #1), 2 (not forced), 3 (forced #2), 4 (forced #3).
        for a in [prepared("a"), end("a"), prepared("b"), prepared("c")] {
            ex.apply(&mut io, a);
        }
        assert_eq!(ex.forced_durable(0), None);
        assert_eq!(ex.forced_durable(2), Some(1));
        assert_eq!(ex.forced_durable(2), None);
        // Released messages settle the count too; it is still reported.
        io.durable = 4;
        ex.release(&mut io);
        assert_eq!(ex.forced_durable(3), Some(3));
        assert_eq!(ex.forced_durable(4), None);
    }

    #[test]
    fn held_messages_of_a_closed_connection_are_dropped() {
        let (mut ex, mut io) = (Executor::default(), Io::default());
        ex.apply(&mut io, prepared("t-1"));
        ex.apply(&mut io, send(1, vote("t-1"), true));
        ex.forget(ConnId(1));
        io.durable = 1;
        ex.release(&mut io);
        assert_eq!(io.done, ["append 1 t-1 sync=true"]);
    }
}

//! Durable log records and the actions the cores ask the runtime to perform.
//!
//! Records are what a process writes to its write-ahead log; actions are the
//! cores' only way to have an effect on the world. The runtime executes the
//! actions of one step in order, and a `Send` marked `after_durable` is held
//! back until every record persisted before it is on disk: durability order is
//! part of the output, not an accident of call order.

use super::heuristic::Heuristic;
use super::message::{Body, WireError};
use super::participant::SessionNotice;
use super::types::{ConnId, Decision, ParticipantId, TxnId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One write-ahead log record. Coordinators write `Decision` and `End`;
/// participants write `Prepared` and `Decided`; both write `Heuristic`. `twopc wal inspect` reads
/// either kind of log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// Coordinator: the decision for `txn`. Only commit decisions are logged
    /// (presumed abort); the record is forced before any COMMIT is sent.
    Decision {
        txn: TxnId,
        decision: Decision,
        participants: Vec<ParticipantId>,
        /// The client chose the id: its `Outcome` (not `End`) closes it,
        /// and a repeated submit is answered from it. Carried so that a
        /// checkpoint, or a new leader of a coordinator group, keeps it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        client_named: bool,
    },
    /// Coordinator: every participant acknowledged; `txn` can be forgotten.
    End { txn: TxnId },
    /// Coordinator: the outcome of a transaction whose id the client chose,
    /// kept so that a repeated submit of the id is answered, not run again.
    /// For a commit it takes the place of `End`; an abort is forced before
    /// the client is told.
    Outcome {
        txn: TxnId,
        decision: Decision,
        participants: Vec<ParticipantId>,
    },
    /// Coordinator: `participant` became a member of the cluster.
    Joined { participant: ParticipantId },
    /// Coordinator: an operator removed `participant`; the cluster now
    /// expects `expected` participants.
    Removed {
        participant: ParticipantId,
        expected: usize,
    },
    /// Participant: voted commit for `txn`. Forced before VOTE_COMMIT is sent.
    /// `state` is whatever the resource needs to finish the transaction after
    /// a restart (for example the writes of a key-value transaction).
    Prepared {
        txn: TxnId,
        participants: Vec<ParticipantId>,
        #[serde(default)]
        state: Value,
    },
    /// Participant: the outcome of `txn` as applied here. A commit is forced
    /// before ACK; an abort need not be (presumed abort). `heuristic` holds the
    /// operator's reason when the outcome was decided by hand, not by the
    /// coordinator.
    Decided {
        txn: TxnId,
        decision: Decision,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        heuristic: Option<String>,
    },
    /// Either process: a heuristic outcome. The decision for `txn` was
    /// `decision`, and `participant`'s part was not carried out as decided
    /// (see [`Heuristic`]). A participant writes it, forced, before its ACK
    /// says so; the coordinator writes it, forced, when such an ACK
    /// arrives. It follows the transaction's `Decided` record (participant)
    /// or its `Decision` record, if any, and precedes its `End`
    /// (coordinator).
    Heuristic {
        txn: TxnId,
        decision: Decision,
        participant: ParticipantId,
        heuristic: Heuristic,
    },
    /// Participant: the highest term of a coordinator group's leader it has
    /// taken messages from; a restarted participant still refuses a leader
    /// of an older (deposed) term. Written when it rises, and first after a
    /// checkpoint's snapshot.
    Term { term: u64 },
    /// Participant: the resource's committed state as of a checkpoint (for
    /// example the whole key-value store). Written first in a new segment;
    /// recovery starts from it and replays the records that follow.
    ///
    /// A large state is split over several records: the first has `merge:
    /// false` (replace everything), the following ones `merge: true` (add
    /// these entries).
    Snapshot {
        state: Value,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        merge: bool,
    },
}

impl Record {
    /// The transaction the record belongs to (none for a snapshot).
    pub fn txn(&self) -> Option<&TxnId> {
        match self {
            Record::Decision { txn, .. }
            | Record::End { txn }
            | Record::Prepared { txn, .. }
            | Record::Decided { txn, .. }
            | Record::Outcome { txn, .. }
            | Record::Heuristic { txn, .. } => Some(txn),
            Record::Snapshot { .. }
            | Record::Term { .. }
            | Record::Joined { .. }
            | Record::Removed { .. } => None,
        }
    }
}

/// Something the runtime must do on behalf of a core.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Append `record` to the log; when `sync`, the record must be made
    /// durable before any later `Send { after_durable: true }` goes out.
    ///
    /// Forced writes (`sync: true`) are numbered 1, 2, 3, … in the order a
    /// core emits them, from its creation on; a runtime that tells a core
    /// about durability reports how many of them are durable (the
    /// coordinator's `Event::Durable { forced }`), never which records.
    Persist { record: Record, sync: bool },
    /// Send `body` on connection `conn`. With `after_durable`, hold it until
    /// every record persisted so far is durable.
    Send {
        conn: ConnId,
        body: Body,
        after_durable: bool,
    },
    /// Tell the peer on `conn` that its message was refused, and log it. The
    /// connection stays open unless `close` is set.
    Reject {
        conn: ConnId,
        error: WireError,
        close: bool,
    },
    /// Close `conn` once what was sent on it has gone out, without an
    /// error frame (the participant giving up a silent coordinator, or one
    /// that asks for a secret it does not have).
    Close { conn: ConnId },
    /// Participant only: something happened to the session with the
    /// coordinator, for the operator's log (see
    /// [`super::participant::SessionNotice`]).
    Session(SessionNotice),
    /// Something an operator must see: a refused decision, a message that
    /// would have broken a safety rule, or a heuristic outcome. The runtime
    /// logs it at error level.
    Alert { txn: Option<TxnId>, message: String },
    /// Something operators want in the log at info level (a participant
    /// registered, was lost, came back or was removed; the cluster became
    /// ready), about the peer on `conn` when given (the runtime adds its
    /// address).
    Notice {
        conn: Option<ConnId>,
        message: String,
    },
    /// Participant only: ask the resource to prepare `txn` with `data`; its
    /// answer comes back as a `ResourcePrepared` event.
    PrepareResource {
        txn: TxnId,
        participants: Vec<ParticipantId>,
        data: Value,
    },
    /// Participant only: apply the decision for `txn` to the resource
    /// (after the decision record is persisted); its answer comes back as
    /// a `ResourceFinished` event, and the ACK, if one is owed, follows it.
    FinishResource { txn: TxnId, decision: Decision },
}

//! The project's real `Coordinator` and `Participant` cores, run inside a
//! modelled world: a network that reorders, loses and duplicates messages,
//! connections that break, write-ahead logs with an unsynced tail, processes
//! that crash and recover from their logs, resources that vote either way,
//! and timers that fire at any moment.
//!
//! The cores are not `Clone`, so a global state does not hold them. Each
//! core state is interned in a [`Store`]: an entry remembers how to rebuild
//! it (the records it recovered from and the events it has handled since)
//! and a canonical projection of everything in it that can change what the
//! core does next. The global state holds entry numbers, so it is plain,
//! hashable data; `(entry, event) -> (entry, effects)` is computed once,
//! by rebuilding the core and feeding it the event, and then memoised.
//!
//! What the world does, and what it leaves out:
//! - Time: every event a core handles is `STEP_MS` after its previous one,
//!   longer than any of its timers, so a `Tick` fires every timer that is
//!   set (vote deadline, decision resend, in-doubt query, queued submits).
//!   Ticks are free, so a timeout can fire between any two other steps.
//! - Network: the messages in flight form a set of (connection, direction,
//!   message); identical copies are merged, and a later copy is what the
//!   duplication fault delivers. Any message may be delivered next. Loss
//!   and duplication are faults with a budget. A connection that breaks
//!   still delivers what is in flight until the receiving side has handled
//!   its close (the coordinator's `Disconnected`, the participant's
//!   `TransportDown`); what is sent on a broken connection is lost.
//!   The handshake (`hello`, `welcome`) may be duplicated but not lost: the
//!   participant runtime has no handshake timeout, and on TCP a lost hello
//!   means a broken connection, which the break fault covers.
//! - Connections: a participant that has seen its connection close opens a
//!   new one at once, as `runtime::participant` does, and its core is told
//!   (`TransportUp`): the core says hello, keeps every message out of the
//!   protocol until the first `welcome`, and forgets the session at
//!   `TransportDown`, with its real session rules. Opening at once loses nothing: a participant still offline is one whose
//!   hello is still in flight. It waits only while two of its connections
//!   are not yet closed at the coordinator (else a coordinator slow to
//!   handle closes would see any number of duplicate hellos). Connection
//!   ids are reused once both ends have closed a connection.
//! - Logs: `Persist` appends; `sync` moves the barrier; a `Send` with
//!   `after_durable` is held in the outbox until a `Sync` step (the
//!   group-commit writer) makes the log durable up to the barrier, as
//!   `runtime::outbox` does. A crash keeps the durable part and any prefix
//!   of the unsynced tail (keeping none is "the tail is lost"; keeping some
//!   is the OS having written it before the crash). Once the crash budget
//!   is spent, logs are synced at once: nothing can tell the difference
//!   any more, and a held message is then no different from one in flight.
//! - Crashes: a crashed process restarts at once from its log (a coordinator
//!   with a new transaction id prefix, as the runtime derives one from its
//!   start time); its in-memory state, held messages, resource work and
//!   connections are gone. A coordinator crash closes every connection.
//! - Clients: each transaction is one client that says hello and submits;
//!   the outcome (or refusal) it is sent is recorded, not delivered.
//! - Reductions: states that differ only by a renaming of participants
//!   (and of connection ids), or of the two transactions, count once where
//!   the cores cannot tell the renaming apart, and logs stop counting once
//!   no crash can read them ([`System::renamings`]).
//! - Not modelled: `error` frames to participants (a participant only logs
//!   them), heartbeats (liveness detection is the break fault; the
//!   participant core's beat is switched off with `heartbeat_interval_ms:
//!   u64::MAX`, and the coordinator's liveness timeout likewise), operator
//!   `resolve`, log checkpoints, and resources that fail to finish.

use super::explore::{Fast, FastMap, Model, Succ};
use super::inline::{List, Set};
use serde_json::Value;
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use twopc::protocol::coordinator::{self, ClusterState, Coordinator, CoordinatorOptions, TxnPhase};
use twopc::protocol::fault::Fault;
use twopc::protocol::participant::{
    self, PState, Participant, ParticipantOptions, Prepared, SessionNotice,
};
use twopc::protocol::{
    Action, Body, ConnId, Decision, Millis, ParticipantId, Record, Role, SubmitRequest, TxnId,
    Vote, PROTOCOL_VERSION,
};

/// Time between two events of one core; longer than every timer of both
/// cores with default options (vote deadline 30 s, resend and query caps 5 s).
const STEP_MS: Millis = 1_000_000;
/// Participant connection ids are 1..LINKS_MAX (reused, so this is plenty).
const LINKS_MAX: u8 = 16;
/// Client `k` talks to the coordinator on connection `CLIENT_CONN + k`.
const CLIENT_CONN: u64 = 1 << 32;
/// Client connections in the one-byte form of [`dest`].
const CLIENT_TAG: u8 = 0x80;

// ---- small canonical values -------------------------------------------------

/// A transaction id `<prefix>-<seq>`, where the prefix is the letter of the
/// coordinator incarnation that created it (`a` for the first).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tx {
    inc: u8,
    seq: u8,
}

impl Tx {
    fn parse(id: &TxnId) -> Tx {
        let (prefix, seq) = id.0.split_once('-').expect("txn ids are <prefix>-<seq>");
        let inc = prefix.as_bytes()[0] - b'a';
        Tx {
            inc,
            seq: seq.parse().expect("numeric txn sequence"),
        }
    }

    fn id(self) -> TxnId {
        TxnId(format!("{}", self))
    }
}

impl fmt::Display for Tx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", prefix(self.inc), self.seq)
    }
}

impl fmt::Debug for Tx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn prefix(inc: u8) -> char {
    (b'a' + inc) as char
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dec {
    #[default]
    Commit,
    Abort,
}

impl Dec {
    fn of(d: Decision) -> Dec {
        match d {
            Decision::Commit => Dec::Commit,
            Decision::Abort => Dec::Abort,
        }
    }

    fn decision(self) -> Decision {
        match self {
            Dec::Commit => Decision::Commit,
            Dec::Abort => Decision::Abort,
        }
    }
}

/// A message as far as the protocol is concerned (texts, results and
/// timestamps dropped). `Outcome` and `Refused` go to clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Msg {
    Hello(u8),
    #[default]
    Welcome,
    Prepare(Tx),
    VoteCommit(Tx),
    VoteAbort(Tx),
    Commit(Tx),
    Abort(Tx),
    Ack(Tx, Option<Dec>),
    Query(Tx),
    Outcome(u8, Tx, Dec),
    Refused(u8),
}

/// A log record as far as the protocol is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rec {
    /// Coordinator: commit decision (aborts are never logged).
    Decision(Tx),
    End(Tx),
    /// Coordinator: participant `i` became a member.
    Joined(u8),
    Prepared(Tx),
    Decided(Tx, Dec),
}

impl Default for Rec {
    fn default() -> Self {
        Rec::End(Tx::default())
    }
}

fn pid(i: usize) -> ParticipantId {
    ParticipantId(format!("p{}", i + 1))
}

fn pindex(id: &ParticipantId) -> u8 {
    let n: u8 = id.0[1..].parse().expect("model participant ids are p<N>");
    n - 1
}

fn all_pids(n: usize) -> Vec<ParticipantId> {
    (0..n).map(pid).collect()
}

fn rec_of(r: &Record, n: usize) -> Rec {
    match r {
        Record::Decision {
            txn,
            decision: Decision::Commit,
            participants,
            ..
        } => {
            assert_eq!(participants, &all_pids(n));
            Rec::Decision(Tx::parse(txn))
        }
        Record::End { txn } => Rec::End(Tx::parse(txn)),
        Record::Joined { participant } => {
            let i = all_pids(n)
                .iter()
                .position(|p| p == participant)
                .expect("a modelled participant");
            Rec::Joined(i as u8)
        }
        Record::Prepared {
            txn,
            participants,
            state,
        } => {
            assert_eq!(participants, &all_pids(n));
            assert!(state.is_null());
            Rec::Prepared(Tx::parse(txn))
        }
        Record::Decided {
            txn,
            decision,
            heuristic: None,
        } => Rec::Decided(Tx::parse(txn), Dec::of(*decision)),
        other => panic!("record outside the model: {other:?}"),
    }
}

fn record_of(r: Rec, n: usize) -> Record {
    match r {
        Rec::Decision(t) => Record::Decision {
            txn: t.id(),
            decision: Decision::Commit,
            participants: all_pids(n),
            client_named: false,
        },
        Rec::End(t) => Record::End { txn: t.id() },
        Rec::Joined(i) => Record::Joined {
            participant: pid(usize::from(i)),
        },
        Rec::Prepared(t) => Record::Prepared {
            txn: t.id(),
            participants: all_pids(n),
            state: Value::Null,
        },
        Rec::Decided(t, d) => Record::Decided {
            txn: t.id(),
            decision: d.decision(),
            heuristic: None,
        },
    }
}

/// The protocol content of a body a core sends; `None` for `error` frames
/// to participants, which are not modelled.
fn msg_of(body: &Body, n: usize) -> Option<Msg> {
    let tx = |t: &TxnId| Tx::parse(t);
    Some(match body {
        Body::Hello {
            role: Role::Participant,
            id: Some(id),
            ..
        } => Msg::Hello(pindex(id)),
        Body::Welcome { .. } => Msg::Welcome,
        Body::Prepare {
            txn,
            participants,
            data,
            ..
        } => {
            assert_eq!(participants, &all_pids(n));
            assert!(data.is_null());
            Msg::Prepare(tx(txn))
        }
        Body::VoteCommit { txn, .. } => Msg::VoteCommit(tx(txn)),
        Body::VoteAbort { txn, .. } => Msg::VoteAbort(tx(txn)),
        Body::Commit { txn, .. } => Msg::Commit(tx(txn)),
        Body::Abort { txn, .. } => Msg::Abort(tx(txn)),
        Body::Ack {
            txn,
            decision,
            heuristic: None,
        } => Msg::Ack(tx(txn), decision.map(Dec::of)),
        Body::Query { txn } => Msg::Query(tx(txn)),
        Body::Outcome { txn, outcome } => Msg::Outcome(
            outcome.request_id.expect("submits carry a request id") as u8,
            tx(txn),
            Dec::of(outcome.decision),
        ),
        Body::Error {
            request_id: Some(k),
            ..
        } => Msg::Refused(*k as u8),
        Body::Error { .. } => return None,
        other => panic!("message outside the model: {other:?}"),
    })
}

/// The body delivered to a core for a modelled message.
fn body_of(m: Msg, n: usize) -> Body {
    match m {
        Msg::Hello(i) => Body::Hello {
            role: Role::Participant,
            id: Some(pid(i as usize)),
            protocol_version: PROTOCOL_VERSION,
        },
        Msg::Prepare(t) => Body::Prepare {
            txn: t.id(),
            participants: all_pids(n),
            data: Value::Null,
            term: None,
        },
        Msg::VoteCommit(t) => Body::VoteCommit {
            txn: t.id(),
            result: None,
        },
        Msg::VoteAbort(t) => Body::VoteAbort {
            txn: t.id(),
            reason: None,
        },
        Msg::Commit(t) => Body::Commit {
            txn: t.id(),
            term: None,
        },
        Msg::Abort(t) => Body::Abort {
            txn: t.id(),
            term: None,
        },
        Msg::Ack(t, d) => Body::Ack {
            txn: t.id(),
            decision: d.map(Dec::decision),
            heuristic: None,
        },
        Msg::Query(t) => Body::Query { txn: t.id() },
        Msg::Welcome => Body::Welcome {
            state: "READY".into(),
            term: None,
        },
        Msg::Outcome(..) | Msg::Refused(_) => {
            panic!("{m:?} is not delivered to a core")
        }
    }
}

/// A core's action, reduced to what the world acts on.
#[derive(Clone, Debug)]
enum Eff {
    Persist(Rec, bool),
    Send {
        conn: u8,
        msg: Msg,
        after_durable: bool,
    },
    Reject {
        conn: u8,
        close: bool,
        why: String,
    },
    Alert(String),
    Prepare(Tx),
    Finish(Tx, Dec),
    /// Close without an error frame (participant only).
    Close(u8),
    Session(SessionNotice),
}

/// A connection as one byte: participant connections keep their id, client
/// `k` is `CLIENT_TAG + k`.
fn dest(conn: ConnId) -> u8 {
    if conn.0 >= CLIENT_CONN {
        CLIENT_TAG + (conn.0 - CLIENT_CONN) as u8
    } else {
        conn.0 as u8
    }
}

fn effects(actions: Vec<Action>, n: usize) -> Vec<Eff> {
    let mut out = Vec::new();
    for a in actions {
        out.push(match a {
            Action::Persist { record, sync } => Eff::Persist(rec_of(&record, n), sync),
            Action::Send {
                conn,
                body,
                after_durable,
            } => match msg_of(&body, n) {
                Some(msg) => Eff::Send {
                    conn: dest(conn),
                    msg,
                    after_durable,
                },
                None => continue,
            },
            Action::Reject { conn, error, close } => Eff::Reject {
                conn: dest(conn),
                close,
                why: error.to_string(),
            },
            Action::Alert { txn, message } => Eff::Alert(format!("{txn:?}: {message}")),
            // Notices are for operators' eyes; they change nothing.
            Action::Notice { .. } => continue,
            Action::Close { conn } => Eff::Close(dest(conn)),
            Action::Session(notice) => Eff::Session(notice),
            Action::PrepareResource {
                txn,
                participants,
                data,
            } => {
                assert_eq!(participants, all_pids(n));
                assert!(data.is_null());
                Eff::Prepare(Tx::parse(&txn))
            }
            Action::FinishResource { txn, decision } => {
                Eff::Finish(Tx::parse(&txn), Dec::of(decision))
            }
        });
    }
    out
}

// ---- interned core states ---------------------------------------------------

/// What a core restarts from: the coordinator incarnation (its transaction
/// id prefix) and the records in its log.
#[derive(Clone, Debug)]
pub struct Start {
    inc: u8,
    records: Vec<Rec>,
}

/// How the model drives one kind of core.
trait Machine {
    type Core;
    type Ev: Clone + Eq + std::hash::Hash + fmt::Debug;
    type Proj: Clone + Eq + std::hash::Hash;
    type Meta;
    fn boot(&self, start: &Start) -> Self::Core;
    fn feed(&self, core: &mut Self::Core, now: Millis, ev: &Self::Ev) -> Vec<Action>;
    /// The canonical projection of `core` (equal projections: equal
    /// futures), and what the checks need to know about it.
    fn key(
        &self,
        core: &Self::Core,
        start: &Start,
        events: &[Self::Ev],
    ) -> (Self::Proj, Self::Meta);
}

struct Entry<E, P, M> {
    start: Rc<Start>,
    events: Vec<E>,
    proj: P,
    meta: M,
}

type Memo<E> = FastMap<(u32, E), (u32, Rc<[Eff]>)>;

/// Core states of one process, interned by projection, with memoised
/// transitions.
struct Store<M: Machine> {
    machine: M,
    n: usize,
    entries: Vec<Entry<M::Ev, M::Proj, M::Meta>>,
    by_key: FastMap<M::Proj, u32>,
    memo: Memo<M::Ev>,
}

impl<M: Machine> Store<M> {
    fn new(machine: M, n: usize) -> Self {
        Store {
            machine,
            n,
            entries: Vec::new(),
            by_key: FastMap::default(),
            memo: FastMap::default(),
        }
    }

    fn intern(&mut self, core: &M::Core, start: Rc<Start>, events: Vec<M::Ev>) -> u32 {
        let (proj, meta) = self.machine.key(core, &start, &events);
        if let Some(&id) = self.by_key.get(&proj) {
            return id;
        }
        let id = self.entries.len() as u32;
        self.by_key.insert(proj.clone(), id);
        self.entries.push(Entry {
            start,
            events,
            proj,
            meta,
        });
        id
    }

    /// A core freshly recovered from `start`.
    fn boot(&mut self, start: Start) -> u32 {
        let core = self.machine.boot(&start);
        self.intern(&core, Rc::new(start), Vec::new())
    }

    /// The core `id` after handling `ev`, and what it asked for.
    fn step(&mut self, id: u32, ev: &M::Ev) -> (u32, Rc<[Eff]>) {
        if let Some(hit) = self.memo.get(&(id, ev.clone())) {
            return hit.clone();
        }
        let entry = &self.entries[id as usize];
        let start = entry.start.clone();
        let mut events = entry.events.clone();
        let mut core = self.machine.boot(&start);
        for (j, e) in events.iter().enumerate() {
            self.machine.feed(&mut core, STEP_MS * (j as u64 + 1), e);
        }
        let now = STEP_MS * (events.len() as u64 + 1);
        let effs: Rc<[Eff]> = effects(self.machine.feed(&mut core, now, ev), self.n).into();
        events.push(ev.clone());
        let next = self.intern(&core, start, events);
        self.memo.insert((id, ev.clone()), (next, effs.clone()));
        (next, effs)
    }

    fn meta(&self, id: u32) -> &M::Meta {
        &self.entries[id as usize].meta
    }

    fn proj(&self, id: u32) -> &M::Proj {
        &self.entries[id as usize].proj
    }
}

/// Coordinator inputs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum CEv {
    Msg(u8, Msg),
    Disconnected(u8),
    Tick,
    ClientHello(u8),
    Submit(u8),
}

/// A coordinator transaction as the checks see it.
#[derive(Clone, Copy, Debug)]
struct CTxn {
    tx: Tx,
    decision: Option<Dec>,
    ended: bool,
}

/// `members` code of a participant that never registered.
const ABSENT: u8 = 0xff;
/// `members` code of a registered participant without a connection.
const OFFLINE: u8 = 0xfe;
/// `members` code of a member known from the log that has not registered
/// since the coordinator restarted (readiness does not count it yet).
const UNSEEN: u8 = 0xfd;

/// Everything in a coordinator that decides what it does next. Per
/// participant fields are indexed by participant, so a permutation of the
/// participants permutes them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CProj {
    inc: u8,
    state: u8,
    /// Per participant: its connection, `ABSENT` or `OFFLINE`.
    members: Vec<u8>,
    /// Participant connections that said hello.
    greeted: Vec<u8>,
    clients_greeted: Vec<bool>,
    txns: Vec<CTxnProj>,
    /// Request ids of the submits waiting for the cluster to be ready.
    queued: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CTxnProj {
    tx: Tx,
    ended: bool,
    decision: Option<Dec>,
    phase: u8,
    /// Per participant: 0 no vote, 1 commit, 2 abort.
    votes: Vec<u8>,
    acks: Vec<bool>,
    /// The request id of the client waiting for the outcome.
    waiter: Option<u8>,
}

struct CMeta {
    txns: Vec<CTxn>,
    /// Whether a `Tick` can do anything (a transaction not ended, or a
    /// queued submit); else the step is left out.
    busy: bool,
    summary: String,
}

struct CoordMachine {
    n: usize,
    clients: usize,
    fault: Option<Fault>,
}

fn client_conn(k: u8) -> ConnId {
    ConnId(CLIENT_CONN + u64::from(k))
}

impl Machine for CoordMachine {
    type Core = Coordinator;
    type Ev = CEv;
    type Proj = CProj;
    type Meta = CMeta;

    fn boot(&self, start: &Start) -> Coordinator {
        let opts = CoordinatorOptions {
            expected_participants: self.n,
            txn_id_prefix: prefix(start.inc).to_string(),
            // Participants here send no heartbeats; a participant the
            // coordinator gives up for silence is handled exactly like a
            // broken connection, which the `breaks` fault explores.
            liveness_timeout_ms: u64::MAX,
            ..Default::default()
        };
        let records: Vec<Record> = start
            .records
            .iter()
            .map(|r| record_of(*r, self.n))
            .collect();
        let mut c = Coordinator::recover(opts, 0, &records);
        if let Some(f) = self.fault {
            c.inject(f);
        }
        c
    }

    fn feed(&self, c: &mut Coordinator, now: Millis, ev: &CEv) -> Vec<Action> {
        let event = match *ev {
            CEv::Msg(conn, m) => coordinator::Event::Message {
                conn: ConnId(u64::from(conn)),
                body: body_of(m, self.n),
            },
            CEv::Disconnected(conn) => coordinator::Event::Disconnected {
                conn: ConnId(u64::from(conn)),
            },
            CEv::Tick => coordinator::Event::Tick,
            CEv::ClientHello(k) => coordinator::Event::Message {
                conn: client_conn(k),
                body: Body::Hello {
                    role: Role::Client,
                    id: None,
                    protocol_version: PROTOCOL_VERSION,
                },
            },
            CEv::Submit(k) => coordinator::Event::Message {
                conn: client_conn(k),
                body: Body::Submit(SubmitRequest {
                    data: Value::Null,
                    participants: None,
                    request_id: Some(u64::from(k)),
                    ..Default::default()
                }),
            },
        };
        c.handle(now, event)
    }

    /// Cluster state, members and their connections, greeted connections,
    /// per transaction its phase, votes, acks, decision and waiting client
    /// (ended ones: the remembered decision), the queued submits, and the
    /// incarnation. Left out: times (every timer is due at a tick), texts,
    /// counters and retry numbers that only `status` shows.
    fn key(&self, c: &Coordinator, start: &Start, _events: &[CEv]) -> (CProj, CMeta) {
        let state = match c.state() {
            ClusterState::Init => 0,
            ClusterState::WaitingForParticipants => 1,
            ClusterState::Ready => 2,
        };
        let members = (0..self.n)
            .map(|i| match c.members().get(&pid(i)) {
                None => ABSENT,
                Some(m) if !m.seen => UNSEEN,
                Some(m) => m.conn.map_or(OFFLINE, |c| c.0 as u8),
            })
            .collect();
        let greeted = (1..LINKS_MAX)
            .filter(|conn| c.is_greeted(ConnId(u64::from(*conn))))
            .collect();
        let clients_greeted = (0..self.clients)
            .map(|k| c.is_greeted(client_conn(k as u8)))
            .collect();
        let mut txns: Vec<&coordinator::Txn> = c.txns().collect();
        txns.sort_by_key(|t| Tx::parse(&t.id));
        let mut projected = Vec::new();
        let mut summary = Vec::new();
        for t in txns {
            let tx = Tx::parse(&t.id);
            let ended = t.ended_ms.is_some();
            let mut p = CTxnProj {
                tx,
                ended,
                decision: t.decision.map(Dec::of),
                phase: 0,
                votes: Vec::new(),
                acks: Vec::new(),
                waiter: None,
            };
            // What an ended transaction still does is answer with its
            // decision; the rest of it is history.
            if !ended {
                p.phase = match t.phase {
                    TxnPhase::PreparePhase => 1,
                    TxnPhase::CommitPhase => 2,
                    TxnPhase::Completed => 3,
                    TxnPhase::Aborted => 4,
                };
                for id in all_pids(self.n) {
                    p.votes.push(match t.votes.get(&id) {
                        None => 0,
                        Some(Vote::Commit) => 1,
                        Some(Vote::Abort) => 2,
                    });
                    p.acks.push(t.acks.contains(&id));
                }
                p.waiter = t.waiter().map(|(conn, k)| request_id(conn, k));
            }
            let votes: String = p
                .votes
                .iter()
                .map(|v| ['-', 'C', 'A'][*v as usize])
                .collect();
            let acks: String = p.acks.iter().map(|a| if *a { 'y' } else { '-' }).collect();
            summary.push(format!(
                "{tx} {}{} votes={votes} acks={acks} dec={:?}",
                t.phase.as_str(),
                if ended { " ended" } else { "" },
                p.decision
            ));
            projected.push(p);
        }
        let queued: Vec<u8> = c
            .queued_submits()
            .map(|(conn, k)| request_id(conn, k))
            .collect();
        let meta = CMeta {
            txns: projected
                .iter()
                .map(|t| CTxn {
                    tx: t.tx,
                    decision: t.decision,
                    ended: t.ended,
                })
                .collect(),
            busy: !queued.is_empty() || projected.iter().any(|t| !t.ended),
            summary: format!(
                "{} {}; queued submits {queued:?}",
                c.state().as_str(),
                summary.join(", ")
            ),
        };
        let proj = CProj {
            inc: start.inc,
            state,
            members,
            greeted,
            clients_greeted,
            txns: projected,
            queued,
        };
        (proj, meta)
    }
}

/// The request id of a waiting client's submit: the client number, which
/// is also its connection's offset from `CLIENT_CONN`.
fn request_id(conn: ConnId, request_id: Option<u64>) -> u8 {
    let k = request_id.expect("the model's submits carry a request id");
    assert_eq!(
        conn,
        client_conn(k as u8),
        "client k submits on its own connection"
    );
    k as u8
}

/// Participant inputs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum PEv {
    TransportUp(u8),
    TransportDown,
    Msg(Msg),
    Prepared(Tx, bool),
    Tick,
}

/// The participant's session (`participant::Link`) with a one-byte
/// connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum PLink {
    Down,
    Greeting(u8),
    Registered(u8),
}

impl PLink {
    fn conn(self) -> Option<u8> {
        match self {
            PLink::Down => None,
            PLink::Greeting(c) | PLink::Registered(c) => Some(c),
        }
    }

    fn registered(self) -> bool {
        matches!(self, PLink::Registered(_))
    }
}

/// Everything in a participant that decides what it does next.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PProj {
    link: PLink,
    /// (transaction, `PState` as a number, an abort waits for the resource).
    txns: Vec<(Tx, u8, bool)>,
}

struct PMeta {
    txns: Vec<(Tx, PState)>,
    /// Whether a `Tick` can do anything (a transaction in doubt).
    busy: bool,
    summary: String,
}

struct PartMachine {
    i: usize,
    n: usize,
    fault: Option<Fault>,
}

impl Machine for PartMachine {
    type Core = Participant;
    type Ev = PEv;
    type Proj = PProj;
    type Meta = PMeta;

    fn boot(&self, start: &Start) -> Participant {
        let opts = ParticipantOptions {
            id: pid(self.i),
            // No heartbeats here (see the module documentation): a beat
            // would come due at every step, `STEP_MS` apart, and find the
            // coordinator silent.
            heartbeat_interval_ms: u64::MAX,
            ..Default::default()
        };
        let records: Vec<Record> = start
            .records
            .iter()
            .map(|r| record_of(*r, self.n))
            .collect();
        let mut p = Participant::recover(opts, 0, &records);
        if let Some(f) = self.fault {
            p.inject(f);
        }
        p
    }

    fn feed(&self, p: &mut Participant, now: Millis, ev: &PEv) -> Vec<Action> {
        let event = match *ev {
            PEv::TransportUp(conn) => participant::Event::TransportUp {
                conn: ConnId(u64::from(conn)),
            },
            PEv::TransportDown => participant::Event::TransportDown,
            PEv::Msg(m) => participant::Event::Message {
                body: body_of(m, self.n),
            },
            PEv::Prepared(t, commit) => participant::Event::ResourcePrepared {
                txn: t.id(),
                result: if commit {
                    Ok(Prepared::default())
                } else {
                    Err("the resource votes abort".into())
                },
            },
            PEv::Tick => participant::Event::Tick,
        };
        let mut out = p.handle(now, event);
        // The resource applies a decision at once and as decided (resources
        // that fail to finish are not modelled): its answer is handled in
        // the same step, after the step's actions, as the runtime queues it.
        let finished: Vec<TxnId> = out
            .iter()
            .filter_map(|a| match a {
                Action::FinishResource { txn, .. } => Some(txn.clone()),
                _ => None,
            })
            .collect();
        for txn in finished {
            let answer = participant::Event::ResourceFinished {
                txn,
                result: Ok(()),
            };
            out.extend(p.handle(now, answer));
        }
        out
    }

    /// The session (its connection, welcomed or not) and per transaction
    /// its state and whether an abort waits for the resource. Left out:
    /// times (the beat is off, the query timers are due at every tick),
    /// texts, counters, and the vote (it only picks the text of a repeated
    /// vote).
    fn key(&self, p: &Participant, _start: &Start, _events: &[PEv]) -> (PProj, PMeta) {
        let link = match p.link() {
            participant::Link::Down => PLink::Down,
            participant::Link::Greeting { conn } => PLink::Greeting(conn.0 as u8),
            participant::Link::Registered { conn } => PLink::Registered(conn.0 as u8),
        };
        let mut txns: Vec<(Tx, &participant::PTxn)> =
            p.txns().map(|(id, t)| (Tx::parse(id), t)).collect();
        txns.sort_by_key(|(tx, _)| *tx);
        let mut projected = Vec::new();
        let mut summary = Vec::new();
        for (tx, t) in txns {
            let abort_waits = t.state == PState::Preparing && t.abort_requested();
            projected.push((tx, t.state as u8, abort_waits));
            summary.push(format!(
                "{tx} {}{}",
                t.state.as_str(),
                if abort_waits { " (abort waits)" } else { "" }
            ));
        }
        let meta = PMeta {
            txns: p.txns().map(|(id, t)| (Tx::parse(id), t.state)).collect(),
            busy: p.txns().any(|(_, t)| t.state == PState::Prepared),
            summary: format!(
                "{} [{}]",
                match link {
                    PLink::Down => "offline",
                    PLink::Greeting(_) => "greeting",
                    PLink::Registered(_) => "registered",
                },
                summary.join(", ")
            ),
        };
        (
            PProj {
                link,
                txns: projected,
            },
            meta,
        )
    }
}

// ---- the global state -------------------------------------------------------

/// Most participants a configuration may have.
pub const PARTICIPANTS_MAX: usize = 3;

/// A write-ahead log: `recs[..durable]` survives any crash; `barrier` is the
/// length when the last `sync` was asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Log {
    recs: List<Rec, 8>,
    durable: u8,
    barrier: u8,
}

impl Log {
    fn append(&mut self, r: Rec, sync: bool) {
        self.recs.push(r);
        if sync {
            self.barrier = self.recs.len() as u8;
        }
    }

    fn unsynced(&self) -> u8 {
        self.recs.len() as u8 - self.durable
    }

    fn sync(&mut self) {
        self.durable = self.recs.len() as u8;
    }

    /// After a crash that kept `kept` unsynced records: all of it is on disk.
    fn crash(&mut self, kept: u8) {
        self.recs.truncate(usize::from(self.durable + kept));
        self.sync();
        self.barrier = self.durable;
    }

    fn records(&self) -> Vec<Rec> {
        self.recs.as_slice().to_vec()
    }
}

/// A message held in the outbox until the log is durable up to `barrier`.
/// Held messages form a set: they all go out into the (set-valued) network
/// as soon as a sync covers them, so their order and repeats do not matter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Held {
    barrier: u8,
    conn: u8,
    msg: Msg,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CoordNode {
    core: u32,
    inc: u8,
    log: Log,
    held: Set<Held, 12>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PartNode {
    /// The core, which also holds the session: its connection and whether
    /// `welcome` came on it (see [`System::plink`]).
    core: u32,
    log: Log,
    held: Set<Held, 8>,
    /// Transactions the resource is preparing.
    preparing: Set<Tx, 4>,
}

/// One participant connection. It breaks once; each end then handles its
/// close (or crashes), and the id is free again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Link {
    conn: u8,
    owner: u8,
    broken: bool,
    coord_closed: bool,
    part_closed: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Packet {
    conn: u8,
    to_coord: bool,
    msg: Msg,
}

/// Fault counts: the budget of a configuration, or what a state has used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Faults {
    pub crashes: u8,
    pub losses: u8,
    pub dups: u8,
    pub breaks: u8,
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "crash {}, loss {}, dup {}, break {}",
            self.crashes, self.losses, self.dups, self.breaks
        )
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Client {
    #[default]
    Idle,
    Waiting,
    Told(Tx, Dec),
    Refused,
}

/// History the properties are about; it survives crashes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ghost {
    /// Decisions participants' resources applied (`FinishResource`).
    applied: Set<(u8, Tx, Dec), 12>,
    /// Commit votes that went out on the network.
    voted: Set<(u8, Tx), 12>,
    /// Acknowledgements of commit that went out on the network.
    acked: Set<(u8, Tx), 12>,
    /// Decisions the coordinator announced (to participants or clients).
    said: Set<(Tx, Dec), 8>,
    /// Commit decisions that became durable in the coordinator's log.
    durable: Set<Tx, 8>,
    clients: List<Client, 2>,
}

impl Ghost {
    fn said(&self, tx: Tx, d: Dec) -> bool {
        self.said.contains(&(tx, d))
    }
}

/// The whole world, as one flat value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct State {
    coord: CoordNode,
    parts: List<PartNode, PARTICIPANTS_MAX>,
    /// Sorted by connection id.
    links: Set<Link, 8>,
    net: Set<Packet, 32>,
    used: Faults,
    ghost: Ghost,
}

impl State {
    fn link(&self, conn: u8) -> Option<&Link> {
        self.links.iter().find(|l| l.conn == conn)
    }

    fn update_link(&mut self, conn: u8, f: impl FnOnce(&mut Link)) {
        if let Some(mut l) = self.link(conn).copied() {
            self.links.remove(&l);
            f(&mut l);
            self.links.insert(l);
        }
    }

    fn part(&mut self, i: usize) -> &mut PartNode {
        &mut self.parts.as_mut_slice()[i]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proc {
    Coord,
    Part(u8),
}

/// One step of the world.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Submit(u8),
    Deliver(Packet),
    /// Deliver and keep a copy in flight (fault).
    Duplicate(Packet),
    /// Fault.
    Lose(Packet),
    /// The participant's connection breaks (fault).
    Break(u8),
    CoordSeesClose(u8),
    /// The participant handles its `TransportDown` and reconnects.
    PartSeesClose(u8),
    ResourcePrepared {
        part: u8,
        tx: Tx,
        commit: bool,
    },
    /// The group-commit writer makes the log durable.
    Sync(Proc),
    Tick(Proc),
    /// Fault: crash keeping `kept` unsynced records, and restart.
    Crash {
        proc: Proc,
        kept: u8,
    },
}

/// What to explore.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub participants: usize,
    /// Transactions, one client each (at most 2).
    pub txns: usize,
    pub faults: Faults,
    /// A deliberate bug injected into every core (a coordinator fault has no
    /// effect on participants and the other way round): `None` checks the
    /// real protocol; the checks of the checker use the others.
    pub broken: Option<Fault>,
}

/// A history that breaks one safety property (see [`System::doctored`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadHistory {
    /// p1 applied commit, p2 applied abort.
    SplitOutcome,
    /// p1 applied both outcomes.
    AppliedBoth,
    /// p1 applied commit; only p1 voted commit.
    CommitWithoutAllVotes,
    /// p1 acknowledged the commit without applying it.
    AckWithoutApply,
    /// The coordinator announced both outcomes.
    AnnouncedBoth,
    /// The commit decision was durable, then the coordinator said abort.
    DurableCommitAborted,
}

/// Outcome bits for [`Model::tags`].
pub const TAG_COMMIT: u32 = 1;
pub const TAG_ABORT: u32 = 2;
/// Some participant holds two transactions prepared (in doubt) at once.
pub const TAG_TWO_IN_DOUBT: u32 = 4;
/// In one state, one transaction is committed everywhere and another
/// aborted everywhere.
pub const TAG_ONE_OF_EACH: u32 = 8;

pub struct System {
    cfg: Config,
    /// Every permutation of the participants (`perm[old] = new`).
    perms: Vec<Vec<usize>>,
    coord: RefCell<Store<CoordMachine>>,
    parts: Vec<RefCell<Store<PartMachine>>>,
}

impl System {
    pub fn new(cfg: Config) -> System {
        assert!((1..=PARTICIPANTS_MAX).contains(&cfg.participants));
        assert!(cfg.txns <= 2);
        let n = cfg.participants;
        System {
            cfg,
            perms: permutations(n),
            coord: RefCell::new(Store::new(
                CoordMachine {
                    n,
                    clients: cfg.txns,
                    fault: cfg.broken,
                },
                n,
            )),
            parts: (0..n)
                .map(|i| {
                    let machine = PartMachine {
                        i,
                        n,
                        fault: cfg.broken,
                    };
                    RefCell::new(Store::new(machine, n))
                })
                .collect(),
        }
    }

    /// The initial state with a history written in by hand that breaks one
    /// safety property, to show that [`Model::invariant`] checks it. Every
    /// participant has voted commit on the transaction unless `bad` says
    /// otherwise, so that only the property named is broken.
    pub fn doctored(&self, bad: BadHistory) -> State {
        let mut s = self.init();
        let tx = Tx { inc: 0, seq: 1 };
        let g = &mut s.ghost;
        for i in 0..self.cfg.participants as u8 {
            if !(bad == BadHistory::CommitWithoutAllVotes && i > 0) {
                g.voted.insert((i, tx));
            }
        }
        match bad {
            BadHistory::SplitOutcome => {
                g.applied.insert((0, tx, Dec::Commit));
                g.applied.insert((1, tx, Dec::Abort));
            }
            BadHistory::AppliedBoth => {
                g.applied.insert((0, tx, Dec::Commit));
                g.applied.insert((0, tx, Dec::Abort));
            }
            BadHistory::CommitWithoutAllVotes => {
                g.applied.insert((0, tx, Dec::Commit));
            }
            BadHistory::AckWithoutApply => g.acked.insert((0, tx)),
            BadHistory::AnnouncedBoth => {
                g.said.insert((tx, Dec::Commit));
                g.said.insert((tx, Dec::Abort));
            }
            BadHistory::DurableCommitAborted => {
                g.durable.insert(tx);
                g.said.insert((tx, Dec::Abort));
            }
        }
        s
    }

    /// Distinct core states met: (coordinator, all participants).
    pub fn core_states(&self) -> (usize, usize) {
        let c = self.coord.borrow().entries.len();
        let p = self.parts.iter().map(|s| s.borrow().entries.len()).sum();
        (c, p)
    }

    fn boot_coord(&self, inc: u8, records: Vec<Rec>) -> u32 {
        self.coord.borrow_mut().boot(Start { inc, records })
    }

    fn boot_part(&self, i: usize, records: Vec<Rec>) -> u32 {
        self.parts[i].borrow_mut().boot(Start { inc: 0, records })
    }

    /// Every step enabled in `s`, in a fixed order.
    fn steps(&self, s: &State, v: &mut Vec<Step>) {
        let budget = self.cfg.faults;
        if let Some(k) = s.ghost.clients.iter().position(|c| *c == Client::Idle) {
            v.push(Step::Submit(k as u8));
        }
        for p in s.net.iter() {
            v.push(Step::Deliver(*p));
            if s.used.dups < budget.dups {
                v.push(Step::Duplicate(*p));
            }
            let handshake = matches!(p.msg, Msg::Hello(_) | Msg::Welcome);
            if s.used.losses < budget.losses && !handshake {
                v.push(Step::Lose(*p));
            }
        }
        for l in s.links.iter() {
            if l.broken && !l.coord_closed {
                v.push(Step::CoordSeesClose(l.conn));
            }
        }
        for (i, p) in s.parts.iter().enumerate() {
            let i = i as u8;
            if let Some(l) = self.plink(s, i as usize).conn().and_then(|c| s.link(c)) {
                if l.broken {
                    v.push(Step::PartSeesClose(i));
                } else if s.used.breaks < budget.breaks {
                    v.push(Step::Break(i));
                }
            }
            for tx in p.preparing.iter() {
                for commit in [true, false] {
                    v.push(Step::ResourcePrepared {
                        part: i,
                        tx: *tx,
                        commit,
                    });
                }
            }
            let busy = self.pmeta(s, i as usize, |m| m.busy);
            self.process_steps(v, Proc::Part(i), &p.log, busy, s.used);
        }
        let busy = self.cmeta(s, |m| m.busy);
        self.process_steps(v, Proc::Coord, &s.coord.log, busy, s.used);
    }

    fn process_steps(&self, v: &mut Vec<Step>, proc: Proc, log: &Log, busy: bool, used: Faults) {
        if log.barrier > log.durable {
            v.push(Step::Sync(proc));
        }
        if busy {
            v.push(Step::Tick(proc));
        }
        if used.crashes < self.cfg.faults.crashes {
            for kept in 0..=log.unsynced() {
                v.push(Step::Crash { proc, kept });
            }
        }
    }

    /// The state after `step`, and the step-level rule it broke, if any.
    fn apply(&self, s: &State, step: &Step) -> (State, Option<String>) {
        let mut s = *s;
        let mut bad = Vec::new();
        match *step {
            Step::Submit(k) => {
                s.ghost.clients.as_mut_slice()[k as usize] = Client::Waiting;
                self.coord_event(&mut s, CEv::ClientHello(k), &mut bad);
                self.coord_event(&mut s, CEv::Submit(k), &mut bad);
            }
            Step::Deliver(p) | Step::Duplicate(p) => {
                if matches!(step, Step::Duplicate(_)) {
                    s.used.dups += 1;
                } else {
                    s.net.remove(&p);
                }
                self.deliver(&mut s, p, &mut bad);
            }
            Step::Lose(p) => {
                s.used.losses += 1;
                s.net.remove(&p);
            }
            Step::Break(i) => {
                s.used.breaks += 1;
                let c = self.plink(&s, i as usize).conn().expect("connected");
                s.update_link(c, |l| l.broken = true);
            }
            Step::CoordSeesClose(c) => {
                s.update_link(c, |l| l.coord_closed = true);
                s.net.retain(|p| p.conn != c || !p.to_coord);
                s.coord.held.retain(|h| h.conn != c);
                self.coord_event(&mut s, CEv::Disconnected(c), &mut bad);
            }
            Step::PartSeesClose(i) => {
                let c = self.plink(&s, i as usize).conn().expect("connected");
                s.part(i as usize).held.retain(|h| h.conn != c);
                s.update_link(c, |l| l.part_closed = true);
                s.net.retain(|p| p.conn != c || p.to_coord);
                self.part_event(&mut s, i as usize, PEv::TransportDown, &mut bad);
            }
            Step::ResourcePrepared { part, tx, commit } => {
                s.part(part as usize).preparing.remove(&tx);
                self.part_event(&mut s, part as usize, PEv::Prepared(tx, commit), &mut bad);
            }
            Step::Sync(Proc::Coord) => s.coord.log.sync(),
            Step::Sync(Proc::Part(i)) => s.part(i as usize).log.sync(),
            Step::Tick(Proc::Coord) => self.coord_event(&mut s, CEv::Tick, &mut bad),
            Step::Tick(Proc::Part(i)) => self.part_event(&mut s, i as usize, PEv::Tick, &mut bad),
            Step::Crash {
                proc: Proc::Coord,
                kept,
            } => {
                s.used.crashes += 1;
                s.coord.log.crash(kept);
                s.coord.held.clear();
                s.coord.inc += 1;
                let mut links = s.links;
                links.clear();
                for l in s.links.iter() {
                    links.insert(Link {
                        broken: true,
                        coord_closed: true,
                        ..*l
                    });
                }
                s.links = links;
                s.net.retain(|p| !p.to_coord);
                s.coord.core = self.boot_coord(s.coord.inc, s.coord.log.records());
            }
            Step::Crash {
                proc: Proc::Part(i),
                kept,
            } => {
                s.used.crashes += 1;
                let conn = self.plink(&s, i as usize).conn();
                let node = s.part(i as usize);
                node.log.crash(kept);
                node.held.clear();
                node.preparing.clear();
                if let Some(c) = conn {
                    s.update_link(c, |l| {
                        l.broken = true;
                        l.part_closed = true;
                    });
                    s.net.retain(|p| p.conn != c || p.to_coord);
                }
                let records = s.parts.as_slice()[i as usize].log.records();
                s.part(i as usize).core = self.boot_part(i as usize, records);
            }
        }
        self.settle(&mut s);
        s.links.retain(|l| !(l.coord_closed && l.part_closed));
        self.reconnect(&mut s, &mut bad);
        let violation = (!bad.is_empty()).then(|| bad.join("; "));
        (s, violation)
    }

    fn deliver(&self, s: &mut State, p: Packet, bad: &mut Vec<String>) {
        if p.to_coord {
            return self.coord_event(s, CEv::Msg(p.conn, p.msg), bad);
        }
        let i = s.link(p.conn).expect("link").owner as usize;
        assert_eq!(
            self.plink(s, i).conn(),
            Some(p.conn),
            "delivered on the current connection"
        );
        // Welcome or not, the core's session decides what to make of it.
        self.part_event(s, i, PEv::Msg(p.msg), bad);
    }

    /// Participant `i`'s session, as its core holds it.
    fn plink(&self, s: &State, i: usize) -> PLink {
        self.parts[i].borrow().proj(s.parts.as_slice()[i].core).link
    }

    /// A participant without a connection opens a new one, as the runtime's
    /// connector does at start and after a close, and tells its core (which
    /// says hello on it). It waits while it still has two connections the
    /// coordinator has not seen close (else a coordinator slow to handle
    /// closes would let a participant open any number of connections, each
    /// refused as a duplicate).
    fn reconnect(&self, s: &mut State, bad: &mut Vec<String>) {
        for i in 0..s.parts.len() {
            let owned = s.links.iter().filter(|l| l.owner == i as u8).count();
            if self.plink(s, i).conn().is_some() || owned >= 2 {
                continue;
            }
            let conn = (1..LINKS_MAX)
                .find(|c| s.link(*c).is_none())
                .expect("a free connection id");
            s.links.insert(Link {
                conn,
                owner: i as u8,
                ..Link::default()
            });
            self.part_event(s, i, PEv::TransportUp(conn), bad);
        }
    }

    fn coord_event(&self, s: &mut State, ev: CEv, bad: &mut Vec<String>) {
        let (next, effs) = self.coord.borrow_mut().step(s.coord.core, &ev);
        s.coord.core = next;
        for e in effs.iter() {
            match e {
                Eff::Persist(r, sync) => s.coord.log.append(*r, *sync),
                Eff::Send {
                    conn,
                    msg,
                    after_durable,
                } => {
                    if hold(&s.coord.log, s.coord.held.is_empty(), *after_durable) {
                        s.coord.held.insert(Held {
                            barrier: s.coord.log.barrier,
                            conn: *conn,
                            msg: *msg,
                        });
                    } else {
                        coord_transmit(s, *conn, *msg);
                    }
                }
                // The runtime sends the error frame, then closes.
                Eff::Reject {
                    conn, close: true, ..
                } => s.update_link(*conn, |l| l.broken = true),
                Eff::Reject { .. } => {}
                Eff::Alert(m) => bad.push(format!("the coordinator emitted an Alert: {m}")),
                Eff::Prepare(_) | Eff::Finish(..) | Eff::Close(_) | Eff::Session(_) => {
                    panic!("coordinator asked for {e:?}")
                }
            }
        }
    }

    fn part_event(&self, s: &mut State, i: usize, ev: PEv, bad: &mut Vec<String>) {
        let core = s.parts.as_slice()[i].core;
        let prepared_before: Vec<Tx> = self.pmeta(s, i, |m| {
            m.txns
                .iter()
                .filter(|(_, st)| *st == PState::Prepared)
                .map(|(tx, _)| *tx)
                .collect()
        });
        let (next, effs) = self.parts[i].borrow_mut().step(core, &ev);
        s.part(i).core = next;
        for e in effs.iter() {
            match e {
                Eff::Persist(r, sync) => s.part(i).log.append(*r, *sync),
                Eff::Send {
                    conn,
                    msg,
                    after_durable,
                } => {
                    let node = s.part(i);
                    if hold(&node.log, node.held.is_empty(), *after_durable) {
                        let barrier = node.log.barrier;
                        node.held.insert(Held {
                            barrier,
                            conn: *conn,
                            msg: *msg,
                        });
                    } else {
                        part_transmit(s, i, *conn, *msg);
                    }
                }
                Eff::Prepare(tx) => s.part(i).preparing.insert(*tx),
                Eff::Finish(tx, d) => {
                    s.ghost.applied.insert((i as u8, *tx, *d));
                    let told = s.ghost.said(*tx, Dec::Abort);
                    if *d == Dec::Abort && prepared_before.contains(tx) && !told {
                        bad.push(format!(
                            "p{} voted commit for {tx} and aborted it although the coordinator never said abort",
                            i + 1
                        ));
                    }
                }
                Eff::Alert(m) => bad.push(format!("participant p{} emitted an Alert: {m}", i + 1)),
                Eff::Reject { why, .. } => bad.push(format!(
                    "participant p{} refused a coordinator message: {why}",
                    i + 1
                )),
                Eff::Close(conn) => s.update_link(*conn, |l| l.broken = true),
                // Notices are for the operator's log.
                Eff::Session(
                    SessionNotice::Registered { .. }
                    | SessionNotice::BeforeWelcome { .. }
                    | SessionNotice::Lost,
                ) => {}
                Eff::Session(n) => panic!("p{}: {n:?} is outside the model", i + 1),
            }
        }
    }

    /// Release what the logs made durable, and note durable decisions.
    ///
    /// Once no crash can happen any more, nothing can tell an unsynced
    /// record from a synced one, and a message held for the sync is just a
    /// message not yet delivered: logs are then synced at once, which
    /// leaves the cores' possible behaviours as they were and removes the
    /// `Sync` interleavings.
    fn settle(&self, s: &mut State) {
        if s.used.crashes >= self.cfg.faults.crashes {
            s.coord.log.sync();
            for p in s.parts.as_mut_slice() {
                p.log.sync();
            }
        }
        while let Some(h) = s.coord.held.first() {
            if h.barrier > s.coord.log.durable {
                break;
            }
            s.coord.held.remove(&h);
            coord_transmit(s, h.conn, h.msg);
        }
        for i in 0..s.parts.len() {
            while let Some(h) = s.parts.as_slice()[i].held.first() {
                if h.barrier > s.parts.as_slice()[i].log.durable {
                    break;
                }
                s.part(i).held.remove(&h);
                part_transmit(s, i, h.conn, h.msg);
            }
        }
        let log = s.coord.log;
        for r in &log.recs.as_slice()[..usize::from(log.durable)] {
            if let Rec::Decision(tx) = r {
                s.ghost.durable.insert(*tx);
            }
        }
    }

    fn cmeta<R>(&self, s: &State, f: impl FnOnce(&CMeta) -> R) -> R {
        f(self.coord.borrow().meta(s.coord.core))
    }

    fn pmeta<R>(&self, s: &State, i: usize, f: impl FnOnce(&PMeta) -> R) -> R {
        f(self.parts[i].borrow().meta(s.parts.as_slice()[i].core))
    }
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..n {
            let mut q: Vec<usize> = p.iter().map(|&x| if x >= at { x + 1 } else { x }).collect();
            q.push(at);
            out.push(q);
        }
    }
    out.sort();
    out
}

/// A renaming of participants, and possibly of the two transactions with
/// their clients, under which the world behaves alike (see
/// [`Model::fingerprint`] for `System`), and whether logs are written into
/// the encoding.
struct Renaming<'a> {
    /// `perm[old] = new` for participants.
    perm: &'a [usize],
    /// Swap sequence numbers 1 and 2 (in every incarnation) and clients 0
    /// and 1.
    swap: bool,
    /// Encode the logs (only while a crash may still read them).
    logs: bool,
}

impl Renaming<'_> {
    fn part(&self, i: u8) -> u8 {
        self.perm[usize::from(i)] as u8
    }

    fn tx(&self, t: Tx) -> Tx {
        match t.seq {
            1 | 2 if self.swap => Tx {
                inc: t.inc,
                seq: 3 - t.seq,
            },
            _ => t,
        }
    }

    fn client(&self, k: u8) -> u8 {
        if self.swap {
            1 - k
        } else {
            k
        }
    }

    fn msg(&self, m: Msg) -> Msg {
        match m {
            Msg::Hello(i) => Msg::Hello(self.part(i)),
            Msg::Welcome => Msg::Welcome,
            Msg::Prepare(t) => Msg::Prepare(self.tx(t)),
            Msg::VoteCommit(t) => Msg::VoteCommit(self.tx(t)),
            Msg::VoteAbort(t) => Msg::VoteAbort(self.tx(t)),
            Msg::Commit(t) => Msg::Commit(self.tx(t)),
            Msg::Abort(t) => Msg::Abort(self.tx(t)),
            Msg::Ack(t, d) => Msg::Ack(self.tx(t), d),
            Msg::Query(t) => Msg::Query(self.tx(t)),
            Msg::Outcome(k, t, d) => Msg::Outcome(self.client(k), self.tx(t), d),
            Msg::Refused(k) => Msg::Refused(self.client(k)),
        }
    }

    fn rec(&self, r: Rec) -> Rec {
        match r {
            Rec::Decision(t) => Rec::Decision(self.tx(t)),
            Rec::End(t) => Rec::End(self.tx(t)),
            Rec::Joined(i) => Rec::Joined(self.part(i)),
            Rec::Prepared(t) => Rec::Prepared(self.tx(t)),
            Rec::Decided(t, d) => Rec::Decided(self.tx(t), d),
        }
    }

    fn client_state(&self, c: Client) -> Client {
        match c {
            Client::Told(t, d) => Client::Told(self.tx(t), d),
            other => other,
        }
    }
}

impl System {
    /// The fingerprint of `s` renamed by `r`, with connections renamed by
    /// their place in a canonical order of the links (owner, current or
    /// not, state; the old id only breaks ties). Written out by hand into a
    /// byte buffer: this runs for every transition and every renaming, and
    /// is most of the cost of the exploration.
    fn encode(&self, s: &State, r: &Renaming) -> u128 {
        let n = s.parts.len();
        let parts = s.parts.as_slice();
        let mut inv = [0usize; PARTICIPANTS_MAX];
        for (i, &p) in r.perm.iter().enumerate() {
            inv[p] = i;
        }
        let mut order: List<(u8, bool, bool, bool, bool, u8), 8> = List::default();
        for l in s.links.iter() {
            let owner = usize::from(l.owner);
            let current = self.plink(s, owner).conn() == Some(l.conn);
            order.push((
                r.part(l.owner),
                !current,
                l.broken,
                l.coord_closed,
                l.part_closed,
                l.conn,
            ));
        }
        order.as_mut_slice().sort_unstable();
        let mut labels = [0u8; LINKS_MAX as usize];
        for (rank, o) in order.iter().enumerate() {
            labels[usize::from(o.5)] = rank as u8 + 1;
        }
        let lab = |c: u8| {
            if c >= CLIENT_TAG {
                CLIENT_TAG + r.client(c - CLIENT_TAG)
            } else {
                labels[usize::from(c)]
            }
        };
        let msg = |m: Msg| r.msg(m);
        let mut b = Buf::default();
        // Coordinator.
        b.u8(s.coord.inc);
        if r.logs {
            b.log(&s.coord.log, |x| r.rec(x));
        }
        b.held(s.coord.held.as_slice(), lab, msg);
        let coord = self.coord.borrow();
        let c = coord.proj(s.coord.core);
        b.u8(c.inc);
        b.u8(c.state);
        for &i in &inv[..n] {
            let m = c.members[i];
            b.u8(match m {
                ABSENT | OFFLINE | UNSEEN => m,
                conn => lab(conn),
            });
        }
        let mut greeted: List<u8, 16> = List::default();
        for g in &c.greeted {
            greeted.push(lab(*g));
        }
        greeted.as_mut_slice().sort_unstable();
        b.bytes(greeted.as_slice());
        b.u8(0xfe);
        for k in 0..c.clients_greeted.len() {
            // The swap is its own inverse: new client k was client(k).
            b.u8(u8::from(c.clients_greeted[usize::from(r.client(k as u8))]));
        }
        for q in &c.queued {
            b.u8(r.client(*q));
        }
        b.u8(0xfe);
        let mut txns: List<(Tx, u8), 8> = List::default();
        for (k, t) in c.txns.iter().enumerate() {
            txns.push((r.tx(t.tx), k as u8));
        }
        txns.as_mut_slice().sort_unstable();
        for &(tx, k) in txns.iter() {
            let t = &c.txns[usize::from(k)];
            b.tx(tx);
            b.u8(u8::from(t.ended));
            b.dec(t.decision);
            b.u8(t.phase);
            b.u8(t.waiter.map_or(0xff, |k| r.client(k)));
            for &i in &inv[..t.votes.len()] {
                b.u8(t.votes[i]);
                b.u8(u8::from(t.acks[i]));
            }
        }
        b.u8(0xfe);
        drop(coord);
        // Participants, in their new order.
        for &i in &inv[..n] {
            let p = &parts[i];
            // The session, in the same bytes as when the runtime held the
            // connection and the welcome: the connection, whether it is
            // welcomed, and (below) the connection the protocol sends on.
            let link = self.plink(s, i);
            b.u8(link.conn().map_or(0, lab));
            b.u8(u8::from(link.registered()));
            if r.logs {
                b.log(&p.log, |x| r.rec(x));
            }
            b.held(p.held.as_slice(), lab, msg);
            let mut preparing: List<Tx, 4> = List::default();
            for t in p.preparing.iter() {
                preparing.push(r.tx(*t));
            }
            preparing.as_mut_slice().sort_unstable();
            for t in preparing.iter() {
                b.tx(*t);
            }
            b.u8(0xfe);
            let store = self.parts[i].borrow();
            let proj = store.proj(p.core);
            b.u8(match proj.link {
                PLink::Registered(c) => lab(c),
                PLink::Down | PLink::Greeting(_) => 0,
            });
            let mut txns: List<(Tx, u8, bool), 8> = List::default();
            for &(t, st, waits) in &proj.txns {
                txns.push((r.tx(t), st, waits));
            }
            txns.as_mut_slice().sort_unstable();
            for (t, st, waits) in txns.iter() {
                b.tx(*t);
                b.u8(*st);
                b.u8(u8::from(*waits));
            }
            b.u8(0xfe);
        }
        // The world.
        for o in order.iter() {
            b.u8(o.0);
            b.u8(u8::from(o.1) | u8::from(o.2) << 1 | u8::from(o.3) << 2 | u8::from(o.4) << 3);
        }
        b.u8(0xfe);
        let mut net: List<(u8, bool, Msg), 32> = List::default();
        for p in s.net.iter() {
            net.push((lab(p.conn), p.to_coord, msg(p.msg)));
        }
        net.as_mut_slice().sort_unstable();
        for (c, to_coord, m) in net.iter() {
            b.u8(*c);
            b.u8(u8::from(*to_coord));
            b.msg(*m);
        }
        b.u8(0xfe);
        let f = s.used;
        b.bytes(&[f.crashes, f.losses, f.dups, f.breaks]);
        let g = &s.ghost;
        let mut applied: List<(u8, Tx, Dec), 12> = List::default();
        for a in g.applied.iter() {
            applied.push((r.part(a.0), r.tx(a.1), a.2));
        }
        applied.as_mut_slice().sort_unstable();
        for (i, t, d) in applied.iter() {
            b.u8(*i);
            b.tx(*t);
            b.dec(Some(*d));
        }
        b.u8(0xfe);
        for set in [&g.voted, &g.acked] {
            let mut v: List<(u8, Tx), 12> = List::default();
            for x in set.iter() {
                v.push((r.part(x.0), r.tx(x.1)));
            }
            v.as_mut_slice().sort_unstable();
            for (i, t) in v.iter() {
                b.u8(*i);
                b.tx(*t);
            }
            b.u8(0xfe);
        }
        let mut said: List<(Tx, Dec), 8> = List::default();
        for (t, d) in g.said.iter() {
            said.push((r.tx(*t), *d));
        }
        said.as_mut_slice().sort_unstable();
        for (t, d) in said.iter() {
            b.tx(*t);
            b.dec(Some(*d));
        }
        b.u8(0xfe);
        let mut durable: List<Tx, 8> = List::default();
        for t in g.durable.iter() {
            durable.push(r.tx(*t));
        }
        durable.as_mut_slice().sort_unstable();
        for t in durable.iter() {
            b.tx(*t);
        }
        b.u8(0xfe);
        let clients = g.clients.as_slice();
        for k in 0..clients.len() {
            match r.client_state(clients[usize::from(r.client(k as u8))]) {
                Client::Idle => b.u8(0),
                Client::Waiting => b.u8(1),
                Client::Told(t, d) => {
                    b.u8(2);
                    b.tx(t);
                    b.dec(Some(d));
                }
                Client::Refused => b.u8(3),
            }
        }
        b.finish()
    }
}

impl System {
    /// Call `f` with each renaming under which `s` is identified:
    ///
    /// - Participants are interchangeable only once no submit can meet a
    ///   participant that is not connected: the coordinator sends PREPARE
    ///   to the participants in id order and stops at the first one not
    ///   connected (`on_submit`), so which of them were asked depends on
    ///   their names. That is the case once every client has submitted and
    ///   none waits in the coordinator's queue, or once no crash or break is
    ///   left in the budget, no connection is broken and every member is
    ///   connected (they then stay connected). Otherwise no core behaves differently for `p1` than for
    ///   `p2`: members are kept in id order, but that order only picks which
    ///   message of a step is sent first or which name goes in a text.
    ///   Trying every renaming is slow with three participants, so only those
    ///   that sort the participants by a signature of their own situation
    ///   (itself invariant under renaming) are tried; ties try all orders
    ///   among the tied. The result is the same for symmetric states.
    /// - Once no crash can happen any more (the budget is spent, or there
    ///   was none), logs drop out of the encoding. A log is read only by
    ///   recovery after a crash; `settle` then syncs every record at once
    ///   (so no message waits for a log), and the commit decisions a log
    ///   made durable are already in the ghost history. States that differ
    ///   only in their logs (typically in the order two transactions'
    ///   records were written) have the same future.
    /// - Once, in addition, no submit can still start, the two transactions
    ///   (with their clients) are interchangeable: no core allocates another
    ///   id, and the cores treat ids only as names (they are kept in id
    ///   order, which again only orders a step's actions: messages go into
    ///   a set, held messages are all released by the step that holds them,
    ///   and the order of log records no longer matters). The swap renames
    ///   sequence numbers 1 and 2, in every incarnation, with the clients
    ///   0 and 1. While a crash may still happen it is not applied: the
    ///   order of records in an unsynced tail decides which of them a crash
    ///   keeps, and that order follows the ids.
    ///
    /// The checks do not depend on names.
    fn renamings(&self, s: &State, mut f: impl FnMut(&Renaming)) {
        let n = s.parts.len();
        let budget = self.cfg.faults;
        let settled = s.used.crashes >= budget.crashes;
        let coord = self.coord.borrow();
        let c = coord.proj(s.coord.core);
        let submits_done =
            s.ghost.clients.iter().all(|c| *c != Client::Idle) && c.queued.is_empty();
        let stay_connected = settled
            && s.used.breaks >= budget.breaks
            && s.links.iter().all(|l| !l.broken)
            && c.members.iter().all(|m| *m != OFFLINE && *m != UNSEEN);
        drop(coord);
        let identity: [usize; PARTICIPANTS_MAX] = std::array::from_fn(|i| i);
        let swaps: &[bool] = if settled && submits_done && self.cfg.txns == 2 {
            &[false, true]
        } else {
            &[false]
        };
        let mut visit = |perm: &[usize]| {
            for &swap in swaps {
                f(&Renaming {
                    perm,
                    swap,
                    logs: !settled,
                });
            }
        };
        if !(submits_done || stay_connected) {
            return visit(&identity[..n]);
        }
        let mut sig = [0u64; PARTICIPANTS_MAX];
        for (i, x) in sig[..n].iter_mut().enumerate() {
            *x = self.signature(s, i, !settled);
        }
        for p in self
            .perms
            .iter()
            .filter(|p| (0..n).all(|i| (0..n).all(|j| sig[i] >= sig[j] || p[i] < p[j])))
        {
            visit(p);
        }
    }

    /// The fingerprint as it was before participants were renamed only where
    /// that is sound: the least encoding over every renaming of the
    /// participants, in every state, with the logs. Kept to show that the
    /// check of the reductions catches an unsound one.
    pub fn fingerprint_renaming_participants_always(&self, s: &State) -> u128 {
        self.perms
            .iter()
            .map(|perm| {
                let r = Renaming {
                    perm,
                    swap: false,
                    logs: true,
                };
                self.encode(s, &r)
            })
            .min()
            .expect("the identity")
    }

    /// The encoding of `s` as it is, without any reduction: no renaming,
    /// logs always included. Two states with the same exact fingerprint are
    /// the same state.
    pub fn exact_fingerprint(&self, s: &State) -> u128 {
        let identity: Vec<usize> = (0..s.parts.len()).collect();
        let r = Renaming {
            perm: &identity,
            swap: false,
            logs: true,
        };
        self.encode(s, &r)
    }

    /// A coarse summary of participant `i` without names: its own state,
    /// its links and what is in flight on them, and what the coordinator
    /// holds about it. It only has to be cheap, invariant under renaming,
    /// and made of what the encoding holds (its log only if `logs`): states
    /// with one encoding must try the same renamings. Ties cost extra
    /// encodings, not correctness.
    fn signature(&self, s: &State, i: usize, logs: bool) -> u64 {
        let p = &s.parts.as_slice()[i];
        let link = self.plink(s, i);
        let mut x: u64 = 1;
        let mut add = |v: u64| x = x.wrapping_mul(0x100_0000_01b3).wrapping_add(v);
        add(u64::from(link.registered()));
        if logs {
            add(p.log.recs.len() as u64 * 16 + u64::from(p.log.durable));
        }
        add(p.held.len() as u64 * 16 + p.preparing.len() as u64);
        let store = self.parts[i].borrow();
        // Summed, without sequence numbers: the signature must not change
        // when the two transactions are renamed into each other either.
        let mut txns = 0u64;
        for (t, st, waits) in &store.proj(p.core).txns {
            let v = u64::from(t.inc) << 16 | u64::from(*st) << 1 | u64::from(*waits);
            txns = txns.wrapping_add((v + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        add(txns);
        let mut sum = 0u64;
        for l in s.links.iter().filter(|l| usize::from(l.owner) == i) {
            sum += 1
                << (u8::from(l.broken)
                    | u8::from(l.coord_closed) << 1
                    | u8::from(l.part_closed) << 2);
        }
        for x in s.net.iter() {
            if s.link(x.conn).is_some_and(|l| usize::from(l.owner) == i) {
                let tag = match x.msg {
                    Msg::Hello(_) => 1,
                    Msg::Welcome => 2,
                    Msg::Prepare(_) => 3,
                    Msg::VoteCommit(_) => 4,
                    Msg::VoteAbort(_) => 5,
                    Msg::Commit(_) => 6,
                    Msg::Abort(_) => 7,
                    Msg::Ack(..) => 8,
                    Msg::Query(_) => 9,
                    Msg::Outcome(..) | Msg::Refused(_) => 10,
                };
                sum += 1 << (8 + 4 * tag);
            }
        }
        add(sum);
        let coord = self.coord.borrow();
        let c = coord.proj(s.coord.core);
        add(match c.members[i] {
            ABSENT => 1,
            OFFLINE => 2,
            conn if link.conn() == Some(conn) => 3,
            _ => 4,
        });
        let mut votes = 0u64;
        for t in &c.txns {
            if let (Some(v), Some(a)) = (t.votes.get(i), t.acks.get(i)) {
                votes += 1 << (8 * (u64::from(*v) * 2 + u64::from(*a)));
            }
        }
        add(votes);
        add(s
            .ghost
            .applied
            .iter()
            .filter(|a| usize::from(a.0) == i)
            .count() as u64);
        add(s
            .ghost
            .voted
            .iter()
            .filter(|v| usize::from(v.0) == i)
            .count() as u64);
        add(s
            .ghost
            .acked
            .iter()
            .filter(|v| usize::from(v.0) == i)
            .count() as u64);
        x
    }
}

/// The byte stream of [`System::encode`], hashed as it is written (eight
/// bytes at a time). Every variable-length part ends with a separator or
/// is preceded by its tag, so the encoding is unambiguous.
#[derive(Default)]
struct Buf {
    h: Fast,
    word: u64,
    filled: u32,
}

impl Buf {
    fn u8(&mut self, x: u8) {
        self.word |= u64::from(x) << (8 * self.filled);
        self.filled += 1;
        if self.filled == 8 {
            self.h.mix(self.word);
            self.word = 0;
            self.filled = 0;
        }
    }

    fn bytes(&mut self, xs: &[u8]) {
        for x in xs {
            self.u8(*x);
        }
    }

    fn tx(&mut self, t: Tx) {
        self.bytes(&[t.inc, t.seq]);
    }

    fn dec(&mut self, d: Option<Dec>) {
        self.u8(match d {
            None => 0,
            Some(Dec::Commit) => 1,
            Some(Dec::Abort) => 2,
        });
    }

    fn msg(&mut self, m: Msg) {
        match m {
            Msg::Hello(i) => self.bytes(&[1, i]),
            Msg::Welcome => self.u8(2),
            Msg::Prepare(t) => self.bytes(&[3, t.inc, t.seq]),
            Msg::VoteCommit(t) => self.bytes(&[4, t.inc, t.seq]),
            Msg::VoteAbort(t) => self.bytes(&[5, t.inc, t.seq]),
            Msg::Commit(t) => self.bytes(&[6, t.inc, t.seq]),
            Msg::Abort(t) => self.bytes(&[7, t.inc, t.seq]),
            Msg::Ack(t, d) => {
                self.bytes(&[8, t.inc, t.seq]);
                self.dec(d);
            }
            Msg::Query(t) => self.bytes(&[9, t.inc, t.seq]),
            Msg::Outcome(k, t, d) => {
                self.bytes(&[10, k, t.inc, t.seq]);
                self.dec(Some(d));
            }
            Msg::Refused(k) => self.bytes(&[11, k]),
        }
    }

    /// A log, records renamed by `rename`. The membership records of the
    /// durable part count as a set: recovery rebuilds the same members
    /// whatever order they registered in, and a crash only cuts the
    /// unsynced tail, so logs that differ only there behave alike (without
    /// this, the order of first registrations would multiply the states).
    fn log(&mut self, log: &Log, rename: impl Fn(Rec) -> Rec) {
        self.bytes(&[log.durable, log.barrier]);
        let mut joined: List<u8, 8> = List::default();
        for (k, r) in log.recs.iter().enumerate() {
            match rename(*r) {
                Rec::Decision(t) => self.bytes(&[1, t.inc, t.seq]),
                Rec::End(t) => self.bytes(&[2, t.inc, t.seq]),
                Rec::Joined(i) if k < usize::from(log.durable) => joined.push(i),
                Rec::Joined(i) => self.bytes(&[5, i]),
                Rec::Prepared(t) => self.bytes(&[3, t.inc, t.seq]),
                Rec::Decided(t, d) => {
                    self.bytes(&[4, t.inc, t.seq]);
                    self.dec(Some(d));
                }
            }
        }
        joined.as_mut_slice().sort_unstable();
        self.u8(0xfd);
        for i in joined.iter() {
            self.u8(*i);
        }
        self.u8(0xfe);
    }

    fn held(&mut self, held: &[Held], lab: impl Fn(u8) -> u8, msg: impl Fn(Msg) -> Msg) {
        let mut v: List<(u8, u8, Msg), 12> = List::default();
        for h in held {
            v.push((h.barrier, lab(h.conn), msg(h.msg)));
        }
        v.as_mut_slice().sort_unstable();
        for (barrier, conn, m) in v.iter() {
            self.bytes(&[*barrier, *conn]);
            self.msg(*m);
        }
        self.u8(0xfe);
    }

    fn finish(mut self) -> u128 {
        // Pad with a marker byte so that trailing zeros count.
        self.u8(0xa5);
        self.h.mix(self.word);
        self.h.finish128()
    }
}

/// The outbox rule: an `after_durable` message waits while the log is not
/// durable up to the barrier, or while earlier messages wait.
fn hold(log: &Log, none_held: bool, after_durable: bool) -> bool {
    after_durable && (log.barrier > log.durable || !none_held)
}

fn coord_transmit(s: &mut State, conn: u8, msg: Msg) {
    if conn >= CLIENT_TAG {
        let k = usize::from(conn - CLIENT_TAG);
        match msg {
            Msg::Outcome(_, tx, d) => {
                s.ghost.clients.as_mut_slice()[k] = Client::Told(tx, d);
                s.ghost.said.insert((tx, d));
            }
            Msg::Refused(_) => s.ghost.clients.as_mut_slice()[k] = Client::Refused,
            Msg::Welcome => {}
            other => panic!("{other:?} sent to a client"),
        }
        return;
    }
    match msg {
        Msg::Commit(tx) => s.ghost.said.insert((tx, Dec::Commit)),
        Msg::Abort(tx) => s.ghost.said.insert((tx, Dec::Abort)),
        _ => {}
    }
    if s.link(conn).is_some_and(|l| !l.broken) {
        s.net.insert(Packet {
            conn,
            to_coord: false,
            msg,
        });
    }
}

fn part_transmit(s: &mut State, i: usize, conn: u8, msg: Msg) {
    if s.link(conn).is_some_and(|l| !l.broken) {
        match msg {
            Msg::VoteCommit(tx) => s.ghost.voted.insert((i as u8, tx)),
            Msg::Ack(tx, Some(Dec::Commit)) => s.ghost.acked.insert((i as u8, tx)),
            _ => {}
        }
        s.net.insert(Packet {
            conn,
            to_coord: true,
            msg,
        });
    }
}

impl Model for System {
    type State = State;
    type Step = Step;

    fn init(&self) -> State {
        let mut parts = List::default();
        for i in 0..self.cfg.participants {
            parts.push(PartNode {
                core: self.boot_part(i, Vec::new()),
                ..PartNode::default()
            });
        }
        let mut clients = List::default();
        for _ in 0..self.cfg.txns {
            clients.push(Client::Idle);
        }
        let mut s = State {
            coord: CoordNode {
                core: self.boot_coord(0, Vec::new()),
                ..CoordNode::default()
            },
            parts,
            links: Set::default(),
            net: Set::default(),
            used: Faults::default(),
            ghost: Ghost {
                clients,
                ..Ghost::default()
            },
        };
        let mut bad = Vec::new();
        self.reconnect(&mut s, &mut bad);
        assert!(bad.is_empty(), "{bad:?}");
        s
    }

    /// States that differ only by a renaming that the cores cannot tell
    /// apart count once: a state is identified by its least encoding over
    /// the renamings that apply to it ([`System::renamings`]). Which
    /// renamings those are, and why, is said there. `model_check.rs` checks
    /// on whole graphs that states given one fingerprint look alike to every
    /// check and have successors with the same fingerprints.
    fn fingerprint(&self, s: &State) -> u128 {
        let mut best = u128::MAX;
        self.renamings(s, |r| best = best.min(self.encode(s, r)));
        best
    }

    fn next(&self, s: &State, out: &mut Vec<Succ<Step, State>>) {
        let mut steps = Vec::new();
        self.steps(s, &mut steps);
        for step in steps {
            let (state, violation) = self.apply(s, &step);
            out.push(Succ {
                step,
                state,
                violation,
            });
        }
    }

    /// Atomicity, validity and stability, over what the cores say now and
    /// what has happened (the ghost history).
    fn invariant(&self, s: &State) -> Result<(), String> {
        let n = self.cfg.participants;
        // Who has committed / aborted each transaction, by the cores' states
        // and by what their resources applied.
        let mut outcomes: Vec<(Tx, Dec, usize)> = Vec::new();
        for i in 0..n {
            self.pmeta(s, i, |m| {
                for &(tx, st) in &m.txns {
                    match st {
                        PState::Committed => outcomes.push((tx, Dec::Commit, i)),
                        PState::Aborted => outcomes.push((tx, Dec::Abort, i)),
                        PState::Preparing | PState::Prepared => {}
                    }
                }
            });
        }
        for &(i, tx, d) in s.ghost.applied.iter() {
            outcomes.push((tx, d, usize::from(i)));
        }
        outcomes.sort();
        outcomes.dedup();
        for w in outcomes.windows(2) {
            let ((tx, d1, i), (tx2, d2, j)) = (w[0], w[1]);
            if tx == tx2 && d1 != d2 {
                let what = if i == j {
                    format!("stability: p{} both committed and aborted {tx}", i + 1)
                } else {
                    format!(
                        "atomicity: {tx} committed at p{} and aborted at p{}",
                        i + 1,
                        j + 1
                    )
                };
                return Err(what);
            }
        }
        let committed = outcomes
            .iter()
            .filter(|o| o.1 == Dec::Commit)
            .map(|o| o.0)
            .chain(
                s.ghost
                    .said
                    .iter()
                    .filter(|x| x.1 == Dec::Commit)
                    .map(|x| x.0),
            );
        for tx in committed {
            if let Some(j) = (0..n).find(|j| !s.ghost.voted.contains(&(*j as u8, tx))) {
                return Err(format!(
                    "validity: {tx} committed (or announced) but p{} never voted commit",
                    j + 1
                ));
            }
        }
        for &(i, tx) in s.ghost.acked.iter() {
            if !s.ghost.applied.contains(&(i, tx, Dec::Commit)) {
                return Err(format!(
                    "durability: p{} acknowledged the commit of {tx} without applying it",
                    i + 1
                ));
            }
        }
        for &(tx, d) in s.ghost.said.iter() {
            if d == Dec::Abort && s.ghost.said(tx, Dec::Commit) {
                return Err(format!(
                    "stability: the coordinator announced both commit and abort for {tx}"
                ));
            }
        }
        for &tx in s.ghost.durable.iter() {
            let now_abort = self.cmeta(s, |m| {
                m.txns
                    .iter()
                    .any(|t| t.tx == tx && t.decision == Some(Dec::Abort))
            });
            if s.ghost.said(tx, Dec::Abort) || now_abort {
                return Err(format!(
                    "stability: the durable commit decision for {tx} turned into abort"
                ));
            }
        }
        Ok(())
    }

    fn tags(&self, s: &State) -> u32 {
        let n = self.cfg.participants;
        let mut tags = 0;
        for i in 0..n {
            let prepared = self.pmeta(s, i, |m| {
                m.txns.iter().filter(|t| t.1 == PState::Prepared).count()
            });
            if prepared >= 2 {
                tags |= TAG_TWO_IN_DOUBT;
            }
        }
        let mut outcome_tags = 0;
        for want in [PState::Committed, PState::Aborted] {
            let mut txs: Vec<Tx> = Vec::new();
            for i in 0..n {
                self.pmeta(s, i, |m| {
                    txs.extend(m.txns.iter().filter(|t| t.1 == want).map(|t| t.0))
                });
            }
            txs.sort();
            if txs.windows(n).any(|w| w[0] == w[n - 1]) {
                outcome_tags |= if want == PState::Committed {
                    TAG_COMMIT
                } else {
                    TAG_ABORT
                };
            }
        }
        if outcome_tags == TAG_COMMIT | TAG_ABORT {
            // Atomicity holds in every state, so the committed and the
            // aborted transaction are two different ones.
            tags |= TAG_ONE_OF_EACH;
        }
        tags | outcome_tags
    }

    /// Nothing left to decide: no participant in doubt or preparing, and no
    /// transaction left open at the coordinator.
    fn goal(&self, s: &State) -> bool {
        let settled = (0..self.cfg.participants).all(|i| {
            s.parts.as_slice()[i].preparing.is_empty()
                && self.pmeta(s, i, |m| {
                    m.txns
                        .iter()
                        .all(|(_, st)| matches!(st, PState::Committed | PState::Aborted))
                })
        });
        settled && self.cmeta(s, |m| m.txns.iter().all(|t| t.ended))
    }

    fn describe(&self, s: &State) -> String {
        let mut out = String::new();
        out += &format!(
            "coordinator#{}: {}; log {:?}; held {:?}",
            prefix(s.coord.inc),
            self.cmeta(s, |m| m.summary.clone()),
            LogView(&s.coord.log),
            s.coord.held
        );
        for (i, p) in s.parts.iter().enumerate() {
            out += &format!(
                "\n       p{}: conn {:?} {}; log {:?}; held {:?}; preparing {:?}",
                i + 1,
                self.plink(s, i).conn(),
                self.pmeta(s, i, |m| m.summary.clone()),
                LogView(&p.log),
                p.held,
                p.preparing
            );
        }
        out += &format!(
            "\n       links {:?}\n       net {:?}\n       faults used {:?}; clients {:?}",
            s.links, s.net, s.used, s.ghost.clients
        );
        out
    }
}

/// A log printed with `|` after the durable part.
struct LogView<'a>(&'a Log);

impl fmt::Debug for LogView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (done, open) = self.0.recs.as_slice().split_at(usize::from(self.0.durable));
        write!(f, "{done:?} | {open:?}")
    }
}

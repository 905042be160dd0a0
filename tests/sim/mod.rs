//! A deterministic simulator of a whole twopc cluster in one thread.
//!
//! One coordinator, `participants` participants holding bank accounts in the
//! real embedded key-value store, and `clients` clients submitting transfers
//! run against a simulated clock and network. Everything random (latencies,
//! fsync times, the fault schedule, the workload) comes from one seeded
//! generator and events are ordered by (time, sequence number), so a seed
//! replays exactly.
//!
//! What is real and what is simulated:
//! - real: the coordinator and participant cores (`src/protocol`, with the
//!   participant's session rules: hello, welcome, heartbeats, the
//!   coordinator's silence, driven by the same 50 ms tick), the wire
//!   encoding and parser (`Body::encode` / `Body::decode`: every message
//!   crosses the network as bytes), the log record framing and decoder
//!   (`wal::encode_record` / `wal::decode_record`, with the torn tail cut at
//!   recovery), checkpoint contents (`live_records`, `wal::snapshot_records`),
//!   recovery (`Coordinator::recover`, `Participant::recover`,
//!   `KvStore::replay`) and the key-value store itself;
//! - simulated: TCP connections (FIFO per direction, random latency, broken
//!   by crashes, partitions and resets; an endpoint learns of a break after
//!   a delay), the disk (an appended record is written but lost at a crash
//!   until a sync completes; a crash keeps a random prefix of the unsynced
//!   bytes, which may end inside a record), log segments and checkpoints
//!   that are not atomic (the new segment is written as a temporary file
//!   and renamed, then the old segments are deleted, as `Wal::checkpoint`
//!   does: a crash before the rename leaves a prefix of the temporary file,
//!   which start-up deletes, and a crash after it leaves old and new
//!   segments, replayed in that order), and group commit (one sync covers
//!   every record written before it started). The actions are executed by
//!   the runtime's own `runtime::executor::Executor` over the simulated log
//!   and network: records appended in order, sends held until the log is
//!   durable up to the last forced record, never overtaking each other per
//!   connection.
//!
//! Faults, during the first `fault_ms` of simulated time: crashes of the
//! coordinator or of a participant at a random moment, crashes timed to
//! land between a log write and its sync, crashes inside a checkpoint
//! (before or after the rename), partitions of a participant,
//! connection resets, stalled disks and latency spikes. Then every process
//! is restarted, every partition healed, and the cluster is given
//! `heal_ms` to finish.
//!
//! Checked during the run (a violation stops it): no transaction is applied
//! as commit at one participant and abort at another or both at one;
//! a participant applies commit only if every participant of the
//! transaction voted commit; a participant that voted commit applies abort
//! only if a coordinator sent abort; no coordinator sends both decisions;
//! neither core raises an alert and no participant refuses a coordinator
//! message. Checked at the end: no participant in doubt or holding locks, no
//! transaction left open at the coordinator, each transfer's marker present
//! on every shard it touched or on none, money conserved, every outcome a
//! client was told matches the data, and each participant's committed data
//! rebuilt from its durable log alone equals its live data.

use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use twopc::protocol::coordinator::{self, Coordinator, CoordinatorOptions};
use twopc::protocol::fault::Fault;
use twopc::protocol::participant::{
    self, Participant, ParticipantOptions, Prepared, SessionNotice,
};
use twopc::protocol::{
    Action, Body, ConnId, Decision, Message, ParticipantId, Record, Role, SubmitRequest, TxnId,
    Vote, PROTOCOL_VERSION,
};
use twopc::resource::kv::KvStore;
use twopc::resource::Resource;
use twopc::runtime::executor::{self, Executor, Local};
use twopc::wal::{decode_record, encode_record, snapshot_records, Decoded};

/// The shape of one simulated run.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub participants: usize,
    pub clients: usize,
    pub accounts_per_shard: usize,
    /// Simulated milliseconds during which clients submit and faults strike.
    pub fault_ms: u64,
    /// Simulated milliseconds of quiet afterwards, for the cluster to finish.
    pub heal_ms: u64,
    pub faults: bool,
    /// A deliberate bug injected into every core (`protocol::fault`);
    /// `None` runs the real protocol.
    pub broken: Option<Fault>,
    pub checkpoint_write: CheckpointWrite,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            participants: 3,
            clients: 4,
            accounts_per_shard: 8,
            fault_ms: 4_000,
            heal_ms: 20_000,
            faults: true,
            broken: None,
            checkpoint_write: CheckpointWrite::TempThenRename,
        }
    }
}

/// What one run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub events: u64,
    pub committed: u64,
    pub aborted: u64,
    pub unknown: u64,
    pub refused: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub syncs: u64,
    pub checkpoints: u64,
    pub torn_tails: u64,
    /// Crashes inside a checkpoint (also counted among the faults): before
    /// the new segment was complete under its name, and after.
    pub checkpoint_crashes_before_rename: u64,
    pub checkpoint_crashes_after_rename: u64,
}

impl Report {
    pub fn add(&mut self, o: &Report) {
        self.events += o.events;
        self.committed += o.committed;
        self.aborted += o.aborted;
        self.unknown += o.unknown;
        self.refused += o.refused;
        self.syncs += o.syncs;
        self.checkpoints += o.checkpoints;
        self.torn_tails += o.torn_tails;
        self.checkpoint_crashes_before_rename += o.checkpoint_crashes_before_rename;
        self.checkpoint_crashes_after_rename += o.checkpoint_crashes_after_rename;
        for (k, v) in &o.faults {
            *self.faults.entry(k).or_default() += v;
        }
    }

    pub fn fault_count(&self) -> u64 {
        self.faults.values().sum()
    }
}

const INITIAL_BALANCE: i64 = 100;
const COORD_TICK_MS: u64 = 20;
/// How often a participant's core is told the time, as the runtime's tick:
/// its heartbeats and silence checks go out on it, every `HEARTBEAT_MS`.
const PART_TICK_MS: u64 = 50;
const CHECKPOINT_BYTES: usize = 6 * 1024;
const CLIENT_TIMEOUT_MS: u64 = 5_000;
const TRACE_KEEP: usize = 400;
/// The participants' heartbeat interval (`heartbeat_interval_ms`).
const HEARTBEAT_MS: u64 = 200;
/// Coordinator: a participant silent this long is given up. Participant: a
/// coordinator silent this long means the connection is dead.
const SILENCE_MS: u64 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Coord,
    Part(usize),
    Client(usize),
}

#[derive(Debug)]
enum Ev {
    /// Frames on `conn` towards `to` may have arrived.
    Deliver {
        conn: u64,
        to: Node,
    },
    Closed {
        conn: u64,
        to: Node,
    },
    CoordTick {
        inc: u32,
    },
    PartTick {
        i: usize,
        inc: u32,
    },
    PartConnect {
        i: usize,
        inc: u32,
    },
    PrepareDone {
        i: usize,
        inc: u32,
        txn: TxnId,
        result: Result<Prepared, String>,
    },
    SyncDone {
        node: Node,
        inc: u32,
    },
    Restart {
        node: Node,
    },
    ClientNext {
        k: usize,
    },
    ClientTimeout {
        k: usize,
        transfer: u64,
    },
    Fault,
    Heal {
        i: usize,
    },
    DiskNormal {
        node: Node,
    },
    NetNormal,
    EndFaults,
    /// A stopped participant may run again.
    Resume {
        i: usize,
    },
}

/// The disk of one process: survives crashes. Its log is a list of
/// segment files, as `wal` keeps them.
#[derive(Clone, Default)]
struct Disk {
    /// Segment files, oldest first, each wholly durable; records are
    /// appended to the last. Recovery replays them all, in order.
    segments: Vec<Vec<u8>>,
    /// Appended to the last segment but not yet synced: a crash keeps only
    /// a prefix of it.
    written: Vec<u8>,
    /// A checkpoint's temporary file (`wal-<seq>.tmp`) left by a crash
    /// before its rename; start-up deletes it unread.
    tmp: Option<Vec<u8>>,
}

impl Disk {
    fn append_durable(&mut self, bytes: &[u8]) {
        match self.segments.last_mut() {
            Some(seg) => seg.extend_from_slice(bytes),
            None => self.segments.push(bytes.to_vec()),
        }
    }

    fn bytes(&self) -> usize {
        self.segments.iter().map(Vec::len).sum::<usize>() + self.written.len()
    }
}

/// How a simulated checkpoint writes its new segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointWrite {
    /// As `Wal::checkpoint` does: write a temporary file, fsync it, rename
    /// it to the new segment's name, fsync the directory, then delete the
    /// old segments. A crash before the rename leaves the old segments and
    /// a prefix of the temporary file (deleted at start); a crash after it
    /// leaves the new segment and the old ones not yet deleted (replayed
    /// first: records repeated are replayed in order).
    TempThenRename,
    /// Unsafe, to check the checker: the old segments are deleted first and
    /// the new one is then written under its own name, so a crash before it
    /// is complete leaves only a prefix of it.
    OldSegmentsDeletedFirst,
}

/// The process-side of a log: what the group-commit writer and the outbox
/// keep in memory.
#[derive(Default)]
struct LogState {
    next_lsn: u64,
    durable_lsn: u64,
    last_sync_lsn: u64,
    /// A sync in progress: (last lsn it covers, written bytes it covers).
    syncing: Option<(u64, usize)>,
    /// The runtime's own executor of actions (`runtime::executor`).
    exec: Executor,
    crash_at_next_sync: bool,
    /// The next checkpoint crashes part-way (a fault, counted when it strikes).
    crash_in_next_checkpoint: bool,
    slow_disk: bool,
}

struct CoordProc {
    core: Coordinator,
    log: LogState,
    inc: u32,
}

struct PartProc {
    core: Participant,
    kv: KvStore,
    log: LogState,
    inc: u32,
    /// Connection attempts since the last registration (the connector's
    /// backoff). The connection itself and the session on it are the
    /// core's (`Participant::link`).
    attempts: u32,
}

struct Conn {
    peer: Node,
    open: bool,
    /// Frames in flight in each direction, in order, with the time each
    /// can arrive: a frame never overtakes the one before it (TCP).
    to_coord: VecDeque<(u64, Vec<u8>)>,
    to_peer: VecDeque<(u64, Vec<u8>)>,
}

#[derive(Clone, Debug)]
struct Transfer {
    shards: Vec<usize>,
    amount: i64,
}

#[derive(Default)]
struct ClientState {
    conn: Option<u64>,
    waiting: Option<u64>,
}

/// What happened, as the checker sees it (across every incarnation).
#[derive(Default)]
struct Ghost {
    /// Decisions a coordinator put on the wire: [commit, abort].
    coord_sent: BTreeMap<TxnId, [bool; 2]>,
    votes: BTreeMap<TxnId, BTreeMap<usize, Vote>>,
    members: BTreeMap<TxnId, Vec<ParticipantId>>,
    applied: BTreeMap<TxnId, BTreeMap<usize, Decision>>,
    /// transfer id → what its client was told.
    told: BTreeMap<u64, (TxnId, Decision)>,
    transfers: BTreeMap<u64, Transfer>,
}

pub struct Sim {
    cfg: Config,
    seed: u64,
    rng: StdRng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    coord: Option<CoordProc>,
    coord_disk: Disk,
    coord_inc: u32,
    parts: Vec<Option<PartProc>>,
    part_disks: Vec<Disk>,
    part_incs: Vec<u32>,
    /// Per participant: until when its link to the coordinator is cut
    /// (messages wait, as TCP retransmits) and until when the process is
    /// stopped (events wait, as under SIGSTOP).
    cut_until: Vec<u64>,
    stalled_until: Vec<u64>,
    /// Events for a stopped participant, in arrival order: handled in that
    /// order when it runs again.
    held_events: Vec<VecDeque<Ev>>,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    clients: Vec<ClientState>,
    next_transfer: u64,
    faulting: bool,
    slow_net: bool,
    ghost: Ghost,
    report: Report,
    trace: VecDeque<String>,
    trace_all: bool,
}

fn pid(i: usize) -> ParticipantId {
    ParticipantId(format!("p{}", i + 1))
}

fn pindex(p: &ParticipantId) -> usize {
    p.0[1..]
        .parse::<usize>()
        .expect("simulated participant ids are p<N>")
        - 1
}

impl Sim {
    pub fn new(cfg: Config, seed: u64) -> Sim {
        let n = cfg.participants;
        let mut sim = Sim {
            cfg,
            seed,
            rng: StdRng::seed_from_u64(seed),
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            coord: None,
            coord_disk: Disk::default(),
            coord_inc: 0,
            parts: (0..n).map(|_| None).collect(),
            part_disks: (0..n).map(|_| Disk::default()).collect(),
            part_incs: vec![0; n],
            cut_until: vec![0; n],
            stalled_until: vec![0; n],
            held_events: (0..n).map(|_| VecDeque::new()).collect(),
            conns: BTreeMap::new(),
            next_conn: 1,
            clients: (0..cfg.clients).map(|_| ClientState::default()).collect(),
            next_transfer: 1,
            faulting: cfg.faults,
            slow_net: false,
            ghost: Ghost::default(),
            report: Report::default(),
            trace: VecDeque::new(),
            trace_all: std::env::var("TWOPC_SIM_TRACE").is_ok_and(|v| v == "1"),
        };
        // Each shard starts with its accounts, made durable before anything
        // else, as a participant does with its seed file on first start.
        let mut seed_data = serde_json::Map::new();
        for a in 0..cfg.accounts_per_shard {
            seed_data.insert(format!("acct{a}"), json!(INITIAL_BALANCE));
        }
        let snap = snapshot_records(Value::Object(seed_data)).expect("seed snapshot");
        for disk in &mut sim.part_disks {
            for r in &snap {
                disk.append_durable(&encode_record(r));
            }
        }
        sim.start_coord();
        for i in 0..n {
            sim.start_part(i);
        }
        for k in 0..cfg.clients {
            let d = sim.rng.random_range(0..20);
            sim.at(d, Ev::ClientNext { k });
        }
        if cfg.faults {
            let d = sim.rng.random_range(100..400);
            sim.at(d, Ev::Fault);
        }
        sim.at(cfg.fault_ms, Ev::EndFaults);
        sim
    }

    /// Run to the end and check everything; the error names the violation.
    pub fn run(mut self) -> Result<Report, String> {
        let end = self.cfg.fault_ms + self.cfg.heal_ms;
        while let Some(((t, _), ev)) = self.queue.pop_first() {
            if t > end {
                break;
            }
            self.now = t;
            self.report.events += 1;
            if let Err(e) = self.step(ev) {
                return Err(self.failure(&e));
            }
        }
        self.now = end;
        match self.final_checks() {
            Ok(()) => Ok(self.report),
            Err(e) => Err(self.failure(&e)),
        }
    }

    fn failure(&self, what: &str) -> String {
        let mut s = format!(
            "seed {} violated a property at {} ms: {what}\nreplay: TWOPC_SIM_SEED={} cargo test --test simulation replay -- --nocapture (TWOPC_SIM_TRACE=1 prints every event)\nlast events:\n",
            self.seed, self.now, self.seed
        );
        for l in &self.trace {
            let _ = writeln!(s, "  {l}");
        }
        s
    }

    fn note(&mut self, line: String) {
        if self.trace_all {
            eprintln!("[{:>6}] {line}", self.now);
        }
        if self.trace.len() == TRACE_KEEP {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("[{:>6}] {line}", self.now));
    }

    fn at(&mut self, delay: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((self.now + delay, self.seq), ev);
    }

    fn latency(&mut self) -> u64 {
        if self.slow_net {
            self.rng.random_range(1..200)
        } else {
            self.rng.random_range(0..8)
        }
    }

    // ---- processes ---------------------------------------------------

    fn coord_opts(&self) -> CoordinatorOptions {
        CoordinatorOptions {
            expected_participants: self.cfg.participants,
            vote_timeout_ms: 800,
            max_in_flight: 64,
            max_pending_submits: 64,
            dynamic_joining: false,
            // Membership is fixed here: the join grace never applies.
            join_grace_ms: 0,
            resend_initial_ms: 50,
            resend_max_ms: 800,
            liveness_timeout_ms: SILENCE_MS,
            history_limit: 10_000,
            history_max_bytes: 16 * 1024 * 1024,
            txn_id_prefix: format!("c{}-", self.coord_inc),
            timeline_max_events: 32,
        }
    }

    fn part_opts(&self, i: usize) -> ParticipantOptions {
        ParticipantOptions {
            id: pid(i),
            decision_timeout_ms: 300,
            query_max_ms: 1_000,
            history_limit: 200,
            checkpoint_recent_commits: 20,
            heartbeat_interval_ms: HEARTBEAT_MS,
            heartbeat_failure_threshold: (SILENCE_MS / HEARTBEAT_MS) as u32,
        }
    }

    /// Read a disk back the way the log does at start: a checkpoint's
    /// temporary file is deleted, then every segment is read in order; an
    /// incomplete frame at the end of the last one is a torn tail and is cut
    /// off; anywhere else it is corruption, as `wal::scan` says.
    fn recover_disk(disk: &mut Disk, torn: &mut u64) -> Result<Vec<Record>, String> {
        debug_assert!(disk.written.is_empty());
        disk.tmp = None;
        let mut records = Vec::new();
        let last = disk.segments.len().saturating_sub(1);
        for (i, seg) in disk.segments.iter_mut().enumerate() {
            let mut at = 0;
            while at < seg.len() {
                match decode_record(&seg[at..]) {
                    Decoded::Record(r, len) => {
                        records.push(*r);
                        at += len;
                    }
                    Decoded::Incomplete if i == last => {
                        *torn += 1;
                        break;
                    }
                    Decoded::Incomplete => {
                        return Err(format!(
                            "segment {i} of {} ends inside a record: the log would refuse to open",
                            last + 1
                        ));
                    }
                    Decoded::Bad(e) => {
                        // A crash keeps a prefix of what was written, so a cut
                        // record reads as incomplete; damage is a bug.
                        return Err(format!("damaged record in segment {i} at offset {at}: {e}"));
                    }
                }
            }
            seg.truncate(at);
        }
        Ok(records)
    }

    fn start_coord(&mut self) {
        self.coord_inc += 1;
        let records = match Self::recover_disk(&mut self.coord_disk, &mut self.report.torn_tails) {
            Ok(r) => r,
            Err(e) => panic!("seed {}: coordinator log: {e}", self.seed),
        };
        let mut core = Coordinator::recover(self.coord_opts(), self.now, &records);
        if let Some(f) = self.cfg.broken {
            core.inject(f);
        }
        let inc = self.coord_inc;
        self.coord = Some(CoordProc {
            core,
            log: LogState::default(),
            inc,
        });
        self.note(format!(
            "coordinator starts (incarnation {inc}, {} records)",
            records.len()
        ));
        self.at(COORD_TICK_MS, Ev::CoordTick { inc });
    }

    fn start_part(&mut self, i: usize) {
        self.part_incs[i] += 1;
        let records = match Self::recover_disk(&mut self.part_disks[i], &mut self.report.torn_tails)
        {
            Ok(r) => r,
            Err(e) => panic!("seed {}: participant {i} log: {e}", self.seed),
        };
        let mut core = Participant::recover(self.part_opts(i), self.now, &records);
        if let Some(f) = self.cfg.broken {
            core.inject(f);
        }
        let mut kv = KvStore::new();
        if let Err(e) = kv.replay(&records) {
            panic!("seed {}: participant {i} replay: {e}", self.seed);
        }
        let inc = self.part_incs[i];
        self.note(format!(
            "p{} starts (incarnation {inc}, {} records, {} in doubt)",
            i + 1,
            records.len(),
            core.in_doubt().len()
        ));
        self.parts[i] = Some(PartProc {
            core,
            kv,
            log: LogState::default(),
            inc,
            attempts: 0,
        });
        self.at(0, Ev::PartConnect { i, inc });
        self.at(PART_TICK_MS, Ev::PartTick { i, inc });
    }

    /// Kill a process: memory, held messages and connections are gone; the
    /// disk keeps what was synced and a random prefix of what was not.
    fn crash(&mut self, node: Node) {
        let (disk, alive) = match node {
            Node::Coord => (&mut self.coord_disk, self.coord.take().is_some()),
            Node::Part(i) => (&mut self.part_disks[i], self.parts[i].take().is_some()),
            Node::Client(_) => unreachable!("clients do not crash"),
        };
        if !alive {
            return;
        }
        let keep = if disk.written.is_empty() {
            0
        } else {
            self.rng.random_range(0..=disk.written.len())
        };
        let lost = disk.written.len() - keep;
        let kept: Vec<u8> = disk.written.drain(..).take(keep).collect();
        disk.append_durable(&kept);
        self.note(format!(
            "CRASH {node:?} (unsynced bytes kept {keep}, lost {lost})"
        ));
        let ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.open && (node == Node::Coord || c.peer == node))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.break_conn(id, Some(node), 1, 40);
        }
    }

    fn break_conn(&mut self, id: u64, dead: Option<Node>, lo: u64, hi: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if !c.open {
            return;
        }
        c.open = false;
        let peer = c.peer;
        let cut = match peer {
            Node::Part(i) => self.cut_until[i].saturating_sub(self.now),
            _ => 0,
        };
        for end in [Node::Coord, peer] {
            if Some(end) != dead {
                // The close crosses the network too: a cut link delays it.
                let d = self.rng.random_range(lo..hi).max(cut);
                self.at(d, Ev::Closed { conn: id, to: end });
            }
        }
    }

    // ---- the network ---------------------------------------------------

    fn send(&mut self, from: Node, conn: u64, body: Body) -> Result<(), String> {
        let lat = self.latency();
        let Some(c) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        if !c.open {
            return Ok(());
        }
        let (to, queue) = if from == Node::Coord {
            (c.peer, &mut c.to_peer)
        } else {
            (Node::Coord, &mut c.to_coord)
        };
        let t = (self.now + lat).max(queue.back().map_or(0, |f| f.0));
        // The checker's view of what left each process.
        match (&from, &body) {
            (Node::Coord, Body::Commit { txn, .. }) => self.coord_said(txn, Decision::Commit)?,
            (Node::Coord, Body::Abort { txn, .. }) => self.coord_said(txn, Decision::Abort)?,
            (Node::Coord, Body::Outcome { txn, outcome }) => {
                self.coord_said(txn, outcome.decision)?
            }
            (Node::Part(i), Body::VoteCommit { txn, .. }) => {
                self.ghost
                    .votes
                    .entry(txn.clone())
                    .or_default()
                    .insert(*i, Vote::Commit);
            }
            (Node::Part(i), Body::VoteAbort { txn, .. }) => {
                let v = self.ghost.votes.entry(txn.clone()).or_default();
                if v.get(i) == Some(&Vote::Commit) {
                    return Err(format!(
                        "p{} voted abort on {txn} after voting commit",
                        i + 1
                    ));
                }
                v.insert(*i, Vote::Abort);
            }
            _ => {}
        }
        let bytes = body.encode(t as f64 / 1000.0);
        if let Some(c) = self.conns.get_mut(&conn) {
            let queue = if from == Node::Coord {
                &mut c.to_peer
            } else {
                &mut c.to_coord
            };
            queue.push_back((t, bytes));
        }
        self.at(t - self.now, Ev::Deliver { conn, to });
        Ok(())
    }

    fn coord_said(&mut self, txn: &TxnId, d: Decision) -> Result<(), String> {
        let s = self.ghost.coord_sent.entry(txn.clone()).or_default();
        s[usize::from(d == Decision::Abort)] = true;
        if s[0] && s[1] {
            return Err(format!(
                "the coordinator announced both commit and abort for {txn}"
            ));
        }
        Ok(())
    }

    fn open_conn(&mut self, peer: Node) -> u64 {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                peer,
                open: true,
                to_coord: VecDeque::new(),
                to_peer: VecDeque::new(),
            },
        );
        id
    }

    // ---- events --------------------------------------------------------

    fn step(&mut self, ev: Ev) -> Result<(), String> {
        // A stopped participant handles nothing until it runs again.
        if let Some(i) = stopped_target(&ev) {
            if self.now < self.stalled_until[i] || !self.held_events[i].is_empty() {
                self.held_events[i].push_back(ev);
                return Ok(());
            }
        }
        match ev {
            Ev::Resume { i } => {
                if self.now < self.stalled_until[i] {
                    return Ok(()); // stopped again meanwhile; a later Resume comes
                }
                self.stalled_until[i] = self.now;
                let held = std::mem::take(&mut self.held_events[i]);
                if !held.is_empty() {
                    self.note(format!(
                        "p{} runs again: {} events waited",
                        i + 1,
                        held.len()
                    ));
                }
                for ev in held {
                    self.step(ev)?;
                }
                Ok(())
            }
            Ev::Deliver { conn, to } => {
                // Across a cut link, frames wait (retransmitted) until it heals.
                let cut = match self.conns.get(&conn).map(|c| c.peer) {
                    Some(Node::Part(i)) => self.cut_until[i],
                    _ => 0,
                };
                if self.now < cut {
                    self.at(cut - self.now, Ev::Deliver { conn, to });
                    return Ok(());
                }
                // Every frame that has arrived, in order, while the
                // connection stays open.
                loop {
                    let Some(c) = self.conns.get_mut(&conn) else {
                        return Ok(());
                    };
                    if !c.open {
                        return Ok(());
                    }
                    let queue = if to == Node::Coord {
                        &mut c.to_coord
                    } else {
                        &mut c.to_peer
                    };
                    if queue.front().is_none_or(|f| f.0 > self.now) {
                        return Ok(());
                    }
                    let Some((_, bytes)) = queue.pop_front() else {
                        return Ok(());
                    };
                    let body = Message::decode(&bytes)
                        .map_err(|e| format!("a message did not parse back: {}", e.message))?;
                    match to {
                        Node::Coord => self.coord_message(conn, body)?,
                        Node::Part(i) => self.part_message(i, conn, body)?,
                        Node::Client(k) => self.client_message(k, conn, body)?,
                    }
                }
            }
            Ev::Closed { conn, to } => match to {
                Node::Coord => {
                    if self.coord.is_some() {
                        self.coord_event(coordinator::Event::Disconnected { conn: ConnId(conn) })?;
                    }
                    Ok(())
                }
                Node::Part(i) => {
                    let Some(p) = self.parts[i].as_ref() else {
                        return Ok(());
                    };
                    if p.core.link().conn() != Some(ConnId(conn)) {
                        return Ok(());
                    }
                    let (inc, attempts) = (p.inc, p.attempts);
                    self.note(format!("p{} lost its connection {conn}", i + 1));
                    self.part_event(i, participant::Event::TransportDown)?;
                    let d = self.backoff(attempts);
                    self.at(d, Ev::PartConnect { i, inc });
                    Ok(())
                }
                Node::Client(k) => {
                    if self.clients[k].conn == Some(conn) {
                        self.clients[k].conn = None;
                        if let Some(t) = self.clients[k].waiting.take() {
                            self.report.unknown += 1;
                            self.note(format!(
                                "client {k}: transfer {t} outcome unknown (connection lost)"
                            ));
                        }
                        let d = self.rng.random_range(10..100);
                        self.at(d, Ev::ClientNext { k });
                    }
                    Ok(())
                }
            },
            Ev::CoordTick { inc } => {
                if self.coord.as_ref().is_some_and(|c| c.inc == inc) {
                    self.coord_event(coordinator::Event::Tick)?;
                    self.at(COORD_TICK_MS, Ev::CoordTick { inc });
                }
                Ok(())
            }
            Ev::PartTick { i, inc } => {
                if self.parts[i].as_ref().is_some_and(|p| p.inc == inc) {
                    self.part_event(i, participant::Event::Tick)?;
                    self.at(PART_TICK_MS, Ev::PartTick { i, inc });
                }
                Ok(())
            }
            Ev::PartConnect { i, inc } => self.part_connect(i, inc),
            Ev::PrepareDone {
                i,
                inc,
                txn,
                result,
            } => {
                if self.parts[i].as_ref().is_some_and(|p| p.inc == inc) {
                    self.part_event(i, participant::Event::ResourcePrepared { txn, result })?;
                }
                Ok(())
            }
            Ev::SyncDone { node, inc } => self.sync_done(node, inc),
            Ev::Restart { node } => {
                match node {
                    Node::Coord if self.coord.is_none() => self.start_coord(),
                    Node::Part(i) if self.parts[i].is_none() => self.start_part(i),
                    _ => {}
                }
                Ok(())
            }
            Ev::ClientNext { k } => self.client_next(k),
            Ev::ClientTimeout { k, transfer } => {
                if self.clients[k].waiting == Some(transfer) {
                    self.note(format!("client {k}: gives up on transfer {transfer}"));
                    if let Some(c) = self.clients[k].conn {
                        self.break_conn(c, None, 1, 5);
                    }
                }
                Ok(())
            }
            Ev::Fault => {
                if self.faulting {
                    self.inject_fault();
                    let d = self.rng.random_range(50..500);
                    self.at(d, Ev::Fault);
                }
                Ok(())
            }
            Ev::Heal { i } => {
                self.note(format!("the link of p{} heals", i + 1));
                Ok(())
            }
            Ev::DiskNormal { node } => {
                if let Some(l) = self.log_of(node) {
                    l.slow_disk = false;
                }
                Ok(())
            }
            Ev::NetNormal => {
                self.slow_net = false;
                Ok(())
            }
            Ev::EndFaults => {
                self.faulting = false;
                self.slow_net = false;
                self.note("faults stop; restarting everything and healing partitions".into());
                for i in 0..self.cfg.participants {
                    self.cut_until[i] = self.cut_until[i].min(self.now);
                    self.stalled_until[i] = self.stalled_until[i].min(self.now);
                    self.at(0, Ev::Resume { i });
                    if let Some(p) = self.parts[i].as_mut() {
                        p.log.slow_disk = false;
                        p.log.crash_at_next_sync = false;
                        p.log.crash_in_next_checkpoint = false;
                    } else {
                        self.at(
                            0,
                            Ev::Restart {
                                node: Node::Part(i),
                            },
                        );
                    }
                }
                if let Some(c) = self.coord.as_mut() {
                    c.log.slow_disk = false;
                    c.log.crash_at_next_sync = false;
                    c.log.crash_in_next_checkpoint = false;
                } else {
                    self.at(0, Ev::Restart { node: Node::Coord });
                }
                Ok(())
            }
        }
    }

    fn backoff(&mut self, attempts: u32) -> u64 {
        let base = (20u64 << attempts.min(5)).min(500);
        base + self.rng.random_range(0..=base / 2)
    }

    fn inject_fault(&mut self) {
        let n = self.cfg.participants;
        let kind = self.rng.random_range(0..11);
        let name: &'static str = match kind {
            0 => {
                self.crash(Node::Coord);
                let d = self.rng.random_range(5..1500);
                self.at(d, Ev::Restart { node: Node::Coord });
                "coordinator crash"
            }
            1 | 2 => {
                let i = self.rng.random_range(0..n);
                self.crash(Node::Part(i));
                let d = self.rng.random_range(5..1500);
                self.at(
                    d,
                    Ev::Restart {
                        node: Node::Part(i),
                    },
                );
                "participant crash"
            }
            3 => {
                // The next sync of this process never completes: the crash
                // comes right after records were written.
                let node = if self.rng.random_bool(0.5) {
                    Node::Coord
                } else {
                    Node::Part(self.rng.random_range(0..n))
                };
                if let Some(l) = self.log_of(node) {
                    l.crash_at_next_sync = true;
                }
                // Counted when it strikes.
                return;
            }
            10 => {
                // The next checkpoint of this process crashes part-way.
                let node = if self.rng.random_bool(0.3) {
                    Node::Coord
                } else {
                    Node::Part(self.rng.random_range(0..n))
                };
                if let Some(l) = self.log_of(node) {
                    l.crash_in_next_checkpoint = true;
                }
                // Counted when it strikes.
                return;
            }
            4 => {
                let i = self.rng.random_range(0..n);
                let d = self.rng.random_range(50..3000);
                self.cut_until[i] = self.cut_until[i].max(self.now + d);
                self.at(d, Ev::Heal { i });
                self.note(format!("PARTITION p{} for {d} ms", i + 1));
                "partition"
            }
            9 => {
                let i = self.rng.random_range(0..n);
                let d = self.rng.random_range(100..3000);
                self.stalled_until[i] = self.stalled_until[i].max(self.now + d);
                self.at(d, Ev::Resume { i });
                self.note(format!("STOP p{} for {d} ms", i + 1));
                "stopped participant"
            }
            5 | 6 => {
                let open: Vec<u64> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.open)
                    .map(|(id, _)| *id)
                    .collect();
                if open.is_empty() {
                    return;
                }
                let id = open[self.rng.random_range(0..open.len())];
                self.note(format!("RESET connection {id}"));
                self.break_conn(id, None, 1, 50);
                "connection reset"
            }
            7 => {
                let node = if self.rng.random_bool(0.3) {
                    Node::Coord
                } else {
                    Node::Part(self.rng.random_range(0..n))
                };
                match self.log_of(node) {
                    Some(l) => l.slow_disk = true,
                    None => return,
                }
                let d = self.rng.random_range(100..1500);
                self.at(d, Ev::DiskNormal { node });
                "stalled disk"
            }
            _ => {
                self.slow_net = true;
                let d = self.rng.random_range(100..1000);
                self.at(d, Ev::NetNormal);
                "latency spike"
            }
        };
        *self.report.faults.entry(name).or_default() += 1;
    }

    // ---- logs ----------------------------------------------------------

    fn log_of(&mut self, node: Node) -> Option<&mut LogState> {
        match node {
            Node::Coord => self.coord.as_mut().map(|c| &mut c.log),
            Node::Part(i) => self.parts[i].as_mut().map(|p| &mut p.log),
            Node::Client(_) => None,
        }
    }

    fn disk_of(&mut self, node: Node) -> &mut Disk {
        match node {
            Node::Coord => &mut self.coord_disk,
            Node::Part(i) => &mut self.part_disks[i],
            Node::Client(_) => unreachable!("clients have no disk"),
        }
    }

    fn inc_of(&self, node: Node) -> u32 {
        match node {
            Node::Coord => self.coord.as_ref().map_or(0, |c| c.inc),
            Node::Part(i) => self.parts[i].as_ref().map_or(0, |p| p.inc),
            Node::Client(_) => 0,
        }
    }

    /// Write `record` (a sync starts if none is under way); returns its
    /// log sequence number.
    fn persist(&mut self, node: Node, record: &Record, sync: bool) -> u64 {
        let frame = encode_record(record);
        self.disk_of(node).written.extend(frame);
        let Some(l) = self.log_of(node) else { return 0 };
        l.next_lsn += 1;
        if sync {
            l.last_sync_lsn = l.next_lsn;
        }
        let lsn = l.next_lsn;
        self.maybe_sync(node);
        lsn
    }

    /// Group commit: one sync at a time, covering everything written when it
    /// starts; the next one starts when it completes, if needed.
    fn maybe_sync(&mut self, node: Node) {
        let written = self.disk_of(node).written.len();
        let inc = self.inc_of(node);
        let Some(l) = self.log_of(node) else { return };
        if l.syncing.is_some() || l.last_sync_lsn <= l.durable_lsn {
            return;
        }
        l.syncing = Some((l.next_lsn, written));
        let crash = std::mem::take(&mut l.crash_at_next_sync);
        let slow = l.slow_disk;
        if crash {
            // Crash right away: this step's records are written, none of
            // them is durable, and the rest of the step never happens.
            self.note(format!("{node:?} crashes after a write, before its sync"));
            *self
                .report
                .faults
                .entry("crash between write and sync")
                .or_default() += 1;
            self.crash(node);
            let d = self.rng.random_range(5..1000);
            self.at(d, Ev::Restart { node });
            return;
        }
        let d = if slow {
            self.rng.random_range(50..300)
        } else {
            self.rng.random_range(1..6)
        };
        self.at(d, Ev::SyncDone { node, inc });
    }

    fn sync_done(&mut self, node: Node, inc: u32) -> Result<(), String> {
        if self.inc_of(node) != inc {
            return Ok(());
        }
        let Some(l) = self.log_of(node) else {
            return Ok(());
        };
        let Some((lsn, bytes)) = l.syncing.take() else {
            return Ok(());
        };
        l.durable_lsn = lsn;
        let disk = self.disk_of(node);
        let moved: Vec<u8> = disk.written.drain(..bytes).collect();
        disk.append_durable(&moved);
        self.report.syncs += 1;
        self.release_held(node)?;
        self.maybe_sync(node);
        Ok(())
    }

    /// Send what the log now allows, in order per connection.
    fn release_held(&mut self, node: Node) -> Result<(), String> {
        self.execute(node, |exec, io| exec.release(io)).map(|_| ())
    }

    /// Run `f` with `node`'s executor over its log and the network. The
    /// executor is taken out of the node meanwhile (the node may crash
    /// inside, at a sync, and then it is gone). `None` when the node is
    /// down; an error when the checker found a violation in a send.
    fn execute<T>(
        &mut self,
        node: Node,
        f: impl FnOnce(&mut Executor, &mut NodeIo) -> T,
    ) -> Result<Option<T>, String> {
        let Some(l) = self.log_of(node) else {
            return Ok(None);
        };
        let mut exec = std::mem::take(&mut l.exec);
        let mut io = NodeIo {
            sim: self,
            node,
            violation: None,
        };
        let out = f(&mut exec, &mut io);
        let violation = io.violation.take();
        if let Some(l) = self.log_of(node) {
            l.exec = exec;
        }
        match violation {
            Some(e) => Err(e),
            None => Ok(Some(out)),
        }
    }

    /// Replace the log with the live records (and the store's snapshot), as
    /// a checkpoint does: what was written first goes to the old segment and
    /// is synced (as the log writer does), then the new segment is written
    /// as `checkpoint_write` says. A crash may strike inside (a fault).
    fn maybe_checkpoint(&mut self, node: Node) -> Result<(), String> {
        let size = self.disk_of(node).bytes();
        if size < CHECKPOINT_BYTES {
            return Ok(());
        }
        if self.log_of(node).is_some_and(|l| l.syncing.is_some()) {
            // The writer finishes the sync in flight first.
            return Ok(());
        }
        let live: Vec<Record> = match node {
            Node::Coord => match &self.coord {
                Some(c) => c.core.live_records(),
                None => return Ok(()),
            },
            Node::Part(i) => match &self.parts[i] {
                Some(p) => {
                    let mut v =
                        snapshot_records(p.kv.dump()).map_err(|e| format!("snapshot: {e}"))?;
                    v.extend(p.core.live_records());
                    v
                }
                None => return Ok(()),
            },
            Node::Client(_) => return Ok(()),
        };
        let mut bytes = Vec::new();
        for r in &live {
            bytes.extend(encode_record(r));
        }
        let disk = self.disk_of(node);
        let written = std::mem::take(&mut disk.written);
        disk.append_durable(&written);
        if self
            .log_of(node)
            .is_some_and(|l| std::mem::take(&mut l.crash_in_next_checkpoint))
        {
            self.crash_in_checkpoint(node, bytes);
            return Ok(());
        }
        self.disk_of(node).segments = vec![bytes];
        self.report.checkpoints += 1;
        if let Some(l) = self.log_of(node) {
            l.durable_lsn = l.next_lsn;
        }
        self.note(format!("{node:?} checkpoints: {} live records", live.len()));
        self.release_held(node)
    }

    /// A crash inside a checkpoint whose new segment is `bytes`: before the
    /// new segment is complete under its name (a prefix of it is on disk),
    /// or after, with some of the old segments not yet deleted.
    fn crash_in_checkpoint(&mut self, node: Node, bytes: Vec<u8>) {
        let before_rename = self.rng.random_bool(0.5);
        let old = self.disk_of(node).segments.len();
        let (what, keep, deleted) = if before_rename {
            self.report.checkpoint_crashes_before_rename += 1;
            let keep = self.rng.random_range(0..=bytes.len());
            ("before the new segment is complete", keep, 0)
        } else {
            self.report.checkpoint_crashes_after_rename += 1;
            let deleted = self.rng.random_range(0..old);
            ("after the rename", bytes.len(), deleted)
        };
        let write = self.cfg.checkpoint_write;
        let disk = self.disk_of(node);
        let mut bytes = bytes;
        bytes.truncate(keep);
        match (before_rename, write) {
            (true, CheckpointWrite::TempThenRename) => disk.tmp = Some(bytes),
            (true, CheckpointWrite::OldSegmentsDeletedFirst) => disk.segments = vec![bytes],
            (false, _) => {
                disk.segments.drain(..deleted);
                disk.segments.push(bytes);
            }
        }
        let segments = disk.segments.len();
        self.note(format!(
            "{node:?} crashes inside a checkpoint, {what} ({keep} bytes of the new segment, {segments} segments on disk)"
        ));
        *self
            .report
            .faults
            .entry("crash inside a checkpoint")
            .or_default() += 1;
        self.crash(node);
        let d = self.rng.random_range(5..1000);
        self.at(d, Ev::Restart { node });
    }

    // ---- the coordinator ------------------------------------------------

    fn coord_message(&mut self, conn: u64, body: Body) -> Result<(), String> {
        if self.coord.is_none() {
            return Ok(());
        }
        self.coord_event(coordinator::Event::Message {
            conn: ConnId(conn),
            body,
        })
    }

    fn coord_event(&mut self, ev: coordinator::Event) -> Result<(), String> {
        if self.coord.is_none() {
            return Ok(());
        }
        if !matches!(ev, coordinator::Event::Tick) {
            let line = format!("coordinator <- {ev:?}");
            self.note(short(line));
        }
        let Some(c) = self.coord.as_mut() else {
            return Ok(());
        };
        let actions = c.core.handle(self.now, ev);
        let inc = c.inc;
        for a in actions {
            if self.coord.as_ref().is_none_or(|c| c.inc != inc) {
                break; // crashed mid-step
            }
            if let Action::Persist { record, sync } = &a {
                self.note(short(format!(
                    "coordinator persists {record:?} sync={sync}"
                )));
            }
            match self.execute(Node::Coord, |exec, io| exec.apply(io, a))? {
                None | Some(None) => {}
                Some(Some(Local::Alert { txn, message })) => {
                    return Err(format!("coordinator alert on {txn:?}: {message}"));
                }
                Some(Some(Local::Notice { message, .. })) => {
                    self.note(format!("coordinator notice: {message}"));
                }
                Some(Some(
                    Local::PrepareResource { .. }
                    | Local::FinishResource { .. }
                    | Local::Session(_),
                )) => {
                    return Err("the coordinator asked for a participant's action".into());
                }
            }
        }
        self.maybe_checkpoint(Node::Coord)
    }

    // ---- participants ---------------------------------------------------

    fn part_connect(&mut self, i: usize, inc: u32) -> Result<(), String> {
        let coord_up = self.coord.is_some();
        let cut = self.now < self.cut_until[i];
        let Some(p) = self.parts[i].as_mut() else {
            return Ok(());
        };
        if p.inc != inc || p.core.link().conn().is_some() {
            return Ok(());
        }
        if !coord_up || cut {
            p.attempts += 1;
            let a = p.attempts;
            let d = self.backoff(a);
            self.at(d, Ev::PartConnect { i, inc });
            return Ok(());
        }
        let conn = self.open_conn(Node::Part(i));
        self.note(format!("p{} connects on {conn}", i + 1));
        self.part_event(i, participant::Event::TransportUp { conn: ConnId(conn) })
    }

    /// A message on connection `conn`; one on a connection the participant
    /// no longer has is dropped (as the runtime does).
    fn part_message(&mut self, i: usize, conn: u64, body: Body) -> Result<(), String> {
        let Some(p) = self.parts[i].as_ref() else {
            return Ok(());
        };
        if p.core.link().conn() != Some(ConnId(conn)) {
            return Ok(());
        }
        if let (
            Body::Prepare {
                txn, participants, ..
            },
            true,
        ) = (&body, p.core.connected())
        {
            self.ghost
                .members
                .entry(txn.clone())
                .or_insert_with(|| participants.clone());
        }
        self.part_event(i, participant::Event::Message { body })
    }

    fn part_event(&mut self, i: usize, ev: participant::Event) -> Result<(), String> {
        let mut queue = VecDeque::from([ev]);
        while let Some(ev) = queue.pop_front() {
            if self.parts[i].is_none() {
                return Ok(());
            }
            if !matches!(ev, participant::Event::Tick) {
                let line = format!("p{} <- {ev:?}", i + 1);
                self.note(short(line));
            }
            let Some(p) = self.parts[i].as_mut() else {
                return Ok(());
            };
            let inc = p.inc;
            let actions = p.core.handle(self.now, ev);
            for a in actions {
                if self.parts[i].as_ref().is_none_or(|p| p.inc != inc) {
                    return Ok(()); // crashed mid-step
                }
                self.part_action(i, inc, a, &mut queue)?;
            }
            self.maybe_checkpoint(Node::Part(i))?;
        }
        Ok(())
    }

    fn part_action(
        &mut self,
        i: usize,
        inc: u32,
        a: Action,
        queue: &mut VecDeque<participant::Event>,
    ) -> Result<(), String> {
        // The runtime's hooks: what a participant refuses is a violation
        // here, and messages for a connection that is no longer the live
        // coordinator connection are dropped.
        match &a {
            Action::Persist { record, sync } => {
                self.note(short(format!("p{} persists {record:?} sync={sync}", i + 1)));
            }
            Action::Send { conn, .. } => {
                if self.parts[i].as_ref().and_then(|p| p.core.link().conn()) != Some(*conn) {
                    return Ok(());
                }
            }
            Action::Close { conn } => {
                // The participant closes its own end: it knows at once, and
                // so does the coordinator (no delay drawn for the close).
                self.break_conn(conn.0, None, 0, 1);
                return Ok(());
            }
            Action::Reject { error, .. } => {
                return Err(format!(
                    "p{} refused a coordinator message: {}: {}",
                    i + 1,
                    error.code.as_str(),
                    error.message
                ));
            }
            Action::Alert { .. }
            | Action::Notice { .. }
            | Action::Session(_)
            | Action::PrepareResource { .. }
            | Action::FinishResource { .. } => {}
        }
        let Some(Some(local)) = self.execute(Node::Part(i), |exec, io| exec.apply(io, a))? else {
            return Ok(());
        };
        match local {
            Local::Alert { txn, message } => {
                return Err(format!("p{} alert on {txn:?}: {message}", i + 1));
            }
            Local::Notice { message, .. } => self.note(format!("p{} notice: {message}", i + 1)),
            Local::Session(notice) => self.part_session(i, notice)?,
            Local::PrepareResource { txn, data, .. } => {
                let Some(p) = self.parts[i].as_mut() else {
                    return Ok(());
                };
                let fut = Resource::prepare(&mut p.kv, &txn, &data);
                let result = futures::FutureExt::now_or_never(fut)
                    .ok_or("the kv store's prepare is immediate")?
                    .map_err(|e| e.to_string());
                // Sometimes the answer comes at once (as from the kv store),
                // sometimes later (as from a database).
                if self.rng.random_bool(0.5) {
                    queue.push_back(participant::Event::ResourcePrepared { txn, result });
                } else {
                    let d = self.rng.random_range(1..20);
                    self.at(
                        d,
                        Ev::PrepareDone {
                            i,
                            inc,
                            txn,
                            result,
                        },
                    );
                }
            }
            Local::FinishResource { txn, decision } => {
                self.applied(i, &txn, decision)?;
                if let Some(p) = self.parts[i].as_mut() {
                    p.kv.finish_txn(&txn, decision);
                }
                // Applied at once and as decided: the answer is queued, as
                // the runtime queues it.
                queue.push_back(participant::Event::ResourceFinished {
                    txn,
                    result: Ok(()),
                });
            }
        }
        Ok(())
    }

    /// What the core says about its session: a registration resets the
    /// connector's backoff; a refusal, a challenge or a message kept out
    /// before welcome fails the run, as none is expected of this cluster
    /// (no secret, connections that keep order).
    fn part_session(&mut self, i: usize, notice: SessionNotice) -> Result<(), String> {
        match notice {
            SessionNotice::Registered { .. } => {
                if let Some(p) = self.parts[i].as_mut() {
                    p.attempts = 0;
                }
            }
            SessionNotice::Silent { silent_ms, .. } => self.note(format!(
                "p{} finds the coordinator silent for {silent_ms} ms; closes its connection",
                i + 1
            )),
            SessionNotice::Lost => {}
            SessionNotice::Refused { code, message } => {
                return Err(format!(
                    "p{} was refused registration: {code}: {message}",
                    i + 1
                ));
            }
            SessionNotice::SecretRequired => {
                return Err(format!("p{} was asked for a secret", i + 1));
            }
            SessionNotice::BeforeWelcome { message_type } => {
                return Err(format!("p{} got `{message_type}` before welcome", i + 1));
            }
            SessionNotice::Removed { message } => {
                return Err(format!("p{} was removed: {message}", i + 1));
            }
            SessionNotice::StaleTerm {
                term,
                seen,
                message_type,
            } => {
                return Err(format!(
                    "p{} refused a `{message_type}` of term {term} after {seen}, with no coordinator group here",
                    i + 1
                ));
            }
        }
        Ok(())
    }

    /// The checker's rules for a participant applying an outcome.
    fn applied(&mut self, i: usize, txn: &TxnId, d: Decision) -> Result<(), String> {
        let per = self.ghost.applied.entry(txn.clone()).or_default();
        if let Some(prev) = per.get(&i) {
            if *prev != d {
                return Err(format!(
                    "p{} applied both {prev:?} and {d:?} to {txn}",
                    i + 1
                ));
            }
        }
        per.insert(i, d);
        if let Some((j, other)) = per.iter().find(|(_, x)| **x != d) {
            return Err(format!(
                "atomicity: p{} applied {d:?} to {txn} but p{} applied {other:?}",
                i + 1,
                j + 1
            ));
        }
        let voted = self.ghost.votes.get(txn).and_then(|v| v.get(&i)).copied();
        match d {
            Decision::Commit => {
                let members = self.ghost.members.get(txn).cloned().unwrap_or_default();
                if members.is_empty() {
                    return Err(format!("p{} committed {txn} without a PREPARE", i + 1));
                }
                for m in &members {
                    let v = self.ghost.votes.get(txn).and_then(|v| v.get(&pindex(m)));
                    if v != Some(&Vote::Commit) {
                        return Err(format!(
                            "validity: p{} committed {txn} but {m} voted {v:?}",
                            i + 1
                        ));
                    }
                }
            }
            Decision::Abort => {
                let said_abort = self.ghost.coord_sent.get(txn).is_some_and(|s| s[1]);
                if voted == Some(Vote::Commit) && !said_abort {
                    return Err(format!(
                        "stability: p{} voted commit on {txn} and aborted without being told",
                        i + 1
                    ));
                }
            }
        }
        Ok(())
    }

    // ---- clients --------------------------------------------------------

    fn client_next(&mut self, k: usize) -> Result<(), String> {
        if self.now >= self.cfg.fault_ms {
            return Ok(()); // the workload runs while faults do
        }
        if self.clients[k].waiting.is_some() {
            return Ok(());
        }
        if self.coord.is_none() {
            let d = self.rng.random_range(50..200);
            self.at(d, Ev::ClientNext { k });
            return Ok(());
        }
        let conn = match self.clients[k].conn {
            Some(c) => c,
            None => {
                let c = self.open_conn(Node::Client(k));
                self.clients[k].conn = Some(c);
                let hello = Body::Hello {
                    role: Role::Client,
                    id: None,
                    protocol_version: PROTOCOL_VERSION,
                };
                self.send(Node::Client(k), c, hello)?;
                c
            }
        };
        let id = self.next_transfer;
        self.next_transfer += 1;
        let n = self.cfg.participants;
        let from = self.rng.random_range(0..n);
        let mut to = self.rng.random_range(0..n - 1);
        if to >= from {
            to += 1;
        }
        let mut shards = vec![from, to];
        if n > 2 && self.rng.random_bool(0.2) {
            let third = (0..n).find(|s| !shards.contains(s)).unwrap_or(from);
            shards.push(third);
        }
        let amount = self.rng.random_range(1..60);
        let a = self.cfg.accounts_per_shard;
        let marker = json!({"op": "put", "key": format!("t{id}"), "value": id});
        let mut ops = serde_json::Map::new();
        for (pos, s) in shards.iter().enumerate() {
            let acct = format!("acct{}", self.rng.random_range(0..a));
            let list = match pos {
                0 => json!([{"op": "add", "key": acct, "delta": -amount, "min": 0}, marker]),
                1 => json!([{"op": "add", "key": acct, "delta": amount}, marker]),
                _ => json!([marker]),
            };
            ops.insert(pid(*s).0, list);
        }
        self.ghost.transfers.insert(id, Transfer { shards, amount });
        self.clients[k].waiting = Some(id);
        self.note(format!("client {k}: submits transfer {id} on {conn}"));
        let req = SubmitRequest {
            data: json!({ "operations": ops }),
            participants: None,
            request_id: Some(id),
            ..Default::default()
        };
        self.send(Node::Client(k), conn, Body::Submit(req))?;
        self.at(CLIENT_TIMEOUT_MS, Ev::ClientTimeout { k, transfer: id });
        Ok(())
    }

    fn client_message(&mut self, k: usize, conn: u64, body: Body) -> Result<(), String> {
        if self.clients[k].conn != Some(conn) {
            return Ok(());
        }
        let Some(waiting) = self.clients[k].waiting else {
            return Ok(());
        };
        match body {
            Body::Welcome { .. } => return Ok(()),
            Body::Outcome { txn, outcome } => {
                if outcome.request_id != Some(waiting) {
                    return Err(format!(
                        "client {k} waiting for transfer {waiting} got the outcome of request {:?}",
                        outcome.request_id
                    ));
                }
                self.note(format!(
                    "client {k}: transfer {waiting} is {:?} ({txn})",
                    outcome.decision
                ));
                match outcome.decision {
                    Decision::Commit => self.report.committed += 1,
                    Decision::Abort => self.report.aborted += 1,
                }
                self.ghost.told.insert(waiting, (txn, outcome.decision));
            }
            Body::Error { code, message, .. } => {
                self.note(format!(
                    "client {k}: transfer {waiting} refused: {code}: {message}"
                ));
                self.report.refused += 1;
            }
            other => {
                return Err(format!(
                    "client {k} got an unexpected `{}`",
                    other.message_type()
                ));
            }
        }
        self.clients[k].waiting = None;
        // An application backs off a little after an abort or a refusal.
        let d = match self.ghost.told.get(&waiting) {
            Some((_, Decision::Commit)) => self.rng.random_range(0..20),
            _ => self.rng.random_range(20..100),
        };
        self.at(d, Ev::ClientNext { k });
        Ok(())
    }

    // ---- the end -------------------------------------------------------

    fn final_checks(&mut self) -> Result<(), String> {
        let Some(c) = self.coord.as_ref() else {
            return Err("the coordinator is not running at the end".into());
        };
        let open: Vec<String> = c
            .core
            .txns()
            .filter(|t| t.ended_ms.is_none())
            .map(|t| format!("{} ({:?})", t.id, t.phase))
            .collect();
        if !open.is_empty() {
            return Err(format!(
                "liveness: transactions still open at the coordinator after {} ms of quiet: {open:?}",
                self.cfg.heal_ms
            ));
        }
        let mut total = 0i64;
        let mut data: Vec<BTreeMap<String, Value>> = Vec::new();
        for i in 0..self.cfg.participants {
            let Some(p) = self.parts[i].as_ref() else {
                return Err(format!("p{} is not running at the end", i + 1));
            };
            let doubt = p.core.in_doubt();
            if !doubt.is_empty() {
                return Err(format!(
                    "liveness: p{} still in doubt about {doubt:?}",
                    i + 1
                ));
            }
            let st = p.kv.status();
            if st["prepared"] != json!(0) || st["locked_keys"] != json!(0) {
                return Err(format!(
                    "liveness: p{} still holds prepared work: {st}",
                    i + 1
                ));
            }
            let dump: BTreeMap<String, Value> =
                serde_json::from_value(p.kv.dump()).map_err(|e| e.to_string())?;
            for a in 0..self.cfg.accounts_per_shard {
                total += dump
                    .get(&format!("acct{a}"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
            }
            // Committed data must be exactly what the durable log rebuilds.
            let mut disk = Disk {
                written: Vec::new(),
                ..self.part_disks[i].clone()
            };
            let mut torn = 0;
            let records = Self::recover_disk(&mut disk, &mut torn)?;
            let mut rebuilt = KvStore::new();
            rebuilt.replay(&records).map_err(|e| e.to_string())?;
            if rebuilt.dump() != p.kv.dump() {
                return Err(format!(
                    "durability: p{}'s committed data differs from what its synced log rebuilds",
                    i + 1
                ));
            }
            data.push(dump);
        }
        let expected =
            INITIAL_BALANCE * (self.cfg.participants * self.cfg.accounts_per_shard) as i64;
        if total != expected {
            return Err(format!(
                "money not conserved: {total} in all accounts, expected {expected}"
            ));
        }
        for (id, t) in &self.ghost.transfers {
            let key = format!("t{id}");
            let present: Vec<bool> = t
                .shards
                .iter()
                .map(|s| data[*s].contains_key(&key))
                .collect();
            let committed = present.iter().all(|x| *x);
            if !committed && present.iter().any(|x| *x) {
                return Err(format!(
                    "atomicity: transfer {id} ({} units over shards {:?}) is on some shards only: {present:?}",
                    t.amount, t.shards
                ));
            }
            if let Some((txn, d)) = self.ghost.told.get(id) {
                if (*d == Decision::Commit) != committed {
                    return Err(format!(
                        "transfer {id} ({txn}) was reported {d:?} to its client, but the shards say committed={committed}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The participant an event is handled by, if any.
fn stopped_target(ev: &Ev) -> Option<usize> {
    match ev {
        Ev::Deliver {
            to: Node::Part(i), ..
        }
        | Ev::Closed {
            to: Node::Part(i), ..
        }
        | Ev::PartTick { i, .. }
        | Ev::PartConnect { i, .. }
        | Ev::PrepareDone { i, .. }
        | Ev::SyncDone {
            node: Node::Part(i),
            ..
        } => Some(*i),
        _ => None,
    }
}

/// Keep trace lines readable.
fn short(mut s: String) -> String {
    if s.len() > 300 {
        let mut cut = 300;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// One node's log and the network, as its executor sees them.
struct NodeIo<'a> {
    sim: &'a mut Sim,
    node: Node,
    /// The first violation the checker found in a send; nothing more goes
    /// out after it (the run stops).
    violation: Option<String>,
}

impl NodeIo<'_> {
    fn log(&self) -> Option<&LogState> {
        match self.node {
            Node::Coord => self.sim.coord.as_ref().map(|c| &c.log),
            Node::Part(i) => self.sim.parts[i].as_ref().map(|p| &p.log),
            Node::Client(_) => None,
        }
    }
}

impl executor::Log for NodeIo<'_> {
    fn append(&mut self, record: &Record, sync: bool) -> u64 {
        self.sim.persist(self.node, record, sync)
    }
    fn barrier(&self) -> u64 {
        self.log().map_or(0, |l| l.last_sync_lsn)
    }
    fn durable(&self) -> u64 {
        self.log().map_or(0, |l| l.durable_lsn)
    }
}

impl executor::Outbox for NodeIo<'_> {
    fn deliver(&mut self, conn: ConnId, body: Body) {
        if self.violation.is_none() {
            if let Err(e) = self.sim.send(self.node, conn.0, body) {
                self.violation = Some(e);
            }
        }
    }
    fn close(&mut self, conn: ConnId) {
        self.sim.break_conn(conn.0, None, 1, 5);
    }
}

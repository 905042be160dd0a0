//! The real runtime in a seeded, deterministic world: one coordinator and
//! `PARTICIPANTS` participants (`CoordinatorServer`, `ParticipantNode`, with
//! all their tasks) and a client running bank transfers, as hosts of a
//! `turmoil` simulation on one thread.
//!
//! What is real: everything in `src/runtime`, `src/net` and `src/wal` the
//! nodes run (event loops, executor and outbox, connector with its backoff,
//! accept loop, connection reader and writer with the handshake gate,
//! heartbeats and deadlines, the group-commit writer and its batching,
//! record framing and the recovery scan with its torn-tail rule), the cores,
//! the kv store the participants vote with, and `twopc::Client`.
//!
//! What is simulated: TCP (turmoil's streams: latency, partitions both ways
//! and one way, held links; a partition drops what is sent on it), the
//! clock (tokio's paused time, stepped 1 ms at a time), the disk
//! (`twopc::sim::SimDisk`: written bytes are lost at a crash unless synced,
//! except a random prefix, which can end inside a record; every sync takes
//! `SYNC_LATENCY`, and stalls and failed syncs are armed by the fault
//! schedule; a checkpoint replaces the segments in one durable step, and
//! checkpoints are rare here because segments are large), and the random
//! draws (backoff jitter, transaction ids: `twopc::sim::random_range`).
//! The group-commit writer is a task instead of a thread. Admin ports, TLS
//! and secrets are off.
//!
//! Faults from the seed, during the first `fault_ms`: crash of any node at
//! any instant (its unsynced bytes partly lost, restarted later from its
//! disk), partitions both ways and one way, held links (a paused node: no
//! message in or out until released), connection resets (every connection
//! of a node fails its next read or write), latency spikes, stalled disks and
//! failed syncs (the node stops on its log failure and is restarted). Then
//! everything is healed and restarted and the world runs `heal_ms` more.
//!
//! Checked while running: no transaction applied as commit at one
//! participant and abort at another (atomicity), commit applied only when
//! every participant of the transfer prepared it (validity), a participant
//! never applies two different outcomes to one transaction (stability).
//! Checked at the end: every node running, nothing open at the coordinator
//! (its status, read by a second client half a second before the end),
//! nothing prepared or locked at any
//! participant, each transfer on all its shards or on none, money
//! conserved, every outcome told to the client matches the data, and each
//! participant's data equals what its synced log alone rebuilds.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};
use twopc::resource::kv::KvStore;
use twopc::sim::{DiskFault, SimDisk};
use twopc::{
    BoxFuture, CancellationToken, Client, CoordinatorConfig, CoordinatorServer, Decision,
    FinishResult, ParticipantConfig, ParticipantId, ParticipantNode, PrepareResult, Record,
    RecoverError, Resource, SubmitRequest, TxnId,
};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const PARTICIPANTS: usize = 3;
const ACCOUNTS: usize = 4;
const INITIAL_BALANCE: i64 = 1_000;
const COORD_PORT: u16 = 7000;
const RAFT_PORT: u16 = 7100;
/// A group's Raft entries between snapshots, and its journal's segment
/// size: small, so that runs take snapshots, rewrite journals and send
/// snapshots to members that fell behind.
const GROUP_SNAPSHOT_EVERY: u64 = 150;
const GROUP_SEGMENT_BYTES: u64 = 64 * 1024;
const MIN_LATENCY: Duration = Duration::from_millis(1);
const BASE_MAX_LATENCY: Duration = Duration::from_millis(5);
const SYNC_LATENCY: Duration = Duration::from_millis(2);
/// Trace lines kept for a failure report.
const TRACE_KEPT: usize = 60;
/// Submits of one transfer at most, with a coordinator group.
const GROUP_RESUBMITS: u32 = 8;
/// How long before the end of a run the auditor reads the coordinator's status.
const AUDIT_BEFORE_END_MS: u64 = 500;

/// A run's shape.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Simulated milliseconds with faults and transfers.
    pub fault_ms: u64,
    /// Simulated milliseconds of quiet after everything is healed.
    pub heal_ms: u64,
    /// Mean milliseconds between two faults.
    pub fault_every_ms: u64,
    /// Coordinator processes: 1 (one coordinator, host `coordinator`) or a
    /// replicated group of 3 (hosts `c1`..`c3`, Raft among them).
    pub coordinators: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            fault_ms: 3_000,
            heal_ms: 4_000,
            fault_every_ms: 60,
            coordinators: 1,
        }
    }
}

/// What a run did (summed over seeds by the tests).
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub faults: BTreeMap<&'static str, u64>,
    pub committed: u64,
    pub aborted: u64,
    /// Transfers whose outcome the client never learnt (lost connection,
    /// timeout, refused): checked against the data like the others.
    pub unknown: u64,
    pub applied: u64,
    /// FNV-1a of the run's trace: equal for two runs of one seed.
    pub digest: u64,
}

impl Report {
    pub fn add(&mut self, o: &Report) {
        for (k, v) in &o.faults {
            *self.faults.entry(k).or_insert(0) += v;
        }
        self.committed += o.committed;
        self.aborted += o.aborted;
        self.unknown += o.unknown;
        self.applied += o.applied;
    }

    pub fn fault_count(&self) -> u64 {
        self.faults.values().sum()
    }
}

fn pid(i: usize) -> ParticipantId {
    ParticipantId(format!("p{}", i + 1))
}

fn host(i: usize) -> String {
    format!("p{}", i + 1)
}

/// Everything the harness knows, shared by the hosts and the checks.
#[derive(Default)]
struct Ghost {
    now_ms: u64,
    trace: VecDeque<String>,
    digest: u64,
    /// Transfer id → its shards.
    transfers: BTreeMap<u64, Vec<usize>>,
    /// Transaction → transfer, learnt at prepare.
    txn_transfer: BTreeMap<TxnId, u64>,
    /// Transfer → shards whose kv store prepared it (and so voted commit).
    prepared: BTreeMap<u64, BTreeSet<usize>>,
    /// Transaction → participant → the outcome it applied.
    applied: BTreeMap<TxnId, BTreeMap<usize, Decision>>,
    /// Transfer → what the client was told.
    told: BTreeMap<u64, (TxnId, Decision)>,
    violation: Option<String>,
    /// Nodes whose `run` ended on a log failure (to be restarted).
    log_failed: BTreeSet<String>,
    report: Report,
    /// `TWOPC_SIMRT_TRACE=1`: print every trace line.
    print_all: bool,
    /// A coordinator group's world: a client-named transaction that no
    /// leader made durable is aborted by the next leader (presumed abort)
    /// and may then run again under the same id when the client resubmits
    /// it, so one id can be applied as Abort and later as Commit.
    reruns: bool,
    /// The coordinator's open transactions (still voting, awaiting
    /// acknowledgements) as its status said near the end of the run.
    coordinator_open: Option<(u64, u64)>,
    /// A group's members: each one's Raft journal and snapshot disk, read
    /// to check that a decision is on a majority's disks before any
    /// participant applies it.
    members: Vec<(String, SimDisk, SimDisk)>,
}

/// Does this member's synced journal or snapshot hold `txn`'s commit?
fn member_has_commit(journal: &SimDisk, snapshot: &SimDisk, txn: &TxnId) -> bool {
    let bytes: Vec<u8> = journal
        .synced_segments()
        .into_iter()
        .flat_map(|(_, b)| b)
        .collect();
    let snap = snapshot
        .synced_segments()
        .pop()
        .map(|(_, b)| twopc::replica::machine::records_in_snapshot(&b))
        .unwrap_or_default();
    twopc::replica::store::records_in_journal(&bytes)
        .into_iter()
        .chain(snap)
        .any(|r| {
            matches!(r, Record::Decision { txn: t, decision: Decision::Commit, .. } if t == *txn)
        })
}

impl Ghost {
    fn note(&mut self, line: String) {
        let line = format!("{:>6} ms  {line}", self.now_ms);
        for b in line.bytes().chain(std::iter::once(b'\n')) {
            self.digest ^= b as u64;
            self.digest = self.digest.wrapping_mul(0x100_0000_01b3);
        }
        if self.print_all {
            eprintln!("{line}");
        }
        if self.trace.len() == TRACE_KEPT {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn violate(&mut self, what: String) {
        self.note(format!("VIOLATION: {what}"));
        if self.violation.is_none() {
            self.violation = Some(what);
        }
    }

    /// Participant `i` applied `d` to `txn`: check atomicity, validity,
    /// stability.
    fn applied(&mut self, i: usize, txn: &TxnId, d: Decision) {
        self.note(format!("p{}: applies {d:?} to {txn}", i + 1));
        self.report.applied += 1;
        let reruns = self.reruns;
        let before = self.applied.entry(txn.clone()).or_default().insert(i, d);
        // The group's rule: a decision is durable (on a majority of the
        // members' synced logs) before any COMMIT leaves.
        if d == Decision::Commit && before != Some(Decision::Commit) && !self.members.is_empty() {
            let on_disk = self
                .members
                .iter()
                .filter(|(_, j, s)| member_has_commit(j, s, txn))
                .count();
            if on_disk * 2 <= self.members.len() {
                let what = format!(
                    "durability: p{} applied Commit to {txn} while only {on_disk} of {} members had the decision synced",
                    i + 1,
                    self.members.len()
                );
                return self.violate(what);
            }
        }
        let outcomes = self.applied.entry(txn.clone()).or_default();
        if let Some(before) = before {
            let rerun = reruns && before == Decision::Abort && d == Decision::Commit;
            if before != d && !rerun {
                return self.violate(format!(
                    "stability: p{} applied {before:?} to {txn}, then {d:?}",
                    i + 1
                ));
            }
        }
        // A commit anywhere is final: no participant may abort the id
        // after it (and, without re-runs, none may have aborted it before).
        let conflict = outcomes
            .iter()
            .find(|(_, o)| **o != d && (!reruns || **o == Decision::Commit));
        if let Some((j, other)) = conflict {
            let what = format!(
                "atomicity: {txn} applied as {d:?} at p{} and {other:?} at p{}",
                i + 1,
                j + 1
            );
            return self.violate(what);
        }
        if d == Decision::Commit {
            let transfer = self.txn_transfer.get(txn).copied();
            let shards = transfer.and_then(|t| self.transfers.get(&t)).cloned();
            let prepared = transfer
                .and_then(|t| self.prepared.get(&t))
                .cloned()
                .unwrap_or_default();
            match shards {
                Some(s) if s.iter().all(|x| prepared.contains(x)) => {}
                _ => self.violate(format!(
                    "validity: p{} applied commit to {txn} (transfer {transfer:?}, shards {shards:?}) but only {prepared:?} prepared it",
                    i + 1
                )),
            }
        }
    }
}

type Shared = Arc<Mutex<Ghost>>;

/// A participant's current kv store, set at each start.
type KvSlot = Arc<Mutex<Option<Arc<Mutex<KvStore>>>>>;

fn lock(g: &Shared) -> std::sync::MutexGuard<'_, Ghost> {
    g.lock().unwrap_or_else(|p| p.into_inner())
}

/// The transfer a participant's operations belong to: the marker key
/// `t<id>` every shard of a transfer writes.
fn transfer_of(data: &Value) -> Option<u64> {
    data["operations"].as_array()?.iter().find_map(|op| {
        op["key"]
            .as_str()
            .and_then(|k| k.strip_prefix('t'))
            .and_then(|n| n.parse().ok())
    })
}

/// The kv store as the participant's resource, reporting what it prepares
/// and applies to the harness. The store is shared so that the end checks
/// can read it.
struct Recorded {
    i: usize,
    kv: Arc<Mutex<KvStore>>,
    ghost: Shared,
}

impl Recorded {
    fn kv(&self) -> std::sync::MutexGuard<'_, KvStore> {
        self.kv.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Resource for Recorded {
    fn prepare(&mut self, txn: &TxnId, data: &Value) -> BoxFuture<'static, PrepareResult> {
        use futures::FutureExt;
        let result = self
            .kv()
            .prepare(txn, data)
            .now_or_never()
            .expect("the kv store prepares at once");
        let mut g = lock(&self.ghost);
        let transfer = transfer_of(data);
        if let Some(t) = transfer {
            g.txn_transfer.insert(txn.clone(), t);
            if result.is_ok() {
                g.prepared.entry(t).or_default().insert(self.i);
            }
        }
        let ok = result.is_ok();
        g.note(format!(
            "p{}: prepares {txn} (transfer {transfer:?}): {}",
            self.i + 1,
            if ok { "ok" } else { "refused" }
        ));
        Box::pin(std::future::ready(result))
    }

    fn finish(&mut self, txn: &TxnId, decision: Decision) -> BoxFuture<'static, FinishResult> {
        use futures::FutureExt;
        let result = self
            .kv()
            .finish(txn, decision)
            .now_or_never()
            .expect("the kv store finishes at once");
        lock(&self.ghost).applied(self.i, txn, decision);
        Box::pin(std::future::ready(result))
    }

    fn recover(&mut self, log: &[Record]) -> BoxFuture<'static, Result<(), RecoverError>> {
        self.kv().recover(log)
    }

    fn snapshot(&self) -> Option<Value> {
        self.kv().snapshot()
    }

    fn status(&self) -> Value {
        self.kv().status()
    }
}

/// Scheduled repairs, by simulated millisecond.
#[derive(Clone, Debug)]
enum Later {
    Restart(String),
    Repair(String, String),
    RepairOneway(String, String),
    Release(String),
    Latency,
}

pub struct World {
    cfg: Config,
    seed: u64,
    rng: StdRng,
    ghost: Shared,
    /// Each host's log: a participant's or a single coordinator's
    /// write-ahead log, a group member's Raft journal.
    disks: BTreeMap<String, SimDisk>,
    /// A group member's kept snapshot (written in one durable step).
    snapshots: BTreeMap<String, SimDisk>,
    /// Each participant's current kv store (replaced at each start).
    kvs: Vec<KvSlot>,
    later: BTreeMap<u64, Vec<Later>>,
    down: BTreeSet<String>,
    /// The network's current latency bound (raised by spikes).
    max_latency: Duration,
}

fn data_dir(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/sim/{name}"))
}

/// The coordinator hosts of a world with `n` coordinators.
fn coordinator_hosts(n: usize) -> Vec<String> {
    match n {
        1 => vec!["coordinator".to_string()],
        _ => (1..=n).map(|k| format!("c{k}")).collect(),
    }
}

/// Where clients and participants reach the coordinator(s).
fn coordinator_addrs(n: usize) -> Vec<String> {
    coordinator_hosts(n)
        .into_iter()
        .map(|h| format!("{h}:{COORD_PORT}"))
        .collect()
}

/// The config of coordinator `h` in a world with `n` coordinators.
fn coordinator_config(h: &str, n: usize) -> CoordinatorConfig {
    let mut cfg = single_coordinator_config(h);
    if n > 1 {
        cfg.peers = (1..=n)
            .map(|k| format!("{k}=c{k}:{COORD_PORT}:{RAFT_PORT}"))
            .collect();
        cfg.node_id = h.trim_start_matches('c').parse().expect("member host c<k>");
        cfg.raft_bind = Some(format!("0.0.0.0:{RAFT_PORT}"));
        cfg.raft_snapshot_every = GROUP_SNAPSHOT_EVERY;
        // The smallest frames allowed: a snapshot a member sends goes in
        // parts of about 12 KiB, so larger ones take several.
        cfg.raft_max_frame_bytes = 64 * 1024;
        cfg.wal.segment_max_bytes = GROUP_SEGMENT_BYTES;
    }
    cfg
}

fn single_coordinator_config(h: &str) -> CoordinatorConfig {
    CoordinatorConfig {
        host: "0.0.0.0".into(),
        port: COORD_PORT,
        expected_participants: PARTICIPANTS,
        timeout_seconds: 1.0,
        data_dir: data_dir(h),
        heartbeat_interval_ms: 100,
        heartbeat_failure_threshold: 4,
        handshake_timeout_ms: 1_000,
        preauth_timeout_ms: 1_000,
        resend_initial_ms: 50,
        resend_max_ms: 500,
        ..CoordinatorConfig::default()
    }
}

fn participant_config(i: usize, coordinators: usize) -> ParticipantConfig {
    let mut cfg = ParticipantConfig {
        id: pid(i),
        coordinator_host: "coordinator".into(),
        coordinator_port: COORD_PORT,
        timeout_seconds: 1.0,
        data_dir: Some(data_dir(&host(i))),
        heartbeat_interval_ms: 100,
        heartbeat_failure_threshold: 4,
        reconnect_initial_ms: 20,
        reconnect_max_ms: 500,
        query_max_ms: 500,
        handshake_timeout_ms: 1_000,
        ..ParticipantConfig::default()
    };
    cfg.resource = twopc::config::ResourceKind::Kv;
    if coordinators > 1 {
        cfg.coordinators = coordinator_addrs(coordinators);
    }
    cfg
}

fn initial_accounts() -> Value {
    let m: serde_json::Map<String, Value> = (0..ACCOUNTS)
        .map(|a| (format!("acct{a}"), json!(INITIAL_BALANCE)))
        .collect();
    Value::Object(m)
}

impl World {
    pub fn new(cfg: Config, seed: u64) -> World {
        let mut disks = BTreeMap::new();
        let mut snapshots = BTreeMap::new();
        for h in coordinator_hosts(cfg.coordinators) {
            disks.insert(h.clone(), SimDisk::new(SYNC_LATENCY));
            if cfg.coordinators > 1 {
                snapshots.insert(h, SimDisk::new(SYNC_LATENCY));
            }
        }
        for i in 0..PARTICIPANTS {
            disks.insert(host(i), SimDisk::new(SYNC_LATENCY));
        }
        World {
            cfg,
            seed,
            rng: StdRng::seed_from_u64(seed ^ 0x005e_ed0f_fa17),
            ghost: Arc::new(Mutex::new(Ghost {
                digest: 0xcbf2_9ce4_8422_2325,
                print_all: std::env::var_os("TWOPC_SIMRT_TRACE").is_some(),
                reruns: cfg.coordinators > 1,
                members: snapshots
                    .iter()
                    .map(|(h, snap)| (h.clone(), disks[h].clone(), snap.clone()))
                    .collect(),
                ..Ghost::default()
            })),
            disks,
            snapshots,
            kvs: (0..PARTICIPANTS).map(|_| Arc::default()).collect(),
            later: BTreeMap::new(),
            down: BTreeSet::new(),
            max_latency: BASE_MAX_LATENCY,
        }
    }

    /// Run the seed; the report, or the violation with the seed and the
    /// last trace lines.
    pub fn run(mut self) -> Result<Report, String> {
        twopc::sim::seed(self.seed);
        for (name, d) in &self.disks {
            match self.snapshots.get(name) {
                // A group member: its Raft journal and its snapshot.
                Some(snap) => {
                    let raft = data_dir(name).join("raft");
                    twopc::sim::attach_disk(&raft.join("snapshot.json"), snap.clone());
                    twopc::sim::attach_disk(&raft, d.clone());
                }
                None => twopc::sim::attach_disk(&data_dir(name), d.clone()),
            }
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.drive()));
        twopc::sim::detach_disks();
        twopc::sim::forget_resets();
        let result = match outcome {
            Ok(r) => r,
            Err(p) => Err(format!(
                "panicked: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        };
        let g = lock(&self.ghost);
        match result {
            Ok(()) => {
                let mut r = g.report.clone();
                r.digest = g.digest;
                Ok(r)
            }
            Err(e) => Err(format!(
                "seed {}: {e}\nlast events:\n{}\nreplay: TWOPC_SIMRT_SEED={}{} cargo test --test simulation_runtime replay -- --nocapture",
                self.seed,
                g.trace.iter().cloned().collect::<Vec<_>>().join("\n"),
                self.seed,
                match self.cfg.coordinators {
                    1 => String::new(),
                    n => format!(" TWOPC_SIMRT_COORDINATORS={n}"),
                }
            )),
        }
    }

    fn drive(&mut self) -> Result<(), String> {
        let mut sim = turmoil::Builder::new()
            .epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            .simulation_duration(Duration::from_millis(
                self.cfg.fault_ms + self.cfg.heal_ms + 1_000,
            ))
            .min_message_latency(MIN_LATENCY)
            .max_message_latency(BASE_MAX_LATENCY)
            .rng_seed(self.seed)
            .build();
        for h in coordinator_hosts(self.cfg.coordinators) {
            self.add_coordinator(&mut sim, h);
        }
        for i in 0..PARTICIPANTS {
            self.add_participant(&mut sim, i);
        }
        self.add_client(&mut sim);
        self.add_auditor(&mut sim);
        let end_ms = self.cfg.fault_ms + self.cfg.heal_ms;
        let mut next_fault = self.rng.random_range(0..self.cfg.fault_every_ms * 2);
        let mut healed = false;
        loop {
            let now = sim.elapsed().as_millis() as u64;
            lock(&self.ghost).now_ms = now;
            if now >= end_ms {
                break;
            }
            self.due(&mut sim, now);
            self.restart_failed(&mut sim, now);
            if now < self.cfg.fault_ms && now >= next_fault {
                self.inject(&mut sim, now);
                next_fault = now + self.rng.random_range(1..self.cfg.fault_every_ms * 2);
            }
            if now >= self.cfg.fault_ms && !healed {
                healed = true;
                self.heal_all(&mut sim);
            }
            sim.step().map_err(|e| format!("simulation error: {e}"))?;
            if let Some(v) = lock(&self.ghost).violation.clone() {
                return Err(v);
            }
        }
        self.final_checks(&mut sim)
    }

    fn note(&self, line: String) {
        lock(&self.ghost).note(line);
    }

    fn count(&self, kind: &'static str) {
        *lock(&self.ghost).report.faults.entry(kind).or_insert(0) += 1;
    }

    fn add_coordinator(&self, sim: &mut turmoil::Sim<'_>, h: String) {
        let ghost = self.ghost.clone();
        let n = self.cfg.coordinators;
        let name = h.clone();
        sim.host(name.as_str(), move || {
            let ghost = ghost.clone();
            let h = h.clone();
            async move {
                lock(&ghost).note(format!("{h}: starts"));
                let server = CoordinatorServer::start(coordinator_config(&h, n))
                    .await
                    .map_err(|e| e.to_string())?;
                if let Err(e) = server.run(CancellationToken::new()).await {
                    let mut g = lock(&ghost);
                    g.note(format!("{h}: stopped: {e}"));
                    g.log_failed.insert(h.clone());
                }
                Ok(())
            }
        });
    }

    fn add_participant(&self, sim: &mut turmoil::Sim<'_>, i: usize) {
        let ghost = self.ghost.clone();
        let slot = self.kvs[i].clone();
        let disk = self.disks[&host(i)].clone();
        let coordinators = self.cfg.coordinators;
        sim.host(host(i), move || {
            let ghost = ghost.clone();
            let mut kv = KvStore::new();
            // A first start seeds the accounts; a restart recovers them.
            if disk.segments().iter().all(|(_, b)| b.is_empty()) {
                kv.seed(&initial_accounts()).expect("the accounts seed");
            }
            let kv = Arc::new(Mutex::new(kv));
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(kv.clone());
            async move {
                lock(&ghost).note(format!("p{}: starts", i + 1));
                let resource = Recorded {
                    i,
                    kv,
                    ghost: ghost.clone(),
                };
                let node =
                    ParticipantNode::start(participant_config(i, coordinators), Box::new(resource))
                        .await
                        .map_err(|e| e.to_string())?;
                if let Err(e) = node.run(CancellationToken::new()).await {
                    let mut g = lock(&ghost);
                    g.note(format!("p{}: stopped: {e}", i + 1));
                    g.log_failed.insert(host(i));
                }
                Ok(())
            }
        });
    }

    fn add_client(&mut self, sim: &mut turmoil::Sim<'_>) {
        let ghost = self.ghost.clone();
        let fault_ms = self.cfg.fault_ms;
        let group = self.cfg.coordinators > 1;
        let addr = coordinator_addrs(self.cfg.coordinators).join(",");
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x00c1_1e47);
        sim.client("client", async move {
            let mut client: Option<Client> = None;
            let mut next = 1u64;
            while turmoil::elapsed() < Duration::from_millis(fault_ms) {
                let c = match client.as_mut() {
                    Some(c) => c,
                    None => match Client::connect(&addr, Duration::from_secs(3)).await {
                        Ok(c) => client.insert(c),
                        Err(e) => {
                            lock(&ghost).note(format!("client: cannot connect: {e}"));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let id = next;
                next += 1;
                let from = rng.random_range(0..PARTICIPANTS);
                let mut to = rng.random_range(0..PARTICIPANTS - 1);
                if to >= from {
                    to += 1;
                }
                let amount = rng.random_range(1..60i64);
                let marker = json!({"op": "put", "key": format!("t{id}"), "value": id});
                let mut ops = serde_json::Map::new();
                ops.insert(
                    pid(from).0,
                    json!([{"op": "add", "key": format!("acct{}", rng.random_range(0..ACCOUNTS)), "delta": -amount, "min": 0}, marker]),
                );
                ops.insert(
                    pid(to).0,
                    json!([{"op": "add", "key": format!("acct{}", rng.random_range(0..ACCOUNTS)), "delta": amount}, marker]),
                );
                lock(&ghost).transfers.insert(id, vec![from, to]);
                let req = SubmitRequest {
                    data: json!({ "operations": ops }),
                    participants: Some(vec![pid(from), pid(to)]),
                    request_id: Some(id),
                    // With a group the transfer is named by the client, so
                    // that a resubmit after a failover runs it at most once.
                    transaction_id: group.then(|| TxnId::from(format!("t{id}").as_str())),
                    ..Default::default()
                };
                let mut result = c.submit(req.clone()).await;
                // With a group, a transfer whose outcome was lost with the
                // connection is submitted again under its id (to whichever
                // member leads now) until the one outcome is known.
                let mut tries = 1;
                while group && result.is_err() && tries < GROUP_RESUBMITS {
                    if let Err(e) = &result {
                        lock(&ghost).note(format!("client: transfer {id}: {e}; submitting it again"));
                    }
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    result = match Client::connect(&addr, Duration::from_secs(3)).await {
                        Ok(mut again) => {
                            let r = again.submit(req.clone()).await;
                            client = Some(again);
                            r
                        }
                        Err(e) => Err(e),
                    };
                }
                match result {
                    Ok((txn, outcome)) => {
                        let mut g = lock(&ghost);
                        g.note(format!(
                            "client: transfer {id} is {:?} ({txn})",
                            outcome.decision
                        ));
                        match outcome.decision {
                            Decision::Commit => g.report.committed += 1,
                            Decision::Abort => g.report.aborted += 1,
                        }
                        g.told.insert(id, (txn, outcome.decision));
                    }
                    Err(e) => {
                        let mut g = lock(&ghost);
                        g.note(format!("client: transfer {id}: {e}"));
                        g.report.unknown += 1;
                        client = None;
                    }
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
            }
            Ok(())
        });
    }

    /// A second client that asks the coordinator for its status shortly
    /// before the end, once everything has been healed and quiet: what it
    /// still holds open is checked at the end.
    fn add_auditor(&mut self, sim: &mut turmoil::Sim<'_>) {
        let ghost = self.ghost.clone();
        let ask_at =
            Duration::from_millis(self.cfg.fault_ms + self.cfg.heal_ms - AUDIT_BEFORE_END_MS);
        let addr = coordinator_addrs(self.cfg.coordinators).join(",");
        sim.client("auditor", async move {
            tokio::time::sleep(ask_at.saturating_sub(turmoil::elapsed())).await;
            loop {
                let status = match Client::connect(&addr, Duration::from_secs(1)).await {
                    Ok(mut c) => c.status().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match status {
                    Ok(st) => {
                        let t = &st["transactions"];
                        let open = (
                            t["in_flight"].as_u64().unwrap_or(u64::MAX),
                            t["awaiting_acks"].as_u64().unwrap_or(u64::MAX),
                        );
                        let mut g = lock(&ghost);
                        g.note(format!("auditor: coordinator status {t}"));
                        g.coordinator_open = Some(open);
                        return Ok(());
                    }
                    Err(e) => {
                        lock(&ghost).note(format!("auditor: no status: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }

    /// Run the repairs due by `now`.
    fn due(&mut self, sim: &mut turmoil::Sim<'_>, now: u64) {
        let due: Vec<u64> = self.later.range(..=now).map(|(t, _)| *t).collect();
        for t in due {
            for l in self.later.remove(&t).unwrap_or_default() {
                self.apply_later(sim, l);
            }
        }
    }

    fn apply_later(&mut self, sim: &mut turmoil::Sim<'_>, l: Later) {
        match l {
            Later::Restart(h) => {
                if self.down.remove(&h) {
                    self.note(format!("{h}: restarted"));
                    self.steady(sim, |sim| sim.bounce(h.as_str()));
                }
            }
            Later::Repair(a, b) => sim.repair(a.as_str(), b.as_str()),
            Later::RepairOneway(a, b) => sim.repair_oneway(a.as_str(), b.as_str()),
            Later::Release(h) => {
                for other in self.others(&h) {
                    sim.release(h.as_str(), other.as_str());
                }
            }
            Later::Latency => {
                self.max_latency = BASE_MAX_LATENCY;
                sim.set_max_message_latency(BASE_MAX_LATENCY);
            }
        }
    }

    /// Run `f` (a crash or a restart) with every latency fixed. Stopping a
    /// host drops its tasks in an order that depends on tokio's task ids,
    /// which count up per process; the sockets they close each draw a
    /// latency from the simulation's random source. With one fixed
    /// latency the draws are the same whatever the order, so the run
    /// replays in any process.
    fn steady(&self, sim: &mut turmoil::Sim<'_>, f: impl FnOnce(&mut turmoil::Sim<'_>)) {
        sim.set_max_message_latency(MIN_LATENCY);
        f(sim);
        sim.set_max_message_latency(self.max_latency);
    }

    fn at(&mut self, ms: u64, l: Later) {
        self.later.entry(ms).or_default().push(l);
    }

    fn others(&self, h: &str) -> Vec<String> {
        self.disks
            .keys()
            .cloned()
            .chain(std::iter::once("client".to_string()))
            .filter(|o| o != h)
            .collect()
    }

    /// A node whose log failed has stopped: its disk loses what a crash
    /// would, and it is restarted a little later.
    fn restart_failed(&mut self, _sim: &mut turmoil::Sim<'_>, now: u64) {
        let failed = std::mem::take(&mut lock(&self.ghost).log_failed);
        for h in failed {
            self.crash_disk(&h);
            self.down.insert(h.clone());
            let d = self.rng.random_range(20..300);
            self.at(now + d, Later::Restart(h));
        }
    }

    fn crash_disk(&mut self, h: &str) {
        let rng = &mut self.rng;
        self.disks[h].crash(|unsynced| {
            if unsynced == 0 {
                0
            } else {
                rng.random_range(0..=unsynced)
            }
        });
    }

    fn node(&mut self) -> String {
        let coordinators = coordinator_hosts(self.cfg.coordinators);
        let i = self.rng.random_range(0..PARTICIPANTS + coordinators.len());
        match i.checked_sub(PARTICIPANTS) {
            Some(k) => coordinators[k].clone(),
            None => host(i),
        }
    }

    fn is_coordinator(&self, h: &str) -> bool {
        coordinator_hosts(self.cfg.coordinators)
            .iter()
            .any(|c| c == h)
    }

    fn inject(&mut self, sim: &mut turmoil::Sim<'_>, now: u64) {
        let h = self.node();
        // A group's world has one more kind: a member cut off from the
        // other members (not from participants or clients).
        let kinds = if self.cfg.coordinators > 1 { 10 } else { 9 };
        match self.rng.random_range(0..kinds) {
            0 | 1 => {
                if self.down.contains(&h) {
                    return;
                }
                self.count(if self.is_coordinator(&h) {
                    "coordinator crash"
                } else {
                    "participant crash"
                });
                self.note(format!("fault: crash {h}"));
                self.steady(sim, |sim| sim.crash(h.as_str()));
                self.crash_disk(&h);
                self.down.insert(h.clone());
                let d = self.rng.random_range(20..400);
                self.at(now + d, Later::Restart(h));
            }
            2 => {
                let other = self.node();
                if other == h {
                    return;
                }
                self.count("partition");
                self.note(format!("fault: partition {h} | {other}"));
                sim.partition(h.as_str(), other.as_str());
                let d = self.rng.random_range(50..800);
                self.at(now + d, Later::Repair(h, other));
            }
            3 => {
                let other = self.node();
                if other == h {
                    return;
                }
                self.count("one-way partition");
                self.note(format!("fault: one-way partition {h} -> {other}"));
                sim.partition_oneway(h.as_str(), other.as_str());
                let d = self.rng.random_range(50..800);
                self.at(now + d, Later::RepairOneway(h, other));
            }
            4 => {
                self.count("paused node");
                self.note(format!("fault: hold every link of {h}"));
                for other in self.others(&h) {
                    sim.hold(h.as_str(), other.as_str());
                }
                let d = self.rng.random_range(50..600);
                self.at(now + d, Later::Release(h));
            }
            5 => {
                self.count("latency spike");
                let ms = self.rng.random_range(20..300);
                self.note(format!("fault: latency up to {ms} ms"));
                self.max_latency = Duration::from_millis(ms);
                sim.set_max_message_latency(self.max_latency);
                let d = self.rng.random_range(50..500);
                self.at(now + d, Later::Latency);
            }
            6 => {
                self.count("stalled disk");
                let ms = self.rng.random_range(20..500);
                self.note(format!("fault: {h}'s next sync stalls {ms} ms"));
                self.disks[&h].arm(DiskFault::Stall(Duration::from_millis(ms)));
            }
            7 => {
                if self.down.contains(&h) {
                    return;
                }
                // Every connection the node has open fails its next read or
                // write with ECONNRESET; the node redials or the peer does.
                self.count("connection reset");
                self.note(format!("fault: reset every connection of {h}"));
                twopc::sim::reset_connections(sim.lookup(h.as_str()));
            }
            9 => {
                let members = coordinator_hosts(self.cfg.coordinators);
                let m = members[self.rng.random_range(0..members.len())].clone();
                self.count("member cut off from the group");
                self.note(format!("fault: {m} cut off from the other members"));
                let d = self.rng.random_range(200..1_500);
                for other in members.iter().filter(|o| **o != m) {
                    sim.partition(m.as_str(), other.as_str());
                    self.at(now + d, Later::Repair(m.clone(), other.clone()));
                }
            }
            _ => {
                if self.down.contains(&h) {
                    return;
                }
                self.count("fsync error");
                self.note(format!("fault: {h}'s next sync fails"));
                self.disks[&h].arm(DiskFault::FailSync);
            }
        }
    }

    fn heal_all(&mut self, sim: &mut turmoil::Sim<'_>) {
        self.note("heal: every link repaired, every node restarted".into());
        let names: Vec<String> = self.disks.keys().cloned().collect();
        for a in &names {
            for b in self.others(a) {
                sim.repair(a.as_str(), b.as_str());
                sim.release(a.as_str(), b.as_str());
            }
        }
        self.max_latency = BASE_MAX_LATENCY;
        sim.set_max_message_latency(BASE_MAX_LATENCY);
        self.later.retain(|_, v| {
            v.retain(|l| matches!(l, Later::Restart(_)));
            !v.is_empty()
        });
        let now = sim.elapsed().as_millis() as u64;
        for h in self.down.clone() {
            self.at(now, Later::Restart(h));
        }
        for d in self.disks.values() {
            d.disarm();
        }
    }

    fn final_checks(&mut self, sim: &mut turmoil::Sim<'_>) -> Result<(), String> {
        for h in self.disks.keys() {
            if !sim.is_host_running(h.as_str()) {
                return Err(format!("{h} is not running at the end"));
            }
        }
        let mut total = 0i64;
        let mut data: Vec<BTreeMap<String, Value>> = Vec::new();
        for i in 0..PARTICIPANTS {
            let kv = self.kvs[i]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .ok_or_else(|| format!("p{} never started", i + 1))?;
            let kv = kv.lock().unwrap_or_else(|p| p.into_inner());
            let st = kv.status();
            if st["prepared"] != json!(0) || st["locked_keys"] != json!(0) {
                return Err(format!(
                    "liveness: p{} still holds prepared work after {} ms of quiet: {st}",
                    i + 1,
                    self.cfg.heal_ms
                ));
            }
            let dump: BTreeMap<String, Value> =
                serde_json::from_value(kv.dump()).map_err(|e| e.to_string())?;
            for a in 0..ACCOUNTS {
                total += dump
                    .get(&format!("acct{a}"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
            }
            let synced = self.disks[&host(i)]
                .synced_segments()
                .into_iter()
                .map(|(s, b)| (data_dir(&host(i)).join(format!("{s}")), b))
                .collect();
            let report = twopc::wal::scan_segments(synced);
            if let Some(d) = report.corruption {
                return Err(format!("p{}'s synced log is corrupt: {d:?}", i + 1));
            }
            let records: Vec<Record> = report.records.into_iter().map(|l| l.record).collect();
            let mut rebuilt = KvStore::new();
            rebuilt.replay(&records).map_err(|e| e.to_string())?;
            if rebuilt.dump() != kv.dump() {
                return Err(format!(
                    "durability: p{}'s data differs from what its synced log rebuilds",
                    i + 1
                ));
            }
            data.push(dump);
        }
        match lock(&self.ghost).coordinator_open {
            None => {
                return Err(format!(
                    "the coordinator's status could not be read in the last {AUDIT_BEFORE_END_MS} ms"
                ))
            }
            Some((0, 0)) => {}
            Some((voting, acks)) => {
                return Err(format!(
                    "liveness: the coordinator still has {voting} transactions voting and {acks} awaiting acknowledgements after {} ms of quiet",
                    self.cfg.heal_ms
                ))
            }
        }
        let expected = INITIAL_BALANCE * (PARTICIPANTS * ACCOUNTS) as i64;
        if total != expected {
            return Err(format!(
                "money not conserved: {total} in all accounts, expected {expected}"
            ));
        }
        let g = lock(&self.ghost);
        for (id, shards) in &g.transfers {
            let key = format!("t{id}");
            let present: Vec<bool> = shards.iter().map(|s| data[*s].contains_key(&key)).collect();
            let committed = present.iter().all(|x| *x);
            if !committed && present.iter().any(|x| *x) {
                return Err(format!(
                    "atomicity: transfer {id} is on some of its shards {shards:?} only: {present:?}"
                ));
            }
            if let Some((txn, d)) = g.told.get(id) {
                if (*d == Decision::Commit) != committed {
                    return Err(format!(
                        "transfer {id} ({txn}) was reported {d:?} to the client, but its shards say committed={committed}"
                    ));
                }
            }
        }
        Ok(())
    }
}

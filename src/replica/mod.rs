//! The coordinator as a replicated group (`peers:`): members run Raft
//! (openraft) among themselves; the leader coordinates, the others stand by
//! with a copy of every durable decision.
//!
//! - The Raft log is the coordinator's write-ahead log ([`store`]): what the
//!   leader's core persists goes into Raft entries, and a record counts as
//!   durable once Raft has committed it (a majority has it on disk). Messages
//!   held for durability are released then, exactly as with a local log.
//! - The state machine ([`machine`]) is a coordinator core fed the committed
//!   records; a new leader rebuilds its core from it, as a restarted
//!   coordinator does from its log, and re-drives what was decided.
//! - The members' Raft port ([`net`]) carries openraft's RPCs, authenticated
//!   with the shared secret.
//! - [`RaftLog`] is the log a leader's driver appends to.

pub mod draws;
pub mod elect;
pub mod machine;
pub mod net;
pub mod store;

use crate::protocol::Record;
use crate::wal::WalStats;
use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A member of the coordinator group: where clients and participants reach
/// it, and where the other members do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `host:port` of its coordinator port.
    pub addr: String,
    /// `host:port` of its Raft port.
    pub raft_addr: String,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (raft {})", self.addr, self.raft_addr)
    }
}

/// One Raft entry: the records a leader's turn persisted, in order, kept
/// as their JSON list. The leader encodes them once; every member's
/// journal and every AppendEntries carry that text as it is, and a member
/// decodes it once, when it applies the entry. (The same JSON as a list of
/// records in the entry: journals written before read back unchanged.)
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Batch {
    records: Box<serde_json::value::RawValue>,
}

impl Batch {
    pub fn new(records: &[Record]) -> Result<Batch, serde_json::Error> {
        Ok(Batch {
            records: serde_json::value::to_raw_value(records)?,
        })
    }

    /// An entry with no records (a new leader's barrier).
    pub fn empty() -> Batch {
        Batch {
            records: serde_json::value::RawValue::from_string("[]".into())
                .expect("an empty list is JSON"),
        }
    }

    /// The records, decoded.
    pub fn records(&self) -> Result<Vec<Record>, serde_json::Error> {
        serde_json::from_str(self.records.get())
    }

    /// The JSON of each record, in order.
    pub fn raw_records(&self) -> Result<Vec<&serde_json::value::RawValue>, serde_json::Error> {
        serde_json::from_str(self.records.get())
    }
}

impl PartialEq for Batch {
    fn eq(&self, other: &Batch) -> bool {
        self.records.get() == other.records.get()
    }
}

impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes of records", self.records.get().len())
    }
}

/// The coordinator group's Raft types (written out rather than declared
/// with openraft's macro, which cannot name a responder generic over what
/// it answers).
#[derive(Debug, Clone, Copy, Default, Eq, PartialEq, Ord, PartialOrd)]
pub struct TypeConfig {}

impl openraft::RaftTypeConfig for TypeConfig {
    type D = Batch;
    type R = ();
    type NodeId = u64;
    type Node = Member;
    type Term = u64;
    type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, u64>;
    type Vote = openraft::impls::Vote<Self::LeaderId>;
    type Payload = openraft::EntryPayload<Batch, u64, Member>;
    type Entry =
        openraft::Entry<<Self::LeaderId as openraft::vote::RaftLeaderId>::Committed, Self::Payload>;
    /// A proposal's [`Commit`] (openraft's own calls use its own).
    type Responder<T>
        = Commit<T>
    where
        T: openraft::OptionalSend + 'static;
    type Batch<T>
        = openraft::impls::InlineBatch<T>
    where
        T: openraft::OptionalSend + 'static;
    type AsyncRuntime = draws::Runtime;
    type ErrorSource = openraft::impls::BoxedErrorSource;
}

pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// The leader (term and member) an entry was written under.
pub type CommittedLeaderId = openraft::alias::CommittedLeaderIdOf<TypeConfig>;
pub type Membership = openraft::Membership<u64, Member>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A member's Raft handle.
pub type RaftNode = openraft::Raft<TypeConfig, machine::MachineHandle>;

/// Parse one `peers` entry: `ID=HOST:PORT:RAFT_PORT`.
pub fn parse_peer(s: &str) -> Result<(u64, Member), String> {
    let help = "ID=HOST:PORT:RAFT_PORT, for example 2=127.0.0.1:7001:7101 (the member's id, its coordinator port, its Raft port)";
    let (id, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not {help}"))?;
    let id: u64 = id.trim().parse().ok().filter(|i| *i > 0).ok_or_else(|| {
        format!("`{id}` in `{s}` is not a member id (a number from 1); expected {help}")
    })?;
    let (addr, raft_port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` is not {help}"))?;
    let raft_port: u16 = raft_port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("`{raft_port}` in `{s}` is not a port; expected {help}"))?;
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` is not {help}"))?;
    if host.is_empty() || port.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
        return Err(format!("`{s}` is not {help}"));
    }
    Ok((
        id,
        Member {
            addr: addr.to_string(),
            raft_addr: format!("{host}:{raft_port}"),
        },
    ))
}

/// How a member runs its part of the group.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    pub me: u64,
    /// Every member at the group's creation (this one included).
    pub members: BTreeMap<u64, Member>,
    /// Where the Raft log and the snapshot live.
    pub dir: PathBuf,
    pub election_timeout_ms: u64,
    pub heartbeat_ms: u64,
    /// Entries applied since the last snapshot before the next one.
    pub snapshot_every: u64,
    /// Bytes of journal before it is rewritten with what is live.
    pub segment_max_bytes: u64,
    pub limits: net::PortLimits,
    /// Join a running group (an operator adds it with `twopc cluster add`)
    /// instead of forming one with `members`.
    pub join: bool,
    /// Where the Raft port listens, when not at this member's address in
    /// `members` (a proxy or NAT in between).
    pub raft_bind: Option<String>,
    /// This member's admin HTTP address as others reach it, when the admin
    /// API is on: the members announce theirs to each other, so that a
    /// follower's admin API can name the leader's.
    pub admin: Option<String>,
    /// `wal.unsafe_no_fsync`: the Raft log is written without syncing
    /// (benchmarks only).
    pub unsafe_no_fsync: bool,
}

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("the Raft log in {dir}: {source}; check the directory's permissions and free space")]
    Storage {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on the Raft port {addr}: {source}; choose another port in `peers` or stop the process using it")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("Raft stopped while starting: {0}")]
    Raft(String),
}

/// This member's part of the group.
#[derive(Clone)]
pub struct Group {
    pub raft: RaftNode,
    pub machine: machine::MachineHandle,
    pub cfg: Arc<GroupConfig>,
    pub stats: Arc<WalStats>,
    /// The other members' admin addresses, as they announced them.
    pub admins: net::Admins,
}

impl Group {
    /// Open the log and state machine, start Raft, bind the Raft port, and
    /// form the group on first start.
    pub async fn start(
        cfg: GroupConfig,
        core: crate::protocol::coordinator::CoordinatorOptions,
        started: tokio::time::Instant,
        secret: Option<&crate::security::auth::Secret>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<Group, GroupError> {
        let dir = cfg.dir.clone();
        let storage = |source| GroupError::Storage {
            dir: dir.display().to_string(),
            source,
        };
        let log = store::open(&cfg.dir, cfg.segment_max_bytes, cfg.unsafe_no_fsync)
            .map_err(storage)?
            .for_member(cfg.me);
        let stats = log.stats.clone();
        let machine =
            machine::MachineHandle::open(cfg.dir.clone(), core, started).map_err(storage)?;
        let raft_cfg = openraft::Config {
            cluster_name: "twopc".into(),
            election_timeout_min: cfg.election_timeout_ms,
            // openraft's followers refuse to vote for a leader lease of
            // this maximum after their leader's last word. Elections are
            // this group's own timer's ([`elect`]): 750 to 900 ms after the
            // last heartbeat at the default 300 ms, drawn anew every round.
            election_timeout_max: cfg.election_timeout_ms * 3 / 2,
            enable_elect: false,
            heartbeat_interval: cfg.heartbeat_ms,
            install_snapshot_timeout: 10_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            // Log kept behind a snapshot, for a member a little behind:
            // at most one snapshot interval (and at most 1,000 entries).
            max_in_snapshot_log_to_keep: cfg.snapshot_every.min(1000),
            ..Default::default()
        }
        .validate()
        .map_err(|e| GroupError::Config(format!("Raft timing: {e}")))?;
        let auth = net::PortAuth::new(secret).map_err(GroupError::Config)?;
        let greater_log = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let network = net::Network {
            me: cfg.me,
            auth: auth.clone(),
            limits: cfg.limits,
            admin: cfg.admin.clone(),
            greater_log: greater_log.clone(),
        };
        let raft = RaftNode::new(cfg.me, Arc::new(raft_cfg), network, log, machine.clone())
            .await
            .map_err(|e| GroupError::Raft(e.to_string()))?;
        let me = cfg.members.get(&cfg.me).ok_or_else(|| {
            GroupError::Config(format!(
                "`peers` has no entry for this member's id {}",
                cfg.me
            ))
        })?;
        let bind = cfg
            .raft_bind
            .clone()
            .unwrap_or_else(|| me.raft_addr.clone());
        let listener = crate::net::listener::Listener::bind(&bind)
            .await
            .map_err(|source| GroupError::Bind { addr: bind, source })?;
        let admins = net::Admins::default();
        tracker.spawn(net::serve(
            listener,
            raft.clone(),
            auth,
            cfg.me,
            cfg.limits,
            admins.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
        tracker.spawn(elect::drive(
            raft.clone(),
            elect::Timing {
                election_timeout_ms: cfg.election_timeout_ms,
                lease_ms: cfg.election_timeout_ms * 3 / 2,
            },
            greater_log,
            shutdown.clone(),
        ));
        if !cfg.join {
            tracker.spawn(warn_if_peers_differ(
                raft.clone(),
                cfg.members.clone(),
                shutdown.clone(),
            ));
        }
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| GroupError::Raft(e.to_string()))?;
        let first = cfg.members.keys().next().copied();
        if !initialized && !cfg.join {
            // The member with the lowest id forms the group (initialising
            // starts an election at once; several doing so at the same
            // moment only cost a few terms). The others do it too, with the
            // same membership, if no leader has reached them after a while
            // (the lowest is down): the identical first entries agree.
            let raft = raft.clone();
            let members = cfg.members.clone();
            let delay = match first == Some(cfg.me) {
                true => Duration::ZERO,
                false => Duration::from_millis(cfg.election_timeout_ms * 6),
            };
            tracker.spawn(async move {
                tokio::time::sleep(delay).await;
                if raft.is_initialized().await.unwrap_or(true) {
                    return;
                }
                match raft.initialize(members.clone()).await {
                    Ok(()) => {
                        tracing::info!(members = members.len(), "formed the coordinator group")
                    }
                    Err(e) => tracing::debug!("group already formed: {e}"),
                }
            });
        }
        Ok(Group {
            raft,
            machine,
            cfg: Arc::new(cfg),
            stats,
            admins,
        })
    }

    /// This member's view of the group right now.
    pub fn view(&self) -> GroupView {
        let m = self.raft.metrics().borrow_watched().clone();
        let members: BTreeMap<u64, Member> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        let leader = m
            .current_leader
            .and_then(|id| members.get(&id).map(|n| (id, n.addr.clone())));
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "stopped",
        };
        let replication = m.replication.clone();
        let views = members
            .iter()
            .map(|(id, n)| {
                let matched = if *id == m.id {
                    m.last_log_index
                } else {
                    replication
                        .as_ref()
                        .and_then(|r| r.get(id).cloned().flatten().map(|l| l.index))
                };
                MemberView {
                    id: *id,
                    addr: n.addr.clone(),
                    raft_addr: n.raft_addr.clone(),
                    voter: voters.contains(id),
                    matched_index: matched,
                    lag: match (&replication, matched) {
                        (Some(_), Some(i)) => Some(last.saturating_sub(i)),
                        _ => None,
                    },
                }
            })
            .collect();
        let leader_admin = match leader.as_ref().map(|l| l.0) {
            Some(id) if id == m.id => self.cfg.admin.clone(),
            Some(id) => self
                .admins
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .cloned(),
            None => None,
        };
        GroupView {
            me: m.id,
            role,
            term: m.current_term,
            leader: leader.as_ref().map(|l| l.0),
            leader_addr: leader.map(|l| l.1),
            leader_admin,
            last_log_index: m.last_log_index,
            commit_index: m.last_applied.map(|l| l.index),
            applied_index: self.machine.applied(),
            millis_since_quorum_ack: millis_since_quorum_ack(&m),
            members: views,
        }
    }
}

/// On the leader: milliseconds since a majority last acknowledged it.
fn millis_since_quorum_ack(m: &openraft::RaftMetrics<TypeConfig>) -> Option<u64> {
    m.last_quorum_acked
        .as_ref()
        .map(|at| openraft::Instant::elapsed(&**at).as_millis() as u64)
}

/// Add the member `add` (`ID=HOST:PORT:RAFT_PORT`) or remove the member
/// numbered `remove`: a new member is added as a learner and brought up to
/// date first, then the voters change by joint consensus. On the leader.
pub async fn change_members(
    group: &Group,
    add: Option<String>,
    remove: Option<u64>,
) -> Result<(), String> {
    const LIMIT: Duration = Duration::from_secs(60);
    let voters: std::collections::BTreeSet<u64> = group
        .raft
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    let target = match (add, remove) {
        (Some(spec), None) => {
            let (id, member) = parse_peer(&spec)?;
            if voters.contains(&id) {
                return Err(format!(
                    "member {id} is already in the group; remove it first to move it"
                ));
            }
            tokio::time::timeout(LIMIT, group.raft.add_learner(id, member.clone(), true))
                .await
                .map_err(|_| format!("member {id} at {} did not catch up within {LIMIT:?}; is it running with `join: true` and the same secret?", member.raft_addr))?
                .map_err(|e| format!("cannot add member {id}: {e}"))?;
            let mut v = voters.clone();
            v.insert(id);
            v
        }
        (None, Some(id)) => {
            if !voters.contains(&id) {
                return Err(format!(
                    "member {id} is not in the group; members: {}",
                    voters
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if voters.len() == 1 {
                return Err("the group's last member cannot be removed".into());
            }
            let mut v = voters.clone();
            v.remove(&id);
            v
        }
        _ => return Err("give exactly one of add (ID=HOST:PORT:RAFT_PORT) or remove (ID)".into()),
    };
    tokio::time::timeout(LIMIT, group.raft.change_membership(target, false))
        .await
        .map_err(|_| format!("the membership change did not commit within {LIMIT:?}; check that a majority of the members is up"))?
        .map_err(|e| format!("the membership change failed: {e}"))?;
    Ok(())
}

/// What `status` says about the group.
#[derive(Clone, Debug, Serialize)]
pub struct GroupView {
    /// This member's id.
    pub me: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `stopped`.
    pub role: &'static str,
    pub term: u64,
    pub leader: Option<u64>,
    /// The leader's coordinator port.
    pub leader_addr: Option<String>,
    /// The leader's admin HTTP address, when it has an admin API and has
    /// announced it to this member.
    pub leader_admin: Option<String>,
    pub last_log_index: Option<u64>,
    /// Highest index known committed and applied here.
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// On the leader: milliseconds since a majority last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    pub members: Vec<MemberView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemberView {
    pub id: u64,
    pub addr: String,
    pub raft_addr: String,
    pub voter: bool,
    /// On the leader: the member's last log index known to match.
    pub matched_index: Option<u64>,
    /// On the leader: entries the member is behind.
    pub lag: Option<u64>,
}

/// Once this member knows the group's membership (from its log, or from
/// the leader), warn when it is not what `peers` says: `peers` only forms
/// the group, and members added or removed since (or a member given other
/// `peers` than the rest) leave it out of date.
async fn warn_if_peers_differ(
    raft: RaftNode,
    peers: BTreeMap<u64, Member>,
    shutdown: CancellationToken,
) {
    let mut metrics = raft.metrics();
    loop {
        let group: BTreeMap<u64, Member> = {
            let m = metrics.borrow_and_update();
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, n)| (*id, n.clone()))
                .collect()
        };
        if !group.is_empty() {
            if let Some(why) = peers_differ(&peers, &group) {
                tracing::warn!(
                    "`peers` does not match the coordinator group's membership: {why}. \
                     `peers` only forms the group; the group's own membership (changed with \
                     `twopc cluster add` and `remove`) is what counts. Update `peers` on every \
                     member to match `twopc cluster status`"
                );
            }
            return;
        }
        crate::sim::select! {
            _ = shutdown.cancelled() => return,
            r = metrics.changed() => if r.is_err() { return },
        }
    }
}

/// How `peers` and the group's membership differ, if they do.
fn peers_differ(peers: &BTreeMap<u64, Member>, group: &BTreeMap<u64, Member>) -> Option<String> {
    let show = |m: &BTreeMap<u64, Member>, ids: &[u64]| {
        ids.iter()
            .map(|id| format!("{id}={}", m[id]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing: Vec<u64> = group
        .keys()
        .filter(|id| !peers.contains_key(id))
        .copied()
        .collect();
    let extra: Vec<u64> = peers
        .keys()
        .filter(|id| !group.contains_key(id))
        .copied()
        .collect();
    let moved: Vec<u64> = peers
        .iter()
        .filter(|(id, m)| group.get(id).is_some_and(|g| g != *m))
        .map(|(id, _)| *id)
        .collect();
    let mut why = Vec::new();
    if !missing.is_empty() {
        why.push(format!(
            "the group has {} not in `peers`",
            show(group, &missing)
        ));
    }
    if !extra.is_empty() {
        why.push(format!(
            "`peers` has {}, not in the group",
            show(peers, &extra)
        ));
    }
    if !moved.is_empty() {
        why.push(format!(
            "the group has {} where `peers` says {}",
            show(group, &moved),
            show(peers, &moved)
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// How long records nobody waits for may wait for a forced one (the
/// driver's tick, 20 ms, proposes them at the latest on its next turn
/// after this), and how many may wait.
const UNFORCED_MAX_WAIT: Duration = Duration::from_millis(5);
const UNFORCED_MAX_RECORDS: usize = 256;

/// A leader's records not yet proposed. Records nobody waits for (a
/// transaction's `end`) wait a little for a forced one to ride with: each
/// entry costs a forced write on every member and its own AppendEntries.
#[derive(Default)]
struct Pending {
    records: Vec<Record>,
    /// When the oldest record came, while none of them is forced.
    unforced_since: Option<tokio::time::Instant>,
}

impl Pending {
    fn push(&mut self, record: &Record, sync: bool, now: tokio::time::Instant) {
        self.records.push(record.clone());
        if sync {
            self.unforced_since = None;
        } else if self.records.len() == 1 {
            self.unforced_since = Some(now);
        }
    }

    /// Should the records be proposed now?
    fn due(&self, now: tokio::time::Instant) -> bool {
        match self.unforced_since {
            _ if self.records.is_empty() => false,
            None => true,
            Some(since) => {
                self.records.len() >= UNFORCED_MAX_RECORDS
                    || now.duration_since(since) >= UNFORCED_MAX_WAIT
            }
        }
    }

    fn take(&mut self) -> Vec<Record> {
        self.unforced_since = None;
        std::mem::take(&mut self.records)
    }
}

/// Most Raft entries proposed and not yet committed at once; past it the
/// leader's turns are coalesced into fewer, larger entries.
const PROPOSALS_IN_FLIGHT: usize = 32;

/// The log a leader's driver persists to: records are proposed to Raft, one
/// entry per turn, and positions count as durable once Raft committed
/// their entry. The driver proposes itself, on its own task: the entry is
/// in Raft's queue before the driver waits for anything. Past
/// [`PROPOSALS_IN_FLIGHT`] the records wait in `pending` and go together
/// once an entry commits (which also wakes the driver, see [`Commit`]).
/// Once `lost` is cancelled nothing more is proposed.
pub struct RaftLog {
    pending: Pending,
    next: u64,
    /// Position of the last record appended with `sync`.
    last_forced: u64,
    durable: watch::Receiver<u64>,
    durable_tx: Arc<watch::Sender<u64>>,
    raft: RaftNode,
    slots: Arc<tokio::sync::Semaphore>,
    lost: CancellationToken,
    pub stats: Arc<WalStats>,
}

impl RaftLog {
    /// Start proposing for the leader of `term`. `lost` is cancelled when
    /// a proposal fails (this member is no longer the leader). Nothing of
    /// this leadership reaches Raft after the log is dropped (see
    /// [`await_leadership`]'s barrier).
    pub fn start(group: &Group, lost: CancellationToken) -> RaftLog {
        let (durable_tx, durable) = watch::channel(0);
        RaftLog {
            pending: Pending::default(),
            next: 0,
            last_forced: 0,
            durable,
            durable_tx: Arc::new(durable_tx),
            raft: group.raft.clone(),
            slots: Arc::new(tokio::sync::Semaphore::new(PROPOSALS_IN_FLIGHT)),
            lost,
            stats: group.stats.clone(),
        }
    }

    pub fn append(&mut self, record: &Record, sync: bool) -> u64 {
        self.pending.push(record, sync, tokio::time::Instant::now());
        self.next += 1;
        if sync {
            self.last_forced = self.next;
        }
        self.next
    }

    /// What a message sent after durability waits for: the last record
    /// appended with `sync` (as with a local log).
    pub fn barrier(&self) -> u64 {
        self.last_forced
    }

    pub fn durable(&self) -> u64 {
        *self.durable.borrow()
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    /// Records to propose now (see [`Pending`]), and a slot for them.
    pub fn backlogged(&self) -> bool {
        self.pending.due(tokio::time::Instant::now()) && self.slots.available_permits() > 0
    }

    /// Propose the records waiting as one entry, if a slot is free (else
    /// they wait for the next turn after a commit). A proposal that cannot
    /// be made loses the leadership.
    pub async fn drain(&mut self) {
        if self.pending.records.is_empty() || self.lost.is_cancelled() {
            return;
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return;
        };
        let records = self.pending.take();
        let end = self.next;
        let batch = match Batch::new(&records) {
            Ok(b) => b,
            // Never seen: records are plain data. Nothing of them is
            // durable, so nothing may be released: step down.
            Err(e) => {
                tracing::error!("cannot encode records for Raft: {e}; stepping down");
                self.lost.cancel();
                return;
            }
        };
        if crate::sim::bug(crate::sim::Bug::GroupDecisionBeforeCommitted) {
            self.durable_tx.send_replace(end);
        }
        let commit = Commit {
            end,
            durable: self.durable_tx.clone(),
            lost: self.lost.clone(),
            committed: false,
            slot: Some(slot),
            _result: std::marker::PhantomData,
        };
        if let Err(e) = self.raft.client_write_ff(batch, Some(commit)).await {
            tracing::warn!("cannot propose to Raft: {e}; stepping down");
            self.lost.cancel();
        }
    }
}

/// What openraft tells of one proposal, on the leader's Raft task: its
/// entry committed (a majority has it on disk), then applied, or it failed.
/// The commit advances `durable` there and then, so the driver is the next
/// to run and sends what the entry held back before anything else the
/// commit set going (the state machine's apply, the commit index for the
/// followers). A proposal that completes without having committed, or is
/// dropped, failed: this member is no longer the leader, so `lost`.
pub struct Commit<T> {
    /// The driver's log position the entry's records end at.
    end: u64,
    durable: Arc<watch::Sender<u64>>,
    lost: CancellationToken,
    committed: bool,
    /// One of [`PROPOSALS_IN_FLIGHT`], returned once the entry commits
    /// (or the proposal fails).
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    _result: std::marker::PhantomData<fn(T)>,
}

impl<T> Commit<T> {
    fn failed(&self) {
        if !self.committed && !self.lost.is_cancelled() {
            tracing::info!("a proposal was not committed; stepping down");
            self.lost.cancel();
        }
    }
}

impl<T: openraft::OptionalSend + 'static> openraft::raft::responder::Responder<TypeConfig, T>
    for Commit<T>
{
    fn on_commit(&mut self, _log_id: LogId) {
        self.committed = true;
        self.slot = None;
        let end = self.end;
        self.durable.send_if_modified(|d| {
            let later = end > *d;
            *d = (*d).max(end);
            later
        });
    }

    fn on_complete(mut self, _result: T) {
        self.failed();
        // Done: nothing more to report when dropped.
        self.committed = true;
    }
}

impl<T> Drop for Commit<T> {
    fn drop(&mut self) {
        self.failed();
    }
}

/// Wait until this member may lead: Raft made it leader, a majority
/// confirmed it, and its state machine has applied everything committed
/// before its term (so it knows every durable decision). Returns the term.
pub async fn await_leadership(
    group: &Group,
    shutdown: &CancellationToken,
) -> Result<Option<u64>, String> {
    let mut metrics = group.raft.metrics();
    loop {
        let (leader, term, stopped) = {
            let m = metrics.borrow_and_update();
            (
                m.state == ServerState::Leader,
                m.current_term,
                m.running_state.as_ref().err().map(|e| e.to_string()),
            )
        };
        if let Some(why) = stopped {
            return Err(format!("Raft stopped: {why}"));
        }
        if leader {
            let check = tokio::time::timeout(
                Duration::from_millis(group.cfg.election_timeout_ms * 2),
                group
                    .raft
                    .ensure_linearizable(openraft::ReadPolicy::ReadIndex),
            )
            .await;
            // Then a barrier entry through the log, whose reply comes once
            // it and everything before it are applied. Everything includes
            // what this member proposed while it led before in this same
            // term (it lost contact with the majority and stepped down, but
            // Raft kept it leader): those entries are not committed yet and
            // not in the state machine, and a decision among them would
            // otherwise be presumed aborted now and committed later.
            tracing::debug!(?check, "await_leadership: linearizable");
            let barrier = async {
                check.ok()?.ok()?;
                group.raft.client_write(Batch::empty()).await.ok()
            };
            let applied = tokio::time::timeout(
                Duration::from_millis(group.cfg.election_timeout_ms * 2),
                barrier,
            )
            .await;
            tracing::debug!(?applied, "await_leadership: barrier");
            if let Ok(Some(_)) = applied {
                let still = {
                    let m = group.raft.metrics().borrow_watched().clone();
                    m.state == ServerState::Leader && m.current_term == term
                };
                if still {
                    return Ok(Some(term));
                }
            }
            // Not confirmed (a majority is unreachable, which can fail at
            // once): wait before asking again rather than on the next
            // metrics change, which each failed round trip makes.
            crate::sim::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(Duration::from_millis(group.cfg.heartbeat_ms.max(10))) => {}
            }
            continue;
        }
        crate::sim::select! {
            _ = shutdown.cancelled() => return Ok(None),
            r = metrics.changed() => if r.is_err() { return Err("Raft stopped".into()) },
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// Cancel `lost` once this member stops being the leader of `term`, or has
/// not heard from a majority for an election timeout (a leader cut off from
/// the others stops deciding before they elect another).
pub async fn watch_leadership(group: Group, term: u64, lost: CancellationToken) {
    let limit = group.cfg.election_timeout_ms;
    loop {
        let (ok, why) = {
            let m = group.raft.metrics().borrow_watched().clone();
            if m.state != ServerState::Leader || m.current_term != term {
                (false, format!("no longer the leader of term {term}"))
            } else if millis_since_quorum_ack(&m).is_some_and(|ms| ms > limit) {
                (
                    false,
                    format!("no majority heard from for more than {limit} ms (raft_election_timeout_ms)"),
                )
            } else {
                (true, String::new())
            }
        };
        if !ok {
            tracing::warn!("stepping down: {why}");
            lost.cancel();
            return;
        }
        crate::sim::select! {
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch is the JSON of its records, encoded once: the same text as
    /// an entry of a list of records (what journals written before hold),
    /// and it reads back from either.
    #[test]
    fn a_batch_is_its_records_json_and_reads_back_from_the_older_form() {
        #[derive(Serialize)]
        struct Older {
            records: Vec<Record>,
        }
        let records = vec![
            Record::Decision {
                txn: crate::protocol::TxnId("t-1".into()),
                decision: crate::protocol::Decision::Commit,
                participants: vec!["p1".into(), "p2".into()],
                client_named: false,
            },
            Record::End {
                txn: crate::protocol::TxnId("t-1".into()),
            },
        ];
        let older = serde_json::to_string(&Older {
            records: records.clone(),
        })
        .unwrap();
        let batch = Batch::new(&records).unwrap();
        assert_eq!(serde_json::to_string(&batch).unwrap(), older);
        let back: Batch = serde_json::from_str(&older).unwrap();
        assert_eq!(back, batch);
        assert_eq!(back.records().unwrap(), records);
        let bad: Batch = serde_json::from_str(r#"{"records":[{"kind":"no such kind"}]}"#).unwrap();
        assert!(
            bad.records().is_err(),
            "records this build cannot read are an error"
        );
    }

    /// A proposal's commit advances `durable` to its end (never back); one
    /// that completes without having committed, or is dropped, cancels
    /// `lost`; its slot is returned either way.
    #[test]
    fn a_commit_advances_durable_and_a_failure_loses_the_leadership() {
        use openraft::raft::responder::Responder;
        use openraft::vote::RaftLeaderId;
        let (tx, rx) = watch::channel(0u64);
        let durable = Arc::new(tx);
        let slots = Arc::new(tokio::sync::Semaphore::new(2));
        let lost = CancellationToken::new();
        let commit = |end: u64| Commit::<()> {
            end,
            durable: durable.clone(),
            lost: lost.clone(),
            committed: false,
            slot: Some(slots.clone().try_acquire_owned().expect("a free slot")),
            _result: std::marker::PhantomData,
        };
        let log_id = LogId::new(CommittedLeaderId::new(1, 1), 7);
        let (mut a, mut b) = (commit(5), commit(9));
        assert_eq!(slots.available_permits(), 0);
        b.on_commit(log_id);
        assert_eq!(*rx.borrow(), 9);
        a.on_commit(log_id);
        assert_eq!(*rx.borrow(), 9, "durable never goes back");
        a.on_complete(());
        b.on_complete(());
        assert!(!lost.is_cancelled(), "committed and applied: still leading");
        assert_eq!(slots.available_permits(), 2, "slots returned");
        commit(12).on_complete(());
        assert!(
            lost.is_cancelled(),
            "completed without a commit: not leading"
        );
        assert_eq!(*rx.borrow(), 9);
        let lost = CancellationToken::new();
        drop(Commit::<()> {
            end: 13,
            durable: durable.clone(),
            lost: lost.clone(),
            committed: false,
            slot: None,
            _result: std::marker::PhantomData,
        });
        assert!(lost.is_cancelled(), "dropped without a word: not leading");
        assert_eq!(slots.available_permits(), 2);
    }

    #[test]
    fn records_nobody_waits_for_wait_for_a_forced_one_a_little() {
        let t0 = tokio::time::Instant::now();
        let end = |n: u32| Record::End {
            txn: crate::protocol::TxnId(format!("t{n}")),
        };
        let mut p = Pending::default();
        assert!(!p.due(t0), "nothing to propose");
        p.push(&end(1), false, t0);
        p.push(&end(2), false, t0 + Duration::from_millis(1));
        assert!(!p.due(t0 + Duration::from_millis(4)), "an end waits");
        assert!(
            p.due(t0 + UNFORCED_MAX_WAIT),
            "not longer than UNFORCED_MAX_WAIT"
        );
        // A forced record takes them along at once.
        p.push(&end(3), true, t0 + Duration::from_millis(2));
        assert!(p.due(t0 + Duration::from_millis(2)));
        assert_eq!(p.take().len(), 3);
        assert!(!p.due(t0 + Duration::from_secs(1)), "taken");
        // An unforced record after a forced one does not hold it back.
        p.push(&end(4), true, t0);
        p.push(&end(5), false, t0);
        assert!(p.due(t0));
        p.take();
        // Nor do more than UNFORCED_MAX_RECORDS wait.
        for n in 0..UNFORCED_MAX_RECORDS as u32 {
            assert!(!p.due(t0), "{n} waiting");
            p.push(&end(n), false, t0);
        }
        assert!(p.due(t0));
    }

    #[test]
    fn peers_parse_or_say_what_is_expected() {
        let (id, m) = parse_peer("2=127.0.0.1:7001:7101").unwrap();
        assert_eq!(id, 2);
        assert_eq!(m.addr, "127.0.0.1:7001");
        assert_eq!(m.raft_addr, "127.0.0.1:7101");
        for bad in [
            "127.0.0.1:7001:7101",
            "0=127.0.0.1:1:2",
            "x=h:1:2",
            "1=h:1",
            "1=:1:2",
            "1=h:0:5",
        ] {
            let e = parse_peer(bad).unwrap_err();
            assert!(e.contains("ID=HOST:PORT:RAFT_PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn peers_that_differ_from_the_group_say_how() {
        let set = |peers: &[&str]| -> BTreeMap<u64, Member> {
            peers.iter().map(|p| parse_peer(p).unwrap()).collect()
        };
        let three = set(&["1=h:1:11", "2=h:2:12", "3=h:3:13"]);
        assert_eq!(peers_differ(&three, &three), None);
        // A member added with `twopc cluster add`, one removed, one moved.
        let group = set(&["1=h:1:11", "2=h:2:22", "4=h:4:14"]);
        let why = peers_differ(&three, &group).unwrap();
        assert!(
            why.contains("the group has 4=h:4 (raft h:14) not in `peers`"),
            "{why}"
        );
        assert!(
            why.contains("`peers` has 3=h:3 (raft h:13), not in the group"),
            "{why}"
        );
        assert!(
            why.contains("the group has 2=h:2 (raft h:22) where `peers` says 2=h:2 (raft h:12)"),
            "{why}"
        );
    }
}

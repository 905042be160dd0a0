//! The Raft log of a coordinator member, on disk: the member's write-ahead
//! log. A journal of operations (entries appended, a conflicting suffix
//! truncated, a prefix purged, the vote saved), each a CRC-checked frame,
//! written by one thread that syncs once per batch of operations (group
//! commit; an operation nobody waits on, such as a saved commit index, is
//! held back and written with the next one that is waited on). A follower
//! writes and syncs the entries its leader sent on its own thread when the
//! writer thread is idle (see [`LogStore::append`]). Reopening replays the
//! journal into memory; a torn or corrupt frame at the tail is where the
//! journal ends (it was never synced, so no one was told about it). The
//! file is extended with zeros ahead of the frames, a megabyte at a time,
//! so that a sync has no new file size to record; a zero header ends the
//! journal when it is read. When the journal grows past a segment, the
//! thread rewrites what is live into a new file and removes the old one.

use super::{Entry, LogId, TypeConfig, Vote};
use crate::wal::WalStats;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// One journal operation. Externally tagged: an internally tagged enum
/// goes through serde's buffered content, which cannot read a membership's
/// member ids back as map keys.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    Vote {
        vote: Vote,
    },
    Append {
        entries: Vec<Entry>,
    },
    /// Entries from `since` on were replaced (a new leader's log wins).
    Truncate {
        since: u64,
    },
    /// Entries up to `upto` are in a snapshot and gone from the log.
    Purge {
        upto: LogId,
    },
    Committed {
        committed: Option<LogId>,
    },
}

/// What the journal holds once replayed.
#[derive(Default)]
struct State {
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
    /// Frames of operations nobody waits for (see [`Done::needs_sync`]),
    /// applied here and not yet handed to the writer: they go to the file
    /// in front of the next operation that is waited for, covered by its
    /// sync. Holding them here rather than writing them at once saves the
    /// writer a wake-up and a write per commit index saved.
    unwritten: Vec<u8>,
}

/// Most bytes of operations nobody waits for held back (see
/// [`State::unwritten`]) before they are handed to the writer anyway.
const UNWRITTEN_MAX_BYTES: usize = 64 * 1024;

impl State {
    fn apply(&mut self, op: Op) {
        match op {
            Op::Vote { vote } => self.vote = Some(vote),
            Op::Append { entries } => {
                for e in entries {
                    self.entries.insert(e.log_id.index, e);
                }
            }
            Op::Truncate { since } => {
                self.entries.split_off(&since);
            }
            Op::Purge { upto } => {
                self.entries = self.entries.split_off(&(upto.index + 1));
                self.purged = Some(upto);
            }
            Op::Committed { committed } => self.committed = committed,
        }
    }

    /// The operations that rebuild this state in a fresh journal.
    fn live_ops(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        if let Some(vote) = self.vote {
            ops.push(Op::Vote { vote });
        }
        if let Some(upto) = self.purged {
            ops.push(Op::Purge { upto });
        }
        ops.push(Op::Committed {
            committed: self.committed,
        });
        if !self.entries.is_empty() {
            ops.push(Op::Append {
                entries: self.entries.values().cloned().collect(),
            });
        }
        ops
    }
}

/// Frame: 4 bytes length, 4 bytes CRC-32C of the payload, the JSON payload.
fn frame(op: &Op) -> std::io::Result<Vec<u8>> {
    let payload = serde_json::to_vec(op)
        .map_err(|e| io_err(format!("cannot encode an operation for it: {e}")))?;
    let mut f = Vec::with_capacity(payload.len() + 8);
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    f.extend_from_slice(&payload);
    Ok(f)
}

/// The operations in `buf`, and how many bytes of it are whole frames.
fn unframe(buf: &[u8]) -> (Vec<Op>, usize) {
    let mut ops = Vec::new();
    let mut at = 0;
    while buf.len() - at >= 8 {
        let len = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(buf[at + 4..at + 8].try_into().unwrap_or_default());
        let Some(payload) = buf.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        let Ok(op) = serde_json::from_slice(payload) else {
            break;
        };
        ops.push(op);
        at += 8 + len;
    }
    (ops, at)
}

const JOURNAL: &str = "raft.journal";

const REWRITE: &str = "raft.journal.new";

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("the Raft log: {e}"))
}

/// A job for the writer.
enum Job {
    /// Write these frames (and sync, when `done` waits for it), then report.
    Write { frames: Vec<u8>, done: Done },
}

enum Done {
    Flushed(IOFlushed<TypeConfig>),
    Waiting(oneshot::Sender<Result<(), String>>),
    Nothing,
}

impl Done {
    /// Does someone wait for this to be on disk? Saving the commit index,
    /// truncating and purging wait for nothing: they are held back and
    /// written in order in front of the next operation that is waited for,
    /// and its sync covers them (see [`State::unwritten`]). openraft
    /// re-learns the commit index from the leader after a restart, and a
    /// truncation or a purge that a crash loses leaves no hole: the journal
    /// keeps a prefix of the operations (it is cut at the first damaged
    /// frame, and held-back operations reach it only in order).
    fn needs_sync(&self) -> bool {
        !matches!(self, Done::Nothing)
    }

    fn complete(self, result: &Result<(), String>) {
        match self {
            Done::Flushed(cb) => cb.io_completed(
                result
                    .clone()
                    .map_err(|e| std::io::Error::other(e.to_string())),
            ),
            Done::Waiting(tx) => {
                let _ = tx.send(result.clone());
            }
            Done::Nothing => {}
        }
    }
}

/// The Raft log store handed to openraft; cheap to clone (the reader is a
/// clone).
#[derive(Clone)]
pub struct LogStore {
    state: Arc<Mutex<State>>,
    tx: mpsc::UnboundedSender<Job>,
    /// The writer over a file, shared with its thread: a follower's
    /// appends are written by the caller when the thread is idle (see
    /// [`LogStore::append`]). None over a simulated disk.
    writer: Option<Arc<Mutex<Writer>>>,
    /// Jobs sent to the writer and not yet done.
    queued: Arc<AtomicUsize>,
    /// This member's id, once known ([`LogStore::for_member`]): entries
    /// written under another leader are a follower's.
    me: Option<u64>,
    pub stats: Arc<WalStats>,
}

/// Where the journal lives: a file, or inside a simulation a simulated
/// disk (one segment; a rewrite replaces it with the next).
enum Backing {
    File {
        dir: PathBuf,
        file: File,
        /// Bytes the file holds: the journal's frames, then zeros written
        /// ahead of them (see [`crate::wal::PREALLOCATE_BYTES`]).
        allocated: u64,
    },
    #[cfg(feature = "sim")]
    Sim { disk: crate::sim::SimDisk, seq: u64 },
}

/// Open (or create) the journal in `dir` and start its writer.
/// `segment_max_bytes`: past it the journal is rewritten with what is live.
/// `unsafe_no_fsync`: write without syncing (benchmarks only: a machine
/// crash can lose what Raft counted as committed).
pub fn open(
    dir: &Path,
    segment_max_bytes: u64,
    unsafe_no_fsync: bool,
) -> std::io::Result<LogStore> {
    #[cfg(feature = "sim")]
    if let Some(disk) = crate::sim::disk(dir) {
        return Ok(open_sim(disk, segment_max_bytes));
    }
    std::fs::create_dir_all(dir)?;
    let path = dir.join(JOURNAL);
    // A rewrite that did not finish: the old journal is still whole.
    let _ = std::fs::remove_file(dir.join(REWRITE));
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(&path) {
        f.read_to_end(&mut buf)?;
    }
    let (state, whole) = replay(&buf);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&path)?;
    let mut allocated = buf.len() as u64;
    if buf[whole..].iter().any(|b| *b != 0) {
        tracing::warn!(
            path = %path.display(),
            dropped_bytes = buf.len() - whole,
            "the Raft log ends in a torn or corrupt frame (never synced); dropping it"
        );
        file.set_len(whole as u64)?;
        file.sync_all()?;
        allocated = whole as u64;
    }
    let (mut store, writer, rx) = assemble(
        state,
        Backing::File {
            dir: dir.to_path_buf(),
            file,
            allocated,
        },
        whole as u64,
        segment_max_bytes,
        unsafe_no_fsync,
    );
    let writer = Arc::new(Mutex::new(writer));
    store.writer = Some(writer.clone());
    let queued = store.queued.clone();
    std::thread::Builder::new()
        .name("raft-log".into())
        .spawn(move || Writer::run_thread(&writer, &queued, rx))?;
    Ok(store)
}

/// The journal on a simulated disk, its writer a task (the simulation runs
/// every node on one thread).
#[cfg(feature = "sim")]
fn open_sim(disk: crate::sim::SimDisk, segment_max_bytes: u64) -> LogStore {
    let segments = disk.segments();
    let (seq, buf) = segments.last().cloned().unwrap_or((1, Vec::new()));
    let (state, whole) = replay(&buf);
    if whole < buf.len() {
        tracing::warn!(
            dropped_bytes = buf.len() - whole,
            "the Raft log ends in a torn or corrupt frame (never synced); dropping it"
        );
    }
    disk.create(seq);
    disk.truncate(seq, whole);
    let (store, writer, rx) = assemble(
        state,
        Backing::Sim { disk, seq },
        whole as u64,
        segment_max_bytes,
        false,
    );
    let queued = store.queued.clone();
    tokio::spawn(writer.run_task(queued, rx));
    store
}

/// The state a journal's whole frames rebuild, and how many bytes they take.
///
/// The saved vote comes back uncommitted. openraft restores a member whose
/// committed vote names itself as leader of the same term at once, without
/// an election; but entries it had appended and sent before a crash may be
/// missing from its own journal (written, not yet synced), while a follower
/// has them. Leading on in the same term it would write different entries
/// under the same term and index, and Raft's log matching (same term and
/// index, same entry) would no longer hold: a later leader could commit the
/// lost entry over decisions taken since. An uncommitted vote for the same
/// term and leader still keeps this member from voting for anyone else in
/// that term; it only makes the group elect a leader of a new term.
fn replay(buf: &[u8]) -> (State, usize) {
    let (ops, whole) = unframe(buf);
    let mut state = State::default();
    for op in ops {
        state.apply(op);
    }
    if let Some(vote) = state.vote.as_mut() {
        vote.committed = false;
    }
    (state, whole)
}

/// The coordinator records in the entries a journal's whole frames hold
/// (after its truncations and purges): for checks that read a member's
/// disk, such as the runtime simulation's.
pub fn records_in_journal(bytes: &[u8]) -> Vec<crate::protocol::Record> {
    let (state, _) = replay(bytes);
    state
        .entries
        .into_values()
        .filter_map(|e| match e.payload {
            openraft::EntryPayload::Normal(batch) => batch.records().ok(),
            _ => None,
        })
        .flatten()
        .collect()
}

fn assemble(
    state: State,
    backing: Backing,
    size: u64,
    segment_max_bytes: u64,
    unsafe_no_fsync: bool,
) -> (LogStore, Writer, mpsc::UnboundedReceiver<Job>) {
    let state = Arc::new(Mutex::new(state));
    let stats = Arc::new(WalStats::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = Writer {
        backing,
        size,
        segment_max_bytes,
        unsafe_no_fsync,
        failed: false,
        state: state.clone(),
        stats: stats.clone(),
    };
    let store = LogStore {
        state,
        tx,
        writer: None,
        queued: Arc::new(AtomicUsize::new(0)),
        me: None,
        stats,
    };
    (store, writer, rx)
}

struct Writer {
    backing: Backing,
    size: u64,
    segment_max_bytes: u64,
    unsafe_no_fsync: bool,
    /// A write or sync failed: what the file holds is unknown, and every
    /// later operation fails.
    failed: bool,
    state: Arc<Mutex<State>>,
    stats: Arc<WalStats>,
}

fn lock_writer(w: &Mutex<Writer>) -> std::sync::MutexGuard<'_, Writer> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

/// Jobs waiting besides `first` (up to a bound): one write and one sync
/// for all of them.
fn take_batch(first: Job, rx: &mut mpsc::UnboundedReceiver<Job>) -> (Vec<u8>, Vec<Done>) {
    let mut buf = Vec::new();
    let mut dones = Vec::new();
    let mut next = Some(first);
    while let Some(Job::Write { frames, done }) = next {
        buf.extend_from_slice(&frames);
        dones.push(done);
        if dones.len() >= 4096 {
            break;
        }
        next = rx.try_recv().ok();
    }
    (buf, dones)
}

impl Writer {
    /// The writer thread over a file: write, sync, report, per batch. After
    /// a failed write or sync it stops (what the file holds is unknown):
    /// every later operation fails, and openraft stops this member.
    fn run_thread(
        shared: &Mutex<Writer>,
        queued: &AtomicUsize,
        mut rx: mpsc::UnboundedReceiver<Job>,
    ) {
        while let Some(first) = rx.blocking_recv() {
            let (buf, dones) = take_batch(first, &mut rx);
            let mut w = lock_writer(shared);
            let result = if w.failed {
                Err("an earlier write or sync failed".to_string())
            } else {
                let sync = dones.iter().any(Done::needs_sync);
                w.write_file(&buf, sync).map_err(|e| e.to_string())
            };
            let ok = w.note_batch(&buf, &result);
            let rewrite = w.size > w.segment_max_bytes;
            // The writer is idle before anyone hears back: an append that
            // follows at once may be written by its caller.
            drop(w);
            queued.fetch_sub(dones.len(), Ordering::AcqRel);
            for d in dones {
                d.complete(&result);
            }
            if !ok {
                return;
            }
            if rewrite {
                let mut w = lock_writer(shared);
                if let Err(e) = w.rewrite_file() {
                    tracing::error!("cannot rewrite the Raft log: {e}; keeping the old one");
                }
            }
        }
    }

    /// Report a batch's result; false when the writer must stop.
    fn finish_batch(&mut self, buf: &[u8], dones: Vec<Done>, result: Result<(), String>) -> bool {
        let ok = self.note_batch(buf, &result);
        for d in dones {
            d.complete(&result);
        }
        ok
    }

    /// Count a batch written, or note that writing failed; false when the
    /// writer must stop.
    fn note_batch(&mut self, buf: &[u8], result: &Result<(), String>) -> bool {
        match result {
            Ok(()) => {
                self.stats
                    .bytes
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                self.size += buf.len() as u64;
            }
            Err(e) => {
                self.failed = true;
                tracing::error!(
                    "cannot write the Raft log: {e}; this member stops taking part until restarted"
                )
            }
        }
        result.is_ok()
    }

    fn write_file(&mut self, buf: &[u8], sync: bool) -> std::io::Result<()> {
        let (file, allocated) = match &mut self.backing {
            Backing::File {
                file, allocated, ..
            } => (file, allocated),
            #[cfg(feature = "sim")]
            Backing::Sim { .. } => return Err(std::io::Error::other("not a file journal")),
        };
        let step = crate::wal::preallocation_step(self.segment_max_bytes);
        crate::wal::write_preallocated(file, buf, self.size, allocated, step)?;
        if !sync || self.unsafe_no_fsync {
            return Ok(());
        }
        let start = std::time::Instant::now();
        file.sync_data()?;
        self.stats.observe_sync(start.elapsed().as_micros() as u64);
        Ok(())
    }

    /// The live operations, framed: what a rewritten journal holds.
    fn live_bytes(&self) -> std::io::Result<Vec<u8>> {
        let ops = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .live_ops();
        let mut buf = Vec::new();
        for op in &ops {
            buf.extend_from_slice(&frame(op)?);
        }
        Ok(buf)
    }

    /// Write what is live to a new file, sync it, and put it in place of
    /// the journal (rename, then sync the directory).
    fn rewrite_file(&mut self) -> std::io::Result<()> {
        let buf = self.live_bytes()?;
        let (dir, file, allocated) = match &mut self.backing {
            Backing::File {
                dir,
                file,
                allocated,
            } => (dir, file, allocated),
            #[cfg(feature = "sim")]
            Backing::Sim { .. } => return Err(std::io::Error::other("not a file journal")),
        };
        let tmp = dir.join(REWRITE);
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(JOURNAL))?;
        File::open(&*dir)?.sync_all()?;
        *file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(JOURNAL))?;
        *allocated = buf.len() as u64;
        self.size = buf.len() as u64;
        self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The writer as a task over a simulated disk: the batch is written
    /// before the sync's delay, so a crash during it finds the batch
    /// written but not synced.
    #[cfg(feature = "sim")]
    async fn run_task(mut self, queued: Arc<AtomicUsize>, mut rx: mpsc::UnboundedReceiver<Job>) {
        while let Some(first) = rx.recv().await {
            let (buf, dones) = take_batch(first, &mut rx);
            queued.fetch_sub(dones.len(), Ordering::AcqRel);
            let Backing::Sim { disk, seq } = &self.backing else {
                return;
            };
            let (disk, seq) = (disk.clone(), *seq);
            disk.write(seq, &buf);
            if !dones.iter().any(Done::needs_sync) {
                if !self.finish_batch(&buf, dones, Ok(())) {
                    return;
                }
                continue;
            }
            let started = tokio::time::Instant::now();
            tokio::time::sleep(disk.sync_delay()).await;
            let result = match disk.sync(seq) {
                crate::sim::SyncOutcome::Synced => Ok(()),
                crate::sim::SyncOutcome::Failed => Err("sync failed (simulated EIO)".to_string()),
            };
            self.stats
                .observe_sync(started.elapsed().as_micros() as u64);
            if !self.finish_batch(&buf, dones, result) {
                return;
            }
            if self.size > self.segment_max_bytes {
                let live = match self.live_bytes() {
                    Ok(live) => live,
                    Err(e) => {
                        tracing::error!("cannot rewrite the Raft log: {e}; keeping the old one");
                        continue;
                    }
                };
                self.size = live.len() as u64;
                disk.replace_with(seq + 1, live);
                self.backing = Backing::Sim { disk, seq: seq + 1 };
                self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// `frames`, after the operations held back in `state` (taken).
fn with_unwritten(state: &mut State, frames: Vec<u8>) -> Vec<u8> {
    if state.unwritten.is_empty() {
        return frames;
    }
    let mut all = std::mem::take(&mut state.unwritten);
    all.extend_from_slice(&frames);
    all
}

impl LogStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This member's store: entries written under another leader are then
    /// appended as a follower's (see [`LogStore::append`]).
    pub fn for_member(mut self, me: u64) -> LogStore {
        self.me = Some(me);
        self
    }

    /// Apply `op` in memory and queue it for the writer (an operation
    /// nobody waits for is held back, see [`State::unwritten`]).
    fn record(&self, op: Op, done: Done) -> std::io::Result<()> {
        let frames = frame(&op)?;
        // Under the lock: the journal gets operations in the order they
        // were applied here.
        let mut state = self.lock();
        state.apply(op);
        if !done.needs_sync() && state.unwritten.len() + frames.len() <= UNWRITTEN_MAX_BYTES {
            state.unwritten.extend_from_slice(&frames);
            return Ok(());
        }
        let frames = with_unwritten(&mut state, frames);
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.tx.send(Job::Write { frames, done }).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            io_err("its writer stopped")
        })
    }

    /// Apply `op` and write and sync it on this thread, if the writer
    /// thread is idle (nothing queued, not writing) and the journal needs
    /// no rewrite after it; else queue it as [`LogStore::record`] does.
    /// Operations reach the file in the order they are applied either way:
    /// nothing is queued before this one, and whatever is queued after it
    /// waits for the writer, held here until this one is written.
    fn record_here(&self, op: Op, done: Done) -> std::io::Result<()> {
        let Some(shared) = &self.writer else {
            return self.record(op, done);
        };
        let frames = frame(&op)?;
        let mut state = self.lock();
        let idle = self.queued.load(Ordering::Acquire) == 0;
        let mut w = match shared.try_lock() {
            Ok(w) if idle && !w.failed && w.size + frames.len() as u64 <= w.segment_max_bytes => w,
            _ => {
                drop(state);
                return self.record(op, done);
            }
        };
        state.apply(op);
        let frames = with_unwritten(&mut state, frames);
        drop(state);
        let result = w.write_file(&frames, true).map_err(|e| e.to_string());
        w.finish_batch(&frames, vec![done], result);
        Ok(())
    }

    /// Apply `op`, and return once it is on disk.
    async fn record_synced(&self, op: Op) -> std::io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.record(op, Done::Waiting(tx))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_err(e)),
            Err(_) => Err(io_err("its writer stopped")),
        }
    }

    /// Index of the last entry, and of the last purged one.
    pub fn bounds(&self) -> (Option<u64>, Option<u64>) {
        let s = self.lock();
        let last = s
            .entries
            .keys()
            .next_back()
            .copied()
            .or(s.purged.map(|p| p.index));
        (last, s.purged.map(|p| p.index))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> std::io::Result<Vec<Entry>> {
        Ok(self
            .lock()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> std::io::Result<Option<Vote>> {
        Ok(self.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> std::io::Result<LogState<TypeConfig>> {
        let s = self.lock();
        let last = s
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(s.purged);
        Ok(LogState {
            last_purged_log_id: s.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> std::io::Result<()> {
        self.record_synced(Op::Vote { vote: *vote }).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> std::io::Result<()> {
        self.record(Op::Committed { committed }, Done::Nothing)
    }

    async fn read_committed(&mut self) -> std::io::Result<Option<LogId>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> std::io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.stats
            .records
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        // A follower's entries (another leader's) are written and synced
        // here when the writer is idle: a follower has nothing to do until
        // they are on disk (its leader waits for the answer before sending
        // more), and the two hand-overs between threads it saves are on
        // the path of every decision. A leader's own appends go to the
        // writer, which syncs them while its thread goes on (replicating
        // them, among other things).
        let theirs = entries
            .last()
            .is_some_and(|e| self.me.is_some_and(|me| e.log_id.leader_id.node_id != me));
        let op = Op::Append { entries };
        if theirs {
            self.record_here(op, Done::Flushed(callback))
        } else {
            self.record(op, Done::Flushed(callback))
        }
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> std::io::Result<()> {
        self.record(
            Op::Truncate {
                since: last.map_or(0, |l| l.index + 1),
            },
            Done::Nothing,
        )
    }

    async fn purge(&mut self, log_id: LogId) -> std::io::Result<()> {
        self.record(Op::Purge { upto: log_id }, Done::Nothing)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CommittedLeaderId, Membership};
    use super::*;
    use futures::FutureExt;
    use openraft::type_config::TypeConfigExt;
    use openraft::vote::RaftLeaderId;
    use openraft::EntryPayload;

    #[test]
    fn a_membership_entry_reads_back() {
        let members: std::collections::BTreeMap<u64, super::super::Member> = (1..=3)
            .map(|i| {
                (
                    i,
                    super::super::Member {
                        addr: format!("127.0.0.1:700{i}"),
                        raft_addr: format!("127.0.0.1:710{i}"),
                    },
                )
            })
            .collect();
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(0, 0), 0),
            payload: EntryPayload::Membership(Membership::from(members)),
        };
        let (ops, n) = unframe(&frame(&Op::Append { entries: vec![e] }).unwrap());
        assert_eq!(ops.len(), 1, "the membership entry must read back");
        assert!(n > 0);
        let Op::Append { entries } = &ops[0] else {
            panic!("not an append")
        };
        let EntryPayload::Membership(m) = &entries[0].payload else {
            panic!("not a membership")
        };
        assert_eq!(m.voter_ids().collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    #[test]
    fn replay_applies_truncate_and_purge_in_order() {
        let mut s = State::default();
        s.apply(Op::Append {
            entries: (1..=5).map(|i| entry(1, i)).collect(),
        });
        s.apply(Op::Truncate { since: 4 });
        s.apply(Op::Append {
            entries: vec![entry(2, 4)],
        });
        s.apply(Op::Purge {
            upto: entry(1, 2).log_id,
        });
        assert_eq!(s.entries.keys().copied().collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(s.entries[&4].log_id.leader_id.term, 2);
        // The same state rebuilt from its live operations.
        let mut again = State::default();
        for op in s.live_ops() {
            again.apply(op);
        }
        assert_eq!(again.entries.len(), 2);
        assert_eq!(again.purged, s.purged);
    }

    #[tokio::test]
    async fn unsafe_no_fsync_writes_the_journal_without_syncing_it() {
        for (no_fsync, syncs) in [(false, 1), (true, 0)] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path(), 1 << 20, no_fsync).unwrap();
            store
                .record_synced(Op::Truncate { since: 7 })
                .await
                .unwrap();
            assert_eq!(
                store.stats.syncs.load(Ordering::Relaxed),
                syncs,
                "unsafe_no_fsync {no_fsync}"
            );
            // Written all the same.
            let bytes = std::fs::read(dir.path().join(JOURNAL)).unwrap();
            assert_eq!(unframe(&bytes).0.len(), 1, "unsafe_no_fsync {no_fsync}");
        }
    }

    /// A journal written by the build before this one (openraft 0.9: a
    /// group of three, one participant, five transactions) reads back whole
    /// under this one: an upgrade keeps every entry and the vote.
    #[test]
    fn a_journal_from_the_openraft_0_9_build_reads_back() {
        let bytes = include_bytes!("testdata/journal-openraft-0.9.bin");
        let (ops, whole) = unframe(bytes);
        assert_eq!(whole, bytes.len(), "every frame must read");
        assert!(ops.len() > 10, "{} operations", ops.len());
        let (state, _) = replay(bytes);
        assert_eq!(state.entries.len(), 11, "entries 0 to 10");
        let vote = state.vote.expect("the vote");
        assert_eq!((vote.leader_id.term, vote.leader_id.node_id), (1, 1));
        let EntryPayload::Membership(m) = &state.entries[&0].payload else {
            panic!("entry 0 is the membership")
        };
        assert_eq!(m.voter_ids().collect::<Vec<_>>(), vec![1, 2, 3]);
        let records = records_in_journal(bytes);
        let decided = records
            .iter()
            .filter(|r| matches!(r, crate::protocol::Record::Decision { .. }))
            .count();
        assert_eq!(decided, 5, "{records:?}");
    }

    #[test]
    fn a_torn_tail_ends_the_journal() {
        let mut buf = frame(&Op::Truncate { since: 7 }).unwrap();
        let whole = buf.len();
        let second = frame(&Op::Truncate { since: 9 }).unwrap();
        buf.extend_from_slice(&second[..second.len() - 3]);
        let (ops, n) = unframe(&buf);
        assert_eq!(ops.len(), 1);
        assert_eq!(n, whole);
        // A flipped byte in the payload fails its checksum.
        let mut bad = frame(&Op::Truncate { since: 7 }).unwrap();
        let last = bad.len() - 1;
        bad[last] ^= 0x20;
        assert_eq!(unframe(&bad).0.len(), 0);
    }

    #[tokio::test]
    async fn entries_and_vote_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), 1 << 20, false).unwrap();
        let vote = Vote::new(3, 2);
        store.save_vote(&vote).await.unwrap();
        store
            .record_synced(Op::Append {
                entries: (1..=3).map(|i| entry(3, i)).collect(),
            })
            .await
            .unwrap();
        drop(store);
        let mut again = open(dir.path(), 1 << 20, false).unwrap();
        assert_eq!(again.read_vote().await.unwrap(), Some(vote));
        let st = again.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id.map(|l| l.index), Some(3));
    }

    #[tokio::test]
    async fn frames_go_over_zeros_written_ahead_and_read_back_after_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL);
        let store = open(dir.path(), 1 << 30, false).unwrap();
        store
            .record_synced(Op::Append {
                entries: (1..=3).map(|i| entry(1, i)).collect(),
            })
            .await
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (ops, whole) = unframe(&bytes);
        assert_eq!(ops.len(), 1);
        assert_eq!(
            bytes.len() as u64,
            crate::wal::PREALLOCATE_BYTES,
            "zeros written ahead"
        );
        assert!(bytes[whole..].iter().all(|b| *b == 0));
        drop(store);
        // Reopened, the next frame goes after the last one, not after the
        // zeros; twice, so that a frame written after a reopen reads back.
        for i in 4..=5 {
            let store = open(dir.path(), 1 << 30, false).unwrap();
            store
                .record_synced(Op::Append {
                    entries: vec![entry(1, i)],
                })
                .await
                .unwrap();
            drop(store);
        }
        let mut again = open(dir.path(), 1 << 30, false).unwrap();
        let got = again.try_get_log_entries(0..100).await.unwrap();
        let indexes: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, vec![1, 2, 3, 4, 5]);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            crate::wal::PREALLOCATE_BYTES,
            "a reopen keeps the zeros ahead"
        );
        // A batch past the zeros extends the file by whole steps.
        let big = Entry {
            log_id: entry(1, 6).log_id,
            payload: EntryPayload::Normal(
                super::super::Batch::new(&[crate::protocol::Record::End {
                    txn: crate::protocol::TxnId("x".repeat(1 << 20)),
                }])
                .unwrap(),
            ),
        };
        again
            .record_synced(Op::Append { entries: vec![big] })
            .await
            .unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            2 * crate::wal::PREALLOCATE_BYTES
        );
        drop(again);
        let mut last = open(dir.path(), 1 << 30, false).unwrap();
        assert_eq!(last.try_get_log_entries(0..100).await.unwrap().len(), 6);
    }

    #[tokio::test]
    async fn a_torn_frame_before_the_zeros_ends_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL);
        let mut bytes = frame(&Op::Append {
            entries: vec![entry(1, 1)],
        })
        .unwrap();
        let whole = bytes.len();
        let torn = frame(&Op::Append {
            entries: vec![entry(1, 2)],
        })
        .unwrap();
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        bytes.resize(4096, 0);
        std::fs::write(&path, &bytes).unwrap();
        let store = open(dir.path(), 1 << 30, false).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            whole as u64,
            "cut at the torn frame"
        );
        store
            .record_synced(Op::Append {
                entries: vec![entry(1, 2)],
            })
            .await
            .unwrap();
        drop(store);
        let mut again = open(dir.path(), 1 << 30, false).unwrap();
        let got = again.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    #[tokio::test]
    async fn a_committed_vote_comes_back_uncommitted() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), 1 << 20, false).unwrap();
        store.save_vote(&Vote::new_committed(4, 1)).await.unwrap();
        drop(store);
        let mut again = open(dir.path(), 1 << 20, false).unwrap();
        let vote = again.read_vote().await.unwrap().unwrap();
        assert_eq!(vote, Vote::new(4, 1), "same term and leader, not committed");
        assert!(!vote.committed);
    }

    fn entry_of(term: u64, leader: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, leader), index),
            payload: EntryPayload::Blank,
        }
    }

    /// The operations the journal's file holds.
    fn ops_on_file(dir: &Path) -> Vec<Op> {
        unframe(&std::fs::read(dir.join(JOURNAL)).unwrap()).0
    }

    /// Append `e`; the report of its sync, to check or wait for.
    async fn append_one(
        store: &mut LogStore,
        e: Entry,
    ) -> openraft::alias::OneshotReceiverOf<TypeConfig, std::io::Result<()>> {
        let (tx, rx) = TypeConfig::oneshot();
        store.append(vec![e], IOFlushed::signal(tx)).await.unwrap();
        rx
    }

    /// A follower (member 2) appending its leader's (member 1) entries
    /// writes and syncs them before `append` returns, on its own thread;
    /// its own entries, as leader, are synced by the writer thread.
    #[tokio::test]
    async fn a_followers_entries_are_synced_before_append_returns() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), 1 << 20, false).unwrap().for_member(2);
        let rx = append_one(&mut store, entry_of(3, 1, 1)).await;
        assert!(
            matches!(rx.now_or_never(), Some(Ok(Ok(())))),
            "reported synced when append returned"
        );
        assert_eq!(store.stats.syncs.load(Ordering::Relaxed), 1);
        assert_eq!(ops_on_file(dir.path()).len(), 1);
        // As leader of term 4: the writer thread syncs them.
        let rx = append_one(&mut store, entry_of(4, 2, 2)).await;
        rx.await.unwrap().unwrap();
        assert_eq!(store.stats.syncs.load(Ordering::Relaxed), 2);
        drop(store);
        let mut again = open(dir.path(), 1 << 20, false).unwrap();
        let st = again.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id, Some(entry_of(4, 2, 2).log_id));
    }

    /// A saved commit index (nobody waits for it) is held back, and
    /// written in order in front of the next operation that is waited for.
    #[tokio::test]
    async fn operations_nobody_waits_for_go_in_front_of_the_next_synced_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), 1 << 20, false).unwrap().for_member(2);
        let rx = append_one(&mut store, entry_of(3, 1, 1)).await;
        assert!(matches!(rx.now_or_never(), Some(Ok(Ok(())))));
        let committed = Some(entry_of(3, 1, 1).log_id);
        store.save_committed(committed).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), committed);
        assert_eq!(ops_on_file(dir.path()).len(), 1, "not written yet");
        let rx = append_one(&mut store, entry_of(3, 1, 2)).await;
        assert!(matches!(rx.now_or_never(), Some(Ok(Ok(())))));
        let ops = ops_on_file(dir.path());
        assert!(
            matches!(ops.as_slice(), [Op::Append { .. }, Op::Committed { committed: c }, Op::Append { .. }] if *c == committed),
            "the commit index goes in front of the next append"
        );
        drop(store);
        let mut again = open(dir.path(), 1 << 20, false).unwrap();
        assert_eq!(again.read_committed().await.unwrap(), committed);
    }

    #[tokio::test]
    async fn a_rewrite_keeps_only_what_is_live() {
        let dir = tempfile::tempdir().unwrap();
        // Tiny segments: every write is followed by a rewrite.
        let mut store = open(dir.path(), 64, false).unwrap();
        store
            .record_synced(Op::Append {
                entries: (1..=50).map(|i| entry(1, i)).collect(),
            })
            .await
            .unwrap();
        store.purge(entry(1, 40).log_id).await.unwrap();
        store.save_vote(&Vote::new(1, 1)).await.unwrap();
        // The journal's frames (the file has zeros ahead of them).
        let big = unframe(&std::fs::read(dir.path().join(JOURNAL)).unwrap()).1;
        drop(store);
        let mut again = open(dir.path(), 64, false).unwrap();
        let st = again.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id.map(|l| l.index), Some(40));
        assert_eq!(st.last_log_id.map(|l| l.index), Some(50));
        let left = again.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(left.len(), 10);
        assert!(big < 4096, "journal rewritten to what is live: {big} bytes");
    }
}

//! Group commit: one thread owns the log file, takes every append handed
//! to it while the previous sync ran, writes them with one `write` and makes
//! them durable with one `fdatasync`. Under load many transactions share a
//! sync.
//!
//! Appends are handed to the thread a turn at a time: [`GroupCommit::append`]
//! only queues, and the event loop hands the turn's appends over in one
//! piece when it next asks ([`GroupCommit::backlogged`],
//! [`GroupCommit::drain`]) before taking new input. So the thread is woken
//! once per turn, never in the middle of one, and the appends of a turn
//! share a sync instead of the first of them being synced alone.
//!
//! Callers number their appends (log sequence numbers); the thread publishes
//! the highest number known durable. A write or sync failure is fatal: the
//! writer stops, never retries, records why ([`GroupCommit::failure`]) and
//! closes the durable watch, so the event loop stops and hands the failure
//! to whoever embeds it (the binaries exit with status 74); nothing written
//! after the failure is ever reported durable.
//!
//! Appending never blocks the caller: the appends handed to the thread and
//! not yet taken are bounded (`queue_max`), and when a turn's appends do not
//! fit they wait in order until [`GroupCommit::drain`] (awaiting room)
//! hands them over.

use super::{encode_record, Wal};
use crate::protocol::Record;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch, Notify};

/// Counters of the log, readable from any thread.
#[derive(Debug, Default)]
pub struct WalStats {
    pub syncs: AtomicU64,
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Sum of sync durations in microseconds (for the mean sync latency).
    pub sync_micros: AtomicU64,
    /// Syncs per duration bucket (bounds in [`SYNC_BOUNDS_MICROS`], the last
    /// bucket above all of them); not cumulative.
    pub sync_buckets: [AtomicU64; SYNC_BOUNDS_MICROS.len() + 1],
}

/// Upper bounds (microseconds, inclusive) of the sync latency buckets.
pub const SYNC_BOUNDS_MICROS: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

impl WalStats {
    pub(crate) fn observe_sync(&self, micros: u64) {
        let i = SYNC_BOUNDS_MICROS.partition_point(|b| *b < micros);
        self.sync_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sync_micros.fetch_add(micros, Ordering::Relaxed);
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }
}

impl WalStats {
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "syncs": self.syncs.load(Ordering::Relaxed),
            "records": self.records.load(Ordering::Relaxed),
            "bytes": self.bytes.load(Ordering::Relaxed),
            "checkpoints": self.checkpoints.load(Ordering::Relaxed),
            "sync_micros_total": self.sync_micros.load(Ordering::Relaxed),
        })
    }
}

enum Cmd {
    Append {
        frame: Vec<u8>,
        sync: bool,
        lsn: u64,
    },
    Checkpoint(Vec<Record>),
}

/// The appends of one hand-over, in order.
type Batch = Vec<Cmd>;

/// What the event loop and the writer thread share about the hand-overs.
#[derive(Debug, Default)]
struct Handoff {
    /// Commands handed to the thread and not yet taken by it.
    queued: AtomicUsize,
    /// Notified by the thread whenever it took some: room to hand over more.
    room: Notify,
}

/// Handle to the writer thread. Dropping it stops the thread after it has
/// written (and synced) everything queued.
pub struct GroupCommit {
    /// Hand-overs to the thread. Unbounded in hand-overs, bounded in
    /// commands by `queue_max` (see [`GroupCommit::hand_over`]).
    tx: Option<mpsc::UnboundedSender<Batch>>,
    handoff: Arc<Handoff>,
    queue_max: usize,
    /// Appends not yet handed to the thread, oldest first: the current
    /// turn's, and any that found no room.
    waiting: Batch,
    next_lsn: u64,
    last_sync_lsn: u64,
    durable: watch::Receiver<u64>,
    /// Why the log stopped, once it has (set by the writer thread or by an
    /// append that could not be queued).
    failure: Arc<Mutex<Option<String>>>,
    pub stats: Arc<WalStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Record the first fatal failure of the log and log it.
fn set_failure(slot: &Mutex<Option<String>>, what: String) {
    let mut f = slot.lock().unwrap_or_else(|p| p.into_inner());
    if f.is_none() {
        tracing::error!(
            "fatal log error: {what}; stopping so that recovery can start from the last durable state"
        );
        *f = Some(what);
    }
}

/// Most appends written by one batch; bounds the batch buffer.
const BATCH_MAX: usize = 4096;

impl GroupCommit {
    /// Start the writer thread. `queue_max` bounds the appends handed to it
    /// and not yet taken (a turn with more is handed over whole once the
    /// thread has taken everything before it); appends beyond it wait here
    /// until [`GroupCommit::drain`] (back-pressure on the event loop, never
    /// a blocked thread).
    pub fn start(wal: Wal, queue_max: usize) -> GroupCommit {
        let (tx, rx) = mpsc::unbounded_channel();
        let (dtx, drx) = watch::channel(0u64);
        let stats = Arc::new(WalStats::default());
        let failure = Arc::new(Mutex::new(None));
        let handoff = Arc::new(Handoff::default());
        let (st, fl, ho) = (stats.clone(), failure.clone(), handoff.clone());
        #[cfg(feature = "sim")]
        let sim_disk = wal.sim_disk().cloned();
        #[cfg(not(feature = "sim"))]
        let sim_disk: Option<()> = None;
        let thread = if let Some(_disk) = sim_disk {
            // A simulated disk: the writer is a task of the node's
            // (simulated) runtime, and each sync takes simulated time.
            #[cfg(feature = "sim")]
            tokio::spawn(async move {
                if let Err(what) = sim_writer_loop(wal, _disk, rx, &ho, &dtx, st).await {
                    set_failure(&fl, what);
                }
                drop(dtx);
                ho.room.notify_one();
            });
            Ok(None)
        } else {
            std::thread::Builder::new()
                .name("wal-writer".into())
                .spawn(move || {
                    if let Err(what) = writer_loop(wal, rx, &ho, &dtx, st) {
                        set_failure(&fl, what);
                    }
                    // Closed only now: whoever sees the watch close finds the
                    // failure already recorded.
                    drop(dtx);
                    // A drain waiting for room finds the thread gone.
                    ho.room.notify_one();
                })
                .map(Some)
        };
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                set_failure(&failure, format!("cannot start the log writer thread: {e}"));
                None
            }
        };
        GroupCommit {
            tx: Some(tx),
            handoff,
            queue_max: queue_max.max(1),
            waiting: Vec::new(),
            next_lsn: 1,
            last_sync_lsn: 0,
            durable: drx,
            failure,
            stats,
            thread,
        }
    }

    /// Why the log stopped, if it has: the process must stop too, and a
    /// restart recovers from what is durable.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Do appends wait to be handed to the writer? True after every turn
    /// that appended: the event loop then calls [`GroupCommit::drain`].
    pub fn backlogged(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Hand the waiting appends to the writer in one piece if there is room:
    /// the thread holds fewer than `queue_max` with them, or nothing at all
    /// (a turn larger than `queue_max` goes alone). Never waits.
    pub fn hand_over(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let queued = self.handoff.queued.load(Ordering::Acquire);
        if queued > 0 && queued + self.waiting.len() > self.queue_max {
            return;
        }
        let Some(tx) = &self.tx else { return };
        let batch = std::mem::take(&mut self.waiting);
        self.handoff.queued.fetch_add(batch.len(), Ordering::AcqRel);
        if tx.send(batch).is_err() {
            set_failure(&self.failure, "the log writer thread is gone".into());
        }
    }

    /// Hand the waiting appends to the writer, awaiting room for them.
    pub async fn drain(&mut self) {
        loop {
            self.hand_over();
            if self.waiting.is_empty() {
                return;
            }
            // The thread drops its end of the channel when it stops.
            if self.tx.as_ref().is_none_or(|tx| tx.is_closed()) {
                set_failure(&self.failure, "the log writer thread is gone".into());
                self.waiting.clear();
                return;
            }
            // The thread's notify_one leaves a permit when nobody waits, so
            // room made since the look above is not missed.
            let handoff = self.handoff.clone();
            handoff.room.notified().await;
        }
    }

    /// Queue `cmd` behind everything queued before it, without waiting.
    fn submit(&mut self, cmd: Cmd) {
        self.waiting.push(cmd);
    }

    /// Queue `record`; returns its log sequence number.
    pub fn append(&mut self, record: &Record, sync: bool) -> u64 {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        if sync {
            self.last_sync_lsn = lsn;
        }
        let frame = encode_record(record);
        if frame.len() > super::HEADER_BYTES + super::RECORD_MAX_BYTES {
            // Recovery would refuse such a record: never write it, and stop
            // (it is never durable, so nothing waiting for it leaves).
            set_failure(
                &self.failure,
                format!(
                    "a {} byte log record exceeds the record limit; refusing to write a log that cannot be read back",
                    frame.len()
                ),
            );
            return lsn;
        }
        self.stats.records.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        self.submit(Cmd::Append { frame, sync, lsn });
        lsn
    }

    /// The LSN a message marked `after_durable` must wait for: the last
    /// append that asked for a sync.
    pub fn barrier(&self) -> u64 {
        self.last_sync_lsn
    }

    /// Highest LSN known durable.
    pub fn durable(&self) -> u64 {
        *self.durable.borrow()
    }

    /// A receiver that changes whenever more of the log is durable.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    /// Write `live` into a new segment and drop the old ones, in order with
    /// the appends queued before it.
    pub fn checkpoint(&mut self, live: Vec<Record>) {
        self.submit(Cmd::Checkpoint(live));
    }

    /// True when the current segment should be checkpointed. Approximated by
    /// bytes appended since the last checkpoint request.
    pub fn bytes_appended(&self) -> u64 {
        self.stats.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for GroupCommit {
    /// Stop the writer after it has written (and synced) everything queued,
    /// what waits here included. At shutdown only: the bound on what the
    /// thread holds does not apply any more.
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            if !self.waiting.is_empty() {
                let _ = tx.send(std::mem::take(&mut self.waiting));
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread: batch, write, sync, publish. Returns the reason when
/// the log failed; it then stops at once (the caller records the reason,
/// then drops `durable`, which tells the event loop).
fn writer_loop(
    mut wal: Wal,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    handoff: &Handoff,
    durable: &watch::Sender<u64>,
    stats: Arc<WalStats>,
) -> Result<(), String> {
    let mut buf = Vec::new();
    let mut pending = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        take_batch(first, &mut pending, &mut rx, handoff);
        let w = write_batch(&mut wal, &mut pending, &mut buf, &stats)?;
        flush(&mut wal, &mut buf, w.need_sync, &stats)?;
        if let Some(lsn) = w.durable_after_sync() {
            let _ = durable.send(lsn);
        }
    }
    flush(&mut wal, &mut buf, true, &stats)
}

/// Take `first` and every hand-over made while the last sync ran, and tell
/// the event loop there is room again.
fn take_batch(
    first: Batch,
    pending: &mut Batch,
    rx: &mut mpsc::UnboundedReceiver<Batch>,
    handoff: &Handoff,
) {
    pending.extend(first);
    while pending.len() < BATCH_MAX {
        match rx.try_recv() {
            Ok(batch) => pending.extend(batch),
            Err(_) => break,
        }
    }
    handoff.queued.fetch_sub(pending.len(), Ordering::AcqRel);
    handoff.room.notify_one();
}

/// What [`write_batch`] left to do.
struct Written {
    /// The batch's appends since its last checkpoint are written to `buf`
    /// (not to the log) and some asked for a sync.
    need_sync: bool,
    /// The batch's last append.
    written_lsn: u64,
    /// Durable already (a checkpoint synced what came before it).
    synced_lsn: Option<u64>,
}

impl Written {
    /// The watermark to publish once the sync after the batch (if it needs
    /// one) has returned. Unforced records become durable with the next
    /// sync; the watermark only moves when a sync covers them.
    fn durable_after_sync(&self) -> Option<u64> {
        if self.need_sync && self.written_lsn > 0 {
            Some(self.written_lsn)
        } else {
            self.synced_lsn
        }
    }
}

/// Encode a batch into `buf`, running its checkpoints in order (each
/// flushes and syncs what came before it).
fn write_batch(
    wal: &mut Wal,
    pending: &mut Batch,
    buf: &mut Vec<u8>,
    stats: &WalStats,
) -> Result<Written, String> {
    let mut w = Written {
        need_sync: false,
        written_lsn: 0,
        synced_lsn: None,
    };
    for cmd in pending.drain(..) {
        match cmd {
            Cmd::Append { frame, sync, lsn } => {
                buf.extend_from_slice(&frame);
                w.need_sync |= sync;
                w.written_lsn = lsn;
            }
            Cmd::Checkpoint(live) => {
                // Everything before the checkpoint goes to the old segment.
                flush(wal, buf, true, stats)?;
                if w.written_lsn > 0 {
                    w.synced_lsn = Some(w.written_lsn);
                }
                w.need_sync = false;
                wal.checkpoint(&live).map_err(|e| e.to_string())?;
                stats.checkpoints.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(w)
}

/// The writer as a task over a simulated disk: as [`writer_loop`], with the
/// batch written before the sync's (simulated) delay, so that a crash
/// during it finds the batch written but not synced.
#[cfg(feature = "sim")]
async fn sim_writer_loop(
    mut wal: Wal,
    disk: crate::sim::SimDisk,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    handoff: &Handoff,
    durable: &watch::Sender<u64>,
    stats: Arc<WalStats>,
) -> Result<(), String> {
    let mut buf = Vec::new();
    let mut pending = Vec::new();
    while let Some(first) = rx.recv().await {
        take_batch(first, &mut pending, &mut rx, handoff);
        let w = write_batch(&mut wal, &mut pending, &mut buf, &stats)?;
        flush(&mut wal, &mut buf, false, &stats)?;
        let early = crate::sim::bug(crate::sim::Bug::AckBeforeSync);
        if early {
            if let Some(lsn) = w.durable_after_sync() {
                let _ = durable.send(lsn);
            }
        }
        if w.need_sync {
            tokio::time::sleep(disk.sync_delay()).await;
        }
        flush(&mut wal, &mut buf, w.need_sync, &stats)?;
        if !early {
            if let Some(lsn) = w.durable_after_sync() {
                let _ = durable.send(lsn);
            }
        }
    }
    flush(&mut wal, &mut buf, true, &stats)
}

fn flush(wal: &mut Wal, buf: &mut Vec<u8>, sync: bool, stats: &WalStats) -> Result<(), String> {
    if !buf.is_empty() {
        wal.write(buf).map_err(|e| e.to_string())?;
        buf.clear();
    }
    if sync {
        let t = tokio::time::Instant::now();
        if wal.sync().map_err(|e| e.to_string())? {
            stats.observe_sync(t.elapsed().as_micros() as u64);
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;

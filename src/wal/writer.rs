//! Group commit: one thread owns the log file, takes every append queued
//! while the previous sync ran, writes them with one `write` and makes them
//! durable with one `fdatasync`. Under load many transactions share a sync.
//!
//! Callers number their appends (log sequence numbers); the thread publishes
//! the highest number known durable. A sync failure is fatal: the process
//! exits rather than run on a log it cannot trust.

use super::{encode_record, Wal};
use crate::protocol::Record;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::watch;

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
    fn observe_sync(&self, micros: u64) {
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

/// Handle to the writer thread. Dropping it stops the thread after it has
/// written (and synced) everything queued.
pub struct GroupCommit {
    tx: Option<mpsc::SyncSender<Cmd>>,
    next_lsn: u64,
    last_sync_lsn: u64,
    durable: watch::Receiver<u64>,
    pub stats: Arc<WalStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Most appends written by one batch; bounds the batch buffer.
const BATCH_MAX: usize = 4096;

impl GroupCommit {
    /// Start the writer thread. `queue_max` bounds the appends waiting for it
    /// (callers block briefly when it is full: back-pressure, not memory).
    pub fn start(wal: Wal, queue_max: usize) -> GroupCommit {
        let (tx, rx) = mpsc::sync_channel(queue_max.max(1));
        let (dtx, drx) = watch::channel(0u64);
        let stats = Arc::new(WalStats::default());
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer_loop(wal, rx, dtx, st))
            .ok();
        GroupCommit {
            tx: Some(tx),
            next_lsn: 1,
            last_sync_lsn: 0,
            durable: drx,
            stats,
            thread,
        }
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
            // Recovery would refuse such a record: never write it.
            fatal(&format!(
                "a {} byte log record exceeds the record limit; refusing to write a log that cannot be read back",
                frame.len()
            ));
        }
        self.stats.records.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        if let Some(tx) = &self.tx {
            if tx.send(Cmd::Append { frame, sync, lsn }).is_err() {
                fatal("the log writer thread is gone");
            }
        }
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
        if let Some(tx) = &self.tx {
            if tx.send(Cmd::Checkpoint(live)).is_err() {
                fatal("the log writer thread is gone");
            }
        }
    }

    /// True when the current segment should be checkpointed. Approximated by
    /// bytes appended since the last checkpoint request.
    pub fn bytes_appended(&self) -> u64 {
        self.stats.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fatal(what: &str) -> ! {
    tracing::error!(
        "fatal log error: {what}; stopping so that recovery can start from the last durable state"
    );
    eprintln!("twopc: fatal log error: {what}; the process stops so that a restart recovers from the durable log");
    std::process::exit(74)
}

fn writer_loop(
    mut wal: Wal,
    rx: mpsc::Receiver<Cmd>,
    durable: watch::Sender<u64>,
    stats: Arc<WalStats>,
) {
    let mut buf = Vec::new();
    let mut pending = Vec::new();
    while let Ok(first) = rx.recv() {
        pending.push(first);
        while pending.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(c) => pending.push(c),
                Err(_) => break,
            }
        }
        let mut need_sync = false;
        let mut written_lsn = 0;
        let mut synced_lsn = None;
        for cmd in pending.drain(..) {
            match cmd {
                Cmd::Append { frame, sync, lsn } => {
                    buf.extend_from_slice(&frame);
                    need_sync |= sync;
                    written_lsn = lsn;
                }
                Cmd::Checkpoint(live) => {
                    // Everything before the checkpoint goes to the old segment.
                    flush(&mut wal, &mut buf, true, &stats);
                    if written_lsn > 0 {
                        synced_lsn = Some(written_lsn);
                    }
                    need_sync = false;
                    if let Err(e) = wal.checkpoint(&live) {
                        fatal(&e.to_string());
                    }
                    stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        flush(&mut wal, &mut buf, need_sync, &stats);
        if need_sync && written_lsn > 0 {
            synced_lsn = Some(written_lsn);
        }
        // Unforced records become durable with the next sync; the watermark
        // only moves when a sync covers them.
        if let Some(lsn) = synced_lsn {
            let _ = durable.send(lsn);
        }
    }
    flush(&mut wal, &mut buf, true, &stats);
}

fn flush(wal: &mut Wal, buf: &mut Vec<u8>, sync: bool, stats: &WalStats) {
    if !buf.is_empty() {
        if let Err(e) = wal.write(buf) {
            fatal(&e.to_string());
        }
        buf.clear();
    }
    if sync {
        let t = std::time::Instant::now();
        match wal.sync() {
            Ok(true) => stats.observe_sync(t.elapsed().as_micros() as u64),
            Ok(false) => {}
            Err(e) => fatal(&e.to_string()),
        }
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;

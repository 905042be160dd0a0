//! A simulated disk for the write-ahead log: segments of bytes, each with
//! how much of it is synced. Written bytes are visible at once (as in the
//! page cache); only synced bytes are sure to survive a crash, which keeps
//! the synced part and a random prefix of the rest (a torn last record).
//!
//! The harness holds a clone to apply crashes and faults and to read what
//! is durable; the node's log holds another. Faults: a delay before each
//! sync (latency, and one-off stalls), and a sync that fails, which the log
//! treats as fatal.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One segment: its bytes, and how many of them a sync covered.
#[derive(Clone, Debug, Default)]
struct Segment {
    bytes: Vec<u8>,
    synced: usize,
}

/// A fault the harness arms for the next sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFault {
    /// The next sync waits this long before it completes.
    Stall(Duration),
    /// The next sync fails (as an fdatasync returning EIO would).
    FailSync,
}

/// What a sync did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncOutcome {
    Synced,
    Failed,
}

#[derive(Debug, Default)]
struct Inner {
    segments: BTreeMap<u64, Segment>,
    /// Delay of every sync (the device's latency).
    sync_latency: Duration,
    /// Armed for the next sync.
    stall: Option<Duration>,
    fail_next_sync: bool,
    syncs: u64,
}

/// A shared handle to one node's simulated disk.
#[derive(Clone, Debug, Default)]
pub struct SimDisk(Arc<Mutex<Inner>>);

impl SimDisk {
    pub fn new(sync_latency: Duration) -> SimDisk {
        let d = SimDisk::default();
        d.lock().sync_latency = sync_latency;
        d
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every segment's bytes as written (synced or not), oldest first: what
    /// a reader of the files would see now.
    pub fn segments(&self) -> Vec<(u64, Vec<u8>)> {
        let g = self.lock();
        g.segments
            .iter()
            .map(|(s, seg)| (*s, seg.bytes.clone()))
            .collect()
    }

    /// Only the synced part of every segment: what survives any crash.
    pub fn synced_segments(&self) -> Vec<(u64, Vec<u8>)> {
        let g = self.lock();
        g.segments
            .iter()
            .map(|(s, seg)| (*s, seg.bytes[..seg.synced].to_vec()))
            .collect()
    }

    /// Create segment `seq` empty and durable, when it does not exist.
    pub fn create(&self, seq: u64) {
        self.lock().segments.entry(seq).or_default();
    }

    /// Append `bytes` to segment `seq` (not yet synced).
    pub fn write(&self, seq: u64, bytes: &[u8]) {
        self.lock()
            .segments
            .entry(seq)
            .or_default()
            .bytes
            .extend_from_slice(bytes);
    }

    /// How long the next sync takes: the latency plus an armed stall.
    pub fn sync_delay(&self) -> Duration {
        let mut g = self.lock();
        let stall = g.stall.take().unwrap_or_default();
        g.sync_latency + stall
    }

    /// Make segment `seq` durable up to its end, or fail when armed to.
    pub fn sync(&self, seq: u64) -> SyncOutcome {
        let mut g = self.lock();
        if std::mem::take(&mut g.fail_next_sync) {
            return SyncOutcome::Failed;
        }
        g.syncs += 1;
        if let Some(seg) = g.segments.get_mut(&seq) {
            seg.synced = seg.bytes.len();
        }
        SyncOutcome::Synced
    }

    /// Cut segment `seq` to `len` bytes, durably (recovery cutting a torn
    /// tail).
    pub fn truncate(&self, seq: u64, len: usize) {
        if let Some(seg) = self.lock().segments.get_mut(&seq) {
            seg.bytes.truncate(len);
            seg.synced = seg.bytes.len();
        }
    }

    /// A checkpoint: segment `seq` holding `bytes` becomes durable and
    /// every older segment goes, as one step (the real log's rename and
    /// directory sync, without their crash windows).
    pub fn replace_with(&self, seq: u64, bytes: Vec<u8>) {
        let mut g = self.lock();
        g.segments.retain(|s, _| *s > seq);
        let synced = bytes.len();
        g.segments.insert(seq, Segment { bytes, synced });
    }

    /// Arm `fault` for the next sync.
    pub fn arm(&self, fault: DiskFault) {
        let mut g = self.lock();
        match fault {
            DiskFault::Stall(d) => g.stall = Some(d),
            DiskFault::FailSync => g.fail_next_sync = true,
        }
    }

    /// Forget the armed faults.
    pub fn disarm(&self) {
        let mut g = self.lock();
        g.stall = None;
        g.fail_next_sync = false;
    }

    /// The machine crashed: each segment keeps its synced bytes and the
    /// first `keep(unsynced)` of the rest (`keep` returns at most its
    /// argument). Armed faults are forgotten.
    pub fn crash(&self, mut keep: impl FnMut(usize) -> usize) {
        self.disarm();
        let mut g = self.lock();
        for seg in g.segments.values_mut() {
            let unsynced = seg.bytes.len() - seg.synced;
            let kept = keep(unsynced).min(unsynced);
            seg.bytes.truncate(seg.synced + kept);
            seg.synced = seg.bytes.len();
        }
    }

    /// Syncs completed so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_synced_bytes_and_a_prefix_of_the_rest() {
        let d = SimDisk::new(Duration::ZERO);
        d.create(1);
        d.write(1, b"abc");
        assert_eq!(d.sync(1), SyncOutcome::Synced);
        d.write(1, b"defg");
        assert_eq!(d.segments(), vec![(1, b"abcdefg".to_vec())]);
        assert_eq!(d.synced_segments(), vec![(1, b"abc".to_vec())]);
        d.crash(|unsynced| {
            assert_eq!(unsynced, 4);
            2
        });
        assert_eq!(d.segments(), vec![(1, b"abcde".to_vec())]);
    }

    #[test]
    fn an_armed_sync_failure_leaves_the_bytes_unsynced_once() {
        let d = SimDisk::new(Duration::from_millis(1));
        d.write(1, b"x");
        d.arm(DiskFault::FailSync);
        d.arm(DiskFault::Stall(Duration::from_millis(9)));
        assert_eq!(d.sync_delay(), Duration::from_millis(10));
        assert_eq!(d.sync_delay(), Duration::from_millis(1));
        assert_eq!(d.sync(1), SyncOutcome::Failed);
        assert_eq!(d.synced_segments(), vec![(1, Vec::new())]);
        assert_eq!(d.sync(1), SyncOutcome::Synced);
        assert_eq!(d.synced_segments(), vec![(1, b"x".to_vec())]);
    }

    #[test]
    fn a_checkpoint_replaces_older_segments_durably() {
        let d = SimDisk::new(Duration::ZERO);
        d.write(1, b"old");
        d.replace_with(2, b"new".to_vec());
        d.crash(|n| n);
        assert_eq!(d.segments(), vec![(2, b"new".to_vec())]);
    }
}

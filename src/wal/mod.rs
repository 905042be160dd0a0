//! The write-ahead log: CRC-framed records in bounded segments, recovery scan,
//! checkpoints, a data-directory lock, and a group-commit writer thread.
//!
//! Record frame: `u32 length (LE) | u32 crc32c(payload) (LE) | payload`,
//! where the payload is one JSON-encoded [`Record`]. Segments are files
//! `wal-<16 digits>.log` in the data directory; a checkpoint writes the live
//! records under a temporary name (`wal-<16 digits>.tmp`), makes them
//! durable, renames the file into place, then deletes older segments, so a
//! checkpoint joins the log whole or not at all.
//!
//! Segment files are extended with zeros a megabyte ahead of the records
//! ([`PREALLOCATE_BYTES`]), and records are written over them: a sync of
//! data written inside a file has no new file size to record, which makes
//! it cheaper. Zeros from some offset to the end of a segment are where its
//! records end.
//!
//! Start-up rules: a damaged record at the very end of the newest segment is a
//! torn write from a crash and is cut off (logged); a damaged record anywhere
//! else is corruption and opening fails with the file and offset. This module
//! never skips data silently.

mod lock;
mod writer;

pub use lock::DirLock;
pub use writer::{GroupCommit, WalStats, SYNC_BOUNDS_MICROS};

use crate::protocol::Record;
use serde_json::Value;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Bytes before each record's payload: length and CRC.
pub const HEADER_BYTES: usize = 8;

/// A log file (a segment, or a coordinator member's Raft journal) is
/// extended at most this many bytes at a time with zeros, which records
/// are then written over (see [`preallocation_step`]). On this project's 2-core development machine (ext4), a
/// 2,000-byte write and `fdatasync` took 0.11 to 0.15 ms this way against
/// 0.17 to 0.20 ms appending, with about a fifth less system CPU: there is
/// no file size to record.
pub const PREALLOCATE_BYTES: u64 = 1 << 20;

/// How far ahead a log file whose segments are checkpointed past
/// `segment_max_bytes` is extended: [`PREALLOCATE_BYTES`], or less for
/// small segments (in 4 KiB pages), so that their files stay about as
/// small as their records.
pub fn preallocation_step(segment_max_bytes: u64) -> u64 {
    segment_max_bytes
        .next_multiple_of(4096)
        .clamp(4096, PREALLOCATE_BYTES)
}

/// Write `buf` at `at` in `file`, whose first `allocated` bytes exist;
/// when `buf` goes past them, zeros are first written up to the next
/// multiple of `step` (synced with `buf` by the caller's next sync). If
/// they cannot be written (a full disk), `buf` extends the file as an
/// append would.
pub fn write_preallocated(
    file: &File,
    buf: &[u8],
    at: u64,
    allocated: &mut u64,
    step: u64,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let end = at + buf.len() as u64;
    if end > *allocated {
        let upto = end.div_ceil(step) * step;
        let zeros = vec![0u8; (upto - end) as usize];
        match file.write_all_at(&zeros, end) {
            Ok(()) => *allocated = upto,
            Err(e) => tracing::debug!("cannot extend a log file ahead of its records: {e}"),
        }
    }
    file.write_all_at(buf, at)?;
    *allocated = (*allocated).max(end);
    Ok(())
}
/// A record larger than this is treated as damage, never allocated.
pub const RECORD_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Errors of the log, grouped by what the caller should do: all of them stop
/// the process at start-up; none is retried.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("log I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("log corruption in {path} at byte offset {offset}: {why}. The log cannot be trusted; restore this data directory from a backup or inspect it with `twopc wal inspect`")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    #[error("data directory {dir} is in use by another process (pid {pid}, lock file {lock}); stop that process or point this one at another data_dir")]
    Locked {
        dir: PathBuf,
        pid: String,
        lock: PathBuf,
    },
}

/// The log stopped (a write or sync failed, or a record could not be
/// written): the process must stop, and a restart recovers from what is
/// durable. Returned by the nodes' `run` to whoever embeds them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fatal log error: {0}")]
pub struct LogFailure(pub String);

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Options of the log.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// A segment larger than this triggers a checkpoint into a new segment.
    pub segment_max_bytes: u64,
    /// Skip fsync. For benchmarks only: a crash of the machine (not just the
    /// process) can then lose acknowledged decisions.
    pub unsafe_no_fsync: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_max_bytes: 64 * 1024 * 1024,
            unsafe_no_fsync: false,
        }
    }
}

/// Where a record was found.
#[derive(Clone, Debug, PartialEq)]
pub struct Located {
    pub segment: PathBuf,
    pub offset: u64,
    pub record: Record,
}

/// A damaged record: where, and why it was rejected.
#[derive(Clone, Debug, PartialEq)]
pub struct Damage {
    pub file: PathBuf,
    pub offset: u64,
    pub why: String,
}

impl Damage {
    fn new(file: &Path, offset: usize, why: impl Into<String>) -> Damage {
        Damage {
            file: file.to_path_buf(),
            offset: offset as u64,
            why: why.into(),
        }
    }
}

/// What a scan of a data directory found.
#[derive(Debug, Default)]
pub struct ScanReport {
    pub records: Vec<Located>,
    pub segments: Vec<PathBuf>,
    /// Per segment (as `segments`), the bytes its records take: where the
    /// zeros written ahead of them, or a torn tail, begin.
    pub lengths: Vec<u64>,
    /// A damaged last record of the newest segment (a crash mid-append).
    pub torn_tail: Option<Damage>,
    /// Damage before the tail. Opening refuses to start.
    pub corruption: Option<Damage>,
}

/// A log opened for appending, with what recovery found.
#[derive(Debug)]
pub struct Opened {
    pub wal: Wal,
    pub lock: DirLock,
    /// Every intact record, oldest first.
    pub records: Vec<Record>,
    /// The torn tail that was cut off, if any.
    pub torn_tail: Option<Damage>,
    /// Temporary files of checkpoints a crash interrupted, deleted at open
    /// (they were never part of the log).
    pub unfinished_checkpoints: Vec<PathBuf>,
    /// The directory and files that group or others could read, made
    /// private at open (see [`secure_dir`]).
    pub permissions_fixed: Vec<PathBuf>,
}

/// Mode of the data directory: the log holds every prepared payload and,
/// for kv, all data, so only the owner may list or enter it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the log creates (segments, lock, checkpoints).
pub const FILE_MODE: u32 = 0o600;

/// Create `dir` (and missing parents) with [`DIR_MODE`], or, when it exists
/// and group or others have any access to it or to a file in it, take that
/// access away. Policy: fix and report rather than refuse, so that data
/// directories made by older versions (0755, files 0644) keep working; the
/// caller warns with the returned paths.
pub fn secure_dir(dir: &Path) -> Result<Vec<PathBuf>, WalError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mut fixed = Vec::new();
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(io_err(dir))?;
    }
    let private = |path: &Path, mode: u32, fixed: &mut Vec<PathBuf>| -> Result<(), WalError> {
        let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
        if meta.file_type().is_symlink() || meta.permissions().mode() & 0o077 == 0 {
            return Ok(());
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))?;
        fixed.push(path.to_path_buf());
        Ok(())
    };
    private(dir, DIR_MODE, &mut fixed)?;
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.is_file() {
            private(&path, FILE_MODE, &mut fixed)?;
        }
    }
    Ok(fixed)
}

/// Bytes of JSON per snapshot record when a resource's state is split.
pub const SNAPSHOT_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Split a resource snapshot into records that each fit in a log record.
/// Object states are split by entries; an entry that alone exceeds the
/// record limit is an error (the caller keeps the old segments).
pub fn snapshot_records(state: Value) -> Result<Vec<Record>, SnapshotTooLarge> {
    let Value::Object(map) = state else {
        let r = Record::Snapshot {
            state,
            merge: false,
        };
        return match serde_json::to_vec(&r).map(|b| b.len()) {
            Ok(n) if n <= RECORD_MAX_BYTES => Ok(vec![r]),
            _ => Err(SnapshotTooLarge::Whole),
        };
    };
    let mut out = Vec::new();
    let mut chunk = serde_json::Map::new();
    let mut bytes = 0usize;
    for (k, v) in map {
        // Sizes as encoded: escaping can make a key several times longer.
        let n = serde_json::to_vec(&k)
            .map(|b| b.len())
            .unwrap_or(usize::MAX / 4)
            + serde_json::to_vec(&v)
                .map(|b| b.len())
                .unwrap_or(usize::MAX / 4)
            + 8;
        if n > RECORD_MAX_BYTES / 2 {
            return Err(SnapshotTooLarge::Entry {
                key: k.chars().take(64).collect(),
                bytes: n,
            });
        }
        if bytes + n > SNAPSHOT_CHUNK_BYTES && !chunk.is_empty() {
            let merge = !out.is_empty();
            out.push(Record::Snapshot {
                state: Value::Object(std::mem::take(&mut chunk)),
                merge,
            });
            bytes = 0;
        }
        bytes += n;
        chunk.insert(k, v);
    }
    let merge = !out.is_empty();
    out.push(Record::Snapshot {
        state: Value::Object(chunk),
        merge,
    });
    Ok(out)
}

/// A resource snapshot that cannot be written as log records: a state that
/// is not an object and exceeds one record, or one entry that does. The
/// checkpoint is not taken (the old segments stay); at first start the
/// participant does not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotTooLarge {
    #[error("the resource snapshot exceeds the log record limit")]
    Whole,
    /// `key` is the entry's key, cut to 64 characters; `bytes` its size as
    /// encoded.
    #[error("snapshot entry `{key}` is {bytes} bytes, more than a log record can hold")]
    Entry { key: String, bytes: usize },
}

/// Encode one record as a frame.
pub fn encode_record(r: &Record) -> Vec<u8> {
    let payload = serde_json::to_vec(r).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Result of decoding the frame at the start of `buf`.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// A good record and the frame's total length.
    Record(Box<Record>, usize),
    /// The buffer ends inside the frame.
    Incomplete,
    /// The frame is damaged.
    Bad(String),
}

/// Decode the frame at the start of `buf`. Never panics and never allocates
/// more than the payload present in `buf`.
pub fn decode_record(buf: &[u8]) -> Decoded {
    if buf.len() < HEADER_BYTES {
        return Decoded::Incomplete;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len == 0 || len > RECORD_MAX_BYTES {
        return Decoded::Bad(format!(
            "record length {len} is outside 1..={RECORD_MAX_BYTES}"
        ));
    }
    let Some(payload) = buf.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Decoded::Incomplete;
    };
    if crc32c::crc32c(payload) != crc {
        return Decoded::Bad("checksum mismatch".into());
    }
    match serde_json::from_slice::<Record>(payload) {
        Ok(r) => Decoded::Record(Box::new(r), HEADER_BYTES + len),
        Err(e) => Decoded::Bad(format!("checksum ok but record does not parse: {e}")),
    }
}

fn segment_name(seq: u64) -> String {
    format!("wal-{seq:016}.log")
}

/// The temporary name a checkpoint writes segment `seq` under. Never a
/// segment: [`list_segments`] does not match it, and [`Wal::open`] deletes it.
fn temp_name(seq: u64) -> String {
    format!("wal-{seq:016}.tmp")
}

fn is_temp_name(name: &str) -> bool {
    name.strip_prefix("wal-")
        .and_then(|n| n.strip_suffix(".tmp"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The steps of a checkpoint, each a crash point: what a crash there leaves
/// on disk, and why recovery is still complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointStep {
    /// The new segment's first record and half of the rest are in its
    /// temporary file: the old segments are intact and the temporary file
    /// is deleted at open.
    PartialWrite,
    /// The whole new segment is in its temporary file, not synced: as above
    /// (after a power loss any prefix of it may remain).
    BeforeSync,
    /// The temporary file is durable but not renamed: as above.
    BeforeRename,
    /// The new segment is in place and durable; the old segments are still
    /// there. Recovery replays old then new, which ends in the same state.
    BeforeOldRemoved,
}

impl CheckpointStep {
    pub const ALL: [CheckpointStep; 4] = [
        CheckpointStep::PartialWrite,
        CheckpointStep::BeforeSync,
        CheckpointStep::BeforeRename,
        CheckpointStep::BeforeOldRemoved,
    ];

    /// The step's name in `TWOPC_CRASH_AT` (listed in [`crate::crash::POINTS`]).
    pub fn crash_point(self) -> &'static str {
        match self {
            CheckpointStep::PartialWrite => "wal.checkpoint.partial_write",
            CheckpointStep::BeforeSync => "wal.checkpoint.before_sync",
            CheckpointStep::BeforeRename => "wal.checkpoint.before_rename",
            CheckpointStep::BeforeOldRemoved => "wal.checkpoint.before_old_removed",
        }
    }
}

fn segment_seq(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// The log's segments in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut v = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in rd {
        let entry = entry.map_err(io_err(dir))?;
        if let Some(seq) = entry.file_name().to_str().and_then(segment_seq) {
            v.push((seq, entry.path()));
        }
    }
    v.sort();
    Ok(v)
}

/// Read every segment of `dir` without changing anything. Safe to run while
/// the owning process is writing (a record being appended shows as a torn
/// tail).
pub fn scan(dir: &Path) -> Result<ScanReport, WalError> {
    let mut segments = Vec::new();
    for (_, path) in list_segments(dir)? {
        let mut buf = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(io_err(&path))?;
        segments.push((path, buf));
    }
    Ok(scan_segments(segments))
}

/// Read the segments' bytes (oldest first, each named by its path) as the
/// log: every intact record, and a torn tail or corruption (the rules in
/// the module doc).
pub fn scan_segments(segments: Vec<(PathBuf, Vec<u8>)>) -> ScanReport {
    let mut report = ScanReport::default();
    let last = segments.len().saturating_sub(1);
    for (i, (path, buf)) in segments.into_iter().enumerate() {
        let path = &path;
        report.segments.push(path.clone());
        let mut off = 0usize;
        while off < buf.len() {
            match decode_record(&buf[off..]) {
                Decoded::Record(r, n) => {
                    report.records.push(Located {
                        segment: path.clone(),
                        offset: off as u64,
                        record: *r,
                    });
                    off += n;
                }
                // Zeros to the end: written ahead of the records, which end here.
                _ if buf[off..].iter().all(|b| *b == 0) => break,
                // Cut short at the end of the newest segment: a torn append,
                // unless an intact record follows (then the length field is
                // damaged and the rest of the log must not be thrown away).
                Decoded::Incomplete if i == last && is_tail(&buf[off..]) => {
                    report.torn_tail = Some(Damage::new(path, off, "record cut short"));
                    break;
                }
                Decoded::Bad(why) if i == last && is_tail(&buf[off..]) => {
                    report.torn_tail = Some(Damage::new(path, off, why));
                    break;
                }
                Decoded::Incomplete => {
                    report.corruption = Some(Damage::new(
                        path,
                        off,
                        "record length runs past intact records or the end of a sealed segment",
                    ));
                    return report;
                }
                Decoded::Bad(why) => {
                    report.corruption = Some(Damage::new(path, off, why));
                    return report;
                }
            }
        }
        report.lengths.push(off as u64);
    }
    report
}

/// A damaged frame is a torn tail when no intact record follows it: the crash
/// cut the last append short. Any intact record after the damage means the
/// damage is in the middle of the log.
fn is_tail(rest: &[u8]) -> bool {
    (1..rest.len()).all(|i| !matches!(decode_record(&rest[i..]), Decoded::Record(..)))
}

/// The open log of one process: the segment being appended to.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    file: Backend,
    seq: u64,
    /// Bytes of records in the current segment.
    bytes: u64,
    /// Bytes the current segment's file holds (records, then zeros).
    allocated: u64,
    opts: WalOptions,
}

/// Where a log's bytes go: a segment file, or a simulated disk.
#[derive(Debug)]
enum Backend {
    File(File),
    #[cfg(feature = "sim")]
    Sim(crate::sim::SimDisk),
}

impl Wal {
    /// Open the log of `dir` on a simulated disk, with the same recovery
    /// rules as [`Wal::open`] (cut a torn tail, refuse corruption).
    #[cfg(feature = "sim")]
    pub fn open_sim(
        dir: &Path,
        disk: crate::sim::SimDisk,
        opts: WalOptions,
    ) -> Result<Opened, WalError> {
        let segments: Vec<(u64, Vec<u8>)> = disk.segments();
        let named = segments
            .iter()
            .map(|(s, b)| (dir.join(segment_name(*s)), b.clone()))
            .collect();
        let report = scan_segments(named);
        if let Some(d) = report.corruption {
            return Err(WalError::Corrupt {
                path: d.file,
                offset: d.offset,
                why: d.why,
            });
        }
        let (seq, bytes) = match segments.last() {
            Some((s, b)) => (*s, b.len() as u64),
            None => {
                disk.create(1);
                (1, 0)
            }
        };
        let bytes = match &report.torn_tail {
            Some(d) => {
                disk.truncate(seq, d.offset as usize);
                d.offset
            }
            None => bytes,
        };
        let records = report.records.into_iter().map(|l| l.record).collect();
        Ok(Opened {
            wal: Wal {
                dir: dir.to_path_buf(),
                file: Backend::Sim(disk),
                seq,
                bytes,
                allocated: bytes,
                opts,
            },
            lock: DirLock::none(),
            records,
            torn_tail: report.torn_tail,
            unfinished_checkpoints: Vec::new(),
            permissions_fixed: Vec::new(),
        })
    }

    /// The simulated disk this log is on, if it is on one.
    #[cfg(feature = "sim")]
    pub fn sim_disk(&self) -> Option<&crate::sim::SimDisk> {
        match &self.file {
            Backend::File(_) => None,
            Backend::Sim(d) => Some(d),
        }
    }

    /// Open (creating if needed) the log in `dir`: lock the directory, scan,
    /// cut a torn tail, refuse corruption.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<Opened, WalError> {
        let permissions_fixed = secure_dir(dir)?;
        let lock = DirLock::acquire(dir)?;
        let unfinished_checkpoints = remove_unfinished_checkpoints(dir)?;
        let report = scan(dir)?;
        if let Some(d) = report.corruption {
            return Err(WalError::Corrupt {
                path: d.file,
                offset: d.offset,
                why: d.why,
            });
        }
        if let Some(d) = &report.torn_tail {
            let path = &d.file;
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err(path))?;
            f.set_len(d.offset).map_err(io_err(path))?;
            f.sync_all().map_err(io_err(path))?;
        }
        let segments = list_segments(dir)?;
        let (seq, path) = match segments.last() {
            Some((s, p)) => (*s, p.clone()),
            None => {
                let p = dir.join(segment_name(1));
                create_durable(dir, &p)?;
                (1, p)
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let allocated = file.metadata().map_err(io_err(&path))?.len();
        // Where the newest segment's records end (its zeros or its cut
        // torn tail); a segment just created holds nothing.
        let bytes = match (&report.torn_tail, report.segments.last()) {
            (Some(d), _) => d.offset,
            (None, Some(last)) if *last == path => report.lengths.last().copied().unwrap_or(0),
            _ => 0,
        };
        let records = report.records.into_iter().map(|l| l.record).collect();
        Ok(Opened {
            wal: Wal {
                dir: dir.to_path_buf(),
                file: Backend::File(file),
                seq,
                bytes,
                allocated,
                opts,
            },
            lock,
            records,
            torn_tail: report.torn_tail,
            unfinished_checkpoints,
            permissions_fixed,
        })
    }

    /// Append already-encoded frames (one write).
    pub fn write(&mut self, frames: &[u8]) -> Result<(), WalError> {
        match &mut self.file {
            Backend::File(f) => {
                let path = self.dir.join(segment_name(self.seq));
                let step = preallocation_step(self.opts.segment_max_bytes);
                write_preallocated(f, frames, self.bytes, &mut self.allocated, step)
                    .map_err(io_err(&path))?;
            }
            #[cfg(feature = "sim")]
            Backend::Sim(d) => d.write(self.seq, frames),
        }
        self.bytes += frames.len() as u64;
        Ok(())
    }

    /// Make everything written so far durable (fdatasync), unless the
    /// unsafe no-fsync mode is on. Returns whether a sync was performed.
    pub fn sync(&mut self) -> Result<bool, WalError> {
        if self.opts.unsafe_no_fsync {
            return Ok(false);
        }
        let path = self.dir.join(segment_name(self.seq));
        match &mut self.file {
            Backend::File(f) => f.sync_data().map_err(io_err(&path))?,
            #[cfg(feature = "sim")]
            Backend::Sim(d) => {
                if d.sync(self.seq) == crate::sim::SyncOutcome::Failed {
                    return Err(WalError::Io {
                        path,
                        source: std::io::Error::other("simulated fdatasync failure"),
                    });
                }
            }
        }
        Ok(true)
    }

    /// True when the current segment outgrew `segment_max_bytes`.
    pub fn needs_checkpoint(&self) -> bool {
        self.bytes > self.opts.segment_max_bytes
    }

    /// Start a new segment holding `live`, make it durable, then delete every
    /// older segment. The new segment is written under a temporary name,
    /// synced, and only then renamed into place (and the directory synced),
    /// so it becomes part of the log whole or not at all: a crash before the
    /// rename leaves a temporary file that [`Wal::open`] deletes, and the old
    /// segments intact; a crash after it leaves old and new segments, and
    /// replaying both in order is harmless (the new one starts with the
    /// state the old ones lead to).
    ///
    /// Each step is a crash point (`wal.checkpoint.*`, see
    /// [`CheckpointStep`]).
    pub fn checkpoint(&mut self, live: &[Record]) -> Result<(), WalError> {
        let stopped = self.checkpoint_until(live, |step| crate::crash::take(step.crash_point()))?;
        match stopped {
            Some(step) => crate::crash::kill_now(step.crash_point()),
            None => Ok(()),
        }
    }

    /// [`Wal::checkpoint`], asking `stop` before each step. When `stop`
    /// answers true the checkpoint ends there, leaving the files exactly as a
    /// crash at that step would, and the step is returned; this `Wal` must
    /// then be dropped (as the process would be). For crash tests.
    pub fn checkpoint_until(
        &mut self,
        live: &[Record],
        mut stop: impl FnMut(CheckpointStep) -> bool,
    ) -> Result<Option<CheckpointStep>, WalError> {
        let next = self.seq + 1;
        let path = self.dir.join(segment_name(next));
        let tmp = self.dir.join(temp_name(next));
        let mut buf = Vec::new();
        let mut first_frame_bytes = None;
        for r in live {
            let frame = encode_record(r);
            first_frame_bytes.get_or_insert(frame.len());
            if frame.len() > HEADER_BYTES + RECORD_MAX_BYTES {
                // Never write what recovery would refuse; the old segments
                // stay, so nothing is lost.
                return Err(WalError::Corrupt {
                    path: path.clone(),
                    offset: buf.len() as u64,
                    why: format!("checkpoint record of {} bytes exceeds the record limit; checkpoint not written", frame.len()),
                });
            }
            buf.extend_from_slice(&frame);
        }
        let first_frame_bytes = first_frame_bytes.unwrap_or(0);
        // A simulated disk takes the new segment in one durable step (the
        // crash windows of the steps below are the file system's).
        #[cfg(feature = "sim")]
        if let Backend::Sim(d) = &self.file {
            d.replace_with(next, buf.clone());
            self.seq = next;
            self.bytes = buf.len() as u64;
            return Ok(None);
        }
        {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(FILE_MODE)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            if stop(CheckpointStep::PartialWrite) {
                // Stop inside the second record: the first (a snapshot, at
                // a participant) is whole, what follows it is cut.
                let cut = first_frame_bytes + (buf.len() - first_frame_bytes) / 2;
                f.write_all(&buf[..cut]).map_err(io_err(&tmp))?;
                return Ok(Some(CheckpointStep::PartialWrite));
            }
            f.write_all(&buf).map_err(io_err(&tmp))?;
            if stop(CheckpointStep::BeforeSync) {
                return Ok(Some(CheckpointStep::BeforeSync));
            }
            f.sync_all().map_err(io_err(&tmp))?;
        }
        if stop(CheckpointStep::BeforeRename) {
            return Ok(Some(CheckpointStep::BeforeRename));
        }
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        self.file = Backend::File(file);
        self.seq = next;
        self.bytes = buf.len() as u64;
        self.allocated = buf.len() as u64;
        if stop(CheckpointStep::BeforeOldRemoved) {
            return Ok(Some(CheckpointStep::BeforeOldRemoved));
        }
        for (seq, old) in list_segments(&self.dir)? {
            if seq < next {
                fs::remove_file(&old).map_err(io_err(&old))?;
            }
        }
        sync_dir(&self.dir)?;
        Ok(None)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Delete the temporary files of checkpoints that never reached their rename,
/// and make the deletion durable. Returns what was deleted.
fn remove_unfinished_checkpoints(dir: &Path) -> Result<Vec<PathBuf>, WalError> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if entry.file_name().to_str().is_some_and(is_temp_name) {
            let path = entry.path();
            fs::remove_file(&path).map_err(io_err(&path))?;
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    removed.sort();
    Ok(removed)
}

/// Create an empty file and make its directory entry durable.
fn create_durable(dir: &Path, path: &Path) -> Result<(), WalError> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    sync_dir(dir)
}

/// fsync a directory so that file creations and removals in it survive.
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Decision, TxnId};

    fn rec(i: u32) -> Record {
        Record::Decided {
            txn: TxnId(format!("t{i}")),
            decision: Decision::Commit,
            heuristic: None,
        }
    }

    #[test]
    fn frames_round_trip_and_reject_damage() {
        let f = encode_record(&rec(1));
        assert_eq!(
            decode_record(&f),
            Decoded::Record(Box::new(rec(1)), f.len())
        );
        assert_eq!(decode_record(&f[..f.len() - 1]), Decoded::Incomplete);
        let mut bad = f.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        assert!(matches!(decode_record(&bad), Decoded::Bad(_)));
        assert!(matches!(decode_record(&[0xff; 8]), Decoded::Bad(_)));
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_data_directory_and_its_files_are_private() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("a/b");
        let mut o = Wal::open(&dir, WalOptions::default()).unwrap();
        assert!(o.permissions_fixed.is_empty());
        assert_eq!(mode(&dir), DIR_MODE);
        // A checkpoint's segment is written under a temporary name first.
        o.wal.checkpoint(&[rec(1)]).unwrap();
        let files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 2, "a segment and the lock: {files:?}");
        for f in files {
            assert_eq!(mode(&f), FILE_MODE, "{}", f.display());
        }
    }

    #[test]
    fn an_open_data_directory_is_made_private_and_reported() {
        use std::os::unix::fs::PermissionsExt;
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("d");
        drop(Wal::open(&dir, WalOptions::default()).unwrap());
        let seg = list_segments(&dir).unwrap()[0].1.clone();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&seg, fs::Permissions::from_mode(0o644)).unwrap();
        let o = Wal::open(&dir, WalOptions::default()).unwrap();
        assert_eq!(o.permissions_fixed, vec![dir.clone(), seg.clone()]);
        assert_eq!((mode(&dir), mode(&seg)), (DIR_MODE, FILE_MODE));
    }

    #[test]
    fn reopen_sees_records_and_cuts_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let o = Wal::open(dir.path(), WalOptions::default()).unwrap();
            assert!(o.records.is_empty() && o.torn_tail.is_none());
            let mut w = o.wal;
            w.write(&encode_record(&rec(1))).unwrap();
            w.write(&encode_record(&rec(2))).unwrap();
            let half = encode_record(&rec(3));
            w.write(&half[..half.len() / 2]).unwrap();
            w.sync().unwrap();
        }
        let o = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(o.records, vec![rec(1), rec(2)]);
        assert!(o.torn_tail.is_some());
    }

    #[test]
    fn records_go_over_zeros_written_ahead_and_a_reopen_goes_on_after_the_last() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut w = Wal::open(dir.path(), WalOptions::default()).unwrap().wal;
            w.write(&encode_record(&rec(1))).unwrap();
            w.sync().unwrap();
        }
        let seg = list_segments(dir.path()).unwrap()[0].1.clone();
        assert_eq!(fs::metadata(&seg).unwrap().len(), PREALLOCATE_BYTES);
        let report = scan(dir.path()).unwrap();
        assert_eq!(report.lengths, vec![encode_record(&rec(1)).len() as u64]);
        // Twice reopened and written: each record goes after the last one.
        for i in 2..=3 {
            let o = Wal::open(dir.path(), WalOptions::default()).unwrap();
            assert!(o.torn_tail.is_none(), "zeros ahead are not a torn tail");
            let mut w = o.wal;
            w.write(&encode_record(&rec(i))).unwrap();
            w.sync().unwrap();
        }
        let o = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(o.records, vec![rec(1), rec(2), rec(3)]);
        assert_eq!(fs::metadata(&seg).unwrap().len(), PREALLOCATE_BYTES);
        // Past the zeros the file grows by whole steps.
        let big = Record::Decided {
            txn: TxnId("x".repeat(PREALLOCATE_BYTES as usize)),
            decision: Decision::Commit,
            heuristic: None,
        };
        {
            let (mut w, _lock) = (o.wal, o.lock);
            w.write(&encode_record(&big)).unwrap();
            w.sync().unwrap();
        }
        assert_eq!(fs::metadata(&seg).unwrap().len(), 2 * PREALLOCATE_BYTES);
        let o = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(o.records, vec![rec(1), rec(2), rec(3), big]);
    }

    #[test]
    fn small_segments_are_extended_in_small_steps() {
        assert_eq!(preallocation_step(64 << 20), PREALLOCATE_BYTES);
        assert_eq!(preallocation_step(4096), 4096);
        assert_eq!(preallocation_step(5000), 8192);
        assert_eq!(preallocation_step(1), 4096);
    }

    #[test]
    fn zeros_after_the_records_of_an_older_segment_end_it() {
        // A crash between a checkpoint's rename and the removal of the
        // segments before it leaves an older segment with zeros ahead.
        let mut older = encode_record(&rec(1));
        older.resize(4096, 0);
        let newer = encode_record(&rec(2));
        let report = scan_segments(vec![
            (PathBuf::from("wal-1.log"), older),
            (PathBuf::from("wal-2.log"), newer.clone()),
        ]);
        assert!(report.corruption.is_none() && report.torn_tail.is_none());
        let records: Vec<Record> = report.records.into_iter().map(|l| l.record).collect();
        assert_eq!(records, vec![rec(1), rec(2)]);
        // Damage followed by zeros in an older segment is still corruption.
        let mut damaged = encode_record(&rec(1));
        damaged.extend_from_slice(&[0xff; 16]);
        damaged.resize(4096, 0);
        let report = scan_segments(vec![
            (PathBuf::from("wal-1.log"), damaged),
            (PathBuf::from("wal-2.log"), newer),
        ]);
        assert!(report.corruption.is_some());
    }

    #[test]
    fn damage_before_the_tail_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let first_len;
        {
            let mut w = Wal::open(dir.path(), WalOptions::default()).unwrap().wal;
            let a = encode_record(&rec(1));
            first_len = a.len();
            w.write(&a).unwrap();
            w.write(&encode_record(&rec(2))).unwrap();
        }
        let seg = list_segments(dir.path()).unwrap()[0].1.clone();
        let mut bytes = fs::read(&seg).unwrap();
        bytes[first_len - 2] ^= 0x01;
        fs::write(&seg, bytes).unwrap();
        match Wal::open(dir.path(), WalOptions::default()) {
            Err(WalError::Corrupt { offset, .. }) => assert_eq!(offset, 0),
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn checkpoint_keeps_live_records_only() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            segment_max_bytes: 100,
            unsafe_no_fsync: false,
        };
        {
            let mut w = Wal::open(dir.path(), opts.clone()).unwrap().wal;
            for i in 0..10 {
                w.write(&encode_record(&rec(i))).unwrap();
            }
            assert!(w.needs_checkpoint());
            w.checkpoint(&[rec(9)]).unwrap();
            w.write(&encode_record(&rec(10))).unwrap();
        }
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
        let o = Wal::open(dir.path(), opts).unwrap();
        assert_eq!(o.records, vec![rec(9), rec(10)]);
    }

    #[test]
    fn large_snapshots_are_split_into_readable_records() {
        let big = "x".repeat(1024 * 1024);
        let state: serde_json::Map<String, Value> = (0..40)
            .map(|i| (format!("k{i:02}"), Value::String(big.clone())))
            .collect();
        let recs = snapshot_records(Value::Object(state)).unwrap();
        assert!(recs.len() >= 10, "{} records", recs.len());
        for (i, r) in recs.iter().enumerate() {
            let f = encode_record(r);
            assert!(
                f.len() <= RECORD_MAX_BYTES,
                "record {i} is {} bytes",
                f.len()
            );
            assert!(matches!(decode_record(&f), Decoded::Record(..)));
            assert!(matches!(r, Record::Snapshot { merge, .. } if *merge == (i > 0)));
        }
    }

    #[test]
    fn second_open_of_a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Wal::open(dir.path(), WalOptions::default()).unwrap();
        match Wal::open(dir.path(), WalOptions::default()) {
            Err(WalError::Locked { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected lock error, got {other:?}"),
        }
    }
}

//! The physical floor of one transaction at 1 in flight, measured on this
//! machine: the participants' forced write and the coordinator's forced
//! write in sequence (an append and `fdatasync`, as the log does, twice)
//! plus two loopback TCP round trips (client to coordinator to
//! participants, and back). No protocol can commit durably below it; the
//! bench reports its latency percentiles as multiples of it.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes of each forced write and each round-trip message: about one log
/// record or one frame.
const PROBE_BYTES: usize = 256;

/// Samples of each measurement (bounded by [`TIME_MAX`] as well).
const SAMPLES: usize = 200;

/// Longest each measurement runs.
const TIME_MAX: Duration = Duration::from_secs(2);

/// The measured floor.
#[derive(Clone, Debug)]
pub struct Floor {
    /// Where the forced writes went (a file removed afterwards).
    pub dir: PathBuf,
    /// Two forced writes in sequence, microseconds, sorted.
    pub forced_pair_us: Vec<u64>,
    /// Two loopback round trips in sequence, microseconds, sorted.
    pub round_trips_us: Vec<u64>,
    /// With a group: one forced write on a majority of its members (see
    /// the module's documentation), microseconds, sorted; empty without.
    pub majority_write_us: Vec<u64>,
    /// Members of the group measured for `majority_write_us`.
    pub members: usize,
}

impl Floor {
    /// The floor: the medians of both parts, added.
    pub fn floor_us(&self) -> u64 {
        super::percentile(&self.forced_pair_us, 50.0)
            + super::percentile(&self.round_trips_us, 50.0)
    }

    /// With a group: the least it adds to a transaction here, the median
    /// of a majority's forced write less that of one forced write alone
    /// (half the pair), in microseconds.
    pub fn group_added_us(&self) -> Option<u64> {
        if self.majority_write_us.is_empty() {
            return None;
        }
        Some(
            super::percentile(&self.majority_write_us, 50.0)
                .saturating_sub(super::percentile(&self.forced_pair_us, 50.0) / 2),
        )
    }

    pub fn report(&self, p50_us: u64, p99_us: u64) -> Value {
        let floor = self.floor_us().max(1) as f64;
        let part = |v: &[u64]| {
            json!({
                "p50_ms": super::percentile(v, 50.0) as f64 / 1000.0,
                "p99_ms": super::percentile(v, 99.0) as f64 / 1000.0,
                "samples": v.len(),
            })
        };
        let mut r = json!({
            "dir": self.dir.display().to_string(),
            "two_forced_writes": part(&self.forced_pair_us),
            "two_loopback_round_trips": part(&self.round_trips_us),
            "floor_ms": floor / 1000.0,
            "p50_over_floor": p50_us as f64 / floor,
            "p99_over_floor": p99_us as f64 / floor,
        });
        if let Some(added) = self.group_added_us() {
            r["group"] = json!({
                "members": self.members,
                "majority_forced_write": part(&self.majority_write_us),
                "added_floor_ms": added as f64 / 1000.0,
            });
        }
        r
    }
}

/// Measure the floor, forcing writes to a file in `dir`, and for a group
/// of `members` (more than one) a majority's forced write. Blocking: run
/// it off the async runtime.
pub fn measure(dir: &Path, members: usize) -> Result<Floor, String> {
    Ok(Floor {
        dir: dir.to_path_buf(),
        forced_pair_us: forced_writes(dir)?,
        round_trips_us: round_trips()?,
        majority_write_us: match members > 1 {
            true => majority_writes(dir, members)?,
            false => Vec::new(),
        },
        members,
    })
}

/// A file in `dir` for forced writes, removed when dropped.
fn probe_file(dir: &Path) -> Result<tempfile::NamedTempFile, String> {
    tempfile::Builder::new()
        .prefix("twopc-calibrate-")
        .tempfile_in(dir)
        .map_err(|e| {
            format!(
                "cannot create a file in {} to time forced writes: {e}",
                dir.display()
            )
        })
}

fn forced_writes(dir: &Path) -> Result<Vec<u64>, String> {
    let file = probe_file(dir)?;
    let mut f = file.as_file();
    let record = [0x5au8; PROBE_BYTES];
    let fail = |e: std::io::Error| format!("timing forced writes in {}: {e}", dir.display());
    let start = Instant::now();
    let mut out = Vec::with_capacity(SAMPLES);
    while out.len() < SAMPLES && start.elapsed() < TIME_MAX {
        let t = Instant::now();
        for _ in 0..2 {
            f.write_all(&record).map_err(fail)?;
            f.sync_data().map_err(fail)?;
        }
        out.push(t.elapsed().as_micros() as u64);
    }
    out.sort_unstable();
    Ok(out)
}

fn round_trips() -> Result<Vec<u64>, String> {
    let fail = |e: std::io::Error| format!("timing loopback round trips: {e}");
    let listener = TcpListener::bind("127.0.0.1:0").map_err(fail)?;
    let addr = listener.local_addr().map_err(fail)?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; PROBE_BYTES];
        loop {
            match s.read_exact(&mut buf) {
                Ok(()) => s.write_all(&buf)?,
                Err(_) => return Ok(()),
            }
        }
    });
    let mut s = TcpStream::connect(addr).map_err(fail)?;
    s.set_nodelay(true).map_err(fail)?;
    let msg = [0xa5u8; PROBE_BYTES];
    let mut back = [0u8; PROBE_BYTES];
    let start = Instant::now();
    let mut out = Vec::with_capacity(SAMPLES);
    while out.len() < SAMPLES && start.elapsed() < TIME_MAX {
        let t = Instant::now();
        for _ in 0..2 {
            s.write_all(&msg).map_err(fail)?;
            s.read_exact(&mut back).map_err(fail)?;
        }
        out.push(t.elapsed().as_micros() as u64);
    }
    drop(s);
    let _ = echo.join();
    out.sort_unstable();
    Ok(out)
}

/// One forced write on a majority of `members`: each sample sends a probe
/// to the other members, forces a write here, and ends when the majority's
/// answers are in (each member answers once its own write is forced); the
/// remaining answers are read before the next sample, as a group's
/// followers keep up at 1 in flight.
fn majority_writes(dir: &Path, members: usize) -> Result<Vec<u64>, String> {
    let fail = |e: std::io::Error| format!("timing a majority's forced write: {e}");
    let listener = TcpListener::bind("127.0.0.1:0").map_err(fail)?;
    let addr = listener.local_addr().map_err(fail)?;
    let mut peers = Vec::with_capacity(members - 1);
    let mut threads = Vec::with_capacity(members - 1);
    for _ in 1..members {
        let file = probe_file(dir)?;
        let s = TcpStream::connect(addr).map_err(fail)?;
        s.set_nodelay(true).map_err(fail)?;
        let (mut theirs, _) = listener.accept().map_err(fail)?;
        threads.push(std::thread::spawn(move || -> std::io::Result<()> {
            theirs.set_nodelay(true)?;
            let mut f = file.as_file();
            let mut buf = [0u8; PROBE_BYTES];
            loop {
                if theirs.read_exact(&mut buf).is_err() {
                    return Ok(());
                }
                f.write_all(&buf)?;
                f.sync_data()?;
                theirs.write_all(&buf[..1])?;
            }
        }));
        peers.push(s);
    }
    let file = probe_file(dir)?;
    let mut f = file.as_file();
    let record = [0x5au8; PROBE_BYTES];
    // Answers needed besides this member's own write.
    let needed = members / 2;
    let (answers_tx, answers) = std::sync::mpsc::channel::<()>();
    let mut readers = Vec::with_capacity(peers.len());
    for s in &peers {
        let mut s = s.try_clone().map_err(fail)?;
        let tx = answers_tx.clone();
        readers.push(std::thread::spawn(move || {
            let mut one = [0u8; 1];
            while s.read_exact(&mut one).is_ok() && tx.send(()).is_ok() {}
        }));
    }
    drop(answers_tx);
    let lost = || "a member's thread stopped while timing a majority's forced write".to_string();
    let start = Instant::now();
    let mut out = Vec::with_capacity(SAMPLES);
    while out.len() < SAMPLES && start.elapsed() < TIME_MAX {
        let t = Instant::now();
        for s in &mut peers {
            s.write_all(&record).map_err(fail)?;
        }
        f.write_all(&record).map_err(fail)?;
        f.sync_data().map_err(fail)?;
        for _ in 0..needed {
            answers.recv().map_err(|_| lost())?;
        }
        out.push(t.elapsed().as_micros() as u64);
        for _ in needed..peers.len() {
            answers.recv().map_err(|_| lost())?;
        }
    }
    for s in &peers {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    for t in threads {
        t.join().map_err(|_| lost())?.map_err(fail)?;
    }
    for r in readers {
        let _ = r.join();
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The floor is the sum of the two medians, and the ratios divide by it.
    #[test]
    fn the_floor_adds_the_medians_and_ratios_divide_by_it() {
        let floor = Floor {
            dir: PathBuf::from("/d"),
            forced_pair_us: vec![800, 900, 1000],
            round_trips_us: vec![50, 100, 150],
            majority_write_us: Vec::new(),
            members: 1,
        };
        assert_eq!(floor.floor_us(), 1000);
        let r = floor.report(1300, 3000);
        assert_eq!(r["floor_ms"], 1.0);
        assert_eq!(r["p50_over_floor"], 1.3);
        assert_eq!(r["p99_over_floor"], 3.0);
        assert!(r.get("group").is_none(), "no group, no group floor");
    }

    /// A group's added floor is a majority's forced write less one forced
    /// write alone (half the pair), never below zero.
    #[test]
    fn a_groups_added_floor_is_the_majority_write_less_one_write() {
        let mut floor = Floor {
            dir: PathBuf::from("/d"),
            forced_pair_us: vec![300, 400, 500],
            round_trips_us: vec![100],
            majority_write_us: vec![250, 300, 900],
            members: 3,
        };
        assert_eq!(floor.group_added_us(), Some(100));
        let r = floor.report(1000, 2000);
        assert_eq!(r["group"]["members"], 3);
        assert_eq!(r["group"]["added_floor_ms"], 0.1);
        assert_eq!(r["group"]["majority_forced_write"]["p50_ms"], 0.3);
        floor.majority_write_us = vec![100];
        assert_eq!(floor.group_added_us(), Some(0));
    }

    /// A real measurement in a temporary directory gives samples of both.
    #[test]
    fn measuring_takes_samples_of_disk_and_loopback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let floor = measure(dir.path(), 1).expect("calibrates");
        assert!(!floor.forced_pair_us.is_empty());
        assert!(!floor.round_trips_us.is_empty());
        assert!(floor.majority_write_us.is_empty(), "no group asked for");
        assert!(floor.floor_us() > 0);
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "the probe file is removed"
        );
    }

    /// For a group, a majority's forced write is timed with members that
    /// each force their own write, and every probe file is removed.
    #[test]
    fn measuring_a_group_times_a_majoritys_forced_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let floor = measure(dir.path(), 3).expect("calibrates");
        assert!(!floor.majority_write_us.is_empty());
        assert!(floor.majority_write_us.iter().all(|us| *us > 0));
        assert!(floor.group_added_us().is_some());
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "the probe files are removed"
        );
    }
}

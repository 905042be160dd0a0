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
}

impl Floor {
    /// The floor: the medians of both parts, added.
    pub fn floor_us(&self) -> u64 {
        super::percentile(&self.forced_pair_us, 50.0)
            + super::percentile(&self.round_trips_us, 50.0)
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
        json!({
            "dir": self.dir.display().to_string(),
            "two_forced_writes": part(&self.forced_pair_us),
            "two_loopback_round_trips": part(&self.round_trips_us),
            "floor_ms": floor / 1000.0,
            "p50_over_floor": p50_us as f64 / floor,
            "p99_over_floor": p99_us as f64 / floor,
        })
    }
}

/// Measure the floor, forcing writes to a file in `dir`. Blocking: run it
/// off the async runtime.
pub fn measure(dir: &Path) -> Result<Floor, String> {
    Ok(Floor {
        dir: dir.to_path_buf(),
        forced_pair_us: forced_writes(dir)?,
        round_trips_us: round_trips()?,
    })
}

fn forced_writes(dir: &Path) -> Result<Vec<u64>, String> {
    let file = tempfile::Builder::new()
        .prefix("twopc-calibrate-")
        .tempfile_in(dir)
        .map_err(|e| {
            format!(
                "cannot create a file in {} to time forced writes: {e}",
                dir.display()
            )
        })?;
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
        };
        assert_eq!(floor.floor_us(), 1000);
        let r = floor.report(1300, 3000);
        assert_eq!(r["floor_ms"], 1.0);
        assert_eq!(r["p50_over_floor"], 1.3);
        assert_eq!(r["p99_over_floor"], 3.0);
    }

    /// A real measurement in a temporary directory gives samples of both.
    #[test]
    fn measuring_takes_samples_of_disk_and_loopback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let floor = measure(dir.path()).expect("calibrates");
        assert!(!floor.forced_pair_us.is_empty());
        assert!(!floor.round_trips_us.is_empty());
        assert!(floor.floor_us() > 0);
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "the probe file is removed"
        );
    }
}

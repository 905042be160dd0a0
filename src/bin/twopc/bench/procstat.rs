//! What a process has spent, from `/proc`: CPU time (`/proc/PID/stat`,
//! user + system, all threads), write system calls (`/proc/PID/io`,
//! `syscw`) and resident memory (`/proc/PID/statm`). Linux only; on a
//! kernel without these files the figures are absent, never made up.

use serde_json::{json, Value};

/// One reading of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// User + system CPU time of all its threads, in clock ticks.
    pub cpu_ticks: u64,
    /// `write`/`writev`/`pwrite` calls so far. The kernel does not count
    /// `send`/`sendmsg` here; twopc's connections write with `writev`.
    pub syscw: Option<u64>,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Threads of the process.
    pub threads: u64,
}

/// Clock ticks per second (`utime` and `stime` are counted in them).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

fn page_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}

/// `utime + stime` from the text of `/proc/PID/stat`. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted from
/// the last `)`.
pub fn parse_stat_cpu(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The number of threads (field 20) from the text of `/proc/PID/stat`.
pub fn parse_stat_threads(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(17)?.parse().ok()
}

/// The session id (field 6) from the text of `/proc/PID/stat`.
pub fn parse_stat_session(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// The session process `pid` belongs to.
pub fn session(pid: u32) -> Option<u32> {
    parse_stat_session(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `syscw` from the text of `/proc/PID/io`.
pub fn parse_io_syscw(io: &str) -> Option<u64> {
    io.lines()
        .find_map(|l| l.strip_prefix("syscw:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Read process `pid` now; `None` when it is gone (or this is not Linux).
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let cpu_ticks = parse_stat_cpu(&stat)?;
    // Readable for our own children; another user's process needs
    // privileges, and its writes are then reported as unknown.
    let syscw = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| parse_io_syscw(&io));
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(Sample {
        cpu_ticks,
        syscw,
        rss_bytes: resident * page_bytes(),
        threads: parse_stat_threads(&stat).unwrap_or(0),
    })
}

/// A process the bench watches: its readings before and after the load.
#[derive(Clone, Debug)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
    /// Its session (with `--setsid`, its own: the same as `pid`).
    pub session: Option<u32>,
    pub before: Option<Sample>,
    pub after: Option<Sample>,
}

impl Watched {
    pub fn new(name: String, pid: u32) -> Watched {
        Watched {
            before: sample(pid),
            after: None,
            session: session(pid),
            name,
            pid,
        }
    }

    /// CPU microseconds spent between the readings, per transaction.
    pub fn cpu_us_per_txn(&self, txns: u64) -> Option<f64> {
        let (b, a) = (self.before?, self.after?);
        let us = a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64 * 1e6 / ticks_per_second() as f64;
        (txns > 0).then(|| us / txns as f64)
    }

    /// Write system calls between the readings, per transaction.
    pub fn writes_per_txn(&self, txns: u64) -> Option<f64> {
        let (b, a) = (self.before?.syscw?, self.after?.syscw?);
        (txns > 0).then(|| a.saturating_sub(b) as f64 / txns as f64)
    }

    pub fn report(&self, txns: u64) -> Value {
        json!({
            "name": self.name,
            "pid": self.pid,
            "session": self.session,
            "threads": self.after.map(|a| a.threads),
            "cpu_us_per_txn": self.cpu_us_per_txn(txns),
            "writes_per_txn": self.writes_per_txn(txns),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat =
            "4242 (tw o) p)) S 1 4242 4242 0 -1 4194560 500 0 0 0 1234 56 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_cpu(stat), Some(1234 + 56));
        assert_eq!(parse_stat_cpu("4242 (short"), None);
        assert_eq!(parse_stat_session(stat), Some(4242));
        assert_eq!(parse_stat_threads(stat), Some(3));
    }

    #[test]
    fn syscw_is_read_from_proc_io() {
        let io = "rchar: 10\nwchar: 20\nsyscr: 3\nsyscw: 77\nread_bytes: 0\n";
        assert_eq!(parse_io_syscw(io), Some(77));
        assert_eq!(parse_io_syscw("rchar: 10\n"), None);
    }

    /// This process's own counters move with what it does.
    #[test]
    fn our_own_writes_and_cpu_are_seen() {
        let pid = std::process::id();
        let before = sample(pid).expect("/proc/self is readable");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w");
        let mut f = std::fs::File::create(&path).expect("create");
        for _ in 0..100 {
            std::io::Write::write_all(&mut f, b"x").expect("write");
        }
        let after = sample(pid).expect("/proc/self is readable");
        assert!(after.syscw.expect("syscw") >= before.syscw.expect("syscw") + 100);
        assert!(after.rss_bytes > 0);
    }
}

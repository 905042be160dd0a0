//! A log write that fails stops the process with exit status 74 and says why
//! on stderr (`fatal()` in src/wal/writer.rs): it never runs on a log it
//! cannot trust. The failure is real: the process's data directory is a
//! tiny tmpfs filled up after start, so its next log write gets ENOSPC from
//! the kernel. Mounting needs root (CAP_SYS_ADMIN); without it the tests
//! fail and say so, unless TWOPC_TEST_SKIP_MOUNT=1 skips them knowingly.

mod common;

use common::*;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use twopc::protocol::Decision;

/// The exit status of a fatal log error.
const EXIT_LOG_FAILURE: i32 = 74;

/// A tmpfs mounted on a directory, lazily unmounted when dropped (a
/// process still holding files in it cannot keep the mount alive).
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    /// Mount a tmpfs of `size` (mount(8) syntax) on `at`; `None` when this
    /// test may be skipped because mounting is not permitted here.
    fn mount(test: &str, at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { at: at.to_path_buf() }),
            other if std::env::var("TWOPC_TEST_SKIP_MOUNT").is_ok_and(|v| v == "1") => {
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {test} (TWOPC_TEST_SKIP_MOUNT=1): cannot mount a tmpfs: {other:?}"
                );
                None
            }
            other => panic!(
                "{test}: this test mounts a tiny tmpfs to make log writes fail, which needs root: {other:?}\n\
                 Run it as root, or set TWOPC_TEST_SKIP_MOUNT=1 to skip it knowingly."
            ),
        }
    }

    /// Take every free byte with a filler file; the next allocation fails.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.at.join("filler")).expect("filler file");
        let chunk = [0u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // Byte-sized leftovers of a partly used page are gone too.
        while f.write(&[0u8]).is_ok_and(|n| n == 1) {}
        let probe = std::fs::write(self.at.join("probe"), [0u8; 1]);
        assert!(probe.is_err(), "the tmpfs still has room after filling");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// The process must have exited with status 74, and its stderr must say
/// that the log failed, which file, and the kernel's reason.
fn assert_log_failure_exit(proc: &mut Proc, dir: &Path) {
    let status = proc
        .wait_exit(PATIENCE)
        .unwrap_or_else(|| panic!("{} kept running on a full disk", proc.name));
    let log = proc.log_text();
    assert_eq!(
        status.code(),
        Some(EXIT_LOG_FAILURE),
        "{}: {status:?}; log:\n{log}",
        proc.name
    );
    let segment = dir.join("wal-0000000000000001.log");
    let line = log
        .lines()
        .find(|l| l.starts_with("twopc: fatal log error:"))
        .unwrap_or_else(|| panic!("{}: no fatal log error on stderr:\n{log}", proc.name));
    assert!(
        line.contains(&format!("log I/O error on {}", segment.display()))
            && line.contains("No space left on device")
            && line.contains("a restart recovers from the durable log"),
        "{}: {line}",
        proc.name
    );
}

#[test]
fn a_coordinator_that_cannot_write_its_log_exits_with_status_74() {
    let test = "a_coordinator_that_cannot_write_its_log_exits_with_status_74";
    let mut c = Cluster::new();
    let dir = c.coordinator_dir();
    let Some(disk) = Tmpfs::mount(test, &dir, "64k") else {
        return;
    };
    c.start_coordinator(&["--expected-participants", "1"], &[]);
    c.start_participants(1, &[]);
    c.wait_ready(1);
    disk.fill();
    // A commit decision must be logged before anyone hears of it. The log's
    // last page may still have room for a few records (the disk is full,
    // the page is allocated), so submit until one fails: every commit
    // announced before must be in the log, and the failing write stops
    // the process without an outcome.
    let mut announced = Vec::new();
    for i in 0..500 {
        match c.submit(req(json!({"full": "disk", "i": i}))) {
            Ok((txn, o)) if o.decision == Decision::Commit => announced.push(txn),
            Ok((txn, o)) => panic!("{txn} aborted on a healthy cluster: {o:?}"),
            Err(_) => break,
        }
    }
    let coordinator = c.coordinator.as_mut().expect("coordinator");
    assert_log_failure_exit(coordinator, &dir);
    let (_, inspected) = wal_inspect(&dir);
    let logged: Vec<&str> = inspected["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .filter(|t| {
            t["records"]
                .as_array()
                .is_some_and(|r| r.iter().any(|k| k == "decision"))
        })
        .filter_map(|t| t["transaction_id"].as_str())
        .collect();
    for txn in &announced {
        assert!(
            logged.contains(&txn.0.as_str()),
            "{txn} was announced committed but its decision is not in the log: {inspected}"
        );
    }
}

#[test]
fn a_participant_that_cannot_write_its_log_exits_with_status_74() {
    let test = "a_participant_that_cannot_write_its_log_exits_with_status_74";
    let mut c = Cluster::new();
    let dir = c.path("p1");
    let Some(disk) = Tmpfs::mount(test, &dir, "64k") else {
        return;
    };
    c.start_coordinator(&["--expected-participants", "1"], &[]);
    c.start_participants(1, &[]);
    c.wait_ready(1);
    disk.fill();
    // p1 cannot log its vote, so it never sends one: the coordinator sees
    // it go before voting and aborts.
    let (id, o) = c
        .submit(req(json!({"full": "disk"})))
        .expect("the coordinator decides");
    assert_eq!(o.decision, Decision::Abort, "{id}: {o:?}");
    assert_eq!(
        o.reason.as_deref(),
        Some("participant_disconnected: p1"),
        "{id}: {o:?}"
    );
    assert_log_failure_exit(&mut c.participants[0], &dir);
}

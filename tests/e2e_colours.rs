//! Colours only on a terminal: a coordinator's text log and the tool's
//! messages carry ANSI escape sequences only when stderr is a terminal and
//! `NO_COLOR` is unset (https://no-color.org). The terminal is a real
//! pseudo-terminal (the child's stderr is its secondary side; the test
//! reads the primary side), so the same check that finds no colours in a
//! file finds them on a terminal: it can fail.

mod common;

use common::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ESC: u8 = 0x1b;

/// A pseudo-terminal: the primary side (read by the test) and the path of
/// the secondary side (a child's stderr).
struct Pty {
    primary: std::fs::File,
    secondary: std::path::PathBuf,
}

fn pty() -> Pty {
    use std::os::fd::FromRawFd;
    // SAFETY: plain libc calls on a descriptor this function owns; the
    // name ptsname returns is copied before any other call.
    unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        assert_eq!(libc::grantpt(fd), 0, "grantpt");
        assert_eq!(libc::unlockpt(fd), 0, "unlockpt");
        let name = libc::ptsname(fd);
        assert!(!name.is_null(), "ptsname");
        let secondary = std::ffi::CStr::from_ptr(name)
            .to_string_lossy()
            .into_owned()
            .into();
        Pty {
            primary: std::fs::File::from_raw_fd(fd),
            secondary,
        }
    }
}

impl Pty {
    /// A handle on the secondary side for a child's stderr.
    fn stderr(&self) -> Stdio {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.secondary)
            .expect("open the terminal's secondary side")
            .into()
    }

    /// Read what arrives until `done` says so or every writer is gone;
    /// bounded by PATIENCE.
    fn read_until(self, done: impl Fn(&[u8]) -> bool + Send + 'static) -> Vec<u8> {
        let (tx, rx) = mpsc::channel();
        let mut primary = self.primary;
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // Reading the primary side fails (EIO) once the secondary side
            // is closed by every process.
            while let Ok(n) = primary.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if done(&seen) {
                    break;
                }
            }
            let _ = tx.send(seen);
        });
        rx.recv_timeout(PATIENCE)
            .expect("the terminal output within PATIENCE")
    }
}

/// A coordinator (text logs, debug level) with stderr on `stderr` and
/// `NO_COLOR` as given; returns it once it listens.
fn coordinator(dir: &std::path::Path, stderr: Stdio, no_color: Option<&str>) -> Proc {
    let mut cmd = clean_command(COORDINATOR);
    cmd.args(["--host", "127.0.0.1", "--port", "0", "--log-level", "debug"])
        .args(["--log-format", "text", "--expected-participants", "1"])
        .arg("--data-dir")
        .arg(dir.join("coordinator"))
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let mut child = cmd.spawn().expect("spawn coordinator");
    let mut out = child.stdout.take().expect("stdout");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line);
    assert!(line.contains("listening on"), "did not start: {line:?}");
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Proc {
        name: "coordinator".into(),
        child: Some(child),
        log: dir.join("unused.log"),
    }
}

/// The coordinator's log on a terminal, up to its warning about running
/// without a secret (one of its first lines, at warn level, so coloured).
fn terminal_log(no_color: Option<&str>) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let term = pty();
    let stderr = term.stderr();
    let mut proc = coordinator(dir.path(), stderr, no_color);
    let text = term.read_until(|seen| {
        String::from_utf8_lossy(seen).contains("listening on") && seen.ends_with(b"\n")
    });
    proc.kill9();
    text
}

#[test]
fn a_coordinator_logging_to_a_file_writes_no_escape_sequences() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("coordinator.log");
    let file = std::fs::File::create(&log).expect("create the log file");
    let mut proc = coordinator(dir.path(), file.into(), None);
    // A transaction-free line at info level is enough; wait for one.
    let start = Instant::now();
    let text = loop {
        let text = std::fs::read(&log).expect("read the log");
        if String::from_utf8_lossy(&text).contains("listening on") {
            break text;
        }
        assert!(start.elapsed() < PATIENCE, "no log lines in {log:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    proc.kill9();
    assert!(
        !text.contains(&ESC),
        "escape sequences in a log file:\n{}",
        String::from_utf8_lossy(&text)
    );
}

#[test]
fn on_a_terminal_logs_are_coloured_unless_no_color_is_set() {
    let coloured = terminal_log(None);
    assert!(
        coloured.contains(&ESC),
        "no colours on a terminal:\n{}",
        String::from_utf8_lossy(&coloured)
    );
    let plain = terminal_log(Some("1"));
    assert!(
        String::from_utf8_lossy(&plain).contains("listening on"),
        "{}",
        String::from_utf8_lossy(&plain)
    );
    assert!(
        !plain.contains(&ESC),
        "colours with NO_COLOR=1:\n{}",
        String::from_utf8_lossy(&plain)
    );
}

/// `twopc` with `args`, stderr on a terminal; what it wrote there.
fn tool_on_terminal(args: &[&str], no_color: Option<&str>) -> Vec<u8> {
    let term = pty();
    let mut cmd = Command::new(TWOPC);
    cmd.args(args)
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(term.stderr());
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let mut child = cmd.spawn().expect("spawn twopc");
    // The child holds the only handle on the secondary side once `cmd`
    // (and its copy of the handle) is gone: reading ends when it exits.
    drop(cmd);
    let text = term.read_until(|_| false);
    let _ = child.wait();
    text
}

#[test]
fn the_tool_colours_its_usage_errors_only_on_a_terminal_without_no_color() {
    let coloured = tool_on_terminal(&["--no-such-flag"], None);
    let shown = String::from_utf8_lossy(&coloured).to_string();
    assert!(shown.contains("no-such-flag"), "{shown}");
    assert!(coloured.contains(&ESC), "no colours on a terminal: {shown}");
    let plain = tool_on_terminal(&["--no-such-flag"], Some("1"));
    let shown = String::from_utf8_lossy(&plain).to_string();
    assert!(shown.contains("no-such-flag"), "{shown}");
    assert!(!plain.contains(&ESC), "colours with NO_COLOR=1: {shown}");
    // And into a pipe, never.
    let out = Command::new(TWOPC)
        .arg("--no-such-flag")
        .env_remove("NO_COLOR")
        .output()
        .expect("run twopc");
    assert!(!out.stderr.is_empty());
    assert!(
        !out.stderr.contains(&ESC),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

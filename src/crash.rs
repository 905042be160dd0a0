//! Crash points for fault injection: `TWOPC_CRASH_AT=<point>[:<n>]` makes the
//! process kill itself with SIGKILL (no cleanup, no flush) the n-th time it
//! reaches `<point>` (default the first). When the variable is unset a hit
//! costs one load of an already-initialised cell.
//!
//! This is the one place in the library that writes to stderr and ends the
//! process: killing it on purpose, unannounced to the rest of the code, is
//! the whole job, so that the crash tests see what a real crash leaves
//! behind. Nothing else in the library prints or exits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Every crash point the binaries reach, for documentation and validation.
pub const POINTS: &[&str] = &[
    "coordinator.before_decision_logged",
    "coordinator.after_decision_logged",
    "coordinator.after_first_decision_sent",
    "coordinator.before_end_logged",
    "participant.after_prepare_logged",
    "participant.after_vote_sent",
    "participant.after_decision_logged",
    // Inside a log checkpoint (either process; a participant's first
    // checkpoint is its initial data): see `wal::Wal::checkpoint`.
    "wal.checkpoint.partial_write",
    "wal.checkpoint.before_sync",
    "wal.checkpoint.before_rename",
    "wal.checkpoint.before_old_removed",
];

struct Armed {
    point: String,
    nth: u64,
    seen: AtomicU64,
}

fn armed() -> &'static Option<Armed> {
    static CELL: OnceLock<Option<Armed>> = OnceLock::new();
    CELL.get_or_init(|| {
        let spec = std::env::var("TWOPC_CRASH_AT").ok()?;
        let (point, nth) = match spec.rsplit_once(':') {
            Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
            None => (spec.clone(), 1),
        };
        Some(Armed {
            point,
            nth: nth.max(1),
            seen: AtomicU64::new(0),
        })
    })
}

/// Check `TWOPC_CRASH_AT` at start-up: a misspelt point must not silently
/// turn a crash test into a pass.
pub fn validate() -> Result<(), UnknownCrashPoint> {
    match armed() {
        Some(a) if !POINTS.contains(&a.point.as_str()) => Err(UnknownCrashPoint {
            point: a.point.clone(),
        }),
        _ => Ok(()),
    }
}

/// `TWOPC_CRASH_AT` names a point the code does not have: fix the spelling
/// to one of [`POINTS`], or unset the variable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("TWOPC_CRASH_AT names unknown crash point `{point}`; known points: {}", POINTS.join(", "))]
pub struct UnknownCrashPoint {
    /// The point as written in the variable (without its `:n` count).
    pub point: String,
}

/// Is any crash point armed at all?
pub fn enabled() -> bool {
    armed().is_some()
}

/// Reach crash point `point`: die here if it is the armed occurrence.
pub fn hit(point: &str) {
    if take(point) {
        kill_now(point);
    }
}

/// Count a pass through `point`; true when this pass is the armed one. The
/// caller then arranges to die at the exact place (for example right after
/// a message has been written) with [`kill_now`], and must not make further
/// progress until then (see [`halt`]).
pub fn take(point: &str) -> bool {
    match armed() {
        Some(a) => a.point == point && a.seen.fetch_add(1, Ordering::SeqCst) + 1 == a.nth,
        None => false,
    }
}

/// Die like kill -9: no cleanup, no flush.
pub fn kill_now(point: &str) -> ! {
    eprintln!("twopc: crash point {point} reached; killing this process (TWOPC_CRASH_AT)");
    // SAFETY: raising a signal at ourselves has no memory-safety
    // preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

/// Block the calling thread until another thread runs [`kill_now`] for
/// `point` (bounded: after 10 s it kills the process itself). Keeps the
/// event loop from sending anything after the crash point.
pub fn halt(point: &str) -> ! {
    // block_in_place hands this worker's queued tasks (the connection writer
    // that will write the last frame and kill us) to another thread.
    tokio::task::block_in_place(|| std::thread::sleep(std::time::Duration::from_secs(10)));
    kill_now(point)
}

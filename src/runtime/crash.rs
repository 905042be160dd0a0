//! Crash points for fault injection: `TWOPC_CRASH_AT=<point>[:<n>]` makes the
//! process kill itself with SIGKILL (no cleanup, no flush) the n-th time it
//! reaches `<point>` (default the first). When the variable is unset a hit
//! costs one load of an already-initialised cell.

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
pub fn validate() -> Result<(), String> {
    match armed() {
        Some(a) if !POINTS.contains(&a.point.as_str()) => Err(format!(
            "TWOPC_CRASH_AT names unknown crash point `{}`; known points: {}",
            a.point,
            POINTS.join(", ")
        )),
        _ => Ok(()),
    }
}

/// Is any crash point armed at all?
pub fn enabled() -> bool {
    armed().is_some()
}

/// Reach crash point `point`.
pub fn hit(point: &str) {
    if let Some(a) = armed() {
        if a.point == point && a.seen.fetch_add(1, Ordering::SeqCst) + 1 == a.nth {
            eprintln!("twopc: crash point {point} reached; killing this process (TWOPC_CRASH_AT)");
            // SAFETY: raising a signal at ourselves has no memory-safety
            // preconditions.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            std::process::abort();
        }
    }
}

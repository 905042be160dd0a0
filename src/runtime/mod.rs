//! The only place where the protocol cores meet tokio: it drives the cores
//! with the events of their connections (from [`crate::net`]) and timers,
//! and executes their actions in order (persist → sync → send) over the
//! write-ahead log and an outbox. Connections themselves (framing, the
//! handshake gate, listening, connecting) are `net`'s.

pub mod console;
pub mod coordinator;
/// Crash points live in a leaf module (the log and the network use them too).
pub use crate::crash;
pub mod executor;
pub mod gate;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod outbox;
pub mod participant;
pub(crate) mod timing;

use crate::protocol::Millis;
use tokio::time::Instant;

/// Monotonic milliseconds since the process started; the only clock the
/// cores see. Tokio's instant: the system's monotonic clock in production,
/// the simulated one inside a simulation.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }
    pub fn now(&self) -> Millis {
        self.0.elapsed().as_millis() as Millis
    }

    /// The instant the clock counts from.
    pub fn started(&self) -> Instant {
        self.0
    }

    /// One reading in the cores' milliseconds and in microseconds, for
    /// latencies finer than the cores' clock (see [`timing`]).
    pub fn now_with_micros(&self) -> (Millis, u64) {
        let e = self.0.elapsed();
        (e.as_millis() as Millis, e.as_micros() as u64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::start()
    }
}

/// Open a process's write-ahead log, saying loudly when fsync is off and
/// what a cut torn tail was.
pub(crate) fn open_log(
    dir: &std::path::Path,
    cfg: &crate::config::WalConfig,
) -> Result<crate::wal::Opened, crate::wal::WalError> {
    let opts = crate::wal::WalOptions {
        segment_max_bytes: cfg.segment_max_bytes,
        unsafe_no_fsync: cfg.unsafe_no_fsync,
    };
    if opts.unsafe_no_fsync {
        tracing::warn!("!!! wal.unsafe_no_fsync is ON: votes and decisions are NOT durable; a machine crash can lose or split transactions. Use for benchmarks only. !!!");
    }
    #[cfg(feature = "sim")]
    if let Some(disk) = crate::sim::disk(dir) {
        return crate::wal::Wal::open_sim(dir, disk, opts);
    }
    let opened = crate::wal::Wal::open(dir, opts)?;
    if let Some(d) = &opened.torn_tail {
        tracing::warn!(
            file = %d.file.display(),
            offset = d.offset,
            "cut a torn record at the end of the log ({}); it was never acknowledged",
            d.why
        );
    }
    for f in &opened.permissions_fixed {
        tracing::warn!(
            file = %f.display(),
            "group or others had access to the data directory or a file in it; made it private to this user (directory 0700, files 0600)"
        );
    }
    for f in &opened.unfinished_checkpoints {
        tracing::warn!(
            file = %f.display(),
            "deleted the temporary file of a checkpoint a crash interrupted; the older segments still hold everything"
        );
    }
    Ok(opened)
}

/// Log an `Alert` action from a core.
pub(crate) fn alert(txn: Option<&crate::protocol::TxnId>, message: &str) {
    match txn {
        Some(t) => tracing::error!(transaction_id = %t, "{message}"),
        None => tracing::error!("{message}"),
    }
}

//! What `twopc-coordinator`, `twopc-participant` and `twopc
//! coordinator|participant` share around a server: the async runtime,
//! cancellation on SIGINT/SIGTERM, the crash-point check and the exit
//! statuses. Included by each binary (`#[path] mod cli;`) next to
//! `coordinator.rs` and `participant.rs`; it is process code, so the
//! library never prints or exits.

use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use twopc::config::Runtime;
use twopc::runtime::crash;
use twopc::LogFailure;

/// The runtime of a client command: multi-threaded, so a load generator
/// (`twopc bench`, `twopc bank`) can use every core.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// The runtime of a server (coordinator or participant), as configured
/// (`runtime`). One thread by default: the event loop owns the core and
/// every frame passes through it, so on more threads each message costs a
/// hand-over between threads (a wake-up, often a context switch); on one
/// thread the writers run after the loop's turn and send everything of the
/// turn in one write per peer. The log's writer is its own thread in either
/// case (it blocks in fsync).
///
/// Measured with `twopc bench --local 3` on 2 cores (one sitting,
/// alternating): one thread is ahead by 14-30 % at 64 in flight with all
/// processes in one session and spends about a sixth less CPU per
/// transaction; with each process in its own session (`--setsid`) the
/// multi-threaded runtime was ahead by about 15 % on a quiet machine and
/// behind on a busy one. Hence the setting.
///
/// With a crash point armed (`TWOPC_CRASH_AT`, fault-injection runs only)
/// the runtime is multi-threaded whatever the setting: a crash point stops
/// the event loop's thread until another thread has written the last frame
/// (see `crash::halt`).
pub fn server_runtime(kind: Runtime) -> std::io::Result<tokio::runtime::Runtime> {
    match kind {
        Runtime::CurrentThread if !crash::enabled() => {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        }
        Runtime::CurrentThread | Runtime::MultiThread => runtime(),
    }
}

/// Cancel `token` on SIGINT or SIGTERM.
pub async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutdown requested; finishing");
    token.cancel();
}

/// Exit status after a fatal log error (EX_IOERR).
pub const EXIT_LOG_FAILURE: u8 = 74;

/// Refuse to start (usage, exit 2) when `TWOPC_CRASH_AT` names no crash
/// point.
pub fn check_crash_env(who: &str) -> Result<(), ExitCode> {
    crash::validate().map_err(|e| {
        eprintln!("{who}: {e}");
        ExitCode::from(2)
    })
}

/// The exit status once a server's `run()` returned: 0 after a requested
/// shutdown; after a fatal log error, EX_IOERR, so that whatever supervises
/// the process restarts it and recovery starts from the durable log.
pub fn exit_status(run: Result<(), LogFailure>) -> ExitCode {
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "twopc: {e}; the process stops so that a restart recovers from the durable log"
            );
            ExitCode::from(EXIT_LOG_FAILURE)
        }
    }
}

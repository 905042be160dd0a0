//! `run_coordinator`: a coordinator from its configuration until a signal,
//! with the readiness lines on stdout and the process's exit status.

use crate::cli::{cancel_on_signal, check_crash_env, exit_status, server_runtime};
use std::io::Write;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use twopc::config::CoordinatorConfig;
use twopc::CoordinatorServer;

/// Run a coordinator until SIGINT/SIGTERM.
pub fn run_coordinator(cfg: CoordinatorConfig) -> ExitCode {
    if let Err(code) = check_crash_env("twopc-coordinator") {
        return code;
    }
    let rt = match server_runtime(cfg.runtime) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("twopc-coordinator: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let server = match CoordinatorServer::start(cfg).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("twopc-coordinator: {e}");
                return ExitCode::from(1);
            }
        };
        match server.local_addr() {
            Ok(a) => {
                tracing::info!("listening on {a}");
                println!("twopc-coordinator listening on {a}");
                if let Some(h) = server.admin_addr() {
                    tracing::info!("admin http listening on {h}");
                    println!("twopc-coordinator admin http listening on {h}");
                }
                let _ = std::io::stdout().flush();
            }
            Err(e) => {
                eprintln!("twopc-coordinator: cannot read the bound address: {e}");
                return ExitCode::from(1);
            }
        }
        let token = CancellationToken::new();
        tokio::spawn(cancel_on_signal(token.clone()));
        exit_status(server.run(token).await)
    })
}

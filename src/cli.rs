//! Process entry points shared by the binaries: build the runtime, install
//! signal handlers, start the server, print the readiness line, and map
//! failures to exit statuses.

use crate::config::{CoordinatorConfig, ParticipantConfig, ResourceKind};
use crate::resource::kv::KvStore;
use crate::resource::{Preference, Resource, VoteResource};
use crate::runtime::coordinator::CoordinatorServer;
use crate::runtime::crash;
use crate::runtime::participant::ParticipantNode;
use std::io::Write;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Cancel `token` on SIGINT or SIGTERM.
async fn cancel_on_signal(token: CancellationToken) {
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

fn check_crash_env(who: &str) -> Result<(), ExitCode> {
    crash::validate().map_err(|e| {
        eprintln!("{who}: {e}");
        ExitCode::from(2)
    })
}

/// Run a coordinator until SIGINT/SIGTERM.
pub fn run_coordinator(cfg: CoordinatorConfig) -> ExitCode {
    if let Err(code) = check_crash_env("twopc-coordinator") {
        return code;
    }
    let rt = match runtime() {
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
        match server.run(token).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "twopc: {e}; the process stops so that a restart recovers from the durable log"
                );
                ExitCode::from(EXIT_LOG_FAILURE)
            }
        }
    })
}

/// The participant's resource, from its configuration, with the vote
/// preference on top.
pub fn build_resource(cfg: &ParticipantConfig) -> Result<Box<dyn Resource>, String> {
    let (pref, p, seed) = (cfg.vote_preference, cfg.commit_probability, cfg.vote_seed);
    match cfg.resource {
        ResourceKind::Kv => {
            let mut kv = KvStore::new();
            if let Some(path) = &cfg.kv.seed_file {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read kv.seed_file {}: {e}", path.display()))?;
                let seed: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    format!("kv.seed_file {} is not valid JSON: {e}", path.display())
                })?;
                kv.seed(&seed)
                    .map_err(|e| format!("kv.seed_file {}: {e}", path.display()))?;
            }
            Ok(Box::new(Preference::new(kv, pref, p, seed)))
        }
        ResourceKind::Postgres => {
            let pg = crate::resource::postgres::PostgresResource::new(
                &cfg.id,
                &cfg.postgres.settings(),
            )?;
            Ok(Box::new(Preference::new(pg, pref, p, seed)))
        }
        ResourceKind::Vote => Ok(Box::new(VoteResource::voting(pref, p, seed))),
    }
}

/// Run a participant until SIGINT/SIGTERM.
pub fn run_participant(cfg: ParticipantConfig) -> ExitCode {
    if let Err(code) = check_crash_env("twopc-participant") {
        return code;
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("twopc-participant: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let resource = match build_resource(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("twopc-participant: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        let node = match ParticipantNode::start(cfg.clone(), resource).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("twopc-participant: {e}");
                return ExitCode::from(1);
            }
        };
        if let Some(a) = node.admin_addr() {
            println!("twopc-participant {} admin listening on {a}", cfg.id);
            let _ = std::io::stdout().flush();
        }
        tracing::info!(id = %cfg.id, vote_preference = %cfg.vote_preference, "participant started");
        let mut registered = node.registered();
        let line = format!(
            "twopc-participant {} registered with {}:{}",
            cfg.id, cfg.coordinator_host, cfg.coordinator_port
        );
        tokio::spawn(async move {
            if registered.wait_for(|r| *r).await.is_ok() {
                println!("{line}");
                let _ = std::io::stdout().flush();
            }
        });
        let token = CancellationToken::new();
        tokio::spawn(cancel_on_signal(token.clone()));
        match node.run(token).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "twopc: {e}; the process stops so that a restart recovers from the durable log"
                );
                ExitCode::from(EXIT_LOG_FAILURE)
            }
        }
    })
}

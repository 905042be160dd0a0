//! `run_participant`: a participant from its configuration (the resource it
//! names, under the vote preference) until a signal, with the readiness
//! lines on stdout and the process's exit status.

use crate::cli::{cancel_on_signal, check_crash_env, exit_status, server_runtime};
use std::io::Write;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use twopc::config::{ParticipantConfig, ResourceKind};
use twopc::resource::kv::KvStore;
use twopc::resource::postgres::PostgresResource;
use twopc::resource::{Preference, VoteResource};
use twopc::{ParticipantNode, Resource};

/// Exit status of a participant removed from the cluster by an operator.
pub const EXIT_REMOVED: u8 = 3;

/// The participant's resource, from its configuration, with the vote
/// preference on top.
fn build_resource(cfg: &ParticipantConfig) -> Result<Box<dyn Resource>, String> {
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
            let pg = PostgresResource::new(&cfg.id, &cfg.postgres.settings())
                .map_err(|e| e.to_string())?;
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
    let rt = match server_runtime(cfg.runtime) {
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
        let removed = node.removed();
        let run = node.run(token).await;
        if run.is_ok() && *removed.borrow() {
            eprintln!(
                "twopc-participant: {} was removed from the cluster by an operator; not retrying (exit status 3). Start it again only after adding it back (enable_dynamic_joining) or with a new id",
                cfg.id
            );
            return ExitCode::from(EXIT_REMOVED);
        }
        exit_status(run)
    })
}

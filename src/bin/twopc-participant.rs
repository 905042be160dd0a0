//! `twopc-participant`: parse flags, load configuration, serve.

/// mimalloc: allocation is on every message's path (README "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/cli.rs"]
mod cli;
#[path = "common/participant.rs"]
mod participant;

use clap::Parser;
use twopc::config::{init_tracing, ParticipantArgs, ParticipantConfig};

#[derive(Parser)]
#[command(
    name = "twopc-participant",
    version,
    about = "Two-phase commit participant"
)]
struct Cli {
    #[command(flatten)]
    args: ParticipantArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let cfg = match ParticipantConfig::load(&cli.args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("twopc-participant: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    init_tracing(cfg.log_level, cfg.log_format);
    participant::run_participant(cfg)
}

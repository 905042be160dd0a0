//! `twopc-coordinator`: parse flags, load configuration, serve.

/// mimalloc: allocation is on every message's path (README "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/cli.rs"]
mod cli;
#[path = "common/coordinator.rs"]
mod coordinator;

use clap::Parser;
use twopc::config::{init_tracing, CoordinatorArgs, CoordinatorConfig};

#[derive(Parser)]
#[command(
    name = "twopc-coordinator",
    version,
    about = "Two-phase commit coordinator"
)]
struct Cli {
    #[command(flatten)]
    args: CoordinatorArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let cfg = match CoordinatorConfig::load(&cli.args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("twopc-coordinator: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    init_tracing(cfg.log_level, cfg.log_format);
    coordinator::run_coordinator(cfg)
}

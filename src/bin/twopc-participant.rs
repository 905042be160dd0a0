//! `twopc-participant`: parse flags, load configuration, serve.

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
    twopc::cli::run_participant(cfg)
}

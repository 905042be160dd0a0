//! `twopc`: client and operator tool. Also runs a coordinator or a
//! participant (`twopc coordinator …`, `twopc participant …`), so one
//! executable is enough for the demo and the benchmark.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use twopc::client::bank::{self, BankArgs};
use twopc::client::bench::{self, BenchArgs};
use twopc::client::commands::{self, DemoArgs, StatusArgs, SubmitArgs};
use twopc::client::ops::{self, TxnCommand, WalCommand};
use twopc::config::{
    init_tracing, CoordinatorArgs, CoordinatorConfig, ParticipantArgs, ParticipantConfig,
};

#[derive(Parser)]
#[command(
    name = "twopc",
    version,
    about = "Two-phase commit: client, operator tool, demo and benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one transaction and print its outcome (exit 0 committed, 3 aborted, 1 no decision, 2 usage).
    Submit(SubmitArgs),
    /// Show the coordinator's state, participants and transaction counts.
    Status(StatusArgs),
    /// Start a local coordinator and participants, run transactions, show the outcomes.
    Demo(DemoArgs),
    /// Closed-loop load: throughput and latency percentiles.
    Bench(BenchArgs),
    /// Money transfers between accounts on kv shards, with optional chaos, checked for atomicity.
    Bank(BankArgs),
    /// Inspect and resolve transactions.
    #[command(subcommand)]
    Txn(TxnCommand),
    /// Read a node's write-ahead log.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Run a coordinator (same as `twopc-coordinator`).
    Coordinator(CoordinatorArgs),
    /// Run a participant (same as `twopc-participant`).
    Participant(ParticipantArgs),
}

fn client_runtime<F: std::future::Future<Output = ExitCode>>(f: F) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("twopc: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Submit(a) => client_runtime(commands::submit(a)),
        Command::Status(a) => client_runtime(commands::status(a)),
        Command::Demo(a) => client_runtime(commands::demo(a)),
        Command::Bench(a) => client_runtime(bench::bench(a)),
        Command::Bank(a) => client_runtime(bank::bank(a)),
        Command::Txn(c) => client_runtime(ops::txn(c)),
        Command::Wal(c) => ops::wal_cmd(c),
        Command::Coordinator(a) => match CoordinatorConfig::load(&a) {
            Ok(cfg) => {
                init_tracing(&cfg.log_level, &cfg.log_format);
                twopc::cli::run_coordinator(cfg)
            }
            Err(e) => {
                eprintln!("twopc coordinator: {e}");
                ExitCode::from(2)
            }
        },
        Command::Participant(a) => match ParticipantConfig::load(&a) {
            Ok(cfg) => {
                init_tracing(&cfg.log_level, &cfg.log_format);
                twopc::cli::run_participant(cfg)
            }
            Err(e) => {
                eprintln!("twopc participant: {e}");
                ExitCode::from(2)
            }
        },
    }
}

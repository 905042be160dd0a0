//! `twopc`: client and operator tool. Also runs a coordinator or a
//! participant (`twopc coordinator …`, `twopc participant …`), so one
//! executable is enough for the demo and the benchmark.

/// mimalloc: allocation is on every message's path (README "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin_http;
mod bank;
mod bench;
#[path = "../common/cli.rs"]
mod cli;
mod cluster;
mod commands;
#[path = "../common/coordinator.rs"]
mod coordinator;
mod credentials;
mod group;
mod ops;
#[path = "../common/participant.rs"]
mod participant;

use admin_http::HttpArgs;
use bank::BankArgs;
use bench::BenchArgs;
use clap::{Parser, Subcommand};
use commands::{DemoArgs, StatusArgs, SubmitArgs};
use credentials::{GenCertArgs, KeysCommand};
use ops::{ParticipantsCommand, TxnCommand, WalCommand};
use std::process::ExitCode;
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
    /// List or remove participants of a running coordinator.
    #[command(subcommand)]
    Participants(ParticipantsCommand),
    /// The replicated coordinator group: status of every member, add or remove a member.
    #[command(subcommand)]
    Cluster(group::ClusterCommand),
    /// One request to the HTTP admin API of the coordinator or of a participant (its admin_http_port), authenticated with the shared secret when one is given.
    Http(HttpArgs),
    /// Read a node's write-ahead log.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Run a coordinator (same as `twopc-coordinator`).
    Coordinator(Box<CoordinatorArgs>),
    /// Run a participant (same as `twopc-participant`).
    Participant(Box<ParticipantArgs>),
    /// Make a test CA and a server certificate for TLS (ca.pem, server.pem, server.key).
    GenCert(GenCertArgs),
    /// Derive the key of one identity from the cluster's master secret.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff) to stdout: `twopc man > twopc.1`.
    Man,
}

/// `twopc completions SHELL`: the script for the whole command tree.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "twopc", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// `twopc man`: the manual page of the tool, with its subcommands listed.
fn man() -> ExitCode {
    let cmd = <Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    if let Err(e) = clap_mangen::Man::new(cmd).render(&mut out) {
        eprintln!("twopc man: cannot render the manual page: {e}");
        return ExitCode::from(1);
    }
    use std::io::Write;
    match std::io::stdout().write_all(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twopc man: {e}");
            ExitCode::from(1)
        }
    }
}

fn client_runtime<F: std::future::Future<Output = ExitCode>>(f: F) -> ExitCode {
    match cli::runtime() {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("twopc: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

/// A `HOST:PORT` address argument: a missing or non-numeric port is a usage
/// error (exit status 2) naming the flag, not a failed connection later.
pub fn host_port(s: &str) -> Result<String, String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(s.to_string())
        }
        _ => Err(format!(
            "`{s}` is not HOST:PORT (for example 127.0.0.1:8080); add the port"
        )),
    }
}

/// A `--coordinator` value: one HOST:PORT, or the members of a replicated
/// coordinator group as HOST:PORT,HOST:PORT (the client follows the leader).
pub fn coordinator_members(s: &str) -> Result<String, String> {
    if !s.contains(',') {
        return host_port(s);
    }
    for member in s.split(',').map(str::trim) {
        if host_port(member).is_err() {
            return Err(format!(
                "`{member}` in `{s}` is not HOST:PORT (for example 127.0.0.1:8080); \
                 give each coordinator member as HOST:PORT, comma-separated"
            ));
        }
    }
    Ok(s.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One-shot commands die quietly when stdout goes away (`twopc txn list |
    // head -2`), as command-line tools do, instead of panicking on the
    // failed write. Servers and the commands that run them keep SIGPIPE
    // ignored: a peer that closes its socket must never kill a node.
    let serves = matches!(
        cli.command,
        Command::Coordinator(_)
            | Command::Participant(_)
            | Command::Demo(_)
            | Command::Bench(_)
            | Command::Bank(_)
    );
    if !serves {
        // SAFETY: restoring a signal's default action has no preconditions.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Command::Submit(a) => client_runtime(commands::submit(a)),
        Command::Status(a) => client_runtime(commands::status(a)),
        Command::Demo(a) => client_runtime(commands::demo(a)),
        Command::Bench(a) => client_runtime(bench::bench(a)),
        Command::Bank(a) => client_runtime(bank::bank(a)),
        Command::Txn(c) => client_runtime(ops::txn(c)),
        Command::Participants(c) => client_runtime(ops::participants(c)),
        Command::Cluster(c) => client_runtime(group::cluster(c)),
        Command::Http(a) => client_runtime(admin_http::http(a)),
        Command::Wal(c) => ops::wal_cmd(c),
        Command::GenCert(a) => credentials::gen_cert(a),
        Command::Keys(c) => credentials::keys(c),
        Command::Completions { shell } => completions(shell),
        Command::Man => man(),
        Command::Coordinator(a) => match CoordinatorConfig::load(&a) {
            Ok(cfg) => {
                init_tracing(cfg.log_level, cfg.log_format);
                coordinator::run_coordinator(cfg)
            }
            Err(e) => {
                eprintln!("twopc coordinator: {e}");
                ExitCode::from(2)
            }
        },
        Command::Participant(a) => match ParticipantConfig::load(&a) {
            Ok(cfg) => {
                init_tracing(cfg.log_level, cfg.log_format);
                participant::run_participant(cfg)
            }
            Err(e) => {
                eprintln!("twopc participant: {e}");
                ExitCode::from(2)
            }
        },
    }
}

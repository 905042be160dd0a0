//! `twopc`: client and operator tool. Also runs a coordinator or a
//! participant (`twopc coordinator …`, `twopc participant …`), so one
//! executable is enough for the demo and the benchmark.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use twopc::client::admin_http::{self, HttpArgs};
use twopc::client::bank::{self, BankArgs};
use twopc::client::bench::{self, BenchArgs};
use twopc::client::commands::{self, DemoArgs, StatusArgs, SubmitArgs};
use twopc::client::ops::{self, ParticipantsCommand, TxnCommand, WalCommand};
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
    /// One request to the coordinator's HTTP admin API, authenticated with the shared secret when one is given.
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
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print the key of exactly one identity (put it in that process's secret_file, mode 0600).
    Derive(DeriveArgs),
}

#[derive(clap::Args)]
struct DeriveArgs {
    /// The key of participant ID (it proves that id, and opens its admin port).
    #[arg(long, value_name = "ID")]
    participant: Option<String>,
    /// The key of participant ID's admin port only (an operator of that participant).
    #[arg(long, value_name = "ID")]
    admin: Option<String>,
    /// The clients' key: submit and read.
    #[arg(long)]
    client: bool,
    /// The operators' key on the coordinator: also remove participants.
    #[arg(long)]
    operator: bool,
    /// The master secret's file (or set TWOPC_SECRET).
    #[arg(long, env = "TWOPC_SECRET_FILE")]
    secret_file: Option<std::path::PathBuf>,
}

fn keys(c: KeysCommand) -> ExitCode {
    let KeysCommand::Derive(a) = c;
    use twopc::security::auth::Identity;
    let identity = match (a.participant, a.admin, a.client, a.operator) {
        (Some(p), None, false, false) => Identity::Participant(p),
        (None, Some(p), false, false) => Identity::Admin(p),
        (None, None, true, false) => Identity::Client,
        (None, None, false, true) => Identity::Operator,
        _ => {
            eprintln!("twopc keys derive: name exactly one of --participant ID, --admin ID, --client, --operator");
            return ExitCode::from(2);
        }
    };
    if let Identity::Participant(p) | Identity::Admin(p) = &identity {
        if !twopc::protocol::coordinator::valid_participant_id(p) {
            eprintln!("twopc keys derive: `{p}` is not a participant id (1-64 of [A-Za-z0-9_.-])");
            return ExitCode::from(2);
        }
    }
    let secret = match twopc::security::load_secret(
        a.secret_file.as_deref(),
        twopc::security::secret_from_env(),
    ) {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!(
                "twopc keys derive: give the master secret with --secret-file FILE or TWOPC_SECRET"
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("twopc keys derive: {e}");
            return ExitCode::from(2);
        }
    };
    match secret.derive_text(&identity) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("twopc keys derive: {e}");
            ExitCode::from(2)
        }
    }
}

#[derive(clap::Args)]
struct GenCertArgs {
    /// Directory to write ca.pem, server.pem and server.key (mode 0600) into;
    /// existing files are replaced, symbolic links refused.
    #[arg(long)]
    out_dir: std::path::PathBuf,
    /// Names (DNS names or IP addresses) the server certificate is valid for.
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1,::1")]
    name: Vec<String>,
    /// Days the CA and server certificates stay valid (1..=3650).
    #[arg(long, default_value_t = twopc::security::tls::CERT_DAYS_DEFAULT)]
    days: u32,
}

fn gen_cert(a: GenCertArgs) -> ExitCode {
    match twopc::security::tls::generate_test_certificates(&a.out_dir, &a.name, a.days) {
        Ok(g) => {
            println!(
                "CA certificate (give to clients and participants as --tls-ca): {}",
                g.ca_file.display()
            );
            println!("server certificate (--tls-cert): {}", g.cert_file.display());
            println!("server private key (--tls-key): {}", g.key_file.display());
            println!("valid for: {}", a.name.join(", "));
            println!("valid for {} days", a.days);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("twopc gen-cert: {e}");
            ExitCode::from(1)
        }
    }
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
        Command::Participants(c) => client_runtime(ops::participants(c)),
        Command::Http(a) => client_runtime(admin_http::http(a)),
        Command::Wal(c) => ops::wal_cmd(c),
        Command::GenCert(a) => gen_cert(a),
        Command::Keys(c) => keys(c),
        Command::Coordinator(a) => match CoordinatorConfig::load(&a) {
            Ok(cfg) => {
                init_tracing(cfg.log_level, cfg.log_format);
                twopc::cli::run_coordinator(cfg)
            }
            Err(e) => {
                eprintln!("twopc coordinator: {e}");
                ExitCode::from(2)
            }
        },
        Command::Participant(a) => match ParticipantConfig::load(&a) {
            Ok(cfg) => {
                init_tracing(cfg.log_level, cfg.log_format);
                twopc::cli::run_participant(cfg)
            }
            Err(e) => {
                eprintln!("twopc participant: {e}");
                ExitCode::from(2)
            }
        },
    }
}

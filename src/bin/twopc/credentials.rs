//! `twopc keys derive` and `twopc gen-cert`: the credentials a cluster runs
//! with, the per-identity keys derived from the master secret and a test CA
//! with a server certificate.

use clap::Subcommand;
use std::process::ExitCode;
use twopc::security::auth::Identity;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Print the key of exactly one identity (put it in that process's secret_file, mode 0600).
    Derive(DeriveArgs),
}

#[derive(clap::Args)]
pub struct DeriveArgs {
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

pub fn keys(c: KeysCommand) -> ExitCode {
    let KeysCommand::Derive(a) = c;
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
pub struct GenCertArgs {
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

pub fn gen_cert(a: GenCertArgs) -> ExitCode {
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

//! Configuration: built-in defaults < YAML file (`--config`) < environment
//! (`TWOPC_<FLAG>`) < command-line flags, and one `validate()` per role whose
//! messages name the key, the value and what is allowed.
//!
//! Each key is declared once, in a `settings!` table ([`keys`]): the role
//! tables in `coordinator.rs` and `participant.rs`, the nested sections in
//! `sections.rs`; both roles' flags come from their tables through one
//! generic [`Args`]. The YAML file has one section per role (`coordinator:`,
//! `participant:`); `config.yaml` at the repository root documents every key
//! with its default, unit and range, and a test holds it to the tables.
//! Unknown keys are errors, so a typo cannot silently fall back to a
//! default; a value of the wrong type is refused naming its key path.

mod coordinator;
mod enums;
pub(crate) mod keys;
mod participant;
mod sections;
#[cfg(test)]
mod tests;

pub use coordinator::CoordinatorConfig;
pub use enums::{LogFormat, LogLevel, ResourceKind, Runtime, VotePreference};
pub use participant::ParticipantConfig;
pub use sections::{KvConfig, PostgresConfig, WalConfig};

use crate::security::tls::TlsConfig;
use keys::Table;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A configuration problem; the process exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: `{key}` = {value}: {allowed}")]
    Invalid {
        key: String,
        value: String,
        allowed: String,
    },
    /// The shared secret could not be loaded (the message never holds it).
    #[error("invalid configuration: {0}")]
    Secret(#[from] crate::security::SecretLoadError),
    /// The server would run open, or with the wrong key.
    #[error("invalid configuration: {0}")]
    Unsafe(#[from] crate::security::UnsafeSetup),
}

/// Flags of `twopc-coordinator` (and `twopc coordinator`).
pub type CoordinatorArgs = Args<CoordinatorConfig>;
/// Flags of `twopc-participant` (and `twopc participant`).
pub type ParticipantArgs = Args<ParticipantConfig>;

/// The flags of a role. Each also reads `TWOPC_<FLAG>`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct Args<C: Table> {
    /// YAML configuration file (the role's section).
    #[arg(long, env = "TWOPC_CONFIG")]
    #[arg(help = format!("YAML configuration file (section `{}:`)", C::SECTION))]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub keys: Flags<C>,
    #[command(flatten)]
    pub tls: TlsFlags,
}

impl<C: Table + serde::de::DeserializeOwned> Args<C> {
    /// Defaults < file < env < flags (clap already merged env under flags).
    fn merged(&self) -> Result<C, ConfigError> {
        let mut c: C = load_section(self.config.as_deref())?;
        c.overlay(&self.keys.0, "");
        Ok(c)
    }
}

/// The flags (and variables) of every key of `C`, as given; each table's
/// `overlay` reads its own.
#[derive(Debug, Default, Clone)]
pub struct Flags<C>(clap::ArgMatches, std::marker::PhantomData<C>);

impl<C: Table> clap::FromArgMatches for Flags<C> {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(Flags(m.clone(), std::marker::PhantomData))
    }
    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0 = m.clone();
        Ok(())
    }
}

impl<C: Table> clap::Args for Flags<C> {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        for (section, keys) in C::sections() {
            for key in keys {
                cmd = cmd.arg(key.arg(section));
            }
        }
        cmd
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// The whole YAML file: one optional section per role.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    coordinator: Option<serde_yaml_ng::Value>,
    participant: Option<serde_yaml_ng::Value>,
}

/// The role's section of the file at `path`, or the defaults. Errors name
/// the key path (`coordinator.wal.segment_max_bytes: invalid type ...`).
fn load_section<C: Table + serde::de::DeserializeOwned>(
    path: Option<&Path>,
) -> Result<C, ConfigError> {
    let Some(path) = path else {
        return Ok(C::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parse_err = |message: String| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let file: FileConfig = if text.trim().is_empty() {
        FileConfig::default()
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| parse_err(e.to_string()))?
    };
    let section = match C::SECTION {
        "coordinator" => file.coordinator,
        "participant" => file.participant,
        _ => None,
    };
    match section {
        Some(v) if !v.is_null() => serde_path_to_error::deserialize(v).map_err(|e| {
            let at = match e.path().to_string().as_str() {
                "." => C::SECTION.to_string(),
                p => format!("{}.{p}", C::SECTION),
            };
            parse_err(format!("{at}: {}", e.inner()))
        }),
        _ => Ok(C::default()),
    }
}

/// The TLS flags of both roles. They set the keys of `tls:` (a section of
/// [`TlsConfig`], which belongs to the security layer), under shorter names
/// than the tables would give.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct TlsFlags {
    /// PEM certificate this process serves TLS with (needs --tls-key).
    #[arg(long, env = "TWOPC_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TWOPC_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate trusted for the coordinator's TLS certificate (participants).
    #[arg(long, env = "TWOPC_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl TlsFlags {
    /// Flags over file settings, then load the secret (`secret_file` or
    /// `TWOPC_SECRET`).
    fn apply(
        &self,
        secret_file: Option<&Path>,
        tls: &mut TlsConfig,
    ) -> Result<Option<std::sync::Arc<crate::security::auth::Secret>>, ConfigError> {
        for (flag, key) in [
            (&self.tls_cert, &mut tls.cert_file),
            (&self.tls_key, &mut tls.key_file),
            (&self.tls_ca, &mut tls.ca_file),
        ] {
            if flag.is_some() {
                key.clone_from(flag);
            }
        }
        crate::security::load_secret(secret_file, crate::security::secret_from_env())
            .map_err(ConfigError::Secret)
    }
}

/// A connection's send buffer must hold at least two of the largest frames,
/// or a single large reply would disconnect a peer that does read.
fn send_buffer(v: usize, max_frame_bytes: usize) -> Result<(), ConfigError> {
    keys::range(
        "send_buffer_max_bytes",
        v as u64,
        max_frame_bytes.saturating_mul(2) as u64,
        1 << 30,
    )
}

/// Set up tracing on stderr in the configured format. `RUST_LOG`, when set,
/// overrides `level` for fine-grained filtering. Text lines have their
/// control characters escaped ([`crate::log_writer`]), and colours only
/// when [`colour_on_stderr`] allows them.
pub fn init_tracing(level: LogLevel, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.to_string()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => {
            let _ = builder
                .with_ansi(false)
                .with_writer(std::io::stderr)
                .json()
                .try_init();
        }
        // Text lines quote client and peer text: control characters are
        // escaped, in each value when the formatter adds colour codes, in
        // the whole line when it does not.
        LogFormat::Text if colour_on_stderr() => {
            let _ = builder
                .with_ansi(true)
                .fmt_fields(crate::log_writer::EscapingFields)
                .with_writer(std::io::stderr)
                .try_init();
        }
        LogFormat::Text => {
            let _ = builder
                .with_ansi(false)
                .with_writer(crate::log_writer::MakeEscapingStderr)
                .try_init();
        }
    }
}

/// May text on stderr carry ANSI colours? Only on a terminal, and not when
/// `NO_COLOR` is set to a non-empty value (<https://no-color.org>): a log
/// file or a pipe gets plain text.
pub fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    colour_allowed(
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::stderr().is_terminal(),
    )
}

/// [`colour_on_stderr`] for a given `NO_COLOR` value and terminal.
fn colour_allowed(no_color: Option<&std::ffi::OsStr>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

//! Configuration: built-in defaults < YAML file (`--config`) < environment
//! (`TWOPC_<FLAG>`) < command-line flags, and one `validate()` per role whose
//! messages name the key, the value and what is allowed.
//!
//! Each key is declared once, in a `settings!` table ([`keys`]): the role
//! tables in `coordinator.rs` and `participant.rs`, the nested sections in
//! `sections.rs`. The YAML file has one section per role (`coordinator:`,
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

pub use coordinator::{CoordinatorArgs, CoordinatorConfig, CoordinatorFlags};
pub use enums::{LogFormat, LogLevel, ResourceKind, Runtime, VotePreference};
pub use participant::{ParticipantArgs, ParticipantConfig, ParticipantFlags};
pub use sections::{KvConfig, PostgresConfig, WalConfig};

use crate::security::tls::TlsConfig;
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
    Secret(String),
}

/// The whole YAML file: one optional section per role.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub coordinator: Option<serde_yaml_ng::Value>,
    pub participant: Option<serde_yaml_ng::Value>,
}

/// One role's section of the file at `path`, or the defaults. Errors name
/// the key path (`coordinator.wal.segment_max_bytes: invalid type ...`).
fn load_section<T: serde::de::DeserializeOwned + Default>(
    path: Option<&Path>,
    pick: fn(FileConfig) -> Option<serde_yaml_ng::Value>,
    section: &str,
) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
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
    match pick(file) {
        Some(v) if !v.is_null() => serde_path_to_error::deserialize(v).map_err(|e| {
            let at = match e.path().to_string().as_str() {
                "." => section.to_string(),
                p => format!("{section}.{p}"),
            };
            parse_err(format!("{at}: {}", e.inner()))
        }),
        _ => Ok(T::default()),
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
/// control characters escaped ([`crate::log_writer`]).
pub fn init_tracing(level: LogLevel, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.to_string()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => {
            let _ = builder.with_writer(std::io::stderr).json().try_init();
        }
        LogFormat::Text => {
            // Text lines quote client and peer text: control characters are
            // escaped (so colours are off: they are escape sequences too).
            let _ = builder
                .with_ansi(false)
                .with_writer(crate::log_writer::MakeEscapingStderr)
                .try_init();
        }
    }
}

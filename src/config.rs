//! Configuration: built-in defaults < YAML file (`--config`) < environment
//! (`TWOPC_<FLAG>`) < command-line flags, and one `validate()` per role whose
//! messages name the key, the value and what is allowed.
//!
//! The YAML file has one section per role (`coordinator:`, `participant:`);
//! see `config.yaml` at the repository root for every key with its default
//! and unit. Unknown keys are errors, so a typo cannot silently fall back to
//! a default.

/// The `postgres` resource owns its settings; they stay reachable here.
pub use crate::resource::postgres::PostgresConfig;
use crate::resource::VotePreference;
use crate::security::tls::TlsConfig;
use clap::Args;
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
        key: &'static str,
        value: String,
        allowed: String,
    },
    /// The shared secret could not be loaded (the message never holds it).
    #[error("invalid configuration: {0}")]
    Secret(String),
}

/// Write-ahead log settings (YAML `wal:` inside a role's section).
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalConfig {
    /// Bytes; a segment past this size is checkpointed into a new one.
    pub segment_max_bytes: u64,
    /// Benchmarks only: skip fsync, so a machine crash can lose decisions.
    pub unsafe_no_fsync: bool,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_max_bytes: 64 * 1024 * 1024,
            unsafe_no_fsync: false,
        }
    }
}

/// Settings of the `kv` resource (YAML `kv:` in the participant section).
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KvConfig {
    /// JSON object loaded into the store at the first start of an empty
    /// data directory (ignored afterwards: the log holds the data).
    pub seed_file: Option<PathBuf>,
}

/// The resources a participant can run.
pub const RESOURCES: &[&str] = &["vote", "kv", "postgres"];

/// The coordinator's configuration, after defaults, file, env and flags.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    pub host: String,
    pub port: u16,
    pub expected_participants: usize,
    /// Seconds (fractions allowed): the vote deadline of a transaction.
    pub timeout_seconds: f64,
    pub enable_dynamic_joining: bool,
    pub data_dir: PathBuf,
    pub max_frame_bytes: usize,
    pub log_level: String,
    pub log_format: String,
    pub max_connections: usize,
    pub max_in_flight: usize,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_failure_threshold: u32,
    pub handshake_timeout_ms: u64,
    pub resend_initial_ms: u64,
    pub resend_max_ms: u64,
    pub history_limit: usize,
    /// Bytes of read results kept across remembered transactions (for
    /// `txn show`); past it the oldest results are dropped with a note.
    pub history_max_bytes: usize,
    /// Most events kept in one transaction's timeline (`txn show`).
    pub timeline_max_events: usize,
    /// HTTP admin API (health, status, metrics, transactions); off when
    /// unset, 0 picks a free port and logs it.
    pub admin_port: Option<u16>,
    pub admin_host: String,
    /// Simultaneous HTTP connections; past it a few more are served for
    /// `GET /health` only, then connections are refused at once.
    pub admin_max_connections: usize,
    /// Bytes; largest accepted HTTP request body.
    pub admin_max_body_bytes: usize,
    /// Milliseconds a connection has to send a request's headers, and again
    /// its body.
    pub admin_header_timeout_ms: u64,
    /// With a secret: most outstanding nonces of `GET /auth/challenge`
    /// kept at once; past it the oldest are forgotten. Bounds the memory a
    /// flood of challenges can take.
    pub admin_auth_nonces_max: usize,
    /// With a secret: milliseconds an issued nonce stays valid.
    pub admin_auth_nonce_ttl_ms: u64,
    /// With a secret: serve `GET /metrics` without a proof, for a
    /// Prometheus scraper (metrics hold counts and timings, no data).
    pub admin_open_metrics: bool,
    /// Names the HTTP admin API answers to in the `Host` header (no port);
    /// empty: loopback names and `admin_host`. Stops DNS rebinding.
    pub admin_allowed_hosts: Vec<String>,
    /// With a secret: `GET /auth/challenge` answered per address and
    /// second (burst twice that); past it 429.
    pub admin_auth_challenges_per_second: u32,
    /// Milliseconds an accepted connection has, from accept, to complete
    /// its handshake (TLS, hello and, with a secret, authentication);
    /// never more than `handshake_timeout_ms`.
    pub preauth_timeout_ms: u64,
    /// Connections from one IP address that have not completed their
    /// handshake; past it a new one from that address is refused at once.
    pub preauth_max_per_address: usize,
    /// Connection slots past `max_connections` that only participants
    /// (hello with role participant) may keep.
    pub participant_reserved_connections: usize,
    /// Bytes queued for one connection's writer; a peer that lets more
    /// pile up (it does not read) is disconnected.
    pub send_buffer_max_bytes: usize,
    /// Most transactions in one `txn_list` reply.
    pub query_page_max: usize,
    /// Bytes; most of one `txn_list` reply (never more than
    /// `max_frame_bytes`); past it the list is cut and marked `truncated`.
    pub query_reply_max_bytes: usize,
    /// Operator queries (status, txn list, txn show) of one connection
    /// waiting for an answer; the connection is not read past it.
    pub query_in_flight_max: usize,
    /// Milliseconds a participant joining a ready cluster must stay
    /// connected before submits that name no participants include it.
    pub join_grace_ms: u64,
    pub wal: WalConfig,
    /// File holding the shared secret every peer must prove it knows; off
    /// when unset (and `TWOPC_SECRET` is unset).
    pub secret_file: Option<PathBuf>,
    /// The secret itself, loaded from `secret_file` or `TWOPC_SECRET`;
    /// never serialised, `Debug` does not show it.
    #[serde(skip)]
    pub secret: Option<std::sync::Arc<crate::security::auth::Secret>>,
    /// Run without a secret on a non-loopback address, or with a weak
    /// secret, instead of refusing to start.
    pub insecure: bool,
    pub tls: TlsConfig,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            expected_participants: 3,
            timeout_seconds: 30.0,
            enable_dynamic_joining: false,
            data_dir: PathBuf::from("./data/coordinator"),
            max_frame_bytes: 1024 * 1024,
            log_level: "info".into(),
            log_format: "text".into(),
            max_connections: 1024,
            max_in_flight: 1024,
            heartbeat_interval_ms: 1000,
            heartbeat_failure_threshold: 5,
            handshake_timeout_ms: 10_000,
            resend_initial_ms: 200,
            resend_max_ms: 5_000,
            history_limit: 10_000,
            history_max_bytes: 16 * 1024 * 1024,
            timeline_max_events: 128,
            admin_port: None,
            admin_host: "127.0.0.1".into(),
            admin_max_connections: 64,
            admin_max_body_bytes: 1024 * 1024,
            admin_header_timeout_ms: 10_000,
            admin_auth_nonces_max: 4096,
            admin_auth_nonce_ttl_ms: 30_000,
            admin_open_metrics: false,
            admin_allowed_hosts: Vec::new(),
            admin_auth_challenges_per_second: 20,
            preauth_timeout_ms: 2_000,
            preauth_max_per_address: 8,
            participant_reserved_connections: 64,
            send_buffer_max_bytes: 8 * 1024 * 1024,
            query_page_max: 1000,
            query_reply_max_bytes: 512 * 1024,
            query_in_flight_max: 4,
            join_grace_ms: 3_000,
            wal: WalConfig::default(),
            secret_file: None,
            secret: None,
            insecure: false,
            tls: TlsConfig::default(),
        }
    }
}

/// A participant's configuration.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParticipantConfig {
    #[serde(with = "pid_serde")]
    pub id: crate::protocol::ParticipantId,
    pub coordinator_host: String,
    pub coordinator_port: u16,
    pub vote_preference: String,
    pub commit_probability: f64,
    /// Seed of the random vote preference, so that a run's votes replay;
    /// unset draws the seed from the operating system.
    pub vote_seed: Option<u64>,
    /// Seconds (fractions allowed) a prepared transaction waits for its
    /// decision before the participant asks the coordinator.
    pub timeout_seconds: f64,
    /// Milliseconds added before each vote (testing slow participants).
    pub vote_delay_ms: u64,
    /// What the participant votes with: `vote` (preference only), `kv`
    /// (embedded key-value store) or `postgres`.
    pub resource: String,
    pub kv: KvConfig,
    pub postgres: PostgresConfig,
    pub data_dir: Option<PathBuf>,
    pub max_frame_bytes: usize,
    pub log_level: String,
    pub log_format: String,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_failure_threshold: u32,
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    pub query_max_ms: u64,
    pub history_limit: usize,
    /// Ordinary commits (the most recent) kept in a log checkpoint.
    pub checkpoint_recent_commits: usize,
    /// Operator port (status, txn list/show, resolve); off when unset,
    /// 0 picks a free port and logs it.
    pub admin_port: Option<u16>,
    pub admin_host: String,
    /// Simultaneous operator connections on the admin port.
    pub admin_max_connections: usize,
    /// Milliseconds the coordinator has to answer our hello (else we
    /// reconnect); also the upper bound of `preauth_timeout_ms`.
    pub handshake_timeout_ms: u64,
    /// Milliseconds an admin connection has, from accept, to complete its
    /// handshake; never more than `handshake_timeout_ms`.
    pub preauth_timeout_ms: u64,
    /// Admin connections from one IP address that have not completed
    /// their handshake; past it a new one from that address is refused.
    pub preauth_max_per_address: usize,
    /// Admin slots past `admin_max_connections` kept for connections that
    /// complete their handshake (operators).
    pub admin_reserved_connections: usize,
    /// Bytes queued for one connection's writer before it is disconnected.
    pub send_buffer_max_bytes: usize,
    /// Most transactions in one `txn_list` reply of the admin port.
    pub query_page_max: usize,
    /// Bytes; most of one `txn_list` reply of the admin port.
    pub query_reply_max_bytes: usize,
    pub wal: WalConfig,
    /// File holding the shared secret (coordinator and admin port).
    pub secret_file: Option<PathBuf>,
    /// Loaded from `secret_file` or `TWOPC_SECRET`; never serialised.
    #[serde(skip)]
    pub secret: Option<std::sync::Arc<crate::security::auth::Secret>>,
    /// As the coordinator's `insecure`.
    pub insecure: bool,
    pub tls: TlsConfig,
}

mod pid_serde {
    use crate::protocol::ParticipantId;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(p: &ParticipantId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p.0)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ParticipantId, D::Error> {
        Ok(ParticipantId(String::deserialize(d)?))
    }
}

impl Default for ParticipantConfig {
    fn default() -> Self {
        ParticipantConfig {
            id: "p1".into(),
            coordinator_host: "127.0.0.1".into(),
            coordinator_port: 8080,
            vote_preference: "commit".into(),
            commit_probability: 0.5,
            vote_seed: None,
            timeout_seconds: 30.0,
            vote_delay_ms: 0,
            resource: "vote".into(),
            kv: KvConfig::default(),
            postgres: PostgresConfig::default(),
            data_dir: None,
            max_frame_bytes: 1024 * 1024,
            log_level: "info".into(),
            log_format: "text".into(),
            heartbeat_interval_ms: 1000,
            heartbeat_failure_threshold: 5,
            reconnect_initial_ms: 100,
            reconnect_max_ms: 5_000,
            query_max_ms: 5_000,
            history_limit: 100_000,
            checkpoint_recent_commits: 100,
            admin_port: None,
            admin_host: "127.0.0.1".into(),
            admin_max_connections: 16,
            handshake_timeout_ms: 10_000,
            preauth_timeout_ms: 2_000,
            preauth_max_per_address: 8,
            admin_reserved_connections: 4,
            send_buffer_max_bytes: 8 * 1024 * 1024,
            query_page_max: 1000,
            query_reply_max_bytes: 512 * 1024,
            wal: WalConfig::default(),
            secret_file: None,
            secret: None,
            insecure: false,
            tls: TlsConfig::default(),
        }
    }
}

impl ParticipantConfig {
    /// `data_dir`, or `./data/<id>` when unset.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./data").join(&self.id.0))
    }

    pub fn vote_preference(&self) -> VotePreference {
        VotePreference::parse(&self.vote_preference).unwrap_or(VotePreference::Commit)
    }
}

/// The whole YAML file: one optional section per role.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub coordinator: Option<serde_yaml_ng::Value>,
    pub participant: Option<serde_yaml_ng::Value>,
}

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
    let parse_err = |e: serde_yaml_ng::Error, prefix: &str| ConfigError::Parse {
        path: path.to_path_buf(),
        message: format!("{prefix}{e}"),
    };
    let file: FileConfig = if text.trim().is_empty() {
        FileConfig::default()
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| parse_err(e, ""))?
    };
    match pick(file) {
        Some(v) if !v.is_null() => serde_yaml_ng::from_value(v)
            .map_err(|e| parse_err(e, &format!("in section `{section}`: "))),
        _ => Ok(T::default()),
    }
}

/// Flags of `twopc-coordinator`. Each also reads `TWOPC_<FLAG>`.
#[derive(Args, Debug, Default, Clone)]
pub struct CoordinatorArgs {
    /// YAML configuration file (section `coordinator:`).
    #[arg(long, env = "TWOPC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "TWOPC_HOST")]
    pub host: Option<String>,
    /// TCP port to listen on (0 picks a free port and prints it).
    #[arg(long, env = "TWOPC_PORT")]
    pub port: Option<u16>,
    /// Participants that must register before transactions run.
    #[arg(long, env = "TWOPC_EXPECTED_PARTICIPANTS")]
    pub expected_participants: Option<usize>,
    /// Vote deadline in seconds.
    #[arg(long, env = "TWOPC_TIMEOUT_SECONDS")]
    pub timeout_seconds: Option<f64>,
    /// Accept participants beyond expected_participants (true/false).
    #[arg(long, env = "TWOPC_ENABLE_DYNAMIC_JOINING", num_args = 0..=1, default_missing_value = "true")]
    pub enable_dynamic_joining: Option<bool>,
    /// Directory of the write-ahead log.
    #[arg(long, env = "TWOPC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Largest accepted frame in bytes.
    #[arg(long, env = "TWOPC_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// trace, debug, info, warn or error.
    #[arg(long, env = "TWOPC_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// text or json.
    #[arg(long, env = "TWOPC_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Most simultaneous connections.
    #[arg(long, env = "TWOPC_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most transactions in the prepare phase at once.
    #[arg(long, env = "TWOPC_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Expected heartbeat interval of participants, milliseconds.
    #[arg(long, env = "TWOPC_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Missed heartbeats before a participant counts as not alive.
    #[arg(long, env = "TWOPC_HEARTBEAT_FAILURE_THRESHOLD")]
    pub heartbeat_failure_threshold: Option<u32>,
    /// Upper bound of preauth_timeout_ms, milliseconds.
    #[arg(long, env = "TWOPC_HANDSHAKE_TIMEOUT_MS")]
    pub handshake_timeout_ms: Option<u64>,
    /// First delay before re-sending an unacknowledged decision, ms.
    #[arg(long, env = "TWOPC_RESEND_INITIAL_MS")]
    pub resend_initial_ms: Option<u64>,
    /// Cap of the re-send delay, ms.
    #[arg(long, env = "TWOPC_RESEND_MAX_MS")]
    pub resend_max_ms: Option<u64>,
    /// Ended transactions remembered for status and queries.
    #[arg(long, env = "TWOPC_HISTORY_LIMIT")]
    pub history_limit: Option<usize>,
    /// Bytes of read results kept across remembered transactions.
    #[arg(long, env = "TWOPC_HISTORY_MAX_BYTES")]
    pub history_max_bytes: Option<usize>,
    /// Most events kept in one transaction's timeline.
    #[arg(long, env = "TWOPC_TIMELINE_MAX_EVENTS")]
    pub timeline_max_events: Option<usize>,
    /// HTTP admin API port (health, status, metrics, transactions); off when unset, 0 = any free port.
    #[arg(long, env = "TWOPC_ADMIN_PORT")]
    pub admin_port: Option<u16>,
    /// Address of the HTTP admin API.
    #[arg(long, env = "TWOPC_ADMIN_HOST")]
    pub admin_host: Option<String>,
    /// Most simultaneous HTTP admin connections.
    #[arg(long, env = "TWOPC_ADMIN_MAX_CONNECTIONS")]
    pub admin_max_connections: Option<usize>,
    /// Largest HTTP request body, bytes.
    #[arg(long, env = "TWOPC_ADMIN_MAX_BODY_BYTES")]
    pub admin_max_body_bytes: Option<usize>,
    /// Milliseconds an HTTP connection has to send a request's headers.
    #[arg(long, env = "TWOPC_ADMIN_HEADER_TIMEOUT_MS")]
    pub admin_header_timeout_ms: Option<u64>,
    /// With a secret: most outstanding HTTP auth nonces; past it the oldest are dropped.
    #[arg(long, env = "TWOPC_ADMIN_AUTH_NONCES_MAX")]
    pub admin_auth_nonces_max: Option<usize>,
    /// With a secret: milliseconds an HTTP auth nonce stays valid.
    #[arg(long, env = "TWOPC_ADMIN_AUTH_NONCE_TTL_MS")]
    pub admin_auth_nonce_ttl_ms: Option<u64>,
    /// With a secret: serve GET /metrics without a proof (true/false), for Prometheus.
    #[arg(long, env = "TWOPC_ADMIN_OPEN_METRICS", num_args = 0..=1, default_missing_value = "true")]
    pub admin_open_metrics: Option<bool>,
    /// Milliseconds from accept to a completed handshake on this process's listening port.
    #[arg(long, env = "TWOPC_PREAUTH_TIMEOUT_MS")]
    pub preauth_timeout_ms: Option<u64>,
    /// Connections of one IP address still in their handshake, at most.
    #[arg(long, env = "TWOPC_PREAUTH_MAX_PER_ADDRESS")]
    pub preauth_max_per_address: Option<usize>,
    /// Bytes queued for one connection before a peer that does not read is disconnected.
    #[arg(long, env = "TWOPC_SEND_BUFFER_MAX_BYTES")]
    pub send_buffer_max_bytes: Option<usize>,
    /// Most transactions in one txn_list reply.
    #[arg(long, env = "TWOPC_QUERY_PAGE_MAX")]
    pub query_page_max: Option<usize>,
    /// Most bytes in one txn_list reply.
    #[arg(long, env = "TWOPC_QUERY_REPLY_MAX_BYTES")]
    pub query_reply_max_bytes: Option<usize>,
    /// Connection slots past max_connections kept for participants.
    #[arg(long, env = "TWOPC_PARTICIPANT_RESERVED_CONNECTIONS")]
    pub participant_reserved_connections: Option<usize>,
    /// Operator queries of one connection awaiting an answer before it is not read.
    #[arg(long, env = "TWOPC_QUERY_IN_FLIGHT_MAX")]
    pub query_in_flight_max: Option<usize>,
    /// Milliseconds a participant joining a ready cluster waits before submits without named participants include it.
    #[arg(long, env = "TWOPC_JOIN_GRACE_MS")]
    pub join_grace_ms: Option<u64>,
    /// Log segment size before a checkpoint, bytes.
    #[arg(long, env = "TWOPC_WAL_SEGMENT_MAX_BYTES")]
    pub wal_segment_max_bytes: Option<u64>,
    /// Benchmarks only: do not fsync the log.
    #[arg(long, env = "TWOPC_UNSAFE_NO_FSYNC", num_args = 0..=1, default_missing_value = "true")]
    pub unsafe_no_fsync: Option<bool>,
    /// With a secret: GET /auth/challenge per address and second (burst twice that).
    #[arg(long, env = "TWOPC_ADMIN_AUTH_CHALLENGES_PER_SECOND")]
    pub admin_auth_challenges_per_second: Option<u32>,
    /// Host names the HTTP admin API answers to (comma-separated; default loopback and --admin-host).
    #[arg(long, env = "TWOPC_ADMIN_ALLOWED_HOSTS", value_delimiter = ',')]
    pub admin_allowed_hosts: Option<Vec<String>>,
    #[command(flatten)]
    pub security: SecurityFlags,
}

/// Shared secret and TLS flags of the coordinator and the participant.
#[derive(Args, Debug, Default, Clone)]
pub struct SecurityFlags {
    /// File holding the shared secret (or set TWOPC_SECRET to the secret itself).
    #[arg(long, env = "TWOPC_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// PEM certificate this process serves TLS with (needs --tls-key).
    #[arg(long, env = "TWOPC_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TWOPC_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate trusted for the coordinator's TLS certificate (participants).
    #[arg(long, env = "TWOPC_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Start even without a secret on a non-loopback address, or with a weak secret.
    #[arg(long, env = "TWOPC_INSECURE")]
    pub insecure: bool,
}

impl SecurityFlags {
    /// Flags over file settings, then load the secret (file or `TWOPC_SECRET`).
    fn apply(
        &self,
        secret_file: &mut Option<PathBuf>,
        tls: &mut TlsConfig,
        insecure: &mut bool,
    ) -> Result<Option<std::sync::Arc<crate::security::auth::Secret>>, ConfigError> {
        *insecure |= self.insecure;
        for (flag, key) in [
            (&self.secret_file, &mut *secret_file),
            (&self.tls_cert, &mut tls.cert_file),
            (&self.tls_key, &mut tls.key_file),
            (&self.tls_ca, &mut tls.ca_file),
        ] {
            if flag.is_some() {
                key.clone_from(flag);
            }
        }
        crate::security::load_secret(secret_file.as_deref(), crate::security::secret_from_env())
            .map_err(ConfigError::Secret)
    }
}

/// Flags of `twopc-participant`. Each also reads `TWOPC_<FLAG>`.
#[derive(Args, Debug, Default, Clone)]
pub struct ParticipantArgs {
    /// YAML configuration file (section `participant:`).
    #[arg(long, env = "TWOPC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Durable participant id (1-64 of [A-Za-z0-9_.-]).
    #[arg(long, env = "TWOPC_ID")]
    pub id: Option<String>,
    #[arg(long, env = "TWOPC_COORDINATOR_HOST")]
    pub coordinator_host: Option<String>,
    #[arg(long, env = "TWOPC_COORDINATOR_PORT")]
    pub coordinator_port: Option<u16>,
    /// commit, abort or random.
    #[arg(long, env = "TWOPC_VOTE_PREFERENCE")]
    pub vote_preference: Option<String>,
    /// Probability of a commit vote when vote_preference is random (0..1).
    #[arg(long, env = "TWOPC_COMMIT_PROBABILITY")]
    pub commit_probability: Option<f64>,
    /// Seed of the random vote preference (replayable votes).
    #[arg(long, env = "TWOPC_VOTE_SEED")]
    pub vote_seed: Option<u64>,
    /// Seconds to wait for a decision before asking the coordinator.
    #[arg(long, env = "TWOPC_TIMEOUT_SECONDS")]
    pub timeout_seconds: Option<f64>,
    /// Milliseconds to wait before each vote (testing slow participants).
    #[arg(long, env = "TWOPC_VOTE_DELAY_MS")]
    pub vote_delay_ms: Option<u64>,
    /// vote, kv or postgres.
    #[arg(long, env = "TWOPC_RESOURCE")]
    pub resource: Option<String>,
    /// kv: JSON object loaded at the first start of an empty data directory.
    #[arg(long, env = "TWOPC_KV_SEED_FILE")]
    pub kv_seed_file: Option<PathBuf>,
    /// postgres: connection string (libpq key=value or postgres:// URL).
    #[arg(long, env = "TWOPC_POSTGRES_DSN", hide_env_values = true)]
    pub postgres_dsn: Option<String>,
    /// postgres: accept raw SQL operations (true/false).
    #[arg(long, env = "TWOPC_POSTGRES_ALLOW_RAW_SQL", num_args = 0..=1, default_missing_value = "true")]
    pub postgres_allow_raw_sql: Option<bool>,
    /// postgres: most connections to the database (at least 2).
    #[arg(long, env = "TWOPC_POSTGRES_MAX_CONNECTIONS")]
    pub postgres_max_connections: Option<usize>,
    /// postgres: milliseconds to connect, or to wait for a free connection.
    #[arg(long, env = "TWOPC_POSTGRES_CONNECT_TIMEOUT_MS")]
    pub postgres_connect_timeout_ms: Option<u64>,
    /// postgres: CA certificate(s) (PEM) the database server's certificate must chain to.
    #[arg(long, env = "TWOPC_POSTGRES_CA_FILE")]
    pub postgres_ca_file: Option<PathBuf>,
    /// postgres: file holding the database password (keeps it out of `ps`).
    #[arg(long, env = "TWOPC_POSTGRES_PASSWORD_FILE")]
    pub postgres_password_file: Option<PathBuf>,
    /// postgres: schemas table operations may use (comma-separated); default the search path.
    #[arg(long, env = "TWOPC_POSTGRES_ALLOWED_SCHEMAS", value_delimiter = ',')]
    pub postgres_allowed_schemas: Option<Vec<String>>,
    #[arg(long, env = "TWOPC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, env = "TWOPC_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    #[arg(long, env = "TWOPC_LOG_LEVEL")]
    pub log_level: Option<String>,
    #[arg(long, env = "TWOPC_LOG_FORMAT")]
    pub log_format: Option<String>,
    #[arg(long, env = "TWOPC_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    #[arg(long, env = "TWOPC_HEARTBEAT_FAILURE_THRESHOLD")]
    pub heartbeat_failure_threshold: Option<u32>,
    #[arg(long, env = "TWOPC_RECONNECT_INITIAL_MS")]
    pub reconnect_initial_ms: Option<u64>,
    #[arg(long, env = "TWOPC_RECONNECT_MAX_MS")]
    pub reconnect_max_ms: Option<u64>,
    #[arg(long, env = "TWOPC_QUERY_MAX_MS")]
    pub query_max_ms: Option<u64>,
    #[arg(long, env = "TWOPC_HISTORY_LIMIT")]
    pub history_limit: Option<usize>,
    /// Ordinary commits (the most recent) kept in a log checkpoint.
    #[arg(long, env = "TWOPC_CHECKPOINT_RECENT_COMMITS")]
    pub checkpoint_recent_commits: Option<usize>,
    /// Operator port for `twopc txn resolve` and status (0 = any free port).
    #[arg(long, env = "TWOPC_ADMIN_PORT")]
    pub admin_port: Option<u16>,
    #[arg(long, env = "TWOPC_ADMIN_HOST")]
    pub admin_host: Option<String>,
    /// Simultaneous operator connections on the admin port.
    #[arg(long, env = "TWOPC_ADMIN_MAX_CONNECTIONS")]
    pub admin_max_connections: Option<usize>,
    /// Milliseconds to finish a connection's handshake.
    #[arg(long, env = "TWOPC_HANDSHAKE_TIMEOUT_MS")]
    pub handshake_timeout_ms: Option<u64>,
    /// Milliseconds from accept to a completed handshake on this process's listening port.
    #[arg(long, env = "TWOPC_PREAUTH_TIMEOUT_MS")]
    pub preauth_timeout_ms: Option<u64>,
    /// Connections of one IP address still in their handshake, at most.
    #[arg(long, env = "TWOPC_PREAUTH_MAX_PER_ADDRESS")]
    pub preauth_max_per_address: Option<usize>,
    /// Bytes queued for one connection before a peer that does not read is disconnected.
    #[arg(long, env = "TWOPC_SEND_BUFFER_MAX_BYTES")]
    pub send_buffer_max_bytes: Option<usize>,
    /// Most transactions in one txn_list reply.
    #[arg(long, env = "TWOPC_QUERY_PAGE_MAX")]
    pub query_page_max: Option<usize>,
    /// Most bytes in one txn_list reply.
    #[arg(long, env = "TWOPC_QUERY_REPLY_MAX_BYTES")]
    pub query_reply_max_bytes: Option<usize>,
    /// Admin slots past admin_max_connections kept for operators that complete their handshake.
    #[arg(long, env = "TWOPC_ADMIN_RESERVED_CONNECTIONS")]
    pub admin_reserved_connections: Option<usize>,
    #[arg(long, env = "TWOPC_WAL_SEGMENT_MAX_BYTES")]
    pub wal_segment_max_bytes: Option<u64>,
    #[arg(long, env = "TWOPC_UNSAFE_NO_FSYNC", num_args = 0..=1, default_missing_value = "true")]
    pub unsafe_no_fsync: Option<bool>,
    #[command(flatten)]
    pub security: SecurityFlags,
}

macro_rules! overlay {
    ($cfg:ident, $args:ident, [$($field:ident),* $(,)?]) => {
        $( if let Some(v) = $args.$field.clone() { $cfg.$field = v; } )*
    };
}

impl CoordinatorConfig {
    /// Defaults < file < env < flags (clap already merged env under flags).
    pub fn load(args: &CoordinatorArgs) -> Result<CoordinatorConfig, ConfigError> {
        let mut c: CoordinatorConfig =
            load_section(args.config.as_deref(), |f| f.coordinator, "coordinator")?;
        overlay!(
            c,
            args,
            [
                host,
                port,
                expected_participants,
                timeout_seconds,
                enable_dynamic_joining,
                data_dir,
                max_frame_bytes,
                log_level,
                log_format,
                max_connections,
                max_in_flight,
                heartbeat_interval_ms,
                heartbeat_failure_threshold,
                handshake_timeout_ms,
                resend_initial_ms,
                resend_max_ms,
                history_limit,
                history_max_bytes,
                timeline_max_events,
                admin_host,
                admin_max_connections,
                admin_max_body_bytes,
                admin_header_timeout_ms,
                admin_auth_nonces_max,
                admin_auth_nonce_ttl_ms,
                admin_open_metrics,
                admin_allowed_hosts,
                admin_auth_challenges_per_second,
                preauth_timeout_ms,
                preauth_max_per_address,
                send_buffer_max_bytes,
                query_page_max,
                query_reply_max_bytes,
                participant_reserved_connections,
                query_in_flight_max,
                join_grace_ms,
            ]
        );
        if let Some(p) = args.admin_port {
            c.admin_port = Some(p);
        }
        if let Some(v) = args.wal_segment_max_bytes {
            c.wal.segment_max_bytes = v;
        }
        if let Some(v) = args.unsafe_no_fsync {
            c.wal.unsafe_no_fsync = v;
        }
        c.secret = args
            .security
            .apply(&mut c.secret_file, &mut c.tls, &mut c.insecure)?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        non_empty("host", &self.host)?;
        let mut binds = vec![("host", self.host.as_str())];
        if self.admin_port.is_some() {
            binds.push(("admin_host", self.admin_host.as_str()));
        }
        crate::security::check_server_setup(self.secret.as_deref(), &binds, None, self.insecure)
            .map_err(ConfigError::Secret)?;
        if let Some(ca) = &self.tls.ca_file {
            return Err(invalid(
                "tls.ca_file",
                ca.display(),
                "only for participants and clients; the coordinator serves TLS with tls.cert_file and tls.key_file",
            ));
        }
        range_usize(
            "expected_participants",
            self.expected_participants,
            1,
            10_000,
        )?;
        seconds("timeout_seconds", self.timeout_seconds)?;
        frame_bytes(self.max_frame_bytes)?;
        log_settings(&self.log_level, &self.log_format)?;
        range_usize("max_connections", self.max_connections, 1, 1_000_000)?;
        range_usize("max_in_flight", self.max_in_flight, 1, 1_000_000)?;
        range_u64(
            "heartbeat_interval_ms",
            self.heartbeat_interval_ms,
            10,
            3_600_000,
        )?;
        range_u64(
            "heartbeat_failure_threshold",
            self.heartbeat_failure_threshold as u64,
            1,
            1000,
        )?;
        range_u64(
            "handshake_timeout_ms",
            self.handshake_timeout_ms,
            10,
            3_600_000,
        )?;
        range_u64("resend_initial_ms", self.resend_initial_ms, 1, 3_600_000)?;
        range_u64(
            "resend_max_ms",
            self.resend_max_ms,
            self.resend_initial_ms,
            3_600_000,
        )?;
        range_usize("history_limit", self.history_limit, 0, 10_000_000)?;
        range_usize("history_max_bytes", self.history_max_bytes, 0, 1 << 40)?;
        range_usize("timeline_max_events", self.timeline_max_events, 0, 100_000)?;
        non_empty("admin_host", &self.admin_host)?;
        if self.admin_port.is_some_and(|a| a != 0 && a == self.port) {
            return Err(invalid(
                "admin_port",
                self.port,
                "a port different from `port` (the HTTP admin API has its own port), or 0 for any free port",
            ));
        }
        range_usize(
            "admin_max_connections",
            self.admin_max_connections,
            1,
            100_000,
        )?;
        range_usize(
            "admin_max_body_bytes",
            self.admin_max_body_bytes,
            1024,
            64 * 1024 * 1024,
        )?;
        range_u64(
            "admin_header_timeout_ms",
            self.admin_header_timeout_ms,
            10,
            3_600_000,
        )?;
        range_usize(
            "admin_auth_nonces_max",
            self.admin_auth_nonces_max,
            1,
            1_000_000,
        )?;
        range_u64(
            "admin_auth_nonce_ttl_ms",
            self.admin_auth_nonce_ttl_ms,
            10,
            600_000,
        )?;
        range_u64(
            "admin_auth_challenges_per_second",
            self.admin_auth_challenges_per_second as u64,
            1,
            100_000,
        )?;
        range_u64("preauth_timeout_ms", self.preauth_timeout_ms, 10, 3_600_000)?;
        range_usize(
            "preauth_max_per_address",
            self.preauth_max_per_address,
            1,
            1_000_000,
        )?;
        range_usize(
            "participant_reserved_connections",
            self.participant_reserved_connections,
            0,
            100_000,
        )?;
        send_buffer(self.send_buffer_max_bytes, self.max_frame_bytes)?;
        query_limits(self.query_page_max, self.query_reply_max_bytes)?;
        range_usize("query_in_flight_max", self.query_in_flight_max, 1, 1024)?;
        // A client that reads must never be cut off by the replies to the
        // queries it may have in flight at once, plus one frame.
        let replies = self
            .query_in_flight_max
            .saturating_mul(self.query_reply_max_bytes.min(self.max_frame_bytes));
        let needed = replies.saturating_add(self.max_frame_bytes);
        if self.send_buffer_max_bytes < needed {
            return Err(invalid(
                "send_buffer_max_bytes",
                self.send_buffer_max_bytes,
                format!(
                    "at least {needed} (query_in_flight_max x query_reply_max_bytes + max_frame_bytes), \
                     or lower query_in_flight_max or query_reply_max_bytes"
                ),
            ));
        }
        range_u64("join_grace_ms", self.join_grace_ms, 0, 3_600_000)?;
        wal(&self.wal)
    }
}

impl ParticipantConfig {
    pub fn load(args: &ParticipantArgs) -> Result<ParticipantConfig, ConfigError> {
        let mut c: ParticipantConfig =
            load_section(args.config.as_deref(), |f| f.participant, "participant")?;
        if let Some(id) = &args.id {
            c.id = crate::protocol::ParticipantId(id.clone());
        }
        if let Some(d) = &args.data_dir {
            c.data_dir = Some(d.clone());
        }
        if let Some(p) = args.admin_port {
            c.admin_port = Some(p);
        }
        if let Some(v) = args.vote_seed {
            c.vote_seed = Some(v);
        }
        if let Some(f) = &args.kv_seed_file {
            c.kv.seed_file = Some(f.clone());
        }
        if let Some(v) = &args.postgres_dsn {
            c.postgres.dsn = Some(v.clone());
        }
        if let Some(v) = args.postgres_allow_raw_sql {
            c.postgres.allow_raw_sql = v;
        }
        if let Some(v) = args.postgres_max_connections {
            c.postgres.max_connections = v;
        }
        if let Some(v) = args.postgres_connect_timeout_ms {
            c.postgres.connect_timeout_ms = v;
        }
        if let Some(v) = &args.postgres_ca_file {
            c.postgres.ca_file = Some(v.clone());
        }
        if let Some(v) = &args.postgres_password_file {
            c.postgres.password_file = Some(v.clone());
        }
        if let Some(v) = &args.postgres_allowed_schemas {
            c.postgres.allowed_schemas = v.clone();
        }
        overlay!(
            c,
            args,
            [
                coordinator_host,
                coordinator_port,
                vote_preference,
                commit_probability,
                timeout_seconds,
                vote_delay_ms,
                resource,
                max_frame_bytes,
                log_level,
                log_format,
                heartbeat_interval_ms,
                heartbeat_failure_threshold,
                reconnect_initial_ms,
                reconnect_max_ms,
                query_max_ms,
                history_limit,
                checkpoint_recent_commits,
                admin_host,
                admin_max_connections,
                handshake_timeout_ms,
                preauth_timeout_ms,
                preauth_max_per_address,
                send_buffer_max_bytes,
                query_page_max,
                query_reply_max_bytes,
                admin_reserved_connections,
            ]
        );
        if let Some(v) = args.wal_segment_max_bytes {
            c.wal.segment_max_bytes = v;
        }
        if let Some(v) = args.unsafe_no_fsync {
            c.wal.unsafe_no_fsync = v;
        }
        c.secret = args
            .security
            .apply(&mut c.secret_file, &mut c.tls, &mut c.insecure)?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !crate::protocol::coordinator::valid_participant_id(&self.id.0) {
            return Err(invalid(
                "id",
                &self.id.0,
                "1-64 characters from A-Z a-z 0-9 _ . -",
            ));
        }
        non_empty("coordinator_host", &self.coordinator_host)?;
        let binds: Vec<(&str, &str)> = match self.admin_port {
            Some(_) => vec![("admin_host", self.admin_host.as_str())],
            None => Vec::new(),
        };
        let own = crate::security::auth::Identity::Participant(self.id.0.clone());
        crate::security::check_server_setup(
            self.secret.as_deref(),
            &binds,
            Some(&own),
            self.insecure,
        )
        .map_err(ConfigError::Secret)?;
        if self.coordinator_port == 0 {
            return Err(invalid("coordinator_port", 0, "a port between 1 and 65535"));
        }
        if VotePreference::parse(&self.vote_preference).is_none() {
            return Err(invalid(
                "vote_preference",
                &self.vote_preference,
                VotePreference::ALLOWED,
            ));
        }
        if !(0.0..=1.0).contains(&self.commit_probability) {
            return Err(invalid(
                "commit_probability",
                self.commit_probability,
                "a number between 0.0 and 1.0",
            ));
        }
        seconds("timeout_seconds", self.timeout_seconds)?;
        range_u64("vote_delay_ms", self.vote_delay_ms, 0, 3_600_000)?;
        if !RESOURCES.contains(&self.resource.as_str()) {
            return Err(invalid("resource", &self.resource, RESOURCES.join(", ")));
        }
        if self.kv.seed_file.is_some() && self.resource != "kv" {
            return Err(invalid(
                "kv.seed_file",
                self.kv
                    .seed_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                "only with resource: kv",
            ));
        }
        postgres(&self.postgres, &self.resource)?;
        frame_bytes(self.max_frame_bytes)?;
        log_settings(&self.log_level, &self.log_format)?;
        range_u64(
            "heartbeat_interval_ms",
            self.heartbeat_interval_ms,
            10,
            3_600_000,
        )?;
        range_u64(
            "heartbeat_failure_threshold",
            self.heartbeat_failure_threshold as u64,
            1,
            1000,
        )?;
        range_u64(
            "reconnect_initial_ms",
            self.reconnect_initial_ms,
            1,
            3_600_000,
        )?;
        range_u64(
            "reconnect_max_ms",
            self.reconnect_max_ms,
            self.reconnect_initial_ms,
            3_600_000,
        )?;
        range_u64("query_max_ms", self.query_max_ms, 10, 3_600_000)?;
        range_usize("history_limit", self.history_limit, 0, 100_000_000)?;
        range_usize(
            "checkpoint_recent_commits",
            self.checkpoint_recent_commits,
            0,
            100_000_000,
        )?;
        non_empty("admin_host", &self.admin_host)?;
        range_usize(
            "admin_max_connections",
            self.admin_max_connections,
            1,
            10_000,
        )?;
        range_u64(
            "handshake_timeout_ms",
            self.handshake_timeout_ms,
            10,
            3_600_000,
        )?;
        range_u64("preauth_timeout_ms", self.preauth_timeout_ms, 10, 3_600_000)?;
        range_usize(
            "preauth_max_per_address",
            self.preauth_max_per_address,
            1,
            10_000,
        )?;
        range_usize(
            "admin_reserved_connections",
            self.admin_reserved_connections,
            0,
            1_000,
        )?;
        send_buffer(self.send_buffer_max_bytes, self.max_frame_bytes)?;
        query_limits(self.query_page_max, self.query_reply_max_bytes)?;
        wal(&self.wal)
    }
}

fn invalid(
    key: &'static str,
    value: impl std::fmt::Display,
    allowed: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

fn non_empty(key: &'static str, v: &str) -> Result<(), ConfigError> {
    if v.trim().is_empty() {
        return Err(invalid(key, "\"\"", "a non-empty host name or address"));
    }
    Ok(())
}

fn range_u64(key: &'static str, v: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(invalid(key, v, format!("an integer between {lo} and {hi}")));
    }
    Ok(())
}

fn range_usize(key: &'static str, v: usize, lo: usize, hi: usize) -> Result<(), ConfigError> {
    range_u64(key, v as u64, lo as u64, hi as u64)
}

fn seconds(key: &'static str, v: f64) -> Result<(), ConfigError> {
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        return Err(invalid(
            key,
            v,
            "a number of seconds greater than 0 and at most 86400",
        ));
    }
    Ok(())
}

/// A connection's send buffer must hold at least two of the largest frames,
/// or a single large reply would disconnect a peer that does read.
fn send_buffer(v: usize, max_frame_bytes: usize) -> Result<(), ConfigError> {
    range_usize(
        "send_buffer_max_bytes",
        v,
        max_frame_bytes.saturating_mul(2),
        1024 * 1024 * 1024,
    )
}

fn query_limits(page_max: usize, reply_max_bytes: usize) -> Result<(), ConfigError> {
    range_usize("query_page_max", page_max, 1, 100_000)?;
    range_usize(
        "query_reply_max_bytes",
        reply_max_bytes,
        4096,
        1024 * 1024 * 1024,
    )
}

fn frame_bytes(v: usize) -> Result<(), ConfigError> {
    // At most half a log record, so anything a frame carries can be logged.
    range_usize("max_frame_bytes", v, 1024, crate::wal::RECORD_MAX_BYTES / 2)
}

fn log_settings(level: &str, format: &str) -> Result<(), ConfigError> {
    if !["trace", "debug", "info", "warn", "error"].contains(&level.to_ascii_lowercase().as_str()) {
        return Err(invalid(
            "log_level",
            level,
            "one of trace, debug, info, warn, error",
        ));
    }
    if !["text", "json"].contains(&format) {
        return Err(invalid("log_format", format, "text or json"));
    }
    Ok(())
}

/// The `postgres:` settings: a parseable `dsn` exactly when the resource is
/// `postgres`. The dsn is never echoed: it may hold a password.
fn postgres(p: &PostgresConfig, resource: &str) -> Result<(), ConfigError> {
    const KEY: &str = "postgres.dsn";
    let dsn = p.dsn.as_deref().filter(|d| !d.trim().is_empty());
    match (dsn, resource == "postgres") {
        (None, true) => {
            return Err(invalid(
                KEY,
                "(unset)",
                "required with resource: postgres: a libpq connection string such as \
                 `host=127.0.0.1 port=5432 user=app dbname=app` or a URL \
                 `postgres://app@127.0.0.1:5432/app` (flag --postgres-dsn, env TWOPC_POSTGRES_DSN)",
            ))
        }
        (Some(_), false) => return Err(invalid(KEY, "(set)", "only with resource: postgres")),
        (Some(d), true) => {
            let (d, _) = crate::resource::postgres_tls::split_verify_mode(d);
            crate::resource::postgres::parse_dsn(&d)
                .map_err(|e| invalid(KEY, "(not shown: it may hold a password)", e))?;
        }
        (None, false) => {}
    }
    for s in &p.allowed_schemas {
        if crate::resource::postgres::SCHEMAS_NEVER.contains(&s.as_str()) || s.is_empty() {
            return Err(invalid(
                "postgres.allowed_schemas",
                s,
                "a schema of your tables; pg_catalog, information_schema and pg_toast are never allowed",
            ));
        }
    }
    range_usize("postgres.max_connections", p.max_connections, 2, 1000)?;
    range_u64(
        "postgres.connect_timeout_ms",
        p.connect_timeout_ms,
        100,
        600_000,
    )
}

fn wal(w: &WalConfig) -> Result<(), ConfigError> {
    range_u64("wal.segment_max_bytes", w.segment_max_bytes, 4096, 1 << 40)
}

/// Set up tracing on stderr in the configured format. `RUST_LOG`, when set,
/// overrides `level` for fine-grained filtering. Text lines have their
/// control characters escaped ([`crate::log_writer`]).
pub fn init_tracing(level: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.to_ascii_lowercase()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        let _ = builder.with_writer(std::io::stderr).json().try_init();
    } else {
        // Text lines quote client and peer text: control characters are
        // escaped (so colours are off: they are escape sequences too).
        let _ = builder
            .with_ansi(false)
            .with_writer(crate::log_writer::MakeEscapingStderr)
            .try_init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        CoordinatorConfig::default().validate().unwrap();
        ParticipantConfig::default().validate().unwrap();
    }

    #[test]
    fn repository_config_yaml_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
        let c: CoordinatorConfig =
            load_section(Some(&path), |f| f.coordinator, "coordinator").unwrap();
        let p: ParticipantConfig =
            load_section(Some(&path), |f| f.participant, "participant").unwrap();
        let json = |v: &dyn erased::Ser| v.to_json();
        assert_eq!(json(&c), json(&CoordinatorConfig::default()));
        assert_eq!(json(&p), json(&ParticipantConfig::default()));
    }

    mod erased {
        pub trait Ser {
            fn to_json(&self) -> serde_json::Value;
        }
        impl<T: serde::Serialize> Ser for T {
            fn to_json(&self) -> serde_json::Value {
                serde_json::to_value(self).unwrap()
            }
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "coordinator:\n  prot: 9000\n").unwrap();
        let err = load_section::<CoordinatorConfig>(Some(&path), |f| f.coordinator, "coordinator")
            .unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
    }

    #[test]
    fn the_http_admin_port_must_differ_from_the_protocol_port() {
        let c = CoordinatorConfig {
            port: 8080,
            admin_port: Some(8080),
            ..Default::default()
        };
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.contains("admin_port") && msg.contains("different"),
            "{msg}"
        );
        let c = CoordinatorConfig {
            port: 0,
            admin_port: Some(0),
            ..Default::default()
        };
        c.validate().unwrap();
        let c = CoordinatorConfig {
            admin_max_body_bytes: 10,
            ..Default::default()
        };
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("admin_max_body_bytes"), "{msg}");
    }

    #[test]
    fn the_send_buffer_holds_every_query_reply_a_connection_may_have_in_flight() {
        // 16 replies of 512 KiB, plus a frame: 9 MiB, more than 8 MiB.
        let c = CoordinatorConfig {
            query_in_flight_max: 16,
            ..Default::default()
        };
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.contains("send_buffer_max_bytes") && msg.contains("at least 9437184"),
            "{msg}"
        );
        let c = CoordinatorConfig {
            query_in_flight_max: 16,
            send_buffer_max_bytes: 9 * 1024 * 1024,
            ..Default::default()
        };
        c.validate().unwrap();
        let p = ParticipantConfig {
            send_buffer_max_bytes: 1024 * 1024,
            ..Default::default()
        };
        let msg = p.validate().unwrap_err().to_string();
        assert!(msg.contains("send_buffer_max_bytes"), "{msg}");
    }

    #[test]
    fn invalid_values_name_key_and_value() {
        let c = ParticipantConfig {
            commit_probability: 1.5,
            ..Default::default()
        };
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.contains("commit_probability") && msg.contains("1.5") && msg.contains("between"),
            "{msg}"
        );
    }
}

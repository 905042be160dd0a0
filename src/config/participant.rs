//! A participant's keys (YAML section `participant:`), and the checks that
//! relate two of them.

use super::keys::{invalid, range, settings, Rule};
use super::sections::{KvConfig, KvFlags, PostgresConfig, PostgresFlags, WalConfig, WalFlags};
use super::VotePreference;
use super::{load_section, ConfigError, LogFormat, LogLevel, ResourceKind, Runtime, TlsFlags};
use crate::protocol::ParticipantId;
use crate::security::tls::TlsConfig;
use std::path::PathBuf;

/// Milliseconds: the longest timer a key may set (an hour).
const HOUR_MS: u64 = 3_600_000;

settings! {
    /// A participant's configuration, after defaults, file, env and flags.
    #[derive(Clone, Debug)]
    pub struct ParticipantConfig in "", flags ParticipantFlags {
        /// Durable participant id (1-64 of [A-Za-z0-9_.-]).
        id: ParticipantId = "p1".into(), Rule::ANY;
        /// Address of the coordinator.
        coordinator_host: String = "127.0.0.1".into(), Rule::HOST;
        /// TCP port of the coordinator.
        coordinator_port: u16 = 8080, Rule::range(1, 65_535);
        /// How to vote when the resource has no say.
        vote_preference: VotePreference = VotePreference::Commit, Rule::ANY;
        /// Probability of a commit vote when vote_preference is random.
        commit_probability: f64 = 0.5, Rule::PROBABILITY;
        /// Seed of the random vote preference, so that a run's votes replay;
        /// unset draws the seed from the operating system.
        vote_seed: Option<u64> = None, Rule::ANY;
        /// Seconds (fractions allowed) a prepared transaction waits for its
        /// decision before the participant asks the coordinator.
        timeout_seconds: f64 = 30.0, Rule::SECONDS;
        /// Milliseconds added before each vote (testing slow participants).
        vote_delay_ms: u64 = 0, Rule::range(0, HOUR_MS);
        /// What the participant votes with: the vote preference only, the
        /// embedded key-value store or PostgreSQL.
        resource: ResourceKind = ResourceKind::Vote, Rule::ANY;
        /// Directory of the write-ahead log; `./data/<id>` when unset.
        data_dir: Option<PathBuf> = None, Rule::ANY;
        /// Largest accepted frame in bytes.
        max_frame_bytes: usize = 1024 * 1024,
            Rule::range(1024, crate::wal::RECORD_MAX_BYTES as u64 / 2);
        /// Least severe log events written (RUST_LOG overrides when set).
        log_level: LogLevel = LogLevel::Info, Rule::ANY;
        /// Log lines as text or JSON.
        log_format: LogFormat = LogFormat::Text, Rule::ANY;
        /// The async runtime: one thread, or a worker thread per core.
        runtime: Runtime = Runtime::CurrentThread, Rule::ANY;
        /// Milliseconds between heartbeats to the coordinator.
        heartbeat_interval_ms: u64 = 1000, Rule::range(10, HOUR_MS);
        /// Missed heartbeat answers before the connection is made again.
        heartbeat_failure_threshold: u32 = 5, Rule::range(1, 1000);
        /// Milliseconds: first reconnect delay (capped exponential backoff).
        reconnect_initial_ms: u64 = 100, Rule::range(1, HOUR_MS);
        /// Milliseconds: cap of the reconnect delay (at least reconnect_initial_ms).
        reconnect_max_ms: u64 = 5_000, Rule::range(1, HOUR_MS);
        /// Milliseconds: cap of the delay between two queries about an
        /// in-doubt transaction.
        query_max_ms: u64 = 5_000, Rule::range(10, HOUR_MS);
        /// Decided transactions remembered to answer duplicates identically.
        history_limit: usize = 100_000, Rule::range(0, 100_000_000);
        /// Ordinary commits (the most recent) kept in a log checkpoint.
        checkpoint_recent_commits: usize = 100, Rule::range(0, 100_000_000);
        /// Operator port (status, txn list/show, resolve); off when unset,
        /// 0 picks a free port and logs it.
        admin_port: Option<u16> = None, Rule::ANY;
        /// Address of the operator port.
        admin_host: String = "127.0.0.1".into(), Rule::HOST;
        /// Simultaneous operator connections on the admin port.
        admin_max_connections: usize = 16, Rule::range(1, 10_000);
        /// Milliseconds the coordinator has to answer our hello (else we
        /// reconnect); also the upper bound of `preauth_timeout_ms`.
        handshake_timeout_ms: u64 = 10_000, Rule::range(10, HOUR_MS);
        /// Milliseconds an admin connection has, from accept, to complete its
        /// handshake; never more than `handshake_timeout_ms`.
        preauth_timeout_ms: u64 = 2_000, Rule::range(10, HOUR_MS);
        /// Admin connections from one IP address that have not completed
        /// their handshake; past it a new one from that address is refused.
        preauth_max_per_address: usize = 8, Rule::range(1, 10_000);
        /// Admin slots past `admin_max_connections` kept for connections that
        /// complete their handshake (operators).
        admin_reserved_connections: usize = 4, Rule::range(0, 1_000);
        /// Bytes queued for one connection's writer before it is disconnected.
        send_buffer_max_bytes: usize = 8 * 1024 * 1024, Rule::range(2 * 1024, 1 << 30);
        /// Most transactions in one `txn_list` reply of the admin port.
        query_page_max: usize = 1000, Rule::range(1, 100_000);
        /// Bytes; most of one `txn_list` reply of the admin port.
        query_reply_max_bytes: usize = 512 * 1024, Rule::range(4096, 1 << 30);
        /// File holding the shared secret (coordinator and admin port).
        secret_file: Option<PathBuf> = None, Rule::ANY;
        /// Start even without a secret on a non-loopback admin address, or
        /// with a weak secret.
        insecure: bool = false, Rule::ANY;
    }
    sections {
        kv: KvConfig / KvFlags,
        postgres: PostgresConfig / PostgresFlags,
        wal: WalConfig / WalFlags,
    }
    extra {
        /// Loaded from `secret_file` or `TWOPC_SECRET`; never serialised.
        #[serde(skip)]
        secret: Option<std::sync::Arc<crate::security::auth::Secret>> = None,
        /// TLS files (flags --tls-ca, --tls-cert, --tls-key).
        tls: TlsConfig = TlsConfig::default(),
    }
}

/// Flags of `twopc-participant`. Each also reads `TWOPC_<FLAG>`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ParticipantArgs {
    /// YAML configuration file (section `participant:`).
    #[arg(long, env = "TWOPC_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub keys: ParticipantFlags,
    #[command(flatten)]
    pub tls: TlsFlags,
}

impl ParticipantConfig {
    /// Defaults < file < env < flags (clap already merged env under flags).
    pub fn load(args: &ParticipantArgs) -> Result<ParticipantConfig, ConfigError> {
        let mut c: ParticipantConfig =
            load_section(args.config.as_deref(), |f| f.participant, "participant")?;
        c.overlay(&args.keys);
        c.secret = args.tls.apply(c.secret_file.as_deref(), &mut c.tls)?;
        c.validate()?;
        Ok(c)
    }

    /// `data_dir`, or `./data/<id>` when unset.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./data").join(&self.id.0))
    }

    /// Each key's rule, then the rules that relate keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !crate::protocol::coordinator::valid_participant_id(&self.id.0) {
            return Err(invalid(
                "id",
                &self.id.0,
                "1-64 characters from A-Z a-z 0-9 _ . -",
            ));
        }
        self.check_keys()?;
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
        if let Some(seed) = &self.kv.seed_file {
            if self.resource != ResourceKind::Kv {
                return Err(invalid(
                    "kv.seed_file",
                    seed.display(),
                    "only with resource: kv",
                ));
            }
        }
        self.postgres.validate(self.resource)?;
        range(
            "reconnect_max_ms",
            self.reconnect_max_ms,
            self.reconnect_initial_ms,
            HOUR_MS,
        )?;
        super::send_buffer(self.send_buffer_max_bytes, self.max_frame_bytes)
    }
}

impl super::keys::Setting for ParticipantId {
    type Flag = ParticipantId;
    fn set(&mut self, v: ParticipantId) {
        *self = v;
    }
}

impl super::keys::Checked for ParticipantId {}

impl super::keys::FlagValue for ParticipantId {
    fn arg(arg: clap::Arg, _key: &str) -> clap::Arg {
        arg.value_parser(|s: &str| Ok::<_, String>(ParticipantId(s.to_string())))
    }
}

//! A participant's keys (YAML section `participant:`), and the checks that
//! relate two of them.

use super::keys::{invalid, range, settings, Rule, Table, HOUR_MS};
use super::sections::{KvConfig, PostgresConfig, WalConfig};
use super::VotePreference;
use super::{ConfigError, LogFormat, LogLevel, ResourceKind, Runtime};
use crate::protocol::ParticipantId;
use crate::security::tls::TlsConfig;
use std::path::PathBuf;

settings! {
    /// A participant's configuration, after defaults, file, env and flags.
    #[derive(Clone, Debug)]
    pub struct ParticipantConfig in "participant" {
        /// Durable participant id (1-64 of [A-Za-z0-9_.-]).
        id: ParticipantId = "p1".into(), Rule::Id;
        /// Address of the coordinator (unused when `coordinators` is set).
        coordinator_host: String = "127.0.0.1".into(), Rule::Host;
        /// TCP port of the coordinator (unused when `coordinators` is set).
        coordinator_port: u16 = 8080, Rule::Range(1, 65_535);
        /// The members of a replicated coordinator group, each `host:port`
        /// (comma-separated as a flag or variable); when set, replaces
        /// coordinator_host and coordinator_port. The participant tries
        /// them in turn and follows a member that names the leader.
        coordinators: Vec<String> = Vec::new(), Rule::Any;
        /// How to vote when the resource has no say.
        vote_preference: VotePreference = VotePreference::Commit, Rule::Any;
        /// Probability of a commit vote when vote_preference is random.
        commit_probability: f64 = 0.5, Rule::Probability;
        /// Seed of the random vote preference, so that a run's votes replay;
        /// unset draws the seed from the operating system.
        vote_seed: Option<u64> = None, Rule::Any;
        /// Seconds (fractions allowed) a prepared transaction waits for its
        /// decision before the participant asks the coordinator.
        timeout_seconds: f64 = 30.0, Rule::Seconds;
        /// Milliseconds added before each vote (testing slow participants).
        vote_delay_ms: u64 = 0, Rule::Range(0, HOUR_MS);
        /// What the participant votes with: the vote preference only, the
        /// embedded key-value store or PostgreSQL.
        resource: ResourceKind = ResourceKind::Vote, Rule::Any;
        /// Directory of the write-ahead log; `./data/<id>` when unset.
        data_dir: Option<PathBuf> = None, Rule::Any;
        /// Largest accepted frame in bytes.
        max_frame_bytes: usize = 1024 * 1024,
            Rule::Range(1024, crate::wal::RECORD_MAX_BYTES as u64 / 2);
        /// Least severe log events written (RUST_LOG overrides when set).
        log_level: LogLevel = LogLevel::Info, Rule::Any;
        /// Log lines as text or JSON.
        log_format: LogFormat = LogFormat::Text, Rule::Any;
        /// The async runtime: one thread, or a worker thread per core.
        runtime: Runtime = Runtime::CurrentThread, Rule::Any;
        /// Milliseconds between heartbeats to the coordinator.
        heartbeat_interval_ms: u64 = 1000, Rule::Range(10, HOUR_MS);
        /// Missed heartbeat answers before the connection is made again.
        heartbeat_failure_threshold: u32 = 5, Rule::Range(1, 1000);
        /// Milliseconds: first reconnect delay (capped exponential backoff).
        reconnect_initial_ms: u64 = 100, Rule::Range(1, HOUR_MS);
        /// Milliseconds: cap of the reconnect delay (at least reconnect_initial_ms).
        reconnect_max_ms: u64 = 5_000, Rule::Range(1, HOUR_MS);
        /// Milliseconds: cap of the delay between two queries about an
        /// in-doubt transaction.
        query_max_ms: u64 = 5_000, Rule::Range(10, HOUR_MS);
        /// Decided transactions remembered to answer duplicates identically.
        history_limit: usize = 100_000, Rule::Range(0, 100_000_000);
        /// Ordinary commits (the most recent) kept in a log checkpoint.
        checkpoint_recent_commits: usize = 100, Rule::Range(0, 100_000_000);
        /// Operator port (status, txn list/show, resolve); off when unset,
        /// 0 picks a free port and logs it.
        admin_port: Option<u16> = None, Rule::Any;
        /// Address of the operator port.
        admin_host: String = "127.0.0.1".into(), Rule::Host;
        /// Simultaneous operator connections on the admin port (and,
        /// separately, on the admin HTTP port).
        admin_max_connections: usize = 16, Rule::Range(1, 10_000);
        /// Admin HTTP port: the console and its API (status, transactions,
        /// resolve) on `admin_host`; off when unset, 0 picks a free port
        /// and logs it.
        admin_http_port: Option<u16> = None, Rule::Any;
        /// Milliseconds the coordinator has to answer our hello (else we
        /// reconnect); also the upper bound of `preauth_timeout_ms`.
        handshake_timeout_ms: u64 = 10_000, Rule::Range(10, HOUR_MS);
        /// Milliseconds an admin connection has, from accept, to complete its
        /// handshake; never more than `handshake_timeout_ms`.
        preauth_timeout_ms: u64 = 2_000, Rule::Range(10, HOUR_MS);
        /// Admin connections from one IP address that have not completed
        /// their handshake; past it a new one from that address is refused.
        preauth_max_per_address: usize = 8, Rule::Range(1, 10_000);
        /// Admin slots past `admin_max_connections` kept for connections that
        /// complete their handshake (operators).
        admin_reserved_connections: usize = 4, Rule::Range(0, 1_000);
        /// Bytes queued for one connection's writer before it is disconnected.
        send_buffer_max_bytes: usize = 8 * 1024 * 1024, Rule::Range(2 * 1024, 1 << 30);
        /// Most transactions in one `txn_list` reply of the admin port.
        query_page_max: usize = 1000, Rule::Range(1, 100_000);
        /// Bytes; most of one `txn_list` reply of the admin port.
        query_reply_max_bytes: usize = 512 * 1024, Rule::Range(4096, 1 << 30);
        /// File holding the shared secret (coordinator and admin port).
        secret_file: Option<PathBuf> = None, Rule::Any;
        /// Start even without a secret on a non-loopback admin address, or
        /// with a weak secret.
        insecure: bool = false, Rule::Any;
    }
    sections {
        kv: KvConfig,
        postgres: PostgresConfig,
        wal: WalConfig,
    }
    extra {
        /// Loaded from `secret_file` or `TWOPC_SECRET`; never serialised.
        #[serde(skip)]
        secret: Option<std::sync::Arc<crate::security::auth::Secret>> = None,
        /// TLS files (flags --tls-ca, --tls-cert, --tls-key).
        tls: TlsConfig = TlsConfig::default(),
    }
}

impl ParticipantConfig {
    /// Defaults < file < env < flags (clap already merged env under flags).
    pub fn load(args: &super::ParticipantArgs) -> Result<ParticipantConfig, ConfigError> {
        let mut c = args.merged()?;
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

    /// The `host:port` of every coordinator member to try, in order:
    /// `coordinators` when set, else `coordinator_host:coordinator_port`.
    pub fn coordinator_addrs(&self) -> Vec<String> {
        match self.coordinators.is_empty() {
            true => vec![format!(
                "{}:{}",
                self.coordinator_host, self.coordinator_port
            )],
            false => self.coordinators.clone(),
        }
    }

    /// Each key's rule, then the rules that relate keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_keys("")?;
        check_coordinators(&self.coordinators)?;
        let binds: Vec<(&str, &str)> = match self.admin_port.or(self.admin_http_port) {
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
        .map_err(ConfigError::Unsafe)?;
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

/// Most members `coordinators` may list: a replicated coordinator group
/// has 1, 3 or 5; a few more leave room for a group being moved.
pub const COORDINATORS_MAX: usize = 9;

/// Each entry of `coordinators` is `host:port` (port 1-65535), without
/// repeats, and there are at most [`COORDINATORS_MAX`].
fn check_coordinators(list: &[String]) -> Result<(), ConfigError> {
    const ALLOWED: &str = "a list of host:port, one per coordinator member (port 1-65535), \
                           e.g. 10.0.0.1:8080,10.0.0.2:8080";
    if list.len() > COORDINATORS_MAX {
        return Err(invalid(
            "coordinators",
            list.join(","),
            format!("at most {COORDINATORS_MAX} members; {ALLOWED}"),
        ));
    }
    for (i, entry) in list.iter().enumerate() {
        let port_ok = |p: &str| p.parse::<u16>().is_ok_and(|p| p > 0);
        let well_formed = match entry.rsplit_once(':') {
            Some((host, port)) => {
                !host.trim().is_empty() && !entry.chars().any(char::is_whitespace) && port_ok(port)
            }
            None => false,
        };
        if !well_formed {
            let shown = if entry.is_empty() {
                "\"\""
            } else {
                entry.as_str()
            };
            return Err(invalid("coordinators", shown, ALLOWED));
        }
        if list[..i].contains(entry) {
            return Err(invalid(
                "coordinators",
                entry,
                format!("each member once; {entry} is listed twice"),
            ));
        }
    }
    Ok(())
}

//! The coordinator's keys (YAML section `coordinator:`), and the checks
//! that relate two of them.

use super::keys::{invalid, range, settings, Rule, Table, HOUR_MS};
use super::sections::WalConfig;
use super::{ConfigError, LogFormat, LogLevel, Runtime};
use crate::security::tls::TlsConfig;
use std::path::PathBuf;

settings! {
    /// The coordinator's configuration, after defaults, file, env and flags.
    #[derive(Clone, Debug)]
    pub struct CoordinatorConfig in "coordinator" {
        /// Address to listen on.
        host: String = "127.0.0.1".into(), Rule::Host;
        /// TCP port to listen on (0 picks a free port and prints it).
        port: u16 = 8080, Rule::Any;
        /// Participants that must register before transactions run.
        expected_participants: usize = 3, Rule::Range(1, 10_000);
        /// Seconds (fractions allowed): the vote deadline of a transaction.
        timeout_seconds: f64 = 30.0, Rule::Seconds;
        /// Accept participants beyond expected_participants.
        enable_dynamic_joining: bool = false, Rule::Any;
        /// Directory of the write-ahead log.
        data_dir: PathBuf = PathBuf::from("./data/coordinator"), Rule::Any;
        /// Largest accepted frame in bytes; at most half a log record, so
        /// anything a frame carries can be logged.
        max_frame_bytes: usize = 1024 * 1024,
            Rule::Range(1024, crate::wal::RECORD_MAX_BYTES as u64 / 2);
        /// Least severe log events written (RUST_LOG overrides when set).
        log_level: LogLevel = LogLevel::Info, Rule::Any;
        /// Log lines as text or JSON.
        log_format: LogFormat = LogFormat::Text, Rule::Any;
        /// The async runtime: one thread, or a worker thread per core.
        runtime: Runtime = Runtime::CurrentThread, Rule::Any;
        /// Most simultaneous connections.
        max_connections: usize = 1024, Rule::Range(1, 1_000_000);
        /// Most transactions in the prepare phase at once.
        max_in_flight: usize = 1024, Rule::Range(1, 1_000_000);
        /// Milliseconds: expected heartbeat interval of participants.
        heartbeat_interval_ms: u64 = 1000, Rule::Range(10, HOUR_MS);
        /// Missed heartbeats before a participant counts as not alive.
        heartbeat_failure_threshold: u32 = 5, Rule::Range(1, 1000);
        /// Milliseconds: upper bound of preauth_timeout_ms.
        handshake_timeout_ms: u64 = 10_000, Rule::Range(10, HOUR_MS);
        /// Milliseconds before an unacknowledged decision is re-sent; doubles each time.
        resend_initial_ms: u64 = 200, Rule::Range(1, HOUR_MS);
        /// Milliseconds: cap of the re-send delay (at least resend_initial_ms).
        resend_max_ms: u64 = 5_000, Rule::Range(1, HOUR_MS);
        /// Ended transactions remembered for status and queries.
        history_limit: usize = 10_000, Rule::Range(0, 10_000_000);
        /// Bytes of read results kept across remembered transactions (for
        /// `txn show`); past it the oldest results are dropped with a note.
        history_max_bytes: usize = 16 * 1024 * 1024, Rule::Range(0, 1 << 40);
        /// Most events kept in one transaction's timeline (`txn show`).
        timeline_max_events: usize = 128, Rule::Range(0, 100_000);
        /// HTTP admin API port (health, status, metrics, transactions); off
        /// when unset, 0 picks a free port and logs it.
        admin_port: Option<u16> = None, Rule::Any;
        /// Address of the HTTP admin API.
        admin_host: String = "127.0.0.1".into(), Rule::Host;
        /// Simultaneous HTTP connections; past it a few more are served for
        /// `GET /health` only, then connections are refused at once.
        admin_max_connections: usize = 64, Rule::Range(1, 100_000);
        /// Bytes; largest accepted HTTP request body.
        admin_max_body_bytes: usize = 1024 * 1024, Rule::Range(1024, 64 * 1024 * 1024);
        /// Milliseconds a connection has to send a request's headers, and again
        /// its body.
        admin_header_timeout_ms: u64 = 10_000, Rule::Range(10, HOUR_MS);
        /// With a secret: most outstanding nonces of `GET /auth/challenge`
        /// kept at once; past it the oldest are forgotten. Bounds the memory a
        /// flood of challenges can take.
        admin_auth_nonces_max: usize = 4096, Rule::Range(1, 1_000_000);
        /// With a secret: milliseconds an issued nonce stays valid.
        admin_auth_nonce_ttl_ms: u64 = 30_000, Rule::Range(10, 600_000);
        /// With a secret: serve `GET /metrics` without a proof, for a
        /// Prometheus scraper (metrics hold counts and timings, no data).
        admin_open_metrics: bool = false, Rule::Any;
        /// Names the HTTP admin API answers to in the `Host` header (no port,
        /// comma-separated as a flag); empty: loopback names and `admin_host`.
        /// Stops DNS rebinding.
        admin_allowed_hosts: Vec<String> = Vec::new(), Rule::Any;
        /// With a secret: `GET /auth/challenge` answered per address and
        /// second (burst twice that); past it 429.
        admin_auth_challenges_per_second: u32 = 20, Rule::Range(1, 100_000);
        /// Milliseconds an accepted connection has, from accept, to complete
        /// its handshake (TLS, hello and, with a secret, authentication);
        /// never more than `handshake_timeout_ms`.
        preauth_timeout_ms: u64 = 2_000, Rule::Range(10, HOUR_MS);
        /// Connections from one IP address that have not completed their
        /// handshake; past it a new one from that address is refused at once.
        preauth_max_per_address: usize = 8, Rule::Range(1, 1_000_000);
        /// Connection slots past `max_connections` that only participants
        /// (hello with role participant) may keep.
        participant_reserved_connections: usize = 64, Rule::Range(0, 100_000);
        /// Bytes queued for one connection's writer; a peer that lets more
        /// pile up (it does not read) is disconnected.
        send_buffer_max_bytes: usize = 8 * 1024 * 1024, Rule::Range(2 * 1024, 1 << 30);
        /// Most entries in one page of a list (`txn_list`, the HTTP
        /// lists): the default page size and the largest `limit`.
        query_page_max: usize = 1000, Rule::Range(1, 100_000);
        /// Bytes; most of one list reply (never more than
        /// `max_frame_bytes`); past it the page is cut, with `next`.
        query_reply_max_bytes: usize = 512 * 1024, Rule::Range(4096, 1 << 30);
        /// Operator queries (status, txn list, txn show) of one connection
        /// waiting for an answer; the connection is not read past it.
        query_in_flight_max: usize = 4, Rule::Range(1, 1024);
        /// Milliseconds a participant joining a ready cluster must stay
        /// connected before submits that name no participants include it.
        join_grace_ms: u64 = 3_000, Rule::Range(0, HOUR_MS);
        /// File holding the shared secret every peer must prove it knows; off
        /// when unset (and `TWOPC_SECRET` is unset).
        secret_file: Option<PathBuf> = None, Rule::Any;
        /// Start even without a secret on a non-loopback address, or with a
        /// weak secret, instead of refusing to.
        insecure: bool = false, Rule::Any;
        /// The coordinator group, one entry per member (this one included):
        /// `ID=HOST:PORT:RAFT_PORT` (comma-separated as a flag). Empty: a
        /// single coordinator with its own log.
        peers: Vec<String> = Vec::new(), Rule::Any;
        /// This member's id in `peers`.
        node_id: u64 = 1, Rule::Range(1, 1_000_000);
        /// Start as a new member of a running group (added with `twopc
        /// cluster add`) instead of forming the group from `peers`.
        join: bool = false, Rule::Any;
        /// Milliseconds without a leader's heartbeat before a member stands
        /// for election (randomised up to 1.5 times this, after a lease of 1.5 times this); also how long a
        /// leader cut off from the majority keeps deciding.
        raft_election_timeout_ms: u64 = 300, Rule::Range(50, 600_000);
        /// Milliseconds between the leader's heartbeats (less than half the
        /// election timeout).
        raft_heartbeat_ms: u64 = 100, Rule::Range(10, 300_000);
        /// Milliseconds a leader holds back telling a follower only a new
        /// commit index, to tell it with the next entries instead; 0 tells
        /// it at once. At most the heartbeat interval.
        raft_commit_hold_ms: u64 = 10, Rule::Range(0, 300_000);
        /// Raft entries applied between two snapshots of the group's state;
        /// the log before a snapshot is dropped.
        raft_snapshot_every: u64 = 10_000, Rule::Range(10, 100_000_000);
        /// Bytes; largest frame on the Raft port (an append of many
        /// entries, a snapshot chunk).
        raft_max_frame_bytes: usize = 64 * 1024 * 1024, Rule::Range(64 * 1024, 1 << 31);
        /// Connections the Raft port serves at once (the other members use
        /// one or two each).
        raft_max_connections: usize = 64, Rule::Range(2, 10_000);
        /// `HOST:PORT` the Raft port listens on, when the other members
        /// reach this one at another address than its entry in `peers`
        /// (a proxy, NAT); unset: that entry's address.
        raft_bind: Option<String> = None, Rule::Any;
    }
    sections { wal: WalConfig }
    extra {
        /// The secret itself, loaded from `secret_file` or `TWOPC_SECRET`;
        /// never serialised, `Debug` does not show it.
        #[serde(skip)]
        secret: Option<std::sync::Arc<crate::security::auth::Secret>> = None,
        /// TLS files (flags --tls-cert, --tls-key).
        tls: TlsConfig = TlsConfig::default(),
    }
}

impl CoordinatorConfig {
    /// The admin API's address as the other members of a group and HTTP
    /// clients reach it: `admin_host:admin_port`, with this member's host
    /// from `members` when the admin API listens on every interface. None
    /// without an admin API, or with port 0 (known only once bound).
    pub fn advertised_admin(
        &self,
        members: &std::collections::BTreeMap<u64, crate::replica::Member>,
    ) -> Option<String> {
        let port = self.admin_port.filter(|p| *p > 0)?;
        let host = match self.admin_host.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() => {
                let me = &members.get(&self.node_id)?.addr;
                me.rsplit_once(':')?.0.to_string()
            }
            Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => self.admin_host.clone(),
        };
        Some(format!("{host}:{port}"))
    }

    /// The group's members from `peers` (empty for a single coordinator),
    /// checked: each entry well formed, ids unique, this member listed
    /// with this process's `port`.
    pub fn members(
        &self,
    ) -> Result<std::collections::BTreeMap<u64, crate::replica::Member>, ConfigError> {
        let mut members = std::collections::BTreeMap::new();
        for p in &self.peers {
            let (id, m) = crate::replica::parse_peer(p).map_err(|e| invalid("peers", p, e))?;
            if members.insert(id, m).is_some() {
                return Err(invalid(
                    "peers",
                    p,
                    format!("member id {id} appears twice; give every member its own id"),
                ));
            }
        }
        if members.is_empty() {
            return Ok(members);
        }
        let Some(me) = members.get(&self.node_id) else {
            return Err(invalid(
                "node_id",
                self.node_id,
                format!(
                    "one of the ids in `peers` ({}): the entry of this member",
                    members
                        .keys()
                        .map(|k| k.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let port = me.addr.rsplit_once(':').map_or("", |p| p.1);
        if port != self.port.to_string() {
            return Err(invalid(
                "port",
                self.port,
                format!(
                    "the port of member {} in `peers` ({}): clients and participants are sent there",
                    self.node_id, me.addr
                ),
            ));
        }
        Ok(members)
    }

    /// Defaults < file < env < flags (clap already merged env under flags).
    pub fn load(args: &super::CoordinatorArgs) -> Result<CoordinatorConfig, ConfigError> {
        let mut c = args.merged()?;
        c.secret = args.tls.apply(c.secret_file.as_deref(), &mut c.tls)?;
        c.validate()?;
        Ok(c)
    }

    /// Each key's rule, then the rules that relate keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_keys("")?;
        let members = self.members()?;
        let mut binds = vec![("host", self.host.as_str())];
        let raft_hosts: Vec<String> = members
            .values()
            .map(|m| m.raft_addr.rsplit_once(':').map_or("", |h| h.0).to_string())
            .collect();
        for h in &raft_hosts {
            binds.push(("peers", h.as_str()));
        }
        if self.admin_port.is_some() {
            binds.push(("admin_host", self.admin_host.as_str()));
        }
        crate::security::check_server_setup(self.secret.as_deref(), &binds, None, self.insecure)
            .map_err(ConfigError::Unsafe)?;
        if let Some(ca) = &self.tls.ca_file {
            return Err(invalid(
                "tls.ca_file",
                ca.display(),
                "only for participants and clients; the coordinator serves TLS with tls.cert_file and tls.key_file",
            ));
        }
        range(
            "resend_max_ms",
            self.resend_max_ms,
            self.resend_initial_ms,
            HOUR_MS,
        )?;
        if self.admin_port.is_some_and(|a| a != 0 && a == self.port) {
            return Err(invalid(
                "admin_port",
                self.port,
                "a port different from `port` (the HTTP admin API has its own port), or 0 for any free port",
            ));
        }
        super::send_buffer(self.send_buffer_max_bytes, self.max_frame_bytes)?;
        if self.raft_heartbeat_ms * 2 > self.raft_election_timeout_ms {
            return Err(invalid(
                "raft_heartbeat_ms",
                self.raft_heartbeat_ms,
                format!(
                    "at most half of raft_election_timeout_ms ({}), or followers stand for election between heartbeats",
                    self.raft_election_timeout_ms
                ),
            ));
        }
        if self.raft_commit_hold_ms > self.raft_heartbeat_ms {
            return Err(invalid(
                "raft_commit_hold_ms",
                self.raft_commit_hold_ms,
                format!(
                    "at most raft_heartbeat_ms ({}); a heartbeat tells followers the commit index anyway",
                    self.raft_heartbeat_ms
                ),
            ));
        }
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
        Ok(())
    }
}

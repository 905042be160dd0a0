//! The nested sections of a role's configuration: `wal:`, `kv:` and
//! `postgres:`.

use super::keys::{invalid, settings, Rule};
use super::{ConfigError, ResourceKind};
use std::path::PathBuf;

settings! {
    /// Write-ahead log settings (YAML `wal:` inside a role's section).
    #[derive(Clone, Debug)]
    pub struct WalConfig {
        /// Bytes; a segment past this size is checkpointed into a new one.
        segment_max_bytes: u64 = 64 * 1024 * 1024, Rule::Range(4096, 1 << 40);
        /// Benchmarks only: skip fsync, so a machine crash can lose decisions.
        #[flag = "unsafe-no-fsync"]
        unsafe_no_fsync: bool = false, Rule::Any;
    }
}

settings! {
    /// Settings of the `kv` resource (YAML `kv:` in the participant section).
    #[derive(Clone, Debug)]
    pub struct KvConfig {
        /// JSON object loaded into the store at the first start of an empty
        /// data directory (ignored afterwards: the log holds the data).
        seed_file: Option<PathBuf> = None, Rule::Any;
    }
}

settings! {
    /// Settings of the `postgres` resource (YAML `postgres:` in the
    /// participant section). `Debug` leaves the connection string out: it
    /// may hold a password.
    #[derive(Clone)]
    pub struct PostgresConfig {
        /// libpq connection string, key=value (`host=127.0.0.1 port=5432
        /// user=app dbname=app`) or URL (`postgres://app@127.0.0.1:5432/app`).
        /// Required with `resource: postgres`; never logged or echoed.
        #[hide_env = true]
        dsn: Option<String> = None, Rule::Any;
        /// Accept raw SQL operations (`{"sql": .., "params": [..]}`); for
        /// trusted clients only, so off by default.
        allow_raw_sql: bool = false, Rule::Any;
        /// Connections to the database at most. Prepares may hold all but one,
        /// which stays free for COMMIT/ROLLBACK PREPARED: applying a decision
        /// releases the locks that waiting prepares need.
        max_connections: usize = 8, Rule::Range(2, 1000);
        /// Milliseconds to open a connection, and to wait for a free one.
        connect_timeout_ms: u64 = 5_000, Rule::Range(100, 600_000);
        /// PEM CA certificate(s) the database server's certificate must chain
        /// to; with it TLS connections check the certificate and host name
        /// (see `resource::postgres_tls` for each `sslmode`).
        ca_file: Option<PathBuf> = None, Rule::Any;
        /// File holding the database password (one line), used when the
        /// connection string has none; else `TWOPC_POSTGRES_PASSWORD`, else
        /// `PGPASSWORD`. Keeps the password out of `ps`.
        password_file: Option<PathBuf> = None, Rule::Any;
        /// Schemas table operations may use (comma-separated as a flag);
        /// empty means the schemas on the connection's search path.
        /// `pg_catalog`, `information_schema` and `pg_toast` are always refused.
        allowed_schemas: Vec<String> = Vec::new(), Rule::Any;
    }
}

impl std::fmt::Debug for PostgresConfig {
    /// As the resource's settings: the connection string is not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.settings().fmt(f)
    }
}

impl PostgresConfig {
    /// What the resource runs with.
    pub fn settings(&self) -> crate::resource::postgres::PostgresSettings {
        crate::resource::postgres::PostgresSettings {
            dsn: self.dsn.clone(),
            allow_raw_sql: self.allow_raw_sql,
            max_connections: self.max_connections,
            connect_timeout_ms: self.connect_timeout_ms,
            ca_file: self.ca_file.clone(),
            password_file: self.password_file.clone(),
            allowed_schemas: self.allowed_schemas.clone(),
        }
    }

    /// A parseable `dsn` exactly when the resource is `postgres`, and
    /// allowed schemas only of the user's own. The dsn is never echoed: it
    /// may hold a password.
    pub(super) fn validate(&self, resource: ResourceKind) -> Result<(), ConfigError> {
        const KEY: &str = "postgres.dsn";
        let dsn = self.dsn.as_deref().filter(|d| !d.trim().is_empty());
        match (dsn, resource == ResourceKind::Postgres) {
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
                    .map_err(|e| invalid(KEY, "(not shown: it may hold a password)", e.to_string()))?;
            }
            (None, false) => {}
        }
        for s in &self.allowed_schemas {
            if crate::resource::postgres::SCHEMAS_NEVER.contains(&s.as_str()) || s.is_empty() {
                return Err(invalid(
                    "postgres.allowed_schemas",
                    s,
                    "a schema of your tables; pg_catalog, information_schema and pg_toast are never allowed",
                ));
            }
        }
        Ok(())
    }
}

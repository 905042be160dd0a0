//! `postgres`: PostgreSQL as the participant's resource manager, through the
//! database's own two-phase commit. Prepare runs a transaction's operations
//! in a database transaction and ends it with `PREPARE TRANSACTION`, which
//! makes it durable and keeps its locks; the decision is applied with
//! `COMMIT PREPARED` or `ROLLBACK PREPARED`.
//!
//! This module's one job is mapping prepare, finish and recover onto those
//! statements. It must never put a value into SQL text (values are bound
//! parameters; identifiers are validated, then quoted), and it must never
//! leave a transaction prepared for good: at start, `recover` applies every
//! decision the log holds to this participant's prepared transactions, and
//! rolls back those the log has never heard of (they were never voted
//! commit). Commits decided but not yet applied go into every checkpoint's
//! snapshot, so that trimming the log cannot turn them into rollbacks.
//!
//! Global transaction ids are `twopc:<participant>:<transaction>`: several
//! participants can share one database, and prepared transactions of anyone
//! else are never touched.
//!
//! Operations (JSON, the data's `{"operations": [..]}`, which must hold at
//! least one; anything else votes abort with `invalid_payload: ...`):
//! - `{"table": "accounts", "operation": "insert", "values": {"id": 1}}`;
//! - `{"table": "s.t", "operation": "update", "values": {..}, "where": {..}}`;
//! - `{"table": "s.t", "operation": "delete", "where": {..}}`;
//! - only with `postgres.allow_raw_sql`: `{"sql": "...", "params": [..]}`.
//!
//! `where` matches columns for equality (`null` matches `IS NULL`) and may not
//! be empty. Identifiers are quoted, so they are case-sensitive. Values go to
//! the server in PostgreSQL's text format and are parsed there as the
//! column's type: a JSON string, number or bool fits any column whose type
//! accepts its text, objects and arrays fit `json`/`jsonb` columns.

use super::postgres_tls::{effective_verify, split_verify_mode, PgTlsError, RustlsConnect};
use super::{FinishResult, PayloadError, PrepareResult, RecoverError, Resource, ResourceError};
use crate::net::Backoff;
use crate::protocol::bound;
use crate::protocol::participant::Prepared;
use crate::protocol::{Decision, Heuristic, HeuristicKind, ParticipantId, Record, TxnId};
use bytes::BytesMut;
use futures::future::{ready, BoxFuture, FutureExt, Shared};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, Format, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// What the `postgres` resource runs with. The configuration (`config`'s
/// `postgres:` section, where each key is declared with its default, flag
/// and range) hands it over with `PostgresConfig::settings`. `Debug` leaves
/// the connection string out: it may hold a password.
#[derive(Clone, Default)]
pub struct PostgresSettings {
    /// libpq connection string or URL; never logged or echoed.
    pub dsn: Option<String>,
    /// Accept raw SQL operations (trusted clients only).
    pub allow_raw_sql: bool,
    /// Connections to the database at most. Prepares may hold all but one,
    /// which stays free for COMMIT/ROLLBACK PREPARED: applying a decision
    /// releases the locks that waiting prepares need.
    pub max_connections: usize,
    /// Milliseconds to open a connection, and to wait for a free one.
    pub connect_timeout_ms: u64,
    /// PEM CA certificate(s) the server's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// File holding the database password, when the connection string has none.
    pub password_file: Option<PathBuf>,
    /// Schemas table operations may use; empty: the search path.
    pub allowed_schemas: Vec<String>,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("dsn", &self.dsn.as_ref().map(|_| "(set, not shown)"))
            .field("allow_raw_sql", &self.allow_raw_sql)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("ca_file", &self.ca_file)
            .field("password_file", &self.password_file)
            .field("allowed_schemas", &self.allowed_schemas)
            .finish()
    }
}

/// Longest database error text kept, in bytes (see [`describe`]).
pub const DB_TEXT_MAX_BYTES: usize = 192;
/// Schemas table operations never touch, whatever the settings say.
pub const SCHEMAS_NEVER: &[&str] = &["pg_catalog", "information_schema", "pg_toast"];

/// Most operations in one transaction.
pub const OPS_MAX: usize = 1_000;
/// Most columns named by one operation (PostgreSQL allows 1600 per table).
pub const COLUMNS_MAX: usize = 1_600;
/// Most parameters of one raw SQL operation (the protocol allows 65535).
pub const PARAMS_MAX: usize = 65_535;
/// PostgreSQL refuses global transaction ids of 200 bytes or more.
pub const GID_MAX_BYTES: usize = 199;
/// Delays between attempts to apply a decision the database did not take.
const RETRY: Backoff = Backoff {
    initial_ms: 100,
    max_ms: 5_000,
};
/// The value of a gid in a snapshot: its commit is decided, not yet applied.
const COMMITTING: &str = "commit";
/// Attempts per prepared transaction that recovery makes before it fails.
const RECOVERY_ATTEMPTS_MAX: u32 = 5;
/// First words of raw SQL that would end or nest the operations' transaction.
const TRANSACTION_CONTROL: &[&str] = &[
    "abort",
    "begin",
    "commit",
    "end",
    "prepare",
    "release",
    "rollback",
    "savepoint",
    "start",
];

/// Parse a connection string (libpq key=value or `postgres://` URL). The
/// error never repeats the string: it may hold a password.
pub fn parse_dsn(dsn: &str) -> Result<tokio_postgres::Config, DsnError> {
    let config: tokio_postgres::Config = dsn
        .parse()
        .map_err(|e| DsnError::Unparsable(describe(&e)))?;
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        return Err(DsnError::NoHost);
    }
    Ok(config)
}

/// Why a connection string was refused. Neither variant repeats the
/// string, which may hold a password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DsnError {
    /// `tokio-postgres` cannot parse it; holds its description of why.
    #[error("not a valid connection string ({0}); use libpq key=value pairs or a postgres:// URL")]
    Unparsable(String),
    /// It parses but names no host to connect to.
    #[error("the connection string names no host: add host=... (or a host in the URL)")]
    NoHost,
}

/// Why [`PostgresResource::new`] refused its settings: the participant does
/// not start; fix the setting the text names.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("postgres.dsn is required with resource: postgres")]
    NoDsn,
    #[error("postgres.dsn: {0}")]
    Dsn(#[source] DsnError),
    #[error("postgres.password_file = {}: cannot read it: {source}", path.display())]
    PasswordFileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("postgres.password_file = {}: empty", path.display())]
    PasswordFileEmpty { path: PathBuf },
    #[error(transparent)]
    Tls(#[from] PgTlsError),
}

/// `user@host:port/dbname` of a connection string: enough to find the
/// database, never the password.
pub fn describe_target(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .chain(config.get_hostaddrs().iter().map(|a| a.to_string()))
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "{}@{}:{}/{}",
        config.get_user().unwrap_or("(os user)"),
        hosts.join(","),
        if ports.is_empty() {
            "5432".into()
        } else {
            ports.join(",")
        },
        config.get_dbname().unwrap_or("(default database)")
    )
}

/// A database error as its message, SQLSTATE, detail and hint; any other
/// error with its cause.
///
/// The server's message and detail can quote the data (a key that already
/// exists, a value that does not parse): the text is cut to
/// [`DB_TEXT_MAX_BYTES`] so that a large value is never copied into
/// reasons and logs.
fn describe(e: &tokio_postgres::Error) -> String {
    bound::truncate(&describe_whole(e), DB_TEXT_MAX_BYTES)
}

fn describe_whole(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            s.push_str(": ");
            s.push_str(detail);
        }
        if let Some(hint) = db.hint() {
            s.push_str(" hint: ");
            s.push_str(hint);
        }
        return s;
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// The prefix of every global transaction id of `participant`.
pub fn gid_prefix(participant: &ParticipantId) -> String {
    format!("twopc:{participant}:")
}

/// The global transaction id of `txn` at `participant`, or `None` when the
/// ids hold characters that must not go into SQL text, or are too long.
pub fn gid_for(participant: &ParticipantId, txn: &TxnId) -> Option<String> {
    let safe = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
    };
    let gid = format!("{}{}", gid_prefix(participant), txn.0);
    (safe(&participant.0) && safe(&txn.0) && gid.len() <= GID_MAX_BYTES).then_some(gid)
}

/// A JSON value bound as a parameter in PostgreSQL's text format; the server
/// parses it as the type the statement needs there.
#[derive(Clone, Debug, PartialEq)]
pub struct Param(pub Value);

impl ToSql for Param {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Value::Null => return Ok(IsNull::Yes),
            Value::String(s) => out.extend_from_slice(s.as_bytes()),
            other => out.extend_from_slice(other.to_string().as_bytes()),
        }
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// One statement of a transaction, built from one operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    /// What the operation does, for reasons (`insert into "accounts"`).
    pub what: String,
    pub sql: String,
    pub params: Vec<Param>,
    pub raw: bool,
    /// The quoted table name of a table operation, whose schema is checked
    /// against the allowed ones before the statement runs.
    pub table: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Insert,
    Update,
    Delete,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableOp {
    table: String,
    operation: Kind,
    #[serde(default)]
    values: Option<Map<String, Value>>,
    #[serde(default, rename = "where")]
    filter: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOp {
    sql: String,
    #[serde(default)]
    params: Vec<Value>,
}

/// The statements for a PREPARE's data: exactly `{"operations": [..]}`
/// with at least one operation (see [`super::operations_of`]). `Err` is the
/// reason of an abort vote: `invalid_payload: ...` or `raw_sql_disabled:
/// ...`.
pub fn plan(data: &Value, allow_raw_sql: bool) -> Result<Vec<Statement>, PlanError> {
    super::operations_of(data, OPS_MAX)?
        .iter()
        .enumerate()
        .map(|(i, op)| statement(i, op, allow_raw_sql))
        .collect()
}

/// Why [`plan`] refused a PREPARE's data. The same data is refused again:
/// the client fixes its request (or the operator allows raw SQL). The text
/// is an abort vote's reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The data is not `{"operations": [...]}` with a bounded, non-empty list.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// Operation `index` (from 0) is not a valid table or raw SQL operation;
    /// `why` names the field at fault and the shape wanted.
    #[error("invalid_payload: operation {index}: {why}")]
    Operation { index: usize, why: String },
    /// Operation `index` is raw SQL and `postgres.allow_raw_sql` is off.
    #[error(
        "raw_sql_disabled: operation {index} is raw SQL, which this participant refuses; \
         use table operations, or set postgres.allow_raw_sql: true \
         (flag --postgres-allow-raw-sql) for trusted clients"
    )]
    RawSqlDisabled { index: usize },
}

/// One operation's statement. The helpers below it say what is wrong in a
/// sentence: the only use of that text is [`PlanError::Operation`]'s `why`.
fn statement(index: usize, op: &Value, allow_raw_sql: bool) -> Result<Statement, PlanError> {
    let invalid = |why: String| PlanError::Operation { index, why };
    let Some(obj) = op.as_object() else {
        return Err(invalid("must be an object".into()));
    };
    if obj.contains_key("sql") {
        if !allow_raw_sql {
            return Err(PlanError::RawSqlDisabled { index });
        }
        let raw: RawOp = serde_json::from_value(op.clone()).map_err(|e| invalid(e.to_string()))?;
        return raw_statement(raw).map_err(invalid);
    }
    let op: TableOp = serde_json::from_value(op.clone()).map_err(|e| invalid(e.to_string()))?;
    table_statement(op).map_err(invalid)
}

fn raw_statement(raw: RawOp) -> Result<Statement, String> {
    let first = raw
        .sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if TRANSACTION_CONTROL.contains(&first.as_str()) {
        return Err(format!(
            "raw SQL may not control the transaction (`{first}`): the participant begins, \
             prepares and finishes it"
        ));
    }
    if raw.params.len() > PARAMS_MAX {
        return Err(format!("more than {PARAMS_MAX} params"));
    }
    Ok(Statement {
        what: "raw SQL".into(),
        sql: raw.sql,
        params: raw.params.into_iter().map(Param).collect(),
        raw: true,
        table: None,
    })
}

fn table_statement(op: TableOp) -> Result<Statement, String> {
    let table = table_name(&op.table)?;
    let values = op.values.filter(|v| !v.is_empty());
    let filter = op.filter.filter(|f| !f.is_empty());
    let named = values.as_ref().map_or(0, Map::len) + filter.as_ref().map_or(0, Map::len);
    if named > COLUMNS_MAX {
        return Err(format!("{named} columns, more than {COLUMNS_MAX}"));
    }
    let mut params = Vec::new();
    let (what, sql) =
        match (op.operation, values, filter) {
            (Kind::Insert, Some(values), None) => {
                let mut cols = Vec::new();
                let mut slots = Vec::new();
                for (col, v) in values {
                    cols.push(ident(&col)?);
                    params.push(Param(v));
                    slots.push(format!("${}", params.len()));
                }
                (
                    format!("insert into {table}"),
                    format!(
                        "INSERT INTO {table} ({}) VALUES ({})",
                        cols.join(", "),
                        slots.join(", ")
                    ),
                )
            }
            (Kind::Update, Some(values), Some(filter)) => {
                let mut sets = Vec::new();
                for (col, v) in values {
                    params.push(Param(v));
                    sets.push(format!("{} = ${}", ident(&col)?, params.len()));
                }
                let cond = conditions(filter, &mut params)?;
                (
                    format!("update {table}"),
                    format!("UPDATE {table} SET {} WHERE {cond}", sets.join(", ")),
                )
            }
            (Kind::Delete, None, Some(filter)) => {
                let cond = conditions(filter, &mut params)?;
                (
                    format!("delete from {table}"),
                    format!("DELETE FROM {table} WHERE {cond}"),
                )
            }
            (Kind::Insert, None, _) | (Kind::Update, None, _) => {
                return Err("needs `values`: a non-empty object of column: value".into())
            }
            (Kind::Insert, Some(_), Some(_)) => return Err("an insert takes no `where`".into()),
            (Kind::Update, Some(_), None) | (Kind::Delete, None, None) => return Err(
                "needs `where`: a non-empty object of column: value (raw SQL can touch every row)"
                    .into(),
            ),
            (Kind::Delete, Some(_), _) => return Err("a delete takes no `values`".into()),
        };
    Ok(Statement {
        what,
        sql,
        params,
        raw: false,
        table: Some(table),
    })
}

/// `"a" = $1 AND "b" IS NULL`, binding the non-null values.
fn conditions(filter: Map<String, Value>, params: &mut Vec<Param>) -> Result<String, String> {
    let mut parts = Vec::new();
    for (col, v) in filter {
        let col = ident(&col)?;
        if v.is_null() {
            parts.push(format!("{col} IS NULL"));
        } else {
            params.push(Param(v));
            parts.push(format!("{col} = ${}", params.len()));
        }
    }
    Ok(parts.join(" AND "))
}

/// A validated identifier, quoted.
fn ident(s: &str) -> Result<String, String> {
    let mut bytes = s.bytes();
    let ok = s.len() <= 63
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(format!("\"{s}\""))
    } else {
        let shown: String = s.chars().take(64).collect();
        Err(format!(
            "`{shown}` is not a valid identifier: use 1-63 of A-Z a-z 0-9 _, not starting with a digit"
        ))
    }
}

/// `table` or `schema.table`, validated and quoted.
fn table_name(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 2 {
        let shown: String = s.chars().take(128).collect();
        return Err(format!(
            "`{shown}` is not a valid table name: use `table` or `schema.table`"
        ));
    }
    let quoted: Result<Vec<String>, String> = parts.into_iter().map(ident).collect();
    Ok(quoted?.join("."))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a connection is wanted for: prepares may not take the last one.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Use {
    Prepare,
    Finish,
}

/// A bounded set of connections to one database. A connection goes back to
/// the pool only through [`Conn::release`], called where it is known to be
/// idle and clean; any other drop closes it, so a connection left inside a
/// transaction by an error is never handed out again (the server rolls such
/// a transaction back when the connection closes).
struct Pool {
    config: tokio_postgres::Config,
    /// TLS for every mode but `sslmode=disable`.
    tls: Option<RustlsConnect>,
    /// Where the pool connects, for messages (no password).
    target: String,
    max_connections: usize,
    connect_timeout: Duration,
    /// One permit per connection in use.
    all: Arc<Semaphore>,
    /// `max_connections - 1` permits: one connection always remains for
    /// COMMIT/ROLLBACK PREPARED, which release the locks that prepares
    /// blocked on a row may be waiting for.
    prepares: Arc<Semaphore>,
    idle: Mutex<Vec<Client>>,
}

/// A connection taken from the pool; closed when dropped unless released.
struct Conn<'a> {
    client: Client,
    pool: &'a Pool,
    _permits: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
}

impl Conn<'_> {
    /// The connection is idle and clean: keep it for the next user.
    fn release(self) {
        let Conn { client, pool, .. } = self;
        if !client.is_closed() {
            lock(&pool.idle).push(client);
        }
    }
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Pool {
    fn new(
        mut config: tokio_postgres::Config,
        tls: Option<RustlsConnect>,
        max_connections: usize,
        connect_timeout: Duration,
    ) -> Pool {
        config.connect_timeout(connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("twopc-participant");
        }
        Pool {
            target: describe_target(&config),
            config,
            tls,
            max_connections,
            connect_timeout,
            all: Arc::new(Semaphore::new(max_connections)),
            prepares: Arc::new(Semaphore::new(max_connections.saturating_sub(1).max(1))),
            idle: Mutex::new(Vec::new()),
        }
    }

    async fn get(&self, purpose: Use) -> Result<Conn<'_>, String> {
        let busy = || {
            format!(
                "all {} connections to PostgreSQL at {} stayed busy for {} ms; raise postgres.max_connections",
                self.max_connections,
                self.target,
                self.connect_timeout.as_millis()
            )
        };
        let acquire = |sem: &Arc<Semaphore>| {
            tokio::time::timeout(self.connect_timeout, sem.clone().acquire_owned())
        };
        let prepare_permit = match purpose {
            Use::Prepare => Some(
                acquire(&self.prepares)
                    .await
                    .map_err(|_| busy())?
                    .map_err(|_| busy())?,
            ),
            Use::Finish => None,
        };
        let permit = acquire(&self.all)
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let reused = {
            let mut idle = lock(&self.idle);
            idle.retain(|c| !c.is_closed());
            idle.pop()
        };
        let client = match reused {
            Some(c) => c,
            None => self.connect().await?,
        };
        Ok(Conn {
            client,
            pool: self,
            _permits: (permit, prepare_permit),
        })
    }

    async fn connect(&self) -> Result<Client, String> {
        let timed_out = || {
            format!(
                "cannot connect to PostgreSQL at {}: no answer within {} ms (postgres.connect_timeout_ms)",
                self.target,
                self.connect_timeout.as_millis()
            )
        };
        let failed = |e: tokio_postgres::Error| {
            format!(
                "cannot connect to PostgreSQL at {}: {}",
                self.target,
                describe(&e)
            )
        };
        let target = self.target.clone();
        let ended = move |r: Result<(), tokio_postgres::Error>| {
            if let Err(e) = r {
                tracing::warn!(
                    "connection to PostgreSQL at {target} ended: {}",
                    describe(&e)
                );
            }
        };
        // The connection's future differs in type with and without TLS:
        // each is spawned in its own arm.
        let client = match &self.tls {
            None => {
                let (client, connection) =
                    tokio::time::timeout(self.connect_timeout, self.config.connect(NoTls))
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(failed)?;
                tokio::spawn(async move { ended(connection.await) });
                client
            }
            Some(tls) => {
                let (client, connection) =
                    tokio::time::timeout(self.connect_timeout, self.config.connect(tls.clone()))
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(failed)?;
                tokio::spawn(async move { ended(connection.await) });
                client
            }
        };
        Ok(client)
    }

    /// Close every idle connection (after one turned out dead, the others
    /// probably are too: the server restarted).
    fn discard_idle(&self) {
        lock(&self.idle).clear();
    }

    fn status(&self) -> Value {
        let in_use = self.max_connections - self.all.available_permits();
        let idle = lock(&self.idle).len();
        json!({"open": in_use + idle, "in_use": in_use, "max": self.max_connections})
    }
}

/// The first column of the first row a simple query returns.
async fn first_value(client: &Client, sql: &str) -> Result<Option<String>, tokio_postgres::Error> {
    for m in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(row) = m {
            return Ok(row.get(0).map(str::to_string));
        }
    }
    Ok(None)
}

/// Why one attempt to apply a decision did not succeed.
#[derive(Debug, PartialEq)]
enum Failure {
    /// Try again later (the database is unreachable, the transaction busy).
    Retry(String),
    /// Trying again cannot help: the prepared transaction is gone, and the
    /// database holds the opposite outcome or cannot say which it holds.
    Heuristic(Heuristic),
}

/// What the participant's log says about one of its transactions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Logged {
    decision: Option<Decision>,
    /// The database transaction id, from the `Prepared` record's state.
    xid: Option<i64>,
}

/// This participant's transactions as its log knows them, by gid.
fn logged(participant: &ParticipantId, log: &[Record]) -> HashMap<String, Logged> {
    let mut view: HashMap<String, Logged> = HashMap::new();
    for r in log {
        match r {
            Record::Prepared { txn, state, .. } => {
                if let Some(gid) = gid_for(participant, txn) {
                    view.entry(gid).or_default().xid = state.get("xid").and_then(Value::as_i64);
                }
            }
            Record::Decided { txn, decision, .. } => {
                if let Some(gid) = gid_for(participant, txn) {
                    view.entry(gid).or_default().decision = Some(*decision);
                }
            }
            // Commits still being applied at a checkpoint (see `snapshot`):
            // their `Decided` record may not have been carried over.
            Record::Snapshot { state, .. } => {
                let committing = state.as_object().into_iter().flatten();
                for (gid, _) in committing.filter(|(_, d)| *d == COMMITTING) {
                    let entry = view.entry(gid.clone()).or_default();
                    entry.decision = entry.decision.or(Some(Decision::Commit));
                }
            }
            Record::Decision { .. }
            | Record::End { .. }
            | Record::Outcome { .. }
            | Record::Joined { .. }
            | Record::Removed { .. }
            | Record::Term { .. }
            | Record::Heuristic { .. } => {}
        }
    }
    view
}

/// What recovery does with a prepared transaction found in the database.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Recovery {
    /// The log holds the decision: apply it now.
    Apply(Decision),
    /// Prepared and logged, no decision yet: keep it; the participant asks
    /// the coordinator and finishes it later.
    Keep,
    /// Not in the log at all: the process died between PREPARE TRANSACTION
    /// and logging its vote, so it never voted commit. Roll it back.
    RollBackUnlogged,
}

fn recovery_steps(found: &[String], view: &HashMap<String, Logged>) -> Vec<(String, Recovery)> {
    found
        .iter()
        .map(|gid| {
            let step = match view.get(gid).map(|l| l.decision) {
                Some(Some(d)) => Recovery::Apply(d),
                Some(None) => Recovery::Keep,
                None => Recovery::RollBackUnlogged,
            };
            (gid.clone(), step)
        })
        .collect()
}

/// One attempt to apply a decision, which every `finish` for its gid joins.
type FinishFuture = Shared<BoxFuture<'static, FinishResult>>;

/// The state shared by the resource and the futures it returns.
struct Inner {
    participant: ParticipantId,
    allow_raw_sql: bool,
    /// Schemas table operations may use; empty means those on the
    /// connection's search path. [`SCHEMAS_NEVER`] are refused either way.
    allowed_schemas: Vec<String>,
    pool: Pool,
    /// Transactions that may be prepared in the database and whose decision
    /// this process has yet to apply: gid → database transaction id (when
    /// known), which lets a finish check what became of a vanished gid.
    held: Mutex<HashMap<String, Option<i64>>>,
    /// Finishes under way, by gid, with their decision: a repeated `finish`
    /// joins the attempt in progress instead of racing it.
    finishing: Mutex<HashMap<String, (Decision, FinishFuture)>>,
}

/// The resource. See the module documentation.
pub struct PostgresResource {
    inner: Arc<Inner>,
}

impl PostgresResource {
    /// A resource for `participant` with `cfg`. Connects lazily: the first
    /// connection is made by `recover`, inside the runtime.
    pub fn new(
        participant: &ParticipantId,
        cfg: &PostgresSettings,
    ) -> Result<PostgresResource, SetupError> {
        let dsn = cfg.dsn.as_deref().ok_or(SetupError::NoDsn)?;
        let (dsn, verify) = split_verify_mode(dsn);
        let mut config = parse_dsn(&dsn).map_err(SetupError::Dsn)?;
        if config.get_password().is_some() {
            tracing::warn!(
                "postgres.dsn holds a password: given as a flag it shows in `ps` to every user; \
                 use postgres.password_file or TWOPC_POSTGRES_PASSWORD instead"
            );
        } else if let Some(password) = password(cfg)? {
            config.password(password);
        }
        let tls = match config.get_ssl_mode() {
            SslMode::Disable => None,
            _ => {
                let verify =
                    effective_verify(verify, cfg.ca_file.as_deref()).map_err(PgTlsError::from)?;
                if verify == super::postgres_tls::Verify::None {
                    tracing::info!(
                        "TLS to PostgreSQL without postgres.ca_file: encrypted, but the server's \
                         certificate is not checked; set postgres.ca_file to check it"
                    );
                }
                Some(RustlsConnect::new(verify, cfg.ca_file.as_deref())?)
            }
        };
        let pool = Pool::new(
            config,
            tls,
            cfg.max_connections.max(2),
            Duration::from_millis(cfg.connect_timeout_ms),
        );
        Ok(PostgresResource {
            inner: Arc::new(Inner {
                participant: participant.clone(),
                allow_raw_sql: cfg.allow_raw_sql,
                allowed_schemas: cfg.allowed_schemas.clone(),
                pool,
                held: Mutex::new(HashMap::new()),
                finishing: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// The database password from `postgres.password_file`, else from
/// `TWOPC_POSTGRES_PASSWORD`, else from `PGPASSWORD`: never on the command
/// line. A file's trailing newline is not part of the password.
fn password(cfg: &PostgresSettings) -> Result<Option<String>, SetupError> {
    if let Some(path) = &cfg.password_file {
        let text =
            std::fs::read_to_string(path).map_err(|source| SetupError::PasswordFileUnreadable {
                path: path.clone(),
                source,
            })?;
        let p = text.strip_suffix('\n').unwrap_or(&text);
        let p = p.strip_suffix('\r').unwrap_or(p);
        if p.is_empty() {
            return Err(SetupError::PasswordFileEmpty { path: path.clone() });
        }
        return Ok(Some(p.to_string()));
    }
    Ok(["TWOPC_POSTGRES_PASSWORD", "PGPASSWORD"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty())))
}

/// Which schema `table` (quoted, as in the statement) resolves to on this
/// connection, and whether that schema is on the search path; `None` when
/// there is no such table (the statement then fails on its own).
const SCHEMA_OF_TABLE: &str = "SELECT n.nspname::text, n.nspname = ANY(current_schemas(false)) \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.oid = pg_catalog.to_regclass($1)";

impl Inner {
    /// `Err(reason)` when a table operation targets a schema it may not:
    /// one of [`SCHEMAS_NEVER`], or one outside `allowed_schemas` (outside
    /// the search path when that is empty). Runs in the transaction, so
    /// that the name resolves as the statement's will.
    async fn check_schemas(&self, conn: &Client, statements: &[Statement]) -> Result<(), String> {
        let mut seen: Vec<&str> = Vec::new();
        for (i, s) in statements.iter().enumerate() {
            let Some(table) = s.table.as_deref() else {
                continue;
            };
            if seen.contains(&table) {
                continue;
            }
            seen.push(table);
            let row = conn
                .query_opt(SCHEMA_OF_TABLE, &[&table])
                .await
                .map_err(|e| {
                    format!(
                        "database_error: operation {i} ({}): {}",
                        s.what,
                        describe(&e)
                    )
                })?;
            let Some(row) = row else { continue };
            let schema: String = row.get(0);
            let on_path: bool = row.get(1);
            let allowed = !SCHEMAS_NEVER.contains(&schema.as_str())
                && if self.allowed_schemas.is_empty() {
                    on_path
                } else {
                    self.allowed_schemas.contains(&schema)
                };
            if !allowed {
                let may = if self.allowed_schemas.is_empty() {
                    "the schemas on the connection's search_path".to_string()
                } else {
                    self.allowed_schemas.join(", ")
                };
                return Err(bound::reason_owned(format!(
                    "schema_not_allowed: operation {i} ({}) is in schema `{}`; table operations \
                     may use {may} (postgres.allowed_schemas), never {}",
                    s.what,
                    bound::truncate(&schema, 64),
                    SCHEMAS_NEVER.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// BEGIN, run `statements`, PREPARE TRANSACTION `gid`.
    async fn prepare(&self, gid: String, statements: Vec<Statement>) -> PrepareResult {
        let unavailable =
            |e: String| ResourceError::Unavailable(format!("database_unavailable: {e}"));
        let mut conn = self.pool.get(Use::Prepare).await.map_err(unavailable)?;
        let begin = "BEGIN; SELECT txid_current()";
        let xid = match first_value(&conn, begin).await {
            Ok(x) => x,
            Err(e) if e.as_db_error().is_none() => {
                // A pooled connection the server has closed: nothing ran
                // yet, so one more try on a new connection is safe.
                drop(conn);
                self.pool.discard_idle();
                conn = self.pool.get(Use::Prepare).await.map_err(unavailable)?;
                first_value(&conn, begin)
                    .await
                    .map_err(|e| unavailable(format!("BEGIN: {}", describe(&e))))?
            }
            Err(e) => {
                return Err(ResourceError::Conflict(format!(
                    "database_error: BEGIN: {}",
                    describe(&e)
                )))
            }
        };
        let xid: Option<i64> = xid.and_then(|x| x.parse().ok());
        if let Err(reason) = self.check_schemas(&conn, &statements).await {
            rollback(conn).await;
            return Err(ResourceError::Invalid(reason));
        }
        let mut rows = Vec::with_capacity(statements.len());
        for (i, s) in statements.iter().enumerate() {
            let params: Vec<&(dyn ToSql + Sync)> =
                s.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            match conn.execute(s.sql.as_str(), &params).await {
                Ok(n) => rows.push(n),
                Err(e) => {
                    let reason = format!(
                        "database_error: operation {i} ({}): {}",
                        s.what,
                        describe(&e)
                    );
                    rollback(conn).await;
                    return Err(ResourceError::Conflict(reason));
                }
            }
        }
        if statements.iter().any(|s| s.raw) {
            // Raw SQL must not have ended the transaction: its effects would
            // be committed already, whatever the decision.
            let now = first_value(&conn, "SELECT txid_current_if_assigned()").await;
            if now.ok().flatten().and_then(|x| x.parse::<i64>().ok()) != xid {
                return Err(ResourceError::Invalid(
                    "invalid_payload: raw SQL ended the database transaction; \
                            its effects are outside two-phase commit"
                        .into(),
                ));
            }
        }
        // From here on the gid may exist: an abort must look for it.
        lock(&self.held).insert(gid.clone(), xid);
        if let Err(e) = conn
            .batch_execute(&format!("PREPARE TRANSACTION '{gid}'"))
            .await
        {
            // A database error turns PREPARE TRANSACTION into a rollback and
            // leaves the connection idle; a lost connection leaves the
            // outcome unknown, and the abort that follows settles it.
            let reason = format!("database_error: PREPARE TRANSACTION: {}", describe(&e));
            if e.as_db_error().is_some() {
                conn.release();
                return Err(ResourceError::Conflict(reason));
            }
            return Err(ResourceError::Unavailable(reason));
        }
        // Raw SQL may have changed session settings (SET): such a
        // connection is closed rather than handed to the next transaction.
        if !statements.iter().any(|s| s.raw) {
            conn.release();
        }
        let output = (!rows.is_empty()).then(|| json!({ "rows_affected": rows }));
        Ok(Prepared {
            state: json!({ "gid": gid, "xid": xid }),
            output,
        })
    }

    /// Apply `decision` to `gid`, retrying with capped backoff until the
    /// database has taken it, or it is found gone and finished otherwise (a
    /// heuristic outcome, which the participant logs and reports).
    async fn finish(&self, gid: &str, xid: Option<i64>, decision: Decision) -> FinishResult {
        let mut attempt = 0u32;
        let result = loop {
            match self.finish_once(gid, xid, decision).await {
                Ok(()) => break Ok(()),
                Err(Failure::Heuristic(h)) => break Err(h),
                Err(Failure::Retry(e)) => {
                    let delay = RETRY.delay_ms(attempt);
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(
                        gid,
                        attempt,
                        "cannot apply {decision} yet: {e}; retrying in {delay} ms"
                    );
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
            }
        };
        lock(&self.held).remove(gid);
        result
    }

    async fn finish_once(
        &self,
        gid: &str,
        xid: Option<i64>,
        decision: Decision,
    ) -> Result<(), Failure> {
        let conn = self.pool.get(Use::Finish).await.map_err(Failure::Retry)?;
        let verb = match decision {
            Decision::Commit => "COMMIT PREPARED",
            Decision::Abort => "ROLLBACK PREPARED",
        };
        match conn.batch_execute(&format!("{verb} '{gid}'")).await {
            Ok(()) => {
                conn.release();
                tracing::debug!(gid, "{verb} done");
                Ok(())
            }
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
                let checked = verify_gone(&conn, gid, xid, decision).await;
                conn.release();
                let found = checked?;
                tracing::info!(gid, "{verb}: no longer prepared, finished earlier: {found}");
                Ok(())
            }
            Err(e) => {
                let reason = format!("{verb} '{gid}': {}", describe(&e));
                if e.as_db_error().is_some() {
                    conn.release();
                }
                Err(Failure::Retry(reason))
            }
        }
    }

    /// Apply `decision` during recovery: a few attempts (the transaction may
    /// still be busy in a backend of the previous process), then give up so
    /// that the operator sees why the participant does not start.
    async fn finish_at_start(
        &self,
        gid: &str,
        xid: Option<i64>,
        decision: Decision,
    ) -> Result<(), String> {
        let mut attempt = 0u32;
        loop {
            let e = match self.finish_once(gid, xid, decision).await {
                Ok(()) => return Ok(()),
                Err(Failure::Heuristic(h)) => h.detail,
                Err(Failure::Retry(e)) if attempt + 1 < RECOVERY_ATTEMPTS_MAX => {
                    let delay = RETRY.delay_ms(attempt);
                    attempt += 1;
                    tracing::warn!(
                        gid,
                        attempt,
                        "cannot apply the logged {decision} yet: {e}; retrying in {delay} ms"
                    );
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    continue;
                }
                Err(Failure::Retry(e)) => e,
            };
            return Err(format!(
                "PostgreSQL at {}: cannot apply the logged {decision} to prepared transaction `{gid}`: {e}",
                self.pool.target
            ));
        }
    }

    /// At start: refuse a server that cannot prepare, then settle every
    /// prepared transaction of this participant (see [`Recovery`]).
    async fn recover(&self, view: HashMap<String, Logged>) -> Result<(), String> {
        let target = &self.pool.target;
        let conn = self
            .pool
            .get(Use::Finish)
            .await
            .map_err(|e| format!("{e}; check postgres.dsn and that the server is running"))?;
        let setting = first_value(&conn, "SHOW max_prepared_transactions")
            .await
            .map_err(|e| {
                format!(
                    "PostgreSQL at {target}: SHOW max_prepared_transactions: {}",
                    describe(&e)
                )
            })?;
        let max_prepared: u64 = setting.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
        if max_prepared == 0 {
            return Err(format!(
                "PostgreSQL at {target} has max_prepared_transactions = 0, so it cannot prepare \
                 transactions: set max_prepared_transactions in postgresql.conf to a value > 0 \
                 (at least postgres.max_connections, {}) and restart the server; the setting \
                 takes effect only at server start",
                self.pool.max_connections
            ));
        }
        if max_prepared < self.pool.max_connections as u64 {
            tracing::warn!(
                "PostgreSQL at {target} allows {max_prepared} prepared transactions, fewer than postgres.max_connections ({}); prepares past it vote abort",
                self.pool.max_connections
            );
        }
        let prefix = gid_prefix(&self.participant);
        let rows = conn
            .query(
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY prepared",
                &[],
            )
            .await
            .map_err(|e| format!("PostgreSQL at {target}: listing pg_prepared_xacts: {}", describe(&e)))?;
        conn.release();
        let found: Vec<String> = rows
            .iter()
            .filter_map(|r| r.try_get::<_, String>(0).ok())
            .filter(|g| g.starts_with(&prefix))
            .collect();
        {
            let mut held = lock(&self.held);
            for (gid, l) in &view {
                if l.decision.is_none() {
                    held.insert(gid.clone(), l.xid);
                }
            }
        }
        let (mut applied, mut kept, mut rolled_back) = (0, 0, 0);
        for (gid, step) in recovery_steps(&found, &view) {
            let (decision, xid) = match step {
                Recovery::Keep => {
                    kept += 1;
                    continue;
                }
                Recovery::Apply(d) => {
                    applied += 1;
                    (d, view.get(&gid).and_then(|l| l.xid))
                }
                Recovery::RollBackUnlogged => {
                    rolled_back += 1;
                    tracing::warn!(gid, "rolling back a prepared transaction the log does not know: the process stopped before logging its vote, so it never voted commit");
                    (Decision::Abort, None)
                }
            };
            self.finish_at_start(&gid, xid, decision).await?;
        }
        tracing::info!(
            applied,
            kept,
            rolled_back,
            "PostgreSQL at {target}: prepared transactions of this participant settled (applied logged decisions, kept those in doubt, rolled back unlogged ones)"
        );
        Ok(())
    }
}

/// ROLLBACK (the connection goes back to the pool only if it worked).
async fn rollback(conn: Conn<'_>) {
    if conn.batch_execute("ROLLBACK").await.is_ok() {
        conn.release();
    }
}

/// `gid` is not prepared (COMMIT/ROLLBACK PREPARED said it does not exist):
/// check rather than assume that it was finished the way `decision` says.
/// `Ok` says what the check found.
async fn verify_gone(
    client: &Client,
    gid: &str,
    xid: Option<i64>,
    decision: Decision,
) -> Result<String, Failure> {
    let retry =
        |e: tokio_postgres::Error| Failure::Retry(format!("checking `{gid}`: {}", describe(&e)));
    let listed = client
        .query_opt(
            "SELECT database::text FROM pg_prepared_xacts WHERE gid = $1",
            &[&gid],
        )
        .await
        .map_err(retry)?;
    if let Some(row) = listed {
        let db: String = row.try_get(0).unwrap_or_default();
        return Err(Failure::Retry(format!(
            "`{gid}` is prepared in database `{db}`, not the one postgres.dsn names"
        )));
    }
    let status: Option<String> = match xid {
        Some(xid) => client
            .query_one("SELECT txid_status($1)", &[&xid])
            .await
            .map_err(retry)?
            .try_get(0)
            .unwrap_or(None),
        None => None,
    };
    gone(gid, xid, status.as_deref(), decision)
}

/// What became of `gid`, no longer prepared, given its database
/// transaction id `xid` (when known) and that transaction's `status` (as
/// `txid_status` says, `None` when too old to tell): finished as `decision`
/// says, still running, or a heuristic outcome.
fn gone(
    gid: &str,
    xid: Option<i64>,
    status: Option<&str>,
    decision: Decision,
) -> Result<String, Failure> {
    let Some(xid) = xid else {
        return match decision {
            // An abort of a transaction whose id is unknown: it never got
            // as far as PREPARE TRANSACTION (the usual case), or was rolled
            // back; either way nothing of it remains.
            Decision::Abort => {
                Ok("not in pg_prepared_xacts (no transaction id known to check further)".into())
            }
            Decision::Commit => Err(Failure::Heuristic(Heuristic::new(
                HeuristicKind::Hazard,
                format!(
                    "prepared transaction `{gid}` is gone from the database and its transaction id \
                     is unknown, so whether it was committed cannot be checked; look for its \
                     changes in the data"
                ),
            ))),
        };
    };
    match (status, decision) {
        (Some(s @ "committed"), Decision::Commit) | (Some(s @ "aborted"), Decision::Abort) => {
            Ok(format!("transaction {xid} is {s}"))
        }
        (Some("in progress"), _) => Err(Failure::Retry(format!(
            "transaction {xid} of `{gid}` is still in progress"
        ))),
        (None, _) => Err(Failure::Heuristic(Heuristic::new(
            HeuristicKind::Hazard,
            format!(
                "prepared transaction `{gid}` is gone from the database, and transaction {xid} \
                 is too old for the database to tell whether it was committed; look for its \
                 changes in the data"
            ),
        ))),
        (Some(other), _) => Err(Failure::Heuristic(Heuristic::new(
            HeuristicKind::Mixed,
            format!(
                "the database has {other} prepared transaction `{gid}` (transaction {xid}): \
                 someone finished it by hand (COMMIT/ROLLBACK PREPARED), not as decided"
            ),
        ))),
    }
}

impl Resource for PostgresResource {
    fn prepare(&mut self, txn: &TxnId, data: &Value) -> BoxFuture<'static, PrepareResult> {
        let Some(gid) = gid_for(&self.inner.participant, txn) else {
            return Box::pin(ready(Err(ResourceError::Invalid(format!(
                "invalid_transaction_id: `{txn}` cannot name a PostgreSQL prepared transaction \
                 (1-{GID_MAX_BYTES} bytes of A-Z a-z 0-9 _ . : - with the prefix)"
            )))));
        };
        let statements = match plan(data, self.inner.allow_raw_sql) {
            Ok(s) => s,
            Err(e) => return Box::pin(ready(Err(ResourceError::Invalid(e.to_string())))),
        };
        let inner = self.inner.clone();
        // Database errors are cut where they are described; the reason as a
        // whole is cut here.
        Box::pin(async move {
            inner
                .prepare(gid, statements)
                .await
                .map_err(|e| e.map_detail(bound::reason_owned))
        })
    }

    fn finish(&mut self, txn: &TxnId, decision: Decision) -> BoxFuture<'static, FinishResult> {
        // A transaction id that cannot be a gid was never prepared here.
        let Some(gid) = gid_for(&self.inner.participant, txn) else {
            return Box::pin(ready(Ok(())));
        };
        let xid = match lock(&self.inner.held).get(&gid) {
            Some(xid) => *xid,
            // Never reached PREPARE TRANSACTION, or already rolled back.
            None if decision == Decision::Abort => return Box::pin(ready(Ok(()))),
            // Check rather than assume: COMMIT PREPARED tells.
            None => None,
        };
        let mut finishing = lock(&self.inner.finishing);
        if let Some((_, running)) = finishing.get(&gid) {
            return Box::pin(running.clone());
        }
        let inner = self.inner.clone();
        let key = gid.clone();
        let fut = async move {
            let result = inner.finish(&gid, xid, decision).await;
            lock(&inner.finishing).remove(&gid);
            result
        }
        .boxed()
        .shared();
        finishing.insert(key, (decision, fut.clone()));
        Box::pin(fut)
    }

    /// Every failure here is the database's (unreachable, unable to
    /// prepare, refusing a logged decision): [`RecoverError::Store`].
    fn recover(&mut self, log: &[Record]) -> BoxFuture<'static, Result<(), RecoverError>> {
        let view = logged(&self.inner.participant, log);
        let inner = self.inner.clone();
        Box::pin(async move { inner.recover(view).await.map_err(RecoverError::Store) })
    }

    /// The commits decided but not yet applied, so that a checkpoint that
    /// drops their `Decided` records cannot make recovery roll them back:
    /// `{"<gid>": "commit", ..}`; `None` when there are none.
    fn snapshot(&self) -> Option<Value> {
        let committing: Map<String, Value> = lock(&self.inner.finishing)
            .iter()
            .filter(|(_, (d, _))| *d == Decision::Commit)
            .map(|(gid, _)| (gid.clone(), Value::from(COMMITTING)))
            .collect();
        (!committing.is_empty()).then_some(Value::Object(committing))
    }

    fn status(&self) -> Value {
        json!({
            "prepared": lock(&self.inner.held).len(),
            "finishing": lock(&self.inner.finishing).len(),
            "connections": self.inner.pool.status(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(op: Value) -> Result<Statement, String> {
        plan(&json!({ "operations": [op] }), false)
            .map(|mut v| v.remove(0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn table_operations_become_parameterised_statements() {
        let s = one(json!({"table": "accounts", "operation": "insert",
                           "values": {"balance": 10, "id": 1, "owner": "o'neil"}}))
        .unwrap();
        assert_eq!(
            s.sql,
            r#"INSERT INTO "accounts" ("balance", "id", "owner") VALUES ($1, $2, $3)"#
        );
        assert_eq!(
            s.params,
            vec![Param(json!(10)), Param(json!(1)), Param(json!("o'neil"))]
        );
        let s = one(json!({"table": "bank.accounts", "operation": "update",
                           "values": {"balance": 5}, "where": {"id": 1, "note": null}}))
        .unwrap();
        assert_eq!(
            s.sql,
            r#"UPDATE "bank"."accounts" SET "balance" = $1 WHERE "id" = $2 AND "note" IS NULL"#
        );
        assert_eq!(s.params, vec![Param(json!(5)), Param(json!(1))]);
        let s = one(json!({"table": "t", "operation": "delete", "where": {"k": "x"}})).unwrap();
        assert_eq!(s.sql, r#"DELETE FROM "t" WHERE "k" = $1"#);
        assert_eq!(s.what, r#"delete from "t""#);
    }

    #[test]
    fn bad_operations_are_refused_with_reasons() {
        for (op, needle) in [
            (
                json!({"table": "a;drop", "operation": "insert", "values": {"x": 1}}),
                "not a valid identifier",
            ),
            (
                json!({"table": "t", "operation": "insert", "values": {"x\"y": 1}}),
                "not a valid identifier",
            ),
            (
                json!({"table": "a.b.c", "operation": "delete", "where": {"x": 1}}),
                "schema.table",
            ),
            (
                json!({"table": "1t", "operation": "delete", "where": {"x": 1}}),
                "not a valid identifier",
            ),
            (
                json!({"table": "t", "operation": "update", "values": {"x": 1}}),
                "needs `where`",
            ),
            (
                json!({"table": "t", "operation": "update", "values": {"x": 1}, "where": {}}),
                "needs `where`",
            ),
            (
                json!({"table": "t", "operation": "delete"}),
                "needs `where`",
            ),
            (
                json!({"table": "t", "operation": "insert"}),
                "needs `values`",
            ),
            (
                json!({"table": "t", "operation": "insert", "values": {"x": 1}, "where": {"x": 1}}),
                "no `where`",
            ),
            (
                json!({"table": "t", "operation": "upsert", "values": {"x": 1}}),
                "unknown variant",
            ),
            (
                json!({"table": "t", "operation": "insert", "values": {"x": 1}, "extra": 1}),
                "unknown field",
            ),
            (json!("insert"), "must be an object"),
            (
                json!({"table": "t", "operation": "insert", "value": {"x": 1}}),
                "unknown field `value`, expected one of `table`, `operation`, `values`, `where`",
            ),
            (
                json!({"table": "t", "operation": "insert", "values": [1]}),
                "invalid type: sequence, expected a map",
            ),
            (
                json!({"operation": "insert", "values": {"x": 1}}),
                "missing field `table`",
            ),
        ] {
            let e = one(op.clone()).unwrap_err().to_string();
            assert!(e.starts_with("invalid_payload: operation 0: "), "{op}: {e}");
            assert!(e.contains(needle), "{op}: {e}");
        }
        // The data as a whole: exactly a non-empty `operations` list.
        for data in [
            json!({"operations": {"t": 1}}),
            json!({"operations": []}),
            json!({"operation": [{"table": "t", "operation": "delete", "where": {"x": 1}}]}),
            json!({}),
            Value::Null,
        ] {
            let e = plan(&data, false).unwrap_err().to_string();
            assert!(e.starts_with("invalid_payload: "), "{data}: {e}");
        }
    }

    #[test]
    fn a_vanished_prepared_transaction_is_checked_not_assumed() {
        let gid = "twopc:p1:t-1";
        let heuristic = |r: Result<String, Failure>| match r {
            Err(Failure::Heuristic(h)) => Some(h.kind),
            _ => None,
        };
        // Finished the way the decision says (by hand, or before a crash).
        assert!(gone(gid, Some(7), Some("committed"), Decision::Commit).is_ok());
        assert!(gone(gid, Some(7), Some("aborted"), Decision::Abort).is_ok());
        assert!(gone(gid, None, None, Decision::Abort).is_ok());
        // Finished the other way: the database holds the opposite outcome.
        let e = gone(gid, Some(7), Some("aborted"), Decision::Commit);
        assert_eq!(heuristic(e), Some(HeuristicKind::Mixed));
        let Err(Failure::Heuristic(h)) = gone(gid, Some(7), Some("committed"), Decision::Abort)
        else {
            panic!("a commit by hand of an aborted transaction is mixed");
        };
        assert_eq!(
            h.detail,
            "the database has committed prepared transaction `twopc:p1:t-1` (transaction 7): \
             someone finished it by hand (COMMIT/ROLLBACK PREPARED), not as decided"
        );
        // No telling: too old, or no transaction id to ask about.
        let e = gone(gid, Some(7), None, Decision::Commit);
        assert_eq!(heuristic(e), Some(HeuristicKind::Hazard));
        let e = gone(gid, None, None, Decision::Commit);
        assert_eq!(heuristic(e), Some(HeuristicKind::Hazard));
        // Still running: try again.
        assert!(matches!(
            gone(gid, Some(7), Some("in progress"), Decision::Commit),
            Err(Failure::Retry(_))
        ));
    }

    #[test]
    fn raw_sql_only_when_allowed_and_never_transaction_control() {
        let raw = json!({"operations": [{"sql": "UPDATE t SET x = $1", "params": [1]}]});
        let e = plan(&raw, false).unwrap_err().to_string();
        assert!(
            e.starts_with("raw_sql_disabled") && e.contains("postgres.allow_raw_sql"),
            "{e}"
        );
        let s = plan(&raw, true).unwrap();
        assert_eq!(s[0].sql, "UPDATE t SET x = $1");
        assert!(s[0].raw);
        for sql in [
            "COMMIT",
            "  rollback",
            "end;",
            "PREPARE TRANSACTION 'x'",
            "begin",
        ] {
            let e = plan(&json!({"operations": [{"sql": sql}]}), true)
                .unwrap_err()
                .to_string();
            assert!(e.contains("may not control the transaction"), "{sql}: {e}");
        }
    }

    #[test]
    fn gids_are_prefixed_safe_and_bounded() {
        let p = ParticipantId::from("shard-1");
        assert_eq!(
            gid_for(&p, &TxnId::from("k3x9ab-17")).as_deref(),
            Some("twopc:shard-1:k3x9ab-17")
        );
        assert_eq!(gid_for(&p, &TxnId::from("it's")), None);
        assert_eq!(gid_for(&p, &TxnId::from("")), None);
        assert_eq!(gid_for(&p, &TxnId("x".repeat(200))), None);
        let longest = "x".repeat(GID_MAX_BYTES - gid_prefix(&p).len());
        assert!(gid_for(&p, &TxnId(longest)).is_some());
    }

    #[test]
    fn recovery_applies_logged_decisions_keeps_doubts_and_rolls_back_the_unlogged() {
        let p = ParticipantId::from("p1");
        let prepared = |t: &str, xid: i64| Record::Prepared {
            txn: TxnId::from(t),
            participants: vec![],
            state: json!({"gid": format!("twopc:p1:{t}"), "xid": xid}),
        };
        let decided = |t: &str, decision| Record::Decided {
            txn: TxnId::from(t),
            decision,
            heuristic: None,
        };
        let log = vec![
            prepared("a", 10),
            prepared("b", 11),
            prepared("c", 12),
            decided("a", Decision::Commit),
            decided("b", Decision::Abort),
        ];
        let view = logged(&p, &log);
        assert_eq!(
            view["twopc:p1:c"],
            Logged {
                decision: None,
                xid: Some(12)
            }
        );
        let found: Vec<String> = ["a", "b", "c", "d"]
            .iter()
            .map(|t| format!("twopc:p1:{t}"))
            .collect();
        assert_eq!(
            recovery_steps(&found, &view),
            vec![
                ("twopc:p1:a".into(), Recovery::Apply(Decision::Commit)),
                ("twopc:p1:b".into(), Recovery::Apply(Decision::Abort)),
                ("twopc:p1:c".into(), Recovery::Keep),
                ("twopc:p1:d".into(), Recovery::RollBackUnlogged),
            ]
        );
    }

    #[test]
    fn commits_under_way_survive_a_checkpoint_through_the_snapshot() {
        let cfg = PostgresSettings {
            dsn: Some("host=127.0.0.1 port=1 user=app".into()),
            max_connections: 8,
            connect_timeout_ms: 5_000,
            ..PostgresSettings::default()
        };
        let p = ParticipantId::from("p1");
        let mut r = PostgresResource::new(&p, &cfg).unwrap();
        assert_eq!(r.snapshot(), None, "nothing under way");
        // Not polled: the finish stays under way.
        let _commit = r.finish(&TxnId::from("t-1"), Decision::Commit);
        let _abort = r.finish(&TxnId::from("t-2"), Decision::Abort);
        let snap = r.snapshot().unwrap();
        assert_eq!(snap, json!({"twopc:p1:t-1": "commit"}));

        let log: Vec<Record> =
            vec![serde_json::from_value(json!({"kind": "snapshot", "state": snap})).unwrap()];
        let view = logged(&p, &log);
        let found = vec!["twopc:p1:t-1".to_string()];
        assert_eq!(
            recovery_steps(&found, &view),
            vec![(found[0].clone(), Recovery::Apply(Decision::Commit))]
        );
    }

    #[test]
    fn dsn_descriptions_leave_the_password_out() {
        let c =
            parse_dsn("host=db.example port=6543 user=app password=hunter2 dbname=shop").unwrap();
        assert_eq!(describe_target(&c), "app@db.example:6543/shop");
        let c = parse_dsn("postgres://app:hunter2@127.0.0.1:5432/shop").unwrap();
        assert_eq!(describe_target(&c), "app@127.0.0.1:5432/shop");
        let e = parse_dsn("user=app password=hunter2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no host") && !e.contains("hunter2"), "{e}");
        let e = parse_dsn("host=x bogus=hunter2").unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}

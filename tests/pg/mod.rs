//! A throwaway PostgreSQL server for one test: `initdb` in a temporary
//! directory, `postgres` on a free loopback port with its socket in that
//! directory, stopped (immediate shutdown) when the guard drops. Run as the
//! `postgres` user when the tests run as root, since PostgreSQL refuses root.
//!
//! When no server can be started the test fails with the reason and what to
//! do: a test that did not run must not look green. Only a deliberate
//! `TWOPC_TEST_SKIP_POSTGRES=1` turns that into a skip, announced on stderr.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server gets to start and to answer.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A running PostgreSQL server, killed when dropped.
pub struct PgServer {
    pub port: u16,
    max_prepared_transactions: u32,
    bin: PathBuf,
    /// uid and gid to run as (when the tests run as root).
    user: Option<(u32, u32)>,
    child: Option<Child>,
    log: PathBuf,
    /// Holds the data directory, socket and log; removed on drop.
    dir: tempfile::TempDir,
    /// Extra `name=value` server settings.
    settings: Vec<String>,
}

/// The server's binaries: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian keeps them off the PATH), else PATH.
fn bindir() -> Result<PathBuf, String> {
    let has_server = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&d) {
            return Ok(d);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.filter_map(|e| e.ok()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_server(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Ok(d);
    }
    for d in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if has_server(&d) {
            return Ok(d);
        }
    }
    Err("no PostgreSQL server binaries (initdb, postgres): not found by `pg_config --bindir`, \
         in /usr/lib/postgresql/*/bin or on the PATH; install them with `apt-get install postgresql`"
        .into())
}

/// The uid and gid of the `postgres` user, when running as root.
fn run_as() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL in a literal");
    // SAFETY: getpwnam reads a NUL-terminated name; the result (static
    // storage) is read at once, before any other getpw* call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(
            "running as root, and there is no `postgres` user to run the server as \
                    (PostgreSQL refuses root); install the postgresql package, which creates it"
                .into(),
        );
    }
    // SAFETY: pw is non-null and points at a valid passwd entry.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

/// `bin` run as `user`, in `dir` (the test's own working directory may be
/// closed to that user).
fn command(bin: &Path, user: Option<(u32, u32)>, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd.current_dir(dir)
        .env_remove("PGDATA")
        .stdin(Stdio::null());
    cmd
}

fn log_file(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

impl PgServer {
    /// Start a server with `max_prepared_transactions` (0 disables two-phase
    /// commit) and wait until it answers.
    pub fn start(max_prepared_transactions: u32) -> Result<PgServer, String> {
        PgServer::start_with(max_prepared_transactions, |_| Ok(Vec::new()))
    }

    /// [`PgServer::start`] with more server settings (`name=value`, each
    /// given as `-c`), made by `settings` from the server's directory once
    /// it exists (for files the server reads, such as certificates).
    pub fn start_with(
        max_prepared_transactions: u32,
        settings: impl FnOnce(&ServerFiles) -> Result<Vec<String>, String>,
    ) -> Result<PgServer, String> {
        let bin = bindir()?;
        let user = run_as()?;
        let dir = tempfile::Builder::new()
            .prefix("twopc-pg-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("cannot hand {} to postgres: {e}", dir.path().display()))?;
        }
        let log = dir.path().join("server.log");
        let status = command(&bin.join("initdb"), user, dir.path())
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?)
            .status()
            .map_err(|e| format!("cannot run {}: {e}", bin.join("initdb").display()))?;
        if !status.success() {
            return Err(format!(
                "initdb failed ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        let settings = settings(&ServerFiles {
            dir: dir.path().to_path_buf(),
            user,
        })?;
        let mut server = PgServer {
            settings,
            port: crate::common::free_port(),
            max_prepared_transactions,
            bin,
            user,
            child: None,
            log,
            dir,
        };
        // Another test may take the free port first: then try another one.
        let mut attempts = 0;
        loop {
            match server.resume() {
                Ok(()) => return Ok(server),
                Err(e) if attempts < 3 && e.contains("already in use") => {
                    attempts += 1;
                    server.port = crate::common::free_port();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Run the server (again, after [`PgServer::stop`]) on the same port
    /// and data, and wait until it answers.
    pub fn resume(&mut self) -> Result<(), String> {
        let child = command(&self.bin.join("postgres"), self.user, self.dir.path())
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args([
                "-c",
                &format!(
                    "max_prepared_transactions={}",
                    self.max_prepared_transactions
                ),
            ])
            // A test server: small, and fast rather than durable.
            .args(["-c", "max_connections=40", "-c", "shared_buffers=16MB"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdout(log_file(&self.log)?)
            .stderr(log_file(&self.log)?)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.join("postgres").display()))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Immediate shutdown (like a crash: prepared transactions survive,
    /// connections are cut); [`PgServer::resume`] starts it again.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGQUIT is PostgreSQL's immediate shutdown; SIGKILL if it lingers.
            // SAFETY: signalling our own child has no memory-safety preconditions.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGQUIT);
            }
            let start = Instant::now();
            while matches!(c.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if crate::common::block_on(self.connect("postgres")).is_ok() {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(format!(
                    "postgres exited at start ({status}):\n{}",
                    self.log_text()
                ));
            }
            if start.elapsed() > START_LIMIT {
                return Err(format!(
                    "postgres did not accept connections within {START_LIMIT:?}:\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start a server. When none can start the test fails, naming the reason
    /// and the fix, unless `TWOPC_TEST_SKIP_POSTGRES=1` asks to skip: then
    /// `None`, after saying so on stderr.
    pub fn start_or_skip(test: &str, max_prepared_transactions: u32) -> Option<PgServer> {
        PgServer::start_or_skip_with(test, max_prepared_transactions, |_| Ok(Vec::new()))
    }

    /// [`PgServer::start_or_skip`] with the settings of
    /// [`PgServer::start_with`].
    pub fn start_or_skip_with(
        test: &str,
        max_prepared_transactions: u32,
        settings: impl FnOnce(&ServerFiles) -> Result<Vec<String>, String>,
    ) -> Option<PgServer> {
        match PgServer::start_with(max_prepared_transactions, settings) {
            Ok(s) => Some(s),
            Err(e) if std::env::var("TWOPC_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1") => {
                // Straight to stderr: the test harness captures eprintln!.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {test} (TWOPC_TEST_SKIP_POSTGRES=1): PostgreSQL could not start: {e}"
                );
                None
            }
            Err(e) => panic!(
                "{test}: this test needs a PostgreSQL server, which could not start: {e}\n\
                 Install the server binaries (Debian: apt-get install postgresql; `bash .ci/run` \
                 does it), or set TWOPC_TEST_SKIP_POSTGRES=1 to skip the PostgreSQL tests knowingly."
            ),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's data directory (`pg_hba.conf` lives there).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Re-read `pg_hba.conf` and the settings.
    pub fn reload(&self) {
        self.sql("postgres", "SELECT pg_reload_conf()");
    }

    /// A libpq connection string for database `db` (TCP, no password).
    pub fn dsn(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    async fn connect(&self, db: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(&self.dsn(db), tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// Run `sql` (one or more statements) in database `db`; every row of
    /// every statement comes back as text, NULL as `None`.
    pub fn sql(&self, db: &str, sql: &str) -> Vec<Vec<Option<String>>> {
        crate::common::block_on(async {
            let client = self
                .connect(db)
                .await
                .unwrap_or_else(|e| panic!("connect to {db}: {e}"));
            let msgs = client
                .simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            msgs.into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                    }
                    _ => None,
                })
                .collect()
        })
    }

    /// Global ids of the prepared transactions in database `db`.
    pub fn prepared(&self, db: &str) -> Vec<String> {
        self.sql(
            db,
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY gid",
        )
        .into_iter()
        .filter_map(|mut r| r.remove(0))
        .collect()
    }
}

/// The server's directory before it starts, for files it must read.
pub struct ServerFiles {
    pub dir: std::path::PathBuf,
    user: Option<(u32, u32)>,
}

impl ServerFiles {
    /// Hand `path` to the user the server runs as (it checks that its key
    /// is its own and private).
    pub fn give(&self, path: &Path) -> Result<(), String> {
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| format!("cannot hand {} to postgres: {e}", path.display()))?;
        }
        Ok(())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

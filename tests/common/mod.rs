//! Test harness: real coordinator and participant processes on ephemeral
//! loopback ports with temporary data directories. Every process is killed
//! when its guard drops. Readiness is awaited (the coordinator's "listening"
//! line, then `status`), never slept for.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use twopc::client::Client;
use twopc::protocol::{Outcome, SubmitRequest, TxnId};

pub const COORDINATOR: &str = env!("CARGO_BIN_EXE_twopc-coordinator");
pub const PARTICIPANT: &str = env!("CARGO_BIN_EXE_twopc-participant");
pub const TWOPC: &str = env!("CARGO_BIN_EXE_twopc");

/// Generous bound for anything awaited: tests must not fail because the
/// machine is slow, only because the awaited thing never happens.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        wait_exit(&mut c, PATIENCE)
    }

    /// Wait for the process to exit by itself (for crash points).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let r = wait_exit(&mut c, limit);
        if r.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        r
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn wait_exit(c: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(s)) = c.try_wait() {
            return Some(s);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The seed of a randomized test: `TWOPC_TEST_SEED` when set (to replay a
/// run), else the clock. Tests print it before they start.
pub fn seed() -> u64 {
    std::env::var("TWOPC_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
        })
}

/// Run an async client call to completion on a private runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// A command with no inherited `TWOPC_*` settings.
pub fn clean_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("TWOPC_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// One test's cluster: a temp dir, a coordinator, participants.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub coordinator: Option<Proc>,
    pub port: u16,
    pub participants: Vec<Proc>,
    pub coordinator_args: Vec<String>,
    pub coordinator_env: Vec<(String, String)>,
    /// Secret and TLS the harness's own client connections use.
    pub security: twopc::security::ClientSecurity,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster {
            dir: tempfile::Builder::new()
                .prefix("twopc-test-")
                .tempdir()
                .expect("tempdir"),
            coordinator: None,
            port: 0,
            participants: Vec::new(),
            coordinator_args: Vec::new(),
            coordinator_env: Vec::new(),
            security: Default::default(),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Start the coordinator with `args` (added to port/data-dir defaults)
    /// and wait for its "listening on" line. Reuses the previous port on a
    /// restart so participants find it again.
    pub fn start_coordinator(&mut self, args: &[&str], env: &[(&str, &str)]) -> &mut Proc {
        self.coordinator_args = args.iter().map(|s| s.to_string()).collect();
        self.coordinator_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.spawn_coordinator()
    }

    /// Start the coordinator again with the arguments it was first given.
    pub fn restart_coordinator(&mut self) -> &mut Proc {
        self.spawn_coordinator()
    }

    /// Start the coordinator again with extra environment (crash points).
    pub fn restart_coordinator_with_env(&mut self, env: &[(&str, &str)]) -> &mut Proc {
        self.coordinator_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.spawn_coordinator()
    }

    fn spawn_coordinator(&mut self) -> &mut Proc {
        let log = self.path("coordinator.log");
        let mut cmd = clean_command(COORDINATOR);
        cmd.args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--data-dir")
            .arg(self.path("coordinator"))
            .args(["--log-level", "debug"])
            .args(&self.coordinator_args)
            .envs(self.coordinator_env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(append(&log));
        let mut child = cmd.spawn().expect("spawn coordinator");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        // The coordinator prints one line once it is listening.
        reader
            .read_line(&mut line)
            .expect("read coordinator stdout");
        assert!(
            line.contains("listening on"),
            "coordinator did not start: stdout {line:?}; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let port: u16 = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        self.port = port;
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        self.coordinator = Some(Proc {
            name: "coordinator".into(),
            child: Some(child),
            log,
        });
        self.coordinator.as_mut().unwrap()
    }

    /// Start participant `id` with extra args and env.
    pub fn start_participant(&mut self, id: &str, args: &[&str], env: &[(&str, &str)]) -> usize {
        let proc = self.spawn_participant(id, args, env);
        self.participants.push(proc);
        self.participants.len() - 1
    }

    /// Start participant `id` again (same data dir) in slot `idx`.
    pub fn restart_participant(&mut self, idx: usize, args: &[&str], env: &[(&str, &str)]) {
        let id = self.participants[idx].name.clone();
        self.participants[idx].kill9();
        self.participants[idx] = self.spawn_participant(&id, args, env);
    }

    fn spawn_participant(&self, id: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let log = self.path(&format!("{id}.log"));
        let mut cmd = clean_command(PARTICIPANT);
        cmd.args(["--id", id, "--coordinator-host", "127.0.0.1"])
            .args(["--coordinator-port", &self.port.to_string()])
            .arg("--data-dir")
            .arg(self.path(id))
            .args([
                "--log-level",
                "debug",
                "--reconnect-initial-ms",
                "20",
                "--reconnect-max-ms",
                "200",
            ])
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(append(&log));
        Proc {
            name: id.to_string(),
            child: Some(cmd.spawn().expect("spawn participant")),
            log,
        }
    }

    /// Start `n` participants p1..pn with the same args.
    pub fn start_participants(&mut self, n: usize, args: &[&str]) {
        for i in 1..=n {
            self.start_participant(&format!("p{i}"), args, &[]);
        }
    }

    /// A fresh client connection.
    pub fn client(&self) -> Client {
        block_on(Client::connect_with(&self.addr(), &self.security, PATIENCE))
            .expect("connect client")
    }

    pub fn status(&self) -> Value {
        let addr = self.addr();
        block_on(async move {
            let mut c = Client::connect_with(&addr, &self.security, PATIENCE).await?;
            c.status().await
        })
        .expect("status")
    }

    /// Wait until the coordinator is READY with `n` connected participants.
    pub fn wait_ready(&self, n: usize) {
        self.wait_status("cluster ready", |s| {
            s["state"] == "READY" && connected(s) >= n
        });
    }

    /// Poll `status` until `pred` holds (bounded by PATIENCE).
    pub fn wait_status(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        let addr = self.addr();
        loop {
            let s = block_on(async {
                let mut c =
                    Client::connect_with(&addr, &self.security, Duration::from_secs(5)).await?;
                c.status().await
            });
            if let Ok(s) = s {
                if pred(&s) {
                    return s;
                }
                if start.elapsed() > PATIENCE {
                    panic!("timed out waiting for {what}; last status {s}");
                }
            } else if start.elapsed() > PATIENCE {
                panic!("timed out waiting for {what}; coordinator unreachable");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Submit one transaction on a new connection.
    pub fn submit(
        &self,
        req: SubmitRequest,
    ) -> Result<(TxnId, Outcome), twopc::client::ClientError> {
        let addr = self.addr();
        block_on(async move {
            let mut c = Client::connect_with(&addr, &self.security, PATIENCE).await?;
            c.submit(req).await
        })
    }

    /// Run the `twopc` CLI with args; returns (exit code, stdout, stderr).
    pub fn twopc(&self, args: &[&str]) -> (i32, String, String) {
        run_twopc(args)
    }
}

pub fn run_twopc(args: &[&str]) -> (i32, String, String) {
    let out = clean_command(TWOPC).args(args).output().expect("run twopc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn connected(s: &Value) -> usize {
    s["participants"]
        .as_array()
        .map(|a| a.iter().filter(|p| p["connected"] == true).count())
        .unwrap_or(0)
}

/// The ids of the participants in a status report (or `participants list
/// --json`), in its order.
pub fn participant_ids(s: &Value) -> Vec<String> {
    s["participants"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log file")
}

/// A submit request for all participants with `data`.
pub fn req(data: Value) -> SubmitRequest {
    SubmitRequest {
        data,
        participants: None,
        request_id: None,
        ..Default::default()
    }
}

/// Submit one transaction to the coordinator at `addr` on a new connection
/// (usable from a thread that does not own the `Cluster`).
pub fn submit_to(
    addr: &str,
    req: SubmitRequest,
) -> Result<(TxnId, Outcome), twopc::client::ClientError> {
    let addr = addr.to_string();
    block_on(async move {
        let mut c = Client::connect(&addr, PATIENCE).await?;
        c.submit(req).await
    })
}

/// A loopback port nobody listens on, outside the ephemeral range (so no
/// outgoing connection takes it before the process that is given it
/// listens).
pub fn free_port() -> u16 {
    twopc::net::ports::free_loopback_port().expect("a free loopback port")
}

/// Run `cmd` to completion with stdout and stderr captured; a process still
/// running after `limit` is killed and the test fails (a command that should
/// have been refused must not start serving and hang the test).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> (i32, String, String) {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn command");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let status = wait_exit(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let Some(status) = status else {
        panic!("{cmd:?} still running after {limit:?}; stdout:\n{out}\nstderr:\n{err}");
    };
    (status.code().unwrap_or(-1), out, err)
}

/// A blocking, byte-level connection speaking the framing by hand, to probe
/// a peer with frames no well-behaved client would send. Received frames are
/// returned as raw JSON so tests see exactly what went over the wire.
pub struct RawConn {
    pub stream: std::net::TcpStream,
}

impl RawConn {
    pub fn connect(addr: &str) -> RawConn {
        let stream = std::net::TcpStream::connect(addr).expect("connect raw");
        RawConn::from_stream(stream)
    }

    /// Wrap an accepted stream (a fake coordinator's side).
    pub fn from_stream(stream: std::net::TcpStream) -> RawConn {
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("read timeout");
        let _ = stream.set_nodelay(true);
        RawConn { stream }
    }

    /// Send `payload` as one frame (4-byte big-endian length, then bytes).
    pub fn send_frame(&mut self, payload: &[u8]) {
        use std::io::Write;
        let len = u32::try_from(payload.len()).expect("frame fits a u32");
        let mut buf = len.to_be_bytes().to_vec();
        buf.extend_from_slice(payload);
        self.stream.write_all(&buf).expect("send frame");
    }

    /// Send only a length prefix (to announce a frame that never comes).
    pub fn send_length_prefix(&mut self, len: u32) {
        use std::io::Write;
        self.stream
            .write_all(&len.to_be_bytes())
            .expect("send length prefix");
    }

    /// Send a well-formed message.
    pub fn send(&mut self, body: twopc::protocol::Body) {
        let bytes = twopc::net::encode(body);
        self.send_frame(&bytes);
    }

    /// Send `hello` as a client.
    pub fn send_client_hello(&mut self) {
        self.send(twopc::protocol::Body::Hello {
            role: twopc::protocol::Role::Client,
            id: None,
            protocol_version: twopc::protocol::PROTOCOL_VERSION,
        });
    }

    /// The next frame as JSON; `None` once the peer closed (EOF or reset).
    /// Panics if nothing arrives within PATIENCE.
    pub fn recv(&mut self) -> Option<Value> {
        use std::io::{ErrorKind, Read};
        let mut head = [0u8; 4];
        match self.stream.read_exact(&mut head) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                ) =>
            {
                return None
            }
            Err(e) => panic!("reading a frame header: {e}"),
        }
        let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
        self.stream.read_exact(&mut body).expect("read frame body");
        Some(serde_json::from_slice(&body).expect("peer sent a frame that is not JSON"))
    }

    /// The next frame whose `message_type` is not a heartbeat; `None` at EOF.
    pub fn recv_skip_heartbeats(&mut self) -> Option<Value> {
        loop {
            let m = self.recv()?;
            if m["message_type"] != "heartbeat" && m["message_type"] != "heartbeat_ack" {
                return Some(m);
            }
        }
    }

    /// The next frame must be an `error` with `code`; returns its message.
    pub fn expect_error(&mut self, code: &str) -> String {
        let m = self
            .recv_skip_heartbeats()
            .unwrap_or_else(|| panic!("connection closed; expected error {code}"));
        assert_eq!(m["message_type"], "error", "expected error {code}, got {m}");
        assert_eq!(m["payload"]["code"], code, "wrong error code in {m}");
        m["payload"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The peer must close the connection without sending anything more.
    pub fn expect_closed(&mut self) {
        if let Some(m) = self.recv_skip_heartbeats() {
            panic!("expected the connection to be closed, got {m}");
        }
    }
}

/// Wait until no transaction is voting or waiting for acknowledgements (the
/// coordinator counts a transaction only once it has ended), and return the
/// coordinator's (committed, aborted) counts.
pub fn settled_counts(c: &Cluster) -> (u64, u64) {
    let s = c.wait_status("every transaction ended", |s| {
        s["transactions"]["in_flight"] == 0 && s["transactions"]["awaiting_acks"] == 0
    });
    let t = &s["transactions"];
    (
        t["committed"].as_u64().expect("committed"),
        t["aborted"].as_u64().expect("aborted"),
    )
}

// Crash-recovery helpers: participant admin ports, log marks, `wal inspect`.

/// Current length of the file at `path` (0 when missing): a mark from which
/// to read what a restarted process appends to its log.
pub fn log_mark(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The text appended to the file at `path` after byte `mark`.
pub fn log_since(path: &Path, mark: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let from = (mark as usize).min(bytes.len());
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}

/// Wait until `proc`'s log holds `needle` after byte `mark` and return the
/// text after the mark. Fails at once if the process exits first.
pub fn wait_log(proc: &mut Proc, mark: u64, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let text = log_since(&proc.log, mark);
        if text.contains(needle) {
            return text;
        }
        assert!(
            proc.is_running(),
            "{} exited before logging {needle:?}; log since restart:\n{text}",
            proc.name
        );
        assert!(
            start.elapsed() < PATIENCE,
            "{} did not log {needle:?} within {PATIENCE:?}; log since restart:\n{text}",
            proc.name
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The address in the last "admin listening on ADDR" line of `text`.
pub fn parse_admin_addr(text: &str) -> Option<String> {
    const NEEDLE: &str = "admin listening on ";
    let at = text.rfind(NEEDLE)? + NEEDLE.len();
    let addr: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    addr.contains(':').then_some(addr)
}

impl Cluster {
    /// The coordinator's data directory.
    pub fn coordinator_dir(&self) -> PathBuf {
        self.path("coordinator")
    }

    /// The data directory of participant `idx`.
    pub fn participant_dir(&self, idx: usize) -> PathBuf {
        self.path(&self.participants[idx].name)
    }

    /// Start participant `id` with `--admin-port 0` added to `args`; returns
    /// its index and admin address (read from its log).
    pub fn start_participant_admin(
        &mut self,
        id: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (usize, String) {
        let mark = log_mark(&self.path(&format!("{id}.log")));
        let idx = self.start_participant(id, &with_admin_port(args), env);
        (idx, self.admin_addr_since(idx, mark))
    }

    /// Restart participant `idx` (kill -9, same data dir) with
    /// `--admin-port 0` added to `args`; returns its new admin address.
    pub fn restart_participant_admin(
        &mut self,
        idx: usize,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> String {
        let mark = log_mark(&self.participants[idx].log);
        self.restart_participant(idx, &with_admin_port(args), env);
        self.admin_addr_since(idx, mark)
    }

    fn admin_addr_since(&mut self, idx: usize, mark: u64) -> String {
        let text = wait_log(&mut self.participants[idx], mark, "admin listening on ");
        parse_admin_addr(&text).expect("admin address in the participant log")
    }
}

fn with_admin_port<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend_from_slice(&["--admin-port", "0"]);
    v
}

/// Send `body` to a participant's admin port and return the JSON reply.
pub fn ask_participant(
    admin: &str,
    body: twopc::protocol::Body,
) -> Result<Value, twopc::client::ClientError> {
    let admin = admin.to_string();
    block_on(async move {
        let mut c = Client::connect(&admin, Duration::from_secs(10)).await?;
        match c.request(body).await? {
            twopc::protocol::Body::StatusReport(v) | twopc::protocol::Body::TxnInfo(v) => Ok(v),
            other => Err(twopc::client::ClientError::Protocol(
                other.message_type().to_string(),
            )),
        }
    })
}

/// Poll a participant's admin `status` until `pred` holds (bounded by
/// PATIENCE); returns that status.
pub fn wait_participant(admin: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let s = ask_participant(admin, twopc::protocol::Body::Status);
        if let Ok(s) = &s {
            if pred(s) {
                return s.clone();
            }
        }
        assert!(
            start.elapsed() < PATIENCE,
            "timed out waiting for {what} at participant {admin}; last status {s:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `twopc txn list --participant ADMIN [--state STATE] --json`.
pub fn participant_txn_list(admin: &str, state: Option<&str>) -> Value {
    let mut args = vec!["txn", "list", "--participant", admin, "--json"];
    if let Some(s) = state {
        args.extend_from_slice(&["--state", s]);
    }
    let (code, out, err) = run_twopc(&args);
    assert_eq!(code, 0, "twopc {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("twopc {args:?}: {e}: {out}"))
}

/// `twopc wal inspect DIR --json`: its exit status and report.
pub fn wal_inspect(dir: &Path) -> (i32, Value) {
    let dir_s = dir.display().to_string();
    let (code, out, err) = run_twopc(&["wal", "inspect", &dir_s, "--json"]);
    let report = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("wal inspect {dir_s}: {e}; stdout {out:?}; stderr {err}"));
    (code, report)
}

/// The log segments (`wal-*.log`) in `dir` with their sizes, oldest first.
pub fn wal_segments(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut v: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("wal-") && name.ends_with(".log")
        })
        // A segment deleted by a checkpoint between listing and stat is gone.
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
        .collect();
    v.sort();
    v
}

/// Write `text` to `path` readable by its owner only (0600), as secret
/// files must be.
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

/// The address in the coordinator's "admin http listening on ADDR" line
/// logged after byte `mark` (it is started with `--admin-port 0`).
pub fn coordinator_http_addr(proc: &mut Proc, mark: u64) -> String {
    const NEEDLE: &str = "admin http listening on ";
    let text = wait_log(proc, mark, NEEDLE);
    let at = text.rfind(NEEDLE).expect("the line waited for") + NEEDLE.len();
    text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect()
}

/// `twopc http GET PATH` against the coordinator's HTTP admin API at
/// `admin`: the response body, which must have come with a 2xx status.
pub fn http_get(admin: &str, path: &str) -> String {
    let (code, out, err) = run_twopc(&["http", "GET", path, "--coordinator-admin", admin]);
    assert_eq!(code, 0, "GET {path}: {out}{err}");
    out
}

/// Start `twopc ARGS` with its stderr in `dir/name.log`, killed on drop.
pub fn start_logged(dir: &Path, name: &str, args: &[String]) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let err = std::fs::File::create(&log).expect("log file");
    let child = clean_command(TWOPC)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .spawn()
        .expect("spawn twopc");
    Proc {
        name: name.into(),
        child: Some(child),
        log,
    }
}

/// The arguments of coordinator group member `id` (from 1): its
/// coordinator and admin ports, every member's `peers`, the participants
/// it waits for, and its data directory `dir/cID`.
pub fn member_args(
    id: usize,
    port: u16,
    admin_port: u16,
    peers: &str,
    expected: usize,
    dir: &Path,
) -> Vec<String> {
    [
        "coordinator",
        "--port",
        &port.to_string(),
        "--peers",
        peers,
        "--node-id",
        &id.to_string(),
        "--expected-participants",
        &expected.to_string(),
        "--admin-port",
        &admin_port.to_string(),
        "--data-dir",
        &dir.join(format!("c{id}")).display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

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
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster {
            dir: tempfile::Builder::new().prefix("twopc-test-").tempdir().expect("tempdir"),
            coordinator: None,
            port: 0,
            participants: Vec::new(),
            coordinator_args: Vec::new(),
            coordinator_env: Vec::new(),
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
        self.coordinator_env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.spawn_coordinator()
    }

    /// Start the coordinator again with the arguments it was first given.
    pub fn restart_coordinator(&mut self) -> &mut Proc {
        self.spawn_coordinator()
    }

    /// Start the coordinator again with extra environment (crash points).
    pub fn restart_coordinator_with_env(&mut self, env: &[(&str, &str)]) -> &mut Proc {
        self.coordinator_env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
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
        reader.read_line(&mut line).expect("read coordinator stdout");
        assert!(
            line.contains("listening on"),
            "coordinator did not start: stdout {line:?}; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let port: u16 = line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
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
            .args(["--log-level", "debug", "--reconnect-initial-ms", "20", "--reconnect-max-ms", "200"])
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
        block_on(Client::connect(&self.addr(), PATIENCE)).expect("connect client")
    }

    pub fn status(&self) -> Value {
        let addr = self.addr();
        block_on(async move {
            let mut c = Client::connect(&addr, PATIENCE).await?;
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
                let mut c = Client::connect(&addr, Duration::from_secs(5)).await?;
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
    pub fn submit(&self, req: SubmitRequest) -> Result<(TxnId, Outcome), twopc::client::ClientError> {
        let addr = self.addr();
        block_on(async move {
            let mut c = Client::connect(&addr, PATIENCE).await?;
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
    }
}

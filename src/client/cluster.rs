//! A throw-away local cluster for `twopc demo` and `twopc bench --local`:
//! one coordinator and N participant processes on free loopback ports with
//! temporary data directories, shut down cleanly when done.

use super::Client;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub participants: usize,
    pub vote_preference: String,
    pub commit_probability: f64,
    pub timeout_seconds: f64,
    pub unsafe_no_fsync: bool,
    pub log_level: String,
    pub max_in_flight: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            participants: 3,
            vote_preference: "random".into(),
            commit_probability: 0.9,
            timeout_seconds: 10.0,
            unsafe_no_fsync: false,
            log_level: "warn".into(),
            max_in_flight: 1024,
        }
    }
}

/// Running processes of a local cluster. Dropping it kills them.
pub struct LocalCluster {
    pub addr: String,
    pub participant_ids: Vec<String>,
    dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
}

fn program() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find the twopc executable: {e}"))
}

/// Children must not inherit the caller's `TWOPC_*` settings: the demo's
/// flags describe the whole cluster.
fn command(exe: &Path, log: &Path) -> Result<Command, String> {
    let mut cmd = Command::new(exe);
    for (k, _) in std::env::vars() {
        if k.starts_with("TWOPC_") {
            cmd.env_remove(k);
        }
    }
    let err =
        std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    cmd.stdin(Stdio::null()).stderr(err).kill_on_drop(true);
    Ok(cmd)
}

impl LocalCluster {
    /// Start the processes and wait until every participant is registered.
    pub async fn spawn(opts: &ClusterOptions) -> Result<LocalCluster, String> {
        let exe = program()?;
        let dir = tempfile::Builder::new()
            .prefix("twopc-cluster-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let mut cmd = command(&exe, &dir.path().join("coordinator.log"))?;
        cmd.arg("coordinator")
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--expected-participants", &opts.participants.to_string()])
            .args(["--timeout-seconds", &opts.timeout_seconds.to_string()])
            .args(["--max-in-flight", &opts.max_in_flight.to_string()])
            .args(["--log-level", &opts.log_level])
            .arg("--data-dir")
            .arg(dir.path().join("coordinator"))
            .stdout(Stdio::piped());
        if opts.unsafe_no_fsync {
            cmd.arg("--unsafe-no-fsync");
        }
        let mut coord = cmd
            .spawn()
            .map_err(|e| format!("cannot start the coordinator ({}): {e}", exe.display()))?;
        let stdout = coord.stdout.take().ok_or("coordinator has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .map_err(|_| "the coordinator did not report its address within 20 s".to_string())?
            .map_err(|e| format!("reading the coordinator's output: {e}"))?
            .ok_or_else(|| {
                format!(
                    "the coordinator exited at start; see {}",
                    dir.path().join("coordinator.log").display()
                )
            })?;
        let addr = line
            .rsplit(' ')
            .next()
            .filter(|a| a.contains(':'))
            .ok_or_else(|| format!("unexpected coordinator output: {line}"))?
            .to_string();
        let port = addr.rsplit(':').next().unwrap_or("0").to_string();
        let mut cluster = LocalCluster {
            addr,
            participant_ids: Vec::new(),
            children: vec![("coordinator".into(), coord)],
            dir,
        };
        for i in 1..=opts.participants {
            let id = format!("p{i}");
            let mut cmd = command(&exe, &cluster.dir.path().join(format!("{id}.log")))?;
            cmd.arg("participant")
                .args([
                    "--id",
                    &id,
                    "--coordinator-host",
                    "127.0.0.1",
                    "--coordinator-port",
                    &port,
                ])
                .args(["--vote-preference", &opts.vote_preference])
                .args(["--commit-probability", &opts.commit_probability.to_string()])
                .args(["--log-level", &opts.log_level])
                .arg("--data-dir")
                .arg(cluster.dir.path().join(&id))
                .stdout(Stdio::null());
            if opts.unsafe_no_fsync {
                cmd.arg("--unsafe-no-fsync");
            }
            let child = cmd
                .spawn()
                .map_err(|e| format!("cannot start participant {id}: {e}"))?;
            cluster.children.push((id.clone(), child));
            cluster.participant_ids.push(id);
        }
        cluster
            .wait_ready(opts.participants, Duration::from_secs(30))
            .await?;
        Ok(cluster)
    }

    /// Poll `status` until the coordinator is READY with `n` participants
    /// connected.
    pub async fn wait_ready(&mut self, n: usize, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            for (name, child) in self.children.iter_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "{name} exited during start-up ({status}); see {}",
                        self.dir.path().join(format!("{name}.log")).display()
                    ));
                }
            }
            if let Ok(mut c) = Client::connect(&self.addr, Duration::from_secs(2)).await {
                if let Ok(s) = c.status().await {
                    let connected = s["participants"]
                        .as_array()
                        .map(|a| a.iter().filter(|p| p["connected"] == true).count())
                        .unwrap_or(0);
                    if s["state"] == "READY" && connected >= n {
                        return Ok(());
                    }
                }
            }
            if start.elapsed() > limit {
                return Err(format!("the cluster was not ready within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGTERM every process, wait for them (bounded), then kill stragglers.
    pub async fn shutdown(mut self) {
        for (_, child) in self.children.iter().rev() {
            if let Some(pid) = child.id() {
                // SAFETY: sending a signal to a child we spawned.
                unsafe {
                    libc::kill(pid as i32, libc::SIGTERM);
                }
            }
        }
        for (_, child) in self.children.iter_mut() {
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

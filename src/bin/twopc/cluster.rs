//! A throw-away local cluster for `twopc demo`, `twopc bench --local` and
//! `twopc bank`: one coordinator and N participant processes on free
//! loopback ports with temporary data directories, shut down cleanly when
//! done. Processes can be killed (SIGKILL) and restarted on their data
//! directories, for chaos runs. Every cluster gets a fresh random shared
//! secret, so its ports answer only to its own processes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use twopc::config::{LogLevel, ResourceKind, Runtime, VotePreference};
use twopc::security::auth::Secret;
use twopc::security::{ClientSecurity, SECRET_ENV};
use twopc::Client;

/// How long the cluster's own status calls wait for an answer: a member
/// that takes the connection and never answers is asked again.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub participants: usize,
    /// Participant ids are `<prefix>1..<prefix>N`.
    pub id_prefix: String,
    pub vote_preference: VotePreference,
    pub commit_probability: f64,
    pub timeout_seconds: f64,
    pub unsafe_no_fsync: bool,
    pub log_level: LogLevel,
    pub max_in_flight: usize,
    /// The coordinator's `max_connections` (participants and clients).
    pub max_connections: usize,
    /// The coordinator's `history_limit`; its configured default when
    /// `None`.
    pub history_limit: Option<u64>,
    /// `vote` or `kv`.
    pub resource: ResourceKind,
    /// For `kv`: the initial data of each participant (by position).
    pub kv_seeds: Vec<serde_json::Value>,
    /// Log segment size of every process (bytes); small values make
    /// checkpoints frequent.
    pub wal_segment_max_bytes: Option<u64>,
    /// `TWOPC_CRASH_AT` for the first start of every process: each dies at
    /// that crash point and is restarted without it (see
    /// [`LocalCluster::revive_crashed`]).
    pub crash_at: Option<String>,
    /// Start every process in a session of its own (`setsid`), as
    /// separately started services are; see [`own_session`].
    pub setsid: bool,
    /// The async runtime of every process; the configured default when
    /// `None`.
    pub runtime: Option<Runtime>,
    /// Coordinator processes: 1 is a single coordinator; 3 or 5 form a
    /// replicated group on free loopback ports.
    pub coordinators: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            participants: 3,
            id_prefix: "p".into(),
            vote_preference: VotePreference::Random,
            commit_probability: 0.9,
            timeout_seconds: 10.0,
            unsafe_no_fsync: false,
            log_level: LogLevel::Warn,
            max_in_flight: 1024,
            max_connections: 1024,
            history_limit: None,
            resource: ResourceKind::Vote,
            kv_seeds: Vec::new(),
            wal_segment_max_bytes: None,
            crash_at: None,
            setsid: false,
            runtime: None,
            coordinators: 1,
        }
    }
}

/// One process of the cluster and how to start it again.
struct Member {
    name: String,
    args: Vec<OsString>,
    child: Option<Child>,
    /// Times started; the crash point is armed for the first start only.
    starts: u32,
}

/// Running processes of a local cluster. Dropping it kills them.
pub struct LocalCluster {
    /// The coordinator's address; for a group, every member's, comma
    /// separated (clients follow the leader).
    pub addr: String,
    /// Coordinator processes (the first members).
    pub coordinators: usize,
    pub participant_ids: Vec<String>,
    /// What a client needs to talk to this cluster (its secret).
    pub security: ClientSecurity,
    /// The secret's text, handed to the children in `TWOPC_SECRET`.
    secret_text: String,
    exe: PathBuf,
    dir: tempfile::TempDir,
    /// The coordinators first, then the participants.
    members: Vec<Member>,
    /// The crash point armed at every process's first start.
    crash_at: Option<String>,
    /// Processes that died at the crash point and were restarted.
    crashes: Vec<String>,
    /// Every process in its own session ([`ClusterOptions::setsid`]).
    setsid: bool,
}

fn program() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find the twopc executable: {e}"))
}

/// Children must not inherit the caller's `TWOPC_*` settings: the flags
/// describe the whole cluster.
fn command(
    exe: &Path,
    log: &Path,
    args: &[OsString],
    secret: &str,
    crash_at: Option<&str>,
) -> Result<Command, String> {
    let mut cmd = Command::new(exe);
    for (k, _) in std::env::vars() {
        if k.starts_with("TWOPC_") {
            cmd.env_remove(k);
        }
    }
    // In the environment, not on the command line: other users can read
    // command lines, not environments.
    cmd.env(SECRET_ENV, secret);
    if let Some(point) = crash_at {
        cmd.env("TWOPC_CRASH_AT", point);
    }
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .kill_on_drop(true);
    Ok(cmd)
}

/// Start the child in a session of its own, as separately started services
/// are: with the kernel's autogroup scheduling each session is scheduled as
/// its own group, so the processes of the cluster compete with each other
/// as services do, not as threads of one job. Such a child no longer gets
/// the terminal's Ctrl-C, so it is told to stop (SIGTERM) when this process
/// is gone.
fn own_session(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only async-signal-safe functions (setsid, prctl, getppid, raise).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::raise(libc::SIGTERM);
            }
            Ok(())
        });
    }
}

/// `n` distinct free loopback ports, outside the ephemeral range (another
/// listener could still take one in between; then a member fails to start
/// and says so).
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    (0..n)
        .map(|_| twopc::net::ports::free_loopback_port())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot find free loopback ports: {e}"))
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

impl LocalCluster {
    /// Start the processes and wait until every participant is registered.
    pub async fn spawn(opts: &ClusterOptions) -> Result<LocalCluster, String> {
        let exe = program()?;
        let dir = tempfile::Builder::new()
            .prefix("twopc-cluster-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let group = opts.coordinators > 1;
        // A group's members need each other's ports before they start.
        let ports = if group {
            free_ports(opts.coordinators * 2)?
        } else {
            vec![0]
        };
        let peers: Vec<String> = (0..opts.coordinators)
            .filter(|_| group)
            .map(|i| {
                format!(
                    "{}=127.0.0.1:{}:{}",
                    i + 1,
                    ports[i],
                    ports[opts.coordinators + i]
                )
            })
            .collect();
        let wal_args = match opts.wal_segment_max_bytes {
            Some(n) => os(&["--wal-segment-max-bytes", &n.to_string()]),
            None => Vec::new(),
        };
        let runtime_args = match opts.runtime {
            Some(r) => os(&["--runtime", &r.to_string()]),
            None => Vec::new(),
        };
        let mut coordinators = Vec::new();
        for (i, port) in ports.iter().enumerate().take(opts.coordinators) {
            let name = if group {
                format!("coordinator-{}", i + 1)
            } else {
                "coordinator".to_string()
            };
            let mut cargs = os(&[
                "coordinator",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ]);
            cargs.extend(os(&[
                "--expected-participants",
                &opts.participants.to_string(),
                "--timeout-seconds",
                &opts.timeout_seconds.to_string(),
                "--max-in-flight",
                &opts.max_in_flight.to_string(),
                "--max-connections",
                &opts.max_connections.to_string(),
                "--log-level",
                &opts.log_level.to_string(),
                "--data-dir",
            ]));
            cargs.push(dir.path().join(&name).into_os_string());
            if group {
                cargs.extend(os(&[
                    "--peers",
                    &peers.join(","),
                    "--node-id",
                    &(i + 1).to_string(),
                ]));
            }
            if opts.unsafe_no_fsync {
                cargs.push("--unsafe-no-fsync".into());
            }
            if let Some(n) = opts.history_limit {
                cargs.extend(os(&["--history-limit", &n.to_string()]));
            }
            cargs.extend(wal_args.iter().cloned());
            cargs.extend(runtime_args.iter().cloned());
            coordinators.push(Member {
                name,
                args: cargs,
                child: None,
                starts: 0,
            });
        }
        let secret_text = Secret::random_text();
        let secret = Secret::from_text(&secret_text).map_err(|e| e.to_string())?;
        let mut cluster = LocalCluster {
            addr: String::new(),
            participant_ids: Vec::new(),
            security: ClientSecurity {
                secret: Some(Arc::new(secret)),
                tls: None,
            },
            secret_text,
            exe,
            dir,
            coordinators: opts.coordinators,
            members: coordinators,
            crash_at: opts.crash_at.clone(),
            crashes: Vec::new(),
            setsid: opts.setsid,
        };
        let mut addrs = Vec::new();
        for i in 0..opts.coordinators {
            cluster.start_coordinator(i).await?;
            addrs.push(std::mem::take(&mut cluster.addr));
            // Restarts must come back on the same port.
            let port = addrs[i].rsplit(':').next().unwrap_or("0").to_string();
            let args = &mut cluster.members[i].args;
            if let Some(at) = args.iter().position(|a| a == "--port") {
                args[at + 1] = port.into();
            }
        }
        cluster.addr = addrs.join(",");
        let coordinators = cluster.addr.clone();
        for i in 1..=opts.participants {
            let id = format!("{}{i}", opts.id_prefix);
            let mut args = os(&[
                "participant",
                "--id",
                &id,
                "--coordinators",
                &coordinators,
                "--vote-preference",
                &opts.vote_preference.to_string(),
                "--commit-probability",
                &opts.commit_probability.to_string(),
                "--log-level",
                &opts.log_level.to_string(),
                "--resource",
                &opts.resource.to_string(),
                "--reconnect-max-ms",
                "500",
                "--data-dir",
            ]);
            args.push(cluster.dir.path().join(&id).into_os_string());
            if let Some(seed) = opts.kv_seeds.get(i - 1) {
                let path = cluster.dir.path().join(format!("{id}-seed.json"));
                std::fs::write(&path, seed.to_string())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                args.push("--kv-seed-file".into());
                args.push(path.into_os_string());
            }
            if opts.unsafe_no_fsync {
                args.push("--unsafe-no-fsync".into());
            }
            args.extend(wal_args.iter().cloned());
            args.extend(runtime_args.iter().cloned());
            cluster.members.push(Member {
                name: id.clone(),
                args,
                child: None,
                starts: 0,
            });
            let at = cluster.members.len() - 1;
            cluster.start(at)?;
            cluster.participant_ids.push(id);
        }
        cluster
            .wait_ready(opts.participants, Duration::from_secs(30))
            .await?;
        Ok(cluster)
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    /// Start (or restart) coordinator `i` and learn its address from the
    /// line it prints once listening (into `addr` for a single one).
    async fn start_coordinator(&mut self, i: usize) -> Result<(), String> {
        let log = self.log_path(i);
        let mut cmd = command(
            &self.exe,
            &log,
            &self.members[i].args,
            &self.secret_text,
            self.armed(i),
        )?;
        cmd.stdout(Stdio::piped());
        if self.setsid {
            own_session(&mut cmd);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the coordinator ({}): {e}", self.exe.display()))?;
        self.members[i].starts += 1;
        let stdout = child.stdout.take().ok_or("coordinator has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .map_err(|_| "the coordinator did not report its address within 20 s".to_string())?
            .map_err(|e| format!("reading the coordinator's output: {e}"))?
            .ok_or_else(|| format!("the coordinator exited at start; see {}", log.display()))?;
        let addr = line
            .rsplit(' ')
            .next()
            .filter(|a| a.contains(':'))
            .ok_or_else(|| format!("unexpected coordinator output: {line}"))?
            .to_string();
        // A group's `addr` is the list of its members, set once at start.
        if self.coordinators == 1 || self.addr.is_empty() {
            self.addr = addr;
        }
        self.members[i].child = Some(child);
        Ok(())
    }

    fn start(&mut self, i: usize) -> Result<(), String> {
        let mut cmd = command(
            &self.exe,
            &self.log_path(i),
            &self.members[i].args,
            &self.secret_text,
            self.armed(i),
        )?;
        if self.setsid {
            own_session(&mut cmd);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.members[i].name))?;
        self.members[i].child = Some(child);
        self.members[i].starts += 1;
        Ok(())
    }

    /// The crash point to arm for process `i`'s next start.
    fn armed(&self, i: usize) -> Option<&str> {
        self.crash_at
            .as_deref()
            .filter(|_| self.members[i].starts == 0)
    }

    /// Restart every process that died at the armed crash point (found by
    /// its SIGKILL and the line it wrote before); returns their names. Any
    /// other exit is an error.
    pub async fn revive_crashed(&mut self) -> Result<Vec<String>, String> {
        let mut revived = Vec::new();
        for i in 0..self.members.len() {
            let Some(status) = self.members[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            else {
                continue;
            };
            let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
            let point = self.crash_at.clone().unwrap_or_default();
            let point = point.split(':').next().unwrap_or_default();
            use std::os::unix::process::ExitStatusExt;
            let crashed = !point.is_empty()
                && status.signal() == Some(libc::SIGKILL)
                && log.contains(&format!("crash point {point} reached"));
            if !crashed {
                return Err(format!(
                    "{} exited ({status}); see {}",
                    self.members[i].name,
                    self.log_path(i).display()
                ));
            }
            self.members[i].child = None;
            self.restart(i).await?;
            let name = format!("{} at {point}", self.members[i].name);
            self.crashes.push(name.clone());
            revived.push(name);
        }
        Ok(revived)
    }

    /// Every process that died at the armed crash point so far.
    pub fn crashes(&self) -> &[String] {
        &self.crashes
    }

    /// Name and process id of every running process, coordinator first.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.members
            .iter()
            .filter_map(|m| Some((m.name.clone(), m.child.as_ref()?.id()?)))
            .collect()
    }

    /// Number of processes (coordinators first, then participants).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// SIGKILL process `i` (the coordinators come first) and reap it.
    pub async fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill().await;
        }
    }

    /// Start process `i` again on its data directory.
    pub async fn restart(&mut self, i: usize) -> Result<(), String> {
        self.kill9(i).await;
        if i < self.coordinators {
            // The old listening socket may take a moment to be released.
            let start = Instant::now();
            loop {
                match self.start_coordinator(i).await {
                    Ok(()) => return Ok(()),
                    Err(e) if start.elapsed() > Duration::from_secs(10) => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        self.start(i)
    }

    /// Poll `status` until the coordinator is READY with `n` participants
    /// connected.
    pub async fn wait_ready(&mut self, n: usize, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            self.revive_crashed().await?;
            if let Ok(mut c) =
                Client::connect_with(&self.addr, &self.security, Duration::from_secs(2)).await
            {
                if let Ok(Ok(s)) = tokio::time::timeout(STATUS_TIMEOUT, c.status()).await {
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

    /// The index of the coordinator that leads the group now (0 for a
    /// single coordinator), from the status the leader reports.
    pub async fn leader(&self) -> Option<usize> {
        if self.coordinators == 1 {
            return Some(0);
        }
        let mut c = Client::connect_with(&self.addr, &self.security, Duration::from_secs(2))
            .await
            .ok()?;
        let s = tokio::time::timeout(STATUS_TIMEOUT, c.status())
            .await
            .ok()?
            .ok()?;
        let me = s["group"]["me"].as_u64()? as usize;
        (s["group"]["role"] == "leader" && me >= 1).then(|| me - 1)
    }

    /// After the leader (index `old`) was killed: the time until another
    /// member leads and is READY with `n` participants (it decides again).
    pub async fn await_takeover(&self, old: usize, n: usize, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let attempt = async {
                let mut c =
                    Client::connect_with(&self.addr, &self.security, Duration::from_millis(500))
                        .await
                        .ok()?;
                let s = c.status().await.ok()?;
                let me = s["group"]["me"].as_u64()? as usize;
                let connected = s["participants"]
                    .as_array()
                    .map(|a| a.iter().filter(|p| p["connected"] == true).count())
                    .unwrap_or(0);
                (me != old + 1 && s["state"] == "READY" && connected >= n).then_some(())
            };
            // Bounded: a member that takes the connection and never
            // answers must not stall the wait.
            if let Ok(Some(())) = tokio::time::timeout(STATUS_TIMEOUT, attempt).await {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGTERM every process, wait for them (bounded), then kill stragglers.
    pub async fn shutdown(mut self) {
        for m in self.members.iter().rev() {
            if let Some(pid) = m.child.as_ref().and_then(|c| c.id()) {
                // SAFETY: sending a signal to a child we spawned.
                unsafe {
                    libc::kill(pid as i32, libc::SIGTERM);
                }
            }
        }
        for m in self.members.iter_mut() {
            if let Some(c) = m.child.as_mut() {
                if tokio::time::timeout(Duration::from_secs(5), c.wait())
                    .await
                    .is_err()
                {
                    let _ = c.kill().await;
                }
            }
        }
    }
}

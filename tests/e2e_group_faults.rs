//! Faults of the replicated coordinator group, end to end: three real
//! coordinator processes on loopback forming a Raft group, three kv shard
//! participants, and clients running money transfers while
//!
//! - the leader is cut off from both other members by a TCP proxy in front
//!   of every member's Raft port, then the partition heals;
//! - a follower is killed (SIGKILL) and restarted;
//! - every member is restarted in turn (SIGTERM or SIGKILL).
//!
//! Every transfer carries a client-chosen transaction id and is submitted
//! again with the same id after any error until an outcome arrives, so no
//! transfer is left without an outcome. At the end the shards are read and
//! checked: money conserved, no negative balance, every transfer applied
//! on both of its shards or neither, the data agrees with every outcome a
//! client saw, nothing in doubt on any participant, and submitting an id
//! again answers its recorded outcome instead of running it twice.
//!
//! Two smaller tests pin what the big ones rely on: every member stopped
//! and started again still knows every decision, and a cut-off leader says
//! on `GET /health` that it has no quorum. `TWOPC_TEST_KEEP=1` keeps the
//! data directories and logs; `TWOPC_TEST_SEED` replays a run's transfers.

mod common;

use common::{clean_command, participant_txn_list, Proc, COORDINATOR, PARTICIPANT};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use twopc::client::{Client, ClientError};
use twopc::protocol::{Decision, ErrorCode, ParticipantId, SubmitRequest, TxnId};
use twopc::security::ClientSecurity;

/// The members' election timeout (the default, `raft_election_timeout_ms`).
const ELECTION_TIMEOUT: Duration = Duration::from_millis(300);
/// What a condition may take beyond what the product promises: a debug
/// build on a loaded two-core machine.
const SLACK: Duration = Duration::from_secs(5);
/// Bound for anything awaited that has no tighter promise.
const PATIENCE: Duration = Duration::from_secs(30);
/// How long a client keeps resubmitting one transfer before it gives up
/// (and the transfer counts as lost).
const RETRY_LIMIT: Duration = Duration::from_secs(40);
const SHARDS: usize = 3;
const ACCOUNTS: usize = 12;
const INITIAL_BALANCE: i64 = 100;
const CLIENTS: usize = 4;

/// The tests start many processes each: one at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// The start of a test under load: the other group tests kept out, the
/// run's seed said (`TWOPC_TEST_SEED` replays its transfers), a group
/// (behind the proxy with `proxied`) and a workload with 20 outcomes in
/// before `before`, and when it began.
fn under_load(
    what: &str,
    tag: &str,
    proxied: bool,
    before: &str,
) -> (std::sync::MutexGuard<'static, ()>, Group, Workload, Instant) {
    let serial = serial();
    let seed = common::seed();
    eprintln!("{what}: TWOPC_TEST_SEED={seed} replays this run's transfers");
    let began = Instant::now();
    let g = Group::start(proxied);
    let load = Workload::start(&g.addrs, tag, seed);
    load.wait_progress(20, &format!("20 outcomes before {before}"), PATIENCE);
    (serial, g, load, began)
}

/// Submit `t` once to the group (following its leader) and return the
/// outcome, or fail naming `what`.
fn submit_once(g: &Group, t: &Transfer, what: &str) -> twopc::protocol::Outcome {
    block_on(async {
        let mut c = Client::connect_with(
            &g.addrs,
            &ClientSecurity::default(),
            Duration::from_secs(10),
        )
        .await?;
        c.submit(t.request()).await
    })
    .map(|(_, o)| o)
    .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Submit `t` and see it commit while s2, armed to stop right after its
/// vote, stops at that point: the acknowledgement of s2 is missing.
fn commit_as_s2_stops(g: &mut Group, t: &Transfer) {
    let o = submit_once(g, t, "the transfer's outcome");
    assert_eq!(o.decision, Decision::Commit, "{o:?}");
    let exit = g.shards[1].proc.wait_exit(PATIENCE);
    assert!(exit.is_some(), "s2 did not stop at its crash point");
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Run `f` on a private current-thread runtime.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// Poll `f` every 20 ms until it returns `Some`, at most `limit`; panics
/// with `what` and the last observation otherwise.
fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => {
                assert!(
                    start.elapsed() < limit,
                    "timed out after {limit:?} waiting for {what}; last seen: {last}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// The Raft-port proxy.

/// Read one frame (4-byte big-endian length, then the bytes).
fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head)?;
    let len = u32::from_be_bytes(head) as usize;
    if len > 64 * 1024 * 1024 {
        return Err(std::io::Error::other("frame too large for the proxy"));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(body)
}

fn write_frame(s: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    let mut buf = (body.len() as u32).to_be_bytes().to_vec();
    buf.extend_from_slice(body);
    s.write_all(&buf)
}

/// The pair of members in a canonical order.
fn pair(a: u64, b: u64) -> (u64, u64) {
    (a.min(b), a.max(b))
}

struct ProxyConn {
    id: u64,
    pair: (u64, u64),
    down: TcpStream,
    up: TcpStream,
}

#[derive(Default)]
struct ProxyState {
    cut: HashSet<(u64, u64)>,
    conns: Vec<ProxyConn>,
    next_id: u64,
    /// Connections refused because their pair was cut (evidence the
    /// partition was exercised).
    refused: u64,
}

/// A TCP proxy in front of every member's Raft port. It learns which member
/// connects from the first frame the connecting side sends (`hello`, after
/// the server's `challenge`), so it can cut traffic between chosen pairs.
struct Proxy {
    state: Arc<Mutex<ProxyState>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn new() -> Proxy {
        Proxy {
            state: Arc::default(),
            stop: Arc::default(),
            threads: Vec::new(),
        }
    }

    /// Forward connections to `listener` to member `dst` at `upstream`.
    fn serve(&mut self, listener: TcpListener, dst: u64, upstream: String) {
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let (state, stop) = (self.state.clone(), self.stop.clone());
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((down, _)) => {
                        let (state, upstream) = (state.clone(), upstream.clone());
                        std::thread::spawn(move || relay(down, dst, &upstream, &state));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
    }

    /// Cut `a` from `b` (both directions): open connections between them
    /// are closed, new ones refused after their hello.
    fn cut(&self, a: u64, b: u64) {
        let p = pair(a, b);
        let mut st = self.state.lock().unwrap();
        st.cut.insert(p);
        st.conns.retain(|c| {
            if c.pair == p {
                let _ = c.down.shutdown(Shutdown::Both);
                let _ = c.up.shutdown(Shutdown::Both);
                false
            } else {
                true
            }
        });
    }

    fn heal(&self) {
        self.state.lock().unwrap().cut.clear();
    }

    fn refused(&self) -> u64 {
        self.state.lock().unwrap().refused
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.state.lock().unwrap().conns.drain(..) {
            let _ = c.down.shutdown(Shutdown::Both);
            let _ = c.up.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One proxied connection: the server's challenge down, the member's hello
/// up (learning who it is), then bytes both ways until either side closes
/// or the pair is cut.
fn relay(mut down: TcpStream, dst: u64, upstream: &str, state: &Mutex<ProxyState>) {
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return;
    };
    let handshake = Some(Duration::from_secs(10));
    let _ = up.set_read_timeout(handshake);
    let _ = down.set_read_timeout(handshake);
    let _ = up.set_nodelay(true);
    let _ = down.set_nodelay(true);
    let Ok(challenge) = read_frame(&mut up) else {
        return;
    };
    if write_frame(&mut down, &challenge).is_err() {
        return;
    }
    let Ok(hello) = read_frame(&mut down) else {
        return;
    };
    let src = serde_json::from_slice::<Value>(&hello)
        .ok()
        .and_then(|v| v["body"]["member"].as_u64());
    let Some(src) = src else {
        return;
    };
    let p = pair(src, dst);
    let id = {
        let mut st = state.lock().unwrap();
        if st.cut.contains(&p) {
            st.refused += 1;
            let _ = down.shutdown(Shutdown::Both);
            let _ = up.shutdown(Shutdown::Both);
            return;
        }
        let (Ok(d), Ok(u)) = (down.try_clone(), up.try_clone()) else {
            return;
        };
        st.next_id += 1;
        let id = st.next_id;
        st.conns.push(ProxyConn {
            id,
            pair: p,
            down: d,
            up: u,
        });
        id
    };
    let _ = up.set_read_timeout(None);
    let _ = down.set_read_timeout(None);
    if write_frame(&mut up, &hello).is_ok() {
        if let (Ok(mut d2), Ok(mut u2)) = (down.try_clone(), up.try_clone()) {
            let back = std::thread::spawn(move || {
                let _ = std::io::copy(&mut u2, &mut d2);
                let _ = d2.shutdown(Shutdown::Both);
                let _ = u2.shutdown(Shutdown::Both);
            });
            let _ = std::io::copy(&mut down, &mut up);
            let _ = up.shutdown(Shutdown::Both);
            let _ = down.shutdown(Shutdown::Both);
            let _ = back.join();
        }
    }
    let _ = down.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
    state.lock().unwrap().conns.retain(|c| c.id != id);
}

// ---------------------------------------------------------------------------
// The group, its participants, and how to ask them.

struct Member {
    id: u64,
    port: u16,
    /// Where its Raft port listens (behind the proxy when there is one).
    raft_bind: Option<String>,
    dir: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
    /// Its HTTP admin address (a new ephemeral port on every start).
    http: String,
}

struct Shard {
    id: String,
    proc: Proc,
    /// Its admin (protocol) port, for `txn list`.
    admin: String,
}

struct Group {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    peers: String,
    /// The members' coordinator ports, comma-separated, as clients and
    /// participants are given them.
    addrs: String,
    shards: Vec<Shard>,
    proxy: Option<Proxy>,
}

impl Group {
    /// Three members (with a proxy in front of their Raft ports when
    /// `proxied`) and three kv shards, READY.
    fn start(proxied: bool) -> Group {
        let mut dir = tempfile::Builder::new()
            .prefix("twopc-faults-")
            .tempdir()
            .expect("tempdir");
        // TWOPC_TEST_KEEP=1 keeps the data directories and logs.
        if std::env::var_os("TWOPC_TEST_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        let mut proxy = proxied.then(Proxy::new);
        let mut members = Vec::new();
        let mut peers = Vec::new();
        // Distinct ports outside the ephemeral range: no outgoing
        // connection takes one before its member listens on it.
        let hold = common::free_port;
        for id in 1..=3u64 {
            let port = hold();
            let (raft_port, raft_bind) = match proxy.as_mut() {
                Some(proxy) => {
                    // The proxy holds the port named in `peers`; the member
                    // listens on another one.
                    let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
                    let front = listener.local_addr().expect("proxy addr").port();
                    let real = format!("127.0.0.1:{}", hold());
                    proxy.serve(listener, id, real.clone());
                    (front, Some(real))
                }
                None => (hold(), None),
            };
            peers.push(format!("{id}=127.0.0.1:{port}:{raft_port}"));
            members.push(Member {
                id,
                port,
                raft_bind,
                dir: dir.path().join(format!("coordinator-{id}")),
                log: dir.path().join(format!("coordinator-{id}.log")),
                proc: None,
                http: String::new(),
            });
        }
        let addrs = members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port))
            .collect::<Vec<_>>()
            .join(",");
        let mut g = Group {
            dir,
            members,
            peers: peers.join(","),
            addrs,
            shards: Vec::new(),
            proxy,
        };
        for i in 0..3 {
            g.start_member(i);
        }
        for s in 0..SHARDS {
            g.start_shard(s);
        }
        g.wait_ready();
        g
    }

    fn idx(&self, id: u64) -> usize {
        self.members
            .iter()
            .position(|m| m.id == id)
            .expect("a member id")
    }

    /// Start member `i` on its data directory and learn its HTTP address.
    fn start_member(&mut self, i: usize) {
        let start = Instant::now();
        loop {
            let m = &self.members[i];
            let mut cmd = clean_command(COORDINATOR);
            cmd.args(["--host", "127.0.0.1", "--port", &m.port.to_string()])
                .args(["--peers", &self.peers, "--node-id", &m.id.to_string()])
                .args(["--expected-participants", &SHARDS.to_string()])
                .args(["--timeout-seconds", "5", "--admin-port", "0"])
                .args(["--log-level", "debug"])
                .arg("--data-dir")
                .arg(&m.dir);
            if let Some(bind) = &m.raft_bind {
                cmd.args(["--raft-bind", bind]);
            }
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(append(&m.log));
            let mut child = cmd.spawn().expect("spawn a coordinator member");
            let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
            let mut http = None;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(a) = line.split("admin http listening on ").nth(1) {
                    http = Some(a.trim().to_string());
                    break;
                }
            }
            // Keep draining stdout so the child never blocks on it.
            std::thread::spawn(move || for _ in lines {});
            let mut proc = Proc {
                name: format!("coordinator-{}", m.id),
                child: Some(child),
                log: m.log.clone(),
            };
            match http {
                Some(h) => {
                    self.members[i].http = h;
                    self.members[i].proc = Some(proc);
                    return;
                }
                None => {
                    proc.kill9();
                    // The port of the previous run may not be free yet.
                    assert!(
                        start.elapsed() < Duration::from_secs(10),
                        "member {} did not start; log:\n{}",
                        m.id,
                        tail(&m.log)
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn start_shard(&mut self, s: usize) {
        let shard = self.spawn_shard(s, &[]);
        self.shards.push(shard);
    }

    /// Kill shard `s` (SIGKILL) and start it again on its data directory
    /// with `env` (a crash point) added.
    fn restart_shard(&mut self, s: usize, env: &[(&str, &str)]) {
        self.shards[s].proc.kill9();
        self.shards[s] = self.spawn_shard(s, env);
    }

    fn spawn_shard(&self, s: usize, env: &[(&str, &str)]) -> Shard {
        let id = format!("s{}", s + 1);
        let seed: serde_json::Map<String, Value> = (0..ACCOUNTS)
            .filter(|a| a % SHARDS == s)
            .map(|a| (account(a), json!(INITIAL_BALANCE)))
            .collect();
        let seed_file = self.dir.path().join(format!("{id}-seed.json"));
        std::fs::write(&seed_file, Value::Object(seed).to_string()).expect("write the kv seed");
        let log = self.dir.path().join(format!("{id}.log"));
        let mut cmd = clean_command(PARTICIPANT);
        cmd.args(["--id", &id, "--coordinators", &self.addrs])
            .args(["--resource", "kv", "--vote-preference", "commit"])
            .arg("--kv-seed-file")
            .arg(&seed_file)
            .arg("--data-dir")
            .arg(self.dir.path().join(&id))
            .args(["--admin-port", "0", "--log-level", "debug"])
            .args(["--reconnect-initial-ms", "20", "--reconnect-max-ms", "200"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(append(&log));
        let mut child = cmd.spawn().expect("spawn a participant");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut admin = None;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(a) = line.split("admin listening on ").nth(1) {
                admin = Some(a.trim().to_string());
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let proc = Proc {
            name: id.clone(),
            child: Some(child),
            log: log.clone(),
        };
        let admin = admin.unwrap_or_else(|| panic!("{id} did not start; log:\n{}", tail(&log)));
        Shard { id, proc, admin }
    }

    /// The leader's status, reached through the member list as a client
    /// reaches it; `Err` with why when no member leads.
    fn leader_status(&self) -> Result<Value, String> {
        leader_status_at(&self.addrs)
    }

    /// Wait until a member leads, is READY and has every shard connected;
    /// returns its status.
    fn wait_ready(&self) -> Value {
        poll("a leader READY with every shard", PATIENCE, || {
            let s = self.leader_status()?;
            if s["state"] == "READY" && connected(&s) >= SHARDS {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        })
    }

    /// `GET /status` on member `id`'s HTTP admin port (a follower answers
    /// with its view of the group too).
    fn member_status(&self, id: u64) -> Result<Value, String> {
        http_json(&self.members[self.idx(id)].http, "/status").map(|(_, v)| v)
    }

    fn member_health(&self, id: u64) -> Result<(u16, Value), String> {
        http_json(&self.members[self.idx(id)].http, "/health")
    }

    fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("a proxied group")
    }

    /// Everything the members and shards logged (the end of each), for
    /// failure messages.
    fn logs(&self) -> String {
        let mut s = String::new();
        for m in &self.members {
            s += &format!("--- coordinator-{} ---\n{}\n", m.id, tail(&m.log));
        }
        for sh in &self.shards {
            s += &format!("--- {} ---\n{}\n", sh.id, tail(&sh.proc.log));
        }
        s
    }
}

fn leader_status_at(addrs: &str) -> Result<Value, String> {
    block_on(async {
        let mut c = Client::connect_with(addrs, &ClientSecurity::default(), Duration::from_secs(3))
            .await
            .map_err(|e| e.to_string())?;
        let s = c.status().await.map_err(|e| e.to_string())?;
        match s["group"]["role"] == "leader" {
            true => Ok(s),
            false => Err(format!("not a leader's status: {s}")),
        }
    })
}

/// Status asked of the member at `addr` alone (no redirect).
fn direct_status(addr: &str) -> Result<Value, ClientError> {
    block_on(async {
        let mut c =
            Client::connect_with(addr, &ClientSecurity::default(), Duration::from_secs(3)).await?;
        c.status().await
    })
}

fn connected(s: &Value) -> usize {
    s["participants"]
        .as_array()
        .map(|a| a.iter().filter(|p| p["connected"] == true).count())
        .unwrap_or(0)
}

/// A plain HTTP/1.1 GET: status code and JSON body.
fn http_json(addr: &str, path: &str) -> Result<(u16, Value), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let code: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP reply from {addr}: {text:?}"))?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v = serde_json::from_str(body).map_err(|e| format!("GET {path}: {e}: {text}"))?;
    Ok((code, v))
}

fn append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log file")
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

// ---------------------------------------------------------------------------
// The transfer workload.

fn account(i: usize) -> String {
    format!("acct-{i:02}")
}

fn shard_of(a: usize) -> String {
    format!("s{}", a % SHARDS + 1)
}

fn marker(id: &str) -> String {
    format!("m-{id}")
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Seen {
    Committed,
    Aborted,
    /// No outcome within RETRY_LIMIT.
    Unknown,
}

/// One transfer and what its client saw.
#[derive(Clone, Debug)]
struct Transfer {
    id: String,
    from: usize,
    to: usize,
    amount: i64,
    seen: Seen,
    /// Submits it took (1 when the first one was answered).
    submits: u32,
    /// What the failed submits got, in order.
    errors: Vec<String>,
}

impl Transfer {
    fn request(&self) -> SubmitRequest {
        let mark = json!({"op": "put", "key": marker(&self.id), "value": {"from": self.from, "to": self.to, "amount": self.amount}});
        let data = json!({"operations": {
            shard_of(self.from): [{"op": "add", "key": account(self.from), "delta": -self.amount, "min": 0}, mark],
            shard_of(self.to): [{"op": "add", "key": account(self.to), "delta": self.amount}, mark],
        }});
        SubmitRequest {
            data,
            transaction_id: Some(TxnId(self.id.clone())),
            ..Default::default()
        }
    }
}

/// Clients submitting transfers until stopped.
struct Workload {
    stop: Arc<AtomicBool>,
    /// Outcomes the clients received so far.
    outcomes: Arc<AtomicU64>,
    workers: Vec<std::thread::JoinHandle<Vec<Transfer>>>,
}

impl Workload {
    fn start(addrs: &str, tag: &str, seed: u64) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(AtomicU64::new(0));
        let workers = (0..CLIENTS)
            .map(|w| {
                let (stop, outcomes) = (stop.clone(), outcomes.clone());
                let (addrs, tag) = (addrs.to_string(), tag.to_string());
                std::thread::spawn(move || {
                    block_on(client_loop(addrs, tag, w, seed, stop, outcomes))
                })
            })
            .collect();
        Workload {
            stop,
            outcomes,
            workers,
        }
    }

    fn outcomes(&self) -> u64 {
        self.outcomes.load(Ordering::Relaxed)
    }

    /// Wait until the clients received `n` more outcomes.
    fn wait_progress(&self, n: u64, what: &str, limit: Duration) {
        let from = self.outcomes();
        poll(what, limit, || {
            let got = self.outcomes() - from;
            if got >= n {
                Ok(())
            } else {
                Err(format!("{got} of {n} outcomes"))
            }
        });
    }

    /// Stop the clients (each finishes the transfer it has started) and
    /// return every transfer.
    fn finish(self) -> Vec<Transfer> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for w in self.workers {
            all.extend(w.join().expect("a client thread panicked"));
        }
        all
    }
}

async fn client_loop(
    addrs: String,
    tag: String,
    w: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
    outcomes: Arc<AtomicU64>,
) -> Vec<Transfer> {
    let mut rng = StdRng::seed_from_u64(seed ^ (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut done = Vec::new();
    let mut client: Option<Client> = None;
    let security = ClientSecurity::default();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (from, to) = loop {
            let (f, t) = (rng.random_range(0..ACCOUNTS), rng.random_range(0..ACCOUNTS));
            if f % SHARDS != t % SHARDS {
                break (f, t);
            }
        };
        let mut t = Transfer {
            id: format!("{tag}-c{w}-{n}"),
            from,
            to,
            amount: rng.random_range(1..=INITIAL_BALANCE / 2),
            seen: Seen::Unknown,
            submits: 0,
            errors: Vec::new(),
        };
        let req = t.request();
        let started = Instant::now();
        while started.elapsed() < RETRY_LIMIT {
            if client.is_none() {
                match Client::connect_with(&addrs, &security, Duration::from_secs(10)).await {
                    Ok(c) => client = Some(c),
                    Err(e) => {
                        t.errors.push(format!("connect: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
            let Some(c) = client.as_mut() else { continue };
            t.submits += 1;
            match c.submit(req.clone()).await {
                Ok((txn, o)) => {
                    assert_eq!(txn.0, t.id, "an outcome for another transaction id");
                    t.seen = match o.decision {
                        Decision::Commit => Seen::Committed,
                        Decision::Abort => Seen::Aborted,
                    };
                    outcomes.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    // Whatever went wrong, the same id is submitted again:
                    // the coordinator runs an id at most once.
                    let refused_here = matches!(
                        &e,
                        ClientError::Refused { code, .. } if code.known() == Some(ErrorCode::InProgress)
                    );
                    t.errors.push(e.to_string());
                    if !refused_here {
                        client = None;
                    }
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }
        }
        done.push(t);
    }
    done
}

/// Every shard's accounts and the markers of `transfers`, read through
/// transactions of `get`s (which wait for any lock a transaction still
/// holds, so a read that commits saw nothing in doubt).
fn read_all(addrs: &str, transfers: &[Transfer]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for s in 0..SHARDS {
        let id = format!("s{}", s + 1);
        let mut ops: Vec<Value> = (0..ACCOUNTS)
            .filter(|a| a % SHARDS == s)
            .map(|a| json!({"op": "get", "key": account(a)}))
            .collect();
        ops.extend(
            transfers
                .iter()
                .filter(|t| shard_of(t.from) == id || shard_of(t.to) == id)
                .map(|t| json!({"op": "get", "key": marker(&t.id)})),
        );
        let req = SubmitRequest {
            data: json!({"operations": { id.clone(): ops }}),
            ..Default::default()
        };
        let reads = poll(&format!("a read of shard {id} to commit"), PATIENCE, || {
            let r = block_on(async {
                let mut c = Client::connect_with(
                    addrs,
                    &ClientSecurity::default(),
                    Duration::from_secs(10),
                )
                .await?;
                c.submit(req.clone()).await
            });
            match r {
                Ok((_, o)) if o.decision == Decision::Commit => Ok(o
                    .results
                    .get(&ParticipantId(id.clone()))
                    .and_then(|v| v.as_object())
                    .cloned()
                    .unwrap_or_default()),
                Ok((_, o)) => Err(format!("aborted: {:?}", o.reason)),
                Err(e) => Err(e.to_string()),
            }
        });
        for (k, v) in reads {
            out.insert(format!("{id}/{k}"), v);
        }
    }
    out
}

/// The end-of-run checks. Panics with every violation found.
fn check_outcomes(g: &Group, transfers: &[Transfer]) -> (usize, usize) {
    g.wait_ready();
    let state = read_all(&g.addrs, transfers);
    let present = |shard: &str, id: &str| {
        !state
            .get(&format!("{shard}/{}", marker(id)))
            .unwrap_or(&Value::Null)
            .is_null()
    };
    let mut violations = Vec::new();
    let mut expected = [INITIAL_BALANCE; ACCOUNTS];
    let (mut committed, mut aborted) = (0, 0);
    for t in transfers {
        let (on_from, on_to) = (
            present(&shard_of(t.from), &t.id),
            present(&shard_of(t.to), &t.id),
        );
        if on_from != on_to {
            violations.push(format!(
                "transfer {} is applied on {} only; the client saw {:?} after {} submits ({:?})",
                t.id,
                if on_from {
                    shard_of(t.from)
                } else {
                    shard_of(t.to)
                },
                t.seen,
                t.submits,
                t.errors
            ));
        }
        match t.seen {
            Seen::Committed => {
                committed += 1;
                if !(on_from && on_to) {
                    violations.push(format!(
                        "transfer {} was reported committed but is not applied on both shards (submits {}, errors {:?})",
                        t.id, t.submits, t.errors
                    ));
                }
            }
            Seen::Aborted => {
                aborted += 1;
                if on_from || on_to {
                    violations.push(format!(
                        "transfer {} was reported aborted but is applied (submits {}, errors {:?})",
                        t.id, t.submits, t.errors
                    ));
                }
            }
            Seen::Unknown => violations.push(format!(
                "transfer {} got no outcome in {RETRY_LIMIT:?} over {} submits: {:?}",
                t.id, t.submits, t.errors
            )),
        }
        if on_from && on_to {
            expected[t.from] -= t.amount;
            expected[t.to] += t.amount;
        }
    }
    let mut total = 0;
    for (a, want) in expected.iter().enumerate() {
        match state
            .get(&format!("{}/{}", shard_of(a), account(a)))
            .and_then(|v| v.as_i64())
        {
            Some(b) => {
                total += b;
                if b < 0 {
                    violations.push(format!("{} has a negative balance {b}", account(a)));
                }
                if b != *want {
                    violations.push(format!(
                        "{} holds {b}, expected {want} from the transfers applied (a transfer applied twice or partly?)",
                        account(a)
                    ));
                }
            }
            None => violations.push(format!("{} is missing", account(a))),
        }
    }
    let want_total = INITIAL_BALANCE * ACCOUNTS as i64;
    if total != want_total {
        violations.push(format!("total balance {total}, expected {want_total}"));
    }
    // Nothing in doubt on any participant.
    for sh in &g.shards {
        poll(
            &format!("no transaction in doubt at {}", sh.id),
            PATIENCE,
            || {
                let l = participant_txn_list(&sh.admin, Some("in-doubt"));
                match l["total"] == 0 {
                    true => Ok(()),
                    false => Err(l.to_string()),
                }
            },
        );
    }
    // Exactly one outcome per id: submitting every transfer again answers
    // its recorded outcome and runs nothing.
    let again = block_on(async {
        let mut c = Client::connect_with(
            &g.addrs,
            &ClientSecurity::default(),
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for t in transfers.iter().filter(|t| t.seen != Seen::Unknown) {
            let r = c
                .submit(t.request())
                .await
                .map_err(|e| format!("{}: {e}", t.id))?;
            out.push((t, r.1));
        }
        Ok::<_, String>(out)
    });
    match again {
        Ok(again) => {
            for (t, o) in again {
                let seen = match o.decision {
                    Decision::Commit => Seen::Committed,
                    Decision::Abort => Seen::Aborted,
                };
                if !o.repeated || seen != t.seen {
                    violations.push(format!(
                        "submitting {} again answered {:?} (repeated: {}), the client had seen {:?}",
                        t.id, seen, o.repeated, t.seen
                    ));
                }
            }
        }
        Err(e) => violations.push(format!("submitting the transfers again failed: {e}")),
    }
    assert!(
        violations.is_empty(),
        "{} violations:\n{}\n\nlogs:\n{}",
        violations.len(),
        violations.join("\n"),
        g.logs()
    );
    (committed, aborted)
}

fn member_id(s: &Value) -> u64 {
    s["group"]["me"]
        .as_u64()
        .expect("group.me in a member's status")
}

fn term(s: &Value) -> u64 {
    s["group"]["term"]
        .as_u64()
        .expect("group.term in a member's status")
}

// ---------------------------------------------------------------------------
// The tests.

/// The leader is cut off from both other members for a few seconds under
/// load: it stops deciding within the election timeout (plus slack), the
/// two others elect a new leader of a higher term that keeps deciding, the
/// old one comes back as its follower, and the data agrees with every
/// outcome the clients saw.
#[test]
fn a_leader_cut_off_from_the_majority_stops_and_the_majority_goes_on() {
    let (_serial, g, load, began) = under_load("partition", "part", true, "the partition");

    let before = g.wait_ready();
    let old = member_id(&before);
    let old_term = term(&before);
    let old_addr = format!("127.0.0.1:{}", g.members[g.idx(old)].port);
    let others: Vec<u64> = (1..=3).filter(|i| *i != old).collect();
    let cut_at = Instant::now();
    for o in &others {
        g.proxy().cut(old, *o);
    }

    // The old leader stops deciding: its health no longer says a ready
    // leader and its coordinator port refuses with not_leader.
    let stopped = poll(
        "the cut-off leader to stop deciding",
        ELECTION_TIMEOUT + SLACK,
        || {
            let (code, h) = g.member_health(old)?;
            let healthy_leader = code == 200 && h["role"] == "leader";
            let refused = match direct_status(&old_addr) {
                Err(ClientError::Refused { code, .. }) => {
                    code.known() == Some(ErrorCode::NotLeader)
                }
                other => return Err(format!("health {code} {h}; status {other:?}")),
            };
            match !healthy_leader && refused {
                true => Ok((cut_at.elapsed(), code, h)),
                false => Err(format!("health {code} {h}")),
            }
        },
    );
    eprintln!(
        "the cut-off leader (member {old}) stopped deciding {} ms after the cut; its /health: {} {}",
        stopped.0.as_millis(),
        stopped.1,
        stopped.2
    );

    let view = g.member_status(old).unwrap_or_else(|e| json!(e));
    eprintln!(
        "its view while cut off: role {}, leader {}, term {}",
        view["group"]["role"], view["group"]["leader"], view["group"]["term"]
    );

    // The majority elects another member, of a higher term, READY.
    let majority: String = others
        .iter()
        .map(|i| format!("127.0.0.1:{}", g.members[g.idx(*i)].port))
        .collect::<Vec<_>>()
        .join(",");
    let new = poll("the majority to elect a new leader", PATIENCE, || {
        let s = leader_status_at(&majority)?;
        if member_id(&s) != old
            && term(&s) > old_term
            && s["state"] == "READY"
            && connected(&s) >= SHARDS
        {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    let (new_id, new_term) = (member_id(&new), term(&new));
    eprintln!(
        "member {new_id} leads term {new_term} (was member {old}, term {old_term}) {} ms after the cut",
        cut_at.elapsed().as_millis()
    );

    // Clients keep getting decisions, from the new leader: its own count of
    // decided transactions grows while the old leader is still cut off.
    let new_addr = format!("127.0.0.1:{}", g.members[g.idx(new_id)].port);
    let decided = |s: &Value| {
        s["transactions"]["committed"].as_u64().unwrap_or(0)
            + s["transactions"]["aborted"].as_u64().unwrap_or(0)
    };
    let base = decided(&new);
    load.wait_progress(10, "10 outcomes during the partition", PATIENCE);
    // (The leader counts a transaction once it ended: acknowledged too.)
    poll(
        "the new leader to have decided 10 transactions",
        PATIENCE,
        || {
            let now = direct_status(&new_addr).map_err(|e| e.to_string())?;
            match member_id(&now) == new_id && decided(&now) >= base + 10 {
                true => Ok(()),
                false => Err(now.to_string()),
            }
        },
    );
    // The old leader is still cut off and still refuses.
    assert!(
        matches!(direct_status(&old_addr), Err(ClientError::Refused { .. })),
        "the cut-off member decides again while cut off"
    );
    // Hold the partition a few seconds in all.
    while cut_at.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    g.proxy().heal();
    let healed_at = Instant::now();

    // The old leader rejoins as a follower of the new term.
    let rejoined = poll("the old leader to follow the new one", PATIENCE, || {
        let s = g.member_status(old)?;
        let gr = &s["group"];
        let ok = gr["role"] == "follower"
            && gr["leader"].as_u64() == Some(new_id)
            && gr["term"].as_u64().is_some_and(|t| t >= new_term);
        let (code, h) = g.member_health(old)?;
        match ok && code == 200 && h["role"] == "follower" {
            true => Ok(s),
            false => Err(format!("status {s}; health {code} {h}")),
        }
    });
    eprintln!(
        "member {old} follows member {new_id} in term {} {} ms after healing",
        rejoined["group"]["term"],
        healed_at.elapsed().as_millis()
    );
    load.wait_progress(10, "10 outcomes after healing", PATIENCE);
    let transfers = load.finish();
    let after = g.wait_ready();
    assert_eq!(
        member_id(&after),
        new_id,
        "leadership moved again after healing (the old leader disrupted the group?): {after}"
    );
    let (committed, aborted) = check_outcomes(&g, &transfers);
    eprintln!(
        "partition: {} transfers ({committed} committed, {aborted} aborted), {} resubmitted after an error, {} connections refused by the proxy, {} s in all",
        transfers.len(),
        transfers.iter().filter(|t| t.submits > 1).count(),
        g.proxy().refused(),
        began.elapsed().as_secs()
    );
}

/// A follower killed (SIGKILL) under load and restarted: no transfer is
/// lost and it catches up (follower of the current term, applied index up
/// with the leader's).
#[test]
fn a_follower_killed_and_restarted_under_load_catches_up() {
    let (_serial, mut g, load, began) = under_load("follower kill", "fk", false, "the kill");
    let leader = g.wait_ready();
    let leader_id = member_id(&leader);
    let victim = (1..=3).find(|i| *i != leader_id).expect("a follower");
    let vi = g.idx(victim);
    g.members[vi].proc.as_mut().expect("running").kill9();
    load.wait_progress(20, "20 outcomes with a follower down", PATIENCE);
    let leader_applied = |g: &Group| {
        let s = g.leader_status()?;
        s["group"]["applied_index"]
            .as_u64()
            .map(|a| (a, member_id(&s), term(&s)))
            .ok_or_else(|| format!("no applied_index: {s}"))
    };
    let (at_restart, _, _) = poll("the leader's applied index", PATIENCE, || {
        leader_applied(&g)
    });
    let restarted = Instant::now();
    g.start_member(vi);
    let caught = poll("the restarted follower to catch up", PATIENCE, || {
        let s = g.member_status(victim)?;
        let (_, lid, lterm) = leader_applied(&g)?;
        let gr = &s["group"];
        let ok = gr["role"] == "follower"
            && gr["leader"].as_u64() == Some(lid)
            && gr["term"].as_u64() == Some(lterm)
            && gr["applied_index"]
                .as_u64()
                .is_some_and(|a| a >= at_restart);
        match ok {
            true => Ok(s),
            false => Err(format!(
                "follower {s}; leader applied {at_restart} at the restart"
            )),
        }
    });
    eprintln!(
        "member {victim} caught up (applied {} ≥ {at_restart}) {} ms after its restart",
        caught["group"]["applied_index"],
        restarted.elapsed().as_millis()
    );
    load.wait_progress(10, "10 outcomes after the restart", PATIENCE);
    let transfers = load.finish();
    // Idle: the follower applies exactly what the leader applied.
    poll(
        "the follower's applied index to equal the leader's",
        PATIENCE,
        || {
            let (a, _, _) = leader_applied(&g)?;
            let s = g.member_status(victim)?;
            match s["group"]["applied_index"].as_u64() == Some(a) {
                true => Ok(()),
                false => Err(format!("leader applied {a}; follower {s}")),
            }
        },
    );
    let (committed, aborted) = check_outcomes(&g, &transfers);
    eprintln!(
        "follower kill: {} transfers ({committed} committed, {aborted} aborted), {} s in all",
        transfers.len(),
        began.elapsed().as_secs()
    );
}

/// Every member restarted in turn under load (SIGTERM, SIGKILL, SIGTERM),
/// each on its data directory, the next only once the group has a READY
/// leader again and the restarted member follows it: every transfer id gets
/// exactly one outcome and the data matches them.
#[test]
fn a_rolling_restart_of_every_member_loses_no_transaction() {
    let (_serial, mut g, load, began) =
        under_load("rolling restart", "roll", false, "the restarts");
    let mut leaders = Vec::new();
    for (n, id) in [1u64, 2, 3].into_iter().enumerate() {
        let i = g.idx(id);
        let leader_before = member_id(&g.wait_ready());
        let proc = g.members[i].proc.as_mut().expect("running");
        let how = if n % 2 == 0 {
            let status = proc.terminate();
            assert!(
                status.is_some(),
                "member {id} did not exit within the patience after SIGTERM"
            );
            "SIGTERM"
        } else {
            proc.kill9();
            "SIGKILL"
        };
        let down = Instant::now();
        g.start_member(i);
        let ready = g.wait_ready();
        let applied = ready["group"]["applied_index"].as_u64().unwrap_or(0);
        // It follows the current leader and has applied at least what the
        // leader had when the group was READY again.
        poll(&format!("member {id} to rejoin"), PATIENCE, || {
            let s = g.member_status(id)?;
            let l = g.leader_status()?;
            let gr = &s["group"];
            let ok = gr["leader"].as_u64() == Some(member_id(&l))
                && gr["term"].as_u64() == Some(term(&l))
                && gr["applied_index"].as_u64().is_some_and(|a| a >= applied);
            match ok {
                true => Ok(()),
                false => Err(format!("member {s}; leader {l}")),
            }
        });
        eprintln!(
            "member {id} ({}) restarted by {how}: member {} leads term {}, {} ms after the signal",
            if leader_before == id {
                "the leader"
            } else {
                "a follower"
            },
            member_id(&ready),
            term(&ready),
            down.elapsed().as_millis()
        );
        leaders.push(leader_before);
        load.wait_progress(
            10,
            &format!("10 outcomes after restarting member {id}"),
            PATIENCE,
        );
    }
    let transfers = load.finish();
    let (committed, aborted) = check_outcomes(&g, &transfers);
    eprintln!(
        "rolling restart: leaders before each restart {leaders:?}; {} transfers ({committed} committed, {aborted} aborted), {} resubmitted after an error, {} s in all",
        transfers.len(),
        transfers.iter().filter(|t| t.submits > 1).count(),
        began.elapsed().as_secs()
    );
}

/// Every member stopped (SIGTERM) and started again on its data directory,
/// with no load: the group comes back knowing every decision it made, so a
/// transfer submitted again under its id is answered from the record
/// (`repeated`) and not run a second time. Each member must also find its
/// whole Raft log on disk (a clean stop leaves nothing torn to drop).
#[test]
fn stopping_and_starting_every_member_keeps_every_decision() {
    let _serial = serial();
    let mut g = Group::start(false);
    let transfers: Vec<Transfer> = (0..6)
        .map(|n| Transfer {
            id: format!("full-{n}"),
            from: n % ACCOUNTS,
            to: (n + 1) % ACCOUNTS,
            amount: 1,
            seen: Seen::Unknown,
            submits: 1,
            errors: Vec::new(),
        })
        .collect();
    let first: Vec<Decision> = block_on(async {
        let mut c = Client::connect_with(
            &g.addrs,
            &ClientSecurity::default(),
            Duration::from_secs(10),
        )
        .await
        .expect("connect to the group");
        let mut out = Vec::new();
        for t in &transfers {
            let (_, o) = c.submit(t.request()).await.expect("a transfer's outcome");
            out.push(o.decision);
        }
        out
    });
    assert!(
        first.iter().all(|d| *d == Decision::Commit),
        "uncontended transfers of 1 must commit: {first:?}"
    );
    let marks: Vec<u64> = g.members.iter().map(|m| common::log_mark(&m.log)).collect();
    for m in g.members.iter_mut() {
        let status = m.proc.as_mut().expect("running").terminate();
        assert!(
            status.is_some(),
            "member {} did not exit after SIGTERM",
            m.id
        );
    }
    for i in 0..3 {
        g.start_member(i);
    }
    g.wait_ready();
    let again: Vec<(bool, Decision)> = block_on(async {
        let mut c = Client::connect_with(
            &g.addrs,
            &ClientSecurity::default(),
            Duration::from_secs(10),
        )
        .await
        .expect("connect to the group");
        let mut out = Vec::new();
        for t in &transfers {
            let (_, o) = c.submit(t.request()).await.expect("a transfer's outcome");
            out.push((o.repeated, o.decision));
        }
        out
    });
    let dropped: Vec<String> = g
        .members
        .iter()
        .zip(&marks)
        .filter_map(|(m, mark)| {
            let text = common::log_since(&m.log, *mark);
            text.lines()
                .find(|l| l.contains("torn or corrupt frame"))
                .map(|l| format!("member {}: {l}", m.id))
        })
        .collect();
    // What the shards hold now: each transfer moved 1 from `from` to `to`
    // once, or more often if it ran again.
    let state = read_all(&g.addrs, &transfers);
    let balances: Vec<String> = (0..7)
        .map(|a| {
            let v = &state[&format!("{}/{}", shard_of(a), account(a))];
            format!("{}={v}", account(a))
        })
        .collect();
    let rerun: Vec<&str> = transfers
        .iter()
        .zip(&again)
        .filter(|(_, (repeated, _))| !repeated)
        .map(|(t, _)| t.id.as_str())
        .collect();
    assert!(
        rerun.is_empty() && dropped.is_empty(),
        "after stopping and starting every member, {} of {} decided transfers ran again \
         ({rerun:?}; answers {again:?}; balances now {balances:?}, each {INITIAL_BALANCE} \
         before; each applied once: acct-00=99, acct-01..05=100, acct-06=101), and members \
         dropped their Raft log at start:\n{}",
        rerun.len(),
        transfers.len(),
        dropped.join("\n")
    );
}

/// A leader cut off from both other members, which has stopped deciding,
/// says so on `GET /health`: 503 with role `no_quorum` and a reason about
/// the majority it cannot reach, not a leader's readiness report (which
/// would advise starting participants).
#[test]
fn a_cut_off_leader_reports_no_quorum_on_health() {
    let _serial = serial();
    let g = Group::start(true);
    let before = g.wait_ready();
    let old = member_id(&before);
    let old_addr = format!("127.0.0.1:{}", g.members[g.idx(old)].port);
    for o in (1..=3).filter(|i| *i != old) {
        g.proxy().cut(old, o);
    }
    // First it stops deciding (its coordinator port refuses)...
    poll(
        "the cut-off leader to refuse with not_leader",
        ELECTION_TIMEOUT + SLACK,
        || match direct_status(&old_addr) {
            Err(ClientError::Refused { code, .. })
                if code.known() == Some(ErrorCode::NotLeader) =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        },
    );
    // ...and then its health must say why.
    let (code, h) = g.member_health(old).expect("the cut-off member's /health");
    let reason = h["reason"].as_str().unwrap_or_default();
    assert!(
        code == 503 && h["role"] == "no_quorum" && reason.contains("majority"),
        "a leader cut off from the majority answers /health with {code} {h}; expected 503 with \
         role no_quorum and a reason naming the majority it cannot reach"
    );
}

/// Cut member `old` (the leader) off from both others until another member
/// leads; heal; return the new leader's id.
fn move_leadership(g: &Group, old: u64) -> u64 {
    let others: Vec<u64> = (1..=3).filter(|i| *i != old).collect();
    for o in &others {
        g.proxy().cut(old, *o);
    }
    let majority: String = others
        .iter()
        .map(|i| format!("127.0.0.1:{}", g.members[g.idx(*i)].port))
        .collect::<Vec<_>>()
        .join(",");
    let new = poll("another member to lead", PATIENCE, || {
        let s = leader_status_at(&majority)?;
        match member_id(&s) != old {
            true => Ok(member_id(&s)),
            false => Err(s.to_string()),
        }
    });
    g.proxy().heal();
    new
}

/// A client-named transfer that committed while one participant had not
/// acknowledged it yet is re-driven by the next leader, and ends there. After
/// one more change of leader, submitting it again under its id must still
/// be answered from the record (`repeated`), never run a second time. No
/// process restarts a coordinator member here: the leaders change by
/// partitions only.
#[test]
fn a_transfer_redriven_by_a_new_leader_is_still_known_after_the_next_leader() {
    let _serial = serial();
    let mut g = Group::start(true);
    // s2 dies (SIGKILL) right after sending its next vote: the transfer
    // commits, and s2's acknowledgement is missing.
    g.restart_shard(1, &[("TWOPC_CRASH_AT", "participant.after_vote_sent")]);
    let first = g.wait_ready();
    let t = Transfer {
        id: "redriven-1".into(),
        from: 0,
        to: 1,
        amount: 7,
        seen: Seen::Unknown,
        submits: 1,
        errors: Vec::new(),
    };
    assert_eq!(
        (shard_of(t.from).as_str(), shard_of(t.to).as_str()),
        ("s1", "s2")
    );
    commit_as_s2_stops(&mut g, &t);

    // Leader 1 → leader 2, which re-drives the commit; s2 comes back and
    // acknowledges it, so it ends at leader 2.
    let second = move_leadership(&g, member_id(&first));
    g.restart_shard(1, &[]);
    let s = g.wait_ready();
    poll("the re-driven transfer to end", PATIENCE, || {
        let s = direct_status(&format!(
            "127.0.0.1:{}",
            g.members[g.idx(member_id(&s))].port
        ))
        .map_err(|e| e.to_string())?;
        let tx = &s["transactions"];
        match tx["in_flight"] == 0 && tx["awaiting_acks"] == 0 {
            true => Ok(()),
            false => Err(s.to_string()),
        }
    });
    // Leader 2 → leader 3.
    let third = move_leadership(&g, member_id(&g.wait_ready()));
    g.wait_ready();
    let again = submit_once(&g, &t, "the resubmitted transfer's outcome");
    let state = read_all(&g.addrs, std::slice::from_ref(&t));
    assert!(
        again.repeated && again.decision == Decision::Commit,
        "transfer {} committed under member {}, was re-driven and ended under member {second}; \
         submitted again under member {third} it was {} (repeated: {}, {:?}); balances now {} {} / {} {} \
         (each {} before, amount {})",
        t.id,
        member_id(&first),
        if again.repeated {
            "answered from the record"
        } else {
            "run again"
        },
        again.repeated,
        again.decision,
        account(t.from),
        state[&format!("s1/{}", account(t.from))],
        account(t.to),
        state[&format!("s2/{}", account(t.to))],
        INITIAL_BALANCE,
        t.amount
    );
}

/// A transfer committed while one participant had not yet learned the
/// decision (it died right after voting) must end committed on both shards,
/// even when every member is stopped (SIGTERM) and started again before
/// that participant comes back and asks.
#[test]
fn a_decision_a_participant_still_waits_for_survives_a_restart_of_every_member() {
    let _serial = serial();
    let mut g = Group::start(false);
    g.restart_shard(1, &[("TWOPC_CRASH_AT", "participant.after_vote_sent")]);
    g.wait_ready();
    let t = Transfer {
        id: "waiting-1".into(),
        from: 0,
        to: 1,
        amount: 7,
        seen: Seen::Unknown,
        submits: 1,
        errors: Vec::new(),
    };
    commit_as_s2_stops(&mut g, &t);
    for m in g.members.iter_mut() {
        let status = m.proc.as_mut().expect("running").terminate();
        assert!(
            status.is_some(),
            "member {} did not exit after SIGTERM",
            m.id
        );
    }
    for i in 0..3 {
        g.start_member(i);
    }
    g.restart_shard(1, &[]);
    g.wait_ready();
    let state = read_all(&g.addrs, std::slice::from_ref(&t));
    let on = |shard: &str| !state[&format!("{shard}/{}", marker(&t.id))].is_null();
    assert!(
        on("s1") && on("s2"),
        "transfer {} was reported committed; after every member restarted it is on s1: {}, \
         on s2: {} (balances {} {} / {} {}, each {INITIAL_BALANCE} before, amount {}); s2's log:\n{}",
        t.id,
        on("s1"),
        on("s2"),
        account(t.from),
        state[&format!("s1/{}", account(t.from))],
        account(t.to),
        state[&format!("s2/{}", account(t.to))],
        t.amount,
        tail(&g.shards[1].proc.log)
    );
}

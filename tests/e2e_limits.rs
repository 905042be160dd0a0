//! Availability under abuse of the TCP ports, with real processes: idle
//! sockets flooding the coordinator port and a participant's admin port, a
//! client pipelining large queries without reading, and a dynamic joiner
//! that says hello and leaves.
//!
//! The floods come from other loopback addresses (127.0.0.2 and up; all of
//! 127.0.0.0/8 is loopback on Linux) while the cluster's own processes and
//! the operator's tool connect from 127.0.0.1: an attacker somewhere else,
//! as in the field. No assertion is about time; waits are bounded only by
//! PATIENCE, as hang guards.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use twopc::protocol::{Body, Decision, ParticipantId, Role, PROTOCOL_VERSION};

/// Idle sockets held open against a port from several source addresses:
/// each is connected and never sends a byte; one the server closes (at its
/// handshake deadline, on eviction, or refused) is opened again, a few per
/// 10 ms at most.
struct Flood {
    stop: Arc<AtomicBool>,
    /// Sockets open (accepted and not closed by the server) after the
    /// latest pass.
    held: Arc<AtomicUsize>,
    /// Connections opened in all.
    opened: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    fn start(target: &str, sources: &[u8], per_source: usize) -> Flood {
        let target: SocketAddr = target.parse().expect("target address");
        let sources: Vec<IpAddr> = sources
            .iter()
            .map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, *last)))
            .collect();
        let (stop, held, opened) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, h, o) = (stop.clone(), held.clone(), opened.clone());
        let thread = std::thread::spawn(move || {
            block_on(flood_loop(target, sources, per_source, s, h, o));
        });
        Flood {
            stop,
            held,
            opened,
            thread: Some(thread),
        }
    }

    /// Wait until at least `n` idle sockets are held at once.
    fn wait_held(&self, n: usize) {
        let start = Instant::now();
        while self.held.load(Ordering::Relaxed) < n {
            assert!(
                start.elapsed() < PATIENCE,
                "the flood never held {n} sockets (held {})",
                self.held.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn flood_loop(
    target: SocketAddr,
    sources: Vec<IpAddr>,
    per_source: usize,
    stop: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    opened: Arc<AtomicUsize>,
) {
    // Fast enough to refill a freed slot before a peer retrying every few
    // hundred milliseconds gets it; slow enough not to starve the machine.
    const NEW_PER_PASS: usize = 8;
    let mut slots: Vec<(IpAddr, Option<tokio::net::TcpStream>)> = sources
        .iter()
        .flat_map(|ip| std::iter::repeat_n(*ip, per_source))
        .map(|ip| (ip, None))
        .collect();
    let mut next = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut buf = [0u8; 512];
        for (_, slot) in slots.iter_mut() {
            let closed = match slot {
                // Anything from the server (an error frame), or its close,
                // means the socket no longer holds a slot.
                Some(s) => {
                    !matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                }
                None => false,
            };
            if closed {
                *slot = None;
            }
        }
        held.store(
            slots.iter().filter(|(_, s)| s.is_some()).count(),
            Ordering::Relaxed,
        );
        let mut started = 0;
        for _ in 0..slots.len() {
            if started == NEW_PER_PASS {
                break;
            }
            let n = slots.len();
            let (ip, slot) = &mut slots[next];
            next = (next + 1) % n;
            if slot.is_some() {
                continue;
            }
            let Ok(sock) = tokio::net::TcpSocket::new_v4() else {
                continue;
            };
            if sock.bind(SocketAddr::new(*ip, 0)).is_err() {
                continue;
            }
            let connect = tokio::time::timeout(Duration::from_secs(1), sock.connect(target));
            if let Ok(Ok(s)) = connect.await {
                *slot = Some(s);
                opened.fetch_add(1, Ordering::Relaxed);
            }
            started += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// VmRSS of process `pid` in bytes.
fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn is_connected(s: &Value, id: &str) -> bool {
    s["participants"]
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p["id"] == id && p["connected"] == true))
}

fn voters(o: &twopc::protocol::Outcome) -> Vec<String> {
    o.votes.keys().map(|p| p.0.clone()).collect()
}

/// Run `f` on a thread; it must finish within PATIENCE (a hang guard, not a
/// latency assertion).
fn within_patience<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("{what} did not finish within {PATIENCE:?}"))
}

/// Idle sockets from many addresses fill every slot of the coordinator
/// port (64 here) and keep it full, re-opening what is closed. Meanwhile a
/// restarted participant registers again, `twopc status` answers and
/// transactions over both participants commit: handshakes that do not
/// finish are closed after `preauth_timeout_ms` and evicted to make room,
/// and a participant from an address with fewer pending handshakes than
/// the flood's is never the one evicted.
#[test]
fn an_idle_flood_of_the_coordinator_port_keeps_out_neither_participants_nor_operators() {
    let mut c = Cluster::new();
    c.start_coordinator(
        &["--expected-participants", "2", "--max-connections", "64"],
        &[],
    );
    c.start_participants(2, &[]);
    c.wait_ready(2);
    let mark = log_mark(&c.path("coordinator.log"));

    // 30 addresses with 8 sockets each: more than the 64 shared and 64
    // reserved slots together. Once it holds 62 the port is full: the two
    // participants hold the other two slots.
    let sources: Vec<u8> = (2..32).collect();
    let flood = Flood::start(&c.addr(), &sources, 8);
    flood.wait_held(62);

    c.restart_participant(0, &[], &[]);
    c.wait_status("p1 to register again during the flood", |s| {
        is_connected(s, "p1") && is_connected(s, "p2")
    });
    // Each of these connects while the flood holds every slot it can: one
    // attempt, no retry.
    flood.wait_held(62);
    let addr = c.addr();
    let (code, out, err) = within_patience("twopc status", move || {
        run_twopc(&["status", "--coordinator", &addr, "--json"])
    });
    assert_eq!(code, 0, "twopc status failed during the flood: {out}{err}");
    let s: Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(s["state"], "READY", "{s}");
    for i in 0..3 {
        flood.wait_held(62);
        let (txn, o) = c.submit(req(json!({ "during_flood": i }))).expect("submit");
        assert_eq!(o.decision, Decision::Commit, "{txn}: {o:?}");
        assert_eq!(voters(&o), vec!["p1", "p2"], "{o:?}");
    }
    // The flood was still on, and the coordinator made room by closing its
    // idle handshakes.
    assert!(flood.held.load(Ordering::Relaxed) > 0, "the flood stopped");
    assert!(flood.opened.load(Ordering::Relaxed) > 64);
    let log = log_since(&c.path("coordinator.log"), mark);
    assert!(
        log.contains("to make room"),
        "no handshake was evicted; log:\n{log}"
    );
}

/// Connect and say hello as a client until welcomed (a slot freed by a
/// closed connection is released asynchronously); bounded by PATIENCE.
fn welcomed_client(addr: &str) -> RawConn {
    let start = Instant::now();
    loop {
        let mut raw = RawConn::connect(addr);
        raw.send_client_hello();
        match raw.recv() {
            Some(m) if m["message_type"] == "welcome" => return raw,
            Some(m) if m["payload"]["code"] == "too_many_connections" => {}
            other => panic!("unexpected answer {other:?}"),
        }
        assert!(start.elapsed() < PATIENCE, "no slot freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Clients that completed their handshake hold every shared slot of the
/// coordinator port (4 here): a restarted participant still registers, on
/// a slot reserved for participants, while one more client is refused at
/// once with `too_many_connections` naming the reserve.
#[test]
fn a_restarted_participant_registers_while_clients_hold_every_shared_slot() {
    let mut c = Cluster::new();
    c.start_coordinator(
        &["--expected-participants", "2", "--max-connections", "4"],
        &[],
    );
    c.start_participants(2, &[]);
    c.wait_ready(2);
    c.participants[0].kill9();
    c.wait_status("p1 to be gone", |s| !is_connected(s, "p1"));
    let clients: Vec<RawConn> = (0..3).map(|_| welcomed_client(&c.addr())).collect();

    let coordinator_mark = log_mark(&c.path("coordinator.log"));
    let p1_mark = log_mark(&c.participants[0].log);
    c.restart_participant(0, &[], &[]);
    wait_log(
        &mut c.participants[0],
        p1_mark,
        "registered with the coordinator",
    );
    wait_log(
        c.coordinator.as_mut().expect("coordinator"),
        coordinator_mark,
        "serving a connection from a reserved slot",
    );
    let mut refused = RawConn::connect(&c.addr());
    refused.send_client_hello();
    let message = refused.expect_error("too_many_connections");
    assert!(
        message.contains("max_connections") && message.contains("participant_reserved_connections"),
        "{message}"
    );

    drop(clients);
    let s = c.wait_status("both participants connected", |s| {
        is_connected(s, "p1") && is_connected(s, "p2")
    });
    assert_eq!(s["state"], "READY", "{s}");
    let (txn, o) = c
        .submit(req(json!({ "after": "reserve" })))
        .expect("submit");
    assert_eq!(o.decision, Decision::Commit, "{txn}: {o:?}");
    assert_eq!(voters(&o), vec!["p1", "p2"], "{o:?}");
}

/// A participant's admin port (16 slots, 4 more for operators) flooded
/// with 24 idle sockets still serves `twopc txn list --participant` and
/// `twopc txn resolve`; and one address gets no more than
/// `preauth_max_per_address` (8) handshakes at once: the next is refused at
/// once with `too_many_connections`.
#[test]
fn idle_sockets_on_an_admin_port_keep_out_neither_operators_nor_resolve() {
    let mut c = Cluster::new();
    c.start_coordinator(&["--expected-participants", "1"], &[]);
    let (_, admin) = c.start_participant_admin("p1", &[], &[]);
    c.wait_ready(1);

    // The per-address cap, from an address of its own.
    let admin_addr: SocketAddr = admin.parse().expect("admin address");
    let from = |last: u8| {
        let s = socket_from(Ipv4Addr::new(127, 0, 0, last), admin_addr);
        RawConn::from_stream(s)
    };
    let held: Vec<RawConn> = (0..8).map(|_| from(40)).collect();
    let mut ninth = from(40);
    let message = ninth.expect_error("too_many_connections");
    assert!(message.contains("preauth_max_per_address"), "{message}");
    drop(held);

    let flood = Flood::start(&admin, &[2, 3, 4], 8);
    flood.wait_held(16);
    let list = participant_txn_list(&admin, None);
    assert_eq!(list["total"], 0, "{list}");
    flood.wait_held(16);
    let a = admin.clone();
    let (code, out, err) = within_patience("twopc txn resolve", move || {
        run_twopc(&[
            "txn",
            "resolve",
            "t-unknown",
            "--abort",
            "--reason",
            "incident drill",
            "--participant",
            &a,
        ])
    });
    // The request reached the participant, which answered it: the
    // transaction is unknown there (not: no room for the connection).
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("not known to this participant"),
        "resolve did not reach the participant: {out}{err}"
    );
    assert!(flood.held.load(Ordering::Relaxed) > 0, "the flood stopped");
}

/// A connected, blocking socket from `source` to `target`.
fn socket_from(source: Ipv4Addr, target: SocketAddr) -> std::net::TcpStream {
    let s = block_on(async move {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind(SocketAddr::new(IpAddr::V4(source), 0))
            .expect("bind a loopback source address");
        let s = sock.connect(target).await.expect("connect");
        s.into_std().expect("std stream")
    });
    // Streams from tokio are non-blocking; the raw connection reads with a
    // timeout instead.
    s.set_nonblocking(false).expect("blocking mode");
    s
}

/// One client pipelines 2,000 `txn_list` requests (each reply about
/// 250 KB: 1,000 transactions) and reads none of the replies. The
/// coordinator stops reading that client once `query_in_flight_max`
/// queries wait, answers queries after protocol traffic, and disconnects
/// it once more than `send_buffer_max_bytes` (8 MiB) wait for it.
/// Meanwhile another client's `status` is answered, no participant is
/// given up for missed heartbeats, and the coordinator's memory stays
/// under 200 MB (the send buffer's 8 MiB plus the kernel's socket buffers
/// and a few replies being built; before the limit it reached over 500 MB).
#[test]
fn a_client_pipelining_large_queries_without_reading_is_disconnected_and_others_are_served() {
    let mut c = Cluster::new();
    c.start_coordinator(&["--expected-participants", "2", "--unsafe-no-fsync"], &[]);
    c.start_participants(2, &["--unsafe-no-fsync"]);
    c.wait_ready(2);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let addr = c.addr();
            std::thread::spawn(move || {
                block_on(async move {
                    let mut client = twopc::client::Client::connect(&addr, PATIENCE)
                        .await
                        .expect("connect");
                    for i in 0..250 {
                        let (txn, o) = client
                            .submit(req(json!({ "worker": w, "i": i })))
                            .await
                            .expect("submit");
                        assert_eq!(o.decision, Decision::Commit, "{txn}: {o:?}");
                    }
                })
            })
        })
        .collect();
    for w in workers {
        w.join().expect("submitting worker");
    }
    let pid = c.coordinator.as_ref().and_then(|p| p.pid()).expect("pid");
    let mark = log_mark(&c.path("coordinator.log"));

    // Sample the coordinator's memory for the whole episode.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut max = 0;
            while sampling.load(Ordering::Relaxed) {
                max = max.max(rss_bytes(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(10));
            }
            max
        })
    };

    let mut raw = RawConn::connect(&c.addr());
    raw.send_client_hello();
    assert_eq!(raw.recv().expect("welcome")["message_type"], "welcome");
    let writer_stream = raw.stream.try_clone().expect("clone stream");
    let pipeliner = std::thread::spawn(move || {
        use std::io::Write;
        let frame = {
            let body = twopc::net::encode(Body::TxnList {
                state: None,
                limit: None,
                cursor: None,
            });
            let mut f = (body.len() as u32).to_be_bytes().to_vec();
            f.extend_from_slice(&body);
            f
        };
        let mut s = writer_stream;
        let mut sent = 0;
        for _ in 0..2000 {
            // The coordinator stops reading us, then closes the connection:
            // a failed write ends the flood.
            if s.write_all(&frame).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });

    // Another client is answered while the pipeline is being worked off.
    let addr = c.addr();
    let status = within_patience("status during the pipeline", move || {
        block_on(async move {
            let mut client = twopc::client::Client::connect(&addr, PATIENCE).await?;
            client.status().await
        })
    })
    .expect("status during the pipeline");
    assert_eq!(status["state"], "READY", "{status}");

    let log = wait_log(
        c.coordinator.as_mut().expect("coordinator"),
        mark,
        "is not reading its messages",
    );
    // The line names the peer's address.
    let line = log
        .lines()
        .find(|l| l.contains("is not reading its messages"))
        .unwrap_or_default();
    let local = raw.stream.local_addr().expect("local address").to_string();
    assert!(line.contains(&local), "{line}");
    // The connection is closed: reading it ends (after whatever replies
    // were already in flight).
    let drained = within_patience("the pipelining connection to close", move || {
        use std::io::Read;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        loop {
            match raw.stream.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    });
    assert!(
        drained < 64 * 1024 * 1024,
        "{drained} bytes after the limit"
    );
    within_patience("the pipelining writer", move || pipeliner.join().ok());

    let s = c.status();
    assert!(is_connected(&s, "p1") && is_connected(&s, "p2"), "{s}");
    sampling.store(false, Ordering::Relaxed);
    let max_rss = sampler.join().expect("sampler");
    eprintln!("coordinator VmRSS peaked at {} MB", max_rss / (1024 * 1024));
    assert!(max_rss > 0, "could not read the coordinator's VmRSS");
    assert!(
        max_rss < 200 * 1024 * 1024,
        "coordinator RSS reached {} MB",
        max_rss / (1024 * 1024)
    );
    let log = log_since(&c.path("coordinator.log"), mark);
    assert!(
        !log.contains("no heartbeat from"),
        "a participant was given up during the pipeline:\n{log}"
    );
    // The replies the pipeline asked for were full pages: 1,000 entries
    // within the default byte cap of 512 KiB, not cut.
    let addr = c.addr();
    let reply = block_on(async move {
        let mut client = twopc::client::Client::connect(&addr, PATIENCE).await?;
        client
            .request(Body::TxnList {
                state: None,
                limit: None,
                cursor: None,
            })
            .await
    })
    .expect("txn_list");
    let Body::TxnInfo(v) = reply else {
        panic!("unexpected reply {reply:?}")
    };
    assert_eq!(v["total"], 1000, "{}", v["total"]);
    assert_eq!(v["transactions"].as_array().map(Vec::len), Some(1000));
    assert_eq!(
        v.get("next"),
        None,
        "one page holds them all: {}",
        v["next"]
    );
}

fn participant_hello(id: &str) -> Body {
    Body::Hello {
        role: Role::Participant,
        id: Some(ParticipantId::from(id)),
        protocol_version: PROTOCOL_VERSION,
    }
}

/// With dynamic joining on (and every other setting at its default), a
/// peer that says hello under a new id and disconnects is forgotten:
/// submits that name no participants go on committing over the real
/// members instead of aborting with `participant_unavailable`.
#[test]
fn a_dynamic_joiner_that_says_hello_and_leaves_does_not_abort_later_submits() {
    let mut c = Cluster::new();
    c.start_coordinator(
        &[
            "--expected-participants",
            "2",
            "--enable-dynamic-joining",
            "true",
        ],
        &[],
    );
    c.start_participants(2, &[]);
    c.wait_ready(2);

    let mut ghost = RawConn::connect(&c.addr());
    ghost.send(participant_hello("ghost"));
    assert_eq!(ghost.recv().expect("welcome")["message_type"], "welcome");
    drop(ghost);
    c.wait_status("the ghost to be forgotten", |s| {
        !participant_ids(s).contains(&"ghost".to_string())
    });
    for i in 0..2 {
        let (txn, o) = c.submit(req(json!({ "after_ghost": i }))).expect("submit");
        assert_eq!(o.decision, Decision::Commit, "{txn}: {o:?}");
        assert_eq!(voters(&o), vec!["p1", "p2"], "{o:?}");
    }
}

/// A newcomer still connected but within its join grace (set long here so
/// no machine is too slow for it) is registered but not counted among the
/// participants of submits that name none.
#[test]
fn a_newcomer_within_its_join_grace_is_left_out_of_submits_that_name_nobody() {
    let mut c = Cluster::new();
    c.start_coordinator(
        &[
            "--expected-participants",
            "2",
            "--enable-dynamic-joining",
            "true",
            "--join-grace-ms",
            "600000",
        ],
        &[],
    );
    c.start_participants(2, &[]);
    c.wait_ready(2);

    let mut lurker = RawConn::connect(&c.addr());
    lurker.send(participant_hello("lurker"));
    assert_eq!(lurker.recv().expect("welcome")["message_type"], "welcome");
    let s = c.wait_status("the lurker to register", |s| is_connected(s, "lurker"));
    assert_eq!(participant_ids(&s), vec!["lurker", "p1", "p2"], "{s}");
    let (txn, o) = c
        .submit(req(json!({ "with_lurker": true })))
        .expect("submit");
    assert_eq!(o.decision, Decision::Commit, "{txn}: {o:?}");
    assert_eq!(voters(&o), vec!["p1", "p2"], "{o:?}");
}

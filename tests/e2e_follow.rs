//! Following the coordinator leader, end to end: a real coordinator, and a
//! fake coordinator member in this test that refuses every hello with
//! `not_leader`, as a member of a replicated group that is not the leader
//! does. Clients (`Client::connect_with`) and a participant
//! (`--coordinators`) given the fake must end up at the real coordinator.
//! What is real: the coordinator and participant processes, TCP, the
//! framing. What is fake: the follower, which only refuses.

mod common;

use common::*;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use twopc::client::{Client, ClientError};
use twopc::protocol::{not_leader_message, Body, Decision, ErrorCode, WireError};

/// A fake coordinator member that is not the leader.
struct Follower {
    addr: String,
    /// Hellos refused, by role.
    participant_hellos: Arc<AtomicUsize>,
    client_hellos: Arc<AtomicUsize>,
}

/// Start a follower that answers the first frame of every connection with
/// `not_leader` naming `leader` (or no leader), then closes it.
fn follower(leader: Option<String>) -> Follower {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake follower");
    let addr = listener.local_addr().expect("fake address").to_string();
    let participant_hellos = Arc::new(AtomicUsize::new(0));
    let client_hellos = Arc::new(AtomicUsize::new(0));
    let (p, c) = (participant_hellos.clone(), client_hellos.clone());
    let message = not_leader_message(1, 3, leader.as_deref().map(|a| (2, a)));
    // Serves until the test process ends.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut conn = RawConn::from_stream(stream);
            let Some(first) = conn.recv() else { continue };
            match first["payload"]["role"].as_str() {
                Some("participant") => p.fetch_add(1, Ordering::SeqCst),
                Some("client") => c.fetch_add(1, Ordering::SeqCst),
                _ => 0,
            };
            let refusal = WireError::new(ErrorCode::NotLeader, message.clone());
            conn.send(Body::error(&refusal));
            // Dropping the connection closes it, as a follower does.
        }
    });
    Follower {
        addr,
        participant_hellos,
        client_hellos,
    }
}

/// Connect to `addr` (one address or a list) and commit one transaction.
fn submit_through(addr: &str) -> Result<Decision, ClientError> {
    block_on(async {
        let mut c = Client::connect_with(addr, &Default::default(), PATIENCE).await?;
        let (_, outcome) = c.submit(req(serde_json::json!({"via": addr}))).await?;
        Ok(outcome.decision)
    })
}

#[test]
fn clients_and_participants_follow_a_follower_to_the_leader() {
    let mut c = Cluster::new();
    c.start_coordinator(&["--expected-participants", "1"], &[]);
    let real = c.addr();
    let fake = follower(Some(real.clone()));

    // (b) A participant given only the follower registers with the leader.
    let (idx, admin) = c.start_participant_admin("p1", &["--coordinators", &fake.addr], &[]);
    c.wait_ready(1);
    let status = wait_participant(&admin, "registered with the leader", |s| {
        s["connected"] == true && s["coordinator"] == real.as_str()
    });
    assert_eq!(status["coordinator"], real.as_str(), "{status}");
    assert!(
        fake.participant_hellos.load(Ordering::SeqCst) >= 1,
        "the participant never tried the follower"
    );
    let log = c.participants[idx].log_text();
    let line = format!(
        "coordinator member at {} is not the leader; following the leader at {real}",
        fake.addr
    );
    assert!(
        log.contains(&line),
        "no {line:?} in the participant log:\n{log}"
    );

    // (a) Clients: the follower first in a list, and the follower alone.
    let list = format!("{},{real}", fake.addr);
    assert_eq!(submit_through(&list).unwrap(), Decision::Commit);
    let after_list = fake.client_hellos.load(Ordering::SeqCst);
    assert_eq!(after_list, 1, "the list's first member is the follower");
    assert_eq!(submit_through(&fake.addr).unwrap(), Decision::Commit);
    assert_eq!(
        fake.client_hellos.load(Ordering::SeqCst),
        2,
        "the follower alone was tried, then its leader"
    );
    assert_eq!(settled_counts(&c), (2, 0));

    // The tool's --coordinator takes the list too.
    let (code, out, err) = run_twopc(&["status", "--coordinator", &list, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let s: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(s["state"], "READY", "{s}");
}

#[test]
fn when_no_member_takes_the_connection_every_address_is_named_with_why() {
    let leaderless = follower(None);
    let dead = format!("127.0.0.1:{}", free_port());
    let list = format!("{},{dead}", leaderless.addr);
    let err = block_on(Client::connect_with(
        &list,
        &Default::default(),
        Duration::from_secs(20),
    ))
    .err()
    .expect("no member can take the connection");
    let ClientError::NoMember { tried } = &err else {
        panic!("expected NoMember, got {err:?}");
    };
    let addrs: Vec<&str> = tried.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(addrs, [leaderless.addr.as_str(), dead.as_str()], "{err}");
    let text = err.to_string();
    assert!(
        text.contains("no leader is known yet") && text.contains("cannot reach the coordinator"),
        "{text}"
    );
    assert_eq!(leaderless.client_hellos.load(Ordering::SeqCst), 1);

    // The tool names a member that is not HOST:PORT.
    let (code, _, err) = run_twopc(&["status", "--coordinator", "127.0.0.1:1,nowhere"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`nowhere` in `127.0.0.1:1,nowhere` is not HOST:PORT"),
        "{err}"
    );

    // One address alone fails as it always did, with its own error.
    let err = block_on(Client::connect(&dead, Duration::from_secs(20)))
        .err()
        .expect("nobody listens there");
    assert!(
        matches!(err, ClientError::Unreachable { ref addr, .. } if *addr == dead),
        "{err:?}"
    );
}

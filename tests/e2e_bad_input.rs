//! Hostile and broken input over real TCP: the coordinator and the
//! participant answer bad frames with stable error codes, close only the
//! connections that cannot continue, and keep serving everyone else.

mod common;

use common::*;
use serde_json::json;
use twopc::protocol::{Body, Decision, ParticipantId, Role, TxnId, PROTOCOL_VERSION};

/// A ready cluster of two committing participants.
fn cluster(extra: &[&str]) -> Cluster {
    let mut c = Cluster::new();
    let mut args = vec!["--expected-participants", "2"];
    args.extend_from_slice(extra);
    c.start_coordinator(&args, &[]);
    c.start_participants(2, &[]);
    c.wait_ready(2);
    c
}

/// The cluster still runs transactions after the abuse.
fn assert_still_commits(c: &Cluster) {
    let (txn, o) = c
        .submit(req(json!({"after": "abuse"})))
        .expect("submit after bad input");
    assert_eq!(o.decision, Decision::Commit, "{txn}: {o:?}");
    assert_eq!(o.votes.len(), 2, "{o:?}");
}

fn expect_welcome(raw: &mut RawConn) {
    let m = raw.recv().expect("welcome");
    assert_eq!(m["message_type"], "welcome", "{m}");
    assert_eq!(m["payload"]["state"], "READY", "{m}");
}

fn participant_hello(id: &str) -> Body {
    Body::Hello {
        role: Role::Participant,
        id: Some(ParticipantId::from(id)),
        protocol_version: PROTOCOL_VERSION,
    }
}

#[test]
fn oversized_frame_is_refused_and_the_connection_closed() {
    let c = cluster(&["--max-frame-bytes", "4096"]);
    let mut raw = RawConn::connect(&c.addr());
    raw.send_client_hello();
    expect_welcome(&mut raw);
    // Announce a frame just past the limit and send nothing of it: the
    // refusal must come from the length prefix alone.
    raw.send_length_prefix(4097);
    let msg = raw.expect_error("frame_too_large");
    assert!(msg.contains("4096"), "the message names the limit: {msg}");
    raw.expect_closed();
    // A huge announced length before any hello gets the same treatment.
    let mut raw = RawConn::connect(&c.addr());
    raw.send_length_prefix(u32::MAX);
    raw.expect_error("frame_too_large");
    raw.expect_closed();
    assert_still_commits(&c);
}

#[test]
fn a_frame_at_the_limit_is_accepted() {
    let c = cluster(&["--max-frame-bytes", "4096"]);
    let mut raw = RawConn::connect(&c.addr());
    raw.send_client_hello();
    expect_welcome(&mut raw);
    // A status request padded with an ignored field to exactly 4096 bytes.
    let head = br#"{"message_type":"status","payload":{},"timestamp":0,"pad":""#;
    let mut frame = head.to_vec();
    frame.resize(4096 - 2, b'x');
    frame.extend_from_slice(b"\"}");
    assert_eq!(frame.len(), 4096);
    raw.send_frame(&frame);
    let m = raw.recv().expect("reply");
    assert_eq!(m["message_type"], "status_report", "{m}");
}

#[test]
fn bytes_that_are_not_json_are_refused_and_the_connection_stays_usable() {
    let c = cluster(&[]);
    let mut raw = RawConn::connect(&c.addr());
    raw.send_frame(b"\xff\xfe not json at all");
    raw.expect_error("invalid_json");
    raw.send_frame(b"{\"message_type\": \"hello\", ");
    raw.expect_error("invalid_json");
    raw.send_client_hello();
    expect_welcome(&mut raw);
    // Still usable after the hello, too.
    raw.send_frame(b"}{");
    raw.expect_error("invalid_json");
    raw.send(Body::Status);
    assert_eq!(raw.recv().expect("status")["message_type"], "status_report");
    assert_still_commits(&c);
}

#[test]
fn json_that_is_not_a_message_is_invalid_message() {
    let c = cluster(&[]);
    let mut raw = RawConn::connect(&c.addr());
    for frame in [
        &b"[1, 2, 3]"[..],
        b"\"hello\"",
        b"42",
        b"null",
        b"{}",
        b"{\"payload\": {}}",
        b"{\"message_type\": 7}",
    ] {
        raw.send_frame(frame);
        raw.expect_error("invalid_message");
    }
    // None of them closes the connection, before or after hello.
    raw.send_client_hello();
    expect_welcome(&mut raw);
    raw.send_frame(b"{\"payload\": {}}");
    raw.expect_error("invalid_message");
    raw.send(Body::Status);
    assert_eq!(raw.recv().expect("status")["message_type"], "status_report");
    assert_still_commits(&c);
}

#[test]
fn unknown_message_type_is_refused_without_closing() {
    let c = cluster(&[]);
    let mut raw = RawConn::connect(&c.addr());
    raw.send_client_hello();
    expect_welcome(&mut raw);
    raw.send_frame(br#"{"message_type":"launch_missiles","payload":{},"timestamp":0}"#);
    let msg = raw.expect_error("unknown_message_type");
    assert!(
        msg.contains("launch_missiles"),
        "the message names the type: {msg}"
    );
    raw.send(Body::Status);
    assert_eq!(raw.recv().expect("status")["message_type"], "status_report");
    assert_still_commits(&c);
}

#[test]
fn a_message_before_hello_is_refused_and_the_connection_closed() {
    let c = cluster(&[]);
    let mut raw = RawConn::connect(&c.addr());
    raw.send(Body::Submit(req(json!({"sneaky": true}))));
    raw.expect_error("hello_required");
    raw.expect_closed();
    // A participant message without hello: same.
    let mut raw = RawConn::connect(&c.addr());
    raw.send(Body::VoteCommit {
        txn: TxnId::from("t-1"),
        result: None,
    });
    raw.expect_error("hello_required");
    raw.expect_closed();
    assert_still_commits(&c);
    assert_eq!(settled_counts(&c), (1, 0), "the refused submit never ran");
}

#[test]
fn status_before_hello_is_refused_too() {
    let c = cluster(&[]);
    let mut raw = RawConn::connect(&c.addr());
    raw.send(Body::Status);
    raw.expect_error("hello_required");
    raw.expect_closed();
}

#[test]
fn handshake_mistakes_get_their_own_codes() {
    let c = cluster(&["--handshake-timeout-ms", "1000"]);
    let addr = c.addr();
    // A second hello on a registered connection is refused, not fatal.
    let mut raw = RawConn::connect(&addr);
    raw.send_client_hello();
    expect_welcome(&mut raw);
    raw.send_client_hello();
    raw.expect_error("invalid_message");
    raw.send(Body::Status);
    assert_eq!(raw.recv().expect("status")["message_type"], "status_report");
    // A protocol version this build does not speak.
    let mut raw = RawConn::connect(&addr);
    raw.send(Body::Hello {
        role: Role::Client,
        id: None,
        protocol_version: PROTOCOL_VERSION + 1,
    });
    raw.expect_error("unsupported_version");
    raw.expect_closed();
    // A participant id that could not appear in logs and file names.
    let mut raw = RawConn::connect(&addr);
    raw.send(participant_hello("../p1 x"));
    raw.expect_error("invalid_message");
    raw.expect_closed();
    // A connection that never says anything is told so and closed.
    let mut raw = RawConn::connect(&addr);
    raw.expect_error("hello_required");
    raw.expect_closed();
    assert_still_commits(&c);
}

#[test]
fn a_duplicate_participant_id_is_refused_while_the_first_is_connected() {
    let c = cluster(&[]);
    let mut raw = RawConn::connect(&c.addr());
    raw.send(participant_hello("p1"));
    let msg = raw.expect_error("duplicate_participant");
    assert!(msg.contains("p1"), "{msg}");
    raw.expect_closed();
    // An id that is not a member, once the cluster is complete.
    let mut raw = RawConn::connect(&c.addr());
    raw.send(participant_hello("p9"));
    raw.expect_error("membership_closed");
    raw.expect_closed();
    // The real p1 kept its registration and still votes.
    let s = c.status();
    assert_eq!(connected(&s), 2, "{s}");
    assert_still_commits(&c);
}

#[test]
fn all_of_it_on_one_cluster_leaves_it_serving() {
    let c = cluster(&["--max-frame-bytes", "4096"]);
    let addr = c.addr();
    let mut garbage = RawConn::connect(&addr);
    garbage.send_frame(b"not json");
    garbage.expect_error("invalid_json");
    garbage.send_frame(b"[]");
    garbage.expect_error("invalid_message");
    garbage.send_frame(br#"{"message_type":"nope"}"#);
    garbage.expect_error("unknown_message_type");
    let mut early = RawConn::connect(&addr);
    early.send(Body::Heartbeat);
    early.expect_error("hello_required");
    early.expect_closed();
    let mut dup = RawConn::connect(&addr);
    dup.send(participant_hello("p2"));
    dup.expect_error("duplicate_participant");
    dup.expect_closed();
    garbage.send_length_prefix(1 << 20);
    garbage.expect_error("frame_too_large");
    garbage.expect_closed();
    assert_still_commits(&c);
    assert_still_commits(&c);
}

/// A real participant against a fake coordinator that misbehaves: garbage
/// and unknown messages get error frames, and a valid PREPARE afterwards is
/// still answered with a vote.
#[test]
fn a_participant_survives_garbage_from_its_coordinator() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake coordinator");
    let mut c = Cluster::new();
    c.port = listener.local_addr().expect("addr").port();
    // Long heartbeats: the fake coordinator never answers them, and the
    // participant must not give up on it during the test.
    c.start_participant("p1", &["--heartbeat-interval-ms", "20000"], &[]);
    let (stream, _) = listener.accept().expect("participant connects");
    let mut coord = RawConn::from_stream(stream);
    let hello = coord.recv().expect("hello");
    assert_eq!(hello["message_type"], "hello", "{hello}");
    assert_eq!(hello["payload"]["role"], "participant", "{hello}");
    assert_eq!(hello["payload"]["id"], "p1", "{hello}");

    coord.send_frame(b"\x00\x01garbage");
    coord.expect_error("invalid_json");
    coord.send(Body::Welcome {
        state: "READY".into(),
        term: None,
    });
    coord.send_frame(b"[\"not\", \"a\", \"message\"]");
    coord.expect_error("invalid_message");
    coord.send_frame(br#"{"message_type":"self_destruct","payload":{},"timestamp":0}"#);
    coord.expect_error("unknown_message_type");
    coord.send_frame(
        br#"{"message_type":"prepare","payload":{"participants":["p1"]},"timestamp":0}"#,
    );
    coord.expect_error("invalid_message");

    let txn = TxnId::from("fake-1");
    coord.send(Body::Prepare {
        txn: txn.clone(),
        participants: vec!["p1".into()],
        data: json!({"k": "v"}),
        term: None,
    });
    let vote = coord.recv_skip_heartbeats().expect("vote");
    assert_eq!(vote["message_type"], "vote_commit", "{vote}");
    assert_eq!(vote["transaction_id"], "fake-1", "{vote}");
    coord.send(Body::Commit { txn, term: None });
    let ack = coord.recv_skip_heartbeats().expect("ack");
    assert_eq!(ack["message_type"], "ack", "{ack}");
    assert_eq!(ack["transaction_id"], "fake-1", "{ack}");
    assert_eq!(ack["payload"]["decision"], "commit", "{ack}");

    // An oversized frame breaks the connection; the participant closes it
    // and comes back with a new hello instead of dying.
    coord.send_length_prefix(u32::MAX);
    coord.expect_error("frame_too_large");
    coord.expect_closed();
    let (stream, _) = listener.accept().expect("participant reconnects");
    let mut coord = RawConn::from_stream(stream);
    let hello = coord.recv().expect("hello again");
    assert_eq!(hello["message_type"], "hello", "{hello}");
    assert!(
        c.participants[0].is_running(),
        "participant exited:\n{}",
        c.participants[0].log_text()
    );
}

/// Fencing by the leader's term, with a real participant process against a
/// fake coordinator group member: once the participant has taken messages
/// from the leader of term 5, a decision from term 4 (a deposed leader) is
/// refused with `not_leader` and the connection closed, a welcome from term
/// 4 is refused, and both still are after the participant is killed with
/// SIGKILL and restarted, because the term is in its log. The leader of a
/// newer term is welcome and finishes the transaction left in doubt.
#[test]
fn a_participant_refuses_a_deposed_leader_even_after_a_restart() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake coordinator");
    let mut c = Cluster::new();
    c.port = listener.local_addr().expect("addr").port();
    let args = ["--heartbeat-interval-ms", "20000"];
    c.start_participant("p1", &args, &[]);
    let accept = |listener: &std::net::TcpListener| {
        let (stream, _) = listener.accept().expect("participant connects");
        let mut coord = RawConn::from_stream(stream);
        let hello = coord.recv().expect("hello");
        assert_eq!(hello["message_type"], "hello", "{hello}");
        coord
    };
    let welcome = |term: u64| Body::Welcome {
        state: "READY".into(),
        term: Some(term),
    };
    let txn = TxnId::from("fenced-1");

    let mut leader5 = accept(&listener);
    leader5.send(welcome(5));
    leader5.send(Body::Prepare {
        txn: txn.clone(),
        participants: vec!["p1".into()],
        data: json!({"k": "v"}),
        term: Some(5),
    });
    let vote = leader5.recv_skip_heartbeats().expect("vote");
    assert_eq!(vote["message_type"], "vote_commit", "{vote}");
    // A deposed leader's decision, on the same connection.
    leader5.send(Body::Commit {
        txn: txn.clone(),
        term: Some(4),
    });
    let refusal = leader5.expect_error("not_leader");
    assert!(
        refusal.contains("term 4") && refusal.contains("term 5"),
        "{refusal}"
    );
    leader5.expect_closed();

    let mut leader4 = accept(&listener);
    leader4.send(welcome(4));
    leader4.expect_closed();

    c.restart_participant(0, &args, &[]);
    let mut leader4 = accept(&listener);
    leader4.send(welcome(4));
    leader4.expect_closed();

    // The leader of term 6 is asked about the transaction in doubt and
    // its decision is applied.
    let mut leader6 = accept(&listener);
    leader6.send(welcome(6));
    let query = leader6.recv_skip_heartbeats().expect("query");
    assert_eq!(query["message_type"], "query", "{query}");
    assert_eq!(query["transaction_id"], "fenced-1", "{query}");
    leader6.send(Body::Commit { txn, term: Some(6) });
    let ack = leader6.recv_skip_heartbeats().expect("ack");
    assert_eq!(ack["message_type"], "ack", "{ack}");
    assert_eq!(ack["payload"]["decision"], "commit", "{ack}");
    let log = c.participants[0].log_text();
    assert!(
        log.contains("sent `commit` as the leader of term 4")
            && log.contains("sent `welcome` as the leader of term 4"),
        "{log}"
    );
}

//! Access control over real processes and sockets: shared-secret
//! authentication of participants, clients and the admin port; every way
//! to fail it; TLS on and off; and the limits against exhaustion, each hit
//! and then recovered from.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use twopc::client::{Client, ClientError};
use twopc::protocol::{Body, Decision, Role, PROTOCOL_VERSION};
use twopc::security::auth::{self, Context, Prover, Secret};
use twopc::security::ClientSecurity;

const SECRET: &str = "e2e-shared-secret-0123456789abcdef";
const WRONG: &str = "not-the-shared-secret-0123456789ab";

fn secret(text: &str) -> Arc<Secret> {
    Arc::new(Secret::from_text(text).expect("valid secret"))
}

fn security(text: &str) -> ClientSecurity {
    ClientSecurity {
        secret: Some(secret(text)),
        tls: None,
    }
}

/// Write `text` to a private (0600) file in the cluster's directory.
fn file(c: &Cluster, name: &str, text: &str) -> String {
    let path = c.path(name);
    write_private(&path, text);
    path.display().to_string()
}

/// A cluster with `n` participants, all given the secret in `secret_file`;
/// the harness's own connections use it too.
fn secret_cluster(n: usize, coordinator_extra: &[&str]) -> (Cluster, String) {
    let mut c = Cluster::new();
    let secret_file = file(&c, "secret", &format!("{SECRET}\n"));
    let mut args = vec!["--expected-participants".to_string(), n.to_string()];
    args.extend(["--secret-file".to_string(), secret_file.clone()]);
    args.extend(coordinator_extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.start_coordinator(&args, &[]);
    c.security = security(SECRET);
    for i in 1..=n {
        c.start_participant(&format!("p{i}"), &["--secret-file", &secret_file], &[]);
    }
    c.wait_ready(n);
    (c, secret_file)
}

fn assert_commits(c: &Cluster) {
    let (txn, o) = c.submit(req(json!({"k": "v"}))).expect("submit");
    assert_eq!(o.decision, Decision::Commit, "{txn}: {o:?}");
}

fn client_hello() -> Body {
    Body::Hello {
        role: Role::Client,
        id: None,
        protocol_version: PROTOCOL_VERSION,
    }
}

/// Say hello on a raw connection and return the server's challenge nonce.
fn hello_and_challenge(raw: &mut RawConn) -> String {
    raw.send(client_hello());
    let m = raw.recv().expect("challenge");
    assert_eq!(m["message_type"], "challenge", "{m}");
    let nonce = m["payload"]["nonce"].as_str().expect("nonce").to_string();
    assert!(auth::is_nonce(&nonce), "{nonce}");
    nonce
}

/// The `auth` frame a client holding `secret` sends to answer `server_nonce`.
fn auth_frame(secret: &Secret, server_nonce: &str) -> Vec<u8> {
    let key = secret
        .key_for(&auth::Identity::Client)
        .expect("a client key");
    let key = &key;
    let peer_nonce = auth::fresh_nonce();
    let ctx = Context {
        role: Role::Client,
        id: "",
        server_nonce,
        peer_nonce: &peer_nonce,
    };
    let body = Body::Auth {
        mac: auth::mac(key, Prover::Peer, &ctx),
        nonce: peer_nonce.clone(),
    };
    twopc::net::encode(body).to_vec()
}

fn expect_unauthorized_and_closed(raw: &mut RawConn) -> String {
    let msg = raw.expect_error("unauthorized");
    raw.expect_closed();
    msg
}

/// Log text without terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        if ch == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

fn twopc_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = clean_command(TWOPC);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    run_bounded(&mut cmd, PATIENCE)
}

#[test]
fn participants_clients_and_the_admin_port_authenticate_with_the_secret() {
    let mut c = Cluster::new();
    let secret_file = file(&c, "secret", SECRET);
    c.start_coordinator(
        &[
            "--expected-participants",
            "2",
            "--secret-file",
            &secret_file,
        ],
        &[],
    );
    c.security = security(SECRET);
    // One participant reads the secret from a file, the other from TWOPC_SECRET.
    c.start_participant("p1", &["--secret-file", &secret_file], &[]);
    let (_, admin) = c.start_participant_admin("p2", &[], &[("TWOPC_SECRET", SECRET)]);
    c.wait_ready(2);
    assert_commits(&c);

    // The command-line client, with the file and with the variable.
    let addr = c.addr();
    let (code, out, err) = twopc_env(
        &[
            "submit",
            "--coordinator",
            &addr,
            "--secret-file",
            &secret_file,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = twopc_env(
        &["status", "--coordinator", &addr, "--json"],
        &[("TWOPC_SECRET", SECRET)],
    );
    assert_eq!(code, 0, "{out}{err}");
    // The admin port requires the same secret.
    let (code, out, err) = twopc_env(
        &[
            "txn",
            "list",
            "--participant",
            &admin,
            "--json",
            "--secret-file",
            &secret_file,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["total"], 2);
    let (code, _, err) = twopc_env(&["txn", "list", "--participant", &admin], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("requires the shared secret"), "{err}");

    // The secret is never logged, whatever the log level (debug here).
    assert!(!c.coordinator.as_ref().unwrap().log_text().contains(SECRET));
    for p in &c.participants {
        assert!(!p.log_text().contains(SECRET), "{}", p.name);
    }
}

#[test]
fn every_failed_authentication_is_unauthorized_and_good_peers_keep_working() {
    let (mut c, _) = secret_cluster(2, &["--handshake-timeout-ms", "1000"]);
    let addr = c.addr();
    let key = secret(SECRET);

    // Wrong secret: refused by the server, which says what to check.
    let err = block_on(Client::connect_with(&addr, &security(WRONG), PATIENCE))
        .err()
        .expect("wrong secret refused");
    assert_eq!(err.code(), Some("unauthorized"), "{err}");
    assert!(
        err.to_string()
            .contains("derived for it from this cluster's master secret"),
        "{err}"
    );
    let mut raw = RawConn::connect(&addr);
    let nonce = hello_and_challenge(&mut raw);
    raw.send_frame(&auth_frame(&secret(WRONG), &nonce));
    expect_unauthorized_and_closed(&mut raw);

    // No secret: the client is told it needs one; a raw peer that skips
    // the answer is refused.
    let err = block_on(Client::connect(&addr, PATIENCE))
        .err()
        .expect("no secret refused");
    assert!(matches!(err, ClientError::SecretRequired { .. }), "{err}");
    let (code, _, stderr) = twopc_env(&["submit", "--coordinator", &addr], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--secret-file"), "{stderr}");
    let mut raw = RawConn::connect(&addr);
    hello_and_challenge(&mut raw);
    raw.send(Body::Status);
    expect_unauthorized_and_closed(&mut raw);
    // Operator requests before hello are no way around it either.
    let mut raw = RawConn::connect(&addr);
    raw.send(Body::Status);
    expect_unauthorized_and_closed(&mut raw);

    // Never answering the challenge: the handshake timeout closes it.
    let mut raw = RawConn::connect(&addr);
    hello_and_challenge(&mut raw);
    let msg = expect_unauthorized_and_closed(&mut raw);
    assert!(msg.contains("handshake timeout"), "{msg}");

    // A response recorded on one connection is worthless on the next.
    let mut first = RawConn::connect(&addr);
    let nonce = hello_and_challenge(&mut first);
    let recorded = auth_frame(&key, &nonce);
    first.send_frame(&recorded);
    let m = first.recv().expect("authenticated");
    assert_eq!(m["message_type"], "authenticated", "{m}");
    let m = first.recv().expect("welcome");
    assert_eq!(m["message_type"], "welcome", "{m}");
    let mut replay = RawConn::connect(&addr);
    let fresh = hello_and_challenge(&mut replay);
    assert_ne!(fresh, nonce, "every connection gets a fresh nonce");
    replay.send_frame(&recorded);
    expect_unauthorized_and_closed(&mut replay);

    // Garbage instead of a response.
    let mut raw = RawConn::connect(&addr);
    hello_and_challenge(&mut raw);
    raw.send_frame(b"\x00\x01 not json at all");
    expect_unauthorized_and_closed(&mut raw);

    // A participant with the wrong secret never registers, and says why.
    let log = c.path("p3.log");
    let mark = log_mark(&log);
    let wrong = file(&c, "wrong", WRONG);
    let p3 = c.start_participant("p3", &["--secret-file", &wrong], &[]);
    wait_log(&mut c.participants[p3], mark, "unauthorized");

    // The refusals are logged with the peer address.
    let coordinator = strip_ansi(&c.coordinator.as_ref().unwrap().log_text());
    assert!(
        coordinator
            .lines()
            .any(|l| l.contains("handshake refused") && l.contains("peer=127.0.0.1:")),
        "{coordinator}"
    );
    // Good peers were never disturbed.
    let s = c.status();
    assert_eq!(connected(&s), 2, "{s}");
    assert_commits(&c);
}

#[test]
fn repeated_failures_are_logged_at_a_bounded_rate() {
    let (c, _) = secret_cluster(1, &[]);
    let addr = c.addr();
    let before = c.coordinator.as_ref().unwrap().log_text();
    let count = |t: &str| t.matches("handshake refused").count();
    let start = Instant::now();
    const FAILURES: usize = 40;
    for _ in 0..FAILURES {
        let mut raw = RawConn::connect(&addr);
        raw.send(Body::Status);
        expect_unauthorized_and_closed(&mut raw);
    }
    let windows = start.elapsed().as_secs() / 10 + 2;
    let logged = count(&c.coordinator.as_ref().unwrap().log_text()) - count(&before);
    assert!(logged >= 1, "failures are logged");
    assert!(
        (logged as u64) <= 5 * windows && logged < FAILURES,
        "{logged} lines for {FAILURES} failures"
    );
    assert_commits(&c);
}

/// `twopc gen-cert` into `dir`; returns (ca, cert, key).
fn gen_cert(dir: &Path) -> (String, String, String) {
    let d = dir.display().to_string();
    let (code, out, err) = twopc_env(&["gen-cert", "--out-dir", &d], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let p = |n: &str| dir.join(n).display().to_string();
    (p("ca.pem"), p("server.pem"), p("server.key"))
}

#[test]
fn tls_carries_participants_and_clients_and_plaintext_peers_fail_clearly() {
    let mut c = Cluster::new();
    let (ca, cert, key) = gen_cert(&c.path("certs"));
    let secret_file = file(&c, "secret", SECRET);
    c.start_coordinator(
        &[
            "--expected-participants",
            "2",
            "--secret-file",
            &secret_file,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        &[],
    );
    let tls = twopc::security::tls::TlsClient::from_ca_file(Path::new(&ca)).expect("ca");
    c.security = ClientSecurity {
        secret: Some(secret(SECRET)),
        tls: Some(tls.clone()),
    };
    let participant_args = ["--secret-file", &secret_file, "--tls-ca", &ca];
    c.start_participant("p1", &participant_args, &[]);
    // The admin port serves TLS with the same certificate.
    let mut admin_args = participant_args.to_vec();
    admin_args.extend(["--tls-cert", &cert, "--tls-key", &key]);
    let (_, admin) = c.start_participant_admin("p2", &admin_args, &[]);
    c.wait_ready(2);
    assert_commits(&c);
    let addr = c.addr();
    let (code, out, err) = twopc_env(
        &[
            "submit",
            "--coordinator",
            &addr,
            "--secret-file",
            &secret_file,
            "--tls-ca",
            &ca,
            "--json",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = twopc_env(
        &["txn", "list", "--participant", &admin, "--json"],
        &[("TWOPC_SECRET_FILE", &secret_file), ("TWOPC_TLS_CA", &ca)],
    );
    assert_eq!(code, 0, "{out}{err}");

    // A plaintext client against the TLS port: a clear error, no hang.
    let err = block_on(Client::connect_with(&addr, &security(SECRET), PATIENCE))
        .err()
        .expect("plaintext refused");
    assert!(matches!(err, ClientError::TlsRequired { .. }), "{err}");
    let (code, _, stderr) = twopc_env(
        &[
            "status",
            "--coordinator",
            &addr,
            "--secret-file",
            &secret_file,
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("speaks TLS") && stderr.contains("--tls-ca"),
        "{stderr}"
    );
    // A client that trusts another CA is refused by its own TLS check.
    let (other_ca, _, _) = gen_cert(&c.path("other"));
    let (code, _, stderr) = twopc_env(
        &[
            "status",
            "--coordinator",
            &addr,
            "--secret-file",
            &secret_file,
            "--tls-ca",
            &other_ca,
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("TLS handshake"), "{stderr}");
    // A TLS client against a plaintext port (here: the coordinator of
    // another, plain cluster) fails the handshake with a hint.
    let mut plain = Cluster::new();
    plain.start_coordinator(&["--expected-participants", "1"], &[]);
    let plain_addr = plain.addr();
    let err = block_on(Client::connect_with(
        &plain_addr,
        &ClientSecurity {
            secret: None,
            tls: Some(tls),
        },
        PATIENCE,
    ))
    .err()
    .expect("TLS to a plaintext port fails");
    assert!(err.to_string().contains("--tls-cert"), "{err}");
    // The TLS cluster still works after all that.
    assert_commits(&c);
    assert_eq!(connected(&c.status()), 2);
}

#[test]
fn missing_or_invalid_tls_files_stop_the_process_at_start() {
    let c = Cluster::new();
    let (_, cert, key) = gen_cert(&c.path("certs"));
    let junk = file(&c, "junk.pem", "not a pem file");
    let missing = c.path("missing.pem").display().to_string();
    let data = c.path("data").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--tls-cert", &missing, "--tls-key", &key],
            "tls.cert_file",
        ),
        (vec!["--tls-cert", &cert], "tls.key_file"),
        (
            vec!["--tls-cert", &junk, "--tls-key", &key],
            "BEGIN CERTIFICATE",
        ),
        (vec!["--tls-cert", &cert, "--tls-key", &junk], "private key"),
    ];
    for (extra, needle) in cases {
        let mut cmd = clean_command(COORDINATOR);
        cmd.args(["--port", "0", "--data-dir", &data]).args(&extra);
        let (code, _, err) = run_bounded(&mut cmd, PATIENCE);
        assert_eq!(code, 1, "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
    // A participant's CA file, and a secret too short to be safe.
    let mut cmd = clean_command(PARTICIPANT);
    cmd.args(["--data-dir", &data, "--tls-ca", &missing]);
    let (code, _, err) = run_bounded(&mut cmd, PATIENCE);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("tls.ca_file") && err.contains("gen-cert"),
        "{err}"
    );
    let short = file(&c, "short", "tooshort");
    let mut cmd = clean_command(COORDINATOR);
    cmd.args(["--port", "0", "--data-dir", &data, "--secret-file", &short]);
    let (code, _, err) = run_bounded(&mut cmd, PATIENCE);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("at least 16") && !err.contains("tooshort"),
        "{err}"
    );
}

/// Connect raw connections until one is welcomed (a slot freed by a closed
/// connection is released asynchronously); bounded by PATIENCE.
fn welcomed_connection(addr: &str) -> RawConn {
    let start = Instant::now();
    loop {
        let mut raw = RawConn::connect(addr);
        raw.send(client_hello());
        match raw.recv() {
            Some(m) if m["message_type"] == "welcome" => return raw,
            Some(m) if m["payload"]["code"] == "too_many_connections" => {}
            other => panic!("unexpected answer {other:?}"),
        }
        assert!(start.elapsed() < PATIENCE, "no slot freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn limits_are_hit_and_recovered_from() {
    let mut c = Cluster::new();
    c.start_coordinator(
        &[
            "--expected-participants",
            "1",
            "--max-connections",
            "3",
            "--max-frame-bytes",
            "4096",
            "--handshake-timeout-ms",
            "300",
            // No reserved slots: past the limit, refusal comes at once.
            "--participant-reserved-connections",
            "0",
        ],
        &[],
    );
    let (_, admin) = c.start_participant_admin(
        "p1",
        &[
            "--admin-max-connections",
            "1",
            "--admin-reserved-connections",
            "0",
        ],
        &[],
    );
    c.wait_ready(1);
    let addr = c.addr();

    // Connections: p1 holds one slot, two clients the others.
    let a = welcomed_connection(&addr);
    let _b = welcomed_connection(&addr);
    let mut refused = RawConn::connect(&addr);
    let msg = refused.expect_error("too_many_connections");
    assert!(
        msg.contains("max_connections") && msg.contains('3'),
        "{msg}"
    );
    refused.expect_closed();
    let err = block_on(Client::connect(&addr, PATIENCE))
        .err()
        .expect("refused");
    assert_eq!(err.code(), Some("too_many_connections"), "{err}");
    drop(a);
    let c3 = welcomed_connection(&addr);
    drop((c3, _b));

    // The admin port has its own limit.
    let held = welcomed_connection(&admin);
    let mut refused = RawConn::connect(&admin);
    let msg = refused.expect_error("too_many_connections");
    assert!(msg.contains("admin_max_connections"), "{msg}");
    drop(held);
    drop(welcomed_connection(&admin));

    // Frame size: the oversized connection is closed, the next one works.
    let mut raw = welcomed_connection(&addr);
    raw.send_length_prefix(4097);
    raw.expect_error("frame_too_large");
    raw.expect_closed();

    // Handshake timeout: a silent connection is closed, the next one works.
    let mut silent = RawConn::connect(&addr);
    silent.expect_error("hello_required");
    silent.expect_closed();
    assert_commits(&c);
    // (max_in_flight: hit and recovered from in
    // e2e_protocol::a_submit_past_max_in_flight_is_refused_as_overloaded.)
}

#[test]
fn demo_runs_with_a_generated_secret() {
    let (code, out, err) = twopc_env(&["demo", "--participants", "2", "--transactions", "3"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Summary: 3 transactions"), "{out}");
}

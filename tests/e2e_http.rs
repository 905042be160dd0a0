//! The coordinator's HTTP admin API, JSON logs and transaction diagrams,
//! with real processes on loopback. HTTP/1.1 is spoken by hand over a
//! `TcpStream` (one request per connection), so the test sees exactly the
//! status line, headers and body the server sends.

mod common;
mod http;

use common::*;
use http::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[test]
fn health_is_503_with_a_reason_until_participants_register_then_200() {
    let mut c = Cluster::new();
    let admin = start_with_admin(&mut c, 2, &[]);
    // Without a secret nothing asks for proof, and the start says so.
    let log = wait_log(
        c.coordinator.as_mut().unwrap(),
        0,
        "admin http: no shared secret",
    );
    assert!(log.contains("anyone who reaches this port"), "{log}");
    assert_eq!(get(&admin, "/status").status, 200);
    let off = get(&admin, "/auth/challenge");
    assert_eq!(off.status, 404, "{}", off.body);
    assert_eq!(off.json()["error"], "auth_off");
    let r = get(&admin, "/health");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.content_type.starts_with("application/json"), "{r:?}");
    let h = r.json();
    assert_eq!(h["status"], "unavailable");
    assert_eq!(h["state"], "WAITING_FOR_PARTICIPANTS");
    assert_eq!(h["expected_participants"], 2);
    let reason = h["reason"].as_str().unwrap();
    assert!(reason.contains("waiting for participants"), "{reason}");
    // Bad JSON is refused with a message whatever the cluster's state.
    let bad = http(&admin, "POST", "/transactions", Some(b"{\"data\": "));
    assert_eq!(bad.status, 400, "{}", bad.body);
    let b = bad.json();
    assert_eq!(b["error"], "invalid_json");
    assert!(
        b["message"].as_str().unwrap().contains("not valid JSON"),
        "{b}"
    );

    c.start_participants(2, &[]);
    let ok = wait_http(&admin, "/health", "health 200", |r| r.status == 200);
    let h = ok.json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["state"], "READY");
    assert_eq!(h["participants_registered"], 2);
}

#[test]
fn every_endpoint_answers_with_its_json_shape_and_metrics_move() {
    let mut c = Cluster::new();
    let admin = start_with_admin(&mut c, 2, &["--admin-max-body-bytes", "2048"]);
    c.start_participant("p1", &[], &[]);
    c.start_participant("p2", &["--vote-preference", "abort"], &[]);
    wait_http(&admin, "/health", "health 200", |r| r.status == 200);

    let before = get(&admin, "/metrics");
    assert_eq!(before.status, 200);
    assert!(
        before.content_type.starts_with("text/plain"),
        "{:?}",
        before.content_type
    );
    let m0 = parse_metrics(&before.body);

    // Submit over HTTP: the same payload as the TCP submit.
    let commit = post(
        &admin,
        "/transactions",
        &json!({"data": {"order": 1}, "participants": ["p1"]}),
    );
    assert_eq!(commit.status, 200, "{}", commit.body);
    let cj = commit.json();
    assert_eq!(cj["decision"], "commit");
    assert_eq!(cj["votes"], json!({"p1": "commit"}));
    let commit_id = cj["transaction_id"].as_str().unwrap().to_string();
    let abort = post(&admin, "/transactions", &json!({"data": {"order": 2}}));
    assert_eq!(abort.status, 200, "{}", abort.body);
    let aj = abort.json();
    assert_eq!(aj["decision"], "abort");
    assert!(
        aj["reason"]
            .as_str()
            .unwrap()
            .starts_with("participant p2 voted abort"),
        "{aj}"
    );
    let abort_id = aj["transaction_id"].as_str().unwrap().to_string();
    wait_ended(&admin, &commit_id);
    let detail = wait_ended(&admin, &abort_id);

    // One transaction in full.
    for key in [
        "transaction_id",
        "state",
        "participants",
        "votes",
        "decision",
        "acks",
        "errors",
        "retries",
        "timeline",
        "timeline_dropped",
    ] {
        assert!(detail.get(key).is_some(), "no `{key}` in {detail}");
    }
    assert_eq!(detail["state"], "ABORTED");
    assert_eq!(detail["abort_cause"], "vote_abort");
    assert!(
        detail["errors"]["p2"]
            .as_str()
            .unwrap()
            .starts_with("voted abort"),
        "{detail}"
    );
    let events: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"submitted"), "{events:?}");
    assert_eq!(events.last(), Some(&"ended"), "{events:?}");
    let unknown = get(&admin, "/transactions/no-such-txn");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"], "unknown_transaction");

    // Lists and filters.
    let all = get(&admin, "/transactions").json();
    assert_eq!(all["total"], 2, "{all}");
    let committed = get(&admin, "/transactions?state=committed").json();
    let ids: Vec<&str> = committed["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["transaction_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![commit_id.as_str()]);
    let bad_state = get(&admin, "/transactions?state=sideways");
    assert_eq!(bad_state.status, 400);
    assert!(
        bad_state.json()["message"]
            .as_str()
            .unwrap()
            .contains("in-flight"),
        "{}",
        bad_state.body
    );

    // Status and participants.
    let s = get(&admin, "/status").json();
    assert_eq!(s["state"], "READY");
    assert!(s["wal"]["syncs"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["transactions"]["committed"].is_u64(), "{s}");
    let p = get(&admin, "/participants").json();
    let list = p["participants"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{p}");
    for m in list {
        assert_eq!(m["connected"], true, "{p}");
        assert!(m["id"].is_string() && m["alive"].is_boolean(), "{p}");
    }

    // Refusals: bad shapes, unknown participants, too large, no endpoint.
    let shape = post(&admin, "/transactions", &json!({"participants": "p1"}));
    assert_eq!(shape.status, 400);
    assert_eq!(shape.json()["error"], "invalid_message");
    let who = post(&admin, "/transactions", &json!({"participants": ["p9"]}));
    assert_eq!(who.status, 400, "{}", who.body);
    assert_eq!(who.json()["error"], "unknown_participant");
    let big = post(&admin, "/transactions", &json!({"data": "x".repeat(4096)}));
    assert_eq!(big.status, 413, "{}", big.body);
    assert!(
        big.json()["message"]
            .as_str()
            .unwrap()
            .contains("admin_max_body_bytes"),
        "{}",
        big.body
    );
    let nowhere = get(&admin, "/nowhere");
    assert_eq!(nowhere.status, 404);
    let r = http(&admin, "DELETE", "/transactions", None);
    assert_eq!(r.status, 405);
    assert_eq!(
        r.json()["error"],
        "method_not_allowed",
        "a JSON error body: {r:?}"
    );

    // The counters moved by what happened above.
    let m1 = parse_metrics(&get(&admin, "/metrics").body);
    let d = |series: &str| metric(&m1, series) - metric(&m0, series);
    assert_eq!(d("twopc_transactions_committed_total"), 1.0);
    assert_eq!(
        d("twopc_transactions_aborted_total{reason=\"vote_abort\"}"),
        1.0
    );
    assert_eq!(
        d("twopc_transactions_aborted_total{reason=\"vote_timeout\"}"),
        0.0
    );
    assert_eq!(d("twopc_prepare_duration_seconds_count"), 2.0);
    assert_eq!(d("twopc_completion_duration_seconds_count"), 2.0);
    assert_eq!(d("twopc_decision_durable_duration_seconds_count"), 1.0);
    assert!(d("twopc_wal_syncs_total") >= 1.0);
    assert!(d("twopc_wal_records_total") >= 2.0, "decision and end");
    assert!(d("twopc_wal_bytes_total") > 0.0);
    assert_eq!(
        d("twopc_protocol_errors_total{code=\"unknown_participant\"}"),
        1.0
    );
    assert_eq!(metric(&m1, "twopc_up"), 1.0);
    assert_eq!(metric(&m1, "twopc_participants_connected"), 2.0);
    assert_eq!(metric(&m1, "twopc_transactions_in_flight"), 0.0);
    assert_eq!(metric(&m1, "twopc_transactions_in_doubt"), 0.0);
    assert!(metric(&m1, "twopc_connections") >= 2.0);
    assert!(metric(&m1, "twopc_http_connections") >= 1.0);
    assert_eq!(
        metric(&m1, "twopc_prepare_duration_seconds_bucket{le=\"+Inf\"}"),
        metric(&m1, "twopc_prepare_duration_seconds_count")
    );
}

/// The lines of `twopc txn show ID --diagram` that are not declarations.
fn diagram(coordinator: &str, id: &str) -> Vec<String> {
    let (code, out, err) =
        run_twopc(&["txn", "show", id, "--coordinator", coordinator, "--diagram"]);
    assert_eq!(code, 0, "txn show --diagram failed: {err}");
    let lines: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
    assert_eq!(lines[0], "sequenceDiagram", "{out}");
    lines
}

/// Index of the first line starting with `prefix`; fails with the diagram.
fn at(lines: &[String], prefix: &str) -> usize {
    lines
        .iter()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with `{prefix}` in\n{}", lines.join("\n")))
}

#[test]
fn json_logs_carry_the_transaction_id_and_diagrams_show_commit_and_abort() {
    let mut c = Cluster::new();
    let admin = start_with_admin(&mut c, 2, &["--log-format", "json"]);
    c.start_participant("p1", &["--log-format", "json"], &[]);
    c.start_participant(
        "p2",
        &["--log-format", "json", "--vote-preference", "abort"],
        &[],
    );
    c.wait_ready(2);

    let commit = post(&admin, "/transactions", &json!({"participants": ["p1"]})).json();
    assert_eq!(commit["decision"], "commit", "{commit}");
    let commit_id = commit["transaction_id"].as_str().unwrap().to_string();
    let abort = post(&admin, "/transactions", &json!({})).json();
    assert_eq!(abort["decision"], "abort", "{abort}");
    let abort_id = abort["transaction_id"].as_str().unwrap().to_string();
    wait_ended(&admin, &commit_id);
    wait_ended(&admin, &abort_id);

    // Every log line is one JSON object; lines about a transaction name it
    // in the `transaction_id` field.
    let coordinator_log = c.coordinator.as_ref().unwrap().log_text();
    let p1_log = c.participants[0].log_text();
    for (who, text) in [("coordinator", &coordinator_log), ("p1", &p1_log)] {
        let mut ids = HashSet::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{who} log line is not JSON ({e}): {line}"));
            assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
            if let Some(id) = v["fields"]["transaction_id"].as_str() {
                ids.insert(id.to_string());
            }
        }
        assert!(
            ids.contains(&commit_id) && ids.contains(&abort_id),
            "{who} log has no lines with transaction_id {commit_id} and {abort_id}:\n{text}"
        );
    }

    // A committed transaction: votes, the forced log write and its sync,
    // then the commits, the outcome and the acknowledgement.
    let coord = c.addr();
    let d = diagram(&coord, &commit_id);
    assert!(
        d.contains(&"participant C as coordinator".to_string()),
        "{d:?}"
    );
    assert!(d.contains(&"participant P1 as p1".to_string()), "{d:?}");
    let order = [
        "Client->>C: submit, t=",
        "C->>P1: PREPARE, t=",
        "P1->>C: VOTE_COMMIT, t=",
        "Note over C: decided COMMIT, t=",
        "Note over C: decision record appended to the log",
        "Note over C: log sync done, decision durable, t=",
        "C->>P1: COMMIT, t=",
        "C-->>Client: outcome COMMIT, t=",
        "P1->>C: ACK, t=",
        "Note over C: every participant acknowledged, ended, t=",
    ];
    let idx: Vec<usize> = order.iter().map(|p| at(&d, p)).collect();
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "out of order: {d:#?}");
    // Times are milliseconds since the start and never go back.
    let times: Vec<u64> = d
        .iter()
        .filter_map(|l| l.rsplit_once(", t=").map(|(_, t)| t))
        .map(|t| t.trim_end_matches(" ms").parse().unwrap())
        .collect();
    assert_eq!(times.first(), Some(&0), "{d:#?}");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{d:#?}");

    // An aborted transaction: the abort vote with its reason, the decision
    // with no log write (presumed abort), ABORT to the other participant.
    let d = diagram(&coord, &abort_id);
    let order = [
        "C->>P1: PREPARE, t=",
        "P2->>C: VOTE_ABORT (",
        "Note over C: decided ABORT (participant p2 voted abort",
        "C->>P1: ABORT",
        "C-->>Client: outcome ABORT, t=",
        "Note over C: every participant acknowledged, ended, t=",
    ];
    let idx: Vec<usize> = order.iter().map(|p| at(&d, p)).collect();
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "out of order: {d:#?}");
    assert!(
        !d.iter().any(|l| l.contains("log sync")),
        "an abort is never logged: {d:#?}"
    );

    // --diagram is for the coordinator's view only.
    let (code, _, err) = run_twopc(&[
        "txn",
        "show",
        &abort_id,
        "--participant",
        "127.0.0.1:1",
        "--diagram",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--diagram"), "{err}");
}

// ---- Authentication with the shared secret ----

#[test]
fn with_a_secret_every_endpoint_but_health_needs_a_fresh_proof() {
    let mut c = Cluster::new();
    let (admin, secret_file) = start_secret_admin(&mut c, 1, &[]);
    c.start_participant("p1", &["--secret-file", &secret_file], &[]);
    let mut refused = 0;

    // /health stays open: load balancers carry no secret.
    let h = wait_http(&admin, "/health", "health 200", |r| r.status == 200);
    assert_eq!(h.json()["state"], "READY");
    let ch = get(&admin, "/auth/challenge").json();
    assert_eq!(ch["expires_in_ms"], 30_000, "{ch}");

    // No header, a malformed one, another scheme.
    for (path, extra, why) in [
        ("/status", None, "requires the shared secret"),
        ("/metrics", None, "requires the shared secret"),
        (
            "/transactions",
            Some("Authorization: TWOPC-HMAC nonce=abc, mac=def"),
            "malformed",
        ),
        ("/status", Some("Authorization: Bearer 0123"), "malformed"),
    ] {
        let lines: Vec<&str> = extra.into_iter().collect();
        assert_unauthorized(&http_with(&admin, "GET", path, &lines, None), why);
        refused += 1;
    }

    // A correct proof works once; the captured request replayed does not.
    let line = proof_line(SECRET, &nonce(&admin), "GET", "/status", b"");
    let ok = http_with(&admin, "GET", "/status", &[&line], None);
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["state"], "READY");
    assert_unauthorized(
        &http_with(&admin, "GET", "/status", &[&line], None),
        "already used",
    );
    refused += 1;

    // A proof for another path, query or method; another secret; a nonce
    // never issued.
    let n = nonce(&admin);
    let line = proof_line(SECRET, &n, "GET", "/participants", b"");
    assert_unauthorized(
        &http_with(&admin, "GET", "/status", &[&line], None),
        "wrong MAC",
    );
    let line = proof_line(SECRET, &nonce(&admin), "GET", "/transactions", b"");
    let r = http_with(&admin, "GET", "/transactions?state=aborted", &[&line], None);
    assert_unauthorized(&r, "wrong MAC");
    let line = proof_line(SECRET, &nonce(&admin), "GET", "/transactions", b"{}");
    let digest = digest_line(b"{}");
    let r = http_with(
        &admin,
        "POST",
        "/transactions",
        &[&line, &digest],
        Some(b"{}"),
    );
    assert_unauthorized(&r, "wrong MAC");
    let line = proof_line(
        "not-the-secret-0123456789abcdef",
        &nonce(&admin),
        "GET",
        "/status",
        b"",
    );
    assert_unauthorized(
        &http_with(&admin, "GET", "/status", &[&line], None),
        "wrong MAC",
    );
    let line = proof_line(SECRET, &"5".repeat(64), "GET", "/status", b"");
    assert_unauthorized(
        &http_with(&admin, "GET", "/status", &[&line], None),
        "unknown nonce",
    );
    refused += 5;

    // A submit signed over its body runs; a tampered body is refused and
    // runs nothing.
    let body = br#"{"data": {"order": 1}}"#;
    let r = signed(&admin, "POST", "/transactions", body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["decision"], "commit", "{}", r.body);
    // The proof is checked before the body is read, against the digest the
    // request declares: a body without one, a tampered body under the
    // signed digest, and a tampered body declaring its own digest.
    let tampered = br#"{"data": {"order": 2}}"#;
    let line = proof_line(SECRET, &nonce(&admin), "POST", "/transactions", body);
    let r = http_with(&admin, "POST", "/transactions", &[&line], Some(body));
    assert_unauthorized(&r, "must carry x-twopc-body-sha256");
    let line = proof_line(SECRET, &nonce(&admin), "POST", "/transactions", body);
    let signed_digest = digest_line(body);
    let r = http_with(
        &admin,
        "POST",
        "/transactions",
        &[&line, &signed_digest],
        Some(tampered),
    );
    assert_unauthorized(&r, "does not match its x-twopc-body-sha256");
    let line = proof_line(SECRET, &nonce(&admin), "POST", "/transactions", body);
    let own_digest = digest_line(tampered);
    let r = http_with(
        &admin,
        "POST",
        "/transactions",
        &[&line, &own_digest],
        Some(tampered),
    );
    assert_unauthorized(&r, "wrong MAC");
    refused += 3;

    // Good requests keep working after the failures; queries are signed as sent.
    let list = signed(&admin, "GET", "/transactions?state=committed", b"");
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.json()["total"], 1, "{}", list.body);
    assert_eq!(signed(&admin, "GET", "/participants", b"").status, 200);

    // Refusals are counted and logged with the peer's address.
    let m = signed(&admin, "GET", "/metrics", b"");
    assert_eq!(m.status, 200, "{}", m.body);
    let unauthorized = metric(
        &parse_metrics(&m.body),
        "twopc_protocol_errors_total{code=\"unauthorized\"}",
    );
    assert_eq!(unauthorized, refused as f64);
    let log = wait_log(
        c.coordinator.as_mut().unwrap(),
        0,
        "admin http request refused",
    );
    assert!(log.contains("127.0.0.1"), "{log}");
    assert!(log.contains("shared-secret authentication on"), "{log}");
    assert!(!log.contains(SECRET), "the secret must never be logged");

    // `twopc http` does the exchange for an operator.
    let (code, out, err) = run_twopc(&[
        "http",
        "GET",
        "/status",
        "--coordinator-admin",
        &admin,
        "--secret-file",
        &secret_file,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(v["state"], "READY");
    let (code, out, err) = run_twopc(&[
        "http",
        "POST",
        "/transactions",
        "--data",
        r#"{"data": {"order": 3}}"#,
        "--coordinator-admin",
        &admin,
        "--secret-file",
        &secret_file,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"commit\""), "{out}");
    let (code, out, err) = run_twopc(&["http", "GET", "/status", "--coordinator-admin", &admin]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("--secret-file"), "{err}");
}

#[test]
fn nonces_expire_and_the_store_forgets_the_oldest() {
    let mut c = Cluster::new();
    let ttl_ms = 200;
    let ttl = ttl_ms.to_string();
    let (admin, _) = start_secret_admin(
        &mut c,
        1,
        &[
            "--admin-auth-nonce-ttl-ms",
            &ttl,
            "--admin-auth-nonces-max",
            "2",
        ],
    );

    // Expired: wait on our own clock until the lifetime has surely passed
    // on the server's (it issued the nonce before we got it).
    let r = get(&admin, "/auth/challenge");
    let received = Instant::now();
    let v = r.json();
    assert_eq!(v["expires_in_ms"], ttl_ms, "{v}");
    let n = v["nonce"].as_str().unwrap().to_string();
    while received.elapsed() <= Duration::from_millis(ttl_ms) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let line = proof_line(SECRET, &n, "GET", "/status", b"");
    assert_unauthorized(
        &http_with(&admin, "GET", "/status", &[&line], None),
        "expired",
    );

    // Past `admin_auth_nonces_max` the oldest nonce is forgotten (or it
    // expired first: either way it is unknown now).
    let (a, _b, _c) = (nonce(&admin), nonce(&admin), nonce(&admin));
    let line = proof_line(SECRET, &a, "GET", "/status", b"");
    assert_unauthorized(
        &http_with(&admin, "GET", "/status", &[&line], None),
        "unknown nonce",
    );

    // A proof sent within the lifetime works. The lifetime is short, so a
    // slow machine may need a few tries; each try is refused as expired.
    let start = Instant::now();
    loop {
        let r = signed(&admin, "GET", "/status", b"");
        if r.status == 200 {
            break;
        }
        assert_unauthorized(&r, "expired");
        assert!(
            start.elapsed() < PATIENCE,
            "no proof arrived within {ttl_ms} ms"
        );
    }
}

#[test]
fn the_admin_api_serves_tls_with_the_coordinator_certificate() {
    let mut c = Cluster::new();
    let certs = c.path("certs");
    let dir = certs.display().to_string();
    let (code, out, err) = run_twopc(&["gen-cert", "--out-dir", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    let p = |n: &str| certs.join(n).display().to_string();
    let (ca, cert, key) = (p("ca.pem"), p("server.pem"), p("server.key"));
    let (admin, secret_file) =
        start_secret_admin(&mut c, 1, &["--tls-cert", &cert, "--tls-key", &key]);
    // Over TLS, with the proof of the secret: the status.
    let (code, out, err) = run_twopc(&[
        "http",
        "GET",
        "/status",
        "--coordinator-admin",
        &admin,
        "--secret-file",
        &secret_file,
        "--tls-ca",
        &ca,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("status JSON");
    assert!(v["state"].is_string(), "{v}");
    // Plain HTTP to the TLS port gets no answer, and the error says what to do.
    let (code, out, err) = run_twopc(&[
        "http",
        "GET",
        "/health",
        "--coordinator-admin",
        &admin,
        "--timeout-seconds",
        "30",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("--tls-ca"), "{err}");
    // A CA that did not sign the certificate is refused.
    let other = c.path("other");
    let d = other.display().to_string();
    let (code, out, err) = run_twopc(&["gen-cert", "--out-dir", &d]);
    assert_eq!(code, 0, "{out}{err}");
    let wrong_ca = other.join("ca.pem").display().to_string();
    let (code, out, err) = run_twopc(&[
        "http",
        "GET",
        "/health",
        "--coordinator-admin",
        &admin,
        "--tls-ca",
        &wrong_ca,
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("TLS handshake failed"), "{err}");
    // The admin API keeps serving good clients afterwards.
    let (code, out, err) = run_twopc(&[
        "http",
        "GET",
        "/auth/challenge",
        "--coordinator-admin",
        &admin,
        "--tls-ca",
        &ca,
    ]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn with_admin_open_metrics_a_scraper_needs_no_proof_for_metrics_only() {
    let mut c = Cluster::new();
    let (admin, _) = start_secret_admin(&mut c, 1, &[]);
    // By default /metrics needs the proof like the rest.
    assert_eq!(get(&admin, "/metrics").status, 401);
    let mut c2 = Cluster::new();
    let (admin, _) = start_secret_admin(&mut c2, 1, &["--admin-open-metrics"]);
    let m = get(&admin, "/metrics");
    assert_eq!(m.status, 200, "{m:?}");
    assert!(m.content_type.starts_with("text/plain"), "{m:?}");
    assert!(m.body.contains("# TYPE "), "{}", m.body);
    // Everything else still needs it.
    for path in ["/status", "/participants", "/transactions"] {
        assert_eq!(get(&admin, path).status, 401, "{path}");
    }
    assert_eq!(signed(&admin, "GET", "/status", b"").status, 200);
}

/// Strangers without the secret try to stall the admin port. A fake proof
/// with a promised body is refused from the headers (the proof is checked
/// before any body byte is read) and the connection closed. Strangers that
/// hold every ordinary slot by never finishing their headers cannot stop
/// `GET /health`, answered from slots of its own; other requests get a 503
/// `too_many_connections` at once instead of waiting in the backlog; once
/// every slot is taken a connection is told so and closed.
#[test]
fn strangers_holding_every_slot_cannot_stall_health_or_the_port() {
    let mut c = Cluster::new();
    // Slow headers may hold a slot for a long time here, so that the test
    // does not depend on how fast it runs.
    let (admin, secret_file) =
        start_secret_admin(&mut c, 1, &["--admin-header-timeout-ms", "600000"]);
    c.start_participant("p1", &["--secret-file", &secret_file], &[]);
    wait_http(&admin, "/health", "health 200", |r| r.status == 200);

    let fake = format!(
        "TWOPC-HMAC nonce={}, mac={}",
        "7".repeat(64),
        "8".repeat(64)
    );
    for _ in 0..100 {
        let mut s = std::net::TcpStream::connect(&admin).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let head = format!(
            "POST /transactions HTTP/1.1\r\nHost: {admin}\r\nAuthorization: {fake}\r\n{}\r\nContent-Length: 100\r\n\r\n{{",
            digest_line(b"{}")
        );
        s.write_all(head.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .expect("a refusal and a close before the body");
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.starts_with("HTTP/1.1 401") && text.contains("unknown nonce"),
            "{text}"
        );
    }

    // The default admin_max_connections, held by headers never finished.
    let mut holders = Vec::new();
    for _ in 0..64 {
        let mut s = std::net::TcpStream::connect(&admin).expect("connect");
        s.write_all(b"POST /transactions HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        holders.push(s);
    }
    // They are accepted in order: once a later connection is served from a
    // health slot, all 64 hold ordinary ones.
    let start = Instant::now();
    loop {
        // 401 while an ordinary slot serves it; 503 from a health slot.
        let r = get(&admin, "/status");
        if r.status == 503 {
            assert_eq!(r.json()["error"], "too_many_connections", "{r:?}");
            assert!(
                r.json()["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("only GET /health"),
                "{r:?}"
            );
            break;
        }
        assert!(start.elapsed() < PATIENCE, "the slots never filled: {r:?}");
    }
    let h = get(&admin, "/health");
    assert_eq!(h.status, 200, "{h:?}");
    assert_eq!(h.json()["state"], "READY", "{h:?}");

    // Idle sockets take the health slots too; past them a connection gets
    // the refusal and is closed.
    let mut idle = Vec::new();
    for _ in 0..12 {
        let s = std::net::TcpStream::connect(&admin).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        idle.push(s);
    }
    let mut raw = Vec::new();
    idle.last_mut()
        .unwrap()
        .read_to_end(&mut raw)
        .expect("the refusal");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    let (_, body) = text.split_once("\r\n\r\n").expect("headers end");
    let v: Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(v["error"], "too_many_connections", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("admin_max_connections"),
        "{v}"
    );

    // The strangers leave: everything works again (their slots are freed
    // as the server sees them close).
    drop(holders);
    drop(idle);
    let start = Instant::now();
    loop {
        let ch = get(&admin, "/auth/challenge");
        let r = match ch.json()["nonce"].as_str() {
            Some(n) => {
                let line = proof_line(SECRET, n, "GET", "/status", b"");
                http_with(&admin, "GET", "/status", &[&line], None)
            }
            None => ch,
        };
        if r.status == 200 {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "status never recovered: {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a web page can make a browser send: a form post (`text/plain`,
/// no preflight) is refused and runs nothing; a page whose DNS name was
/// rebound to this address sends its own name in `Host` and gets nothing,
/// not even `/health`. Names in admin_allowed_hosts replace the defaults.
#[test]
fn browsers_cannot_submit_cross_site_or_rebind_names() {
    let mut c = Cluster::new();
    let admin = start_with_admin(&mut c, 1, &[]);
    c.start_participant("p1", &[], &[]);
    wait_http(&admin, "/health", "health 200", |r| r.status == 200);
    let port = admin.rsplit(':').next().unwrap().to_string();

    let form = raw_request(
        &admin,
        "POST",
        "/transactions",
        &admin,
        "text/plain",
        r#"{"data": {"x": 1}}"#,
    );
    assert_eq!(form.status, 415, "{form:?}");
    assert_eq!(form.json()["error"], "unsupported_media_type", "{form:?}");
    let ok = raw_request(
        &admin,
        "POST",
        "/transactions",
        &admin,
        "application/json; charset=utf-8",
        r#"{"data": {"x": 2}}"#,
    );
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["decision"], "commit", "{ok:?}");
    let list = wait_http(&admin, "/transactions", "the commit listed", |r| {
        r.json()["total"] == 1
    });
    assert_eq!(
        list.json()["total"],
        1,
        "only the JSON submit ran: {list:?}"
    );

    for path in ["/health", "/status", "/transactions"] {
        let r = raw_request(
            &admin,
            "GET",
            path,
            &format!("evil.example:{port}"),
            "application/json",
            "",
        );
        assert_eq!(r.status, 421, "{path}: {r:?}");
        assert_eq!(r.json()["error"], "host_not_allowed", "{r:?}");
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap_or("")
                .contains("admin_allowed_hosts"),
            "{r:?}"
        );
    }
    for host in [
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "127.0.0.1".to_string(),
    ] {
        let r = raw_request(&admin, "GET", "/health", &host, "application/json", "");
        assert_eq!(r.status, 200, "{host}: {r:?}");
    }

    let mut c = Cluster::new();
    let admin = start_with_admin(
        &mut c,
        1,
        &["--admin-allowed-hosts", "admin.internal,ops.internal"],
    );
    let r = raw_request(
        &admin,
        "GET",
        "/health",
        "admin.internal:80",
        "application/json",
        "",
    );
    assert_eq!(r.status, 503, "known name, waiting for participants: {r:?}");
    let r = raw_request(&admin, "GET", "/health", &admin, "application/json", "");
    assert_eq!(r.status, 421, "the defaults are replaced: {r:?}");
}

/// Refusals are counted by port and reason in
/// `twopc_auth_failures_total`, and `GET /auth/challenge` is rate-limited
/// per address: one address cannot push everyone else's nonces out.
#[test]
fn refusals_are_counted_by_port_and_reason_and_challenges_are_rate_limited() {
    let mut c = Cluster::new();
    let (admin, secret_file) =
        start_secret_admin(&mut c, 1, &["--admin-auth-challenges-per-second", "1"]);
    c.start_participant("p1", &["--secret-file", &secret_file], &[]);
    wait_http(&admin, "/health", "health 200", |r| r.status == 200);

    // One wrong MAC on the protocol port.
    let mut raw = RawConn::connect(&c.addr());
    raw.send(twopc::protocol::Body::Hello {
        role: twopc::protocol::Role::Client,
        id: None,
        protocol_version: twopc::protocol::PROTOCOL_VERSION,
    });
    let m = raw.recv().expect("challenge");
    assert_eq!(m["message_type"], "challenge", "{m}");
    raw.send(twopc::protocol::Body::Auth {
        nonce: "2".repeat(64),
        mac: "3".repeat(64),
    });
    raw.expect_error("unauthorized");
    // One malformed and one unknown-nonce proof over HTTP.
    let r = http_with(
        &admin,
        "GET",
        "/status",
        &["Authorization: TWOPC-HMAC x"],
        None,
    );
    assert_eq!(r.status, 401, "{r:?}");
    let line = proof_line(SECRET, &"5".repeat(64), "GET", "/status", b"");
    let r = http_with(&admin, "GET", "/status", &[&line], None);
    assert_eq!(r.status, 401, "{r:?}");

    let m = parse_metrics(&signed(&admin, "GET", "/metrics", b"").body);
    for (series, want) in [
        (
            "twopc_auth_failures_total{port=\"protocol\",reason=\"wrong_mac\"}",
            1.0,
        ),
        (
            "twopc_auth_failures_total{port=\"http\",reason=\"malformed\"}",
            1.0,
        ),
        (
            "twopc_auth_failures_total{port=\"http\",reason=\"unknown_nonce\"}",
            1.0,
        ),
    ] {
        assert_eq!(metric(&m, series), want, "{series}");
    }

    // Nonces faster than one a second (after a burst of two) are refused
    // with 429 and Retry-After; then they are handed out again.
    let mut refused = 0;
    for _ in 0..1000 {
        let r = get(&admin, "/auth/challenge");
        if r.status == 429 {
            assert_eq!(r.json()["error"], "too_many_requests", "{r:?}");
            assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
            refused += 1;
            break;
        }
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(refused, 1, "no challenge was ever refused");
    let start = Instant::now();
    let n = loop {
        let r = get(&admin, "/auth/challenge");
        if r.status == 200 {
            break r.json()["nonce"].as_str().expect("nonce").to_string();
        }
        refused += 1;
        assert!(start.elapsed() < PATIENCE, "no nonce came back: {r:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let line = proof_line(SECRET, &n, "GET", "/metrics", b"");
    let m = parse_metrics(&http_with(&admin, "GET", "/metrics", &[&line], None).body);
    assert_eq!(
        metric(
            &m,
            "twopc_auth_failures_total{port=\"http\",reason=\"challenge_rate\"}"
        ),
        refused as f64
    );
}

/// Submit `n` transactions (every participant, no data) over `threads`
/// client connections at once; returns their ids.
fn submit_many(addr: &str, n: usize, threads: usize) -> Vec<String> {
    let per = n.div_ceil(threads);
    let workers: Vec<_> = (0..threads)
        .map(|w| {
            let addr = addr.to_string();
            let count = per.min(n.saturating_sub(w * per));
            std::thread::spawn(move || {
                block_on(async move {
                    let mut c = twopc::client::Client::connect(&addr, PATIENCE)
                        .await
                        .expect("connect");
                    let mut ids = Vec::with_capacity(count);
                    for _ in 0..count {
                        let (txn, o) = c.submit(req(Value::Null)).await.expect("an outcome");
                        assert_eq!(o.decision, twopc::protocol::Decision::Commit);
                        ids.push(txn.0);
                    }
                    ids
                })
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|w| w.join().expect("a submitting thread"))
        .collect()
}

/// The ids of one page of a list reply.
fn page_ids(v: &Value) -> Vec<String> {
    v["transactions"]
        .as_array()
        .unwrap_or_else(|| panic!("no transactions in {v}"))
        .iter()
        .map(|t| t["transaction_id"].as_str().expect("an id").to_string())
        .collect()
}

/// Each id once, and exactly the ids of `want`.
fn assert_each_once(seen: &[String], want: &HashSet<String>, what: &str) {
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "{what}: an id came twice");
    let missing: Vec<&String> = want.iter().filter(|id| !unique.contains(id)).collect();
    let extra: Vec<&&String> = unique.iter().filter(|id| !want.contains(**id)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:?}, not asked for {extra:?}"
    );
}

/// 1,200 transactions, more than one default page (query_page_max, 1000):
/// walked to the end over HTTP in pages of 100 while new transactions
/// arrive, with `twopc txn list --all` at the coordinator and at a
/// participant's admin port: every transaction exactly once, as many as the
/// first reply's total, and the newcomers (newer than the first page) never
/// mixed into the later pages.
#[test]
fn lists_are_paged_to_the_end_each_transaction_once() {
    const N: usize = 1200;
    let mut c = Cluster::new();
    let admin = start_with_admin(&mut c, 1, &["--unsafe-no-fsync"]);
    let (_, padmin) = c.start_participant_admin("p1", &["--unsafe-no-fsync"], &[]);
    wait_http(&admin, "/health", "health 200", |r| r.status == 200);
    let ids: HashSet<String> = submit_many(&c.addr(), N, 8).into_iter().collect();
    assert_eq!(ids.len(), N);

    // Over HTTP, 100 at a time; five more transactions after page one.
    let mut seen = Vec::new();
    let mut path = "/transactions?limit=100".to_string();
    let mut first_total = None;
    let mut pages = 0;
    loop {
        let r = get(&admin, &path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let v = r.json();
        let page = page_ids(&v);
        assert!(page.len() <= 100, "{} on one page", page.len());
        seen.extend(page);
        pages += 1;
        if first_total.is_none() {
            first_total = Some(v["total"].as_u64().expect("total"));
            submit_many(&c.addr(), 5, 1);
        }
        match v["next"].as_str() {
            Some(next) => path = format!("/transactions?limit=100&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(first_total, Some(N as u64));
    assert_eq!(pages, 12);
    assert_each_once(&seen, &ids, "GET /transactions");

    // The same with a filter that matches every one of them.
    let mut seen = Vec::new();
    let mut path = "/transactions?state=committed&limit=1000".to_string();
    loop {
        let v = get(&admin, &path).json();
        seen.extend(page_ids(&v));
        match v["next"].as_str() {
            Some(next) => path = format!("/transactions?state=committed&limit=1000&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), N + 5);

    // The tool: --all follows the cursors (default pages of 1000).
    let (code, out, err) =
        run_twopc(&["txn", "list", "--coordinator", &c.addr(), "--all", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("one JSON object");
    let listed = page_ids(&v);
    assert_eq!(v["total"].as_u64(), Some(listed.len() as u64));
    let mut want = ids.clone();
    want.extend(listed.iter().filter(|id| !ids.contains(*id)).cloned());
    assert_eq!(want.len(), N + 5, "the five newcomers");
    assert_each_once(&listed, &want, "twopc txn list --all");
    // One page, then a hint naming the next cursor; the table walks all.
    let (code, out, err) = run_twopc(&["txn", "list", "--coordinator", &c.addr(), "--limit", "7"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("7 shown of {}", N + 5)), "{out}");
    assert!(out.contains("more: --cursor "), "{out}");
    let (code, out, err) = run_twopc(&[
        "txn",
        "list",
        "--coordinator",
        &c.addr(),
        "--all",
        "--limit",
        "500",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("{0} shown of {0}", N + 5)), "{out}");
    assert_eq!(out.lines().count(), N + 5 + 2, "header, rows, count");

    // At the participant's admin port, through the same paging.
    let (code, out, err) = run_twopc(&[
        "txn",
        "list",
        "--participant",
        &padmin,
        "--all",
        "--limit",
        "250",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("one JSON object");
    let listed = page_ids(&v);
    assert_eq!(v["total"].as_u64(), Some(listed.len() as u64));
    assert_each_once(&listed, &want, "twopc txn list --participant --all");
    // Bad page requests are refused by name, there too.
    let (code, _, err) = run_twopc(&["txn", "list", "--participant", &padmin, "--limit", "100001"]);
    assert_ne!(code, 0);
    assert!(err.contains("limit 100001 is out of range"), "{err}");
    let (code, _, err) = run_twopc(&["txn", "list", "--coordinator", &c.addr(), "--cursor", "x"]);
    assert_ne!(code, 0);
    assert!(err.contains("is not a cursor of this list"), "{err}");
}

/// A transaction on loopback takes well under a millisecond of the
/// coordinator's time; it is measured in microseconds, not rounded to 0
/// ms: in its outcome, in `txn show` and in the histograms, whose buckets
/// start at 50 µs.
#[test]
fn fast_transactions_are_timed_in_microseconds() {
    let mut c = Cluster::new();
    let admin = start_with_admin(&mut c, 1, &[]);
    c.start_participant("p1", &[], &[]);
    wait_http(&admin, "/health", "health 200", |r| r.status == 200);
    let m0 = parse_metrics(&get(&admin, "/metrics").body);
    let r = post(&admin, "/transactions", &json!({"data": 1}));
    assert_eq!(r.status, 200, "{}", r.body);
    let o = r.json();
    let id = o["transaction_id"].as_str().expect("id").to_string();
    let ms = o["duration_ms"].as_f64().expect("duration_ms");
    assert!(ms > 0.0, "a decision after a vote took some time: {o}");
    let d = wait_ended(&admin, &id);
    let decided = d["decided_after_us"].as_u64().expect("decided_after_us");
    let durable = d["durable_after_us"].as_u64().expect("durable_after_us");
    let ended = d["ended_after_us"].as_u64().expect("ended_after_us");
    assert!(decided > 0 && decided <= durable && durable <= ended, "{d}");
    // The outcome's duration is the same measurement, in milliseconds.
    assert_eq!(ms, decided as f64 / 1000.0, "{o} vs {d}");

    let m1 = parse_metrics(&get(&admin, "/metrics").body);
    let count = |m: &std::collections::BTreeMap<String, f64>| {
        metric(m, "twopc_prepare_duration_seconds_count")
    };
    assert_eq!(count(&m1) - count(&m0), 1.0);
    let sum = metric(&m1, "twopc_prepare_duration_seconds_sum")
        - metric(&m0, "twopc_prepare_duration_seconds_sum");
    assert!(
        (sum - decided as f64 / 1e6).abs() < 1e-9,
        "sum {sum}, {decided} µs"
    );
    for le in ["0.00005", "0.0001", "0.00025", "0.0005", "0.001"] {
        let series = format!("twopc_prepare_duration_seconds_bucket{{le=\"{le}\"}}");
        assert!(m1.contains_key(&series), "no {series}");
    }

    // The tool prints them: the submit's duration and txn show's fields.
    let (code, out, err) = run_twopc(&["submit", "--coordinator", &c.addr()]);
    assert_eq!(code, 0, "{err}");
    let shown = out
        .split(" in ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .unwrap_or_else(|| panic!("no duration in {out}"));
    let shown: f64 = shown.parse().unwrap_or_else(|_| panic!("{shown} in {out}"));
    assert!(shown > 0.0, "{out}");
    let (code, out, err) = run_twopc(&["txn", "show", &id, "--coordinator", &c.addr()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("decided_after_us")
                && l.trim_end().ends_with(&decided.to_string())),
        "{out}"
    );
}

/// The address a participant's admin HTTP port listens on, from its log.
fn participant_http_addr(c: &Cluster, idx: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    const NEEDLE: &str = "admin http listening on ";
    loop {
        let text = std::fs::read_to_string(&c.participants[idx].log).unwrap_or_default();
        if let Some(at) = text.rfind(NEEDLE) {
            return text[at + NEEDLE.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "participant {idx} never said where its admin http port listens:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn twopc_http_signs_for_a_participant_admin_port_with_its_admin_key() {
    let mut c = Cluster::new();
    let (_, secret_file) = start_secret_admin(&mut c, 1, &[]);
    let idx = c.start_participant(
        "p1",
        &["--secret-file", &secret_file, "--admin-http-port", "0"],
        &[],
    );
    let port = participant_http_addr(&c, idx);

    // The master secret proves the participant's admin key.
    let (code, out, err) = run_twopc(&[
        "http",
        "GET",
        "/status",
        "--admin",
        &port,
        "--secret-file",
        &secret_file,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(v["id"], "p1", "{v}");

    // So does the key of the admin port alone, as `twopc keys derive` prints it.
    let derive = |flag: &[&str]| {
        let mut args = vec!["keys", "derive", "--secret-file", &secret_file];
        args.extend_from_slice(flag);
        let (code, out, err) = run_twopc(&args);
        assert_eq!(code, 0, "{out}{err}");
        out
    };
    let admin_key = c.path("p1-admin.key");
    write_private(&admin_key, &derive(&["--admin", "p1"]));
    let admin_key = admin_key.display().to_string();
    let (code, out, err) = run_twopc(&[
        "http",
        "GET",
        "/transactions?state=in-doubt",
        "--admin",
        &port,
        "--secret-file",
        &admin_key,
    ]);
    assert_eq!(code, 0, "{out}{err}");

    // The coordinator's operator key cannot speak for the participant: the
    // tool says so before sending anything, and what to use instead.
    let operator_key = c.path("operator.key");
    write_private(&operator_key, &derive(&["--operator"]));
    let operator_key = operator_key.display().to_string();
    let (code, out, err) = run_twopc(&[
        "http",
        "GET",
        "/status",
        "--admin",
        &port,
        "--secret-file",
        &operator_key,
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("participant p1's admin port") && err.contains("keys derive"),
        "{err}"
    );
}

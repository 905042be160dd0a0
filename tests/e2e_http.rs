//! The coordinator's HTTP admin API, JSON logs and transaction diagrams,
//! with real processes on loopback. HTTP/1.1 is spoken by hand over a
//! `TcpStream` (one request per connection), so the test sees exactly the
//! status line, headers and body the server sends.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// One HTTP response.
#[derive(Debug)]
struct Resp {
    status: u16,
    content_type: String,
    /// Every header, names in lowercase.
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn http(addr: &str, method: &str, path: &str, body: Option<&[u8]>) -> Resp {
    http_with(addr, method, path, &[], body)
}

/// One request with `extra` header lines (`Name: value`).
fn http_with(addr: &str, method: &str, path: &str, extra: &[&str], body: Option<&[u8]>) -> Resp {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the admin port");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let body = body.unwrap_or(b"");
    let extra: String = extra.iter().map(|h| format!("{h}\r\n")).collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let mut lines = head.lines();
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status: u16 = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    Resp {
        status,
        content_type,
        headers,
        body: body.to_string(),
    }
}

fn get(addr: &str, path: &str) -> Resp {
    http(addr, "GET", path, None)
}

fn post(addr: &str, path: &str, body: &Value) -> Resp {
    http(addr, "POST", path, Some(body.to_string().as_bytes()))
}

/// Start a coordinator with the admin API on a free port; returns its
/// address (read from the coordinator's log).
fn start_with_admin(c: &mut Cluster, expected: usize, extra: &[&str]) -> String {
    let n = expected.to_string();
    let mut args = vec!["--expected-participants", &n, "--admin-port", "0"];
    args.extend_from_slice(extra);
    let proc = c.start_coordinator(&args, &[]);
    let text = wait_log(proc, 0, "admin http listening on ");
    const NEEDLE: &str = "admin http listening on ";
    let at = text.find(NEEDLE).unwrap() + NEEDLE.len();
    text[at..]
        .chars()
        .take_while(|ch| ch.is_ascii_digit() || *ch == '.' || *ch == ':')
        .collect()
}

/// Poll `GET path` until `pred` holds (bounded by PATIENCE).
fn wait_http(addr: &str, path: &str, what: &str, pred: impl Fn(&Resp) -> bool) -> Resp {
    let start = Instant::now();
    loop {
        let r = get(addr, path);
        if pred(&r) {
            return r;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "timed out waiting for {what}; last {path}: {} {}",
            r.status,
            r.body
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until every participant acknowledged `id`, and return its detail.
fn wait_ended(addr: &str, id: &str) -> Value {
    wait_http(addr, &format!("/transactions/{id}"), "the end", |r| {
        r.status == 200 && !r.json()["ended_after_ms"].is_null()
    })
    .json()
}

/// Prometheus text, checked line by line: every sample belongs to a family
/// announced by `# HELP` and `# TYPE` before it, and parses as a number.
/// Returns `name{labels}` → value.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut helped = HashSet::new();
    let mut typed = HashSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.trim().is_empty(), "empty HELP: {line}");
            helped.insert(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "unknown type: {line}"
            );
            assert!(helped.contains(name), "TYPE before HELP: {line}");
            typed.insert(name.to_string());
        } else {
            assert!(!line.starts_with('#'), "unexpected comment: {line}");
            let (series, value) = line.rsplit_once(' ').expect("sample value");
            let v: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("value in `{line}`"));
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_'),
                "bad name: {line}"
            );
            if series.contains('{') {
                assert!(series.ends_with('}'), "unclosed labels: {line}");
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|sfx| name.strip_suffix(sfx).filter(|b| typed.contains(*b)))
                .unwrap_or(name);
            assert!(typed.contains(family), "sample without TYPE: {line}");
            samples.insert(series.to_string(), v);
        }
    }
    samples
}

fn metric(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no `{series}` in the metrics"))
}

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

const SECRET: &str = "e2e-http-secret-0123456789abcdef";

fn key(text: &str) -> twopc::security::auth::Secret {
    twopc::security::auth::Secret::from_text(text).expect("valid secret")
}

/// A fresh nonce from `GET /auth/challenge` (which needs no proof).
fn nonce(addr: &str) -> String {
    let r = get(addr, "/auth/challenge");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
    let n = r.json()["nonce"].as_str().expect("nonce").to_string();
    assert!(twopc::security::auth::is_nonce(&n), "{n}");
    n
}

/// The `Authorization` line proving `secret` for `method path body`.
fn proof_line(secret: &str, nonce: &str, method: &str, path: &str, body: &[u8]) -> String {
    let value = twopc::security::http_auth::authorization(&key(secret), nonce, method, path, body)
        .expect("the master secret proves the operator key");
    format!("Authorization: {value}")
}

/// The header declaring `body`'s digest (the value the MAC signs).
fn digest_line(body: &[u8]) -> String {
    format!(
        "{}: {}",
        twopc::security::http_auth::BODY_DIGEST_HEADER,
        twopc::security::http_auth::body_digest(body)
    )
}

/// `method path` with a fresh proof of the secret (and, with a body, its
/// declared digest).
fn signed(addr: &str, method: &str, path: &str, body: &[u8]) -> Resp {
    let line = proof_line(SECRET, &nonce(addr), method, path, body);
    let digest = digest_line(body);
    let mut lines = vec![line.as_str()];
    if !body.is_empty() {
        lines.push(&digest);
    }
    http_with(addr, method, path, &lines, Some(body))
}

/// A 401 as specified: JSON `unauthorized` whose message holds `why`, and
/// the `WWW-Authenticate` challenge.
fn assert_unauthorized(r: &Resp, why: &str) {
    assert_eq!(r.status, 401, "{r:?}");
    let v = r.json();
    assert_eq!(v["error"], "unauthorized", "{v}");
    let message = v["message"].as_str().unwrap_or("");
    assert!(message.contains(why), "expected {why:?} in {message:?}");
    let challenge = r.header("www-authenticate").unwrap_or("");
    assert!(challenge.starts_with("TWOPC-HMAC"), "{r:?}");
}

/// A coordinator requiring `SECRET` on every port; returns the admin address
/// and the secret file.
fn start_secret_admin(c: &mut Cluster, expected: usize, extra: &[&str]) -> (String, String) {
    let path = c.path("secret");
    write_private(&path, &format!("{SECRET}\n"));
    let file = path.display().to_string();
    let mut args = vec!["--secret-file", &file];
    args.extend_from_slice(extra);
    let admin = start_with_admin(c, expected, &args);
    (admin, file)
}

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

/// A raw request with the given `Host` and `Content-Type` (no secret).
fn raw_request(
    addr: &str,
    method: &str,
    path: &str,
    host: &str,
    content_type: &str,
    body: &str,
) -> Resp {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let status: u16 = head[9..12].parse().unwrap();
    Resp {
        status,
        content_type: String::new(),
        headers: Vec::new(),
        body: body.to_string(),
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

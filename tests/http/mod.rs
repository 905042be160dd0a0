//! HTTP/1.1 spoken by hand over a `TcpStream` (one request per
//! connection), so that a test sees exactly the status line, headers and
//! body the coordinator's admin API sends; the admin API started on a free
//! port; proofs of the shared secret; Prometheus text checked line by line.

#![allow(dead_code)]

use crate::common::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// One HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    /// Every header, names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub fn http(addr: &str, method: &str, path: &str, body: Option<&[u8]>) -> Resp {
    http_with(addr, method, path, &[], body)
}

/// One request with `extra` header lines (`Name: value`).
pub fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    extra: &[&str],
    body: Option<&[u8]>,
) -> Resp {
    let body = body.unwrap_or(b"");
    let extra: String = extra.iter().map(|h| format!("{h}\r\n")).collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    send_raw(addr, &request)
}

/// Send `request` (a whole HTTP/1.1 request, or the start of one) on a new
/// connection and read the response until the server closes it.
pub fn send_raw(addr: &str, request: &[u8]) -> Resp {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the admin port");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(request).unwrap();
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

pub fn get(addr: &str, path: &str) -> Resp {
    http(addr, "GET", path, None)
}

pub fn post(addr: &str, path: &str, body: &Value) -> Resp {
    http(addr, "POST", path, Some(body.to_string().as_bytes()))
}

/// Start a coordinator with the admin API on a free port; returns its
/// address (read from the coordinator's log).
pub fn start_with_admin(c: &mut Cluster, expected: usize, extra: &[&str]) -> String {
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
pub fn wait_http(addr: &str, path: &str, what: &str, pred: impl Fn(&Resp) -> bool) -> Resp {
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
pub fn wait_ended(addr: &str, id: &str) -> Value {
    wait_http(addr, &format!("/transactions/{id}"), "the end", |r| {
        r.status == 200 && !r.json()["ended_after_ms"].is_null()
    })
    .json()
}

/// Prometheus text, checked line by line: every sample belongs to a family
/// announced by `# HELP` and `# TYPE` before it, and parses as a number.
/// Returns `name{labels}` → value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
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

pub fn metric(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no `{series}` in the metrics"))
}

pub const SECRET: &str = "e2e-http-secret-0123456789abcdef";

pub fn key(text: &str) -> twopc::security::auth::Secret {
    twopc::security::auth::Secret::from_text(text).expect("valid secret")
}

/// A fresh nonce from `GET /auth/challenge` (which needs no proof).
pub fn nonce(addr: &str) -> String {
    let r = get(addr, "/auth/challenge");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
    let n = r.json()["nonce"].as_str().expect("nonce").to_string();
    assert!(twopc::security::auth::is_nonce(&n), "{n}");
    n
}

/// The `Authorization` line proving `secret` for `method path body`.
pub fn proof_line(secret: &str, nonce: &str, method: &str, path: &str, body: &[u8]) -> String {
    let value = twopc::security::http_auth::authorization(&key(secret), nonce, method, path, body)
        .expect("the master secret proves the operator key");
    format!("Authorization: {value}")
}

/// The header declaring `body`'s digest (the value the MAC signs).
pub fn digest_line(body: &[u8]) -> String {
    format!(
        "{}: {}",
        twopc::security::http_auth::BODY_DIGEST_HEADER,
        twopc::security::http_auth::body_digest(body)
    )
}

/// `method path` with a fresh proof of the secret (and, with a body, its
/// declared digest).
pub fn signed(addr: &str, method: &str, path: &str, body: &[u8]) -> Resp {
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
pub fn assert_unauthorized(r: &Resp, why: &str) {
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
pub fn start_secret_admin(c: &mut Cluster, expected: usize, extra: &[&str]) -> (String, String) {
    let path = c.path("secret");
    write_private(&path, &format!("{SECRET}\n"));
    let file = path.display().to_string();
    let mut args = vec!["--secret-file", &file];
    args.extend_from_slice(extra);
    let admin = start_with_admin(c, expected, &args);
    (admin, file)
}

/// A raw request with the given `Host` and `Content-Type` (no secret).
pub fn raw_request(
    addr: &str,
    method: &str,
    path: &str,
    host: &str,
    content_type: &str,
    body: &str,
) -> Resp {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    send_raw(addr, request.as_bytes())
}

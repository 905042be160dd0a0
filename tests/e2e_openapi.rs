//! `docs/openapi.yaml` against the OpenAPI 3.0 rules and against the
//! coordinator: the document is valid, and every endpoint's answers (and
//! every error status the API gives) have the JSON bodies it describes.
//! Real processes on loopback; HTTP spoken by hand (tests/http).

mod common;
mod http;
mod openapi;

use common::*;
use http::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[test]
fn the_document_is_valid_openapi_3() {
    let doc = openapi::document();
    let problems = openapi::problems(&doc);
    assert!(
        problems.is_empty(),
        "docs/openapi.yaml:\n{}",
        problems.join("\n")
    );
    // Every endpoint the server routes is in the document.
    for (method, path) in [
        ("get", "/health"),
        ("get", "/auth/challenge"),
        ("get", "/status"),
        ("get", "/participants"),
        ("get", "/transactions"),
        ("post", "/transactions"),
        ("get", "/transactions/{id}"),
        ("get", "/transactions/{id}/diagram"),
        ("delete", "/participants/{id}"),
        ("get", "/"),
        ("get", "/metrics"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
}

/// The checker finds the kinds of mistakes it is there for: it would not
/// pass a broken document.
#[test]
fn the_checker_finds_a_stray_key_a_null_outside_an_enum_and_a_dangling_ref() {
    let broken = r##"
openapi: 3.0.3
info: {title: t, version: "1"}
paths:
  /x/{id}:
    get:
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Nowhere"}
components:
  schemas:
    A:
      type: object
      properties:
        results: {type: object, description: read results, present when any}
        cause: {type: string, nullable: true, enum: [a, b]}
        list: {type: array}
        n: {type: integer, example: "seven"}
"##;
    let doc = openapi::parse(broken).expect("still YAML and OpenAPI-shaped");
    let found = openapi::problems(&doc).join("\n");
    for want in [
        "`present when any` is not a keyword",
        "nullable with an enum that lacks null",
        "an array schema needs items",
        "schemas/Nowhere\" resolves to nothing",
        "path parameter {id} is not declared",
        "its example does not match",
    ] {
        assert!(found.contains(want), "missed {want:?} in:\n{found}");
    }
    // And the validator refuses what does not match.
    let s = json!({"type": "object", "required": ["a"], "additionalProperties": false,
                   "properties": {"a": {"type": "integer", "nullable": true, "enum": [1, null]}}});
    assert!(openapi::validate(&doc, &s, &json!({"a": null})).is_empty());
    assert!(!openapi::validate(&doc, &s, &json!({"a": 2})).is_empty());
    assert!(!openapi::validate(&doc, &s, &json!({})).is_empty());
    assert!(!openapi::validate(&doc, &s, &json!({"a": 1, "b": 1})).is_empty());
    let cursor = openapi::pattern(r"^[0-9a-f]+\.[0-9a-f]*$").expect("readable");
    assert!(cursor("1f.7431") && !cursor("1f") && !cursor("1g.00"));
}

/// One request checked against the document: its status is `want`, and its
/// body matches the schema the document gives for that status (`path` as
/// in the document).
fn expect(doc: &Value, r: &Resp, method: &str, path: &str, want: u16) -> Value {
    assert_eq!(r.status, want, "{method} {path}: {r:?}");
    let media = openapi::response_media(doc, method, path, r.status);
    let ct = r.content_type.split(';').next().unwrap_or("").trim();
    assert!(
        media.iter().any(|m| m == ct),
        "{method} {path} {}: content type {ct:?}, documented {media:?}",
        r.status
    );
    if ct != "application/json" {
        return Value::Null;
    }
    let body = r.json();
    let schema = openapi::response_schema(doc, method, path, r.status);
    let problems = openapi::validate(doc, schema, &body);
    assert!(
        problems.is_empty(),
        "{method} {path} {}: the body does not match the document:\n{}\n{body:#}",
        r.status,
        problems.join("\n")
    );
    body
}

/// An error answer as documented, with `code`; returns its message.
fn expect_error(doc: &Value, r: &Resp, method: &str, path: &str, want: u16, code: &str) -> Value {
    let body = expect(doc, r, method, path, want);
    assert_eq!(body["error"], code, "{method} {path}: {body}");
    body
}

#[test]
fn every_endpoint_answers_as_the_document_says() {
    let doc = openapi::document();
    let mut c = Cluster::new();
    let admin = start_with_admin(&mut c, 2, &["--admin-max-body-bytes", "2048"]);
    // Not ready yet: /health is 503 with its Health body.
    let h = get(&admin, "/health");
    expect(&doc, &h, "GET", "/health", 503);
    c.start_participant("p1", &[], &[]);
    c.start_participant("p2", &["--vote-preference", "abort"], &[]);
    let h = wait_http(&admin, "/health", "health 200", |r| r.status == 200);
    expect(&doc, &h, "GET", "/health", 200);
    expect(&doc, &get(&admin, "/status"), "GET", "/status", 200);
    expect_error(
        &doc,
        &get(&admin, "/auth/challenge"),
        "GET",
        "/auth/challenge",
        404,
        "auth_off",
    );

    // Submits: a commit with a string request_id, an abort with an integer.
    let commit = post(
        &admin,
        "/transactions",
        &json!({"data": {"k": 1}, "participants": ["p1"], "request_id": "order-1"}),
    );
    let cj = expect(&doc, &commit, "POST", "/transactions", 200);
    assert_eq!(cj["request_id"], "order-1");
    let abort = post(&admin, "/transactions", &json!({"request_id": 17}));
    let aj = expect(&doc, &abort, "POST", "/transactions", 200);
    assert_eq!(
        (aj["decision"].as_str(), &aj["request_id"]),
        (Some("abort"), &json!(17))
    );
    for id in [&cj["transaction_id"], &aj["transaction_id"]] {
        let id = id.as_str().expect("an id");
        wait_ended(&admin, id);
        let r = get(&admin, &format!("/transactions/{id}"));
        let d = expect(&doc, &r, "GET", "/transactions/{id}", 200);
        assert!(d["decided_after_us"].is_u64(), "{d}");
    }

    // Lists, whole and paged.
    let all = expect(
        &doc,
        &get(&admin, "/transactions"),
        "GET",
        "/transactions",
        200,
    );
    assert_eq!(all["total"], 2, "{all}");
    let first = get(&admin, "/transactions?limit=1");
    let first = expect(&doc, &first, "GET", "/transactions", 200);
    let next = first["next"].as_str().expect("a next cursor").to_string();
    let second = get(&admin, &format!("/transactions?limit=1&cursor={next}"));
    let second = expect(&doc, &second, "GET", "/transactions", 200);
    assert_eq!(second.get("next"), None, "{second}");
    let r = get(&admin, "/transactions?state=in-doubt");
    expect(&doc, &r, "GET", "/transactions", 200);
    let parts = expect(
        &doc,
        &get(&admin, "/participants?limit=1"),
        "GET",
        "/participants",
        200,
    );
    assert_eq!(parts["participants"][0]["id"], "p1", "{parts}");
    assert_eq!(parts["total"], 2, "{parts}");
    let metrics = get(&admin, "/metrics");
    expect(&doc, &metrics, "GET", "/metrics", 200);

    // Refusals, each with its documented body.
    let txn = "/transactions";
    for (query, param) in [
        ("?limit=5&offset=10", "offset"),
        ("?limit=0", "limit"),
        ("?limit=ten", "limit"),
        ("?limit=1001", "limit"),
        ("?cursor=nowhere", "cursor"),
        ("?state=sideways", "state"),
        ("?state=aborted&state=committed", "state"),
    ] {
        let r = get(&admin, &format!("{txn}{query}"));
        let body = expect_error(&doc, &r, "GET", txn, 400, "invalid_parameter");
        assert_eq!(body["parameter"], param, "{query}: {body}");
        let message = body["message"].as_str().unwrap_or("");
        assert!(message.contains(param), "{query}: {message}");
    }
    let r = get(&admin, "/status?verbose=1");
    let body = expect_error(&doc, &r, "GET", "/status", 400, "invalid_parameter");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("takes no query parameters"),
        "{body}"
    );
    let r = get(&admin, "/participants?limit=-1");
    expect_error(&doc, &r, "GET", "/participants", 400, "invalid_parameter");
    let r = get(&admin, "/transactions/no-such-txn");
    expect_error(
        &doc,
        &r,
        "GET",
        "/transactions/{id}",
        404,
        "unknown_transaction",
    );
    for (body, code) in [
        (&b"{not json"[..], "invalid_json"),
        (br#"{"dta": {"k": 1}}"#, "invalid_message"),
        (br#"{"request_id": true}"#, "invalid_message"),
        (
            br#"{"participants": ["p9"], "request_id": "x"}"#,
            "unknown_participant",
        ),
    ] {
        let r = http(&admin, "POST", txn, Some(body));
        expect_error(&doc, &r, "POST", txn, 400, code);
    }
    let big = post(&admin, txn, &json!({"data": "x".repeat(4096)}));
    expect_error(&doc, &big, "POST", txn, 413, "body_too_large");
    let r = raw_request(&admin, "POST", txn, &admin, "text/plain", "{}");
    assert_eq!(r.status, 415);
    assert_eq!(r.json()["error"], "unsupported_media_type");
    let r = http(&admin, "DELETE", txn, None);
    // Documented under `default` of the path's operations.
    expect_error(&doc, &r, "GET", txn, 405, "method_not_allowed");
}

#[test]
fn a_request_id_is_echoed_in_the_outcome_and_in_errors_and_unknown_fields_are_named() {
    let mut c = Cluster::new();
    let admin = start_with_admin(&mut c, 1, &[]);
    c.start_participant("p1", &[], &[]);
    wait_http(&admin, "/health", "health 200", |r| r.status == 200);
    for id in [json!("batch-7/item-3"), json!(0), json!(u64::MAX)] {
        let r = post(
            &admin,
            "/transactions",
            &json!({"data": 1, "request_id": id}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["request_id"], id, "{}", r.body);
    }
    let r = post(&admin, "/transactions", &json!({"data": 1}));
    assert_eq!(r.json().get("request_id"), None, "{}", r.body);
    // Errors after the body was read echo it too.
    let r = post(
        &admin,
        "/transactions",
        &json!({"participants": ["p7"], "request_id": "r-1"}),
    );
    assert_eq!(
        (r.status, r.json()["request_id"].as_str()),
        (400, Some("r-1"))
    );
    // A misspelt field is refused by name and commits nothing.
    let before = get(&admin, "/transactions").json()["total"].clone();
    let r = post(
        &admin,
        "/transactions",
        &json!({"dta": {"order": 9}, "request_id": 5}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let body = r.json();
    let message = body["message"].as_str().unwrap_or("");
    assert!(message.contains("unknown field `dta`"), "{message}");
    assert!(
        message.contains("data, participants, request_id"),
        "{message}"
    );
    assert_eq!(body["request_id"], 5);
    assert_eq!(get(&admin, "/transactions").json()["total"], before);
    // Neither a float nor a negative number is an id.
    for bad in [json!(-1), json!(1.5), json!(["a"])] {
        let r = post(&admin, "/transactions", &json!({"request_id": bad}));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        let m = r.json()["message"].as_str().unwrap_or("").to_string();
        assert!(
            m.starts_with("request_id must be a string or a non-negative integer"),
            "{m}"
        );
    }
}

/// Every error status the API gives comes with a JSON `Error` body that
/// names a code and says what to do: 400, 401, 404, 405, 408, 413, 415,
/// 421, 429 and 503 (each produced for real below). 403 is never given
/// (a refused proof is 401); 504 needs a transaction that outlives twice
/// the vote timeout plus 10 s and is covered by the document only.
#[test]
fn every_error_status_has_a_json_error_body() {
    let doc = openapi::document();
    let mut c = Cluster::new();
    let (admin, secret_file) = start_secret_admin(
        &mut c,
        1,
        &[
            "--admin-header-timeout-ms",
            "300",
            "--admin-max-connections",
            "2",
            "--admin-max-body-bytes",
            "1024",
            "--admin-auth-challenges-per-second",
            "1",
        ],
    );
    c.start_participant("p1", &["--secret-file", &secret_file], &[]);
    wait_http(&admin, "/health", "health 200", |r| r.status == 200);
    let mut seen = std::collections::BTreeSet::new();
    let mut check = |r: &Resp, method: &str, path: &str, status: u16, code: &str| {
        let body = expect_error(&doc, r, method, path, status, code);
        let message = body["message"].as_str().unwrap_or("");
        assert!(message.len() > 20, "a message that says what to do: {body}");
        seen.insert(status);
    };
    // 401: no proof.
    check(
        &get(&admin, "/status"),
        "GET",
        "/status",
        401,
        "unauthorized",
    );
    // 400: a bad query, proven.
    let r = signed(&admin, "GET", "/transactions?limit=0", b"");
    check(&r, "GET", "/transactions", 400, "invalid_parameter");
    // 404: no such path; 405: a method the path does not take (both
    // documented under `default`, here of GET /health).
    check(&get(&admin, "/nowhere"), "GET", "/health", 404, "not_found");
    let r = http(&admin, "PUT", "/health", None);
    check(&r, "GET", "/health", 405, "method_not_allowed");
    // 413 and 415 (checked before the proof is needed).
    let big = format!("{{\"data\": \"{}\"}}", "x".repeat(2048));
    let r = signed(&admin, "POST", "/transactions", big.as_bytes());
    check(&r, "POST", "/transactions", 413, "body_too_large");
    // 421: a Host this API does not answer to.
    let r = raw_request(
        &admin,
        "GET",
        "/health",
        "evil.example",
        "application/json",
        "",
    );
    check(&r, "GET", "/health", 421, "host_not_allowed");
    // 408: proven headers, then the body never comes.
    let body = b"{\"data\": 1}";
    let line = proof_line(
        SECRET,
        &nonce_retrying(&admin),
        "POST",
        "/transactions",
        body,
    );
    let stalled = format!(
        "POST /transactions HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nContent-Type: application/json\r\n{line}\r\n{}\r\nContent-Length: {}\r\n\r\n",
        digest_line(body),
        body.len()
    );
    let r = send_raw(&admin, stalled.as_bytes());
    check(&r, "POST", "/transactions", 408, "body_timeout");
    // 429: nonces asked for too fast (one a second, bursts of two).
    let start = Instant::now();
    let limited = loop {
        let r = get(&admin, "/auth/challenge");
        if r.status == 429 {
            break r;
        }
        assert!(start.elapsed() < PATIENCE, "never rate limited: {r:?}");
    };
    assert_eq!(limited.header("retry-after"), Some("1"));
    check(&limited, "GET", "/auth/challenge", 429, "too_many_requests");
    // 503: both connection slots held (by connections that send nothing),
    // a request on one of the slots kept for GET /health. The server gives
    // up on silent connections after admin_header_timeout_ms, so slots are
    // taken afresh for each try; a try that found a slot free is a 401.
    let start = Instant::now();
    let busy = loop {
        let held: Vec<std::net::TcpStream> = (0..2)
            .map(|_| std::net::TcpStream::connect(&admin).expect("hold a slot"))
            .collect();
        let r = get(&admin, "/status");
        drop(held);
        if r.status == 503 {
            break r;
        }
        assert!(start.elapsed() < PATIENCE, "never busy: {r:?}");
    };
    check(&busy, "GET", "/status", 503, "too_many_connections");
    // 415: a proven submit that is not sent as JSON.
    let r = {
        let line = proof_line(
            SECRET,
            &nonce_retrying(&admin),
            "POST",
            "/transactions",
            b"{}",
        );
        let request = format!(
            "POST /transactions HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nContent-Type: text/plain\r\n{line}\r\n{}\r\nContent-Length: 2\r\n\r\n{{}}",
            digest_line(b"{}")
        );
        send_raw(&admin, request.as_bytes())
    };
    check(&r, "POST", "/transactions", 415, "unsupported_media_type");
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [400, 401, 404, 405, 408, 413, 415, 421, 429, 503]
    );
}

/// A nonce, waiting out the challenge rate limit of the test above.
fn nonce_retrying(addr: &str) -> String {
    let start = Instant::now();
    loop {
        let r = get(addr, "/auth/challenge");
        if r.status == 200 {
            return r.json()["nonce"].as_str().expect("nonce").to_string();
        }
        assert!(start.elapsed() < PATIENCE, "no nonce: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

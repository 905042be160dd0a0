//! The operator console in a real browser: Debian's Chromium, headless,
//! driven over WebDriver (chromedriver) by a small client here, against a
//! real coordinator and real participants. What is real: the processes,
//! the HTTP API, the page, its script and its crypto running in Chromium.
//! What is not: nobody looks at the pixels (set `TWOPC_CONSOLE_SCREENSHOT`
//! to a PNG path to keep one).
//!
//! Without /usr/bin/chromium or /usr/bin/chromedriver these tests fail,
//! naming the packages to install; they never skip.

mod common;
mod http;
mod openapi;

use common::*;
use http::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A WebDriver session on a headless Chromium with a fresh profile; the
/// driver (and with it the browser) is killed when this drops.
struct Browser {
    driver: Proc,
    addr: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: the console tests need a real browser; install it with \
                 `apt-get install -y chromium chromium-driver` (.ci/run does) — package {package}"
            );
        }
        let profile = tempfile::Builder::new()
            .prefix("twopc-chromium-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let log = profile.path().join("chromedriver.log");
        let child = std::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Proc {
            name: "chromedriver".into(),
            child: Some(child),
            log,
        };
        let addr = format!("127.0.0.1:{port}");
        let start = Instant::now();
        loop {
            if let Ok(v) = try_call(&addr, "GET", "/status", None) {
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(start.elapsed() < PATIENCE, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
            &format!(
                "--user-data-dir={}",
                profile.path().join("profile").display()
            ),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let v = try_call(&addr, "POST", "/session", Some(&caps))
            .unwrap_or_else(|e| panic!("cannot start Chromium over WebDriver: {e}"));
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Browser {
            driver,
            addr,
            session,
            _profile: profile,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        match try_call(&self.addr, method, &path, body) {
            Ok(v) => v["value"].clone(),
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Run `script` (a function body; `arguments` are `args`) in the page.
    fn exec(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": args})),
        )
    }

    /// Poll `script` until it returns something other than null or false.
    fn wait(&self, what: &str, script: &str, args: Value) -> Value {
        let start = Instant::now();
        loop {
            let v = self.exec(script, args.clone());
            if !v.is_null() && v != false {
                return v;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for {what} in the console; page text:\n{}",
                self.exec("return document.body.innerText", json!([]))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn click(&self, selector: &str) {
        self.wait(
            &format!("{selector} to be clickable"),
            "const e = document.querySelector(arguments[0]); \
             if (!e || e.disabled || e.offsetParent === null) return null; e.click(); return true;",
            json!([selector]),
        );
    }

    fn text(&self, selector: &str) -> String {
        self.exec(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
            json!([selector]),
        )
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// Every URL the page loaded, and whether each is on `origin`.
    fn loaded_urls(&self) -> Vec<String> {
        let v = self.exec(
            "return [location.href].concat(performance.getEntriesByType('resource').map(e => e.name));",
            json!([]),
        );
        v.as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap().to_string())
            .collect()
    }

    fn screenshot(&self, path: &str) {
        let v = self.call("GET", "/screenshot", None);
        let png = unbase64(v.as_str().expect("base64 PNG"));
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = try_call(&self.addr, "DELETE", &path, None);
        self.driver.kill9();
    }
}

/// One WebDriver command over HTTP/1.1: the JSON reply, or what went wrong.
fn try_call(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open: read the headers, then
    // exactly the body they announce.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the headers ended".into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let mut body = raw[head_end + 4..].to_vec();
    match length {
        Some(n) => {
            while body.len() < n {
                let got = s.read(&mut buf).map_err(|e| e.to_string())?;
                if got == 0 {
                    return Err("closed before the body ended".into());
                }
                body.extend_from_slice(&buf[..got]);
            }
            body.truncate(n);
        }
        None => {
            s.read_to_end(&mut body).map_err(|e| e.to_string())?;
        }
    }
    let text = String::from_utf8_lossy(&body).to_string();
    let chunked = lower.contains("transfer-encoding: chunked");
    let body = if chunked { unchunk(&text) } else { text };
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{}: {v}", head.lines().next().unwrap_or("")));
    }
    Ok(v)
}

/// Standard base64 (the screenshot), padding ignored.
fn unbase64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
    {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64 digit") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn unchunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

/// The ids in the transaction table.
fn table_ids(b: &Browser) -> Vec<String> {
    let v = b.exec(
        "return Array.from(document.querySelectorAll('#txns tbody tr')).map(r => r.dataset.id);",
        json!([]),
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Wait until the table shows page `n` (1-based) and return its ids.
fn wait_page(b: &Browser, n: usize) -> Vec<String> {
    b.wait(
        &format!("page {n}"),
        "return document.getElementById('page-info').innerText.startsWith('page ' + arguments[0] + ' ') || null;",
        json!([n]),
    );
    table_ids(b)
}

#[test]
fn the_console_shows_the_cluster_pages_transactions_draws_one_and_removes_a_participant() {
    let mut c = Cluster::new();
    let admin = start_with_admin(&mut c, 3, &[]);
    c.start_participant("p1", &[], &[]);
    // p2 dies right after sending its 13th vote: that transaction is
    // decided (commit) and stays in doubt, waiting for p2's ack.
    c.start_participant(
        "p2",
        &[],
        &[("TWOPC_CRASH_AT", "participant.after_vote_sent:13")],
    );
    c.start_participant("p3", &[], &[]);
    c.wait_ready(3);
    let b = Browser::start();
    let origin = format!("http://{admin}");
    b.goto(&format!("{origin}/"));

    // The cluster: ready, three participants, the chart and the reasons.
    b.wait(
        "READY",
        "return document.getElementById('state').innerText === 'READY' || null;",
        json!([]),
    );
    b.wait(
        "three participants",
        "return document.querySelectorAll('#participants tbody tr').length === 3 || null;",
        json!([]),
    );
    let parts = b.text("#participants");
    for p in ["p1", "p2", "p3"] {
        assert!(parts.contains(p), "{parts}");
    }
    assert!(b.text("#members-note").contains("single coordinator"));
    assert!(b.exec("return !!document.querySelector('#chart svg');", json!([])) == true);

    // Twelve commits, then one left in doubt.
    let mut ids = BTreeSet::new();
    for i in 0..13 {
        let r = post(
            &admin,
            "/transactions",
            &json!({"data": {"n": i}, "participants": ["p1", "p2"]}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["decision"], "commit", "{}", r.body);
        ids.insert(r.json()["transaction_id"].as_str().unwrap().to_string());
    }
    c.participants[1].wait_exit(PATIENCE);
    let in_doubt = wait_http(
        &admin,
        "/transactions?state=in-doubt",
        "a transaction in doubt",
        |r| r.json()["total"] == 1,
    )
    .json()["transactions"][0]["transaction_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The cluster view follows: p2 is gone, commits were counted.
    b.wait(
        "p2 disconnected",
        "const r = document.querySelector('#participants tr[data-id=\"p2\"]'); \
         return r && r.children[1].innerText === 'no' || null;",
        json!([]),
    );
    // Twelve ended; the thirteenth waits for p2's acknowledgement.
    b.wait(
        "12 committed, 1 awaiting acknowledgements",
        "return document.getElementById('counts').innerText.startsWith('12 committed') && \
         document.getElementById('open-note').innerText.includes('1 awaiting') || null;",
        json!([]),
    );

    // Transactions: pages of 10 walked with the API's cursors.
    b.click("button[data-view=transactions]");
    b.exec(
        "const s = document.getElementById('page-size'); s.value = '10'; s.dispatchEvent(new Event('change'));",
        json!([]),
    );
    b.wait(
        "a first page of 10",
        "return document.querySelectorAll('#txns tbody tr').length === 10 || null;",
        json!([]),
    );
    let first = wait_page(&b, 1);
    b.click("#next");
    let second = wait_page(&b, 2);
    assert_eq!(second.len(), 3, "{second:?}");
    assert!(
        b.exec(
            "return document.getElementById('next').disabled;",
            json!([])
        ) == true
    );
    let shown: BTreeSet<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(shown, ids, "each transaction exactly once over the pages");
    b.click("#prev");
    assert_eq!(wait_page(&b, 1), first);

    // Live: a transaction submitted now shows up on the first page (newest
    // first) without touching the page.
    let r = post(
        &admin,
        "/transactions",
        &json!({"data": {"n": "live"}, "participants": ["p1", "p3"]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let live = r.json()["transaction_id"].as_str().unwrap().to_string();
    b.wait(
        "the new transaction on the first page",
        "return Array.from(document.querySelectorAll('#txns tbody tr')).some(r => r.dataset.id === arguments[0]) || null;",
        json!([live]),
    );
    ids.insert(live);

    // In doubt: the one transaction, with its age and who owes the ack.
    b.exec(
        "const s = document.getElementById('state-filter'); s.value = 'in-doubt'; s.dispatchEvent(new Event('change'));",
        json!([]),
    );
    b.wait(
        "only the transaction in doubt",
        "const r = document.querySelectorAll('#txns tbody tr'); \
         return r.length === 1 && r[0].dataset.id === arguments[0] || null;",
        json!([in_doubt]),
    );
    let doubt = b.text("#txns tbody tr td.in-doubt");
    assert!(doubt.contains("p2"), "{doubt}");
    assert!(
        doubt.contains(" ms") || doubt.contains(" s") || doubt.contains(" min"),
        "an age: {doubt}"
    );

    // One transaction: its details and its sequence diagram.
    b.click("#txns tbody tr");
    b.wait(
        "the diagram",
        "return document.querySelector('#diagram svg.sequence') ? true : null;",
        json!([]),
    );
    let actors = b.exec(
        "return Array.from(document.querySelectorAll('#diagram .actor-name')).map(t => t.textContent);",
        json!([]),
    );
    assert_eq!(actors, json!(["client", "coordinator", "p1", "p2"]));
    let arrows = b.exec(
        "return Array.from(document.querySelectorAll('#diagram g.message')).map(g => g.dataset.from + '>' + g.dataset.to + ' ' + g.querySelector('text').textContent);",
        json!([]),
    );
    let arrows: Vec<&str> = arrows
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        arrows.iter().any(|a| a.starts_with("C>P2 PREPARE")),
        "{arrows:?}"
    );
    assert!(
        arrows.iter().any(|a| a.starts_with("P2>C VOTE_COMMIT")),
        "{arrows:?}"
    );
    assert!(
        arrows.iter().any(|a| a.starts_with("P1>C ACK")),
        "{arrows:?}"
    );
    assert!(
        !arrows.iter().any(|a| a.starts_with("P2>C ACK")),
        "{arrows:?}"
    );
    // The same content as `twopc txn show --diagram`.
    let (code, mermaid, err) = c.twopc(&[
        "txn",
        "show",
        &in_doubt,
        "--diagram",
        "--coordinator",
        &c.addr(),
    ]);
    assert_eq!(code, 0, "{err}");
    let page_mermaid = b.exec(
        "return document.querySelector('#diagram pre').textContent;",
        json!([]),
    );
    let page_lines: Vec<&str> = page_mermaid.as_str().unwrap().lines().collect();
    let cli_lines: Vec<&str> = mermaid.lines().collect();
    // The timeline may grow between the two reads (a resend); what both
    // saw is the same.
    let n = page_lines.len().min(cli_lines.len());
    assert!(n > 8, "{page_lines:?}");
    assert_eq!(page_lines[..n], cli_lines[..n]);
    let owed = b.exec(
        "const dt = Array.from(document.querySelectorAll('#detail-body dt')).find(d => d.textContent === 'awaiting acknowledgement from'); \
         return dt && dt.nextElementSibling.textContent;",
        json!([]),
    );
    assert_eq!(owed, json!("p2"));
    if let Ok(path) = std::env::var("TWOPC_CONSOLE_SCREENSHOT") {
        b.exec(
            "document.getElementById('detail').scrollIntoView();",
            json!([]),
        );
        b.screenshot(&path);
    }

    // Search by id: a committed transaction not on the filtered page.
    let committed = ids.iter().find(|i| **i != in_doubt).unwrap().clone();
    b.exec(
        "document.getElementById('search').value = arguments[0]; \
         document.querySelector('#search-form button').click();",
        json!([committed]),
    );
    b.wait(
        "the searched transaction",
        "return document.getElementById('detail-id').innerText === arguments[0] && \
         document.getElementById('detail-body').innerText.includes('COMPLETED') || null;",
        json!([committed]),
    );

    // No request left the coordinator's origin.
    for url in b.loaded_urls() {
        assert!(url.starts_with(&origin), "the console loaded {url}");
    }

    // Removal: p2 is still needed (refused, with the reason shown); p3,
    // stopped, goes after a confirmation.
    b.click("button[data-view=cluster]");
    b.click("button[data-remove=p2]");
    b.click("#confirm-ok");
    b.wait(
        "the refusal",
        "return document.getElementById('confirm-error').innerText || null;",
        json!([]),
    );
    assert!(
        b.text("#confirm-error").contains(&in_doubt),
        "{}",
        b.text("#confirm-error")
    );
    b.click("#confirm-cancel");
    c.participants[2].kill9();
    b.wait(
        "p3 disconnected",
        "const r = document.querySelector('#participants tr[data-id=\"p3\"]'); \
         return r && r.children[1].innerText === 'no' || null;",
        json!([]),
    );
    b.click("button[data-remove=p3]");
    assert!(b.text("#confirm-title").contains("Remove participant p3"));
    b.click("#confirm-ok");
    b.wait(
        "p3 gone",
        "return !document.querySelector('#participants tr[data-id=\"p3\"]') && \
         !document.getElementById('confirm').open || null;",
        json!([]),
    );
    let status = get(&admin, "/status").json();
    assert_eq!(status["expected_participants"], 2, "{status}");
    assert!(!participant_ids(&status).contains(&"p3".to_string()));
}

#[test]
fn with_a_secret_the_console_asks_for_it_and_shows_nothing_before() {
    let mut c = Cluster::new();
    let (admin, secret_file) = start_secret_admin(&mut c, 1, &[]);
    c.start_participant("p1", &["--secret-file", &secret_file], &[]);
    c.security = twopc::security::ClientSecurity {
        secret: Some(std::sync::Arc::new(key(SECRET))),
        ..Default::default()
    };
    c.wait_ready(1);
    let b = Browser::start();
    let origin = format!("http://{admin}");
    b.goto(&format!("{origin}/"));
    b.wait(
        "the login view",
        "return !document.getElementById('login').hidden || null;",
        json!([]),
    );
    assert!(b.exec("return document.getElementById('app').hidden;", json!([])) == true);

    // The page's SHA-256 and HMAC against the README's example vector and
    // against the server's own digest of a multi-block input.
    let nonce = "1".repeat(64);
    let vector = b.exec(
        "const C = TwopcCrypto; const input = C.utf8(['twopc-http-v1', arguments[0], 'GET', '/status', C.hex(C.sha256(C.utf8('')))].join('\\n'));\
         return ['client', 'operator'].map(k => C.hex(C.hmac(C.derive('example-secret-0123456789abcdef', k), input)));",
        json!([nonce]),
    );
    assert_eq!(
        vector,
        json!([
            "e9ee3b430fabe75b2ee0f14df72e51a99f339abda7e317369fc3bb5c2023271c",
            "7dfc3d2aa26d2fefe814a295861842353913a2221ebea9463ed0de55908b8850"
        ])
    );
    let long = "twopc ".repeat(50) + "é";
    let digest = b.exec(
        "return TwopcCrypto.hex(TwopcCrypto.sha256(TwopcCrypto.utf8(arguments[0])));",
        json!([long]),
    );
    assert_eq!(
        digest,
        json!(twopc::security::http_auth::body_digest(long.as_bytes()))
    );

    // Nothing but the page and the nonce endpoint was asked for: no data.
    for url in b.loaded_urls() {
        let path = url
            .strip_prefix(&origin)
            .unwrap_or_else(|| panic!("loaded {url}"));
        assert!(
            ["/", "/console.js", "/console.css", "/auth/challenge"].contains(&path),
            "loaded {url} before login"
        );
    }
    let text = b.exec("return document.body.innerText;", json!([]));
    assert!(!text.as_str().unwrap().contains("p1"), "{text}");

    // A wrong secret is refused by the coordinator, with its reason.
    let login = |secret: &str| {
        b.exec(
            "document.getElementById('secret').value = arguments[0]; \
             document.getElementById('login-button').click();",
            json!([secret]),
        );
    };
    login("not-the-secret-0123456789abcdef");
    b.wait(
        "the refusal",
        "return document.getElementById('login-error').innerText || null;",
        json!([]),
    );
    let refusal = b.text("#login-error");
    assert!(refusal.contains("refused"), "{refusal}");
    assert!(b.exec("return document.getElementById('app').hidden;", json!([])) == true);

    // The right one: the cluster appears, and the key is in no URL or cookie.
    login(SECRET);
    b.wait(
        "READY",
        "return document.getElementById('state').innerText === 'READY' || null;",
        json!([]),
    );
    b.wait(
        "p1",
        "return document.querySelector('#participants tr[data-id=\"p1\"]') ? true : null;",
        json!([]),
    );
    assert!(b.text("#who").contains("operator key"));
    assert_eq!(b.exec("return document.cookie;", json!([])), json!(""));
    for url in b.loaded_urls() {
        assert!(!url.contains(SECRET), "{url}");
    }
    // A derived client key reads but cannot remove.
    b.click("#logout");
    let client_key = key(SECRET)
        .derive_text(&twopc::security::auth::Identity::Client)
        .unwrap();
    b.wait(
        "the login view again",
        "return !document.getElementById('login').hidden || null;",
        json!([]),
    );
    login(&client_key);
    b.wait(
        "p1 with the client key",
        "return document.querySelector('#participants tr[data-id=\"p1\"]') ? true : null;",
        json!([]),
    );
    assert!(b.text("#who").contains("client key (read only)"));
    assert!(
        b.exec(
            "return document.querySelectorAll('[data-remove]').length;",
            json!([])
        ) == 0
    );
}

/// The console's endpoints over plain HTTP, checked against
/// docs/openapi.yaml: the page and its assets (open, no data, locked to
/// this origin), the diagram, and the removal with the operator key only.
#[test]
fn removal_over_http_needs_the_operator_key_and_the_core_says_when() {
    let doc = openapi::document();
    let mut c = Cluster::new();
    let (admin, secret_file) = start_secret_admin(&mut c, 2, &[]);
    c.start_participant("p1", &["--secret-file", &secret_file], &[]);
    c.start_participant("p2", &["--secret-file", &secret_file], &[]);
    c.security = twopc::security::ClientSecurity {
        secret: Some(std::sync::Arc::new(key(SECRET))),
        ..Default::default()
    };
    c.wait_ready(2);

    // The page: served without a proof, with its policy, and no data.
    for (path, media) in [
        ("/", "text/html"),
        ("/console.js", "text/javascript"),
        ("/console.css", "text/css"),
    ] {
        let r = get(&admin, path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(
            r.content_type.starts_with(media),
            "{path}: {}",
            r.content_type
        );
        let policy = r.header("content-security-policy").unwrap_or("");
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(!r.body.contains("p1") && !r.body.contains("p2"), "{path}");
    }

    // The diagram of a real transaction, as documented.
    let (id, _) = c.submit(req(json!({"order": 1}))).expect("submit");
    let id = id.0;
    let r = signed(&admin, "GET", &format!("/transactions/{id}/diagram"), b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let problems = openapi::validate(
        &doc,
        openapi::response_schema(&doc, "GET", "/transactions/{id}/diagram", 200),
        &v,
    );
    assert!(problems.is_empty(), "{problems:?}: {v}");
    assert_eq!(v["actors"][0]["name"], "client", "{v}");
    assert!(v["mermaid"]
        .as_str()
        .unwrap()
        .starts_with("sequenceDiagram"));
    let r = signed(&admin, "GET", "/transactions/no-such/diagram", b"");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.json()["error"], "unknown_transaction");

    // The client key proves itself but may not remove: 403, as the TCP
    // port refuses it.
    let client = key(SECRET)
        .derive_text(&twopc::security::auth::Identity::Client)
        .unwrap();
    let path = "/participants/p2?force=true";
    let line = proof_line(&client, &nonce(&admin), "DELETE", path, b"");
    let r = http_with(&admin, "DELETE", path, &[&line], None);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"], "unauthorized");
    assert!(r.body.contains("operator key"), "{}", r.body);
    // No proof at all: 401.
    assert_unauthorized(&http(&admin, "DELETE", path, None), "");

    // The core's own refusals, with the operator key. The transaction
    // above must have ended first (its acks may still be on the way when
    // the client has its outcome): until then p2 is still needed by it,
    // which the core says before it asks for `force`.
    settled_counts(&c);
    let r = signed(&admin, "DELETE", "/participants/p9", b"");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.json()["error"], "unknown_participant");
    let r = signed(&admin, "DELETE", "/participants/p2", b"");
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.json()["error"], "refused");
    assert!(r.body.contains("force"), "{}", r.body);
    let r = signed(&admin, "DELETE", "/participants/p2?force=yes", b"");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["parameter"], "force");

    // Forced: removed, the participant is told and exits with status 3.
    let r = signed(&admin, "DELETE", path, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let problems = openapi::validate(
        &doc,
        openapi::response_schema(&doc, "DELETE", "/participants/{id}", 200),
        &v,
    );
    assert!(problems.is_empty(), "{problems:?}: {v}");
    assert_eq!(v["removed"], "p2");
    assert_eq!(v["expected_participants"], 1);
    let exit = c.participants[1].wait_exit(PATIENCE).expect("p2 exits");
    assert_eq!(exit.code(), Some(3));
}

/// A participant started with `--admin-http-port 0` and `args`; returns
/// its index and the console's address.
/// On a member of a coordinator group that does not lead, the console
/// says so and links to the leader's console, which shows the members.
#[test]
fn on_a_follower_the_console_links_to_the_leaders() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..9).map(|_| free_port()).collect();
    let admin = |i: usize| format!("127.0.0.1:{}", ports[6 + i]);
    let peers = (0..3)
        .map(|i| format!("{}=127.0.0.1:{}:{}", i + 1, ports[i], ports[3 + i]))
        .collect::<Vec<_>>()
        .join(",");
    let list = (0..3)
        .map(|i| format!("127.0.0.1:{}", ports[i]))
        .collect::<Vec<_>>()
        .join(",");
    let _members: Vec<Proc> = (0..3)
        .map(|i| {
            let args = member_args(i + 1, ports[i], ports[6 + i], &peers, 1, dir.path());
            start_logged(dir.path(), &format!("c{}", i + 1), &args)
        })
        .collect();
    // The leader, once a follower knows its admin address too.
    let start = Instant::now();
    let (leader, follower) = loop {
        let (code, out, _) = run_twopc(&["cluster", "status", "--coordinator", &list, "--json"]);
        let g: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
        if let (0, Some(l)) = (code, g["leader"].as_u64()) {
            let f = if l == 1 { 2 } else { 1 };
            // Two members elect without the third, which may not have
            // opened its admin port yet.
            let open = std::net::TcpStream::connect(admin(f as usize - 1)).is_ok();
            if open {
                let h = get(&admin(f as usize - 1), "/health");
                if h.status == 200 && h.json()["leader_admin"] == admin(l as usize - 1).as_str() {
                    break (l as usize, f as usize);
                }
            }
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no leader known to the followers: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let b = Browser::start();
    b.goto(&format!("http://{}/", admin(follower - 1)));
    let href = b.wait(
        "the banner naming the leader",
        "const b = document.getElementById('banner'); const a = b && b.querySelector('a'); \
         return (!b.hidden && a && b.innerText.includes('does not lead')) ? a.href : null;",
        json!([]),
    );
    assert_eq!(
        href,
        format!("http://{}/", admin(leader - 1)),
        "{}",
        b.text("#banner")
    );
    b.goto(href.as_str().unwrap());
    // The leader's console: its members, one of them leading, no banner.
    let rows = b.wait(
        "the members table with a leader",
        "const box = document.getElementById('members-box'); \
         if (!box || box.hidden) return null; \
         const rows = [...document.querySelectorAll('#members tbody tr')].map((r) => r.innerText); \
         return (rows.length === 3 && rows.filter((r) => r.includes('leader')).length === 1) ? rows : null;",
        json!([]),
    );
    let leading = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r.as_str().unwrap().contains("leader"));
    assert!(
        leading
            .unwrap()
            .as_str()
            .unwrap()
            .starts_with(&format!("{leader} (")),
        "{rows}"
    );
    assert!(
        b.exec(
            "return document.getElementById('banner').hidden;",
            json!([])
        ) == true,
        "{}",
        b.text("#banner")
    );
}

fn start_participant_console(c: &mut Cluster, id: &str, args: &[&str]) -> (usize, String) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--admin-http-port", "0"]);
    let idx = c.start_participant(id, &all, &[]);
    let addr = coordinator_http_addr(&mut c.participants[idx], 0);
    (idx, addr)
}

/// The coordinator dies once every vote is in and before its decision is
/// logged: the participants voted, so each holds the transaction prepared,
/// in doubt.
fn leave_one_in_doubt(c: &mut Cluster) {
    let _ = c.submit(req(json!({"k": 1})));
    let exit = c.coordinator.as_mut().unwrap().wait_exit(PATIENCE);
    assert!(
        exit.is_some(),
        "the coordinator did not reach its crash point"
    );
}

#[test]
fn a_participant_console_shows_what_it_holds_in_doubt_and_resolves_it_after_a_confirmation() {
    let mut c = Cluster::new();
    let path = c.path("secret");
    write_private(&path, &format!("{SECRET}\n"));
    let file = path.display().to_string();
    c.start_coordinator(
        &["--expected-participants", "1", "--secret-file", &file],
        &[("TWOPC_CRASH_AT", "coordinator.before_decision_logged")],
    );
    c.security = twopc::security::ClientSecurity {
        secret: Some(std::sync::Arc::new(key(SECRET))),
        ..Default::default()
    };
    let (_, console) = start_participant_console(&mut c, "p1", &["--secret-file", &file]);
    c.wait_ready(1);
    leave_one_in_doubt(&mut c);

    // Without a proof the participant's API answers nothing but the page.
    let r = get(&console, "/transactions?state=in-doubt");
    assert_eq!(r.status, 401, "{}", r.body);
    let r = get(&console, "/auth/challenge");
    assert_eq!(r.json()["node"], "participant");
    assert_eq!(r.json()["participant_id"], "p1");

    let b = Browser::start();
    b.goto(&format!("http://{console}/"));
    b.wait(
        "the login view",
        "return !document.getElementById('login').hidden || null;",
        json!([]),
    );
    assert!(b.text("#kind").contains("participant p1"));
    // The coordinator's operator key is not this port's key.
    let operator = key(SECRET)
        .derive_text(&twopc::security::auth::Identity::Operator)
        .unwrap();
    let login = |secret: &str| {
        b.exec(
            "document.getElementById('secret').value = arguments[0]; \
             document.getElementById('login-button').click();",
            json!([secret]),
        );
    };
    login(&operator);
    b.wait(
        "the refusal of the operator key",
        "return document.getElementById('login-error').innerText || null;",
        json!([]),
    );
    assert!(
        b.text("#login-error").contains("--admin p1"),
        "{}",
        b.text("#login-error")
    );
    // The master secret proves p1's admin key.
    login(SECRET);
    b.wait(
        "p1's status",
        "return document.getElementById('counts').innerText.includes('committed') || null;",
        json!([]),
    );
    assert!(
        b.text("#open-note").contains("1 in doubt"),
        "{}",
        b.text("#open-note")
    );

    b.click("button[data-view=transactions]");
    b.exec(
        "const s = document.getElementById('state-filter'); s.value = 'in-doubt'; s.dispatchEvent(new Event('change'));",
        json!([]),
    );
    let id = b
        .wait(
            "the transaction in doubt",
            "const r = document.querySelectorAll('#txns tbody tr'); \
             return r.length === 1 && r[0].dataset.id || null;",
            json!([]),
        )
        .as_str()
        .unwrap()
        .to_string();
    let age = b.text("#txns tbody tr td.in-doubt");
    assert!(age.contains(" ms") || age.contains(" s"), "{age}");

    // Resolve: the dialog wants a decision and a reason before it sends.
    b.click(&format!("button[data-resolve=\"{id}\"]"));
    b.click("#confirm-ok");
    b.wait(
        "the missing decision named",
        "return document.getElementById('confirm-error').innerText.includes('commit or abort') || null;",
        json!([]),
    );
    b.exec(
        "document.getElementById('resolve-decision').value = 'abort'; \
         document.getElementById('resolve-reason').value = 'coordinator lost, e2e'; \
         document.getElementById('resolve-operator').value = 'console-test';",
        json!([]),
    );
    b.click("#confirm-ok");
    b.wait(
        "the dialog closed and nothing in doubt",
        "return !document.getElementById('confirm').open && \
         document.querySelectorAll('#txns tbody tr').length === 0 || null;",
        json!([]),
    );
    let r = participant_signed(&c, "GET", "/transactions?state=heuristic", b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let list = r.json();
    let t = &list["transactions"][0];
    assert_eq!(t["transaction_id"], json!(id), "{list}");
    assert_eq!(t["state"], "aborted", "{list}");

    // Over HTTP: a second resolve is refused by the core, a blank reason
    // and an unknown transaction are named.
    let path = format!("/transactions/{id}/resolve");
    let body = json!({"decision": "commit", "reason": "again"}).to_string();
    let r = participant_signed(&c, "POST", &path, body.as_bytes());
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.json()["error"], "refused");
    let body = json!({"decision": "commit", "reason": "  "}).to_string();
    let r = participant_signed(&c, "POST", &path, body.as_bytes());
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("reason is blank"), "{}", r.body);
    let body = json!({"decision": "commit", "reason": "x"}).to_string();
    let r = participant_signed(&c, "POST", "/transactions/nope/resolve", body.as_bytes());
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.json()["error"], "unknown_transaction");
}

/// `method path body` on p1's admin HTTP port, with a proof of p1's admin
/// key made here (by the server's HMAC crates, not by the page under test).
fn participant_signed(c: &Cluster, method: &str, path: &str, body: &[u8]) -> Resp {
    let console = coordinator_http_addr_of(c, 0);
    let admin = key(SECRET)
        .derive_text(&twopc::security::auth::Identity::Admin("p1".into()))
        .unwrap();
    let hexkey = admin.split_whitespace().last().unwrap().to_string();
    let n = nonce(&console);
    let digest = twopc::security::http_auth::body_digest(body);
    let input = format!("twopc-http-v1\n{n}\n{method}\n{path}\n{digest}");
    let mac = hmac_sha256_hex(&unhex(&hexkey), input.as_bytes());
    let line = format!("Authorization: TWOPC-HMAC nonce={n}, mac={mac}");
    let digest_line = format!("x-twopc-body-sha256: {digest}");
    let mut lines = vec![line.as_str()];
    if !body.is_empty() {
        lines.push(&digest_line);
    }
    http_with(&console, method, path, &lines, Some(body))
}

fn coordinator_http_addr_of(c: &Cluster, idx: usize) -> String {
    let text = std::fs::read_to_string(&c.participants[idx].log).unwrap_or_default();
    const NEEDLE: &str = "admin http listening on ";
    let at = text.rfind(NEEDLE).expect("the console's address") + NEEDLE.len();
    text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// HMAC-SHA256 from the crates the server uses, independent of the page.
fn hmac_sha256_hex(key: &[u8], input: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(input);
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

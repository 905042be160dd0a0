//! Shared-secret authentication of the coordinator's HTTP admin API, as pure
//! functions and a bounded store of issued nonces. No IO and no clock: time
//! comes in as milliseconds, nonces as arguments.
//!
//! The exchange (README "Security", docs/openapi.yaml):
//!
//! ```text
//! client → server  GET /auth/challenge
//! server → client  {"nonce": N, "expires_in_ms": T}      N: 32 fresh random bytes, hex
//! client → server  METHOD PATH?QUERY
//!                  Authorization: TWOPC-HMAC nonce=N, mac=M
//! M = hex HMAC-SHA256(K, "twopc-http-v1\n" N "\n" METHOD "\n" PATH?QUERY "\n" hex SHA-256(body))
//! K = the client key, or with `key=operator` added to the header the
//!     operator key (both derived from the master secret, see `auth`)
//! ```
//!
//! The MAC binds the request's method, path with query, and body to a
//! nonce the server issued, which is good for one request within `T`
//! milliseconds. The secret never crosses the wire; a captured request
//! cannot be replayed (its nonce is spent), nor its proof moved to another
//! method, path or body. The label differs from the framed-TCP exchange's,
//! so a MAC from one is never valid in the other.

use super::auth::{hex, hmac_hex, hmac_verify, is_nonce, CannotProve, Identity, Secret};
use sha2::Digest;
use std::collections::{HashMap, VecDeque};

/// The `Authorization` scheme (matched case-insensitively).
pub const SCHEME: &str = "TWOPC-HMAC";

/// First line of every MAC input; a new version of the exchange changes it.
const DOMAIN: &str = "twopc-http-v1";

/// Hex SHA-256 of a request body (of the empty body when there is none).
pub fn body_digest(body: &[u8]) -> String {
    hex(&sha2::Sha256::digest(body))
}

/// The header that carries [`body_digest`] of a request with a body, so
/// that the server checks the proof before it reads a single body byte (and
/// then checks the body against it).
pub const BODY_DIGEST_HEADER: &str = "x-twopc-body-sha256";

/// The exact MAC input: five lines joined by `\n`, no trailing newline.
/// `path_and_query` is the request target as sent (`/transactions?state=aborted`).
pub fn request_input(nonce: &str, method: &str, path_and_query: &str, body: &[u8]) -> Vec<u8> {
    request_input_digest(nonce, method, path_and_query, &body_digest(body))
}

/// [`request_input`] from the body's hex SHA-256 instead of the body.
pub fn request_input_digest(
    nonce: &str,
    method: &str,
    path_and_query: &str,
    digest: &str,
) -> Vec<u8> {
    [DOMAIN, nonce, method, path_and_query, digest]
        .join("\n")
        .into_bytes()
}

/// The value of the `Authorization` header for one request, proving the
/// operator key when `secret` can, else the client key.
pub fn authorization(
    secret: &Secret,
    nonce: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> Result<String, CannotProve> {
    let (identity, name) = if secret.can_prove(&Identity::Operator) {
        (Identity::Operator, "operator")
    } else {
        (Identity::Client, "client")
    };
    let key = secret.key_for(&identity)?;
    let mac = hmac_hex(&key, &request_input(nonce, method, path_and_query, body));
    Ok(format!("{SCHEME} nonce={nonce}, mac={mac}, key={name}"))
}

/// The value of the `Authorization` header for one request to participant
/// `participant`'s admin HTTP port, which takes only that participant's
/// admin key (derived from the master secret or from the participant's own
/// key). The server knows whose key it is, so the header names none.
pub fn authorization_on_participant(
    secret: &Secret,
    participant: &str,
    nonce: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> Result<String, CannotProve> {
    let key = secret.key_for(&Identity::Admin(participant.to_string()))?;
    let mac = hmac_hex(&key, &request_input(nonce, method, path_and_query, body));
    Ok(format!("{SCHEME} nonce={nonce}, mac={mac}"))
}

/// A parsed `Authorization: TWOPC-HMAC nonce=…, mac=…[, key=client|operator]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    pub nonce: String,
    pub mac: String,
    /// Whose key made the MAC: `client` (the default) or `operator`.
    pub identity: Identity,
}

/// Why a request is not authenticated. `Display` is the message the client
/// gets: what was wrong and what to do.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpAuthError {
    #[error("this endpoint requires the shared secret: get a nonce from GET /auth/challenge, then send `Authorization: TWOPC-HMAC nonce=<nonce>, mac=<hex HMAC-SHA256>` (README \"Security\"; `twopc http` does this for you)")]
    Missing,
    #[error(
        "malformed Authorization header: {0}; expected `TWOPC-HMAC nonce=<64 hex>, mac=<64 hex>`"
    )]
    Malformed(String),
    #[error("{0}")]
    BodyDigest(String),
    #[error("unknown nonce: this coordinator did not issue it, or it expired or was pushed out by newer ones and forgotten; get a fresh one from GET /auth/challenge")]
    UnknownNonce,
    #[error("the nonce expired (nonces are good for {ttl_ms} ms); get a fresh one from GET /auth/challenge and send the request right after")]
    ExpiredNonce { ttl_ms: u64 },
    #[error("the nonce was already used (each nonce is good for one request, even a refused one); get a fresh one from GET /auth/challenge")]
    ReusedNonce,
    #[error("wrong MAC: the proof does not match this method, path and body under the coordinator's secret; check that you use the same secret and sign exactly the request you send")]
    WrongMac,
}

impl HttpAuthError {
    /// The refusal as a fixed word, for the metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            HttpAuthError::Missing => "missing",
            HttpAuthError::Malformed(_) => "malformed",
            HttpAuthError::BodyDigest(_) => "body_digest",
            HttpAuthError::UnknownNonce => "unknown_nonce",
            HttpAuthError::ExpiredNonce { .. } => "expired_nonce",
            HttpAuthError::ReusedNonce => "reused_nonce",
            HttpAuthError::WrongMac => "wrong_mac",
        }
    }
}

/// Per-address rate limit of `GET /auth/challenge` (a token bucket per
/// address: `per_second` refill, twice that as the burst), so one address
/// cannot push everyone else's nonces out of the bounded store. At most
/// `addresses_max` addresses are tracked; past that the idle ones (full
/// buckets) are forgotten, and if none is idle, all are.
#[derive(Debug)]
pub struct ChallengeLimiter {
    per_second: u32,
    addresses_max: usize,
    /// Address → (tokens, at milliseconds).
    buckets: HashMap<std::net::IpAddr, (f64, u64)>,
}

impl ChallengeLimiter {
    pub fn new(per_second: u32, addresses_max: usize) -> ChallengeLimiter {
        ChallengeLimiter {
            per_second: per_second.max(1),
            addresses_max: addresses_max.max(1),
            buckets: HashMap::new(),
        }
    }

    fn burst(&self) -> f64 {
        2.0 * self.per_second as f64
    }

    fn refilled(&self, (tokens, at): (f64, u64), now_ms: u64) -> f64 {
        let gained = now_ms.saturating_sub(at) as f64 * self.per_second as f64 / 1000.0;
        (tokens + gained).min(self.burst())
    }

    /// May `addr` have a nonce at `now_ms`? Takes a token when it may.
    pub fn allow(&mut self, addr: std::net::IpAddr, now_ms: u64) -> bool {
        if !self.buckets.contains_key(&addr) && self.buckets.len() >= self.addresses_max {
            let burst = self.burst();
            let idle: Vec<std::net::IpAddr> = self
                .buckets
                .iter()
                .filter(|(_, b)| self.refilled(**b, now_ms) >= burst)
                .map(|(a, _)| *a)
                .collect();
            for a in idle {
                self.buckets.remove(&a);
            }
            if self.buckets.len() >= self.addresses_max {
                self.buckets.clear();
            }
        }
        let bucket = self
            .buckets
            .get(&addr)
            .copied()
            .unwrap_or((self.burst(), now_ms));
        let tokens = self.refilled(bucket, now_ms);
        let (tokens, allowed) = if tokens >= 1.0 {
            (tokens - 1.0, true)
        } else {
            (tokens, false)
        };
        self.buckets.insert(addr, (tokens, now_ms));
        allowed
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// Parse an `Authorization` header value. Parameters may come in any order
/// and may be quoted; anything else (another scheme, a missing, repeated or
/// unknown parameter, values that are not 64 hex digits) is malformed.
pub fn parse_authorization(value: &str) -> Result<Proof, HttpAuthError> {
    let bad = |why: String| HttpAuthError::Malformed(why);
    let value = value.trim();
    let (scheme, params) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Err(bad(format!(
            "the scheme is `{}`, not `{SCHEME}`",
            clip(scheme)
        )));
    }
    let (mut nonce, mut mac, mut which): (Option<String>, Option<String>, Option<String>) =
        (None, None, None);
    for param in params.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, v)) = param.split_once('=') else {
            return Err(bad(format!("`{}` is not key=value", clip(param))));
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        if v.contains(char::is_whitespace) {
            return Err(bad(format!(
                "the value of `{}` contains a space; separate parameters with commas",
                clip(key.trim())
            )));
        }
        let slot = match key.trim().to_ascii_lowercase().as_str() {
            "nonce" => &mut nonce,
            "mac" => &mut mac,
            "key" => &mut which,
            other => return Err(bad(format!("unknown parameter `{}`", clip(other)))),
        };
        if slot.replace(v.to_string()).is_some() {
            return Err(bad(format!("`{}` appears twice", key.trim())));
        }
    }
    let nonce = nonce.ok_or_else(|| bad("no `nonce=`".into()))?;
    let mac = mac.ok_or_else(|| bad("no `mac=`".into()))?;
    if !is_nonce(&nonce) {
        return Err(bad("the nonce is not 64 hex digits".into()));
    }
    if !is_nonce(&mac) {
        return Err(bad("the mac is not 64 hex digits".into()));
    }
    let identity = match which.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("client") => Identity::Client,
        Some("operator") => Identity::Operator,
        Some(other) => {
            return Err(bad(format!(
                "`key={}`: the key is `client` or `operator`",
                clip(other)
            )))
        }
    };
    Ok(Proof {
        nonce,
        mac,
        identity,
    })
}

/// At most 40 characters of client text, for messages.
fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Does `proof` authenticate this request? Spends the nonce whatever the
/// outcome, so each nonce allows one attempt: a wrong MAC cannot be retried
/// against the same nonce.
pub fn authorize(
    store: &mut NonceStore,
    secret: &Secret,
    proof: &Proof,
    request: (&str, &str, &[u8]),
    now_ms: u64,
) -> Result<(), HttpAuthError> {
    let (method, path_and_query, body) = request;
    authorize_digest(
        store,
        secret,
        proof,
        (method, path_and_query, &body_digest(body)),
        now_ms,
    )
}

/// [`authorize`] with the body's hex SHA-256 as the client declared it
/// ([`BODY_DIGEST_HEADER`]): the proof is checked before the body is read;
/// the caller must then check the body against the digest.
pub fn authorize_digest(
    store: &mut NonceStore,
    secret: &Secret,
    proof: &Proof,
    request: (&str, &str, &str),
    now_ms: u64,
) -> Result<(), HttpAuthError> {
    let (method, path_and_query, digest) = request;
    store.take(&proof.nonce, now_ms)?;
    let input = request_input_digest(&proof.nonce, method, path_and_query, digest);
    let Ok(key) = secret.key_for(&proof.identity) else {
        return Err(HttpAuthError::WrongMac);
    };
    if hmac_verify(&key, &input, &proof.mac) {
        Ok(())
    } else {
        Err(HttpAuthError::WrongMac)
    }
}

#[derive(Debug)]
struct Issued {
    at_ms: u64,
    used: bool,
}

/// Nonces issued by `GET /auth/challenge` and not yet forgotten: at most
/// `max` of them (past it the oldest are dropped), each valid for `ttl_ms`
/// after issue and for one request. Spent nonces are kept until they expire
/// so that a replay is named as such.
#[derive(Debug)]
pub struct NonceStore {
    max: usize,
    ttl_ms: u64,
    issued: HashMap<String, Issued>,
    /// Issue order, oldest first; the same keys as `issued`.
    order: VecDeque<String>,
}

impl NonceStore {
    /// `max` ≥ 1 (a store of none could never authenticate).
    pub fn new(max: usize, ttl_ms: u64) -> NonceStore {
        assert!(max >= 1, "a nonce store holds at least one nonce");
        NonceStore {
            max,
            ttl_ms,
            issued: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Milliseconds an issued nonce stays valid.
    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Remember `nonce` (fresh and random) as issued at `now_ms`; forgets
    /// expired nonces and, past `max`, the oldest ones.
    pub fn issue(&mut self, nonce: String, now_ms: u64) {
        while let Some(oldest) = self.order.front() {
            let expired = self
                .issued
                .get(oldest)
                .is_none_or(|i| now_ms.saturating_sub(i.at_ms) >= self.ttl_ms);
            if !expired && self.order.len() < self.max {
                break;
            }
            if let Some(old) = self.order.pop_front() {
                self.issued.remove(&old);
            }
        }
        if self
            .issued
            .insert(
                nonce.clone(),
                Issued {
                    at_ms: now_ms,
                    used: false,
                },
            )
            .is_none()
        {
            self.order.push_back(nonce);
        }
    }

    /// Spend `nonce` at `now_ms`.
    pub fn take(&mut self, nonce: &str, now_ms: u64) -> Result<(), HttpAuthError> {
        let Some(i) = self.issued.get_mut(nonce) else {
            return Err(HttpAuthError::UnknownNonce);
        };
        if std::mem::replace(&mut i.used, true) {
            return Err(HttpAuthError::ReusedNonce);
        }
        if now_ms.saturating_sub(i.at_ms) >= self.ttl_ms {
            return Err(HttpAuthError::ExpiredNonce {
                ttl_ms: self.ttl_ms,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Secret {
        Secret::from_text("example-secret-0123456789abcdef").unwrap()
    }

    const N1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const N2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const N3: &str = "3333333333333333333333333333333333333333333333333333333333333333";

    #[test]
    fn mac_input_is_five_lines_ending_with_the_body_digest() {
        let input = request_input(N1, "POST", "/transactions?x=1", b"{}");
        assert_eq!(
            String::from_utf8(input).unwrap(),
            format!(
                "twopc-http-v1\n{N1}\nPOST\n/transactions?x=1\n\
                 44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
            )
        );
        // SHA-256 of nothing, for requests without a body.
        assert_eq!(
            body_digest(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// The example of README "Security", byte for byte; the recipe there
    /// computes the same MAC with `openssl dgst -sha256 -hmac`.
    #[test]
    fn documented_example() {
        // The master secret proves the operator key; a client key the client's.
        assert_eq!(
            authorization(&key(), N1, "GET", "/status", b"").unwrap(),
            format!(
                "TWOPC-HMAC nonce={N1}, mac=\
                 7dfc3d2aa26d2fefe814a295861842353913a2221ebea9463ed0de55908b8850, key=operator"
            )
        );
        let client = Secret::from_text(&key().derive_text(&Identity::Client).unwrap()).unwrap();
        assert_eq!(
            authorization(&client, N1, "GET", "/status", b"").unwrap(),
            format!(
                "TWOPC-HMAC nonce={N1}, mac=\
                 e9ee3b430fabe75b2ee0f14df72e51a99f339abda7e317369fc3bb5c2023271c, key=client"
            )
        );
    }

    fn proof(secret: &Secret, nonce: &str, method: &str, path: &str, body: &[u8]) -> Proof {
        parse_authorization(&authorization(secret, nonce, method, path, body).unwrap()).unwrap()
    }

    #[test]
    fn a_proof_is_good_once_and_only_for_its_request() {
        let k = key();
        let mut store = NonceStore::new(16, 1000);
        for n in [N1, N2, N3] {
            store.issue(n.into(), 0);
        }
        let p = proof(&k, N1, "GET", "/status", b"");
        assert_eq!(
            authorize(&mut store, &k, &p, ("GET", "/status", b""), 10),
            Ok(())
        );
        // Replayed: refused, and named as a replay.
        assert_eq!(
            authorize(&mut store, &k, &p, ("GET", "/status", b""), 11),
            Err(HttpAuthError::ReusedNonce)
        );
        // Another method, path, query or body: wrong MAC (and the nonce is spent).
        for (m, path, body) in [
            ("POST", "/status", &b""[..]),
            ("GET", "/participants", b""),
            ("GET", "/status?x=1", b""),
            ("GET", "/status", b"x"),
        ] {
            let mut s = NonceStore::new(1, 1000);
            s.issue(N2.into(), 0);
            let p = proof(&k, N2, "GET", "/status", b"");
            assert_eq!(
                authorize(&mut s, &k, &p, (m, path, body), 1),
                Err(HttpAuthError::WrongMac),
                "{m} {path}"
            );
            assert_eq!(
                authorize(&mut s, &k, &p, ("GET", "/status", b""), 2),
                Err(HttpAuthError::ReusedNonce)
            );
        }
        // Another secret: wrong MAC.
        let other = Secret::from_text("another secret 0123456").unwrap();
        let p = proof(&other, N2, "GET", "/status", b"");
        assert_eq!(
            authorize(&mut store, &k, &p, ("GET", "/status", b""), 12),
            Err(HttpAuthError::WrongMac)
        );
        // A nonce the store never issued.
        let p = proof(&k, &"4".repeat(64), "GET", "/status", b"");
        assert_eq!(
            authorize(&mut store, &k, &p, ("GET", "/status", b""), 13),
            Err(HttpAuthError::UnknownNonce)
        );
    }

    #[test]
    fn nonces_expire_after_their_lifetime() {
        let mut store = NonceStore::new(16, 100);
        store.issue(N1.into(), 1000);
        store.issue(N2.into(), 1000);
        assert_eq!(store.take(N1, 1099), Ok(()));
        assert_eq!(
            store.take(N2, 1100),
            Err(HttpAuthError::ExpiredNonce { ttl_ms: 100 })
        );
        // Issuing forgets expired nonces, spent or not.
        store.issue(N3.into(), 1100);
        assert_eq!(store.len(), 1);
        assert_eq!(store.take(N1, 1100), Err(HttpAuthError::UnknownNonce));
        assert_eq!(store.take(N3, 1199), Ok(()));
    }

    #[test]
    fn the_store_is_bounded_and_drops_the_oldest() {
        let mut store = NonceStore::new(2, 1000);
        store.issue(N1.into(), 0);
        store.issue(N2.into(), 1);
        store.issue(N3.into(), 2);
        assert_eq!(store.len(), 2);
        assert_eq!(store.take(N1, 3), Err(HttpAuthError::UnknownNonce));
        assert_eq!(store.take(N2, 3), Ok(()));
        assert_eq!(store.take(N3, 3), Ok(()));
        // Issuing the same nonce twice keeps one entry.
        let mut store = NonceStore::new(4, 1000);
        store.issue(N1.into(), 0);
        store.issue(N1.into(), 0);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn challenges_are_rate_limited_per_address_with_bounded_memory() {
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let mut l = ChallengeLimiter::new(5, 2);
        // A burst of twice the rate, then one per 200 ms.
        assert_eq!((0..10).filter(|_| l.allow(a, 0)).count(), 10);
        assert!(!l.allow(a, 0));
        assert!(!l.allow(a, 199));
        assert!(l.allow(a, 400));
        // Another address is not held back by the first.
        assert!(l.allow(b, 400));
        // A third address past the bound: the busy ones are forgotten
        // (none is idle), so memory stays at the bound.
        let c: std::net::IpAddr = "10.0.0.3".parse().unwrap();
        assert!(l.allow(c, 400));
        assert!(l.len() <= 2);
        // After two seconds every bucket is full again.
        let mut l = ChallengeLimiter::new(5, 2);
        (0..10).for_each(|_| {
            l.allow(a, 0);
        });
        assert!(l.allow(a, 2_000));
    }

    #[test]
    fn authorization_headers_parse_leniently_in_form_strictly_in_content() {
        let m = "a".repeat(64);
        let ok = Proof {
            nonce: N1.into(),
            mac: m.clone(),
            identity: Identity::Client,
        };
        for h in [
            format!("TWOPC-HMAC nonce={N1}, mac={m}"),
            format!("twopc-hmac mac={m},nonce={N1}"),
            format!("  TWOPC-HMAC   nonce=\"{N1}\" ,  mac=\"{m}\"  "),
            format!("TWOPC-HMAC nonce={N1}, mac={m}, key=client"),
        ] {
            assert_eq!(parse_authorization(&h), Ok(ok.clone()), "{h}");
        }
        let operator = Proof {
            identity: Identity::Operator,
            ..ok.clone()
        };
        assert_eq!(
            parse_authorization(&format!("TWOPC-HMAC key=Operator, nonce={N1}, mac={m}")),
            Ok(operator)
        );
        assert!(matches!(
            parse_authorization(&format!("TWOPC-HMAC nonce={N1}, mac={m}, key=root")),
            Err(HttpAuthError::Malformed(ref w)) if w.contains("`client` or `operator`")
        ));
        let cases = [
            (format!("Bearer {N1}"), "scheme is `Bearer`"),
            ("TWOPC-HMAC".to_string(), "no `nonce=`"),
            (format!("TWOPC-HMAC nonce={N1}"), "no `mac=`"),
            (format!("TWOPC-HMAC mac={m}"), "no `nonce=`"),
            (
                format!("TWOPC-HMAC nonce={N1}, mac={m}, x=1"),
                "unknown parameter `x`",
            ),
            (
                format!("TWOPC-HMAC nonce={N1}, nonce={N1}, mac={m}"),
                "twice",
            ),
            (format!("TWOPC-HMAC nonce={N1} mac={m}"), "commas"),
            (
                format!("TWOPC-HMAC nonce=abc, mac={m}"),
                "nonce is not 64 hex",
            ),
            (
                format!("TWOPC-HMAC nonce={N1}, mac=zz"),
                "mac is not 64 hex",
            ),
            (format!("TWOPC-HMAC nonce={N1}, mac"), "not key=value"),
            ("é".repeat(100), "scheme"),
        ];
        for (h, want) in cases {
            match parse_authorization(&h) {
                Err(HttpAuthError::Malformed(why)) => assert!(why.contains(want), "{h}: {why}"),
                other => panic!("{h}: {other:?}"),
            }
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        for e in [
            HttpAuthError::Missing,
            HttpAuthError::UnknownNonce,
            HttpAuthError::ExpiredNonce { ttl_ms: 5 },
            HttpAuthError::ReusedNonce,
        ] {
            assert!(e.to_string().contains("GET /auth/challenge"), "{e}");
        }
        assert!(HttpAuthError::WrongMac.to_string().contains("same secret"));
        assert!(HttpAuthError::ExpiredNonce { ttl_ms: 5 }
            .to_string()
            .contains("5 ms"));
    }
}

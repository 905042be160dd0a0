//! Shared-secret challenge-response authentication, as pure functions and
//! two small handshake state machines (server side, peer side): messages in,
//! messages out. No IO and no clock.
//!
//! The exchange (docs/PROTOCOL.md, section 3.4):
//!
//! ```text
//! peer   → server  hello {role, id, ...}
//! server → peer    challenge {nonce: Ns}                 Ns: 32 fresh random bytes, hex
//! peer   → server  auth {nonce: Np, mac: HMAC(K, "peer" context)}
//! server → peer    authenticated {mac: HMAC(K, "server" context)}
//! server → peer    welcome ... (the protocol's own reply to hello)
//! ```
//!
//! The MAC input binds the direction, the hello's role and id, and both
//! nonces, so a response is useless on another connection (fresh `Ns`), for
//! another identity, or reflected back as the server's proof. The secret
//! itself never crosses the wire. The only randomness (nonces, generated
//! secrets) comes from the two `fresh`/`random` helpers; the state machines
//! take nonces as arguments.

use crate::protocol::{Body, ErrorCode, Role, WireError};
use hmac::{KeyInit, Mac};
use std::sync::Arc;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Bytes of randomness in a nonce (sent as twice as many hex digits).
pub const NONCE_BYTES: usize = 32;

/// Shortest accepted secret, in bytes: shorter ones are guessable.
pub const SECRET_MIN_BYTES: usize = 16;

/// First line of every MAC input; a new version of the exchange changes it.
const DOMAIN: &str = "twopc-auth-v1";

/// The shared secret. `Debug` never shows it; it is never serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from the text of a secret file or variable. Surrounding
    /// whitespace (a trailing newline from `echo` or an editor) is not part
    /// of it.
    pub fn from_text(text: &str) -> Result<Secret, String> {
        let t = text.trim();
        if t.len() < SECRET_MIN_BYTES {
            return Err(format!(
                "the secret is {} bytes long; use at least {SECRET_MIN_BYTES} \
                 (for example the output of `openssl rand -hex 32`)",
                t.len()
            ));
        }
        Ok(Secret(t.as_bytes().to_vec()))
    }

    /// A fresh random secret (64 hex digits), for throw-away local clusters.
    pub fn random_text() -> String {
        hex(&rand::random::<[u8; 32]>())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(not shown)")
    }
}

/// Who proves knowledge of the secret with a MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prover {
    /// The connecting peer (participant, client, operator tool).
    Peer,
    /// The server (coordinator, participant admin port).
    Server,
}

impl Prover {
    fn as_str(self) -> &'static str {
        match self {
            Prover::Peer => "peer",
            Prover::Server => "server",
        }
    }
}

/// What a MAC is computed over.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub role: Role,
    /// The hello's `id` (participants), empty for clients.
    pub id: &'a str,
    pub server_nonce: &'a str,
    pub peer_nonce: &'a str,
}

/// The exact MAC input: six lines joined by `\n`, no trailing newline.
pub fn mac_input(prover: Prover, ctx: &Context<'_>) -> Vec<u8> {
    let role = match ctx.role {
        Role::Participant => "participant",
        Role::Client => "client",
    };
    [
        DOMAIN,
        prover.as_str(),
        role,
        ctx.id,
        ctx.server_nonce,
        ctx.peer_nonce,
    ]
    .join("\n")
    .into_bytes()
}

/// HMAC-SHA256 keyed with the secret, over `input`.
fn hmac_over(secret: &Secret, input: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(&secret.0)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(input);
    m
}

/// HMAC-SHA256 of `input` under the secret, as 64 lowercase hex digits.
/// Every MAC of twopc goes through here; callers build the input.
pub(crate) fn hmac_hex(secret: &Secret, input: &[u8]) -> String {
    hex(&hmac_over(secret, input).finalize().into_bytes())
}

/// Does `mac_hex` match the HMAC of `input`? The comparison of the MAC
/// bytes is constant-time; text that is not 64 hex digits never matches.
pub(crate) fn hmac_verify(secret: &Secret, input: &[u8], mac_hex: &str) -> bool {
    match unhex(mac_hex) {
        Some(bytes) if bytes.len() == 32 => hmac_over(secret, input).verify_slice(&bytes).is_ok(),
        _ => false,
    }
}

/// HMAC-SHA256 of the context, as 64 lowercase hex digits.
pub fn mac(secret: &Secret, prover: Prover, ctx: &Context<'_>) -> String {
    hmac_hex(secret, &mac_input(prover, ctx))
}

/// Does `mac_hex` match? See [`hmac_verify`].
pub fn verify(secret: &Secret, prover: Prover, ctx: &Context<'_>, mac_hex: &str) -> bool {
    hmac_verify(secret, &mac_input(prover, ctx), mac_hex)
}

/// A nonce from random bytes.
pub fn nonce_from(bytes: [u8; NONCE_BYTES]) -> String {
    hex(&bytes)
}

/// A fresh random nonce.
pub fn fresh_nonce() -> String {
    nonce_from(rand::random())
}

/// Is `s` a well-formed nonce (64 hex digits)?
pub fn is_nonce(s: &str) -> bool {
    s.len() == NONCE_BYTES * 2 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn unauthorized(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::Unauthorized, message)
}

/// What the server does with a handshake message.
#[derive(Debug, PartialEq)]
pub enum ServerStep {
    /// Send this and wait for the next message.
    Reply(Body),
    /// Authenticated: send `reply`, then hand `hello` to the protocol.
    Accept { reply: Body, hello: Body },
    /// Send this `unauthorized` error and close the connection.
    Reject(WireError),
}

/// The server side of one connection's authentication.
#[derive(Debug)]
pub struct ServerHandshake {
    secret: Arc<Secret>,
    nonce: String,
    hello: Option<Body>,
}

impl ServerHandshake {
    /// `nonce` must be fresh for this connection (see [`fresh_nonce`]).
    pub fn new(secret: Arc<Secret>, nonce: String) -> ServerHandshake {
        ServerHandshake {
            secret,
            nonce,
            hello: None,
        }
    }

    /// The next message from the peer.
    pub fn on_message(&mut self, body: Body) -> ServerStep {
        let Some(hello) = &self.hello else {
            return match body {
                Body::Hello { .. } => {
                    self.hello = Some(body);
                    ServerStep::Reply(Body::Challenge {
                        nonce: self.nonce.clone(),
                    })
                }
                other => ServerStep::Reject(unauthorized(format!(
                    "`{}` before authentication; this server requires the shared secret: \
                     say hello, then answer the challenge",
                    other.message_type()
                ))),
            };
        };
        let Body::Auth {
            nonce: peer_nonce,
            mac: peer_mac,
        } = body
        else {
            return ServerStep::Reject(unauthorized(format!(
                "expected `auth` answering the challenge, got `{}`; \
                 give the peer the shared secret (secret_file or TWOPC_SECRET)",
                body.message_type()
            )));
        };
        let Body::Hello { role, id, .. } = hello else {
            unreachable!("only a hello is stored")
        };
        let id = id.as_ref().map(|p| p.0.as_str()).unwrap_or("");
        let ctx = Context {
            role: *role,
            id,
            server_nonce: &self.nonce,
            peer_nonce: &peer_nonce,
        };
        if !is_nonce(&peer_nonce) || !verify(&self.secret, Prover::Peer, &ctx, &peer_mac) {
            return ServerStep::Reject(unauthorized(
                "authentication failed: the response does not match this connection's \
                 challenge; check that both sides use the same secret",
            ));
        }
        let reply = Body::Authenticated {
            mac: mac(&self.secret, Prover::Server, &ctx),
        };
        match self.hello.take() {
            Some(hello) => ServerStep::Accept { reply, hello },
            None => unreachable!("checked above"),
        }
    }

    /// A frame that is not a valid message arrived before authentication.
    pub fn on_invalid(&self, err: &WireError) -> ServerStep {
        ServerStep::Reject(unauthorized(format!(
            "expected {} before anything else, got an invalid frame ({})",
            if self.hello.is_some() {
                "`auth` answering the challenge"
            } else {
                "`hello`"
            },
            err.code.as_str()
        )))
    }

    /// The handshake timeout ran out.
    pub fn on_timeout(&self, timeout_ms: u64) -> ServerStep {
        ServerStep::Reject(unauthorized(format!(
            "no authentication within the handshake timeout ({timeout_ms} ms); closing"
        )))
    }
}

/// What a connecting peer does with a message during the handshake.
#[derive(Debug, PartialEq)]
pub enum PeerStep {
    /// Send this and wait for the next message.
    Reply(Body),
    /// The server proved it knows the secret; later messages are the
    /// protocol's.
    Done,
    /// Give up: the sentence says what was wrong and what to do.
    Fail(String),
}

/// The connecting side of the handshake, started after sending `hello`.
#[derive(Debug)]
pub struct PeerHandshake {
    secret: Arc<Secret>,
    role: Role,
    id: String,
    nonce: String,
    server_nonce: Option<String>,
}

impl PeerHandshake {
    /// `role` and `id` must be those of the `hello` sent; `nonce` fresh.
    pub fn new(secret: Arc<Secret>, role: Role, id: Option<&str>, nonce: String) -> PeerHandshake {
        PeerHandshake {
            secret,
            role,
            id: id.unwrap_or("").to_string(),
            nonce,
            server_nonce: None,
        }
    }

    fn ctx<'a>(&'a self, server_nonce: &'a str) -> Context<'a> {
        Context {
            role: self.role,
            id: &self.id,
            server_nonce,
            peer_nonce: &self.nonce,
        }
    }

    /// The next message from the server.
    pub fn on_message(&mut self, body: &Body) -> PeerStep {
        match (&self.server_nonce, body) {
            (_, Body::Error { code, message, .. }) => PeerStep::Fail(format!(
                "the server refused the connection ({code}): {message}"
            )),
            (None, Body::Challenge { nonce }) if is_nonce(nonce) => {
                let mac = mac(&self.secret, Prover::Peer, &self.ctx(nonce));
                self.server_nonce = Some(nonce.clone());
                PeerStep::Reply(Body::Auth {
                    nonce: self.nonce.clone(),
                    mac,
                })
            }
            (None, Body::Challenge { .. }) => {
                PeerStep::Fail("the server's challenge is not 64 hex digits".into())
            }
            (None, other) => PeerStep::Fail(format!(
                "a shared secret is configured here, but the server answered `{}` instead of \
                 a challenge: it runs without a secret (configure the same secret_file there), \
                 or it is not the server you meant",
                other.message_type()
            )),
            (Some(ns), Body::Authenticated { mac }) => {
                if verify(&self.secret, Prover::Server, &self.ctx(ns), mac) {
                    PeerStep::Done
                } else {
                    PeerStep::Fail(
                        "the server could not prove that it knows the shared secret; \
                         check that both sides use the same secret"
                            .into(),
                    )
                }
            }
            (Some(_), other) => PeerStep::Fail(format!(
                "expected `authenticated` from the server, got `{}`",
                other.message_type()
            )),
        }
    }
}

/// Rate limit for logging failed handshakes: at most `burst` lines per
/// window; the first line of the next window says how many were left out.
/// Time is passed in, in milliseconds.
#[derive(Debug)]
pub struct FailureLog {
    window_ms: u64,
    burst: u32,
    window_start_ms: Option<u64>,
    logged: u32,
    suppressed: u64,
}

/// Whether to log one failure, and how many earlier ones were not logged.
#[derive(Debug, PartialEq, Eq)]
pub enum LogDecision {
    Log { suppressed_before: u64 },
    Suppress,
}

impl FailureLog {
    pub fn new(window_ms: u64, burst: u32) -> FailureLog {
        FailureLog {
            window_ms,
            burst,
            window_start_ms: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// A failure happened at `now_ms`.
    pub fn record(&mut self, now_ms: u64) -> LogDecision {
        let fresh = self
            .window_start_ms
            .is_none_or(|s| now_ms.saturating_sub(s) >= self.window_ms);
        if fresh {
            self.window_start_ms = Some(now_ms);
            self.logged = 0;
        }
        if self.logged < self.burst {
            self.logged += 1;
            LogDecision::Log {
                suppressed_before: std::mem::take(&mut self.suppressed),
            }
        } else {
            self.suppressed += 1;
            LogDecision::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ParticipantId;

    fn secret(s: &str) -> Arc<Secret> {
        Arc::new(Secret::from_text(s).unwrap())
    }

    fn hello(role: Role, id: Option<&str>) -> Body {
        Body::Hello {
            role,
            id: id.map(ParticipantId::from),
            protocol_version: 1,
        }
    }

    const NS: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const NP: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn ctx<'a>(role: Role, id: &'a str) -> Context<'a> {
        Context {
            role,
            id,
            server_nonce: NS,
            peer_nonce: NP,
        }
    }

    #[test]
    fn mac_input_is_six_lines() {
        let input = mac_input(Prover::Peer, &ctx(Role::Participant, "p1"));
        assert_eq!(
            String::from_utf8(input).unwrap(),
            format!("twopc-auth-v1\npeer\nparticipant\np1\n{NS}\n{NP}")
        );
    }

    /// The example of docs/PROTOCOL.md section 3.6, byte for byte.
    #[test]
    fn documented_example() {
        let k = Secret::from_text("example-secret-0123456789abcdef").unwrap();
        let (ns, np) = ("11".repeat(32), "22".repeat(32));
        let c = Context {
            role: Role::Client,
            id: "",
            server_nonce: &ns,
            peer_nonce: &np,
        };
        assert_eq!(
            mac(&k, Prover::Peer, &c),
            "3dfb507bb1600f1ad41dc0e213d93568f972b9d0a77aad2a0f50f10a5ab688c0"
        );
        assert_eq!(
            mac(&k, Prover::Server, &c),
            "d6a365502f113a7084ccf08211bb33f402e98468a36763f78b80303fc000b3d6"
        );
        let auth = Body::Auth {
            nonce: np.clone(),
            mac: mac(&k, Prover::Peer, &c),
        };
        let bytes = auth.encode(1795320859.2335);
        assert_eq!(bytes.len(), 211);
        assert!(String::from_utf8(bytes)
            .unwrap()
            .starts_with(r#"{"message_type":"auth","payload":{"mac":"3dfb"#));
    }

    #[test]
    fn mac_matches_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verify_accepts_only_the_exact_mac() {
        let k = secret("0123456789abcdef-secret");
        let c = ctx(Role::Client, "");
        let m = mac(&k, Prover::Peer, &c);
        assert_eq!(m.len(), 64);
        assert!(verify(&k, Prover::Peer, &c, &m));
        assert!(verify(&k, Prover::Peer, &c, &m.to_uppercase()));
        // Another secret, direction, role, id or nonce: no match.
        assert!(!verify(
            &secret("another secret, 16+"),
            Prover::Peer,
            &c,
            &m
        ));
        assert!(!verify(&k, Prover::Server, &c, &m));
        assert!(!verify(&k, Prover::Peer, &ctx(Role::Participant, ""), &m));
        assert!(!verify(&k, Prover::Peer, &ctx(Role::Client, "x"), &m));
        let other_nonce = Context {
            server_nonce: NP,
            ..c
        };
        assert!(!verify(&k, Prover::Peer, &other_nonce, &m));
        // Malformed MACs never match and never panic.
        for bad in ["", "zz", &m[..62], &format!("{m}00"), "é", &"0".repeat(64)] {
            assert!(!verify(&k, Prover::Peer, &c, bad), "{bad}");
        }
    }

    #[test]
    fn short_secrets_are_refused_and_whitespace_is_trimmed() {
        assert!(Secret::from_text("short")
            .unwrap_err()
            .contains("at least 16"));
        assert_eq!(
            Secret::from_text("  0123456789abcdef\n").unwrap(),
            Secret::from_text("0123456789abcdef").unwrap()
        );
        assert_eq!(
            format!("{:?}", Secret::from_text("0123456789abcdef").unwrap()),
            "Secret(not shown)"
        );
        assert!(Secret::from_text(&Secret::random_text()).is_ok());
    }

    #[test]
    fn nonces_are_fresh_and_well_formed() {
        let (a, b) = (fresh_nonce(), fresh_nonce());
        assert!(is_nonce(&a) && is_nonce(&b));
        assert_ne!(a, b);
        assert!(!is_nonce("abc") && !is_nonce(&"g".repeat(64)));
    }

    /// Run a full exchange between the two state machines.
    fn exchange(server_secret: &str, peer_secret: &str) -> (ServerStep, Option<PeerStep>) {
        let mut server = ServerHandshake::new(secret(server_secret), NS.into());
        let mut peer = PeerHandshake::new(
            secret(peer_secret),
            Role::Participant,
            Some("p1"),
            NP.into(),
        );
        let challenge = match server.on_message(hello(Role::Participant, Some("p1"))) {
            ServerStep::Reply(b) => b,
            other => panic!("{other:?}"),
        };
        assert_eq!(challenge, Body::Challenge { nonce: NS.into() });
        let auth = match peer.on_message(&challenge) {
            PeerStep::Reply(b) => b,
            other => panic!("{other:?}"),
        };
        match server.on_message(auth) {
            ServerStep::Accept { reply, hello: h } => {
                assert_eq!(h, hello(Role::Participant, Some("p1")));
                (
                    ServerStep::Reply(Body::Status),
                    Some(peer.on_message(&reply)),
                )
            }
            other => (other, None),
        }
    }

    #[test]
    fn same_secret_authenticates_both_ways() {
        let (_, peer) = exchange("shared secret 0123", "shared secret 0123");
        assert_eq!(peer, Some(PeerStep::Done));
    }

    #[test]
    fn wrong_secret_is_unauthorized() {
        match exchange("shared secret 0123", "wrong secret 01234").0 {
            ServerStep::Reject(e) => {
                assert_eq!(e.code, ErrorCode::Unauthorized);
                assert!(e.message.contains("same secret"), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_replayed_response_fails_against_a_fresh_nonce() {
        let k = secret("shared secret 0123");
        // An eavesdropper recorded this answer to challenge NS.
        let recorded = Body::Auth {
            nonce: NP.into(),
            mac: mac(&k, Prover::Peer, &ctx(Role::Client, "")),
        };
        let mut first = ServerHandshake::new(k.clone(), NS.into());
        first.on_message(hello(Role::Client, None));
        assert!(matches!(
            first.on_message(recorded.clone()),
            ServerStep::Accept { .. }
        ));
        let fresh = "3".repeat(64);
        let mut second = ServerHandshake::new(k, fresh);
        second.on_message(hello(Role::Client, None));
        assert!(matches!(second.on_message(recorded), ServerStep::Reject(_)));
    }

    #[test]
    fn a_response_for_another_identity_fails() {
        let k = secret("shared secret 0123");
        let for_p1 = Body::Auth {
            nonce: NP.into(),
            mac: mac(&k, Prover::Peer, &ctx(Role::Participant, "p1")),
        };
        let mut s = ServerHandshake::new(k, NS.into());
        s.on_message(hello(Role::Participant, Some("p2")));
        assert!(matches!(s.on_message(for_p1), ServerStep::Reject(_)));
    }

    #[test]
    fn the_server_proof_cannot_be_reflected_as_a_response() {
        let k = secret("shared secret 0123");
        let c = ctx(Role::Client, "");
        let server_proof = mac(&k, Prover::Server, &c);
        let mut s = ServerHandshake::new(k, NS.into());
        s.on_message(hello(Role::Client, None));
        let step = s.on_message(Body::Auth {
            nonce: NP.into(),
            mac: server_proof,
        });
        assert!(matches!(step, ServerStep::Reject(_)));
    }

    #[test]
    fn anything_but_hello_then_auth_is_unauthorized() {
        let k = secret("shared secret 0123");
        let mut s = ServerHandshake::new(k.clone(), NS.into());
        let step = s.on_message(Body::Status);
        assert!(matches!(step, ServerStep::Reject(ref e) if e.code == ErrorCode::Unauthorized));
        let mut s = ServerHandshake::new(k.clone(), NS.into());
        s.on_message(hello(Role::Client, None));
        assert!(matches!(
            s.on_message(hello(Role::Client, None)),
            ServerStep::Reject(_)
        ));
        let mut s = ServerHandshake::new(k.clone(), NS.into());
        s.on_message(hello(Role::Client, None));
        let bad_nonce = Body::Auth {
            nonce: "".into(),
            mac: mac(
                &k,
                Prover::Peer,
                &Context {
                    peer_nonce: "",
                    ..ctx(Role::Client, "")
                },
            ),
        };
        assert!(matches!(s.on_message(bad_nonce), ServerStep::Reject(_)));
        let err = WireError::new(ErrorCode::InvalidJson, "x");
        assert!(
            matches!(s.on_invalid(&err), ServerStep::Reject(ref e) if e.code == ErrorCode::Unauthorized)
        );
        assert!(matches!(s.on_timeout(5), ServerStep::Reject(ref e) if e.message.contains("5 ms")));
    }

    #[test]
    fn a_peer_refuses_servers_that_skip_or_fake_authentication() {
        let k = secret("shared secret 0123");
        let mut p = PeerHandshake::new(k.clone(), Role::Client, None, NP.into());
        let welcome = Body::Welcome {
            state: "READY".into(),
        };
        assert!(
            matches!(p.on_message(&welcome), PeerStep::Fail(ref m) if m.contains("without a secret"))
        );
        let mut p = PeerHandshake::new(k.clone(), Role::Client, None, NP.into());
        p.on_message(&Body::Challenge { nonce: NS.into() });
        let fake = Body::Authenticated {
            mac: mac(
                &secret("not the secret 000"),
                Prover::Server,
                &ctx(Role::Client, ""),
            ),
        };
        assert!(matches!(p.on_message(&fake), PeerStep::Fail(_)));
        let mut p = PeerHandshake::new(k, Role::Client, None, NP.into());
        let refused = Body::Error {
            code: "unauthorized".into(),
            message: "no".into(),
            request_id: None,
        };
        assert!(
            matches!(p.on_message(&refused), PeerStep::Fail(ref m) if m.contains("unauthorized"))
        );
    }

    #[test]
    fn failure_log_is_rate_limited_per_window() {
        let mut l = FailureLog::new(10_000, 2);
        assert_eq!(
            l.record(0),
            LogDecision::Log {
                suppressed_before: 0
            }
        );
        assert_eq!(
            l.record(1),
            LogDecision::Log {
                suppressed_before: 0
            }
        );
        assert_eq!(l.record(2), LogDecision::Suppress);
        assert_eq!(l.record(9_999), LogDecision::Suppress);
        assert_eq!(
            l.record(10_000),
            LogDecision::Log {
                suppressed_before: 2
            }
        );
        assert_eq!(
            l.record(10_001),
            LogDecision::Log {
                suppressed_before: 0
            }
        );
    }
}

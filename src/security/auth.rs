//! Challenge-response authentication with keys per identity, as pure
//! functions and two small handshake state machines (server side, peer
//! side): messages in, messages out. No IO and no clock.
//!
//! The exchange (docs/PROTOCOL.md, section 3.4):
//!
//! ```text
//! peer   → server  hello {role, id, ...}
//! server → peer    challenge {nonce: Ns, participant_id?}   Ns: 32 fresh random bytes, hex
//! peer   → server  auth {nonce: Np, mac: HMAC(K_identity, "peer" context)}
//! server → peer    authenticated {mac: HMAC(K_identity, "server" context)}
//! server → peer    welcome ... (the protocol's own reply to hello)
//! ```
//!
//! Keys. The cluster has one master secret. Every identity has a key of its
//! own derived from it ([`Identity`], [`derive`]): each participant, the
//! clients, the operators, and each participant's admin port. The
//! coordinator holds the master secret and so can check anyone; a
//! participant or a client is given only its own key (`twopc keys derive`),
//! so it can prove only its own identity: a client key cannot register as a
//! participant, and a participant's key cannot act for another participant.
//! Operator actions need the operator key ([`permits`]).
//!
//! The MAC input binds the direction, the hello's role and id, and both
//! nonces, so a response is useless on another connection (fresh `Ns`), for
//! another identity, or reflected back as the server's proof. No key ever
//! crosses the wire. The only randomness (nonces, generated secrets) comes
//! from the two `fresh`/`random` helpers; the state machines take nonces as
//! arguments.

use crate::protocol::{Body, ErrorCode, ParticipantId, Role, WireError};
use hmac::{KeyInit, Mac};
use std::sync::Arc;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Bytes of randomness in a nonce (sent as twice as many hex digits).
pub const NONCE_BYTES: usize = 32;

/// Shortest accepted secret, in bytes: shorter ones are guessable.
pub const SECRET_MIN_BYTES: usize = 16;

/// Fewest different bytes in a master secret that is not refused as weak
/// (a run of one character is long enough, and guessable).
pub const SECRET_MIN_DISTINCT_BYTES: usize = 8;

/// First line of every MAC input; a new version of the exchange changes it.
const DOMAIN: &str = "twopc-auth-v2";

/// First word of a derived key's text, and first line of its derivation.
const KEY_DOMAIN: &str = "twopc-key-v1";

/// The hello `id` of a client that acts as an operator.
pub const OPERATOR_ID: &str = "operator";

/// Who a connection is, once authenticated; each has its own key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A participant, by its id.
    Participant(String),
    /// An operator on one participant's admin port (by the participant's id).
    Admin(String),
    /// A client: submits and reads.
    Client,
    /// An operator on the coordinator: also removes participants.
    Operator,
    /// A member of the coordinator group, on the members' Raft port.
    Member,
}

impl Identity {
    /// The two words naming the identity in a key's text.
    fn words(&self) -> (&'static str, &str) {
        match self {
            Identity::Participant(id) => ("participant", id),
            Identity::Admin(id) => ("admin", id),
            Identity::Client => ("client", "-"),
            Identity::Operator => ("operator", "-"),
            Identity::Member => ("member", "-"),
        }
    }

    fn from_words(kind: &str, id: &str) -> Result<Identity, IdentityError> {
        let named = |id: &str| {
            if crate::protocol::coordinator::valid_participant_id(id) {
                Ok(id.to_string())
            } else {
                Err(IdentityError::NotAParticipantId(id.to_string()))
            }
        };
        match (kind, id) {
            ("participant", id) => Ok(Identity::Participant(named(id)?)),
            ("admin", id) => Ok(Identity::Admin(named(id)?)),
            ("client", "-") => Ok(Identity::Client),
            ("operator", "-") => Ok(Identity::Operator),
            ("member", "-") => Ok(Identity::Member),
            _ => Err(IdentityError::Unknown {
                kind: kind.to_string(),
                id: id.to_string(),
            }),
        }
    }

    /// The identity a hello claims on the coordinator's port: a participant
    /// by its id; a client, or with id `operator` an operator.
    pub fn of_hello(role: Role, id: Option<&str>) -> Result<Identity, IdentityError> {
        match (role, id) {
            (Role::Participant, Some(id)) => Ok(Identity::Participant(id.to_string())),
            (Role::Participant, None) => Err(IdentityError::ParticipantWithoutId),
            (Role::Client, None) => Ok(Identity::Client),
            (Role::Client, Some(OPERATOR_ID)) => Ok(Identity::Operator),
            (Role::Client, Some(other)) => Err(IdentityError::ClientId(other.to_string())),
        }
    }
}

/// Why no identity could be read: from a derived key's text, or from what a
/// hello claims.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// A participant or admin identity whose id is not a participant id.
    #[error("`{0}` is not a participant id")]
    NotAParticipantId(String),
    /// Words that name no identity.
    #[error(
        "unknown identity `{kind} {id}`; expected participant ID, admin ID, client - or operator -"
    )]
    Unknown { kind: String, id: String },
    /// A participant's hello without its id.
    #[error("a participant hello needs an `id`")]
    ParticipantWithoutId,
    /// A client's hello with an id other than `operator`.
    #[error("a client hello's `id` is `{OPERATOR_ID}` or absent, not `{0}`")]
    ClientId(String),
    /// A participant hello on a participant's admin port.
    #[error("a participant's admin port takes operators (role client), not participants")]
    ParticipantOnAdminPort,
}

/// Why the text of a secret file or variable is no secret (see
/// [`Secret::from_text`]): give the master secret, or a key as
/// `twopc keys derive` prints it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Starts like a derived key but is not three words after the prefix.
    #[error(
        "a derived key reads `{KEY_DOMAIN} KIND ID HEX` on one line (as `twopc keys derive` prints it)"
    )]
    DerivedKeyShape,
    /// A derived key naming no identity.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A derived key whose key is not 64 hex digits.
    #[error("the key of a derived key is 64 hex digits")]
    DerivedKeyHex,
    /// A master secret shorter than [`SECRET_MIN_BYTES`]; holds its length.
    #[error(
        "the secret is {0} bytes long; use at least {SECRET_MIN_BYTES} \
         (for example the output of `openssl rand -hex 32`)"
    )]
    TooShort(usize),
}

/// A derived key asked to prove another identity than its own (or, for a
/// participant's, its admin port's).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the configured key is {held}'s, and cannot prove {wanted}; \
     derive that identity's key from the master secret with `twopc keys derive`"
)]
pub struct CannotProve {
    /// Whose key is held.
    pub held: Identity,
    /// The identity asked for.
    pub wanted: Identity,
}

/// [`Secret::derive_text`] with a derived key: only the master secret
/// derives keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("deriving a key needs the master secret, not a derived key")]
pub struct NeedsMaster;

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Participant(id) => write!(f, "participant {id}"),
            Identity::Admin(id) => write!(f, "the admin port of participant {id}"),
            Identity::Client => f.write_str("a client"),
            Identity::Operator => f.write_str("an operator"),
            Identity::Member => f.write_str("a coordinator group member"),
        }
    }
}

/// One identity's MAC key (32 bytes). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(not shown)")
    }
}

/// What a process holds (its `secret_file` or `TWOPC_SECRET`): the master
/// secret, or one identity's derived key. `Debug` never shows it; it is
/// never serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Held);

#[derive(Clone, PartialEq, Eq)]
enum Held {
    Master(Vec<u8>),
    Derived { identity: Identity, key: Key },
}

/// `identity`'s key under the master secret. A participant's admin port key
/// is derived from that participant's key, so the participant can check its
/// operators without holding the master secret.
pub fn derive(master: &[u8], identity: &Identity) -> Key {
    let under = |key: &[u8], kind: &str, id: &str| {
        Key(hmac_bytes(
            key,
            format!("{KEY_DOMAIN}\n{kind}\n{id}").as_bytes(),
        ))
    };
    match identity {
        Identity::Admin(id) => {
            let participant = derive(master, &Identity::Participant(id.clone()));
            under(&participant.0, "admin", id)
        }
        other => {
            let (kind, id) = other.words();
            under(master, kind, id)
        }
    }
}

impl Secret {
    /// A secret from the text of a secret file or variable: a derived key
    /// (`twopc-key-v1 KIND ID HEX`, as `twopc keys derive` prints it) or
    /// else the master secret. Surrounding whitespace (a trailing newline
    /// from `echo` or an editor) is not part of it.
    pub fn from_text(text: &str) -> Result<Secret, SecretError> {
        let t = text.trim();
        if let Some(rest) = t.strip_prefix(KEY_DOMAIN) {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let [kind, id, hexkey] = words[..] else {
                return Err(SecretError::DerivedKeyShape);
            };
            let identity = Identity::from_words(kind, id)?;
            let key = unhex(hexkey)
                .filter(|k| k.len() == 32)
                .ok_or(SecretError::DerivedKeyHex)?;
            return Ok(Secret(Held::Derived {
                identity,
                key: Key(key),
            }));
        }
        if t.len() < SECRET_MIN_BYTES {
            return Err(SecretError::TooShort(t.len()));
        }
        Ok(Secret(Held::Master(t.as_bytes().to_vec())))
    }

    /// A fresh random secret (64 hex digits), for throw-away local clusters.
    pub fn random_text() -> String {
        hex(&rand::random::<[u8; 32]>())
    }

    /// Why this master secret is too weak to run a server with, if it is:
    /// fewer than [`SECRET_MIN_DISTINCT_BYTES`] different bytes.
    pub fn weakness(&self) -> Option<String> {
        let Held::Master(m) = &self.0 else {
            return None;
        };
        let distinct = m.iter().collect::<std::collections::BTreeSet<_>>().len();
        (distinct < SECRET_MIN_DISTINCT_BYTES).then(|| {
            format!(
                "the secret has only {distinct} different characters; use at least \
                 {SECRET_MIN_DISTINCT_BYTES} (for example the output of `openssl rand -hex 32`)"
            )
        })
    }

    /// The identity of a derived key; `None` for the master secret.
    pub fn identity(&self) -> Option<&Identity> {
        match &self.0 {
            Held::Master(_) => None,
            Held::Derived { identity, .. } => Some(identity),
        }
    }

    /// Is this the master secret (which can act as anyone)?
    pub fn is_master(&self) -> bool {
        matches!(self.0, Held::Master(_))
    }

    /// Can this secret prove `identity`?
    pub fn can_prove(&self, identity: &Identity) -> bool {
        self.key_for(identity).is_ok()
    }

    /// The key that proves (or checks) `identity`: any key from the master
    /// secret; from a derived key, its own (and a participant's, its admin
    /// port's).
    pub fn key_for(&self, identity: &Identity) -> Result<Key, CannotProve> {
        match &self.0 {
            Held::Master(m) => Ok(derive(m, identity)),
            Held::Derived {
                identity: mine,
                key,
            } if mine == identity => Ok(key.clone()),
            Held::Derived {
                identity: Identity::Participant(p),
                key,
            } if *identity == Identity::Admin(p.clone()) => Ok(Key(hmac_bytes(
                &key.0,
                format!("{KEY_DOMAIN}\nadmin\n{p}").as_bytes(),
            ))),
            Held::Derived { identity: mine, .. } => Err(CannotProve {
                held: mine.clone(),
                wanted: identity.clone(),
            }),
        }
    }

    /// The text of `identity`'s derived key (`twopc keys derive`); needs the
    /// master secret.
    pub fn derive_text(&self, identity: &Identity) -> Result<String, NeedsMaster> {
        let Held::Master(m) = &self.0 else {
            return Err(NeedsMaster);
        };
        let key = derive(m, identity);
        let (kind, id) = identity.words();
        Ok(format!("{KEY_DOMAIN} {kind} {id} {}", hex(&key.0)))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Held::Master(_) => f.write_str("Secret(master, not shown)"),
            Held::Derived { identity, .. } => write!(f, "Secret({identity}'s key, not shown)"),
        }
    }
}

/// May `identity` send `body`? Operator actions need an operator; with no
/// authentication configured there is no identity and everything is allowed.
pub fn permits(identity: &Identity, body: &Body) -> Result<(), WireError> {
    let operator_only = matches!(
        body,
        Body::ParticipantRemove { .. } | Body::GroupChange { .. }
    );
    if operator_only && *identity != Identity::Operator {
        return Err(unauthorized(format!(
            "`{}` needs the operator key; this connection authenticated as {identity}",
            body.message_type()
        )));
    }
    Ok(())
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
    /// The hello's `id` (participants, operators), empty for clients.
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

/// HMAC-SHA256 keyed with `key`, over `input`.
fn hmac_over(key: &[u8], input: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(input);
    m
}

fn hmac_bytes(key: &[u8], input: &[u8]) -> Vec<u8> {
    hmac_over(key, input).finalize().into_bytes().to_vec()
}

/// HMAC-SHA256 of `input` under `key`, as 64 lowercase hex digits.
/// Every MAC of twopc goes through here; callers build the input.
pub(crate) fn hmac_hex(key: &Key, input: &[u8]) -> String {
    hex(&hmac_bytes(&key.0, input))
}

/// Does `mac_hex` match the HMAC of `input`? The comparison of the MAC
/// bytes is constant-time; text that is not 64 hex digits never matches.
pub(crate) fn hmac_verify(key: &Key, input: &[u8], mac_hex: &str) -> bool {
    match unhex(mac_hex) {
        Some(bytes) if bytes.len() == 32 => hmac_over(&key.0, input).verify_slice(&bytes).is_ok(),
        _ => false,
    }
}

/// HMAC-SHA256 of the context, as 64 lowercase hex digits.
pub fn mac(key: &Key, prover: Prover, ctx: &Context<'_>) -> String {
    hmac_hex(key, &mac_input(prover, ctx))
}

/// Does `mac_hex` match? See [`hmac_verify`].
pub fn verify(key: &Key, prover: Prover, ctx: &Context<'_>, mac_hex: &str) -> bool {
    hmac_verify(key, &mac_input(prover, ctx), mac_hex)
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

/// Which port a server handshake runs on: it decides whose key a hello
/// must prove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Port {
    /// The coordinator's port: participants, clients and operators.
    Coordinator,
    /// A participant's admin port (its id): every peer is an operator of it.
    ParticipantAdmin(String),
}

impl Port {
    fn identity_of(&self, role: Role, id: Option<&str>) -> Result<Identity, IdentityError> {
        match (self, role) {
            (Port::Coordinator, _) => Identity::of_hello(role, id),
            (Port::ParticipantAdmin(me), Role::Client) => Ok(Identity::Admin(me.clone())),
            (Port::ParticipantAdmin(_), Role::Participant) => {
                Err(IdentityError::ParticipantOnAdminPort)
            }
        }
    }
}

/// What the server does with a handshake message.
#[derive(Debug, PartialEq)]
pub enum ServerStep {
    /// Send this and wait for the next message.
    Reply(Body),
    /// Authenticated as `identity`: send `reply`, then hand `hello` to the
    /// protocol.
    Accept {
        reply: Body,
        hello: Body,
        identity: Identity,
    },
    /// Send this `unauthorized` error and close the connection.
    Reject(WireError),
}

/// The server side of one connection's authentication.
#[derive(Debug)]
pub struct ServerHandshake {
    secret: Arc<Secret>,
    port: Port,
    nonce: String,
    hello: Option<Body>,
    /// Why the last `Reject` was given, as a fixed word (metrics).
    rejected: &'static str,
}

impl ServerHandshake {
    /// `nonce` must be fresh for this connection (see [`fresh_nonce`]).
    pub fn new(secret: Arc<Secret>, port: Port, nonce: String) -> ServerHandshake {
        ServerHandshake {
            secret,
            port,
            nonce,
            hello: None,
            rejected: "",
        }
    }

    /// The next message from the peer.
    pub fn on_message(&mut self, body: Body) -> ServerStep {
        let Some(hello) = &self.hello else {
            return match body {
                Body::Hello { .. } => {
                    self.hello = Some(body);
                    let participant_id = match &self.port {
                        Port::Coordinator => None,
                        Port::ParticipantAdmin(me) => Some(ParticipantId(me.clone())),
                    };
                    ServerStep::Reply(Body::Challenge {
                        nonce: self.nonce.clone(),
                        participant_id,
                    })
                }
                other => {
                    self.rejected = "no_hello";
                    ServerStep::Reject(unauthorized(format!(
                        "`{}` before authentication; this server requires the shared secret: \
                         say hello, then answer the challenge",
                        other.message_type()
                    )))
                }
            };
        };
        let Body::Auth {
            nonce: peer_nonce,
            mac: peer_mac,
        } = body
        else {
            self.rejected = "no_auth";
            return ServerStep::Reject(unauthorized(format!(
                "expected `auth` answering the challenge, got `{}`; \
                 give the peer its key (secret_file or TWOPC_SECRET)",
                body.message_type()
            )));
        };
        let Body::Hello { role, id, .. } = hello else {
            unreachable!("only a hello is stored")
        };
        let id = id.as_ref().map(|p| p.0.as_str());
        let identity = match self.port.identity_of(*role, id) {
            Ok(i) => i,
            Err(why) => {
                self.rejected = "bad_identity";
                return ServerStep::Reject(unauthorized(why.to_string()));
            }
        };
        let key = match self.secret.key_for(&identity) {
            Ok(k) => k,
            Err(why) => {
                self.rejected = "no_key";
                return ServerStep::Reject(unauthorized(format!(
                    "this server cannot check {identity}: {why}"
                )));
            }
        };
        let ctx = Context {
            role: *role,
            id: id.unwrap_or(""),
            server_nonce: &self.nonce,
            peer_nonce: &peer_nonce,
        };
        if !is_nonce(&peer_nonce) || !verify(&key, Prover::Peer, &ctx, &peer_mac) {
            self.rejected = "wrong_mac";
            return ServerStep::Reject(unauthorized(format!(
                "authentication as {identity} failed: the response does not match this \
                 connection's challenge under {identity}'s key; check that the peer has the \
                 key derived for it from this cluster's master secret"
            )));
        }
        let reply = Body::Authenticated {
            mac: mac(&key, Prover::Server, &ctx),
        };
        match self.hello.take() {
            Some(hello) => ServerStep::Accept {
                reply,
                hello,
                identity,
            },
            None => unreachable!("checked above"),
        }
    }

    /// Why the last `Reject` of [`ServerHandshake::on_message`] was given:
    /// `no_hello`, `no_auth`, `bad_identity`, `no_key` or `wrong_mac`.
    pub fn rejected_because(&self) -> &'static str {
        self.rejected
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
    /// The server's nonce and the key this connection proves, once the
    /// challenge came.
    challenged: Option<(String, Key)>,
}

impl PeerHandshake {
    /// `role` and `id` must be those of the `hello` sent; `nonce` fresh.
    pub fn new(secret: Arc<Secret>, role: Role, id: Option<&str>, nonce: String) -> PeerHandshake {
        PeerHandshake {
            secret,
            role,
            id: id.unwrap_or("").to_string(),
            nonce,
            challenged: None,
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

    /// Whose key this hello proves, given the challenge's participant id.
    fn identity(&self, admin_of: Option<&ParticipantId>) -> Result<Identity, IdentityError> {
        match (self.role, admin_of) {
            (Role::Client, Some(p)) => Ok(Identity::Admin(p.0.clone())),
            _ => Identity::of_hello(self.role, (!self.id.is_empty()).then_some(&*self.id)),
        }
    }

    /// The next message from the server.
    pub fn on_message(&mut self, body: &Body) -> PeerStep {
        match (&self.challenged, body) {
            (_, Body::Error { code, message, .. }) => PeerStep::Fail(format!(
                "the server refused the connection ({code}): {message}"
            )),
            (
                None,
                Body::Challenge {
                    nonce,
                    participant_id,
                },
            ) if is_nonce(nonce) => {
                let key = match self.identity(participant_id.as_ref()) {
                    Ok(i) => self.secret.key_for(&i).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let key = match key {
                    Ok(k) => k,
                    Err(why) => return PeerStep::Fail(why),
                };
                let mac = mac(&key, Prover::Peer, &self.ctx(nonce));
                self.challenged = Some((nonce.clone(), key));
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
            (Some((ns, key)), Body::Authenticated { mac }) => {
                if verify(key, Prover::Server, &self.ctx(ns), mac) {
                    PeerStep::Done
                } else {
                    PeerStep::Fail(
                        "the server could not prove that it knows this cluster's master secret; \
                         check that both sides belong to the same cluster"
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

    const MASTER: &str = "shared secret 0123";

    fn secret(s: &str) -> Arc<Secret> {
        Arc::new(Secret::from_text(s).unwrap())
    }

    /// The derived key of `identity` under `master`, as a peer would hold it.
    fn derived(master: &str, identity: &Identity) -> Arc<Secret> {
        secret(&secret(master).derive_text(identity).unwrap())
    }

    fn key(master: &str, identity: &Identity) -> Key {
        secret(master).key_for(identity).unwrap()
    }

    fn p(id: &str) -> Identity {
        Identity::Participant(id.into())
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
            format!("twopc-auth-v2\npeer\nparticipant\np1\n{NS}\n{NP}")
        );
    }

    /// The example of docs/PROTOCOL.md section 3.6, byte for byte.
    #[test]
    fn documented_example() {
        let master = Secret::from_text("example-secret-0123456789abcdef").unwrap();
        assert_eq!(
            master.derive_text(&Identity::Client).unwrap(),
            "twopc-key-v1 client - a0e9f4e53f5e6a0eddf9635237d2b359d7e6526cae8bd4af684f8d99825e7c65"
        );
        let k = master.key_for(&Identity::Client).unwrap();
        let (ns, np) = ("11".repeat(32), "22".repeat(32));
        let c = Context {
            role: Role::Client,
            id: "",
            server_nonce: &ns,
            peer_nonce: &np,
        };
        // The same figures come from `openssl dgst -sha256 -mac HMAC -macopt hexkey:KEY`.
        assert_eq!(
            mac(&k, Prover::Peer, &c),
            "b2666ef7e84991ab136858917c95ff08e35af3e478fafea8c391c32fda050e56"
        );
        assert_eq!(
            mac(&k, Prover::Server, &c),
            "9d0d7f6eb012c0f77dc3680eb281932c6955ab018aad161006c1d80963e001be"
        );
    }

    #[test]
    fn mac_matches_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            hex(&hmac_bytes(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verify_accepts_only_the_exact_mac() {
        let k = key(MASTER, &Identity::Client);
        let c = ctx(Role::Client, "");
        let m = mac(&k, Prover::Peer, &c);
        assert_eq!(m.len(), 64);
        assert!(verify(&k, Prover::Peer, &c, &m));
        assert!(verify(&k, Prover::Peer, &c, &m.to_uppercase()));
        // Another key, direction, role, id or nonce: no match.
        assert!(!verify(
            &key(MASTER, &Identity::Operator),
            Prover::Peer,
            &c,
            &m
        ));
        assert!(!verify(
            &key("another secret, 16+", &Identity::Client),
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
            .to_string()
            .contains("at least 16"));
        assert_eq!(
            Secret::from_text("  0123456789abcdef\n").unwrap(),
            Secret::from_text("0123456789abcdef").unwrap()
        );
        assert_eq!(
            format!("{:?}", Secret::from_text("0123456789abcdef").unwrap()),
            "Secret(master, not shown)"
        );
        assert!(Secret::from_text(&Secret::random_text()).is_ok());
    }

    #[test]
    fn weak_master_secrets_are_named() {
        let run = Secret::from_text(&"a".repeat(32)).unwrap();
        assert!(run.weakness().unwrap().contains("only 1 different"));
        let seven = Secret::from_text("abcdefgabcdefgabcdefg").unwrap();
        assert!(seven.weakness().is_some());
        assert_eq!(
            Secret::from_text(&Secret::random_text())
                .unwrap()
                .weakness(),
            None
        );
        // A derived key is random by construction.
        assert_eq!(derived(MASTER, &Identity::Client).weakness(), None);
    }

    #[test]
    fn derived_keys_prove_their_own_identity_only() {
        let master = secret(MASTER);
        let p1 = derived(MASTER, &p("p1"));
        assert_eq!(p1.identity(), Some(&p("p1")));
        assert!(!p1.is_master() && master.is_master());
        assert_eq!(format!("{p1:?}"), "Secret(participant p1's key, not shown)");
        // Its own key, and its admin port's: the same as from the master.
        assert_eq!(p1.key_for(&p("p1")), master.key_for(&p("p1")));
        let admin = Identity::Admin("p1".into());
        assert_eq!(p1.key_for(&admin), master.key_for(&admin));
        for other in [
            p("p2"),
            Identity::Admin("p2".into()),
            Identity::Client,
            Identity::Operator,
        ] {
            let e = p1.key_for(&other).unwrap_err().to_string();
            assert!(
                e.contains("participant p1's") && e.contains("twopc keys derive"),
                "{e}"
            );
        }
        let client = derived(MASTER, &Identity::Client);
        assert!(client.can_prove(&Identity::Client));
        assert!(!client.can_prove(&Identity::Operator) && !client.can_prove(&p("p1")));
        // Every identity's key differs.
        let all = [
            p("p1"),
            p("p2"),
            Identity::Admin("p1".into()),
            Identity::Client,
            Identity::Operator,
        ];
        let keys: std::collections::HashSet<Vec<u8>> =
            all.iter().map(|i| master.key_for(i).unwrap().0).collect();
        assert_eq!(keys.len(), all.len());
        // Only the master secret derives.
        assert!(p1.derive_text(&p("p1")).is_err());
    }

    #[test]
    fn malformed_derived_keys_are_refused() {
        for (text, want) in [
            ("twopc-key-v1 participant p1", "one line"),
            ("twopc-key-v1 participant p1 abcd", "64 hex"),
            (
                &format!("twopc-key-v1 wizard - {}", "ab".repeat(32)),
                "unknown identity",
            ),
            (
                &format!("twopc-key-v1 participant a/b {}", "ab".repeat(32)),
                "not a participant id",
            ),
            (
                &format!("twopc-key-v1 client x {}", "ab".repeat(32)),
                "unknown identity",
            ),
        ] {
            let e = Secret::from_text(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn nonces_are_fresh_and_well_formed() {
        let (a, b) = (fresh_nonce(), fresh_nonce());
        assert!(is_nonce(&a) && is_nonce(&b));
        assert_ne!(a, b);
        assert!(!is_nonce("abc") && !is_nonce(&"g".repeat(64)));
    }

    /// Run a full exchange between the two state machines: a peer holding
    /// `peer_secret` says hello as (`role`, `id`) to a server holding
    /// `server_secret` on `port`. Returns the server's last step and the
    /// peer's answer to it.
    fn exchange_as(
        server_secret: Arc<Secret>,
        port: Port,
        peer_secret: Arc<Secret>,
        role: Role,
        id: Option<&str>,
    ) -> (ServerStep, Option<PeerStep>) {
        let mut server = ServerHandshake::new(server_secret, port.clone(), NS.into());
        let mut peer = PeerHandshake::new(peer_secret, role, id, NP.into());
        let challenge = match server.on_message(hello(role, id)) {
            ServerStep::Reply(b) => b,
            other => panic!("{other:?}"),
        };
        let admin_of = match &port {
            Port::Coordinator => None,
            Port::ParticipantAdmin(me) => Some(ParticipantId(me.clone())),
        };
        assert_eq!(
            challenge,
            Body::Challenge {
                nonce: NS.into(),
                participant_id: admin_of
            }
        );
        let auth = match peer.on_message(&challenge) {
            PeerStep::Reply(b) => b,
            other => return (ServerStep::Reply(Body::Status), Some(other)),
        };
        match server.on_message(auth) {
            ServerStep::Accept {
                reply,
                hello: h,
                identity,
            } => {
                assert_eq!(h, hello(role, id));
                (
                    ServerStep::Accept {
                        reply: reply.clone(),
                        hello: h,
                        identity,
                    },
                    Some(peer.on_message(&reply)),
                )
            }
            other => (other, None),
        }
    }

    fn exchange(server_secret: &str, peer_secret: &str) -> (ServerStep, Option<PeerStep>) {
        exchange_as(
            secret(server_secret),
            Port::Coordinator,
            secret(peer_secret),
            Role::Participant,
            Some("p1"),
        )
    }

    fn accepted_as(step: &ServerStep) -> Option<&Identity> {
        match step {
            ServerStep::Accept { identity, .. } => Some(identity),
            _ => None,
        }
    }

    #[test]
    fn same_secret_authenticates_both_ways() {
        let (server, peer) = exchange(MASTER, MASTER);
        assert_eq!(accepted_as(&server), Some(&p("p1")));
        assert_eq!(peer, Some(PeerStep::Done));
    }

    #[test]
    fn each_identity_authenticates_with_its_own_derived_key() {
        let cases: [(Arc<Secret>, Role, Option<&str>, Identity); 3] = [
            (
                derived(MASTER, &p("p1")),
                Role::Participant,
                Some("p1"),
                p("p1"),
            ),
            (
                derived(MASTER, &Identity::Client),
                Role::Client,
                None,
                Identity::Client,
            ),
            (
                derived(MASTER, &Identity::Operator),
                Role::Client,
                Some(OPERATOR_ID),
                Identity::Operator,
            ),
        ];
        for (k, role, id, want) in cases {
            let (server, peer) = exchange_as(secret(MASTER), Port::Coordinator, k, role, id);
            assert_eq!(accepted_as(&server), Some(&want));
            assert_eq!(peer, Some(PeerStep::Done));
        }
    }

    #[test]
    fn a_key_cannot_claim_another_identity() {
        // A client key saying hello as participant p1, p1's key as p2 or as
        // an operator: the peer cannot even answer the challenge.
        for (k, role, id) in [
            (
                derived(MASTER, &Identity::Client),
                Role::Participant,
                Some("p1"),
            ),
            (derived(MASTER, &p("p1")), Role::Participant, Some("p2")),
            (derived(MASTER, &p("p1")), Role::Client, Some(OPERATOR_ID)),
            (
                derived(MASTER, &Identity::Client),
                Role::Client,
                Some(OPERATOR_ID),
            ),
        ] {
            let (_, peer) = exchange_as(secret(MASTER), Port::Coordinator, k, role, id);
            assert!(
                matches!(peer, Some(PeerStep::Fail(ref m)) if m.contains("cannot prove")),
                "{role:?} {id:?}: {peer:?}"
            );
        }
        // A peer that MACs with the client key under a participant hello
        // (a forged client) is refused by the server.
        let client = key(MASTER, &Identity::Client);
        let forged = Body::Auth {
            nonce: NP.into(),
            mac: mac(&client, Prover::Peer, &ctx(Role::Participant, "p1")),
        };
        let mut s = ServerHandshake::new(secret(MASTER), Port::Coordinator, NS.into());
        s.on_message(hello(Role::Participant, Some("p1")));
        match s.on_message(forged) {
            ServerStep::Reject(e) => {
                assert_eq!(e.code, ErrorCode::Unauthorized);
                assert!(
                    e.message.contains("as participant p1 failed"),
                    "{}",
                    e.message
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_client_hello_names_operator_or_nothing() {
        let mut s = ServerHandshake::new(secret(MASTER), Port::Coordinator, NS.into());
        s.on_message(hello(Role::Client, Some("root")));
        let step = s.on_message(Body::Auth {
            nonce: NP.into(),
            mac: "00".repeat(32),
        });
        assert!(
            matches!(step, ServerStep::Reject(ref e) if e.message.contains("`operator` or absent")),
            "{step:?}"
        );
    }

    #[test]
    fn a_participant_admin_port_takes_its_operators() {
        let port = Port::ParticipantAdmin("p1".into());
        let admin = Identity::Admin("p1".into());
        // The master secret, p1's admin key, and p1's own key open it.
        for k in [
            secret(MASTER),
            derived(MASTER, &admin),
            derived(MASTER, &p("p1")),
        ] {
            let (server, peer) = exchange_as(
                derived(MASTER, &p("p1")),
                port.clone(),
                k,
                Role::Client,
                None,
            );
            assert_eq!(accepted_as(&server), Some(&admin));
            assert_eq!(peer, Some(PeerStep::Done));
        }
        // A client key, the operator key or another participant's do not.
        for k in [
            derived(MASTER, &Identity::Client),
            derived(MASTER, &Identity::Operator),
            derived(MASTER, &p("p2")),
        ] {
            let (_, peer) = exchange_as(
                derived(MASTER, &p("p1")),
                port.clone(),
                k,
                Role::Client,
                None,
            );
            assert!(matches!(peer, Some(PeerStep::Fail(_))), "{peer:?}");
        }
    }

    #[test]
    fn operator_actions_need_the_operator() {
        let remove = Body::ParticipantRemove {
            id: ParticipantId::from("p2"),
            force: false,
        };
        assert!(permits(&Identity::Operator, &remove).is_ok());
        for i in [Identity::Client, p("p1")] {
            let e = permits(&i, &remove).unwrap_err();
            assert_eq!(e.code, ErrorCode::Unauthorized);
            assert!(e.message.contains("operator key"), "{}", e.message);
        }
        assert!(permits(&Identity::Client, &Body::Status).is_ok());
    }

    #[test]
    fn wrong_secret_is_unauthorized() {
        match exchange(MASTER, "wrong secret 01234").0 {
            ServerStep::Reject(e) => {
                assert_eq!(e.code, ErrorCode::Unauthorized);
                assert!(e.message.contains("master secret"), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_replayed_response_fails_against_a_fresh_nonce() {
        let k = key(MASTER, &Identity::Client);
        // An eavesdropper recorded this answer to challenge NS.
        let recorded = Body::Auth {
            nonce: NP.into(),
            mac: mac(&k, Prover::Peer, &ctx(Role::Client, "")),
        };
        let mut first = ServerHandshake::new(secret(MASTER), Port::Coordinator, NS.into());
        first.on_message(hello(Role::Client, None));
        assert!(matches!(
            first.on_message(recorded.clone()),
            ServerStep::Accept { .. }
        ));
        let fresh = "3".repeat(64);
        let mut second = ServerHandshake::new(secret(MASTER), Port::Coordinator, fresh);
        second.on_message(hello(Role::Client, None));
        assert!(matches!(second.on_message(recorded), ServerStep::Reject(_)));
    }

    #[test]
    fn a_response_for_another_identity_fails() {
        let for_p1 = Body::Auth {
            nonce: NP.into(),
            mac: mac(
                &key(MASTER, &p("p1")),
                Prover::Peer,
                &ctx(Role::Participant, "p1"),
            ),
        };
        let mut s = ServerHandshake::new(secret(MASTER), Port::Coordinator, NS.into());
        s.on_message(hello(Role::Participant, Some("p2")));
        assert!(matches!(s.on_message(for_p1), ServerStep::Reject(_)));
    }

    #[test]
    fn the_server_proof_cannot_be_reflected_as_a_response() {
        let k = key(MASTER, &Identity::Client);
        let c = ctx(Role::Client, "");
        let server_proof = mac(&k, Prover::Server, &c);
        let mut s = ServerHandshake::new(secret(MASTER), Port::Coordinator, NS.into());
        s.on_message(hello(Role::Client, None));
        let step = s.on_message(Body::Auth {
            nonce: NP.into(),
            mac: server_proof,
        });
        assert!(matches!(step, ServerStep::Reject(_)));
    }

    #[test]
    fn anything_but_hello_then_auth_is_unauthorized() {
        let new = || ServerHandshake::new(secret(MASTER), Port::Coordinator, NS.into());
        let mut s = new();
        let step = s.on_message(Body::Status);
        assert!(matches!(step, ServerStep::Reject(ref e) if e.code == ErrorCode::Unauthorized));
        let mut s = new();
        s.on_message(hello(Role::Client, None));
        assert!(matches!(
            s.on_message(hello(Role::Client, None)),
            ServerStep::Reject(_)
        ));
        let mut s = new();
        s.on_message(hello(Role::Client, None));
        let bad_nonce = Body::Auth {
            nonce: "".into(),
            mac: mac(
                &key(MASTER, &Identity::Client),
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
        let k = secret(MASTER);
        let mut pe = PeerHandshake::new(k.clone(), Role::Client, None, NP.into());
        let welcome = Body::Welcome {
            state: "READY".into(),
            term: None,
        };
        assert!(
            matches!(pe.on_message(&welcome), PeerStep::Fail(ref m) if m.contains("without a secret"))
        );
        let mut pe = PeerHandshake::new(k.clone(), Role::Client, None, NP.into());
        pe.on_message(&Body::Challenge {
            nonce: NS.into(),
            participant_id: None,
        });
        let fake = Body::Authenticated {
            mac: mac(
                &key("not the secret 000", &Identity::Client),
                Prover::Server,
                &ctx(Role::Client, ""),
            ),
        };
        assert!(matches!(pe.on_message(&fake), PeerStep::Fail(_)));
        let mut pe = PeerHandshake::new(k, Role::Client, None, NP.into());
        let refused = Body::Error {
            code: ErrorCode::Unauthorized.into(),
            message: "no".into(),
            request_id: None,
        };
        assert!(
            matches!(pe.on_message(&refused), PeerStep::Fail(ref m) if m.contains("unauthorized"))
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

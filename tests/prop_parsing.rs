//! Property tests for everything in twopc that parses bytes a peer or a disk
//! can influence: wire messages (`Message::decode`), frames (`net::codec` and
//! `net::read_next`), log records (`wal::decode_record`, `wal::scan`), kv
//! operations (`KvStore::parse_ops`), and snapshot splitting
//! (`wal::snapshot_records`). Each parser must never panic, must bound what it
//! allocates, must reject damage with a stable error, and must read back
//! exactly what its encoder wrote.
//!
//! Runs are deterministic: the RNG seed is fixed (override it with
//! `PROPTEST_RNG_SEED=<u64>` to explore) and failures are not persisted, so
//! nothing is written into the source tree. Proptest prints the shrunk failing
//! input. The `regression_*` tests at the end pin bugs the properties found
//! (all fixed), each reduced to its smallest input.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{RngAlgorithm, RngSeed, TestCaseResult, TestRunner};
use serde_json::{json, Map, Number, Value};
use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::{Decoder, Encoder, FramedRead};
use twopc::net::{codec, read_next, Inbound};
use twopc::protocol::message::{WireCode, MESSAGE_TYPES};
use twopc::protocol::{
    Body, Decision, ErrorCode, Heuristic, HeuristicKind, Message, Outcome, ParticipantId, Record,
    Role, SubmitRequest, TxnId, Vote, WireError,
};
use twopc::resource::kv::{KvStore, Op, KEY_MAX_BYTES, OPS_MAX};
use twopc::wal::{
    decode_record, encode_record, scan, snapshot_records, Decoded, HEADER_BYTES, RECORD_MAX_BYTES,
    SNAPSHOT_CHUNK_BYTES,
};

/// Seed used unless `PROPTEST_RNG_SEED` is set: every run explores the same
/// cases, so a failure in CI replays on a laptop.
const SEED: u64 = 0x7c0_2b1c_5eed;

/// A fixed-seed configuration running `cases` cases, persisting nothing.
fn config(cases: u32) -> ProptestConfig {
    // `default()` reads the PROPTEST_* environment variables.
    let base = ProptestConfig::default();
    let rng_seed = match base.rng_seed {
        RngSeed::Random => RngSeed::Fixed(SEED),
        fixed => fixed,
    };
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed,
        ..base
    }
}

/// Run `property` on `cases` inputs drawn from `strategy`; on failure, panic
/// with the shrunk input and the seed.
fn check<S>(cases: u32, strategy: S, property: impl Fn(S::Value) -> TestCaseResult)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let config = config(cases);
    let seed = config.rng_seed;
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, property) {
        panic!("{e}\nrng seed: {seed:?} (set PROPTEST_RNG_SEED=<u64> to run others)");
    }
}

// ---------------------------------------------------------------------------
// Generators shared by every section
// ---------------------------------------------------------------------------

/// Characters that stress JSON escaping and UTF-8 handling.
const AWKWARD_CHARS: &[char] = &[
    '"',
    '\\',
    '/',
    '\u{0}',
    '\u{1}',
    '\n',
    '\u{1f}',
    '\u{7f}',
    '\u{2028}',
    '\u{feff}',
    'é',
    '\u{10ffff}',
    '😀',
];

/// Arbitrary strings: plain identifiers, any Unicode, and escape-heavy text.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[a-z0-9._-]{0,12}",
        2 => vec(any::<char>(), 0..24).prop_map(String::from_iter),
        1 => vec(select(AWKWARD_CHARS), 0..10).prop_map(String::from_iter),
    ]
    .boxed()
}

fn nonempty_text() -> BoxedStrategy<String> {
    text().prop_filter("non-empty", |s| !s.is_empty()).boxed()
}

fn txn_id() -> BoxedStrategy<TxnId> {
    nonempty_text().prop_map(TxnId).boxed()
}

fn participant() -> BoxedStrategy<ParticipantId> {
    text().prop_map(ParticipantId).boxed()
}

fn participants() -> BoxedStrategy<Vec<ParticipantId>> {
    vec(participant(), 0..4).boxed()
}

fn decision() -> BoxedStrategy<Decision> {
    prop_oneof![Just(Decision::Commit), Just(Decision::Abort)].boxed()
}

fn vote() -> BoxedStrategy<Vote> {
    prop_oneof![Just(Vote::Commit), Just(Vote::Abort)].boxed()
}

fn heuristic() -> BoxedStrategy<Heuristic> {
    let kind = prop_oneof![Just(HeuristicKind::Mixed), Just(HeuristicKind::Hazard)];
    (kind, text())
        .prop_map(|(kind, detail)| Heuristic { kind, detail })
        .boxed()
}

/// Finite floats of every magnitude (JSON has no NaN or infinity) that
/// serde_json reads back exactly; the others are pinned by
/// `regression_floats_change_when_read_back`.
fn finite_f64() -> BoxedStrategy<f64> {
    use proptest::num::f64 as float;
    (float::POSITIVE | float::NEGATIVE | float::NORMAL | float::SUBNORMAL | float::ZERO)
        .prop_filter("serde_json reads it back exactly", |f| {
            serde_json::to_string(f)
                .ok()
                .and_then(|s| serde_json::from_str::<f64>(&s).ok())
                == Some(*f)
        })
        .boxed()
}

fn json_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_f64().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ]
    .boxed()
}

/// JSON trees of depth at most 4.
fn json_value() -> BoxedStrategy<Value> {
    json_leaf()
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Value::Array),
                vec((text(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

fn json_object() -> BoxedStrategy<Map<String, Value>> {
    vec((text(), json_value()), 0..6)
        .prop_map(|kv| kv.into_iter().collect())
        .boxed()
}

/// Values a payload field plausibly holds, mixed with arbitrary JSON.
fn payload_field_value() -> BoxedStrategy<Value> {
    let words = select(&["participant", "client", "commit", "abort", "in-doubt", ""][..]);
    prop_oneof![
        2 => json_value(),
        2 => words.prop_map(Value::from),
        1 => vec(text().prop_map(Value::String), 0..3).prop_map(Value::Array),
        1 => vec((text(), select(&["commit", "abort", "maybe"][..])), 0..3).prop_map(|v| {
            Value::Object(v.into_iter().map(|(k, d)| (k, Value::from(d))).collect())
        }),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------
// 1-3. Wire messages: `Message::decode` and `Body::encode`
// ---------------------------------------------------------------------------

/// Every `Body` variant with arbitrary contents, restricted to what the wire
/// can carry: transaction ids are non-empty and a `resolve` reason is not
/// blank (decode rejects both on purpose); `status_report` and `txn_info` carry
/// objects (a non-object is deliberately wrapped as `{"value": ...}`); a
/// vote's `result` is never `Some(null)` (see `regression_vote_commit_null_result`).
fn body() -> BoxedStrategy<Body> {
    let role = prop_oneof![Just(Role::Participant), Just(Role::Client)];
    let outcome = (
        decision(),
        vec((participant(), vote()), 0..4),
        proptest::option::of(text()),
        finite_f64(),
        proptest::option::of(any::<u64>()),
        vec((participant(), json_value()), 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(decision, votes, reason, duration_ms, request_id, results, repeated)| Outcome {
                decision,
                votes: votes.into_iter().collect(),
                reason,
                duration_ms,
                request_id,
                results: results.into_iter().collect(),
                repeated,
            },
        );
    let submit = (
        json_value(),
        proptest::option::of(participants()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(txn_id()),
        any::<bool>(),
    )
        .prop_map(
            |(data, participants, request_id, transaction_id, report_accepted)| SubmitRequest {
                data,
                participants,
                request_id,
                transaction_id,
                report_accepted,
            },
        );
    let result = proptest::option::of(json_value().prop_filter("not null", |v| !v.is_null()));
    let reason = text().prop_filter("not blank", |r| !r.trim().is_empty());
    prop_oneof![
        (role, proptest::option::of(participant()), any::<u32>()).prop_map(
            |(role, id, protocol_version)| Body::Hello {
                role,
                id,
                protocol_version,
            }
        ),
        (text(), proptest::option::of(any::<u64>()))
            .prop_map(|(state, term)| Body::Welcome { state, term }),
        (
            txn_id(),
            participants(),
            json_value(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(txn, participants, data, term)| Body::Prepare {
                txn,
                participants,
                data,
                term,
            }),
        (txn_id(), result).prop_map(|(txn, result)| Body::VoteCommit { txn, result }),
        (txn_id(), proptest::option::of(text()))
            .prop_map(|(txn, reason)| Body::VoteAbort { txn, reason }),
        (txn_id(), proptest::option::of(any::<u64>()))
            .prop_map(|(txn, term)| Body::Commit { txn, term }),
        (txn_id(), proptest::option::of(any::<u64>()))
            .prop_map(|(txn, term)| Body::Abort { txn, term }),
        (
            txn_id(),
            proptest::option::of(decision()),
            proptest::option::of(heuristic())
        )
            .prop_map(|(txn, decision, heuristic)| Body::Ack {
                txn,
                decision,
                heuristic
            }),
        txn_id().prop_map(|txn| Body::Query { txn }),
        (txn_id(), proptest::option::of(any::<u64>()))
            .prop_map(|(txn, request_id)| Body::Accepted { txn, request_id }),
        Just(Body::Heartbeat),
        Just(Body::HeartbeatAck),
        submit.prop_map(Body::Submit),
        (txn_id(), outcome).prop_map(|(txn, outcome)| Body::Outcome { txn, outcome }),
        Just(Body::Status),
        json_object().prop_map(|o| Body::StatusReport(Value::Object(o))),
        (text(), text(), proptest::option::of(any::<u64>())).prop_map(
            |(code, message, request_id)| Body::Error {
                code: WireCode::parse(&code),
                message,
                request_id,
            }
        ),
        (
            proptest::option::of(text()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(text())
        )
            .prop_map(|(state, limit, cursor)| Body::TxnList {
                state,
                limit,
                cursor
            }),
        txn_id().prop_map(|txn| Body::TxnShow { txn }),
        (text(), any::<bool>()).prop_map(|(id, force)| Body::ParticipantRemove {
            id: ParticipantId(id),
            force,
        }),
        (
            proptest::option::of(text()),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(add, remove)| Body::GroupChange { add, remove }),
        json_object().prop_map(|o| Body::TxnInfo(Value::Object(o))),
        (txn_id(), decision(), reason).prop_map(|(txn, decision, reason)| Body::Resolve {
            txn,
            decision,
            reason,
            operator: None,
        }),
        text().prop_map(|nonce| Body::Challenge {
            nonce,
            participant_id: None
        }),
        (text(), text()).prop_map(|(nonce, mac)| Body::Auth { nonce, mac }),
        text().prop_map(|mac| Body::Authenticated { mac }),
    ]
    .boxed()
}

/// Payload field names of the known message types, so that generated
/// messages reach the typed payload parsers, not only the envelope checks.
const PAYLOAD_FIELDS: &[&str] = &[
    "role",
    "id",
    "protocol_version",
    "state",
    "participants",
    "data",
    "result",
    "reason",
    "decision",
    "code",
    "message",
    "request_id",
    "votes",
    "duration_ms",
    "results",
    "value",
    "nonce",
    "mac",
];

/// JSON objects shaped like messages: a known (or arbitrary) `message_type`,
/// maybe a `transaction_id`, a payload with known field names, and maybe
/// extra or mistyped envelope fields.
fn message_like() -> BoxedStrategy<Value> {
    let message_type = prop_oneof![
        4 => select(MESSAGE_TYPES).prop_map(Value::from),
        1 => text().prop_map(Value::String),
        1 => json_value(),
    ];
    let payload = prop_oneof![
        4 => vec((select(PAYLOAD_FIELDS), payload_field_value()), 0..5).prop_map(|kv| {
            Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        }),
        1 => json_value(),
    ];
    let transaction_id = prop_oneof![
        2 => text().prop_map(Value::String),
        1 => json_value(),
    ];
    let timestamp = prop_oneof![
        3 => finite_f64().prop_map(Value::from),
        1 => json_value(),
    ];
    (
        proptest::option::of(message_type),
        proptest::option::of(transaction_id),
        proptest::option::of(payload),
        proptest::option::of(timestamp),
        proptest::option::of((text(), json_value())),
    )
        .prop_map(|(mt, txn, payload, ts, extra)| {
            let mut m = Map::new();
            let fields = [
                ("message_type", mt),
                ("transaction_id", txn),
                ("payload", payload),
                ("timestamp", ts),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    m.insert(k.to_string(), v);
                }
            }
            if let Some((k, v)) = extra {
                m.insert(k, v);
            }
            Value::Object(m)
        })
        .boxed()
}

/// Bytes of one frame: random bytes, message-like JSON, valid encodings with a
/// few bytes overwritten or cut short, and deeply nested brackets.
fn frame_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        2 => vec(any::<u8>(), 0..256),
        2 => message_like().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        2 => (body(), vec((any::<Index>(), any::<u8>()), 1..4)).prop_map(|(b, edits)| {
            let mut bytes = b.encode(0.0);
            for (i, x) in edits {
                let at = i.index(bytes.len());
                bytes[at] = x;
            }
            bytes
        }),
        1 => (body(), any::<Index>()).prop_map(|(b, cut)| {
            let bytes = b.encode(0.0);
            let at = cut.index(bytes.len());
            bytes[..at].to_vec()
        }),
        1 => (1usize..400, select(&["[", "{\"a\":", "{\"payload\":"][..]))
            .prop_map(|(n, open)| open.repeat(n).into_bytes()),
    ]
    .boxed()
}

/// The codes `Message::decode` may return; the others belong to the runtime.
const DECODE_CODES: &[ErrorCode] = &[
    ErrorCode::InvalidJson,
    ErrorCode::InvalidMessage,
    ErrorCode::UnknownMessageType,
];

/// Check the contract of `Message::decode` on `bytes`: no panic, a stable
/// error code that matches what is wrong, and a readable message. Whatever it
/// accepts must survive encode → decode unchanged.
fn check_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
    let as_json = serde_json::from_slice::<Value>(bytes);
    // The fast decoder answers what the reference decoder (JSON tree, then
    // typed) answers, error text included.
    prop_assert_eq!(Message::decode(bytes), Message::decode_exact(bytes));
    match Message::decode(bytes) {
        Ok(body) => {
            prop_assert!(matches!(as_json, Ok(Value::Object(_))));
            let again = Message::decode(&body.clone().encode(1.0));
            prop_assert_eq!(again, Ok(body));
        }
        Err(WireError { code, message }) => {
            prop_assert!(DECODE_CODES.contains(&code), "unexpected code {:?}", code);
            prop_assert!(!message.trim().is_empty());
            match as_json {
                Err(_) => prop_assert_eq!(code, ErrorCode::InvalidJson),
                Ok(Value::Object(o)) => {
                    prop_assert_ne!(code, ErrorCode::InvalidJson);
                    if code == ErrorCode::UnknownMessageType {
                        let mt = o.get("message_type").and_then(Value::as_str);
                        prop_assert!(mt.is_some_and(|t| !MESSAGE_TYPES.contains(&t)));
                    }
                }
                Ok(_) => prop_assert_eq!(code, ErrorCode::InvalidMessage),
            }
        }
    }
    Ok(())
}

#[test]
fn decode_handles_arbitrary_bytes() {
    check(512, frame_bytes(), |bytes| check_decode(&bytes));
}

#[test]
fn decode_handles_arbitrary_json() {
    check(512, prop_oneof![json_value(), message_like()], |value| {
        check_decode(&serde_json::to_vec(&value).expect("a Value serialises"))
    });
}

#[test]
fn every_body_round_trips() {
    check(512, (body(), finite_f64()), |(body, timestamp)| {
        let bytes = body.clone().encode(timestamp);
        // Written straight from the typed body, the frame is what writing
        // it as a `Message` (payload as a JSON tree) writes: the same fields
        // in the same order, payload keys sorted.
        let msg: Message = serde_json::from_slice(&bytes).expect("an encoded frame is a message");
        prop_assert_eq!(
            &bytes,
            &serde_json::to_vec(&msg).expect("a message serialises")
        );
        prop_assert_eq!(Message::decode(&bytes), Ok(body));
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// 4. Frames: `net::codec` and `net::read_next`
// ---------------------------------------------------------------------------

/// What a byte stream decodes to: its frames, and whether it ended in an
/// oversized-frame error (after which the stream is unusable).
#[derive(Debug, PartialEq)]
struct FrameStream {
    frames: Vec<Vec<u8>>,
    too_large: bool,
}

/// Reference model of the framing: 4-byte big-endian length, then payload.
fn model_frames(max_frame_bytes: usize, mut rest: &[u8]) -> FrameStream {
    let mut frames = Vec::new();
    loop {
        let Some((head, body)) = rest.split_first_chunk::<4>() else {
            return FrameStream {
                frames,
                too_large: false,
            };
        };
        let n = u32::from_be_bytes(*head) as usize;
        if n > max_frame_bytes {
            return FrameStream {
                frames,
                too_large: true,
            };
        }
        if body.len() < n {
            return FrameStream {
                frames,
                too_large: false,
            };
        }
        frames.push(body[..n].to_vec());
        rest = &body[n..];
    }
}

/// Feed `chunks` to `net::codec`, as `FramedRead` does, checking after every
/// call that the buffer never grew past what the input and the frame limit
/// justify (an untrusted length must not reserve memory).
fn codec_frames(max_frame_bytes: usize, chunks: &[&[u8]]) -> Result<FrameStream, TestCaseError> {
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    // Growth may double a buffer, hence the factor 2.
    let capacity_max = 2 * (max_frame_bytes + 4 + total) + 64;
    let mut codec = codec(max_frame_bytes);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let step = codec.decode(&mut buf);
            prop_assert!(
                buf.capacity() <= capacity_max,
                "buffer capacity {} > {}",
                buf.capacity(),
                capacity_max
            );
            match step {
                Ok(Some(frame)) => frames.push(frame.to_vec()),
                Ok(None) => break,
                Err(e) => {
                    prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                    return Ok(FrameStream {
                        frames,
                        too_large: true,
                    });
                }
            }
        }
    }
    Ok(FrameStream {
        frames,
        too_large: false,
    })
}

/// Cut `bytes` at the given points into consecutive chunks covering it.
fn split<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    points.extend([0, bytes.len()]);
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// One piece of a generated byte stream.
#[derive(Clone, Debug)]
enum Piece {
    /// A well-formed frame around these payload bytes.
    Frame(Vec<u8>),
    /// A length prefix above the limit (often 0xFFFFFFFF), without payload.
    Oversized(u32),
    /// Bytes with no framing at all.
    Garbage(Vec<u8>),
}

/// Stream pieces for a codec limited to `max_frame_bytes`; frame payloads
/// come from `payload`, clipped to the limit.
fn piece(max_frame_bytes: usize, payload: BoxedStrategy<Vec<u8>>) -> BoxedStrategy<Piece> {
    let over = max_frame_bytes as u32 + 1;
    prop_oneof![
        4 => payload.prop_map(move |mut p| {
            p.truncate(max_frame_bytes);
            Piece::Frame(p)
        }),
        1 => prop_oneof![Just(u32::MAX), over..=u32::MAX].prop_map(Piece::Oversized),
        1 => vec(any::<u8>(), 0..16).prop_map(Piece::Garbage),
    ]
    .boxed()
}

/// The bytes of `pieces`, frames encoded by the production encoder.
fn stream_bytes(max_frame_bytes: usize, pieces: &[Piece]) -> Vec<u8> {
    let mut enc = codec(max_frame_bytes);
    let mut out = BytesMut::new();
    for p in pieces {
        match p {
            Piece::Frame(payload) => enc
                .encode(Bytes::copy_from_slice(payload), &mut out)
                .expect("payload within the limit encodes"),
            Piece::Oversized(n) => out.extend_from_slice(&n.to_be_bytes()),
            Piece::Garbage(g) => out.extend_from_slice(g),
        }
    }
    out.to_vec()
}

/// An `AsyncRead` that returns the given chunks one read at a time, the way
/// TCP delivers segments.
struct ChunkedReader {
    chunks: VecDeque<Vec<u8>>,
}

impl AsyncRead for ChunkedReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut chunk) = self.chunks.pop_front() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            if n < chunk.len() {
                chunk.drain(..n);
                self.chunks.push_front(chunk);
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// `Inbound` in a comparable form.
#[derive(Debug, PartialEq)]
enum Item {
    Message(Body),
    Invalid(WireError),
    Broken(ErrorCode),
}

fn item(inbound: Inbound) -> Item {
    match inbound {
        Inbound::Message(b) => Item::Message(b),
        Inbound::Invalid(e) => Item::Invalid(e),
        Inbound::Broken(e) => Item::Broken(e.code),
    }
}

/// Arbitrary streams (oversized prefixes included) decode as the reference
/// model says, whatever the chunking, without reserving memory for a length
/// above the limit.
#[test]
fn codec_matches_model_in_any_chunking() {
    let case = (0usize..600).prop_flat_map(|max| {
        let pieces = vec(piece(max, vec(any::<u8>(), 0..300).boxed()), 0..6);
        let stream = prop_oneof![
            3 => pieces.prop_map(move |p| stream_bytes(max, &p)),
            1 => vec(any::<u8>(), 0..300),
        ];
        (Just(max), stream, vec(any::<Index>(), 0..8))
    });
    check(256, case, |(max, bytes, cuts)| {
        let expected = model_frames(max, &bytes);
        prop_assert_eq!(&codec_frames(max, &[&bytes])?, &expected);
        prop_assert_eq!(&codec_frames(max, &split(&bytes, &cuts))?, &expected);
        Ok(())
    });
}

#[test]
fn codec_reassembles_split_frames() {
    let case = (1usize..600).prop_flat_map(|max| {
        let payload = vec(any::<u8>(), 0..=max.min(300));
        (Just(max), vec(payload, 0..6), vec(any::<Index>(), 0..8))
    });
    check(256, case, |(max, payloads, cuts)| {
        let pieces: Vec<Piece> = payloads.iter().cloned().map(Piece::Frame).collect();
        let bytes = stream_bytes(max, &pieces);
        let expected = FrameStream {
            frames: payloads,
            too_large: false,
        };
        prop_assert_eq!(codec_frames(max, &split(&bytes, &cuts))?, expected);
        Ok(())
    });
}

/// `read_next` over a connection delivering arbitrary chunks yields what
/// `Message::decode` makes of each frame of the model, then `Broken` with
/// `frame_too_large` for an oversized prefix, or the end of the stream.
#[test]
fn read_next_matches_model() {
    let case = (16usize..2048).prop_flat_map(|max| {
        let pieces = vec(piece(max, frame_bytes()), 0..5);
        (Just(max), pieces, vec(any::<Index>(), 0..6))
    });
    check(256, case, |(max, pieces, cuts)| {
        let bytes = stream_bytes(max, &pieces);
        let model = model_frames(max, &bytes);
        let mut expected: Vec<Item> = model
            .frames
            .iter()
            .map(|f| match Message::decode(f) {
                Ok(b) => Item::Message(b),
                Err(e) => Item::Invalid(e),
            })
            .collect();
        if model.too_large {
            expected.push(Item::Broken(ErrorCode::FrameTooLarge));
        }
        let chunks = split(&bytes, &cuts)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        let mut reader = FramedRead::new(ChunkedReader { chunks }, codec(max));
        let got = futures::executor::block_on(async {
            let mut got = Vec::new();
            while let Some(inbound) = read_next(&mut reader, max).await {
                let it = item(inbound);
                let broken = matches!(it, Item::Broken(_));
                got.push(it);
                if broken {
                    break;
                }
            }
            got
        });
        prop_assert_eq!(got, expected);
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// 5. Log records: `wal::encode_record` and `wal::decode_record`
// ---------------------------------------------------------------------------

fn record() -> BoxedStrategy<Record> {
    let any_txn = text().prop_map(TxnId);
    let any_txn2 = any_txn.clone();
    prop_oneof![
        (any_txn.clone(), decision(), participants()).prop_map(|(txn, decision, participants)| {
            Record::Decision {
                txn,
                decision,
                participants,
                client_named: false,
            }
        }),
        any_txn.clone().prop_map(|txn| Record::End { txn }),
        (any_txn.clone(), participants(), json_value()).prop_map(|(txn, participants, state)| {
            Record::Prepared {
                txn,
                participants,
                state,
            }
        }),
        (any_txn.clone(), decision(), proptest::option::of(text())).prop_map(
            |(txn, decision, heuristic)| Record::Decided {
                txn,
                decision,
                heuristic,
            }
        ),
        (any_txn, decision(), text(), heuristic()).prop_map(
            |(txn, decision, participant, heuristic)| Record::Heuristic {
                txn,
                decision,
                participant: ParticipantId(participant),
                heuristic,
            }
        ),
        (json_value(), any::<bool>()).prop_map(|(state, merge)| Record::Snapshot { state, merge }),
        (any_txn2, decision(), participants()).prop_map(|(txn, decision, participants)| {
            Record::Outcome {
                txn,
                decision,
                participants,
            }
        }),
        participant().prop_map(|participant| Record::Joined { participant }),
        (participant(), any::<usize>()).prop_map(|(participant, expected)| Record::Removed {
            participant,
            expected
        }),
        any::<u64>().prop_map(|term| Record::Term { term }),
    ]
    .boxed()
}

/// Wire name of a record kind. The exhaustive match makes a new `Record`
/// variant fail to compile here until `record()` generates it.
fn record_kind(r: &Record) -> &'static str {
    match r {
        Record::Decision { .. } => "decision",
        Record::End { .. } => "end",
        Record::Prepared { .. } => "prepared",
        Record::Decided { .. } => "decided",
        Record::Heuristic { .. } => "heuristic",
        Record::Snapshot { .. } => "snapshot",
        Record::Outcome { .. } => "outcome",
        Record::Joined { .. } => "joined",
        Record::Removed { .. } => "removed",
        Record::Term { .. } => "term",
    }
}

const RECORD_KINDS: &[&str] = &[
    "decision",
    "end",
    "prepared",
    "decided",
    "heuristic",
    "snapshot",
    "outcome",
    "joined",
    "removed",
    "term",
];

/// Field names of the record kinds.
const RECORD_FIELDS: &[&str] = &[
    "kind",
    "txn",
    "decision",
    "participants",
    "state",
    "heuristic",
    "participant",
    "merge",
    "participant",
    "expected",
    "term",
];

/// Payloads for a log frame whose header is correct: random bytes, random
/// JSON, and encoded records with fields removed or replaced (a known or
/// unknown `kind`, mistyped values).
fn record_payload() -> BoxedStrategy<Vec<u8>> {
    let kind = prop_oneof![
        select(RECORD_KINDS).prop_map(Value::from),
        payload_field_value()
    ];
    let edit = prop_oneof![
        select(RECORD_FIELDS).prop_map(|f| (f, None)),
        (select(RECORD_FIELDS), payload_field_value()).prop_map(|(f, v)| (f, Some(v))),
        kind.prop_map(|k| ("kind", Some(k))),
    ];
    let edited = (record(), vec(edit, 0..3)).prop_map(|(r, edits)| {
        let mut v = serde_json::to_value(&r).expect("a record serialises");
        if let Value::Object(m) = &mut v {
            for (field, value) in edits {
                match value {
                    Some(value) => m.insert(field.to_string(), value),
                    None => m.remove(field),
                };
            }
        }
        serde_json::to_vec(&v).expect("a Value serialises")
    });
    prop_oneof![
        1 => vec(any::<u8>(), 0..128),
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        3 => edited,
    ]
    .boxed()
}

/// Check the contract of `decode_record` on any buffer: a record is only
/// returned for a frame whose length and checksum are right.
fn check_record_frame(bytes: &[u8]) -> Result<(), TestCaseError> {
    match decode_record(bytes) {
        Decoded::Record(_, n) => {
            prop_assert!(n > HEADER_BYTES && n <= bytes.len());
            let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
            prop_assert_eq!(len, n - HEADER_BYTES);
            prop_assert_eq!(crc32c::crc32c(&bytes[HEADER_BYTES..n]), crc);
        }
        Decoded::Incomplete => {
            let len = bytes
                .get(0..4)
                .map(|h| u32::from_le_bytes(h.try_into().expect("4 bytes")) as usize);
            prop_assert!(
                len.is_none_or(|len| bytes.len() < HEADER_BYTES + len),
                "incomplete although the frame is all there"
            );
        }
        Decoded::Bad(why) => prop_assert!(!why.is_empty()),
    }
    Ok(())
}

/// Random bytes and valid frames with random edits: no panic, and no record
/// from a frame whose checksum does not match.
#[test]
fn decode_record_handles_arbitrary_bytes() {
    let edited = (record(), vec((any::<Index>(), any::<u8>()), 1..4)).prop_map(|(r, edits)| {
        let mut frame = encode_record(&r);
        for (i, x) in edits {
            let at = i.index(frame.len());
            frame[at] = x;
        }
        frame
    });
    let bytes = prop_oneof![vec(any::<u8>(), 0..64), edited];
    check(512, bytes, |bytes| check_record_frame(&bytes));
}

/// Frames with a correct header around arbitrary payloads, so that the
/// record parser sees every shape of JSON.
#[test]
fn decode_record_handles_checksummed_payloads() {
    let case = (record_payload(), vec(any::<u8>(), 0..8));
    check(512, case, |(payload, trailing)| {
        let mut frame = Vec::new();
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        frame.extend_from_slice(&trailing);
        match decode_record(&frame) {
            Decoded::Record(_, n) => prop_assert_eq!(n, HEADER_BYTES + payload.len()),
            Decoded::Bad(why) => prop_assert!(!why.is_empty()),
            Decoded::Incomplete => {
                return Err(TestCaseError::fail("a whole frame is never incomplete"))
            }
        }
        check_record_frame(&frame)
    });
}

/// Records read back as themselves, also with bytes following.
#[test]
fn every_record_round_trips() {
    check(512, (record(), vec(any::<u8>(), 0..16)), |(r, trailing)| {
        let mut frame = encode_record(&r);
        let n = frame.len();
        prop_assert_eq!(
            decode_record(&frame),
            Decoded::Record(Box::new(r.clone()), n)
        );
        frame.extend_from_slice(&trailing);
        prop_assert_eq!(decode_record(&frame), Decoded::Record(Box::new(r), n));
        Ok(())
    });
}

/// CRC32C detects every single-bit error in the checksum or the payload; a
/// flipped length bit never yields a record; every strict prefix is
/// incomplete.
#[test]
fn record_damage_is_detected() {
    let case = (record(), any::<Index>(), any::<Index>());
    check(512, case, |(r, bit, cut)| {
        let frame = encode_record(&r);
        let bit = bit.index(frame.len() * 8);
        let mut flipped = frame.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let got = decode_record(&flipped);
        if bit >= 32 {
            prop_assert!(matches!(got, Decoded::Bad(_)), "bit {}: {:?}", bit, got);
        } else {
            prop_assert!(
                !matches!(got, Decoded::Record(..)),
                "bit {}: {:?}",
                bit,
                got
            );
        }
        let cut = cut.index(frame.len());
        prop_assert_eq!(decode_record(&frame[..cut]), Decoded::Incomplete);
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// 6. Whole-log scan: `wal::scan`
// ---------------------------------------------------------------------------

/// Damage applied to a well-formed log.
#[derive(Clone, Debug)]
enum Damage {
    /// Cut the file at this point.
    Truncate(Index),
    /// XOR `mask` into one byte of one record's CRC or payload.
    Flip {
        record: Index,
        byte: Index,
        mask: u8,
    },
    /// Append these bytes.
    Garbage(Vec<u8>),
}

fn damage() -> BoxedStrategy<Damage> {
    prop_oneof![
        any::<Index>().prop_map(Damage::Truncate),
        (any::<Index>(), any::<Index>(), 1u8..=255)
            .prop_map(|(record, byte, mask)| { Damage::Flip { record, byte, mask } }),
        vec(any::<u8>(), 1..64).prop_map(Damage::Garbage),
    ]
    .boxed()
}

/// Offsets at which each encoded record starts, plus the end offset.
fn boundaries(frames: &[Vec<u8>]) -> Vec<u64> {
    let mut out = vec![0u64];
    for f in frames {
        out.push(out[out.len() - 1] + f.len() as u64);
    }
    out
}

/// Write `bytes` as the only segment of a fresh log directory.
fn write_segment(dir: &Path, bytes: &[u8]) {
    std::fs::write(dir.join("wal-0000000000000001.log"), bytes).expect("write segment");
}

/// What a scan found, in a comparable form: the records with their offsets,
/// the torn-tail offset and the corruption offset.
type ScanSummary = (Vec<(u64, Record)>, Option<u64>, Option<u64>);

fn scan_summary(dir: &Path) -> ScanSummary {
    let report = scan(dir).expect("scan reads the directory");
    let records = report
        .records
        .into_iter()
        .map(|l| (l.offset, l.record))
        .collect();
    (
        records,
        report.torn_tail.map(|d| d.offset),
        report.corruption.map(|d| d.offset),
    )
}

/// The first `n` records with the offsets they were written at.
fn located(records: &[Record], offsets: &[u64], n: usize) -> Vec<(u64, Record)> {
    offsets
        .iter()
        .copied()
        .zip(records.iter().cloned())
        .take(n)
        .collect()
}

/// A cut is a torn tail with every record before it intact; a changed byte
/// in a record's checksum or payload is corruption at that record when an
/// intact record follows (a torn tail in the last record); garbage after the
/// last record is a torn tail. Never an extra record.
#[test]
fn scan_classifies_damage() {
    check(128, (vec(record(), 1..6), damage()), |(records, damage)| {
        let frames: Vec<Vec<u8>> = records.iter().map(encode_record).collect();
        let offsets = boundaries(&frames);
        let mut bytes = frames.concat();
        let expected: ScanSummary = match damage {
            Damage::Truncate(at) => {
                let at = at.index(bytes.len() + 1);
                bytes.truncate(at);
                let whole = offsets.iter().filter(|&&o| o <= at as u64).count() - 1;
                let torn = (offsets[whole] != at as u64).then_some(offsets[whole]);
                (located(&records, &offsets, whole), torn, None)
            }
            Damage::Flip { record, byte, mask } => {
                let i = record.index(records.len());
                // Bytes 0..4 are the length field, which no checksum covers;
                // see `regression_damaged_length_before_intact_record_is_taken_for_torn_tail`.
                let at = offsets[i] as usize + 4 + byte.index(frames[i].len() - 4);
                bytes[at] ^= mask;
                if i + 1 == records.len() {
                    (located(&records, &offsets, i), Some(offsets[i]), None)
                } else {
                    (located(&records, &offsets, i), None, Some(offsets[i]))
                }
            }
            Damage::Garbage(garbage) => {
                bytes.extend_from_slice(&garbage);
                let all = records.len();
                (located(&records, &offsets, all), Some(offsets[all]), None)
            }
        };
        let dir = tempfile::tempdir().expect("temp dir");
        write_segment(dir.path(), &bytes);
        prop_assert_eq!(scan_summary(dir.path()), expected);
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// 7. Key-value operations: `KvStore::parse_ops`
// ---------------------------------------------------------------------------

/// A kv operation as JSON: a known or unknown `op`, keys of every length
/// class, and random or well-typed fields.
fn op_like() -> BoxedStrategy<Value> {
    let op = prop_oneof![
        4 => select(&["get", "put", "delete", "add"][..]).prop_map(Value::from),
        1 => text().prop_map(Value::String),
        1 => json_value(),
    ];
    let key = prop_oneof![
        4 => text().prop_map(Value::String),
        1 => (KEY_MAX_BYTES - 1..=KEY_MAX_BYTES + 1).prop_map(|n| Value::from("k".repeat(n))),
        1 => json_value(),
    ];
    let field = select(&["value", "expect", "delta", "min", "extra"][..]);
    let field_value = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        json_value(),
    ];
    (
        proptest::option::of(op),
        proptest::option::of(key),
        vec((field, field_value), 0..4),
    )
        .prop_map(|(op, key, fields)| {
            let mut m: Map<String, Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            if let Some(op) = op {
                m.insert("op".into(), op);
            }
            if let Some(key) = key {
                m.insert("key".into(), key);
            }
            Value::Object(m)
        })
        .boxed()
}

/// A valid kv operation.
fn op() -> BoxedStrategy<Op> {
    let key = prop_oneof![
        4 => nonempty_text(),
        1 => Just("k".repeat(KEY_MAX_BYTES)),
    ];
    prop_oneof![
        key.clone().prop_map(|key| Op::Get { key }),
        (
            key.clone(),
            json_value(),
            proptest::option::of(json_value())
        )
            .prop_map(|(key, value, expect)| Op::Put { key, value, expect }),
        (key.clone(), proptest::option::of(json_value()))
            .prop_map(|(key, expect)| Op::Delete { key, expect }),
        (key, any::<i64>(), proptest::option::of(any::<i64>()))
            .prop_map(|(key, delta, min)| Op::Add { key, delta, min }),
    ]
    .boxed()
}

#[test]
fn parse_ops_handles_arbitrary_json() {
    let data = prop_oneof![
        2 => json_value(),
        4 => vec(op_like(), 0..6).prop_map(|ops| json!({ "operations": ops })),
        1 => json_value().prop_map(|ops| json!({ "operations": ops })),
    ];
    check(512, data, |data| {
        match KvStore::parse_ops(&data) {
            Ok(ops) => {
                let listed = data
                    .get("operations")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                prop_assert_eq!(ops.len(), listed);
                prop_assert!((1..=OPS_MAX).contains(&ops.len()));
            }
            Err(e) => prop_assert!(e.to_string().starts_with("invalid_payload: "), "{}", e),
        }
        Ok(())
    });
}

/// The operation count is bounded (too slow in debug builds to draw often).
#[test]
fn parse_ops_bounds_the_operation_count() {
    let ops = |n| json!({ "operations": vec![json!({"op": "get", "key": "k"}); n] });
    assert_eq!(
        KvStore::parse_ops(&ops(OPS_MAX)).map(|v| v.len()),
        Ok(OPS_MAX)
    );
    let err = KvStore::parse_ops(&ops(OPS_MAX + 1)).expect_err("too many operations");
    assert_eq!(
        err,
        twopc::resource::kv::OpsError::Payload(twopc::resource::PayloadError::TooMany {
            count: OPS_MAX + 1,
            max: OPS_MAX
        })
    );
    assert!(err.to_string().starts_with("invalid_payload: "), "{err}");
}

#[test]
fn every_op_round_trips() {
    check(512, vec(op(), 1..6), |ops| {
        let data = json!({ "operations": ops });
        prop_assert_eq!(KvStore::parse_ops(&data), Ok(ops));
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// 8. Snapshots: `wal::snapshot_records`
// ---------------------------------------------------------------------------

/// Snapshot records merged back into the state they describe.
fn merge_snapshot(records: &[Record]) -> Result<Value, TestCaseError> {
    let mut state: Option<Value> = None;
    for (i, r) in records.iter().enumerate() {
        let Record::Snapshot { state: part, merge } = r else {
            return Err(TestCaseError::fail(format!("record {i} is not a snapshot")));
        };
        prop_assert_eq!(*merge, i > 0, "record {} has merge={}", i, merge);
        match (&mut state, part) {
            (Some(Value::Object(whole)), Value::Object(entries)) => {
                whole.extend(entries.clone());
            }
            (None, part) => state = Some(part.clone()),
            _ => return Err(TestCaseError::fail("a merged part is not an object")),
        }
    }
    state.ok_or_else(|| TestCaseError::fail("no snapshot records"))
}

/// Every snapshot record must be readable back from the log.
fn check_snapshot_split(state: Value) -> Result<(), TestCaseError> {
    let records =
        snapshot_records(state.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    for (i, r) in records.iter().enumerate() {
        let frame = encode_record(r);
        prop_assert!(
            frame.len() - HEADER_BYTES <= RECORD_MAX_BYTES,
            "record {} has {} payload bytes",
            i,
            frame.len() - HEADER_BYTES
        );
        prop_assert!(
            decode_record(&frame) == Decoded::Record(Box::new(r.clone()), frame.len()),
            "record {} does not read back",
            i
        );
    }
    prop_assert!(merge_snapshot(&records)? == state, "merged state differs");
    Ok(())
}

/// Objects of 2 to 11 long strings (up to 1 MiB each, of one character that
/// may need escaping): about half of them exceed one snapshot chunk.
fn large_object() -> BoxedStrategy<Map<String, Value>> {
    vec((nonempty_text(), 0usize..(1 << 20), any::<char>()), 2..12)
        .prop_map(|entries| {
            entries
                .into_iter()
                .enumerate()
                .map(|(i, (k, n, c))| {
                    let v = c.to_string().repeat(n / c.len_utf8());
                    (format!("{k}{i}"), Value::from(v))
                })
                .collect()
        })
        .boxed()
}

/// Small states of every shape: objects with awkward keys, and non-objects.
#[test]
fn small_snapshots_split_and_merge_back() {
    let state = prop_oneof![
        3 => json_object().prop_map(Value::Object),
        1 => json_value(),
    ];
    check(512, state, check_snapshot_split);
}

/// Objects of several MiB, split over several records.
#[test]
fn large_snapshots_split_and_merge_back() {
    check(6, large_object(), |state| {
        check_snapshot_split(Value::Object(state))
    });
}

// ---------------------------------------------------------------------------
// Coverage of the generators
// ---------------------------------------------------------------------------

/// Draw `n` values from `strategy` with the fixed seed.
fn sample<T: std::fmt::Debug>(strategy: BoxedStrategy<T>, n: usize) -> Vec<T> {
    let mut runner = TestRunner::new(config(1));
    (0..n)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .expect("strategy generates")
                .current()
        })
        .collect()
}

#[test]
fn body_generator_covers_every_message_type() {
    let seen: BTreeSet<&str> = sample(body(), 600).iter().map(Body::message_type).collect();
    let all: BTreeSet<&str> = MESSAGE_TYPES.iter().copied().collect();
    assert_eq!(seen, all);
}

#[test]
fn record_generator_covers_every_kind() {
    let seen: BTreeSet<&str> = sample(record(), 200).iter().map(record_kind).collect();
    let all: BTreeSet<&str> = RECORD_KINDS.iter().copied().collect();
    assert_eq!(seen, all);
}

#[test]
fn large_object_generator_exceeds_a_snapshot_chunk() {
    // `snapshot_split_large` only tests splitting if some objects need it.
    let json_bytes = |o: &Map<String, Value>| serde_json::to_vec(o).map_or(0, |b| b.len());
    let split = sample(large_object(), 6)
        .iter()
        .filter(|o| json_bytes(o) > SNAPSHOT_CHUNK_BYTES)
        .count();
    assert!(split >= 2, "only {split} of 6 objects need splitting");
}

// ---------------------------------------------------------------------------
// Bugs found by the properties (fixed), each reduced to its smallest input
// ---------------------------------------------------------------------------

/// `Body::VoteCommit { result: Some(null) }` is encoded as `"result": null`,
/// which decodes as `result: None`. A resource whose `Prepared::output` is
/// `Some(Value::Null)` loses its (null) result on the way to the coordinator.
#[test]
fn regression_vote_commit_null_result() {
    let body = Body::VoteCommit {
        txn: TxnId::from("t"),
        result: Some(Value::Null),
    };
    assert_eq!(Message::decode(&body.clone().encode(0.0)), Ok(body));
}

/// serde_json without its `float_roundtrip` feature parses some floats one
/// ULP off: the shortest text of 10.889068071206665 reads back as
/// 10.889068071206664. Such a float in kv data, a snapshot or a message
/// changes when it crosses the wire or survives a restart.
#[test]
fn regression_floats_change_when_read_back() {
    let x = 10.889068071206665_f64;
    let state = json!({ "k": x });
    let r = Record::Snapshot {
        state: state.clone(),
        merge: false,
    };
    let frame = encode_record(&r);
    assert_eq!(
        decode_record(&frame),
        Decoded::Record(Box::new(r), frame.len())
    );
    let body = Body::StatusReport(state);
    assert_eq!(Message::decode(&body.clone().encode(0.0)), Ok(body));
}

/// A damaged length field that points past the end of the newest segment is
/// classified as a torn tail even when intact records follow, because
/// `scan` checks `is_tail` only for `Decoded::Bad`, not for
/// `Decoded::Incomplete`. `Wal::open` then truncates the segment at the
/// damaged record and silently drops every record after it.
#[test]
fn regression_damaged_length_before_intact_record_is_taken_for_torn_tail() {
    let a = encode_record(&Record::End {
        txn: TxnId::from("a"),
    });
    let b = encode_record(&Record::End {
        txn: TxnId::from("b"),
    });
    let mut bytes = [a, b].concat();
    // Record "a" now claims 65536 more bytes than the file holds.
    bytes[2] ^= 0x01;
    let dir = tempfile::tempdir().expect("temp dir");
    write_segment(dir.path(), &bytes);
    assert_eq!(scan_summary(dir.path()), (vec![], None, Some(0)));
}

/// `snapshot_records` budgets each entry by the key's raw length, not its
/// JSON length. Keys of control characters grow sixfold when escaped, so a
/// chunk within budget can encode to more than `RECORD_MAX_BYTES`; a
/// checkpoint then writes a record that recovery rejects as damage.
#[test]
fn regression_snapshot_of_escaped_keys_exceeds_record_limit() {
    // 2800 legal kv keys (1024 bytes, almost all U+0001): about 2.8 MiB by
    // the split's count, 17 MiB as JSON.
    let state: Map<String, Value> = (0..2800)
        .map(|i| {
            (
                format!("{i:04}{}", "\u{1}".repeat(KEY_MAX_BYTES - 4)),
                Value::Null,
            )
        })
        .collect();
    for r in snapshot_records(Value::Object(state)).expect("split") {
        let payload_bytes = encode_record(&r).len() - HEADER_BYTES;
        assert!(
            payload_bytes <= RECORD_MAX_BYTES,
            "{payload_bytes} payload bytes"
        );
    }
}

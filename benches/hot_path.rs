//! Microbenchmarks of what a transaction's hot path is made of, so that a
//! regression shows up as a number: a coordinator core's and a participant
//! core's events per second for whole transactions, frame encode and
//! decode (and reading many frames from one buffer), and log append with
//! group commit into a temporary directory.
//!
//! criterion runs them: `cargo bench --bench hot_path` runs them all,
//! `cargo bench --bench hot_path -- NAME` those whose name contains NAME;
//! criterion keeps the last run under `target/criterion` and reports the
//! change against it. Figures vary with the machine and its load; compare
//! runs made together.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;
use serde_json::json;
use std::hint::black_box;
use twopc::net::codec::Frames;
use twopc::protocol::coordinator::{Coordinator, CoordinatorOptions, Event as CEvent};
use twopc::protocol::participant::{Event as PEvent, Participant, ParticipantOptions, Prepared};
use twopc::protocol::{
    Action, Body, ConnId, Decision, Message, ParticipantId, Record, Role, SubmitRequest, TxnId,
    PROTOCOL_VERSION,
};
use twopc::wal::{GroupCommit, Wal, WalOptions};

const PARTICIPANTS: [&str; 3] = ["p1", "p2", "p3"];

/// Measure `op` (one call is `per_call` operations of `unit`) as benchmark
/// `name`, reporting the rate per operation.
fn bench(crit: &mut Criterion, name: &str, unit: &str, per_call: u64, mut op: impl FnMut()) {
    let mut g = crit.benchmark_group(name);
    g.throughput(Throughput::Elements(per_call));
    g.bench_function(unit, |b| b.iter(&mut op));
    g.finish();
}

/// A transaction's data as the bench client sends it: a small object.
fn data() -> serde_json::Value {
    json!({"account": "a-1042", "amount": 25, "memo": "transfer"})
}

fn hello(role: Role, id: Option<&str>) -> Body {
    Body::Hello {
        role,
        id: id.map(ParticipantId::from),
        protocol_version: PROTOCOL_VERSION,
    }
}

/// The coordinator core with three participants and a client connected:
/// each transaction is a submit, three commit votes, the decision durable
/// and three acks (8 events), all actions dropped.
fn coordinator_core(crit: &mut Criterion) {
    let client = ConnId(100);
    let conns: Vec<ConnId> = (1..=3).map(ConnId).collect();
    let opts = CoordinatorOptions {
        expected_participants: PARTICIPANTS.len(),
        txn_id_prefix: "t".into(),
        ..Default::default()
    };
    let mut c = Coordinator::new(opts, 0);
    let mut now = 0;
    c.handle(
        now,
        CEvent::Message {
            conn: client,
            body: hello(Role::Client, None),
        },
    );
    for (conn, id) in conns.iter().zip(PARTICIPANTS) {
        c.handle(
            now,
            CEvent::Message {
                conn: *conn,
                body: hello(Role::Participant, Some(id)),
            },
        );
    }
    let (mut forced, mut request) = (0u64, 0u64);
    bench(
        crit,
        "coordinator core: whole transaction",
        "txn",
        1,
        || {
            now += 1;
            request += 1;
            let submit = Body::Submit(SubmitRequest {
                data: data(),
                request_id: Some(request),
                ..Default::default()
            });
            let out = c.handle(
                now,
                CEvent::Message {
                    conn: client,
                    body: submit,
                },
            );
            let txn = out
                .iter()
                .find_map(|a| match a {
                    Action::Send {
                        body: Body::Prepare { txn, .. },
                        ..
                    } => Some(txn.clone()),
                    _ => None,
                })
                .expect("a submit to a ready cluster sends prepares");
            let mut count_forced = |out: &[Action]| {
                forced += out
                    .iter()
                    .filter(|a| matches!(a, Action::Persist { sync: true, .. }))
                    .count() as u64
            };
            count_forced(&out);
            for conn in &conns {
                let vote = Body::VoteCommit {
                    txn: txn.clone(),
                    result: None,
                };
                count_forced(&c.handle(
                    now,
                    CEvent::Message {
                        conn: *conn,
                        body: vote,
                    },
                ));
            }
            black_box(c.handle(now, CEvent::Durable { forced }));
            for conn in &conns {
                let ack = Body::Ack {
                    txn: txn.clone(),
                    decision: None,
                    heuristic: None,
                };
                black_box(c.handle(
                    now,
                    CEvent::Message {
                        conn: *conn,
                        body: ack,
                    },
                ));
            }
        },
    );
}

/// A participant core connected to its coordinator: each transaction is
/// a prepare, the resource's answer, the commit and the resource's answer
/// to it (4 events).
fn participant_core(crit: &mut Criterion) {
    let opts = ParticipantOptions {
        id: "p1".into(),
        heartbeat_interval_ms: u64::MAX,
        ..Default::default()
    };
    let mut p = Participant::new(opts, 0);
    let mut now = 0;
    p.handle(now, PEvent::TransportUp { conn: ConnId(1) });
    p.handle(
        now,
        PEvent::Message {
            body: Body::Welcome {
                state: "READY".into(),
                term: None,
            },
        },
    );
    let participants: Vec<ParticipantId> = PARTICIPANTS.iter().map(|p| (*p).into()).collect();
    let mut n = 0u64;
    bench(
        crit,
        "participant core: whole transaction",
        "txn",
        1,
        || {
            now += 1;
            n += 1;
            let txn = TxnId(format!("t-{n}"));
            black_box(p.handle(
                now,
                PEvent::Message {
                    body: Body::Prepare {
                        txn: txn.clone(),
                        participants: participants.clone(),
                        data: data(),
                        term: None,
                    },
                },
            ));
            black_box(p.handle(
                now,
                PEvent::ResourcePrepared {
                    txn: txn.clone(),
                    result: Ok(Prepared::state(data())),
                },
            ));
            black_box(p.handle(
                now,
                PEvent::Message {
                    body: Body::Commit {
                        txn: txn.clone(),
                        term: None,
                    },
                },
            ));
            black_box(p.handle(
                now,
                PEvent::ResourceFinished {
                    txn,
                    result: Ok(()),
                },
            ));
        },
    );
}

fn prepare_body() -> Body {
    Body::Prepare {
        txn: TxnId("c7f3e2a91b-000042".into()),
        participants: PARTICIPANTS.iter().map(|p| (*p).into()).collect(),
        data: data(),
        term: None,
    }
}

/// Encoding and decoding one frame, and reading many frames from a buffer
/// that holds them all (as after one large read from a socket).
fn frames(crit: &mut Criterion) {
    bench(crit, "frame encode: prepare", "frame", 1, || {
        black_box(twopc::net::encode(black_box(prepare_body())));
    });
    let frame = twopc::net::encode(prepare_body());
    bench(crit, "frame decode: prepare", "frame", 1, || {
        black_box(Message::decode(black_box(&frame)).expect("decodes"));
    });
    let vote = twopc::net::encode(Body::VoteCommit {
        txn: TxnId("c7f3e2a91b-000042".into()),
        result: None,
    });
    bench(crit, "frame decode: vote_commit", "frame", 1, || {
        black_box(Message::decode(black_box(&vote)).expect("decodes"));
    });
    const BURST: u64 = 256;
    let mut burst = Vec::new();
    for _ in 0..BURST {
        burst.extend(twopc::net::frame(&frame));
    }
    bench(
        crit,
        "frames read from one buffer (256 prepares)",
        "frame",
        BURST,
        || {
            let mut frames = Frames::new(&burst[..], 1 << 20);
            futures::executor::block_on(async {
                while let Some(f) = frames.next().await {
                    black_box(f.expect("a frame"));
                }
            });
        },
    );
}

fn decision(i: u64) -> Record {
    Record::Decision {
        txn: TxnId(format!("c7f3e2a91b-{i:06}")),
        decision: Decision::Commit,
        participants: PARTICIPANTS.iter().map(|p| (*p).into()).collect(),
        client_named: false,
    }
}

/// Appending forced records to a real log in a temporary directory and
/// waiting until they are durable: one at a time (a sync each), and 64
/// at a time, handed over together as the event loop hands over a turn
/// (group commit: one sync for all of them), also without fsync.
fn log(crit: &mut Criterion) {
    let mut i = 0u64;
    bench(crit, "log record encode: decision", "record", 1, || {
        i += 1;
        black_box(twopc::wal::encode_record(&decision(i)));
    });
    for (in_flight, unsafe_no_fsync) in [(1u64, false), (64, false), (64, true)] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let opts = WalOptions {
            unsafe_no_fsync,
            ..WalOptions::default()
        };
        let wal = Wal::open(dir.path(), opts).expect("open a log").wal;
        let mut log = GroupCommit::start(wal, 4096);
        let mut durable = log.watch();
        let name = format!(
            "log append + group commit, {in_flight} at once{}",
            if unsafe_no_fsync { ", no fsync" } else { "" }
        );
        let before = log.stats.syncs.load(std::sync::atomic::Ordering::Relaxed);
        let mut records = 0u64;
        bench(crit, &name, "record", in_flight, || {
            let mut last = 0;
            for _ in 0..in_flight {
                i += 1;
                last = log.append(&decision(i), true);
            }
            records += in_flight;
            futures::executor::block_on(async {
                log.drain().await;
                durable.wait_for(|d| *d >= last).await.map(|_| ())
            })
            .expect("log writer");
        });
        let syncs = log.stats.syncs.load(std::sync::atomic::Ordering::Relaxed) - before;
        if syncs > 0 {
            println!(
                "{:<44} {:>10.1} records per sync",
                "",
                records as f64 / syncs as f64
            );
        }
    }
}

criterion_group!(benches, coordinator_core, participant_core, frames, log);
criterion_main!(benches);

//! A fixed amount of hot-path work, for counting instructions: unlike
//! `cargo bench` (which times for a second), every run does exactly the
//! same work, so `valgrind --tool=callgrind` gives the same count each time
//! and two builds compare exactly, even on a busy machine.
//!
//! `callgrind_hot MODE N` with MODE one of
//! - `prepare`, `vote`, `commit`, `ack`, `submit`, `outcome`: N times clone
//!   that frame's body, encode it and decode it;
//! - `coord`: N whole transactions through a coordinator core (a submit,
//!   three commit votes, the decision durable, three acks; 3 participants);
//! - `coord_wire`: the same, with every inbound message decoded from its
//!   frame and every message sent encoded;
//! - `part`: N whole transactions through a participant core.
//!
//! Per operation, without the set-up: run N and 2N and divide the
//! difference by N, e.g.
//!
//! ```sh
//! cargo build --release --example callgrind_hot
//! for n in 1000 2000; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/callgrind_hot vote $n 2>&1 | grep Collected; done
//! ```
use serde_json::json;
use std::collections::BTreeMap;
use std::hint::black_box;
use twopc::protocol::coordinator::{Coordinator, CoordinatorOptions, Event as CEvent};
use twopc::protocol::participant::{Event as PEvent, Participant, ParticipantOptions, Prepared};
use twopc::protocol::{
    Action, Body, ConnId, Decision, Message, Outcome, ParticipantId, Role, SubmitRequest, TxnId,
    Vote, PROTOCOL_VERSION,
};

const PARTICIPANTS: [&str; 3] = ["p1", "p2", "p3"];

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
fn t() -> TxnId {
    TxnId("c7f3e2a91b-000042".into())
}
fn frame(kind: &str) -> Body {
    match kind {
        "prepare" => Body::Prepare {
            txn: t(),
            participants: PARTICIPANTS.iter().map(|p| (*p).into()).collect(),
            data: data(),
            term: None,
        },
        "vote" => Body::VoteCommit {
            txn: t(),
            result: None,
        },
        "commit" => Body::Commit {
            txn: t(),
            term: None,
        },
        "ack" => Body::Ack {
            txn: t(),
            decision: None,
            heuristic: None,
        },
        "submit" => Body::Submit(SubmitRequest {
            data: data(),
            request_id: Some(17),
            ..Default::default()
        }),
        "outcome" => {
            let votes: BTreeMap<ParticipantId, Vote> = PARTICIPANTS
                .iter()
                .map(|p| ((*p).into(), Vote::Commit))
                .collect();
            Body::Outcome {
                txn: t(),
                outcome: Outcome {
                    decision: Decision::Commit,
                    votes,
                    reason: None,
                    duration_ms: 2.5,
                    request_id: Some(17),
                    results: BTreeMap::new(),
                    repeated: false,
                },
            }
        }
        other => panic!("unknown frame {other}"),
    }
}

fn coord(n: u64, wire: bool) {
    let client = ConnId(100);
    let conns: Vec<ConnId> = (1..=3).map(ConnId).collect();
    let opts = CoordinatorOptions {
        expected_participants: 3,
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
    let mut forced = 0u64;
    // inbound: decode from bytes when `wire`; outbound: encode every Send.
    let inbound = |b: Body| -> Body {
        if wire {
            Message::decode(&b.encode(1.0)).unwrap()
        } else {
            b
        }
    };
    let sink = |out: Vec<Action>, forced: &mut u64| {
        for a in out {
            match a {
                Action::Persist { sync: true, .. } => *forced += 1,
                Action::Send { body, .. } if wire => {
                    black_box(body.encode(2.0));
                }
                other => {
                    black_box(other);
                }
            }
        }
    };
    for request in 0..n {
        now += 1;
        let submit = Body::Submit(SubmitRequest {
            data: data(),
            request_id: Some(request),
            ..Default::default()
        });
        let submit = inbound(submit);
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
            .unwrap();
        sink(out, &mut forced);
        for conn in &conns {
            let vote = inbound(Body::VoteCommit {
                txn: txn.clone(),
                result: None,
            });
            let out = c.handle(
                now,
                CEvent::Message {
                    conn: *conn,
                    body: vote,
                },
            );
            sink(out, &mut forced);
        }
        let out = c.handle(now, CEvent::Durable { forced });
        sink(out, &mut forced);
        for conn in &conns {
            let ack = inbound(Body::Ack {
                txn: txn.clone(),
                decision: None,
                heuristic: None,
            });
            let out = c.handle(
                now,
                CEvent::Message {
                    conn: *conn,
                    body: ack,
                },
            );
            sink(out, &mut forced);
        }
    }
}

fn part(n: u64) {
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
    for i in 0..n {
        now += 1;
        let txn = TxnId(format!("t-{i}"));
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
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(Ok(n))) = (args.get(1), args.get(2).map(|n| n.parse::<u64>())) else {
        eprintln!(
            "usage: callgrind_hot prepare|vote|commit|ack|submit|outcome|coord|coord_wire|part N"
        );
        std::process::exit(2);
    };
    let mode = mode.as_str();
    match mode {
        "coord" => coord(n, false),
        "coord_wire" => coord(n, true),
        "part" => part(n),
        kind => {
            let template = frame(kind);
            for _ in 0..n {
                let bytes = black_box(template.clone()).encode(1.5);
                black_box(Message::decode(black_box(&bytes)).unwrap());
            }
        }
    }
}

//! The embedded key-value resource (`--resource kv`) end to end: real
//! coordinator and participant processes, each kv participant a shard of
//! the data. Every value is read back through a transaction of `get`
//! operations (its `outcome.results`), never from the logs, so the tests see
//! what a client sees.
//!
//! A shard applies a decision before it reads the next PREPARE on the same
//! connection, so one client's transactions never trip over each other's
//! locks. A restarted shard, though, resolves what it holds in doubt in the
//! background, and reads take locks like writes do: a read first waits
//! until every shard reports on its admin port that it holds no lock and
//! nothing in doubt.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use twopc::client::Client;
use twopc::crash::POINTS;
use twopc::protocol::{
    Body, Decision, Outcome, ParticipantId, Role, TxnId, Vote, PROTOCOL_VERSION,
};

/// A coordinator and kv shards with admin ports, restartable one process at
/// a time on the same data directories.
struct Kv {
    c: Cluster,
    shards: BTreeMap<String, Shard>,
}

struct Shard {
    idx: usize,
    admin: String,
    args: Vec<String>,
}

impl Kv {
    /// Start a coordinator that waits for `expected` participants.
    fn new(expected: usize, coordinator_args: &[&str], env: &[(&str, &str)]) -> Kv {
        let mut c = Cluster::new();
        let expected = expected.to_string();
        let mut args = vec!["--expected-participants", &expected];
        args.extend_from_slice(coordinator_args);
        c.start_coordinator(&args, env);
        Kv {
            c,
            shards: BTreeMap::new(),
        }
    }

    /// Write `seed` to a fresh file in the test directory; returns its path.
    fn seed_file(&self, name: &str, seed: &Value) -> PathBuf {
        let path = self.c.path(name);
        std::fs::write(&path, seed.to_string()).expect("write seed file");
        path
    }

    /// Start kv shard `id`, seeded from `seed` when given.
    fn shard(&mut self, id: &str, seed: Option<Value>, extra: &[&str], env: &[(&str, &str)]) {
        if let Err(log) = self.try_shard(id, seed, extra, env) {
            panic!("{id} exited at start; its log:\n{log}");
        }
    }

    /// [`Kv::shard`] for a shard that may refuse to start: `Err` holds its
    /// log once it exited before opening its admin port.
    fn try_shard(
        &mut self,
        id: &str,
        seed: Option<Value>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(), String> {
        let mut args: Vec<String> = vec!["--resource".into(), "kv".into()];
        if let Some(seed) = seed {
            let path = self.seed_file(&format!("{id}-seed.json"), &seed);
            args.extend(["--kv-seed-file".into(), path.display().to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        refs.extend(["--admin-port", "0"]);
        let mark = log_mark(&self.c.path(&format!("{id}.log")));
        let idx = self.c.start_participant(id, &refs, env);
        let proc = &mut self.c.participants[idx];
        let started = Instant::now();
        let admin = loop {
            let text = log_since(&proc.log, mark);
            if let Some(admin) = parse_admin_addr(&text) {
                break admin;
            }
            if !proc.is_running() {
                return Err(text);
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{id} did not open its admin port:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        self.shards
            .insert(id.to_string(), Shard { idx, admin, args });
        Ok(())
    }

    fn idx(&self, id: &str) -> usize {
        self.shards[id].idx
    }

    fn admin(&self, id: &str) -> &str {
        &self.shards[id].admin
    }

    fn proc_mut(&mut self, id: &str) -> &mut Proc {
        let idx = self.idx(id);
        &mut self.c.participants[idx]
    }

    /// Kill -9 shard `id` (if it still runs) and start it again on the same
    /// data directory with the arguments it was first given.
    fn restart(&mut self, id: &str) {
        let args = self.shards[id].args.clone();
        self.restart_with(id, &args);
    }

    /// [`Kv::restart`] with other arguments (kept for later restarts).
    fn restart_with(&mut self, id: &str, args: &[String]) {
        let idx = self.idx(id);
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let admin = self.c.restart_participant_admin(idx, &refs, &[]);
        let shard = self.shards.get_mut(id).expect("shard");
        shard.admin = admin;
        shard.args = args.to_vec();
    }

    /// The coordinator has `n` participants and every shard process (maybe
    /// restarted) has registered with it.
    fn ready(&self, n: usize) {
        self.c.wait_ready(n);
        for (id, s) in &self.shards {
            wait_participant(&s.admin, &format!("{id} to register"), |st| {
                st["connected"] == true
            });
        }
    }

    /// Wait until every shard has applied every decision it is owed: nothing
    /// in doubt, no prepared transaction, no locked key.
    fn settle(&self) {
        for id in self.shards.keys() {
            self.wait_held(id, 0);
        }
    }

    /// Wait until shard `id` holds exactly `n` prepared transactions, all
    /// in doubt, each locking one key (as every test's held transaction
    /// does).
    fn wait_held(&self, id: &str, n: usize) {
        wait_participant(
            self.admin(id),
            &format!("{id} to hold {n} transactions"),
            |s| {
                s["in_doubt"].as_array().is_some_and(|d| d.len() == n)
                    && s["resource"]["locked_keys"] == n
                    && s["resource"]["prepared"] == n
            },
        );
    }

    /// Submit `{"operations": ops}`; the coordinator must answer.
    fn run(&self, ops: Value) -> (TxnId, Outcome) {
        let data = json!({ "operations": ops });
        self.c
            .submit(req(data.clone()))
            .unwrap_or_else(|e| panic!("submit {data}: {e}"))
    }

    /// Run `ops`; they must commit. Returns the read results by shard.
    fn commit(&self, ops: Value) -> Value {
        let (id, o) = self.run(ops.clone());
        assert_eq!(o.decision, Decision::Commit, "{id} {ops}: {o:?}");
        json!(o.results)
    }

    /// Run `ops`; `shard` must vote abort. Returns its reason.
    fn refused_by(&self, shard: &str, ops: Value) -> String {
        let (id, o) = self.run(ops.clone());
        refusal(&o, shard).unwrap_or_else(|| panic!("{id} {ops}: {shard} did not refuse: {o:?}"))
    }

    /// `ops` must be refused by s1 with `expect_mismatch`.
    fn mismatch(&self, ops: Value) {
        let why = self.refused_by("s1", ops);
        assert!(why.starts_with("expect_mismatch"), "{why}");
    }

    /// Read `keys` (`{"shard": ["key", ..]}`) once every shard settled;
    /// returns the results (`{"shard": {"key": value}}`, null when missing).
    fn read(&self, keys: Value) -> Value {
        self.settle();
        let ops: serde_json::Map<String, Value> = keys
            .as_object()
            .expect("keys by shard")
            .iter()
            .map(|(shard, ks)| (shard.clone(), gets(ks)))
            .collect();
        self.commit(Value::Object(ops))
    }

    /// The shard's admin `status`.
    fn status(&self, id: &str) -> Value {
        ask_participant(self.admin(id), Body::Status).expect("shard status")
    }
}

/// `get` operations for a list of keys.
fn gets(keys: &Value) -> Value {
    keys.as_array()
        .expect("a list of keys")
        .iter()
        .map(|k| json!({"op": "get", "key": k}))
        .collect()
}

/// `shard`'s reason when it voted abort and the transaction aborted
/// because of it (`None` otherwise). An aborted transaction returns no
/// read results.
fn refusal(o: &Outcome, shard: &str) -> Option<String> {
    if o.decision != Decision::Abort
        || o.votes.get(&ParticipantId::from(shard)) != Some(&Vote::Abort)
    {
        return None;
    }
    assert!(o.results.is_empty(), "an abort returned results: {o:?}");
    let reason = o.reason.as_deref().unwrap_or_default();
    let prefix = format!("participant {shard} voted abort: ");
    Some(
        reason
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("reason does not name {shard}: {o:?}"))
            .to_string(),
    )
}

/// Move `amount` from `from` (on shard s1, never below 0) to `to` (on s2).
fn transfer(from: &str, to: &str, amount: i64) -> Value {
    json!({
        "s1": [{"op": "add", "key": from, "delta": -amount, "min": 0}],
        "s2": [{"op": "add", "key": to, "delta": amount}],
    })
}

/// A participant played by the test over a raw connection. It votes only
/// when told to, so a transaction it belongs to stays in its prepare phase
/// (holding the kv shards' locks) for exactly as long as a test needs.
struct Puppet {
    conn: RawConn,
}

impl Puppet {
    fn join(addr: &str, id: &str) -> Puppet {
        let mut conn = RawConn::connect(addr);
        conn.send(Body::Hello {
            role: Role::Participant,
            id: Some(ParticipantId::from(id)),
            protocol_version: PROTOCOL_VERSION,
        });
        let m = conn.recv_skip_heartbeats().expect("welcome");
        assert_eq!(m["message_type"], "welcome", "{m}");
        Puppet { conn }
    }

    /// The next message must be a PREPARE; returns its transaction.
    fn prepared(&mut self) -> TxnId {
        let m = self.conn.recv_skip_heartbeats().expect("prepare");
        assert_eq!(m["message_type"], "prepare", "{m}");
        TxnId(m["transaction_id"].as_str().expect("transaction_id").into())
    }

    fn vote(&mut self, txn: &TxnId, vote: Vote) {
        self.conn.send(match vote {
            Vote::Commit => Body::VoteCommit {
                txn: txn.clone(),
                result: None,
            },
            Vote::Abort => Body::VoteAbort {
                txn: txn.clone(),
                reason: Some("the puppet says no".into()),
            },
        });
    }

    /// The next message must be `decision` for `txn`; acknowledge it.
    fn ack(&mut self, txn: &TxnId, decision: Decision) {
        let m = self.conn.recv_skip_heartbeats().expect("decision");
        assert_eq!(m["message_type"], decision.as_str(), "{m}");
        assert_eq!(m["transaction_id"], txn.0, "{m}");
        self.conn.send(Body::Ack {
            txn: txn.clone(),
            decision: Some(decision),
            heuristic: None,
        });
    }
}

/// Submit `ops` on a thread (it will wait for a puppet's vote).
fn submit_in_background(
    addr: &str,
    ops: Value,
) -> std::thread::JoinHandle<Result<(TxnId, Outcome), twopc::client::ClientError>> {
    let addr = addr.to_string();
    std::thread::spawn(move || submit_to(&addr, req(json!({ "operations": ops }))))
}

/// Two unseeded shards.
fn two_shards() -> Kv {
    let mut kv = Kv::new(2, &[], &[]);
    kv.shard("s1", None, &[], &[]);
    kv.shard("s2", None, &[], &[]);
    kv.ready(2);
    kv
}

#[test]
fn put_get_delete_and_add_across_two_shards() {
    let kv = two_shards();
    let r = kv.commit(json!({
        "s1": [
            {"op": "put", "key": "a", "value": 1},
            {"op": "put", "key": "doc", "value": {"x": [1, "two", null]}},
        ],
        "s2": [
            {"op": "add", "key": "counter", "delta": 5},
            {"op": "put", "key": "name", "value": "n"},
        ],
    }));
    assert_eq!(r, json!({}), "writes return no results");
    assert_eq!(
        kv.read(json!({"s1": ["a", "doc", "missing"], "s2": ["counter", "name", "a"]})),
        json!({
            "s1": {"a": 1, "doc": {"x": [1, "two", null]}, "missing": null},
            "s2": {"counter": 5, "name": "n", "a": null},
        }),
        "each shard holds only its own keys; a missing key reads null"
    );

    // Later operations of a transaction see its earlier ones; results come
    // only from the shards that read.
    let r = kv.commit(json!({
        "s1": [
            {"op": "delete", "key": "a"},
            {"op": "get", "key": "a"},
            {"op": "add", "key": "a", "delta": -3},
            {"op": "get", "key": "fresh"},
        ],
        "s2": [{"op": "add", "key": "counter", "delta": -2}],
    }));
    assert_eq!(r, json!({"s1": {"a": null, "fresh": null}}));
    assert_eq!(
        kv.read(json!({"s1": ["a", "doc"], "s2": ["counter"]})),
        json!({"s1": {"a": -3, "doc": {"x": [1, "two", null]}}, "s2": {"counter": 3}}),
        "delete then add counts the deleted key as 0"
    );

    // A transaction naming one shard involves only that shard.
    let (id, o) = kv.run(json!({"s2": [{"op": "delete", "key": "name"}]}));
    assert_eq!(o.decision, Decision::Commit, "{id}: {o:?}");
    assert_eq!(
        o.votes.keys().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        ["s2"],
        "{o:?}"
    );
    assert_eq!(
        kv.read(json!({"s2": ["name", "counter"]})),
        json!({"s2": {"name": null, "counter": 3}})
    );

    // `add` needs an integer: on a string it votes abort and changes nothing.
    let why = kv.refused_by(
        "s1",
        json!({
            "s1": [{"op": "add", "key": "doc", "delta": 1}],
            "s2": [{"op": "put", "key": "counter", "value": 100}],
        }),
    );
    assert!(why.starts_with("not_an_integer"), "{why}");
    assert_eq!(
        kv.read(json!({"s1": ["doc"], "s2": ["counter"]})),
        json!({"s1": {"doc": {"x": [1, "two", null]}}, "s2": {"counter": 3}})
    );
}

#[test]
fn a_debit_below_min_aborts_the_whole_transfer() {
    let mut kv = Kv::new(2, &[], &[]);
    kv.shard("s1", Some(json!({"alice": 100})), &[], &[]);
    kv.shard("s2", Some(json!({"bob": 5})), &[], &[]);
    kv.ready(2);
    let both = json!({"s1": ["alice"], "s2": ["bob"]});

    let why = kv.refused_by("s1", transfer("alice", "bob", 101));
    assert!(why.starts_with("below_min"), "{why}");
    assert_eq!(
        kv.read(both.clone()),
        json!({"s1": {"alice": 100}, "s2": {"bob": 5}})
    );

    // The refusal may come from the credited side too: s1 drops the debit
    // it may already have prepared.
    let why = kv.refused_by(
        "s2",
        json!({
            "s1": [{"op": "add", "key": "alice", "delta": -10, "min": 0}],
            "s2": [{"op": "add", "key": "bob", "delta": -6, "min": 0}],
        }),
    );
    assert!(why.starts_with("below_min"), "{why}");
    assert_eq!(
        kv.read(both.clone()),
        json!({"s1": {"alice": 100}, "s2": {"bob": 5}})
    );

    // Down to exactly the minimum is allowed.
    kv.commit(transfer("alice", "bob", 100));
    assert_eq!(
        kv.read(both.clone()),
        json!({"s1": {"alice": 0}, "s2": {"bob": 105}})
    );
    let why = kv.refused_by("s1", transfer("alice", "bob", 1));
    assert!(why.starts_with("below_min"), "{why}");
    // A negative minimum allows an overdraft down to it.
    kv.commit(json!({"s1": [{"op": "add", "key": "alice", "delta": -50, "min": -50}]}));
    assert_eq!(
        kv.read(both),
        json!({"s1": {"alice": -50}, "s2": {"bob": 105}})
    );
}

/// A `put` on s1 guarded by `expect`.
fn put_expecting(key: &str, value: Value, expect: Value) -> Value {
    json!({"s1": [{"op": "put", "key": key, "value": value, "expect": expect}]})
}

/// A `delete` on s1 guarded by `expect`.
fn delete_expecting(key: &str, expect: Value) -> Value {
    json!({"s1": [{"op": "delete", "key": key, "expect": expect}]})
}

#[test]
fn expect_guards_put_and_delete() {
    let mut kv = Kv::new(2, &[], &[]);
    kv.shard("s1", Some(json!({"k": "v1"})), &[], &[]);
    kv.shard("s2", None, &[], &[]);
    kv.ready(2);
    kv.mismatch(put_expecting("k", json!("v2"), json!("wrong")));
    kv.mismatch(delete_expecting("k", json!("v0")));
    kv.mismatch(put_expecting("new", json!(1), json!(0)));
    assert_eq!(
        kv.read(json!({"s1": ["k", "new"]})),
        json!({"s1": {"k": "v1", "new": null}})
    );

    kv.commit(put_expecting("k", json!("v2"), json!("v1")));
    kv.commit(json!({"s1": [{"op": "put", "key": "new", "value": {"n": 1}}]}));
    assert_eq!(
        kv.read(json!({"s1": ["k", "new"]})),
        json!({"s1": {"k": "v2", "new": {"n": 1}}})
    );
    // A stale expectation is refused; an object compares by value.
    kv.mismatch(delete_expecting("k", json!("v1")));
    kv.mismatch(put_expecting("new", json!(0), json!({"n": 2})));
    kv.commit(delete_expecting("new", json!({"n": 1})));
    kv.commit(delete_expecting("k", json!("v2")));
    assert_eq!(
        kv.read(json!({"s1": ["k", "new"]})),
        json!({"s1": {"k": null, "new": null}})
    );

    // A mismatch on one shard keeps the other shard's writes out too.
    let why = kv.refused_by(
        "s2",
        json!({
            "s1": [{"op": "put", "key": "k", "value": "v3"}],
            "s2": [{"op": "put", "key": "x", "value": 1, "expect": 0}],
        }),
    );
    assert!(why.starts_with("expect_mismatch"), "{why}");
    assert_eq!(
        kv.read(json!({"s1": ["k"], "s2": ["x"]})),
        json!({"s1": {"k": null}, "s2": {"x": null}})
    );
}

/// `"expect": null` means "the key must be absent" (src/resource/kv.rs:
/// "`expect` compares the current value (`null` for a missing key)").
#[test]
fn expect_null_requires_the_key_to_be_absent() {
    let mut kv = Kv::new(1, &[], &[]);
    kv.shard("s1", Some(json!({"k": "v1"})), &[], &[]);
    kv.ready(1);
    kv.commit(put_expecting("new", json!(1), Value::Null));
    assert_eq!(
        kv.read(json!({"s1": ["k", "new"]})),
        json!({"s1": {"k": "v1", "new": 1}})
    );
    kv.mismatch(put_expecting("k", json!("v2"), Value::Null));
    kv.mismatch(put_expecting("new", json!(2), Value::Null));
    kv.mismatch(delete_expecting("k", Value::Null));
    assert_eq!(
        kv.read(json!({"s1": ["k", "new"]})),
        json!({"s1": {"k": "v1", "new": 1}})
    );
}

#[test]
fn keys_of_a_prepared_transaction_are_locked_until_it_ends() {
    // The puppet sends no heartbeats: the coordinator must not give it up.
    let mut kv = Kv::new(
        2,
        &[
            "--timeout-seconds",
            "600",
            "--heartbeat-interval-ms",
            "600000",
        ],
        &[],
    );
    kv.shard("s1", Some(json!({"x": 1})), &[], &[]);
    let mut puppet = Puppet::join(&kv.c.addr(), "slow");
    kv.ready(2);

    // The first round commits x + 10, the second aborts x + 10.
    for (round, decision) in [Decision::Commit, Decision::Abort].into_iter().enumerate() {
        let ctx = format!("held transaction decided {decision}");
        // A: s1 prepares and locks x; the puppet does not vote yet.
        let held = submit_in_background(
            &kv.c.addr(),
            json!({"s1": [{"op": "add", "key": "x", "delta": 10}], "slow": []}),
        );
        let a = puppet.prepared();
        kv.wait_held("s1", 1);

        // Any operation on x conflicts, reads too; other keys are free.
        for op in [
            json!({"op": "get", "key": "x"}),
            json!({"op": "put", "key": "x", "value": 0}),
            json!({"op": "add", "key": "x", "delta": 1}),
            json!({"op": "delete", "key": "x"}),
        ] {
            let ops = json!({"s1": [{"op": "put", "key": "y", "value": round}, op]});
            let why = kv.refused_by("s1", ops);
            assert!(why.starts_with("conflict"), "{ctx}: {why}");
            assert!(why.contains("`x`"), "{ctx}: {why}");
        }
        let r = kv.commit(json!({"s1": [
            {"op": "put", "key": "y", "value": round},
            {"op": "get", "key": "y"},
        ]}));
        assert_eq!(r, json!({"s1": {"y": round}}), "{ctx}");

        // A ends; x is free again and holds A's write only if A committed.
        puppet.vote(&a, vote_for(decision));
        if decision == Decision::Commit {
            puppet.ack(&a, Decision::Commit);
        }
        let (id, o) = held.join().expect("submit thread").expect("submit A");
        assert_eq!(id, a, "{ctx}");
        assert_eq!(o.decision, decision, "{ctx}: {o:?}");
        assert_eq!(
            kv.read(json!({"s1": ["x", "y"]})),
            json!({"s1": {"x": 11, "y": round}}),
            "{ctx}"
        );
    }
}

fn vote_for(decision: Decision) -> Vote {
    match decision {
        Decision::Commit => Vote::Commit,
        Decision::Abort => Vote::Abort,
    }
}

#[test]
fn a_seed_is_loaded_at_first_start_only() {
    let mut kv = Kv::new(2, &[], &[]);
    let seed = json!({"alice": 100, "bob": 50, "note": "seeded"});
    kv.shard("s1", Some(seed), &[], &[]);
    kv.shard("s2", None, &[], &[]);
    kv.ready(2);
    let keys = json!({"s1": ["alice", "bob", "carol", "note"], "s2": ["alice"]});
    assert_eq!(
        kv.read(keys.clone()),
        json!({
            "s1": {"alice": 100, "bob": 50, "carol": null, "note": "seeded"},
            "s2": {"alice": null},
        })
    );
    for id in ["s1", "s2"] {
        let (code, r) = wal_inspect(&kv.c.participant_dir(kv.idx(id)));
        assert_eq!(code, 0, "{id}: {r}");
        assert_eq!(r["snapshots"], 1, "{id}: the initial data is logged: {r}");
    }
    kv.commit(json!({"s1": [
        {"op": "add", "key": "alice", "delta": -30, "min": 0},
        {"op": "add", "key": "bob", "delta": 30},
        {"op": "delete", "key": "note"},
    ]}));

    // Both restart with a different seed: committed data (and s2's empty
    // store) stay as they were.
    let other = kv.seed_file(
        "other-seed.json",
        &json!({"alice": 999, "carol": 1, "note": "reseeded"}),
    );
    let args: Vec<String> = ["--resource", "kv", "--kv-seed-file"]
        .iter()
        .map(|s| s.to_string())
        .chain([other.display().to_string()])
        .collect();
    kv.restart_with("s1", &args);
    kv.restart_with("s2", &args);
    kv.ready(2);
    assert_eq!(
        kv.read(keys),
        json!({
            "s1": {"alice": 70, "bob": 80, "carol": null, "note": null},
            "s2": {"alice": null},
        })
    );
}

#[test]
fn a_seed_that_is_not_a_json_object_stops_the_participant() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in [
        ("list.json", "[1, 2]"),
        ("broken.json", "{\"alice\": "),
        ("empty-key.json", "{\"\": 1}"),
    ] {
        let seed = dir.path().join(name);
        std::fs::write(&seed, text).expect("write seed");
        let data = dir.path().join(format!("data-{name}"));
        let port = free_port().to_string();
        let mut cmd = clean_command(PARTICIPANT);
        cmd.args([
            "--id",
            "s1",
            "--coordinator-port",
            &port,
            "--resource",
            "kv",
        ])
        .arg("--kv-seed-file")
        .arg(&seed)
        .arg("--data-dir")
        .arg(&data);
        let (code, _, err) = run_bounded(&mut cmd, PATIENCE);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains("kv.seed_file"), "{name}: {err}");
        assert!(
            wal_segments(&data).is_empty(),
            "{name}: a refused seed must leave no log behind"
        );
    }
}

#[test]
fn committed_data_survives_kill_9_of_every_shard() {
    let mut kv = Kv::new(2, &[], &[]);
    kv.shard("s1", Some(json!({"alice": 100})), &[], &[]);
    kv.shard("s2", None, &[], &[]);
    kv.ready(2);
    // Transactions back to back: a shard receives a decision before the
    // next PREPARE on the same connection, so none of them conflicts.
    for i in 0..10 {
        let mut ops = transfer("alice", "bob", 3);
        let s2 = ops["s2"].as_array_mut().expect("s2 ops");
        s2.push(json!({"op": "put", "key": format!("log-{i}"), "value": {"n": i}}));
        if i > 0 {
            s2.push(json!({"op": "delete", "key": format!("log-{}", i - 1)}));
        }
        kv.commit(ops);
    }
    // Refused by s2 after s1 prepared its debit: s1 must forget it.
    let why = kv.refused_by(
        "s2",
        json!({
            "s1": [{"op": "add", "key": "alice", "delta": -50, "min": 0}],
            "s2": [{"op": "put", "key": "log-9", "value": 0, "expect": "nope"}],
        }),
    );
    assert!(why.starts_with("expect_mismatch"), "{why}");

    // kill -9 both at once, without waiting for them to apply anything.
    kv.proc_mut("s1").kill9();
    kv.proc_mut("s2").kill9();
    kv.restart("s1");
    kv.restart("s2");
    kv.ready(2);
    assert_eq!(
        kv.read(json!({"s1": ["alice"], "s2": ["bob", "log-8", "log-9"]})),
        json!({
            "s1": {"alice": 70},
            "s2": {"bob": 30, "log-8": null, "log-9": {"n": 9}},
        })
    );
}

/// Transfer 40 from alice (s1) to bob (s2) while s1 dies at crash point
/// `point`; restart s1. `want` is the decision the client must be told.
fn a_shard_crash_keeps_the_transfer_atomic(point: &str, want: Option<Decision>) {
    let ctx = format!("s1 crashes at {point}");
    let mut kv = Kv::new(2, &[], &[]);
    kv.shard(
        "s1",
        Some(json!({"alice": 100})),
        &[],
        &[("TWOPC_CRASH_AT", point)],
    );
    kv.shard("s2", Some(json!({"bob": 0})), &[], &[]);
    kv.ready(2);
    let addr = kv.c.addr();
    let client = submit_in_background(&addr, transfer("alice", "bob", 40));
    let proc = kv.proc_mut("s1");
    let status = proc
        .wait_exit(PATIENCE)
        .expect("s1 dies at the crash point");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{ctx}: {status:?}");
    assert!(
        proc.log_text()
            .contains(&format!("crash point {point} reached")),
        "{ctx}: s1 died elsewhere:\n{}",
        proc.log_text()
    );
    let told = client.join().expect("client thread");
    kv.restart("s1");
    kv.ready(2);

    let both = json!({"s1": ["alice"], "s2": ["bob"]});
    let after = kv.read(both.clone());
    let applied = json!({"s1": {"alice": 60}, "s2": {"bob": 40}});
    let untouched = json!({"s1": {"alice": 100}, "s2": {"bob": 0}});
    assert!(
        after == applied || after == untouched,
        "{ctx}: the transfer is applied on one shard only (or the total changed): {after}"
    );
    match &told {
        Ok((id, o)) => assert_eq!(
            o.decision == Decision::Commit,
            after == applied,
            "{ctx}: {id} told {o:?} but the shards hold {after}"
        ),
        Err(e) => assert!(want.is_none(), "{ctx}: the client got no outcome: {e}"),
    }
    if let Some(want) = want {
        let decision = told.as_ref().map(|(_, o)| o.decision).ok();
        assert_eq!(decision, Some(want), "{ctx}: {told:?}");
    }

    // Nothing stays locked: the next transfer over the same keys commits.
    kv.commit(transfer("alice", "bob", 10));
    let after: i64 = kv
        .read(both)
        .as_object()
        .expect("results")
        .values()
        .flat_map(|r| r.as_object().expect("reads").values())
        .map(|v| v.as_i64().expect("a balance"))
        .sum();
    assert_eq!(after, 100, "{ctx}: the balance total changed");
}

#[test]
fn a_shard_dying_after_logging_its_prepare_aborts_the_transfer_everywhere() {
    a_shard_crash_keeps_the_transfer_atomic(
        "participant.after_prepare_logged",
        Some(Decision::Abort),
    );
}

#[test]
fn a_shard_dying_after_its_vote_left_applies_the_outcome_after_restart() {
    a_shard_crash_keeps_the_transfer_atomic("participant.after_vote_sent", None);
}

#[test]
fn a_shard_dying_after_logging_the_commit_keeps_it() {
    a_shard_crash_keeps_the_transfer_atomic(
        "participant.after_decision_logged",
        Some(Decision::Commit),
    );
}

#[test]
fn a_commit_logged_by_a_coordinator_that_died_is_applied_on_both_shards() {
    let point = "coordinator.after_decision_logged";
    let mut kv = Kv::new(2, &[], &[("TWOPC_CRASH_AT", point)]);
    kv.shard("s1", Some(json!({"alice": 100})), &[], &[]);
    kv.shard("s2", Some(json!({"bob": 0})), &[], &[]);
    kv.ready(2);
    let told =
        kv.c.submit(req(json!({"operations": transfer("alice", "bob", 40)})));
    let coordinator = kv.c.coordinator.as_mut().expect("coordinator");
    let status = coordinator
        .wait_exit(PATIENCE)
        .expect("the coordinator dies at the crash point");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(
        coordinator
            .log_text()
            .contains(&format!("crash point {point} reached")),
        "{}",
        coordinator.log_text()
    );
    if let Ok((id, o)) = &told {
        assert_eq!(o.decision, Decision::Commit, "{id}: {o:?}");
    }
    // Both shards voted and wait for the decision, holding their keys.
    for id in ["s1", "s2"] {
        kv.wait_held(id, 1);
    }

    kv.c.restart_coordinator_with_env(&[]);
    kv.ready(2);
    let both = json!({"s1": ["alice"], "s2": ["bob"]});
    assert_eq!(
        kv.read(both.clone()),
        json!({"s1": {"alice": 60}, "s2": {"bob": 40}})
    );
    kv.commit(transfer("alice", "bob", 10));
    assert_eq!(
        kv.read(both),
        json!({"s1": {"alice": 50}, "s2": {"bob": 50}})
    );
}

/// Segments a data directory may hold at any time with 4 KiB segments.
const SEGMENTS_MAX: usize = 3;

#[test]
fn a_checkpointed_store_restarts_with_its_data_and_its_in_doubt_transaction() {
    const TXNS: usize = 300;
    let wal = ["--wal-segment-max-bytes", "4096"];
    // The puppet sends no heartbeats: the coordinator must not give it up.
    let mut kv = Kv::new(
        3,
        &[
            "--timeout-seconds",
            "600",
            "--heartbeat-interval-ms",
            "600000",
        ],
        &[],
    );
    kv.shard("s1", Some(json!({"held": 1})), &wal, &[]);
    kv.shard("s2", None, &wal, &[]);
    let mut puppet = Puppet::join(&kv.c.addr(), "slow");
    kv.ready(3);
    let dirs: Vec<PathBuf> = ["s1", "s2"]
        .iter()
        .map(|id| kv.c.participant_dir(kv.idx(id)))
        .collect();

    // P stays prepared at s1 (holding `held`) through every checkpoint.
    let p_client = submit_in_background(
        &kv.c.addr(),
        json!({"s1": [{"op": "add", "key": "held", "delta": 7}], "slow": []}),
    );
    let p = puppet.prepared();
    kv.wait_held("s1", 1);
    let first_segments = wal_segments(&dirs[0]);

    // Small transactions on one connection, mirrored in `model`.
    let mut model: BTreeMap<(&str, String), Value> = BTreeMap::new();
    let mut txns = Vec::new();
    for i in 0..TXNS {
        let (a, b) = (format!("a{}", i % 10), format!("b{}", i % 25));
        let mut s2 = vec![json!({"op": "put", "key": b, "value": i})];
        model.insert(("s2", b), json!(i));
        if i % 7 == 0 {
            let gone = format!("b{}", (i + 3) % 25);
            s2.push(json!({"op": "delete", "key": gone}));
            model.insert(("s2", gone), Value::Null);
        }
        let n = model.get(&("s1", a.clone())).and_then(Value::as_i64);
        model.insert(("s1", a.clone()), json!(n.unwrap_or(0) + 1));
        txns.push(json!({"operations": {
            "s1": [{"op": "add", "key": a, "delta": 1}],
            "s2": s2,
        }}));
    }
    let addr = kv.c.addr();
    let worst = block_on(async {
        let mut client = Client::connect(&addr, PATIENCE).await.expect("connect");
        let mut worst = 0;
        for data in txns {
            let (id, o) = client.submit(req(data)).await.expect("submit");
            assert_eq!(o.decision, Decision::Commit, "{id}: {o:?}");
            for d in &dirs {
                worst = worst.max(wal_segments(d).len());
            }
        }
        worst
    });
    assert!(
        worst <= SEGMENTS_MAX,
        "a shard's log reached {worst} segments (bound {SEGMENTS_MAX})"
    );
    for id in ["s1", "s2"] {
        let s = kv.status(id);
        assert!(s["wal"]["checkpoints"].as_u64() >= Some(2), "{id}: {s}");
    }
    // P's PREPARED record now lives only in a checkpoint.
    for (path, _) in &first_segments {
        assert!(
            !path.exists(),
            "{} survived the checkpoints",
            path.display()
        );
    }
    let (_, r) = wal_inspect(&dirs[0]);
    let p_state = r["transactions"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["transaction_id"] == p.0))
        .map(|t| t["state"].clone());
    assert_eq!(
        p_state,
        Some(json!("prepared, no decision (in doubt)")),
        "{r}"
    );

    kv.proc_mut("s1").kill9();
    kv.proc_mut("s2").kill9();
    kv.restart("s1");
    kv.restart("s2");
    kv.ready(3);
    kv.wait_held("s1", 1);
    kv.wait_held("s2", 0);
    let in_doubt = kv.status("s1")["in_doubt"].clone();
    assert_eq!(in_doubt[0]["transaction_id"], p.0, "{in_doubt}");
    let why = kv.refused_by("s1", json!({"s1": [{"op": "get", "key": "held"}]}));
    assert!(why.starts_with("conflict"), "P's lock is back: {why}");

    let mut keys: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (shard, key) in model.keys() {
        keys.entry(shard).or_default().push(key.clone());
    }
    let mut want: BTreeMap<&str, BTreeMap<String, Value>> = BTreeMap::new();
    for ((shard, key), v) in &model {
        want.entry(shard)
            .or_default()
            .insert(key.clone(), v.clone());
    }
    let read_all = || {
        kv.commit(json!(keys
            .iter()
            .map(|(s, k)| (s.to_string(), gets(&json!(k))))
            .collect::<BTreeMap<_, _>>()))
    };
    assert_eq!(read_all(), json!(want), "committed values after restart");

    // P ends now, at the restarted s1.
    puppet.vote(&p, Vote::Commit);
    puppet.ack(&p, Decision::Commit);
    let (_, o) = p_client.join().expect("P's client").expect("submit P");
    assert_eq!(o.decision, Decision::Commit, "{o:?}");
    assert_eq!(kv.read(json!({"s1": ["held"]})), json!({"s1": {"held": 8}}));
    assert_eq!(read_all(), json!(want));
}

#[test]
fn invalid_operations_are_voted_down_naming_what_is_wrong() {
    let mut kv = Kv::new(1, &[], &[]);
    kv.shard("s1", Some(json!({"a": 1})), &[], &[]);
    kv.ready(1);
    let long_key = "k".repeat(1025);
    for op in [
        json!({"op": "explode", "key": "a"}),
        json!({"op": "put", "key": "", "value": 1}),
        json!({"op": "get", "key": long_key}),
        json!({"op": "put", "key": "a"}),
        json!({"op": "put", "key": "a", "value": 1, "bogus": true}),
        json!({"op": "add", "key": "a", "delta": "1"}),
        json!({"op": "add", "key": "a", "delta": 1.5}),
        json!({"key": "a"}),
        json!("get a"),
    ] {
        // A valid operation first: nothing of the transaction is kept.
        let ops = json!({"s1": [{"op": "put", "key": "a", "value": 2}, op]});
        let why = kv.refused_by("s1", ops.clone());
        assert!(
            why.starts_with("invalid_payload: operation 1: "),
            "{ops}: {why}"
        );
    }
    let why = kv.refused_by("s1", json!({"s1": [{"op": "put", "key": "a", "vaule": 2}]}));
    assert_eq!(
        why,
        "invalid_payload: operation 0: unknown field `vaule`, expected one of `key`, `value`, `expect`"
    );
    // Data that is not an object reaches every participant as it is.
    let (id, o) = kv.c.submit(req(json!([1, 2]))).expect("submit");
    let why = refusal(&o, "s1").unwrap_or_else(|| panic!("{id}: {o:?}"));
    assert!(
        why.starts_with("invalid_payload: the data is an array"),
        "{why}"
    );
    // Operations that are not a list per participant never leave the
    // coordinator.
    for data in [
        json!({"operations": {"s1": {"op": "get", "key": "a"}}}),
        json!({"operations": [{"op": "get", "key": "a"}]}),
    ] {
        let e = kv.c.submit(req(data.clone())).expect_err("refused");
        assert_eq!(e.code(), Some("invalid_message"), "{data}: {e}");
    }
    assert_eq!(kv.read(json!({"s1": ["a"]})), json!({"s1": {"a": 1}}));
}

/// A kv participant against a fake coordinator: PREPAREs whose operations
/// are not a list (which a real coordinator never sends) are voted down
/// with `invalid_payload`, and the participant keeps serving.
#[test]
fn a_kv_participant_votes_down_operations_that_are_not_a_list() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake coordinator");
    let mut c = Cluster::new();
    c.port = listener.local_addr().expect("addr").port();
    c.start_participant(
        "s1",
        &["--resource", "kv", "--heartbeat-interval-ms", "20000"],
        &[],
    );
    let (stream, _) = listener.accept().expect("participant connects");
    let mut coord = RawConn::from_stream(stream);
    let hello = coord.recv().expect("hello");
    assert_eq!(hello["message_type"], "hello", "{hello}");
    coord.send(Body::Welcome {
        state: "READY".into(),
        term: None,
    });
    let mut prepare = |n: usize, data: Value| {
        let txn = TxnId(format!("fake-{n}"));
        coord.send(Body::Prepare {
            txn: txn.clone(),
            participants: vec!["s1".into()],
            data,
            term: None,
        });
        let vote = coord.recv_skip_heartbeats().expect("vote");
        assert_eq!(vote["transaction_id"], txn.0, "{vote}");
        vote
    };
    for (n, data) in [
        json!({"operations": {"op": "get", "key": "a"}}),
        json!({"operations": "get a"}),
        json!({"operations": 7}),
        json!("operations"),
    ]
    .into_iter()
    .enumerate()
    {
        let vote = prepare(n, data.clone());
        assert_eq!(vote["message_type"], "vote_abort", "{data}: {vote}");
        let reason = vote["payload"]["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("invalid_payload: "), "{data}: {vote}");
    }
    let vote = prepare(99, json!({"operations": [{"op": "get", "key": "a"}]}));
    assert_eq!(vote["message_type"], "vote_commit", "{vote}");
    assert_eq!(vote["payload"]["result"], json!({"a": null}), "{vote}");
}

/// Data a kv shard cannot hold as operations is voted down with a reason
/// that names the field, never committed as a transaction that changes
/// nothing: a misspelt top-level field, data without operations, a shard
/// the submit gave no operations, and an operation of the wrong shape.
#[test]
fn a_payload_that_is_not_operations_is_voted_down_not_committed_as_nothing() {
    let kv = two_shards();
    kv.commit(json!({"s1": [{"op": "put", "key": "a", "value": 1}]}));
    // Data the coordinator cannot split reaches both shards whole; the
    // first refusal decides, and the second is the same.
    let refused = |data: Value| -> String {
        let (id, o) = kv.c.submit(req(data.clone())).expect("submit");
        ["s1", "s2"]
            .iter()
            .find_map(|shard| refusal(&o, shard))
            .unwrap_or_else(|| panic!("{id} {data}: not refused: {o:?}"))
    };
    // `operation` for `operations`.
    let typo = json!({"operation": {"s1": [{"op": "put", "key": "a", "value": 2}]}});
    assert_eq!(
        refused(typo),
        "invalid_payload: unknown field `operation` in the data; the only field is `operations`, a list of operations",
    );
    assert_eq!(
        refused(json!({})),
        "invalid_payload: the data has no `operations`; send {\"operations\": [...]} with at least one operation for this participant"
    );
    // s2 is named, but has no operations of its own.
    let mut lopsided = req(json!({"operations": {"s1": [{"op": "put", "key": "a", "value": 3}]}}));
    lopsided.participants = Some(vec!["s1".into(), "s2".into()]);
    let (id, o) = kv.c.submit(lopsided).expect("submit");
    let why = refusal(&o, "s2").unwrap_or_else(|| panic!("{id}: {o:?}"));
    assert!(
        why.starts_with("invalid_payload: `operations` is empty"),
        "{why}"
    );
    // An operation of the wrong shape.
    let why = kv.refused_by(
        "s1",
        json!({"s1": [{"op": "put", "key": "a", "value": 4, "expected": 1}]}),
    );
    assert_eq!(
        why,
        "invalid_payload: operation 0: unknown field `expected`, expected one of `key`, `value`, `expect`"
    );
    let why = kv.refused_by("s1", json!({"s1": [["put", "a", 5]]}));
    assert!(
        why.starts_with("invalid_payload: operation 0: an array of 3 items is not an operation"),
        "{why}"
    );
    // Nothing of any of them was applied.
    assert_eq!(kv.read(json!({"s1": ["a"]})), json!({"s1": {"a": 1}}));
}

/// A heuristic outcome end to end on kv shards: the coordinator logs a
/// commit and dies; an operator, without asking, aborts one shard's part by
/// hand. When the coordinator returns, that shard cannot carry out the
/// commit: it logs the heuristic outcome and says so in its ACK; the
/// coordinator logs it, counts it and shows the transaction as
/// HEURISTIC_MIXED (never as a clean commit), before and after a restart.
#[test]
fn an_operator_abort_against_a_logged_commit_is_reported_as_heuristic_mixed() {
    let mut kv = Kv::new(
        2,
        &["--admin-port", "0"],
        &[("TWOPC_CRASH_AT", "coordinator.after_decision_logged")],
    );
    kv.shard("s1", None, &[], &[]);
    kv.shard("s2", None, &[], &[]);
    kv.ready(2);
    let ops = json!({"operations": {
        "s1": [{"op": "put", "key": "a", "value": 1}],
        "s2": [{"op": "put", "key": "b", "value": 1}],
    }});
    assert!(kv.c.submit(req(ops)).is_err(), "the coordinator dies first");
    let coordinator = kv.c.coordinator.as_mut().expect("coordinator");
    let status = coordinator.wait_exit(PATIENCE).expect("coordinator dies");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    kv.wait_held("s1", 1);
    kv.wait_held("s2", 1);
    let doubt = participant_txn_list(kv.admin("s2"), Some("in-doubt"));
    let id = doubt["transactions"][0]["transaction_id"]
        .as_str()
        .expect("s2 is in doubt")
        .to_string();

    let (code, _, err) = run_twopc(&[
        "txn",
        "resolve",
        &id,
        "--participant",
        kv.admin("s2"),
        "--abort",
        "--reason",
        "coordinator down too long",
        "--operator",
        "bob",
    ]);
    assert_eq!(code, 0, "{err}");

    let log = kv.c.coordinator.as_ref().expect("coordinator").log.clone();
    let mark = log_mark(&log);
    let proc = kv.c.restart_coordinator_with_env(&[]);
    let http = coordinator_http_addr(proc, mark);
    kv.ready(2);
    assert_eq!(settled_counts(&kv.c), (1, 0), "the commit ended");

    let show = |c: &Cluster| -> Value {
        let (code, out, err) =
            run_twopc(&["txn", "show", &id, "--coordinator", &c.addr(), "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).expect("txn show JSON")
    };
    let t = show(&kv.c);
    assert_eq!(t["state"], "HEURISTIC_MIXED", "{t}");
    assert_eq!(t["decision"], "commit", "{t}");
    assert_eq!(t["heuristics"]["s2"]["kind"], "mixed", "{t}");
    let detail = t["heuristics"]["s2"]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("an operator aborted this participant's part by hand")
            && detail.contains("coordinator down too long (by bob"),
        "{t}"
    );
    assert!(
        t["errors"]["s2"]
            .as_str()
            .is_some_and(|e| e.starts_with("heuristic mixed: ")),
        "{t}"
    );
    assert!(t["heuristics"].get("s1").is_none(), "s1 committed: {t}");
    let (code, out, err) = run_twopc(&[
        "txn",
        "list",
        "--coordinator",
        &kv.c.addr(),
        "--state",
        "heuristic",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).expect("txn list JSON");
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(
        listed["transactions"][0]["transaction_id"],
        id.as_str(),
        "{listed}"
    );

    let over_http: Value =
        serde_json::from_str(&http_get(&http, &format!("/transactions/{id}"))).expect("JSON");
    assert_eq!(over_http["state"], "HEURISTIC_MIXED", "{over_http}");
    let listed: Value =
        serde_json::from_str(&http_get(&http, "/transactions?state=heuristic")).expect("JSON");
    assert_eq!(listed["total"], 1, "{listed}");
    let metrics = http_get(&http, "/metrics");
    for want in [
        "twopc_heuristic_outcomes_total{kind=\"mixed\"} 1",
        "twopc_heuristic_outcomes_total{kind=\"hazard\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == want),
            "no `{want}` in\n{metrics}"
        );
    }

    // The data says the same: s1 committed, s2 rolled back.
    assert_eq!(
        kv.read(json!({"s1": ["a"], "s2": ["b"]})),
        json!({"s1": {"a": 1}, "s2": {"b": null}})
    );
    // s2 keeps the outcome in its log, and its view.
    let shown = ask_participant(
        kv.admin("s2"),
        Body::TxnShow {
            txn: TxnId(id.clone()),
        },
    )
    .expect("s2 txn show");
    assert_eq!(shown["heuristic_outcome"]["kind"], "mixed", "{shown}");
    assert_eq!(
        participant_txn_list(kv.admin("s2"), Some("heuristic"))["total"],
        1
    );
    let s2_dir = kv.c.participant_dir(kv.idx("s2"));
    let (_, r) = wal_inspect(&s2_dir);
    let logged = r["transactions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["transaction_id"] == id.as_str())
        .expect("s2's records")
        .clone();
    assert_eq!(
        logged["records"],
        json!(["prepared", "decided", "heuristic"]),
        "{logged}"
    );
    assert!(
        logged["state"]
            .as_str()
            .is_some_and(|s| s.contains("HEURISTIC MIXED at s2")),
        "{logged}"
    );

    // The coordinator's record survives its restart.
    kv.c.coordinator.as_mut().expect("coordinator").kill9();
    let mark = log_mark(&log);
    let proc = kv.c.restart_coordinator();
    let http = coordinator_http_addr(proc, mark);
    kv.ready(2);
    assert_eq!(show(&kv.c)["state"], "HEURISTIC_MIXED");
    let listed: Value =
        serde_json::from_str(&http_get(&http, "/transactions?state=heuristic")).expect("JSON");
    assert_eq!(listed["total"], 1, "{listed}");
    let (_, r) = wal_inspect(&kv.c.coordinator_dir());
    let logged = r["transactions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["transaction_id"] == id.as_str())
        .expect("the coordinator's records")
        .clone();
    assert_eq!(
        logged["records"],
        json!(["decision", "heuristic", "end"]),
        "{logged}"
    );
    assert_eq!(
        logged["heuristic_outcomes"][0]["participant"], "s2",
        "{logged}"
    );
}

/// A value of 512 KiB: it fits a frame (1 MiB by default), and 33 of them
/// outgrow one log record (`twopc::wal::RECORD_MAX_BYTES`, 16 MiB).
fn half_mib(c: char) -> Value {
    Value::String(c.to_string().repeat(512 * 1024))
}

/// A seed of `n` half-MiB values (`big-0`..) and one small key.
fn big_seed(n: usize) -> Value {
    let mut seed: serde_json::Map<String, Value> = (0..n)
        .map(|i| (format!("big-{i}"), half_mib('s')))
        .collect();
    seed.insert("small".into(), json!(1));
    Value::Object(seed)
}

/// A seed larger than one log record is kept: at the first start it is
/// logged as a snapshot split over several records, and it survives a
/// restart together with what was committed on top of it.
#[test]
fn a_seed_larger_than_a_log_record_is_kept() {
    let seed = big_seed(34);
    assert!(seed.to_string().len() > twopc::wal::RECORD_MAX_BYTES);
    let mut kv = Kv::new(1, &[], &[]);
    if let Err(log) = kv.try_shard("s1", Some(seed), &[], &[]) {
        panic!("a seed larger than a log record was refused:\n{log}");
    }
    kv.ready(1);
    let (code, r) = wal_inspect(&kv.c.participant_dir(kv.idx("s1")));
    assert!(code == 0 && r["corruption"].is_null(), "{r}");
    kv.commit(json!({"s1": [{"op": "put", "key": "after", "value": 1}]}));
    kv.proc_mut("s1").kill9();
    kv.restart("s1");
    kv.ready(1);
    assert_eq!(
        kv.read(json!({"s1": ["small", "after"]})),
        json!({"s1": {"small": 1, "after": 1}})
    );
    let r = kv.commit(json!({"s1": [{"op": "get", "key": "big-33"}]}));
    assert_eq!(r["s1"]["big-33"], half_mib('s'));
}

/// A store that commits its way past the size of one log record must not
/// be lost at the next checkpoint (which writes the whole store as one
/// snapshot record and deletes the older segments).
#[test]
fn a_store_larger_than_a_log_record_survives_a_checkpoint() {
    // The participant builds a 16 MiB snapshot on its event loop; in a debug
    // build on a loaded machine that can outlast the default liveness
    // timeout (5 heartbeats), which this test is not about.
    let mut kv = Kv::new(1, &["--heartbeat-failure-threshold", "60"], &[]);
    // 31 half-MiB values: just below the record limit.
    kv.shard(
        "s1",
        Some(big_seed(31)),
        &["--wal-segment-max-bytes", "4096"],
        &[],
    );
    kv.ready(1);
    let dir = kv.c.participant_dir(kv.idx("s1"));
    for (n, c) in ['a', 'b'].into_iter().enumerate() {
        let checkpoints = |kv: &Kv| kv.status("s1")["wal"]["checkpoints"].as_u64();
        let before = checkpoints(&kv);
        kv.commit(json!({"s1": [
            {"op": "put", "key": format!("extra-{n}"), "value": half_mib(c)},
            {"op": "put", "key": "n", "value": n},
        ]}));
        // Each big PREPARE checkpoints; the second one holds the first
        // commit, which makes the snapshot larger than a record.
        wait_participant(kv.admin("s1"), "a checkpoint", |s| {
            s["wal"]["checkpoints"].as_u64() > before
        });
    }
    let (code, r) = wal_inspect(&dir);
    assert!(
        code == 0 && r["corruption"].is_null(),
        "the checkpoint left a log that cannot be read back: {r}"
    );
    kv.proc_mut("s1").kill9();
    kv.restart("s1");
    kv.ready(1);
    assert_eq!(
        kv.read(json!({"s1": ["small", "n"]})),
        json!({"s1": {"small": 1, "n": 1}})
    );
    let r = kv.commit(json!({"s1": [{"op": "get", "key": "extra-0"}]}));
    assert_eq!(r["s1"]["extra-0"], half_mib('a'));
}

/// Shards s1 and s2, each seeded with `k0`..`k11` holding 100 kB strings:
/// six of them fit one frame (1 MiB by default), twelve do not.
fn shards_of_big_values() -> Kv {
    let value = Value::String("v".repeat(100_000));
    let seed: serde_json::Map<String, Value> =
        (0..12).map(|i| (format!("k{i}"), value.clone())).collect();
    let mut kv = Kv::new(2, &[], &[]);
    kv.shard("s1", Some(Value::Object(seed.clone())), &[], &[]);
    kv.shard("s2", Some(Value::Object(seed)), &[], &[]);
    kv.ready(2);
    kv
}

/// `get` operations for `k0`..`k{n-1}`.
fn gets_of_first(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"op": "get", "key": format!("k{i}")}))
        .collect()
}

/// Each shard's results fit a frame, together they do not: the client must
/// still learn the decision of a transaction that wrote.
#[test]
fn a_client_learns_the_decision_even_when_the_results_outgrow_a_frame() {
    let kv = shards_of_big_values();
    let mut s2 = gets_of_first(6);
    s2.push(json!({"op": "put", "key": "fresh", "value": 42}));
    let ops = json!({"s1": gets_of_first(6), "s2": s2});
    let told = kv.c.submit(req(json!({ "operations": ops })));
    let fresh = kv.read(json!({"s2": ["fresh"]}))["s2"]["fresh"].clone();
    let committed = fresh == json!(42);
    match told {
        Ok((id, o)) => assert_eq!(
            o.decision == Decision::Commit,
            committed,
            "{id}: told {:?} ({:?}) but `fresh` is {fresh}",
            o.decision,
            o.reason
        ),
        Err(e) => panic!(
            "the client got no decision ({e}), yet the transaction {}",
            if committed {
                "committed"
            } else {
                "did not commit"
            }
        ),
    }
}

/// One shard's results do not fit a frame: its vote carries a note saying
/// so instead of the results (never a dropped vote, which would cost it its
/// connection and abort the transaction), and the transaction commits.
#[test]
fn a_shard_whose_results_outgrow_a_frame_keeps_its_connection() {
    let kv = shards_of_big_values();
    let ops = json!({
        "s1": gets_of_first(12),
        "s2": [{"op": "put", "key": "fresh", "value": 42}],
    });
    let (id, o) = kv.run(ops);
    assert_eq!(o.decision, Decision::Commit, "{id}: {o:?}");
    let r = &o.results[&ParticipantId::from("s1")];
    assert_eq!(r["error"], "results_too_large", "{id}: {r}");
    assert_eq!(
        kv.read(json!({"s2": ["fresh"]})),
        json!({"s2": {"fresh": 42}}),
        "{id}"
    );
}

/// A seed larger than one log record is written as one checkpoint: a crash
/// at any step of it leaves all of the seed or none of it (and a restart then
/// seeds again), never the first chunks alone.
#[test]
fn a_crash_while_logging_a_large_seed_leaves_all_of_it_or_none() {
    // About 6 MB: two snapshot records of at most 4 MiB each.
    let keys = 3000;
    let value = "v".repeat(2000);
    let seed: serde_json::Map<String, Value> = (0..keys)
        .map(|i| (format!("k{i:05}"), json!(value)))
        .collect();
    let seed = Value::Object(seed);
    for point in POINTS.iter().filter(|p| p.starts_with("wal.checkpoint.")) {
        let mut kv = Kv::new(1, &[], &[]);
        let spec = format!("{point}:1");
        kv.try_shard("s1", Some(seed.clone()), &[], &[("TWOPC_CRASH_AT", &spec)])
            .unwrap_or_else(|log| panic!("{point}: s1 never opened its admin port:\n{log}"));
        let proc = kv.proc_mut("s1");
        let status = proc
            .wait_exit(PATIENCE)
            .unwrap_or_else(|| panic!("{point}: s1 did not die at its first checkpoint"));
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{point}: {status:?}");
        let log = proc.log_text();
        assert!(
            log.contains(&format!("crash point {point} reached")),
            "{point}: s1 died elsewhere:\n{log}"
        );
        kv.restart("s1");
        kv.ready(1);
        wait_participant(kv.admin("s1"), &format!("{point}: every seeded key"), |s| {
            s["resource"]["keys"] == keys
        });
        let (code, r) = wal_inspect(&kv.c.participant_dir(kv.idx("s1")));
        assert_eq!(code, 0, "{point}: {r}");
        // Once the old segment is gone only the new one remains; when the
        // crash came before that, the restart found no seed logged (or the
        // new segment beside an empty old one) and the seed is logged once.
        assert_eq!(r["snapshots"], 2, "{point}: the seed is two records: {r}");
    }
}

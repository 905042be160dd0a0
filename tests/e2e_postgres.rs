//! The `postgres` resource end to end: each test starts its own PostgreSQL
//! server (see `pg/mod.rs`), makes databases that act as shards, and runs
//! real coordinator and participant processes against them. What the
//! databases hold is checked directly, after commits, aborts and crashes,
//! and so is that nothing is left in `pg_prepared_xacts`.

mod common;
mod pg;

use common::*;
use pg::PgServer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use twopc::protocol::{Decision, Outcome, ParticipantId};

const SCHEMA: &str = "CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, \
                      balance bigint NOT NULL DEFAULT 0, note jsonb)";

/// Create each database in `dbs` with the `accounts` table.
fn shards(pg: &PgServer, dbs: &[&str]) {
    for db in dbs {
        pg.sql("postgres", &format!("CREATE DATABASE {db}"));
        pg.sql(db, SCHEMA);
    }
}

/// Start participant `id` on database `db` with `extra` flags and `env`.
fn start_pg_participant(
    c: &mut Cluster,
    pg: &PgServer,
    id: &str,
    db: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> usize {
    let dsn = pg.dsn(db);
    let mut args = vec!["--resource", "postgres", "--postgres-dsn", &dsn];
    args.extend_from_slice(extra);
    c.start_participant(id, &args, env)
}

/// A coordinator (`coordinator_args`) and participants p1..pn, participant
/// pi on database `dbs[i-1]`, all registered.
fn cluster(pg: &PgServer, dbs: &[&str], coordinator_args: &[&str]) -> Cluster {
    let mut c = Cluster::new();
    let n = dbs.len().to_string();
    let mut args = vec!["--expected-participants", &n];
    args.extend_from_slice(coordinator_args);
    c.start_coordinator(&args, &[]);
    for (i, db) in dbs.iter().enumerate() {
        start_pg_participant(&mut c, pg, &format!("p{}", i + 1), db, &[], &[]);
    }
    c.wait_ready(dbs.len());
    c
}

fn insert(id: i64, owner: &str, balance: i64) -> Value {
    json!({"table": "accounts", "operation": "insert",
           "values": {"id": id, "owner": owner, "balance": balance}})
}

/// `accounts` rows of `db` as (id, owner, balance), by id.
fn accounts(pg: &PgServer, db: &str) -> Vec<(String, String, String)> {
    pg.sql(db, "SELECT id, owner, balance FROM accounts ORDER BY id")
        .into_iter()
        .map(|r| {
            let s = |i: usize| r[i].clone().unwrap_or_default();
            (s(0), s(1), s(2))
        })
        .collect()
}

fn row(id: &str, owner: &str, balance: &str) -> (String, String, String) {
    (id.into(), owner.into(), balance.into())
}

/// Wait until every transaction has ended at the coordinator and no database
/// in `dbs` holds a prepared transaction any more (an acknowledgement can
/// precede the database's COMMIT PREPARED when a decision was re-sent, so the
/// coordinator's view alone does not say the data is visible). Returns the
/// coordinator's (committed, aborted) counts.
fn settled(c: &Cluster, pg: &PgServer, dbs: &[&str]) -> (u64, u64) {
    let counts = settled_counts(c);
    wait_nothing_prepared(pg, dbs);
    counts
}

/// Wait until no database in `dbs` holds a prepared transaction.
fn wait_nothing_prepared(pg: &PgServer, dbs: &[&str]) {
    let start = Instant::now();
    loop {
        let left: Vec<(String, Vec<String>)> = dbs
            .iter()
            .map(|db| (db.to_string(), pg.prepared(db)))
            .filter(|(_, p)| !p.is_empty())
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "transactions still prepared after {PATIENCE:?}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until database `db` holds `n` prepared transactions; returns them.
fn wait_prepared(pg: &PgServer, db: &str, n: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let p = pg.prepared(db);
        if p.len() == n {
            return p;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{db} holds prepared transactions {p:?}, expected {n}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `text` without ANSI colour sequences (the participants' logs have them).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            // ESC [ ... final letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

fn submit_ops(c: &Cluster, ops: Value) -> Outcome {
    c.submit(req(json!({ "operations": ops })))
        .expect("submit")
        .1
}

fn result_of(o: &Outcome, p: &str) -> Value {
    o.results
        .get(&ParticipantId::from(p))
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn operations_on_two_databases_commit_on_both() {
    let Some(pg) = PgServer::start_or_skip("operations_on_two_databases_commit_on_both", 20) else {
        return;
    };
    shards(&pg, &["shard1", "shard2"]);
    let c = cluster(&pg, &["shard1", "shard2"], &[]);

    let o = submit_ops(
        &c,
        json!({"p1": [insert(1, "alice", 100)], "p2": [insert(2, "bob", 50)]}),
    );
    assert_eq!(o.decision, Decision::Commit, "{o:?}");
    assert_eq!(result_of(&o, "p1"), json!({"rows_affected": [1]}));
    settled(&c, &pg, &["shard1", "shard2"]);
    assert_eq!(accounts(&pg, "shard1"), vec![row("1", "alice", "100")]);
    assert_eq!(accounts(&pg, "shard2"), vec![row("2", "bob", "50")]);

    // Update, delete, text for a number column, an object for jsonb.
    let o = submit_ops(
        &c,
        json!({
            "p1": [{"table": "accounts", "operation": "update",
                    "values": {"balance": "70", "note": {"moved": 30}}, "where": {"id": 1}}],
            "p2": [{"table": "public.accounts", "operation": "delete", "where": {"id": 2}},
                   insert(3, "carol", 30)]
        }),
    );
    assert_eq!(o.decision, Decision::Commit, "{o:?}");
    assert_eq!(result_of(&o, "p2"), json!({"rows_affected": [1, 1]}));
    settled(&c, &pg, &["shard1", "shard2"]);
    assert_eq!(accounts(&pg, "shard1"), vec![row("1", "alice", "70")]);
    assert_eq!(
        pg.sql("shard1", "SELECT note->>'moved' FROM accounts"),
        vec![vec![Some("30".to_string())]]
    );
    assert_eq!(accounts(&pg, "shard2"), vec![row("3", "carol", "30")]);
}

#[test]
fn a_constraint_violation_on_one_database_aborts_both() {
    let Some(pg) =
        PgServer::start_or_skip("a_constraint_violation_on_one_database_aborts_both", 20)
    else {
        return;
    };
    shards(&pg, &["shard1", "shard2"]);
    pg.sql(
        "shard2",
        "INSERT INTO accounts (id, owner) VALUES (2, 'taken')",
    );
    let c = cluster(&pg, &["shard1", "shard2"], &[]);

    let o = submit_ops(
        &c,
        json!({"p1": [insert(10, "alice", 1)], "p2": [insert(2, "bob", 1)]}),
    );
    assert_eq!(o.decision, Decision::Abort, "{o:?}");
    let reason = o.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("p2") && reason.contains("duplicate key") && reason.contains("23505"),
        "the reason names the participant and the database's message: {reason}"
    );
    settled(&c, &pg, &["shard1", "shard2"]);
    assert_eq!(
        accounts(&pg, "shard1"),
        vec![],
        "p1's insert was rolled back"
    );
    assert_eq!(accounts(&pg, "shard2"), vec![row("2", "taken", "0")]);
}

/// A participant killed right after PREPARE TRANSACTION (its vote logged,
/// then sent or not) finds the prepared transaction at restart, keeps it,
/// learns the decision from the coordinator and applies it. Killed before
/// its vote left, it is gone before voting, so the coordinator aborts (the
/// kv twin in e2e_kv pins the same); killed after, the decision depends on
/// whether the vote was read before the connection broke, and the test
/// checks that what the client was told is what both databases hold.
#[test]
fn a_participant_killed_after_prepare_transaction_resolves_it_on_restart() {
    let Some(pg) = PgServer::start_or_skip(
        "a_participant_killed_after_prepare_transaction_resolves_it_on_restart",
        20,
    ) else {
        return;
    };
    let points = [
        ("participant.after_prepare_logged", Some(Decision::Abort)),
        ("participant.after_vote_sent", None),
    ];
    for (n, (point, want)) in points.iter().enumerate() {
        let (db1, db2) = (format!("crash{n}a"), format!("crash{n}b"));
        shards(&pg, &[&db1, &db2]);
        let mut c = Cluster::new();
        c.start_coordinator(
            &["--expected-participants", "2", "--timeout-seconds", "5"],
            &[],
        );
        let crash = [("TWOPC_CRASH_AT", *point)];
        start_pg_participant(&mut c, &pg, "p1", &db1, &[], &crash);
        start_pg_participant(&mut c, &pg, "p2", &db2, &[], &[]);
        c.wait_ready(2);

        let addr = c.addr();
        let data =
            json!({"operations": {"p1": [insert(1, "alice", 5)], "p2": [insert(2, "bob", 5)]}});
        let client = std::thread::spawn(move || submit_to(&addr, req(data)));
        assert!(
            c.participants[0].wait_exit(PATIENCE).is_some(),
            "{point}: p1 did not crash"
        );
        let held = wait_prepared(&pg, &db1, 1);
        assert!(held[0].starts_with("twopc:p1:"), "{point}: {held:?}");

        let dsn = pg.dsn(&db1);
        c.restart_participant(0, &["--resource", "postgres", "--postgres-dsn", &dsn], &[]);
        let (_, o) = client
            .join()
            .expect("client thread")
            .unwrap_or_else(|e| panic!("{point}: submit failed: {e}"));
        eprintln!("{point}: the coordinator decided {}", o.decision);
        if let Some(want) = want {
            assert_eq!(o.decision, *want, "{point}: {o:?}");
        }
        settled(&c, &pg, &[&db1, &db2]);
        let (rows1, rows2) = (accounts(&pg, &db1), accounts(&pg, &db2));
        match o.decision {
            Decision::Commit => {
                assert_eq!(rows1, vec![row("1", "alice", "5")], "{point}");
                assert_eq!(rows2, vec![row("2", "bob", "5")], "{point}");
            }
            Decision::Abort => {
                assert_eq!((rows1, rows2), (vec![], vec![]), "{point}: {o:?}");
            }
        }
        let log = plain(&c.participants[0].log_text());
        assert!(
            log.contains("kept=1"),
            "{point}: the restarted p1 kept its in-doubt transaction; log:\n{log}"
        );
    }
}

/// A prepared transaction with this participant's prefix that its log does
/// not know (the process died between PREPARE TRANSACTION and logging its
/// vote) is rolled back at start; other prepared transactions are left.
#[test]
fn a_prepared_transaction_the_log_never_heard_of_is_rolled_back_at_start() {
    let Some(pg) = PgServer::start_or_skip(
        "a_prepared_transaction_the_log_never_heard_of_is_rolled_back_at_start",
        20,
    ) else {
        return;
    };
    shards(&pg, &["shard1"]);
    for (id, gid) in [
        (99, "twopc:p1:orphan-1"),
        (98, "twopc:p9:t-1"),
        (97, "someone-else"),
    ] {
        pg.sql(
            "shard1",
            &format!(
                "BEGIN; INSERT INTO accounts (id, owner) VALUES ({id}, 'x'); \
                 PREPARE TRANSACTION '{gid}'"
            ),
        );
    }
    let c = cluster(&pg, &["shard1"], &[]);
    assert_eq!(
        pg.prepared("shard1"),
        vec!["someone-else".to_string(), "twopc:p9:t-1".to_string()]
    );
    let log = c.participants[0].log_text();
    assert!(
        log.contains("rolling back a prepared transaction the log does not know"),
        "{log}"
    );
    pg.sql("shard1", "COMMIT PREPARED 'someone-else'");
    pg.sql("shard1", "ROLLBACK PREPARED 'twopc:p9:t-1'");
    assert_eq!(accounts(&pg, "shard1"), vec![row("97", "x", "0")]);

    // The participant still works afterwards.
    let o = submit_ops(&c, json!({"p1": [insert(1, "alice", 1)]}));
    assert_eq!(o.decision, Decision::Commit, "{o:?}");
}

/// The coordinator dies right after logging commit: both databases hold
/// the transaction prepared, and the restarted coordinator commits it.
#[test]
fn a_coordinator_killed_after_deciding_commit_commits_both_on_restart() {
    let Some(pg) = PgServer::start_or_skip(
        "a_coordinator_killed_after_deciding_commit_commits_both_on_restart",
        20,
    ) else {
        return;
    };
    shards(&pg, &["shard1", "shard2"]);
    let mut c = Cluster::new();
    c.start_coordinator(
        &["--expected-participants", "2"],
        &[("TWOPC_CRASH_AT", "coordinator.after_decision_logged")],
    );
    let dsn = pg.dsn("shard1");
    let (_, admin) = c.start_participant_admin(
        "p1",
        &["--resource", "postgres", "--postgres-dsn", &dsn],
        &[],
    );
    start_pg_participant(&mut c, &pg, "p2", "shard2", &[], &[]);
    c.wait_ready(2);

    let sent = c.submit(req(json!({"operations":
        {"p1": [insert(1, "alice", 7)], "p2": [insert(2, "bob", 7)]}})));
    assert!(
        sent.is_err(),
        "the coordinator died before answering: {sent:?}"
    );
    let coordinator = c.coordinator.as_mut().expect("coordinator");
    assert!(
        coordinator.wait_exit(PATIENCE).is_some(),
        "coordinator did not crash"
    );
    for db in ["shard1", "shard2"] {
        let held = wait_prepared(&pg, db, 1);
        assert!(held[0].starts_with("twopc:p"), "{held:?}");
        assert_eq!(accounts(&pg, db), vec![], "{db}: not visible before commit");
    }
    wait_participant(&admin, "one prepared transaction held", |s| {
        s["resource"]["prepared"] == 1
    });

    c.restart_coordinator_with_env(&[]);
    c.wait_ready(2);
    let (committed, _) = settled(&c, &pg, &["shard1", "shard2"]);
    assert_eq!(committed, 1);
    let s = wait_participant(&admin, "nothing held", |s| s["resource"]["prepared"] == 0);
    assert_eq!(s["resource"]["connections"]["max"], 8, "{s}");
    assert_eq!(accounts(&pg, "shard1"), vec![row("1", "alice", "7")]);
    assert_eq!(accounts(&pg, "shard2"), vec![row("2", "bob", "7")]);
}

/// Applying a decision is retried while the database is down, and a
/// prepared transaction that vanished is checked, not assumed, to have
/// ended the way the decision says: finished by hand the same way is done,
/// the other way is reported as a heuristic outcome.
#[test]
fn decisions_are_retried_while_the_database_is_down_and_checked_when_gone() {
    let Some(mut pg) = PgServer::start_or_skip(
        "decisions_are_retried_while_the_database_is_down_and_checked_when_gone",
        20,
    ) else {
        return;
    };
    let dbs = ["shard1", "shard2", "shard3"];
    shards(&pg, &dbs);
    let mut c = Cluster::new();
    c.start_coordinator(
        &["--expected-participants", "3"],
        &[("TWOPC_CRASH_AT", "coordinator.after_decision_logged")],
    );
    for (i, db) in dbs.iter().enumerate() {
        start_pg_participant(&mut c, &pg, &format!("p{}", i + 1), db, &[], &[]);
    }
    c.wait_ready(3);
    let ops: serde_json::Map<String, Value> = (1..=3)
        .map(|i| (format!("p{i}"), json!([insert(i, "x", i)])))
        .collect();
    assert!(c.submit(req(json!({ "operations": ops }))).is_err());
    let coordinator = c.coordinator.as_mut().expect("coordinator");
    assert!(
        coordinator.wait_exit(PATIENCE).is_some(),
        "coordinator did not crash"
    );
    let gids: Vec<String> = dbs
        .iter()
        .map(|db| wait_prepared(&pg, db, 1).remove(0))
        .collect();

    // An operator finishes p2's transaction as decided and p3's the other way.
    pg.sql("shard2", &format!("COMMIT PREPARED '{}'", gids[1]));
    pg.sql("shard3", &format!("ROLLBACK PREPARED '{}'", gids[2]));
    pg.stop();
    let marks: Vec<u64> = c.participants.iter().map(|p| log_mark(&p.log)).collect();
    c.restart_coordinator_with_env(&[]);
    wait_log(&mut c.participants[0], marks[0], "cannot apply commit yet");
    pg.resume().expect("restart PostgreSQL");

    let (committed, _) = settled(&c, &pg, &dbs);
    assert_eq!(committed, 1);
    assert_eq!(accounts(&pg, "shard1"), vec![row("1", "x", "1")]);
    assert_eq!(accounts(&pg, "shard2"), vec![row("2", "x", "2")]);
    assert_eq!(accounts(&pg, "shard3"), vec![], "rolled back by hand");
    // Every ACK waited for its finish, so these lines are written; the log
    // writer may still be flushing them.
    let p2 = wait_log(
        &mut c.participants[1],
        marks[1],
        "finished earlier: transaction",
    );
    assert!(
        p2.contains("is committed") && !p2.contains("HEURISTIC"),
        "{p2}"
    );
    let p3 = wait_log(&mut c.participants[2], marks[2], "HEURISTIC OUTCOME");
    assert!(p3.contains(&gids[2]), "p3 names the transaction:\n{p3}");
    // Only p3's part is reported to the coordinator.
    let id = gids[0].strip_prefix("twopc:p1:").expect("p1's gid");
    let (code, out, err) = run_twopc(&["txn", "show", id, "--coordinator", &c.addr(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let t: Value = serde_json::from_str(&out).expect("txn show JSON");
    assert_eq!(t["state"], "HEURISTIC_MIXED", "{t}");
    let reported: Vec<&String> = t["heuristics"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert_eq!(reported, ["p3"], "{t}");
}

/// The heuristic outcome of the case above, end to end and on its own: the
/// coordinator logs commit and is killed; an operator runs ROLLBACK PREPARED
/// by hand on db2's prepared transaction; the coordinator comes back. db2
/// cannot commit what is gone the other way: it logs the heuristic outcome
/// and reports it in its ACK, and the coordinator logs it too and shows the
/// transaction as HEURISTIC_MIXED in `txn show`, `txn list --state
/// heuristic`, the HTTP API and `twopc_heuristic_outcomes_total`, never as
/// a clean commit.
#[test]
fn a_prepared_transaction_rolled_back_by_hand_is_reported_as_heuristic_mixed() {
    let Some(pg) = PgServer::start_or_skip(
        "a_prepared_transaction_rolled_back_by_hand_is_reported_as_heuristic_mixed",
        20,
    ) else {
        return;
    };
    let dbs = ["shard1", "shard2"];
    shards(&pg, &dbs);
    let mut c = Cluster::new();
    c.start_coordinator(
        &["--expected-participants", "2", "--admin-port", "0"],
        &[("TWOPC_CRASH_AT", "coordinator.after_decision_logged")],
    );
    start_pg_participant(&mut c, &pg, "db1", "shard1", &[], &[]);
    start_pg_participant(&mut c, &pg, "db2", "shard2", &[], &[]);
    c.wait_ready(2);
    let ops = json!({"db1": [insert(1, "alice", 10)], "db2": [insert(2, "bob", 20)]});
    assert!(c.submit(req(json!({ "operations": ops }))).is_err());
    let coordinator = c.coordinator.as_mut().expect("coordinator");
    assert!(
        coordinator.wait_exit(PATIENCE).is_some(),
        "coordinator did not crash"
    );
    wait_prepared(&pg, "shard1", 1);
    let gid = wait_prepared(&pg, "shard2", 1).remove(0);
    let id = gid
        .strip_prefix("twopc:db2:")
        .unwrap_or_else(|| panic!("db2's gid: {gid}"))
        .to_string();

    pg.sql("shard2", &format!("ROLLBACK PREPARED '{gid}'"));
    let log = c.coordinator.as_ref().expect("coordinator").log.clone();
    let mark = log_mark(&log);
    let proc = c.restart_coordinator_with_env(&[]);
    let http = coordinator_http_addr(proc, mark);
    c.wait_ready(2);
    assert_eq!(settled(&c, &pg, &dbs), (1, 0), "the commit ended");
    assert_eq!(accounts(&pg, "shard1"), vec![row("1", "alice", "10")]);
    assert_eq!(accounts(&pg, "shard2"), vec![], "rolled back by hand");

    let (code, out, err) = run_twopc(&["txn", "show", &id, "--coordinator", &c.addr(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let t: Value = serde_json::from_str(&out).expect("txn show JSON");
    assert_eq!(t["state"], "HEURISTIC_MIXED", "{t}");
    assert_eq!(t["decision"], "commit", "{t}");
    assert_eq!(t["acks"], json!(["db1", "db2"]), "{t}");
    assert_eq!(t["heuristics"]["db2"]["kind"], "mixed", "{t}");
    let detail = t["heuristics"]["db2"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        detail.starts_with("the database has aborted prepared transaction")
            && detail.contains(&gid)
            && detail.contains("by hand"),
        "the detail says what the database holds and names the gid: {t}"
    );
    assert!(
        t["errors"]["db2"]
            .as_str()
            .is_some_and(|e| e.starts_with("heuristic mixed: ")),
        "{t}"
    );
    assert!(t["heuristics"].get("db1").is_none(), "{t}");
    let (code, out, err) = run_twopc(&[
        "txn",
        "list",
        "--coordinator",
        &c.addr(),
        "--state",
        "heuristic",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).expect("txn list JSON");
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(listed["transactions"][0]["transaction_id"], id.as_str());
    assert_eq!(listed["transactions"][0]["state"], "HEURISTIC_MIXED");

    let over_http: Value =
        serde_json::from_str(&http_get(&http, &format!("/transactions/{id}"))).expect("JSON");
    assert_eq!(over_http["state"], "HEURISTIC_MIXED", "{over_http}");
    assert_eq!(
        over_http["heuristics"]["db2"]["kind"], "mixed",
        "{over_http}"
    );
    let listed: Value =
        serde_json::from_str(&http_get(&http, "/transactions?state=heuristic")).expect("JSON");
    assert_eq!(listed["total"], 1, "{listed}");
    let metrics = http_get(&http, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "twopc_heuristic_outcomes_total{kind=\"mixed\"} 1"),
        "{metrics}"
    );

    // Both logs say so, not just "commit".
    for (dir, records, role) in [
        (
            c.participant_dir(1),
            json!(["prepared", "decided", "heuristic"]),
            "db2",
        ),
        (
            c.coordinator_dir(),
            json!(["decision", "heuristic", "end"]),
            "coordinator",
        ),
    ] {
        let (_, r) = wal_inspect(&dir);
        let logged = r["transactions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["transaction_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{role}: no records of {id}: {r}"))
            .clone();
        assert_eq!(logged["records"], records, "{role}: {logged}");
        assert!(
            logged["state"]
                .as_str()
                .is_some_and(|s| s.contains("HEURISTIC MIXED at db2")),
            "{role}: {logged}"
        );
    }
}

/// A PostgreSQL participant votes abort, naming the field, for data that
/// is not a non-empty list of operations of the right shape, where it used
/// to commit without touching the database.
#[test]
fn a_payload_that_is_not_operations_is_voted_down_by_postgres() {
    let Some(pg) = PgServer::start_or_skip(
        "a_payload_that_is_not_operations_is_voted_down_by_postgres",
        20,
    ) else {
        return;
    };
    let dbs = ["shard1", "shard2"];
    shards(&pg, &dbs);
    let c = cluster(&pg, &dbs, &[]);
    let refused = |data: Value, participants: Option<&[&str]>| -> String {
        let mut r = req(data.clone());
        r.participants =
            participants.map(|ps| ps.iter().map(|p| ParticipantId::from(*p)).collect());
        let (_, o) = c.submit(r).expect("submit");
        assert_eq!(o.decision, Decision::Abort, "{data}: {o:?}");
        o.reason.unwrap_or_default()
    };
    let why = refused(
        json!({"operation": {"p1": [insert(1, "alice", 1)]}}),
        Some(&["p1"]),
    );
    assert_eq!(
        why,
        "participant p1 voted abort: invalid_payload: unknown field `operation` in the data; the only field is `operations`, a list of operations"
    );
    let why = refused(json!({"note": "no operations"}), Some(&["p1"]));
    assert!(why.ends_with("invalid_payload: unknown field `note` in the data; the only field is `operations`, a list of operations"), "{why}");
    let why = refused(Value::Null, Some(&["p1"]));
    assert!(
        why.starts_with("participant p1 voted abort: invalid_payload: no data"),
        "{why}"
    );
    // p2 is named, but the operations are all p1's.
    let why = refused(
        json!({"operations": {"p1": [insert(1, "alice", 1)]}}),
        Some(&["p1", "p2"]),
    );
    assert!(
        why.starts_with("participant p2 voted abort: invalid_payload: `operations` is empty"),
        "{why}"
    );
    // An operation of the wrong shape.
    let why = refused(
        json!({"operations": {"p1": [{"table": "accounts", "operation": "insert",
                                      "value": {"id": 1, "owner": "x"}}]}}),
        None,
    );
    assert_eq!(
        why,
        "participant p1 voted abort: invalid_payload: operation 0: unknown field `value`, expected one of `table`, `operation`, `values`, `where`"
    );
    settled(&c, &pg, &dbs);
    assert_eq!(accounts(&pg, "shard1"), vec![], "nothing was applied");
    assert_eq!(accounts(&pg, "shard2"), vec![]);
}

#[test]
fn a_server_without_max_prepared_transactions_is_refused_at_start() {
    let Some(pg) = PgServer::start_or_skip(
        "a_server_without_max_prepared_transactions_is_refused_at_start",
        0,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().to_string();
    let dsn = pg.dsn("postgres");
    let mut cmd = clean_command(PARTICIPANT);
    cmd.args(["--id", "p1", "--coordinator-port", &port, "--data-dir"])
        .arg(dir.path())
        .args(["--resource", "postgres", "--postgres-dsn", &dsn]);
    let (code, _, err) = run_bounded(&mut cmd, PATIENCE);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the resource could not start")
            && err.contains("max_prepared_transactions = 0")
            && err.contains("postgresql.conf")
            && err.contains("restart the server"),
        "the message names the setting and what to do: {err}"
    );
}

#[test]
fn raw_sql_is_refused_unless_allowed() {
    let Some(pg) = PgServer::start_or_skip("raw_sql_is_refused_unless_allowed", 20) else {
        return;
    };
    shards(&pg, &["shard1", "shard2"]);
    let mut c = Cluster::new();
    c.start_coordinator(&["--expected-participants", "2"], &[]);
    start_pg_participant(&mut c, &pg, "p1", "shard1", &[], &[]);
    start_pg_participant(
        &mut c,
        &pg,
        "p2",
        "shard2",
        &["--postgres-allow-raw-sql"],
        &[],
    );
    c.wait_ready(2);
    let raw = json!([{"sql": "INSERT INTO accounts (id, owner, balance) VALUES ($1, $2, $3 * 2)",
                      "params": [5, "raw", 21]}]);

    let o = submit_ops(&c, json!({ "p1": raw }));
    assert_eq!(o.decision, Decision::Abort, "{o:?}");
    let reason = o.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("raw_sql_disabled") && reason.contains("postgres.allow_raw_sql"),
        "{reason}"
    );

    let o = submit_ops(&c, json!({ "p2": raw }));
    assert_eq!(o.decision, Decision::Commit, "{o:?}");
    settled(&c, &pg, &["shard1", "shard2"]);
    assert_eq!(accounts(&pg, "shard1"), vec![]);
    assert_eq!(accounts(&pg, "shard2"), vec![row("5", "raw", "42")]);

    // Even when allowed, raw SQL may not end the transaction early.
    let o = submit_ops(&c, json!({"p2": [{"sql": "COMMIT"}]}));
    assert_eq!(o.decision, Decision::Abort, "{o:?}");
    wait_nothing_prepared(&pg, &["shard1", "shard2"]);
}

#[test]
fn invalid_identifiers_and_values_vote_abort() {
    let Some(pg) = PgServer::start_or_skip("invalid_identifiers_and_values_vote_abort", 20) else {
        return;
    };
    shards(&pg, &["shard1"]);
    let c = cluster(&pg, &["shard1"], &[]);
    let cases = [
        (
            json!({"table": "accounts; DROP TABLE accounts", "operation": "insert",
                   "values": {"id": 1, "owner": "x"}}),
            "not a valid identifier",
        ),
        (
            json!({"table": "accounts", "operation": "insert",
                   "values": {"id": 1, "owner\" text); --": "x"}}),
            "not a valid identifier",
        ),
        (
            json!({"table": "accounts", "operation": "delete", "where": {}}),
            "needs `where`",
        ),
        (
            json!({"table": "accounts", "operation": "insert",
                   "values": {"id": "one", "owner": "x"}}),
            "22P02",
        ),
        (
            json!({"table": "missing", "operation": "insert", "values": {"id": 1}}),
            "does not exist",
        ),
    ];
    for (op, needle) in cases {
        let o = submit_ops(&c, json!({ "p1": [op.clone()] }));
        assert_eq!(o.decision, Decision::Abort, "{op}: {o:?}");
        let reason = o.reason.clone().unwrap_or_default();
        assert!(reason.contains(needle), "{op}: {reason}");
    }
    // A value with quotes and semicolons is data, never SQL.
    let evil = "x'); DROP TABLE accounts; --";
    let o = submit_ops(
        &c,
        json!({"p1": [{"table": "accounts", "operation": "insert",
                       "values": {"id": 1, "owner": evil}}]}),
    );
    assert_eq!(o.decision, Decision::Commit, "{o:?}");
    settled(&c, &pg, &["shard1"]);
    assert_eq!(accounts(&pg, "shard1"), vec![row("1", evil, "0")]);
}

/// Configuration errors need no server: a missing dsn is refused with the
/// key's name (exit 2), an unreachable server with its address (exit 1),
/// and neither message shows the password.
#[test]
fn configuration_errors_name_the_key_and_hide_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().to_string();
    let run = |extra: &[&str]| {
        let mut cmd = clean_command(PARTICIPANT);
        cmd.args(["--id", "p1", "--coordinator-port", &port, "--data-dir"])
            .arg(dir.path())
            .args(["--resource", "postgres"])
            .args(extra);
        run_bounded(&mut cmd, PATIENCE)
    };

    let (code, _, err) = run(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("postgres.dsn") && err.contains("required"),
        "{err}"
    );

    let nobody = free_port();
    let dsn = format!("host=127.0.0.1 port={nobody} user=app password=hunter2 dbname=shop");
    let (code, _, err) = run(&["--postgres-dsn", &dsn, "--postgres-max-connections", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("postgres.max_connections"), "{err}");

    let (code, _, err) = run(&["--postgres-dsn", &dsn]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "cannot connect to PostgreSQL at app@127.0.0.1:{nobody}/shop"
        )),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "the password leaked: {err}");

    let (code, _, err) = run(&["--postgres-dsn", "host=x password=hunter2 nonsense=1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("postgres.dsn") && !err.contains("hunter2"),
        "{err}"
    );
}

/// A server with `ssl=on` and a certificate for 127.0.0.1 signed by a test
/// CA; returns it and the CA file.
fn tls_server(test: &str, certs: &std::path::Path) -> Option<(PgServer, std::path::PathBuf)> {
    let ca = certs.join("ca.pem");
    let pg = PgServer::start_or_skip_with(test, 10, |files| {
        let dir = files.dir.join("tls");
        let g = twopc::security::tls::generate_test_certificates(
            &dir,
            &["127.0.0.1".into(), "localhost".into()],
            1,
        )
        .map_err(|e| e.to_string())?;
        for f in [&dir, &g.cert_file, &g.key_file] {
            files.give(f)?;
        }
        std::fs::copy(&g.ca_file, certs.join("ca.pem")).map_err(|e| e.to_string())?;
        Ok(vec![
            "ssl=on".into(),
            format!("ssl_cert_file={}", g.cert_file.display()),
            format!("ssl_key_file={}", g.key_file.display()),
        ])
    })?;
    Some((pg, ca))
}

/// Whether every connection of the participants uses TLS, and how many.
fn participant_connections_ssl(pg: &PgServer) -> Vec<String> {
    pg.sql(
        "postgres",
        "SELECT s.ssl::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'twopc-participant'",
    )
    .into_iter()
    .filter_map(|mut r| r.remove(0))
    .collect()
}

#[test]
fn connections_to_the_database_use_tls_and_check_the_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let Some((pg, ca)) = tls_server("tls", certs.path()) else {
        return;
    };
    shards(&pg, &["s1"]);
    let mut c = Cluster::new();
    c.start_coordinator(&["--expected-participants", "1"], &[]);
    let dsn = format!("{} sslmode=verify-full", pg.dsn("s1"));
    let ca_s = ca.display().to_string();
    c.start_participant(
        "p1",
        &[
            "--resource",
            "postgres",
            "--postgres-dsn",
            &dsn,
            "--postgres-ca-file",
            &ca_s,
        ],
        &[],
    );
    c.wait_ready(1);
    let o = submit_ops(&c, json!({"p1": [insert(1, "ann", 10)]}));
    assert_eq!(o.decision, Decision::Commit, "{:?}", o.reason);
    // The outcome can reach the client before COMMIT PREPARED has run.
    settled(&c, &pg, &["s1"]);
    assert_eq!(accounts(&pg, "s1"), vec![row("1", "ann", "10")]);
    let ssl = participant_connections_ssl(&pg);
    assert!(
        !ssl.is_empty() && ssl.iter().all(|s| s == "true"),
        "{ssl:?}"
    );

    // A CA that did not sign the server's certificate: no connection.
    let other = tempfile::tempdir().unwrap();
    let g = twopc::security::tls::generate_test_certificates(other.path(), &[], 1).unwrap();
    let other_ca = g.ca_file.display().to_string();
    let mut c2 = Cluster::new();
    c2.start_coordinator(&["--expected-participants", "1"], &[]);
    c2.start_participant(
        "p1",
        &[
            "--resource",
            "postgres",
            "--postgres-dsn",
            &dsn,
            "--postgres-ca-file",
            &other_ca,
        ],
        &[],
    );
    let status = c2.participants[0].wait_exit(PATIENCE);
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    let log = c2.participants[0].log_text();
    assert!(log.contains("cannot connect to PostgreSQL"), "{log}");

    // A verifying mode without a CA file is refused, never downgraded.
    let mut c3 = Cluster::new();
    c3.start_coordinator(&["--expected-participants", "1"], &[]);
    c3.start_participant(
        "p1",
        &["--resource", "postgres", "--postgres-dsn", &dsn],
        &[],
    );
    let status = c3.participants[0].wait_exit(PATIENCE);
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    assert!(
        c3.participants[0]
            .log_text()
            .contains("need postgres.ca_file"),
        "{}",
        c3.participants[0].log_text()
    );

    // sslmode=require without a CA file encrypts (and works).
    let dsn = format!("{} sslmode=require", pg.dsn("s1"));
    let mut c4 = Cluster::new();
    c4.start_coordinator(&["--expected-participants", "1"], &[]);
    c4.start_participant(
        "p1",
        &["--resource", "postgres", "--postgres-dsn", &dsn],
        &[],
    );
    c4.wait_ready(1);
    let o = submit_ops(&c4, json!({"p1": [insert(2, "bo", 5)]}));
    assert_eq!(o.decision, Decision::Commit, "{:?}", o.reason);
}

#[test]
fn table_operations_outside_the_allowed_schemas_vote_abort() {
    let Some(pg) = PgServer::start_or_skip("schemas", 10) else {
        return;
    };
    shards(&pg, &["s1"]);
    pg.sql(
        "s1",
        "CREATE SCHEMA hidden; CREATE TABLE hidden.t (id int PRIMARY KEY)",
    );
    let c = cluster(&pg, &["s1"], &[]);
    let update_authid = json!({"table": "pg_catalog.pg_authid", "operation": "update",
        "values": {"rolsuper": true}, "where": {"rolname": "postgres"}});
    let unqualified = json!({"table": "pg_authid", "operation": "update",
        "values": {"rolsuper": true}, "where": {"rolname": "postgres"}});
    let off_path = json!({"table": "hidden.t", "operation": "insert", "values": {"id": 1}});
    for op in [update_authid, unqualified, off_path] {
        let o = submit_ops(&c, json!({ "p1": [op] }));
        assert_eq!(o.decision, Decision::Abort, "{op}");
        let why = o.reason.unwrap_or_default();
        assert!(why.contains("schema_not_allowed"), "{op}: {why}");
    }
    assert!(pg.sql("s1", "SELECT * FROM hidden.t").is_empty());
    let o = submit_ops(
        &c,
        json!({"p1": [{"table": "public.accounts", "operation": "insert",
                       "values": {"id": 1, "owner": "ann", "balance": 1}}]}),
    );
    assert_eq!(o.decision, Decision::Commit, "{:?}", o.reason);

    // An explicit list allows a schema off the search path.
    let mut c2 = Cluster::new();
    c2.start_coordinator(&["--expected-participants", "1"], &[]);
    start_pg_participant(
        &mut c2,
        &pg,
        "p1",
        "s1",
        &["--postgres-allowed-schemas", "hidden,public"],
        &[],
    );
    c2.wait_ready(1);
    let o = submit_ops(
        &c2,
        json!({"p1": [{"table": "hidden.t", "operation": "insert", "values": {"id": 2}}]}),
    );
    assert_eq!(o.decision, Decision::Commit, "{:?}", o.reason);
}

#[test]
fn the_password_comes_from_a_file_or_the_environment_and_one_in_the_dsn_warns() {
    let Some(pg) = PgServer::start_or_skip("password", 10) else {
        return;
    };
    shards(&pg, &["s1"]);
    pg.sql(
        "s1",
        "CREATE ROLE app LOGIN PASSWORD 'open sesame'; GRANT ALL ON accounts TO app",
    );
    // `app` must give its password; everyone else keeps trust.
    let hba = pg.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all app 127.0.0.1/32 scram-sha-256\n{old}"),
    )
    .unwrap();
    pg.reload();
    let dsn = format!("host=127.0.0.1 port={} user=app dbname=s1", pg.port);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpass");
    std::fs::write(&file, "open sesame\n").unwrap();
    let file_s = file.display().to_string();

    let mut c = Cluster::new();
    c.start_coordinator(&["--expected-participants", "1"], &[]);
    let args = ["--resource", "postgres", "--postgres-dsn", &dsn];
    let with_file = [&args[..], &["--postgres-password-file", &file_s]].concat();
    c.start_participant("p1", &with_file, &[]);
    c.wait_ready(1);
    let o = submit_ops(&c, json!({"p1": [insert(1, "ann", 1)]}));
    assert_eq!(o.decision, Decision::Commit, "{:?}", o.reason);

    c.restart_participant(0, &args, &[("TWOPC_POSTGRES_PASSWORD", "open sesame")]);
    c.wait_ready(1);
    let o = submit_ops(&c, json!({"p1": [insert(2, "bo", 1)]}));
    assert_eq!(o.decision, Decision::Commit, "{:?}", o.reason);

    let mark = log_mark(&c.participants[0].log);
    let in_dsn = format!("{dsn} password='open sesame'");
    c.restart_participant(
        0,
        &["--resource", "postgres", "--postgres-dsn", &in_dsn],
        &[],
    );
    c.wait_ready(1);
    let text = wait_log(&mut c.participants[0], mark, "holds a password");
    assert!(
        !text.contains("open sesame"),
        "the password is logged:\n{text}"
    );
    assert_eq!(accounts(&pg, "s1").len(), 2);
}

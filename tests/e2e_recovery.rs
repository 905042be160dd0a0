//! Crash and recovery end to end: real coordinator and participant processes
//! killed with SIGKILL, by their own crash points (`TWOPC_CRASH_AT`) or by the
//! test, then restarted on the same data directories. After every recovery
//! the cluster must settle (nothing in flight, nothing in doubt) and agree:
//! every participant's log gives a transaction the same outcome, what a
//! client was told is what happened, and the coordinator's count matches the
//! participants' logs.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use twopc::protocol::{Body, Decision, TxnId};
use twopc::runtime::crash::POINTS;

const PARTICIPANTS: usize = 3;

/// What clients were told, by transaction. A submit that lost its connection
/// has no entry: its outcome is unknown to the client, and only agreement
/// between the participants is checked for it.
type Seen = BTreeMap<TxnId, Decision>;

/// `wal inspect` states of a participant transaction still in doubt, and of
/// a coordinator decision that has been acknowledged by everyone.
const IN_DOUBT: &str = "prepared, no decision (in doubt)";
const ENDED: &str = "commit decided and acknowledged by all (ended)";

/// The process a crash is aimed at.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    Coordinator,
    Participant(usize),
}

/// Crash points inside a log checkpoint: either process reaches them.
fn is_checkpoint_point(point: &str) -> bool {
    point.starts_with("wal.checkpoint.")
}

/// The crash points a rig reaches: checkpoint points only when its logs
/// checkpoint (tiny segments).
fn reachable_points(checkpoints: bool) -> Vec<&'static str> {
    POINTS
        .iter()
        .copied()
        .filter(|p| checkpoints || !is_checkpoint_point(p))
        .collect()
}

/// Transactions per client of a round aimed at `point`: a checkpoint comes
/// only after a segment's worth of records (a few dozen transactions), the
/// other points with the first transactions. Clients stop early once the
/// process died.
fn load_for(point: &str) -> usize {
    if is_checkpoint_point(point) {
        200
    } else {
        40
    }
}

/// The process a crash point belongs to (`participant` picks which one).
fn target_of(point: &str, participant: usize) -> Target {
    if point.starts_with("coordinator.") {
        Target::Coordinator
    } else {
        Target::Participant(participant)
    }
}

fn crash_env(spec: Option<&str>) -> Vec<(&str, &str)> {
    spec.map(|s| vec![("TWOPC_CRASH_AT", s)])
        .unwrap_or_default()
}

/// A coordinator and three participants with admin ports, restartable one
/// process at a time on the same data directories.
struct Rig {
    c: Cluster,
    admins: Vec<String>,
    participant_args: Vec<Vec<String>>,
    /// Every process runs with tiny log segments, so checkpoints happen
    /// between and around the crashes. The coordinator then forgets ended
    /// transactions, which weakens what its log and counts can tell.
    checkpoints: bool,
}

/// Log segment size (bytes) of a rig with checkpoints: the minimum.
const SMALL_SEGMENT: &str = "4096";

impl Rig {
    /// Start the cluster; `armed` crashes one process at a crash point.
    fn start(participant_args: [&[&str]; PARTICIPANTS], armed: Option<(Target, &str)>) -> Rig {
        Rig::start_with(participant_args, armed, false)
    }

    /// [`Rig::start`], with tiny log segments on every process when
    /// `checkpoints` is set.
    fn start_with(
        participant_args: [&[&str]; PARTICIPANTS],
        armed: Option<(Target, &str)>,
        checkpoints: bool,
    ) -> Rig {
        let spec_for = |t: Target| armed.filter(|(a, _)| *a == t).map(|(_, s)| s);
        let wal: &[&str] = if checkpoints {
            &["--wal-segment-max-bytes", SMALL_SEGMENT]
        } else {
            &[]
        };
        let mut c = Cluster::new();
        let expected = PARTICIPANTS.to_string();
        let mut coordinator_args = vec!["--expected-participants", &expected];
        coordinator_args.extend_from_slice(wal);
        c.start_coordinator(&coordinator_args, &crash_env(spec_for(Target::Coordinator)));
        // Participants keep every commit across checkpoints here, so the
        // checks below can read each transaction's outcome from every log;
        // the default bound on that history is tested in e2e_wal.
        let keep: &[&str] = if checkpoints {
            &["--checkpoint-recent-commits", "1000000"]
        } else {
            &[]
        };
        let participant_args: Vec<Vec<String>> = participant_args
            .iter()
            .map(|a| {
                a.iter()
                    .chain(wal)
                    .chain(keep)
                    .map(|s| s.to_string())
                    .collect()
            })
            .collect();
        let mut admins = Vec::new();
        for (i, args) in participant_args.iter().enumerate() {
            let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            let env = crash_env(spec_for(Target::Participant(i)));
            let (_, admin) = c.start_participant_admin(&format!("p{}", i + 1), &args, &env);
            admins.push(admin);
        }
        let rig = Rig {
            c,
            admins,
            participant_args,
            checkpoints,
        };
        rig.wait_all_registered();
        rig
    }

    fn proc_mut(&mut self, t: Target) -> &mut Proc {
        match t {
            Target::Coordinator => self.c.coordinator.as_mut().expect("coordinator"),
            Target::Participant(i) => &mut self.c.participants[i],
        }
    }

    /// Kill -9 `t` (if it still runs) and start it again on the same data
    /// directory, armed with `crash` if given; wait until the cluster is
    /// whole again. Returns the mark of its log before the restart.
    fn restart(&mut self, t: Target, crash: Option<&str>) -> u64 {
        let mark = self.restart_alone(t, crash);
        self.wait_all_registered();
        mark
    }

    /// [`Rig::restart`] without waiting for the other processes.
    fn restart_alone(&mut self, t: Target, crash: Option<&str>) -> u64 {
        let mark = log_mark(&self.proc_mut(t).log);
        let env = crash_env(crash);
        match t {
            Target::Coordinator => {
                self.proc_mut(t).kill9();
                self.c.restart_coordinator_with_env(&env);
            }
            Target::Participant(i) => {
                let args: Vec<&str> = self.participant_args[i]
                    .iter()
                    .map(|s| s.as_str())
                    .collect();
                self.admins[i] = self.c.restart_participant_admin(i, &args, &env);
            }
        }
        mark
    }

    /// The coordinator has every participant, and every participant
    /// process (possibly restarted) has registered with this coordinator.
    fn wait_all_registered(&self) {
        self.c.wait_ready(PARTICIPANTS);
        for a in &self.admins {
            wait_participant(a, "registration with the coordinator", |s| {
                s["connected"] == true
            });
        }
    }

    fn participant_dirs(&self) -> Vec<(String, PathBuf)> {
        (0..PARTICIPANTS)
            .map(|i| {
                (
                    self.c.participants[i].name.clone(),
                    self.c.participant_dir(i),
                )
            })
            .collect()
    }

    /// Submit from `clients` threads (each at most `per_client` transactions,
    /// one at a time) until `t` dies at crash point `point`; record what the
    /// clients were told in `seen`.
    fn run_until_dead(
        &mut self,
        ctx: &str,
        t: Target,
        point: &str,
        clients: usize,
        per_client: usize,
        seen: &mut Seen,
    ) {
        let load = Load::start(
            &self.c.addr(),
            clients,
            per_client,
            t == Target::Coordinator,
        );
        let mut clients_done_at: Option<Instant> = None;
        while self.proc_mut(t).is_running() {
            if load.finished() {
                clients_done_at.get_or_insert_with(Instant::now);
            }
            // Bounded by progress, not by the clock: the clients are bounded
            // by their transaction count, and after they are done the crash
            // point gets PATIENCE to be reached.
            let waited_after_clients = clients_done_at.is_some_and(|d| d.elapsed() > PATIENCE);
            assert!(
                !waited_after_clients,
                "{ctx}: {t:?} still runs after {clients} clients submitted up to {per_client} transactions each; the crash point was never reached"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let proc = self.proc_mut(t);
        let status = proc
            .wait_exit(PATIENCE)
            .expect("a dead process is reaped at once");
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{ctx}: {t:?} should have died by SIGKILL, got {status:?}; log:\n{}",
            proc.log_text()
        );
        let log = proc.log_text();
        assert!(
            log.contains(&format!("crash point {point} reached")),
            "{ctx}: {t:?} died, but not at {point}; log:\n{log}"
        );
        load.finish(seen);
    }

    /// Submit from `clients` threads and kill -9 `t` once the coordinator
    /// has counted `commits` more commits; record what clients were told.
    fn kill_under_load(&mut self, t: Target, clients: usize, commits: u64, seen: &mut Seen) {
        let committed = |s: &Value| s["transactions"]["committed"].as_u64().unwrap_or(0);
        let base = committed(&self.c.status());
        let load = Load::start(&self.c.addr(), clients, 2000, t == Target::Coordinator);
        self.c.wait_status("commits before the kill", |s| {
            committed(s) >= base + commits
        });
        self.proc_mut(t).kill9();
        load.finish(seen);
    }
    /// Wait until nothing is in flight or in doubt anywhere: the coordinator
    /// has every acknowledgement, no participant lists an in-doubt
    /// transaction, and every log shows the final state.
    fn settle(&self, ctx: &str) {
        self.wait_all_registered();
        self.c.wait_status("every transaction ended", |s| {
            s["transactions"]["in_flight"] == 0 && s["transactions"]["awaiting_acks"] == 0
        });
        for (i, admin) in self.admins.iter().enumerate() {
            poll(ctx, &format!("p{} to have nothing in doubt", i + 1), || {
                let l = participant_txn_list(admin, Some("in-doubt"));
                (l["total"] == 0).then_some(())
            });
        }
        // Ends and aborts are not forced: they reach the file just after
        // the acknowledgement, so the logs are read until they catch up.
        for (name, dir) in self.participant_dirs() {
            poll(
                ctx,
                &format!("{name}'s log to hold a decision for every vote"),
                || {
                    let (_, r) = wal_inspect(&dir);
                    (!txns(&r).iter().any(|t| t["state"] == IN_DOUBT)).then_some(())
                },
            );
        }
        poll(ctx, "the coordinator's log to end every commit", || {
            let (_, r) = wal_inspect(&self.c.coordinator_dir());
            txns(&r).iter().all(|t| t["state"] == ENDED).then_some(())
        });
    }

    /// The invariants, from the logs alone (valid while running once
    /// settled, and after every process stopped). Returns the transactions
    /// committed at the participants.
    fn check_logs(&self, ctx: &str, seen: &Seen) -> BTreeSet<String> {
        // transaction -> [(participant, "commit" | "abort")]
        let mut outcomes: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for (name, dir) in self.participant_dirs() {
            let (code, r) = wal_inspect(&dir);
            assert!(
                code == 0 && r["corruption"].is_null(),
                "{ctx}: {name}'s log is damaged (exit {code}): {r}"
            );
            for t in txns(&r) {
                let id = t["transaction_id"]
                    .as_str()
                    .expect("transaction_id")
                    .to_string();
                let state = t["state"].as_str().unwrap_or_default();
                let outcome = match state.split(' ').next() {
                    Some("commit") => "commit",
                    Some("abort") => "abort",
                    _ => panic!(
                        "{ctx}: {name} still has {id} in state {state:?} after settling: {t}"
                    ),
                };
                outcomes
                    .entry(id)
                    .or_default()
                    .push((name.clone(), outcome.to_string()));
            }
        }
        let mut committed = BTreeSet::new();
        for (id, v) in &outcomes {
            let kinds: BTreeSet<&str> = v.iter().map(|(_, o)| o.as_str()).collect();
            assert_eq!(
                kinds.len(),
                1,
                "{ctx}: participants disagree on {id}: {v:?}"
            );
            if kinds.contains("commit") {
                // Every transaction involves every participant.
                assert_eq!(
                    v.len(),
                    PARTICIPANTS,
                    "{ctx}: {id} is committed at only {v:?}"
                );
                committed.insert(id.clone());
            }
        }
        for (id, d) in seen {
            let at = outcomes.get(&id.0);
            match d {
                Decision::Commit => assert!(
                    committed.contains(&id.0),
                    "{ctx}: a client was told {id} committed, but the participants' logs say {at:?}"
                ),
                Decision::Abort => assert!(
                    !committed.contains(&id.0),
                    "{ctx}: a client was told {id} aborted, but the participants committed it: {at:?}"
                ),
            }
        }
        let (code, r) = wal_inspect(&self.c.coordinator_dir());
        assert!(
            code == 0 && r["corruption"].is_null(),
            "{ctx}: the coordinator's log is damaged (exit {code}): {r}"
        );
        let decided: BTreeSet<String> = txns(&r)
            .iter()
            .map(|t| {
                assert_eq!(
                    t["state"], ENDED,
                    "{ctx}: coordinator transaction not ended after settling: {t}"
                );
                t["transaction_id"]
                    .as_str()
                    .expect("transaction_id")
                    .to_string()
            })
            .collect();
        if self.checkpoints {
            // A checkpoint drops ended decisions from the coordinator's log.
            let unknown: Vec<&String> = decided.difference(&committed).collect();
            assert!(
                unknown.is_empty(),
                "{ctx}: the coordinator logged commits the participants do not hold: {unknown:?}"
            );
        } else {
            assert_eq!(
                decided, committed,
                "{ctx}: the coordinator's logged commit decisions (left) differ from the participants' commits (right)"
            );
        }
        committed
    }

    /// Settle, check the logs, and check the live counts against them.
    fn check(&self, ctx: &str, seen: &Seen) -> BTreeSet<String> {
        self.settle(ctx);
        let committed = self.check_logs(ctx, seen);
        let n = committed.len() as u64;
        let s = self.c.status();
        // After a restart from a checkpointed log the coordinator counts
        // only what it has driven since.
        let counted = s["transactions"]["committed"].as_u64();
        assert!(
            counted.is_some_and(|c| if self.checkpoints { c <= n } else { c == n }),
            "{ctx}: the coordinator counts a different number of commits than the participants' logs hold ({n}); status {s}"
        );
        for (i, admin) in self.admins.iter().enumerate() {
            let ps = ask_participant(admin, Body::Status).expect("participant status");
            assert_eq!(
                ps["committed"].as_u64(),
                Some(n),
                "{ctx}: p{} counts a different number of commits than the logs hold ({n}); status {ps}",
                i + 1
            );
            assert_eq!(
                ps["in_doubt"],
                json!([]),
                "{ctx}: p{} is in doubt: {ps}",
                i + 1
            );
        }
        committed
    }

    /// One more transaction commits: the cluster is usable after recovery.
    fn commit_one(&self, ctx: &str, seen: &mut Seen) {
        let d = self.submit_one(ctx, seen);
        assert_eq!(
            d,
            Decision::Commit,
            "{ctx}: the transaction after recovery: {seen:?}"
        );
    }

    /// One more transaction gets decided after recovery; returns the decision.
    fn submit_one(&self, ctx: &str, seen: &mut Seen) -> Decision {
        let (id, o) = self
            .c
            .submit(req(json!({"after": "recovery"})))
            .unwrap_or_else(|e| panic!("{ctx}: submit after recovery: {e}"));
        seen.insert(id, o.decision);
        o.decision
    }

    /// Submit transactions one at a time until every process has
    /// checkpointed its log at least once (bounded by a transaction count).
    fn commit_until_every_log_checkpointed(&self, ctx: &str, seen: &mut Seen) {
        const TXNS_MAX: usize = 2000;
        let checkpointed = |s: &Value| s["wal"]["checkpoints"].as_u64().is_some_and(|n| n > 0);
        for _ in 0..TXNS_MAX {
            let everyone = checkpointed(&self.c.status())
                && self.admins.iter().all(|a| {
                    checkpointed(&ask_participant(a, Body::Status).expect("participant status"))
                });
            if everyone {
                return;
            }
            self.submit_one(ctx, seen);
        }
        panic!("{ctx}: {TXNS_MAX} transactions and still a log never checkpointed");
    }

    /// SIGTERM every process; each must exit cleanly.
    fn stop_all(&mut self, ctx: &str) {
        for p in self
            .c
            .participants
            .iter_mut()
            .chain(self.c.coordinator.as_mut())
        {
            let status = p.terminate();
            assert!(
                status.is_some_and(|s| s.success()),
                "{ctx}: {} did not stop cleanly on SIGTERM: {status:?}; log:\n{}",
                p.name,
                p.log_text()
            );
        }
    }
}

/// Client threads submitting transactions one at a time each.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<std::thread::JoinHandle<Vec<(TxnId, Decision)>>>,
}

impl Load {
    /// Start `clients` threads of at most `per_client` transactions each;
    /// with `stop_on_error` a client stops at its first lost connection
    /// (the coordinator is gone).
    fn start(addr: &str, clients: usize, per_client: usize, stop_on_error: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|k| {
                let (addr, stop) = (addr.to_string(), stop.clone());
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    for n in 0..per_client {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match submit_to(&addr, req(json!({"client": k, "n": n}))) {
                            Ok((id, o)) => got.push((id, o.decision)),
                            Err(_) if stop_on_error => break,
                            Err(_) => {}
                        }
                    }
                    got
                })
            })
            .collect();
        Load { stop, clients }
    }

    fn finished(&self) -> bool {
        self.clients.iter().all(|h| h.is_finished())
    }

    /// Stop the clients and add what they were told to `seen`.
    fn finish(self, seen: &mut Seen) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.clients {
            seen.extend(h.join().expect("client thread"));
        }
    }
}

fn txns(report: &Value) -> Vec<Value> {
    report["transactions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Poll `f` until it returns `Some` (bounded by PATIENCE).
fn poll<T>(ctx: &str, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{ctx}: timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const ALL_COMMIT: [&[&str]; PARTICIPANTS] = [&[], &[], &[]];

/// Arm `point` (second occurrence) on the coordinator or on p2, submit from
/// two clients until the process dies, restart it, and check that the
/// cluster recovers to one agreed outcome per transaction.
fn crash_point_recovers(point: &str) {
    assert!(POINTS.contains(&point), "unknown crash point {point}");
    let ctx = format!("crash point {point}");
    let target = target_of(point, 1);
    let spec = format!("{point}:2");
    let mut rig = Rig::start(ALL_COMMIT, Some((target, &spec)));
    let mut seen = Seen::new();
    rig.run_until_dead(&ctx, target, point, 2, 30, &mut seen);
    let mark = rig.restart(target, None);
    rig.check(&ctx, &seen);
    let restarted_log = log_since(&rig.proc_mut(target).log, mark);
    match point {
        // The decision was taken but never logged: presumed abort, so the
        // transaction every participant had prepared is aborted everywhere.
        "coordinator.before_decision_logged" => {
            let aborted_after_prepare = rig.participant_dirs().iter().all(|(_, dir)| {
                txns(&wal_inspect(dir).1).iter().any(|t| {
                    t["state"] == "abort" && t["records"] == json!(["prepared", "decided"])
                })
            });
            assert!(
                aborted_after_prepare,
                "{ctx}: no prepared transaction was aborted by presumption"
            );
        }
        // A logged commit that not everyone acknowledged is re-driven.
        "coordinator.after_decision_logged"
        | "coordinator.after_first_decision_sent"
        | "coordinator.before_end_logged" => assert!(
            restarted_log.contains("re-driving"),
            "{ctx}: the restarted coordinator re-drove nothing; log:\n{restarted_log}"
        ),
        // A vote logged without a decision leaves the participant in doubt.
        "participant.after_prepare_logged" | "participant.after_vote_sent" => assert!(
            restarted_log.contains("in doubt after restart"),
            "{ctx}: the restarted participant was not in doubt; log:\n{restarted_log}"
        ),
        _ => {}
    }
    rig.commit_one(&ctx, &mut seen);
    rig.check(&ctx, &seen);
    rig.stop_all(&ctx);
    rig.check_logs(&ctx, &seen);
}

#[test]
fn crash_at_coordinator_before_decision_logged() {
    crash_point_recovers("coordinator.before_decision_logged");
}

#[test]
fn crash_at_coordinator_after_decision_logged() {
    crash_point_recovers("coordinator.after_decision_logged");
}

#[test]
fn crash_at_coordinator_after_first_decision_sent() {
    crash_point_recovers("coordinator.after_first_decision_sent");
}

#[test]
fn crash_at_coordinator_before_end_logged() {
    crash_point_recovers("coordinator.before_end_logged");
}

#[test]
fn crash_at_participant_after_prepare_logged() {
    crash_point_recovers("participant.after_prepare_logged");
}

#[test]
fn crash_at_participant_after_vote_sent() {
    crash_point_recovers("participant.after_vote_sent");
}

#[test]
fn crash_at_participant_after_decision_logged() {
    crash_point_recovers("participant.after_decision_logged");
}

#[test]
fn coordinator_killed_in_a_stream_of_concurrent_submits_recovers() {
    let ctx = "kill -9 of the coordinator during concurrent submits";
    let mut rig = Rig::start(ALL_COMMIT, None);
    let mut seen = Seen::new();
    rig.kill_under_load(Target::Coordinator, 4, 20, &mut seen);
    assert!(
        seen.len() >= 20,
        "{ctx}: only {} outcomes before the kill",
        seen.len()
    );
    rig.restart(Target::Coordinator, None);
    rig.check(ctx, &seen);
    rig.commit_one(ctx, &mut seen);
    rig.check(ctx, &seen);
    rig.stop_all(ctx);
    rig.check_logs(ctx, &seen);
}

/// p1 votes commit and dies right after its vote left, so the coordinator
/// decides while p1 is down. For a commit every participant votes commit
/// (the order of the votes does not matter). For an abort the order is
/// scripted, not raced: p2 would vote only after ten minutes, and the test
/// kills it once the coordinator holds p1's vote; a participant gone before
/// voting aborts the transaction. The restarted p1 is in doubt and learns
/// the decision by asking.
fn in_doubt_participant_learns(decision: Decision) {
    let ctx = format!("p1 in doubt, coordinator decides {decision}");
    let p2: &[&str] = match decision {
        Decision::Commit => &[],
        Decision::Abort => &["--vote-delay-ms", "600000"],
    };
    let mut rig = Rig::start(
        [&[], p2, &[]],
        Some((Target::Participant(0), "participant.after_vote_sent:1")),
    );
    let addr = rig.c.addr();
    let client = std::thread::spawn(move || submit_to(&addr, req(json!({"in_doubt": true}))));
    let status = rig.c.participants[0]
        .wait_exit(PATIENCE)
        .expect("p1 dies after its vote");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{ctx}: {status:?}");
    if decision == Decision::Abort {
        let addr = rig.c.addr();
        poll(&ctx, "the coordinator to hold p1's commit vote", || {
            let (code, out, err) = run_twopc(&[
                "txn",
                "list",
                "--coordinator",
                &addr,
                "--state",
                "in-flight",
                "--json",
            ]);
            assert_eq!(code, 0, "{ctx}: txn list: {err}");
            let listed: Value = serde_json::from_str(&out).expect("txn list JSON");
            let t = &listed["transactions"][0];
            assert!(t["votes"]["p2"].is_null(), "{ctx}: p2 voted: {listed}");
            (t["votes"]["p1"] == "commit").then_some(())
        });
        rig.c.participants[1].kill9();
    }
    let (id, o) = client
        .join()
        .expect("client thread")
        .unwrap_or_else(|e| panic!("{ctx}: submit: {e}"));
    assert_eq!(o.decision, decision, "{ctx}: {id}: {o:?}");
    if decision == Decision::Abort {
        assert_eq!(
            o.reason.as_deref(),
            Some("participant_disconnected: p2"),
            "{ctx}: {id}: {o:?}"
        );
        // p2 comes back voting at once, is told the abort it never voted
        // on, and acknowledges it.
        rig.participant_args[1].clear();
        rig.restart_alone(Target::Participant(1), None);
    }
    let mut seen = Seen::from([(id.clone(), decision)]);

    // While p1 is down its log holds the vote and no decision, and the
    // coordinator waits for p1's acknowledgement.
    let (_, r) = wal_inspect(&rig.c.participant_dir(0));
    let t = txns(&r).into_iter().find(|t| t["transaction_id"] == id.0);
    assert_eq!(
        t.as_ref().map(|t| t["state"].clone()),
        Some(json!(IN_DOUBT)),
        "{ctx}: {r}"
    );
    let addr = rig.c.addr();
    poll(&ctx, "the coordinator to wait for p1 alone", || {
        let (code, out, err) = run_twopc(&["txn", "show", &id.0, "--coordinator", &addr, "--json"]);
        assert_eq!(code, 0, "{ctx}: txn show: {err}");
        let shown: Value = serde_json::from_str(&out).expect("txn show JSON");
        (shown["awaiting_acks_from"] == json!(["p1"])).then_some(())
    });

    if decision == Decision::Abort {
        // A coordinator restart forgets the abort (aborts are not logged):
        // p1's query must then be answered by presumption.
        rig.restart_alone(Target::Coordinator, None);
    }
    rig.restart(Target::Participant(0), None);
    let admin = rig.admins[0].clone();
    let learned = poll(&ctx, "p1 to learn the decision", || {
        let t = ask_participant(&admin, Body::TxnShow { txn: id.clone() }).ok()?;
        (t["state"] != "prepared").then_some(t)
    });
    let want = match decision {
        Decision::Commit => "committed",
        Decision::Abort => "aborted",
    };
    assert_eq!(learned["state"], want, "{ctx}: {learned}");
    assert!(
        learned["queries"].as_u64() >= Some(1),
        "{ctx}: p1 never asked: {learned}"
    );
    assert!(learned["heuristic"].is_null(), "{ctx}: {learned}");
    rig.check(&ctx, &seen);
    let (_, r) = wal_inspect(&rig.c.participant_dir(0));
    let t = txns(&r)
        .into_iter()
        .find(|t| t["transaction_id"] == id.0)
        .expect("p1's record");
    assert_eq!(t["state"], decision.as_str(), "{ctx}: {t}");
    assert_eq!(t["records"], json!(["prepared", "decided"]), "{ctx}: {t}");
    rig.commit_one(&ctx, &mut seen);
    rig.check(&ctx, &seen);
}

#[test]
fn participant_in_doubt_learns_a_commit_after_restart() {
    in_doubt_participant_learns(Decision::Commit);
}

#[test]
fn participant_in_doubt_learns_an_abort_after_restart() {
    in_doubt_participant_learns(Decision::Abort);
}

#[test]
fn operator_resolves_an_in_doubt_participant_when_the_coordinator_is_gone() {
    let ctx = "heuristic abort while the coordinator is down";
    let mut rig = Rig::start(
        ALL_COMMIT,
        Some((Target::Coordinator, "coordinator.before_decision_logged:1")),
    );
    let outcome = rig.c.submit(req(json!({"heuristic": true})));
    assert!(
        outcome.is_err(),
        "{ctx}: the coordinator should die before answering: {outcome:?}"
    );
    let status = rig
        .proc_mut(Target::Coordinator)
        .wait_exit(PATIENCE)
        .expect("coordinator dies");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{ctx}: {status:?}");

    // Every participant voted commit and is now in doubt about one transaction.
    let mut ids = BTreeSet::new();
    for admin in &rig.admins {
        let l = participant_txn_list(admin, Some("in-doubt"));
        assert_eq!(l["total"], 1, "{ctx}: {l}");
        ids.insert(
            l["transactions"][0]["transaction_id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    assert_eq!(
        ids.len(),
        1,
        "{ctx}: participants in doubt about different transactions: {ids:?}"
    );
    let id = ids.pop_first().expect("one id");

    let reason = "coordinator host lost; aborted by the operator (ticket 42)";
    let p1 = rig.admins[0].clone();
    let (code, out, err) = run_twopc(&[
        "txn",
        "resolve",
        &id,
        "--participant",
        &p1,
        "--abort",
        "--reason",
        reason,
        "--operator",
        "alice",
        "--check-coordinator",
        &rig.c.addr(),
        "--json",
    ]);
    assert_eq!(code, 0, "{ctx}: resolve failed: {err}");
    assert!(
        err.contains("could not ask the coordinator"),
        "{ctx}: the check is skipped, and said so, when the coordinator is gone: {err}"
    );
    let resolved: Value = serde_json::from_str(&out).expect("resolve JSON");
    assert_eq!(resolved["state"], "aborted", "{ctx}: {resolved}");
    // The audit trail: the reason, who, how proven, and from where.
    let recorded = resolved["heuristic"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        recorded.starts_with(reason)
            && recorded.contains("by alice, without authentication, from 127.0.0.1:"),
        "{ctx}: {resolved}"
    );

    let (code, out, err) = run_twopc(&["txn", "show", &id, "--participant", &p1, "--json"]);
    assert_eq!(code, 0, "{ctx}: txn show: {err}");
    let shown: Value = serde_json::from_str(&out).expect("txn show JSON");
    assert_eq!(shown["state"], "aborted", "{ctx}: {shown}");
    assert_eq!(shown["heuristic"], recorded.as_str(), "{ctx}: {shown}");

    let (_, r) = wal_inspect(&rig.c.participant_dir(0));
    let t = txns(&r)
        .into_iter()
        .find(|t| t["transaction_id"] == id)
        .expect("p1's record");
    assert!(
        t["state"]
            .as_str()
            .unwrap_or_default()
            .starts_with("abort (heuristic"),
        "{ctx}: {t}"
    );
    assert_eq!(t["heuristic_reason"], recorded.as_str(), "{ctx}: {t}");
    assert_eq!(t["records"], json!(["prepared", "decided"]), "{ctx}: {t}");

    // Only p1 was resolved; a second resolve is refused.
    assert_eq!(
        participant_txn_list(&p1, Some("in-doubt"))["total"],
        0,
        "{ctx}"
    );
    for admin in &rig.admins[1..] {
        assert_eq!(
            participant_txn_list(admin, Some("in-doubt"))["total"],
            1,
            "{ctx}"
        );
    }
    let (code, _, err) = run_twopc(&[
        "txn",
        "resolve",
        &id,
        "--participant",
        &p1,
        "--commit",
        "--reason",
        "again",
    ]);
    assert_ne!(code, 0, "{ctx}: a second resolve must be refused");
    assert!(err.contains("not in doubt"), "{ctx}: {err}");

    // The heuristic outcome survives a crash of p1 itself.
    rig.admins[0] = rig.c.restart_participant_admin(0, &[], &[]);
    let t = poll(ctx, "p1 to answer after its restart", || {
        ask_participant(
            &rig.admins[0],
            Body::TxnShow {
                txn: TxnId(id.clone()),
            },
        )
        .ok()
    });
    assert_eq!(
        (t["state"].as_str(), t["heuristic"].as_str()),
        (Some("aborted"), Some(recorded.as_str())),
        "{ctx}: {t}"
    );

    // When the coordinator returns, presumed abort agrees with the operator.
    rig.restart(Target::Coordinator, None);
    let committed = rig.check(ctx, &Seen::new());
    assert!(committed.is_empty(), "{ctx}: {committed:?}");
}

/// `txn resolve --check-coordinator` asks the coordinator first and refuses
/// a heuristic decision that contradicts it (its logged commit, or presumed
/// abort for a transaction it does not know) unless `--force`.
#[test]
fn a_resolve_that_contradicts_the_coordinator_is_refused_unless_forced() {
    let ctx = "resolve checked against the coordinator";
    let rig = Rig::start(ALL_COMMIT, None);
    let (id, o) = rig.c.submit(req(json!({"n": 1}))).expect("submit");
    assert_eq!(o.decision, Decision::Commit, "{ctx}");
    let id = id.0;
    let p1 = rig.admins[0].clone();
    let coordinator = rig.c.addr();
    let resolve = |id: &str, decision: &str, force: bool| {
        let mut args = vec![
            "txn",
            "resolve",
            id,
            "--participant",
            &p1,
            decision,
            "--reason",
            "checked",
            "--check-coordinator",
            &coordinator,
        ];
        if force {
            args.push("--force");
        }
        run_twopc(&args)
    };
    let (code, _, err) = resolve(&id, "--abort", false);
    assert_eq!(code, 2, "{ctx}: {err}");
    assert!(
        err.contains(&format!("has commit for {id}")) && err.contains("--force"),
        "{ctx}: {err}"
    );
    // Forced, it goes to the participant, which has long committed it.
    let (code, _, err) = resolve(&id, "--abort", true);
    assert_ne!(code, 0, "{ctx}");
    assert!(
        err.contains("--force: resolving") && err.contains("not in doubt"),
        "{ctx}: {err}"
    );
    // A transaction the coordinator does not know is presumed aborted.
    let (code, _, err) = resolve("never-seen-1", "--commit", false);
    assert_eq!(code, 2, "{ctx}: {err}");
    assert!(err.contains("has abort for never-seen-1"), "{ctx}: {err}");
    // Agreeing with the coordinator passes the check (and the participant
    // then says it has nothing in doubt).
    let (code, _, err) = resolve(&id, "--commit", false);
    assert_ne!(code, 0, "{ctx}");
    assert!(!err.contains("refused: the coordinator"), "{ctx}: {err}");
    assert!(err.contains("not in doubt"), "{ctx}: {err}");
}

/// The seed of the randomized test: `TWOPC_TEST_SEED`, or the clock.
fn test_seed() -> u64 {
    match std::env::var("TWOPC_TEST_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .expect("TWOPC_TEST_SEED must be an unsigned integer"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// Run `f`; if it panics, panic again with the seed in the message, so that
/// every failure, including those inside the harness, names its seed.
fn with_seed<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("TWOPC_TEST_SEED={seed} replays this crash schedule: {msg}")
        }
    }
}

/// Rounds of: arm a random crash point (random occurrence) on the process it
/// belongs to, or plan a kill -9 from outside after a random number of
/// commits; run a few concurrent clients until the process dies; restart
/// it; settle and check every invariant against everything clients were
/// told so far.
fn randomized_crash_loop(checkpoints: bool) {
    /// Always this many rounds, however fast the machine: a run is the same
    /// schedule for the same seed, and never shorter on a slow disk.
    const ROUNDS: usize = 24;
    let seed = test_seed();
    eprintln!("randomized crash loop (checkpoints: {checkpoints}): TWOPC_TEST_SEED={seed}");
    with_seed(seed, || {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // p3 votes abort now and then, so client-visible aborts are checked
        // too; its votes are drawn from the test's seed, like every choice
        // here.
        let vote_seed = rng.random::<u64>().to_string();
        let p3: &[&str] = &[
            "--vote-preference",
            "random",
            "--commit-probability",
            "0.85",
            "--vote-seed",
            &vote_seed,
        ];
        let mut rig = Rig::start_with([&[], &[], p3], None, checkpoints);
        let mut seen = Seen::new();
        if checkpoints {
            // How much a round writes depends on how fast its clients run,
            // so the crashes are made to meet checkpointed logs here, before
            // the first round, whatever the speed of the machine.
            rig.commit_until_every_log_checkpointed(&seed.to_string(), &mut seen);
        }
        for round in 0..ROUNDS {
            let clients = rng.random_range(1..=4);
            let participant = rng.random_range(0..PARTICIPANTS);
            // One round in five kills a process from outside at a moment of
            // the load instead of at a crash point.
            if rng.random_bool(0.2) {
                let target = if rng.random_bool(0.5) {
                    Target::Coordinator
                } else {
                    Target::Participant(participant)
                };
                let commits = rng.random_range(1..=10);
                let ctx = format!("seed {seed} checkpoints {checkpoints} round {round}: kill -9 of {target:?} after {commits} commits, {clients} clients");
                eprintln!("{ctx}");
                rig.kill_under_load(target, clients, commits, &mut seen);
                rig.restart(target, None);
                rig.check(&ctx, &seen);
            } else {
                let eligible = reachable_points(checkpoints);
                let point = eligible[rng.random_range(0..eligible.len())];
                let nth: u32 = if is_checkpoint_point(point) {
                    1
                } else {
                    rng.random_range(1..=5)
                };
                // Either process checkpoints; the others belong to one.
                let target = if is_checkpoint_point(point) && rng.random_bool(0.3) {
                    Target::Coordinator
                } else {
                    target_of(point, participant)
                };
                let ctx = format!("seed {seed} checkpoints {checkpoints} round {round}: {point}:{nth} on {target:?}, {clients} clients");
                eprintln!("{ctx}");
                rig.restart(target, Some(&format!("{point}:{nth}")));
                rig.run_until_dead(&ctx, target, point, clients, load_for(point), &mut seen);
                // Now and then the process crashes again while it recovers:
                // restarted armed at another of its points, before settling.
                if rng.random_bool(0.25) {
                    let own: Vec<&str> = reachable_points(checkpoints)
                        .into_iter()
                        .filter(|p| is_checkpoint_point(p) || target_of(p, participant) == target)
                        .collect();
                    let again = own[rng.random_range(0..own.len())];
                    let nth: u32 = if is_checkpoint_point(again) {
                        1
                    } else {
                        rng.random_range(1..=2)
                    };
                    let ctx = format!("{ctx}, then {again}:{nth} while recovering");
                    eprintln!("{ctx}");
                    rig.restart_alone(target, Some(&format!("{again}:{nth}")));
                    rig.run_until_dead(&ctx, target, again, clients, load_for(again), &mut seen);
                }
                rig.restart(target, None);
                rig.check(&ctx, &seen);
            }
        }
        let ctx = format!("seed {seed} checkpoints {checkpoints} after {ROUNDS} rounds");
        // p3 may vote abort: any decision will do, as long as there is one.
        rig.submit_one(&ctx, &mut seen);
        let committed = rig.check(&ctx, &seen);
        rig.stop_all(&ctx);
        assert_eq!(
            rig.check_logs(&ctx, &seen),
            committed,
            "{ctx}: the logs changed on a clean stop"
        );
        let told_commit = seen.values().filter(|d| **d == Decision::Commit).count();
        assert!(
            told_commit > 0,
            "{ctx}: no client was told of a commit: {seen:?}"
        );
        if checkpoints {
            let mut dirs: Vec<PathBuf> =
                rig.participant_dirs().into_iter().map(|(_, d)| d).collect();
            dirs.push(rig.c.coordinator_dir());
            let checkpointed = dirs.iter().filter(|d| {
                wal_segments(d)
                    .last()
                    .is_some_and(|(p, _)| !p.ends_with("wal-0000000000000001.log"))
            });
            assert!(
                checkpointed.count() > 0,
                "{ctx}: no process ever checkpointed its log"
            );
        }
        eprintln!(
            "{ctx}: {} outcomes seen by clients ({told_commit} commits), {} committed in the logs",
            seen.len(),
            committed.len()
        );
    });
}

#[test]
fn randomized_crash_loop_keeps_every_outcome() {
    randomized_crash_loop(false);
}

#[test]
fn randomized_crash_loop_with_checkpoints_keeps_every_outcome() {
    randomized_crash_loop(true);
}

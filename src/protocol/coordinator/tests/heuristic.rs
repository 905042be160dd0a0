//! Heuristic outcomes reported in ACKs: kept once per participant, in the
//! transaction (whose state then says so), the log (forced), the counters
//! and an alert; and read back from the log after a restart or checkpoint.

use super::*;
use crate::protocol::heuristic::{Heuristic, HeuristicKind};

fn rolled_back() -> Heuristic {
    Heuristic::new(HeuristicKind::Mixed, "the database has aborted it")
}

fn heuristic_ack(txn: &str, decision: Decision, h: &Heuristic) -> Body {
    Body::Ack {
        txn: tid(txn),
        decision: Some(decision),
        heuristic: Some(h.clone()),
    }
}

fn heuristic_record(txn: &str, decision: Decision, from: &str, h: &Heuristic) -> Record {
    Record::Heuristic {
        txn: tid(txn),
        decision,
        participant: pid(from),
        heuristic: h.clone(),
    }
}

fn persist_heuristic(txn: &str, decision: Decision, from: &str, h: &Heuristic) -> Action {
    Action::Persist {
        record: heuristic_record(txn, decision, from, h),
        sync: true,
    }
}

fn heuristic_alert(txn: &str, decision: Decision, from: &str, h: &Heuristic) -> Action {
    Action::Alert {
        txn: Some(tid(txn)),
        message: format!(
            "HEURISTIC OUTCOME ({}) reported by {from}: the decision is {decision}, but {}; reconcile the data",
            h.kind, h.detail
        ),
    }
}

#[test]
fn a_heuristic_ack_is_logged_forced_alerted_and_shown() {
    let mut c = committed();
    let h = rolled_back();
    assert_eq!(c.handle(20, msg(P1, ack("t-1"))), vec![]);
    assert_eq!(
        c.handle(21, msg(P2, heuristic_ack("t-1", Decision::Commit, &h))),
        vec![
            persist_heuristic("t-1", Decision::Commit, "p2", &h),
            heuristic_alert("t-1", Decision::Commit, "p2", &h),
            persist_end("t-1"),
        ]
    );
    let t = c.txn(&tid("t-1")).expect("remembered");
    assert_eq!(t.phase, TxnPhase::Completed, "the protocol is done");
    assert_eq!(t.heuristics.get(&pid("p2")), Some(&h));
    assert_eq!(
        t.errors.get(&pid("p2")).map(String::as_str),
        Some("heuristic mixed: the database has aborted it")
    );
    assert!(t.matches_state("heuristic") && t.matches_state("committed"));
    let shown = to_json(&t.detail(30));
    assert_eq!(shown["state"], "HEURISTIC_MIXED", "never a clean commit");
    assert_eq!(
        shown["heuristics"],
        json!({"p2": {"kind": "mixed", "detail": "the database has aborted it"}})
    );
    assert_eq!(
        timeline(&c, "t-1")[timeline(&c, "t-1").len() - 3..],
        [
            (21, Step::Ack { from: pid("p2") }),
            (
                21,
                Step::Heuristic {
                    from: pid("p2"),
                    kind: HeuristicKind::Mixed
                }
            ),
            (21, Step::Ended),
        ]
    );
    assert_eq!(c.stats().heuristic(HeuristicKind::Mixed), 1);
    // Counted and logged once: a repeated report is silent.
    assert_eq!(
        c.handle(22, msg(P2, heuristic_ack("t-1", Decision::Commit, &h))),
        vec![]
    );
    assert_eq!(c.stats().heuristic(HeuristicKind::Mixed), 1);
}

#[test]
fn a_clean_transaction_shows_no_heuristics() {
    let mut c = committed();
    c.handle(20, msg(P1, ack("t-1")));
    c.handle(20, msg(P2, ack("t-1")));
    let t = c.txn(&tid("t-1")).expect("remembered");
    let shown = to_json(&t.summary(30));
    assert_eq!(shown["state"], "COMPLETED");
    assert!(shown.get("heuristics").is_none(), "{shown}");
    assert!(!t.matches_state("heuristic"));
}

#[test]
fn heuristic_outcomes_survive_a_restart_and_a_checkpoint() {
    let h = rolled_back();
    // Straight from the log: the commit is re-driven, with its report.
    let records = vec![
        decision_record("a-1", Decision::Commit, &["p1", "p2"]),
        heuristic_record("a-1", Decision::Commit, "p2", &h),
    ];
    let mut c = Coordinator::recover(opts(), 1_000, &records);
    let t = c.txn(&tid("a-1")).expect("re-driven");
    assert_eq!(
        TxnState::of(t.phase, &t.heuristics),
        TxnState::HeuristicMixed
    );
    assert_eq!(txn_records(&c), records);
    c.handle(1_001, msg(P1, hello("p1")));
    c.handle(1_001, msg(P2, hello("p2")));
    c.handle(1_002, msg(P1, ack("a-1")));
    // The report is already on record: the repeated one adds nothing.
    assert_eq!(
        c.handle(1_003, msg(P2, heuristic_ack("a-1", Decision::Commit, &h))),
        vec![persist_end("a-1")]
    );
    // A checkpoint keeps the ended transaction with its report ...
    let live = txn_records(&c);
    assert_eq!(
        live,
        vec![
            records[0].clone(),
            records[1].clone(),
            Record::End { txn: tid("a-1") },
        ]
    );
    // ... which comes back ended and still heuristic.
    let again = Coordinator::recover(opts(), 2_000, &live);
    let t = again.txn(&tid("a-1")).expect("remembered");
    assert_eq!(
        (t.phase, t.ended_ms, t.heuristics.get(&pid("p2"))),
        (TxnPhase::Completed, Some(2_000), Some(&h))
    );
    assert!(t.matches_state("heuristic") && !t.matches_state("in-doubt"));
}

#[test]
fn a_heuristic_abort_is_logged_though_aborts_are_not() {
    let mut c = voting();
    c.handle(1, msg(P1, vote_commit("t-1")));
    c.handle(2, msg(P2, vote_abort("t-1", Some("no"))));
    let h = Heuristic::new(HeuristicKind::Mixed, "committed by hand");
    assert_eq!(
        c.handle(3, msg(P1, heuristic_ack("t-1", Decision::Abort, &h))),
        vec![
            persist_heuristic("t-1", Decision::Abort, "p1", &h),
            heuristic_alert("t-1", Decision::Abort, "p1", &h),
        ]
    );
    let live = txn_records(&c);
    assert_eq!(
        live,
        vec![heuristic_record("t-1", Decision::Abort, "p1", &h)]
    );
    let again = Coordinator::recover(opts(), 10, &live);
    let t = again.txn(&tid("t-1")).expect("remembered from its report");
    assert_eq!(
        (t.phase, t.decision, t.participants.clone()),
        (TxnPhase::Aborted, Some(Decision::Abort), pids(&["p1"]))
    );
    assert_eq!(to_json(&t.summary(10))["state"], "HEURISTIC_MIXED");
    // Presumed abort still answers a query for it.
    let mut again = again;
    again.handle(11, msg(P1, hello("p1")));
    assert_eq!(
        again.handle(12, msg(P1, query("t-1"))),
        vec![send(P1, abort("t-1"), false)]
    );
}

#[test]
fn a_heuristic_report_for_a_transaction_not_known_here_is_kept() {
    let mut c = ready();
    let h = Heuristic::new(HeuristicKind::Hazard, "prepared state gone");
    assert_eq!(
        c.handle(5, msg(P1, heuristic_ack("x-9", Decision::Abort, &h))),
        vec![
            persist_heuristic("x-9", Decision::Abort, "p1", &h),
            heuristic_alert("x-9", Decision::Abort, "p1", &h),
        ]
    );
    let t = c.txn(&tid("x-9")).expect("remembered for the report");
    assert_eq!(to_json(&t.summary(5))["state"], "HEURISTIC_HAZARD");
    assert!(t
        .reason
        .as_deref()
        .is_some_and(|r| r.contains("not known here")));
    assert_eq!(c.stats().heuristic(HeuristicKind::Hazard), 1);
    // A plain duplicate ACK for it stays silent.
    assert_eq!(c.handle(6, msg(P1, ack("x-9"))), vec![]);
}

#[test]
fn a_peers_detail_is_cut_to_the_bound() {
    let mut c = committed();
    let long = Heuristic {
        kind: HeuristicKind::Hazard,
        detail: "d".repeat(100_000),
    };
    c.handle(20, msg(P1, heuristic_ack("t-1", Decision::Commit, &long)));
    let t = c.txn(&tid("t-1")).expect("known");
    let kept = &t.heuristics[&pid("p1")].detail;
    assert!(
        kept.len() <= crate::protocol::heuristic::HEURISTIC_DETAIL_MAX_BYTES,
        "{} bytes",
        kept.len()
    );
}

#[test]
fn mixed_outranks_hazard_and_either_outranks_the_phase() {
    let mut hs = std::collections::BTreeMap::new();
    assert_eq!(TxnState::of(TxnPhase::Completed, &hs), TxnState::Completed);
    hs.insert(pid("p1"), Heuristic::new(HeuristicKind::Hazard, "?"));
    assert_eq!(
        TxnState::of(TxnPhase::Completed, &hs),
        TxnState::HeuristicHazard
    );
    hs.insert(pid("p2"), Heuristic::new(HeuristicKind::Mixed, "!"));
    assert_eq!(
        TxnState::of(TxnPhase::Aborted, &hs),
        TxnState::HeuristicMixed
    );
    for s in [TxnState::HeuristicMixed, TxnState::HeuristicHazard] {
        assert_eq!(to_json(&s), json!(s.as_str()));
    }
}

#[test]
fn the_heuristic_write_is_numbered_with_the_forced_writes() {
    let mut c = committed();
    // Forced write 1 is t-1's decision, 2 the report, 3 t-2's decision.
    c.handle(
        20,
        msg(P1, heuristic_ack("t-1", Decision::Commit, &rolled_back())),
    );
    c.handle(21, msg(CLIENT, submit(2)));
    c.handle(22, msg(P1, vote_commit("t-2")));
    c.handle(22, msg(P2, vote_commit("t-2")));
    let durable = |c: &Coordinator, txn: &str| c.txn(&tid(txn)).and_then(|t| t.durable_ms);
    c.handle(23, Event::Durable { forced: 2 });
    assert_eq!((durable(&c, "t-1"), durable(&c, "t-2")), (Some(23), None));
    c.handle(24, Event::Durable { forced: 3 });
    assert_eq!(durable(&c, "t-2"), Some(24));
}

#[test]
fn a_report_is_logged_and_counted_even_with_no_history_kept() {
    let mut c = ready_with(CoordinatorOptions {
        history_limit: 0,
        ..opts()
    });
    let h = rolled_back();
    assert_eq!(
        c.handle(5, msg(P1, heuristic_ack("x-1", Decision::Abort, &h))),
        vec![
            persist_heuristic("x-1", Decision::Abort, "p1", &h),
            heuristic_alert("x-1", Decision::Abort, "p1", &h),
        ]
    );
    assert_eq!(c.stats().heuristic(HeuristicKind::Mixed), 1);
}

//! Time: queued submits and their deadline, vote deadlines, and decision
//! resends with capped doubling backoff.

use super::*;

#[test]
fn submit_while_waiting_is_queued_and_started_when_ready() {
    let mut c = Coordinator::new(opts(), 0);
    c.handle(0, msg(CLIENT, client_hello()));
    c.handle(0, msg(P1, hello("p1")));
    assert_eq!(c.handle(5, msg(CLIENT, submit(1))), vec![]);
    assert_eq!(c.counts(), (0, 0, 0));
    assert_eq!(
        c.handle(8, msg(P2, hello("p2"))),
        [
            p2_makes_the_cluster_ready(),
            vec![
                send(P1, prepare("t-1", &["p1", "p2"]), false),
                send(P2, prepare("t-1", &["p1", "p2"]), false),
            ],
        ]
        .concat()
    );
    assert_eq!(c.counts(), (0, 0, 1));
    // The vote deadline runs from the start, not from the submit.
    assert_eq!(c.txn(&tid("t-1")).map(|t| t.started_ms), Some(8));
}

#[test]
fn queued_submit_is_refused_not_ready_after_the_deadline() {
    let mut c = Coordinator::new(
        CoordinatorOptions {
            vote_timeout_ms: 1_000,
            ..opts()
        },
        0,
    );
    c.handle(0, msg(CLIENT, client_hello()));
    c.handle(0, msg(P1, hello("p1")));
    assert_eq!(c.handle(100, msg(CLIENT, submit(7))), vec![]);
    assert_eq!(c.handle(1_099, Event::Tick), vec![]);
    assert_eq!(
        c.handle(1_100, Event::Tick),
        vec![send(
            CLIENT,
            error_reply(
                ErrorCode::NotReady,
                "coordinator is WAITING_FOR_PARTICIPANTS (1 of 2 participants registered); start the missing participants",
                7
            ),
            false
        )]
    );
    // Nothing is left to start once the cluster becomes ready.
    assert_eq!(
        c.handle(1_200, msg(P2, hello("p2"))),
        p2_makes_the_cluster_ready()
    );
}

#[test]
fn queue_of_waiting_submits_is_bounded() {
    let mut c = Coordinator::new(
        CoordinatorOptions {
            max_pending_submits: 1,
            ..opts()
        },
        0,
    );
    c.handle(0, msg(CLIENT, client_hello()));
    assert_eq!(c.handle(0, msg(CLIENT, submit(1))), vec![]);
    assert_eq!(
        c.handle(0, msg(CLIENT, submit(2))),
        vec![send(
            CLIENT,
            error_reply(
                ErrorCode::Overloaded,
                "too many submits are waiting for participants to register; retry later",
                2
            ),
            false
        )]
    );
}

#[test]
fn queued_submit_of_a_departed_client_is_dropped() {
    let mut c = Coordinator::new(opts(), 0);
    c.handle(0, msg(CLIENT, client_hello()));
    c.handle(0, msg(P1, hello("p1")));
    c.handle(0, msg(CLIENT, submit(1)));
    assert_eq!(c.handle(1, Event::Disconnected { conn: CLIENT }), vec![]);
    assert_eq!(
        c.handle(2, msg(P2, hello("p2"))),
        p2_makes_the_cluster_ready()
    );
    assert_eq!(c.counts(), (0, 0, 0));
}

#[test]
fn missing_vote_aborts_at_the_deadline() {
    let mut c = voting_with(CoordinatorOptions {
        vote_timeout_ms: 1_000,
        ..opts()
    });
    c.handle(5, msg(P1, vote_commit("t-1")));
    assert_eq!(c.handle(999, Event::Tick), vec![]);
    assert_eq!(
        c.handle(1_000, Event::Tick),
        vec![
            send(P1, abort("t-1"), false),
            send(P2, abort("t-1"), false),
            send(
                CLIENT,
                outcome(
                    "t-1",
                    Decision::Abort,
                    &[("p1", Vote::Commit)],
                    Some("vote_timeout: no vote from p2"),
                    1_000.0
                ),
                false
            ),
        ]
    );
    assert_eq!(c.counts(), (0, 0, 0));
    // The late vote is no error; it is answered with the abort.
    assert_eq!(
        c.handle(1_001, msg(P2, vote_commit("t-1"))),
        vec![send(P2, abort("t-1"), false),]
    );
    assert_eq!(decision(&c, "t-1"), Some(Decision::Abort));
}

#[test]
fn deadline_reason_lists_every_missing_vote() {
    let mut c = voting_with(CoordinatorOptions {
        vote_timeout_ms: 50,
        ..opts()
    });
    let out = c.handle(50, Event::Tick);
    let reasons: Vec<Option<String>> = out
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                body: Body::Outcome { outcome, .. },
                ..
            } => Some(outcome.reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec![Some("vote_timeout: no vote from p1, p2".to_string())]
    );
    assert!(c
        .txn(&tid("t-1"))
        .and_then(|t| t.reason.as_deref())
        .is_some_and(|r| r.starts_with("vote_timeout")));
}

#[test]
fn unacked_decision_is_resent_with_capped_doubling_backoff() {
    let mut c = committed_with(CoordinatorOptions {
        resend_initial_ms: 100,
        resend_max_ms: 300,
        ..opts()
    });
    // Decided at 10: first resend at 110.
    assert_eq!(c.handle(109, Event::Tick), vec![]);
    assert_eq!(
        c.handle(110, Event::Tick),
        vec![send(P1, commit("t-1"), true), send(P2, commit("t-1"), true)]
    );
    // Only the participant that has not acknowledged gets the next one, 200
    // later; after that the delay is capped at 300.
    c.handle(150, msg(P1, ack("t-1")));
    assert_eq!(c.handle(309, Event::Tick), vec![]);
    assert_eq!(
        c.handle(310, Event::Tick),
        vec![send(P2, commit("t-1"), true)]
    );
    assert_eq!(c.handle(609, Event::Tick), vec![]);
    assert_eq!(
        c.handle(610, Event::Tick),
        vec![send(P2, commit("t-1"), true)]
    );
    assert_eq!(c.handle(909, Event::Tick), vec![]);
    assert_eq!(
        c.handle(910, Event::Tick),
        vec![send(P2, commit("t-1"), true)]
    );
    assert_eq!(c.txn(&tid("t-1")).map(|t| t.retries), Some(4));
    // A disconnected participant is not sent to and costs no retry; it gets
    // the decision when it registers again.
    c.handle(911, Event::Disconnected { conn: P2 });
    assert_eq!(c.handle(1_210, Event::Tick), vec![]);
    assert_eq!(c.txn(&tid("t-1")).map(|t| t.retries), Some(4));
    assert_eq!(
        c.handle(1_300, msg(P3, hello("p2"))),
        vec![
            notice(Some(P3), "participant p2 registered again (returned)"),
            send(P3, welcome(ClusterState::Ready), false),
            send(P3, commit("t-1"), true),
        ]
    );
    assert_eq!(
        c.handle(1_301, msg(P3, ack("t-1"))),
        vec![persist_end("t-1")]
    );
}

#[test]
fn unacked_abort_is_resent_without_waiting_for_the_log() {
    let mut c = voting_with(CoordinatorOptions {
        resend_initial_ms: 100,
        ..opts()
    });
    c.handle(0, msg(P1, vote_abort("t-1", None)));
    assert_eq!(
        c.handle(100, Event::Tick),
        vec![send(P2, abort("t-1"), false)]
    );
}

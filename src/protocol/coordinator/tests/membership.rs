//! Membership: registration, the cluster becoming ready, joining, departures,
//! liveness and operator removal.

use super::*;

#[test]
fn cluster_waits_for_expected_participants_then_is_ready() {
    let mut c = Coordinator::new(opts(), 0);
    assert_eq!(c.state(), ClusterState::WaitingForParticipants);
    assert_eq!(
        c.handle(0, msg(CLIENT, client_hello())),
        vec![send(
            CLIENT,
            welcome(ClusterState::WaitingForParticipants),
            false
        )]
    );
    assert_eq!(
        c.handle(1, msg(P1, hello("p1"))),
        vec![
            joined("p1"),
            notice(Some(P1), "participant p1 registered (a new member)"),
            send(P1, welcome(ClusterState::WaitingForParticipants), false)
        ]
    );
    assert_eq!(c.state(), ClusterState::WaitingForParticipants);
    assert_eq!(
        c.handle(2, msg(P2, hello("p2"))),
        p2_makes_the_cluster_ready()
    );
    assert_eq!(c.state(), ClusterState::Ready);
    let members: Vec<(&ParticipantId, Option<ConnId>)> =
        c.members().iter().map(|(id, m)| (id, m.conn)).collect();
    assert_eq!(
        members,
        vec![(&pid("p1"), Some(P1)), (&pid("p2"), Some(P2))]
    );
}

#[test]
fn no_expected_participants_means_ready_at_once() {
    let c = Coordinator::new(
        CoordinatorOptions {
            expected_participants: 0,
            ..opts()
        },
        0,
    );
    assert_eq!(c.state(), ClusterState::Ready);
}

#[test]
fn message_before_hello_is_rejected_and_closed() {
    let mut c = Coordinator::new(opts(), 0);
    assert_eq!(
        c.handle(0, msg(P1, vote_commit("t-1"))),
        vec![reject(
            P1,
            ErrorCode::HelloRequired,
            "`vote_commit` before `hello`; the first message must be hello with a role",
            true
        )]
    );
    assert_eq!(
        c.handle(0, msg(CLIENT, submit(1))),
        vec![reject(
            CLIENT,
            ErrorCode::HelloRequired,
            "`submit` before `hello`; the first message must be hello with a role",
            true
        )]
    );
    assert!(c.members().is_empty());
}

#[test]
fn second_hello_on_a_connection_is_rejected_but_kept_open() {
    let mut c = Coordinator::new(opts(), 0);
    c.handle(0, msg(P1, hello("p1")));
    assert_eq!(
        c.handle(0, msg(P1, hello("p9"))),
        vec![reject(
            P1,
            ErrorCode::InvalidMessage,
            "`hello` was already received on this connection",
            false
        )]
    );
    assert_eq!(c.members().keys().collect::<Vec<_>>(), vec![&pid("p1")]);
}

#[test]
fn hello_with_another_protocol_version_is_rejected() {
    let mut c = Coordinator::new(opts(), 0);
    let body = Body::Hello {
        role: Role::Participant,
        id: Some(pid("p1")),
        protocol_version: PROTOCOL_VERSION + 1,
    };
    assert_eq!(
        c.handle(0, msg(P1, body)),
        vec![reject(
            P1,
            ErrorCode::UnsupportedVersion,
            &format!(
                "protocol_version {} is not supported; this coordinator speaks {PROTOCOL_VERSION}",
                PROTOCOL_VERSION + 1
            ),
            true
        )]
    );
    assert!(c.members().is_empty());
}

#[test]
fn participant_hello_needs_a_valid_id() {
    let expected = |conn| {
        vec![reject(
            conn,
            ErrorCode::InvalidMessage,
            "participant hello needs an `id` of 1-64 characters from [A-Za-z0-9_.-]",
            true,
        )]
    };
    let mut c = Coordinator::new(opts(), 0);
    let no_id = Body::Hello {
        role: Role::Participant,
        id: None,
        protocol_version: PROTOCOL_VERSION,
    };
    assert_eq!(c.handle(0, msg(P1, no_id)), expected(P1));
    assert_eq!(c.handle(0, msg(P2, hello("p 2"))), expected(P2));
    assert_eq!(c.handle(0, msg(P3, hello(&"x".repeat(65)))), expected(P3));
    assert!(c.members().is_empty());
}

#[test]
fn duplicate_participant_id_while_connected_is_rejected() {
    let mut c = Coordinator::new(opts(), 0);
    c.handle(0, msg(P1, hello("p1")));
    assert_eq!(
        c.handle(0, msg(P3, hello("p1"))),
        vec![reject(
            P3,
            ErrorCode::DuplicateParticipant,
            "participant id `p1` is already connected; ids must be unique (retry after the old connection closes)",
            true
        )]
    );
    assert_eq!(c.members()[&pid("p1")].conn, Some(P1));
    // The rejected connection is no peer: its messages still need a hello.
    assert_eq!(
        c.handle(0, msg(P3, vote_commit("t-1"))),
        vec![reject(
            P3,
            ErrorCode::HelloRequired,
            "`vote_commit` before `hello`; the first message must be hello with a role",
            true
        )]
    );
}

#[test]
fn same_id_may_register_again_after_disconnecting() {
    let mut c = ready();
    assert_eq!(
        c.handle(5, Event::Disconnected { conn: P1 }),
        vec![notice(Some(P1), "participant p1 lost (connection closed)")]
    );
    assert_eq!(c.members()[&pid("p1")].conn, None);
    // Nothing is logged: it is a member already.
    assert_eq!(
        c.handle(6, msg(P3, hello("p1"))),
        vec![
            notice(Some(P3), "participant p1 registered again (returned)"),
            send(P3, welcome(ClusterState::Ready), false)
        ]
    );
    assert_eq!(c.members()[&pid("p1")].conn, Some(P3));
    assert_eq!(c.members()[&pid("p1")].last_heartbeat_ms, 6);
}

#[test]
fn join_beyond_expected_is_refused_without_dynamic_joining() {
    let mut c = ready();
    assert_eq!(
        c.handle(0, msg(P3, hello("p3"))),
        vec![reject(
            P3,
            ErrorCode::MembershipClosed,
            "participant `p3` is not a member and the cluster is complete (2 participants); set enable_dynamic_joining: true to allow joins",
            true
        )]
    );
    assert_eq!(c.members().len(), 2);
}

#[test]
fn join_beyond_expected_is_accepted_with_dynamic_joining() {
    let mut c = ready_with(CoordinatorOptions {
        dynamic_joining: true,
        ..opts()
    });
    // A newcomer is not logged until it takes part.
    assert_eq!(
        c.handle(0, msg(P3, hello("p3"))),
        vec![
            notice(Some(P3), "participant p3 joined the ready cluster (a newcomer until it takes part in a transaction or stays past join_grace_ms)"),
            send(P3, welcome(ClusterState::Ready), false)
        ]
    );
    assert_eq!(c.members().len(), 3);
    // Within its join grace the newcomer is left out of submits that name
    // no participants...
    assert_eq!(
        c.handle(10, msg(CLIENT, submit(1))),
        vec![
            send(P1, prepare("t-1", &["p1", "p2"]), false),
            send(P2, prepare("t-1", &["p1", "p2"]), false),
        ]
    );
    // ...and counted once it has stayed connected that long (then it is
    // a member, logged).
    assert_eq!(
        c.handle(3_000, msg(CLIENT, submit(2))),
        vec![
            joined("p3"),
            send(P1, prepare("t-2", &["p1", "p2", "p3"]), false),
            send(P2, prepare("t-2", &["p1", "p2", "p3"]), false),
            send(P3, prepare("t-2", &["p1", "p2", "p3"]), false),
        ]
    );
}

#[test]
fn a_newcomer_named_in_a_submit_takes_part_at_once_and_is_kept_when_it_leaves() {
    let mut c = ready_with(CoordinatorOptions {
        dynamic_joining: true,
        ..opts()
    });
    c.handle(0, msg(P3, hello("p3")));
    // Taking part makes it a member, logged.
    assert_eq!(
        c.handle(10, msg(CLIENT, submit_to(1, &["p3"]))),
        vec![joined("p3"), send(P3, prepare("t-1", &["p3"]), false)]
    );
    c.handle(20, Event::Disconnected { conn: P3 });
    // It took part: it stays a member (a decision may be owed to it).
    assert!(c.members().contains_key(&pid("p3")));
}

#[test]
fn a_newcomer_that_leaves_before_taking_part_is_forgotten() {
    let mut c = ready_with(CoordinatorOptions {
        dynamic_joining: true,
        ..opts()
    });
    c.handle(0, msg(P3, hello("ghost")));
    assert_eq!(
        c.handle(5, Event::Disconnected { conn: P3 }),
        vec![notice(
            Some(P3),
            "participant ghost lost (connection closed)"
        )]
    );
    assert_eq!(c.members().len(), 2);
    // Long after any grace, a submit naming no participants still runs on
    // the two that are there instead of aborting for the ghost.
    assert_eq!(
        c.handle(60_000, msg(CLIENT, submit(1))),
        vec![
            send(P1, prepare("t-1", &["p1", "p2"]), false),
            send(P2, prepare("t-1", &["p1", "p2"]), false),
        ]
    );
}

#[test]
fn heartbeat_and_status_are_answered() {
    let mut c = ready();
    assert_eq!(
        c.handle(70, msg(P1, Body::Heartbeat)),
        vec![send(P1, Body::HeartbeatAck, false)]
    );
    assert_eq!(c.members()[&pid("p1")].last_heartbeat_ms, 70);
    assert_eq!(c.handle(70, msg(P1, Body::HeartbeatAck)), vec![]);
    assert_eq!(
        c.handle(70, msg(CLIENT, Body::Status)),
        vec![send(
            CLIENT,
            Body::StatusReport(to_json(&c.status_report())),
            false
        )]
    );
}

#[test]
fn roles_may_only_send_their_own_messages() {
    let mut c = ready();
    assert_eq!(
        c.handle(0, msg(CLIENT, vote_commit("t-1"))),
        vec![reject(
            CLIENT,
            ErrorCode::InvalidMessage,
            "a client may not send `vote_commit` to the coordinator",
            false
        )]
    );
    assert_eq!(
        c.handle(0, msg(P1, submit(1))),
        vec![reject(
            P1,
            ErrorCode::InvalidMessage,
            "a participant may not send `submit` to the coordinator",
            false
        )]
    );
    assert_eq!(c.counts(), (0, 0, 0));
}

#[test]
fn participant_disconnect_before_voting_aborts() {
    let mut c = voting();
    assert_eq!(
        c.handle(9, Event::Disconnected { conn: P1 }),
        vec![
            notice(Some(P1), "participant p1 lost (connection closed)"),
            send(P2, abort("t-1"), false),
            send(
                CLIENT,
                outcome(
                    "t-1",
                    Decision::Abort,
                    &[],
                    Some("participant_disconnected: p1"),
                    9.0
                ),
                false
            ),
        ]
    );
    assert_eq!(decision(&c, "t-1"), Some(Decision::Abort));
    // The participant learns the abort when it comes back.
    assert_eq!(
        c.handle(10, msg(P3, hello("p1"))),
        vec![
            notice(Some(P3), "participant p1 registered again (returned)"),
            send(P3, welcome(ClusterState::Ready), false),
            send(P3, abort("t-1"), true),
        ]
    );
    c.handle(11, msg(P3, ack("t-1")));
    assert_eq!(c.handle(11, msg(P2, ack("t-1"))), vec![]);
    assert_eq!(c.counts(), (0, 1, 0));
}

#[test]
fn participant_disconnect_after_voting_commit_does_not_abort() {
    let mut c = voting();
    c.handle(1, msg(P1, vote_commit("t-1")));
    assert_eq!(
        c.handle(2, Event::Disconnected { conn: P1 }),
        vec![notice(Some(P1), "participant p1 lost (connection closed)")]
    );
    assert_eq!(phase(&c, "t-1"), Some(TxnPhase::PreparePhase));
    assert_eq!(
        c.handle(3, msg(P2, vote_commit("t-1"))),
        vec![
            persist_commit("t-1", &["p1", "p2"]),
            send(P2, commit("t-1"), true),
            send(
                CLIENT,
                outcome(
                    "t-1",
                    Decision::Commit,
                    &[("p1", Vote::Commit), ("p2", Vote::Commit)],
                    None,
                    3.0
                ),
                true
            ),
        ]
    );
    assert_eq!(
        c.handle(4, msg(P3, hello("p1"))),
        vec![
            notice(Some(P3), "participant p1 registered again (returned)"),
            send(P3, welcome(ClusterState::Ready), false),
            send(P3, commit("t-1"), true),
        ]
    );
}

#[test]
fn client_disconnect_drops_only_the_outcome() {
    let mut c = voting();
    assert_eq!(c.handle(1, Event::Disconnected { conn: CLIENT }), vec![]);
    c.handle(2, msg(P1, vote_commit("t-1")));
    assert_eq!(
        c.handle(3, msg(P2, vote_commit("t-1"))),
        vec![
            persist_commit("t-1", &["p1", "p2"]),
            send(P1, commit("t-1"), true),
            send(P2, commit("t-1"), true),
        ]
    );
}

#[test]
fn unknown_connection_disconnect_is_ignored() {
    let mut c = voting();
    assert_eq!(
        c.handle(1, Event::Disconnected { conn: ConnId(77) }),
        vec![]
    );
    assert_eq!(phase(&c, "t-1"), Some(TxnPhase::PreparePhase));
}

#[test]
fn returning_participant_gets_every_owed_decision_in_order() {
    let mut c = ready();
    c.handle(0, msg(CLIENT, submit(1)));
    c.handle(0, msg(CLIENT, submit(2)));
    c.handle(0, msg(CLIENT, submit(3)));
    for txn in ["t-1", "t-2"] {
        c.handle(1, msg(P1, vote_commit(txn)));
        c.handle(1, msg(P2, vote_commit(txn)));
    }
    c.handle(2, msg(P1, ack("t-1")));
    c.handle(3, Event::Disconnected { conn: P1 });
    // t-3 was aborted by the disconnect; t-1 was acknowledged already.
    assert_eq!(decision(&c, "t-3"), Some(Decision::Abort));
    assert_eq!(
        c.handle(4, msg(P3, hello("p1"))),
        vec![
            notice(Some(P3), "participant p1 registered again (returned)"),
            send(P3, welcome(ClusterState::Ready), false),
            send(P3, commit("t-2"), true),
            send(P3, abort("t-3"), true),
        ]
    );
}

#[test]
fn a_participant_still_needed_by_a_transaction_cannot_be_removed() {
    let mut c = voting();
    let refusal = reject(
        CLIENT,
        ErrorCode::Refused,
        "participant `p2` is still needed by 1 transaction(s): t-1; wait for them to end or resolve them (twopc txn list --state in-doubt), then remove it",
        false,
    );
    assert_eq!(c.handle(1, remove("p2")), vec![refusal.clone()]);
    // Decided but not acknowledged by p2: still needed.
    c.handle(2, msg(P1, vote_commit("t-1")));
    c.handle(3, msg(P2, vote_commit("t-1")));
    c.handle(4, msg(P1, ack("t-1")));
    assert_eq!(c.handle(5, remove("p2")), vec![refusal]);
    assert!(c.members().contains_key(&pid("p2")));
    // Once p2 has acknowledged, it can go; while it is connected only
    // with force, which tells it.
    c.handle(6, msg(P2, ack("t-1")));
    assert_eq!(
        c.handle(7, remove("p2")),
        vec![reject(
            CLIENT,
            ErrorCode::Refused,
            "participant `p2` is connected; stop it first, or remove it with --force, which tells it to stop",
            false
        )]
    );
    let out = c.handle(7, remove_forced("p2"));
    assert_eq!(out.len(), 4, "{out:?}");
    assert_eq!(
        out[..3],
        [
            reject(
                P2,
                ErrorCode::Removed,
                "`p2` was removed from the cluster by an operator; stop this participant",
                true
            ),
            Action::Persist {
                record: Record::Removed {
                    participant: pid("p2"),
                    expected: 1
                },
                sync: true
            },
            notice(
                None,
                "participant p2 removed by an operator (forced, while connected); the cluster expects 1 participant(s)"
            ),
        ]
    );
    // The operator is answered once the removal is logged.
    match &out[3] {
        Action::Send {
            conn: CLIENT,
            body: Body::StatusReport(r),
            after_durable: true,
        } => {
            assert_eq!(r["expected_participants"], 1);
            assert_eq!(r["participants_registered"], 1);
            assert_eq!(r["removed"], "p2");
            let ids: Vec<&str> = r["participants"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p["id"].as_str()).collect())
                .unwrap_or_default();
            assert_eq!(ids, vec!["p1"], "{r}");
        }
        other => panic!("expected a status report, got {other:?}"),
    }
    assert!(!c.members().contains_key(&pid("p2")));
    // Its connection is forgotten: a later close changes nothing, and new
    // transactions without a participant list no longer include it.
    assert_eq!(c.handle(8, Event::Disconnected { conn: P2 }), vec![]);
    let out = c.handle(9, msg(CLIENT, submit(2)));
    assert_eq!(out, vec![send(P1, prepare("t-2", &["p1"]), false)]);
}

#[test]
fn removing_an_unknown_participant_names_the_members() {
    let mut c = ready();
    assert_eq!(
        c.handle(1, remove("p9")),
        vec![reject(
            CLIENT,
            ErrorCode::UnknownParticipant,
            "participant `p9` is not registered; registered: p1, p2",
            false
        )]
    );
}

#[test]
fn removing_a_participant_ends_aborted_transactions_waiting_for_its_ack() {
    let mut c = voting();
    // p1 votes abort: p2 is sent the abort and must acknowledge it.
    c.handle(1, msg(P1, vote_abort("t-1", None)));
    let ended = |c: &Coordinator| c.txn(&tid("t-1")).and_then(|t| t.ended_ms);
    assert_eq!(ended(&c), None, "t-1 waits for p2's ack");
    assert_eq!(c.counts().1, 0);
    let out = c.handle(2, remove_forced("p2"));
    assert_eq!(out.len(), 4, "{out:?}");
    assert_eq!(ended(&c), Some(2), "t-1 ended when p2 was removed");
    assert_eq!(c.counts().1, 1);
    assert_eq!(phase(&c, "t-1"), Some(TxnPhase::Aborted));
}

#[test]
fn membership_is_logged_and_a_restarted_coordinator_expects_its_members() {
    let mut c = ready();
    assert_eq!(
        c.live_records(),
        vec![
            Record::Joined {
                participant: pid("p1")
            },
            Record::Joined {
                participant: pid("p2")
            },
        ]
    );
    let mut r = Coordinator::recover(opts(), 10, &c.live_records());
    // Known, not yet registered: the cluster waits for them.
    assert_eq!(r.state(), ClusterState::WaitingForParticipants);
    assert_eq!(r.members().len(), 2);
    assert_eq!(r.registered_count(), 0);
    let out = r.handle(11, msg(P1, hello("p1")));
    assert_eq!(
        out,
        vec![
            notice(
                Some(P1),
                "participant p1 registered (a member known from the log)"
            ),
            send(P1, welcome(ClusterState::WaitingForParticipants), false),
        ]
    );
    r.handle(12, msg(P2, hello("p2")));
    assert_eq!(r.state(), ClusterState::Ready);
    // A removal is logged with the new expectation, and a removed
    // participant may not come back while membership is closed.
    c.handle(20, Event::Disconnected { conn: P2 });
    let out = c.handle(21, remove("p2"));
    assert_eq!(
        out[..2],
        [
            Action::Persist {
                record: Record::Removed {
                    participant: pid("p2"),
                    expected: 1
                },
                sync: true
            },
            notice(
                None,
                "participant p2 removed by an operator; the cluster expects 1 participant(s)"
            ),
        ]
    );
    assert_eq!(
        c.handle(22, msg(P3, hello("p2"))),
        vec![reject(
            P3,
            ErrorCode::Removed,
            "participant `p2` was removed from the cluster by an operator and may not register again while membership is closed (enable_dynamic_joining: true lets it rejoin); stop it",
            true
        )]
    );
    let r = Coordinator::recover(opts(), 30, &c.live_records());
    assert_eq!(r.expected(), 1);
    assert_eq!(r.members().keys().collect::<Vec<_>>(), vec![&pid("p1")]);
    assert_eq!(r.status_report().expected_participants, 1);
}

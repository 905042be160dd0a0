//! The invariants fire: each test breaks one on purpose (reaching into the
//! core's state, which no event can do) and feeds an event, and the check
//! run after it must panic naming that invariant. Debug builds only, like
//! the checks themselves.

use super::*;

/// Feed a harmless tick: nothing is due at this time in the states used
/// here, so only the invariant checks can panic.
fn tick(c: &mut Coordinator) {
    c.handle(20, Event::Tick);
}

#[test]
fn invariants_hold_through_recovery_and_removal() {
    // A recovered commit may wait for participants that have not
    // registered again; a removed participant counts as acknowledged.
    let records = [decision_record("t-9", Decision::Commit, &["p1", "p2"])];
    let mut c = Coordinator::recover(opts(), 0, &records);
    tick(&mut c);
    let mut c = voting();
    c.handle(5, msg(P1, vote_abort("t-1", None)));
    c.handle(6, remove("p2"));
    tick(&mut c);
}

#[test]
#[should_panic(
    expected = "invariant: in_prepare counts the active transactions without a decision"
)]
fn in_prepare_must_count_the_undecided() {
    let mut c = voting();
    c.in_prepare = 0;
    tick(&mut c);
}

#[test]
#[should_panic(expected = "invariant: transaction `t-1` is both active and ended")]
fn a_transaction_is_never_both_active_and_ended() {
    let mut c = committed();
    c.handle(12, msg(P1, ack("t-1")));
    c.handle(12, msg(P2, ack("t-1")));
    let ended = c.txn(&tid("t-1")).unwrap().clone();
    c.active.insert(ended.id.clone(), Box::new(ended));
    // Its phase (completed) would not fit an active transaction either;
    // the id is checked first.
    tick(&mut c);
}

#[test]
#[should_panic(expected = "invariant: active transactions are keyed by id")]
fn active_transactions_are_keyed_by_their_id() {
    let mut c = voting();
    let t = c.active.remove(&tid("t-1")).unwrap();
    c.active.insert(tid("t-0"), t);
    tick(&mut c);
}

#[test]
#[should_panic(expected = "invariant: active transaction `t-1` has an end time")]
fn an_active_transaction_has_not_ended() {
    let mut c = voting();
    c.active.get_mut(&tid("t-1")).unwrap().ended_ms = Some(5);
    tick(&mut c);
}

#[test]
#[should_panic(expected = "invariant: the phase of `t-1` (CommitPhase) fits its decision (None)")]
fn the_phase_fits_the_decision() {
    let mut c = voting();
    c.active.get_mut(&tid("t-1")).unwrap().phase = TxnPhase::CommitPhase;
    tick(&mut c);
}

#[test]
#[should_panic(
    expected = "invariant: commit decision on `t-1` without a commit vote from every participant"
)]
fn a_commit_decision_has_every_vote_commit() {
    let mut c = committed();
    let t = c.active.get_mut(&tid("t-1")).unwrap();
    t.votes.insert(pid("p2"), Vote::Abort);
    tick(&mut c);
}

#[test]
#[should_panic(expected = "invariant: votes and acks of `t-1` come from its participants")]
fn votes_come_from_participants() {
    let mut c = voting();
    let t = c.active.get_mut(&tid("t-1")).unwrap();
    t.votes.insert(pid("p9"), Vote::Commit);
    tick(&mut c);
}

#[test]
#[should_panic(expected = "invariant: the history index names only remembered transactions")]
fn the_history_index_names_remembered_transactions() {
    let mut c = ready();
    c.history_index.insert(tid("t-7"), Decision::Abort);
    tick(&mut c);
}

#[test]
#[should_panic(expected = "invariant: `t-1` waits for `p2`, which is neither a member nor removed")]
fn a_transaction_waits_only_for_members() {
    let mut c = committed();
    // Gone without the removal's bookkeeping (no acknowledgement counted).
    c.members.remove(&pid("p2"));
    tick(&mut c);
}

#[test]
#[should_panic(expected = "invariant: member `p1` is connected on ConnId(1)")]
fn a_connected_member_is_registered_on_its_connection() {
    let mut c = ready();
    c.peers.remove(&P1);
    tick(&mut c);
}

#[test]
#[should_panic(
    expected = "invariant: forced writes awaiting durability are in order and were emitted"
)]
fn commits_awaiting_durability_wait_for_emitted_writes() {
    let mut c = committed();
    c.forced_emitted = 0;
    tick(&mut c);
}

#[test]
#[should_panic(expected = "invariant: decision counters never decrease")]
fn decision_counters_never_decrease() {
    let c = committed();
    let mut before = c.counters();
    before.aborted += 1;
    c.check_progress(&before);
}

#[test]
#[should_panic(expected = "invariant: the transaction sequence never goes back")]
fn the_transaction_sequence_never_goes_back() {
    let c = voting();
    let mut before = c.counters();
    before.next_seq += 1;
    c.check_progress(&before);
}

#[test]
#[should_panic(expected = "invariant: forced writes are never un-numbered")]
fn forced_writes_are_never_unnumbered() {
    let c = committed();
    let mut before = c.counters();
    before.forced_emitted += 1;
    c.check_progress(&before);
}

//! The bank checker on constructed histories: two shards, one account on
//! each (`acct-0000` on s1, `acct-0001` on s2, 100 each) and one planned
//! transfer of `xfer-000000` from the first to the second. Each broken
//! history must be reported with exactly the violations it contains.

use super::*;

const INITIAL: i64 = 100;

fn args() -> BankArgs {
    BankArgs {
        shards: 2,
        accounts: 2,
        initial_balance: INITIAL,
        transfers: 1,
        concurrency: 1,
        chaos: false,
        crash_at: None,
        wal_segment_max_bytes: None,
        seed: Some(7),
        json: true,
        coordinators: 1,
        leader_kills: None,
    }
}

/// One transfer of `amount` from acct-0000 (s1) to acct-0001 (s2), seen by
/// the client as `seen`.
fn plan(amount: i64, seen: Seen) -> Vec<Transfer> {
    vec![Transfer {
        from: 0,
        to: 1,
        amount,
        seen,
    }]
}

/// What the checker reads back: both balances, and the transfer's marker
/// on the shards listed in `markers`.
fn state(balances: [i64; 2], markers: &[&str]) -> BTreeMap<String, Value> {
    let mut s = BTreeMap::from([
        (format!("s1/{}", account(0)), json!(balances[0])),
        (format!("s2/{}", account(1)), json!(balances[1])),
    ]);
    for shard in markers {
        s.insert(
            format!("{shard}/{}", marker(0)),
            json!({"from": 0, "to": 1, "amount": 0}),
        );
    }
    s
}

/// The checker's verdict and violations for one history.
fn verdict(plan: &[Transfer], state: &BTreeMap<String, Value>) -> (bool, Vec<String>) {
    let (report, ok) = check(&args(), plan, state, 7, 0.0, Vec::new());
    assert_eq!(report["ok"], json!(ok), "{report}");
    let violations = report["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| v.as_str().expect("a violation is text").to_string())
        .collect();
    (ok, violations)
}

#[test]
fn a_clean_history_passes() {
    for (seen, applied) in [
        (Seen::Committed, true),
        (Seen::Aborted, false),
        (Seen::Unknown, true),
        (Seen::Unknown, false),
    ] {
        let (balances, markers): ([i64; 2], &[&str]) = if applied {
            ([70, 130], &["s1", "s2"])
        } else {
            ([100, 100], &[])
        };
        let (ok, violations) = verdict(&plan(30, seen), &state(balances, markers));
        assert!(ok, "{seen:?}, applied {applied}: {violations:?}");
        assert!(violations.is_empty(), "{seen:?}: {violations:?}");
    }
    let (report, _) = check(
        &args(),
        &plan(30, Seen::Unknown),
        &state([70, 130], &["s1", "s2"]),
        7,
        0.0,
        Vec::new(),
    );
    assert_eq!(
        (&report["unknown"], &report["unknown_applied"]),
        (&json!(1), &json!(1)),
        "{report}"
    );
    assert_eq!(report["total_balance"], json!(2 * INITIAL), "{report}");
}

#[test]
fn a_lost_commit_is_reported() {
    // The client saw a commit; neither shard holds the marker or the money.
    let (ok, violations) = verdict(&plan(30, Seen::Committed), &state([100, 100], &[]));
    assert!(!ok);
    assert_eq!(
        violations,
        ["transfer 0 was reported committed but is not applied everywhere"]
    );
}

#[test]
fn a_transfer_applied_on_one_shard_only_is_reported() {
    // No decision reached the client; only s1 holds the marker.
    let (ok, violations) = verdict(&plan(30, Seen::Unknown), &state([100, 100], &["s1"]));
    assert!(!ok);
    assert_eq!(violations, ["transfer 0 is applied on s1 but not on s2"]);
    let (_, violations) = verdict(&plan(30, Seen::Unknown), &state([100, 100], &["s2"]));
    assert_eq!(violations, ["transfer 0 is applied on s2 but not on s1"]);
}

#[test]
fn a_negative_balance_is_reported() {
    // A committed transfer larger than the balance (the `min: 0` guard
    // failed): balances match the applied transfers and the total holds,
    // so the negative balance is the only violation.
    let (ok, violations) = verdict(
        &plan(110, Seen::Committed),
        &state([-10, 210], &["s1", "s2"]),
    );
    assert!(!ok);
    assert_eq!(violations, ["acct-0000 has a negative balance -10"]);
}

#[test]
fn an_abort_the_client_saw_that_was_applied_is_reported() {
    let (ok, violations) = verdict(&plan(30, Seen::Aborted), &state([70, 130], &["s1", "s2"]));
    assert!(!ok);
    assert_eq!(
        violations,
        ["transfer 0 was reported aborted but is applied"]
    );
}

#[test]
fn a_total_that_changed_is_reported() {
    // Nothing was applied, yet acct-0001 gained 50.
    let (ok, violations) = verdict(&plan(30, Seen::Aborted), &state([100, 150], &[]));
    assert!(!ok);
    assert_eq!(
        violations,
        [
            "acct-0001 holds 150, expected 100 from the applied transfers",
            "total balance is 250, expected 200",
        ]
    );
}

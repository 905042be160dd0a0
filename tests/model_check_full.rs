//! The complete model checks that take minutes: run them in a release build,
//! `cargo test --release --test model_check_full` (see README
//! "Correctness" for the figures and times).
//!
//! Same world, same checks and same explorer as `tests/model_check.rs`
//! (whose top comment says what is modelled and what is checked), on two
//! configurations too large for a debug build:
//!
//! - two concurrent transactions on two participants, no faults, the whole
//!   graph: safety in every state, and liveness (from every state, a state
//!   with nothing left in doubt is reachable);
//! - three participants, one transaction, one crash of any process at any
//!   point, the whole graph, safety and liveness.
//!
//! Both are explored with the reductions of `model::system` (participants
//! and transactions interchangeable where the cores cannot tell them apart,
//! logs left out once no crash can read them). Those reductions are checked
//! here on the one-fault and three-participant configurations of
//! `model_check.rs`, whole: without any reduction, states merged by the
//! reduced fingerprint must behave alike (see `model::quotient`).
//!
//! Each test prints its figures, time and the process's peak resident set
//! to stderr. The tests run side by side on two threads; together they
//! stayed under 3.5 GiB.

#[allow(dead_code)]
mod model;

use model::explore::{explore, peak_rss_mib, Model, Options, Report};
use model::system::{
    Config, Faults, System, TAG_ABORT, TAG_COMMIT, TAG_ONE_OF_EACH, TAG_TWO_IN_DOUBT,
};
use std::io::Write;

/// Explore `cfg` completely, liveness included, and print its figures.
fn complete(name: &str, cfg: Config) -> Report {
    let sys = System::new(cfg);
    let opts = Options {
        liveness: true,
        max_states: 20_000_000,
        max_depth: None,
    };
    let r = explore(&sys, opts).unwrap_or_else(|f| panic!("{name}: {f}"));
    let (c, p) = sys.core_states();
    let _ = writeln!(
        std::io::stderr(),
        "model_check_full {name}: {} states, {} transitions, max depth {}, {c}+{p} core \
         states, {:.1} s, peak resident set of the process so far {} MiB",
        r.states,
        r.transitions,
        r.max_depth,
        r.elapsed.as_secs_f64(),
        peak_rss_mib()
    );
    r
}

#[test]
fn two_participants_two_transactions_complete() {
    let r = complete(
        "2p-2txn",
        Config {
            participants: 2,
            txns: 2,
            faults: Faults::default(),
            broken: None,
        },
    );
    assert_eq!(
        r.tags,
        TAG_COMMIT | TAG_ABORT | TAG_TWO_IN_DOUBT | TAG_ONE_OF_EACH,
        "both outcomes, two transactions in doubt at one participant, and one \
         transaction committed while the other aborted"
    );
    assert_eq!(
        (r.states, r.transitions, r.max_depth),
        (7_695_953, 64_503_294, 37)
    );
}

#[test]
fn three_participants_crash_complete() {
    let r = complete(
        "3p-crash",
        Config {
            participants: 3,
            txns: 1,
            faults: Faults {
                crashes: 1,
                ..Faults::default()
            },
            broken: None,
        },
    );
    assert_eq!(r.tags & (TAG_COMMIT | TAG_ABORT), TAG_COMMIT | TAG_ABORT);
    assert_eq!(
        (r.states, r.transitions, r.max_depth),
        (4_527_737, 47_923_787, 43)
    );
}

/// The reductions on the one-fault and three-participant configurations of
/// `model_check.rs`, whole: the groups are exactly the states it pins.
#[test]
fn reductions_merge_only_states_that_behave_alike_whole() {
    let two = |faults| Config {
        participants: 2,
        txns: 1,
        faults,
        broken: None,
    };
    let cases = [
        (
            "2p-crash",
            two(Faults {
                crashes: 1,
                ..Faults::default()
            }),
            (203_684, 83_517),
        ),
        (
            "2p-break",
            two(Faults {
                breaks: 1,
                ..Faults::default()
            }),
            (122_420, 59_454),
        ),
        (
            "2p-dup-loss",
            two(Faults {
                losses: 1,
                dups: 1,
                ..Faults::default()
            }),
            (147_945, 74_157),
        ),
        (
            "3p",
            Config {
                participants: 3,
                txns: 1,
                faults: Faults::default(),
                broken: None,
            },
            (566_102, 97_700),
        ),
    ];
    for (name, cfg, expected) in cases {
        let sys = System::new(cfg);
        let q = model::quotient::check(
            &sys,
            |s| sys.exact_fingerprint(s),
            |s| sys.fingerprint(s),
            None,
            5_000_000,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let _ = writeln!(
            std::io::stderr(),
            "model_check_full reduction {name}: {} states without it, {} with it",
            q.states,
            q.groups
        );
        assert_eq!((q.states, q.groups), expected, "{name}");
    }
}

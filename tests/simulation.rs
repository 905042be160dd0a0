//! Seeded, deterministic simulation of a whole cluster under faults (see
//! `sim` for what is real and what is simulated, and what is checked).
//!
//! - `cargo test --test simulation` runs a fixed range of seeds (64 by
//!   default; `TWOPC_SIM_SEEDS=N` and `TWOPC_SIM_FIRST_SEED=S` change it).
//! - A long soak: `TWOPC_SIM_SEEDS=20000 cargo test --release --test
//!   simulation seeds -- --nocapture`.
//! - A failure prints its seed; `TWOPC_SIM_SEED=S cargo test --test
//!   simulation replay -- --nocapture` runs that one seed again (identically:
//!   every choice comes from the seed), and `TWOPC_SIM_TRACE=1` prints every
//!   event.

mod sim;

use sim::{Config, Report, Sim};
use std::io::Write;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

fn run_seeds(name: &str, cfg: Config, first: u64, count: u64) -> Report {
    let mut total = Report::default();
    for seed in first..first + count {
        match Sim::new(cfg, seed).run() {
            Ok(r) => total.add(&r),
            Err(e) => panic!("{name}: {e}"),
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "simulation {name}: seeds {first}..={}: {} faults injected {:?}; client outcomes: {} committed, {} aborted, {} refused, {} unknown; {} events, {} log syncs, {} checkpoints, {} torn log tails cut at recovery; 0 violations",
        first + count - 1,
        total.fault_count(),
        total.faults,
        total.committed,
        total.aborted,
        total.refused,
        total.unknown,
        total.events,
        total.syncs,
        total.checkpoints,
        total.torn_tails,
    );
    total
}

#[test]
fn seeds() {
    let first = env_u64("TWOPC_SIM_FIRST_SEED", 1);
    let count = env_u64("TWOPC_SIM_SEEDS", 64);
    let r = run_seeds("3 participants, 4 clients", Config::default(), first, count);
    // The runs must have done what they are for: transactions both ways,
    // and every kind of fault.
    assert!(r.committed > 0 && r.aborted > 0, "{r:?}");
    for kind in [
        "coordinator crash",
        "participant crash",
        "crash between write and sync",
        "partition",
        "stopped participant",
        "connection reset",
        "stalled disk",
        "latency spike",
    ] {
        assert!(
            r.faults.get(kind).copied().unwrap_or(0) > 0 || count < 16,
            "no `{kind}` fault in {count} seeds: {r:?}"
        );
    }
    assert!(r.checkpoints > 0 || count < 16, "{r:?}");
}

/// Seeds from `TWO_PARTICIPANTS` on run the two-participant, eight-client
/// configuration, so that a seed alone says which run it was.
const TWO_PARTICIPANTS: u64 = 1_000_000;

fn config_for(seed: u64) -> Config {
    if seed >= TWO_PARTICIPANTS {
        Config {
            participants: 2,
            clients: 8,
            accounts_per_shard: 16,
            ..Config::default()
        }
    } else {
        Config::default()
    }
}

#[test]
fn seeds_two_participants_many_clients() {
    let cfg = config_for(TWO_PARTICIPANTS);
    let first = env_u64("TWOPC_SIM_FIRST_SEED", 1) + TWO_PARTICIPANTS;
    let count = env_u64("TWOPC_SIM_SEEDS", 64) / 2;
    let r = run_seeds("2 participants, 8 clients", cfg, first, count);
    assert!(r.committed > 0 && r.aborted > 0, "{r:?}");
}

#[test]
fn without_faults_everything_commits_or_aborts_cleanly() {
    let cfg = Config {
        faults: false,
        ..Config::default()
    };
    let r = run_seeds("no faults", cfg, 1, 4);
    assert_eq!(r.fault_count(), 0);
    assert_eq!(r.unknown, 0, "no fault, so every client hears its outcome");
    assert!(r.committed > 100, "{r:?}");
}

#[test]
fn same_seed_same_run() {
    let a = Sim::new(Config::default(), 7).run().expect("seed 7");
    let b = Sim::new(Config::default(), 7).run().expect("seed 7");
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

/// Replays `TWOPC_SIM_SEED` (default: seed 1).
#[test]
fn replay() {
    let seed = env_u64("TWOPC_SIM_SEED", 1);
    match Sim::new(config_for(seed), seed).run() {
        Ok(r) => {
            let _ = writeln!(std::io::stderr(), "seed {seed}: {r:?}");
        }
        Err(e) => panic!("{e}"),
    }
}

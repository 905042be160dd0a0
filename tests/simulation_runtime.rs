//! The real runtime (coordinator and participant nodes with their tasks,
//! connections, heartbeats, deadlines and group-commit log) under a seeded,
//! deterministic simulation of network, clock and disk, with faults (see
//! `simrt` for what is real, what is simulated, and what is checked).
//!
//! - `cargo test --test simulation_runtime` runs a fixed range of seeds
//!   (`TWOPC_SIMRT_SEEDS=N`, default 48, and `TWOPC_SIMRT_FIRST_SEED=S`
//!   change it; a soak is more seeds).
//! - A failure prints its seed and the last events; `TWOPC_SIMRT_SEED=S
//!   cargo test --test simulation_runtime replay -- --nocapture` runs that
//!   seed again, identically (`same_seed_same_events` checks that two runs
//!   of one seed produce the same events).
//! - The `checker_` tests run the nodes with a deliberate runtime bug
//!   (`twopc::sim::Bug`) and pin the first seed whose run is caught.

mod simrt;

use simrt::{Config, Report, World};
use std::io::Write;
use std::time::Instant;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

fn run_seeds(cfg: Config, first: u64, count: u64) -> Report {
    let started = Instant::now();
    let mut total = Report::default();
    for seed in first..first + count {
        match World::new(cfg, seed).run() {
            Ok(r) => total.add(&r),
            Err(e) => panic!("runtime simulation: {e}"),
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "runtime simulation: seeds {first}..={}: {} faults {:?}; client outcomes: {} committed, {} aborted, {} unknown; {} outcomes applied at participants; 0 violations; {:.1} s wall",
        first + count - 1,
        total.fault_count(),
        total.faults,
        total.committed,
        total.aborted,
        total.unknown,
        total.applied,
        started.elapsed().as_secs_f64(),
    );
    total
}

#[test]
fn seeds() {
    let first = env_u64("TWOPC_SIMRT_FIRST_SEED", 1);
    let count = env_u64("TWOPC_SIMRT_SEEDS", 48);
    let r = run_seeds(Config::default(), first, count);
    assert!(r.committed > 0 && r.aborted > 0, "{r:?}");
    if count >= 16 {
        for kind in [
            "coordinator crash",
            "participant crash",
            "partition",
            "one-way partition",
            "paused node",
            "latency spike",
            "stalled disk",
            "fsync error",
        ] {
            assert!(
                r.faults.get(kind).copied().unwrap_or(0) > 0,
                "no `{kind}` fault in {count} seeds: {r:?}"
            );
        }
    }
}

/// `TWOPC_SIMRT_SEED=S`: run one seed again (seed 1 when unset).
#[test]
fn replay() {
    let seed = env_u64("TWOPC_SIMRT_SEED", 1);
    run_seeds(Config::default(), seed, 1);
}

#[test]
fn same_seed_same_events() {
    for seed in [3, 11] {
        let a = World::new(Config::default(), seed)
            .run()
            .expect("first run");
        let b = World::new(Config::default(), seed)
            .run()
            .expect("second run");
        assert_eq!(a.digest, b.digest, "seed {seed}: two runs differ");
        assert!(a.fault_count() > 0 && a.applied > 0, "{a:?}");
    }
}

//! A crash inside a log checkpoint, with the real log (`wal::Wal`), the real
//! kv store and the real participant core: at every step of a checkpoint,
//! and with every prefix of every file the checkpoint wrote but had not yet
//! synced (what a power loss may leave), recovery must still find the
//! prepared transaction in doubt *and* its pending writes in the store, so
//! that the decision that comes later is applied in full.
//!
//! The scenario is the one that once lost money: a shard holds
//! `alice = 100`, transaction `c1-1` prepared `alice += 40` (in doubt), and the
//! log is checkpointed into `[Snapshot{alice:100}, Prepared(c1-1)]`. A new
//! segment cut inside its `Prepared` record used to be replayed after the old
//! segments: the snapshot cleared the pending writes, the cut record was
//! dropped as a torn tail, the core still reported `c1-1` in doubt, and the
//! COMMIT that followed left `alice` at 100 while the other shard applied the
//! transfer.

use serde_json::json;
use std::path::{Path, PathBuf};
use twopc::protocol::participant::{Participant, ParticipantOptions};
use twopc::protocol::{Decision, ParticipantId, Record, TxnId};
use twopc::resource::kv::KvStore;
use twopc::wal::{snapshot_records, CheckpointStep, Wal, WalOptions};

fn txn() -> TxnId {
    TxnId("c1-1".into())
}

/// A data directory whose log holds the seed `alice = 100` and transaction
/// `c1-1` prepared to add 40, plus the records a checkpoint would carry.
fn prepared_shard(dir: &Path) -> Vec<Record> {
    let mut kv = KvStore::new();
    kv.seed(&json!({"alice": 100, "bob": 7})).unwrap();
    let seed = snapshot_records(kv.dump()).unwrap();
    let ops = KvStore::parse_ops(&json!({"operations": [
        {"op": "add", "key": "alice", "delta": 40}
    ]}))
    .unwrap();
    let (pending, _) = kv.prepare_ops(&txn(), &ops).unwrap();
    let prepared = Record::Prepared {
        txn: txn(),
        participants: vec![ParticipantId("p1".into()), ParticipantId("p2".into())],
        state: serde_json::to_value(&pending).unwrap(),
    };
    let mut wal = Wal::open(dir, WalOptions::default()).unwrap().wal;
    for r in seed.iter().chain([&prepared]) {
        wal.write(&twopc::wal::encode_record(r)).unwrap();
    }
    wal.sync().unwrap();
    // What the participant runtime checkpoints: the store's snapshot, then
    // the core's live records (the in-doubt transaction).
    let mut live = snapshot_records(kv.dump()).unwrap();
    live.push(prepared);
    live
}

/// Recover the directory as a participant does and report what the core
/// and the store hold; then apply COMMIT to the store and return `alice`.
fn recover_and_commit(dir: &Path, ctx: &str) -> i64 {
    let opened = Wal::open(dir, WalOptions::default())
        .unwrap_or_else(|e| panic!("{ctx}: the log does not open: {e}"));
    let opts = ParticipantOptions {
        id: ParticipantId("p1".into()),
        ..ParticipantOptions::default()
    };
    let core = Participant::recover(opts, 0, &opened.records);
    assert_eq!(
        core.in_doubt(),
        vec![txn()],
        "{ctx}: c1-1 must be in doubt after recovery"
    );
    let mut kv = KvStore::new();
    kv.replay(&opened.records)
        .unwrap_or_else(|e| panic!("{ctx}: replay failed: {e}"));
    use twopc::resource::Resource;
    let status = kv.status();
    assert_eq!(
        (status["prepared"].clone(), status["locked_keys"].clone()),
        (json!(1), json!(1)),
        "{ctx}: the store must hold c1-1's pending write and its lock: {status}"
    );
    assert_eq!(kv.get("bob"), Some(&json!(7)), "{ctx}: seed data lost");
    kv.finish_txn(&txn(), Decision::Commit);
    kv.get("alice").and_then(|v| v.as_i64()).unwrap_or(-1)
}

/// Files in `dir` (sorted), with their sizes.
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut v: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "LOCK"))
        .filter(|p| p.is_file())
        .map(|p| {
            let n = std::fs::metadata(&p).unwrap().len();
            (p, n)
        })
        .collect();
    v.sort();
    v
}

/// Copy a data directory (the log files only) into a fresh one.
fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for (p, _) in files(from) {
        std::fs::copy(&p, to.path().join(p.file_name().unwrap())).unwrap();
    }
    to
}

#[test]
fn a_crash_at_any_step_of_a_checkpoint_keeps_the_prepared_writes() {
    for step in CheckpointStep::ALL {
        let dir = tempfile::tempdir().unwrap();
        let live = prepared_shard(dir.path());
        let before = files(dir.path());
        {
            let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap().wal;
            let stopped = wal.checkpoint_until(&live, |s| s == step).unwrap();
            assert_eq!(stopped, Some(step), "the checkpoint stops at {step:?}");
        }
        // The process is gone here. Every file the checkpoint created or
        // grew and had not synced may keep any prefix after a power loss;
        // a kill -9 keeps what was written.
        let unsynced: Vec<(PathBuf, u64)> = match step {
            CheckpointStep::PartialWrite | CheckpointStep::BeforeSync => files(dir.path())
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect(),
            CheckpointStep::BeforeRename | CheckpointStep::BeforeOldRemoved => Vec::new(),
        };
        let ctx = format!("crash at {step:?}");
        assert_eq!(
            recover_and_commit(copy_dir(dir.path()).path(), &ctx),
            140,
            "{ctx}"
        );
        for (path, len) in unsynced {
            for cut in 0..len {
                let crashed = copy_dir(dir.path());
                let f = crashed.path().join(path.file_name().unwrap());
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&f)
                    .unwrap()
                    .set_len(cut)
                    .unwrap();
                let ctx = format!("crash at {step:?}, {} cut to {cut} bytes", f.display());
                assert_eq!(recover_and_commit(crashed.path(), &ctx), 140, "{ctx}");
            }
        }
    }
}

#[test]
fn a_finished_checkpoint_replaces_the_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let live = prepared_shard(dir.path());
    {
        let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap().wal;
        assert_eq!(wal.checkpoint_until(&live, |_| false).unwrap(), None);
    }
    let names: Vec<String> = files(dir.path())
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("wal-"))
        .collect();
    assert_eq!(names, vec!["wal-0000000000000002.log".to_string()]);
    assert_eq!(recover_and_commit(dir.path(), "after a checkpoint"), 140);
}

#[test]
fn an_interrupted_checkpoint_leaves_nothing_behind_after_open() {
    let dir = tempfile::tempdir().unwrap();
    let live = prepared_shard(dir.path());
    {
        let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap().wal;
        wal.checkpoint_until(&live, |s| s == CheckpointStep::BeforeRename)
            .unwrap();
    }
    let opened = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(opened.unfinished_checkpoints.len(), 1);
    assert!(opened.unfinished_checkpoints[0]
        .to_string_lossy()
        .ends_with("wal-0000000000000002.tmp"));
    assert!(opened.torn_tail.is_none());
    drop(opened);
    let names: Vec<String> = files(dir.path())
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("wal-"))
        .collect();
    assert_eq!(names, vec!["wal-0000000000000001.log".to_string()]);
    // The next checkpoint reuses the number and completes.
    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap().wal;
    wal.checkpoint(&live).unwrap();
    drop(wal);
    assert_eq!(
        recover_and_commit(dir.path(), "after a retried checkpoint"),
        140
    );
}

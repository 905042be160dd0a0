//! The group-commit writer against a real log in a temporary directory. The
//! durable watermark is awaited through its watch channel; where the writer
//! gives no signal (an unforced append reaching the file) the file itself
//! is read until the bytes are there.

use super::*;
use crate::protocol::{Decision, TxnId};
use crate::wal::{encode_record, Wal, WalOptions};
use std::path::Path;
use std::time::{Duration, Instant};

/// Bound for anything awaited: only a writer that never gets there fails.
const PATIENCE: Duration = Duration::from_secs(60);

fn rec(i: u32) -> Record {
    Record::Decided {
        txn: TxnId(format!("t{i}")),
        decision: Decision::Commit,
        heuristic: None,
    }
}

/// A fresh log in `dir`; its directory lock is released at once so the
/// test can reopen the directory after the writer is gone.
fn open(dir: &Path) -> Wal {
    Wal::open(dir, WalOptions::default()).expect("open log").wal
}

/// Every record the log in `dir` holds, as recovery reads it.
fn reopen(dir: &Path) -> Vec<Record> {
    Wal::open(dir, WalOptions::default())
        .expect("reopen log")
        .records
}

/// Wait until `lsn` is durable; returns the watermark then.
fn await_durable(rx: &mut watch::Receiver<u64>, lsn: u64) -> u64 {
    let got = futures::executor::block_on(rx.wait_for(|d| *d >= lsn)).map(|d| *d);
    got.expect("the writer thread stopped before the append was durable")
}

/// Bytes of records in the log's (single) segment of `dir` (the file also
/// holds the zeros written ahead of them).
fn segment_bytes(dir: &Path) -> u64 {
    let report = crate::wal::scan(dir).expect("scan the log");
    assert_eq!(report.segments.len(), 1, "{:?}", report.segments);
    report.lengths[0]
}

/// Wait until the segment of `dir` holds `bytes` bytes.
fn await_written(dir: &Path, bytes: u64) {
    let start = Instant::now();
    while segment_bytes(dir) < bytes {
        assert!(
            start.elapsed() < PATIENCE,
            "the writer did not write {bytes} bytes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(segment_bytes(dir), bytes);
}

fn frame_bytes(records: &[Record]) -> u64 {
    records.iter().map(|r| encode_record(r).len() as u64).sum()
}

#[test]
fn appends_queued_while_the_writer_is_busy_share_one_sync() {
    const N: u32 = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = open(dir.path());
    // Every append is handed over (one turn each) before the writer thread
    // exists, as when many turns append during one sync: its first batch
    // takes them all.
    let (tx, rx) = mpsc::unbounded_channel();
    let handoff = Arc::new(Handoff::default());
    for i in 1..=N {
        let cmd = Cmd::Append {
            frame: encode_record(&rec(i)),
            sync: true,
            lsn: u64::from(i),
        };
        handoff.queued.fetch_add(1, Ordering::AcqRel);
        tx.send(vec![cmd]).expect("hand an append over");
    }
    let (dtx, mut drx) = watch::channel(0u64);
    let stats = Arc::new(WalStats::default());
    let (st, ho) = (stats.clone(), handoff.clone());
    let writer = std::thread::spawn(move || writer_loop(wal, rx, &ho, &dtx, st));
    assert_eq!(await_durable(&mut drx, u64::from(N)), u64::from(N));
    assert_eq!(
        stats.syncs.load(Ordering::Relaxed),
        1,
        "one sync for {N} appends"
    );
    assert_eq!(handoff.queued.load(Ordering::Acquire), 0, "all taken");
    drop(tx);
    assert_eq!(writer.join().expect("writer thread"), Ok(()));
    let all: Vec<Record> = (1..=N).map(rec).collect();
    assert_eq!(reopen(dir.path()), all);
}

/// Appending only queues; the turn's appends reach the thread when the
/// event loop hands them over, all at once, so they share one sync.
#[test]
fn a_turn_s_appends_are_handed_over_together_and_share_one_sync() {
    const N: u32 = 64;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = GroupCommit::start(open(dir.path()), 4096);
    let mut last = 0;
    for i in 1..=N {
        last = g.append(&rec(i), true);
    }
    assert!(g.backlogged(), "the turn's appends wait for the hand-over");
    assert_eq!(segment_bytes(dir.path()), 0, "nothing reached the writer");
    g.hand_over();
    assert!(!g.backlogged());
    let mut durable = g.watch();
    assert_eq!(await_durable(&mut durable, last), last);
    assert_eq!(g.stats.syncs.load(Ordering::Relaxed), 1, "one sync for {N}");
    drop(g);
    assert_eq!(reopen(dir.path()), (1..=N).map(rec).collect::<Vec<_>>());
}

/// A `GroupCommit` without a thread: the test takes the hand-overs itself.
fn detached(queue_max: usize) -> (GroupCommit, mpsc::UnboundedReceiver<Batch>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (_, durable) = watch::channel(0u64);
    let g = GroupCommit {
        tx: Some(tx),
        handoff: Arc::new(Handoff::default()),
        queue_max,
        waiting: Vec::new(),
        next_lsn: 1,
        last_sync_lsn: 0,
        durable,
        failure: Arc::new(Mutex::new(None)),
        stats: Arc::new(WalStats::default()),
        thread: None,
    };
    (g, rx)
}

/// What the writer thread does when it takes hand-overs.
fn take(g: &GroupCommit, rx: &mut mpsc::UnboundedReceiver<Batch>) -> Vec<u64> {
    let mut lsns = Vec::new();
    while let Ok(batch) = rx.try_recv() {
        g.handoff.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        lsns.extend(batch.iter().map(|c| match c {
            Cmd::Append { lsn, .. } => *lsn,
            Cmd::Checkpoint(_) => 0,
        }));
    }
    g.handoff.room.notify_one();
    lsns
}

/// The thread holds at most `queue_max` appends not yet taken: a turn that
/// would pass it waits (whole, in order) until the thread took what it
/// holds; a turn larger than `queue_max` goes alone.
#[test]
fn hand_overs_wait_for_room_and_keep_their_order() {
    let (mut g, mut rx) = detached(4);
    for i in 1..=3 {
        g.append(&rec(i), true);
    }
    g.hand_over();
    assert!(!g.backlogged());
    g.append(&rec(4), true);
    g.append(&rec(5), true);
    g.hand_over();
    assert!(g.backlogged(), "3 held + 2 would pass 4");
    assert_eq!(take(&g, &mut rx), [1, 2, 3]);
    futures::executor::block_on(g.drain());
    assert!(!g.backlogged());
    assert_eq!(take(&g, &mut rx), [4, 5]);
    for i in 6..=11 {
        g.append(&rec(i), false);
    }
    g.hand_over();
    assert!(!g.backlogged(), "nothing held: a turn of 6 goes alone");
    assert_eq!(take(&g, &mut rx), [6, 7, 8, 9, 10, 11]);
    drop(rx);
    g.append(&rec(12), true);
    futures::executor::block_on(g.drain());
    assert!(g
        .failure()
        .is_some_and(|f| f.contains("writer thread is gone")));
}

#[test]
fn the_watermark_moves_only_when_a_sync_covers_an_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = GroupCommit::start(open(dir.path()), 16);
    let mut durable = g.watch();
    assert_eq!((g.append(&rec(1), false), g.append(&rec(2), false)), (1, 2));
    g.hand_over();
    // Unforced appends are written, but nothing syncs them: not durable.
    await_written(dir.path(), frame_bytes(&[rec(1), rec(2)]));
    assert_eq!(g.durable(), 0);
    assert_eq!(g.barrier(), 0, "no append asked for a sync");
    assert_eq!(g.stats.syncs.load(Ordering::Relaxed), 0);
    // A forced append's sync covers the unforced ones before it too.
    assert_eq!(g.append(&rec(3), true), 3);
    g.hand_over();
    assert_eq!(g.barrier(), 3);
    assert_eq!(await_durable(&mut durable, 3), 3);
    assert_eq!(g.durable(), 3);
    assert_eq!(g.stats.syncs.load(Ordering::Relaxed), 1);
    // Another unforced append leaves the watermark where it was.
    assert_eq!(g.append(&rec(4), false), 4);
    g.hand_over();
    await_written(dir.path(), frame_bytes(&[rec(1), rec(2), rec(3), rec(4)]));
    assert_eq!((g.durable(), g.barrier()), (3, 3));
    assert_eq!(g.stats.syncs.load(Ordering::Relaxed), 1);
}

#[test]
fn a_checkpoint_is_written_in_order_with_the_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = GroupCommit::start(open(dir.path()), 16);
    g.append(&rec(1), false);
    g.append(&rec(2), true);
    // Only t2 is live: t1 must stay in the old segment (deleted), t3 must
    // land in the new one (kept).
    g.checkpoint(vec![rec(2)]);
    g.append(&rec(3), true);
    g.hand_over();
    let mut durable = g.watch();
    assert_eq!(await_durable(&mut durable, 3), 3);
    let stats = g.stats.clone();
    drop(g);
    assert_eq!(stats.checkpoints.load(Ordering::Relaxed), 1);
    let segments = crate::wal::list_segments(dir.path()).expect("segments");
    let seqs: Vec<u64> = segments.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [2], "the checkpoint's segment alone remains");
    assert_eq!(reopen(dir.path()), [rec(2), rec(3)]);
}

#[test]
fn dropping_the_writer_writes_and_syncs_everything_queued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = GroupCommit::start(open(dir.path()), 16);
    let all: Vec<Record> = (1..=50).map(rec).collect();
    for r in &all {
        g.append(r, false);
    }
    let stats = g.stats.clone();
    drop(g);
    // No append asked for a sync: the one sync is the writer's last act.
    assert_eq!(stats.syncs.load(Ordering::Relaxed), 1);
    assert_eq!(segment_bytes(dir.path()), frame_bytes(&all));
    assert_eq!(reopen(dir.path()), all);
}

#[test]
fn a_burst_through_a_queue_of_one_lands_whole_and_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = GroupCommit::start(open(dir.path()), 1);
    let all: Vec<Record> = (1..=500).map(rec).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut last = 0;
    for r in &all {
        last = g.append(r, true);
        // What the event loop does before it takes new input.
        if g.backlogged() {
            rt.block_on(g.drain());
        }
    }
    assert!(!g.backlogged());
    let mut durable = g.watch();
    assert_eq!(await_durable(&mut durable, last), last);
    assert_eq!(g.failure(), None);
    drop(g);
    assert_eq!(reopen(dir.path()), all);
}

#[test]
fn a_record_the_log_could_not_read_back_stops_the_log_instead_of_the_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = GroupCommit::start(open(dir.path()), 16);
    g.append(&rec(1), true);
    let huge = Record::Decided {
        txn: TxnId("x".repeat(crate::wal::RECORD_MAX_BYTES + 1)),
        decision: Decision::Commit,
        heuristic: None,
    };
    g.append(&huge, true);
    let why = g.failure().expect("the log reports its failure");
    assert!(why.contains("exceeds the record limit"), "{why}");
    drop(g);
    assert_eq!(
        reopen(dir.path()),
        [rec(1)],
        "the oversized record is never written"
    );
}

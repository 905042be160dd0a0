//! The write-ahead log end to end, on real processes and real files: a torn
//! tail is cut at start-up without losing anything acknowledged, damage
//! before the tail stops the process with the file and offset, a data
//! directory serves one process at a time, and checkpoints keep the log
//! small under load.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use twopc::protocol::{Decision, Record, TxnId};

/// A coordinator expecting `n` participants p1..pn that vote commit, ready.
fn cluster(n: usize, coordinator_args: &[&str], participant_args: &[&str]) -> Cluster {
    let mut c = Cluster::new();
    let expected = n.to_string();
    let mut args = vec!["--expected-participants", expected.as_str()];
    args.extend_from_slice(coordinator_args);
    c.start_coordinator(&args, &[]);
    c.start_participants(n, participant_args);
    c.wait_ready(n);
    c
}

/// Run `k` transactions, each of which must commit, and wait until every
/// participant has acknowledged them (so every log holds its final record);
/// returns their ids.
fn commit_n(c: &Cluster, k: usize) -> Vec<String> {
    let ids = (0..k)
        .map(|i| {
            let (id, o) = c.submit(req(json!({"n": i}))).expect("submit");
            assert_eq!(o.decision, Decision::Commit, "{id}: {o:?}");
            id.0
        })
        .collect();
    settled_counts(c);
    ids
}

/// SIGTERM `p`; it must exit cleanly.
fn stop(p: &mut Proc) {
    let status = p.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "{} did not stop cleanly: {status:?}; log:\n{}",
        p.name,
        p.log_text()
    );
}

/// The newest segment and the bytes its records take (the file goes on
/// with zeros written ahead of them).
fn newest_segment(dir: &Path) -> (PathBuf, u64) {
    let report = twopc::wal::scan(dir).expect("scan the log");
    let seg = report.segments.last().expect("a log segment").clone();
    (seg, *report.lengths.last().expect("its length"))
}

/// Write `bytes` at `at` in `path`: over the zeros after the records, as an
/// append cut short by a crash leaves them.
fn write_at(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.write_all_at(bytes, at))
        .expect("write into a segment");
}

/// transaction id -> state, from a `wal inspect` report.
fn states(report: &Value) -> BTreeMap<String, String> {
    report["transactions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["transaction_id"].as_str().unwrap_or_default().to_string(),
                t["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Flip one payload byte of record `nth` (from 0) of the oldest segment in
/// `dir`, which must hold later records; returns the segment and the
/// record's byte offset.
fn corrupt_record(dir: &Path, nth: usize) -> (PathBuf, usize) {
    let (seg, _) = wal_segments(dir).into_iter().next().expect("a log segment");
    let mut bytes = std::fs::read(&seg).expect("read segment");
    let header = twopc::wal::HEADER_BYTES;
    let payload_len =
        |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
    let offset = (0..nth).fold(0, |at, _| at + header + payload_len(at));
    let len = payload_len(offset);
    assert!(
        bytes.len() > offset + header + len,
        "{}: record {nth} must have records after it",
        seg.display()
    );
    bytes[offset + header + len / 2] ^= 0x20;
    std::fs::write(&seg, bytes).expect("write segment");
    (seg, offset)
}

#[test]
fn a_torn_tail_is_cut_at_start_up_and_nothing_acknowledged_is_lost() {
    let mut c = cluster(1, &[], &[]);
    let ids = commit_n(&c, 3);
    stop(&mut c.participants[0]);
    stop(c.coordinator.as_mut().expect("coordinator"));
    let (pdir, cdir) = (c.participant_dir(0), c.coordinator_dir());
    let (_, p_before) = wal_inspect(&pdir);
    let (_, c_before) = wal_inspect(&cdir);

    // The participant's log ends in half a record, as a crash in the middle
    // of an append leaves it; the coordinator's in a few garbage bytes.
    let (pseg, plen) = newest_segment(&pdir);
    let frame = twopc::wal::encode_record(&Record::Decided {
        txn: TxnId::from("torn-1"),
        decision: Decision::Commit,
        heuristic: None,
    });
    write_at(&pseg, plen, &frame[..frame.len() / 2]);
    let (cseg, clen) = newest_segment(&cdir);
    write_at(
        &cseg,
        clen,
        &[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8],
    );

    for (dir, seg, len, before) in [
        (&pdir, &pseg, plen, &p_before),
        (&cdir, &cseg, clen, &c_before),
    ] {
        let (code, r) = wal_inspect(dir);
        assert_eq!(code, 0, "a torn tail is not corruption: {r}");
        assert_eq!(r["torn_tail"]["file"], seg.display().to_string(), "{r}");
        assert_eq!(r["torn_tail"]["offset"], len, "{r}");
        assert!(r["corruption"].is_null(), "{r}");
        assert_eq!(r["records"], before["records"], "{r}");
        assert_eq!(r["transactions"], before["transactions"], "{r}");
    }

    // Both start, cut the torn record and say so.
    let cmark = log_mark(&c.path("coordinator.log"));
    c.restart_coordinator();
    let pmark = log_mark(&c.participants[0].log);
    c.restart_participant(0, &[], &[]);
    c.wait_ready(1);
    for (mark, seg, proc) in [
        (cmark, &cseg, c.coordinator.as_mut().expect("coordinator")),
        (pmark, &pseg, &mut c.participants[0]),
    ] {
        let text = wait_log(proc, mark, "torn");
        assert!(
            text.contains(&seg.display().to_string()),
            "the warning names the file: {text}"
        );
    }
    for (dir, seg, len, before) in [
        (&pdir, &pseg, plen, &p_before),
        (&cdir, &cseg, clen, &c_before),
    ] {
        let (code, r) = wal_inspect(dir);
        assert_eq!(
            std::fs::metadata(seg).map(|m| m.len()).ok(),
            Some(len),
            "cut back to the last whole record: {r}"
        );
        assert_eq!(code, 0, "{r}");
        assert!(r["torn_tail"].is_null(), "{r}");
        assert_eq!(r["transactions"], before["transactions"], "{r}");
    }

    // The log takes new records after the cut, next to the old ones.
    let more = commit_n(&c, 1);
    let (_, r) = wal_inspect(&pdir);
    let st = states(&r);
    for id in ids.iter().chain(&more) {
        assert_eq!(st.get(id).map(|s| s.as_str()), Some("commit"), "{id}: {r}");
    }
    assert!(!st.contains_key("torn-1"), "{r}");
}

#[test]
fn damage_before_the_tail_stops_a_participant_at_start() {
    let mut c = cluster(1, &[], &[]);
    commit_n(&c, 3);
    stop(&mut c.participants[0]);
    let dir = c.participant_dir(0);
    let (seg, _) = corrupt_record(&dir, 0);
    let damaged = std::fs::read(&seg).expect("read segment");

    let (code, r) = wal_inspect(&dir);
    assert_eq!(code, 1, "wal inspect exits 1 on corruption: {r}");
    assert_eq!(r["corruption"]["file"], seg.display().to_string(), "{r}");
    assert_eq!(r["corruption"]["offset"], 0, "{r}");

    let mark = log_mark(&c.participants[0].log);
    c.restart_participant(0, &[], &[]);
    let status = c.participants[0].wait_exit(PATIENCE);
    let text = log_since(&c.participants[0].log, mark);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "the participant must refuse to start: {status:?}; log:\n{text}"
    );
    assert!(
        text.contains(&seg.display().to_string()) && text.contains("offset 0:"),
        "the refusal names the file and the offset: {text}"
    );
    assert_eq!(
        std::fs::read(&seg).ok(),
        Some(damaged),
        "a refused start must leave the damaged log as it was"
    );
}

/// The coordinator binary on `dir`, on any free port.
fn coordinator_command(dir: &Path) -> Command {
    let mut cmd = clean_command(COORDINATOR);
    cmd.args([
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--expected-participants",
        "1",
    ])
    .arg("--data-dir")
    .arg(dir);
    cmd
}

#[test]
fn damage_before_the_tail_stops_the_coordinator_at_start() {
    let mut c = cluster(1, &[], &[]);
    commit_n(&c, 3);
    stop(c.coordinator.as_mut().expect("coordinator"));
    let dir = c.coordinator_dir();
    // The second record: the offset reported must be the record's own.
    let (seg, offset) = corrupt_record(&dir, 1);
    assert!(offset > 0);

    let (code, r) = wal_inspect(&dir);
    assert_eq!(code, 1, "wal inspect exits 1 on corruption: {r}");
    assert_eq!(r["corruption"]["file"], seg.display().to_string(), "{r}");
    assert_eq!(r["corruption"]["offset"], offset, "{r}");

    let (code, out, err) = run_bounded(&mut coordinator_command(&dir), PATIENCE);
    assert_eq!(
        code, 1,
        "the coordinator must refuse to start; stdout {out:?}, stderr:\n{err}"
    );
    assert!(
        err.contains(&seg.display().to_string()) && err.contains(&format!("offset {offset}:")),
        "the refusal names the file and the offset: {err}"
    );
}

#[test]
fn a_second_process_on_a_data_directory_is_refused_with_the_holders_pid() {
    let mut c = cluster(1, &[], &[]);
    let participant_pid = c.participants[0].pid().expect("participant pid");
    let coordinator_pid = c
        .coordinator
        .as_ref()
        .and_then(|p| p.pid())
        .expect("coordinator pid");

    let mut second = clean_command(PARTICIPANT);
    second
        .args(["--id", "p1", "--coordinator-host", "127.0.0.1"])
        .args(["--coordinator-port", &c.port.to_string()])
        .arg("--data-dir")
        .arg(c.participant_dir(0));
    let (code, _, err) = run_bounded(&mut second, PATIENCE);
    assert_eq!(code, 1, "a second participant must not start: {err}");
    assert!(
        err.contains(&format!("pid {participant_pid}")),
        "the refusal names the holder's pid {participant_pid}: {err}"
    );

    let (code, _, err) = run_bounded(&mut coordinator_command(&c.coordinator_dir()), PATIENCE);
    assert_eq!(code, 1, "a second coordinator must not start: {err}");
    assert!(
        err.contains(&format!("pid {coordinator_pid}")),
        "the refusal names the holder's pid {coordinator_pid}: {err}"
    );

    // The holders are undisturbed.
    commit_n(&c, 1);
    let lock = std::fs::read_to_string(c.participant_dir(0).join("LOCK")).expect("LOCK");
    assert_eq!(lock.trim(), participant_pid.to_string());

    // The kernel drops the lock of a killed holder: a restart takes over.
    let admin = c.restart_participant_admin(0, &[], &[]);
    wait_participant(&admin, "p1 to register again", |s| s["connected"] == true);
    commit_n(&c, 1);
}

#[test]
fn checkpoints_keep_every_log_small_under_a_thousand_transactions() {
    const SEGMENT_MAX: &str = "4096";
    const TOTAL_BYTES_MAX: u64 = 64 * 1024;
    const SEGMENTS_MAX: usize = 3;
    let wal_args = ["--wal-segment-max-bytes", SEGMENT_MAX];
    let mut c = cluster(3, &wal_args, &wal_args);
    let mut dirs = vec![("coordinator".to_string(), c.coordinator_dir())];
    dirs.extend((0..3).map(|i| (format!("p{}", i + 1), c.participant_dir(i))));

    let addr = c.addr();
    let bench = std::thread::spawn(move || {
        run_twopc(&[
            "bench",
            "--coordinator",
            &addr,
            "--concurrency",
            "8",
            "--transactions",
            "1000",
            "--json",
        ])
    });
    // Largest (total bytes, segments) seen per directory while the load ran.
    let mut worst: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    loop {
        let done = bench.is_finished();
        for (name, dir) in &dirs {
            let segs = wal_segments(dir);
            let total: u64 = segs.iter().map(|(_, n)| n).sum();
            let w = worst.entry(name.clone()).or_default();
            *w = (w.0.max(total), w.1.max(segs.len()));
        }
        if done {
            break;
        }
        // A sampling interval, not a wait for an event.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (code, out, err) = bench.join().expect("bench thread");
    assert_eq!(code, 0, "bench failed: {err}");
    let report: Value = serde_json::from_str(&out).expect("bench JSON");
    assert_eq!(report["commits"], 1000, "{report}");

    let status = c.status();
    assert!(
        status["wal"]["checkpoints"].as_u64() > Some(0),
        "the coordinator never checkpointed: {status}"
    );
    // Every directory over a bound, reported after the recovery below has
    // been checked too.
    let over: Vec<String> = dirs
        .iter()
        .filter_map(|(name, dir)| {
            let (total, segments) = worst[name];
            let (_, r) = wal_inspect(dir);
            (total >= TOTAL_BYTES_MAX || segments > SEGMENTS_MAX).then(|| {
                format!(
                    "{name}'s log reached {total} bytes in up to {segments} segments and now holds {} records in {} segments",
                    r["records"],
                    r["segments"].as_array().map_or(0, |a| a.len())
                )
            })
        })
        .collect();

    // Everything recovers from checkpointed logs after kill -9 of everyone.
    for p in &mut c.participants {
        p.kill9();
    }
    c.coordinator.as_mut().expect("coordinator").kill9();
    c.restart_coordinator();
    for i in 0..3 {
        c.restart_participant(i, &wal_args, &[]);
    }
    c.wait_ready(3);
    commit_n(&c, 1);
    for (name, dir) in &dirs {
        let (code, r) = wal_inspect(dir);
        assert!(
            code == 0 && r["corruption"].is_null(),
            "{name}'s log after restart: {r}"
        );
    }
    assert!(
        over.is_empty(),
        "logs outgrew the bounds ({TOTAL_BYTES_MAX} bytes, {SEGMENTS_MAX} segments, with --wal-segment-max-bytes {SEGMENT_MAX}) over 1000 transactions:\n{}",
        over.join("\n")
    );
}

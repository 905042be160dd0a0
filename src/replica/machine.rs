//! The state machine of the coordinator group: every member's copy of what
//! the leader made durable. It is a coordinator core fed the committed
//! records ([`Coordinator::replay`]): the decisions not yet ended, the
//! outcomes of client-named transactions, heuristic outcomes and the
//! participant membership. Ordinary commit decisions wait beside the core
//! until their end (most of them never need it; see
//! [`Machine::apply_record`]). A new leader rebuilds its own core from it
//! ([`Machine::live_records`]), as a restarted coordinator does from its log.
//!
//! Snapshots are the live records; the latest is kept in `snapshot.json`
//! (written to a temporary file, synced, renamed), because the log before
//! it is purged.

use super::{LogId, SnapshotMeta, StoredMembership, TypeConfig};
use crate::protocol::coordinator::{Coordinator, CoordinatorOptions};
use crate::protocol::Millis;
use crate::protocol::{Record, TxnId};
use futures::{Stream, TryStreamExt};
use openraft::alias::SnapshotOf;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const SNAPSHOT: &str = "snapshot.json";

/// The cores' milliseconds: since `started`.
fn millis_since(started: tokio::time::Instant) -> crate::protocol::Millis {
    started.elapsed().as_millis() as crate::protocol::Millis
}

/// What [`Machine::apply_raw`] reads of a record before deciding whether
/// to decode it.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    txn: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    decision: Option<Cow<'a, str>>,
    #[serde(default)]
    client_named: bool,
}

/// A snapshot as kept on disk.
#[derive(Serialize, Deserialize)]
struct Stored {
    meta: SnapshotMeta,
    records: Vec<Record>,
}

pub struct Machine {
    applied: Option<LogId>,
    membership: StoredMembership,
    core: Coordinator,
    /// Commit decisions of ordinary transactions (not client-named) not
    /// yet ended, by transaction id, as the JSON of their records: most of
    /// what a member applies is such a decision and, a little later, its
    /// end, which the core would make into a transaction and then into
    /// history that nothing reads. They wait here, undecoded, until
    /// something else about them comes (see [`Machine::apply_record`]),
    /// and are live records.
    ordinary: BTreeMap<String, Box<RawValue>>,
    /// The decisions of `ordinary` that ended, oldest first, as many as
    /// the core's history keeps: a heuristic outcome reported after the
    /// end finds its transaction here, as it would in the core's history.
    ended: VecDeque<(String, Box<RawValue>)>,
    opts: CoordinatorOptions,
    /// The coordinator's clock: milliseconds since this instant.
    started: tokio::time::Instant,
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    dir: PathBuf,
}

/// The state machine handed to openraft, shared with the runtime.
#[derive(Clone)]
pub struct MachineHandle(Arc<Mutex<Machine>>);

fn sm_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("the group's state machine: {e}"))
}

impl MachineHandle {
    /// The machine as of the snapshot in `dir`, if any (openraft applies the
    /// committed entries after it).
    pub fn open(
        dir: PathBuf,
        mut opts: CoordinatorOptions,
        started: tokio::time::Instant,
    ) -> std::io::Result<MachineHandle> {
        // This core is never shown (only its live records are read): its
        // transactions keep no timeline, which spares every member an
        // allocation per applied decision.
        opts.timeline_max_events = 0;
        let mut m = Machine {
            applied: None,
            membership: StoredMembership::default(),
            core: Coordinator::new(opts.clone(), millis_since(started)),
            ordinary: BTreeMap::new(),
            ended: VecDeque::new(),
            opts,
            started,
            snapshot: None,
            dir,
        };
        match read_snapshot(&m.dir) {
            Ok(Some(bytes)) => {
                let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::other(format!(
                        "{} is not a snapshot of this coordinator group ({e}); move it away only if \
                         the member's log is complete, or start the member with an empty data_dir \
                         so that it copies the leader's state",
                        m.dir.join(SNAPSHOT).display()
                    ))
                })?;
                m.install(stored.meta.clone(), &stored.records);
                m.snapshot = Some((stored.meta, serde_json::to_vec(&stored.records)?));
            }
            Ok(None) => {}
            Err(e) => return Err(e),
        }
        Ok(MachineHandle(Arc::new(Mutex::new(m))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Machine> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What a new leader's core is rebuilt from. An error when a commit
    /// decision kept undecoded cannot be read (see [`Machine::apply_raw`]):
    /// leading without it would lose it.
    pub fn live_records(&self) -> Result<Vec<Record>, String> {
        self.lock().live_records()
    }

    /// The last applied log index.
    pub fn applied(&self) -> Option<u64> {
        self.lock().applied.map(|l| l.index)
    }
}

impl Machine {
    fn install(&mut self, meta: SnapshotMeta, records: &[Record]) {
        self.core = Coordinator::recover(self.opts.clone(), millis_since(self.started), records);
        self.ordinary.clear();
        self.ended.clear();
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership;
    }

    /// The core's live records, then the ordinary decisions not ended.
    fn live_records(&self) -> Result<Vec<Record>, String> {
        let mut v = self.core.live_records();
        for (txn, raw) in &self.ordinary {
            v.push(serde_json::from_str(raw.get()).map_err(|e| {
                format!(
                    "the group's state holds the commit decision of {txn} in a form this member \
                     cannot read ({e}); run every member of the group on the same twopc version"
                )
            })?);
        }
        Ok(v)
    }

    /// Apply one committed record, as its JSON. An ordinary commit
    /// decision (not client-named, of a transaction the core does not
    /// know) is kept as it is in `ordinary`, and its end moves it to
    /// `ended`, without decoding either; anything else is decoded and
    /// applied by [`Machine::apply_record`].
    fn apply_raw(&mut self, now: Millis, raw: &RawValue) -> Result<(), serde_json::Error> {
        let peek: Peek = serde_json::from_str(raw.get())?;
        match (&*peek.kind, peek.txn) {
            ("decision", Some(txn))
                if peek.decision.as_deref() == Some("commit") && !peek.client_named =>
            {
                let id = TxnId(txn.into_owned());
                if !self.core.knows(&id) {
                    self.ordinary.insert(id.0, raw.to_owned());
                    return Ok(());
                }
            }
            ("end", Some(txn)) => {
                if let Some((id, d)) = self.ordinary.remove_entry(&*txn) {
                    self.end_ordinary(id, d);
                    return Ok(());
                }
            }
            _ => {}
        }
        self.apply_record(now, serde_json::from_str(raw.get())?)
    }

    fn end_ordinary(&mut self, id: String, decision: Box<RawValue>) {
        self.ended.push_back((id, decision));
        if self.ended.len() > self.opts.history_limit {
            self.ended.pop_front();
        }
    }

    /// Apply one committed record that [`Machine::apply_raw`] did not keep
    /// aside. Anything about a transaction that waits in `ordinary`, or a
    /// heuristic outcome about one in `ended`, first gives the core its
    /// decision (and end), so the core sees every transaction it has to
    /// keep exactly as if it had applied every record itself.
    fn apply_record(&mut self, now: Millis, r: Record) -> Result<(), serde_json::Error> {
        if let Some(txn) = r.txn() {
            // Only a heuristic outcome comes after a commit's end (the
            // search of `ended` is linear, and rare).
            let waiting = match self.ordinary.remove(txn.0.as_str()) {
                Some(d) => Some((d, false)),
                None if matches!(r, Record::Heuristic { .. }) => self
                    .ended
                    .iter()
                    .rposition(|(id, _)| *id == txn.0)
                    .and_then(|at| self.ended.remove(at))
                    .map(|(_, d)| (d, true)),
                None => None,
            };
            if let Some((d, ended)) = waiting {
                self.core.replay(now, &serde_json::from_str(d.get())?);
                if ended {
                    self.core.replay(now, &Record::End { txn: txn.clone() });
                }
            }
        }
        self.core.replay(now, &r);
        Ok(())
    }

    /// Keep `records` as the snapshot `meta`, on disk first.
    fn keep(&mut self, meta: SnapshotMeta, records: Vec<Record>) -> std::io::Result<()> {
        let stored = Stored { meta, records };
        write_snapshot(&self.dir, serde_json::to_vec(&stored)?)?;
        self.snapshot = Some((stored.meta, serde_json::to_vec(&stored.records)?));
        Ok(())
    }
}

/// The records a kept snapshot holds (none when `bytes` is not one): for
/// checks that read a member's disk.
pub fn records_in_snapshot(bytes: &[u8]) -> Vec<Record> {
    serde_json::from_slice::<Stored>(bytes)
        .map(|s| s.records)
        .unwrap_or_default()
}

/// The kept snapshot's bytes in `dir`, if there is one. Inside a
/// simulation, from the simulated disk attached to the snapshot's path.
fn read_snapshot(dir: &Path) -> std::io::Result<Option<Vec<u8>>> {
    #[cfg(feature = "sim")]
    if let Some(disk) = crate::sim::disk(&dir.join(SNAPSHOT)) {
        return Ok(disk
            .segments()
            .pop()
            .map(|(_, b)| b)
            .filter(|b| !b.is_empty()));
    }
    match std::fs::read(dir.join(SNAPSHOT)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Put `bytes` in place of the kept snapshot, durably: a new file synced,
/// renamed over the old one, the directory synced. Inside a simulation one
/// durable step on the simulated disk.
fn write_snapshot(dir: &Path, bytes: Vec<u8>) -> std::io::Result<()> {
    #[cfg(feature = "sim")]
    if let Some(disk) = crate::sim::disk(&dir.join(SNAPSHOT)) {
        let next = disk.segments().last().map_or(1, |(s, _)| s + 1);
        disk.replace_with(next, bytes);
        return Ok(());
    }
    let tmp = dir.join("snapshot.json.new");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(SNAPSHOT))?;
    std::fs::File::open(dir)?.sync_all()
}

impl RaftSnapshotBuilder<TypeConfig> for MachineHandle {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> std::io::Result<SnapshotOf<TypeConfig, Vec<u8>>> {
        let mut m = self.lock();
        let records = m.live_records().map_err(sm_err)?;
        let meta = SnapshotMeta {
            last_log_id: m.applied,
            last_membership: m.membership.clone(),
        };
        m.keep(meta.clone(), records).map_err(sm_err)?;
        let data = m.snapshot.as_ref().map(|s| s.1.clone()).unwrap_or_default();
        Ok(SnapshotOf::<TypeConfig, Vec<u8>> {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for MachineHandle {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = MachineHandle;

    async fn applied_state(&mut self) -> std::io::Result<(Option<LogId>, StoredMembership)> {
        let m = self.lock();
        Ok((m.applied, m.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> std::io::Result<()>
    where
        Strm: Stream<Item = std::io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        // Let what is ready run first. openraft hands committed entries to
        // this task just before the commit's other effects would run: on a
        // follower, its answer to the AppendEntries that carried the commit
        // (its leader waits for that answer before deciding anything else);
        // on the leader, the driver that the commit lets send decisions.
        // Applying only keeps this member's standby copy, so it can wait
        // for them (all on one thread). Twice: a yielded task runs again
        // once the runtime's queue is empty, which is also when the
        // current-thread runtime polls the driver (its main future); the
        // connection writers the driver then wakes are queued behind this
        // task, and the second yield lets them write first.
        for _ in 0..2 {
            tokio::task::yield_now().await;
        }
        while let Some((e, responder)) = entries.try_next().await? {
            {
                let mut m = self.lock();
                let now = millis_since(m.started);
                m.applied = Some(e.log_id);
                match e.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(batch) => {
                        let unreadable = |why: serde_json::Error| {
                            sm_err(format!(
                                "committed entry {} holds records this member cannot read \
                                 ({why}): run every member of the group on the same twopc \
                                 version",
                                e.log_id
                            ))
                        };
                        for raw in batch.raw_records().map_err(unreadable)? {
                            m.apply_raw(now, raw).map_err(unreadable)?;
                        }
                    }
                    EntryPayload::Membership(mem) => {
                        m.membership = StoredMembership::new(Some(e.log_id), mem);
                    }
                }
            }
            if let Some(r) = responder {
                r.send(());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Vec<u8>,
    ) -> std::io::Result<()> {
        let records: Vec<Record> = serde_json::from_slice(&snapshot)
            .map_err(|e| sm_err(format!("a snapshot from the leader is not valid: {e}")))?;
        let mut m = self.lock();
        m.install(meta.clone(), &records);
        m.keep(meta.clone(), records).map_err(sm_err)?;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> std::io::Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>> {
        let m = self.lock();
        Ok(m.snapshot
            .as_ref()
            .map(|(meta, data)| SnapshotOf::<TypeConfig, Vec<u8>> {
                meta: meta.clone(),
                snapshot: data.clone(),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CommittedLeaderId, Member, Membership};
    use super::*;
    use openraft::vote::RaftLeaderId;

    /// Apply `r` as a member does: from its JSON.
    fn apply(m: &mut Machine, r: Record) {
        m.apply_raw(0, &serde_json::value::to_raw_value(&r).unwrap())
            .unwrap();
    }

    fn machine(dir: &Path, opts: CoordinatorOptions) -> MachineHandle {
        MachineHandle::open(dir.to_path_buf(), opts, tokio::time::Instant::now()).unwrap()
    }

    /// The records of the test below: 1..=8 decided; 1..=6 ended (5
    /// client-named, its outcome in place of the end); a heuristic outcome
    /// before the end (2), right after it (3), on one not ended (7), and
    /// last on the first one (1).
    fn mixed_records() -> Vec<Record> {
        use crate::protocol::heuristic::{Heuristic, HeuristicKind};
        use crate::protocol::Decision;
        let id = |i: u32| TxnId(format!("t-{i:02}"));
        let ps: Vec<crate::protocol::ParticipantId> = vec!["p1".into(), "p2".into()];
        let heuristic = |i: u32| Record::Heuristic {
            txn: id(i),
            decision: Decision::Commit,
            participant: "p2".into(),
            heuristic: Heuristic {
                kind: HeuristicKind::Mixed,
                detail: format!("rolled back t-{i:02} by hand"),
            },
        };
        let mut records = vec![Record::Joined {
            participant: "p1".into(),
        }];
        for i in 1..=8 {
            records.push(Record::Decision {
                txn: id(i),
                decision: Decision::Commit,
                participants: ps.clone(),
                client_named: i == 5,
            });
        }
        records.push(heuristic(2));
        for i in 1..=6 {
            records.push(match i {
                5 => Record::Outcome {
                    txn: id(5),
                    decision: Decision::Commit,
                    participants: ps.clone(),
                },
                _ => Record::End { txn: id(i) },
            });
        }
        records.push(heuristic(3));
        records.push(heuristic(7));
        records.push(heuristic(1));
        records
    }

    fn sorted_json(v: Vec<Record>) -> Vec<String> {
        let mut v: Vec<String> = v
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        v.sort();
        v
    }

    /// Ordinary decisions kept outside the core give the same live records
    /// as a core fed every record: those not ended are live, those ended
    /// are not, and a heuristic outcome reported before or after the end
    /// comes back with the transaction's decision, participants and end.
    #[test]
    fn ordinary_decisions_outside_the_core_leave_the_same_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let opts = CoordinatorOptions::default();
        let h = machine(dir.path(), opts.clone());
        let records = mixed_records();
        let mut core = Coordinator::new(opts, 0);
        for r in &records {
            core.replay(0, r);
        }
        {
            let mut m = h.lock();
            for r in records {
                apply(&mut m, r);
            }
            let waiting: Vec<&str> = m.ordinary.keys().map(|t| t.as_str()).collect();
            assert_eq!(waiting, ["t-08"], "only 8 waits outside the core");
            assert_eq!(m.ended.len(), 2, "4 and 6 ended without anything more");
        }
        let expected = sorted_json(core.live_records());
        assert!(
            expected
                .iter()
                .any(|r| r.contains("t-03") && r.contains("\"end\"")),
            "the core brings back 3 ended: {expected:?}"
        );
        assert_eq!(sorted_json(h.live_records().unwrap()), expected);
    }

    /// A commit decision kept undecoded that cannot be read is an error
    /// when the live records are asked for (a new leader would otherwise
    /// lose it), naming the transaction.
    #[test]
    fn an_unreadable_decision_kept_undecoded_fails_the_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let h = machine(dir.path(), CoordinatorOptions::default());
        let raw = RawValue::from_string(
            r#"{"kind":"decision","txn":"t-9","decision":"commit","participants":5}"#.into(),
        )
        .unwrap();
        h.lock().apply_raw(0, &raw).unwrap();
        let err = h.live_records().unwrap_err();
        assert!(
            err.contains("t-9") && err.contains("same twopc version"),
            "{err}"
        );
    }

    /// The ended ordinary decisions are bounded by the core's history
    /// window, and do not count against the core's own: a client-named
    /// outcome stays known however many ordinary transactions end after it.
    #[test]
    fn ended_ordinary_decisions_are_kept_as_long_as_the_history_window() {
        use crate::protocol::Decision;
        let dir = tempfile::tempdir().unwrap();
        let opts = CoordinatorOptions {
            history_limit: 2,
            ..CoordinatorOptions::default()
        };
        let h = machine(dir.path(), opts);
        let id = |i: u32| TxnId(format!("t-{i:02}"));
        let ps: Vec<crate::protocol::ParticipantId> = vec!["p1".into()];
        let mut m = h.lock();
        apply(
            &mut m,
            Record::Outcome {
                txn: id(0),
                decision: Decision::Commit,
                participants: ps.clone(),
            },
        );
        for i in 1..=10 {
            apply(
                &mut m,
                Record::Decision {
                    txn: id(i),
                    decision: Decision::Commit,
                    participants: ps.clone(),
                    client_named: false,
                },
            );
            apply(&mut m, Record::End { txn: id(i) });
        }
        assert_eq!(m.ended.len(), 2);
        assert!(m.ordinary.is_empty());
        let live = sorted_json(m.live_records().unwrap());
        assert!(
            live.iter()
                .any(|r| r.contains("t-00") && r.contains("outcome")),
            "the client-named outcome is still known: {live:?}"
        );
    }

    /// A snapshot on disk (meta with the membership, and the records)
    /// reads back into the same state.
    #[test]
    fn a_kept_snapshot_reopens_with_its_membership_and_records() {
        let dir = tempfile::tempdir().unwrap();
        let opts = CoordinatorOptions::default();
        let h = machine(dir.path(), opts.clone());
        let members: std::collections::BTreeMap<u64, Member> = (1..=3)
            .map(|i| {
                (
                    i,
                    Member {
                        addr: format!("h:{i}"),
                        raft_addr: format!("h:9{i}"),
                    },
                )
            })
            .collect();
        let log_id = LogId::new(CommittedLeaderId::new(2, 1), 40);
        let meta = SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: StoredMembership::new(Some(log_id), Membership::from(members)),
        };
        let txn = crate::protocol::TxnId("t-1".into());
        let records = vec![Record::Decision {
            txn: txn.clone(),
            decision: crate::protocol::Decision::Commit,
            participants: vec!["p1".into()],
            client_named: true,
        }];
        {
            let mut m = h.lock();
            m.install(meta.clone(), &records);
            m.keep(meta, records).unwrap();
        }
        let again = machine(dir.path(), opts);
        assert_eq!(again.applied(), Some(40));
        let live = again.live_records().unwrap();
        assert!(
            live.iter().any(
                |r| matches!(r, Record::Decision { txn: t, client_named: true, .. } if *t == txn)
            ),
            "{live:?}"
        );
        let m = again.lock();
        assert_eq!(
            m.membership.membership().voter_ids().collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }
}

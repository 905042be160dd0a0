//! Phase times of the coordinator's transactions in microseconds: the
//! latency histograms of `GET /metrics`, the `*_after_us` figures of
//! `txn show` and the `duration_ms` of an outcome.
//!
//! The core's clock counts whole milliseconds, which is right for its
//! deadlines and wrong for latencies: on loopback a transaction takes a few
//! hundred microseconds and would show as 0 ms. So the runtime measures
//! them itself, without touching the core's clock: it reads one finer
//! instant per step it drives, hands the core its milliseconds, and after
//! the step notes which transactions the core reports as newly started,
//! decided, durable or ended. Each phase is stamped with the instant of the
//! step in which the core first reports it. Pure: the step's time, the core
//! and what the step touched are passed in; nothing here changes the core.

use crate::protocol::coordinator::{Coordinator, Event, Txn};
use crate::protocol::{Action, Body, Decision, Millis, TxnId};
use std::collections::{HashMap, VecDeque};

/// Upper bounds (microseconds, inclusive) of the phase latency buckets:
/// sub-millisecond steps for loopback and fast disks, then on to a minute.
pub const PHASE_BOUNDS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// A cumulative-friendly histogram with fixed bounds.
#[derive(Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [u64],
    /// Observations per bucket; the last one is above every bound.
    counts: Vec<u64>,
    sum: u64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: u64) {
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i] += 1;
        self.sum = self.sum.saturating_add(value);
        self.count += 1;
    }

    pub fn bounds(&self) -> &'static [u64] {
        self.bounds
    }

    /// Observations per bucket (not cumulative); one more than `bounds`.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn sum(&self) -> u64 {
        self.sum
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram(n={}, sum={})", self.count, self.sum)
    }
}

/// The phase latencies, in microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseHistograms {
    /// Start of the transaction to its decision.
    pub prepare_us: Histogram,
    /// Commit decision to its log record being durable.
    pub decision_durable_us: Histogram,
    /// Decision to the last acknowledgement (the transaction ended).
    pub completion_us: Histogram,
}

impl Default for PhaseHistograms {
    fn default() -> Self {
        PhaseHistograms {
            prepare_us: Histogram::new(PHASE_BOUNDS_US),
            decision_durable_us: Histogram::new(PHASE_BOUNDS_US),
            completion_us: Histogram::new(PHASE_BOUNDS_US),
        }
    }
}

/// When one transaction reached each phase, in microseconds of the
/// runtime's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamps {
    started_us: u64,
    decided_us: Option<u64>,
    durable_us: Option<u64>,
    ended_us: Option<u64>,
}

impl Stamps {
    /// Microseconds from the start to the decision.
    pub fn decided_after_us(&self) -> Option<u64> {
        self.since_start(self.decided_us)
    }

    /// Microseconds from the start to the durable commit decision.
    pub fn durable_after_us(&self) -> Option<u64> {
        self.since_start(self.durable_us)
    }

    /// Microseconds from the start to the end.
    pub fn ended_after_us(&self) -> Option<u64> {
        self.since_start(self.ended_us)
    }

    /// Whether `t` reached a phase these stamps do not have yet (what
    /// [`PhaseTimes::update`] would stamp).
    fn moved(&self, t: &Txn) -> bool {
        (self.decided_us.is_none() && t.decided_ms.is_some())
            || (self.durable_us.is_none() && t.durable_ms.is_some())
            || t.ended_ms.is_some()
    }

    fn since_start(&self, t: Option<u64>) -> Option<u64> {
        t.map(|t| t.saturating_sub(self.started_us))
    }
}

/// Which transactions a step may have moved to a new phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Those the event names (if any) and those its actions name: every
    /// start, decision and commit end comes with an action naming the
    /// transaction, and an abort ends on an acknowledgement, which names it.
    Named(Option<TxnId>),
    /// Commit decisions waiting for the log, and those the actions name.
    Durable,
    /// Every transaction still open: timers, disconnections and removals
    /// decide or end transactions that neither the event nor an action
    /// names (an abort nobody is left to hear of).
    All,
}

impl Scope {
    pub fn of(ev: &Event) -> Scope {
        match ev {
            Event::Message {
                body: Body::ParticipantRemove { .. },
                ..
            } => Scope::All,
            Event::Message { body, .. } => Scope::Named(body.txn().cloned()),
            Event::Durable { .. } => Scope::Durable,
            Event::Disconnected { .. } | Event::Tick => Scope::All,
        }
    }
}

/// The transactions whose phases are being timed, and the histograms.
#[derive(Debug)]
pub struct PhaseTimes {
    /// Started and not ended. As many as the core has active.
    open: HashMap<TxnId, Stamps>,
    /// Ended, kept for `txn show` as long as the core remembers as many
    /// (`history_limit`); oldest first in `ended_order`.
    ended: HashMap<TxnId, Stamps>,
    ended_order: VecDeque<TxnId>,
    ended_max: usize,
    /// Decided commit, not yet durable (a few: the log's current batch).
    awaiting_durable: Vec<TxnId>,
    histograms: PhaseHistograms,
    /// The core's (committed, aborted, in prepare) after the last step: a
    /// step of [`Scope::All`] that leaves them as they were decided and
    /// ended nothing, and the open transactions are not looked up one by
    /// one (10,000 lookups 50 times a second at 10,000 in flight). The one
    /// move it can miss, a transaction decided unnamed in a step that also
    /// started another, is stamped at its next step or the next scan.
    last_counts: (u64, u64, usize),
}

impl PhaseTimes {
    /// Remember the stamps of at most `ended_max` ended transactions.
    pub fn new(ended_max: usize) -> PhaseTimes {
        PhaseTimes {
            open: HashMap::new(),
            ended: HashMap::new(),
            ended_order: VecDeque::new(),
            ended_max,
            awaiting_durable: Vec::new(),
            histograms: PhaseHistograms::default(),
            last_counts: (0, 0, 0),
        }
    }

    pub fn histograms(&self) -> &PhaseHistograms {
        &self.histograms
    }

    /// The stamps of a transaction this process started, if still kept.
    pub fn stamps(&self, id: &TxnId) -> Option<&Stamps> {
        self.open.get(id).or_else(|| self.ended.get(id))
    }

    /// After the core handled a step at `now_ms` (its clock) and `now_us`
    /// (the same instant, finer), with `actions` as its answer: stamp the
    /// phases the transactions in `scope` reached in it.
    pub fn after_step(
        &mut self,
        core: &Coordinator,
        scope: Scope,
        actions: &[Action],
        now_ms: Millis,
        now_us: u64,
    ) {
        let mut touched: Vec<TxnId> = actions.iter().filter_map(named).cloned().collect();
        match scope {
            Scope::Named(t) => touched.extend(t),
            Scope::Durable => touched.append(&mut self.awaiting_durable),
            Scope::All if core.counts() == self.last_counts => {}
            // Only those whose phase moved (or that the core forgot): a
            // tick with thousands open copies and sorts a few ids, not all.
            Scope::All => touched.extend(
                self.open
                    .iter()
                    .filter(|(id, s)| core.txn(id).is_none_or(|t| s.moved(t)))
                    .map(|(id, _)| id.clone()),
            ),
        }
        self.last_counts = core.counts();
        touched.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        touched.dedup();
        for id in touched {
            // Ended ones are done; skip the core's search of its history.
            if self.ended.contains_key(&id) {
                continue;
            }
            match core.txn(&id) {
                Some(t) => self.update(t, now_ms, now_us),
                None => {
                    self.open.remove(&id);
                }
            }
        }
    }

    /// An outcome's `duration_ms` from the microsecond stamps (the core
    /// wrote whole milliseconds); other actions pass unchanged.
    pub fn refine(&self, action: &mut Action) {
        if let Action::Send {
            body: Body::Outcome { txn, outcome },
            ..
        } = action
        {
            if let Some(us) = self.open.get(txn).and_then(Stamps::decided_after_us) {
                outcome.duration_ms = us as f64 / 1000.0;
            } else if let Some(us) = self.ended.get(txn).and_then(Stamps::decided_after_us) {
                outcome.duration_ms = us as f64 / 1000.0;
            }
        }
    }

    fn update(&mut self, t: &Txn, now_ms: Millis, now_us: u64) {
        let s = match self.open.get_mut(&t.id) {
            Some(s) => s,
            // A transaction is first named in the step that starts it; one
            // recovered from the log, or first seen later, has no start
            // to measure from.
            None if t.recovered || t.started_ms != now_ms => return,
            None => self.open.entry(t.id.clone()).or_insert(Stamps {
                started_us: now_us,
                decided_us: None,
                durable_us: None,
                ended_us: None,
            }),
        };
        let h = &mut self.histograms;
        if s.decided_us.is_none() && t.decided_ms.is_some() {
            s.decided_us = Some(now_us);
            h.prepare_us.observe(now_us.saturating_sub(s.started_us));
            if t.decision == Some(Decision::Commit) && t.durable_ms.is_none() {
                self.awaiting_durable.push(t.id.clone());
            }
        }
        let decided = s.decided_us.unwrap_or(s.started_us);
        if s.durable_us.is_none() && t.durable_ms.is_some() {
            s.durable_us = Some(now_us);
            h.decision_durable_us
                .observe(now_us.saturating_sub(decided));
        }
        if t.ended_ms.is_some() {
            s.ended_us = Some(now_us);
            h.completion_us.observe(now_us.saturating_sub(decided));
            if let Some(s) = self.open.remove(&t.id) {
                self.remember_ended(t.id.clone(), s);
            }
        }
    }

    fn remember_ended(&mut self, id: TxnId, s: Stamps) {
        if self.ended_max == 0 {
            return;
        }
        while self.ended_order.len() >= self.ended_max {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
        self.ended_order.push_back(id.clone());
        self.ended.insert(id, s);
    }
}

/// The transaction an action is about, if any.
fn named(a: &Action) -> Option<&TxnId> {
    match a {
        Action::Persist { record, .. } => record.txn(),
        Action::Send { body, .. } => body.txn(),
        Action::Reject { .. }
        | Action::Alert { .. }
        | Action::Notice { .. }
        | Action::Close { .. }
        | Action::Session(_) => None,
        Action::PrepareResource { txn, .. } | Action::FinishResource { txn, .. } => Some(txn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::coordinator::CoordinatorOptions;
    use crate::protocol::{ConnId, ParticipantId, Role, SubmitRequest, Vote};

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        let mut h = Histogram::new(&[1, 10]);
        for v in [0, 1, 2, 10, 11, 500] {
            h.observe(v);
        }
        assert_eq!(h.counts(), &[2, 2, 2]);
        assert_eq!(h.count(), 6);
        assert_eq!(h.sum(), 524);
    }

    #[test]
    fn the_phase_buckets_start_below_a_millisecond() {
        let below: Vec<u64> = PHASE_BOUNDS_US
            .iter()
            .copied()
            .filter(|b| *b < 1000)
            .collect();
        assert_eq!(below, [50, 100, 250, 500]);
        assert!(PHASE_BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
    }

    /// A core with one participant `p1` on connection 1 and a client on
    /// connection 2, and a clock that moves in microseconds.
    struct Run {
        core: Coordinator,
        times: PhaseTimes,
        now_us: u64,
    }

    impl Run {
        fn new() -> Run {
            let opts = CoordinatorOptions {
                expected_participants: 1,
                ..CoordinatorOptions::default()
            };
            let mut r = Run {
                core: Coordinator::new(opts, 0),
                times: PhaseTimes::new(10),
                now_us: 0,
            };
            r.message(
                1,
                Body::Hello {
                    role: Role::Participant,
                    id: Some(ParticipantId::from("p1")),
                    protocol_version: crate::protocol::PROTOCOL_VERSION,
                },
            );
            r.message(
                2,
                Body::Hello {
                    role: Role::Client,
                    id: None,
                    protocol_version: crate::protocol::PROTOCOL_VERSION,
                },
            );
            r
        }

        /// Let `us` microseconds pass, then handle `ev`; the actions.
        fn step(&mut self, us: u64, ev: Event) -> Vec<Action> {
            self.now_us += us;
            let now_ms = self.now_us / 1000;
            let scope = Scope::of(&ev);
            let mut actions = self.core.handle(now_ms, ev);
            self.times
                .after_step(&self.core, scope, &actions, now_ms, self.now_us);
            for a in &mut actions {
                self.times.refine(a);
            }
            actions
        }

        fn message(&mut self, conn: u64, body: Body) -> Vec<Action> {
            self.step(
                0,
                Event::Message {
                    conn: ConnId(conn),
                    body,
                },
            )
        }
    }

    fn outcome_ms(actions: &[Action]) -> Option<f64> {
        actions.iter().find_map(|a| match a {
            Action::Send {
                body: Body::Outcome { outcome, .. },
                ..
            } => Some(outcome.duration_ms),
            _ => None,
        })
    }

    #[test]
    fn a_commit_within_one_millisecond_is_measured_in_microseconds() {
        let mut r = Run::new();
        let submit = Body::Submit(SubmitRequest {
            data: serde_json::Value::Null,
            participants: None,
            request_id: None,
            ..Default::default()
        });
        r.now_us = 5_000_100;
        let started = r.message(2, submit);
        let txn = started.iter().find_map(named).expect("a prepare").clone();
        let vote = Body::VoteCommit {
            txn: txn.clone(),
            result: None,
        };
        let decided = r.step(
            340,
            Event::Message {
                conn: ConnId(1),
                body: vote,
            },
        );
        // The core's milliseconds say 0; the outcome says 0.34 ms.
        assert_eq!(r.core.txn(&txn).and_then(|t| t.decided_ms), Some(5_000));
        assert_eq!(outcome_ms(&decided), Some(0.34));
        r.step(120, Event::Durable { forced: 1 });
        let ack = Body::Ack {
            txn: txn.clone(),
            decision: Some(Decision::Commit),
            heuristic: None,
        };
        r.step(
            200,
            Event::Message {
                conn: ConnId(1),
                body: ack,
            },
        );
        let s = *r.times.stamps(&txn).expect("stamps kept after the end");
        assert_eq!(s.decided_after_us(), Some(340));
        assert_eq!(s.durable_after_us(), Some(460));
        assert_eq!(s.ended_after_us(), Some(660));
        let h = r.times.histograms();
        assert_eq!((h.prepare_us.count(), h.prepare_us.sum()), (1, 340));
        assert_eq!(
            h.prepare_us.counts()[3],
            1,
            "in the bucket above 250 µs, up to 500"
        );
        assert_eq!(h.decision_durable_us.sum(), 120);
        assert_eq!(h.completion_us.sum(), 320);
        assert_eq!(
            r.core
                .txn(&txn)
                .map(|t| t.votes.get(&ParticipantId::from("p1"))),
            Some(Some(&Vote::Commit))
        );
    }

    #[test]
    fn a_decision_that_no_action_names_is_stamped_in_its_own_step() {
        let mut r = Run::new();
        let submit = Body::Submit(SubmitRequest {
            data: serde_json::Value::Null,
            participants: None,
            request_id: None,
            ..Default::default()
        });
        let started = r.message(2, submit);
        let txn = started.iter().find_map(named).expect("a prepare").clone();
        // The client leaves, then the participant: the core aborts with
        // nobody connected to tell, so no action names the transaction.
        r.step(10, Event::Disconnected { conn: ConnId(2) });
        let gone = r.step(90, Event::Disconnected { conn: ConnId(1) });
        assert!(gone.iter().all(|a| named(a) != Some(&txn)), "{gone:?}");
        assert_eq!(
            r.core.txn(&txn).and_then(|t| t.decision),
            Some(Decision::Abort)
        );
        let s = *r.times.stamps(&txn).expect("stamps");
        assert_eq!(s.decided_after_us(), Some(100));
        assert_eq!(s.ended_after_us(), None, "p1 still owes its ack");
        assert_eq!(r.times.histograms().prepare_us.sum(), 100);
    }

    #[test]
    fn only_as_many_ended_transactions_are_kept_as_asked() {
        let mut t = PhaseTimes::new(2);
        let s = Stamps {
            started_us: 0,
            decided_us: Some(1),
            durable_us: None,
            ended_us: Some(2),
        };
        for i in 0..5 {
            t.remember_ended(TxnId(format!("t-{i}")), s);
        }
        assert_eq!(t.ended.len(), 2);
        assert!(t.stamps(&TxnId("t-4".into())).is_some());
        assert!(t.stamps(&TxnId("t-2".into())).is_none());
    }
}

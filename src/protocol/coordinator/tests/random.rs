//! Seeded random schedules: a client and three participants drive
//! transactions through every kind of event, and the safety rules are
//! checked after each step; a failure names its seed and step.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One random run: a client and three participants drive transactions through
/// votes, acks, queries, disconnects, returns, ticks and coordinator restarts
/// (rebuilt from every record it asked to persist). After every step the
/// safety rules must hold; a failure names its seed and step so it replays.
struct Sim {
    seed: u64,
    rng: StdRng,
    opts: CoordinatorOptions,
    c: Coordinator,
    now: Millis,
    next_conn: u64,
    client: ConnId,
    /// Participant id and its connection, if connected.
    parts: Vec<(&'static str, Option<ConnId>)>,
    /// Every transaction id seen in a PREPARE, plus one that never existed.
    txns: Vec<TxnId>,
    log: Vec<Record>,
    /// Commit decisions persisted so far (a COMMIT may only follow one).
    logged_commits: BTreeSet<TxnId>,
    /// The decision of each transaction, from the core's state or from any
    /// decision or outcome it sent. It must never change.
    decided: BTreeMap<TxnId, Decision>,
    restarts: u32,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let opts = CoordinatorOptions {
            expected_participants: 3,
            vote_timeout_ms: 400,
            max_in_flight: 4,
            resend_initial_ms: 50,
            resend_max_ms: 400,
            txn_id_prefix: "r0".into(),
            ..Default::default()
        };
        let c = Coordinator::new(opts.clone(), 0);
        let mut sim = Sim {
            seed,
            rng: StdRng::seed_from_u64(seed),
            opts,
            c,
            now: 0,
            next_conn: 1,
            client: ConnId(0),
            parts: vec![("p1", None), ("p2", None), ("p3", None)],
            txns: vec![tid("r0-999")],
            log: Vec::new(),
            logged_commits: BTreeSet::new(),
            decided: BTreeMap::new(),
            restarts: 0,
        };
        sim.connect_everyone();
        sim
    }

    fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    fn connect_everyone(&mut self) {
        self.client = self.conn();
        let client = self.client;
        self.step_event(msg(client, client_hello()), "client hello");
        for i in 0..self.parts.len() {
            self.reconnect(i);
        }
    }

    fn reconnect(&mut self, i: usize) {
        let conn = self.conn();
        self.parts[i].1 = Some(conn);
        let id = self.parts[i].0;
        self.step_event(msg(conn, hello(id)), "participant hello");
    }

    /// Mostly a transaction still voting, so that commits happen too;
    /// otherwise any transaction ever seen, to provoke late messages.
    fn pick_txn(&mut self) -> TxnId {
        let mut voting: Vec<TxnId> = self
            .c
            .txns()
            .filter(|t| t.phase == TxnPhase::PreparePhase)
            .map(|t| t.id.clone())
            .collect();
        voting.sort();
        if !voting.is_empty() && self.rng.random_bool(0.7) {
            let i = self.rng.random_range(0..voting.len());
            return voting.swap_remove(i);
        }
        let i = self.rng.random_range(0..self.txns.len());
        self.txns[i].clone()
    }

    fn restart(&mut self) {
        self.restarts += 1;
        self.opts.txn_id_prefix = format!("r{}", self.restarts);
        self.c = Coordinator::recover(self.opts.clone(), self.now, &self.log);
        for p in &mut self.parts {
            p.1 = None;
        }
        self.connect_everyone();
    }

    fn random_step(&mut self, step: usize) {
        let i = self.rng.random_range(0..self.parts.len());
        let Some(conn) = self.parts[i].1 else {
            return self.reconnect(i);
        };
        let ctx = format!("step {step}");
        match self.rng.random_range(0..100) {
            0..=14 => {
                let client = self.client;
                let body = if self.rng.random_bool(0.3) {
                    submit_to(1, &[self.parts[i].0])
                } else {
                    submit(1)
                };
                self.step_event(msg(client, body), &ctx);
            }
            15..=54 => {
                let txn = self.pick_txn();
                let body = if self.rng.random_bool(0.85) {
                    Body::VoteCommit { txn, result: None }
                } else {
                    Body::VoteAbort { txn, reason: None }
                };
                self.step_event(msg(conn, body), &ctx);
            }
            55..=69 => {
                let txn = self.pick_txn();
                self.step_event(
                    msg(
                        conn,
                        Body::Ack {
                            txn,
                            decision: None,
                            heuristic: None,
                        },
                    ),
                    &ctx,
                );
            }
            70..=74 => {
                let txn = self.pick_txn();
                self.step_event(msg(conn, Body::Query { txn }), &ctx);
            }
            75..=81 => {
                self.parts[i].1 = None;
                self.step_event(Event::Disconnected { conn }, &ctx);
            }
            82..=97 => {
                self.now += self.rng.random_range(0..250);
                self.step_event(Event::Tick, &ctx);
            }
            _ => self.restart(),
        }
    }

    fn step_event(&mut self, event: Event, ctx: &str) {
        let out = self.c.handle(self.now, event.clone());
        let seed = self.seed;
        let why = format!("seed {seed}, {ctx}, now {}, event {event:?}", self.now);
        for a in &out {
            self.check_action(a, &why);
        }
        self.check_state(&why);
    }

    fn learn(&mut self, txn: &TxnId, d: Decision, why: &str) {
        let prev = *self.decided.entry(txn.clone()).or_insert(d);
        assert_eq!(prev, d, "decision of {txn} changed; {why}");
    }

    fn check_action(&mut self, a: &Action, why: &str) {
        match a {
            Action::Persist { record, sync } => {
                if let Record::Decision {
                    txn,
                    decision: Decision::Commit,
                    ..
                } = record
                {
                    assert!(*sync, "commit decision not forced; {why}");
                    self.logged_commits.insert(txn.clone());
                }
                self.log.push(record.clone());
            }
            Action::Send {
                body,
                after_durable,
                ..
            } => {
                let told = match body {
                    Body::Prepare { txn, .. } => {
                        if !self.txns.contains(txn) {
                            self.txns.push(txn.clone());
                        }
                        None
                    }
                    Body::Commit { txn, .. } => Some((txn, Decision::Commit)),
                    Body::Abort { txn, .. } => Some((txn, Decision::Abort)),
                    Body::Outcome { txn, outcome } => Some((txn, outcome.decision)),
                    _ => None,
                };
                if let Some((txn, d)) = told {
                    if d == Decision::Commit {
                        assert!(
                            *after_durable && self.logged_commits.contains(txn),
                            "commit of {txn} sent before its decision is durable; {why}"
                        );
                    }
                    self.learn(txn, d, why);
                }
            }
            Action::Alert { .. } => panic!("unexpected alert {a:?}; {why}"),
            Action::Notice { .. } => {}
            Action::Reject { .. } => {}
            Action::Close { .. }
            | Action::Session(_)
            | Action::PrepareResource { .. }
            | Action::FinishResource { .. } => {
                panic!("participant action from the coordinator: {a:?}; {why}")
            }
        }
    }

    fn check_state(&mut self, why: &str) {
        let mut decided = Vec::new();
        for t in self.c.txns() {
            if let Some(d) = t.decision {
                let mut undecided = t.clone();
                undecided.decision = None;
                if let Err(e) = check_decision(&undecided, d) {
                    panic!("{} decided {d} against the rules: {e}; {why}", t.id);
                }
                decided.push((t.id.clone(), d));
            }
        }
        for (txn, d) in decided {
            self.learn(&txn, d, why);
        }
        let voting = self
            .c
            .active
            .values()
            .filter(|t| t.phase == TxnPhase::PreparePhase)
            .count();
        assert_eq!(self.c.in_prepare, voting, "in_prepare count; {why}");
    }
}

#[test]
fn random_schedules_never_break_the_decision_rules() {
    let (mut commits, mut aborts) = (0, 0);
    for seed in 0..200 {
        let mut sim = Sim::new(seed);
        for step in 0..300 {
            sim.random_step(step);
        }
        commits += sim
            .decided
            .values()
            .filter(|d| **d == Decision::Commit)
            .count();
        aborts += sim
            .decided
            .values()
            .filter(|d| **d == Decision::Abort)
            .count();
    }
    // A driver that never reaches both outcomes would test nothing.
    assert!(
        commits > 500 && aborts > 500,
        "{commits} commits, {aborts} aborts"
    );
}

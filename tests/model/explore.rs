//! A breadth-first explicit-state explorer: every reachable state of a
//! [`Model`] is visited once, identified by a 128-bit fingerprint of its
//! canonical (derived `Hash`) encoding, the way TLC does it.
//!
//! Breadth-first order makes the first trace found to a bad state a shortest
//! one. Parents are kept as (state index, step) so a trace is rebuilt by
//! replaying its steps from the initial state; full states live only in the
//! current and next BFS layer. With `liveness` on, every edge is kept and a
//! backward search from the goal states finds the states that can never
//! reach one.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::{Duration, Instant};

/// A two-lane multiplicative hasher: much cheaper than SipHash in a debug
/// build, where hashing would otherwise dominate. Not for untrusted keys.
#[derive(Default)]
pub struct Fast {
    a: u64,
    b: u64,
}

impl Fast {
    pub fn mix(&mut self, x: u64) {
        self.a = (self.a ^ x)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
        self.b = (self.b.wrapping_add(x) ^ self.a)
            .wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
            .rotate_left(31);
    }

    pub fn finish128(&self) -> u128 {
        (u128::from(fmix(self.a ^ 0x5851_f42d)) << 64) | u128::from(fmix(self.b))
    }
}

/// MurmurHash3's finaliser: every input bit affects every output bit.
fn fmix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl Hasher for Fast {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes([
                w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7],
            ]));
        }
        let mut last = 0u64;
        for (k, b) in words.remainder().iter().enumerate() {
            last |= u64::from(*b) << (8 * k);
        }
        self.mix(last ^ (bytes.len() as u64) << 56);
    }
    fn write_u8(&mut self, x: u8) {
        self.mix(u64::from(x));
    }
    fn write_u16(&mut self, x: u16) {
        self.mix(u64::from(x));
    }
    fn write_u32(&mut self, x: u32) {
        self.mix(u64::from(x));
    }
    fn write_u64(&mut self, x: u64) {
        self.mix(x);
    }
    fn write_usize(&mut self, x: usize) {
        self.mix(x as u64);
    }
    fn finish(&self) -> u64 {
        fmix(self.a ^ fmix(self.b))
    }
}

/// `HashMap` with the [`Fast`] hasher.
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fast>>;

/// One successor of a state: the step taken, the state reached, and the
/// safety rule the step itself broke, if any (a rule about the step rather
/// than the state, such as "the coordinator never emits an Alert").
pub struct Succ<A, S> {
    pub step: A,
    pub state: S,
    pub violation: Option<String>,
}

/// A transition system to explore.
pub trait Model {
    /// Plain data; the derived `Hash` must be canonical: two states that
    /// hash alike must behave alike.
    type State: Clone + Hash;
    type Step: Clone + Debug + PartialEq;

    fn init(&self) -> Self::State;
    /// All successors of `s`, in a deterministic order.
    fn next(&self, s: &Self::State, out: &mut Vec<Succ<Self::Step, Self::State>>);
    /// Safety properties of one state.
    fn invariant(&self, s: &Self::State) -> Result<(), String>;
    /// Bits recording what a state shows (for example "a commit outcome"),
    /// ORed over all reachable states into [`Report::tags`].
    fn tags(&self, _s: &Self::State) -> u32 {
        0
    }
    /// The states liveness looks for (only used with `liveness`).
    fn goal(&self, _s: &Self::State) -> bool {
        true
    }
    /// A few lines that say what a state is, for traces.
    fn describe(&self, s: &Self::State) -> String;
    /// The identity of a state in the seen set. States with equal
    /// fingerprints must behave alike (up to a symmetry the checks respect).
    fn fingerprint(&self, s: &Self::State) -> u128 {
        fingerprint(s)
    }
}

/// Limits of one exploration.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Keep every edge and check that a goal state stays reachable from
    /// every reachable state.
    pub liveness: bool,
    /// Give up (fail) past this many states rather than run out of memory.
    pub max_states: usize,
    /// Stop after every state up to this many steps from the initial state
    /// has been visited and checked (a bounded check: liveness must be off,
    /// since the graph is cut). `None` explores everything.
    pub max_depth: Option<usize>,
}

/// What an exploration found.
#[derive(Debug)]
pub struct Report {
    pub states: usize,
    pub transitions: u64,
    /// Length of the longest shortest path from the initial state.
    pub max_depth: usize,
    pub tags: u32,
    pub elapsed: Duration,
}

/// What kind of property an exploration found broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// A reachable state breaks [`Model::invariant`].
    Invariant,
    /// A step breaks a rule about steps ([`Succ::violation`]).
    Step,
    /// Liveness: from a reachable state no goal state can be reached.
    Stuck,
    /// The bound on states was passed: nothing was decided.
    TooManyStates,
}

/// Why an exploration failed, with the shortest trace to it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub broken: Broken,
    /// The property's own words.
    pub why: String,
    /// Steps from the initial state to the failure (a shortest trace).
    pub steps: usize,
    /// States visited before the search stopped.
    pub states: usize,
    /// The trace, one step and the state it reached per entry.
    pub trace: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}: {}
{}",
            self.broken, self.why, self.trace
        )
    }
}

/// 128 bits of the state's canonical encoding (the derived `Hash`), with
/// fixed keys, so the figure is the same on every run. With a million
/// states the chance that two collide is about 10^-27.
pub fn fingerprint<S: Hash>(s: &S) -> u128 {
    let mut h = Fast::default();
    s.hash(&mut h);
    h.finish128()
}

/// Visit every reachable state. `Err` holds a failure with the shortest
/// trace that leads to it.
pub fn explore<M: Model>(m: &M, opts: Options) -> Result<Report, Failure> {
    assert!(
        !(opts.liveness && opts.max_depth.is_some()),
        "liveness needs the whole graph: a depth bound cuts it"
    );
    let start = Instant::now();
    let init = m.init();
    if let Err(e) = m.invariant(&init) {
        let parents: [Option<(u32, M::Step)>; 1] = [None];
        return Err(failure(m, &parents, 0, None, Broken::Invariant, &e));
    }
    let mut seen: FastMap<u128, u32> = FastMap::default();
    seen.insert(m.fingerprint(&init), 0);
    // parents[i] = (index of the state it was first reached from, step).
    let mut parents: Vec<Option<(u32, M::Step)>> = vec![None];
    let mut goal: Vec<bool> = vec![opts.liveness && m.goal(&init)];
    let mut edges: Vec<(u32, u32)> = Vec::new();
    let mut tags = m.tags(&init);
    let mut transitions = 0u64;
    let mut depth = 0usize;
    let mut layer = vec![(0u32, init)];
    let mut succs = Vec::new();
    while !layer.is_empty() && opts.max_depth.is_none_or(|d| depth < d) {
        let mut next_layer = Vec::new();
        for (id, s) in layer.drain(..) {
            m.next(&s, &mut succs);
            for Succ {
                step,
                state,
                violation,
            } in succs.drain(..)
            {
                transitions += 1;
                if let Some(v) = violation {
                    return Err(failure(m, &parents, id, Some(step), Broken::Step, &v));
                }
                let to = match seen.entry(m.fingerprint(&state)) {
                    Entry::Occupied(o) => *o.get(),
                    Entry::Vacant(v) => {
                        let to = parents.len() as u32;
                        v.insert(to);
                        parents.push(Some((id, step)));
                        if let Err(e) = m.invariant(&state) {
                            return Err(failure(m, &parents, to, None, Broken::Invariant, &e));
                        }
                        tags |= m.tags(&state);
                        goal.push(opts.liveness && m.goal(&state));
                        if parents.len() > opts.max_states {
                            return Err(Failure {
                                broken: Broken::TooManyStates,
                                why: format!(
                                    "more than {} states: tighten the bounds",
                                    opts.max_states
                                ),
                                steps: 0,
                                states: parents.len(),
                                trace: String::new(),
                            });
                        }
                        next_layer.push((to, state));
                        to
                    }
                };
                if opts.liveness && to != id {
                    edges.push((id, to));
                }
            }
        }
        if !next_layer.is_empty() {
            depth += 1;
        }
        if std::env::var_os("TWOPC_MODEL_PROGRESS").is_some() {
            eprintln!(
                "depth {depth}: {} states, layer {}, {} edges, rss {} MiB, {:.1} s",
                parents.len(),
                next_layer.len(),
                edges.len(),
                rss_mib(),
                start.elapsed().as_secs_f64()
            );
        }
        layer = next_layer;
    }
    if opts.liveness {
        if let Some(stuck) = first_stuck(&goal, &edges) {
            let why = "no state satisfying the goal is reachable from here";
            return Err(failure(m, &parents, stuck, None, Broken::Stuck, why));
        }
    }
    Ok(Report {
        states: parents.len(),
        transitions,
        max_depth: depth,
        tags,
        elapsed: start.elapsed(),
    })
}

/// The lowest-numbered (so among the shallowest) state from which no goal
/// state is reachable, by a backward search from the goal states.
fn first_stuck(goal: &[bool], edges: &[(u32, u32)]) -> Option<u32> {
    let n = goal.len();
    // Reverse adjacency in compressed form: sources of the edges into `to`
    // are rev[start[to]..start[to + 1]].
    let mut start = vec![0u32; n + 1];
    for &(_, to) in edges {
        start[to as usize + 1] += 1;
    }
    for i in 0..n {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut rev = vec![0u32; edges.len()];
    for &(from, to) in edges {
        rev[fill[to as usize] as usize] = from;
        fill[to as usize] += 1;
    }
    let mut live = goal.to_vec();
    let mut stack: Vec<u32> = (0..n as u32).filter(|&i| goal[i as usize]).collect();
    while let Some(to) = stack.pop() {
        let (a, b) = (start[to as usize] as usize, start[to as usize + 1] as usize);
        for &from in &rev[a..b] {
            if !live[from as usize] {
                live[from as usize] = true;
                stack.push(from);
            }
        }
    }
    live.iter().position(|ok| !ok).map(|i| i as u32)
}

/// The steps from the initial state to state `id`.
fn path<A: Clone>(parents: &[Option<(u32, A)>], mut id: u32) -> Vec<A> {
    let mut steps = Vec::new();
    while let Some((from, step)) = &parents[id as usize] {
        steps.push(step.clone());
        id = *from;
    }
    steps.reverse();
    steps
}

/// Replay `steps` from the initial state, returning every state passed.
pub fn replay<M: Model>(m: &M, steps: &[M::Step]) -> Vec<M::State> {
    let mut s = m.init();
    let mut states = vec![s.clone()];
    let mut succs = Vec::new();
    for step in steps {
        m.next(&s, &mut succs);
        let found = succs
            .drain(..)
            .find(|x| &x.step == step)
            .expect("a recorded step replays");
        s = found.state;
        states.push(s.clone());
    }
    states
}

fn failure<M: Model>(
    m: &M,
    parents: &[Option<(u32, M::Step)>],
    id: u32,
    last: Option<M::Step>,
    broken: Broken,
    why: &str,
) -> Failure {
    let mut steps = path(parents, id);
    steps.extend(last);
    let states = replay(m, &steps);
    let mut out = format!("shortest trace ({} steps):\n", steps.len());
    out += &format!("  initial: {}\n", m.describe(&states[0]));
    for (i, (step, s)) in steps.iter().zip(&states[1..]).enumerate() {
        out += &format!("  {:>3}. {step:?}\n       {}\n", i + 1, m.describe(s));
    }
    Failure {
        broken,
        why: why.to_string(),
        steps: steps.len(),
        states: parents.len(),
        trace: out,
    }
}

/// This process's resident set now, in MiB (0 where /proc is missing).
pub fn rss_mib() -> u64 {
    proc_status_kib("VmRSS:") / 1024
}

/// This process's peak resident set, in MiB (0 where /proc is missing).
pub fn peak_rss_mib() -> u64 {
    proc_status_kib("VmHWM:") / 1024
}

fn proc_status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

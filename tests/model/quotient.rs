//! A check of a state-space reduction: explore a model without it (every
//! state told apart by an exact fingerprint), then group the states by the
//! reduced fingerprint and require that states in one group look alike to
//! every check (invariant, goal, tags) and have successors in the same
//! groups. That is the condition under which exploring one state per group
//! finds every violation and every stuck state the whole graph has: each
//! group is a state of a quotient graph that the reduced exploration walks.

use super::explore::{FastMap, Model, Succ};
use std::collections::VecDeque;

/// What the check found.
#[derive(Debug)]
pub struct Quotient {
    /// States told apart exactly.
    pub states: usize,
    /// Groups of states the reduced fingerprint merges.
    pub groups: usize,
}

/// What every check sees of a state, and the groups of its successors.
#[derive(PartialEq, Eq)]
struct View {
    /// Whether the invariant holds (its text names participants and
    /// transactions, which a renaming changes).
    safe: bool,
    goal: bool,
    tags: u32,
    succs: Vec<u128>,
}

/// Explore `m` breadth first up to `max_depth` steps (all of it with
/// `None`), telling states apart by `exact`, and check that `reduced` is
/// a bisimulation on what was reached. `Err` names two states of one group
/// that behave differently.
pub fn check<M: Model>(
    m: &M,
    exact: impl Fn(&M::State) -> u128,
    reduced: impl Fn(&M::State) -> u128,
    max_depth: Option<usize>,
    max_states: usize,
) -> Result<Quotient, String> {
    let mut seen: FastMap<u128, ()> = FastMap::default();
    let mut groups: FastMap<u128, (View, M::State)> = FastMap::default();
    let init = m.init();
    seen.insert(exact(&init), ());
    let mut queue = VecDeque::from([(init, 0usize)]);
    let mut succs = Vec::new();
    while let Some((s, depth)) = queue.pop_front() {
        m.next(&s, &mut succs);
        let mut view = View {
            safe: m.invariant(&s).is_ok(),
            goal: m.goal(&s),
            tags: m.tags(&s),
            succs: succs.iter().map(|x| reduced(&x.state)).collect(),
        };
        view.succs.sort_unstable();
        view.succs.dedup();
        for Succ { state, .. } in succs.drain(..) {
            if max_depth.is_some_and(|d| depth >= d) {
                continue;
            }
            if seen.insert(exact(&state), ()).is_none() {
                if seen.len() > max_states {
                    return Err(format!("more than {max_states} states"));
                }
                queue.push_back((state, depth + 1));
            }
        }
        match groups.get(&reduced(&s)) {
            None => {
                groups.insert(reduced(&s), (view, s));
            }
            Some((first, other)) if *first != view => {
                return Err(format!(
                    "two states with one reduced fingerprint behave differently:\n  {}\n{}\n  {}\n{}",
                    m.describe(other),
                    successors(m, other, &reduced),
                    m.describe(&s),
                    successors(m, &s, &reduced)
                ));
            }
            Some(_) => {}
        }
    }
    Ok(Quotient {
        states: seen.len(),
        groups: groups.len(),
    })
}

/// The steps out of `s` and the groups they lead to, one a line.
fn successors<M: Model>(m: &M, s: &M::State, reduced: impl Fn(&M::State) -> u128) -> String {
    let mut succs = Vec::new();
    m.next(s, &mut succs);
    let mut out = String::new();
    for x in &succs {
        out += &format!(
            "    {:?} -> {:08x} (safe: {})\n      {}\n",
            x.step,
            reduced(&x.state) >> 96,
            m.invariant(&x.state).is_ok(),
            m.describe(&x.state)
        );
    }
    out
}

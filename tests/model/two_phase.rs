//! Lamport's `TwoPhase` TLA+ specification, transcribed action by action:
//! the textbook protocol with a reliable, never-emptied message set and no
//! crashes. Its reachable-state count is a fixed point to compare against
//! (TLC reports 288 distinct states for three resource managers).

use super::explore::{Model, Succ};

/// `rmState[r]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rm {
    Working,
    Prepared,
    Committed,
    Aborted,
}

/// `tmState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tm {
    Init,
    Committed,
    Aborted,
}

/// One state of the spec. `msgs` only grows, as in the spec: a message once
/// sent may be received any number of times.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TpState {
    pub rm: Vec<Rm>,
    pub tm: Tm,
    /// `tmPrepared`, one bit per resource manager.
    pub tm_prepared: u32,
    /// `[type |-> "Prepared", rm |-> r] \in msgs`, one bit per r.
    pub prepared_msgs: u32,
    pub commit_msg: bool,
    pub abort_msg: bool,
}

/// The actions of the spec's `Next`, with their resource manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TpStep {
    TmRcvPrepared(usize),
    TmCommit,
    TmAbort,
    RmPrepare(usize),
    RmChooseToAbort(usize),
    RmRcvCommitMsg(usize),
    RmRcvAbortMsg(usize),
}

/// A mistake in the transcription, made on purpose to show that the check
/// catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mistake {
    /// `TMCommit` without its guard `tmPrepared = RM`: the transaction
    /// manager may commit before every resource manager has prepared.
    CommitWithoutAllPrepared,
    /// `TMAbort` left out of `TPNext`: still safe, but not the spec.
    NoTmAbort,
}

/// `TwoPhase` with `RM` of size `rms`; `mistake` is `None` for the spec
/// as written.
pub struct TwoPhase {
    pub rms: usize,
    pub mistake: Option<Mistake>,
}

impl Model for TwoPhase {
    type State = TpState;
    type Step = TpStep;

    /// `TPInit`.
    fn init(&self) -> TpState {
        TpState {
            rm: vec![Rm::Working; self.rms],
            tm: Tm::Init,
            tm_prepared: 0,
            prepared_msgs: 0,
            commit_msg: false,
            abort_msg: false,
        }
    }

    /// `TPNext`: every enabled action. Stuttering successors (an action
    /// that leaves the state as it was) are kept, as TLC generates them.
    fn next(&self, s: &TpState, out: &mut Vec<Succ<TpStep, TpState>>) {
        let mut push = |step, state| {
            out.push(Succ {
                step,
                state,
                violation: None,
            })
        };
        let all = (1u32 << self.rms) - 1;
        let guard = s.tm_prepared == all || self.mistake == Some(Mistake::CommitWithoutAllPrepared);
        if s.tm == Tm::Init && guard {
            let mut t = s.clone();
            t.tm = Tm::Committed;
            t.commit_msg = true;
            push(TpStep::TmCommit, t);
        }
        if s.tm == Tm::Init && self.mistake != Some(Mistake::NoTmAbort) {
            let mut t = s.clone();
            t.tm = Tm::Aborted;
            t.abort_msg = true;
            push(TpStep::TmAbort, t);
        }
        for r in 0..self.rms {
            let bit = 1u32 << r;
            if s.tm == Tm::Init && s.prepared_msgs & bit != 0 {
                let mut t = s.clone();
                t.tm_prepared |= bit;
                push(TpStep::TmRcvPrepared(r), t);
            }
            if s.rm[r] == Rm::Working {
                let mut t = s.clone();
                t.rm[r] = Rm::Prepared;
                t.prepared_msgs |= bit;
                push(TpStep::RmPrepare(r), t);
                let mut t = s.clone();
                t.rm[r] = Rm::Aborted;
                push(TpStep::RmChooseToAbort(r), t);
            }
            if s.commit_msg {
                let mut t = s.clone();
                t.rm[r] = Rm::Committed;
                push(TpStep::RmRcvCommitMsg(r), t);
            }
            if s.abort_msg {
                let mut t = s.clone();
                t.rm[r] = Rm::Aborted;
                push(TpStep::RmRcvAbortMsg(r), t);
            }
        }
    }

    /// `TCConsistent`: no resource manager has aborted while another has
    /// committed (`TPTypeOK` holds by construction of the types).
    fn invariant(&self, s: &TpState) -> Result<(), String> {
        let committed = s.rm.contains(&Rm::Committed);
        let aborted = s.rm.contains(&Rm::Aborted);
        if committed && aborted {
            return Err(format!("TCConsistent violated: {:?}", s.rm));
        }
        Ok(())
    }

    fn tags(&self, s: &TpState) -> u32 {
        let every = |want| s.rm.iter().all(|r| *r == want);
        u32::from(every(Rm::Committed)) | (u32::from(every(Rm::Aborted)) << 1)
    }

    fn describe(&self, s: &TpState) -> String {
        format!("{s:?}")
    }
}

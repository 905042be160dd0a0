//! A tiny model with a participant left in doubt forever, to show that the
//! explorer's liveness search reports a stuck state (and, with the
//! coordinator answering, that it reports none).

use super::explore::{Model, Succ};

/// One participant's view of one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Working,
    /// Voted commit; waiting for the decision.
    InDoubt,
    Committed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Prepare,
    /// Ask the coordinator about the transaction.
    Query,
    ReceiveCommit,
}

/// With `coordinator_answers` false, the only way on from `InDoubt` is a
/// query nobody answers: the participant stays in doubt forever.
pub struct InDoubt {
    pub coordinator_answers: bool,
}

impl Model for InDoubt {
    type State = Phase;
    type Step = Act;

    fn init(&self) -> Phase {
        Phase::Working
    }

    fn next(&self, s: &Phase, out: &mut Vec<Succ<Act, Phase>>) {
        let mut push = |step, state| {
            out.push(Succ {
                step,
                state,
                violation: None,
            })
        };
        match s {
            Phase::Working => push(Act::Prepare, Phase::InDoubt),
            Phase::InDoubt => {
                push(Act::Query, Phase::InDoubt);
                if self.coordinator_answers {
                    push(Act::ReceiveCommit, Phase::Committed);
                }
            }
            Phase::Committed => {}
        }
    }

    fn invariant(&self, _s: &Phase) -> Result<(), String> {
        Ok(())
    }

    /// Nothing in doubt.
    fn goal(&self, s: &Phase) -> bool {
        *s != Phase::InDoubt
    }

    fn describe(&self, s: &Phase) -> String {
        format!("{s:?}")
    }
}

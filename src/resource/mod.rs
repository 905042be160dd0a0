//! What a participant votes with. A [`Resource`] prepares a transaction's
//! data and says whether it can commit, then applies the decision.
//!
//! To ensure correctness, an implementation must:
//! - make `prepare` answer `Ok` only if a later `finish(Commit)` cannot fail
//!   for reasons of its own (locks held, constraints checked);
//! - make `finish` idempotent: after a crash it may be called again for a
//!   transaction it already finished;
//! - return from `prepare` the state it needs to finish after a restart; the
//!   participant logs it durably in its `Prepared` record and hands it back
//!   through `recover`.

use crate::protocol::{Decision, TxnId};
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// A participant's resource manager.
pub trait Resource: Send {
    /// Prepare `txn` with `data`: `Ok(state)` to vote commit, `Err(reason)`
    /// to vote abort.
    fn prepare(&mut self, txn: &TxnId, data: &Value) -> Result<Value, String>;
    /// Apply the decision for a transaction this resource prepared (or
    /// refused; then only `Abort` comes).
    fn finish(&mut self, txn: &TxnId, decision: Decision);
    /// After a restart: the transactions still prepared, with their states.
    fn recover(&mut self, prepared: &[(TxnId, Value)]);
}

/// How a participant votes when it has no data of its own.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VotePreference {
    Commit,
    Abort,
    Random,
}

impl VotePreference {
    pub const ALLOWED: &'static str = "commit, abort, random";

    pub fn parse(s: &str) -> Option<VotePreference> {
        match s.to_ascii_lowercase().as_str() {
            "commit" => Some(VotePreference::Commit),
            "abort" => Some(VotePreference::Abort),
            "random" => Some(VotePreference::Random),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VotePreference::Commit => "commit",
            VotePreference::Abort => "abort",
            VotePreference::Random => "random",
        }
    }
}

/// The classic demonstration resource: votes by preference, holds nothing.
pub struct VoteResource {
    preference: VotePreference,
    commit_probability: f64,
    rng: rand::rngs::StdRng,
}

impl VoteResource {
    pub fn new(preference: VotePreference, commit_probability: f64, seed: Option<u64>) -> Self {
        VoteResource {
            preference,
            commit_probability,
            rng: match seed {
                Some(s) => rand::rngs::StdRng::seed_from_u64(s),
                None => rand::rngs::StdRng::from_os_rng(),
            },
        }
    }
}

impl Resource for VoteResource {
    fn prepare(&mut self, _txn: &TxnId, _data: &Value) -> Result<Value, String> {
        match self.preference {
            VotePreference::Commit => Ok(Value::Null),
            VotePreference::Abort => Err("vote_preference is abort".into()),
            VotePreference::Random => {
                if self
                    .rng
                    .random_bool(self.commit_probability.clamp(0.0, 1.0))
                {
                    Ok(Value::Null)
                } else {
                    Err(format!(
                        "random vote (commit_probability {})",
                        self.commit_probability
                    ))
                }
            }
        }
    }

    fn finish(&mut self, _txn: &TxnId, _decision: Decision) {}

    fn recover(&mut self, _prepared: &[(TxnId, Value)]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_vote_as_configured() {
        let t = TxnId::from("t");
        let mut c = VoteResource::new(VotePreference::Commit, 0.0, Some(1));
        assert!(c.prepare(&t, &Value::Null).is_ok());
        let mut a = VoteResource::new(VotePreference::Abort, 1.0, Some(1));
        assert!(a.prepare(&t, &Value::Null).is_err());
        let mut r = VoteResource::new(VotePreference::Random, 0.5, Some(7));
        let commits = (0..1000)
            .filter(|_| r.prepare(&t, &Value::Null).is_ok())
            .count();
        assert!(
            (350..650).contains(&commits),
            "{commits} commits of 1000 at p=0.5"
        );
    }
}

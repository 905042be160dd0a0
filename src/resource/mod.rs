//! What a participant votes with. A [`Resource`] prepares a transaction's
//! data and says whether it can commit, then applies the decision.
//!
//! To ensure correctness, an implementation must:
//! - make `prepare` answer `Ok` only if a later `finish(Commit)` cannot fail
//!   for reasons of its own (locks held, constraints checked);
//! - make `finish` idempotent: after a crash it may be called again for a
//!   transaction it already finished;
//! - make `finish` answer `Err` only for a heuristic outcome: the
//!   transaction's prepared state is gone and it ended (or may have ended)
//!   otherwise than decided. The participant logs it and reports it to the
//!   coordinator in its ACK;
//! - return from `prepare` the state it needs to finish after a restart; the
//!   participant logs it durably in its `Prepared` record and hands it back
//!   through `recover`.

pub mod kv;
pub mod postgres;
pub(crate) mod postgres_tls;

use crate::protocol::bound::{self, describe_value};
use crate::protocol::participant::Prepared;
use crate::protocol::{Decision, Heuristic, Record, TxnId};
use futures::future::{ready, BoxFuture};
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// Answer of [`Resource::prepare`]: `Ok` votes commit, `Err` votes abort
/// with the error's text as the reason.
pub type PrepareResult = Result<Prepared, ResourceError>;

/// Answer of [`Resource::finish`]: `Ok` when the decision was carried out
/// as decided, `Err` with the heuristic outcome when it could not be.
pub type FinishResult = Result<(), Heuristic>;

/// Why a resource refuses to prepare, grouped by what the caller can do
/// about it. Every kind is an abort vote; the text (the vote's reason, sent
/// to the coordinator and the client) is the detail, already prefixed with
/// a stable word such as `conflict:` or `database_unavailable:`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// The transaction's data is malformed or not allowed here: the same
    /// request will be refused again.
    #[error("{0}")]
    Invalid(String),
    /// The data is well formed but the current state refuses it (a key
    /// locked by another transaction, an expectation not met, a constraint):
    /// the request may succeed later.
    #[error("{0}")]
    Conflict(String),
    /// The backing store could not be reached or is busy: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The participant is configured to vote abort (`vote_preference`).
    #[error("{0}")]
    Declined(String),
}

impl ResourceError {
    /// The kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ResourceError::Invalid(_) => "invalid",
            ResourceError::Conflict(_) => "conflict",
            ResourceError::Unavailable(_) => "unavailable",
            ResourceError::Declined(_) => "declined",
        }
    }

    /// The same kind with its detail rewritten (for example cut to a bound).
    pub fn map_detail(self, f: impl FnOnce(String) -> String) -> ResourceError {
        match self {
            ResourceError::Invalid(s) => ResourceError::Invalid(f(s)),
            ResourceError::Conflict(s) => ResourceError::Conflict(f(s)),
            ResourceError::Unavailable(s) => ResourceError::Unavailable(f(s)),
            ResourceError::Declined(s) => ResourceError::Declined(f(s)),
        }
    }
}

/// A participant's resource manager. Calls come from the participant's
/// event loop one at a time; the returned futures run concurrently, so they
/// own what they need (`'static`).
pub trait Resource: Send {
    /// Prepare `txn` with `data` (for data resources, `{"operations": [..]}`).
    fn prepare(&mut self, txn: &TxnId, data: &Value) -> BoxFuture<'static, PrepareResult>;
    /// Apply the decision for `txn`. Called after the decision is logged;
    /// the ACK waits for the future. Must be idempotent, and must not fail
    /// for reasons of its own after a successful prepare: transient errors
    /// are retried inside the future. `Err` is a heuristic outcome only:
    /// the prepared state is gone and the transaction ended otherwise than
    /// decided, or may have.
    fn finish(&mut self, txn: &TxnId, decision: Decision) -> BoxFuture<'static, FinishResult>;
    /// Rebuild after a restart from the participant's log (snapshots, then
    /// prepared and decided records in order). An error stops the process.
    fn recover(&mut self, log: &[Record]) -> BoxFuture<'static, Result<(), RecoverError>>;
    /// Committed state to write at a log checkpoint, so that restart time
    /// does not grow with history. `None` for resources that keep their
    /// data elsewhere.
    fn snapshot(&self) -> Option<Value> {
        None
    }
    /// Figures for `status` (for example keys held, locks).
    fn status(&self) -> Value {
        Value::Null
    }
}

/// The operations of a PREPARE's data, for a resource that holds data (kv,
/// postgres): the data must be exactly `{"operations": [...]}`, with at
/// least one and at most `ops_max` operations. Anything else is refused
/// rather than committed as nothing: a misspelt field, or a participant the
/// submit gave no operations, would otherwise vote commit and change no
/// data. `Err`'s text is the reason of an abort vote, `invalid_payload:
/// ...`, naming the field at fault.
pub fn operations_of(data: &Value, ops_max: usize) -> Result<&[Value], PayloadError> {
    let obj = match data {
        Value::Object(o) => o,
        Value::Null => return Err(PayloadError::NoData),
        other => return Err(PayloadError::NotAnObject(describe_value(other))),
    };
    if let Some(field) = obj.keys().find(|k| *k != "operations") {
        return Err(PayloadError::UnknownField(bound::truncate(
            &bound::escape_control(field),
            FIELD_SHOWN_MAX_BYTES,
        )));
    }
    let Some(ops) = obj.get("operations") else {
        return Err(PayloadError::NoOperations);
    };
    let Some(list) = ops.as_array() else {
        return Err(PayloadError::NotAList(describe_value(ops)));
    };
    if list.is_empty() {
        return Err(PayloadError::Empty);
    }
    if list.len() > ops_max {
        return Err(PayloadError::TooMany {
            count: list.len(),
            max: ops_max,
        });
    }
    Ok(list)
}

/// What to send instead of a PREPARE's data of the wrong shape.
const SHAPE: &str = "send {\"operations\": [...]} with at least one operation for this participant";

/// Why a PREPARE's data is not `{"operations": [...]}` with one to
/// `ops_max` operations (see [`operations_of`]). The same data is refused
/// again: the client fixes its request. The text is an abort vote's reason
/// and starts with `invalid_payload:`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// No data at all.
    #[error("invalid_payload: no data; {SHAPE}")]
    NoData,
    /// The data is not an object; holds what it is instead (type and size).
    #[error("invalid_payload: the data is {0}, not an object; {SHAPE}")]
    NotAnObject(String),
    /// A field other than `operations` (escaped and cut for the reason).
    #[error(
        "invalid_payload: unknown field `{0}` in the data; the only field is `operations`, a list of operations"
    )]
    UnknownField(String),
    /// An object without `operations`.
    #[error("invalid_payload: the data has no `operations`; {SHAPE}")]
    NoOperations,
    /// `operations` is not a list; holds what it is instead.
    #[error("invalid_payload: `operations` is {0}, not a list of operations")]
    NotAList(String),
    /// An empty list: the submit named no operations for this participant.
    #[error(
        "invalid_payload: `operations` is empty: the submit gave this participant no operations \
         (name it in `operations`, or leave it out of the transaction)"
    )]
    Empty,
    /// More operations than the resource takes in one transaction.
    #[error("invalid_payload: `operations` holds {count} operations, more than {max}")]
    TooMany { count: usize, max: usize },
}

impl From<PayloadError> for ResourceError {
    fn from(e: PayloadError) -> ResourceError {
        ResourceError::Invalid(e.to_string())
    }
}

/// Why a resource could not rebuild its state at start-up (see
/// [`Resource::recover`]). Either way the participant does not start and
/// leaves its log and its store as they are: the operator fixes the cause
/// named in the text and starts it again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecoverError {
    /// A record of the log does not hold what this kind of resource writes:
    /// the data directory belongs to another resource, or was damaged.
    #[error("{0}")]
    Log(String),
    /// The backing store cannot be reached, is misconfigured, or refused to
    /// settle a transaction the log decided.
    #[error("{0}")]
    Store(String),
}

/// Longest field name repeated in a reason, in bytes.
const FIELD_SHOWN_MAX_BYTES: usize = 64;

/// A resource that holds nothing and always can commit.
#[derive(Default)]
pub struct NullResource;

impl Resource for NullResource {
    fn prepare(&mut self, _txn: &TxnId, _data: &Value) -> BoxFuture<'static, PrepareResult> {
        Box::pin(ready(Ok(Prepared::default())))
    }
    fn finish(&mut self, _txn: &TxnId, _d: Decision) -> BoxFuture<'static, FinishResult> {
        Box::pin(ready(Ok(())))
    }
    fn recover(&mut self, _log: &[Record]) -> BoxFuture<'static, Result<(), RecoverError>> {
        Box::pin(ready(Ok(())))
    }
}

/// How a participant votes when it has no data of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VotePreference {
    Commit,
    Abort,
    Random,
}

/// The vote preference applied on top of any resource: `abort` votes abort
/// without asking the resource, `random` does so with probability
/// `1 - commit_probability`, `commit` votes as the resource decides.
pub struct Preference<R> {
    inner: R,
    preference: VotePreference,
    commit_probability: f64,
    rng: rand::rngs::StdRng,
}

impl<R: Resource> Preference<R> {
    pub fn new(
        inner: R,
        preference: VotePreference,
        commit_probability: f64,
        seed: Option<u64>,
    ) -> Self {
        Preference {
            inner,
            preference,
            commit_probability,
            rng: match seed {
                Some(s) => rand::rngs::StdRng::seed_from_u64(s),
                None => rand::rngs::StdRng::from_os_rng(),
            },
        }
    }

    /// `Some(reason)` when the preference forces an abort vote.
    fn forced_abort(&mut self) -> Option<String> {
        match self.preference {
            VotePreference::Commit => None,
            VotePreference::Abort => Some("vote_preference is abort".into()),
            VotePreference::Random => {
                let p = self.commit_probability.clamp(0.0, 1.0);
                (!self.rng.random_bool(p)).then(|| format!("random vote (commit_probability {p})"))
            }
        }
    }
}

impl<R: Resource> Resource for Preference<R> {
    fn prepare(&mut self, txn: &TxnId, data: &Value) -> BoxFuture<'static, PrepareResult> {
        match self.forced_abort() {
            Some(reason) => Box::pin(ready(Err(ResourceError::Declined(reason)))),
            None => self.inner.prepare(txn, data),
        }
    }
    fn finish(&mut self, txn: &TxnId, d: Decision) -> BoxFuture<'static, FinishResult> {
        self.inner.finish(txn, d)
    }
    fn recover(&mut self, log: &[Record]) -> BoxFuture<'static, Result<(), RecoverError>> {
        self.inner.recover(log)
    }
    fn snapshot(&self) -> Option<Value> {
        self.inner.snapshot()
    }
    fn status(&self) -> Value {
        self.inner.status()
    }
}

/// The classic demonstration resource: votes by preference, holds nothing.
pub type VoteResource = Preference<NullResource>;

impl VoteResource {
    pub fn voting(preference: VotePreference, commit_probability: f64, seed: Option<u64>) -> Self {
        Preference::new(NullResource, preference, commit_probability, seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use futures::FutureExt;

    fn vote(r: &mut VoteResource) -> bool {
        let t = TxnId::from("t");
        r.prepare(&t, &Value::Null).now_or_never().unwrap().is_ok()
    }

    #[test]
    fn data_resources_take_exactly_a_non_empty_list_of_operations() {
        let op = serde_json::json!({"op": "get", "key": "a"});
        let ok = serde_json::json!({ "operations": [op] });
        assert_eq!(operations_of(&ok, 10), Ok(&[op][..]));
        for (data, reason) in [
            (
                Value::Null,
                "invalid_payload: no data; send {\"operations\": [...]} with at least one operation for this participant",
            ),
            (
                serde_json::json!([1]),
                "invalid_payload: the data is an array of 1 items, not an object; send {\"operations\": [...]} with at least one operation for this participant",
            ),
            (
                serde_json::json!({}),
                "invalid_payload: the data has no `operations`; send {\"operations\": [...]} with at least one operation for this participant",
            ),
            (
                serde_json::json!({"operation": {"op": "get", "key": "a"}}),
                "invalid_payload: unknown field `operation` in the data; the only field is `operations`, a list of operations",
            ),
            (
                serde_json::json!({"operations": [{"op": "get", "key": "a"}], "note": 1}),
                "invalid_payload: unknown field `note` in the data; the only field is `operations`, a list of operations",
            ),
            (
                serde_json::json!({"operations": {"op": "get"}}),
                "invalid_payload: `operations` is an object of 1 keys, not a list of operations",
            ),
            (
                serde_json::json!({"operations": []}),
                "invalid_payload: `operations` is empty: the submit gave this participant no operations (name it in `operations`, or leave it out of the transaction)",
            ),
            (
                serde_json::json!({"operations": [1, 2, 3]}),
                "invalid_payload: `operations` holds 3 operations, more than 2",
            ),
        ] {
            assert_eq!(
                operations_of(&data, 2).map_err(|e| e.to_string()),
                Err(reason.to_string()),
                "{data}"
            );
        }
        let long = serde_json::json!({ "x\n".repeat(100): 1 });
        let e = operations_of(&long, 2).unwrap_err().to_string();
        assert!(e.len() < 200 && !e.contains('\n'), "{e}");
    }

    #[test]
    fn preferences_vote_as_configured() {
        assert!(vote(&mut VoteResource::voting(
            VotePreference::Commit,
            0.0,
            Some(1)
        )));
        assert!(!vote(&mut VoteResource::voting(
            VotePreference::Abort,
            1.0,
            Some(1)
        )));
        let mut r = VoteResource::voting(VotePreference::Random, 0.5, Some(7));
        let commits = (0..1000).filter(|_| vote(&mut r)).count();
        assert!(
            (350..650).contains(&commits),
            "{commits} commits of 1000 at p=0.5"
        );
    }
}

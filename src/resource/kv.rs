//! `kv`: an embedded, durable, transactional key-value store.
//!
//! Prepare evaluates a transaction's operations against committed data,
//! takes a lock on every key it touches and keeps the resulting writes
//! pending; a key locked by another prepared transaction makes the vote
//! abort with reason `conflict` (no waiting, so no deadlock). Commit applies
//! the pending writes, abort drops them; both release the locks.
//!
//! Durability comes from the participant's log: the pending writes are the
//! state of the `Prepared` record, commits are `Decided` records, and a
//! checkpoint writes the whole store as a `Snapshot` so restart time does
//! not grow with history. Recovery replays snapshot, prepares and decisions
//! in log order.
//!
//! The data of a PREPARE is exactly `{"operations": [..]}` with at least one
//! operation; anything else, an unknown field in an operation included, votes
//! abort with reason `invalid_payload: ...` (see [`super::operations_of`]).
//! Operations (JSON): `{"op":"get","key":K}`, `{"op":"put","key":K,"value":V,
//! "expect":V?}`, `{"op":"delete","key":K,"expect":V?}`, `{"op":"add","key":K,
//! "delta":INT,"min":INT?}`. `expect` compares the current value (`null` for a
//! missing key); `add` treats a missing key as 0.

use super::{FinishResult, PayloadError, PrepareResult, RecoverError, Resource, ResourceError};
use crate::protocol::bound::{self, describe_value};
use crate::protocol::participant::Prepared;
use crate::protocol::{Decision, Heuristic, HeuristicKind, Record, TxnId};
use futures::future::{ready, BoxFuture};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

/// Bounds on one transaction's operations.
pub const OPS_MAX: usize = 10_000;
pub const KEY_MAX_BYTES: usize = 1024;

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: Value,
        /// Present (even as `null`, meaning "absent") → checked.
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        expect: Option<Value>,
    },
    Delete {
        key: String,
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        expect: Option<Value>,
    },
    Add {
        key: String,
        delta: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<i64>,
    },
}

impl Op {
    fn key(&self) -> &str {
        match self {
            Op::Get { key }
            | Op::Put { key, .. }
            | Op::Delete { key, .. }
            | Op::Add { key, .. } => key,
        }
    }
}

/// A field that is present is `Some`, even when it is `null`; serde's
/// default would turn `"expect": null` into "no expectation".
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A pending write: `None` deletes the key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Write {
    pub key: String,
    pub value: Option<Value>,
}

/// What a prepared transaction holds: its locked keys and pending writes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PendingTxn {
    pub keys: Vec<String>,
    pub writes: Vec<Write>,
}

/// The store. See the module documentation.
#[derive(Debug, Default)]
pub struct KvStore {
    data: BTreeMap<String, Value>,
    locks: HashMap<String, TxnId>,
    pending: HashMap<TxnId, PendingTxn>,
}

impl KvStore {
    pub fn new() -> KvStore {
        KvStore::default()
    }

    /// Committed value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.data.get(key)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Load initial data (a JSON object) into an empty store.
    pub fn seed(&mut self, seed: &Value) -> Result<usize, SeedError> {
        let obj = seed.as_object().ok_or(SeedError::NotAnObject)?;
        for (k, v) in obj {
            check_key(k).map_err(SeedError::Key)?;
            self.data.insert(k.clone(), v.clone());
        }
        Ok(obj.len())
    }

    /// Parse the `operations` of a PREPARE's data: exactly
    /// `{"operations": [..]}` with at least one operation (see
    /// [`super::operations_of`]), each of a known shape with no unknown
    /// field. `Err` is an abort vote's reason, `invalid_payload: ...`.
    pub fn parse_ops(data: &Value) -> Result<Vec<Op>, OpsError> {
        super::operations_of(data, OPS_MAX)?
            .iter()
            .enumerate()
            .map(|(index, v)| {
                let invalid = |why: OpError| OpsError::Operation { index, why };
                // serde would also read `["get", "k"]` as an operation.
                if !v.is_object() {
                    return Err(invalid(OpError::NotAnObject(describe_value(v))));
                }
                let op: Op = serde_json::from_value(v.clone())
                    .map_err(|e| invalid(OpError::Shape(e.to_string())))?;
                check_key(op.key()).map_err(|e| invalid(OpError::Key(e)))?;
                Ok(op)
            })
            .collect()
    }

    /// Evaluate `ops` for `txn`, lock their keys and keep the writes. Returns
    /// the pending transaction (logged) and the results of reads.
    pub fn prepare_ops(&mut self, txn: &TxnId, ops: &[Op]) -> Result<(PendingTxn, Value), Refused> {
        if let Some(p) = self.pending.get(txn) {
            // Prepared already (a duplicate after recovery): same answer.
            return Ok((p.clone(), Value::Null));
        }
        let mut keys: Vec<String> = ops.iter().map(|o| o.key().to_string()).collect();
        keys.sort();
        keys.dedup();
        if let Some(k) = keys
            .iter()
            .find(|k| self.locks.get(*k).is_some_and(|t| t != txn))
        {
            return Err(Refused::Locked { key: shown_key(k) });
        }
        // Overlay of this transaction's own writes so later operations see
        // earlier ones.
        let mut overlay: BTreeMap<String, Option<Value>> = BTreeMap::new();
        let mut reads = Map::new();
        for op in ops {
            let current = |overlay: &BTreeMap<String, Option<Value>>, key: &str| -> Option<Value> {
                match overlay.get(key) {
                    Some(v) => v.clone(),
                    None => self.data.get(key).cloned(),
                }
            };
            match op {
                Op::Get { key } => {
                    reads.insert(key.clone(), current(&overlay, key).unwrap_or(Value::Null));
                }
                Op::Put { key, value, expect } => {
                    check_expect(key, expect, &current(&overlay, key))?;
                    overlay.insert(key.clone(), Some(value.clone()));
                }
                Op::Delete { key, expect } => {
                    check_expect(key, expect, &current(&overlay, key))?;
                    overlay.insert(key.clone(), None);
                }
                Op::Add { key, delta, min } => {
                    let now = match current(&overlay, key) {
                        None | Some(Value::Null) => 0,
                        Some(v) => v.as_i64().ok_or_else(|| Refused::NotAnInteger {
                            key: shown_key(key),
                            found: describe_value(&v),
                        })?,
                    };
                    let next = now.checked_add(*delta).ok_or_else(|| Refused::Overflow {
                        key: shown_key(key),
                        now,
                        delta: *delta,
                    })?;
                    if let Some(&min) = min.as_ref() {
                        if next < min {
                            return Err(Refused::BelowMin {
                                key: shown_key(key),
                                next,
                                min,
                                now,
                                delta: *delta,
                            });
                        }
                    }
                    overlay.insert(key.clone(), Some(json!(next)));
                }
            }
        }
        let pending = PendingTxn {
            keys,
            writes: overlay
                .into_iter()
                .map(|(key, value)| Write { key, value })
                .collect(),
        };
        self.hold(txn, pending.clone());
        Ok((pending, Value::Object(reads)))
    }

    fn hold(&mut self, txn: &TxnId, pending: PendingTxn) {
        for k in &pending.keys {
            self.locks.insert(k.clone(), txn.clone());
        }
        self.pending.insert(txn.clone(), pending);
    }

    /// Apply (commit) or drop (abort) `txn`'s writes and release its locks.
    /// Unknown transactions are ignored (idempotent).
    pub fn finish_txn(&mut self, txn: &TxnId, decision: Decision) {
        let Some(p) = self.pending.remove(txn) else {
            return;
        };
        for k in &p.keys {
            if self.locks.get(k) == Some(txn) {
                self.locks.remove(k);
            }
        }
        if decision == Decision::Commit {
            for w in p.writes {
                match w.value {
                    Some(v) => self.data.insert(w.key, v),
                    None => self.data.remove(&w.key),
                };
            }
        }
    }

    /// Replay a participant log.
    pub fn replay(&mut self, log: &[Record]) -> Result<(), ReplayError> {
        for r in log {
            match r {
                Record::Snapshot { state, merge } => {
                    let data: BTreeMap<String, Value> =
                        serde_json::from_value(state.clone()).map_err(ReplayError::Snapshot)?;
                    // A snapshot is committed data only. Pending writes and
                    // locks come from `Prepared` records and end with their
                    // `Decided` record, never with a snapshot: one logged
                    // before the snapshot belongs to a transaction that may
                    // still be in doubt.
                    if !merge {
                        self.data.clear();
                    }
                    self.data.extend(data);
                }
                Record::Prepared { txn, state, .. } => {
                    let pending: PendingTxn =
                        serde_json::from_value(state.clone()).map_err(|source| {
                            ReplayError::Prepared {
                                txn: txn.clone(),
                                source,
                            }
                        })?;
                    self.hold(txn, pending);
                }
                Record::Decided { txn, decision, .. } => self.finish_txn(txn, *decision),
                Record::Decision { .. }
                | Record::End { .. }
                | Record::Outcome { .. }
                | Record::Joined { .. }
                | Record::Removed { .. }
                | Record::Term { .. }
                | Record::Heuristic { .. } => {}
            }
        }
        Ok(())
    }

    /// All committed data, for a snapshot.
    pub fn dump(&self) -> Value {
        serde_json::to_value(&self.data).unwrap_or(Value::Null)
    }
}

fn check_key(k: &str) -> Result<(), KeyError> {
    if k.is_empty() || k.len() > KEY_MAX_BYTES {
        return Err(KeyError { len: k.len() });
    }
    Ok(())
}

/// A key of no bytes or of more than [`KEY_MAX_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`key` must be 1..={KEY_MAX_BYTES} bytes, not {len}")]
pub struct KeyError {
    /// The key's length in bytes.
    pub len: usize,
}

/// Why [`KvStore::seed`] refused the initial data: fix the seed file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    /// The seed is JSON, but not an object.
    #[error("the seed must be a JSON object mapping keys to values")]
    NotAnObject,
    /// A key of the seed is empty or too long.
    #[error(transparent)]
    Key(KeyError),
}

/// Why [`KvStore::parse_ops`] refused a PREPARE's data. The same data is
/// refused again: the client fixes its request. The text is an abort vote's
/// reason and starts with `invalid_payload:`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpsError {
    /// The data is not `{"operations": [...]}` with a bounded, non-empty list.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// Operation `index` (from 0) is not a valid operation.
    #[error("invalid_payload: operation {index}: {why}")]
    Operation { index: usize, why: OpError },
}

/// What is wrong with one operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// Not a JSON object; holds what it is instead (type and size).
    #[error(
        "{0} is not an operation; write an object such as {{\"op\": \"get\", \"key\": \"k\"}}"
    )]
    NotAnObject(String),
    /// An object that is no known operation: serde's description (unknown
    /// `op`, a missing or unknown field, a value of the wrong type).
    #[error("{0}")]
    Shape(String),
    /// Its key is empty or too long.
    #[error(transparent)]
    Key(KeyError),
}

/// Why [`KvStore::prepare_ops`] refused operations that parse: the current
/// state does not allow them, so the same request may succeed later. Keys
/// are cut to a bound and values described by type and size, never copied.
/// The text is an abort vote's reason and starts with a stable word.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Another prepared transaction holds the key's lock: retry once it ends.
    #[error("conflict: key `{key}` is locked by another prepared transaction")]
    Locked { key: String },
    /// `expect` does not match the key's current value.
    #[error("expect_mismatch: key `{key}` holds {found}, expected {expected}")]
    ExpectMismatch {
        key: String,
        found: String,
        expected: String,
    },
    /// `add` on a key that holds something other than an integer.
    #[error("not_an_integer: key `{key}` holds {found}, cannot add")]
    NotAnInteger { key: String, found: String },
    /// `add` would leave the range of a 64-bit integer.
    #[error("overflow: key `{key}` {now} + {delta}")]
    Overflow { key: String, now: i64, delta: i64 },
    /// `add` would go below the operation's `min`.
    #[error(
        "below_min: key `{key}` would become {next}, below the minimum {min} (now {now}, delta {delta})"
    )]
    BelowMin {
        key: String,
        next: i64,
        min: i64,
        now: i64,
        delta: i64,
    },
}

/// A record of the participant's log that the kv store cannot read: the
/// data directory was written by another kind of resource, or damaged.
/// The participant does not start; restore the data directory from a
/// backup, or point `data_dir` at the kv participant's own.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("kv snapshot in the log does not parse: {0}")]
    Snapshot(#[source] serde_json::Error),
    #[error("kv prepared state of {txn} does not parse: {source}")]
    Prepared {
        txn: TxnId,
        #[source]
        source: serde_json::Error,
    },
}

impl From<ReplayError> for RecoverError {
    fn from(e: ReplayError) -> RecoverError {
        RecoverError::Log(e.to_string())
    }
}

/// Longest part of a key repeated in a reason, in bytes.
const KEY_SHOWN_MAX_BYTES: usize = 64;

/// A key as reasons name it: cut, so that the reason keeps room for what
/// went wrong.
fn shown_key(key: &str) -> String {
    bound::truncate(key, KEY_SHOWN_MAX_BYTES)
}

/// The reason names the key and describes both values by type and size:
/// repeating a stored value would copy it into every reason, log line and
/// transaction summary of every transaction that fails against it.
fn check_expect(key: &str, expect: &Option<Value>, current: &Option<Value>) -> Result<(), Refused> {
    if let Some(e) = expect {
        let found = current.as_ref().unwrap_or(&Value::Null);
        if found != e {
            return Err(Refused::ExpectMismatch {
                key: shown_key(key),
                found: describe_value(found),
                expected: describe_value(e),
            });
        }
    }
    Ok(())
}

impl Resource for KvStore {
    fn prepare(&mut self, txn: &TxnId, data: &Value) -> BoxFuture<'static, PrepareResult> {
        // Operations that do not parse are invalid; everything
        // `prepare_ops` refuses depends on the current state.
        let result = KvStore::parse_ops(data)
            .map_err(|e| ResourceError::Invalid(e.to_string()))
            .and_then(|ops| {
                let (pending, reads) = self
                    .prepare_ops(txn, &ops)
                    .map_err(|e| ResourceError::Conflict(e.to_string()))?;
                let has_reads = reads.as_object().is_some_and(|m| !m.is_empty());
                Ok(Prepared {
                    state: serde_json::to_value(pending).unwrap_or(Value::Null),
                    output: has_reads.then_some(reads),
                })
            });
        // Parse errors can quote the operation they refuse.
        let result = result.map_err(|e| e.map_detail(bound::reason_owned));
        Box::pin(ready(result))
    }

    /// A commit whose prepared writes are not held (lost with the log, or
    /// never prepared here) cannot be applied: a heuristic hazard, since
    /// nothing here tells whether they were applied before. An abort of a
    /// transaction not held is normal (it never prepared, or voted abort).
    fn finish(&mut self, txn: &TxnId, decision: Decision) -> BoxFuture<'static, FinishResult> {
        let held = self.pending.contains_key(txn);
        self.finish_txn(txn, decision);
        let result = match (decision, held) {
            (Decision::Commit, false) => Err(Heuristic::new(
                HeuristicKind::Hazard,
                format!(
                    "the kv store holds no prepared writes for `{txn}`, so the commit changed \
                     nothing here, and the store cannot tell whether its writes were applied \
                     before; check the keys it wrote"
                ),
            )),
            (Decision::Commit, true) | (Decision::Abort, _) => Ok(()),
        };
        Box::pin(ready(result))
    }

    fn recover(&mut self, log: &[Record]) -> BoxFuture<'static, Result<(), RecoverError>> {
        Box::pin(ready(self.replay(log).map_err(RecoverError::from)))
    }

    fn snapshot(&self) -> Option<Value> {
        Some(self.dump())
    }

    fn status(&self) -> Value {
        json!({"keys": self.data.len(), "locked_keys": self.locks.len(), "prepared": self.pending.len()})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn t(s: &str) -> TxnId {
        TxnId::from(s)
    }

    fn ops(v: Value) -> Vec<Op> {
        KvStore::parse_ops(&json!({ "operations": v })).unwrap()
    }

    fn seeded() -> KvStore {
        let mut kv = KvStore::new();
        kv.seed(&json!({"alice": 100, "bob": 5, "name": "x"}))
            .unwrap();
        kv
    }

    #[test]
    fn each_operation_applies_on_commit_only() {
        let mut kv = seeded();
        let o = ops(json!([
            {"op": "get", "key": "alice"},
            {"op": "add", "key": "alice", "delta": -30, "min": 0},
            {"op": "put", "key": "carol", "value": {"a": 1}},
            {"op": "delete", "key": "name"},
            {"op": "add", "key": "new", "delta": 7}
        ]));
        let (_, reads) = kv.prepare_ops(&t("t1"), &o).unwrap();
        assert_eq!(reads, json!({"alice": 100}));
        assert_eq!(
            kv.get("alice"),
            Some(&json!(100)),
            "not applied before commit"
        );
        kv.finish_txn(&t("t1"), Decision::Commit);
        assert_eq!(kv.get("alice"), Some(&json!(70)));
        assert_eq!(kv.get("carol"), Some(&json!({"a": 1})));
        assert_eq!(kv.get("name"), None);
        assert_eq!(kv.get("new"), Some(&json!(7)));
        let (_, _) = kv
            .prepare_ops(
                &t("t2"),
                &ops(json!([{"op": "put", "key": "bob", "value": 0}])),
            )
            .unwrap();
        kv.finish_txn(&t("t2"), Decision::Abort);
        assert_eq!(kv.get("bob"), Some(&json!(5)));
    }

    #[test]
    fn locked_keys_conflict_and_are_released() {
        let mut kv = seeded();
        kv.prepare_ops(&t("t1"), &ops(json!([{"op": "get", "key": "bob"}])))
            .unwrap();
        let err = kv
            .prepare_ops(
                &t("t2"),
                &ops(json!([{"op": "add", "key": "bob", "delta": 1}])),
            )
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("conflict"), "{err}");
        kv.finish_txn(&t("t1"), Decision::Abort);
        kv.prepare_ops(
            &t("t2"),
            &ops(json!([{"op": "add", "key": "bob", "delta": 1}])),
        )
        .unwrap();
    }

    #[test]
    fn min_and_expect_refuse() {
        let mut kv = seeded();
        let e = kv
            .prepare_ops(
                &t("t1"),
                &ops(json!([{"op": "add", "key": "bob", "delta": -6, "min": 0}])),
            )
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("below_min"), "{e}");
        let e = kv
            .prepare_ops(
                &t("t2"),
                &ops(json!([{"op": "put", "key": "bob", "value": 1, "expect": 4}])),
            )
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("expect_mismatch"), "{e}");
        let e = kv
            .prepare_ops(
                &t("t3"),
                &ops(json!([{"op": "delete", "key": "zed", "expect": 1}])),
            )
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("expect_mismatch"), "{e}");
        kv.prepare_ops(
            &t("t4"),
            &ops(json!([{"op": "put", "key": "zed", "value": 1, "expect": null}])),
        )
        .unwrap();
        assert!(kv.locks.contains_key("zed"));
        assert!(
            !kv.locks.contains_key("bob"),
            "refused transactions hold no locks"
        );
    }

    #[test]
    fn reasons_describe_stored_values_and_never_repeat_them() {
        let big = "v".repeat(900_000);
        let mut kv = KvStore::new();
        kv.seed(&json!({ "big": big.clone() })).unwrap();
        let e = kv
            .prepare_ops(
                &t("t1"),
                &ops(json!([{"op": "put", "key": "big", "value": 1, "expect": "small"}])),
            )
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "expect_mismatch: key `big` holds a string of 900000 bytes, expected a string of 5 bytes"
        );
        let e = kv
            .prepare_ops(
                &t("t2"),
                &ops(json!([{"op": "add", "key": "big", "delta": 1}])),
            )
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "not_an_integer: key `big` holds a string of 900000 bytes, cannot add"
        );
        let long_key = "k".repeat(KEY_MAX_BYTES);
        kv.prepare_ops(&t("t3"), &ops(json!([{"op": "get", "key": long_key}])))
            .unwrap();
        let e = kv
            .prepare_ops(&t("t4"), &ops(json!([{"op": "get", "key": long_key}])))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("conflict: key `kkk"), "{e}");
        assert!(e.len() < 200, "{} bytes", e.len());
        // A refused operation's parse error is cut where it is made.
        let r = kv
            .prepare(
                &t("t5"),
                &json!({"operations": [{"op": "add", "key": "x", "delta": big}]}),
            )
            .now_or_never()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(r.len() <= bound::REASON_MAX_BYTES, "{} bytes", r.len());
    }

    #[test]
    fn bad_operations_are_refused_with_reasons_naming_the_field() {
        for (bad, reason) in [
            (
                json!({"operations": [{"op": "explode", "key": "a"}]}),
                "invalid_payload: operation 0: unknown variant `explode`, expected one of `get`, `put`, `delete`, `add`",
            ),
            (
                json!({"operations": [{"op": "get", "key": "a"}, {"op": "put", "key": "b"}]}),
                "invalid_payload: operation 1: missing field `value`",
            ),
            (
                json!({"operations": [{"op": "put", "key": "a", "vaule": 1}]}),
                "invalid_payload: operation 0: unknown field `vaule`, expected one of `key`, `value`, `expect`",
            ),
            (
                json!({"operations": [{"op": "add", "key": "a", "delta": "5"}]}),
                "invalid_payload: operation 0: invalid type: string \"5\", expected i64",
            ),
            (
                json!({"operations": [{"key": "a"}]}),
                "invalid_payload: operation 0: missing field `op`",
            ),
            (
                json!({"operations": [["get", "a"]]}),
                "invalid_payload: operation 0: an array of 2 items is not an operation; write an object such as {\"op\": \"get\", \"key\": \"k\"}",
            ),
            (
                json!({"operations": [{"op": "put", "key": "", "value": 1}]}),
                "invalid_payload: operation 0: `key` must be 1..=1024 bytes, not 0",
            ),
        ] {
            assert_eq!(
                KvStore::parse_ops(&bad).map_err(|e| e.to_string()),
                Err(reason.to_string()),
                "{bad}"
            );
        }
        // The shape of the data as a whole (see `operations_of`).
        for bad in [
            Value::Null,
            json!({}),
            json!({"operations": []}),
            json!({"operation": [{"op": "get", "key": "a"}]}),
            json!({"operations": {"a": 1}}),
            json!([1, 2]),
        ] {
            let e = KvStore::parse_ops(&bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid_payload: "), "{e}");
        }
    }

    #[test]
    fn data_that_is_not_operations_is_voted_down_not_committed_as_nothing() {
        let mut kv = seeded();
        for (i, data) in [
            json!({"operation": {"op": "put", "key": "alice", "value": 0}}),
            json!({"operations": []}),
            Value::Null,
        ]
        .iter()
        .enumerate()
        {
            let e = kv
                .prepare(&t(&format!("t{i}")), data)
                .now_or_never()
                .unwrap()
                .unwrap_err();
            assert!(matches!(e, ResourceError::Invalid(_)), "{e:?}");
            assert!(e.to_string().starts_with("invalid_payload: "), "{e}");
        }
        assert_eq!(kv.status()["prepared"], 0, "nothing held");
    }

    #[test]
    fn a_commit_whose_writes_are_not_held_is_a_heuristic_hazard() {
        let mut kv = seeded();
        kv.prepare_ops(
            &t("t1"),
            &ops(json!([{"op": "put", "key": "bob", "value": 9}])),
        )
        .unwrap();
        let finish = |kv: &mut KvStore, txn: &str, d| kv.finish(&t(txn), d).now_or_never().unwrap();
        assert_eq!(finish(&mut kv, "t1", Decision::Commit), Ok(()));
        assert_eq!(kv.get("bob"), Some(&json!(9)));
        // Never prepared here, or lost: nothing to apply, and no telling.
        let h = finish(&mut kv, "t2", Decision::Commit).unwrap_err();
        assert_eq!(h.kind, HeuristicKind::Hazard);
        assert!(h.detail.contains("`t2`"), "{h}");
        // An abort of a transaction not held is ordinary (it never prepared).
        assert_eq!(finish(&mut kv, "t3", Decision::Abort), Ok(()));
    }

    #[test]
    fn a_snapshot_never_drops_a_prepared_transactions_writes() {
        // A checkpoint whose `Prepared` records were lost after its snapshot
        // (or a snapshot replayed after the prepare): the prepared writes
        // and locks stay until the transaction's own decision.
        let mut kv = seeded();
        let (p1, _) = kv
            .prepare_ops(
                &t("t1"),
                &ops(json!([{"op": "add", "key": "alice", "delta": 40}])),
            )
            .unwrap();
        let log = vec![
            Record::Prepared {
                txn: t("t1"),
                participants: vec![],
                state: serde_json::to_value(&p1).unwrap(),
            },
            Record::Snapshot {
                state: seeded().dump(),
                merge: false,
            },
        ];
        let mut r = KvStore::new();
        r.replay(&log).unwrap();
        assert_eq!(
            r.status(),
            json!({"keys": 3, "locked_keys": 1, "prepared": 1})
        );
        r.finish_txn(&t("t1"), Decision::Commit);
        assert_eq!(r.get("alice"), Some(&json!(140)));
    }

    #[test]
    fn replay_rebuilds_from_snapshot_prepares_and_decisions() {
        let mut kv = seeded();
        let (p1, _) = kv
            .prepare_ops(
                &t("t1"),
                &ops(json!([{"op": "add", "key": "alice", "delta": 1}])),
            )
            .unwrap();
        let (p2, _) = kv
            .prepare_ops(
                &t("t2"),
                &ops(json!([{"op": "put", "key": "bob", "value": 9}])),
            )
            .unwrap();
        let snap = KvStore::new().dump();
        let log = vec![
            Record::Snapshot {
                state: seeded().dump(),
                merge: false,
            },
            Record::Prepared {
                txn: t("t1"),
                participants: vec![],
                state: serde_json::to_value(&p1).unwrap(),
            },
            Record::Prepared {
                txn: t("t2"),
                participants: vec![],
                state: serde_json::to_value(&p2).unwrap(),
            },
            Record::Decided {
                txn: t("t1"),
                decision: Decision::Commit,
                heuristic: None,
            },
        ];
        assert_eq!(snap, json!({}));
        let mut r = KvStore::new();
        r.replay(&log).unwrap();
        assert_eq!(r.get("alice"), Some(&json!(101)));
        assert_eq!(r.get("bob"), Some(&json!(5)), "t2 is still in doubt");
        assert!(r.locks.contains_key("bob"), "in-doubt keys stay locked");
        r.finish_txn(&t("t2"), Decision::Commit);
        assert_eq!(r.get("bob"), Some(&json!(9)));
    }
}

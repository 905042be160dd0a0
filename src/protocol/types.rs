//! Small value types that give the protocol's strings and booleans a meaning.
//!
//! Nothing here performs IO; every type is plain data that serialises to the
//! wire and log formats documented in `docs/PROTOCOL.md`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifier of one distributed transaction, chosen by the coordinator.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TxnId(pub String);

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for TxnId {
    fn from(s: &str) -> Self {
        TxnId(s.to_string())
    }
}

/// Durable identity of a participant. Connections come and go; the id stays.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ParticipantId(pub String);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ParticipantId {
    fn from(s: &str) -> Self {
        ParticipantId(s.to_string())
    }
}

/// Runtime handle for one TCP connection. Only the runtime allocates these;
/// the cores use them to address replies, never to identify a participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConnId(pub u64);

/// A participant's answer to PREPARE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vote {
    Commit,
    Abort,
}

/// The coordinator's outcome for a transaction. Once taken it never changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Commit,
    Abort,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Commit => "commit",
            Decision::Abort => "abort",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Vote {
    pub fn as_str(self) -> &'static str {
        match self {
            Vote::Commit => "commit",
            Vote::Abort => "abort",
        }
    }
}

/// Milliseconds on a monotonic clock owned by the runtime. The cores never
/// read a clock; every event that needs time carries one of these.
pub type Millis = u64;

/// Protocol version spoken by this build; `hello` must carry it.
pub const PROTOCOL_VERSION: u32 = 1;

//! What operators read of a participant on its admin port: its status,
//! the list of transactions it knows (filtered by state, newest first, one
//! bounded page), one transaction in detail, and whether a transaction may
//! be resolved by hand. Each view is a typed struct built from the core's
//! state (never changing it) and serialised as the JSON that tools and
//! documentation read, so the exact JSON is pinned by tests.
//!
//! The runtime adds its own figures to the status (log statistics, the
//! resource's status, the coordinator's address), gates operator
//! connections with their hello, and performs a resolve as an event.

use super::{PState, PTxn, Participant};
use crate::protocol::coordinator::TXN_STATES;
use crate::protocol::heuristic::Heuristic;
use crate::protocol::message::{ErrorCode, WireError};
use crate::protocol::page::{txn_list_page, PageLimits};
use crate::protocol::types::{Millis, ParticipantId, TxnId, Vote};
use serde::Serialize;

/// One transaction as a participant's operator sees it.
#[derive(Debug, PartialEq, Serialize)]
pub struct TxnView<'a> {
    pub transaction_id: &'a TxnId,
    pub state: &'static str,
    pub participants: &'a [ParticipantId],
    pub vote: Option<Vote>,
    pub reason: Option<&'a str>,
    pub heuristic: Option<&'a str>,
    /// Present when the decision was not carried out as decided here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heuristic_outcome: Option<&'a Heuristic>,
    pub age_ms: Millis,
    pub queries: u32,
}

/// A participant's `status`: who it is, whether it is registered, its
/// counts and what it holds in doubt. The runtime adds its own figures.
#[derive(Debug, PartialEq, Serialize)]
pub struct StatusView<'a> {
    pub id: &'a ParticipantId,
    /// Registered with the coordinator (welcomed on a live connection).
    pub connected: bool,
    pub committed: u64,
    pub aborted: u64,
    pub in_doubt: Vec<TxnView<'a>>,
}

/// An operator's question on the admin port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminQuery<'q> {
    Status,
    /// `txn list`: `state` is one of [`TXN_STATES`] or none for all; a
    /// page of at most `limit` entries after `cursor` (from an earlier
    /// reply's `next`), within `page`.
    TxnList {
        state: Option<&'q str>,
        limit: Option<u64>,
        cursor: Option<&'q str>,
        page: PageLimits,
    },
    /// `txn show`.
    TxnShow {
        txn: &'q TxnId,
    },
}

/// The answer to an [`AdminQuery`].
#[derive(Debug, PartialEq)]
pub enum AdminReply<'a> {
    Status(StatusView<'a>),
    /// `{total, transactions, next}`: [`TxnView`]s, paged.
    TxnList(serde_json::Value),
    Txn(TxnView<'a>),
    /// The question cannot be answered; the error says why and what to ask.
    Refused(WireError),
}

impl PTxn {
    /// The operator's view of this transaction (`txn list`, `txn show`).
    pub fn view<'a>(&'a self, id: &'a TxnId, now: Millis) -> TxnView<'a> {
        TxnView {
            transaction_id: id,
            state: self.state.as_str(),
            participants: &self.participants,
            vote: self.vote,
            reason: self.reason.as_deref(),
            heuristic: self.heuristic.as_deref(),
            heuristic_outcome: self.heuristic_outcome.as_ref(),
            age_ms: now.saturating_sub(self.since_ms),
            queries: self.queries,
        }
    }
}

/// Does a participant-side transaction match an operator's `--state`
/// filter? `heuristic`: decided by an operator, or not carried out as
/// decided.
fn state_matches(t: &PTxn, filter: &str) -> bool {
    if filter == "heuristic" {
        return t.heuristic.is_some() || t.heuristic_outcome.is_some();
    }
    matches!(
        (t.state, filter),
        (PState::Preparing, "in-flight")
            | (PState::Prepared, "in-doubt")
            | (PState::Committed, "committed")
            | (PState::Aborted, "aborted")
    )
}

fn unknown(txn: &TxnId) -> WireError {
    WireError::new(
        ErrorCode::UnknownTransaction,
        format!("transaction `{txn}` is not known to this participant"),
    )
}

impl Participant {
    /// Answer an operator's question at `now`.
    pub fn admin(&self, now: Millis, query: AdminQuery<'_>) -> AdminReply<'_> {
        match query {
            AdminQuery::Status => AdminReply::Status(self.status_view(now)),
            AdminQuery::TxnList {
                state,
                limit,
                cursor,
                page,
            } => match state {
                Some(st) if !TXN_STATES.contains(&st) => AdminReply::Refused(WireError::new(
                    ErrorCode::InvalidMessage,
                    format!("unknown state `{st}`; use one of {}", TXN_STATES.join(", ")),
                )),
                _ => match self.txn_list(now, state, limit, cursor, page) {
                    Ok(list) => AdminReply::TxnList(list),
                    Err(e) => AdminReply::Refused(e),
                },
            },
            AdminQuery::TxnShow { txn } => match self.txns.get_key_value(txn) {
                Some((id, t)) => AdminReply::Txn(t.view(id, now)),
                None => AdminReply::Refused(unknown(txn)),
            },
        }
    }

    /// Whether an operator may decide `txn` by hand: only a transaction in
    /// doubt can be resolved. The same rule refuses an `Event::Resolve`.
    pub fn check_resolve(&self, txn: &TxnId) -> Result<(), WireError> {
        match self.txns.get(txn).map(|t| t.state) {
            Some(PState::Prepared) => Ok(()),
            Some(s) => Err(WireError::new(
                ErrorCode::Refused,
                format!(
                    "transaction `{txn}` is {}, not in doubt; nothing to resolve",
                    s.as_str()
                ),
            )),
            None => Err(unknown(txn)),
        }
    }

    /// The participant's view for `status`, at `now`.
    pub fn status_view(&self, now: Millis) -> StatusView<'_> {
        let mut in_doubt: Vec<(&TxnId, &PTxn)> = self
            .txns
            .iter()
            .filter(|(_, t)| t.state == PState::Prepared)
            .collect();
        in_doubt.sort_by(|a, b| a.0.cmp(b.0));
        StatusView {
            id: &self.opts.id,
            connected: self.connected(),
            committed: self.committed,
            aborted: self.aborted,
            in_doubt: in_doubt
                .into_iter()
                .map(|(id, t)| t.view(id, now))
                .collect(),
        }
    }

    /// `txn list`: the transactions in `state` (all when none), newest
    /// change first (ties by id), the page `limit` and `cursor` ask for.
    fn txn_list(
        &self,
        now: Millis,
        state: Option<&str>,
        limit: Option<u64>,
        cursor: Option<&str>,
        page: PageLimits,
    ) -> Result<serde_json::Value, WireError> {
        let v = self
            .txns
            .iter()
            .filter(|(_, t)| state.is_none_or(|st| state_matches(t, st)))
            .map(|(id, t)| (t.since_ms, id.0.as_str(), (id, t)));
        txn_list_page(v, limit, cursor, page, |(id, t)| {
            serde_json::to_value(t.view(id, now)).unwrap_or_default()
        })
        .map_err(|e| WireError::new(ErrorCode::InvalidMessage, e.message))
    }
}

//! Membership: who is in the cluster. Participants register with a hello
//! (and the cluster becomes ready once enough have), are given up when they
//! fall silent, leave when their connection closes, and are removed by an
//! operator. What their departure means for a transaction that waits on
//! them is decided in [`super::txn`]; this file only says who is gone.

use super::views::{to_json, RemovalReport};
use super::{reject, send, ClusterState, Coordinator, Peer};
use super::{Txn, TxnPhase};
use crate::protocol::message::{Body, ErrorCode, Role};
use crate::protocol::record::Action;
use crate::protocol::stats::AbortCause;
use crate::protocol::timeline::Step;
use crate::protocol::types::{ConnId, Decision, Millis, ParticipantId, TxnId, PROTOCOL_VERSION};
use std::collections::BTreeMap;

/// What the coordinator knows about one registered participant.
#[derive(Clone, Debug)]
pub struct Member {
    /// The connection it is registered on, if connected.
    pub conn: Option<ConnId>,
    pub last_heartbeat_ms: Millis,
    /// When it registered on its current connection.
    pub joined_ms: Millis,
    /// It joined a cluster that was already ready (dynamic joining) and
    /// has not taken part in a transaction yet: it is not counted among
    /// "every registered participant" before `join_grace_ms`, and it is
    /// forgotten when it goes away.
    pub newcomer: bool,
}

impl Member {
    /// Is it in the participant set of a submit that names none?
    pub(super) fn counts_by_default(&self, now: Millis, grace_ms: u64) -> bool {
        !self.newcomer || (self.conn.is_some() && now >= self.joined_ms.saturating_add(grace_ms))
    }
}

impl Coordinator {
    pub fn members(&self) -> &BTreeMap<ParticipantId, Member> {
        &self.members
    }

    pub(super) fn on_hello(
        &mut self,
        conn: ConnId,
        role: Role,
        id: Option<ParticipantId>,
        version: u32,
        out: &mut Vec<Action>,
    ) {
        if version != PROTOCOL_VERSION {
            return reject(
                out,
                conn,
                ErrorCode::UnsupportedVersion,
                format!("protocol_version {version} is not supported; this coordinator speaks {PROTOCOL_VERSION}"),
                true,
            );
        }
        match role {
            Role::Client => {
                self.peers.insert(conn, Peer::Client);
                let state = self.state.as_str().to_string();
                send(out, conn, Body::Welcome { state }, false);
            }
            Role::Participant => {
                let Some(id) = id.filter(|i| valid_participant_id(&i.0)) else {
                    return reject(
                        out,
                        conn,
                        ErrorCode::InvalidMessage,
                        "participant hello needs an `id` of 1-64 characters from [A-Za-z0-9_.-]",
                        true,
                    );
                };
                self.register(conn, id, out);
            }
        }
    }

    pub(super) fn register(&mut self, conn: ConnId, id: ParticipantId, out: &mut Vec<Action>) {
        if let Some(m) = self.members.get(&id) {
            if m.conn.is_some() {
                return reject(
                    out,
                    conn,
                    ErrorCode::DuplicateParticipant,
                    format!("participant id `{id}` is already connected; ids must be unique (retry after the old connection closes)"),
                    true,
                );
            }
        } else if self.state == ClusterState::Ready
            && !self.opts.dynamic_joining
            && !self.owed_to(&id)
        {
            return reject(
                out,
                conn,
                ErrorCode::MembershipClosed,
                format!(
                    "participant `{id}` is not a member and the cluster is complete ({} participants); set enable_dynamic_joining: true to allow joins",
                    self.members.len()
                ),
                true,
            );
        }
        // A returning member keeps its standing; a new id joining a ready
        // cluster is a newcomer until it takes part in a transaction (one
        // that a recovered decision is owed to has taken part already).
        let newcomer = match self.members.get(&id) {
            Some(m) => m.newcomer,
            None => self.state == ClusterState::Ready && !self.owed_to(&id),
        };
        self.members.insert(
            id.clone(),
            Member {
                conn: Some(conn),
                last_heartbeat_ms: self.now,
                joined_ms: self.now,
                newcomer,
            },
        );
        self.peers.insert(conn, Peer::Participant(id.clone()));
        if self.state == ClusterState::WaitingForParticipants
            && self.members.len() >= self.opts.expected_participants
        {
            self.state = ClusterState::Ready;
        }
        let state = self.state.as_str().to_string();
        send(out, conn, Body::Welcome { state }, false);
        // Give a returning participant every decision it has not acknowledged.
        let owed: Vec<&Txn> = self
            .active
            .values()
            .filter(|t| {
                t.decision.is_some() && t.participants.contains(&id) && !t.acks.contains(&id)
            })
            .collect();
        let mut owed: Vec<(TxnId, Decision)> = owed
            .into_iter()
            .filter_map(|t| Some((t.id.clone(), t.decision?)))
            .collect();
        owed.sort_by(|a, b| a.0.cmp(&b.0));
        for (txn, d) in owed {
            self.note_decision_sent(&txn, &id, d, true);
            send(out, conn, Body::decision(txn, d), true);
        }
        if self.state == ClusterState::Ready {
            self.start_pending(out);
        }
    }

    /// Does an unended transaction (for example one recovered from the log)
    /// still owe `id` its decision? Such a participant may always register,
    /// even when membership is closed.
    pub(super) fn owed_to(&self, id: &ParticipantId) -> bool {
        self.active
            .values()
            .any(|t| t.decision.is_some() && t.participants.contains(id) && !t.acks.contains(id))
    }

    /// Operator: forget a member. Refused while any transaction still
    /// needs it (undecided, or decided and not acknowledged by it): those
    /// would be left waiting for a participant nobody may bring back.
    pub(super) fn on_remove(&mut self, conn: ConnId, id: ParticipantId, out: &mut Vec<Action>) {
        if !self.members.contains_key(&id) {
            let msg = format!(
                "participant `{id}` is not registered; registered: {}",
                self.member_list()
            );
            return reject(out, conn, ErrorCode::UnknownParticipant, msg, false);
        }
        // An abort needs no acknowledgement to be safe (presumed abort: a
        // participant that comes back in doubt is told abort), so only
        // undecided and committed transactions keep a member.
        let mut needed: Vec<&TxnId> = self
            .active
            .values()
            .filter(|t| {
                t.participants.contains(&id)
                    && !t.acks.contains(&id)
                    && t.decision != Some(Decision::Abort)
            })
            .map(|t| &t.id)
            .collect();
        if !needed.is_empty() {
            needed.sort();
            let total = needed.len();
            let shown: Vec<&str> = needed.iter().take(20).map(|t| t.0.as_str()).collect();
            let msg = format!(
                "participant `{id}` is still needed by {total} transaction(s): {}{}; wait for them to end or resolve them (twopc txn list --state in-doubt), then remove it",
                shown.join(", "),
                if total > shown.len() { ", ..." } else { "" }
            );
            return reject(out, conn, ErrorCode::Refused, msg, false);
        }
        if let Some(c) = self.members.remove(&id).and_then(|m| m.conn) {
            self.peers.remove(&c);
            reject(
                out,
                c,
                ErrorCode::MembershipClosed,
                format!("`{id}` was removed from the cluster by an operator"),
                true,
            );
        }
        // Aborted transactions that waited only for its ACK end now.
        let mut waiting: Vec<TxnId> = self
            .active
            .values()
            .filter(|t| t.participants.contains(&id) && !t.acks.contains(&id))
            .map(|t| t.id.clone())
            .collect();
        waiting.sort();
        for txn in waiting {
            if let Some(t) = self.active.get_mut(&txn) {
                t.acks.insert(id.clone());
                t.errors.insert(
                    id.clone(),
                    "removed by an operator before acknowledging".into(),
                );
            }
            self.maybe_end(&txn, out);
        }
        let report = RemovalReport {
            status: self.status_report(),
            removed: id,
        };
        send(out, conn, Body::StatusReport(to_json(&report)), false);
    }

    pub(super) fn on_disconnect(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        let Some(peer) = self.peers.remove(&conn) else {
            return;
        };
        match peer {
            Peer::Client => {
                for t in self.active.values_mut() {
                    if t.waiter.as_ref().is_some_and(|w| w.conn == conn) {
                        t.waiter = None;
                    }
                }
                self.pending.retain(|(w, _, _)| w.conn != conn);
            }
            Peer::Participant(p) => {
                let reason = format!("participant_disconnected: {p}");
                let cause = AbortCause::ParticipantDisconnected;
                self.participant_gone(conn, p, cause, reason, out);
            }
        }
    }

    /// `p`'s connection `conn` is gone (closed, or given up for silence):
    /// what waits for its vote aborts with `reason`; decided transactions
    /// wait for it to come back and acknowledge.
    pub(super) fn participant_gone(
        &mut self,
        conn: ConnId,
        p: ParticipantId,
        cause: AbortCause,
        reason: String,
        out: &mut Vec<Action>,
    ) {
        if let Some(m) = self.members.get_mut(&p) {
            if m.conn == Some(conn) {
                m.conn = None;
                if m.newcomer {
                    // It never took part: nothing waits for it, and keeping
                    // it would make every submit without named participants
                    // abort until an operator removed it.
                    self.members.remove(&p);
                    return;
                }
            }
        }
        let what = match cause {
            AbortCause::ParticipantUnavailable => "given up for missed heartbeats",
            _ => "disconnected",
        };
        let now = self.now;
        for t in self.active.values_mut() {
            if !t.participants.contains(&p) || t.acks.contains(&p) {
                continue;
            }
            t.timeline.record(
                now,
                Step::Disconnected {
                    participant: p.clone(),
                },
            );
            if t.decision.is_some() {
                t.errors
                    .insert(p.clone(), format!("{what} before acknowledging"));
                t.last_error = Some(format!("participant {p} {what} before acknowledging"));
            } else if !t.votes.contains_key(&p) {
                t.errors.insert(p.clone(), format!("{what} before voting"));
            }
        }
        let mut victims: Vec<TxnId> = self
            .active
            .values()
            .filter(|t| {
                t.phase == TxnPhase::PreparePhase
                    && t.participants.contains(&p)
                    && !t.votes.contains_key(&p)
            })
            .map(|t| t.id.clone())
            .collect();
        victims.sort();
        for id in victims {
            self.decide(&id, Decision::Abort, Some(cause), reason.clone(), out);
        }
    }

    /// Participants silent for longer than the liveness timeout are given
    /// up: their connection is closed (they reconnect if they are alive)
    /// and what waits for their vote aborts now with `participant_unavailable`
    /// instead of at the vote deadline.
    pub(super) fn check_liveness(&mut self, out: &mut Vec<Action>) {
        let now = self.now;
        let limit = self.opts.liveness_timeout_ms;
        let silent: Vec<(ParticipantId, ConnId, Millis)> = self
            .members
            .iter()
            .filter_map(|(p, m)| {
                let age = now.saturating_sub(m.last_heartbeat_ms);
                m.conn.filter(|_| age > limit).map(|c| (p.clone(), c, age))
            })
            .collect();
        for (p, conn, age) in silent {
            self.peers.remove(&conn);
            reject(
                out,
                conn,
                ErrorCode::ParticipantUnavailable,
                format!("no heartbeat from `{p}` for {age} ms (liveness timeout {limit} ms); closing the connection, reconnect to register again"),
                true,
            );
            let reason = format!("participant_unavailable: no heartbeat from {p} for {age} ms");
            let cause = AbortCause::ParticipantUnavailable;
            self.participant_gone(conn, p, cause, reason, out);
        }
    }

    pub(super) fn member_list(&self) -> String {
        let v: Vec<&str> = self.members.keys().map(|p| p.0.as_str()).collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }
}

/// Participant ids are short and printable so they can appear in logs, file
/// names and PostgreSQL gids.
pub fn valid_participant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

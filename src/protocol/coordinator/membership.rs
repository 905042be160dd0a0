//! Membership: who is in the cluster. Participants register with a hello
//! (and the cluster becomes ready once enough have), are given up when they
//! fall silent, leave when their connection closes, and are removed by an
//! operator. What their departure means for a transaction that waits on
//! them is decided in [`super::txn`]; this file only says who is gone.
//!
//! Membership is logged: a participant that becomes a member (`Joined`) and
//! an operator's removal (`Removed`, with the number of participants the
//! cluster expects from then on), so that a restarted coordinator knows
//! whom it expects. Each change is told to operators as a notice.

use super::views::{to_json, RemovalReport};
use super::{reject, send, ClusterState, Coordinator, Peer};
use super::{Txn, TxnPhase};
use crate::protocol::message::{Body, ErrorCode, Role};
use crate::protocol::record::{Action, Record};
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
    /// It registered since this coordinator started (a member known only
    /// from the log has not yet): readiness counts these.
    pub seen: bool,
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
                send(out, conn, Body::Welcome { state, term: None }, false);
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
        let closed = self.state == ClusterState::Ready && !self.opts.dynamic_joining;
        if closed && self.removed.contains(&id) && !self.members.contains_key(&id) {
            return reject(
                out,
                conn,
                ErrorCode::Removed,
                format!("participant `{id}` was removed from the cluster by an operator and may not register again while membership is closed (enable_dynamic_joining: true lets it rejoin); stop it"),
                true,
            );
        }
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
        let known = self.members.get(&id);
        let newcomer = match known {
            Some(m) => m.newcomer,
            None => self.state == ClusterState::Ready && !self.owed_to(&id),
        };
        let message = match known {
            None if newcomer => "joined the ready cluster (a newcomer until it takes part in a transaction or stays past join_grace_ms)".to_string(),
            None => "registered (a new member)".to_string(),
            Some(m) if m.seen => "registered again (returned)".to_string(),
            Some(_) => "registered (a member known from the log)".to_string(),
        };
        let is_new_member = known.is_none() && !newcomer;
        self.members.insert(
            id.clone(),
            Member {
                conn: Some(conn),
                last_heartbeat_ms: self.now,
                joined_ms: self.now,
                newcomer,
                seen: true,
            },
        );
        self.peers.insert(conn, Peer::Participant(id.clone()));
        if is_new_member {
            self.log_joined(&id, out);
        }
        notice(out, Some(conn), format!("participant {id} {message}"));
        self.check_ready(out);
        let state = self.state.as_str().to_string();
        send(out, conn, Body::Welcome { state, term: None }, false);
        // Give a returning participant every decision it has not acknowledged.
        let owed: Vec<&Txn> = self
            .active
            .values()
            .filter(|t| {
                t.decision.is_some() && t.participants.contains(&id) && !t.acks.contains(&id)
            })
            .map(|t| &**t)
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

    /// Participants registered since the start (readiness counts these).
    pub fn registered_count(&self) -> usize {
        self.members.values().filter(|m| m.seen).count()
    }

    /// How many participants the cluster expects: `expected_participants`,
    /// less those an operator removed from the ready cluster.
    pub fn expected(&self) -> usize {
        self.expected
    }

    /// Ready once enough participants have registered.
    pub(super) fn check_ready(&mut self, out: &mut Vec<Action>) {
        if self.state == ClusterState::WaitingForParticipants
            && self.registered_count() >= self.expected
        {
            self.state = ClusterState::Ready;
            let message = format!(
                "cluster READY: {} of {} expected participants registered ({})",
                self.registered_count(),
                self.expected,
                self.member_list()
            );
            notice(out, None, message);
        }
    }

    /// `id` is a full member from now on: logged, so that a restarted
    /// coordinator expects it.
    pub(super) fn log_joined(&mut self, id: &ParticipantId, out: &mut Vec<Action>) {
        self.removed.remove(id);
        out.push(Action::Persist {
            record: Record::Joined {
                participant: id.clone(),
            },
            sync: false,
        });
    }

    /// The membership as log records, for a checkpoint: every member that
    /// is not a newcomer, then every removal still remembered.
    pub(super) fn membership_records(&self) -> Vec<Record> {
        let joined = self
            .members
            .iter()
            .filter(|(_, m)| !m.newcomer)
            .map(|(id, _)| Record::Joined {
                participant: id.clone(),
            });
        let removed = self.removed.iter().map(|id| Record::Removed {
            participant: id.clone(),
            expected: self.expected,
        });
        joined.chain(removed).collect()
    }

    /// Recovery: `id` is a member, not connected yet.
    pub(super) fn recover_member(&mut self, id: &ParticipantId) {
        self.removed.remove(id);
        self.members.entry(id.clone()).or_insert(Member {
            conn: None,
            last_heartbeat_ms: self.now,
            joined_ms: self.now,
            newcomer: false,
            seen: false,
        });
    }

    /// Recovery: `id` was removed, and the cluster expects `expected`.
    pub(super) fn recover_removal(&mut self, id: &ParticipantId, expected: usize) {
        self.members.remove(id);
        self.removed.insert(id.clone());
        self.expected = expected;
        if self.expected == 0 {
            self.state = ClusterState::Ready;
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
    pub(super) fn on_remove(
        &mut self,
        conn: ConnId,
        id: ParticipantId,
        force: bool,
        out: &mut Vec<Action>,
    ) {
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
        if self.members[&id].conn.is_some() && !force {
            let msg = format!(
                "participant `{id}` is connected; stop it first, or remove it with --force, which tells it to stop"
            );
            return reject(out, conn, ErrorCode::Refused, msg, false);
        }
        if let Some(c) = self.members.remove(&id).and_then(|m| m.conn) {
            self.peers.remove(&c);
            reject(
                out,
                c,
                ErrorCode::Removed,
                format!(
                    "`{id}` was removed from the cluster by an operator; stop this participant"
                ),
                true,
            );
        }
        // The ready cluster now expects one participant fewer (a cluster
        // still waiting keeps waiting for its expected number).
        if self.state == ClusterState::Ready {
            self.expected = self.expected.min(self.members.len());
        }
        self.removed.insert(id.clone());
        out.push(Action::Persist {
            record: Record::Removed {
                participant: id.clone(),
                expected: self.expected,
            },
            sync: true,
        });
        self.forced_emitted += 1;
        notice(
            out,
            None,
            format!(
                "participant {id} removed by an operator{}; the cluster expects {} participant(s)",
                if force {
                    " (forced, while connected)"
                } else {
                    ""
                },
                self.expected
            ),
        );
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
        // Answered once the removal is in the log.
        send(out, conn, Body::StatusReport(to_json(&report)), true);
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
                let what = match cause {
                    AbortCause::ParticipantUnavailable => "lost (silent past the liveness timeout)",
                    _ => "lost (connection closed)",
                };
                notice(out, Some(conn), format!("participant {p} {what}"));
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

/// Tell operators, at info level.
fn notice(out: &mut Vec<Action>, conn: Option<ConnId>, message: String) {
    out.push(Action::Notice { conn, message });
}

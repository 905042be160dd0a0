//! Time in the coordinator: vote deadlines, decision resends with capped
//! doubling backoff, and submits queued until the cluster is ready (and
//! refused when they wait too long). Time is only what `handle` is given:
//! nothing here reads a clock.

use super::txn::Waiter;
use super::{refuse, send, ClusterState, Coordinator};
use crate::protocol::message::{Body, ErrorCode, SubmitRequest};
use crate::protocol::record::Action;
use crate::protocol::stats::AbortCause;
use crate::protocol::timeline::Step;
use crate::protocol::types::{ConnId, Decision, TxnId};

impl Coordinator {
    pub(super) fn start_pending(&mut self, out: &mut Vec<Action>) {
        while let Some((w, req, _)) = self.pending.pop_front() {
            self.start_txn(w, req, out);
        }
    }

    pub(super) fn on_submit(&mut self, conn: ConnId, req: SubmitRequest, out: &mut Vec<Action>) {
        let waiter = Waiter {
            conn,
            request_id: req.request_id,
        };
        if self.state != ClusterState::Ready {
            if self.pending.len() >= self.opts.max_pending_submits {
                return refuse(
                    out,
                    &waiter,
                    ErrorCode::Overloaded,
                    "too many submits are waiting for participants to register; retry later",
                );
            }
            let deadline = self.now + self.opts.vote_timeout_ms;
            self.pending.push_back((waiter, req, deadline));
            return;
        }
        self.start_txn(waiter, req, out);
    }

    pub(super) fn on_tick(&mut self, out: &mut Vec<Action>) {
        self.check_liveness(out);
        let now = self.now;
        // Submits that waited too long for the cluster to become ready.
        while self.pending.front().is_some_and(|(_, _, d)| *d <= now) {
            if let Some((w, _, _)) = self.pending.pop_front() {
                refuse(
                    out,
                    &w,
                    ErrorCode::NotReady,
                    format!(
                        "coordinator is {} ({} of {} participants registered); start the missing participants",
                        self.state.as_str(),
                        self.registered_count(),
                        self.expected
                    ),
                );
            }
        }
        let mut expired: Vec<TxnId> = Vec::new();
        let mut resend: Vec<(TxnId, Decision, Vec<ConnId>)> = Vec::new();
        for t in self.active.values_mut() {
            match t.decision {
                None if t.deadline_ms <= now => expired.push(t.id.clone()),
                None => {}
                Some(d) if t.next_resend_ms <= now => {
                    let mut conns: Vec<ConnId> = Vec::new();
                    for p in t.participants.iter().filter(|p| !t.acks.contains(*p)) {
                        t.errors.insert(p.clone(), "no acknowledgement yet".into());
                        if let Some(c) = self.members.get(p).and_then(|m| m.conn) {
                            conns.push(c);
                            t.timeline.record_after_log(
                                now,
                                Step::Decision {
                                    to: p.clone(),
                                    decision: d,
                                    resend: true,
                                },
                            );
                        }
                    }
                    t.resend_backoff_ms = (t.resend_backoff_ms * 2)
                        .clamp(self.opts.resend_initial_ms, self.opts.resend_max_ms);
                    t.next_resend_ms = now + t.resend_backoff_ms;
                    let missing: Vec<&str> = t
                        .participants
                        .iter()
                        .filter(|p| !t.acks.contains(*p))
                        .map(|p| p.0.as_str())
                        .collect();
                    t.last_error = Some(format!("no ack yet from {}", missing.join(", ")));
                    if !conns.is_empty() {
                        t.retries += 1;
                        self.stats.resends += conns.len() as u64;
                        resend.push((t.id.clone(), d, conns));
                    }
                }
                Some(_) => {}
            }
        }
        expired.sort();
        for id in expired {
            let mut missing: Vec<String> = Vec::new();
            if let Some(t) = self.active.get_mut(&id) {
                for p in t.participants.iter().filter(|p| !t.votes.contains_key(*p)) {
                    t.errors
                        .insert(p.clone(), "no vote before the deadline".into());
                    missing.push(p.0.clone());
                }
            }
            self.decide(
                &id,
                Decision::Abort,
                Some(AbortCause::VoteTimeout),
                format!("vote_timeout: no vote from {}", missing.join(", ")),
                out,
            );
        }
        resend.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, d, conns) in resend {
            for c in conns {
                send(out, c, Body::decision(id.clone(), d), d == Decision::Commit);
            }
        }
    }
}

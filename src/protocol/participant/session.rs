//! The participant's session with its coordinator: a hello on every new
//! connection, the first `welcome` taken as registration, nothing else let
//! into the protocol before it, heartbeats while registered, and the
//! connection given up when the coordinator has been silent too long.
//!
//! Pure, like the rest of the core: the transport's events come in (a
//! connection opened or gone, every message on it, ticks with the time),
//! and what to do comes out as actions: messages to send, a connection to
//! close, and [`SessionNotice`]s for the operator's log. It never opens a
//! connection: dialling and redialling are the runtime's.

use crate::protocol::message::{Body, ErrorCode, Role, WireCode, WireError};
use crate::protocol::record::{Action, Record};
use crate::protocol::types::{ConnId, Millis, ParticipantId, PROTOCOL_VERSION};

/// Where the participant stands with its coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Link {
    /// No connection.
    Down,
    /// Connected on `conn` and hello sent; no `welcome` yet, so nothing
    /// from the coordinator reaches the protocol and nothing is sent.
    Greeting { conn: ConnId },
    /// Welcomed on `conn`: votes, acknowledgements, queries and heartbeats
    /// go out on it.
    Registered { conn: ConnId },
}

impl Link {
    /// The current connection, welcomed or not.
    pub fn conn(self) -> Option<ConnId> {
        match self {
            Link::Down => None,
            Link::Greeting { conn } | Link::Registered { conn } => Some(conn),
        }
    }

    /// The connection the protocol may send on: only a welcomed one.
    pub fn registered(self) -> Option<ConnId> {
        match self {
            Link::Registered { conn } => Some(conn),
            Link::Down | Link::Greeting { .. } => None,
        }
    }
}

/// Something that happened to the session, for the operator's log (the
/// runtime also tells readiness and its redialling from it). None of them
/// needs an answer from the runtime.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionNotice {
    /// The coordinator welcomed this participant: registered, ready to vote.
    Registered { coordinator_state: String },
    /// An `error` before `welcome`: the coordinator refused the
    /// registration (it closes the connection itself).
    Refused { code: WireCode, message: String },
    /// A `challenge` before `welcome`: the coordinator requires the shared
    /// secret and the connection did not prove it. The connection is closed.
    SecretRequired,
    /// Another message before `welcome`; ignored.
    BeforeWelcome { message_type: &'static str },
    /// Nothing heard from the coordinator for `silent_ms`, more than
    /// `limit_ms` (heartbeat interval × failure threshold). The connection
    /// is closed.
    Silent { silent_ms: u64, limit_ms: u64 },
    /// The welcomed connection is gone.
    Lost,
    /// A `welcome`, `prepare` or decision (`message_type`) from a
    /// coordinator group member leading in `term`, older than `seen`, a term
    /// another member already led in: a deposed leader that has not noticed
    /// yet. Refused (a `welcome` silently, the others with a `not_leader`
    /// error); the connection is closed.
    StaleTerm {
        term: u64,
        seen: u64,
        message_type: &'static str,
    },
    /// The coordinator said this participant was removed from the cluster
    /// by an operator (error `removed`, before or after `welcome`): it must
    /// stop and not register again. The connection is closed.
    Removed { message: String },
}

/// The session's timing, from [`super::ParticipantOptions`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Timing {
    /// Milliseconds between heartbeats; the silence check runs at the same
    /// beat. `u64::MAX` never beats.
    pub interval_ms: u64,
    /// Beats without a word from the coordinator before it counts as gone.
    pub failure_threshold: u32,
}

impl Timing {
    /// How long the coordinator may be silent.
    fn limit_ms(self) -> u64 {
        self.interval_ms
            .saturating_mul(u64::from(self.failure_threshold.max(1)))
    }
}

/// What [`Session::admit`] made of a message.
pub(super) enum Admitted {
    /// A protocol message on the welcomed connection: for the core.
    Protocol(Body),
    /// The `welcome` that registered this participant just now.
    Welcomed,
    /// Handled here (before welcome, or with no connection).
    Handled,
}

/// The session state. See the module documentation.
#[derive(Debug)]
pub(super) struct Session {
    link: Link,
    /// When anything last came from the coordinator on the current
    /// connection.
    last_heard_ms: Millis,
    /// When the next heartbeat (and silence check) is due. Beats keep
    /// their own rhythm from start, whatever the connections do, so that
    /// they go out at one per interval however often ticks come.
    next_beat_ms: Millis,
    /// The highest leader term a welcome, prepare or decision carried
    /// (coordinator groups); those from older terms are refused. Logged
    /// (`term` records) when it rises, so a restart keeps it.
    seen_term: u64,
}

impl Session {
    pub fn new(now: Millis, timing: Timing) -> Session {
        Session {
            link: Link::Down,
            seen_term: 0,
            last_heard_ms: now,
            next_beat_ms: now.saturating_add(timing.interval_ms),
        }
    }

    pub fn link(&self) -> Link {
        self.link
    }

    /// The highest leader term seen (0: none).
    pub fn seen_term(&self) -> u64 {
        self.seen_term
    }

    /// Take up the highest term seen before a restart (from the log).
    pub fn restore_term(&mut self, term: u64) {
        self.seen_term = self.seen_term.max(term);
    }

    /// Fence by the leader's term `body` carries, if any: false when it is
    /// older than one seen (the notice and, unless `silently`, a
    /// `not_leader` error go out, and the connection is closed); a newer
    /// term is logged before anything the message leads to.
    fn fence(&mut self, conn: ConnId, body: &Body, silently: bool, out: &mut Vec<Action>) -> bool {
        let Some(term) = body.term() else {
            return true;
        };
        if term < self.seen_term {
            let message_type = body.message_type();
            out.push(Action::Session(SessionNotice::StaleTerm {
                term,
                seen: self.seen_term,
                message_type,
            }));
            if silently {
                out.push(Action::Close { conn });
            } else {
                out.push(Action::Reject {
                    conn,
                    error: WireError::new(
                        ErrorCode::NotLeader,
                        format!(
                            "`{message_type}` refused: it comes from term {term}, but this participant \
                             has seen term {}, led by another member; this member was deposed",
                            self.seen_term
                        ),
                    ),
                    close: true,
                });
            }
            return false;
        }
        if term > self.seen_term {
            self.seen_term = term;
            // Not forced: it precedes in the log every record written
            // under this term, and whatever forces those forces it too.
            out.push(Action::Persist {
                record: Record::Term { term },
                sync: false,
            });
        }
        true
    }

    /// A connection opened: say hello on it. One opened before the last
    /// one was reported gone replaces it.
    pub fn up(&mut self, now: Millis, conn: ConnId, id: &ParticipantId, out: &mut Vec<Action>) {
        self.link = Link::Greeting { conn };
        self.last_heard_ms = now;
        out.push(Action::Send {
            conn,
            body: Body::Hello {
                role: Role::Participant,
                id: Some(id.clone()),
                protocol_version: PROTOCOL_VERSION,
            },
            after_durable: false,
        });
    }

    /// The connection is gone.
    pub fn down(&mut self, out: &mut Vec<Action>) {
        if let Link::Registered { .. } = self.link {
            out.push(Action::Session(SessionNotice::Lost));
        }
        self.link = Link::Down;
    }

    /// A message from the coordinator: let it into the protocol only once
    /// welcomed. Anything heard counts against silence.
    pub fn admit(&mut self, now: Millis, body: Body, out: &mut Vec<Action>) -> Admitted {
        let conn = match self.link {
            Link::Down => return Admitted::Handled,
            Link::Registered { conn } | Link::Greeting { conn } => conn,
        };
        if let Body::Error { code, message, .. } = &body {
            if code.known() == Some(ErrorCode::Removed) {
                out.push(Action::Session(SessionNotice::Removed {
                    message: message.clone(),
                }));
                out.push(Action::Close { conn });
                return Admitted::Handled;
            }
        }
        if let Link::Registered { .. } = self.link {
            self.last_heard_ms = now;
            if !self.fence(conn, &body, false, out) {
                return Admitted::Handled;
            }
            return Admitted::Protocol(body);
        }
        self.last_heard_ms = now;
        let notice = match body {
            Body::Welcome { .. } if !self.fence(conn, &body, true, out) => {
                return Admitted::Handled;
            }
            Body::Welcome { state, .. } => {
                self.link = Link::Registered { conn };
                out.push(Action::Session(SessionNotice::Registered {
                    coordinator_state: state,
                }));
                return Admitted::Welcomed;
            }
            Body::Error { code, message, .. } => SessionNotice::Refused { code, message },
            Body::Challenge { .. } => {
                out.push(Action::Session(SessionNotice::SecretRequired));
                out.push(Action::Close { conn });
                return Admitted::Handled;
            }
            other => SessionNotice::BeforeWelcome {
                message_type: other.message_type(),
            },
        };
        out.push(Action::Session(notice));
        Admitted::Handled
    }

    /// Time passed: on the beat, a heartbeat on the welcomed connection,
    /// or its close when the coordinator has been silent too long.
    pub fn tick(&mut self, now: Millis, timing: Timing, out: &mut Vec<Action>) {
        if now < self.next_beat_ms {
            return;
        }
        // One beat per interval; beats missed (a stalled process) are not
        // made up for.
        self.next_beat_ms = self.next_beat_ms.saturating_add(timing.interval_ms);
        if self.next_beat_ms <= now {
            self.next_beat_ms = now.saturating_add(timing.interval_ms);
        }
        let Link::Registered { conn } = self.link else {
            return;
        };
        let silent_ms = now.saturating_sub(self.last_heard_ms);
        let limit_ms = timing.limit_ms();
        if silent_ms > limit_ms {
            out.push(Action::Session(SessionNotice::Silent {
                silent_ms,
                limit_ms,
            }));
            out.push(Action::Close { conn });
        } else {
            out.push(Action::Send {
                conn,
                body: Body::Heartbeat,
                after_durable: false,
            });
        }
    }
}

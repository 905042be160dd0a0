//! The connecting side: keep one connection to a server open, redialling
//! with [`Backoff`] after each loss. Each connection runs as a
//! [`connection`](super::connection) whose events go to the owner's loop;
//! the owner says when a connection is gone (it may close one itself, for
//! a silent server) and when one proved good (the backoff starts over).
//! What is said on the connection is the owner's business, not this
//! module's.
//!
//! The server may be a replicated group of which only the leader serves:
//! the connector knows every member's address and tries them in turn, and
//! the owner, told by a member where the leader is, says so with
//! [`Redial::redirect`] before closing that connection. Which address to
//! dial next, and whether to wait first, is decided by [`Targets`], a pure
//! state machine.

use super::backoff::Backoff;
use super::connection::{spawn_connection, ConnEvent, ConnSpec, Side};
use super::stream;
use crate::protocol::{ConnId, Role};
use crate::security::auth::{self, PeerHandshake, Secret};
use crate::security::tls::TlsClient;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Milliseconds between two rounds of a coordinator group's members at
/// most, whatever the backoff has grown to.
const GROUP_ROUND_MAX_MS: u64 = 200;

/// Dial attempts that fail in a row between two warnings in the log.
const WARN_EVERY_ATTEMPTS: u32 = 20;

/// Where to connect and how.
pub struct ConnectorSpec {
    /// What the server is, for the log (`coordinator`).
    pub server: &'static str,
    /// `host:port` of each member of the server, in the order to try them;
    /// one for a server that is not replicated. Never empty.
    pub addrs: Vec<String>,
    /// TLS to the server, when configured.
    pub tls: Option<TlsClient>,
    /// Bounds opening the connection (TCP and TLS) and, separately, the
    /// handshake on it: the server answers a hello at once, so a silent
    /// one is not worth waiting for.
    pub handshake_timeout: Duration,
    /// With a secret, each connection answers the server's challenge to the
    /// hello the owner sends as `role` and `id`.
    pub secret: Option<Arc<Secret>>,
    pub role: Role,
    pub id: Option<String>,
    pub max_frame_bytes: usize,
    pub send_buffer_max_bytes: usize,
    /// Delay between dial attempts.
    pub backoff: Backoff,
}

/// What the owner shares with its connector.
#[derive(Clone, Default)]
pub struct Redial {
    /// Notified by the owner when its connection is gone: dial again.
    pub lost: Arc<Notify>,
    /// Attempts since the last good connection; the owner resets it to 0
    /// once a connection proved good, so the next loss redials quickly.
    pub attempts: Arc<AtomicU32>,
    /// Set with `attempts` reset: the connection proved good, so the
    /// connector starts its round of members over when it ends.
    proved_good: Arc<AtomicBool>,
    /// Where a member said the leader is: dialled next, once. A plain
    /// mutex: held for a copy, never across an await.
    leader_hint: Arc<Mutex<Option<String>>>,
}

impl Redial {
    /// The connection proved good: the next loss starts the backoff over.
    pub fn succeeded(&self) {
        self.attempts.store(0, Ordering::Relaxed);
        self.proved_good.store(true, Ordering::Relaxed);
    }

    /// The owner's connection is gone: dial again (after the backoff).
    pub fn connection_lost(&self) {
        self.lost.notify_one();
    }

    /// A member named `addr` as the leader: the next dial goes there, at
    /// once. The owner says so before closing the connection that told it.
    pub fn redirect(&self, addr: String) {
        *self.hint() = Some(addr);
    }

    /// The leader hint, taken: each redirect is dialled once.
    fn take_hint(&self) -> Option<String> {
        self.hint().take()
    }

    fn has_hint(&self) -> bool {
        self.hint().is_some()
    }

    fn hint(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A poisoned hint is still a hint (an Option<String> cannot be
        // left half-written).
        self.leader_hint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One dial [`Targets`] chose: where, and whether a member named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dial {
    pub addr: String,
    /// Named as the leader by a member ([`Redial::redirect`]), not taken
    /// from the list.
    pub redirect: bool,
}

/// How a dial ended, as far as choosing the next one goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// No connection (refused, unreachable, TLS failed, timed out).
    Failed,
    /// A connection that the owner closed or lost before it proved good
    /// (a member that is not the leader, a refused registration).
    Closed,
    /// A connection that proved good ([`Redial::succeeded`]), then ended.
    Lost,
}

/// Which member to dial next, and when. Pure: no clock, no sockets.
///
/// The list is tried in order, each failure moving on at once to the next
/// member; only a whole round of the list without a good connection waits
/// the backoff. A member named as the leader is dialled at once, without
/// growing the backoff, but at most [`Targets::hops_max`] times in a row
/// (members that name each other after a lost election must not spin the
/// connector). A connection that proved good is dialled again first after
/// it ends, after the backoff's first (short) delay, as with one address
/// (unless it ended naming a new leader, which is dialled at once).
#[derive(Clone, Debug)]
pub struct Targets {
    addrs: Vec<String>,
    /// Index in `addrs` of the next member to dial from the list.
    next: usize,
    /// Members of the list dialled since the last wait.
    tried: usize,
    /// Leaders dialled on a member's word since the last wait.
    hops: usize,
    /// The address of a connection that proved good, to dial again first.
    again: Option<String>,
}

impl Targets {
    /// `addrs` in the order to try them; not empty.
    pub fn new(addrs: Vec<String>) -> Targets {
        assert!(!addrs.is_empty(), "a connector needs an address to dial");
        Targets {
            addrs,
            next: 0,
            tried: 0,
            hops: 0,
            again: None,
        }
    }

    /// Redirects followed in a row before the backoff applies: twice the
    /// list, and two more.
    pub fn hops_max(&self) -> usize {
        2 * self.addrs.len() + 2
    }

    /// The dial to make now: the leader a member named (`hint`), else the
    /// address that last proved good, else the next member of the list.
    pub fn choose(&mut self, hint: Option<String>) -> Dial {
        if let Some(addr) = hint {
            return Dial {
                addr,
                redirect: true,
            };
        }
        if let Some(addr) = self.again.take() {
            return Dial {
                addr,
                redirect: false,
            };
        }
        Dial {
            addr: self.addrs[self.next].clone(),
            redirect: false,
        }
    }

    /// `dial` ended as `ended`; `hint_pending` when a member named a leader
    /// meanwhile. Returns true when the connector should wait the backoff
    /// before its next dial.
    pub fn ended(&mut self, dial: &Dial, ended: Ended, hint_pending: bool) -> bool {
        if ended == Ended::Lost {
            // A good connection starts everything over; a leader that
            // stepped down and named its successor is followed at once.
            self.tried = 0;
            self.hops = 0;
            if self.addrs.len() == 1 {
                self.again = Some(dial.addr.clone());
                return !hint_pending;
            }
            // In a group the member that was lost is most likely dead or
            // deposed: ask the next one at once (it names the leader, which
            // may well be the same member again).
            if let Some(i) = self.addrs.iter().position(|a| *a == dial.addr) {
                self.next = (i + 1) % self.addrs.len();
            }
            return false;
        }
        if dial.redirect {
            self.hops += 1;
        } else if self.addrs.get(self.next) == Some(&dial.addr) {
            self.next = (self.next + 1) % self.addrs.len();
            self.tried += 1;
        }
        let wait = if hint_pending {
            self.hops >= self.hops_max()
        } else {
            self.tried >= self.addrs.len()
        };
        if wait {
            self.tried = 0;
            self.hops = 0;
        }
        wait
    }
}

/// Keep (re)connecting until `shutdown`. Connection ids count up from 1.
pub async fn run(
    spec: ConnectorSpec,
    events: mpsc::Sender<ConnEvent>,
    redial: Redial,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut next_conn = 1u64;
    let mut targets = Targets::new(spec.addrs.clone());
    loop {
        let dial = targets.choose(redial.take_hint());
        let connected = crate::sim::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(spec.handshake_timeout, stream::connect(&dial.addr, spec.tls.as_ref())) => match r {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no connection within handshake_timeout_ms ({} ms)", spec.handshake_timeout.as_millis())),
            },
        };
        let ended = match connected {
            Ok(stream) => {
                let conn = ConnId(next_conn);
                next_conn += 1;
                let handshake = spec.secret.clone().map(|k| {
                    PeerHandshake::new(k, spec.role, spec.id.as_deref(), auth::fresh_nonce())
                });
                let conn_spec = ConnSpec {
                    conn,
                    peer: dial.addr.clone(),
                    max_frame_bytes: spec.max_frame_bytes,
                    first_frame_timeout: spec.handshake_timeout,
                    slot: None,
                    side: Side::Client(handshake),
                    errors: None,
                    send_buffer_max_bytes: spec.send_buffer_max_bytes,
                    query_in_flight_max: 0,
                };
                redial.proved_good.store(false, Ordering::Relaxed);
                spawn_connection(stream, conn_spec, events.clone(), &tracker);
                crate::sim::select! {
                    _ = shutdown.cancelled() => return,
                    _ = redial.lost.notified() => {}
                }
                match redial.proved_good.swap(false, Ordering::Relaxed) {
                    true => Ended::Lost,
                    false => Ended::Closed,
                }
            }
            Err(e) => {
                let n = redial.attempts.load(Ordering::Relaxed);
                if n.is_multiple_of(WARN_EVERY_ATTEMPTS) {
                    let named = if dial.redirect {
                        " (named as the leader)"
                    } else {
                        ""
                    };
                    tracing::warn!(
                        "cannot reach {} at {}{named}: {e}; retrying",
                        spec.server,
                        dial.addr
                    );
                }
                Ended::Failed
            }
        };
        if !targets.ended(&dial, ended, redial.has_hint()) {
            continue;
        }
        let n = redial.attempts.fetch_add(1, Ordering::Relaxed);
        let mut delay = spec.backoff.delay_ms(n);
        if spec.addrs.len() > 1 {
            // A group elects a new leader within a second or so: keep
            // asking its members often enough to find it soon after.
            delay = delay.min(GROUP_ROUND_MAX_MS);
        }
        crate::sim::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(addrs: &[&str]) -> Targets {
        Targets::new(addrs.iter().map(|a| a.to_string()).collect())
    }

    /// Dial from the list (or as told), end as `ended`: the address dialled
    /// and whether the connector then waits.
    fn step(t: &mut Targets, hint: Option<&str>, ended: Ended, hint_after: bool) -> (String, bool) {
        let dial = t.choose(hint.map(str::to_string));
        let wait = t.ended(&dial, ended, hint_after);
        (dial.addr, wait)
    }

    #[test]
    fn one_address_waits_after_every_failure_as_before() {
        let mut t = targets(&["a:1"]);
        for ended in [Ended::Failed, Ended::Closed, Ended::Failed, Ended::Lost] {
            assert_eq!(step(&mut t, None, ended, false), ("a:1".into(), true));
        }
    }

    #[test]
    fn a_failure_moves_on_at_once_and_a_whole_round_waits() {
        let mut t = targets(&["a:1", "b:2", "c:3"]);
        let seen: Vec<(String, bool)> = (0..7)
            .map(|_| step(&mut t, None, Ended::Failed, false))
            .collect();
        let want = [
            ("a:1", false),
            ("b:2", false),
            ("c:3", true),
            ("a:1", false),
            ("b:2", false),
            ("c:3", true),
            ("a:1", false),
        ];
        let want: Vec<(String, bool)> = want.iter().map(|(a, w)| (a.to_string(), *w)).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn a_named_leader_is_dialled_at_once_and_a_failed_one_falls_back_to_the_list() {
        let mut t = targets(&["a:1", "b:2", "c:3"]);
        // a is not the leader and names c: dial c at once.
        assert_eq!(
            step(&mut t, None, Ended::Closed, true),
            ("a:1".into(), false)
        );
        // c is down: the list goes on with b, at once.
        assert_eq!(
            step(&mut t, Some("c:3"), Ended::Failed, false),
            ("c:3".into(), false)
        );
        assert_eq!(
            step(&mut t, None, Ended::Failed, false),
            ("b:2".into(), false)
        );
        // c again from the list: the round of three is over, wait.
        assert_eq!(
            step(&mut t, None, Ended::Failed, false),
            ("c:3".into(), true)
        );
        assert_eq!(t.choose(None).addr, "a:1");
    }

    #[test]
    fn a_leader_not_in_the_list_is_followed_and_dialled_again_after_a_loss() {
        let mut t = targets(&["a:1"]);
        assert_eq!(
            step(&mut t, None, Ended::Closed, true),
            ("a:1".into(), false)
        );
        // The named leader proved good, then the connection was lost: wait
        // (the backoff starts over), then dial it again first.
        assert_eq!(
            step(&mut t, Some("z:9"), Ended::Lost, false),
            ("z:9".into(), true)
        );
        assert_eq!(
            step(&mut t, None, Ended::Failed, false),
            ("z:9".into(), false)
        );
        // Gone: back to the list, whose round starts over.
        assert_eq!(
            step(&mut t, None, Ended::Failed, false),
            ("a:1".into(), true)
        );
    }

    #[test]
    fn a_good_connection_that_ends_naming_a_new_leader_goes_there_at_once() {
        let mut t = targets(&["a:1", "b:2"]);
        assert_eq!(step(&mut t, None, Ended::Lost, true), ("a:1".into(), false));
        assert_eq!(
            step(&mut t, Some("b:2"), Ended::Failed, false),
            ("b:2".into(), false)
        );
        // The new leader is not up yet: the list, from the member after
        // the lost one, and a wait after a whole round.
        assert_eq!(
            step(&mut t, None, Ended::Failed, false),
            ("b:2".into(), false)
        );
        assert_eq!(
            step(&mut t, None, Ended::Failed, false),
            ("a:1".into(), true)
        );
    }

    #[test]
    fn in_a_group_a_lost_leader_is_not_dialled_again_first() {
        let mut t = targets(&["a:1", "b:2", "c:3"]);
        assert_eq!(
            step(&mut t, None, Ended::Failed, false),
            ("a:1".into(), false)
        );
        // b led, and was killed: c next, at once.
        assert_eq!(
            step(&mut t, None, Ended::Lost, false),
            ("b:2".into(), false)
        );
        assert_eq!(
            step(&mut t, None, Ended::Failed, false),
            ("c:3".into(), false)
        );
    }

    #[test]
    fn members_naming_each_other_are_followed_a_bounded_number_of_times() {
        let mut t = targets(&["a:1", "b:2"]);
        assert_eq!(t.hops_max(), 6);
        let mut waits = Vec::new();
        let mut hint = None;
        for _ in 0..14 {
            let (addr, wait) = step(&mut t, hint, Ended::Closed, true);
            waits.push(wait);
            hint = Some(if addr == "a:1" { "b:2" } else { "a:1" });
        }
        // The first dial is from the list; then six redirects in a row, the
        // sixth waits; then six more.
        let want = [
            false, false, false, false, false, false, true, false, false, false, false, false,
            true, false,
        ];
        assert_eq!(waits, want);
    }
}

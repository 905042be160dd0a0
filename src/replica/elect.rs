//! When a member stands for election: a timer of the group's own instead
//! of openraft's.
//!
//! openraft 0.9, where this timer began, draws a member's random election timeout once, when Raft
//! starts, and looks at it only on its tick (every 1.5 heartbeats). Two
//! members whose first candidacies collide (a split vote: each votes for
//! itself) then collide again in every following round, at the same
//! offsets, until scheduling noise separates them, and a leader's loss
//! could take several rounds to repair. Raft's answer is a fresh random
//! timeout for every round, which this timer does:
//!
//! - A member that has a leader (its vote is committed) stands when it has
//!   heard nothing from it for the leader lease (1.5 election timeouts, the
//!   time during which the others still refuse to vote, as openraft counts
//!   it) plus a random 1 to 1.5 election timeouts.
//! - A member without one (after a candidacy that won no majority, or a
//!   vote for a candidate that did not win) stands again after a random 1
//!   to 1.5 election timeouts from its last vote.
//! - Every candidacy draws anew, and the timer wakes at the deadline
//!   itself, not on a tick.
//! - A member whose candidacy a member with a longer log refused stands
//!   back for two leases more before its next one (as openraft does):
//!   it cannot win, and every candidacy of its takes a term the members
//!   that can win then cannot use. Without it a lagging member that fires
//!   first every round keeps the others from electing anyone.
//!
//! The time of the last vote change or leader contact is openraft's own
//! (`vote_last_modified`), the one its leader lease is counted from; a
//! time from before this timer started (openraft dates the vote it reads
//! back at start from then) counts as nothing heard.
//! openraft's own elections are switched off (`enable_elect: false`); a
//! leader or a member that is not a voter ignores the trigger.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The timer's settings, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub election_timeout_ms: u64,
    /// Followers refuse to vote this long after their leader's last word.
    pub lease_ms: u64,
}

impl Timing {
    /// The extra wait after a longer log refused this member's candidacy.
    fn stand_back(self) -> Duration {
        Duration::from_millis(self.lease_ms * 2)
    }

    /// A fresh random wait for one round: 1 to 1.5 election timeouts.
    fn draw(self) -> Duration {
        let t = self.election_timeout_ms;
        Duration::from_millis(crate::sim::random_range(t, t + t / 2))
    }

    /// How long after `since` (the vote's last change) a member stands.
    fn wait(self, committed: bool, draw: Duration) -> Duration {
        match committed {
            true => Duration::from_millis(self.lease_ms) + draw,
            false => draw,
        }
    }
}

/// Run the timer until `shutdown` or until Raft stops. `greater_log` is
/// set by the network when a vote reply shows a longer log than this
/// member's.
pub async fn drive(
    raft: super::RaftNode,
    timing: Timing,
    greater_log: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut draw = timing.draw();
    let mut last_vote = None;
    let mut tried: Option<tokio::time::Instant> = None;
    let started = tokio::time::Instant::now();
    loop {
        let state = raft
            .with_raft_state(|st| {
                (
                    *st.vote_ref(),
                    st.vote_last_modified(),
                    st.server_state == openraft::ServerState::Leader,
                )
            })
            .await;
        let Ok((vote, since, leader)) = state else {
            return; // Raft stopped.
        };
        // Another round (a new term, a new leader): a new draw.
        if last_vote.as_ref() != Some(&vote) {
            draw = timing.draw();
            last_vote = Some(vote);
        }
        // A leader heard from: whatever this member lacked, it gets.
        if vote.is_committed() {
            greater_log.store(false, Ordering::Relaxed);
        }
        let now = tokio::time::Instant::now();
        // openraft's instant, as tokio's. What it set while starting (the
        // vote read back from the log) counts as nothing heard: this
        // member's Raft port was not open yet.
        let since = since
            .map(|s| now - openraft::Instant::elapsed(&s))
            .filter(|s| *s > started);
        let mut deadline = match (leader, since) {
            // A leader's own watch decides when it stops leading; look again
            // an election timeout later.
            (true, _) => now + Duration::from_millis(timing.election_timeout_ms),
            (false, Some(since)) => since + timing.wait(vote.is_committed(), draw),
            // Nothing heard since start: a full round first.
            (false, None) => started + timing.wait(true, draw),
        };
        // At most one try per draw, whatever the trigger made of it (a
        // member that is not a voter ignores it, and its vote stays).
        if let Some(tried) = tried {
            deadline = deadline.max(tried + draw);
        }
        if greater_log.load(Ordering::Relaxed) {
            deadline += timing.stand_back();
        }
        if deadline <= now {
            greater_log.store(false, Ordering::Relaxed);
            if raft.trigger().elect(false).await.is_err() {
                return;
            }
            tried = Some(now);
            // The candidacy changes the vote, and the next round draws anew.
            last_vote = None;
            continue;
        }
        crate::sim::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_waits_the_lease_and_a_draw_a_candidate_only_a_draw() {
        let t = Timing {
            election_timeout_ms: 300,
            lease_ms: 450,
        };
        for _ in 0..200 {
            let d = t.draw();
            assert!((300..=450).contains(&d.as_millis()), "{d:?}");
            assert_eq!(t.wait(false, d), d);
            assert_eq!(t.wait(true, d), d + Duration::from_millis(450));
        }
        let draws: std::collections::HashSet<_> = (0..50).map(|_| t.draw()).collect();
        assert!(draws.len() > 10, "draws do not vary: {draws:?}");
    }
}

//! The one retry delay of the crate: capped exponential backoff with "equal
//! jitter" (half fixed, half random), so that peers cut off together do
//! not retry together. Used for reconnecting to the coordinator and for a
//! resource's retries against its database. A pure function of its inputs
//! and a random draw; it never sleeps.

/// A capped exponential backoff: attempt `n` waits about
/// `initial_ms * 2^n`, at most `max_ms`, never less than 1 ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
}

impl Backoff {
    /// The upper bound of attempt `attempt`'s delay, before jitter.
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        self.initial_ms
            .saturating_mul(1u64 << attempt.min(20))
            .min(self.max_ms)
            .max(1)
    }

    /// The delay before retry number `attempt` (0 for the first): half of
    /// [`Backoff::ceiling_ms`] fixed, the other half drawn at random.
    pub fn delay_ms(&self, attempt: u32) -> u64 {
        let exp = self.ceiling_ms(attempt);
        exp / 2 + crate::sim::random_range(0, exp / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_from_initial_up_to_the_cap() {
        let b = Backoff {
            initial_ms: 100,
            max_ms: 1_000,
        };
        let ceilings: Vec<u64> = (0..6).map(|n| b.ceiling_ms(n)).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1_000, 1_000]);
        // Huge attempt counts neither overflow nor pass the cap.
        assert_eq!(b.ceiling_ms(u32::MAX), 1_000);
        let zero = Backoff {
            initial_ms: 0,
            max_ms: 0,
        };
        assert_eq!(zero.ceiling_ms(3), 1);
    }

    #[test]
    fn a_delay_is_between_half_the_ceiling_and_the_ceiling() {
        let b = Backoff {
            initial_ms: 50,
            max_ms: 5_000,
        };
        for attempt in 0..12 {
            let c = b.ceiling_ms(attempt);
            for _ in 0..50 {
                let d = b.delay_ms(attempt);
                assert!(
                    (c / 2..=c).contains(&d),
                    "attempt {attempt}: {d} not in [{}, {c}]",
                    c / 2
                );
            }
        }
    }
}

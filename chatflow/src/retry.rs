//! Exponential backoff, the one way every retry loop here waits (on `backon`'s schedule).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Waits that double from `min` up to `max`, without end; [`Backoff::reset`] after a success.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    current: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// Doubling waits from `min` to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self::from_builder(
            ExponentialBuilder::new()
                .with_min_delay(min)
                .with_max_delay(max)
                .without_max_times(),
            max,
        )
    }

    /// Like [`Backoff::new`], each wait stretched by up to itself again at random, so clients
    /// that failed together do not retry together.
    pub fn jittered(min: Duration, max: Duration) -> Self {
        Self::from_builder(
            ExponentialBuilder::new()
                .with_min_delay(min)
                .with_max_delay(max)
                .with_jitter()
                .without_max_times(),
            max,
        )
    }

    fn from_builder(builder: ExponentialBuilder, max: Duration) -> Self {
        Backoff {
            current: builder.build(),
            builder,
            max,
        }
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        self.current.next().unwrap_or(self.max)
    }

    /// Starts again from the shortest wait.
    pub fn reset(&mut self) {
        self.current = self.builder.build();
    }

    /// The `n`th wait (0-based) of a fresh schedule, for retries counted by attempt.
    pub fn nth(&self, n: u32) -> Duration {
        let mut fresh = self.builder.build();
        fresh.nth(n as usize).unwrap_or(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_longest_and_start_over_after_a_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let waits: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
        assert_eq!(b.nth(2).as_millis(), 400);
    }

    #[test]
    fn jittered_waits_stay_between_the_wait_and_twice_it() {
        let ms = Duration::from_millis;
        let mut b = Backoff::jittered(ms(100), ms(400));
        for base in [100, 200, 400, 400] {
            let w = b.next_delay();
            assert!(w >= ms(base) && w <= ms(2 * base), "{w:?} for {base} ms");
        }
    }
}

//! The retry schedule: exponential backoff with jitter, capped, with a limit on attempts and
//! on age. The `backoff` crate computes the delays; it sits behind this one type so it can be
//! swapped for `backon` in one place.

use std::time::Duration;

use backoff::backoff::Backoff;
use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub max_attempts: u32,
    pub max_age: Duration,
    /// How often a pending capture's outcome is polled.
    pub pending_poll: Duration,
}

impl RetryPolicy {
    /// The delay before attempt `attempts + 1`: initial × 2^(attempts−1), capped, with ±50 %
    /// jitter so that many captures failing together do not retry together.
    pub fn delay(&self, attempts: i32) -> Duration {
        let mut b = backoff::ExponentialBackoff {
            initial_interval: self.initial,
            current_interval: self.initial,
            randomization_factor: 0.5,
            multiplier: 2.0,
            max_interval: self.max,
            max_elapsed_time: None,
            ..backoff::ExponentialBackoff::default()
        };
        let mut d = self.initial;
        for _ in 0..attempts.clamp(1, 32) {
            d = b.next_backoff().unwrap_or(self.max);
        }
        d.min(self.max)
    }

    /// Whether a capture has used up its attempts or its time.
    pub fn exhausted(
        &self,
        attempts: i32,
        first_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> bool {
        let age = (now - first_attempt_at).to_std().unwrap_or(Duration::ZERO);
        attempts >= i32::try_from(self.max_attempts).unwrap_or(i32::MAX) || age >= self.max_age
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_and_stay_under_the_cap() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            max_attempts: 5,
            max_age: Duration::from_secs(60),
            pending_poll: Duration::from_secs(1),
        };
        let d1 = p.delay(1);
        assert!(
            d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(150),
            "{d1:?}"
        );
        let d4 = p.delay(4);
        assert!(
            d4 >= Duration::from_millis(400) && d4 <= Duration::from_millis(1200),
            "{d4:?}"
        );
        assert!(p.delay(30) <= Duration::from_secs(2));
        let now = Utc::now();
        assert!(p.exhausted(5, now, now));
        assert!(!p.exhausted(4, now, now));
        assert!(p.exhausted(1, now - chrono::Duration::seconds(61), now));
    }
}

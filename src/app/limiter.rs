//! How many provider calls to have in flight at once, per provider, adapted to what the
//! provider shows: a pure state machine. It has no clock and does no I/O; the caller feeds it
//! one observation per finished call (how long the call took, how it ended, how many calls
//! were in flight) and reads [`AdaptiveLimit::limit`].
//!
//! The approach is that of Vector's adaptive request concurrency
//! (<https://vector.dev/docs/architecture/arc/>, "Adaptive Request Concurrency") and
//! Netflix's concurrency-limits (<https://github.com/Netflix/concurrency-limits>, its AIMD
//! and gradient limits): additive increase while the provider's latency holds and calls
//! succeed, multiplicative decrease when it pushes back.
//!
//! - Observations are grouped in windows of `limit` calls (about one round trip's worth when
//!   the limit is in use). At the end of a window whose calls all succeeded:
//!   - its mean latency above the long-term latency × 3/2 + a slack (10 ms by default):
//!     latency is rising, the provider is queueing; the limit shrinks by a tenth;
//!   - otherwise, if the window saw the limit reached (calls were waiting for a slot), the
//!     limit grows by √limit (at least 1): fast from a small start, gentle near the top;
//!   - otherwise (the limit is not what binds) it stays.
//!
//!   The long-term latency follows the windows' means with weight 1/10.
//! - A call the provider refused for load (HTTP 429, 503) or that timed out halves the limit
//!   at once. The calls already in flight at the old limit may answer the same; they do not
//!   halve it again until as many calls as the old limit have finished.
//! - Other failures (a refused connection, a 500, a decline) say nothing about load: they are
//!   not counted.
//!
//! The limit stays within [`LimitSettings::min`] and [`LimitSettings::max`].

use std::time::Duration;

/// Bounds and start of an [`AdaptiveLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// The limit never goes below this (at least 1); it starts here.
    pub min: usize,
    /// The limit never goes above this.
    pub max: usize,
    /// Latency rises only when a window's mean exceeds the long-term latency × 3/2 plus this:
    /// jitter of a few milliseconds on a fast provider is not a trend.
    pub slack: Duration,
}

impl LimitSettings {
    pub fn new(min: usize, max: usize) -> LimitSettings {
        let min = min.max(1);
        LimitSettings {
            min,
            max: max.max(min),
            slack: Duration::from_millis(10),
        }
    }
}

/// How a provider call ended, as far as load is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The provider answered in time (whatever it answered: a decline is an answer).
    Answered,
    /// The provider refused the call for load: HTTP 429 or 503.
    Overloaded,
    /// No answer within the timeout.
    TimedOut,
    /// Failed in a way that says nothing about load (connection refused, a 500…).
    Failed,
}

/// What an observation did to the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    Grew {
        from: usize,
        to: usize,
    },
    /// Latency rose.
    Shrank {
        from: usize,
        to: usize,
    },
    /// The provider pushed back (429, 503, timeout).
    Halved {
        from: usize,
        to: usize,
    },
}

/// The limit of calls in flight for one provider.
#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    settings: LimitSettings,
    limit: usize,
    /// Long-term mean latency, microseconds; `None` before the first window ends.
    baseline_us: Option<u64>,
    window: Window,
    /// Calls still to finish before push-back may halve the limit again.
    grace: usize,
}

#[derive(Debug, Clone, Default)]
struct Window {
    calls: usize,
    latency_sum_us: u64,
    reached_limit: bool,
    pushed_back: bool,
}

/// Weight of a window's mean in the long-term latency: 1/10.
const BASELINE_WEIGHT: u64 = 10;

impl AdaptiveLimit {
    pub fn new(settings: LimitSettings) -> AdaptiveLimit {
        let settings = LimitSettings::new(settings.min, settings.max).with_slack(settings.slack);
        AdaptiveLimit {
            settings,
            limit: settings.min,
            baseline_us: None,
            window: Window::default(),
            grace: 0,
        }
    }

    /// Calls that may be in flight now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The long-term latency, once known.
    pub fn baseline(&self) -> Option<Duration> {
        self.baseline_us.map(Duration::from_micros)
    }

    /// One finished call: how long it took, how it ended, and how many calls were in flight
    /// when it started (itself included).
    pub fn observe(&mut self, latency: Duration, outcome: CallOutcome, in_flight: usize) -> Change {
        self.grace = self.grace.saturating_sub(1);
        match outcome {
            CallOutcome::Failed => Change::Unchanged,
            CallOutcome::Overloaded | CallOutcome::TimedOut => {
                self.window.pushed_back = true;
                if self.grace > 0 {
                    return Change::Unchanged;
                }
                let from = self.limit;
                self.limit = (from / 2).max(self.settings.min);
                self.grace = from;
                self.window = Window::default();
                if self.limit == from {
                    Change::Unchanged
                } else {
                    Change::Halved {
                        from,
                        to: self.limit,
                    }
                }
            }
            CallOutcome::Answered => {
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.window.calls += 1;
                self.window.latency_sum_us = self.window.latency_sum_us.saturating_add(us);
                self.window.reached_limit |= in_flight >= self.limit;
                if self.window.calls < self.limit {
                    return Change::Unchanged;
                }
                self.end_window()
            }
        }
    }

    fn end_window(&mut self) -> Change {
        let window = std::mem::take(&mut self.window);
        let mean = window.latency_sum_us / window.calls.max(1) as u64;
        let baseline = self.baseline_us.unwrap_or(mean);
        self.baseline_us = Some(if mean >= baseline {
            baseline + (mean - baseline) / BASELINE_WEIGHT
        } else {
            baseline - (baseline - mean) / BASELINE_WEIGHT
        });
        let from = self.limit;
        if window.pushed_back {
            return Change::Unchanged;
        }
        let slack = u64::try_from(self.settings.slack.as_micros()).unwrap_or(u64::MAX);
        let tolerated = baseline
            .saturating_mul(3)
            .checked_div(2)
            .unwrap_or(u64::MAX)
            .saturating_add(slack);
        if mean > tolerated {
            self.limit = (from - (from / 10).max(1)).max(self.settings.min);
            return if self.limit == from {
                Change::Unchanged
            } else {
                Change::Shrank {
                    from,
                    to: self.limit,
                }
            };
        }
        if window.reached_limit {
            self.limit = (from + from.isqrt().max(1)).min(self.settings.max);
            if self.limit != from {
                return Change::Grew {
                    from,
                    to: self.limit,
                };
            }
        }
        Change::Unchanged
    }
}

impl LimitSettings {
    /// The same bounds with another latency slack.
    pub fn with_slack(mut self, slack: Duration) -> LimitSettings {
        self.slack = slack;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `calls` answered calls of `latency`, each with the limit in use.
    fn saturated(limit: &mut AdaptiveLimit, calls: usize, latency: Duration) {
        for _ in 0..calls {
            let in_flight = limit.limit();
            limit.observe(latency, CallOutcome::Answered, in_flight);
        }
    }

    #[test]
    fn it_starts_at_the_minimum() {
        let limit = AdaptiveLimit::new(LimitSettings::new(16, 1024));
        assert_eq!(limit.limit(), 16);
        assert_eq!(limit.baseline(), None);
    }

    #[test]
    fn it_grows_while_latency_holds_and_the_limit_is_in_use() {
        let mut limit = AdaptiveLimit::new(LimitSettings::new(16, 1024));
        // The first window: 16 calls → +4.
        saturated(&mut limit, 16, 200 * MS);
        assert_eq!(limit.limit(), 20);
        // Steady 200 ms: 2,500 more calls (about 12 s at 200 calls per round trip) take it
        // past 200, the concurrency 1,000 captures/s need at 200 ms.
        saturated(&mut limit, 2_500, 200 * MS);
        assert!(limit.limit() > 200, "limit {}", limit.limit());
        assert_eq!(limit.baseline(), Some(200 * MS));
    }

    #[test]
    fn it_does_not_grow_when_the_limit_is_not_what_binds() {
        let mut limit = AdaptiveLimit::new(LimitSettings::new(16, 1024));
        for _ in 0..1_000 {
            limit.observe(200 * MS, CallOutcome::Answered, 3);
        }
        assert_eq!(limit.limit(), 16);
    }

    #[test]
    fn it_halves_on_a_429_and_on_a_timeout() {
        let mut limit = AdaptiveLimit::new(LimitSettings::new(4, 1024));
        saturated(&mut limit, 3_000, 50 * MS);
        let before = limit.limit();
        assert!(before >= 64, "grew first: {before}");
        let change = limit.observe(50 * MS, CallOutcome::Overloaded, before);
        assert_eq!(
            change,
            Change::Halved {
                from: before,
                to: before / 2
            }
        );
        // The calls that were in flight at the old limit answer 429 too: no second halving
        // for them.
        for _ in 0..before - 1 {
            limit.observe(50 * MS, CallOutcome::Overloaded, before);
        }
        assert_eq!(limit.limit(), before / 2);
        // Still refused after they drained: halved again, this time by a timeout.
        let change = limit.observe(10_000 * MS, CallOutcome::TimedOut, before / 2);
        assert_eq!(
            change,
            Change::Halved {
                from: before / 2,
                to: before / 4
            }
        );
    }

    #[test]
    fn it_shrinks_when_latency_rises() {
        let mut limit = AdaptiveLimit::new(LimitSettings::new(4, 1024));
        saturated(&mut limit, 3_000, 50 * MS);
        let before = limit.limit();
        // The provider slows down to 200 ms. The window under way when it did may still
        // grow the limit (its mean is mostly fast calls); the first mostly slow one shrinks it
        // by a tenth.
        let changes: Vec<Change> = (0..3 * before)
            .map(|_| limit.observe(200 * MS, CallOutcome::Answered, limit.limit()))
            .filter(|c| *c != Change::Unchanged)
            .collect();
        let shrank = changes
            .iter()
            .find_map(|c| match c {
                Change::Shrank { from, to } => Some((*from, *to)),
                _ => None,
            })
            .expect("the limit shrank");
        assert_eq!(shrank.1, shrank.0 - shrank.0 / 10);
        let before = shrank.0;
        // And keeps shrinking while the latency stays high above the long-term mean.
        saturated(&mut limit, 300, 200 * MS);
        assert!(limit.limit() < before - before / 10, "{}", limit.limit());
    }

    #[test]
    fn jitter_of_a_few_milliseconds_on_a_fast_provider_is_not_rising_latency() {
        let mut limit = AdaptiveLimit::new(LimitSettings::new(4, 64));
        saturated(&mut limit, 200, MS);
        let before = limit.limit();
        saturated(&mut limit, before, 5 * MS);
        assert!(limit.limit() >= before, "{} < {before}", limit.limit());
    }

    #[test]
    fn failures_that_say_nothing_about_load_change_nothing() {
        let mut limit = AdaptiveLimit::new(LimitSettings::new(8, 64));
        for _ in 0..100 {
            assert_eq!(limit.observe(MS, CallOutcome::Failed, 8), Change::Unchanged);
        }
        assert_eq!(limit.limit(), 8);
        assert_eq!(limit.baseline(), None);
    }

    #[test]
    fn it_respects_its_bounds() {
        let mut limit = AdaptiveLimit::new(LimitSettings::new(8, 40));
        saturated(&mut limit, 10_000, 20 * MS);
        assert_eq!(limit.limit(), 40, "never above max");
        for _ in 0..1_000 {
            let in_flight = limit.limit();
            limit.observe(10_000 * MS, CallOutcome::TimedOut, in_flight);
        }
        assert_eq!(limit.limit(), 8, "never below min");
        // A window of rising latency at the minimum leaves it there.
        for _ in 0..16 {
            limit.observe(20 * MS, CallOutcome::Answered, 1);
        }
        assert_eq!(limit.limit(), 8);
        let mut last = Change::Unchanged;
        for _ in 0..8 {
            last = limit.observe(5_000 * MS, CallOutcome::Answered, 8);
        }
        assert_eq!(last, Change::Unchanged);
        assert_eq!(limit.limit(), 8, "rising latency stops at min too");
        // Degenerate settings are made sane: min at least 1, max at least min.
        let limit = AdaptiveLimit::new(LimitSettings::new(0, 0));
        assert_eq!(limit.limit(), 1);
    }
}

//! Per-provider gates on capture and release calls: each lets as many calls be in flight as
//! its [`AdaptiveLimit`] says, and feeds it every finished call (docs/performance.md,
//! "Adaptive provider concurrency").

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::limiter::{AdaptiveLimit, CallOutcome, LimitSettings};
use crate::provider::CallResult;
use crate::telemetry::metrics;

/// How many provider calls the executor makes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Orders driven at once (each sends one capture at a time).
    pub orders: usize,
    /// Calls in flight per provider: adapted within these bounds.
    pub per_provider: LimitSettings,
    /// The provider request timeout: a call without an answer that took this long timed out.
    pub timeout: Duration,
}

impl CallLimits {
    /// `concurrency` orders and calls at once, not adapted.
    pub fn fixed(concurrency: usize) -> CallLimits {
        CallLimits {
            orders: concurrency.max(1),
            per_provider: LimitSettings::new(concurrency, concurrency),
            timeout: Duration::MAX,
        }
    }

    /// Up to `max` orders and calls per provider at once; each provider's limit starts at
    /// `min` and adapts between the two.
    pub fn adaptive(min: usize, max: usize, timeout: Duration) -> CallLimits {
        CallLimits {
            orders: max.max(1),
            per_provider: LimitSettings::new(min, max),
            timeout,
        }
    }
}

/// One gate per provider, made on first use.
pub(super) struct Gates {
    limits: CallLimits,
    by_provider: Mutex<HashMap<String, Arc<Gate>>>,
}

impl Gates {
    pub(super) fn new(limits: CallLimits) -> Gates {
        Gates {
            limits,
            by_provider: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn get(&self, provider: &str) -> Arc<Gate> {
        let mut gates = self
            .by_provider
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        gates
            .entry(provider.to_owned())
            .or_insert_with(|| {
                let limit = AdaptiveLimit::new(self.limits.per_provider);
                metrics::provider_concurrency(provider, limit.limit(), 0);
                Arc::new(Gate {
                    provider: provider.to_owned(),
                    timeout: self.limits.timeout,
                    permits: Arc::new(Semaphore::new(limit.limit())),
                    state: Mutex::new(State {
                        limit,
                        in_flight: 0,
                        debt: 0,
                    }),
                })
            })
            .clone()
    }
}

/// Calls to one provider.
pub(super) struct Gate {
    provider: String,
    timeout: Duration,
    /// As many permits as the limit (less `debt`, while calls admitted at a higher limit are
    /// still in flight).
    permits: Arc<Semaphore>,
    state: Mutex<State>,
}

struct State {
    limit: AdaptiveLimit,
    in_flight: usize,
    /// Permits to drop rather than give back when calls finish: the limit went down while
    /// they were out.
    debt: usize,
}

impl Gate {
    /// Waits for a slot; the call it admits reports through [`Slot::finish`].
    pub(super) async fn enter(self: &Arc<Gate>) -> Slot {
        // The semaphore is never closed.
        let permit = self.permits.clone().acquire_owned().await.ok();
        let in_flight = {
            let mut state = self.lock();
            state.in_flight += 1;
            metrics::provider_concurrency(&self.provider, state.limit.limit(), state.in_flight);
            state.in_flight
        };
        Slot {
            gate: self.clone(),
            permit,
            in_flight,
            finished: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends a call: gives its permit back (or drops it to pay debt) and, when `observed`,
    /// adapts the limit.
    fn leave(
        &self,
        permit: Option<OwnedSemaphorePermit>,
        observed: Option<(Duration, CallOutcome, usize)>,
    ) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if let Some((latency, outcome, in_flight)) = observed {
            let before = state.limit.limit();
            state.limit.observe(latency, outcome, in_flight);
            let after = state.limit.limit();
            if after > before {
                let mut more = after - before;
                let paid = more.min(state.debt);
                state.debt -= paid;
                more -= paid;
                if more > 0 {
                    self.permits.add_permits(more);
                }
            } else if after < before {
                let fewer = before - after;
                let forgotten = self.permits.forget_permits(fewer);
                state.debt += fewer - forgotten;
            }
        }
        if let Some(permit) = permit
            && state.debt > 0
        {
            state.debt -= 1;
            permit.forget();
        }
        metrics::provider_concurrency(&self.provider, state.limit.limit(), state.in_flight);
    }
}

/// One admitted call. Dropped without [`Slot::finish`] (the call was cancelled), it gives its
/// place back and tells the limit nothing.
pub(super) struct Slot {
    gate: Arc<Gate>,
    permit: Option<OwnedSemaphorePermit>,
    in_flight: usize,
    finished: bool,
}

impl Slot {
    /// The call ended with `call`.
    pub(super) fn finish(mut self, call: &CallResult) {
        self.finished = true;
        let outcome = classify(call, self.gate.timeout);
        let permit = self.permit.take();
        self.gate
            .leave(permit, Some((call.latency, outcome, self.in_flight)));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.finished {
            let permit = self.permit.take();
            self.gate.leave(permit, None);
        }
    }
}

/// What a call says about the provider's load: 429 and 503 are push-back, a call without an
/// answer that lasted the whole timeout timed out, a 5xx or a failed connection says nothing,
/// any other answer (a success, a decline, a refusal of the request) is an answer.
pub(super) fn classify(call: &CallResult, timeout: Duration) -> CallOutcome {
    match call.http_status {
        Some(429 | 503) => CallOutcome::Overloaded,
        Some(s) if s >= 500 => CallOutcome::Failed,
        Some(_) => CallOutcome::Answered,
        None if call.latency >= timeout => CallOutcome::TimedOut,
        None => CallOutcome::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Outcome;

    fn call(status: Option<u16>, latency_ms: u64) -> CallResult {
        CallResult {
            outcome: Outcome::Failed {
                reason: "test".into(),
            },
            http_status: status,
            provider_code: None,
            provider_request_id: None,
            latency: Duration::from_millis(latency_ms),
        }
    }

    #[test]
    fn calls_are_classified_by_what_they_say_about_load() {
        let timeout = Duration::from_millis(400);
        assert_eq!(
            classify(&call(Some(200), 5), timeout),
            CallOutcome::Answered
        );
        assert_eq!(
            classify(&call(Some(402), 5), timeout),
            CallOutcome::Answered
        );
        assert_eq!(
            classify(&call(Some(429), 5), timeout),
            CallOutcome::Overloaded
        );
        assert_eq!(
            classify(&call(Some(503), 5), timeout),
            CallOutcome::Overloaded
        );
        assert_eq!(classify(&call(Some(500), 5), timeout), CallOutcome::Failed);
        assert_eq!(classify(&call(None, 400), timeout), CallOutcome::TimedOut);
        assert_eq!(classify(&call(None, 3), timeout), CallOutcome::Failed);
    }

    #[tokio::test]
    async fn the_gate_admits_as_many_calls_as_the_limit_and_follows_it() {
        let gates = Gates::new(CallLimits::adaptive(2, 8, Duration::from_secs(1)));
        let gate = gates.get("sandbox");
        let a = gate.enter().await;
        let b = gate.enter().await;
        // A third waits: the limit starts at 2.
        let waiting = tokio::time::timeout(Duration::from_millis(50), gate.enter()).await;
        assert!(waiting.is_err(), "a third call was admitted at limit 2");
        // Two answered calls at the limit end the first window: it grows to 3.
        a.finish(&call(Some(200), 10));
        b.finish(&call(Some(200), 10));
        assert_eq!(gate.lock().limit.limit(), 3);
        let slots = [gate.enter().await, gate.enter().await, gate.enter().await];
        assert_eq!(gate.lock().in_flight, 3);
        // A 429 halves it (to the minimum 2): after the three finish, only two get in.
        let [x, y, z] = slots;
        x.finish(&call(Some(429), 10));
        assert_eq!(gate.lock().limit.limit(), 2);
        drop(y);
        drop(z);
        let _c = gate.enter().await;
        let _d = gate.enter().await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), gate.enter()).await;
        assert!(waiting.is_err(), "more calls than the limit were admitted");
    }
}

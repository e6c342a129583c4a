//! The authorization lifecycle policy, pure: given the time, one hold and its order's
//! progress, decide the one thing to do about the hold's clock and size — extend it, increment
//! it, capture what has shipped before it lapses, release what nobody will use, or nothing —
//! and say why.
//!
//! The policy never proposes more than the provider documents
//! ([`LifecycleCapabilities`](super::capability::LifecycleCapabilities)): an increment only
//! where one is documented, within its count, cap and "before the first capture" rule; an
//! extension only inside its window and count. It never acts on a lapsed hold, and it never
//! releases value still needed for unshipped lines while the hold is valid — except by the
//! one explicit abandonment rule, an untouched hold (nothing shipped, nothing captured) older
//! than the configured idle age, which the merchant opts into.
//!
//! No I/O and no clock: callers pass `now`.

use chrono::{DateTime, Duration, Utc};

use super::allocation::ShippingPolicy;
use super::capability::LifecycleCapabilities;
use super::ids::{AuthorizationId, IdempotencyKey, ProviderName};
use super::money::{MinorUnits, MoneyError};
use super::order::Order;
use super::plan::{OrderState, shipped_value};

/// One hold as the policy sees it, with its order's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// When the (original) authorization was made; windows are counted from it.
    pub authorized_at: DateTime<Utc>,
    /// The amount authorized when the hold was made.
    pub original_amount: MinorUnits,
    /// The amount authorized now (after increments).
    pub amount: MinorUnits,
    /// Captured so far (settled captures).
    pub captured: MinorUnits,
    /// Captures planned or in flight, not yet settled.
    pub pending: MinorUnits,
    /// When the hold lapses: checkout's `expires_at`, the last extension's, or the
    /// provider's window after `authorized_at`. `None`: unknown, never treated as lapsed.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the funds stop being guaranteed, when earlier than `expires_at` (PayPal's honor
    /// period end: the authorization, or its last reauthorization, plus 3 days).
    pub guaranteed_until: Option<DateTime<Utc>>,
    /// Extensions and increments already made (succeeded or refused: a refused increment
    /// counts against Stripe's 10 attempts).
    pub extensions: u32,
    pub increments: u32,
    /// Value of the lines neither shipped nor cancelled.
    pub unshipped: MinorUnits,
    /// Value shipped and not yet captured or planned (coalescing, single capture, below a
    /// minimum).
    pub shipped_uncaptured: MinorUnits,
    /// When the order's last shipment was recorded; `None`: nothing shipped yet.
    pub last_shipment_at: Option<DateTime<Utc>>,
    pub capabilities: LifecycleCapabilities,
}

/// What the merchant configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleSettings {
    /// Extend this long before the hold (or its guarantee) runs out.
    pub extend_ahead: Duration,
    /// Capture what has shipped this long before the hold runs out, when it cannot be
    /// extended.
    pub capture_ahead: Duration,
    /// Release a hold with nothing shipped and nothing captured this long after it was made;
    /// `None`: never.
    pub idle_release_after: Option<Duration>,
    /// Release what is left of a hold this old with nothing left to ship; `None`: never.
    pub max_age: Option<Duration>,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        LifecycleSettings {
            extend_ahead: Duration::hours(24),
            capture_ahead: Duration::hours(12),
            idle_release_after: None,
            max_age: Some(Duration::days(30)),
        }
    }
}

/// The one action the policy proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Extend the hold with the provider's extension call (PayPal reauthorize, Adyen amount
    /// update with the same amount, Checkout.com increment of 0).
    Extend,
    /// Raise the authorized amount by `by`.
    Increment {
        by: MinorUnits,
    },
    /// Capture what has shipped now: the hold cannot be kept alive.
    CaptureShippedNow,
    /// Release what is left of the hold.
    ReleaseRemainder,
    Nothing,
}

impl Action {
    /// Short label for the ledger, metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Action::Extend => "extend",
            Action::Increment { .. } => "increment",
            Action::CaptureShippedNow => "capture_shipped",
            Action::ReleaseRemainder => "release",
            Action::Nothing => "nothing",
        }
    }
}

/// Why the policy chose its action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The hold has lapsed: nothing may be sent on it.
    Lapsed,
    /// A capture is planned or in flight: wait for it to settle.
    CaptureInFlight,
    /// The order needs more than the hold has left; the provider allows an increment.
    Shortfall,
    /// The hold runs out within the lead time and value is still to ship.
    Expiring,
    /// The funds' guarantee (PayPal's honor period) ends within the lead time and value is
    /// still to ship.
    GuaranteeEnding,
    /// The hold runs out, cannot be extended, and shipped value is not captured yet.
    ExpiringCannotExtend,
    /// Nothing shipped and nothing captured for the configured idle time.
    Untouched,
    /// Older than the configured maximum age with nothing left to ship.
    AgedNothingToShip,
    /// Nothing is left of the hold.
    NothingHeld,
    /// The hold is healthy.
    Healthy,
}

impl Reason {
    pub fn label(&self) -> &'static str {
        match self {
            Reason::Lapsed => "lapsed",
            Reason::CaptureInFlight => "capture_in_flight",
            Reason::Shortfall => "shortfall",
            Reason::Expiring => "expiring",
            Reason::GuaranteeEnding => "guarantee_ending",
            Reason::ExpiringCannotExtend => "expiring_cannot_extend",
            Reason::Untouched => "untouched",
            Reason::AgedNothingToShip => "aged_nothing_to_ship",
            Reason::NothingHeld => "nothing_held",
            Reason::Healthy => "healthy",
        }
    }
}

/// The action and its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub reason: Reason,
}

impl Decision {
    fn new(action: Action, reason: Reason) -> Self {
        Decision { action, reason }
    }
}

impl Hold {
    /// What the hold still covers: amount − captured − pending (never below 0).
    pub fn remaining(&self) -> MinorUnits {
        self.amount
            .saturating_sub(self.captured)
            .saturating_sub(self.pending)
    }

    /// What the order still needs from the hold: unshipped plus shipped-not-captured value.
    pub fn needed(&self) -> MinorUnits {
        MinorUnits::new(
            self.unshipped
                .get()
                .saturating_add(self.shipped_uncaptured.get()),
        )
        .unwrap_or(self.unshipped)
    }

    /// Whether the hold has lapsed at `now`.
    pub fn lapsed(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// The earlier of the hold's expiry and the end of its guarantee.
    pub fn clock(&self) -> Option<DateTime<Utc>> {
        match (self.expires_at, self.guaranteed_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The largest increment the provider allows now, `None` when it allows none.
    pub fn increment_allowance(&self) -> Option<MinorUnits> {
        let rule = self.capabilities.increment?;
        if rule.before_first_capture && (!self.captured.is_zero() || !self.pending.is_zero()) {
            return None;
        }
        if rule
            .max_increments
            .is_some_and(|max| self.increments >= max)
        {
            return None;
        }
        match rule.max_total_bp {
            None => Some(MinorUnits::new(i64::MAX / 4).unwrap_or(MinorUnits::ZERO)),
            Some(bp) => {
                let cap = i128::from(self.original_amount.get()) * i128::from(bp) / 10_000;
                let cap = i64::try_from(cap).unwrap_or(i64::MAX);
                let room = cap.saturating_sub(self.amount.get());
                (room > 0).then(|| MinorUnits::new(room).ok()).flatten()
            }
        }
    }

    /// Whether the provider allows an extension at `now`.
    pub fn extension_allowed(&self, now: DateTime<Utc>) -> bool {
        let Some(rule) = self.capabilities.extension else {
            return false;
        };
        if rule.before_first_capture && (!self.captured.is_zero() || !self.pending.is_zero()) {
            return false;
        }
        if rule
            .max_extensions
            .is_some_and(|max| self.extensions >= max)
        {
            return false;
        }
        let opens = self.authorized_at + rule.opens_after;
        let open = now >= opens
            && rule
                .closes_after
                .is_none_or(|closes| now < self.authorized_at + closes);
        // An extension that would not move the clock later is pointless.
        let later = self
            .clock()
            .is_none_or(|clock| now + rule.renews_for > clock);
        open && later && !self.lapsed(now)
    }
}

/// Decides what to do about `hold` at `now`.
pub fn decide(now: DateTime<Utc>, hold: &Hold, settings: &LifecycleSettings) -> Decision {
    if hold.lapsed(now) {
        return Decision::new(Action::Nothing, Reason::Lapsed);
    }
    if !hold.pending.is_zero() {
        return Decision::new(Action::Nothing, Reason::CaptureInFlight);
    }
    let remaining = hold.remaining();
    let needed = hold.needed();

    // A shortfall: raise the hold first, where the provider allows it.
    if needed > remaining
        && let Some(allowance) = hold.increment_allowance()
    {
        let short = needed.get() - remaining.get();
        let by = short.min(allowance.get());
        if by > 0
            && let Ok(by) = MinorUnits::new(by)
        {
            return Decision::new(Action::Increment { by }, Reason::Shortfall);
        }
    }

    // The clock: extend while value is still to ship, else capture what shipped in time.
    if let Some(clock) = hold.clock()
        && !needed.is_zero()
        && !remaining.is_zero()
    {
        let guarantee = hold
            .guaranteed_until
            .is_some_and(|g| Some(g) == Some(clock))
            && hold.expires_at.is_none_or(|e| clock < e);
        if now >= clock - settings.extend_ahead && hold.extension_allowed(now) {
            let reason = if guarantee {
                Reason::GuaranteeEnding
            } else {
                Reason::Expiring
            };
            return Decision::new(Action::Extend, reason);
        }
        // Only a hard expiry forces the capture; a guarantee ending is no lapse.
        if let Some(expires_at) = hold.expires_at
            && now >= expires_at - settings.capture_ahead
            && !hold.shipped_uncaptured.is_zero()
        {
            return Decision::new(Action::CaptureShippedNow, Reason::ExpiringCannotExtend);
        }
    }

    if remaining.is_zero() {
        return Decision::new(Action::Nothing, Reason::NothingHeld);
    }
    // Untouched: the merchant's abandonment rule.
    if let Some(idle) = settings.idle_release_after
        && hold.captured.is_zero()
        && hold.last_shipment_at.is_none()
        && hold.shipped_uncaptured.is_zero()
        && now >= hold.authorized_at + idle
    {
        return Decision::new(Action::ReleaseRemainder, Reason::Untouched);
    }
    // Aged with nothing left to ship.
    if let Some(max_age) = settings.max_age
        && needed.is_zero()
        && now >= hold.authorized_at + max_age
    {
        return Decision::new(Action::ReleaseRemainder, Reason::AgedNothingToShip);
    }
    Decision::new(Action::Nothing, Reason::Healthy)
}

/// What an order still needs from its hold: (the value of the live lines not shipped yet,
/// the value shipped but not planned into a capture nor cut as shortfall). Values follow the
/// capture plan's rule (`shipped_value`), so they add up with the captures exactly.
pub fn progress(
    order: &Order,
    state: &OrderState,
    policy: ShippingPolicy,
) -> Result<(MinorUnits, MinorUnits), MoneyError> {
    let shipped = shipped_value(order, state, policy)?;
    let mut all = state.clone();
    for (i, line) in order.lines().iter().enumerate() {
        all.shipped[i] = line.quantity.get().saturating_sub(state.cancelled[i]);
    }
    let everything = shipped_value(order, &all, policy)?;
    let unshipped = everything.saturating_sub(shipped);
    let uncaptured = shipped
        .saturating_sub(state.claimed)
        .saturating_sub(state.shortfall);
    Ok((unshipped, uncaptured))
}

/// The idempotency key of the `sequence`-th lifecycle action (`extend`, `increment`) on an
/// authorization: derived like a capture's key, from the provider, the authorization and the
/// action, so a resend after a crash reuses it and the provider applies the action once.
pub fn lifecycle_key(
    provider: &ProviderName,
    authorization: &AuthorizationId,
    action: &str,
    sequence: u32,
) -> IdempotencyKey {
    IdempotencyKey::derive(
        provider,
        authorization,
        &format!("lifecycle/{action}/{sequence}"),
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::capability::LifecycleCapabilities;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
    }

    fn m(v: i64) -> MinorUnits {
        MinorUnits::new(v).unwrap()
    }

    fn hold(caps: LifecycleCapabilities) -> Hold {
        Hold {
            authorized_at: t0(),
            original_amount: m(10_000),
            amount: m(10_000),
            captured: MinorUnits::ZERO,
            pending: MinorUnits::ZERO,
            expires_at: Some(t0() + Duration::days(7)),
            guaranteed_until: None,
            extensions: 0,
            increments: 0,
            unshipped: m(10_000),
            shipped_uncaptured: MinorUnits::ZERO,
            last_shipment_at: None,
            capabilities: caps,
        }
    }

    fn settings() -> LifecycleSettings {
        LifecycleSettings {
            extend_ahead: Duration::hours(24),
            capture_ahead: Duration::hours(12),
            idle_release_after: Some(Duration::days(5)),
            max_age: Some(Duration::days(30)),
        }
    }

    #[test]
    fn a_fresh_hold_is_left_alone() {
        let d = decide(
            t0() + Duration::hours(1),
            &hold(LifecycleCapabilities::adyen()),
            &settings(),
        );
        assert_eq!(d, Decision::new(Action::Nothing, Reason::Healthy));
    }

    #[test]
    fn a_lapsed_hold_is_never_acted_on() {
        let mut h = hold(LifecycleCapabilities::adyen());
        h.unshipped = m(20_000);
        let d = decide(t0() + Duration::days(7), &h, &settings());
        assert_eq!(d, Decision::new(Action::Nothing, Reason::Lapsed));
    }

    #[test]
    fn an_adyen_hold_is_extended_within_the_lead_time() {
        let h = hold(LifecycleCapabilities::adyen());
        let early = decide(t0() + Duration::days(4), &h, &settings());
        assert_eq!(early.action, Action::Nothing);
        let keep = LifecycleSettings {
            idle_release_after: None,
            ..settings()
        };
        let d = decide(t0() + Duration::days(6) + Duration::hours(1), &h, &keep);
        assert_eq!(d, Decision::new(Action::Extend, Reason::Expiring));
    }

    #[test]
    fn adyen_cannot_extend_after_a_capture_so_what_shipped_is_captured_before_lapse() {
        let mut h = hold(LifecycleCapabilities::adyen());
        h.captured = m(4_000);
        h.unshipped = m(4_000);
        h.shipped_uncaptured = m(2_000);
        h.last_shipment_at = Some(t0() + Duration::days(1));
        let d = decide(
            t0() + Duration::days(6) + Duration::hours(11),
            &h,
            &settings(),
        );
        assert_eq!(d, Decision::new(Action::Nothing, Reason::Healthy));
        let d = decide(
            t0() + Duration::days(6) + Duration::hours(12),
            &h,
            &settings(),
        );
        assert_eq!(
            d,
            Decision::new(Action::CaptureShippedNow, Reason::ExpiringCannotExtend)
        );
    }

    #[test]
    fn stripe_cannot_extend_and_captures_what_shipped_before_lapse() {
        let mut h = hold(LifecycleCapabilities::stripe());
        h.unshipped = m(6_000);
        h.shipped_uncaptured = m(4_000);
        h.last_shipment_at = Some(t0() + Duration::days(2));
        let d = decide(
            t0() + Duration::days(6) + Duration::hours(11),
            &h,
            &settings(),
        );
        assert_eq!(d.reason, Reason::Healthy);
        let d = decide(
            t0() + Duration::days(6) + Duration::hours(12),
            &h,
            &settings(),
        );
        assert_eq!(
            d,
            Decision::new(Action::CaptureShippedNow, Reason::ExpiringCannotExtend)
        );
    }

    #[test]
    fn paypal_reauthorizes_once_the_honor_period_is_over_never_before() {
        let mut h = hold(LifecycleCapabilities::paypal());
        h.expires_at = Some(t0() + Duration::days(29));
        h.guaranteed_until = Some(t0() + Duration::days(3));
        h.captured = m(3_000);
        h.unshipped = m(7_000);
        h.last_shipment_at = Some(t0() + Duration::days(1));
        // Within the lead time of the honor period's end, but reauthorizing opens only after it.
        let d = decide(
            t0() + Duration::days(2) + Duration::hours(12),
            &h,
            &settings(),
        );
        assert_eq!(d.action, Action::Nothing);
        let d = decide(
            t0() + Duration::days(3) + Duration::hours(1),
            &h,
            &settings(),
        );
        assert_eq!(d, Decision::new(Action::Extend, Reason::GuaranteeEnding));
        // Once only.
        h.extensions = 1;
        h.guaranteed_until = Some(t0() + Duration::days(6));
        let d = decide(
            t0() + Duration::days(5) + Duration::hours(1),
            &h,
            &settings(),
        );
        assert_eq!(d.action, Action::Nothing);
    }

    #[test]
    fn paypal_does_not_reauthorize_after_day_29() {
        let mut h = hold(LifecycleCapabilities::paypal());
        h.expires_at = Some(t0() + Duration::days(30));
        h.guaranteed_until = Some(t0() + Duration::days(3));
        let d = decide(t0() + Duration::days(29), &h, &settings());
        assert_ne!(d.action, Action::Extend);
    }

    #[test]
    fn a_shortfall_before_any_capture_is_incremented_by_exactly_what_is_missing() {
        let mut h = hold(LifecycleCapabilities::checkout());
        h.unshipped = m(12_500);
        let d = decide(t0() + Duration::hours(2), &h, &settings());
        assert_eq!(
            d,
            Decision::new(Action::Increment { by: m(2_500) }, Reason::Shortfall)
        );
    }

    #[test]
    fn no_increment_after_a_capture_or_past_stripes_ten_attempts() {
        let mut h = hold(LifecycleCapabilities::stripe());
        h.unshipped = m(12_500);
        h.increments = 10;
        assert_ne!(decide(t0(), &h, &settings()).reason, Reason::Shortfall);
        h.increments = 0;
        h.captured = m(1_000);
        h.unshipped = m(11_500);
        assert_ne!(decide(t0(), &h, &settings()).reason, Reason::Shortfall);
    }

    #[test]
    fn providers_without_increments_leave_the_shortfall_to_the_planner() {
        for caps in [LifecycleCapabilities::paypal(), LifecycleCapabilities::NONE] {
            let mut h = hold(caps);
            h.unshipped = m(12_500);
            let d = decide(t0() + Duration::hours(2), &h, &settings());
            assert_eq!(d, Decision::new(Action::Nothing, Reason::Healthy));
        }
    }

    #[test]
    fn an_untouched_hold_is_released_after_the_idle_time_and_not_before() {
        let h = hold(LifecycleCapabilities::NONE);
        let d = decide(
            t0() + Duration::days(5) - Duration::seconds(1),
            &h,
            &settings(),
        );
        assert_eq!(d.action, Action::Nothing);
        let d = decide(t0() + Duration::days(5), &h, &settings());
        assert_eq!(
            d,
            Decision::new(Action::ReleaseRemainder, Reason::Untouched)
        );
        let off = LifecycleSettings {
            idle_release_after: None,
            ..settings()
        };
        assert_eq!(
            decide(t0() + Duration::days(6), &h, &off).action,
            Action::Nothing
        );
    }

    #[test]
    fn a_hold_with_a_shipment_is_not_untouched() {
        let mut h = hold(LifecycleCapabilities::NONE);
        h.last_shipment_at = Some(t0() + Duration::hours(3));
        let d = decide(t0() + Duration::days(6), &h, &settings());
        assert_eq!(d.action, Action::Nothing);
    }

    #[test]
    fn an_aged_hold_with_nothing_left_to_ship_is_released() {
        let mut h = hold(LifecycleCapabilities::NONE);
        h.expires_at = None;
        h.captured = m(6_000);
        h.unshipped = MinorUnits::ZERO;
        h.last_shipment_at = Some(t0() + Duration::days(1));
        assert_eq!(
            decide(t0() + Duration::days(29), &h, &settings()).action,
            Action::Nothing
        );
        let d = decide(t0() + Duration::days(30), &h, &settings());
        assert_eq!(
            d,
            Decision::new(Action::ReleaseRemainder, Reason::AgedNothingToShip)
        );
    }

    #[test]
    fn a_capture_in_flight_is_waited_for() {
        let mut h = hold(LifecycleCapabilities::adyen());
        h.pending = m(1_000);
        let d = decide(
            t0() + Duration::days(6) + Duration::hours(20),
            &h,
            &settings(),
        );
        assert_eq!(d, Decision::new(Action::Nothing, Reason::CaptureInFlight));
    }

    #[test]
    fn a_fully_captured_hold_needs_nothing() {
        let mut h = hold(LifecycleCapabilities::adyen());
        h.captured = m(10_000);
        h.unshipped = MinorUnits::ZERO;
        let d = decide(
            t0() + Duration::days(6) + Duration::hours(20),
            &h,
            &settings(),
        );
        assert_eq!(d, Decision::new(Action::Nothing, Reason::NothingHeld));
    }

    #[test]
    fn lifecycle_keys_differ_by_action_and_sequence_and_are_stable() {
        let p = ProviderName::parse("paypal").unwrap();
        let a = AuthorizationId::parse("AUTH-1").unwrap();
        let k1 = lifecycle_key(&p, &a, "extend", 1);
        assert_eq!(k1, lifecycle_key(&p, &a, "extend", 1));
        assert_ne!(k1, lifecycle_key(&p, &a, "extend", 2));
        assert_ne!(k1, lifecycle_key(&p, &a, "increment", 1));
    }
}

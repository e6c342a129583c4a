//! Properties of the authorization lifecycle policy over random holds, orders, providers,
//! settings and times (1,000+ cases each): it never proposes more than the provider allows,
//! never acts on a lapsed hold, and never releases value still needed for unshipped lines
//! while the hold is valid (the one exception being the merchant's explicit idle-release rule
//! for a hold nothing was shipped or captured on).

use capture_worker::domain::lifecycle::{Action, Hold, LifecycleSettings, Reason, decide};
use capture_worker::domain::{LifecycleCapabilities, MinorUnits};
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn m(v: i64) -> MinorUnits {
    MinorUnits::new(v).unwrap()
}

fn caps(which: u8) -> LifecycleCapabilities {
    match which {
        0 => LifecycleCapabilities::stripe(),
        1 => LifecycleCapabilities::adyen(),
        2 => LifecycleCapabilities::checkout(),
        3 => LifecycleCapabilities::paypal(),
        4 => {
            // A capped increment, to exercise the cap.
            let mut c = LifecycleCapabilities::stripe();
            if let Some(rule) = c.increment.as_mut() {
                rule.max_total_bp = Some(11_500);
                rule.before_first_capture = false;
            }
            c
        }
        _ => LifecycleCapabilities::NONE,
    }
}

#[derive(Debug, Clone)]
struct Case {
    hold: Hold,
    settings: LifecycleSettings,
    now: DateTime<Utc>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (0u8..=5, 1i64..=50_000, 80i64..=130, 0i64..=100, 0i64..=100),
        (0i64..=100, 0i64..=150, any::<bool>(), 0u32..=12, 0u32..=3),
        (
            prop_oneof![1 => Just(None), 4 => (1i64..=40 * 24).prop_map(Some)],
            any::<bool>(),
            prop_oneof![Just(None), (0i64..=72).prop_map(Some)],
        ),
        (
            1i64..=72,
            1i64..=48,
            prop_oneof![Just(None), (1i64..=10).prop_map(Some)],
            prop_oneof![Just(None), (1i64..=40).prop_map(Some)],
            0i64..=45 * 24,
        ),
    )
        .prop_map(
            |(
                (which, amount, original_pct, captured_pct, pending_pct),
                (unshipped_pct, shipped_pct, pending_on, increments, extensions),
                (expires_h, honor, last_ship_h),
                (extend_ahead_h, capture_ahead_h, idle_d, max_age_d, now_h),
            )| {
                let original = amount * 100 / original_pct.max(1);
                let captured = amount * captured_pct / 100;
                let pending = if pending_on {
                    (amount - captured) * pending_pct / 200
                } else {
                    0
                };
                let unshipped = amount * unshipped_pct / 100;
                let shipped = amount * shipped_pct / 300;
                let caps = caps(which);
                let hold = Hold {
                    authorized_at: t0(),
                    original_amount: m(original.max(1)),
                    amount: m(amount),
                    captured: m(captured),
                    pending: m(pending),
                    expires_at: expires_h.map(|h| t0() + Duration::hours(h)),
                    guaranteed_until: (honor && caps.honor_period.is_some())
                        .then(|| t0() + Duration::days(3)),
                    extensions,
                    increments,
                    unshipped: m(unshipped),
                    shipped_uncaptured: m(shipped),
                    last_shipment_at: last_ship_h.map(|h| t0() + Duration::hours(h)),
                    capabilities: caps,
                };
                Case {
                    hold,
                    settings: LifecycleSettings {
                        extend_ahead: Duration::hours(extend_ahead_h),
                        capture_ahead: Duration::hours(capture_ahead_h),
                        idle_release_after: idle_d.map(Duration::days),
                        max_age: max_age_d.map(Duration::days),
                    },
                    now: t0() + Duration::hours(now_h),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn never_acts_on_a_lapsed_authorization(c in case()) {
        let d = decide(c.now, &c.hold, &c.settings);
        if c.hold.expires_at.is_some_and(|at| c.now >= at) {
            prop_assert_eq!(d.action, Action::Nothing);
            prop_assert_eq!(d.reason, Reason::Lapsed);
        }
    }

    #[test]
    fn an_increment_is_never_more_than_the_provider_allows_nor_than_is_missing(c in case()) {
        let d = decide(c.now, &c.hold, &c.settings);
        if let Action::Increment { by } = d.action {
            let h = &c.hold;
            let rule = h.capabilities.increment;
            prop_assert!(rule.is_some(), "increment proposed to a provider without increments");
            let rule = rule.unwrap();
            prop_assert!(by.get() > 0);
            if rule.before_first_capture {
                prop_assert!(h.captured.is_zero() && h.pending.is_zero());
            }
            if let Some(max) = rule.max_increments {
                prop_assert!(h.increments < max);
            }
            if let Some(bp) = rule.max_total_bp {
                let cap = i128::from(h.original_amount.get()) * i128::from(bp) / 10_000;
                prop_assert!(i128::from(h.amount.get() + by.get()) <= cap);
            }
            prop_assert!(by.get() <= h.needed().get() - h.remaining().get());
            prop_assert!(!h.lapsed(c.now));
        }
    }

    #[test]
    fn an_extension_is_only_proposed_inside_the_providers_window_and_count(c in case()) {
        let d = decide(c.now, &c.hold, &c.settings);
        if d.action == Action::Extend {
            let h = &c.hold;
            let rule = h.capabilities.extension;
            prop_assert!(rule.is_some(), "extension proposed to a provider without extensions");
            let rule = rule.unwrap();
            prop_assert!(c.now >= h.authorized_at + rule.opens_after);
            if let Some(closes) = rule.closes_after {
                prop_assert!(c.now < h.authorized_at + closes);
            }
            if let Some(max) = rule.max_extensions {
                prop_assert!(h.extensions < max);
            }
            if rule.before_first_capture {
                prop_assert!(h.captured.is_zero() && h.pending.is_zero());
            }
            prop_assert!(!h.lapsed(c.now));
            prop_assert!(!h.needed().is_zero());
        }
    }

    #[test]
    fn never_releases_what_unshipped_lines_still_need_while_the_hold_is_valid(c in case()) {
        let d = decide(c.now, &c.hold, &c.settings);
        if d.action == Action::ReleaseRemainder {
            let h = &c.hold;
            prop_assert!(!h.lapsed(c.now));
            prop_assert!(h.shipped_uncaptured.is_zero(), "shipped value must be captured, not released");
            if !h.unshipped.is_zero() {
                // Only the explicit idle-release rule, for a hold nobody touched.
                prop_assert_eq!(d.reason, Reason::Untouched);
                let idle = c.settings.idle_release_after;
                prop_assert!(idle.is_some_and(|idle| c.now >= h.authorized_at + idle));
                prop_assert!(h.captured.is_zero() && h.pending.is_zero());
                prop_assert!(h.last_shipment_at.is_none());
            }
        }
    }

    #[test]
    fn without_the_idle_rule_nothing_still_needed_is_ever_released(c in case()) {
        let settings = LifecycleSettings { idle_release_after: None, ..c.settings };
        let d = decide(c.now, &c.hold, &settings);
        if d.action == Action::ReleaseRemainder {
            prop_assert!(c.hold.needed().is_zero());
        }
    }

    #[test]
    fn capturing_early_only_happens_with_shipped_value_near_a_hard_expiry(c in case()) {
        let d = decide(c.now, &c.hold, &c.settings);
        if d.action == Action::CaptureShippedNow {
            let h = &c.hold;
            prop_assert!(!h.shipped_uncaptured.is_zero());
            let expires = h.expires_at.expect("a capture forced by a deadline needs one");
            prop_assert!(c.now >= expires - c.settings.capture_ahead && c.now < expires);
        }
    }
}

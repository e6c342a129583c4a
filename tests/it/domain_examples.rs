//! Worked examples of DESIGN §5 with hand-computed figures (USD, JPY, KWD).

use capture_worker::domain::*;
use chrono::Duration;

use crate::support::*;

/// USD: three lines with tax and line discounts, an order discount of 10.00 and 7.99 shipping.
///
/// merchandise: L1 1999×3−300 = 5697, L2 2500×2 = 5000, L3 999; Σ 11696.
/// order discount 1000 by largest remainder: 487.09, 427.50, 85.41 → 487, 428, 85.
/// nets: L1 5697+480−487 = 5690, L2 5000+400−428 = 4972, L3 999+80−85 = 994; Σ 11656.
/// total: 11656 + 799 = 12455.
fn usd(authorized: i64) -> Order {
    order(
        "USD",
        &[
            ("L1", 3, 1999, 480, 300),
            ("L2", 2, 2500, 400, 0),
            ("L3", 1, 999, 80, 0),
        ],
        799,
        1000,
        authorized,
    )
    .unwrap()
}

#[test]
fn usd_order_allocates_discount_by_largest_remainder_and_totals_exactly() {
    let o = usd(12455);
    assert_eq!(o.discount_shares(), &[m(487), m(428), m(85)]);
    assert_eq!(o.line_nets(), &[m(5690), m(4972), m(994)]);
    assert_eq!(o.total().amount(), m(12455));
}

#[test]
fn usd_order_in_one_parcel_is_one_final_capture_of_the_total() {
    let o = usd(12455);
    let s = shipment("S1", &[("L1", 3), ("L2", 2), ("L3", 1)], false);
    let (d, state) = run(
        &o,
        &ctx(Capabilities::multi_capture()),
        &[Event::Shipment(&s)],
    );
    assert_eq!(cap(&d[0]), (12455, true));
    assert_eq!(state.phase, Phase::Completed);
}

#[test]
fn usd_order_in_three_parcels_captures_with_cumulative_rounding_and_the_last_is_final() {
    let o = usd(12455);
    let s1 = shipment("S1", &[("L1", 1), ("L2", 1)], false);
    let s2 = shipment("S2", &[("L1", 1), ("L3", 1)], false);
    let s3 = shipment("S3", &[("L1", 1), ("L2", 1)], false);
    let (d, state) = run(
        &o,
        &ctx(Capabilities::multi_capture()),
        &[
            Event::Shipment(&s1),
            Event::Shipment(&s2),
            Event::Shipment(&s3),
        ],
    );
    // S1: L1 round(5690/3)=1897, L2 round(4972/2)=2486, shipping 799.
    assert_eq!(cap(&d[0]), (1897 + 2486 + 799, false));
    // S2: L1 round(5690·2/3)=3793 − 1897 = 1896, L3 994.
    assert_eq!(cap(&d[1]), (1896 + 994, false));
    // S3: L1 5690 − 3793 = 1897, L2 4972 − 2486 = 2486.
    assert_eq!(cap(&d[2]), (1897 + 2486, true));
    assert_eq!(state.claimed, m(12455));
    let Decision::Capture(first) = &d[0] else {
        unreachable!()
    };
    assert_eq!(first.sequence, 1);
    assert_eq!(first.shipping, m(799));
    assert_eq!(first.lines.len(), 2);
}

#[test]
fn usd_order_in_many_single_unit_parcels_sums_to_the_total() {
    let o = usd(12455);
    let parcels = [
        shipment("S1", &[("L1", 1)], false),
        shipment("S2", &[("L3", 1)], false),
        shipment("S3", &[("L2", 1)], false),
        shipment("S4", &[("L1", 1)], false),
        shipment("S5", &[("L2", 1)], false),
        shipment("S6", &[("L1", 1)], false),
    ];
    let events: Vec<_> = parcels.iter().map(Event::Shipment).collect();
    let (d, _) = run(&o, &ctx(Capabilities::multi_capture()), &events);
    let amounts: Vec<_> = d.iter().map(cap).collect();
    assert_eq!(
        amounts,
        vec![
            (1897 + 799, false),
            (994, false),
            (2486, false),
            (1896, false),
            (2486, false),
            (1897, true)
        ]
    );
    assert_eq!(amounts.iter().map(|a| a.0).sum::<i64>(), 12455);
}

#[test]
fn jpy_order_has_no_minor_digits_and_still_conserves_the_total() {
    // net = 1200×3 + 360 − 100 = 3860; total 3860 + 500 = 4360.
    let o = order("JPY", &[("A", 3, 1200, 360, 0)], 500, 100, 4360).unwrap();
    assert_eq!(o.total().amount(), m(4360));
    assert_eq!(o.total().to_major_string(), "4360");
    let s: Vec<_> = (1..=3)
        .map(|i| shipment(&format!("S{i}"), &[("A", 1)], false))
        .collect();
    let events: Vec<_> = s.iter().map(Event::Shipment).collect();
    let (d, _) = run(&o, &ctx(Capabilities::multi_capture()), &events);
    // round(3860/3)=1287 (+500), round(7720/3)=2573 → 1286, 3860 − 2573 = 1287.
    assert_eq!(
        d.iter().map(cap).collect::<Vec<_>>(),
        vec![(1787, false), (1286, false), (1287, true)]
    );
}

#[test]
fn kwd_order_with_three_decimals_and_a_cancellation_ends_final_on_the_last_unit() {
    // merchandise: A 12500×2 − 500 = 24500, B 3333×3 = 9999; Σ 34499.
    // order discount 1000: 710.17, 289.83 → 710, 290. nets A 25040, B 9709. total 36749.
    let o = order(
        "KWD",
        &[("A", 2, 12500, 1250, 500), ("B", 3, 3333, 0, 0)],
        2000,
        1000,
        36749,
    )
    .unwrap();
    assert_eq!(o.line_nets(), &[m(25040), m(9709)]);
    assert_eq!(o.total().to_major_string(), "36.749");
    let s1 = shipment("S1", &[("B", 1)], false);
    let c1 = cancellation("C1", &[("A", 2)]);
    let s2 = shipment("S2", &[("B", 2)], false);
    let (d, state) = run(
        &o,
        &ctx(Capabilities::multi_capture()),
        &[
            Event::Shipment(&s1),
            Event::Cancellation(&c1),
            Event::Shipment(&s2),
        ],
    );
    assert_eq!(cap(&d[0]), (3236 + 2000, false)); // round(9709/3) = 3236
    assert_eq!(d[1], Decision::Nothing(NothingReason::ZeroValue));
    assert_eq!(cap(&d[2]), (9709 - 3236, true));
    assert_eq!(state.claimed, m(3236 + 2000 + 9709 - 3236));
}

#[test]
fn last_shipment_flag_cancels_the_rest_and_makes_that_capture_final() {
    let o = usd(12455);
    let s = shipment("S1", &[("L1", 2)], true);
    let (d, state) = run(
        &o,
        &ctx(Capabilities::multi_capture()),
        &[Event::Shipment(&s)],
    );
    assert_eq!(cap(&d[0]), (3793 + 799, true));
    assert_eq!(state.cancelled, vec![1, 2, 1]);
    let late = shipment("S2", &[("L3", 1)], false);
    assert_eq!(
        plan(
            &o,
            &state,
            Event::Shipment(&late),
            &ctx(Capabilities::multi_capture())
        )
        .unwrap_err(),
        Rejection::AfterFinal
    );
}

#[test]
fn cancelling_the_rest_after_two_captures_releases_the_remainder() {
    let o = usd(12455);
    let s1 = shipment("S1", &[("L1", 1), ("L2", 1)], false);
    let s2 = shipment("S2", &[("L1", 1), ("L3", 1)], false);
    let c = cancellation("C1", &[("L1", 1), ("L2", 1)]);
    let events = [
        Event::Shipment(&s1),
        Event::Shipment(&s2),
        Event::Cancellation(&c),
    ];
    let (d, state) = run(&o, &ctx(Capabilities::multi_capture()), &events);
    assert_eq!(
        d[2],
        Decision::ReleaseRemainder {
            method: ReleaseMethod::ZeroAmountFinalCapture,
            sequence: 3
        }
    );
    assert_eq!(state.phase, Phase::Completed);
    let (d, _) = run(&o, &ctx(Capabilities::stripe()), &events);
    assert_eq!(
        d[2],
        Decision::ReleaseRemainder {
            method: ReleaseMethod::Cancel,
            sequence: 3
        }
    );
}

#[test]
fn an_order_cancelled_before_any_capture_voids_its_authorization() {
    let o = usd(12455);
    let c = cancellation("C1", &[("L1", 3), ("L2", 2), ("L3", 1)]);
    let (d, state) = run(
        &o,
        &ctx(Capabilities::multi_capture()),
        &[Event::Cancellation(&c)],
    );
    assert_eq!(d[0], Decision::VoidAuthorization);
    assert_eq!(state.phase, Phase::Completed);
}

#[test]
fn a_short_authorization_caps_the_last_capture_and_records_the_shortfall() {
    let o = usd(10_000);
    let s1 = shipment("S1", &[("L1", 1), ("L2", 1)], false);
    let s2 = shipment("S2", &[("L1", 1), ("L3", 1)], false);
    let s3 = shipment("S3", &[("L1", 1), ("L2", 1)], false);
    let c = ctx(Capabilities::multi_capture());
    let mut state = OrderState::new(&o);
    let mut amounts = Vec::new();
    let mut shortfall = 0;
    for s in [&s1, &s2, &s3] {
        let p = plan(&o, &state, Event::Shipment(s), &c).unwrap();
        amounts.push(cap(&p.decision));
        shortfall += p.shortfall.get();
        state = p.state;
    }
    assert_eq!(
        amounts,
        vec![(5182, false), (2890, false), (10_000 - 5182 - 2890, true)]
    );
    assert_eq!(shortfall, 12455 - 10_000);
    assert_eq!(state.shortfall, m(2455));
    assert_eq!(state.claimed, m(10_000));
}

#[test]
fn an_over_capture_allowance_lets_captures_exceed_the_authorization_up_to_the_allowance() {
    let o = usd(11_000);
    let mut caps = Capabilities::multi_capture();
    caps.over_capture = OverCaptureAllowance {
        basis_points: 1_500,
        cap: Some(m(7_500)),
    };
    let s = shipment("S1", &[("L1", 3), ("L2", 2), ("L3", 1)], false);
    let (d, _) = run(&o, &ctx(caps), &[Event::Shipment(&s)]);
    assert_eq!(cap(&d[0]), (12455, true));
    caps.over_capture.cap = Some(m(1_000));
    let (d, _) = run(&o, &ctx(caps), &[Event::Shipment(&s)]);
    assert_eq!(cap(&d[0]), (12_000, true));
}

#[test]
fn a_single_capture_provider_accumulates_and_captures_once_at_completion() {
    let o = usd(12455);
    let s1 = shipment("S1", &[("L1", 1), ("L2", 1)], false);
    let s2 = shipment("S2", &[("L1", 2), ("L2", 1), ("L3", 1)], false);
    let (d, _) = run(
        &o,
        &ctx(Capabilities::single_capture()),
        &[Event::Shipment(&s1), Event::Shipment(&s2)],
    );
    assert_eq!(d[0], Decision::Nothing(NothingReason::Deferred));
    let Decision::Capture(c) = &d[1] else {
        panic!("{:?}", d[1])
    };
    assert_eq!((c.amount.get(), c.is_final, c.sequence), (12455, true, 1));
    assert_eq!(c.shipping, m(799));
    assert!(!c.release_after, "nothing is left over");
}

#[test]
fn a_capture_limit_coalesces_so_the_last_allowed_capture_is_final() {
    let o = usd(12455);
    let caps = Capabilities {
        mode: CaptureMode::Multiple {
            max_captures: Some(2),
        },
        ..Capabilities::multi_capture()
    };
    let s1 = shipment("S1", &[("L1", 1), ("L2", 1)], false);
    let s2 = shipment("S2", &[("L1", 1), ("L3", 1)], false);
    let s3 = shipment("S3", &[("L1", 1), ("L2", 1)], false);
    let (d, state) = run(
        &o,
        &ctx(caps),
        &[
            Event::Shipment(&s1),
            Event::Shipment(&s2),
            Event::Shipment(&s3),
        ],
    );
    assert_eq!(cap(&d[0]), (5182, false));
    assert_eq!(d[1], Decision::Nothing(NothingReason::Deferred));
    assert_eq!(cap(&d[2]), (2890 + 4383, true));
    assert_eq!(state.captures, 2);
}

#[test]
fn an_approaching_deadline_captures_what_has_shipped_as_the_last_capture() {
    let mut o = usd(12455);
    let caps = Capabilities::single_capture(); // 7-day window, capture 12 h ahead
    let s1 = shipment("S1", &[("L1", 1), ("L2", 1)], false);
    let mut c = ctx(caps);
    c.now = t0() + Duration::days(6) + Duration::hours(13);
    let (d, state) = run(&o, &c, &[Event::Shipment(&s1)]);
    let Decision::Capture(p) = &d[0] else {
        panic!("{:?}", d[0])
    };
    assert_eq!(
        (p.amount.get(), p.is_final, p.release_after),
        (5182, true, true)
    );
    assert_eq!(state.phase, Phase::Completed);

    // The sweeper's deadline tick does the same for value that was deferred earlier.
    c.now = t0();
    let (_, state) = run(&o, &c, &[Event::Shipment(&s1)]);
    c.now = t0() + Duration::days(7);
    let p = plan(&o, &state, Event::Deadline, &c).unwrap();
    assert_eq!(cap(&p.decision), (5182, true));

    // An explicit expires_at from checkout wins over the provider's window.
    let mut draft = o.draft().clone();
    draft.authorization.expires_at = Some(t0() + Duration::hours(20));
    o = Order::new(draft).unwrap();
    c.now = t0() + Duration::hours(9);
    let (d, _) = run(&o, &c, &[Event::Shipment(&s1)]);
    assert_eq!(cap(&d[0]), (5182, true));
}

#[test]
fn after_a_decline_shipments_are_refused_and_cancellations_only_recorded() {
    let o = usd(12455);
    let c = ctx(Capabilities::multi_capture());
    let s1 = shipment("S1", &[("L1", 1)], false);
    let (d, mut state) = run(&o, &c, &[Event::Shipment(&s1)]);
    state.on_declined(m(cap(&d[0]).0));
    assert_eq!(state.phase, Phase::Declined);
    assert_eq!(state.claimed, m(0));
    let s2 = shipment("S2", &[("L2", 1)], false);
    let err = plan(&o, &state, Event::Shipment(&s2), &c).unwrap_err();
    assert_eq!(
        (err.reason(), err),
        ("order_declined", Rejection::AfterDecline)
    );
    let cancel = cancellation("C1", &[("L3", 1)]);
    let p = plan(&o, &state, Event::Cancellation(&cancel), &c).unwrap();
    assert_eq!(p.decision, Decision::Nothing(NothingReason::Latched));
    assert_eq!(p.state.cancelled, vec![0, 0, 1]);
}

#[test]
fn bad_events_are_rejected_with_distinct_reasons_and_leave_the_state_alone() {
    let o = usd(12455);
    let c = ctx(Capabilities::multi_capture());
    let s1 = shipment("S1", &[("L1", 2)], false);
    let (_, state) = run(&o, &c, &[Event::Shipment(&s1)]);
    let cases = [
        (shipment("S1", &[("L1", 2)], false), "duplicate"),
        (shipment("S1", &[("L1", 1)], false), "shipment_conflict"),
        (shipment("S2", &[("L9", 1)], false), "unknown_line"),
        (shipment("S2", &[("L1", 2)], false), "over_shipment"),
    ];
    for (s, reason) in cases {
        let err = plan(&o, &state, Event::Shipment(&s), &c).unwrap_err();
        assert_eq!(err.reason(), reason, "{err}");
    }
    let over = cancellation("C1", &[("L1", 2)]);
    assert_eq!(
        plan(&o, &state, Event::Cancellation(&over), &c)
            .unwrap_err()
            .reason(),
        "over_cancellation"
    );
}

#[test]
fn malformed_orders_are_refused_with_the_rule_they_break() {
    let big = order("USD", &[("A", 2, i64::MAX, 0, 0)], 0, 0, 1);
    assert!(
        matches!(big, Err(OrderError::Money(MoneyError::Overflow { .. }))),
        "{big:?}"
    );
    let disc = order("USD", &[("A", 1, 100, 0, 101)], 0, 0, 100);
    assert!(matches!(disc, Err(OrderError::LineDiscountTooLarge { .. })));
    let odisc = order("USD", &[("A", 1, 100, 50, 0)], 0, 101, 100);
    assert!(matches!(
        odisc,
        Err(OrderError::OrderDiscountTooLarge { .. })
    ));
    let dup = order(
        "USD",
        &[("A", 1, 100, 0, 0), ("A", 1, 100, 0, 0)],
        0,
        0,
        100,
    );
    assert!(matches!(dup, Err(OrderError::DuplicateLine { .. })));
    assert!(matches!(
        order("USD", &[], 0, 0, 100),
        Err(OrderError::NoLines)
    ));
    assert!(matches!(
        order("USD", &[("A", 0, 100, 0, 0)], 0, 0, 100),
        Err(OrderError::InvalidQuantity { .. })
    ));
    assert!(matches!(
        order("USD", &[("A", 1, -1, 0, 0)], 0, 0, 100),
        Err(OrderError::Money(MoneyError::Negative { .. }))
    ));
    let mut draft = order("USD", &[("A", 1, 100, 0, 0)], 0, 0, 100)
        .unwrap()
        .draft()
        .clone();
    draft.payment_currency = Some(cur("EUR"));
    assert!(matches!(
        Order::new(draft),
        Err(OrderError::CurrencyMismatch { .. })
    ));
    assert!(Currency::parse("usd").is_err());
    assert!(
        Currency::parse("XAU").is_err(),
        "no minor unit: not card money"
    );
    assert_eq!(
        (
            cur("JPY").exponent(),
            cur("USD").exponent(),
            cur("KWD").exponent()
        ),
        (0, 2, 3)
    );
}

#[test]
fn prorated_shipping_follows_units_and_is_complete_when_the_order_completes() {
    let o = order("USD", &[("A", 4, 1000, 0, 0)], 1000, 0, 5000).unwrap();
    let mut c = ctx(Capabilities::multi_capture());
    c.shipping = ShippingPolicy::Prorated;
    let s1 = shipment("S1", &[("A", 1)], false);
    let s2 = shipment("S2", &[("A", 1)], false);
    let cancel = cancellation("C1", &[("A", 2)]);
    let (d, _) = run(
        &o,
        &c,
        &[
            Event::Shipment(&s1),
            Event::Shipment(&s2),
            Event::Cancellation(&cancel),
        ],
    );
    assert_eq!(cap(&d[0]), (1000 + 250, false));
    assert_eq!(cap(&d[1]), (1000 + 250, false));
    // Half the units were cancelled: the rest of the shipping is owed by what did ship.
    assert_eq!(cap(&d[2]), (500, true));
}

/// The USD example authorized at `t0` with checkout's `expires_at`.
fn usd_expiring(expires_at: Option<chrono::DateTime<chrono::Utc>>) -> Order {
    let mut draft = usd(12455).draft().clone();
    draft.authorization.expires_at = expires_at;
    Order::new(draft).unwrap()
}

/// A plan context for multi-capture at `now`.
fn at(now: chrono::DateTime<chrono::Utc>) -> PlanContext {
    let mut c = ctx(Capabilities::multi_capture());
    c.now = now;
    c
}

#[test]
fn a_shipment_after_the_authorization_lapsed_is_refused_and_one_just_before_is_captured() {
    let expires_at = t0() + Duration::days(7);
    let o = usd_expiring(Some(expires_at));
    let s1 = shipment("S1", &[("L1", 1), ("L2", 1)], false);
    let state = OrderState::new(&o);

    let before = plan(
        &o,
        &state,
        Event::Shipment(&s1),
        &at(expires_at - Duration::seconds(1)),
    )
    .unwrap();
    assert_eq!(cap(&before.decision), (5182, false));

    for now in [expires_at, expires_at + Duration::days(1)] {
        let err = plan(&o, &state, Event::Shipment(&s1), &at(now)).unwrap_err();
        assert_eq!(
            (err.reason(), &err),
            (
                "authorization_inactive",
                &Rejection::AuthorizationInactive {
                    authorization_id: AuthorizationId::parse("pi_test_1").unwrap(),
                    expires_at,
                }
            )
        );
        assert!(
            err.to_string().contains("pi_test_1"),
            "the detail names the authorization: {err}"
        );
    }

    // Without expires_at the authorization never lapses, however old it is (the provider's
    // window only makes the worker capture ahead of it).
    let open_ended = usd_expiring(None);
    let late = plan(
        &open_ended,
        &OrderState::new(&open_ended),
        Event::Shipment(&s1),
        &at(t0() + Duration::days(365)),
    )
    .unwrap();
    assert_eq!(cap(&late.decision), (5182, false));
}

#[test]
fn after_the_lapse_a_completed_or_declined_order_keeps_its_own_reason() {
    let expires_at = t0() + Duration::days(7);
    let o = usd_expiring(Some(expires_at));
    let c = ctx(Capabilities::multi_capture());
    let last = shipment("S1", &[("L1", 1)], true);
    let (_, completed) = run(&o, &c, &[Event::Shipment(&last)]);
    let s1 = shipment("S1", &[("L1", 1)], false);
    let (d, mut declined) = run(&o, &c, &[Event::Shipment(&s1)]);
    declined.on_declined(m(cap(&d[0]).0));

    let late = shipment("S2", &[("L2", 1)], false);
    let after = at(expires_at + Duration::hours(1));
    assert_eq!(
        plan(&o, &completed, Event::Shipment(&late), &after).unwrap_err(),
        Rejection::AfterFinal
    );
    assert_eq!(
        plan(&o, &declined, Event::Shipment(&late), &after).unwrap_err(),
        Rejection::AfterDecline
    );
}

#[test]
fn cancellations_after_the_lapse_are_recorded_without_a_release_or_void() {
    let expires_at = t0() + Duration::days(7);
    let o = usd_expiring(Some(expires_at));
    let s1 = shipment("S1", &[("L1", 1), ("L2", 1)], false);
    let (_, shipped) = run(
        &o,
        &ctx(Capabilities::multi_capture()),
        &[Event::Shipment(&s1)],
    );
    let after = at(expires_at);

    // Part of the rest: recorded, the order stays open.
    let c1 = cancellation("C1", &[("L3", 1)]);
    let p1 = plan(&o, &shipped, Event::Cancellation(&c1), &after).unwrap();
    assert_eq!(
        p1.decision,
        Decision::Nothing(NothingReason::AuthorizationLapsed)
    );
    assert_eq!(p1.state.cancelled, vec![0, 0, 1]);
    assert_eq!(p1.state.phase, Phase::Open);

    // The rest: before the lapse this releases the remainder; after it nothing is sent and
    // the order is closed, its claims unchanged.
    let c2 = cancellation("C2", &[("L1", 2), ("L2", 1)]);
    let in_time = plan(
        &o,
        &p1.state,
        Event::Cancellation(&c2),
        &at(expires_at - Duration::seconds(1)),
    )
    .unwrap();
    assert!(
        matches!(in_time.decision, Decision::ReleaseRemainder { .. }),
        "{:?}",
        in_time.decision
    );
    let p2 = plan(&o, &p1.state, Event::Cancellation(&c2), &after).unwrap();
    assert_eq!(
        p2.decision,
        Decision::Nothing(NothingReason::AuthorizationLapsed)
    );
    assert_eq!(p2.state.cancelled, vec![2, 1, 1]);
    assert_eq!(p2.state.phase, Phase::Completed);
    assert_eq!(
        (p2.state.claimed, p2.state.captures),
        (shipped.claimed, shipped.captures)
    );

    // An order cancelled whole after the lapse is not voided either.
    let all = cancellation("C3", &[("L1", 3), ("L2", 2), ("L3", 1)]);
    let p3 = plan(&o, &OrderState::new(&o), Event::Cancellation(&all), &after).unwrap();
    assert_eq!(
        p3.decision,
        Decision::Nothing(NothingReason::AuthorizationLapsed)
    );
    assert_eq!(p3.state.phase, Phase::Completed);
}

#[test]
fn a_deadline_tick_after_the_lapse_sends_nothing() {
    let expires_at = t0() + Duration::days(7);
    let o = usd_expiring(Some(expires_at));
    let mut c = ctx(Capabilities::single_capture());
    let s1 = shipment("S1", &[("L1", 1), ("L2", 1)], false);
    let (d, waiting) = run(&o, &c, &[Event::Shipment(&s1)]);
    assert_eq!(d[0], Decision::Nothing(NothingReason::Deferred));

    c.now = expires_at - Duration::minutes(1);
    let in_time = plan(&o, &waiting, Event::Deadline, &c).unwrap();
    assert_eq!(cap(&in_time.decision), (5182, true));

    c.now = expires_at;
    let late = plan(&o, &waiting, Event::Deadline, &c).unwrap();
    assert_eq!(
        late.decision,
        Decision::Nothing(NothingReason::AuthorizationLapsed)
    );
    assert_eq!(late.state, waiting, "nothing changes");
}

#[test]
fn a_declined_order_resumed_with_a_fresh_authorization_accepts_shipments_after_the_old_one_lapsed()
{
    let expires_at = t0() + Duration::days(7);
    let o = usd_expiring(Some(expires_at));
    let c = ctx(Capabilities::multi_capture());
    let s1 = shipment("S1", &[("L1", 1), ("L2", 1)], false);
    let (d, mut state) = run(&o, &c, &[Event::Shipment(&s1)]);
    let Decision::Capture(declined) = &d[0] else {
        panic!("{:?}", d[0])
    };
    state.on_declined(declined.amount);
    let carried = [plan::Carried {
        lines: declined.lines.clone(),
        shipping: declined.shipping,
        shortfall: m(0),
    }];
    let now = expires_at + Duration::days(1);
    let fresh = |id: &str, expires_at| Authorization {
        provider: ProviderName::parse("sandbox").unwrap(),
        authorization_id: AuthorizationId::parse(id).unwrap(),
        amount: m(12455),
        authorized_at: now - Duration::minutes(5),
        expires_at,
    };

    // A new authorization that has itself lapsed is refused: its capture would be refused.
    let stale = plan::resume(
        &o,
        &state,
        fresh("pi_stale", Some(now - Duration::minutes(1))),
        &carried,
        &at(now),
    );
    assert!(
        matches!(
            stale,
            Err(plan::ResumeError::Plan(
                Rejection::AuthorizationInactive { .. }
            ))
        ),
        "{stale:?}"
    );

    let resumed = plan::resume(
        &o,
        &state,
        fresh("pi_fresh", Some(now + Duration::days(7))),
        &carried,
        &at(now),
    )
    .unwrap();
    assert_eq!(cap(&resumed.plan.decision), (5182, false));
    let s2 = shipment("S2", &[("L1", 2), ("L2", 1), ("L3", 1)], false);
    let next = plan(
        &resumed.order,
        &resumed.plan.state,
        Event::Shipment(&s2),
        &at(now),
    )
    .unwrap();
    assert_eq!(cap(&next.decision), (12455 - 5182, true));
    // On the old authorization the same shipment is refused.
    assert_eq!(
        plan(&o, &OrderState::new(&o), Event::Shipment(&s2), &at(now))
            .unwrap_err()
            .reason(),
        "authorization_inactive"
    );
}

/// Stripe's minimum (0.50 USD): a 0.30 parcel waits for the next capture; a final remainder
/// still below the minimum is not sent but recorded as shortfall, and the rest of the hold
/// released.
#[test]
fn value_below_the_minimum_rides_with_the_next_capture_and_a_final_remainder_below_it_is_shortfall()
{
    let o = order(
        "USD",
        &[
            ("L1", 1, 30, 0, 0),
            ("L2", 1, 2000, 0, 0),
            ("L3", 1, 20, 0, 0),
        ],
        0,
        0,
        2050,
    )
    .unwrap();
    let s1 = shipment("S1", &[("L1", 1)], false);
    let s2 = shipment("S2", &[("L2", 1)], false);
    let s3 = shipment("S3", &[("L3", 1)], false);
    let (d, state) = run(
        &o,
        &ctx(Capabilities::stripe()),
        &[
            Event::Shipment(&s1),
            Event::Shipment(&s2),
            Event::Shipment(&s3),
        ],
    );
    assert_eq!(d[0], Decision::Nothing(NothingReason::BelowMinimum));
    assert_eq!(cap(&d[1]), (2030, false), "the 0.30 rides with the 20.00");
    assert_eq!(
        d[2],
        Decision::ReleaseRemainder {
            method: ReleaseMethod::Cancel,
            sequence: 2
        }
    );
    assert_eq!(
        state.shortfall,
        m(20),
        "the 0.20 remainder is recorded for finance"
    );
    assert_eq!(state.claimed, m(2030));
    assert_eq!(state.phase, Phase::Completed);
}

//! Capture-count limits (Stripe 50 per PaymentIntent, Checkout.com 150 partial actions) are
//! honoured by coalescing: the last allowed capture carries everything still to ship and is
//! the final one, and the captures add up to the order total exactly.

use capture_worker::domain::*;

use crate::support::*;

/// One line of `parcels` units at 19.99 with 4.00 tax in all, 7.99 shipping, fully authorized.
fn order_of(parcels: i64) -> Order {
    let o = order("USD", &[("L1", parcels, 1999, 400, 0)], 799, 0, 0).unwrap();
    let total = o.total().amount().get();
    order("USD", &[("L1", parcels, 1999, 400, 0)], 799, 0, total).unwrap()
}

/// Ships `parcels` one-unit parcels under `caps` and returns the decisions.
fn ship_one_by_one(o: &Order, parcels: i64, caps: Capabilities) -> (Vec<Decision>, OrderState) {
    let shipments: Vec<Shipment> = (1..=parcels)
        .map(|i| shipment(&format!("S{i}"), &[("L1", 1)], false))
        .collect();
    let events: Vec<Event<'_>> = shipments.iter().map(Event::Shipment).collect();
    run(o, &ctx(caps), &events)
}

fn captures(decisions: &[Decision]) -> Vec<(i64, bool)> {
    decisions
        .iter()
        .filter(|d| matches!(d, Decision::Capture(_)))
        .map(cap)
        .collect()
}

#[test]
fn a_sixty_parcel_order_on_stripe_makes_fifty_captures_the_last_final_and_the_total_exact() {
    let o = order_of(60);
    let total = o.total().amount().get();

    let (decisions, state) = ship_one_by_one(&o, 60, Capabilities::stripe());

    let made = captures(&decisions);
    assert_eq!(made.len(), 50, "at most Stripe's 50 captures");
    assert!(made[..49].iter().all(|(_, is_final)| !is_final));
    assert!(made[49].1, "the 50th capture is the final one");
    assert_eq!(made.iter().map(|c| c.0).sum::<i64>(), total);
    // Parcels 50 to 59 wait for the last one, which carries eleven parcels' worth.
    for d in &decisions[49..59] {
        assert_eq!(d, &Decision::Nothing(NothingReason::Deferred));
    }
    assert!(matches!(&decisions[59], Decision::Capture(c) if c.is_final && c.sequence == 50));
    assert_eq!(state.captures, 50);
    assert_eq!(state.claimed, m(total));
    assert_eq!(state.phase, Phase::Completed);
}

#[test]
fn checkout_coms_150_partial_actions_are_honoured_the_same_way() {
    let o = order_of(160);
    let total = o.total().amount().get();

    let (decisions, state) = ship_one_by_one(&o, 160, Capabilities::checkout());

    let made = captures(&decisions);
    assert_eq!(made.len(), 150);
    assert_eq!(made.iter().filter(|c| c.1).count(), 1);
    assert!(made[149].1);
    assert_eq!(made.iter().map(|c| c.0).sum::<i64>(), total);
    assert_eq!(state.claimed, m(total));
}

#[test]
fn under_the_limit_every_parcel_is_its_own_capture() {
    let o = order_of(50);

    let (decisions, _) = ship_one_by_one(&o, 50, Capabilities::stripe());

    let made = captures(&decisions);
    assert_eq!(made.len(), 50);
    assert_eq!(made.iter().filter(|c| c.1).count(), 1);
    assert!(made[49].1);
    assert_eq!(
        made.iter().map(|c| c.0).sum::<i64>(),
        o.total().amount().get()
    );
}

#[test]
fn any_limit_keeps_the_count_the_single_final_and_the_total() {
    for limit in 1..=6u32 {
        for parcels in 1..=9i64 {
            let o = order_of(parcels);
            let caps = Capabilities {
                mode: if limit == 1 {
                    CaptureMode::Single
                } else {
                    CaptureMode::Multiple {
                        max_captures: Some(limit),
                    }
                },
                ..Capabilities::stripe()
            };

            let (decisions, _) = ship_one_by_one(&o, parcels, caps);

            let made = captures(&decisions);
            assert!(
                made.len() <= limit as usize,
                "limit {limit}, {parcels} parcels"
            );
            assert_eq!(made.iter().filter(|c| c.1).count(), 1);
            assert!(made.last().unwrap().1, "the last capture is final");
            assert_eq!(
                made.iter().map(|c| c.0).sum::<i64>(),
                o.total().amount().get(),
                "limit {limit}, {parcels} parcels"
            );
        }
    }
}

#[test]
fn a_single_capture_provider_captures_once_after_the_last_of_three_parcels() {
    let o = order_of(3);

    let (decisions, _) = ship_one_by_one(&o, 3, Capabilities::hellgate());

    assert_eq!(decisions[0], Decision::Nothing(NothingReason::Deferred));
    assert_eq!(decisions[1], Decision::Nothing(NothingReason::Deferred));
    assert_eq!(cap(&decisions[2]), (o.total().amount().get(), true));
    let Decision::Capture(only) = &decisions[2] else {
        unreachable!()
    };
    assert!(!only.release_after, "the single capture closes the payment");
}

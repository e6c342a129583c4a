//! Allocation and capture planning on random orders and random parcels: planning never panics,
//! never claims more than authorized, moves money only in positive amounts, plans at most one
//! final request and nothing after it, and, when every unit ships, captures exactly what a
//! naive re-computation of the order total says (capped by the authorization).
#![no_main]

use arbitrary::{Result, Unstructured};
use capture_worker::domain::*;
use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;

struct LineIn {
    qty: u32,
    unit: i64,
    tax: i64,
    discount: i64,
}

/// Σ (unit × qty − discount + tax) − order discount + shipping: the order-level identity the
/// largest-remainder split must preserve (shares add up to the discount).
fn naive_total(lines: &[LineIn], order_discount: i64, shipping: i64) -> i128 {
    lines
        .iter()
        .map(|l| i128::from(l.unit) * i128::from(l.qty) - i128::from(l.discount) + i128::from(l.tax))
        .sum::<i128>()
        - i128::from(order_discount)
        + i128::from(shipping)
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let currency = *u.choose(&["USD", "JPY", "KWD"])?;
    let n = u.int_in_range(1..=8usize)?;
    let mut lines = Vec::with_capacity(n);
    for _ in 0..n {
        let qty = u.int_in_range(1..=10_000u32)?;
        let unit = u.int_in_range(0..=10_000_000i64)?;
        let merch = unit * i64::from(qty);
        lines.push(LineIn {
            qty,
            unit,
            tax: u.int_in_range(0..=1_000_000i64)?,
            discount: u.int_in_range(0..=merch)?,
        });
    }
    let merch_total: i64 = lines.iter().map(|l| l.unit * i64::from(l.qty) - l.discount).sum();
    let order_discount = u.int_in_range(0..=merch_total)?;
    let shipping = u.int_in_range(0..=100_000i64)?;
    let total = naive_total(&lines, order_discount, shipping);
    let authorized_pct = u.int_in_range(40..=130i128)?;
    let authorized = i64::try_from((total * authorized_pct / 100).max(1)).unwrap_or(i64::MAX);
    let caps = match u.int_in_range(0..=3u8)? {
        0 => Capabilities::multi_capture(),
        1 => Capabilities::stripe(),
        2 => Capabilities::single_capture(),
        _ => Capabilities {
            mode: CaptureMode::Multiple { max_captures: Some(2) },
            ..Capabilities::multi_capture()
        },
    };
    let t0 = Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).single().unwrap_or_default();
    let m = |v: i64| MinorUnits::new(v).expect("generated amounts are non-negative");
    let draft = OrderDraft {
        order_id: OrderId::parse("ORD-F").expect("valid id"),
        currency: Currency::parse(currency).expect("valid currency"),
        lines: lines
            .iter()
            .enumerate()
            .map(|(i, l)| OrderLine {
                line_id: LineId::parse(format!("L{i}")).expect("valid id"),
                sku: format!("SKU{i}"),
                name: format!("Item {i}"),
                quantity: Quantity::new(i64::from(l.qty)).expect("valid quantity"),
                unit_amount: m(l.unit),
                tax_amount: m(l.tax),
                discount_amount: m(l.discount),
            })
            .collect(),
        shipping_amount: m(shipping),
        order_discount_amount: m(order_discount),
        authorization: Authorization {
            provider: ProviderName::parse("sandbox").expect("valid provider"),
            authorization_id: AuthorizationId::parse("pi_f").expect("valid id"),
            amount: m(authorized),
            authorized_at: t0,
            expires_at: None,
        },
        payment_currency: None,
    };
    let order = Order::new(draft).expect("a generated order is valid");
    assert_eq!(i128::from(order.total().amount().get()), total, "order total");
    let ctx = PlanContext {
        capabilities: caps,
        shipping: if u.arbitrary()? { ShippingPolicy::Prorated } else { ShippingPolicy::FirstCapture },
        now: t0,
    };

    let mut state = OrderState::new(&order);
    let mut captured: i128 = 0;
    let mut finals = 0;
    let mut plain_shipments = true;
    for k in 0..64 {
        let remaining: Vec<(usize, u32)> = order
            .lines()
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.quantity.get() - state.shipped[i] - state.cancelled[i]))
            .filter(|&(_, r)| r > 0)
            .collect();
        if remaining.is_empty() {
            break;
        }
        let mut items = Vec::new();
        for &(i, r) in &remaining {
            if u.arbitrary()? || items.is_empty() && i == remaining[remaining.len() - 1].0 {
                let q = if u.is_empty() { r } else { u.int_in_range(1..=r)? };
                items.push(Item {
                    line_id: LineId::parse(format!("L{i}")).expect("valid id"),
                    quantity: Quantity::new(i64::from(q)).expect("valid quantity"),
                });
            }
        }
        let kind = if u.is_empty() { 9 } else { u.int_in_range(0..=9u8)? };
        let plan = if kind == 0 {
            plain_shipments = false;
            let c = Cancellation::new(EventId::parse(format!("C{k}")).expect("id"), items)
                .expect("valid cancellation");
            plan(&order, &state, Event::Cancellation(&c), &ctx)
        } else {
            let last = kind == 1;
            plain_shipments &= !last;
            let s = Shipment::new(ShipmentId::parse(format!("S{k}")).expect("id"), items, last, t0)
                .expect("valid shipment");
            plan(&order, &state, Event::Shipment(&s), &ctx)
        };
        let Ok(p) = plan else {
            // A typed rejection leaves the state as it was; after the final, everything is
            // refused.
            assert!(finals > 0 || matches!(plan, Err(Rejection::AmountOverflow(_))), "{plan:?}");
            break;
        };
        assert_eq!(finals, 0, "nothing is planned after the final request");
        match &p.decision {
            Decision::Capture(c) => {
                assert!(c.amount.get() > 0, "a capture moves money");
                captured += i128::from(c.amount.get());
                if c.is_final {
                    finals += 1;
                }
            }
            Decision::ReleaseRemainder { .. } | Decision::VoidAuthorization => finals += 1,
            Decision::Nothing(_) => {}
        }
        assert!(captured <= i128::from(authorized), "never more than authorized");
        assert_eq!(i128::from(p.state.claimed.get()), captured, "claims follow captures");
        state = p.state;
    }
    if state.is_resolved(&order) {
        assert_eq!(finals, 1, "a completed order has exactly one final request");
        if plain_shipments {
            // Whatever the provider's limits (coalescing, a single capture), every unit shipped
            // means the whole total, capped by the authorization.
            assert_eq!(captured, total.min(i128::from(authorized)), "captures add up to the total");
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

//! Builders for orders, shipments and cancellations used across tests.

use capture_worker::domain::*;
use chrono::{DateTime, TimeZone, Utc};

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap()
}

pub fn m(v: i64) -> MinorUnits {
    MinorUnits::new(v).unwrap()
}

pub fn cur(code: &str) -> Currency {
    Currency::parse(code).unwrap()
}

/// (line id, quantity, unit, tax, discount)
pub type LineSpec<'a> = (&'a str, i64, i64, i64, i64);

pub fn order(
    currency: &str,
    lines: &[LineSpec<'_>],
    shipping: i64,
    order_discount: i64,
    authorized: i64,
) -> Result<Order, OrderError> {
    Order::new(OrderDraft {
        order_id: OrderId::parse("ORD-1").unwrap(),
        currency: cur(currency),
        lines: lines
            .iter()
            .map(|(id, qty, unit, tax, disc)| {
                Ok(OrderLine {
                    line_id: LineId::parse(*id).unwrap(),
                    sku: format!("SKU-{id}"),
                    name: format!("Item {id}"),
                    quantity: Quantity::new(*qty)?,
                    unit_amount: MinorUnits::new(*unit)?,
                    tax_amount: MinorUnits::new(*tax)?,
                    discount_amount: MinorUnits::new(*disc)?,
                })
            })
            .collect::<Result<_, OrderError>>()?,
        shipping_amount: MinorUnits::new(shipping)?,
        order_discount_amount: MinorUnits::new(order_discount)?,
        authorization: Authorization {
            provider: ProviderName::parse("sandbox").unwrap(),
            authorization_id: AuthorizationId::parse("pi_test_1").unwrap(),
            amount: MinorUnits::new(authorized)?,
            authorized_at: t0(),
            expires_at: None,
        },
        payment_currency: None,
    })
}

pub fn items(list: &[(&str, i64)]) -> Vec<Item> {
    list.iter()
        .map(|(id, q)| Item {
            line_id: LineId::parse(*id).unwrap(),
            quantity: Quantity::new(*q).unwrap(),
        })
        .collect()
}

pub fn shipment(id: &str, list: &[(&str, i64)], last: bool) -> Shipment {
    Shipment::new(ShipmentId::parse(id).unwrap(), items(list), last, t0()).unwrap()
}

pub fn cancellation(id: &str, list: &[(&str, i64)]) -> Cancellation {
    Cancellation::new(EventId::parse(id).unwrap(), items(list)).unwrap()
}

pub fn ctx(capabilities: Capabilities) -> PlanContext {
    PlanContext {
        capabilities,
        shipping: ShippingPolicy::FirstCapture,
        now: t0(),
    }
}

/// Applies events in order, returning every decision and the final state; panics on a rejection.
pub fn run(order: &Order, ctx: &PlanContext, events: &[Event<'_>]) -> (Vec<Decision>, OrderState) {
    let mut state = OrderState::new(order);
    let mut decisions = Vec::new();
    for e in events {
        let p = plan(order, &state, *e, ctx).unwrap();
        decisions.push(p.decision);
        state = p.state;
    }
    (decisions, state)
}

/// The capture amount of a decision, and whether it is final; panics if it is not a capture.
pub fn cap(d: &Decision) -> (i64, bool) {
    match d {
        Decision::Capture(c) => (c.amount.get(), c.is_final),
        other => panic!("expected a capture, got {other:?}"),
    }
}

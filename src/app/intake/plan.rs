//! Planning a message: what it asks to plan, the planning step both paths take, and the
//! fingerprint of an order registration.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::domain::{self, Capabilities, Event, Order, PlanContext, Rejection};
use crate::storage::ledger::{IntakeBatch, NewInbox, StoredOrder};

use super::Intake;
use super::refuse::Refusal;
use super::rows::{added_value, stage_plan};

#[derive(Clone, Copy)]
pub(super) enum PlanInput<'a> {
    Shipment(&'a domain::Shipment),
    Cancellation(&'a domain::Cancellation),
}

/// Why a planned message adds no rows of its own beyond its inbox row.
pub(super) enum Verdict {
    /// The same shipment or cancellation was planned before.
    Duplicate,
    /// Planning refused it.
    Refused(Refusal),
    /// It would cut value as shortfall, and the caller asked to wait instead (an increment of
    /// the hold is unanswered).
    WouldCut,
}

impl Intake {
    /// The planning step of a shipment or cancellation, the same on both paths: plans it
    /// against its order as read under the order's lock (with the earlier event of the same
    /// id, if any, in its state) and adds what the plan decided to `writes` (the plan, the
    /// event's row with the decision's name, and `inbox`, the message as processed). Returns
    /// the orders with captures to send, or why nothing was added. With `not_short`, a plan
    /// that would record shortfall adds nothing ([`Verdict::WouldCut`]).
    #[allow(clippy::too_many_arguments)] // the order as read, the event, and what its rows carry
    pub(super) fn stage_event<'a>(
        &self,
        writes: &mut IntakeBatch<'a>,
        stored: &'a StoredOrder,
        caps: Capabilities,
        input: PlanInput<'a>,
        now: DateTime<Utc>,
        traceparent: Option<&'a str>,
        inbox: NewInbox<'a>,
        not_short: bool,
    ) -> Result<Vec<String>, Verdict> {
        let order_id = stored.order.order_id();
        let ctx = PlanContext {
            capabilities: caps,
            shipping: self.shipping,
            now,
        };
        let event = match input {
            PlanInput::Shipment(s) => Event::Shipment(s),
            PlanInput::Cancellation(c) => Event::Cancellation(c),
        };
        let plan = match domain::plan(&stored.order, &stored.state, event, &ctx) {
            Ok(p) => p,
            Err(Rejection::Duplicate) => return Err(Verdict::Duplicate),
            Err(rej) => {
                return Err(Verdict::Refused(Refusal {
                    reason: rej.reason().to_owned(),
                    detail: format!("order {order_id}: {rej}"),
                }));
            }
        };
        if not_short && !plan.shortfall.is_zero() {
            return Err(Verdict::WouldCut);
        }
        let Some(shipped_value) =
            added_value(&stored.order, &stored.state, &plan.state, self.shipping)
        else {
            return Err(Verdict::Refused(Refusal {
                reason: "amount_overflow".into(),
                detail: format!("order {order_id}: the shipped value overflows 64-bit minor units"),
            }));
        };
        Ok(stage_plan(
            writes,
            &stored.order,
            input,
            plan,
            shipped_value,
            traceparent,
            inbox,
        ))
    }
}

/// A content hash of an order registration, independent of the message id and of key order.
pub(super) fn order_fingerprint(order: &Order) -> String {
    let auth = order.authorization();
    let lines: Vec<serde_json::Value> = order
        .lines()
        .iter()
        .map(|l| {
            serde_json::json!([
                l.line_id.as_str(),
                l.sku,
                l.name,
                l.quantity.get(),
                l.unit_amount.get(),
                l.tax_amount.get(),
                l.discount_amount.get()
            ])
        })
        .collect();
    let canonical = serde_json::json!([
        order.currency().code(),
        order.shipping_amount().get(),
        order.order_discount_amount().get(),
        auth.provider.as_str(),
        auth.authorization_id.as_str(),
        auth.amount.get(),
        auth.authorized_at.to_rfc3339(),
        auth.expires_at.map(|t| t.to_rfc3339()),
        lines,
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

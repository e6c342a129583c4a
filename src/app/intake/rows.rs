//! What a message writes: the rows each decision adds to intake's write set
//! ([`IntakeBatch`]), the same whether the message is one of a batch or on its own. Storage
//! persists a write set in one statement (`LedgerTx::store_intake_batch`), so an order, a
//! shipment, a cancellation or an inbox row has one writer.

use chrono::{DateTime, Utc};

use crate::domain::{self, Capabilities, Decision, MinorUnits, Order, OrderState, Plan};
use crate::queue::consumer::IncomingMessage;
use crate::queue::wire::Parsed;
use crate::storage::ledger::{
    AWAITING_INCREMENT, InboxStatus, IntakeBatch, NewCancellation, NewInbox, NewOrder, NewShipment,
};
use crate::storage::plans::PlanCause;

use super::plan::PlanInput;

/// Where a message ends in the inbox.
pub(super) enum Entry {
    /// Its effect is stored (or it had none: a duplicate).
    Processed,
    /// Waiting for its order until this time; its body is kept meanwhile.
    Parked(DateTime<Utc>),
    /// Waiting, until this time at the latest, for the answer to an increment of its order's
    /// hold (reason [`AWAITING_INCREMENT`]); its body is kept meanwhile.
    AwaitingIncrement(DateTime<Utc>),
    /// Refused with this reason.
    Rejected(String),
}

/// The message's inbox row.
pub(super) fn inbox_row<'a>(
    message: &'a IncomingMessage,
    parsed: &'a Parsed,
    body_hash: &'a str,
    entry: Entry,
) -> NewInbox<'a> {
    let (status, reject_reason, park_expires_at) = match entry {
        Entry::Processed => (InboxStatus::Processed, None, None),
        Entry::Parked(until) => (InboxStatus::Parked, None, Some(until)),
        Entry::AwaitingIncrement(until) => (
            InboxStatus::Parked,
            Some(AWAITING_INCREMENT.to_owned()),
            Some(until),
        ),
        Entry::Rejected(reason) => (InboxStatus::Rejected, Some(reason), None),
    };
    NewInbox {
        message_id: parsed.envelope.message_id.as_str(),
        message_type: parsed.envelope.message_type.as_str(),
        order_id: Some(parsed.command.order_id().as_str()),
        payload_hash: body_hash,
        status,
        reject_reason,
        body: park_expires_at.map(|_| message.body.as_slice()),
        routing_key: Some(&message.routing_key),
        traceparent: message.traceparent.as_deref(),
        tracestate: message.tracestate.as_deref(),
        park_expires_at,
    }
}

/// Adds a new order (with its lines) and its message, processed. `payload_hash` is the
/// registration's fingerprint.
pub(super) fn stage_order<'a>(
    writes: &mut IntakeBatch<'a>,
    order: &'a Order,
    caps: Capabilities,
    payload_hash: String,
    inbox: NewInbox<'a>,
) {
    writes.orders.push(NewOrder {
        order,
        allowance: caps
            .over_capture
            .for_authorized(order.authorization().amount),
        message_id: inbox.message_id,
        payload_hash,
    });
    writes.inbox.push(inbox);
}

/// What a plan adds to the order's shipped value; `None` when it overflows 64-bit minor units.
pub(super) fn added_value(
    order: &Order,
    before: &OrderState,
    after: &OrderState,
    shipping: domain::ShippingPolicy,
) -> Option<MinorUnits> {
    let before = domain::shipped_value(order, before, shipping).ok()?;
    let after = domain::shipped_value(order, after, shipping).ok()?;
    Some(after.saturating_sub(before))
}

/// Adds what the plan of a shipment or cancellation decided: the plan (progress and capture
/// rows), the shipment or cancellation row with the decision's name, and the message,
/// processed. `traceparent` is the trace the captures' execution continues. Returns the
/// orders with captures to send.
pub(super) fn stage_plan<'a>(
    writes: &mut IntakeBatch<'a>,
    order: &'a Order,
    input: PlanInput<'a>,
    plan: Plan,
    shipped_value: MinorUnits,
    traceparent: Option<&'a str>,
    inbox: NewInbox<'a>,
) -> Vec<String> {
    let order_id = order.order_id();
    // A plan that moves money has capture rows to send.
    let dispatch = if matches!(plan.decision, Decision::Nothing(_)) {
        Vec::new()
    } else {
        vec![order_id.as_str().to_owned()]
    };
    let cause = match input {
        PlanInput::Shipment(s) => PlanCause::Shipment(s.shipment_id()),
        PlanInput::Cancellation(c) => PlanCause::Cancellation(c.cancellation_id()),
    };
    let decision = writes.record_plan(order, plan, cause, traceparent);
    match input {
        PlanInput::Shipment(shipment) => writes.shipments.push(NewShipment {
            order_id,
            shipment,
            message_id: inbox.message_id,
            shipped_value,
            decision,
        }),
        PlanInput::Cancellation(cancellation) => writes.cancellations.push(NewCancellation {
            order_id,
            cancellation,
            decision,
        }),
    }
    writes.inbox.push(inbox);
    dispatch
}

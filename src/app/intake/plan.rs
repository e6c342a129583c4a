//! What a message asks to plan, and the fingerprint of an order registration.

use sha2::{Digest, Sha256};

use crate::domain::{self, Order};

#[derive(Clone, Copy)]
pub(super) enum PlanInput<'a> {
    Shipment(&'a domain::Shipment),
    Cancellation(&'a domain::Cancellation),
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

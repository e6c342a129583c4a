//! Planning's output turned into rows: the capture rows a plan asks for, and the fingerprint
//! of an order registration.

use sha2::{Digest, Sha256};

use crate::domain::{self, Decision, MinorUnits, Order, ReleaseMethod};
use crate::storage::ledger::{CaptureKind, NewCapture, StoredCaptureLine};

#[derive(Clone, Copy)]
pub(super) enum PlanInput<'a> {
    Shipment(&'a domain::Shipment),
    Cancellation(&'a domain::Cancellation),
}

/// The capture rows a plan asks for (none, one, or a capture and the release after it) and the
/// decision's label for the shipment or cancellation row. Shared by the per-message and the
/// batched intake so both store exactly the same rows.
pub(super) fn capture_rows<'a>(
    order: &'a Order,
    plan: &domain::Plan,
    cause_kind: &'static str,
    cause_id: &'a str,
    traceparent: Option<&'a str>,
) -> (Vec<NewCapture<'a>>, String) {
    let mut rows = Vec::new();
    let label = match &plan.decision {
        Decision::Capture(cp) => {
            let lines = cp
                .lines
                .iter()
                .map(|l| {
                    let line = order.line_index(&l.line_id).map(|i| &order.lines()[i]);
                    StoredCaptureLine {
                        line_id: l.line_id.as_str().to_owned(),
                        sku: line.map(|x| x.sku.clone()).unwrap_or_default(),
                        name: line.map(|x| x.name.clone()).unwrap_or_default(),
                        units: l.units,
                        amount: l.amount.get(),
                    }
                })
                .collect();
            rows.push(NewCapture {
                order,
                sequence: cp.sequence,
                kind: CaptureKind::Capture,
                cause_kind,
                cause_id,
                amount: cp.amount,
                is_final: cp.is_final,
                release_after: cp.release_after,
                lines,
                shipping: cp.shipping,
                shortfall: plan.shortfall,
                traceparent,
            });
            if cp.release_after {
                rows.push(NewCapture {
                    order,
                    sequence: cp.sequence + 1,
                    kind: CaptureKind::Release,
                    cause_kind,
                    cause_id,
                    amount: MinorUnits::ZERO,
                    is_final: false,
                    release_after: false,
                    lines: Vec::new(),
                    shipping: MinorUnits::ZERO,
                    shortfall: MinorUnits::ZERO,
                    traceparent,
                });
            }
            "capture".to_owned()
        }
        Decision::ReleaseRemainder { method, sequence } => {
            let (kind, amount) = match method {
                ReleaseMethod::ZeroAmountFinalCapture => (CaptureKind::Capture, MinorUnits::ZERO),
                ReleaseMethod::Cancel => (CaptureKind::Release, MinorUnits::ZERO),
            };
            rows.push(NewCapture {
                order,
                sequence: *sequence,
                kind,
                cause_kind,
                cause_id,
                amount,
                is_final: true,
                release_after: false,
                lines: Vec::new(),
                shipping: MinorUnits::ZERO,
                shortfall: plan.shortfall,
                traceparent,
            });
            "release".to_owned()
        }
        Decision::VoidAuthorization => {
            rows.push(NewCapture {
                order,
                sequence: plan.state.captures + 1,
                kind: CaptureKind::Void,
                cause_kind,
                cause_id,
                amount: MinorUnits::ZERO,
                is_final: true,
                release_after: false,
                lines: Vec::new(),
                shipping: MinorUnits::ZERO,
                shortfall: plan.shortfall,
                traceparent,
            });
            "void".to_owned()
        }
        Decision::Nothing(reason) => format!("nothing:{}", reason.label()),
    };
    (rows, label)
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

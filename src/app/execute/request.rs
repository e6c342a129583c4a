//! The provider requests a claimed capture is sent as. Storage parsed the row into the
//! domain's types when it was claimed, so building a request cannot fail.

use crate::provider::{CaptureLine, CaptureRequest, ReleaseRequest};
use crate::storage::captures::ClaimedCapture;

pub(super) fn capture_request(c: &ClaimedCapture) -> CaptureRequest {
    CaptureRequest {
        authorization_id: c.authorization_id.clone(),
        order_id: c.order_id.clone(),
        cause: c.cause_id.clone(),
        sequence: c.sequence,
        amount: c.amount,
        is_final: c.is_final,
        idempotency_key: c.idempotency_key.clone(),
        lines: c
            .lines
            .iter()
            .map(|l| CaptureLine {
                line_id: l.line_id.clone(),
                sku: l.sku.clone(),
                name: l.name.clone(),
                quantity: l.units,
                amount: l.amount,
            })
            .collect(),
    }
}

pub(super) fn release_request(c: &ClaimedCapture) -> ReleaseRequest {
    ReleaseRequest {
        authorization_id: c.authorization_id.clone(),
        order_id: c.order_id.clone(),
        idempotency_key: c.idempotency_key.clone(),
    }
}

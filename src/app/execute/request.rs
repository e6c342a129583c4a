//! The provider requests a claimed capture is sent as.

use crate::domain::{
    AuthorizationId, Currency, IdempotencyKey, LineId, MinorUnits, Money, OrderId,
};
use crate::provider::{CaptureLine, CaptureRequest, ReleaseRequest};
use crate::storage::captures::ClaimedCapture;

pub(super) fn capture_request(c: &ClaimedCapture) -> Result<CaptureRequest, String> {
    let currency = Currency::parse(&c.currency).map_err(|e| e.to_string())?;
    let amount = MinorUnits::new(c.amount).map_err(|e| e.to_string())?;
    Ok(CaptureRequest {
        authorization_id: AuthorizationId::parse(c.authorization_id.clone())
            .map_err(|e| e.to_string())?,
        order_id: OrderId::parse(c.order_id.clone()).map_err(|e| e.to_string())?,
        cause: c.cause_id.clone(),
        sequence: u32::try_from(c.sequence).unwrap_or(0),
        amount: Money::new(amount, currency),
        is_final: c.is_final,
        idempotency_key: IdempotencyKey::from_stored(&c.idempotency_key)
            .map_err(|e| e.to_string())?,
        lines: c
            .lines
            .iter()
            .filter_map(|l| {
                Some(CaptureLine {
                    line_id: LineId::parse(l.line_id.clone()).ok()?,
                    sku: l.sku.clone(),
                    name: l.name.clone(),
                    quantity: l.units,
                    amount: MinorUnits::new(l.amount).ok()?,
                })
            })
            .collect(),
    })
}

pub(super) fn release_request(c: &ClaimedCapture) -> Result<ReleaseRequest, String> {
    Ok(ReleaseRequest {
        authorization_id: AuthorizationId::parse(c.authorization_id.clone())
            .map_err(|e| e.to_string())?,
        order_id: OrderId::parse(c.order_id.clone()).map_err(|e| e.to_string())?,
        idempotency_key: IdempotencyKey::from_stored(&c.idempotency_key)
            .map_err(|e| e.to_string())?,
    })
}

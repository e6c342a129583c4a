//! Gr4vy's wire format: the capture body, the transaction-capture and transaction answers,
//! the error body, and their conversions.
//!
//! Owns every Gr4vy field name (reference/providers.md §2). Nothing here leaves the `gr4vy`
//! folder; `mod.rs` decides what an answer means. No I/O.

use serde::{Deserialize, Serialize};

use crate::domain::{AuthorizationId, Currency, MinorUnits, Money};
use crate::provider::http::{MESSAGE_LIMIT, capture_reference, clip};
use crate::provider::items::itemize;
use crate::provider::{AuthorizationSnapshot, CaptureRequest};

/// `external_identifier` is at most 300 characters.
const EXTERNAL_ID_LIMIT: usize = 300;
/// Cart item `name` 1..255, `sku` and `external_identifier` ≤ 200.
const ITEM_NAME_LIMIT: usize = 255;
const ITEM_ID_LIMIT: usize = 200;

/// The body of `POST /transactions/{id}/capture` (`TransactionCaptureCreate`).
///
/// `final` is always sent: Gr4vy defaults it to `true`, so leaving it out of a partial
/// capture would release the rest of the authorization (DESIGN §3.4).
#[derive(Debug, Serialize)]
pub(super) struct CaptureBody {
    /// Minor units of the transaction's currency (the capture has no currency field).
    amount: i64,
    #[serde(rename = "final")]
    is_final: bool,
    /// `order/cause`, to match the capture against the shipment that caused it.
    external_identifier: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cart_items: Option<Vec<CartItem>>,
}

#[derive(Debug, Serialize)]
struct CartItem {
    name: String,
    quantity: u32,
    unit_amount: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sku: Option<String>,
    external_identifier: String,
}

impl CaptureBody {
    pub(super) fn from_request(request: &CaptureRequest) -> Self {
        let cart_items = itemize(request, "Shipping").map(|items| {
            items
                .into_iter()
                .map(|item| CartItem {
                    name: clip(&item.name, ITEM_NAME_LIMIT),
                    quantity: item.quantity,
                    unit_amount: item.unit_amount,
                    sku: item.sku.map(|s| clip(&s, ITEM_ID_LIMIT)),
                    external_identifier: clip(&item.id, ITEM_ID_LIMIT),
                })
                .collect()
        });
        CaptureBody {
            amount: request.amount.amount().get(),
            is_final: request.is_final,
            external_identifier: capture_reference(
                request.order_id.as_str(),
                &request.cause,
                EXTERNAL_ID_LIMIT,
            ),
            cart_items,
        }
    }
}

/// The 200 answer of a capture under `prefer: resource=transaction-capture`.
#[derive(Debug, Deserialize)]
pub(super) struct TransactionCapture {
    pub(super) status: String,
    #[serde(default)]
    pub(super) code: Option<String>,
    #[serde(default)]
    pub(super) raw_response_code: Option<String>,
    #[serde(default)]
    pub(super) raw_response_description: Option<String>,
    #[serde(default)]
    pub(super) capture_id: Option<String>,
    #[serde(default)]
    transaction: Option<TransactionRef>,
}

#[derive(Debug, Deserialize)]
struct TransactionRef {
    #[serde(default)]
    id: Option<String>,
}

/// Gr4vy's `CaptureStatus`, plus one for a value this adapter does not know yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CaptureStatus {
    Succeeded,
    Pending,
    Declined,
    Failed,
    Unrecognized,
}

impl TransactionCapture {
    pub(super) fn status(&self) -> CaptureStatus {
        match self.status.as_str() {
            "succeeded" => CaptureStatus::Succeeded,
            "pending" => CaptureStatus::Pending,
            "declined" => CaptureStatus::Declined,
            "failed" => CaptureStatus::Failed,
            _ => CaptureStatus::Unrecognized,
        }
    }

    /// The capture's id, else the transaction's.
    pub(super) fn reference(&self) -> Option<String> {
        self.capture_id
            .clone()
            .or_else(|| self.transaction.as_ref().and_then(|t| t.id.clone()))
    }

    /// Gr4vy's standardized code, else the processor's raw code.
    pub(super) fn code(&self) -> Option<&str> {
        self.code.as_deref().or(self.raw_response_code.as_deref())
    }

    pub(super) fn message(&self) -> String {
        clip(
            self.raw_response_description.as_deref().unwrap_or(""),
            MESSAGE_LIMIT,
        )
    }
}

/// The fields of a `Transaction` this adapter reads (void answer, lookup).
#[derive(Debug, Deserialize)]
pub(super) struct Transaction {
    pub(super) id: String,
    pub(super) status: String,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    authorized_amount: Option<i64>,
    #[serde(default)]
    captured_amount: Option<i64>,
}

/// Gr4vy's `TransactionStatus`, plus one for a value this adapter does not know yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TransactionStatus {
    Processing,
    AuthorizationSucceeded,
    AuthorizationDeclined,
    AuthorizationFailed,
    AuthorizationVoided,
    AuthorizationVoidPending,
    CaptureSucceeded,
    CapturePending,
    BuyerApprovalPending,
    Unrecognized,
}

impl Transaction {
    pub(super) fn status(&self) -> TransactionStatus {
        match self.status.as_str() {
            "processing" => TransactionStatus::Processing,
            "authorization_succeeded" => TransactionStatus::AuthorizationSucceeded,
            "authorization_declined" => TransactionStatus::AuthorizationDeclined,
            "authorization_failed" => TransactionStatus::AuthorizationFailed,
            "authorization_voided" => TransactionStatus::AuthorizationVoided,
            "authorization_void_pending" => TransactionStatus::AuthorizationVoidPending,
            "capture_succeeded" => TransactionStatus::CaptureSucceeded,
            "capture_pending" => TransactionStatus::CapturePending,
            "buyer_approval_pending" => TransactionStatus::BuyerApprovalPending,
            _ => TransactionStatus::Unrecognized,
        }
    }

    /// The snapshot of this transaction, `capturable` being what is still open on it, or
    /// why the body cannot be one.
    pub(super) fn into_snapshot(
        self,
        authorization_id: &AuthorizationId,
        open: bool,
    ) -> Result<AuthorizationSnapshot, String> {
        let code = self
            .currency
            .as_deref()
            .ok_or_else(|| format!("transaction {} has no currency", self.id))?;
        let currency = Currency::parse(&code.to_ascii_uppercase())
            .map_err(|e| format!("transaction {}: {e}", self.id))?;
        let units = |field: &str, value: Option<i64>| {
            let value = value.ok_or_else(|| format!("transaction {} has no {field}", self.id))?;
            MinorUnits::new(value).map_err(|e| format!("transaction {} {field}: {e}", self.id))
        };
        let captured = units("captured_amount", self.captured_amount)?;
        let capturable = if open {
            units("authorized_amount", self.authorized_amount)?.saturating_sub(captured)
        } else {
            MinorUnits::ZERO
        };
        Ok(AuthorizationSnapshot {
            authorization_id: authorization_id.clone(),
            captured: Money::new(captured, currency),
            capturable: Money::new(capturable, currency),
            status: self.status,
        })
    }
}

/// Gr4vy's error body, `{"type":"error","code":…,"status":…,"message":…}`: read as its code and
/// message.
pub(super) use crate::provider::http::CodeAndMessage as ApiError;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{IdempotencyKey, LineId, OrderId, ProviderName};
    use crate::provider::CaptureLine;

    #[test]
    fn capture_body_always_carries_final_and_the_shipment_reference() {
        let auth = AuthorizationId::parse("fe26475d-ec3e-4884-9553-f7356683f7f9").unwrap();
        let request = CaptureRequest {
            authorization_id: auth.clone(),
            order_id: OrderId::parse("ORD-1").unwrap(),
            cause: "S1".to_owned(),
            sequence: 1,
            amount: Money::new(
                MinorUnits::new(2500).unwrap(),
                Currency::parse("USD").unwrap(),
            ),
            is_final: false,
            idempotency_key: IdempotencyKey::derive(
                &ProviderName::parse("gr4vy").unwrap(),
                &auth,
                "S1",
                0,
            ),
            lines: vec![CaptureLine {
                line_id: LineId::parse("L1").unwrap(),
                sku: "SKU-1".to_owned(),
                name: "Mug".to_owned(),
                quantity: 2,
                amount: MinorUnits::new(2000).unwrap(),
            }],
        };
        let body = serde_json::to_value(CaptureBody::from_request(&request)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "amount": 2500,
                "final": false,
                "external_identifier": "ORD-1/S1",
                "cart_items": [
                    {"name": "Mug", "quantity": 2, "unit_amount": 1000, "sku": "SKU-1", "external_identifier": "L1"},
                    {"name": "Shipping", "quantity": 1, "unit_amount": 500, "external_identifier": "shipping"},
                ],
            })
        );
    }
}

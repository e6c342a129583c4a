//! Checkout.com's wire format: the capture and void bodies, the `202 accepted` answer, the
//! payment details read back, and the error body.
//!
//! Owns every Checkout.com field name (reference/providers.md §4). Nothing here leaves the
//! `checkout` folder; `mod.rs` decides what an answer means. No I/O.

use serde::{Deserialize, Serialize};

use crate::domain::{AuthorizationId, Currency, MinorUnits, Money};
use crate::provider::http::{MESSAGE_LIMIT, capture_reference, clip};
use crate::provider::{
    AuthorizationSnapshot, CaptureRequest, HoldChange, LifecycleRequest, ReleaseRequest,
};

/// `reference` is at most 50 characters in the published schema.
const REFERENCE_LIMIT: usize = 50;

/// The body of `POST /payments/{id}/captures`.
///
/// `capture_type` is always sent: Checkout.com defaults it to `Final`, which voids whatever a
/// partial capture leaves (DESIGN §3.4).
#[derive(Debug, Serialize)]
pub(super) struct CaptureBody {
    /// Minor units of the payment's currency.
    amount: i64,
    capture_type: CaptureType,
    reference: String,
}

#[derive(Debug, Serialize)]
enum CaptureType {
    NonFinal,
    Final,
}

impl CaptureBody {
    pub(super) fn from_request(request: &CaptureRequest) -> Self {
        CaptureBody {
            amount: request.amount.amount().get(),
            capture_type: if request.is_final {
                CaptureType::Final
            } else {
                CaptureType::NonFinal
            },
            reference: capture_reference(
                request.order_id.as_str(),
                &request.cause,
                REFERENCE_LIMIT,
            ),
        }
    }
}

/// The body of `POST /payments/{id}/voids`.
#[derive(Debug, Serialize)]
pub(super) struct VoidBody {
    reference: String,
}

impl VoidBody {
    pub(super) fn from_request(request: &ReleaseRequest) -> Self {
        VoidBody {
            reference: capture_reference(request.order_id.as_str(), "release", REFERENCE_LIMIT),
        }
    }
}

/// The body of `POST /payments/{id}/authorizations` (`AuthorizationRequest`): `amount` is
/// "the amount to increase the authorization by. Omit the amount or provide a value of `0` to
/// extend the authorization validity period (Mastercard-only)".
#[derive(Debug, Serialize)]
pub(super) struct IncrementBody {
    /// Minor units of the payment's currency; 0 extends.
    amount: i64,
    reference: String,
}

impl IncrementBody {
    pub(super) fn from_request(request: &LifecycleRequest) -> Self {
        IncrementBody {
            amount: request.by.get(),
            reference: capture_reference(
                request.order_id.as_str(),
                &request.cause(),
                REFERENCE_LIMIT,
            ),
        }
    }
}

/// The `201` answer of an incremental authorization (`AuthorizationResponse`), as far as this
/// adapter reads it.
#[derive(Debug, Deserialize)]
pub(super) struct Authorized {
    pub(super) action_id: String,
    #[serde(default)]
    amount: Option<i64>,
    pub(super) approved: bool,
    #[serde(default)]
    pub(super) status: String,
    #[serde(default)]
    pub(super) response_code: Option<String>,
    #[serde(default)]
    pub(super) response_summary: Option<String>,
    /// "The timestamp (ISO 8601 code) for when the authorization's validity period ends".
    #[serde(default)]
    expires_on: Option<String>,
}

impl Authorized {
    /// The payment's amount and expiry after the increment, as far as the answer says them.
    pub(super) fn hold_change(&self) -> HoldChange {
        HoldChange {
            authorization_id: None,
            amount: self.amount.and_then(|a| MinorUnits::new(a).ok()),
            expires_at: self
                .expires_on
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
        }
    }
}

/// The `202` answer of a capture or void.
#[derive(Debug, Deserialize)]
pub(super) struct Accepted {
    pub(super) action_id: String,
}

/// The fields of `GET /payments/{id}` this adapter reads.
#[derive(Debug, Deserialize)]
pub(super) struct PaymentDetails {
    pub(super) id: String,
    pub(super) status: String,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    balances: Option<Balances>,
}

#[derive(Debug, Deserialize)]
struct Balances {
    #[serde(default)]
    total_captured: Option<i64>,
    #[serde(default)]
    available_to_capture: Option<i64>,
}

/// Checkout.com's payment `status`, plus one for a value this adapter does not know yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PaymentStatus {
    Pending,
    Authorized,
    CardVerified,
    Voided,
    PartiallyCaptured,
    Captured,
    PartiallyRefunded,
    Refunded,
    Declined,
    Canceled,
    Expired,
    Paid,
    RetryScheduled,
    Unrecognized,
}

impl PaymentDetails {
    pub(super) fn status(&self) -> PaymentStatus {
        match self.status.as_str() {
            "Pending" => PaymentStatus::Pending,
            "Authorized" => PaymentStatus::Authorized,
            "Card Verified" => PaymentStatus::CardVerified,
            "Voided" => PaymentStatus::Voided,
            "Partially Captured" => PaymentStatus::PartiallyCaptured,
            "Captured" => PaymentStatus::Captured,
            "Partially Refunded" => PaymentStatus::PartiallyRefunded,
            "Refunded" => PaymentStatus::Refunded,
            "Declined" => PaymentStatus::Declined,
            "Canceled" => PaymentStatus::Canceled,
            "Expired" => PaymentStatus::Expired,
            "Paid" => PaymentStatus::Paid,
            "Retry Scheduled" => PaymentStatus::RetryScheduled,
            _ => PaymentStatus::Unrecognized,
        }
    }

    /// The snapshot from the payment's balances, or why the body cannot be one.
    pub(super) fn into_snapshot(
        self,
        authorization_id: &AuthorizationId,
    ) -> Result<AuthorizationSnapshot, String> {
        let code = self
            .currency
            .as_deref()
            .ok_or_else(|| format!("payment {} has no currency", self.id))?;
        let currency = Currency::parse(&code.to_ascii_uppercase())
            .map_err(|e| format!("payment {}: {e}", self.id))?;
        let balances = self
            .balances
            .as_ref()
            .ok_or_else(|| format!("payment {} has no balances", self.id))?;
        let units = |field: &str, value: Option<i64>| {
            let value =
                value.ok_or_else(|| format!("payment {} has no balances.{field}", self.id))?;
            MinorUnits::new(value)
                .map(|u| Money::new(u, currency))
                .map_err(|e| format!("payment {} balances.{field}: {e}", self.id))
        };
        Ok(AuthorizationSnapshot {
            authorization_id: authorization_id.clone(),
            captured: units("total_captured", balances.total_captured)?,
            capturable: units("available_to_capture", balances.available_to_capture)?,
            status: self.status,
        })
    }
}

/// Checkout.com's error body: `{"request_id", "error_type", "error_codes": [...]}`.
#[derive(Debug, Deserialize)]
pub(super) struct ApiError {
    #[serde(default)]
    pub(super) error_type: Option<String>,
    #[serde(default)]
    error_codes: Vec<String>,
}

impl ApiError {
    /// `error_type/code1,code2` for the attempts table and reasons.
    pub(super) fn provider_code(&self) -> String {
        let kind = self.error_type.as_deref().unwrap_or("error");
        if self.error_codes.is_empty() {
            kind.to_owned()
        } else {
            clip(
                &format!("{kind}/{}", self.error_codes.join(",")),
                MESSAGE_LIMIT,
            )
        }
    }
}

pub(super) fn parse_error(body: &[u8]) -> Option<ApiError> {
    serde_json::from_slice::<ApiError>(body)
        .ok()
        .filter(|e| e.error_type.is_some() || !e.error_codes.is_empty())
}

//! Hellgate's wire format: the capture body, the payment answer, the error body, and their
//! conversions.
//!
//! Owns every Hellgate field name (reference/providers.md §6). Nothing here leaves the
//! `hellgate` folder; `mod.rs` decides what an answer means. No I/O.

use serde::{Deserialize, Serialize};

use crate::domain::{AuthorizationId, Currency, MinorUnits, Money};
use crate::provider::http::capture_reference;
use crate::provider::{AuthorizationSnapshot, CaptureRequest};

/// A payment's `reference` is at most 80 characters.
const REFERENCE_LIMIT: usize = 80;

/// The body of `POST /payments/{id}/capture`. `amount` and `currency_code` are always sent:
/// without them Hellgate captures the full authorized amount.
#[derive(Debug, Serialize)]
pub(super) struct CaptureBody {
    /// Minor units (700 for 7 €; 100 for 100 JPY).
    amount: i64,
    currency_code: String,
    reference: String,
}

impl CaptureBody {
    pub(super) fn from_request(request: &CaptureRequest) -> Self {
        CaptureBody {
            amount: request.amount.amount().get(),
            currency_code: request.amount.currency().code().to_owned(),
            reference: capture_reference(
                request.order_id.as_str(),
                &request.cause,
                REFERENCE_LIMIT,
            ),
        }
    }
}

/// The fields of a payment this adapter reads.
#[derive(Debug, Deserialize)]
pub(super) struct Payment {
    pub(super) id: String,
    pub(super) status: String,
    #[serde(default)]
    amount: Option<PaymentAmount>,
    #[serde(default)]
    currency_code: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PaymentAmount {
    #[serde(default)]
    authorized: Option<i64>,
    #[serde(default)]
    captured: Option<i64>,
}

/// Hellgate's payment `status`, plus one for a value this adapter does not know yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PaymentStatus {
    Open,
    Processing,
    Failed,
    Authorized,
    Capturing,
    Captured,
    Settling,
    Settled,
    Voiding,
    Voided,
    Unrecognized,
}

impl Payment {
    pub(super) fn status(&self) -> PaymentStatus {
        match self.status.as_str() {
            "open" => PaymentStatus::Open,
            "processing" => PaymentStatus::Processing,
            "failed" => PaymentStatus::Failed,
            "authorized" => PaymentStatus::Authorized,
            "capturing" => PaymentStatus::Capturing,
            "captured" => PaymentStatus::Captured,
            "settling" => PaymentStatus::Settling,
            "settled" => PaymentStatus::Settled,
            "voiding" => PaymentStatus::Voiding,
            "voided" => PaymentStatus::Voided,
            _ => PaymentStatus::Unrecognized,
        }
    }

    /// The snapshot of this payment. `captured_state` says whether the payment's status
    /// means money was captured (then `amount.captured` must be there); `open` whether the
    /// authorized amount is still capturable.
    pub(super) fn into_snapshot(
        self,
        authorization_id: &AuthorizationId,
        captured_state: bool,
        open: bool,
    ) -> Result<AuthorizationSnapshot, String> {
        let code = self
            .currency_code
            .as_deref()
            .ok_or_else(|| format!("payment {} has no currency_code", self.id))?;
        let currency = Currency::parse(&code.to_ascii_uppercase())
            .map_err(|e| format!("payment {}: {e}", self.id))?;
        let amount = self.amount.as_ref();
        let units = |field: &str, value: Option<i64>| {
            let value =
                value.ok_or_else(|| format!("payment {} has no amount.{field}", self.id))?;
            MinorUnits::new(value).map_err(|e| format!("payment {} amount.{field}: {e}", self.id))
        };
        let captured = if captured_state {
            units("captured", amount.and_then(|a| a.captured))?
        } else {
            match amount.and_then(|a| a.captured) {
                Some(v) => units("captured", Some(v))?,
                None => MinorUnits::ZERO,
            }
        };
        let capturable = if open {
            units("authorized", amount.and_then(|a| a.authorized))?
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

/// Hellgate's error body as far as this adapter reads it: a `code` and a `message`,
/// whichever are there (the shape is not pinned down in the public reference).
pub(super) use crate::provider::http::CodeAndMessage as ApiError;

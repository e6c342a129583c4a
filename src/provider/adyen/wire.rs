//! Adyen's wire format (Checkout API v71): the capture and cancel bodies, their `received`
//! answers and the `ServiceError` body.
//!
//! Owns every Adyen field name (reference/providers.md §3). Nothing here leaves the `adyen`
//! folder; `mod.rs` decides what an answer means. No I/O.

use serde::{Deserialize, Serialize};

use crate::provider::http::{MESSAGE_LIMIT, capture_reference, clip};
use crate::provider::items::itemize;
use crate::provider::{CaptureRequest, ReleaseRequest};

/// `reference` is at most 80 characters.
const REFERENCE_LIMIT: usize = 80;

/// An amount in minor units with its ISO currency code.
#[derive(Debug, Serialize)]
struct Amount {
    currency: String,
    value: i64,
}

/// The body of `POST /payments/{pspReference}/captures` (`PaymentCaptureRequest`). Adyen has
/// no final flag: the rest of the authorization is released with a cancel.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CaptureBody<'a> {
    merchant_account: &'a str,
    amount: Amount,
    reference: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    line_items: Option<Vec<LineItem>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LineItem {
    id: String,
    description: String,
    quantity: u32,
    /// Per unit, minor units, tax included.
    amount_including_tax: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sku: Option<String>,
}

impl<'a> CaptureBody<'a> {
    pub(super) fn from_request(merchant_account: &'a str, request: &CaptureRequest) -> Self {
        let line_items = itemize(request, "Shipping").map(|items| {
            items
                .into_iter()
                .map(|item| LineItem {
                    id: item.id,
                    description: item.name,
                    quantity: item.quantity,
                    amount_including_tax: item.unit_amount,
                    sku: item.sku,
                })
                .collect()
        });
        CaptureBody {
            merchant_account,
            amount: Amount {
                currency: request.amount.currency().code().to_owned(),
                value: request.amount.amount().get(),
            },
            reference: capture_reference(
                request.order_id.as_str(),
                &request.cause,
                REFERENCE_LIMIT,
            ),
            line_items,
        }
    }
}

/// The body of `POST /payments/{pspReference}/cancels` (`PaymentCancelRequest`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CancelBody<'a> {
    merchant_account: &'a str,
    reference: String,
}

impl<'a> CancelBody<'a> {
    pub(super) fn from_request(merchant_account: &'a str, request: &ReleaseRequest) -> Self {
        CancelBody {
            merchant_account,
            reference: capture_reference(request.order_id.as_str(), "release", REFERENCE_LIMIT),
        }
    }
}

/// The 201 answer of a capture or a cancel: Adyen's reference for the modification and
/// `status: received`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Received {
    pub(super) psp_reference: String,
    pub(super) status: String,
}

/// Adyen's `ServiceError`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ServiceError {
    #[serde(default)]
    pub(super) error_code: Option<String>,
    #[serde(default)]
    pub(super) error_type: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl ServiceError {
    pub(super) fn message(&self) -> String {
        clip(self.message.as_deref().unwrap_or(""), MESSAGE_LIMIT)
    }

    /// `errorType/errorCode` for the attempts table.
    pub(super) fn provider_code(&self) -> Option<String> {
        match (self.error_type.as_deref(), self.error_code.as_deref()) {
            (Some(t), Some(c)) => Some(format!("{t}/{c}")),
            (Some(one), None) | (None, Some(one)) => Some(one.to_owned()),
            (None, None) => None,
        }
    }
}

pub(super) fn parse_error(body: &[u8]) -> Option<ServiceError> {
    serde_json::from_slice::<ServiceError>(body)
        .ok()
        .filter(|e| e.error_code.is_some() || e.message.is_some())
}

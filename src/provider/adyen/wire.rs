//! Adyen's wire format (Checkout API v71): the capture and cancel bodies, their `received`
//! answers and the `ServiceError` body.
//!
//! Owns every Adyen field name (reference/providers.md §3). Nothing here leaves the `adyen`
//! folder; `mod.rs` decides what an answer means. No I/O.

use serde::{Deserialize, Serialize};

use crate::domain::{Currency, MinorUnits};
use crate::provider::http::{MESSAGE_LIMIT, capture_reference, clip};
use crate::provider::items::itemize;
use crate::provider::{CaptureRequest, LifecycleRequest, ReleaseRequest};

/// `reference` is at most 80 characters.
const REFERENCE_LIMIT: usize = 80;

/// Where Adyen's exponent for a currency differs from ISO 4217 ("Some currencies have an
/// exponent that differs from standard", docs.adyen.com/development-resources/currency-codes):
/// CLP has 2 decimals at Adyen (ISO 0), so the worker's pesos go × 100; CVE has none at Adyen
/// (ISO 2), so the worker's centavos go ÷ 100 (the plan captures whole escudos, an amount step
/// of 100 in Adyen's capability record).
enum Shift {
    Times100,
    Div100,
}

fn shift(currency: Currency) -> Option<Shift> {
    match currency.code() {
        "CLP" => Some(Shift::Times100),
        "CVE" => Some(Shift::Div100),
        _ => None,
    }
}

/// `minor` units of `currency` as Adyen writes `value`, or why it cannot be written.
pub(super) fn to_adyen_value(minor: i64, currency: Currency) -> Result<i64, String> {
    let code = currency.code();
    match shift(currency) {
        None => Ok(minor),
        Some(Shift::Times100) => minor
            .checked_mul(100)
            .ok_or_else(|| format!("{minor} {code} is too large for Adyen's {code} exponent")),
        Some(Shift::Div100) if minor % 100 == 0 => Ok(minor / 100),
        Some(Shift::Div100) => Err(format!(
            "Adyen takes {code} in whole units only, but the amount is {minor} {code} minor units; capture whole units"
        )),
    }
}

/// Adyen's `value` in `currency` as the worker's minor units, or why it is not one.
pub(super) fn from_adyen_value(value: i64, currency: Currency) -> Result<MinorUnits, String> {
    let code = currency.code();
    let minor = match shift(currency) {
        None => Some(value),
        Some(Shift::Times100) if value % 100 == 0 => Some(value / 100),
        Some(Shift::Times100) => {
            return Err(format!(
                "{value} is not a whole {code} amount in Adyen's {code} exponent"
            ));
        }
        Some(Shift::Div100) => value.checked_mul(100),
    }
    .ok_or_else(|| format!("{value} {code} is too large"))?;
    MinorUnits::new(minor).map_err(|e| e.to_string())
}

/// An amount in Adyen's minor units with its ISO currency code.
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
    /// The body for `request`, or why its amount cannot be written for Adyen.
    pub(super) fn from_request(
        merchant_account: &'a str,
        request: &CaptureRequest,
    ) -> Result<Self, String> {
        let currency = request.amount.currency();
        // Items whose unit amounts Adyen's exponent cannot express are left out, as items
        // that contradict the amount would be.
        let line_items = itemize(request, "Shipping").and_then(|items| {
            items
                .into_iter()
                .map(|item| {
                    Some(LineItem {
                        amount_including_tax: to_adyen_value(item.unit_amount, currency).ok()?,
                        id: item.id,
                        description: item.name,
                        quantity: item.quantity,
                        sku: item.sku,
                    })
                })
                .collect()
        });
        Ok(CaptureBody {
            merchant_account,
            amount: Amount {
                currency: currency.code().to_owned(),
                value: to_adyen_value(request.amount.amount().get(), currency)?,
            },
            reference: capture_reference(
                request.order_id.as_str(),
                &request.cause,
                REFERENCE_LIMIT,
            ),
            line_items,
        })
    }
}

/// The body of `POST /payments/{pspReference}/amountUpdates` (`PaymentAmountUpdateRequest`):
/// `amount` is "the updated amount" — the new total for an increment, the current amount again
/// to extend the hold.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AmountUpdateBody<'a> {
    merchant_account: &'a str,
    amount: Amount,
    reference: String,
}

impl<'a> AmountUpdateBody<'a> {
    /// The body for `request`, or why its amount cannot be written for Adyen.
    pub(super) fn from_request(
        merchant_account: &'a str,
        request: &LifecycleRequest,
    ) -> Result<Self, String> {
        let currency = request.authorized.currency();
        let total = request.new_total().map_err(|e| e.to_string())?;
        Ok(AmountUpdateBody {
            merchant_account,
            amount: Amount {
                currency: currency.code().to_owned(),
                value: to_adyen_value(total.get(), currency)?,
            },
            reference: capture_reference(
                request.order_id.as_str(),
                &request.cause(),
                REFERENCE_LIMIT,
            ),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clp_goes_to_adyen_times_100_and_cve_in_whole_escudos_and_both_come_back() {
        let cur = |c: &str| Currency::parse(c).unwrap();
        for (code, minor, value) in [
            ("CLP", 7205, 720_500),
            ("CVE", 720_500, 7205),
            ("USD", 7205, 7205),
            ("JPY", 7205, 7205),
        ] {
            assert_eq!(to_adyen_value(minor, cur(code)), Ok(value), "{code}");
            assert_eq!(
                from_adyen_value(value, cur(code)),
                Ok(MinorUnits::new(minor).unwrap()),
                "{code}"
            );
        }
        let refused = to_adyen_value(720_550, cur("CVE")).unwrap_err();
        assert!(refused.contains("whole units"), "{refused}");
        assert!(from_adyen_value(720_550, cur("CLP")).is_err());
        assert!(to_adyen_value(i64::MAX, cur("CLP")).is_err());
    }
}

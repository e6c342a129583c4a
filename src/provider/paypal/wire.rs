//! PayPal's wire format (Payments v2): the capture body with its decimal amount, the capture
//! and authorization answers, the order's captures, the OAuth token and the error body.
//!
//! Owns every PayPal field name (reference/providers.md §5.2) and the one place minor units
//! become a decimal string (built from integers with the currency's exponent, never a
//! float, and parsed back the same way). Nothing here leaves the `paypal` folder; `mod.rs`
//! decides what an answer means. No I/O.

use serde::{Deserialize, Serialize};

use crate::domain::{AuthorizationId, Currency, MinorUnits, Money};
use crate::provider::http::{MESSAGE_LIMIT, capture_reference, clip};
use crate::provider::{AuthorizationSnapshot, CaptureRequest, HoldChange, LifecycleRequest};

/// `invoice_id` is at most 127 characters. It must be unique per capture when the account
/// blocks duplicate invoice ids, so it names the shipment, not only the order.
const INVOICE_ID_LIMIT: usize = 127;

/// `{currency_code, value}` with `value` a decimal string in major units.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Amount {
    pub(super) currency_code: String,
    pub(super) value: String,
}

/// Currencies PayPal takes without decimals although ISO 4217 gives them some (HUF, TWD) or
/// none (JPY): "This currency does not support decimals. If you pass a decimal amount, an
/// error occurs." (developer.paypal.com/docs/api/reference/currency-codes/); the capture then
/// answers 422 `DECIMALS_NOT_SUPPORTED` (payments_payment_v2.json).
const WHOLE_UNIT_CURRENCIES: [&str; 3] = ["HUF", "JPY", "TWD"];

impl Amount {
    /// `Money` as PayPal writes it: "12.34" USD, "1234" JPY, "7205" HUF (whole units where
    /// PayPal takes no decimals). An amount with a fraction PayPal cannot take is refused
    /// here, before anything is sent.
    pub(super) fn from_money(money: &Money) -> Result<Self, String> {
        let currency = money.currency();
        let code = currency.code();
        let value = if WHOLE_UNIT_CURRENCIES.contains(&code) && currency.exponent() > 0 {
            let unit = 10_i64.pow(u32::from(currency.exponent()));
            let minor = money.amount().get();
            if minor % unit != 0 {
                return Err(format!(
                    "PayPal takes {code} amounts in whole units only (no decimals), but the amount is {} {code}; capture whole units or use another provider",
                    money.to_major_string()
                ));
            }
            (minor / unit).to_string()
        } else {
            money.to_major_string()
        };
        Ok(Amount {
            currency_code: code.to_owned(),
            value,
        })
    }

    /// The inverse of [`Amount::from_money`].
    pub(super) fn to_money(&self) -> Result<Money, String> {
        let currency = Currency::parse(&self.currency_code).map_err(|e| e.to_string())?;
        Money::parse_major(&self.value, currency).map_err(|e| e.to_string())
    }
}

/// The body of `POST /v2/payments/authorizations/{id}/capture` (`capture_request`).
///
/// `final_capture` is always sent: PayPal defaults it to `false`, the opposite of Stripe, so
/// the last capture must say `true` (DESIGN §3.4).
#[derive(Debug, Serialize)]
pub(super) struct CaptureBody {
    amount: Amount,
    invoice_id: String,
    final_capture: bool,
}

impl CaptureBody {
    pub(super) fn from_request(request: &CaptureRequest) -> Result<Self, String> {
        Ok(CaptureBody {
            amount: Amount::from_money(&request.amount)?,
            invoice_id: capture_reference(
                request.order_id.as_str(),
                &request.cause,
                INVOICE_ID_LIMIT,
            ),
            final_capture: request.is_final,
        })
    }
}

/// The body of `POST /v2/payments/authorizations/{id}/reauthorize` (`reauthorize_request`):
/// "Supports only the `amount` request parameter".
#[derive(Debug, Serialize)]
pub(super) struct ReauthorizeBody {
    amount: Amount,
}

impl ReauthorizeBody {
    /// Reauthorizes `authorized + by`: what is left of the hold (the caller's `authorized`),
    /// plus an increase where one is asked.
    pub(super) fn from_request(request: &LifecycleRequest) -> Result<Self, String> {
        let total = request.new_total().map_err(|e| e.to_string())?;
        Ok(ReauthorizeBody {
            amount: Amount::from_money(&Money::new(total, request.authorized.currency()))?,
        })
    }
}

/// A capture (`capture-2`) as far as this adapter reads it.
#[derive(Debug, Deserialize)]
pub(super) struct Capture {
    pub(super) id: String,
    pub(super) status: String,
    #[serde(default)]
    status_details: Option<StatusDetails>,
    #[serde(default)]
    amount: Option<Amount>,
    #[serde(default)]
    links: Vec<Link>,
}

#[derive(Debug, Deserialize)]
struct StatusDetails {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Link {
    #[serde(default)]
    href: String,
    #[serde(default)]
    rel: String,
}

/// PayPal's capture `status`, plus one for a value this adapter does not know yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CaptureStatus {
    Completed,
    Declined,
    PartiallyRefunded,
    Pending,
    Refunded,
    Failed,
    Unrecognized,
}

impl Capture {
    pub(super) fn status(&self) -> CaptureStatus {
        match self.status.as_str() {
            "COMPLETED" => CaptureStatus::Completed,
            "DECLINED" => CaptureStatus::Declined,
            "PARTIALLY_REFUNDED" => CaptureStatus::PartiallyRefunded,
            "PENDING" => CaptureStatus::Pending,
            "REFUNDED" => CaptureStatus::Refunded,
            "FAILED" => CaptureStatus::Failed,
            _ => CaptureStatus::Unrecognized,
        }
    }

    /// `status_details.reason`, when PayPal gives one.
    pub(super) fn reason(&self) -> Option<&str> {
        self.status_details.as_ref()?.reason.as_deref()
    }

    /// Whether this capture belongs to `authorization_id`: its `up` link names it, or it has
    /// no `up` link to say otherwise.
    fn of_authorization(&self, authorization_id: &str) -> bool {
        let suffix = format!("/authorizations/{authorization_id}");
        let mut ups = self.links.iter().filter(|l| l.rel == "up").peekable();
        ups.peek().is_none() || ups.any(|l| l.href.ends_with(&suffix))
    }
}

/// An authorization (`authorization-2`) as far as this adapter reads it.
#[derive(Debug, Deserialize)]
pub(super) struct Authorization {
    pub(super) id: String,
    pub(super) status: String,
    amount: Amount,
    /// "The date and time when the authorized payment expires".
    #[serde(default)]
    expiration_time: Option<String>,
    #[serde(default)]
    supplementary_data: Option<SupplementaryData>,
}

#[derive(Debug, Deserialize)]
struct SupplementaryData {
    #[serde(default)]
    related_ids: Option<RelatedIds>,
}

#[derive(Debug, Deserialize)]
struct RelatedIds {
    #[serde(default)]
    order_id: Option<String>,
}

/// PayPal's authorization `status`, plus one for a value this adapter does not know yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AuthorizationStatus {
    Created,
    Captured,
    Denied,
    Expired,
    PartiallyCaptured,
    Voided,
    Pending,
    Unrecognized,
}

impl Authorization {
    pub(super) fn status(&self) -> AuthorizationStatus {
        match self.status.as_str() {
            "CREATED" => AuthorizationStatus::Created,
            "CAPTURED" => AuthorizationStatus::Captured,
            "DENIED" => AuthorizationStatus::Denied,
            "EXPIRED" => AuthorizationStatus::Expired,
            "PARTIALLY_CAPTURED" => AuthorizationStatus::PartiallyCaptured,
            "VOIDED" => AuthorizationStatus::Voided,
            "PENDING" => AuthorizationStatus::Pending,
            _ => AuthorizationStatus::Unrecognized,
        }
    }

    /// The authorization's currency.
    pub(super) fn currency(&self) -> Result<Currency, String> {
        Currency::parse(&self.amount.currency_code)
            .map_err(|e| format!("authorization {}: {e}", self.id))
    }

    /// What a reauthorization's answer says: the new authorization (its own id), its amount and
    /// expiry.
    pub(super) fn hold_change(&self) -> HoldChange {
        HoldChange {
            authorization_id: AuthorizationId::parse(self.id.as_str()).ok(),
            amount: self.amount.to_money().ok().map(|m| m.amount()),
            expires_at: self
                .expiration_time
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
        }
    }

    /// The checkout order this authorization belongs to, where its captures are listed.
    pub(super) fn order_id(&self) -> Option<&str> {
        self.supplementary_data
            .as_ref()?
            .related_ids
            .as_ref()?
            .order_id
            .as_deref()
    }

    /// The snapshot given what has been captured and whether the authorization is still
    /// open for captures.
    pub(super) fn into_snapshot(
        self,
        authorization_id: &AuthorizationId,
        captured: MinorUnits,
        open: bool,
    ) -> Result<AuthorizationSnapshot, String> {
        let authorized = self
            .amount
            .to_money()
            .map_err(|e| format!("authorization {} amount: {e}", self.id))?;
        let capturable = if open {
            authorized.amount().saturating_sub(captured)
        } else {
            MinorUnits::ZERO
        };
        Ok(AuthorizationSnapshot {
            authorization_id: authorization_id.clone(),
            captured: Money::new(captured, authorized.currency()),
            capturable: Money::new(capturable, authorized.currency()),
            status: self.status,
        })
    }
}

/// A checkout order (`GET /v2/checkout/orders/{id}`), only for its captures.
#[derive(Debug, Deserialize)]
pub(super) struct Order {
    #[serde(default)]
    purchase_units: Vec<PurchaseUnit>,
}

#[derive(Debug, Deserialize)]
struct PurchaseUnit {
    #[serde(default)]
    payments: Option<Payments>,
}

#[derive(Debug, Deserialize)]
struct Payments {
    #[serde(default)]
    captures: Vec<Capture>,
}

/// What the captures of one authorization add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CapturedTotal {
    /// Settled captures: this much was taken.
    Settled(MinorUnits),
    /// At least one capture is still pending or of an unknown status.
    Unsettled,
}

impl Order {
    /// The captured total of `authorization_id` in `currency`: completed captures count
    /// (refunds do not undo a capture); declined and failed ones do not.
    pub(super) fn captured_total(
        &self,
        authorization_id: &str,
        currency: Currency,
    ) -> Result<CapturedTotal, String> {
        let mut total = MinorUnits::ZERO;
        let captures = self
            .purchase_units
            .iter()
            .filter_map(|u| u.payments.as_ref())
            .flat_map(|p| p.captures.iter())
            .filter(|c| c.of_authorization(authorization_id));
        for capture in captures {
            match capture.status() {
                CaptureStatus::Completed
                | CaptureStatus::PartiallyRefunded
                | CaptureStatus::Refunded => {
                    let amount = capture
                        .amount
                        .as_ref()
                        .ok_or_else(|| format!("capture {} has no amount", capture.id))?
                        .to_money()
                        .map_err(|e| format!("capture {} amount: {e}", capture.id))?;
                    if amount.currency() != currency {
                        return Err(format!(
                            "capture {} is in {}, the authorization in {currency}",
                            capture.id,
                            amount.currency()
                        ));
                    }
                    total = total
                        .checked_add(amount.amount(), "captured total")
                        .map_err(|e| e.to_string())?;
                }
                CaptureStatus::Declined | CaptureStatus::Failed => {}
                CaptureStatus::Pending | CaptureStatus::Unrecognized => {
                    return Ok(CapturedTotal::Unsettled);
                }
            }
        }
        Ok(CapturedTotal::Settled(total))
    }
}

/// The OAuth 2.0 client-credentials answer.
#[derive(Debug, Deserialize)]
pub(super) struct Token {
    pub(super) access_token: String,
    /// Seconds.
    #[serde(default)]
    pub(super) expires_in: Option<u64>,
}

/// PayPal's error body: `{name, message, debug_id, details: [{issue, description}]}`.
#[derive(Debug, Deserialize)]
pub(super) struct ApiError {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    issue: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

impl ApiError {
    /// The first detail's `issue` (`AUTHORIZATION_EXPIRED`…).
    pub(super) fn issue(&self) -> Option<&str> {
        self.details.iter().find_map(|d| d.issue.as_deref())
    }

    /// `name/issue` for the attempts table.
    pub(super) fn provider_code(&self) -> Option<String> {
        match (self.name.as_deref(), self.issue()) {
            (Some(name), Some(issue)) => Some(format!("{name}/{issue}")),
            (Some(one), None) | (None, Some(one)) => Some(one.to_owned()),
            (None, None) => None,
        }
    }

    /// The most specific human text: the detail's description, else the message.
    pub(super) fn message(&self) -> String {
        let text = self
            .details
            .iter()
            .find_map(|d| d.description.as_deref())
            .or(self.message.as_deref())
            .unwrap_or("");
        clip(text, MESSAGE_LIMIT)
    }
}

pub(super) fn parse_error(body: &[u8]) -> Option<ApiError> {
    serde_json::from_slice::<ApiError>(body)
        .ok()
        .filter(|e| e.name.is_some() || !e.details.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(v: i64, c: &str) -> Money {
        Money::new(MinorUnits::new(v).unwrap(), Currency::parse(c).unwrap())
    }

    #[test]
    fn amounts_are_decimal_strings_with_the_currency_exponent_and_round_trip() {
        for (minor, code, text) in [
            (2500, "USD", "25.00"),
            (5, "EUR", "0.05"),
            (1234, "JPY", "1234"),
            (1234, "BHD", "1.234"),
            (0, "USD", "0.00"),
            (i64::MAX, "GBP", "92233720368547758.07"),
            (720500, "HUF", "7205"),
            (120000, "TWD", "1200"),
        ] {
            let amount = Amount::from_money(&money(minor, code)).unwrap();
            assert_eq!(amount.value, text, "{minor} {code}");
            assert_eq!(amount.currency_code, code);
            assert_eq!(amount.to_money(), Ok(money(minor, code)));
        }
    }

    #[test]
    fn a_fraction_paypal_cannot_take_is_refused_before_sending() {
        for (minor, code) in [(720550, "HUF"), (1, "TWD")] {
            let refused = Amount::from_money(&money(minor, code)).unwrap_err();
            assert!(refused.contains("whole units"), "{refused}");
        }
    }

    #[test]
    fn decimals_beyond_the_exponent_or_floats_are_refused_on_the_way_back() {
        for (value, code) in [
            ("25.001", "USD"),
            ("1.5", "JPY"),
            ("1e3", "USD"),
            ("-1.00", "USD"),
        ] {
            let amount = Amount {
                currency_code: code.to_owned(),
                value: value.to_owned(),
            };
            assert!(amount.to_money().is_err(), "{value} {code}");
        }
    }
}

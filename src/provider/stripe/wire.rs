//! Stripe's wire format: the capture form, the PaymentIntent and error bodies, and their
//! conversions to and from the provider boundary's types.
//!
//! Owns every Stripe field name and the one place minor units become `amount_to_capture`
//! (and Stripe's amounts become minor units again).
//! Nothing here leaves the `stripe` folder; `mod.rs` decides what an answer means, this file
//! only reads and writes it. No I/O.

use serde::{Deserialize, Serialize};

use crate::domain::{AuthorizationId, Currency, MinorUnits, Money};
use crate::provider::http::{MESSAGE_LIMIT, clip};
use crate::provider::{AuthorizationSnapshot, CaptureRequest, HoldChange, LifecycleRequest};

/// The currencies ISO 4217 gives no decimals but Stripe takes as two-decimal values whose
/// decimals are always `00` ("ISK transitioned to a zero-decimal currency, but backwards
/// compatibility requires you to represent it as a two-decimal value", and the same for UGX
/// in the special cases of docs.stripe.com/currencies): their amounts go to Stripe × 100.
const TWO_ZERO_DECIMALS: [&str; 2] = ["ISK", "UGX"];

/// How many of Stripe's units make one of the worker's minor units in `currency`.
fn wire_factor(currency: Currency) -> i64 {
    if TWO_ZERO_DECIMALS.contains(&currency.code()) {
        100
    } else {
        1
    }
}

/// `minor` units of `currency` as Stripe writes the amount, or why it cannot be written.
pub(super) fn to_stripe_amount(minor: MinorUnits, currency: Currency) -> Result<i64, String> {
    minor
        .get()
        .checked_mul(wire_factor(currency))
        .ok_or_else(|| {
            format!(
                "{} {} is too large for Stripe's two-decimal form of {}",
                minor.get(),
                currency.code(),
                currency.code()
            )
        })
}

/// An amount as Stripe writes it in `currency`, as the worker's minor units, or why it is not
/// one (for ISK and UGX a value whose decimals are not `00`).
pub(super) fn from_stripe_amount(value: i64, currency: Currency) -> Result<MinorUnits, String> {
    let factor = wire_factor(currency);
    if value % factor != 0 {
        return Err(format!(
            "{value} is not a whole {code} amount in Stripe's two-decimal form of {code} (its decimals must be 00)",
            code = currency.code()
        ));
    }
    MinorUnits::new(value / factor).map_err(|e| e.to_string())
}

/// The body of `POST /v1/payment_intents/{id}/capture`, form-encoded.
///
/// `final_capture` is always sent: Stripe defaults it to `true`, so leaving it out of a
/// partial capture would release the rest of the hold (DESIGN §3.4).
#[derive(Debug, Serialize)]
pub(super) struct CaptureForm<'a> {
    /// Minor units of the PaymentIntent's currency as Stripe counts them (× 100 for ISK and
    /// UGX, [`to_stripe_amount`]).
    amount_to_capture: i64,
    final_capture: bool,
    #[serde(rename = "metadata[order_id]")]
    order_id: &'a str,
    #[serde(rename = "metadata[capture_cause]")]
    capture_cause: &'a str,
    #[serde(rename = "metadata[capture_sequence]")]
    capture_sequence: u32,
}

impl<'a> CaptureForm<'a> {
    /// The form for `request`, or why its amount cannot be written for Stripe.
    pub(super) fn from_request(request: &'a CaptureRequest) -> Result<Self, String> {
        Ok(CaptureForm {
            amount_to_capture: to_stripe_amount(
                request.amount.amount(),
                request.amount.currency(),
            )?,
            final_capture: request.is_final,
            order_id: request.order_id.as_str(),
            capture_cause: &request.cause,
            capture_sequence: request.sequence,
        })
    }
}

/// The body of `POST /v1/payment_intents/{id}/increment_authorization`, form-encoded:
/// `amount` is "the updated total amount that you intend to collect from the cardholder. This
/// amount must be greater than the currently authorized amount" (stripe-python
/// `_payment_intent_increment_authorization_params.py`, generated from Stripe's OpenAPI spec).
#[derive(Debug, Serialize)]
pub(super) struct IncrementForm<'a> {
    /// The new total, as Stripe counts it ([`to_stripe_amount`]).
    amount: i64,
    #[serde(rename = "metadata[order_id]")]
    order_id: &'a str,
    #[serde(rename = "metadata[lifecycle_cause]")]
    lifecycle_cause: String,
}

impl<'a> IncrementForm<'a> {
    pub(super) fn from_request(request: &'a LifecycleRequest) -> Result<Self, String> {
        let total = request.new_total().map_err(|e| e.to_string())?;
        Ok(IncrementForm {
            amount: to_stripe_amount(total, request.authorized.currency())?,
            order_id: request.order_id.as_str(),
            lifecycle_cause: request.cause(),
        })
    }
}

/// The fields of a PaymentIntent this adapter reads. Unknown fields are ignored, so new
/// Stripe fields never break parsing; amounts are optional here so that a capture's 200 is
/// judged on its id alone, and a lookup says which field was missing.
#[derive(Debug, Deserialize)]
pub(super) struct PaymentIntent {
    pub(super) id: String,
    pub(super) status: String,
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    amount_capturable: Option<i64>,
    #[serde(default)]
    amount_received: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
    /// A charge id, or the charge object when the caller expanded it.
    #[serde(default)]
    latest_charge: Option<serde_json::Value>,
}

impl PaymentIntent {
    /// The id to record for a capture: the latest charge (what Stripe's dashboard and payouts
    /// show), else the PaymentIntent itself.
    pub(super) fn capture_reference(&self) -> String {
        let charge = match &self.latest_charge {
            Some(serde_json::Value::String(id)) => Some(id.as_str()),
            Some(serde_json::Value::Object(charge)) => charge.get("id").and_then(|v| v.as_str()),
            Some(_) | None => None,
        };
        charge.unwrap_or(&self.id).to_owned()
    }

    /// What an increment's answer says about the hold: the PaymentIntent's new `amount`
    /// (Stripe keeps the expiry).
    pub(super) fn hold_change(&self, currency: Currency) -> HoldChange {
        HoldChange {
            authorization_id: None,
            amount: self
                .amount
                .and_then(|value| from_stripe_amount(value, currency).ok()),
            expires_at: None,
        }
    }

    /// The snapshot of the authorization `authorization_id`, or why the body cannot be one.
    pub(super) fn into_snapshot(
        self,
        authorization_id: &AuthorizationId,
    ) -> Result<AuthorizationSnapshot, String> {
        let code = self
            .currency
            .as_deref()
            .ok_or_else(|| format!("PaymentIntent {} has no currency", self.id))?;
        // Stripe writes ISO codes in lower case; `Currency::parse` accepts upper case only.
        let currency = Currency::parse(&code.to_ascii_uppercase())
            .map_err(|e| format!("PaymentIntent {}: {e}", self.id))?;
        let amount = |field: &str, value: Option<i64>| {
            let value = value.ok_or_else(|| format!("PaymentIntent {} has no {field}", self.id))?;
            from_stripe_amount(value, currency)
                .map(|units| Money::new(units, currency))
                .map_err(|e| format!("PaymentIntent {} {field}: {e}", self.id))
        };
        Ok(AuthorizationSnapshot {
            authorization_id: authorization_id.clone(),
            captured: amount("amount_received", self.amount_received)?,
            capturable: amount("amount_capturable", self.amount_capturable)?,
            status: self.status,
        })
    }
}

/// Stripe's error body: `{"error": {...}}`.
#[derive(Debug, Deserialize)]
pub(super) struct ErrorEnvelope {
    pub(super) error: ApiError,
}

/// The fields of Stripe's `api_errors` object this adapter reads.
#[derive(Debug, Deserialize)]
pub(super) struct ApiError {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Stripe's error types (spec3 `api_errors.type`), plus one for a type this adapter does not
/// know yet, so the routing in `mod.rs` can match exhaustively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ErrorType {
    Api,
    Card,
    Idempotency,
    InvalidRequest,
    Unrecognized,
}

impl ApiError {
    pub(super) fn error_type(&self) -> ErrorType {
        match self.kind.as_str() {
            "api_error" => ErrorType::Api,
            "card_error" => ErrorType::Card,
            "idempotency_error" => ErrorType::Idempotency,
            "invalid_request_error" => ErrorType::InvalidRequest,
            _ => ErrorType::Unrecognized,
        }
    }

    /// `type/code` (or `type/decline_code`, or `type` alone) for the attempts table.
    pub(super) fn provider_code(&self) -> String {
        match self.code.as_deref().or(self.decline_code.as_deref()) {
            Some(code) => format!("{}/{code}", self.kind),
            None => self.kind.clone(),
        }
    }

    /// The most specific reason an issuer gave: the decline code, else the error code.
    pub(super) fn decline_code(&self) -> String {
        self.decline_code
            .as_deref()
            .or(self.code.as_deref())
            .unwrap_or("card_declined")
            .to_owned()
    }

    /// Stripe's human message, shortened to [`MESSAGE_LIMIT`] characters (Stripe allows
    /// 40 000; the attempts table and logs need the gist, not an essay).
    pub(super) fn message(&self) -> String {
        clip(self.message.as_deref().unwrap_or(""), MESSAGE_LIMIT)
    }

    /// `code` if given, else `type`, for reasons.
    pub(super) fn code_or_type(&self) -> &str {
        self.code.as_deref().unwrap_or(&self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{IdempotencyKey, OrderId, ProviderName};

    #[test]
    fn capture_form_always_carries_final_capture_and_metadata() {
        let pi = AuthorizationId::parse("pi_1").unwrap();
        let request = CaptureRequest {
            authorization_id: pi.clone(),
            order_id: OrderId::parse("ORD-1").unwrap(),
            cause: "S1".to_owned(),
            sequence: 2,
            amount: Money::new(
                MinorUnits::new(1234).unwrap(),
                Currency::parse("USD").unwrap(),
            ),
            is_final: false,
            idempotency_key: IdempotencyKey::derive(
                &ProviderName::parse("stripe").unwrap(),
                &pi,
                "S1",
                0,
            ),
            lines: Vec::new(),
        };
        // Field names and values as serialized; the integration tests check the encoded body.
        let fields = serde_json::to_value(CaptureForm::from_request(&request).unwrap()).unwrap();
        assert_eq!(
            fields,
            serde_json::json!({
                "amount_to_capture": 1234,
                "final_capture": false,
                "metadata[order_id]": "ORD-1",
                "metadata[capture_cause]": "S1",
                "metadata[capture_sequence]": 2,
            })
        );
    }

    #[test]
    fn isk_and_ugx_go_to_stripe_times_100_and_come_back_as_iso_minor_units() {
        let cur = |c: &str| Currency::parse(c).unwrap();
        for (code, minor, wire) in [
            ("ISK", 7205, 720_500),
            ("UGX", 12_000, 1_200_000),
            ("JPY", 7205, 7205),
            ("USD", 7205, 7205),
            ("HUF", 720_550, 720_550),
        ] {
            let units = MinorUnits::new(minor).unwrap();
            assert_eq!(to_stripe_amount(units, cur(code)), Ok(wire), "{code}");
            assert_eq!(from_stripe_amount(wire, cur(code)), Ok(units), "{code}");
        }
        let refused = from_stripe_amount(720_550, cur("ISK")).unwrap_err();
        assert!(refused.contains("decimals must be 00"), "{refused}");
        assert!(to_stripe_amount(MinorUnits::new(i64::MAX).unwrap(), cur("ISK")).is_err());
        let pi: PaymentIntent = serde_json::from_str(
            r#"{"id":"pi_1","status":"requires_capture","currency":"isk","amount_received":100000,"amount_capturable":250000}"#,
        )
        .unwrap();
        let snapshot = pi
            .into_snapshot(&AuthorizationId::parse("pi_1").unwrap())
            .unwrap();
        assert_eq!(
            (
                snapshot.captured.amount().get(),
                snapshot.capturable.amount().get()
            ),
            (1000, 2500)
        );
    }

    #[test]
    fn lookup_snapshot_reads_lower_case_currency_and_both_amounts() {
        let pi: PaymentIntent = serde_json::from_str(
            r#"{"id":"pi_1","object":"payment_intent","status":"requires_capture",
                "amount":5000,"amount_capturable":3000,"amount_received":2000,
                "currency":"usd","latest_charge":{"id":"ch_9","object":"charge"}}"#,
        )
        .unwrap();
        assert_eq!(pi.capture_reference(), "ch_9");
        let id = AuthorizationId::parse("pi_1").unwrap();
        let snapshot = pi.into_snapshot(&id).unwrap();
        let usd = Currency::parse("USD").unwrap();
        assert_eq!(
            snapshot.captured,
            Money::new(MinorUnits::new(2000).unwrap(), usd)
        );
        assert_eq!(
            snapshot.capturable,
            Money::new(MinorUnits::new(3000).unwrap(), usd)
        );
        assert_eq!(snapshot.status, "requires_capture");
    }

    #[test]
    fn snapshot_names_the_missing_or_bad_field() {
        let parse = |json: &str| {
            let pi: PaymentIntent = serde_json::from_str(json).unwrap();
            pi.into_snapshot(&AuthorizationId::parse("pi_1").unwrap())
                .unwrap_err()
        };
        assert!(
            parse(r#"{"id":"pi_1","status":"x","amount_received":1,"amount_capturable":1}"#)
                .contains("no currency")
        );
        assert!(
            parse(r#"{"id":"pi_1","status":"x","currency":"zzz","amount_received":1,"amount_capturable":1}"#)
                .contains("ZZZ")
        );
        assert!(
            parse(r#"{"id":"pi_1","status":"x","currency":"usd","amount_capturable":1}"#)
                .contains("amount_received")
        );
        assert!(
            parse(r#"{"id":"pi_1","status":"x","currency":"usd","amount_received":-1,"amount_capturable":1}"#)
                .contains("negative")
        );
    }
}

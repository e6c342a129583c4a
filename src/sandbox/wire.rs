//! Stripe's dialect on the wire: the PaymentIntent and error JSON, and the form-encoded
//! request parameters of capture and cancel.
//!
//! Shapes follow Stripe's published spec (`payment_intent`, `error`; form bodies with
//! `metadata[key]` deep-object parameters and unknown parameters refused). Everything here is
//! a translation of `model` values; no state, no I/O.

use std::collections::BTreeMap;

use serde::Serialize;

use super::model::{
    AuthorizationView, CancellationReason, CaptureRecord, MetadataUpdate, ModelError, Scenario,
};

/// Stripe's limits on metadata: keys per request and characters per key and value.
const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_KEY_LEN: usize = 40;
const MAX_METADATA_VALUE_LEN: usize = 500;
/// Stripe accepts idempotency keys up to 255 characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A PaymentIntent as Stripe serialises it (the fields the worker reads, and the usual
/// neighbours). `currency` is lower case, as Stripe sends it.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentIntent {
    pub id: String,
    pub object: &'static str,
    pub amount: i64,
    pub amount_capturable: i64,
    pub amount_received: i64,
    pub capture_method: &'static str,
    pub currency: String,
    pub status: &'static str,
    pub latest_charge: String,
    pub metadata: BTreeMap<String, String>,
    pub livemode: bool,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds.
    pub canceled_at: Option<i64>,
    pub cancellation_reason: Option<&'static str>,
}

impl From<&AuthorizationView> for PaymentIntent {
    fn from(v: &AuthorizationView) -> Self {
        PaymentIntent {
            id: v.id.clone(),
            object: "payment_intent",
            amount: v.amount,
            amount_capturable: v.amount_capturable,
            amount_received: v.amount_received,
            capture_method: "manual",
            currency: v.currency.code().to_ascii_lowercase(),
            status: v.status.as_str(),
            latest_charge: v.latest_charge.clone(),
            metadata: v.metadata.clone(),
            livemode: false,
            created: v.created.timestamp(),
            canceled_at: v.canceled_at.map(|t| t.timestamp()),
            cancellation_reason: v.cancellation_reason.map(CancellationReason::as_str),
        }
    }
}

/// The sandbox's admin view of an authorization: the PaymentIntent plus what only the
/// sandbox knows.
#[derive(Debug, Clone, Serialize)]
pub struct AdminAuthorization {
    #[serde(flatten)]
    pub payment_intent: PaymentIntent,
    pub captures: Vec<CaptureRecord>,
    pub max_captures: u32,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub capture_requests: u32,
    pub scenario: Scenario,
}

impl From<&AuthorizationView> for AdminAuthorization {
    fn from(v: &AuthorizationView) -> Self {
        AdminAuthorization {
            payment_intent: PaymentIntent::from(v),
            captures: v.captures.clone(),
            max_captures: v.max_captures,
            expires_at: v.expires_at,
            capture_requests: v.capture_requests,
            scenario: v.scenario.clone(),
        }
    }
}

/// Stripe's `error.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    ApiError,
    CardError,
    IdempotencyError,
    InvalidRequestError,
}

/// Stripe's error object, the value of `error` in an error body.
#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_intent: Option<Box<PaymentIntent>>,
}

/// `{"error": {...}}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    pub error: ApiError,
}

impl ApiError {
    pub fn new(kind: ErrorType, code: Option<&'static str>, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            code,
            decline_code: None,
            message: message.into(),
            param: None,
            payment_intent: None,
        }
    }

    pub fn invalid(code: Option<&'static str>, message: impl Into<String>) -> Self {
        ApiError::new(ErrorType::InvalidRequestError, code, message)
    }

    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn with_payment_intent(mut self, view: Option<&AuthorizationView>) -> Self {
        self.payment_intent = view.map(|v| Box::new(PaymentIntent::from(v)));
        self
    }

    pub fn body(self) -> ErrorBody {
        ErrorBody { error: self }
    }

    /// The error Stripe gives for an unknown PaymentIntent id.
    pub fn no_such_payment_intent(id: &str) -> Self {
        ApiError::invalid(
            Some("resource_missing"),
            format!("No such payment_intent: '{id}'"),
        )
        .with_param("intent")
    }

    /// The HTTP status and error for a model refusal.
    pub fn from_model(error: &ModelError) -> (u16, Self) {
        match error {
            ModelError::NotFound { id } => (404, ApiError::no_such_payment_intent(id)),
            ModelError::Invalid(message) => (400, ApiError::invalid(None, message.clone())),
            ModelError::Conflict { id } => (
                409,
                ApiError::invalid(
                    Some("resource_already_exists"),
                    format!(
                        "An authorization with id '{id}' already exists with different fields."
                    ),
                ),
            ),
            ModelError::AmountTooSmall { requested } => (
                400,
                ApiError::invalid(
                    Some("amount_too_small"),
                    format!("Amount must be at least the minimum charge amount for the currency (and at least 1); got {requested}."),
                )
                .with_param("amount_to_capture"),
            ),
            ModelError::AmountTooLarge {
                requested,
                capturable,
            } => (
                400,
                ApiError::invalid(
                    Some("amount_too_large"),
                    format!(
                        "The amount to capture ({requested}) must be less than or equal to the \
                         amount capturable ({capturable})."
                    ),
                )
                .with_param("amount_to_capture"),
            ),
            ModelError::UnexpectedState { status, action } => (
                400,
                ApiError::invalid(
                    Some("payment_intent_unexpected_state"),
                    format!(
                        "This PaymentIntent could not be {action} because it has a status of {}. \
                         Only a PaymentIntent with one of the following statuses may be {action}: \
                         requires_capture.",
                        status.as_str()
                    ),
                ),
            ),
            ModelError::Expired => (
                400,
                ApiError::invalid(
                    Some("charge_expired_for_capture"),
                    "The charge cannot be captured as the authorization has expired.",
                ),
            ),
            ModelError::LimitReached { limit } => (
                400,
                ApiError::invalid(
                    Some("capture_limit_reached"),
                    format!(
                        "Capture limit reached: this PaymentIntent has already been captured the \
                         maximum of {limit} times."
                    ),
                ),
            ),
            ModelError::NotAdjustable { why } => (
                400,
                ApiError::invalid(
                    Some("payment_intent_unexpected_state"),
                    format!("This PaymentIntent is not eligible for incremental authorization: {why}."),
                ),
            ),
            ModelError::AdjustmentDeclined => {
                let mut e = ApiError::new(
                    ErrorType::CardError,
                    Some("card_declined"),
                    "Your card was declined.",
                );
                e.decline_code = Some("generic_decline".to_owned());
                (402, e)
            }
            ModelError::Declined { decline_code } => {
                let message = if decline_code == "insufficient_funds" {
                    "Your card has insufficient funds."
                } else {
                    "Your card was declined."
                };
                let mut e = ApiError::new(ErrorType::CardError, Some("card_declined"), message);
                e.decline_code = Some(decline_code.clone());
                (402, e)
            }
            ModelError::Overflow => (
                400,
                ApiError::invalid(None, "Amount arithmetic overflowed."),
            ),
        }
    }
}

/// Why a form body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormError(pub String);

/// Decodes an `application/x-www-form-urlencoded` body into its pairs, in order.
pub fn decode_form(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    body.split(|b| *b == b'&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut halves = part.splitn(2, |b| *b == b'=');
            let name = decode_component(halves.next().unwrap_or_default())?;
            let value = decode_component(halves.next().unwrap_or_default())?;
            Ok((name, value))
        })
        .collect()
}

fn decode_component(raw: &[u8]) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |at: usize| raw.get(at).and_then(|c| char::from(*c).to_digit(16));
                match (hex(i + 1), hex(i + 2)) {
                    (Some(hi), Some(lo)) => {
                        // Two hex digits: at most 255, so the conversion cannot fail.
                        out.push(u8::try_from(hi * 16 + lo).unwrap_or_default());
                        i += 2;
                    }
                    _ => {
                        return Err(FormError(
                            "Invalid percent-encoding in the request body.".to_owned(),
                        ));
                    }
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError("The request body is not valid UTF-8.".to_owned()))
}

/// The parameters of `POST /v1/payment_intents/{id}/capture`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureForm {
    pub amount_to_capture: Option<i64>,
    pub final_capture: Option<bool>,
    pub metadata: MetadataUpdate,
}

impl CaptureForm {
    /// Stripe's default: a capture without `final_capture` is final.
    pub fn is_final(&self) -> bool {
        self.final_capture.unwrap_or(true)
    }
}

/// Reads the capture parameters, refusing unknown ones as Stripe does.
pub fn parse_capture(pairs: &[(String, String)]) -> Result<CaptureForm, ApiError> {
    let mut form = CaptureForm::default();
    for (name, value) in pairs {
        match name.as_str() {
            "amount_to_capture" => {
                form.amount_to_capture = Some(value.parse::<i64>().map_err(|_| {
                    ApiError::invalid(
                        Some("parameter_invalid_integer"),
                        format!("Invalid integer: {value}"),
                    )
                    .with_param("amount_to_capture")
                })?);
            }
            "final_capture" => {
                form.final_capture = Some(match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ApiError::invalid(None, format!("Invalid boolean: {value}"))
                            .with_param("final_capture"));
                    }
                });
            }
            "statement_descriptor_suffix" if value.chars().count() <= 22 => {}
            _ if is_expand(name) => {}
            _ => {
                if let Some(key) = metadata_key(name) {
                    check_metadata(key, value, form.metadata.set.len())?;
                    form.metadata.set.push((key.to_owned(), value.clone()));
                } else if name == "metadata" && value.is_empty() {
                    form.metadata.clear_all = true;
                } else {
                    return Err(unknown_parameter(name));
                }
            }
        }
    }
    Ok(form)
}

/// Reads the cancel parameters (`cancellation_reason`, `expand`).
pub fn parse_cancel(pairs: &[(String, String)]) -> Result<Option<CancellationReason>, ApiError> {
    let mut reason = None;
    for (name, value) in pairs {
        if name == "cancellation_reason" {
            reason = Some(CancellationReason::parse_requested(value).ok_or_else(|| {
                ApiError::invalid(
                    Some("parameter_invalid_string"),
                    format!(
                        "Invalid cancellation_reason: must be one of duplicate, fraudulent, \
                         requested_by_customer or abandoned; got {value:?}"
                    ),
                )
                .with_param("cancellation_reason")
            })?);
        } else if !is_expand(name) {
            return Err(unknown_parameter(name));
        }
    }
    Ok(reason)
}

fn is_expand(name: &str) -> bool {
    name == "expand" || name.starts_with("expand[")
}

fn metadata_key(name: &str) -> Option<&str> {
    name.strip_prefix("metadata[")?.strip_suffix(']')
}

fn check_metadata(key: &str, value: &str, already: usize) -> Result<(), ApiError> {
    if key.is_empty() || key.chars().count() > MAX_METADATA_KEY_LEN {
        return Err(ApiError::invalid(
            Some("parameter_invalid_string"),
            format!("Metadata keys must be 1 to {MAX_METADATA_KEY_LEN} characters."),
        )
        .with_param("metadata"));
    }
    if value.chars().count() > MAX_METADATA_VALUE_LEN {
        return Err(ApiError::invalid(
            Some("parameter_invalid_string"),
            format!("Metadata values can have up to {MAX_METADATA_VALUE_LEN} characters."),
        )
        .with_param("metadata"));
    }
    if already >= MAX_METADATA_KEYS {
        return Err(ApiError::invalid(
            None,
            format!("Metadata can have up to {MAX_METADATA_KEYS} keys."),
        )
        .with_param("metadata"));
    }
    Ok(())
}

fn unknown_parameter(name: &str) -> ApiError {
    let shown: String = name.chars().take(100).collect();
    ApiError::invalid(
        Some("parameter_unknown"),
        format!("Received unknown parameter: {shown}"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn form_bodies_decode_plus_and_percent_escapes() {
        let got = decode_form(b"metadata%5Bshipment_id%5D=S+1%2F2&final_capture=false").unwrap();
        assert_eq!(
            got,
            pairs(&[
                ("metadata[shipment_id]", "S 1/2"),
                ("final_capture", "false")
            ])
        );
        assert!(decode_form(b"a=%zz").is_err());
        assert!(decode_form(b"a=%ff").is_err());
        assert_eq!(decode_form(b"").unwrap(), vec![]);
    }

    #[test]
    fn capture_parameters_parse_and_unknown_ones_are_refused() {
        let f = parse_capture(&pairs(&[
            ("amount_to_capture", "500"),
            ("final_capture", "false"),
            ("metadata[order_id]", "O1"),
        ]))
        .unwrap();
        assert_eq!(f.amount_to_capture, Some(500));
        assert!(!f.is_final());
        assert_eq!(f.metadata.set, pairs(&[("order_id", "O1")]));
        assert!(parse_capture(&[]).unwrap().is_final());
        let e = parse_capture(&pairs(&[("amount", "5")])).unwrap_err();
        assert_eq!(e.code, Some("parameter_unknown"));
        let e = parse_capture(&pairs(&[("amount_to_capture", "5.00")])).unwrap_err();
        assert_eq!(e.code, Some("parameter_invalid_integer"));
        assert!(parse_capture(&pairs(&[("final_capture", "yes")])).is_err());
    }

    #[test]
    fn errors_serialise_in_stripes_shape() {
        let (status, e) = ApiError::from_model(&ModelError::Declined {
            decline_code: "insufficient_funds".into(),
        });
        assert_eq!(status, 402);
        let json = serde_json::to_value(e.body()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": "Your card has insufficient funds."
            }})
        );
    }
}

//! PayPal's dialect (under `/paypal`): the OAuth 2.0 client-credentials token
//! (`POST /v1/oauth2/token`, the client secret being the sandbox's API key), `POST
//! /v2/payments/authorizations/{id}/capture` with a decimal amount, `invoice_id` and
//! `final_capture` (`false` by default, as on PayPal), `POST .../void`, `GET
//! /v2/payments/authorizations/{id}` and the checkout order listing its captures
//! (`GET /v2/checkout/orders/O-{id}`), the `PayPal-Request-Id` header, PayPal's error body
//! with 422 issues, and unsigned `PAYMENT.CAPTURE.*` webhooks for captures that settle later.
//!
//! Captures answer `COMPLETED` unless the scenario sets `settle_after_ms` (then `PENDING`,
//! settling later); a scenario decline answers `DECLINED` with the code as the reason.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Sandbox;
use super::dialect::{Dialect, DialectReply, Executed, Request, header, new_id};
use super::model::{
    Acceptance, AuthorizationView, CancellationReason, CaptureCommand, LedgerOutcome,
    MetadataUpdate, ModelError, Status,
};
use crate::domain::{Currency, MinorUnits, Money};

pub(super) struct PayPal;

fn error(status: u16, name: &str, issue: Option<&str>, message: &str) -> DialectReply {
    let details: Vec<Value> = issue
        .map(|i| vec![json!({"issue": i, "description": message})])
        .unwrap_or_default();
    DialectReply::json(
        status,
        &json!({"name": name, "message": message, "debug_id": "sbx0debug", "details": details}),
    )
}

fn unprocessable(issue: &str, message: &str) -> DialectReply {
    error(422, "UNPROCESSABLE_ENTITY", Some(issue), message)
}

impl Dialect for PayPal {
    const NAME: &'static str = "paypal";
    fn authorized(sandbox: &Sandbox, headers: &HeaderMap) -> bool {
        if sandbox.shared.options.api_key.is_none() {
            return true;
        }
        let Some(token) = header(headers, "authorization")
            .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
        else {
            return false;
        };
        sandbox
            .shared
            .tokens
            .lock()
            .is_ok_and(|tokens| tokens.contains(&token))
    }
    fn unauthorized() -> DialectReply {
        DialectReply::json(
            401,
            &json!({"error": "invalid_token", "error_description": "Token signature verification failed"}),
        )
    }
    fn not_found(id: &str) -> DialectReply {
        error(
            404,
            "RESOURCE_NOT_FOUND",
            Some("INVALID_RESOURCE_ID"),
            &format!("Specified resource ID {id} does not exist."),
        )
    }
    fn in_progress() -> DialectReply {
        unprocessable(
            "PREVIOUS_REQUEST_IN_PROGRESS",
            "A previous request with this PayPal-Request-Id is still being processed.",
        )
    }
    fn key_reused() -> DialectReply {
        unprocessable(
            "DUPLICATE_REQUEST_ID",
            "The PayPal-Request-Id was already used with a different request.",
        )
    }
    fn unavailable() -> DialectReply {
        error(503, "SERVICE_UNAVAILABLE", None, "Service Unavailable.")
    }
    fn server_error() -> DialectReply {
        error(
            500,
            "INTERNAL_SERVER_ERROR",
            None,
            "An internal server error occurred.",
        )
    }
    /// PayPal keeps answers under the request id, 422 issues included.
    fn saves(status: u16) -> bool {
        (200..300).contains(&status) || status == 422
    }
}

pub(super) fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/v1/oauth2/token", post(token))
        .route("/v2/payments/authorizations/{id}", get(read_authorization))
        .route("/v2/payments/authorizations/{id}/capture", post(capture))
        .route("/v2/payments/authorizations/{id}/void", post(void))
        .route(
            "/v2/payments/authorizations/{id}/reauthorize",
            post(reauthorize),
        )
        .route("/v2/checkout/orders/{order}", get(read_order))
}

async fn token(State(sandbox): State<Sandbox>, headers: HeaderMap) -> DialectReply {
    use base64::Engine as _;
    let ok = match &sandbox.shared.options.api_key {
        None => true,
        Some(key) => header(&headers, "authorization")
            .and_then(|v| v.strip_prefix("Basic ").map(str::to_owned))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|pair| pair.split_once(':').map(|(_, secret)| secret.to_owned()))
            .is_some_and(|secret| &secret == key),
    };
    if !ok {
        return DialectReply::json(
            401,
            &json!({"error": "invalid_client", "error_description": "Client Authentication failed"}),
        );
    }
    let token = new_id(&sandbox, "A21AA-sbx-");
    if let Ok(mut tokens) = sandbox.shared.tokens.lock() {
        tokens.insert(token.clone());
    }
    DialectReply::json(
        200,
        &json!({"scope": "https://uri.paypal.com/services/payments/payment", "access_token": token, "token_type": "Bearer", "app_id": "APP-SANDBOX", "expires_in": 32400, "nonce": "sbx"}),
    )
}

#[derive(Debug, Deserialize)]
struct AmountBody {
    currency_code: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureBody {
    #[serde(default)]
    amount: Option<AmountBody>,
    #[serde(default)]
    invoice_id: Option<String>,
    #[serde(default)]
    final_capture: Option<bool>,
    #[serde(default)]
    note_to_payer: Option<String>,
    #[serde(default)]
    soft_descriptor: Option<String>,
}

/// Currencies PayPal takes and shows without decimals: "This currency does not support
/// decimals. If you pass a decimal amount, an error occurs."
/// (developer.paypal.com/docs/api/reference/currency-codes/: HUF, JPY, TWD).
const NO_DECIMALS: [&str; 3] = ["HUF", "JPY", "TWD"];

fn amount(currency: Currency, minor: i64) -> Value {
    let value = MinorUnits::new(minor)
        .map(|m| Money::new(m, currency).to_major_string())
        .unwrap_or_default();
    let value = if NO_DECIMALS.contains(&currency.code()) {
        value.split('.').next().unwrap_or_default().to_owned()
    } else {
        value
    };
    json!({"currency_code": currency.code(), "value": value})
}

fn order_id(authorization_id: &str) -> String {
    format!("O-{authorization_id}")
}

fn capture_resource(
    v: &AuthorizationView,
    id: &str,
    status: &str,
    minor: i64,
    invoice_id: Option<&str>,
    is_final: bool,
    reason: Option<&str>,
) -> Value {
    let mut c = json!({
        "id": id,
        "status": status,
        "amount": amount(v.currency, minor),
        "invoice_id": invoice_id,
        "final_capture": is_final,
        "links": [
            {"href": format!("https://api-m.sandbox.paypal.com/v2/payments/captures/{id}"), "rel": "self", "method": "GET"},
            {"href": format!("https://api-m.sandbox.paypal.com/v2/payments/authorizations/{}", v.id), "rel": "up", "method": "GET"},
        ],
    });
    if let Some(reason) = reason {
        c["status_details"] = json!({"reason": reason});
    }
    c
}

fn authorization(v: &AuthorizationView) -> Value {
    let status = match v.status {
        Status::Canceled if v.cancellation_reason == Some(CancellationReason::Expired) => "EXPIRED",
        Status::Canceled => "VOIDED",
        Status::Succeeded => "CAPTURED",
        Status::RequiresCapture if v.amount_received > 0 || !v.pending.is_empty() => {
            "PARTIALLY_CAPTURED"
        }
        Status::RequiresCapture => "CREATED",
    };
    json!({
        "id": v.id,
        "status": status,
        "amount": amount(v.currency, v.amount),
        "expiration_time": v.expires_at.to_rfc3339(),
        "supplementary_data": {"related_ids": {"order_id": order_id(&v.id)}},
    })
}

async fn capture(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> DialectReply {
    let parsed: Result<CaptureBody, _> = serde_json::from_slice(&body);
    let request = Request {
        method: "POST",
        path: format!("/paypal/v2/payments/authorizations/{id}/capture"),
        authorization_id: id.clone(),
        key: header(&headers, "paypal-request-id"),
        body: String::from_utf8_lossy(&body).into_owned(),
        amount: None,
        is_final: parsed
            .as_ref()
            .ok()
            .map(|b| b.final_capture.unwrap_or(false)),
        capture: true,
    };
    let sb = sandbox.clone();
    sandbox
        .dialect_call::<PayPal>(&headers, request, move |state, call, now| {
            let body = match parsed {
                Ok(b) => b,
                Err(e) => {
                    return Executed::reply(
                        error(400, "INVALID_REQUEST", Some("MALFORMED_REQUEST_JSON"), &e.to_string()),
                        LedgerOutcome::Error,
                    );
                }
            };
            let _ = (&body.note_to_payer, &body.soft_descriptor);
            let Some(view) = state.model.view(&id, now) else {
                return Executed::reply(PayPal::not_found(&id), LedgerOutcome::Error);
            };
            let minor = match &body.amount {
                None => None,
                Some(a) => {
                    let Ok(currency) = Currency::parse(&a.currency_code) else {
                        return Executed::reply(
                            unprocessable("INVALID_CURRENCY_CODE", "Currency code is invalid."),
                            LedgerOutcome::Error,
                        );
                    };
                    if currency != view.currency {
                        return Executed::reply(
                            unprocessable(
                                "AUTH_CAPTURE_CURRENCY_MISMATCH",
                                "Currency of capture must be the same as currency of authorization.",
                            ),
                            LedgerOutcome::Error,
                        );
                    }
                    if NO_DECIMALS.contains(&currency.code()) && a.value.contains('.') {
                        return Executed::reply(
                            unprocessable(
                                "DECIMALS_NOT_SUPPORTED",
                                "Currency does not support decimals.",
                            ),
                            LedgerOutcome::Error,
                        );
                    }
                    match Money::parse_major(&a.value, currency) {
                        Ok(m) => Some(m.amount().get()),
                        Err(_) => {
                            return Executed::reply(
                                unprocessable(
                                    "DECIMAL_PRECISION",
                                    "The value of the field should not have more decimal places than the currency allows.",
                                ),
                                LedgerOutcome::Error,
                            );
                        }
                    }
                }
            };
            let is_final = body.final_capture.unwrap_or(false);
            let capture_id = new_id(&sb, "CAP");
            let command = CaptureCommand {
                amount: minor,
                is_final,
                idempotency_key: call.idempotency_key.clone(),
                metadata: MetadataUpdate::default(),
                reference: Some(capture_id.clone()),
            };
            let invoice = body.invoice_id.clone();
            if let Some(ms) = state.model.settle_after_ms(&id) {
                let acceptance = Acceptance {
                    command,
                    reference: capture_id.clone(),
                    channel: PayPal::NAME.to_owned(),
                    merchant_reference: invoice.clone(),
                    account: None,
                    settles_at: now + chrono::Duration::milliseconds(ms as i64),
                    ledger_seq: call.seq,
                };
                return match state.model.accept(&id, acceptance, now) {
                    Ok(v) => {
                        let held = v.pending.last().map_or(0, |p| p.amount);
                        Executed {
                            settle: Some(std::time::Duration::from_millis(ms)),
                            ..Executed::reply(
                                DialectReply::json(
                                    201,
                                    &capture_resource(&v, &capture_id, "PENDING", held, invoice.as_deref(), is_final, Some("PENDING_REVIEW")),
                                ),
                                LedgerOutcome::Accepted,
                            )
                        }
                    }
                    Err(e) => refused(&view, &capture_id, invoice.as_deref(), is_final, minor, &e),
                };
            }
            match state.model.capture(&id, &command, now) {
                Ok(c) => Executed {
                    moved: c.amount,
                    ..Executed::reply(
                        DialectReply::json(
                            201,
                            &capture_resource(&c.view, &capture_id, "COMPLETED", c.amount, invoice.as_deref(), is_final, None),
                        ),
                        LedgerOutcome::Captured,
                    )
                },
                Err(e) => refused(&view, &capture_id, invoice.as_deref(), is_final, minor, &e),
            }
        })
        .await
}

/// A capture the model refused, as PayPal answers it.
fn refused(
    view: &AuthorizationView,
    capture_id: &str,
    invoice: Option<&str>,
    is_final: bool,
    minor: Option<i64>,
    e: &ModelError,
) -> Executed {
    let reply = match e {
        ModelError::Declined { decline_code } => DialectReply::json(
            201,
            &capture_resource(
                view,
                capture_id,
                "DECLINED",
                minor.unwrap_or(0),
                invoice,
                is_final,
                Some(&decline_code.to_ascii_uppercase()),
            ),
        ),
        ModelError::Expired => unprocessable("AUTHORIZATION_EXPIRED", "Authorization has expired."),
        ModelError::UnexpectedState {
            status: Status::Canceled,
            ..
        } => unprocessable("AUTHORIZATION_VOIDED", "Authorization is voided."),
        ModelError::UnexpectedState { .. } => unprocessable(
            "AUTHORIZATION_ALREADY_CAPTURED",
            "Authorization has been previously captured and hence cannot be captured again.",
        ),
        ModelError::AmountTooLarge { .. } => unprocessable(
            "MAX_CAPTURE_AMOUNT_EXCEEDED",
            "Capture amount exceeds allowable limit.",
        ),
        ModelError::AmountTooSmall { .. } => {
            unprocessable("CANNOT_BE_ZERO_OR_NEGATIVE", "Must be greater than zero.")
        }
        ModelError::LimitReached { .. } => unprocessable(
            "MAX_CAPTURE_COUNT_EXCEEDED",
            "Maximum number of allowable captures has been reached.",
        ),
        ModelError::NotFound { id } => PayPal::not_found(id),
        ModelError::Invalid(m) | ModelError::Conflict { id: m } => {
            error(400, "INVALID_REQUEST", None, m)
        }
        ModelError::NotAdjustable { .. } => unprocessable(
            "REAUTHORIZATION_NOT_SUPPORTED",
            "A reauthorize cannot be attempted on an authorization_id that is the result of a prior reauthorization.",
        ),
        ModelError::AdjustmentDeclined => unprocessable(
            "TRANSACTION_REFUSED",
            "PayPal's internal controls prevent authorization from being captured.",
        ),
        ModelError::Overflow => PayPal::server_error(),
    };
    let outcome = if matches!(e, ModelError::Declined { .. }) {
        LedgerOutcome::Declined
    } else {
        LedgerOutcome::Error
    };
    Executed::reply(reply, outcome)
}

/// The body of `POST /v2/payments/authorizations/{id}/reauthorize`: "Supports only the
/// `amount` request parameter".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReauthorizeBody {
    amount: AmountBody,
}

/// A reauthorized payment's honor period: "A reauthorized payment itself has a new honor
/// period of three days."
const HONOR_PERIOD_DAYS: i64 = 3;

/// `POST /v2/payments/authorizations/{id}/reauthorize`: a new authorization (its own id, a new
/// 3-day honor period, the original's expiry) for the amount asked, at most what is left; the
/// original captures no more. Once: a second one, or one of a reauthorization, is refused 422
/// `REAUTHORIZATION_NOT_SUPPORTED`. The honor-period window (days 4 to 29) is the worker's to
/// keep; the dialect does not refuse an early request (PayPal's spec lists no error for it).
async fn reauthorize(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> DialectReply {
    let parsed: Result<ReauthorizeBody, _> = serde_json::from_slice(&body);
    let request = Request {
        method: "POST",
        path: format!("/paypal/v2/payments/authorizations/{id}/reauthorize"),
        authorization_id: id.clone(),
        key: header(&headers, "paypal-request-id"),
        body: String::from_utf8_lossy(&body).into_owned(),
        amount: None,
        is_final: None,
        capture: false,
    };
    let sb = sandbox.clone();
    sandbox
        .dialect_call::<PayPal>(&headers, request, move |state, _call, now| {
            let body = match parsed {
                Ok(b) => b,
                Err(e) => {
                    return Executed::reply(
                        error(400, "INVALID_REQUEST", Some("MISSING_REQUIRED_PARAMETER"), &e.to_string()),
                        LedgerOutcome::Error,
                    );
                }
            };
            let Some(view) = state.model.view(&id, now) else {
                return Executed::reply(PayPal::not_found(&id), LedgerOutcome::Error);
            };
            let Ok(currency) = Currency::parse(&body.amount.currency_code) else {
                return Executed::reply(
                    unprocessable("INVALID_CURRENCY_CODE", "Currency code is invalid."),
                    LedgerOutcome::Error,
                );
            };
            if currency != view.currency {
                return Executed::reply(
                    unprocessable(
                        "AUTH_CURRENCY_MISMATCH",
                        "The currency specified during reauthorization should be the same as the currency specified in the original authorization.",
                    ),
                    LedgerOutcome::Error,
                );
            }
            let Ok(money) = Money::parse_major(&body.amount.value, currency) else {
                return Executed::reply(
                    unprocessable(
                        "DECIMAL_PRECISION",
                        "If the currency supports decimals, only two decimal place precision is supported.",
                    ),
                    LedgerOutcome::Error,
                );
            };
            let new_id = new_id(&sb, "RA").to_ascii_uppercase();
            match state.model.reauthorize(
                &id,
                &new_id,
                money.amount().get(),
                chrono::Duration::days(HONOR_PERIOD_DAYS),
                now,
            ) {
                Ok(v) => Executed::reply(
                    DialectReply::json(201, &authorization(&v)),
                    LedgerOutcome::Adjusted,
                ),
                Err(ModelError::AdjustmentDeclined) => {
                    let mut denied = authorization(&view);
                    denied["id"] = json!(new_id);
                    denied["status"] = json!("DENIED");
                    Executed::reply(DialectReply::json(201, &denied), LedgerOutcome::Declined)
                }
                Err(ModelError::AmountTooLarge { .. }) => Executed::reply(
                    unprocessable(
                        "TRANSACTION_REFUSED",
                        "The reauthorization amount is more than is left of the authorization.",
                    ),
                    LedgerOutcome::Error,
                ),
                Err(e) => refused(&view, "", None, false, None, &e),
            }
        })
        .await
}

async fn void(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> DialectReply {
    let representation =
        header(&headers, "prefer").is_some_and(|p| p.contains("return=representation"));
    let request = Request {
        method: "POST",
        path: format!("/paypal/v2/payments/authorizations/{id}/void"),
        authorization_id: id.clone(),
        key: header(&headers, "paypal-request-id"),
        body: String::from_utf8_lossy(&body).into_owned(),
        amount: None,
        is_final: None,
        capture: false,
    };
    sandbox
        .dialect_call::<PayPal>(&headers, request, move |state, _call, now| {
            match state.model.cancel(&id, None, now) {
                Ok(v) if representation => Executed::reply(
                    DialectReply::json(200, &authorization(&v)),
                    LedgerOutcome::Released,
                ),
                Ok(_) => Executed::reply(DialectReply::empty(204), LedgerOutcome::Released),
                Err(ModelError::NotFound { id }) => {
                    Executed::reply(PayPal::not_found(&id), LedgerOutcome::Error)
                }
                Err(ModelError::UnexpectedState {
                    status: Status::Canceled,
                    ..
                }) => Executed::reply(
                    unprocessable("AUTHORIZATION_VOIDED", "Authorization is voided."),
                    LedgerOutcome::Error,
                ),
                Err(_) => Executed::reply(
                    unprocessable(
                        "AUTHORIZATION_ALREADY_CAPTURED",
                        "Authorization has been captured and cannot be voided.",
                    ),
                    LedgerOutcome::Error,
                ),
            }
        })
        .await
}

async fn read_authorization(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> DialectReply {
    sandbox
        .dialect_read::<PayPal>(
            &headers,
            format!("/paypal/v2/payments/authorizations/{id}"),
            Some(id.clone()),
            |state, now| match state.model.view(&id, now) {
                Some(v) => DialectReply::json(200, &authorization(&v)),
                None => PayPal::not_found(&id),
            },
        )
        .await
}

async fn read_order(
    State(sandbox): State<Sandbox>,
    Path(order): Path<String>,
    headers: HeaderMap,
) -> DialectReply {
    let id = order.strip_prefix("O-").unwrap_or("").to_owned();
    sandbox
        .dialect_read::<PayPal>(
            &headers,
            format!("/paypal/v2/checkout/orders/{order}"),
            Some(id.clone()),
            |state, now| match state.model.view(&id, now) {
                Some(v) => {
                    let mut captures: Vec<Value> = v
                        .captures
                        .iter()
                        .map(|c| {
                            capture_resource(
                                &v,
                                c.reference.as_deref().unwrap_or("CAP-sync"),
                                "COMPLETED",
                                c.amount,
                                None,
                                c.is_final,
                                None,
                            )
                        })
                        .collect();
                    captures.extend(v.pending.iter().map(|p| {
                        capture_resource(
                            &v,
                            &p.reference,
                            "PENDING",
                            p.amount,
                            p.merchant_reference.as_deref(),
                            p.is_final,
                            Some("PENDING_REVIEW"),
                        )
                    }));
                    captures.extend(v.declined.iter().map(|d| {
                        capture_resource(
                            &v,
                            &d.reference,
                            "DECLINED",
                            d.amount,
                            None,
                            false,
                            Some(&d.decline_code.to_ascii_uppercase()),
                        )
                    }));
                    DialectReply::json(
                        200,
                        &json!({
                            "id": order,
                            "status": "COMPLETED",
                            "intent": "AUTHORIZE",
                            "purchase_units": [{"payments": {"captures": captures}}],
                        }),
                    )
                }
                None => PayPal::not_found(&order),
            },
        )
        .await
}

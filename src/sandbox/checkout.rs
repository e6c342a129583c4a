//! Checkout.com's dialect (under `/checkout`): `POST /payments/{id}/captures` (explicit
//! `capture_type`, `Final` by default) and `/voids` answering `202` with an `action_id`, the
//! outcome posted later as a signed `payment_captured` / `payment_capture_declined` /
//! `payment_voided` webhook; `GET /payments/{id}` with `balances`; bearer auth and the
//! `Cko-Idempotency-Key` header (only 2xx answers are kept, as on Checkout.com).
//!
//! An amount in a three-decimal currency whose last digit is not 0 is refused with 422
//! `amount_invalid` (Checkout.com: "The last digit must always be a 0").
//!
//! Captures settle `settle_after_ms` after they are accepted (at once when unset); until
//! then the payment's balances do not show them.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Sandbox;
use super::dialect::{
    Dialect, DialectReply, Executed, Request, bearer_ok, header, new_id, settle_delay,
};
use super::model::{
    Acceptance, Adjustment, AuthorizationView, CancellationReason, CaptureCommand, LedgerOutcome,
    MetadataUpdate, ModelError, Status,
};
use super::notify::Outgoing;

pub(super) struct Checkout;

fn error(status: u16, kind: &str, codes: &[&str]) -> DialectReply {
    DialectReply::json(
        status,
        &json!({"request_id": "0HL80RJLS76I7", "error_type": kind, "error_codes": codes}),
    )
}

impl Dialect for Checkout {
    /// "If the original request returns a 4xx or 5xx response code, no idempotent result is
    /// saved and the payment is reattempted" (checkout.com/docs, idempotency).
    fn stores_server_errors() -> bool {
        false
    }
    const NAME: &'static str = "checkout";
    fn authorized(sandbox: &Sandbox, headers: &HeaderMap) -> bool {
        bearer_ok(sandbox, headers)
    }
    fn unauthorized() -> DialectReply {
        DialectReply::empty(401)
    }
    fn not_found(_id: &str) -> DialectReply {
        DialectReply::empty(404)
    }
    fn in_progress() -> DialectReply {
        error(409, "request_conflict", &["idempotency_key_in_use"])
    }
    fn key_reused() -> DialectReply {
        error(422, "request_invalid", &["idempotency_key_reused"])
    }
    fn unavailable() -> DialectReply {
        DialectReply::empty(503)
    }
    fn server_error() -> DialectReply {
        DialectReply::empty(500)
    }
}

pub(super) fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/payments/{id}", get(read))
        .route("/payments/{id}/captures", post(capture))
        .route("/payments/{id}/voids", post(void))
        .route("/payments/{id}/authorizations", post(authorize))
}

#[derive(Debug, Deserialize)]
struct IncrementBody {
    /// The increase; 0 or absent extends the validity.
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    reference: Option<String>,
}

/// How long an incremental authorization (or an extension) keeps the payment authorized from
/// now: the 7-day window of a card payment.
const RENEWS_FOR_DAYS: i64 = 7;

/// `POST /payments/{id}/authorizations`: an incremental authorization (or, with amount 0, an
/// extension of the validity), answered synchronously `201` with `approved`, the new `amount`
/// and `expires_on`. Not once the payment is partly captured (403, as for a capture not
/// allowed).
async fn authorize(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> DialectReply {
    let parsed: Result<IncrementBody, _> = serde_json::from_slice(&body);
    let request = Request {
        method: "POST",
        path: format!("/checkout/payments/{id}/authorizations"),
        authorization_id: id.clone(),
        key: header(&headers, "cko-idempotency-key"),
        body: String::from_utf8_lossy(&body).into_owned(),
        amount: parsed.as_ref().ok().and_then(|b| b.amount),
        is_final: None,
        capture: false,
    };
    let sb = sandbox.clone();
    sandbox
        .dialect_call::<Checkout>(&headers, request, move |state, _call, now| {
            let Ok(body) = parsed else {
                return Executed::reply(
                    error(422, "request_invalid", &["request_body_malformed"]),
                    LedgerOutcome::Error,
                );
            };
            let increase = body.amount.unwrap_or(0);
            if increase < 0 {
                return Executed::reply(
                    error(422, "request_invalid", &["amount_invalid"]),
                    LedgerOutcome::Error,
                );
            }
            let Some(before) = state.model.view(&id, now) else {
                return Executed::reply(Checkout::not_found(&id), LedgerOutcome::Error);
            };
            let adjustment = Adjustment {
                new_total: (increase > 0).then_some(before.amount + increase),
                renew_for: Some(chrono::Duration::days(RENEWS_FOR_DAYS)),
                before_first_capture: true,
                max_adjustments: None,
            };
            let action = new_id(&sb, "act_");
            let answer = |v: &AuthorizationView, approved: bool| {
                json!({
                    "action_id": action,
                    "amount": v.amount,
                    "currency": v.currency.code(),
                    "approved": approved,
                    "status": if approved { "Authorized" } else { "Declined" },
                    "response_code": if approved { "10000" } else { "20051" },
                    "response_summary": if approved { "Approved" } else { "Insufficient Funds" },
                    "expires_on": v.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "processed_on": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "reference": body.reference,
                    "balances": payment(v)["balances"].clone(),
                    "_links": {
                        "self": {"href": format!("/payments/{id}")},
                        "actions": {"href": format!("/payments/{id}/actions")},
                    },
                })
            };
            match state.model.adjust(&id, adjustment, now) {
                Ok(v) => Executed::reply(
                    DialectReply::json(201, &answer(&v, true)),
                    LedgerOutcome::Adjusted,
                ),
                Err(ModelError::AdjustmentDeclined) => Executed::reply(
                    DialectReply::json(201, &answer(&before, false)),
                    LedgerOutcome::Declined,
                ),
                Err(ModelError::NotFound { id }) => {
                    Executed::reply(Checkout::not_found(&id), LedgerOutcome::Error)
                }
                // Captured, voided, expired: not allowed.
                Err(_) => Executed::reply(DialectReply::empty(403), LedgerOutcome::Error),
            }
        })
        .await
}

#[derive(Debug, Deserialize)]
struct CaptureBody {
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    capture_type: Option<String>,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct VoidBody {
    #[serde(default)]
    reference: Option<String>,
}

fn payment(v: &AuthorizationView) -> Value {
    let status = match v.status {
        Status::Canceled if v.cancellation_reason == Some(CancellationReason::Expired) => "Expired",
        Status::Canceled if v.amount_received == 0 => "Voided",
        Status::Canceled | Status::Succeeded => "Captured",
        Status::RequiresCapture if v.amount_received > 0 => "Partially Captured",
        Status::RequiresCapture => "Authorized",
    };
    json!({
        "id": v.id,
        "status": status,
        "amount": v.amount,
        "currency": v.currency.code(),
        "approved": true,
        "balances": {
            "total_authorized": v.amount,
            "total_voided": if v.status == Status::Canceled { v.amount - v.amount_received } else { 0 },
            "available_to_void": v.amount_capturable,
            "total_captured": v.amount_received,
            "available_to_capture": v.amount_capturable,
            "total_refunded": 0,
            "available_to_refund": v.amount_received,
        },
    })
}

fn accepted(id: &str, action_id: &str, reference: Option<&str>) -> DialectReply {
    DialectReply::json(
        202,
        &json!({
            "action_id": action_id,
            "reference": reference,
            "_links": {"payment": {"href": format!("/payments/{id}")}},
        }),
    )
}

/// The three-decimal currencies, whose amounts Checkout.com takes with the last digit 0.
const LAST_DIGIT_ZERO: [&str; 7] = ["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];

async fn capture(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> DialectReply {
    let parsed: Result<CaptureBody, _> = serde_json::from_slice(&body);
    let is_final = parsed
        .as_ref()
        .ok()
        .map(|b| b.capture_type.as_deref() != Some("NonFinal"));
    let request = Request {
        method: "POST",
        path: format!("/checkout/payments/{id}/captures"),
        authorization_id: id.clone(),
        key: header(&headers, "cko-idempotency-key"),
        body: String::from_utf8_lossy(&body).into_owned(),
        amount: parsed.as_ref().ok().and_then(|b| b.amount),
        is_final,
        capture: true,
    };
    let sb = sandbox.clone();
    sandbox
        .dialect_call::<Checkout>(&headers, request, move |state, call, now| {
            let body = match parsed {
                Ok(b) => b,
                Err(_) => {
                    return Executed::reply(
                        error(422, "request_invalid", &["request_body_malformed"]),
                        LedgerOutcome::Error,
                    );
                }
            };
            let is_final = match body.capture_type.as_deref() {
                None | Some("Final") => true,
                Some("NonFinal") => false,
                Some(_) => {
                    return Executed::reply(
                        error(422, "request_invalid", &["capture_type_invalid"]),
                        LedgerOutcome::Error,
                    );
                }
            };
            if body
                .reference
                .as_deref()
                .is_some_and(|r| r.chars().count() > 50)
            {
                return Executed::reply(
                    error(422, "request_invalid", &["reference_invalid"]),
                    LedgerOutcome::Error,
                );
            }
            if let Some(amount) = body.amount
                && amount % 10 != 0
                && state
                    .model
                    .view(&id, now)
                    .is_some_and(|v| LAST_DIGIT_ZERO.contains(&v.currency.code()))
            {
                return Executed::reply(
                    error(422, "request_invalid", &["amount_invalid"]),
                    LedgerOutcome::Error,
                );
            }
            let action = new_id(&sb, "act_");
            let delay = settle_delay(state, &id, 0);
            let acceptance = Acceptance {
                command: CaptureCommand {
                    amount: body.amount,
                    is_final,
                    idempotency_key: call.idempotency_key.clone(),
                    metadata: MetadataUpdate::default(),
                    reference: Some(action.clone()),
                },
                reference: action.clone(),
                channel: Checkout::NAME.to_owned(),
                merchant_reference: body.reference.clone(),
                account: None,
                settles_at: now
                    + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero()),
                ledger_seq: call.seq,
            };
            match state.model.accept(&id, acceptance, now) {
                Ok(_) => Executed {
                    settle: Some(delay),
                    ..Executed::reply(
                        accepted(&id, &action, body.reference.as_deref()),
                        LedgerOutcome::Accepted,
                    )
                },
                Err(ModelError::NotFound { id }) => {
                    Executed::reply(Checkout::not_found(&id), LedgerOutcome::Error)
                }
                Err(ModelError::AmountTooLarge { .. } | ModelError::AmountTooSmall { .. }) => {
                    Executed::reply(
                        error(422, "request_invalid", &["amount_invalid"]),
                        LedgerOutcome::Error,
                    )
                }
                // Captured, voided, expired or out of partial actions: "Capture not allowed".
                Err(_) => Executed::reply(DialectReply::empty(403), LedgerOutcome::Error),
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
    let parsed: Result<VoidBody, _> = serde_json::from_slice(&body);
    let request = Request {
        method: "POST",
        path: format!("/checkout/payments/{id}/voids"),
        authorization_id: id.clone(),
        key: header(&headers, "cko-idempotency-key"),
        body: String::from_utf8_lossy(&body).into_owned(),
        amount: None,
        is_final: None,
        capture: false,
    };
    let sb = sandbox.clone();
    sandbox
        .dialect_call::<Checkout>(&headers, request, move |state, _call, now| {
            let reference = parsed.ok().and_then(|b| b.reference);
            match state.model.cancel(&id, None, now) {
                Ok(v) => {
                    let action = new_id(&sb, "act_");
                    let notify = Outgoing {
                        channel: Checkout::NAME.to_owned(),
                        release: true,
                        adjustment: false,
                        authorization_id: id.clone(),
                        reference: action.clone(),
                        merchant_reference: reference.clone(),
                        account: None,
                        amount: v.amount - v.amount_received,
                        currency: v.currency,
                        is_final: true,
                        success: true,
                        code: None,
                    };
                    Executed {
                        notify: if state.model.silent(&id) {
                            Vec::new()
                        } else {
                            vec![notify]
                        },
                        ..Executed::reply(
                            accepted(&id, &action, reference.as_deref()),
                            LedgerOutcome::Released,
                        )
                    }
                }
                Err(ModelError::NotFound { id }) => {
                    Executed::reply(Checkout::not_found(&id), LedgerOutcome::Error)
                }
                Err(_) => Executed::reply(DialectReply::empty(403), LedgerOutcome::Error),
            }
        })
        .await
}

async fn read(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> DialectReply {
    sandbox
        .dialect_read::<Checkout>(
            &headers,
            format!("/checkout/payments/{id}"),
            Some(id.clone()),
            |state, now| match state.model.view(&id, now) {
                Some(v) => DialectReply::json(200, &payment(&v)),
                None => Checkout::not_found(&id),
            },
        )
        .await
}

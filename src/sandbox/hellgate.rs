//! Hellgate's dialect (under `/hellgate`, Commerce API v2): `POST /payments/{id}/capture`
//! with `amount`, `currency_code` and `reference`, answering the payment in `capturing`;
//! `POST /payments/{id}/void`; `GET /payments/{id}`; `X-API-Key` auth; no idempotency
//! header; one capture per payment (a second is refused with 409), as on Hellgate.
//!
//! The capture settles `settle_after_ms` after it is accepted (at once when unset): the
//! payment becomes `captured`, or `failed` when the scenario declines it. Hellgate's
//! notifications are not modelled: the worker reads the payment back.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Sandbox;
use super::dialect::{Dialect, DialectReply, Executed, Request, api_key_ok, new_id, settle_delay};
use super::model::{
    Acceptance, AuthorizationView, CaptureCommand, LedgerOutcome, MetadataUpdate, ModelError,
    Status,
};

pub(super) struct Hellgate;

fn error(status: u16, code: &str, message: &str) -> DialectReply {
    DialectReply::json(status, &json!({"code": code, "message": message}))
}

impl Dialect for Hellgate {
    const NAME: &'static str = "hellgate";
    fn authorized(sandbox: &Sandbox, headers: &HeaderMap) -> bool {
        api_key_ok(sandbox, headers)
    }
    fn unauthorized() -> DialectReply {
        error(401, "unauthorized", "Invalid API key")
    }
    fn not_found(id: &str) -> DialectReply {
        error(404, "not_found", &format!("Payment {id} not found"))
    }
    fn in_progress() -> DialectReply {
        error(409, "conflict", "Another operation is in progress")
    }
    fn key_reused() -> DialectReply {
        error(409, "conflict", "Conflicting request")
    }
    fn unavailable() -> DialectReply {
        error(503, "unavailable", "Service temporarily unavailable")
    }
    fn server_error() -> DialectReply {
        error(500, "internal_error", "Internal server error")
    }
}

pub(super) fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/payments/{id}", get(read))
        .route("/payments/{id}/capture", post(capture))
        .route("/payments/{id}/void", post(void))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureBody {
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    currency_code: Option<String>,
    #[serde(default)]
    reference: Option<String>,
}

/// The payment as Hellgate shows it.
pub(super) fn payment(v: &AuthorizationView) -> Value {
    let status = if !v.pending.is_empty() {
        "capturing"
    } else if !v.declined.is_empty() && v.amount_received == 0 {
        "failed"
    } else {
        match v.status {
            Status::Canceled if v.amount_received == 0 => "voided",
            Status::Canceled | Status::Succeeded => "captured",
            Status::RequiresCapture if v.amount_received > 0 => "captured",
            Status::RequiresCapture => "authorized",
        }
    };
    json!({
        "id": v.id,
        "status": status,
        "currency_code": v.currency.code(),
        "amount": {"authorized": v.amount, "captured": v.amount_received},
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
        path: format!("/hellgate/payments/{id}/capture"),
        authorization_id: id.clone(),
        key: None,
        body: String::from_utf8_lossy(&body).into_owned(),
        amount: parsed.as_ref().ok().and_then(|b| b.amount),
        is_final: Some(true),
        capture: true,
    };
    let sb = sandbox.clone();
    sandbox
        .dialect_call::<Hellgate>(&headers, request, move |state, call, now| {
            let body = match parsed {
                Ok(b) => b,
                Err(e) => {
                    return Executed::reply(
                        error(400, "bad_request", &e.to_string()),
                        LedgerOutcome::Error,
                    );
                }
            };
            let Some(view) = state.model.view(&id, now) else {
                return Executed::reply(Hellgate::not_found(&id), LedgerOutcome::Error);
            };
            if body.amount.is_some() != body.currency_code.is_some()
                || body
                    .currency_code
                    .as_deref()
                    .is_some_and(|c| !c.eq_ignore_ascii_case(view.currency.code()))
            {
                return Executed::reply(
                    error(
                        422,
                        "validation_error",
                        "amount and currency_code go together, in the payment's currency",
                    ),
                    LedgerOutcome::Error,
                );
            }
            if !view.captures.is_empty() || !view.pending.is_empty() || !view.declined.is_empty() {
                return Executed::reply(
                    error(
                        409,
                        "invalid_state",
                        "Hellgate does not support multiple captures",
                    ),
                    LedgerOutcome::Error,
                );
            }
            let delay = settle_delay(state, &id, 0);
            let reference = new_id(&sb, "cap_");
            let acceptance = Acceptance {
                command: CaptureCommand {
                    amount: body.amount,
                    is_final: true,
                    idempotency_key: None,
                    metadata: MetadataUpdate::default(),
                    reference: Some(reference.clone()),
                },
                reference,
                channel: Hellgate::NAME.to_owned(),
                merchant_reference: body.reference,
                account: None,
                settles_at: now
                    + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero()),
                ledger_seq: call.seq,
            };
            match state.model.accept(&id, acceptance, now) {
                Ok(v) => Executed {
                    settle: Some(delay),
                    ..Executed::reply(
                        DialectReply::json(200, &payment(&v)),
                        LedgerOutcome::Accepted,
                    )
                },
                Err(ModelError::NotFound { id }) => {
                    Executed::reply(Hellgate::not_found(&id), LedgerOutcome::Error)
                }
                Err(ModelError::AmountTooLarge { .. } | ModelError::AmountTooSmall { .. }) => {
                    Executed::reply(
                        error(
                            422,
                            "validation_error",
                            "amount must be positive and at most the authorized amount",
                        ),
                        LedgerOutcome::Error,
                    )
                }
                Err(e) => Executed::reply(
                    error(409, "invalid_state", &e.to_string()),
                    LedgerOutcome::Error,
                ),
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
    let request = Request {
        method: "POST",
        path: format!("/hellgate/payments/{id}/void"),
        authorization_id: id.clone(),
        key: None,
        body: String::from_utf8_lossy(&body).into_owned(),
        amount: None,
        is_final: None,
        capture: false,
    };
    sandbox
        .dialect_call::<Hellgate>(&headers, request, move |state, _call, now| {
            match state.model.cancel(&id, None, now) {
                Ok(v) => Executed::reply(
                    DialectReply::json(200, &payment(&v)),
                    LedgerOutcome::Released,
                ),
                Err(ModelError::NotFound { id }) => {
                    Executed::reply(Hellgate::not_found(&id), LedgerOutcome::Error)
                }
                Err(e) => Executed::reply(
                    error(409, "invalid_state", &e.to_string()),
                    LedgerOutcome::Error,
                ),
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
        .dialect_read::<Hellgate>(
            &headers,
            format!("/hellgate/payments/{id}"),
            Some(id.clone()),
            |state, now| match state.model.view(&id, now) {
                Some(v) => DialectReply::json(200, &payment(&v)),
                None => Hellgate::not_found(&id),
            },
        )
        .await
}

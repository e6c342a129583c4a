//! Gr4vy's dialect (under `/gr4vy`): `POST /transactions/{id}/capture` answering a
//! transaction capture (`succeeded`, `pending`, `declined`, `failed`), `POST
//! /transactions/{id}/void`, `GET /transactions/{id}`, bearer auth, the `idempotency-key`
//! header (409 `concurrent_request` while in progress), Gr4vy's error body, and
//! `capture.*` webhooks for captures that settle later.
//!
//! Captures answer synchronously unless the authorization's scenario sets
//! `settle_after_ms`: then they answer `pending` and settle (with a webhook) later. A final
//! capture of 0 releases the rest. `final` defaults to `true`, as on Gr4vy.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::dialect::{
    Dialect, DialectReply, Executed, Request, bearer_ok, header, new_id, refusal_outcome,
};
use super::model::{
    Acceptance, AuthorizationView, CaptureCommand, LedgerOutcome, MetadataUpdate, ModelError,
    Status,
};
use super::{Sandbox, SandboxState};

pub(super) struct Gr4vy;

fn error(status: u16, code: &str, message: &str) -> DialectReply {
    DialectReply::json(
        status,
        &json!({"type": "error", "code": code, "status": status, "message": message, "details": []}),
    )
}

impl Dialect for Gr4vy {
    const NAME: &'static str = "gr4vy";
    fn authorized(sandbox: &Sandbox, headers: &HeaderMap) -> bool {
        bearer_ok(sandbox, headers)
    }
    fn unauthorized() -> DialectReply {
        error(401, "unauthorized", "No valid API authentication found")
    }
    fn not_found(id: &str) -> DialectReply {
        error(
            404,
            "not_found",
            &format!("The transaction {id} could not be found"),
        )
    }
    fn in_progress() -> DialectReply {
        error(
            409,
            "concurrent_request",
            "A request with this idempotency key is still being processed; retry with exponential back-off",
        )
    }
    fn key_reused() -> DialectReply {
        error(
            409,
            "duplicate_record",
            "The idempotency key was already used with a different request",
        )
    }
    fn unavailable() -> DialectReply {
        error(
            503,
            "server_error",
            "The service is temporarily unavailable",
        )
    }
    fn server_error() -> DialectReply {
        error(500, "server_error", "An unexpected error occurred")
    }
}

pub(super) fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/transactions/{id}", get(read))
        .route("/transactions/{id}/capture", post(capture))
        .route("/transactions/{id}/void", post(void))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureBody {
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default, rename = "final")]
    is_final: Option<bool>,
    #[serde(default)]
    external_identifier: Option<String>,
    #[serde(default)]
    cart_items: Option<Vec<Value>>,
}

/// The transaction as Gr4vy shows it.
fn transaction(v: &AuthorizationView) -> Value {
    let status = if !v.pending.is_empty() {
        "capture_pending"
    } else {
        match v.status {
            Status::Canceled if v.amount_received == 0 => "authorization_voided",
            Status::Canceled | Status::Succeeded => "capture_succeeded",
            Status::RequiresCapture if v.amount_received > 0 => "capture_succeeded",
            Status::RequiresCapture => "authorization_succeeded",
        }
    };
    json!({
        "type": "transaction",
        "id": v.id,
        "status": status,
        "amount": v.amount,
        "currency": v.currency.code(),
        "authorized_amount": v.amount,
        "captured_amount": v.amount_received,
        "refunded_amount": 0,
        "intent_outcome": "succeeded",
    })
}

fn capture_answer(
    v: &AuthorizationView,
    status: &str,
    capture_id: &str,
    code: Option<&str>,
) -> Value {
    json!({
        "type": "transaction-capture",
        "status": status,
        "code": code,
        "raw_response_code": if status == "declined" { "51" } else { "00" },
        "raw_response_description": if status == "declined" { "Declined" } else { "Approved" },
        "capture_id": capture_id,
        "transaction": transaction(v),
    })
}

async fn capture(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> DialectReply {
    let text = String::from_utf8_lossy(&body).into_owned();
    let parsed: Result<CaptureBody, _> = serde_json::from_slice(&body);
    let (amount, is_final) = match &parsed {
        Ok(b) => (b.amount, b.is_final),
        Err(_) => (None, None),
    };
    let request = Request {
        method: "POST",
        path: format!("/gr4vy/transactions/{id}/capture"),
        authorization_id: id.clone(),
        key: header(&headers, "idempotency-key"),
        body: text,
        amount,
        is_final,
        capture: true,
    };
    let sb = sandbox.clone();
    sandbox
        .dialect_call::<Gr4vy>(&headers, request, move |state, call, now| {
            let body = match parsed {
                Ok(b) => b,
                Err(e) => {
                    return Executed::reply(
                        error(400, "bad_request", &format!("Request body is invalid: {e}")),
                        LedgerOutcome::Error,
                    );
                }
            };
            if body.cart_items.as_ref().is_some_and(|items| {
                items.iter().any(|i| {
                    i.get("name").and_then(Value::as_str).is_none()
                        || i.get("quantity")
                            .and_then(Value::as_u64)
                            .is_none_or(|q| q == 0)
                        || i.get("unit_amount").and_then(Value::as_i64).is_none()
                })
            }) {
                return Executed::reply(
                    error(
                        400,
                        "bad_request",
                        "cart_items need name, quantity > 0 and unit_amount",
                    ),
                    LedgerOutcome::Error,
                );
            }
            let is_final = body.is_final.unwrap_or(true);
            let capture_id = new_id(&sb, "cap_");
            if body.amount == Some(0) && is_final {
                return match state.model.close(&id, now) {
                    Ok(v) => Executed::reply(
                        DialectReply::json(
                            200,
                            &capture_answer(&v, "succeeded", &capture_id, None),
                        ),
                        LedgerOutcome::Released,
                    ),
                    Err(e) => refused(state, &id, &e, now),
                };
            }
            let command = CaptureCommand {
                amount: body.amount,
                is_final,
                idempotency_key: call.idempotency_key.clone(),
                metadata: MetadataUpdate::default(),
                reference: Some(capture_id.clone()),
            };
            if let Some(ms) = state.model.settle_after_ms(&id) {
                let acceptance = Acceptance {
                    command,
                    reference: capture_id.clone(),
                    channel: Gr4vy::NAME.to_owned(),
                    merchant_reference: body.external_identifier,
                    account: None,
                    settles_at: now + chrono::Duration::milliseconds(ms as i64),
                    ledger_seq: call.seq,
                };
                return match state.model.accept(&id, acceptance, now) {
                    Ok(v) => Executed {
                        settle: Some(std::time::Duration::from_millis(ms)),
                        ..Executed::reply(
                            DialectReply::json(
                                200,
                                &capture_answer(&v, "pending", &capture_id, None),
                            ),
                            LedgerOutcome::Accepted,
                        )
                    },
                    Err(e) => refused(state, &id, &e, now),
                };
            }
            match state.model.capture(&id, &command, now) {
                Ok(c) => Executed {
                    moved: c.amount,
                    ..Executed::reply(
                        DialectReply::json(
                            200,
                            &capture_answer(&c.view, "succeeded", &capture_id, None),
                        ),
                        LedgerOutcome::Captured,
                    )
                },
                Err(e) => refused(state, &id, &e, now),
            }
        })
        .await
}

/// A capture the model refused, as Gr4vy answers it.
fn refused(
    state: &mut SandboxState,
    id: &str,
    e: &ModelError,
    now: chrono::DateTime<Utc>,
) -> Executed {
    let view = state.model.view(id, now);
    let reply = match (e, view) {
        (ModelError::Declined { decline_code }, Some(v)) => DialectReply::json(
            200,
            &capture_answer(
                &v,
                "declined",
                &format!("cap_declined_{}", v.capture_requests),
                Some(decline_code),
            ),
        ),
        (ModelError::Expired, Some(v)) => DialectReply::json(
            200,
            &capture_answer(&v, "failed", "cap_failed", Some("expired_authorization")),
        ),
        (ModelError::NotFound { id }, _) => Gr4vy::not_found(id),
        (other, _) => error(400, "bad_request", &other.to_string()),
    };
    Executed::reply(reply, refusal_outcome(e))
}

async fn void(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> DialectReply {
    let request = Request {
        method: "POST",
        path: format!("/gr4vy/transactions/{id}/void"),
        authorization_id: id.clone(),
        key: header(&headers, "idempotency-key"),
        body: String::from_utf8_lossy(&body).into_owned(),
        amount: None,
        is_final: None,
        capture: false,
    };
    sandbox
        .dialect_call::<Gr4vy>(&headers, request, move |state, _call, now| {
            match state.model.cancel(&id, None, now) {
                Ok(v) => Executed::reply(
                    DialectReply::json(200, &transaction(&v)),
                    LedgerOutcome::Released,
                ),
                Err(e) => Executed::reply(
                    error(
                        400,
                        "bad_request",
                        &format!("The transaction cannot be voided: {e}"),
                    ),
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
        .dialect_read::<Gr4vy>(
            &headers,
            format!("/gr4vy/transactions/{id}"),
            Some(id.clone()),
            |state, now| match state.model.view(&id, now) {
                Some(v) => DialectReply::json(200, &transaction(&v)),
                None => Gr4vy::not_found(&id),
            },
        )
        .await
}

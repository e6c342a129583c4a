//! The orchestrator's dialect (under `/orchestrator`): `POST /v1/transactions` with
//! `{"type": "capture", "transactionId": "txn_…", "amount": 125}` answering the new capture
//! transaction (`authorization.status` `A` when approved), bearer auth, no idempotency
//! header. Whether a follow-on capture is allowed is the authorization's `max_captures`
//! (the merchant's processor connection): beyond it the capture is refused with 422, as is
//! one above the authorized amount. A scenario decline answers the transaction with
//! `authorization.status` `D` and the decline code as the processor message.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;

use super::Sandbox;
use super::dialect::{Dialect, DialectReply, Executed, Request, bearer_ok, new_id};
use super::model::{CaptureCommand, LedgerOutcome, MetadataUpdate, ModelError};

pub(super) struct Orchestrator;

fn error(status: u16, code: &str, message: &str) -> DialectReply {
    DialectReply::json(status, &json!({"code": code, "message": message}))
}

impl Dialect for Orchestrator {
    const NAME: &'static str = "orchestrator";
    fn authorized(sandbox: &Sandbox, headers: &HeaderMap) -> bool {
        bearer_ok(sandbox, headers)
    }
    fn unauthorized() -> DialectReply {
        error(401, "unauthorized", "Invalid API key")
    }
    fn not_found(id: &str) -> DialectReply {
        error(
            404,
            "transaction_not_found",
            &format!("Transaction {id} not found"),
        )
    }
    fn in_progress() -> DialectReply {
        error(
            409,
            "conflict",
            "Another request for this transaction is in progress",
        )
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
    Router::new().route("/v1/transactions", post(transactions))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    #[serde(rename = "type")]
    kind: String,
    transaction_id: String,
    #[serde(default)]
    amount: Option<i64>,
}

async fn transactions(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> DialectReply {
    let parsed: Result<Body, _> = serde_json::from_slice(&body);
    let id = parsed
        .as_ref()
        .map(|b| b.transaction_id.clone())
        .unwrap_or_default();
    let request = Request {
        method: "POST",
        path: "/orchestrator/v1/transactions".to_owned(),
        authorization_id: id.clone(),
        key: None,
        body: String::from_utf8_lossy(&body).into_owned(),
        amount: parsed.as_ref().ok().and_then(|b| b.amount),
        is_final: None,
        capture: true,
    };
    let sb = sandbox.clone();
    sandbox
        .dialect_call::<Orchestrator>(&headers, request, move |state, _call, now| {
            let body = match parsed {
                Ok(b) if b.kind == "capture" => b,
                Ok(b) => {
                    return Executed::reply(
                        error(400, "unsupported_type", &format!("type {:?} is not supported here", b.kind)),
                        LedgerOutcome::Error,
                    );
                }
                Err(e) => {
                    return Executed::reply(error(400, "invalid_request", &e.to_string()), LedgerOutcome::Error);
                }
            };
            let Some(view) = state.model.view(&id, now) else {
                return Executed::reply(Orchestrator::not_found(&id), LedgerOutcome::Error);
            };
            let txn = new_id(&sb, "txn_");
            let command = CaptureCommand {
                amount: body.amount,
                is_final: false,
                idempotency_key: None,
                metadata: MetadataUpdate::default(),
                reference: Some(txn.clone()),
            };
            let transaction = |amount: i64, status: &str, code: &str, message: &str, headline: &str| {
                json!({
                    "id": txn,
                    "type": "capture",
                    "amount": amount,
                    "currency": view.currency.code(),
                    "originalTransactionId": id,
                    "message": headline,
                    "authorization": {
                        "approvedAmount": if status == "A" { amount } else { 0 },
                        "processorCode": code,
                        "processorMessage": message,
                        "processorTransactionId": format!("ch_{}", txn.trim_start_matches("txn_")),
                        "status": status,
                    },
                    "processor": {"id": "proc_sandbox", "name": "sandbox"},
                    "merchantId": "mer_sandbox",
                })
            };
            match state.model.capture(&id, &command, now) {
                Ok(c) => Executed {
                    moved: c.amount,
                    ..Executed::reply(
                        DialectReply::json(201, &transaction(c.amount, "A", "00", "Approved", "Capture Succeeded")),
                        LedgerOutcome::Captured,
                    )
                },
                Err(ModelError::Declined { decline_code }) => Executed::reply(
                    DialectReply::json(
                        201,
                        &transaction(body.amount.unwrap_or(0), "D", "05", &decline_code, "Capture Declined"),
                    ),
                    LedgerOutcome::Declined,
                ),
                Err(ModelError::LimitReached { .. }) => Executed::reply(
                    error(422, "follow_on_capture_not_allowed", "The merchant's processor connection does not allow another capture on this transaction"),
                    LedgerOutcome::Error,
                ),
                Err(ModelError::AmountTooLarge { .. } | ModelError::AmountTooSmall { .. }) => Executed::reply(
                    error(422, "invalid_amount", "The capture amount must be positive and at most the authorized amount"),
                    LedgerOutcome::Error,
                ),
                Err(ModelError::NotFound { id }) => {
                    Executed::reply(Orchestrator::not_found(&id), LedgerOutcome::Error)
                }
                Err(e) => Executed::reply(error(409, "invalid_state", &e.to_string()), LedgerOutcome::Error),
            }
        })
        .await
}

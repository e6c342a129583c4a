//! Adyen's dialect (under `/adyen/v71`): `POST /payments/{pspReference}/captures` and
//! `/cancels` answering `201 received`, with the outcome posted later as a signed `CAPTURE` /
//! `CANCELLATION` notification; `X-API-Key` auth, the `Idempotency-Key` header (422 `704`
//! while in progress), and Adyen's `ServiceError` body. There is no final flag and no
//! read-back, as on Adyen.
//!
//! Captures settle `settle_after_ms` after they are accepted (at once when unset); a
//! declined capture's notification is `CAPTURE` with `success` `false`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Sandbox;
use super::dialect::{
    Dialect, DialectReply, Executed, Request, api_key_ok, header, new_id, settle_delay,
};
use super::model::{
    Acceptance, Adjustment, CaptureCommand, LedgerOutcome, MetadataUpdate, ModelError,
};
use super::notify::Outgoing;

pub(super) struct Adyen;

fn error(status: u16, code: &str, kind: &str, message: &str) -> DialectReply {
    DialectReply::json(
        status,
        &json!({"status": status, "errorCode": code, "message": message, "errorType": kind}),
    )
}

impl Dialect for Adyen {
    const NAME: &'static str = "adyen";
    fn authorized(sandbox: &Sandbox, headers: &HeaderMap) -> bool {
        api_key_ok(sandbox, headers)
    }
    fn unauthorized() -> DialectReply {
        error(
            401,
            "000",
            "security",
            "HTTP Status Response - Unauthorized",
        )
    }
    fn not_found(id: &str) -> DialectReply {
        error(
            422,
            "167",
            "validation",
            &format!("Original pspReference required for this operation ({id} is unknown)"),
        )
    }
    fn in_progress() -> DialectReply {
        error(
            422,
            "704",
            "validation",
            "request already processed or in progress",
        )
    }
    fn key_reused() -> DialectReply {
        error(
            422,
            "703",
            "validation",
            "The idempotency key was already used with a different request",
        )
    }
    fn unavailable() -> DialectReply {
        error(503, "000", "internal", "Service unavailable")
    }
    fn server_error() -> DialectReply {
        error(500, "905", "internal", "Payment details are not supported")
    }
}

pub(super) fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/payments/{id}/captures", post(capture))
        .route("/payments/{id}/cancels", post(cancel))
        .route("/payments/{id}/amountUpdates", post(amount_update))
}

/// The body of `POST /payments/{id}/amountUpdates` (`PaymentAmountUpdateRequest`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmountUpdateBody {
    merchant_account: String,
    amount: Amount,
    #[serde(default)]
    reference: Option<String>,
}

/// How long an authorisation adjustment keeps the payment authorised from now (the card
/// scheme's period, taken as the 7-day window).
const ADJUSTMENT_RENEWS_FOR_DAYS: i64 = 7;

/// `POST /payments/{id}/amountUpdates`: the updated amount (the same amount extends the
/// hold), answered `201 received`; the result follows as a signed `AUTHORISATION_ADJUSTMENT`
/// notification. Only for a payment not yet captured ("You can only update authorised
/// amounts that have not yet been captured"): otherwise the notification says
/// `success: false`.
async fn amount_update(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> DialectReply {
    let parsed: Result<AmountUpdateBody, _> = serde_json::from_slice(&body);
    let request = Request {
        method: "POST",
        path: format!("/adyen/v71/payments/{id}/amountUpdates"),
        authorization_id: id.clone(),
        key: header(&headers, "idempotency-key"),
        body: String::from_utf8_lossy(&body).into_owned(),
        amount: parsed.as_ref().ok().map(|b| b.amount.value),
        is_final: None,
        capture: false,
    };
    let sb = sandbox.clone();
    sandbox
        .dialect_call::<Adyen>(&headers, request, move |state, _call, now| {
            let body = match parsed {
                Ok(b) => b,
                Err(e) => {
                    return Executed::reply(
                        error(
                            400,
                            "702",
                            "validation",
                            &format!("invalid PaymentAmountUpdateRequest: {e}"),
                        ),
                        LedgerOutcome::Error,
                    );
                }
            };
            let Some(view) = state.model.view(&id, now) else {
                return Executed::reply(Adyen::not_found(&id), LedgerOutcome::Error);
            };
            if body.amount.currency != view.currency.code() {
                return validation("The currency must match the currency used in authorisation");
            }
            let psp = new_id(&sb, "SBX");
            let adjustment = Adjustment {
                new_total: (body.amount.value != view.amount).then_some(body.amount.value),
                renew_for: Some(chrono::Duration::days(ADJUSTMENT_RENEWS_FOR_DAYS)),
                before_first_capture: true,
                max_adjustments: None,
            };
            // Accepted either way; whether it worked comes with the notification.
            let result = state.model.adjust(&id, adjustment, now);
            let success = result.is_ok();
            let notify = Outgoing {
                channel: Adyen::NAME.to_owned(),
                release: false,
                adjustment: true,
                authorization_id: id.clone(),
                reference: psp.clone(),
                merchant_reference: body.reference.clone(),
                account: Some(body.merchant_account.clone()),
                amount: body.amount.value,
                currency: view.currency,
                is_final: false,
                success,
                code: result.err().map(|e| e.to_string()),
            };
            Executed {
                notify: if state.model.silent(&id) {
                    Vec::new()
                } else {
                    vec![notify]
                },
                ..Executed::reply(
                    DialectReply::json(
                        201,
                        &json!({
                            "merchantAccount": body.merchant_account,
                            "paymentPspReference": id,
                            "pspReference": psp,
                            "reference": body.reference,
                            "status": "received",
                            "amount": {"currency": body.amount.currency, "value": body.amount.value},
                        }),
                    ),
                    if success {
                        LedgerOutcome::Adjusted
                    } else {
                        LedgerOutcome::Error
                    },
                )
            }
        })
        .await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Amount {
    currency: String,
    value: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaptureBody {
    merchant_account: String,
    amount: Amount,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    line_items: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CancelBody {
    merchant_account: String,
    #[serde(default)]
    reference: Option<String>,
}

fn validation(message: impl std::fmt::Display) -> Executed {
    Executed::reply(
        error(422, "14_030", "validation", &message.to_string()),
        LedgerOutcome::Error,
    )
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
        path: format!("/adyen/v71/payments/{id}/captures"),
        authorization_id: id.clone(),
        key: header(&headers, "idempotency-key"),
        body: String::from_utf8_lossy(&body).into_owned(),
        amount: parsed.as_ref().ok().map(|b| b.amount.value),
        is_final: None,
        capture: true,
    };
    let sb = sandbox.clone();
    sandbox
        .dialect_call::<Adyen>(&headers, request, move |state, call, now| {
            let body = match parsed {
                Ok(b) => b,
                Err(e) => {
                    return Executed::reply(
                        error(400, "702", "validation", &format!("Structure of PaymentCaptureRequest contains the following unknown fields or is invalid: {e}")),
                        LedgerOutcome::Error,
                    );
                }
            };
            let Some(view) = state.model.view(&id, now) else {
                return Executed::reply(Adyen::not_found(&id), LedgerOutcome::Error);
            };
            if !body.amount.currency.eq_ignore_ascii_case(view.currency.code()) {
                return validation("Currency of modification does not match the original payment");
            }
            if let Some(items) = &body.line_items {
                let sum: Option<i64> = items.iter().try_fold(0i64, |acc, i| {
                    let q = i.get("quantity")?.as_i64()?;
                    let a = i.get("amountIncludingTax")?.as_i64()?;
                    acc.checked_add(q.checked_mul(a)?)
                });
                if sum != Some(body.amount.value) {
                    return validation("The sum of the line items does not equal the amount");
                }
            }
            let psp = new_id(&sb, "SBX");
            let delay = settle_delay(state, &id, 0);
            let acceptance = Acceptance {
                command: CaptureCommand {
                    amount: Some(body.amount.value),
                    // No final flag: the rest is released with a cancel.
                    is_final: false,
                    idempotency_key: call.idempotency_key.clone(),
                    metadata: MetadataUpdate::default(),
                    reference: Some(psp.clone()),
                },
                reference: psp.clone(),
                channel: Adyen::NAME.to_owned(),
                merchant_reference: body.reference.clone(),
                account: Some(body.merchant_account.clone()),
                settles_at: now
                    + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero()),
                ledger_seq: call.seq,
            };
            match state.model.accept(&id, acceptance, now) {
                Ok(_) => Executed {
                    settle: Some(delay),
                    ..Executed::reply(
                        DialectReply::json(
                            201,
                            &json!({
                                "merchantAccount": body.merchant_account,
                                "paymentPspReference": id,
                                "pspReference": psp,
                                "reference": body.reference,
                                "status": "received",
                                "amount": {"currency": view.currency.code(), "value": body.amount.value},
                            }),
                        )
                        .with_header("pspreference", psp.clone()),
                        LedgerOutcome::Accepted,
                    )
                },
                Err(ModelError::NotFound { id }) => {
                    Executed::reply(Adyen::not_found(&id), LedgerOutcome::Error)
                }
                Err(e) => validation(e),
            }
        })
        .await
}

async fn cancel(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> DialectReply {
    let parsed: Result<CancelBody, _> = serde_json::from_slice(&body);
    let request = Request {
        method: "POST",
        path: format!("/adyen/v71/payments/{id}/cancels"),
        authorization_id: id.clone(),
        key: header(&headers, "idempotency-key"),
        body: String::from_utf8_lossy(&body).into_owned(),
        amount: None,
        is_final: None,
        capture: false,
    };
    let sb = sandbox.clone();
    sandbox
        .dialect_call::<Adyen>(&headers, request, move |state, _call, now| {
            let body = match parsed {
                Ok(b) => b,
                Err(e) => {
                    return Executed::reply(
                        error(
                            400,
                            "702",
                            "validation",
                            &format!("invalid PaymentCancelRequest: {e}"),
                        ),
                        LedgerOutcome::Error,
                    );
                }
            };
            let Some(view) = state.model.view(&id, now) else {
                return Executed::reply(Adyen::not_found(&id), LedgerOutcome::Error);
            };
            let psp = new_id(&sb, "SBX");
            // Accepted either way; whether it worked comes with the notification.
            let success = state.model.cancel(&id, None, now).is_ok();
            let notify = Outgoing {
                channel: Adyen::NAME.to_owned(),
                release: true,
                adjustment: false,
                authorization_id: id.clone(),
                reference: psp.clone(),
                merchant_reference: body.reference.clone(),
                account: Some(body.merchant_account.clone()),
                amount: 0,
                currency: view.currency,
                is_final: true,
                success,
                code: (!success).then(|| "Original payment cannot be cancelled".to_owned()),
            };
            Executed {
                notify: if state.model.silent(&id) {
                    Vec::new()
                } else {
                    vec![notify]
                },
                ..Executed::reply(
                    DialectReply::json(
                        201,
                        &json!({
                            "merchantAccount": body.merchant_account,
                            "paymentPspReference": id,
                            "pspReference": psp,
                            "reference": body.reference,
                            "status": "received",
                        }),
                    ),
                    if success {
                        LedgerOutcome::Released
                    } else {
                        LedgerOutcome::Error
                    },
                )
            }
        })
        .await
}

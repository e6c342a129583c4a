//! The Gr4vy adapter: transaction capture, void and read-back over HTTP.
//!
//! Owns the HTTP shape of Gr4vy's API (reference/providers.md §2): bearer JWT auth, the
//! `x-gr4vy-merchant-account-id` header, the `idempotency-key` header, and
//! `prefer: resource=transaction-capture` so the 200 answer carries the capture's own status
//! (`succeeded`, `pending`, `declined`, `failed`). Every answer routes to one [`Outcome`]. The
//! wire structs live in `wire.rs` and never leave this folder. Imports `domain` and the
//! provider boundary only. The token is held as a sensitive header value and never reaches a
//! log field, an error or a `Debug` string.
//!
//! Gr4vy rules this adapter encodes: `final` is always explicit (Gr4vy defaults it to
//! `true`); a `declined` capture is a decline (the order latches, no capture after it); a
//! `failed` capture is an error, not a decline, so it is `Failed` (not latched: a new capture
//! may be attempted once someone has looked); a pending capture is `Pending` and keeps its
//! claim; 409 `concurrent_request` (the same key still in progress) is retried.

mod webhook;
mod wire;

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use tracing::Instrument as _;

use crate::domain::{AuthorizationId, Capabilities, ProviderName};
use crate::provider::http::{
    self, Api, Credential, ProviderSetupError, Refusal, RefusedRead, Replay, Shape,
};
use crate::provider::{
    AuthorizationSnapshot, CallResult, CaptureRequest, LookupError, Outcome, PaymentProvider,
    ReleaseRequest, WebhookError, WebhookEvent,
};
use crate::secret::Secret;

pub use self::webhook::sign as sign_webhook;

use self::wire::{
    ApiError, CaptureBody, CaptureStatus, Transaction, TransactionCapture, TransactionStatus,
};

/// Bearer JWT auth, `x-request-id`, and the `idempotency-key` header.
static SHAPE: Shape = Shape {
    kind: "gr4vy",
    example_url: "https://api.sandbox.acme.gr4vy.app",
    credential: Credential::Bearer("bearer token"),
    request_id: "x-request-id",
    replay: Replay::Idempotent,
};

/// A Gr4vy instance (and optionally one merchant account on it) reached over HTTPS.
#[derive(Debug)]
pub struct Gr4vyProvider {
    /// Bearer JWT and `x-gr4vy-merchant-account-id` on every call.
    api: Api,
    /// The webhook subscription's secret.
    webhook_secret: Option<Secret>,
}

impl Gr4vyProvider {
    /// Builds the adapter. `token` is the bearer JWT signed with the instance's API key
    /// (scope `transactions.read transactions.write`); without it no `Authorization` header is
    /// sent. `merchant_account_id` goes in `x-gr4vy-merchant-account-id` when set.
    pub fn new(
        name: ProviderName,
        base_url: String,
        token: Option<Secret>,
        merchant_account_id: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ProviderSetupError> {
        let mut api = Api::new(&name, &SHAPE, base_url, token.as_ref(), timeout)?;
        if let Some(id) = merchant_account_id {
            let value =
                HeaderValue::try_from(id.as_str()).map_err(|_| ProviderSetupError::BadSetting {
                    name: name.clone(),
                    setting: "merchant_account",
                    problem: "it cannot be sent as a header value".to_owned(),
                })?;
            api = api.with_header("x-gr4vy-merchant-account-id", value);
        }
        Ok(Gr4vyProvider {
            api,
            webhook_secret: None,
        })
    }

    /// Verifies webhook deliveries with the subscription's `secret`.
    pub fn with_webhook_secret(mut self, secret: Secret) -> Self {
        self.webhook_secret = Some(secret);
        self
    }
}

#[async_trait]
impl PaymentProvider for Gr4vyProvider {
    fn name(&self) -> &str {
        self.api.name().as_str()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::gr4vy()
    }

    async fn capture(&self, request: &CaptureRequest) -> CallResult {
        let id = &request.authorization_id;
        let what = format!("capture of Gr4vy transaction {id}");
        self.api
            .post(
                &what,
                &["transactions", id.as_str(), "capture"],
                |builder| {
                    builder
                        .header("idempotency-key", request.idempotency_key.as_str())
                        .header("prefer", "resource=transaction-capture")
                        .json(&CaptureBody::from_request(request))
                },
                |status, headers, body| capture_answer(&what, status, headers, body),
            )
            .instrument(self.api.capture_span(request))
            .await
    }

    /// Voids the transaction: used when nothing was captured. After partial captures the rest
    /// is released by a zero-amount final capture instead (see [`Capabilities::gr4vy`]).
    async fn release(&self, request: &ReleaseRequest) -> CallResult {
        let id = &request.authorization_id;
        let what = format!("void of Gr4vy transaction {id}");
        self.api
            .post(
                &what,
                &["transactions", id.as_str(), "void"],
                |builder| builder.header("idempotency-key", request.idempotency_key.as_str()),
                |status, headers, body| void_answer(&what, status, headers, body),
            )
            .instrument(self.api.release_span(request))
            .await
    }

    async fn lookup(
        &self,
        authorization_id: &AuthorizationId,
    ) -> Result<AuthorizationSnapshot, LookupError> {
        let read = async {
            let transaction: Transaction = self
                .api
                .get(
                    authorization_id,
                    &["transactions", authorization_id.as_str()],
                    "transaction",
                    |status, _, body| RefusedRead {
                        detail: describe(status, ApiError::parse(body).as_ref()),
                        // 409: the same key still in progress; 425: too early.
                        retryable: matches!(status.as_u16(), 409 | 425),
                    },
                )
                .await?;
            snapshot(authorization_id, transaction)
        };
        self.api.traced_lookup(authorization_id, read).await
    }

    /// Signed webhook deliveries (`X-Gr4vy-Webhook-Signatures`); per-capture events settle
    /// the capture they name.
    fn read_notification(
        &self,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<WebhookEvent>, WebhookError> {
        match &self.webhook_secret {
            Some(secret) => webhook::read(headers, body, secret, now),
            None => Err(WebhookError::NotConfigured),
        }
    }
}

/// What a transaction read back says about the authorization.
fn snapshot(
    authorization_id: &AuthorizationId,
    transaction: Transaction,
) -> Result<AuthorizationSnapshot, LookupError> {
    let retryable = LookupError::retryable_for(authorization_id);
    let permanent = LookupError::permanent_for(authorization_id);
    let open = match transaction.status() {
        // Something is still moving: answering now could show a capture as missing that is
        // only in progress. Ask again later.
        TransactionStatus::CapturePending
        | TransactionStatus::AuthorizationVoidPending
        | TransactionStatus::Processing
        | TransactionStatus::BuyerApprovalPending => {
            return Err(retryable(format!(
                "transaction {} is {}; waiting for it to settle",
                transaction.id, transaction.status
            )));
        }
        TransactionStatus::AuthorizationSucceeded | TransactionStatus::CaptureSucceeded => true,
        TransactionStatus::AuthorizationVoided
        | TransactionStatus::AuthorizationDeclined
        | TransactionStatus::AuthorizationFailed => false,
        TransactionStatus::Unrecognized => {
            return Err(permanent(format!(
                "transaction {} has a status this worker does not know: {:?}",
                transaction.id, transaction.status
            )));
        }
    };
    transaction
        .into_snapshot(authorization_id, open)
        .map_err(permanent)
}

/// Routes a capture answer (reference/providers.md §2.3–2.4).
fn capture_answer(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> (Outcome, Option<String>) {
    if !status.is_success() {
        return refused(what, status, headers, body);
    }
    let capture: TransactionCapture = match http::decode(
        what,
        status,
        body,
        "transaction capture",
        Replay::Idempotent,
    ) {
        Ok(capture) => capture,
        Err(unreadable) => return (unreadable, None),
    };
    let code = capture.code().map(str::to_owned);
    let outcome = match capture.status() {
        CaptureStatus::Succeeded => Outcome::Succeeded {
            reference: capture.reference(),
        },
        // Counts toward the claimed amount until a notification or a read-back settles it.
        CaptureStatus::Pending => Outcome::Pending {
            reference: capture.reference(),
        },
        CaptureStatus::Declined => Outcome::Declined {
            code: code.clone().unwrap_or_else(|| "declined".to_owned()),
            message: capture.message(),
        },
        CaptureStatus::Failed => Outcome::Failed {
            reason: format!(
                "{what}: Gr4vy reports the capture failed (an error, not a decline; the order is not latched and a new capture may be attempted): {} {}",
                code.as_deref().unwrap_or("no code"),
                capture.message()
            ),
        },
        // A 200 with a status we do not know: it may have captured. Replaying the key would
        // only replay this answer, so read the transaction back.
        CaptureStatus::Unrecognized => Outcome::Unknown {
            reason: format!(
                "{what}: Gr4vy answered with a capture status this worker does not know: {:?}",
                capture.status
            ),
            key_spent: true,
        },
    };
    (outcome, code)
}

/// Routes a void answer: the transaction after the void.
fn void_answer(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> (Outcome, Option<String>) {
    if !status.is_success() {
        return refused(what, status, headers, body);
    }
    let transaction: Transaction =
        match http::decode(what, status, body, "transaction", Replay::Idempotent) {
            Ok(transaction) => transaction,
            Err(unreadable) => return (unreadable, None),
        };
    let label = transaction.status.clone();
    let outcome = match transaction.status() {
        TransactionStatus::AuthorizationVoided => Outcome::Succeeded {
            reference: Some(transaction.id),
        },
        TransactionStatus::AuthorizationVoidPending => Outcome::Pending {
            reference: Some(transaction.id),
        },
        TransactionStatus::CaptureSucceeded | TransactionStatus::CapturePending => {
            Outcome::Failed {
                reason: format!(
                    "{what}: the transaction is {label}; a captured transaction cannot be voided"
                ),
            }
        }
        TransactionStatus::AuthorizationDeclined | TransactionStatus::AuthorizationFailed => {
            Outcome::Failed {
                reason: format!("{what}: the transaction is {label}; nothing is held to release"),
            }
        }
        TransactionStatus::Processing
        | TransactionStatus::AuthorizationSucceeded
        | TransactionStatus::BuyerApprovalPending
        | TransactionStatus::Unrecognized => Outcome::Unknown {
            reason: format!("{what}: after the void the transaction is still {label:?}"),
            key_spent: true,
        },
    };
    (outcome, Some(label))
}

/// Routes a non-2xx answer (reference/providers.md §2.4).
fn refused(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> (Outcome, Option<String>) {
    let error = ApiError::parse(body);
    let code = error.as_ref().and_then(|e| e.code.clone());
    let r = Refusal::new(what, headers, describe(status, error.as_ref()));
    let outcome = match status.as_u16() {
        // The same idempotency key is still being processed: safe to retry with backoff.
        409 if code.as_deref() == Some("concurrent_request") => {
            r.retry("the same request is still in progress")
        }
        409 => r.failed("Gr4vy reports a conflict"),
        425 => r.retry("too early"),
        429 => r.retry("rate limited"),
        500..=599 => r.retry("Gr4vy server error"),
        400 => r.failed("Gr4vy refused the request"),
        401 => r.failed("Gr4vy refused the token (authentication)"),
        403 => r.failed(
            "the token may not do this (permission; check its scopes and the merchant account)",
        ),
        404 => r.failed("no such transaction for this instance and merchant account"),
        405 => r.failed("method not allowed"),
        422 => r.failed("Gr4vy could not validate the request"),
        _ => r.failed("unexpected HTTP status"),
    };
    (outcome, code)
}

/// `HTTP 409 concurrent_request: …`
fn describe(status: StatusCode, error: Option<&ApiError>) -> String {
    ApiError::detail(status, error, "a Gr4vy")
}

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

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, RequestBuilder, StatusCode, Url};
use tracing::field::Empty;

use crate::config::Secret;
use crate::domain::{AuthorizationId, Capabilities, ProviderName};
use crate::provider::http::{self, ProviderSetupError, Replay};
use crate::provider::{
    AuthorizationSnapshot, CallResult, CaptureRequest, LookupError, Outcome, PaymentProvider,
    ReleaseRequest, WebhookError, WebhookEvent,
};

pub use self::webhook::sign as sign_webhook;

use self::wire::{
    ApiError, CaptureBody, CaptureStatus, Transaction, TransactionCapture, TransactionStatus,
};

const EXAMPLE_URL: &str = "https://api.sandbox.acme.gr4vy.app";

/// A Gr4vy instance (and optionally one merchant account on it) reached over HTTPS.
pub struct Gr4vyProvider {
    name: ProviderName,
    base_url: Url,
    /// `Bearer <jwt>`, sensitive.
    authorization: Option<HeaderValue>,
    merchant_account_id: Option<HeaderValue>,
    /// The webhook subscription's secret.
    webhook_secret: Option<Secret>,
    timeout: Duration,
    client: Client,
}

impl fmt::Debug for Gr4vyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gr4vyProvider")
            .field("name", &self.name)
            .field("base_url", &self.base_url.as_str())
            .field("token", &self.authorization.as_ref().map(|_| "[redacted]"))
            .field("merchant_account_id", &self.merchant_account_id)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
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
        let base_url = http::parse_base_url(&name, base_url, EXAMPLE_URL)?;
        let client = http::client(&name, timeout)?;
        let authorization = match token {
            None => None,
            Some(token) => Some(
                http::sensitive(token.expose(), format!("Bearer {}", token.expose())).ok_or_else(
                    || ProviderSetupError::Credential {
                        name: name.clone(),
                        what: "bearer token",
                    },
                )?,
            ),
        };
        let merchant_account_id = match merchant_account_id {
            None => None,
            Some(id) => Some(HeaderValue::try_from(id.as_str()).map_err(|_| {
                ProviderSetupError::BadSetting {
                    name: name.clone(),
                    setting: "merchant_account",
                    problem: "it cannot be sent as a header value".to_owned(),
                }
            })?),
        };
        Ok(Gr4vyProvider {
            name,
            base_url,
            authorization,
            merchant_account_id,
            webhook_secret: None,
            timeout,
            client,
        })
    }

    /// Verifies webhook deliveries with the subscription's `secret`.
    pub fn with_webhook_secret(mut self, secret: Secret) -> Self {
        self.webhook_secret = Some(secret);
        self
    }

    fn headers(&self, builder: RequestBuilder) -> RequestBuilder {
        let builder = match &self.authorization {
            Some(value) => builder.header(reqwest::header::AUTHORIZATION, value.clone()),
            None => builder,
        };
        match &self.merchant_account_id {
            Some(id) => builder.header("x-gr4vy-merchant-account-id", id.clone()),
            None => builder,
        }
    }

    #[tracing::instrument(
        name = "gr4vy.capture",
        skip_all,
        fields(
            otel.kind = "client",
            provider = %self.name,
            authorization_id = %request.authorization_id,
            order_id = %request.order_id,
            amount = request.amount.amount().get(),
            currency = %request.amount.currency(),
            is_final = request.is_final,
            capture_sequence = request.sequence,
            idempotency_key = %request.idempotency_key,
            http_status = Empty,
            provider_request_id = Empty,
            provider_code = Empty,
            outcome = Empty,
        )
    )]
    async fn send_capture(&self, request: &CaptureRequest) -> CallResult {
        let what = format!("capture of Gr4vy transaction {}", request.authorization_id);
        let url = match http::url_with(
            &self.base_url,
            &["transactions", request.authorization_id.as_str(), "capture"],
        ) {
            Ok(url) => url,
            Err(problem) => return http::unsendable(&what, problem),
        };
        let builder = self
            .client
            .post(url)
            .header("idempotency-key", request.idempotency_key.as_str())
            .header("prefer", "resource=transaction-capture")
            .json(&CaptureBody::from_request(request));
        let exchange = http::exchange(self.headers(builder)).await;
        http::finish(
            exchange,
            &what,
            self.timeout,
            Replay::Idempotent,
            REQUEST_ID,
            |status, headers, body| capture_answer(&what, status, headers, body),
        )
    }

    #[tracing::instrument(
        name = "gr4vy.release",
        skip_all,
        fields(
            otel.kind = "client",
            provider = %self.name,
            authorization_id = %request.authorization_id,
            order_id = %request.order_id,
            idempotency_key = %request.idempotency_key,
            http_status = Empty,
            provider_request_id = Empty,
            provider_code = Empty,
            outcome = Empty,
        )
    )]
    async fn send_void(&self, request: &ReleaseRequest) -> CallResult {
        let what = format!("void of Gr4vy transaction {}", request.authorization_id);
        let url = match http::url_with(
            &self.base_url,
            &["transactions", request.authorization_id.as_str(), "void"],
        ) {
            Ok(url) => url,
            Err(problem) => return http::unsendable(&what, problem),
        };
        let builder = self
            .client
            .post(url)
            .header("idempotency-key", request.idempotency_key.as_str());
        let exchange = http::exchange(self.headers(builder)).await;
        http::finish(
            exchange,
            &what,
            self.timeout,
            Replay::Idempotent,
            REQUEST_ID,
            |status, headers, body| void_answer(&what, status, headers, body),
        )
    }

    #[tracing::instrument(
        name = "gr4vy.lookup",
        skip_all,
        fields(
            otel.kind = "client",
            provider = %self.name,
            authorization_id = %authorization_id,
            http_status = Empty,
        ),
        err(Display, level = "warn")
    )]
    async fn read_transaction(
        &self,
        authorization_id: &AuthorizationId,
    ) -> Result<AuthorizationSnapshot, LookupError> {
        let retryable = |reason: String| LookupError::Retryable {
            authorization_id: authorization_id.to_string(),
            reason,
        };
        let permanent = |reason: String| LookupError::Permanent {
            authorization_id: authorization_id.to_string(),
            reason,
        };
        let url = http::url_with(&self.base_url, &["transactions", authorization_id.as_str()])
            .map_err(permanent)?;
        let exchange = http::exchange(self.headers(self.client.get(url))).await;
        let answer = exchange.result.map_err(|error| {
            retryable(format!(
                "reading the transaction failed in transport: {}",
                http::error_chain(&error)
            ))
        })?;
        tracing::Span::current().record("http_status", answer.status.as_u16());
        let status = answer.status;
        let body = answer.body.map_err(|error| {
            retryable(format!(
                "reading the body of the HTTP {} answer failed: {}",
                status.as_u16(),
                http::error_chain(&error)
            ))
        })?;
        if !status.is_success() {
            let detail = describe(status, wire::parse_error(&body).as_ref());
            return match status.as_u16() {
                409 | 425 | 429 | 500..=599 => Err(retryable(detail)),
                _ => Err(permanent(detail)),
            };
        }
        let transaction: Transaction = serde_json::from_slice(&body).map_err(|error| {
            permanent(format!(
                "HTTP {} body is not a transaction: {error}",
                status.as_u16()
            ))
        })?;
        let open = match transaction.status() {
            // Something is still moving: answering now could show a capture as missing that
            // is only in progress. Ask again later.
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
}

/// Gr4vy's request id header.
const REQUEST_ID: &str = "x-request-id";

#[async_trait]
impl PaymentProvider for Gr4vyProvider {
    fn name(&self) -> &str {
        self.name.as_str()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::gr4vy()
    }

    async fn capture(&self, request: &CaptureRequest) -> CallResult {
        self.send_capture(request).await
    }

    /// Voids the transaction: used when nothing was captured. After partial captures the rest
    /// is released by a zero-amount final capture instead (see [`Capabilities::gr4vy`]).
    async fn release(&self, request: &ReleaseRequest) -> CallResult {
        self.send_void(request).await
    }

    async fn lookup(
        &self,
        authorization_id: &AuthorizationId,
    ) -> Result<AuthorizationSnapshot, LookupError> {
        self.read_transaction(authorization_id).await
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
    let capture: TransactionCapture = match serde_json::from_slice(body) {
        Ok(capture) => capture,
        Err(error) => {
            return (
                Outcome::Unknown {
                    reason: format!(
                        "{what}: HTTP {} body is not a transaction capture ({error}); the capture may have happened",
                        status.as_u16()
                    ),
                    key_spent: false,
                },
                None,
            );
        }
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
    let transaction: Transaction = match serde_json::from_slice(body) {
        Ok(t) => t,
        Err(error) => {
            return (
                Outcome::Unknown {
                    reason: format!(
                        "{what}: HTTP {} body is not a transaction ({error}); the void may have happened",
                        status.as_u16()
                    ),
                    key_spent: false,
                },
                None,
            );
        }
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
    let error = wire::parse_error(body);
    let code = error.as_ref().and_then(|e| e.code.clone());
    let detail = describe(status, error.as_ref());
    let retry = |why: &str| Outcome::Retryable {
        after: http::retry_after(headers),
        reason: format!("{what}: {why}: {detail}"),
    };
    let failed = |why: &str| Outcome::Failed {
        reason: format!("{what}: {why}: {detail}"),
    };
    let outcome = match status.as_u16() {
        // The same idempotency key is still being processed: safe to retry with backoff.
        409 if code.as_deref() == Some("concurrent_request") => {
            retry("the same request is still in progress")
        }
        409 => failed("Gr4vy reports a conflict"),
        425 => retry("too early"),
        429 => retry("rate limited"),
        500..=599 => retry("Gr4vy server error"),
        400 => failed("Gr4vy refused the request"),
        401 => failed("Gr4vy refused the token (authentication)"),
        403 => failed(
            "the token may not do this (permission; check its scopes and the merchant account)",
        ),
        404 => failed("no such transaction for this instance and merchant account"),
        405 => failed("method not allowed"),
        422 => failed("Gr4vy could not validate the request"),
        _ => failed("unexpected HTTP status"),
    };
    (outcome, code)
}

/// `HTTP 409 concurrent_request: …`
fn describe(status: StatusCode, error: Option<&ApiError>) -> String {
    match error {
        Some(error) => {
            let code = error.code.as_deref().unwrap_or("error");
            let message = error.message();
            if message.is_empty() {
                format!("HTTP {} {code}", status.as_u16())
            } else {
                format!("HTTP {} {code}: {message}", status.as_u16())
            }
        }
        None => format!("HTTP {} without a Gr4vy error body", status.as_u16()),
    }
}

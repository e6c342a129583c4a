//! The Checkout.com adapter: partial captures, void and payment read-back over HTTP.
//!
//! Owns the HTTP shape of Checkout.com's payments API (reference/providers.md §4): bearer
//! secret-key auth, the `Cko-Idempotency-Key` header (kept 24 h), the explicit `capture_type`
//! and the routing of every answer to one [`Outcome`]. The wire structs live in `wire.rs`
//! and never leave this folder. Imports `domain` and the provider boundary only. The secret
//! key is held as a sensitive header value and never reaches a log field, an error or a
//! `Debug` string.
//!
//! Checkout.com rules this adapter encodes: `capture_type` is always explicit (`Final` is the
//! default and voids the rest); card captures are processed asynchronously, so `202` is
//! `Pending` and the result follows as a `payment_captured` / `payment_capture_declined`
//! webhook; at most 150 partial actions per payment (the capability record's limit, honoured
//! by the capture plan); the remainder is released with a void.

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

use self::wire::{Accepted, ApiError, CaptureBody, PaymentDetails, PaymentStatus, VoidBody};

const EXAMPLE_URL: &str = "https://api.sandbox.checkout.com";
const REQUEST_ID: &str = "cko-request-id";

/// A Checkout.com account reached over HTTPS.
pub struct CheckoutProvider {
    name: ProviderName,
    base_url: Url,
    /// `Bearer <secret key>`, sensitive.
    authorization: Option<HeaderValue>,
    /// The webhook's signature key.
    webhook_secret: Option<Secret>,
    timeout: Duration,
    client: Client,
}

impl fmt::Debug for CheckoutProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckoutProvider")
            .field("name", &self.name)
            .field("base_url", &self.base_url.as_str())
            .field(
                "secret_key",
                &self.authorization.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl CheckoutProvider {
    /// Builds the adapter. `secret_key` is sent as `Authorization: Bearer <key>`; without it
    /// no `Authorization` header is sent.
    pub fn new(
        name: ProviderName,
        base_url: String,
        secret_key: Option<Secret>,
        timeout: Duration,
    ) -> Result<Self, ProviderSetupError> {
        let base_url = http::parse_base_url(&name, base_url, EXAMPLE_URL)?;
        let client = http::client(&name, timeout)?;
        let authorization = match secret_key {
            None => None,
            Some(key) => Some(
                http::sensitive(key.expose(), format!("Bearer {}", key.expose())).ok_or_else(
                    || ProviderSetupError::Credential {
                        name: name.clone(),
                        what: "secret key",
                    },
                )?,
            ),
        };
        Ok(CheckoutProvider {
            name,
            base_url,
            authorization,
            webhook_secret: None,
            timeout,
            client,
        })
    }

    /// Verifies webhook deliveries with the webhook's signature `key`.
    pub fn with_webhook_secret(mut self, key: Secret) -> Self {
        self.webhook_secret = Some(key);
        self
    }

    fn authorized(&self, builder: RequestBuilder) -> RequestBuilder {
        match &self.authorization {
            Some(value) => builder.header(reqwest::header::AUTHORIZATION, value.clone()),
            None => builder,
        }
    }

    #[tracing::instrument(
        name = "checkout.capture",
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
        let what = format!(
            "capture of Checkout.com payment {}",
            request.authorization_id
        );
        let url = match http::url_with(
            &self.base_url,
            &["payments", request.authorization_id.as_str(), "captures"],
        ) {
            Ok(url) => url,
            Err(problem) => return http::unsendable(&what, problem),
        };
        let builder = self
            .client
            .post(url)
            .header("Cko-Idempotency-Key", request.idempotency_key.as_str())
            .json(&CaptureBody::from_request(request));
        let exchange = http::exchange(self.authorized(builder)).await;
        http::finish(
            exchange,
            &what,
            self.timeout,
            Replay::Idempotent,
            REQUEST_ID,
            |status, headers, body| answered(&what, status, headers, body),
        )
    }

    #[tracing::instrument(
        name = "checkout.release",
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
        let what = format!("void of Checkout.com payment {}", request.authorization_id);
        let url = match http::url_with(
            &self.base_url,
            &["payments", request.authorization_id.as_str(), "voids"],
        ) {
            Ok(url) => url,
            Err(problem) => return http::unsendable(&what, problem),
        };
        let builder = self
            .client
            .post(url)
            .header("Cko-Idempotency-Key", request.idempotency_key.as_str())
            .json(&VoidBody::from_request(request));
        let exchange = http::exchange(self.authorized(builder)).await;
        http::finish(
            exchange,
            &what,
            self.timeout,
            Replay::Idempotent,
            REQUEST_ID,
            |status, headers, body| answered(&what, status, headers, body),
        )
    }

    #[tracing::instrument(
        name = "checkout.lookup",
        skip_all,
        fields(
            otel.kind = "client",
            provider = %self.name,
            authorization_id = %authorization_id,
            http_status = Empty,
        ),
        err(Display, level = "warn")
    )]
    async fn read_payment(
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
        let url = http::url_with(&self.base_url, &["payments", authorization_id.as_str()])
            .map_err(permanent)?;
        let exchange = http::exchange(self.authorized(self.client.get(url))).await;
        let answer = exchange.result.map_err(|error| {
            retryable(format!(
                "reading the payment failed in transport: {}",
                http::error_chain(&error)
            ))
        })?;
        let status = answer.status;
        tracing::Span::current().record("http_status", status.as_u16());
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
                429 | 500..=599 => Err(retryable(detail)),
                _ => Err(permanent(detail)),
            };
        }
        let payment: PaymentDetails = serde_json::from_slice(&body).map_err(|error| {
            permanent(format!(
                "HTTP {} body is not a payment: {error}",
                status.as_u16()
            ))
        })?;
        match payment.status() {
            PaymentStatus::Pending | PaymentStatus::RetryScheduled => {
                return Err(retryable(format!(
                    "payment {} is {}; waiting for it to settle",
                    payment.id, payment.status
                )));
            }
            PaymentStatus::Authorized
            | PaymentStatus::CardVerified
            | PaymentStatus::Voided
            | PaymentStatus::PartiallyCaptured
            | PaymentStatus::Captured
            | PaymentStatus::PartiallyRefunded
            | PaymentStatus::Refunded
            | PaymentStatus::Declined
            | PaymentStatus::Canceled
            | PaymentStatus::Expired
            | PaymentStatus::Paid => {}
            PaymentStatus::Unrecognized => {
                return Err(permanent(format!(
                    "payment {} has a status this worker does not know: {:?}",
                    payment.id, payment.status
                )));
            }
        }
        payment.into_snapshot(authorization_id).map_err(permanent)
    }
}

#[async_trait]
impl PaymentProvider for CheckoutProvider {
    fn name(&self) -> &str {
        self.name.as_str()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::checkout()
    }

    async fn capture(&self, request: &CaptureRequest) -> CallResult {
        self.send_capture(request).await
    }

    /// Voids what is left of the payment.
    async fn release(&self, request: &ReleaseRequest) -> CallResult {
        self.send_void(request).await
    }

    /// Reads the payment's balances (`total_captured`, `available_to_capture`). A capture
    /// still being processed may not show in them yet.
    async fn lookup(
        &self,
        authorization_id: &AuthorizationId,
    ) -> Result<AuthorizationSnapshot, LookupError> {
        self.read_payment(authorization_id).await
    }

    /// Webhooks signed with `Cko-Signature`; capture and void events settle what they name.
    fn read_notification(
        &self,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
        _now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<WebhookEvent>, WebhookError> {
        match &self.webhook_secret {
            Some(key) => webhook::read(headers, body, key),
            None => Err(WebhookError::NotConfigured),
        }
    }
}

/// Routes an answer to a capture or void (reference/providers.md §4).
fn answered(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> (Outcome, Option<String>) {
    if status.is_success() {
        let outcome = match serde_json::from_slice::<Accepted>(body) {
            // Accepted and processed asynchronously: the webhook (or a read-back) settles it.
            Ok(accepted) => Outcome::Pending {
                reference: Some(accepted.action_id),
            },
            Err(error) => Outcome::Unknown {
                reason: format!(
                    "{what}: HTTP {} body has no action_id ({error}); it may have been accepted",
                    status.as_u16()
                ),
                key_spent: false,
            },
        };
        return (outcome, None);
    }
    let error = wire::parse_error(body);
    let code = error.as_ref().map(ApiError::provider_code);
    let detail = describe(status, error.as_ref());
    let retry = |why: &str| Outcome::Retryable {
        after: http::retry_after(headers),
        reason: format!("{what}: {why}: {detail}"),
    };
    let failed = |why: &str| Outcome::Failed {
        reason: format!("{what}: {why}: {detail}"),
    };
    let outcome = match status.as_u16() {
        // Concurrent requests with the same key: only one is processed.
        409 => retry("the same request is in progress"),
        429 => retry("rate limited"),
        // No result is saved for a 5xx, so the same key re-attempts it.
        500..=599 => retry("Checkout.com server error"),
        401 => failed("Checkout.com refused the secret key (authentication)"),
        403 => failed(
            "capture not allowed (the payment is captured, voided or expired, or the key may not do this)",
        ),
        404 => failed("no such payment for this account"),
        422 => failed("Checkout.com refused the data"),
        400 => failed("Checkout.com refused the request"),
        _ => failed("unexpected HTTP status"),
    };
    (outcome, code)
}

fn describe(status: StatusCode, error: Option<&ApiError>) -> String {
    match error {
        Some(error) => format!("HTTP {} {}", status.as_u16(), error.provider_code()),
        None => format!("HTTP {} without a Checkout.com error body", status.as_u16()),
    }
}

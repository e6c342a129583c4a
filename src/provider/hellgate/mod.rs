//! The Hellgate adapter: payment capture, void and read-back over HTTP (Commerce API v2).
//!
//! Owns the HTTP shape of Hellgate's API (reference/providers.md §6): the `X-API-Key` header,
//! the capture body, and the routing of every answer to one [`Outcome`]. The wire structs live
//! in `wire.rs` and never leave this folder. Imports `domain` and the provider boundary only.
//! The API key is held as a sensitive header value and never reaches a log field, an error or
//! a `Debug` string.
//!
//! Hellgate rules this adapter encodes: one capture per payment (the capture plan sends it
//! when the order completes, or at the authorization deadline, for what shipped); the outcome
//! is asynchronous (`capturing` → `captured` or `failed`). Hellgate documents no idempotency
//! header, so a capture whose answer was lost is never simply sent again: the outcome is
//! `Unknown` with the key marked spent, and the worker reads the payment back (`lookup`)
//! before anything is resent. Server errors are treated the same way, since the capture may
//! have been applied before the error.

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
    ReleaseRequest,
};

use self::wire::{ApiError, CaptureBody, Payment, PaymentStatus};

const EXAMPLE_URL: &str = "https://api.hellgate.io";
const REQUEST_ID: &str = "x-request-id";

/// A Hellgate Commerce account reached over HTTPS.
pub struct HellgateProvider {
    name: ProviderName,
    base_url: Url,
    api_key: Option<HeaderValue>,
    timeout: Duration,
    client: Client,
}

impl fmt::Debug for HellgateProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HellgateProvider")
            .field("name", &self.name)
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HellgateProvider {
    /// Builds the adapter. Without `api_key` no `X-API-Key` header is sent.
    pub fn new(
        name: ProviderName,
        base_url: String,
        api_key: Option<Secret>,
        timeout: Duration,
    ) -> Result<Self, ProviderSetupError> {
        let base_url = http::parse_base_url(&name, base_url, EXAMPLE_URL)?;
        let client = http::client(&name, timeout)?;
        let api_key = match api_key {
            None => None,
            Some(key) => Some(
                http::sensitive(key.expose(), key.expose().to_owned()).ok_or_else(|| {
                    ProviderSetupError::Credential {
                        name: name.clone(),
                        what: "API key",
                    }
                })?,
            ),
        };
        Ok(HellgateProvider {
            name,
            base_url,
            api_key,
            timeout,
            client,
        })
    }

    fn authorized(&self, builder: RequestBuilder) -> RequestBuilder {
        match &self.api_key {
            Some(key) => builder.header("X-API-Key", key.clone()),
            None => builder,
        }
    }

    #[tracing::instrument(
        name = "hellgate.capture",
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
            http_status = Empty,
            provider_request_id = Empty,
            provider_code = Empty,
            outcome = Empty,
        )
    )]
    async fn send_capture(&self, request: &CaptureRequest) -> CallResult {
        let what = format!("capture of Hellgate payment {}", request.authorization_id);
        let url = match http::url_with(
            &self.base_url,
            &["payments", request.authorization_id.as_str(), "capture"],
        ) {
            Ok(url) => url,
            Err(problem) => return http::unsendable(&what, problem),
        };
        let builder = self
            .client
            .post(url)
            .json(&CaptureBody::from_request(request));
        let exchange = http::exchange(self.authorized(builder)).await;
        http::finish(
            exchange,
            &what,
            self.timeout,
            Replay::Unprotected,
            REQUEST_ID,
            |status, headers, body| {
                routed(&what, status, headers, body, |payment| {
                    capture_outcome(&what, payment)
                })
            },
        )
    }

    #[tracing::instrument(
        name = "hellgate.release",
        skip_all,
        fields(
            otel.kind = "client",
            provider = %self.name,
            authorization_id = %request.authorization_id,
            order_id = %request.order_id,
            http_status = Empty,
            provider_request_id = Empty,
            provider_code = Empty,
            outcome = Empty,
        )
    )]
    async fn send_void(&self, request: &ReleaseRequest) -> CallResult {
        let what = format!("void of Hellgate payment {}", request.authorization_id);
        let url = match http::url_with(
            &self.base_url,
            &["payments", request.authorization_id.as_str(), "void"],
        ) {
            Ok(url) => url,
            Err(problem) => return http::unsendable(&what, problem),
        };
        let exchange = http::exchange(self.authorized(self.client.post(url))).await;
        http::finish(
            exchange,
            &what,
            self.timeout,
            Replay::Unprotected,
            REQUEST_ID,
            |status, headers, body| {
                routed(&what, status, headers, body, |payment| {
                    void_outcome(&what, payment)
                })
            },
        )
    }

    #[tracing::instrument(
        name = "hellgate.lookup",
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
        let payment: Payment = serde_json::from_slice(&body).map_err(|error| {
            permanent(format!(
                "HTTP {} body is not a payment: {error}",
                status.as_u16()
            ))
        })?;
        let (captured_state, open) = match payment.status() {
            // Still moving: a capture in progress must not be read as "nothing captured".
            PaymentStatus::Capturing
            | PaymentStatus::Voiding
            | PaymentStatus::Processing
            | PaymentStatus::Open => {
                return Err(retryable(format!(
                    "payment {} is {}; waiting for it to settle",
                    payment.id, payment.status
                )));
            }
            PaymentStatus::Authorized => (false, true),
            PaymentStatus::Captured | PaymentStatus::Settling | PaymentStatus::Settled => {
                (true, false)
            }
            PaymentStatus::Voided | PaymentStatus::Failed => (false, false),
            PaymentStatus::Unrecognized => {
                return Err(permanent(format!(
                    "payment {} has a status this worker does not know: {:?}",
                    payment.id, payment.status
                )));
            }
        };
        payment
            .into_snapshot(authorization_id, captured_state, open)
            .map_err(permanent)
    }
}

#[async_trait]
impl PaymentProvider for HellgateProvider {
    fn name(&self) -> &str {
        self.name.as_str()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::hellgate()
    }

    async fn capture(&self, request: &CaptureRequest) -> CallResult {
        self.send_capture(request).await
    }

    /// Voids the payment: used when the order completes with nothing captured.
    async fn release(&self, request: &ReleaseRequest) -> CallResult {
        self.send_void(request).await
    }

    async fn lookup(
        &self,
        authorization_id: &AuthorizationId,
    ) -> Result<AuthorizationSnapshot, LookupError> {
        self.read_payment(authorization_id).await
    }

    /// A payment that went from `capturing` to `failed`: the capture was refused.
    fn refused_capture(&self, snapshot: &AuthorizationSnapshot) -> Option<String> {
        (snapshot.status == "failed").then(|| "failed".to_owned())
    }
}

/// Routes an answer: a 2xx payment through `on_payment`, anything else by status.
fn routed(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    on_payment: impl FnOnce(Payment) -> Outcome,
) -> (Outcome, Option<String>) {
    if !status.is_success() {
        return refused(what, status, headers, body);
    }
    match serde_json::from_slice::<Payment>(body) {
        Ok(payment) => {
            let label = payment.status.clone();
            (on_payment(payment), Some(label))
        }
        Err(error) => (
            Outcome::Unknown {
                reason: format!(
                    "{what}: HTTP {} body is not a payment ({error}); it may have been applied",
                    status.as_u16()
                ),
                key_spent: true,
            },
            None,
        ),
    }
}

/// The payment right after the capture call.
fn capture_outcome(what: &str, payment: Payment) -> Outcome {
    let label = payment.status.clone();
    match payment.status() {
        // Accepted; `captured` or `failed` follows by notification or read-back.
        PaymentStatus::Capturing | PaymentStatus::Authorized => Outcome::Pending {
            reference: Some(payment.id),
        },
        PaymentStatus::Captured | PaymentStatus::Settling | PaymentStatus::Settled => {
            Outcome::Succeeded {
                reference: Some(payment.id),
            }
        }
        PaymentStatus::Failed => Outcome::Declined {
            code: "failed".to_owned(),
            message: format!("Hellgate reports payment {} failed", payment.id),
        },
        PaymentStatus::Voiding | PaymentStatus::Voided => Outcome::Failed {
            reason: format!("{what}: the payment is {label}; nothing can be captured"),
        },
        PaymentStatus::Open | PaymentStatus::Processing | PaymentStatus::Unrecognized => {
            Outcome::Unknown {
                reason: format!(
                    "{what}: after the capture call the payment is {label:?}, which says nothing about the capture"
                ),
                key_spent: true,
            }
        }
    }
}

/// The payment right after the void call.
fn void_outcome(what: &str, payment: Payment) -> Outcome {
    let label = payment.status.clone();
    match payment.status() {
        PaymentStatus::Voided => Outcome::Succeeded {
            reference: Some(payment.id),
        },
        PaymentStatus::Voiding | PaymentStatus::Authorized => Outcome::Pending {
            reference: Some(payment.id),
        },
        PaymentStatus::Capturing
        | PaymentStatus::Captured
        | PaymentStatus::Settling
        | PaymentStatus::Settled => Outcome::Failed {
            reason: format!("{what}: the payment is {label}; a captured payment cannot be voided"),
        },
        PaymentStatus::Failed => Outcome::Failed {
            reason: format!("{what}: the payment failed; nothing is held to release"),
        },
        PaymentStatus::Open | PaymentStatus::Processing | PaymentStatus::Unrecognized => {
            Outcome::Unknown {
                reason: format!("{what}: after the void call the payment is {label:?}"),
                key_spent: true,
            }
        }
    }
}

/// Routes a non-2xx answer. No idempotency key protects a resend, so a server error is
/// `Unknown` (read back first), never a plain retry.
fn refused(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> (Outcome, Option<String>) {
    let error = wire::parse_error(body);
    let code = error.as_ref().and_then(|e| e.code.clone());
    let detail = describe(status, error.as_ref());
    let failed = |why: &str| Outcome::Failed {
        reason: format!("{what}: {why}: {detail}"),
    };
    let outcome = match status.as_u16() {
        // Rate limiting happens before the call is processed.
        429 => Outcome::Retryable {
            after: http::retry_after(headers),
            reason: format!("{what}: rate limited: {detail}"),
        },
        500..=599 => Outcome::Unknown {
            reason: format!(
                "{what}: Hellgate server error; without an idempotency key the capture may have been applied, so read the payment back before resending: {detail}"
            ),
            key_spent: true,
        },
        400 | 422 => failed("Hellgate refused the request"),
        401 => failed("Hellgate refused the API key (authentication)"),
        403 => failed("the API key may not do this (permission)"),
        404 => failed("no such payment for this account"),
        409 => failed(
            "the payment is not in a state that allows this (a second capture is never possible)",
        ),
        _ => failed("unexpected HTTP status"),
    };
    (outcome, code)
}

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
        None => format!("HTTP {} without a Hellgate error body", status.as_u16()),
    }
}

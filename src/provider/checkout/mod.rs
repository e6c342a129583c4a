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

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use tracing::Instrument as _;

use crate::domain::{AuthorizationId, Capabilities, ProviderName};
use crate::provider::http::{
    self, Api, Credential, ProviderSetupError, Refusal, RefusedRead, Replay, Shape,
};
use crate::provider::{
    AuthorizationSnapshot, CallResult, CaptureRequest, HoldChange, LifecycleRequest,
    LifecycleResult, LookupError, Outcome, PaymentProvider, ReleaseRequest, WebhookError,
    WebhookEvent,
};
use crate::secret::Secret;

pub use self::webhook::sign as sign_webhook;

use self::wire::{
    Accepted, ApiError, Authorized, CaptureBody, IncrementBody, PaymentDetails, PaymentStatus,
    VoidBody,
};

/// Bearer secret-key auth, `cko-request-id`, and the `Cko-Idempotency-Key` header.
static SHAPE: Shape = Shape {
    kind: "checkout",
    example_url: "https://api.sandbox.checkout.com",
    credential: Credential::Bearer("secret key"),
    request_id: "cko-request-id",
    replay: Replay::Idempotent,
};

/// A Checkout.com account reached over HTTPS.
#[derive(Debug)]
pub struct CheckoutProvider {
    /// `Authorization: Bearer <secret key>` on every call.
    api: Api,
    /// The webhook's signature key.
    webhook_secret: Option<Secret>,
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
        Ok(CheckoutProvider {
            api: Api::new(&name, &SHAPE, base_url, secret_key.as_ref(), timeout)?,
            webhook_secret: None,
        })
    }

    /// Verifies webhook deliveries with the webhook's signature `key`.
    pub fn with_webhook_secret(mut self, key: Secret) -> Self {
        self.webhook_secret = Some(key);
        self
    }
}

#[async_trait]
impl PaymentProvider for CheckoutProvider {
    fn name(&self) -> &str {
        self.api.name().as_str()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::checkout()
    }

    async fn capture(&self, request: &CaptureRequest) -> CallResult {
        let id = &request.authorization_id;
        let what = format!("capture of Checkout.com payment {id}");
        self.api
            .post(
                &what,
                &["payments", id.as_str(), "captures"],
                |builder| {
                    builder
                        .header("Cko-Idempotency-Key", request.idempotency_key.as_str())
                        .json(&CaptureBody::from_request(request))
                },
                |status, headers, body| answered(&what, status, headers, body),
            )
            .instrument(self.api.capture_span(request))
            .await
    }

    /// Voids what is left of the payment.
    async fn release(&self, request: &ReleaseRequest) -> CallResult {
        let id = &request.authorization_id;
        let what = format!("void of Checkout.com payment {id}");
        self.api
            .post(
                &what,
                &["payments", id.as_str(), "voids"],
                |builder| {
                    builder
                        .header("Cko-Idempotency-Key", request.idempotency_key.as_str())
                        .json(&VoidBody::from_request(request))
                },
                |status, headers, body| answered(&what, status, headers, body),
            )
            .instrument(self.api.release_span(request))
            .await
    }

    /// An incremental authorization (`POST /payments/{id}/authorizations`) of an estimated
    /// authorization: the increase, or 0 to extend the validity (Mastercard only). Answered
    /// synchronously: `201` approved is `Succeeded` with the new amount and `expires_on`, not
    /// approved is `Declined` with its `response_code`; refusals route like a capture's (403:
    /// not allowed, e.g. already partly captured or a `Final` authorization).
    async fn lifecycle(&self, request: &LifecycleRequest) -> LifecycleResult {
        let id = &request.authorization_id;
        let what = format!("{} of Checkout.com payment {id}", request.call.label());
        let mut hold = None;
        let call = self
            .api
            .post(
                &what,
                &["payments", id.as_str(), "authorizations"],
                |builder| {
                    builder
                        .header("Cko-Idempotency-Key", request.idempotency_key.as_str())
                        .json(&IncrementBody::from_request(request))
                },
                |status, headers, body| {
                    let (outcome, code, change) = authorized(&what, status, headers, body);
                    hold = change;
                    (outcome, code)
                },
            )
            .instrument(self.api.lifecycle_span(request))
            .await;
        LifecycleResult { call, hold }
    }

    /// Reads the payment's balances (`total_captured`, `available_to_capture`). A capture
    /// still being processed may not show in them yet.
    async fn lookup(
        &self,
        authorization_id: &AuthorizationId,
    ) -> Result<AuthorizationSnapshot, LookupError> {
        let read = async {
            let payment: PaymentDetails = self
                .api
                .get(
                    authorization_id,
                    &["payments", authorization_id.as_str()],
                    "payment",
                    |status, _, body| RefusedRead {
                        detail: describe(status, wire::parse_error(body).as_ref()),
                        retryable: false,
                    },
                )
                .await?;
            snapshot(authorization_id, payment)
        };
        self.api.traced_lookup(authorization_id, read).await
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

/// What a payment read back says about the authorization.
fn snapshot(
    authorization_id: &AuthorizationId,
    payment: PaymentDetails,
) -> Result<AuthorizationSnapshot, LookupError> {
    let permanent = LookupError::permanent_for(authorization_id);
    match payment.status() {
        PaymentStatus::Pending | PaymentStatus::RetryScheduled => {
            return Err(LookupError::retryable_for(authorization_id)(format!(
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

/// Routes an answer to a capture or void (reference/providers.md §4).
fn answered(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> (Outcome, Option<String>) {
    if status.is_success() {
        // Accepted and processed asynchronously: the webhook (or a read-back) settles it.
        let outcome = match http::decode::<Accepted>(
            what,
            status,
            body,
            "accepted action",
            Replay::Idempotent,
        ) {
            Ok(accepted) => Outcome::Pending {
                reference: Some(accepted.action_id),
            },
            Err(unreadable) => unreadable,
        };
        return (outcome, None);
    }
    let error = wire::parse_error(body);
    let code = error.as_ref().map(ApiError::provider_code);
    let r = Refusal::new(what, headers, describe(status, error.as_ref()));
    let outcome = match status.as_u16() {
        // Concurrent requests with the same key: only one is processed.
        409 => r.retry("the same request is in progress"),
        429 => r.retry("rate limited"),
        // "If the original request returns a 4xx or 5xxx response code, no idempotent result
        // is saved and the payment is reattempted" (checkout.com/docs/payments/manage-payments/
        // idempotency): the key does not protect a resend after a 5xx, and the 5xx may have
        // come after the capture executed. Read the payment back before sending again.
        500..=599 => r.unknown(
            "Checkout.com server error; Checkout.com saves no result for a 5xx and would process a resend under the same key again, so the payment is read back first",
        ),
        401 => r.failed("Checkout.com refused the secret key (authentication)"),
        403 => r.failed(
            "capture not allowed (the payment is captured, voided or expired, or the key may not do this)",
        ),
        404 => r.failed("no such payment for this account"),
        422 => r.failed("Checkout.com refused the data"),
        400 => r.failed("Checkout.com refused the request"),
        _ => r.failed("unexpected HTTP status"),
    };
    (outcome, code)
}

/// Routes an answer to an incremental authorization: a `201` with `approved`, else as a
/// capture's refusal.
fn authorized(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> (Outcome, Option<String>, Option<HoldChange>) {
    if !status.is_success() {
        let (outcome, code) = answered(what, status, headers, body);
        return (outcome, code, None);
    }
    match http::decode::<Authorized>(what, status, body, "authorization", Replay::Idempotent) {
        Ok(answer) if answer.approved => {
            let change = answer.hold_change();
            (
                Outcome::Succeeded {
                    reference: Some(answer.action_id),
                },
                answer.response_code,
                Some(change),
            )
        }
        Ok(answer) => (
            Outcome::Declined {
                code: answer
                    .response_code
                    .clone()
                    .unwrap_or_else(|| answer.status.clone()),
                message: answer
                    .response_summary
                    .unwrap_or_else(|| format!("Checkout.com declined {what}")),
            },
            answer.response_code,
            None,
        ),
        Err(unreadable) => (unreadable, None, None),
    }
}

/// `HTTP 422 request_invalid/amount_invalid`
fn describe(status: StatusCode, error: Option<&ApiError>) -> String {
    let code = error.map(ApiError::provider_code);
    http::error_detail(status, code.as_deref().map(|c| (c, "")), "a Checkout.com")
}

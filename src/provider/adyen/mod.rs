//! The Adyen adapter: partial captures and the cancel of the rest over the Checkout API
//! (v71), plus the parsing and HMAC verification of its notifications.
//!
//! Owns the HTTP shape of Adyen's modifications (reference/providers.md §3): the `X-API-Key`
//! header, the `Idempotency-Key` header (≤ 64 characters, kept ≥ 31 days; ours are 52), the
//! merchant account in every body, and the routing of every answer to one [`Outcome`]. The
//! wire structs live in `wire.rs`; `notification.rs` is the pure webhook parser. Imports
//! `domain` and the provider boundary only. The API key is held as a sensitive header value
//! and never reaches a log field, an error or a `Debug` string.
//!
//! Adyen rules this adapter encodes: a capture's synchronous answer is only `201 received`
//! (`Pending`); the result arrives later as a `CAPTURE` or `CAPTURE_FAILED` notification.
//! There is no final flag, so the capture plan follows the last capture with a cancel of the
//! remainder (multiple partial captures must be enabled on the merchant account, or Adyen
//! cancels the rest after the first partial capture by itself). Adyen's Checkout API has no
//! read-back of a payment's captures, so `lookup` says so.

mod notification;
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
    AuthorizationSnapshot, CallResult, CaptureRequest, LookupError, NotificationEffect,
    NotificationSubject, Outcome, PaymentProvider, ReleaseRequest, WebhookError, WebhookEvent,
};

pub use self::notification::{
    Notification, NotificationError, NotificationEvent, parse_notification, sign,
};
use self::wire::{CancelBody, CaptureBody, Received, ServiceError};

const EXAMPLE_URL: &str = "https://checkout-test.adyen.com/v71";
/// Adyen answers with the request's `pspReference` header.
const REQUEST_ID: &str = "pspreference";

/// One Adyen merchant account reached over HTTPS.
pub struct AdyenProvider {
    name: ProviderName,
    base_url: Url,
    merchant_account: String,
    api_key: Option<HeaderValue>,
    /// The HMAC key the account's notifications are signed with (hex).
    webhook_secret: Option<Secret>,
    timeout: Duration,
    client: Client,
}

impl fmt::Debug for AdyenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdyenProvider")
            .field("name", &self.name)
            .field("base_url", &self.base_url.as_str())
            .field("merchant_account", &self.merchant_account)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AdyenProvider {
    /// Builds the adapter. `base_url` includes the API version
    /// (`https://checkout-test.adyen.com/v71`; live: the account's
    /// `https://{prefix}-checkout-live.adyenpayments.com/checkout/v71`). `merchant_account` is
    /// required: Adyen wants it in every modification.
    pub fn new(
        name: ProviderName,
        base_url: String,
        api_key: Option<Secret>,
        merchant_account: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ProviderSetupError> {
        let base_url = http::parse_base_url(&name, base_url, EXAMPLE_URL)?;
        let client = http::client(&name, timeout)?;
        let merchant_account = merchant_account
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| ProviderSetupError::MissingSetting {
                name: name.clone(),
                setting: "merchant_account",
                hint: "Adyen needs the merchant account name (e.g. AcmeShopEU) in every capture and cancel",
            })?;
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
        Ok(AdyenProvider {
            name,
            base_url,
            merchant_account,
            api_key,
            webhook_secret: None,
            timeout,
            client,
        })
    }

    /// Verifies notifications with `hmac_key`, the account's HMAC key in hex as Adyen's
    /// Customer Area shows it.
    pub fn with_webhook_secret(mut self, hmac_key: Secret) -> Result<Self, ProviderSetupError> {
        if sign("", &hmac_key).is_err() {
            return Err(ProviderSetupError::BadSetting {
                name: self.name.clone(),
                setting: "webhook_secret",
                problem: "Adyen's HMAC key is hex (64 characters as the Customer Area shows it)"
                    .to_owned(),
            });
        }
        self.webhook_secret = Some(hmac_key);
        Ok(self)
    }

    fn authorized(&self, builder: RequestBuilder) -> RequestBuilder {
        match &self.api_key {
            Some(key) => builder.header("X-API-Key", key.clone()),
            None => builder,
        }
    }

    #[tracing::instrument(
        name = "adyen.capture",
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
        let what = format!("capture of Adyen payment {}", request.authorization_id);
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
            .header("Idempotency-Key", request.idempotency_key.as_str())
            .json(&CaptureBody::from_request(&self.merchant_account, request));
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
        name = "adyen.release",
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
    async fn send_cancel(&self, request: &ReleaseRequest) -> CallResult {
        let what = format!("cancel of Adyen payment {}", request.authorization_id);
        let url = match http::url_with(
            &self.base_url,
            &["payments", request.authorization_id.as_str(), "cancels"],
        ) {
            Ok(url) => url,
            Err(problem) => return http::unsendable(&what, problem),
        };
        let builder = self
            .client
            .post(url)
            .header("Idempotency-Key", request.idempotency_key.as_str())
            .json(&CancelBody::from_request(&self.merchant_account, request));
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
}

#[async_trait]
impl PaymentProvider for AdyenProvider {
    fn name(&self) -> &str {
        self.name.as_str()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::adyen()
    }

    async fn capture(&self, request: &CaptureRequest) -> CallResult {
        self.send_capture(request).await
    }

    /// Cancels what is left of the authorization (after the last capture, or instead of any).
    async fn release(&self, request: &ReleaseRequest) -> CallResult {
        self.send_cancel(request).await
    }

    /// Adyen's Checkout API cannot read a payment's captures back: outcomes arrive only as
    /// `CAPTURE` / `CAPTURE_FAILED` notifications (see [`parse_notification`]).
    async fn lookup(
        &self,
        authorization_id: &AuthorizationId,
    ) -> Result<AuthorizationSnapshot, LookupError> {
        Err(LookupError::Permanent {
            authorization_id: authorization_id.to_string(),
            reason: "Adyen's Checkout API offers no read-back of a payment's captures; the outcome arrives as a CAPTURE or CAPTURE_FAILED notification (or check the Customer Area)".to_owned(),
        })
    }

    /// Standard notifications, every item HMAC-verified ([`parse_notification`]). Items of
    /// another merchant account are ignored. The event type recorded is
    /// `eventCode:success`, so Adyen's re-capture (`CAPTURE` with `success=true` after one
    /// with `false`) is not mistaken for a duplicate.
    fn read_notification(
        &self,
        _headers: &reqwest::header::HeaderMap,
        body: &[u8],
        _now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<WebhookEvent>, WebhookError> {
        let Some(key) = &self.webhook_secret else {
            return Err(WebhookError::NotConfigured);
        };
        let items = parse_notification(body, key).map_err(|e| match e {
            NotificationError::Malformed(m) => WebhookError::Malformed(m),
            other => WebhookError::Unauthenticated(other.to_string()),
        })?;
        Ok(items
            .into_iter()
            .map(|n| {
                let ours = n.merchant_account == self.merchant_account;
                let subject = match n.event {
                    NotificationEvent::Capture | NotificationEvent::CaptureFailed if ours => {
                        NotificationSubject::Capture
                    }
                    NotificationEvent::Cancellation if ours => NotificationSubject::Release,
                    _ => NotificationSubject::Other,
                };
                let effect = match (subject, n.outcome()) {
                    (NotificationSubject::Other, _) | (_, None) => NotificationEffect::Ignore,
                    (_, Some(outcome)) => NotificationEffect::Settle(outcome),
                };
                WebhookEvent {
                    event_type: format!("{}:{}", n.event_code, n.success),
                    reference: n.psp_reference,
                    authorization_id: n.original_reference,
                    merchant_reference: Some(n.merchant_reference).filter(|r| !r.is_empty()),
                    subject,
                    effect,
                }
            })
            .collect())
    }
}

/// Routes an answer to a capture or cancel (reference/providers.md §3).
fn answered(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> (Outcome, Option<String>) {
    if status.is_success() {
        let outcome = match serde_json::from_slice::<Received>(body) {
            // The only documented answer: accepted, the result follows as a notification.
            Ok(received) if received.status == "received" => Outcome::Pending {
                reference: Some(received.psp_reference),
            },
            Ok(received) => Outcome::Unknown {
                reason: format!(
                    "{what}: Adyen answered HTTP {} with status {:?} instead of \"received\"",
                    status.as_u16(),
                    received.status
                ),
                key_spent: true,
            },
            Err(error) => Outcome::Unknown {
                reason: format!(
                    "{what}: HTTP {} body is not Adyen's received answer ({error}); it may have been accepted",
                    status.as_u16()
                ),
                key_spent: false,
            },
        };
        return (outcome, None);
    }
    let error = wire::parse_error(body);
    let code = error.as_ref().and_then(ServiceError::provider_code);
    let detail = describe(status, error.as_ref());
    let retry = |why: &str| Outcome::Retryable {
        after: http::retry_after(headers),
        reason: format!("{what}: {why}: {detail}"),
    };
    let failed = |why: &str| Outcome::Failed {
        reason: format!("{what}: {why}: {detail}"),
    };
    let outcome = match status.as_u16() {
        // 704: the same idempotency key is still being processed.
        422 if error.as_ref().and_then(|e| e.error_code.as_deref()) == Some("704") => {
            retry("the same request is still in progress")
        }
        422 => failed("Adyen refused the modification"),
        429 => retry("rate limited"),
        // Adyen keeps the key for 31 days: resending it cannot capture twice.
        500..=599 => retry("Adyen server error"),
        400 => failed("Adyen refused the request"),
        401 => failed("Adyen refused the API key (authentication)"),
        403 => failed(
            "the API key may not do this (permission; check its roles and the merchant account)",
        ),
        404 => failed("no such payment for this merchant account"),
        _ => failed("unexpected HTTP status"),
    };
    (outcome, code)
}

fn describe(status: StatusCode, error: Option<&ServiceError>) -> String {
    match error {
        Some(error) => {
            let code = error.error_code.as_deref().unwrap_or("error");
            let message = error.message();
            if message.is_empty() {
                format!("HTTP {} {code}", status.as_u16())
            } else {
                format!("HTTP {} {code}: {message}", status.as_u16())
            }
        }
        None => format!("HTTP {} without an Adyen error body", status.as_u16()),
    }
}

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

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use tracing::Instrument as _;

use crate::domain::{AuthorizationId, Capabilities, ProviderName};
use crate::provider::http::{self, Api, Credential, ProviderSetupError, Refusal, Replay, Shape};
use crate::provider::{
    AuthorizationSnapshot, CallResult, CaptureRequest, LifecycleRequest, LifecycleResult,
    LookupError, NotificationEffect, NotificationSubject, Outcome, PaymentProvider, ReleaseRequest,
    WebhookError, WebhookEvent,
};
use crate::secret::Secret;

pub use self::notification::{
    Notification, NotificationError, NotificationEvent, parse_notification, sign,
};
use self::wire::{AmountUpdateBody, CancelBody, CaptureBody, Received, ServiceError};

/// `X-API-Key` auth, the `pspReference` header, and the `Idempotency-Key` header (≤ 64
/// characters, kept ≥ 31 days).
static SHAPE: Shape = Shape {
    kind: "adyen",
    example_url: "https://checkout-test.adyen.com/v71",
    credential: Credential::Header("x-api-key", "API key"),
    request_id: "pspreference",
    replay: Replay::Idempotent,
};

/// One Adyen merchant account reached over HTTPS.
#[derive(Debug)]
pub struct AdyenProvider {
    /// `X-API-Key` on every call.
    api: Api,
    merchant_account: String,
    /// The HMAC key the account's notifications are signed with (hex).
    webhook_secret: Option<Secret>,
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
        let api = Api::new(&name, &SHAPE, base_url, api_key.as_ref(), timeout)?;
        let merchant_account = merchant_account
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| ProviderSetupError::MissingSetting {
                name: name.clone(),
                setting: "merchant_account",
                hint: "Adyen needs the merchant account name (e.g. AcmeShopEU) in every capture and cancel",
            })?;
        Ok(AdyenProvider {
            api,
            merchant_account,
            webhook_secret: None,
        })
    }

    /// Verifies notifications with `hmac_key`, the account's HMAC key in hex as Adyen's
    /// Customer Area shows it.
    pub fn with_webhook_secret(mut self, hmac_key: Secret) -> Result<Self, ProviderSetupError> {
        if sign("", &hmac_key).is_err() {
            return Err(ProviderSetupError::BadSetting {
                name: self.api.name().clone(),
                setting: "webhook_secret",
                problem: "Adyen's HMAC key is hex (64 characters as the Customer Area shows it)"
                    .to_owned(),
            });
        }
        self.webhook_secret = Some(hmac_key);
        Ok(self)
    }

    /// POSTs a modification (`captures`, `cancels`) of the payment under its idempotency key.
    async fn modify(
        &self,
        what: &str,
        psp_reference: &AuthorizationId,
        modification: &str,
        idempotency_key: &str,
        body: &impl serde::Serialize,
    ) -> CallResult {
        self.api
            .post(
                what,
                &["payments", psp_reference.as_str(), modification],
                |builder| {
                    builder
                        .header("Idempotency-Key", idempotency_key)
                        .json(body)
                },
                |status, headers, body| answered(what, status, headers, body),
            )
            .await
    }
}

#[async_trait]
impl PaymentProvider for AdyenProvider {
    fn name(&self) -> &str {
        self.api.name().as_str()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::adyen()
    }

    async fn capture(&self, request: &CaptureRequest) -> CallResult {
        let id = &request.authorization_id;
        let key = &request.idempotency_key;
        let what = format!("capture of Adyen payment {id}");
        let body = match CaptureBody::from_request(&self.merchant_account, request) {
            Ok(body) => body,
            Err(problem) => return http::unsendable(&what, problem),
        };
        self.modify(&what, id, "captures", key.as_str(), &body)
            .instrument(self.api.capture_span(request))
            .await
    }

    /// Cancels what is left of the authorization (after the last capture, or instead of any).
    async fn release(&self, request: &ReleaseRequest) -> CallResult {
        let id = &request.authorization_id;
        let key = &request.idempotency_key;
        let body = CancelBody::from_request(&self.merchant_account, request);
        let what = format!("cancel of Adyen payment {id}");
        self.modify(&what, id, "cancels", key.as_str(), &body)
            .instrument(self.api.release_span(request))
            .await
    }

    /// Authorisation adjustment of a pre-authorised payment (`/amountUpdates`): the new total
    /// for an increment, the current amount again to extend the hold. Adyen answers `201
    /// received` (`Pending`); the outcome follows as an `AUTHORISATION_ADJUSTMENT`
    /// notification. Only before any capture ("You can only update authorised amounts that
    /// have not yet been captured").
    async fn lifecycle(&self, request: &LifecycleRequest) -> LifecycleResult {
        let id = &request.authorization_id;
        let what = format!("{} of Adyen payment {id}", request.call.label());
        let call = match AmountUpdateBody::from_request(&self.merchant_account, request) {
            Ok(body) => {
                self.modify(
                    &what,
                    id,
                    "amountUpdates",
                    request.idempotency_key.as_str(),
                    &body,
                )
                .instrument(self.api.lifecycle_span(request))
                .await
            }
            Err(problem) => http::unsendable(&what, problem),
        };
        LifecycleResult { call, hold: None }
    }

    /// Adyen's Checkout API cannot read a payment's captures back: outcomes arrive only as
    /// `CAPTURE` / `CAPTURE_FAILED` notifications (see [`parse_notification`]).
    /// No read-back is documented (the outcome arrives by notification or in the dashboard).
    fn offers_read_back(&self) -> bool {
        false
    }

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
        // Each item carries its own signature: a batch without items proves nothing.
        if items.is_empty() {
            return Err(WebhookError::Unauthenticated(
                "the batch has no notification items, so nothing in it is signed".to_owned(),
            ));
        }
        Ok(items
            .into_iter()
            .map(|n| {
                let ours = n.merchant_account == self.merchant_account;
                let subject = match n.event {
                    NotificationEvent::Capture | NotificationEvent::CaptureFailed if ours => {
                        NotificationSubject::Capture
                    }
                    NotificationEvent::Cancellation if ours => NotificationSubject::Release,
                    NotificationEvent::AuthorisationAdjustment if ours => {
                        NotificationSubject::Lifecycle
                    }
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
        let outcome = match http::decode::<Received>(
            what,
            status,
            body,
            "received answer",
            Replay::Idempotent,
        ) {
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
            Err(unreadable) => unreadable,
        };
        return (outcome, None);
    }
    let error = wire::parse_error(body);
    let code = error.as_ref().and_then(ServiceError::provider_code);
    let r = Refusal::new(what, headers, describe(status, error.as_ref()));
    let outcome = match status.as_u16() {
        // 704: the same idempotency key is still being processed.
        422 if error.as_ref().and_then(|e| e.error_code.as_deref()) == Some("704") => {
            r.retry("the same request is still in progress")
        }
        422 => r.failed("Adyen refused the modification"),
        429 => r.retry("rate limited"),
        // Adyen keeps the key for 31 days: resending it cannot capture twice.
        500..=599 => r.retry("Adyen server error"),
        400 => r.failed("Adyen refused the request"),
        401 => r.failed("Adyen refused the API key (authentication)"),
        403 => r.failed(
            "the API key may not do this (permission; check its roles and the merchant account)",
        ),
        404 => r.failed("no such payment for this merchant account"),
        _ => r.failed("unexpected HTTP status"),
    };
    (outcome, code)
}

/// `HTTP 422 14_030: Modification amount too high`
fn describe(status: StatusCode, error: Option<&ServiceError>) -> String {
    let message = error.map(ServiceError::message);
    let code = error
        .and_then(|e| e.error_code.as_deref())
        .unwrap_or("error");
    http::error_detail(status, message.as_deref().map(|m| (code, m)), "an Adyen")
}

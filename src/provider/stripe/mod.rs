//! The Stripe adapter: PaymentIntent capture, cancel and retrieve over HTTP.
//!
//! Owns the HTTP shape of Stripe's API (URLs, bearer auth, the `Idempotency-Key` header) and
//! the routing of every answer to one [`Outcome`] (reference/providers.md §1.4–1.7). The wire
//! structs live in `wire.rs` and never leave this folder. The same adapter serves the name
//! `stripe` against api.stripe.com and `sandbox` against the built-in sandbox server. Imports
//! `domain` and the provider boundary only, never another adapter. The API key is held as a
//! sensitive header value and never reaches a log field, an error or a `Debug` string.

mod wire;

use std::fmt;
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
    AuthorizationSnapshot, CallResult, CaptureRequest, LifecycleCall, LifecycleRequest,
    LifecycleResult, LookupError, Outcome, PaymentProvider, ReleaseRequest,
};
use crate::secret::Secret;

use self::wire::{ApiError, CaptureForm, ErrorEnvelope, ErrorType, IncrementForm, PaymentIntent};

/// Bearer secret-key auth, Stripe's `request-id`, and the `Idempotency-Key` header.
static SHAPE: Shape = Shape {
    kind: "stripe",
    example_url: "https://api.stripe.com",
    credential: Credential::Bearer("API key"),
    request_id: "request-id",
    replay: Replay::Idempotent,
};

/// The API version every call pins (`Stripe-Version`), so the PaymentIntent shape and the
/// error codes the adapter reads do not change with the account's default version
/// (docs.stripe.com/api/versioning: "requests ... use your Stripe account's default API
/// version ... unless you override it by setting the `Stripe-Version` header"). 2024-06-20
/// has the multicapture fields (`amount_to_capture`, `final_capture`) and the PaymentIntent
/// without the `charges` list (removed 2022-11-15) that `wire.rs` reads.
pub const STRIPE_VERSION: &str = "2024-06-20";

/// A Stripe (or Stripe-dialect sandbox) account reached over HTTPS.
#[derive(Debug)]
pub struct StripeProvider {
    /// `Authorization: Bearer <key>` on every call, when a key is configured.
    api: Api,
}

impl StripeProvider {
    /// Builds the adapter and its one HTTP client (see [`http::client`]). Without `api_key` no
    /// `Authorization` header is sent (the sandbox needs none).
    pub fn new(
        name: ProviderName,
        base_url: String,
        api_key: Option<Secret>,
        timeout: Duration,
    ) -> Result<Self, ProviderSetupError> {
        let api = Api::new(&name, &SHAPE, base_url, api_key.as_ref(), timeout)?
            .with_header("stripe-version", HeaderValue::from_static(STRIPE_VERSION));
        Ok(StripeProvider { api })
    }

    /// POSTs `form` to `/v1/payment_intents/{id}/capture` (or `/cancel`,
    /// `/increment_authorization`) under the idempotency key. `seen` is given the 2xx body of
    /// a successful call.
    async fn post(
        &self,
        call: Call<'_>,
        idempotency_key: &str,
        form: &impl serde::Serialize,
        seen: impl FnOnce(&PaymentIntent) + Send,
    ) -> CallResult {
        let what = call.to_string();
        let (id, action) = match call {
            Call::Capture(id) => (id, "capture"),
            Call::Release(id) => (id, "cancel"),
            Call::Increment(id) => (id, "increment_authorization"),
        };
        self.api
            .post(
                &what,
                &["v1", "payment_intents", id.as_str(), action],
                |builder| {
                    builder
                        .header("Idempotency-Key", idempotency_key)
                        .form(form)
                },
                |status, headers, body| {
                    let routed = answered(&what, call, status, headers, body);
                    if matches!(routed.0, Outcome::Succeeded { .. })
                        && let Ok(intent) = serde_json::from_slice::<PaymentIntent>(body)
                    {
                        seen(&intent);
                    }
                    routed
                },
            )
            .await
    }
}

#[async_trait]
impl PaymentProvider for StripeProvider {
    fn name(&self) -> &str {
        self.api.name().as_str()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::stripe()
    }

    async fn capture(&self, request: &CaptureRequest) -> CallResult {
        let id = &request.authorization_id;
        let key = &request.idempotency_key;
        let form = match CaptureForm::from_request(request) {
            Ok(form) => form,
            Err(problem) => {
                return http::unsendable(&format!("capture of Stripe PaymentIntent {id}"), problem);
            }
        };
        self.post(Call::Capture(id), key.as_str(), &form, |_| {})
            .instrument(self.api.capture_span(request))
            .await
    }

    async fn release(&self, request: &ReleaseRequest) -> CallResult {
        let id = &request.authorization_id;
        let key = &request.idempotency_key;
        // No cancellation_reason: none of Stripe's values describes "order complete, release
        // the rest", and the field is optional.
        let no_params: [(&str, &str); 0] = [];
        self.post(Call::Release(id), key.as_str(), &no_params, |_| {})
            .instrument(self.api.release_span(request))
            .await
    }

    /// `increment_authorization` with the new total, on a PaymentIntent that is "completely
    /// uncaptured" and whose card allows it (Stripe answers an ineligible one with an
    /// `invalid_request_error`: `Failed`, and a refused increment with 402 `card_declined`:
    /// `Declined`). An online card hold cannot be extended after the fact: an extended hold is
    /// requested when the PaymentIntent is confirmed, so `Extend` sends nothing.
    async fn lifecycle(&self, request: &LifecycleRequest) -> LifecycleResult {
        let id = &request.authorization_id;
        if request.call == LifecycleCall::Extend {
            let mut result = LifecycleResult::not_supported(self.name(), request);
            result.call.outcome = Outcome::Failed {
                reason: format!(
                    "Stripe cannot extend the hold of PaymentIntent {id} after the fact (an extended hold is requested when the PaymentIntent is confirmed); nothing was sent: capture what shipped before the hold lapses"
                ),
            };
            return result;
        }
        let currency = request.authorized.currency();
        let form = match IncrementForm::from_request(request) {
            Ok(form) => form,
            Err(problem) => {
                return LifecycleResult {
                    call: http::unsendable(
                        &format!("increment of Stripe PaymentIntent {id}"),
                        problem,
                    ),
                    hold: None,
                };
            }
        };
        let mut hold = None;
        let call = self
            .post(
                Call::Increment(id),
                request.idempotency_key.as_str(),
                &form,
                |intent| hold = Some(intent.hold_change(currency)),
            )
            .instrument(self.api.lifecycle_span(request))
            .await;
        LifecycleResult { call, hold }
    }

    async fn lookup(
        &self,
        authorization_id: &AuthorizationId,
    ) -> Result<AuthorizationSnapshot, LookupError> {
        let read = async {
            let intent: PaymentIntent = self
                .api
                .get(
                    authorization_id,
                    &["v1", "payment_intents", authorization_id.as_str()],
                    "PaymentIntent",
                    |status, headers, body| RefusedRead {
                        detail: describe(status, parse_error(body).as_ref()),
                        // 409: a lock timeout or a concurrent request; nothing is wrong with it.
                        retryable: should_retry(headers) == Some(true)
                            || status == StatusCode::CONFLICT,
                    },
                )
                .await?;
            intent
                .into_snapshot(authorization_id)
                .map_err(LookupError::permanent_for(authorization_id))
        };
        self.api.traced_lookup(authorization_id, read).await
    }
}

/// Which call an answer belongs to: a capture is referenced by its charge, a cancel by the
/// PaymentIntent.
#[derive(Clone, Copy)]
enum Call<'a> {
    Capture(&'a AuthorizationId),
    Release(&'a AuthorizationId),
    Increment(&'a AuthorizationId),
}

impl fmt::Display for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Capture(id) => write!(f, "capture of PaymentIntent {id}"),
            Call::Release(id) => write!(f, "cancel of PaymentIntent {id}"),
            Call::Increment(id) => write!(f, "increment of PaymentIntent {id}"),
        }
    }
}

/// `Stripe-Should-Retry`, when present and `true` or `false`.
fn should_retry(headers: &HeaderMap) -> Option<bool> {
    http::header_text(headers, "stripe-should-retry").and_then(|v| {
        match v.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    })
}

/// The outcome of an HTTP answer with its body, and the provider code to record.
fn answered(
    what: &str,
    call: Call<'_>,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> (Outcome, Option<String>) {
    if status.is_success() {
        // A 2xx carries the PaymentIntent after the change. It wins over a `Stripe-Should-Retry`
        // header: retrying the same key would only replay this same success.
        let outcome = match http::decode::<PaymentIntent>(
            what,
            status,
            body,
            "PaymentIntent",
            Replay::Idempotent,
        ) {
            Ok(intent) => Outcome::Succeeded {
                reference: Some(match call {
                    Call::Capture(_) => intent.capture_reference(),
                    Call::Release(_) | Call::Increment(_) => intent.id,
                }),
            },
            Err(unreadable) => unreadable,
        };
        return (outcome, None);
    }
    let error = parse_error(body);
    let provider_code = error.as_ref().map(ApiError::provider_code);
    (
        refused(what, status, headers, error.as_ref()),
        provider_code,
    )
}

/// Routes a non-2xx answer (reference/providers.md §1.5–1.7).
fn refused(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    error: Option<&ApiError>,
) -> Outcome {
    let r = Refusal::new(what, headers, describe(status, error));
    // Stripe replays the first answer under a key, 500s included, and marks the replay
    // (`Idempotent-Replayed: true`, docs.stripe.com/error-low-level): the key will only ever
    // give this answer again, so read the PaymentIntent back before any new key.
    if status.is_server_error()
        && http::header_text(headers, "idempotent-replayed").as_deref() == Some("true")
    {
        return r.unknown(
            "Stripe replayed a server error saved under the idempotency key (Idempotent-Replayed: true); read the PaymentIntent back before any new key",
        );
    }
    // Stripe's own clients obey this header before looking at the status.
    match should_retry(headers) {
        Some(true) => return r.retry("Stripe asked for a retry (Stripe-Should-Retry: true)"),
        Some(false) if status.is_server_error() => {
            return r.unknown(
                "Stripe saved this server error under the idempotency key and will only replay it (Stripe-Should-Retry: false); read the PaymentIntent back before any new key",
            );
        }
        Some(false) | None => {}
    }
    match status.as_u16() {
        // Lock timeouts and a concurrent request with the same key: nothing saved yet.
        409 => r.retry("conflicting request in progress"),
        // The rate limiter runs before the idempotency layer, so nothing was applied.
        429 => r.retry("rate limited"),
        500..=599 => r.retry("Stripe server error"),
        401 => r.failed("Stripe refused the API key (authentication)"),
        403 => r.failed("the API key may not do this (permission)"),
        404 => r.failed("no such PaymentIntent for this account"),
        code @ 400..=499 => match error.map(|e| (e, e.error_type())) {
            Some((error, ErrorType::Card)) if code == 402 => Outcome::Declined {
                code: error.decline_code(),
                message: error.message(),
            },
            Some((_, ErrorType::Idempotency)) => r.failed(
                "the idempotency key was reused with different parameters, a bug that needs attention",
            ),
            Some((
                _,
                ErrorType::Card
                | ErrorType::Api
                | ErrorType::InvalidRequest
                | ErrorType::Unrecognized,
            ))
            | None => r.failed("Stripe refused the request"),
        },
        _ => r.failed("unexpected HTTP status"),
    }
}

/// `HTTP 402 card_error/card_declined: Your card has insufficient funds.`
fn describe(status: StatusCode, error: Option<&ApiError>) -> String {
    let message = error.map(ApiError::message);
    let code = error.map(ApiError::code_or_type).unwrap_or("error");
    http::error_detail(status, message.as_deref().map(|m| (code, m)), "a Stripe")
}

fn parse_error(body: &[u8]) -> Option<ApiError> {
    serde_json::from_slice::<ErrorEnvelope>(body)
        .ok()
        .map(|envelope| envelope.error)
}

//! The Stripe adapter: PaymentIntent capture, cancel and retrieve over HTTP.
//!
//! Owns the HTTP shape of Stripe's API (URLs, bearer auth, the `Idempotency-Key` header) and
//! the routing of every answer to one [`Outcome`] (reference/providers.md §1.4–1.7). The wire
//! structs live in `wire.rs` and never leave this folder. The same adapter serves the name
//! `stripe` against api.stripe.com and `sandbox` against the built-in sandbox server. Imports
//! `domain` and the provider boundary only, never another adapter. The API key is held as a
//! sensitive header value and never reaches a log field, an error or a `Debug` string.

mod wire;

use std::error::Error as _;
use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, RequestBuilder, StatusCode, Url};
use tracing::field::Empty;

use crate::config::Secret;
use crate::domain::{AuthorizationId, Capabilities, ProviderName};
use crate::provider::{
    AuthorizationSnapshot, CallResult, CaptureRequest, LookupError, Outcome, PaymentProvider,
    ReleaseRequest,
};

use self::wire::{ApiError, CaptureForm, ErrorEnvelope, ErrorType, PaymentIntent};

/// Longest wait a `Retry-After` may ask for; Stripe's own clients cap it at 60 s too.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// Upper bound of the connect timeout. Connecting is quick when Stripe is reachable, and a
/// connect failure is safe to retry (nothing was sent), so it should surface well before the
/// request timeout does.
const CONNECT_TIMEOUT_CAP: Duration = Duration::from_secs(5);

/// Why a Stripe adapter could not be built. Never contains the API key.
#[derive(Debug, thiserror::Error)]
pub enum StripeSetupError {
    #[error(
        "provider {name}: base URL {base_url:?} is not usable: {problem}; expected an absolute http(s) URL such as https://api.stripe.com"
    )]
    BaseUrl {
        name: ProviderName,
        base_url: String,
        problem: String,
    },
    #[error(
        "provider {name}: the API key cannot be sent as a bearer token (it is empty or contains whitespace or control characters); check the configured key"
    )]
    ApiKey { name: ProviderName },
    #[error("provider {name}: the request timeout must be longer than zero")]
    ZeroTimeout { name: ProviderName },
    #[error("provider {name}: building the HTTP client failed: {source}")]
    Client {
        name: ProviderName,
        source: reqwest::Error,
    },
}

/// A Stripe (or Stripe-dialect sandbox) account reached over HTTPS.
pub struct StripeProvider {
    name: ProviderName,
    base_url: Url,
    /// `Bearer <key>`, marked sensitive so `Debug` of the header prints nothing of it.
    authorization: Option<HeaderValue>,
    timeout: Duration,
    client: Client,
}

impl fmt::Debug for StripeProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeProvider")
            .field("name", &self.name)
            .field("base_url", &self.base_url.as_str())
            .field(
                "api_key",
                &self.authorization.as_ref().map(|_| "[redacted]"),
            )
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl StripeProvider {
    /// Builds the adapter and its one HTTP client.
    ///
    /// `timeout` bounds a whole call, from connecting until the response body is read; the
    /// connect timeout is half of it, at most 5 s. Without `api_key` no `Authorization` header
    /// is sent (the sandbox needs none). Redirects are not followed: Stripe does not redirect
    /// API calls, and replaying a capture to another host is never wanted.
    pub fn new(
        name: ProviderName,
        base_url: String,
        api_key: Option<Secret>,
        timeout: Duration,
    ) -> Result<Self, StripeSetupError> {
        let base_url = parse_base_url(&name, base_url)?;
        if timeout.is_zero() {
            return Err(StripeSetupError::ZeroTimeout { name });
        }
        let authorization = match api_key {
            None => None,
            Some(key) => {
                Some(bearer(&key).ok_or_else(|| StripeSetupError::ApiKey { name: name.clone() })?)
            }
        };
        let client = Client::builder()
            .timeout(timeout)
            .connect_timeout((timeout / 2).min(CONNECT_TIMEOUT_CAP))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("capture-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| StripeSetupError::Client {
                name: name.clone(),
                source,
            })?;
        Ok(StripeProvider {
            name,
            base_url,
            authorization,
            timeout,
            client,
        })
    }

    /// `{base}/v1/payment_intents/{id}[/{action}]`, with the id percent-encoded as one path
    /// segment (ids may contain `/` or `#`).
    fn intent_url(&self, id: &AuthorizationId, action: Option<&str>) -> Result<Url, String> {
        // `Url` silently drops "." and ".." segments, which would turn the call into one on
        // another resource; no Stripe id looks like that, so refuse rather than guess.
        if matches!(id.as_str(), "." | "..") {
            return Err(format!(
                "authorization id {id:?} cannot be used as a URL path segment"
            ));
        }
        let mut url = self.base_url.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| format!("base URL {} cannot take a path", self.base_url))?;
            segments
                .pop_if_empty()
                .extend(["v1", "payment_intents", id.as_str()]);
            if let Some(action) = action {
                segments.push(action);
            }
        }
        Ok(url)
    }

    fn authorized(&self, builder: RequestBuilder) -> RequestBuilder {
        match &self.authorization {
            Some(value) => builder.header(reqwest::header::AUTHORIZATION, value.clone()),
            None => builder,
        }
    }

    /// Sends one request and reads the whole answer, timing it.
    async fn exchange(&self, builder: RequestBuilder) -> Exchange {
        let started = Instant::now();
        let response = match builder.send().await {
            Ok(response) => response,
            Err(error) => {
                return Exchange {
                    latency: started.elapsed(),
                    result: Err(error),
                };
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map(|b| b.to_vec());
        Exchange {
            latency: started.elapsed(),
            result: Ok(Answer {
                status,
                hints: Hints::from_headers(&headers),
                request_id: header_text(&headers, "request-id"),
                body,
            }),
        }
    }

    #[tracing::instrument(
        name = "stripe.capture",
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
        let call = Call::Capture(&request.authorization_id);
        let url = match self.intent_url(&request.authorization_id, Some("capture")) {
            Ok(url) => url,
            Err(problem) => return unsendable(call, problem),
        };
        let builder = self
            .client
            .post(url)
            .header("Idempotency-Key", request.idempotency_key.as_str())
            .form(&CaptureForm::from_request(request));
        let exchange = self.exchange(self.authorized(builder)).await;
        let result = exchange.into_call_result(call, self.timeout);
        record(&result);
        result
    }

    #[tracing::instrument(
        name = "stripe.release",
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
    async fn send_release(&self, request: &ReleaseRequest) -> CallResult {
        let call = Call::Release(&request.authorization_id);
        let url = match self.intent_url(&request.authorization_id, Some("cancel")) {
            Ok(url) => url,
            Err(problem) => return unsendable(call, problem),
        };
        // No cancellation_reason: none of Stripe's values describes "order complete, release
        // the rest", and the field is optional.
        let no_params: [(&str, &str); 0] = [];
        let builder = self
            .client
            .post(url)
            .header("Idempotency-Key", request.idempotency_key.as_str())
            .form(&no_params);
        let exchange = self.exchange(self.authorized(builder)).await;
        let result = exchange.into_call_result(call, self.timeout);
        record(&result);
        result
    }

    #[tracing::instrument(
        name = "stripe.lookup",
        skip_all,
        fields(
            otel.kind = "client",
            provider = %self.name,
            authorization_id = %authorization_id,
            http_status = Empty,
            provider_request_id = Empty,
        ),
        err(Display, level = "warn")
    )]
    async fn read_intent(
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
        let url = self.intent_url(authorization_id, None).map_err(permanent)?;
        let exchange = self.exchange(self.authorized(self.client.get(url))).await;
        let answer = match exchange.result {
            Ok(answer) => answer,
            // A read changes nothing, so every transport failure may be retried.
            Err(error) => {
                return Err(retryable(format!(
                    "reading the PaymentIntent failed in transport: {}",
                    error_chain(&error)
                )));
            }
        };
        let span = tracing::Span::current();
        span.record("http_status", answer.status.as_u16());
        if let Some(id) = &answer.request_id {
            span.record("provider_request_id", id.as_str());
        }
        let body = answer.body.map_err(|error| {
            retryable(format!(
                "reading the body of the HTTP {} answer failed: {}",
                answer.status.as_u16(),
                error_chain(&error)
            ))
        })?;
        if answer.status.is_success() {
            let intent: PaymentIntent = serde_json::from_slice(&body).map_err(|error| {
                permanent(format!(
                    "HTTP {} body is not a PaymentIntent: {error}",
                    answer.status.as_u16()
                ))
            })?;
            return intent.into_snapshot(authorization_id).map_err(permanent);
        }
        let error = parse_error(&body);
        let detail = describe(answer.status, error.as_ref());
        let status = answer.status.as_u16();
        if answer.hints.should_retry == Some(true)
            || status == 409
            || status == 429
            || answer.status.is_server_error()
        {
            Err(retryable(detail))
        } else {
            Err(permanent(detail))
        }
    }
}

#[async_trait]
impl PaymentProvider for StripeProvider {
    fn name(&self) -> &str {
        self.name.as_str()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::stripe()
    }

    async fn capture(&self, request: &CaptureRequest) -> CallResult {
        self.send_capture(request).await
    }

    async fn release(&self, request: &ReleaseRequest) -> CallResult {
        self.send_release(request).await
    }

    async fn lookup(
        &self,
        authorization_id: &AuthorizationId,
    ) -> Result<AuthorizationSnapshot, LookupError> {
        self.read_intent(authorization_id).await
    }
}

fn parse_base_url(name: &ProviderName, base_url: String) -> Result<Url, StripeSetupError> {
    let bad = |base_url: String, problem: String| StripeSetupError::BaseUrl {
        name: name.clone(),
        base_url,
        problem,
    };
    let url = match Url::parse(&base_url) {
        Ok(url) => url,
        Err(error) => return Err(bad(base_url, error.to_string())),
    };
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(bad(base_url, "the scheme must be http or https".to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Do not echo it: the user-info part may hold a credential.
        let shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
        return Err(bad(
            shown,
            "it carries user credentials; the API key goes in api_key instead".to_owned(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            base_url,
            "it has a query or fragment; give the API root only".to_owned(),
        ));
    }
    Ok(url)
}

/// `Bearer <key>` as a sensitive header value, or `None` when the key cannot be a token.
fn bearer(key: &Secret) -> Option<HeaderValue> {
    let key = key.expose();
    if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let mut value = HeaderValue::try_from(format!("Bearer {key}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Which call an answer belongs to, for wording reasons.
#[derive(Clone, Copy)]
enum Call<'a> {
    Capture(&'a AuthorizationId),
    Release(&'a AuthorizationId),
}

impl fmt::Display for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Capture(id) => write!(f, "capture of PaymentIntent {id}"),
            Call::Release(id) => write!(f, "cancel of PaymentIntent {id}"),
        }
    }
}

/// What Stripe's headers say about retrying.
#[derive(Debug, Clone, Copy, Default)]
struct Hints {
    /// `Stripe-Should-Retry`, when present and `true` or `false`.
    should_retry: Option<bool>,
    /// `Retry-After` in whole seconds, capped at [`RETRY_AFTER_CAP`]. The HTTP-date form is
    /// ignored: Stripe sends seconds.
    retry_after: Option<Duration>,
}

impl Hints {
    fn from_headers(headers: &HeaderMap) -> Self {
        let should_retry = header_text(headers, "stripe-should-retry").and_then(|v| {
            match v.trim().to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            }
        });
        let retry_after = header_text(headers, "retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs).min(RETRY_AFTER_CAP));
        Hints {
            should_retry,
            retry_after,
        }
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A response whose status and headers arrived; the body may still have failed to arrive.
struct Answer {
    status: StatusCode,
    hints: Hints,
    request_id: Option<String>,
    body: Result<Vec<u8>, reqwest::Error>,
}

struct Exchange {
    latency: Duration,
    result: Result<Answer, reqwest::Error>,
}

impl Exchange {
    fn into_call_result(self, call: Call<'_>, timeout: Duration) -> CallResult {
        let answer = match self.result {
            Ok(answer) => answer,
            Err(error) => {
                return CallResult {
                    outcome: transport_outcome(call, &error, timeout),
                    http_status: None,
                    provider_code: None,
                    provider_request_id: None,
                    latency: self.latency,
                };
            }
        };
        let status = answer.status.as_u16();
        let (outcome, provider_code) = match answer.body {
            Ok(body) => answered(call, answer.status, answer.hints, &body),
            Err(error) if answer.status.is_success() => (
                Outcome::Unknown {
                    reason: format!(
                        "{call}: HTTP {status} arrived but its body did not ({}); the call may have succeeded",
                        error_chain(&error)
                    ),
                    key_spent: false,
                },
                None,
            ),
            // An error status without its body: route on the status and headers alone.
            Err(_) => answered(call, answer.status, answer.hints, &[]),
        };
        CallResult {
            outcome,
            http_status: Some(status),
            provider_code,
            provider_request_id: answer.request_id,
            latency: self.latency,
        }
    }
}

/// The outcome of a call that got no HTTP answer.
fn transport_outcome(call: Call<'_>, error: &reqwest::Error, timeout: Duration) -> Outcome {
    let detail = error_chain(error);
    if error.is_builder() {
        // Never sent, and sending it again would fail the same way.
        Outcome::Failed {
            reason: format!("{call}: the request could not be built: {detail}"),
        }
    } else if error.is_connect() {
        // Checked before the timeout: a connect timeout is also a timeout, but nothing left.
        Outcome::Retryable {
            after: None,
            reason: format!("{call}: connecting failed, nothing was sent: {detail}"),
        }
    } else if error.is_timeout() {
        Outcome::Unknown {
            reason: format!(
                "{call}: no answer within {timeout:?} after the request was sent; it may have been applied: {detail}"
            ),
            key_spent: false,
        }
    } else {
        Outcome::Unknown {
            reason: format!(
                "{call}: the connection failed after the request was sent; it may have been applied: {detail}"
            ),
            key_spent: false,
        }
    }
}

/// The outcome of an HTTP answer with its body, and the provider code to record.
fn answered(
    call: Call<'_>,
    status: StatusCode,
    hints: Hints,
    body: &[u8],
) -> (Outcome, Option<String>) {
    if status.is_success() {
        // A 2xx carries the PaymentIntent after the change. It wins over a `Stripe-Should-Retry`
        // header: retrying the same key would only replay this same success.
        let outcome = match serde_json::from_slice::<PaymentIntent>(body) {
            Ok(intent) => Outcome::Succeeded {
                reference: Some(match call {
                    Call::Capture(_) => intent.capture_reference(),
                    Call::Release(_) => intent.id,
                }),
            },
            Err(error) => Outcome::Unknown {
                reason: format!(
                    "{call}: HTTP {} body is not a PaymentIntent ({error}); the call may have succeeded",
                    status.as_u16()
                ),
                key_spent: false,
            },
        };
        return (outcome, None);
    }
    let error = parse_error(body);
    let provider_code = error.as_ref().map(ApiError::provider_code);
    (refused(call, status, hints, error.as_ref()), provider_code)
}

/// Routes a non-2xx answer (reference/providers.md §1.5–1.7).
fn refused(call: Call<'_>, status: StatusCode, hints: Hints, error: Option<&ApiError>) -> Outcome {
    let detail = describe(status, error);
    let retry = |why: &str| Outcome::Retryable {
        after: hints.retry_after,
        reason: format!("{call}: {why}: {detail}"),
    };
    let failed = |why: &str| Outcome::Failed {
        reason: format!("{call}: {why}: {detail}"),
    };
    // Stripe's own clients obey this header before looking at the status.
    match hints.should_retry {
        Some(true) => return retry("Stripe asked for a retry (Stripe-Should-Retry: true)"),
        Some(false) if status.is_server_error() => {
            return Outcome::Unknown {
                reason: format!(
                    "{call}: Stripe saved this server error under the idempotency key and will only replay it (Stripe-Should-Retry: false); read the PaymentIntent back before any new key: {detail}"
                ),
                key_spent: true,
            };
        }
        Some(false) | None => {}
    }
    match status.as_u16() {
        // Lock timeouts and a concurrent request with the same key: nothing saved yet.
        409 => retry("conflicting request in progress"),
        // The rate limiter runs before the idempotency layer, so nothing was applied.
        429 => retry("rate limited"),
        500..=599 => retry("Stripe server error"),
        401 => failed("Stripe refused the API key (authentication)"),
        403 => failed("the API key may not do this (permission)"),
        404 => failed("no such PaymentIntent for this account"),
        code @ 400..=499 => match error.map(|e| (e, e.error_type())) {
            Some((error, ErrorType::Card)) if code == 402 => Outcome::Declined {
                code: error.decline_code(),
                message: error.message(),
            },
            Some((_, ErrorType::Idempotency)) => failed(
                "the idempotency key was reused with different parameters, a bug that needs attention",
            ),
            Some((
                _,
                ErrorType::Card
                | ErrorType::Api
                | ErrorType::InvalidRequest
                | ErrorType::Unrecognized,
            ))
            | None => failed("Stripe refused the request"),
        },
        _ => failed("unexpected HTTP status"),
    }
}

/// `HTTP 402 card_error/card_declined: Your card has insufficient funds.`
fn describe(status: StatusCode, error: Option<&ApiError>) -> String {
    match error {
        Some(error) => {
            let message = error.message();
            let code = error.code_or_type();
            if message.is_empty() {
                format!("HTTP {} {code}", status.as_u16())
            } else {
                format!("HTTP {} {code}: {message}", status.as_u16())
            }
        }
        None => format!("HTTP {} without a Stripe error body", status.as_u16()),
    }
}

fn parse_error(body: &[u8]) -> Option<ApiError> {
    serde_json::from_slice::<ErrorEnvelope>(body)
        .ok()
        .map(|envelope| envelope.error)
}

/// A call that could not be addressed; nothing was sent.
fn unsendable(call: Call<'_>, problem: String) -> CallResult {
    let result = CallResult {
        outcome: Outcome::Failed {
            reason: format!("{call}: {problem}"),
        },
        http_status: None,
        provider_code: None,
        provider_request_id: None,
        latency: Duration::ZERO,
    };
    record(&result);
    result
}

/// Records what was learned on the current call span.
fn record(result: &CallResult) {
    let span = tracing::Span::current();
    span.record("outcome", result.outcome.label());
    if let Some(status) = result.http_status {
        span.record("http_status", status);
    }
    if let Some(id) = &result.provider_request_id {
        span.record("provider_request_id", id.as_str());
    }
    if let Some(code) = &result.provider_code {
        span.record("provider_code", code.as_str());
    }
}

/// An error and its sources, `: `-separated; reqwest's own message is often just "error
/// sending request".
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

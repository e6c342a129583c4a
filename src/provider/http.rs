//! HTTP plumbing the adapters share: the [`Api`] an adapter calls (base URL, client, the
//! headers every call carries, the provider's request id header), sending one call and timing
//! it, the outcome of a call that got no answer, the wording of an error answer's outcome,
//! the read-back path from an exchange to the adapter's decoded body, and the adapter's span.
//!
//! Owns nothing provider-specific: every status and body is routed by the adapter that
//! understands it (paths, headers, body shapes, what each answer means). Imports `domain`,
//! `secret::Secret` and the provider boundary only. A credential handed to [`sensitive`] is
//! marked so that `Debug` of the header prints nothing of it, and no error built here ever
//! contains one.

use std::error::Error as _;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method, RequestBuilder, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

use crate::domain::{AuthorizationId, IdempotencyKey, ProviderName};
use crate::provider::{
    AuthorizationSnapshot, CallResult, CaptureRequest, LookupError, Outcome, ReleaseRequest,
};
use crate::secret::Secret;

/// Longest wait a `Retry-After` may ask for.
pub(crate) const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// Upper bound of the connect timeout: connecting is quick when the provider is reachable,
/// and a connect failure is safe to retry (nothing was sent).
const CONNECT_TIMEOUT_CAP: Duration = Duration::from_secs(5);

/// Longest provider message copied into an outcome or a reason.
pub(crate) const MESSAGE_LIMIT: usize = 500;

/// Why an adapter could not be built. Never contains a credential.
#[derive(Debug, thiserror::Error)]
pub enum ProviderSetupError {
    #[error(
        "provider {name}: base URL {base_url:?} is not usable: {problem}; expected an absolute http(s) URL such as {example}"
    )]
    BaseUrl {
        name: ProviderName,
        base_url: String,
        problem: String,
        example: &'static str,
    },
    #[error(
        "provider {name}: the {what} cannot be sent in a header (it is empty or contains whitespace or control characters); check the configured value"
    )]
    Credential {
        name: ProviderName,
        what: &'static str,
    },
    #[error("provider {name}: {setting} is required: {hint}")]
    MissingSetting {
        name: ProviderName,
        setting: &'static str,
        hint: &'static str,
    },
    #[error("provider {name}: {setting} is not usable: {problem}")]
    BadSetting {
        name: ProviderName,
        setting: &'static str,
        problem: String,
    },
    #[error("provider {name}: the request timeout must be longer than zero")]
    ZeroTimeout { name: ProviderName },
    #[error("provider {name}: building the HTTP client failed: {source}")]
    Client {
        name: ProviderName,
        source: reqwest::Error,
    },
}

/// Parses and checks a base URL: http(s), no user info (a credential would leak into logs),
/// no query or fragment. A path is kept (`https://checkout-test.adyen.com/v71`).
pub(crate) fn parse_base_url(
    name: &ProviderName,
    base_url: String,
    example: &'static str,
) -> Result<Url, ProviderSetupError> {
    let bad = |base_url: String, problem: String| ProviderSetupError::BaseUrl {
        name: name.clone(),
        base_url,
        problem,
        example,
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
            "it carries user credentials; secrets go in api_key instead".to_owned(),
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

/// The one HTTP client of an adapter. `timeout` bounds a whole call, from connecting until
/// the body is read; the connect timeout is half of it, at most 5 s. Redirects are not
/// followed: replaying a capture to another host is never wanted.
pub(crate) fn client(name: &ProviderName, timeout: Duration) -> Result<Client, ProviderSetupError> {
    if timeout.is_zero() {
        return Err(ProviderSetupError::ZeroTimeout { name: name.clone() });
    }
    Client::builder()
        .timeout(timeout)
        .connect_timeout((timeout / 2).min(CONNECT_TIMEOUT_CAP))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("capture-worker/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| ProviderSetupError::Client {
            name: name.clone(),
            source,
        })
}

/// `value` as a sensitive header value, or `None` when it is empty or holds whitespace or
/// control characters in `token` (the credential part, checked before any prefix is added).
pub(crate) fn sensitive(token: &str, value: String) -> Option<HeaderValue> {
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let mut header = HeaderValue::try_from(value).ok()?;
    header.set_sensitive(true);
    Some(header)
}

/// `base` with `segments` appended, each percent-encoded as one path segment (ids may hold
/// `/` or `#`). Refuses `.` and `..`, which `Url` would drop or resolve, turning the call into
/// one on another resource.
pub(crate) fn url_with(base: &Url, segments: &[&str]) -> Result<Url, String> {
    if let Some(bad) = segments.iter().find(|s| matches!(**s, "." | ".." | "")) {
        return Err(format!("{bad:?} cannot be used as a URL path segment"));
    }
    let mut url = base.clone();
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|()| format!("base URL {base} cannot take a path"))?;
        path.pop_if_empty().extend(segments);
    }
    Ok(url)
}

/// What is fixed about a provider's API, whatever the account: its kind (naming spans), an
/// example base URL (shown when the configured one is not usable), how the API key is sent,
/// the header it answers with its request id, and whether it honours an idempotency key.
pub(crate) struct Shape {
    pub(crate) kind: &'static str,
    pub(crate) example_url: &'static str,
    pub(crate) credential: Credential,
    pub(crate) request_id: &'static str,
    pub(crate) replay: Replay,
}

/// How the credential is sent; the `&'static str` names it in setup errors.
pub(crate) enum Credential {
    /// `Authorization: Bearer <key>`.
    Bearer(&'static str),
    /// The key as it is, in this header (`x-api-key`).
    Header(&'static str, &'static str),
}

/// One provider account's API as every call of its adapter reaches it: the [`Shape`], the
/// configured name and base URL, the one client, and the headers every call carries
/// (credential, account).
pub(crate) struct Api {
    name: ProviderName,
    shape: &'static Shape,
    base_url: Url,
    client: Client,
    timeout: Duration,
    /// Sent with every call; credentials are marked sensitive and shown as `[redacted]`.
    headers: Headers,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("kind", &self.shape.kind)
            .field("name", &self.name)
            .field("base_url", &self.base_url.as_str())
            .field("headers", &self.headers)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Headers whose `Debug` shows no sensitive value.
struct Headers(HeaderMap);

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(name, value)| {
                let shown = if value.is_sensitive() {
                    "[redacted]"
                } else {
                    value.to_str().unwrap_or("[not text]")
                };
                (name.as_str(), shown)
            }))
            .finish()
    }
}

impl Api {
    /// Checks `base_url` (see [`parse_base_url`]), builds the client (see [`client`]), and
    /// sends `api_key` with every call as the shape says (nothing without a key).
    pub(crate) fn new(
        name: &ProviderName,
        shape: &'static Shape,
        base_url: String,
        api_key: Option<&Secret>,
        timeout: Duration,
    ) -> Result<Self, ProviderSetupError> {
        let base_url = parse_base_url(name, base_url, shape.example_url)?;
        let client = client(name, timeout)?;
        let mut headers = HeaderMap::new();
        if let Some(key) = api_key.map(Secret::expose) {
            let (header, value, what) = match shape.credential {
                Credential::Bearer(what) => (AUTHORIZATION, format!("Bearer {key}"), what),
                Credential::Header(header, what) => {
                    (HeaderName::from_static(header), key.to_owned(), what)
                }
            };
            let value = sensitive(key, value).ok_or_else(|| ProviderSetupError::Credential {
                name: name.clone(),
                what,
            })?;
            headers.insert(header, value);
        }
        Ok(Api {
            name: name.clone(),
            shape,
            base_url,
            client,
            timeout,
            headers: Headers(headers),
        })
    }

    /// Sends `value` in `header` (lower case) with every call; not a credential.
    pub(crate) fn with_header(mut self, header: &'static str, value: HeaderValue) -> Self {
        self.headers
            .0
            .insert(HeaderName::from_static(header), value);
        self
    }

    /// The configured provider name.
    pub(crate) fn name(&self) -> &ProviderName {
        &self.name
    }

    /// The base URL with `segments` appended (see [`url_with`]).
    pub(crate) fn url(&self, segments: &[&str]) -> Result<Url, String> {
        url_with(&self.base_url, segments)
    }

    /// A request to `url` carrying the headers of every call.
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.client
            .request(method, url)
            .headers(self.headers.0.clone())
    }

    /// Sends one call and routes its answer (see [`finish`]).
    pub(crate) async fn send(
        &self,
        what: &str,
        request: RequestBuilder,
        route: impl FnOnce(StatusCode, &HeaderMap, &[u8]) -> (Outcome, Option<String>),
    ) -> CallResult {
        let exchange = exchange(request).await;
        let shape = self.shape;
        finish(
            exchange,
            what,
            self.timeout,
            shape.replay,
            shape.request_id,
            route,
        )
    }

    /// POSTs to `segments` with what `build` adds (headers, body) and routes the answer; a
    /// call whose URL cannot be built is not sent.
    pub(crate) async fn post(
        &self,
        what: &str,
        segments: &[&str],
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
        route: impl FnOnce(StatusCode, &HeaderMap, &[u8]) -> (Outcome, Option<String>),
    ) -> CallResult {
        match self.url(segments) {
            Ok(url) => {
                self.send(what, build(self.request(Method::POST, url)), route)
                    .await
            }
            Err(problem) => unsendable(what, problem),
        }
    }

    /// GETs `segments` and decodes the 2xx body as `noun` (see [`read_back`]).
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        authorization_id: &AuthorizationId,
        segments: &[&str],
        noun: &str,
        refused: impl FnOnce(StatusCode, &HeaderMap, &[u8]) -> RefusedRead,
    ) -> Result<T, LookupError> {
        let url = self
            .url(segments)
            .map_err(LookupError::permanent_for(authorization_id))?;
        let exchange = exchange(self.request(Method::GET, url)).await;
        self.read_back(exchange, authorization_id, noun, refused)
    }

    /// Turns a read-back's exchange into the adapter's decoded body, `noun` naming it
    /// ("transaction"). A read changes nothing, so a transport failure or a lost body may be
    /// retried; an error answer is retryable on 429, 5xx or when `refused` says so, else
    /// permanent; a 2xx body that is not `noun` is permanent. The provider's request id is
    /// recorded on the current span (the adapter's lookup span).
    pub(crate) fn read_back<T: DeserializeOwned>(
        &self,
        exchange: Exchange,
        authorization_id: &AuthorizationId,
        noun: &str,
        refused: impl FnOnce(StatusCode, &HeaderMap, &[u8]) -> RefusedRead,
    ) -> Result<T, LookupError> {
        let retryable = LookupError::retryable_for(authorization_id);
        let permanent = LookupError::permanent_for(authorization_id);
        let answer = exchange.result.map_err(|error| {
            retryable(format!(
                "reading the {noun} failed in transport: {}",
                error_chain(&error)
            ))
        })?;
        let status = answer.status;
        let span = tracing::Span::current();
        if let Some(id) = header_text(&answer.headers, self.shape.request_id) {
            span.record("provider_request_id", id.as_str());
        }
        let body = answer.body.map_err(|error| {
            retryable(format!(
                "reading the body of the HTTP {} answer failed: {}",
                status.as_u16(),
                error_chain(&error)
            ))
        })?;
        if !status.is_success() {
            let RefusedRead {
                detail,
                retryable: also_retryable,
            } = refused(status, &answer.headers, &body);
            let busy = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            return Err(if busy || also_retryable {
                retryable(detail)
            } else {
                permanent(detail)
            });
        }
        serde_json::from_slice(&body).map_err(|error| {
            permanent(format!(
                "HTTP {} body is not {}: {error}",
                status.as_u16(),
                with_article(noun)
            ))
        })
    }

    /// The adapter's span around a capture (see [`Api::span`]).
    pub(crate) fn capture_span(&self, request: &CaptureRequest) -> tracing::Span {
        let key = Some(&request.idempotency_key);
        self.span("capture", &request.authorization_id, key)
    }

    /// The adapter's span around a release (see [`Api::span`]).
    pub(crate) fn release_span(&self, request: &ReleaseRequest) -> tracing::Span {
        let key = Some(&request.idempotency_key);
        self.span("release", &request.authorization_id, key)
    }

    /// The adapter's span around an extension or increment (see [`Api::span`]).
    pub(crate) fn lifecycle_span(
        &self,
        request: &crate::provider::LifecycleRequest,
    ) -> tracing::Span {
        let key = Some(&request.idempotency_key);
        self.span(request.call.label(), &request.authorization_id, key)
    }

    /// Runs a read-back in the adapter's span (see [`Api::span`]), logging a failure as a
    /// warning.
    pub(crate) async fn traced_lookup(
        &self,
        authorization_id: &AuthorizationId,
        read: impl Future<Output = Result<AuthorizationSnapshot, LookupError>>,
    ) -> Result<AuthorizationSnapshot, LookupError> {
        let span = self.span("lookup", authorization_id, None);
        let result = read.instrument(span.clone()).await;
        if let Err(error) = &result {
            // The provider's words may echo what the worker sent.
            let error = crate::sanitize::text(&error.to_string(), crate::sanitize::FIELD_CHARS);
            span.in_scope(|| tracing::warn!(error = %error));
        }
        result
    }

    /// The adapter's span around one operation, named `<kind>.<operation>` (`gr4vy.capture`).
    /// Kind internal: each HTTP request inside it (a token request, then the capture) is a
    /// client span of its own (see [`exchange`]), and the executor's `provider call` span
    /// around it records the answer (outcome, provider code and request id) from the
    /// [`CallResult`]. This span adds what identifies the request at the provider: the
    /// authorization, and the idempotency key when the provider takes one. A read-back
    /// records its request id here, since a lookup's result carries none.
    fn span(
        &self,
        operation: &str,
        authorization_id: &AuthorizationId,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> tracing::Span {
        let idempotency_key = match self.shape.replay {
            Replay::Idempotent => idempotency_key.map(IdempotencyKey::as_str),
            Replay::Unprotected => None,
        };
        tracing::info_span!(
            "provider request",
            otel.name = %format_args!("{}.{operation}", self.shape.kind),
            otel.kind = "internal",
            provider = %self.name,
            authorization_id = %authorization_id,
            idempotency_key,
            provider_request_id = tracing::field::Empty,
        )
    }
}

/// A response whose status and headers arrived; the body may still have failed to arrive.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Result<Vec<u8>, reqwest::Error>,
}

/// One call as it happened on the wire.
pub(crate) struct Exchange {
    pub(crate) latency: Duration,
    pub(crate) result: Result<Answer, reqwest::Error>,
}

/// Sends one request and reads the whole answer, timing it, in the request's client span
/// (see [`client_span`]).
pub(crate) async fn exchange(builder: RequestBuilder) -> Exchange {
    let started = Instant::now();
    let (client, request) = builder.build_split();
    let request = match request {
        Ok(request) => request,
        Err(error) => {
            return Exchange {
                latency: started.elapsed(),
                result: Err(error),
            };
        }
    };
    let span = client_span(request.method(), request.url());
    let result = async {
        let response = client.execute(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map(|b| b.to_vec());
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
    .instrument(span.clone())
    .await;
    record_answer(&span, &result);
    Exchange {
        latency: started.elapsed(),
        result,
    }
}

/// The span of one HTTP request, kind client, named by its method, with the attributes of
/// the OpenTelemetry HTTP client span conventions (semantic conventions 1.45, "HTTP client
/// span"). `url.full` has every query value replaced by `REDACTED`; base URLs carry no user
/// info (see [`parse_base_url`]) and paths only ids of the payment, never a credential.
fn client_span(method: &Method, url: &Url) -> tracing::Span {
    tracing::info_span!(
        "HTTP request",
        otel.name = method.as_str(),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = method.as_str(),
        server.address = url.host_str().unwrap_or_default(),
        server.port = url.port_or_known_default().map(i64::from),
        url.full = redacted_url(url).as_str(),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// `url` with user info removed and every query value replaced by `REDACTED`, as the
/// conventions ask of `url.full`.
fn redacted_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_fragment(None);
    if url.query().is_some() {
        let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        shown
            .query_pairs_mut()
            .clear()
            .extend_pairs(keys.iter().map(|k| (k.as_str(), "REDACTED")));
    }
    shown.to_string()
}

/// Records the answer on the request's client span: the status, and `error.type` (the status
/// code for a 4xx or 5xx, else the class of the transport failure) with status error.
fn record_answer(span: &tracing::Span, result: &Result<Answer, reqwest::Error>) {
    let error_type = match result {
        Ok(answer) => {
            span.record(
                "http.response.status_code",
                i64::from(answer.status.as_u16()),
            );
            if answer.status.is_client_error() || answer.status.is_server_error() {
                Some(answer.status.as_str().to_owned())
            } else {
                answer
                    .body
                    .as_ref()
                    .err()
                    .map(|error| error_class(error).to_owned())
            }
        }
        Err(error) => Some(error_class(error).to_owned()),
    };
    if let Some(error_type) = error_type {
        span.record("error.type", error_type.as_str());
        span.record("otel.status_code", "ERROR");
    }
}

/// A low-cardinality class for a failed request, for `error.type`.
fn error_class(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else if error.is_request() {
        "request"
    } else {
        "_OTHER"
    }
}

/// How safe it is to send the same call again after an answer was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// The provider stores the first answer under the idempotency key: sending again with
    /// the same key cannot apply the call twice.
    Idempotent,
    /// No idempotency key: a second send may apply the call twice, so an unknown outcome is
    /// resolved by reading the provider's state back before anything is sent again.
    Unprotected,
}

impl Replay {
    /// `key_spent` for an outcome that may or may not have been applied.
    pub(crate) fn key_spent(self) -> bool {
        match self {
            Replay::Idempotent => false,
            Replay::Unprotected => true,
        }
    }
}

/// Turns an exchange into a call result: transport failures here, answers by `route`
/// (status, headers, body → outcome and the provider's code). `request_id_header` names the
/// provider's request id header, recorded for support tickets.
pub(crate) fn finish(
    exchange: Exchange,
    what: &str,
    timeout: Duration,
    replay: Replay,
    request_id_header: &str,
    route: impl FnOnce(StatusCode, &HeaderMap, &[u8]) -> (Outcome, Option<String>),
) -> CallResult {
    let answer = match exchange.result {
        Ok(answer) => answer,
        Err(error) => {
            return CallResult {
                outcome: transport_outcome(what, &error, timeout, replay),
                http_status: None,
                provider_code: None,
                provider_request_id: None,
                latency: exchange.latency,
            };
        }
    };
    let status = answer.status.as_u16();
    let request_id = header_text(&answer.headers, request_id_header);
    let (outcome, provider_code) = match answer.body {
        Ok(body) => route(answer.status, &answer.headers, &body),
        Err(error) if answer.status.is_success() => (
            Outcome::Unknown {
                reason: format!(
                    "{what}: HTTP {status} arrived but its body did not ({}); the call may have succeeded",
                    error_chain(&error)
                ),
                key_spent: replay.key_spent(),
            },
            None,
        ),
        // An error status without its body: route on the status and headers alone.
        Err(_) => route(answer.status, &answer.headers, &[]),
    };
    CallResult {
        outcome,
        http_status: Some(status),
        provider_code,
        provider_request_id: request_id,
        latency: exchange.latency,
    }
}

/// The outcome of a call that got no HTTP answer.
pub(crate) fn transport_outcome(
    what: &str,
    error: &reqwest::Error,
    timeout: Duration,
    replay: Replay,
) -> Outcome {
    let detail = error_chain(error);
    if error.is_builder() {
        // Never sent, and sending it again would fail the same way.
        Outcome::Failed {
            reason: format!("{what}: the request could not be built: {detail}"),
        }
    } else if error.is_connect() {
        // Checked before the timeout: a connect timeout is also a timeout, but nothing left.
        Outcome::Retryable {
            after: None,
            reason: format!("{what}: connecting failed, nothing was sent: {detail}"),
        }
    } else if error.is_timeout() {
        Outcome::Unknown {
            reason: format!(
                "{what}: no answer within {timeout:?} after the request was sent; it may have been applied: {detail}"
            ),
            key_spent: replay.key_spent(),
        }
    } else {
        Outcome::Unknown {
            reason: format!(
                "{what}: the connection failed after the request was sent; it may have been applied: {detail}"
            ),
            key_spent: replay.key_spent(),
        }
    }
}

/// A call that could not be addressed; nothing was sent.
pub(crate) fn unsendable(what: &str, problem: String) -> CallResult {
    CallResult {
        outcome: Outcome::Failed {
            reason: format!("{what}: {problem}"),
        },
        http_status: None,
        provider_code: None,
        provider_request_id: None,
        latency: Duration::ZERO,
    }
}

/// The wording of an error answer's outcome: `{what}: {why}: {detail}`, where `detail` is
/// what the provider said ([`error_detail`]). A retry waits for the answer's `Retry-After`.
pub(crate) struct Refusal<'a> {
    what: &'a str,
    detail: String,
    after: Option<Duration>,
}

impl<'a> Refusal<'a> {
    pub(crate) fn new(what: &'a str, headers: &HeaderMap, detail: String) -> Self {
        Refusal {
            what,
            detail,
            after: retry_after(headers),
        }
    }

    /// Not done; the same call may be sent again under the same key.
    pub(crate) fn retry(&self, why: &str) -> Outcome {
        Outcome::Retryable {
            after: self.after,
            reason: self.reason(why),
        }
    }

    /// Definitely not done, and sending it again will not help.
    pub(crate) fn failed(&self, why: &str) -> Outcome {
        Outcome::Failed {
            reason: self.reason(why),
        }
    }

    /// Maybe done, and the key can only replay this answer: read the provider back first.
    pub(crate) fn unknown(&self, why: &str) -> Outcome {
        Outcome::Unknown {
            reason: self.reason(why),
            key_spent: true,
        }
    }

    fn reason(&self, why: &str) -> String {
        format!("{}: {why}: {}", self.what, self.detail)
    }
}

/// What a provider's error body says, for reasons: `HTTP 409 concurrent_request: In progress`
/// (`code_and_message`, the message left out when empty), or `HTTP 502 without {provider}
/// error body` when there is none (`provider`: "a Gr4vy", "an Adyen").
pub(crate) fn error_detail(
    status: StatusCode,
    code_and_message: Option<(&str, &str)>,
    provider: &str,
) -> String {
    let status = status.as_u16();
    match code_and_message {
        Some((code, "")) => format!("HTTP {status} {code}"),
        Some((code, message)) => format!("HTTP {status} {code}: {message}"),
        None => format!("HTTP {status} without {provider} error body"),
    }
}

/// The plain error body Gr4vy, Hellgate and the orchestrator answer with: a `code` and a
/// `message`, whichever are there (other fields ignored). It is the same shape in all three,
/// so it lives here rather than in each adapter's `wire.rs`.
#[derive(Debug, Deserialize)]
pub(crate) struct CodeAndMessage {
    #[serde(default)]
    pub(crate) code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl CodeAndMessage {
    /// The error in `body`, when it names a code or a message.
    pub(crate) fn parse(body: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Self>(body)
            .ok()
            .filter(|e| e.code.is_some() || e.message.is_some())
    }

    /// The message, clipped to [`MESSAGE_LIMIT`]; empty when there is none.
    pub(crate) fn message(&self) -> String {
        clip(self.message.as_deref().unwrap_or(""), MESSAGE_LIMIT)
    }

    /// `HTTP 409 concurrent_request: …` (see [`error_detail`]).
    pub(crate) fn detail(status: StatusCode, error: Option<&Self>, provider: &str) -> String {
        let message = error.map(Self::message);
        let code = error.and_then(|e| e.code.as_deref()).unwrap_or("error");
        error_detail(status, message.as_deref().map(|m| (code, m)), provider)
    }
}

/// The 2xx body as `noun` ("transaction capture"), or the outcome of one that is not: the
/// call may have been applied. `replay` says whether the same key may be sent again.
pub(crate) fn decode<T: DeserializeOwned>(
    what: &str,
    status: StatusCode,
    body: &[u8],
    noun: &str,
    replay: Replay,
) -> Result<T, Outcome> {
    serde_json::from_slice(body).map_err(|error| Outcome::Unknown {
        reason: format!(
            "{what}: HTTP {} body is not {} ({error}); it may have been applied",
            status.as_u16(),
            with_article(noun)
        ),
        key_spent: replay.key_spent(),
    })
}

/// What an adapter makes of a read-back's error answer.
pub(crate) struct RefusedRead {
    /// What the provider said ([`error_detail`]).
    pub(crate) detail: String,
    /// Asking again later may succeed. 429 and 5xx always may; this adds the provider's own
    /// (a request with the same key still in progress, a refused token that is renewed).
    pub(crate) retryable: bool,
}

/// "a transaction", "an authorization".
fn with_article(noun: &str) -> String {
    let vowel = noun
        .chars()
        .next()
        .is_some_and(|c| "aeiouAEIOU".contains(c));
    format!("{} {noun}", if vowel { "an" } else { "a" })
}

/// `Retry-After` in whole seconds, capped at [`RETRY_AFTER_CAP`]; the HTTP-date form is
/// ignored.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    header_text(headers, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs).min(RETRY_AFTER_CAP))
}

pub(crate) fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// An error and its sources, `: `-separated; reqwest's own message is often just "error
/// sending request".
pub(crate) fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// At most `limit` characters of `text` (never splitting a character).
pub(crate) fn clip(text: &str, limit: usize) -> String {
    text.chars().take(limit).collect()
}

/// `order/cause`, the reference every adapter sends so a capture can be matched to the
/// shipment (or cancellation) that caused it, clipped to the provider's limit. A slash, not a
/// colon: Adyen joins notification fields with colons to sign them.
pub(crate) fn capture_reference(order_id: &str, cause: &str, limit: usize) -> String {
    clip(&format!("{order_id}/{cause}"), limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_without_an_answer_has_an_error_class_for_error_type() {
        let client = Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = client
            .get(format!("http://127.0.0.1:{closed_port}/"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(error_class(&refused), "connect");
        // Accepts and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                held.push(socket);
            }
        });
        let timed_out = client
            .get(format!("http://127.0.0.1:{silent_port}/"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(error_class(&timed_out), "timeout");
        hold.abort();
    }

    #[test]
    fn url_full_keeps_the_path_and_hides_query_values_and_user_info() {
        let url = Url::parse(
            "https://user:pw@api.example.com/v1/payments/pi_1?key=sk_live_x&expand=a#frag",
        )
        .unwrap();
        assert_eq!(
            redacted_url(&url),
            "https://api.example.com/v1/payments/pi_1?key=REDACTED&expand=REDACTED"
        );
        let plain = Url::parse("http://127.0.0.1:4010/v1/payment_intents/pi_1/capture").unwrap();
        assert_eq!(redacted_url(&plain), plain.as_str());
    }

    #[test]
    fn url_segments_are_escaped_and_dot_segments_refused() {
        let base = Url::parse("https://api.example.com/v71/").unwrap();
        assert_eq!(
            url_with(&base, &["payments", "a/b#c", "captures"])
                .unwrap()
                .as_str(),
            "https://api.example.com/v71/payments/a%2Fb%23c/captures"
        );
        assert!(url_with(&base, &["payments", ".."]).is_err());
        assert!(url_with(&base, &["payments", ""]).is_err());
    }

    #[test]
    fn sensitive_values_refuse_blank_or_spaced_tokens() {
        assert!(sensitive("", "Bearer ".to_owned()).is_none());
        assert!(sensitive("a b", "Bearer a b".to_owned()).is_none());
        assert!(sensitive("k\n", "k\n".to_owned()).is_none());
        let value = sensitive("key", "Bearer key".to_owned()).unwrap();
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("key"));
    }

    #[test]
    fn references_are_clipped_on_character_boundaries() {
        assert_eq!(capture_reference("ORD-1", "SHP-9", 80), "ORD-1/SHP-9");
        assert_eq!(capture_reference("ÄÖÜ", "x", 2), "ÄÖ");
    }
}

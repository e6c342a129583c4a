//! The PayPal adapter: capture and void of an authorization (Payments v2) and its read-back,
//! with the OAuth 2.0 client-credentials token it needs.
//!
//! Owns the HTTP shape of PayPal's API (reference/providers.md §5.2): the access token
//! (fetched with the client id and secret, kept until shortly before it expires, dropped when
//! PayPal refuses it), the `PayPal-Request-Id` header (kept 45 days), `Prefer:
//! return=representation` so every answer carries the resource, and the routing of every
//! answer to one [`Outcome`]. The wire structs live in `wire.rs` and never leave this folder.
//! Imports `domain` and the provider boundary only. The client secret and the access token
//! are sensitive header values and never reach a log field, an error or a `Debug` string.
//!
//! PayPal rules this adapter encodes: `final_capture` defaults to `false`, so it is always
//! sent and is `true` on the last capture; amounts are decimal strings in major units built
//! from minor units with the currency's exponent; a capture may come back `PENDING`; 422
//! issues are terminal (declines for the payer's side, failures for expired, voided or
//! over-limit authorizations and request errors), except `PREVIOUS_REQUEST_IN_PROGRESS`.

mod webhook;
mod wire;

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};
use tokio::sync::Mutex;
use tracing::Instrument as _;

use crate::domain::{AuthorizationId, Capabilities, MinorUnits, ProviderName};
use crate::provider::http::{
    self, Api, Credential, ProviderSetupError, Refusal, RefusedRead, Replay, Shape,
};
use crate::provider::{
    AuthorizationSnapshot, CallResult, CaptureRequest, HoldChange, LifecycleCall, LifecycleRequest,
    LifecycleResult, LookupError, Outcome, PaymentProvider, ReleaseRequest, WebhookError,
    WebhookEvent,
};
use crate::secret::Secret;

use self::wire::{
    ApiError, Authorization, AuthorizationStatus, Capture, CaptureBody, CaptureStatus,
    CapturedTotal, Order, ReauthorizeBody, Token,
};

/// An OAuth access token per call (see `bearer`), `paypal-debug-id`, and the
/// `PayPal-Request-Id` header (kept 45 days).
static SHAPE: Shape = Shape {
    kind: "paypal",
    example_url: "https://api-m.sandbox.paypal.com",
    credential: Credential::Bearer("access token"),
    request_id: "paypal-debug-id",
    replay: Replay::Idempotent,
};
/// A token is renewed this long before PayPal says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(120);
/// Used when PayPal's token answer gives no lifetime.
const TOKEN_DEFAULT_LIFETIME: Duration = Duration::from_secs(600);

/// A PayPal REST app (client id and secret) reached over HTTPS.
pub struct PayPalProvider {
    /// No headers of its own: each call carries the access token it fetched.
    api: Api,
    /// `Basic base64(client_id:secret)` for the token call, sensitive; `None` sends no
    /// credentials at all (a sandbox dialect that needs none).
    basic: Option<HeaderValue>,
    token: Mutex<Option<CachedToken>>,
}

struct CachedToken {
    bearer: HeaderValue,
    renew_at: Instant,
}

impl fmt::Debug for PayPalProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayPalProvider")
            .field("api", &self.api)
            .field("credentials", &self.basic.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// Why no token could be had; the call is not sent.
enum TokenProblem {
    Outcome(Outcome, Option<u16>),
}

impl PayPalProvider {
    /// Builds the adapter. `client_id` (plain) and `client_secret` (a secret) are the REST
    /// app's credentials; both or neither must be given (neither: no `Authorization` header).
    pub fn new(
        name: ProviderName,
        base_url: String,
        client_id: Option<String>,
        client_secret: Option<Secret>,
        timeout: Duration,
    ) -> Result<Self, ProviderSetupError> {
        // No key with every call: each call carries the access token it fetched.
        let api = Api::new(&name, &SHAPE, base_url, None, timeout)?;
        let basic = match (client_id, client_secret) {
            (None, None) => None,
            (Some(id), Some(secret)) => {
                let credential = format!("{id}:{}", secret.expose());
                let token = if id.is_empty() || secret.expose().is_empty() {
                    ""
                } else {
                    credential.as_str()
                };
                Some(
                    http::sensitive(token, format!("Basic {}", BASE64.encode(&credential)))
                        .ok_or_else(|| ProviderSetupError::Credential {
                            name: name.clone(),
                            what: "client id and secret",
                        })?,
                )
            }
            (None, Some(_)) => {
                return Err(ProviderSetupError::MissingSetting {
                    name,
                    setting: "client_id",
                    hint: "PayPal needs the REST app's client id next to its secret (api_key)",
                });
            }
            (Some(_), None) => {
                return Err(ProviderSetupError::MissingSetting {
                    name,
                    setting: "api_key",
                    hint: "PayPal needs the REST app's secret next to its client id",
                });
            }
        };
        Ok(PayPalProvider {
            api,
            basic,
            token: Mutex::new(None),
        })
    }

    /// The `Authorization` header for an API call: a cached token, or a new one.
    async fn bearer(&self) -> Result<Option<HeaderValue>, TokenProblem> {
        let Some(basic) = &self.basic else {
            return Ok(None);
        };
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.renew_at
        {
            return Ok(Some(token.bearer.clone()));
        }
        let what = "fetching a PayPal access token";
        let url = self.api.url(&["v1", "oauth2", "token"]).map_err(|p| {
            TokenProblem::Outcome(
                Outcome::Failed {
                    reason: format!("{what}: {p}"),
                },
                None,
            )
        })?;
        let exchange = http::exchange(
            self.api
                .request(Method::POST, url)
                .header(reqwest::header::AUTHORIZATION, basic.clone())
                .header(reqwest::header::ACCEPT, "application/json")
                .form(&[("grant_type", "client_credentials")]),
        )
        .await;
        let answer = exchange.result.map_err(|error| {
            // Fetching a token changes nothing: any transport failure may be retried.
            TokenProblem::Outcome(
                Outcome::Retryable {
                    after: None,
                    reason: format!("{what} failed in transport: {}", http::error_chain(&error)),
                },
                None,
            )
        })?;
        let status = answer.status;
        let body = answer.body.unwrap_or_default();
        if !status.is_success() {
            let detail = match serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            {
                Some(error) => format!("HTTP {} {error}", status.as_u16()),
                None => format!("HTTP {}", status.as_u16()),
            };
            let outcome = match status.as_u16() {
                429 | 500..=599 => Outcome::Retryable {
                    after: http::retry_after(&answer.headers),
                    reason: format!("{what}: {detail}"),
                },
                _ => Outcome::Failed {
                    reason: format!(
                        "{what}: PayPal refused the client id and secret (authentication): {detail}"
                    ),
                },
            };
            return Err(TokenProblem::Outcome(outcome, Some(status.as_u16())));
        }
        let token: Token = serde_json::from_slice(&body).map_err(|error| {
            TokenProblem::Outcome(
                Outcome::Retryable {
                    after: None,
                    reason: format!("{what}: the answer is not a token: {error}"),
                },
                Some(status.as_u16()),
            )
        })?;
        let bearer = http::sensitive(
            &token.access_token,
            format!("Bearer {}", token.access_token),
        )
        .ok_or_else(|| {
            TokenProblem::Outcome(
                Outcome::Retryable {
                    after: None,
                    reason: format!("{what}: the access token cannot be sent as a header"),
                },
                Some(status.as_u16()),
            )
        })?;
        let lifetime = token
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(TOKEN_DEFAULT_LIFETIME);
        *cached = Some(CachedToken {
            bearer: bearer.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN),
        });
        Ok(Some(bearer))
    }

    /// Forgets the token after PayPal refused it, so the next call fetches a new one.
    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    fn authorized(builder: RequestBuilder, bearer: Option<HeaderValue>) -> RequestBuilder {
        match bearer {
            Some(value) => builder.header(reqwest::header::AUTHORIZATION, value),
            None => builder,
        }
    }

    /// POSTs to `segments` with a token, under `request_id` (`PayPal-Request-Id`) and
    /// `Prefer: return=representation`, then routes the answer with `route`.
    async fn post(
        &self,
        what: &str,
        segments: &[&str],
        request_id: &str,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
        route: impl FnOnce(StatusCode, &HeaderMap, &[u8]) -> (Outcome, Option<String>),
    ) -> CallResult {
        let url = match self.api.url(segments) {
            Ok(url) => url,
            Err(problem) => return http::unsendable(what, problem),
        };
        let bearer = match self.bearer().await {
            Ok(bearer) => bearer,
            Err(TokenProblem::Outcome(outcome, http_status)) => {
                return CallResult {
                    outcome,
                    http_status,
                    provider_code: Some("oauth2_token".to_owned()),
                    provider_request_id: None,
                    latency: Duration::ZERO,
                };
            }
        };
        let request = self
            .api
            .request(Method::POST, url)
            .header("PayPal-Request-Id", request_id)
            .header("Prefer", "return=representation");
        let request = build(Self::authorized(request, bearer));
        let result = self.api.send(what, request, route).await;
        if result.http_status == Some(401) {
            self.forget_token().await;
        }
        result
    }

    async fn send_capture(&self, request: &CaptureRequest) -> CallResult {
        let what = format!(
            "capture of PayPal authorization {}",
            request.authorization_id
        );
        let body = match CaptureBody::from_request(request) {
            Ok(body) => body,
            Err(problem) => return http::unsendable(&what, problem),
        };
        self.post(
            &what,
            &authorization_path(&request.authorization_id, Some("capture")),
            request.idempotency_key.as_str(),
            |builder| builder.json(&body),
            |status, headers, body| capture_answer(&what, status, headers, body),
        )
        .await
    }

    async fn send_void(&self, request: &ReleaseRequest) -> CallResult {
        let what = format!("void of PayPal authorization {}", request.authorization_id);
        let id = request.authorization_id.to_string();
        self.post(
            &what,
            &authorization_path(&request.authorization_id, Some("void")),
            request.idempotency_key.as_str(),
            |builder| builder,
            |status, headers, body| void_answer(&what, &id, status, headers, body),
        )
        .await
    }

    /// Reauthorizes the authorization: a new authorization with its own id and a new honor
    /// period.
    async fn send_reauthorize(&self, request: &LifecycleRequest) -> LifecycleResult {
        let what = format!(
            "reauthorization of PayPal authorization {}",
            request.authorization_id
        );
        let body = match ReauthorizeBody::from_request(request) {
            Ok(body) => body,
            Err(problem) => {
                return LifecycleResult {
                    call: http::unsendable(&what, problem),
                    hold: None,
                };
            }
        };
        let mut hold = None;
        let call = self
            .post(
                &what,
                &authorization_path(&request.authorization_id, Some("reauthorize")),
                request.idempotency_key.as_str(),
                |builder| builder.json(&body),
                |status, headers, body| {
                    let (outcome, code, change) = reauthorize_answer(&what, status, headers, body);
                    hold = change;
                    (outcome, code)
                },
            )
            .await;
        LifecycleResult { call, hold }
    }

    /// GETs `segments` with a token and decodes the 2xx body as `noun`.
    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        authorization_id: &AuthorizationId,
        segments: &[&str],
        noun: &str,
    ) -> Result<T, LookupError> {
        let retryable = LookupError::retryable_for(authorization_id);
        let permanent = LookupError::permanent_for(authorization_id);
        let url = self.api.url(segments).map_err(permanent)?;
        let bearer = match self.bearer().await {
            Ok(bearer) => bearer,
            Err(TokenProblem::Outcome(outcome, _)) => {
                return Err(match outcome {
                    Outcome::Retryable { reason, .. } => retryable(reason),
                    Outcome::Succeeded { .. }
                    | Outcome::Pending { .. }
                    | Outcome::Declined { .. }
                    | Outcome::Failed { .. }
                    | Outcome::Unknown { .. } => permanent(format!(
                        "no PayPal access token: {}",
                        outcome_reason(&outcome)
                    )),
                });
            }
        };
        let exchange =
            http::exchange(Self::authorized(self.api.request(Method::GET, url), bearer)).await;
        if matches!(&exchange.result, Ok(answer) if answer.status == StatusCode::UNAUTHORIZED) {
            self.forget_token().await;
        }
        self.api
            .read_back(exchange, authorization_id, noun, |status, _, body| {
                RefusedRead {
                    detail: describe(status, wire::parse_error(body).as_ref()),
                    // 401: the refused token was dropped, the next read fetches a new one; 409:
                    // the same request still in progress.
                    retryable: matches!(status.as_u16(), 401 | 409),
                }
            })
    }

    async fn read_authorization(
        &self,
        authorization_id: &AuthorizationId,
    ) -> Result<AuthorizationSnapshot, LookupError> {
        let retryable = LookupError::retryable_for(authorization_id);
        let permanent = LookupError::permanent_for(authorization_id);
        let authorization: Authorization = self
            .read(
                authorization_id,
                &authorization_path(authorization_id, None),
                "authorization",
            )
            .await?;
        let open = match authorization.status() {
            AuthorizationStatus::Pending => {
                return Err(retryable(format!(
                    "authorization {} is PENDING; waiting for it to settle",
                    authorization.id
                )));
            }
            // Nothing has been captured yet: no need to read the order.
            AuthorizationStatus::Created => {
                return authorization
                    .into_snapshot(authorization_id, MinorUnits::ZERO, true)
                    .map_err(permanent);
            }
            AuthorizationStatus::PartiallyCaptured => true,
            AuthorizationStatus::Captured
            | AuthorizationStatus::Denied
            | AuthorizationStatus::Expired
            | AuthorizationStatus::Voided => false,
            AuthorizationStatus::Unrecognized => {
                return Err(permanent(format!(
                    "authorization {} has a status this worker does not know: {:?}",
                    authorization.id, authorization.status
                )));
            }
        };
        // The authorization does not list its captures; its checkout order does.
        let Some(order_id) = authorization.order_id().map(str::to_owned) else {
            return Err(permanent(format!(
                "authorization {} is {} but names no checkout order to read its captures from",
                authorization.id, authorization.status
            )));
        };
        let order: Order = self
            .read(
                authorization_id,
                &["v2", "checkout", "orders", &order_id],
                "checkout order",
            )
            .await?;
        let currency = authorization.currency().map_err(permanent)?;
        match order
            .captured_total(authorization_id.as_str(), currency)
            .map_err(permanent)?
        {
            CapturedTotal::Settled(captured) => authorization
                .into_snapshot(authorization_id, captured, open)
                .map_err(permanent),
            CapturedTotal::Unsettled => Err(retryable(format!(
                "a capture of authorization {} is still pending",
                authorization.id
            ))),
        }
    }
}

#[async_trait]
impl PaymentProvider for PayPalProvider {
    fn name(&self) -> &str {
        self.api.name().as_str()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::paypal()
    }

    async fn capture(&self, request: &CaptureRequest) -> CallResult {
        self.send_capture(request)
            .instrument(self.api.capture_span(request))
            .await
    }

    /// Voids the authorization: what was not captured is released.
    async fn release(&self, request: &ReleaseRequest) -> CallResult {
        self.send_void(request)
            .instrument(self.api.release_span(request))
            .await
    }

    /// Reauthorizes the authorization (`Extend`; an increase rides on it when `by` is not 0):
    /// from the end of the 3-day honor period to day 29, once. The answer is the new
    /// authorization, which later captures use. PayPal documents no increment of its own.
    async fn lifecycle(&self, request: &LifecycleRequest) -> LifecycleResult {
        match request.call {
            LifecycleCall::Extend => {
                self.send_reauthorize(request)
                    .instrument(self.api.lifecycle_span(request))
                    .await
            }
            LifecycleCall::Increment => LifecycleResult::not_supported(self.name(), request),
        }
    }

    /// Reads the authorization, and its checkout order for the captures made against it.
    async fn lookup(
        &self,
        authorization_id: &AuthorizationId,
    ) -> Result<AuthorizationSnapshot, LookupError> {
        let read = self.read_authorization(authorization_id);
        self.api.traced_lookup(authorization_id, read).await
    }

    /// Capture and void events, read but not trusted: PayPal's certificate signature cannot
    /// be checked offline, so each only makes the capture due for a read-back now.
    fn read_notification(
        &self,
        _headers: &reqwest::header::HeaderMap,
        body: &[u8],
        _now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<WebhookEvent>, WebhookError> {
        webhook::read(body)
    }
}

/// Routes a capture answer (reference/providers.md §5.2).
fn capture_answer(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> (Outcome, Option<String>) {
    if !status.is_success() {
        return refused(what, status, headers, body);
    }
    let capture: Capture = match http::decode(what, status, body, "capture", Replay::Idempotent) {
        Ok(capture) => capture,
        Err(unreadable) => return (unreadable, None),
    };
    let label = capture.status.clone();
    let outcome = match capture.status() {
        CaptureStatus::Completed => Outcome::Succeeded {
            reference: Some(capture.id),
        },
        CaptureStatus::Pending => Outcome::Pending {
            reference: Some(capture.id),
        },
        CaptureStatus::Declined => Outcome::Declined {
            code: capture.reason().unwrap_or("DECLINED").to_owned(),
            message: format!("PayPal declined capture {}", capture.id),
        },
        CaptureStatus::Failed => Outcome::Failed {
            reason: format!(
                "{what}: PayPal reports capture {} FAILED ({})",
                capture.id,
                capture.reason().unwrap_or("no reason given")
            ),
        },
        // Only on a replay of a capture that was later refunded: it did capture.
        CaptureStatus::PartiallyRefunded | CaptureStatus::Refunded => Outcome::Succeeded {
            reference: Some(capture.id),
        },
        CaptureStatus::Unrecognized => Outcome::Unknown {
            reason: format!(
                "{what}: PayPal answered with a capture status this worker does not know: {label:?}"
            ),
            key_spent: true,
        },
    };
    (outcome, Some(label))
}

/// Routes a reauthorization answer: `201` with the new authorization (`CREATED`, or
/// `PENDING`), else as a capture's refusal.
fn reauthorize_answer(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> (Outcome, Option<String>, Option<HoldChange>) {
    if !status.is_success() {
        let (outcome, code) = refused(what, status, headers, body);
        return (outcome, code, None);
    }
    let auth = match http::decode::<Authorization>(
        what,
        status,
        body,
        "authorization",
        Replay::Idempotent,
    ) {
        Ok(auth) => auth,
        Err(unreadable) => return (unreadable, None, None),
    };
    let label = Some(auth.status.clone());
    let change = auth.hold_change();
    let outcome = match auth.status() {
        AuthorizationStatus::Created => Outcome::Succeeded {
            reference: Some(auth.id),
        },
        AuthorizationStatus::Pending => Outcome::Pending {
            reference: Some(auth.id),
        },
        AuthorizationStatus::Denied => Outcome::Declined {
            code: "DENIED".to_owned(),
            message: format!("PayPal denied reauthorization {}", auth.id),
        },
        AuthorizationStatus::Captured
        | AuthorizationStatus::PartiallyCaptured
        | AuthorizationStatus::Expired
        | AuthorizationStatus::Voided
        | AuthorizationStatus::Unrecognized => Outcome::Unknown {
            reason: format!(
                "{what}: PayPal answered with a new authorization {} in status {:?}",
                auth.id, auth.status
            ),
            key_spent: true,
        },
    };
    let change =
        matches!(outcome, Outcome::Succeeded { .. } | Outcome::Pending { .. }).then_some(change);
    (outcome, label, change)
}

/// Routes a void answer: `204 No Content`, or the voided authorization.
fn void_answer(
    what: &str,
    authorization_id: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> (Outcome, Option<String>) {
    if !status.is_success() {
        return refused(what, status, headers, body);
    }
    if body.is_empty() {
        return (
            Outcome::Succeeded {
                reference: Some(authorization_id.to_owned()),
            },
            None,
        );
    }
    let decoded =
        http::decode::<Authorization>(what, status, body, "authorization", Replay::Idempotent);
    let outcome = match decoded {
        Ok(auth) => match auth.status() {
            AuthorizationStatus::Voided => Outcome::Succeeded {
                reference: Some(auth.id),
            },
            AuthorizationStatus::Pending => Outcome::Pending {
                reference: Some(auth.id),
            },
            AuthorizationStatus::Created
            | AuthorizationStatus::Captured
            | AuthorizationStatus::Denied
            | AuthorizationStatus::Expired
            | AuthorizationStatus::PartiallyCaptured
            | AuthorizationStatus::Unrecognized => Outcome::Unknown {
                reason: format!(
                    "{what}: after the void the authorization is {:?}",
                    auth.status
                ),
                key_spent: true,
            },
        },
        Err(unreadable) => unreadable,
    };
    (outcome, None)
}

/// PayPal's 422 issues on capture (reference/providers.md §5.2), plus one for an issue this
/// adapter does not know yet.
enum Issue {
    /// The payer's side said no: latch the order.
    PayerRefused,
    /// The authorization cannot be captured any more (expired, voided, fully captured).
    AuthorizationClosed,
    /// The merchant's account cannot receive the money.
    PayeeAccount,
    /// The request breaks a rule or limit: a bug or a setting to fix.
    Request,
    /// The same `PayPal-Request-Id` is still being processed.
    InProgress,
    Unrecognized,
}

fn issue(code: &str) -> Issue {
    match code {
        "AUTHORIZATION_DENIED"
        | "PAYER_CANNOT_PAY"
        | "TRANSACTION_REFUSED"
        | "PAYER_ACCOUNT_LOCKED_OR_CLOSED" => Issue::PayerRefused,
        "AUTHORIZATION_EXPIRED" | "AUTHORIZATION_VOIDED" | "AUTHORIZATION_ALREADY_CAPTURED" => {
            Issue::AuthorizationClosed
        }
        "PAYEE_ACCOUNT_LOCKED_OR_CLOSED" | "PAYEE_ACCOUNT_RESTRICTED" => Issue::PayeeAccount,
        "MAX_CAPTURE_COUNT_EXCEEDED"
        | "MAX_CAPTURE_AMOUNT_EXCEEDED"
        | "AUTH_CAPTURE_CURRENCY_MISMATCH"
        | "DUPLICATE_INVOICE_ID"
        | "DECIMAL_PRECISION"
        | "CANNOT_BE_ZERO_OR_NEGATIVE"
        | "INVALID_CURRENCY_CODE"
        | "DECIMALS_NOT_SUPPORTED"
        | "REAUTHORIZATION_NOT_SUPPORTED"
        | "AUTH_CURRENCY_MISMATCH" => Issue::Request,
        "PREVIOUS_REQUEST_IN_PROGRESS" => Issue::InProgress,
        _ => Issue::Unrecognized,
    }
}

/// Routes a non-2xx answer.
fn refused(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> (Outcome, Option<String>) {
    let error = wire::parse_error(body);
    let code = error.as_ref().and_then(ApiError::provider_code);
    let r = Refusal::new(what, headers, describe(status, error.as_ref()));
    let issue_code = error.as_ref().and_then(ApiError::issue).unwrap_or("");
    let outcome = match status.as_u16() {
        422 => match issue(issue_code) {
            Issue::PayerRefused => Outcome::Declined {
                code: issue_code.to_owned(),
                message: error.as_ref().map(ApiError::message).unwrap_or_default(),
            },
            Issue::AuthorizationClosed => r.failed("the authorization can no longer be captured"),
            Issue::PayeeAccount => r.failed("the merchant's PayPal account cannot receive it"),
            Issue::Request => r.failed("PayPal refused the request (a rule or limit)"),
            Issue::InProgress => r.retry("the same request is still in progress"),
            Issue::Unrecognized => {
                r.failed("PayPal refused the request with an issue this worker does not know")
            }
        },
        // RESOURCE_CONFLICT / PREVIOUS_REQUEST_IN_PROGRESS: the same request id in flight.
        409 => r.retry("the same request is still in progress"),
        // The token expired or was revoked: it is dropped and the next attempt fetches one.
        401 => r.retry("PayPal refused the access token; a new one is fetched"),
        429 => r.retry("rate limited"),
        // PayPal keeps the request id 45 days: resending it cannot capture twice.
        500..=599 => r.retry("PayPal server error"),
        400 => r.failed("PayPal refused the request"),
        403 => r.failed("the REST app may not do this (permission)"),
        404 => r.failed("no such authorization for this account"),
        _ => r.failed("unexpected HTTP status"),
    };
    (outcome, code)
}

fn describe(status: StatusCode, error: Option<&ApiError>) -> String {
    let message = error.map(ApiError::message);
    let code = error
        .and_then(ApiError::provider_code)
        .unwrap_or_else(|| "error".to_owned());
    http::error_detail(
        status,
        message.as_deref().map(|m| (code.as_str(), m)),
        "a PayPal",
    )
}

/// `v2/payments/authorizations/{id}[/{action}]`.
fn authorization_path<'a>(id: &'a AuthorizationId, action: Option<&'a str>) -> Vec<&'a str> {
    let mut path = vec!["v2", "payments", "authorizations", id.as_str()];
    path.extend(action);
    path
}

fn outcome_reason(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Retryable { reason, .. }
        | Outcome::Failed { reason }
        | Outcome::Unknown { reason, .. } => reason.clone(),
        Outcome::Declined { code, message } => format!("{code}: {message}"),
        Outcome::Succeeded { .. } | Outcome::Pending { .. } => outcome.label().to_owned(),
    }
}

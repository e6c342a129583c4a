//! What the adapters' contract suites (`provider_*.rs`) share: the example order's capture and
//! release requests, a provider that answers too late or not at all, mock answers, and the
//! checks each suite makes of an outcome or a lookup.

use std::time::Duration;

use capture_worker::domain::*;
use capture_worker::provider::{
    AuthorizationSnapshot, CallResult, CaptureRequest, LookupError, Outcome, PaymentProvider,
    ReleaseRequest,
};
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The example order every suite captures from.
pub const ORDER: &str = "ORD-1042";

/// An adapter timeout the late answers of [`answering_late`] overrun.
pub const TIMEOUT_BEFORE_THE_ANSWER: Duration = Duration::from_millis(300);

/// The idempotency key the worker derives for `cause` on `provider`'s `authorization`.
pub fn key(provider: &str, authorization: &str, cause: &str) -> IdempotencyKey {
    IdempotencyKey::derive(
        &ProviderName::parse(provider).unwrap(),
        &AuthorizationId::parse(authorization).unwrap(),
        cause,
        0,
    )
}

/// Parcel `cause` of ORD-1042 on `provider`'s `authorization`: its second capture, worth
/// `amount`, not final, without lines, under the key the worker derives.
pub fn parcel_capture(
    provider: &str,
    authorization: &str,
    cause: &str,
    amount: Money,
) -> CaptureRequest {
    CaptureRequest {
        authorization_id: AuthorizationId::parse(authorization).unwrap(),
        order_id: OrderId::parse(ORDER).unwrap(),
        cause: cause.to_owned(),
        sequence: 2,
        amount,
        is_final: false,
        idempotency_key: key(provider, authorization, cause),
        lines: Vec::new(),
    }
}

/// The release of what is left of `provider`'s `authorization` after ORD-1042's cancellation
/// CANCEL-9.
pub fn release_of(provider: &str, authorization: &str) -> ReleaseRequest {
    ReleaseRequest {
        authorization_id: AuthorizationId::parse(authorization).unwrap(),
        order_id: OrderId::parse(ORDER).unwrap(),
        idempotency_key: key(provider, authorization, "CANCEL-9"),
    }
}

/// A JSON answer carrying the provider's request id header.
pub fn json_answer(status: u16, body: Value, request_id: (&str, &str)) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(body)
        .insert_header(request_id.0, request_id.1)
}

/// A local URL nothing listens on: bind a port, then free it.
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// A mock provider that answers `GET path` with `response`.
pub async fn serving_get(path_: &str, response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(path_))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

/// A mock provider that answers `POST path` with `response`, but only 5 s later: after
/// [`TIMEOUT_BEFORE_THE_ANSWER`], when the request has long been sent.
pub async fn answering_late(path_: &str, response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(path_))
        .respond_with(response.set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    server
}

/// Sends `request` through the adapter `connect` builds for a fresh mock provider serving
/// `mock`, which checks the request's exact shape (and how often it comes) when the mock
/// provider goes away.
pub async fn capture_against<P: PaymentProvider>(
    mock: Mock,
    connect: impl FnOnce(&MockServer) -> P,
    request: &CaptureRequest,
) -> CallResult {
    let server = MockServer::start().await;
    mock.mount(&server).await;
    connect(&server).capture(request).await
}

/// A capture through the adapter `connect` builds (from a base URL and a timeout) for a
/// provider nobody listens on.
pub async fn capture_with_nobody_listening<P: PaymentProvider>(
    connect: impl FnOnce(&str, Duration) -> P,
    request: &CaptureRequest,
) -> CallResult {
    connect(&closed_port_url(), Duration::from_secs(5))
        .capture(request)
        .await
}

/// A capture through the adapter `connect` builds with [`TIMEOUT_BEFORE_THE_ANSWER`], for a
/// provider that answers `POST path` with `response` too late (see [`answering_late`]).
pub async fn capture_answered_late<P: PaymentProvider>(
    connect: impl FnOnce(&str, Duration) -> P,
    path_: &str,
    response: ResponseTemplate,
    request: &CaptureRequest,
) -> CallResult {
    let server = answering_late(path_, response).await;
    connect(&server.uri(), TIMEOUT_BEFORE_THE_ANSWER)
        .capture(request)
        .await
}

/// The reason of a `Failed` outcome; panics on any other.
pub fn failure_reason(result: &CallResult) -> &str {
    match &result.outcome {
        Outcome::Failed { reason } => reason,
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// The `Retry-After` wait of a `Retryable` outcome; panics on any other.
pub fn retry_after(result: &CallResult) -> Option<Duration> {
    match &result.outcome {
        Outcome::Retryable { after, .. } => *after,
        other => panic!("expected Retryable, got {other:?}"),
    }
}

/// Retryable at once: nothing was sent (or the provider gave no wait).
pub fn is_retryable_at_once(result: &CallResult) -> bool {
    matches!(result.outcome, Outcome::Retryable { after: None, .. })
}

/// Maybe applied, and the same key may be sent again.
pub fn is_unknown_with_key_unspent(result: &CallResult) -> bool {
    matches!(
        result.outcome,
        Outcome::Unknown {
            key_spent: false,
            ..
        }
    )
}

/// Maybe applied, and nothing may be sent before the provider is read back.
pub fn is_unknown_with_key_spent(result: &CallResult) -> bool {
    matches!(
        result.outcome,
        Outcome::Unknown {
            key_spent: true,
            ..
        }
    )
}

/// Asserts the lookup asks to be asked again later.
pub fn assert_retryable(result: &Result<AuthorizationSnapshot, LookupError>) {
    assert!(
        matches!(result, Err(LookupError::Retryable { .. })),
        "{result:?}"
    );
}

/// Asserts the lookup failed for good, and returns why.
pub fn assert_permanent(result: &Result<AuthorizationSnapshot, LookupError>) -> &str {
    match result {
        Err(LookupError::Permanent { reason, .. }) => reason,
        other => panic!("expected Permanent, got {other:?}"),
    }
}

/// Asserts no text shows any part of a secret, and the adapter's `Debug` says it redacted one.
pub fn assert_no_secret_shows(adapter_debug: &str, texts: &[String], secret_parts: &[&str]) {
    for text in texts.iter().map(String::as_str).chain([adapter_debug]) {
        for part in secret_parts {
            assert!(!text.contains(part), "{text}");
        }
    }
    assert!(adapter_debug.contains("[redacted]"), "{adapter_debug}");
}

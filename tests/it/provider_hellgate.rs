//! The Hellgate adapter against a mock Hellgate: exact request shapes, and one test per
//! documented answer (reference/providers.md §6). Hellgate takes one capture per payment and
//! documents no idempotency header, so lost answers are read back, never blindly resent.

use std::time::Duration;

use capture_worker::config::Secret;
use capture_worker::domain::*;
use capture_worker::provider::hellgate::HellgateProvider;
use capture_worker::provider::{
    CallResult, CaptureRequest, Outcome, PaymentProvider, ReleaseRequest,
};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::provider_support::*;
use crate::support::*;

const API_KEY: &str = "hg_live_SecretNeverLogged_0123456789";
const PAYMENT: &str = "54ba1fdb-7e4e-402b-aebb-66f9d5345cf8";
const CAPTURE_PATH: &str = "/payments/54ba1fdb-7e4e-402b-aebb-66f9d5345cf8/capture";
const VOID_PATH: &str = "/payments/54ba1fdb-7e4e-402b-aebb-66f9d5345cf8/void";
const PAYMENT_PATH: &str = "/payments/54ba1fdb-7e4e-402b-aebb-66f9d5345cf8";

fn hellgate_at(base_url: &str, timeout: Duration) -> HellgateProvider {
    HellgateProvider::new(
        ProviderName::parse("hellgate").unwrap(),
        base_url.to_owned(),
        Some(Secret::new(API_KEY)),
        timeout,
    )
    .unwrap()
}

fn hellgate(server: &MockServer) -> HellgateProvider {
    hellgate_at(&server.uri(), Duration::from_secs(10))
}

fn authorization() -> AuthorizationId {
    AuthorizationId::parse(PAYMENT).unwrap()
}

/// The one capture of ORD-1042, sent when its last parcel shipped: 80.00 EUR of 100.00.
fn capture_request() -> CaptureRequest {
    CaptureRequest {
        sequence: 1,
        is_final: true,
        ..parcel_capture(
            "hellgate",
            PAYMENT,
            "SHP-79",
            Money::new(m(8000), cur("EUR")),
        )
    }
}

fn release_request() -> ReleaseRequest {
    release_of("hellgate", PAYMENT)
}

fn payment(status: &str, captured: Option<i64>) -> Value {
    let mut amount = json!({"requested": 10000, "authorized": 10000});
    if let Some(captured) = captured {
        amount["captured"] = json!(captured);
    }
    json!({
        "id": PAYMENT,
        "amount": amount,
        "created_at": "2026-11-21T10:00:00Z",
        "currency_code": "EUR",
        "reference": "Order ORD-1042",
        "status": status,
        "use_case": "ONE_OFF",
    })
}

fn answer(status: u16, body: Value) -> ResponseTemplate {
    json_answer(status, body, ("x-request-id", "req_hg_01"))
}

fn capture_mock(response: ResponseTemplate) -> Mock {
    Mock::given(method("POST"))
        .and(path(CAPTURE_PATH))
        .and(header("x-api-key", API_KEY))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "amount": 8000,
            "currency_code": "EUR",
            "reference": "ORD-1042/SHP-79",
        })))
        .respond_with(response)
        .expect(1)
}

async fn capture_answered_with(response: ResponseTemplate) -> CallResult {
    capture_against(capture_mock(response), hellgate, &capture_request()).await
}

// ---- request shapes ----

#[tokio::test]
async fn the_single_capture_posts_amount_currency_and_reference_and_is_pending_while_capturing() {
    let server = MockServer::start().await;
    capture_mock(answer(200, payment("capturing", None)))
        .mount(&server)
        .await;

    let result = hellgate(&server).capture(&capture_request()).await;

    assert_eq!(
        result.outcome,
        Outcome::Pending {
            reference: Some(PAYMENT.to_owned())
        }
    );
    assert_eq!(result.provider_code.as_deref(), Some("capturing"));
    assert_eq!(result.provider_request_id.as_deref(), Some("req_hg_01"));
    let received = server.received_requests().await.unwrap();
    assert!(
        received[0]
            .headers
            .keys()
            .all(|h| !h.as_str().contains("idempotency")),
        "Hellgate documents no idempotency header"
    );
}

#[tokio::test]
async fn release_voids_the_payment_with_the_api_key_and_no_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(VOID_PATH))
        .and(header("x-api-key", API_KEY))
        .respond_with(answer(200, payment("voiding", None)))
        .expect(1)
        .mount(&server)
        .await;

    let result = hellgate(&server).release(&release_request()).await;

    assert_eq!(
        result.outcome,
        Outcome::Pending {
            reference: Some(PAYMENT.to_owned())
        }
    );
    let received = server.received_requests().await.unwrap();
    assert!(received[0].body.is_empty());
}

// ---- capture answers ----

#[tokio::test]
async fn a_captured_payment_is_a_success() {
    let result = capture_answered_with(answer(200, payment("captured", Some(8000)))).await;

    assert_eq!(
        result.outcome,
        Outcome::Succeeded {
            reference: Some(PAYMENT.to_owned())
        }
    );
}

#[tokio::test]
async fn a_failed_payment_is_a_decline() {
    let result = capture_answered_with(answer(200, payment("failed", None))).await;

    assert!(
        matches!(&result.outcome, Outcome::Declined { code, .. } if code == "failed"),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_voided_payment_cannot_be_captured() {
    let result = capture_answered_with(answer(200, payment("voided", None))).await;

    assert!(failure_reason(&result).contains("voided"));
}

#[tokio::test]
async fn an_unknown_payment_status_is_read_back_before_anything_is_resent() {
    let result = capture_answered_with(answer(200, payment("reticulating", None))).await;

    assert!(is_unknown_with_key_spent(&result), "{result:?}");
}

#[tokio::test]
async fn server_errors_are_unknown_and_read_back_because_nothing_protects_a_resend() {
    for status in [500, 502, 503, 504] {
        let result = capture_answered_with(ResponseTemplate::new(status)).await;

        assert!(
            is_unknown_with_key_spent(&result),
            "HTTP {status}: {result:?}"
        );
    }
}

#[tokio::test]
async fn rate_limit_is_retryable() {
    let result =
        capture_answered_with(ResponseTemplate::new(429).insert_header("Retry-After", "2")).await;

    assert!(matches!(
        result.outcome,
        Outcome::Retryable { after: Some(d), .. } if d == Duration::from_secs(2)
    ));
}

#[tokio::test]
async fn client_errors_fail_naming_what_went_wrong() {
    for (status, word) in [
        (400, "refused"),
        (422, "refused"),
        (401, "authentication"),
        (403, "permission"),
        (404, "no such payment"),
        (409, "second capture"),
    ] {
        let result = capture_answered_with(answer(
            status,
            json!({"code": "invalid_state", "message": "Payment is not authorized"}),
        ))
        .await;

        let reason = failure_reason(&result);
        assert!(reason.contains(word), "HTTP {status}: {reason}");
        assert!(reason.contains("Payment is not authorized"), "{reason}");
    }
}

#[tokio::test]
async fn timeout_after_sending_is_unknown_and_read_back_first() {
    let late = answer(200, payment("capturing", None));

    let result = capture_answered_late(hellgate_at, CAPTURE_PATH, late, &capture_request()).await;

    assert!(is_unknown_with_key_spent(&result), "{result:?}");
}

#[tokio::test]
async fn refused_connection_is_retryable_because_nothing_was_sent() {
    let result = capture_with_nobody_listening(hellgate_at, &capture_request()).await;

    assert!(is_retryable_at_once(&result), "{result:?}");
}

// ---- void answers ----

#[tokio::test]
async fn a_voided_payment_is_released_and_a_captured_one_cannot_be_voided() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(VOID_PATH))
        .respond_with(answer(200, payment("voided", None)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(VOID_PATH))
        .respond_with(answer(200, payment("captured", Some(8000))))
        .mount(&server)
        .await;
    let provider = hellgate(&server);

    let voided = provider.release(&release_request()).await;
    let captured = provider.release(&release_request()).await;

    assert!(matches!(voided.outcome, Outcome::Succeeded { .. }));
    assert!(failure_reason(&captured).contains("cannot be voided"));
}

// ---- lookup ----

#[tokio::test]
async fn lookup_of_a_captured_payment_reads_the_captured_amount() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(PAYMENT_PATH))
        .and(header("x-api-key", API_KEY))
        .respond_with(answer(200, payment("captured", Some(8000))))
        .expect(1)
        .mount(&server)
        .await;

    let snapshot = hellgate(&server).lookup(&authorization()).await.unwrap();

    assert_eq!(snapshot.captured, Money::new(m(8000), cur("EUR")));
    assert!(snapshot.capturable.amount().is_zero());
    assert_eq!(snapshot.status, "captured");
}

#[tokio::test]
async fn lookup_of_an_authorized_payment_shows_nothing_captured() {
    let server = serving_get(PAYMENT_PATH, answer(200, payment("authorized", None))).await;

    let snapshot = hellgate(&server).lookup(&authorization()).await.unwrap();

    assert!(snapshot.captured.amount().is_zero());
    assert_eq!(snapshot.capturable, Money::new(m(10000), cur("EUR")));
}

#[tokio::test]
async fn lookup_while_capturing_asks_to_be_retried() {
    let server = serving_get(PAYMENT_PATH, answer(200, payment("capturing", None))).await;

    let result = hellgate(&server).lookup(&authorization()).await;

    assert_retryable(&result);
}

#[tokio::test]
async fn lookup_of_a_captured_payment_without_its_captured_amount_is_permanent() {
    let server = serving_get(PAYMENT_PATH, answer(200, payment("captured", None))).await;

    let result = hellgate(&server).lookup(&authorization()).await;

    assert_permanent(&result);
}

// ---- configuration and secrecy ----

#[tokio::test]
async fn the_api_key_never_appears_in_debug_output_or_errors() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(answer(
            401,
            json!({"code": "unauthorized", "message": "bad key"}),
        ))
        .mount(&server)
        .await;
    let provider = hellgate(&server);
    let rejected = provider.capture(&capture_request()).await;

    assert_no_secret_shows(
        &format!("{provider:?}"),
        &[format!("{rejected:?}")],
        &["SecretNeverLogged"],
    );
}

#[test]
fn capabilities_are_a_single_capture() {
    let provider = hellgate_at("https://api.hellgate.io", Duration::from_secs(1));

    assert_eq!(provider.capabilities(), Capabilities::hellgate());
    assert_eq!(provider.capabilities().mode, CaptureMode::Single);
}

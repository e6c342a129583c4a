//! The Gr4vy adapter against a mock Gr4vy: exact request shapes, and one test per documented
//! answer (reference/providers.md §2).

use std::time::Duration;

use capture_worker::config::Secret;
use capture_worker::domain::*;
use capture_worker::provider::gr4vy::Gr4vyProvider;
use capture_worker::provider::{
    CallResult, CaptureLine, CaptureRequest, Outcome, PaymentProvider, ReleaseRequest,
};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::provider_support::*;
use crate::support::*;

const TOKEN: &str = "eyJhbGciOiJFUzUxMiJ9.gr4vySecretNeverLogged.sig";
const TXN: &str = "fe26475d-ec3e-4884-9553-f7356683f7f9";
const MERCHANT: &str = "acme-eu";
const CAPTURE_PATH: &str = "/transactions/fe26475d-ec3e-4884-9553-f7356683f7f9/capture";
const VOID_PATH: &str = "/transactions/fe26475d-ec3e-4884-9553-f7356683f7f9/void";
const TXN_PATH: &str = "/transactions/fe26475d-ec3e-4884-9553-f7356683f7f9";

fn gr4vy_at(base_url: &str, timeout: Duration) -> Gr4vyProvider {
    Gr4vyProvider::new(
        ProviderName::parse("gr4vy").unwrap(),
        base_url.to_owned(),
        Some(Secret::new(TOKEN)),
        Some(MERCHANT.to_owned()),
        timeout,
    )
    .unwrap()
}

fn gr4vy(server: &MockServer) -> Gr4vyProvider {
    gr4vy_at(&server.uri(), Duration::from_secs(10))
}

fn authorization() -> AuthorizationId {
    AuthorizationId::parse(TXN).unwrap()
}

/// Parcel SHP-77 of ORD-1042: two mugs (20.00) and shipping (5.00), 25.00 USD.
fn capture_request(is_final: bool) -> CaptureRequest {
    CaptureRequest {
        is_final,
        lines: vec![CaptureLine {
            line_id: LineId::parse("L1").unwrap(),
            sku: "MUG-1".to_owned(),
            name: "Mug".to_owned(),
            quantity: 2,
            amount: m(2000),
        }],
        ..parcel_capture("gr4vy", TXN, "SHP-77", Money::new(m(2500), cur("USD")))
    }
}

fn release_request() -> ReleaseRequest {
    release_of("gr4vy", TXN)
}

fn expected_body(is_final: bool) -> Value {
    json!({
        "amount": 2500,
        "final": is_final,
        "external_identifier": "ORD-1042/SHP-77",
        "cart_items": [
            {"name": "Mug", "quantity": 2, "unit_amount": 1000, "sku": "MUG-1", "external_identifier": "L1"},
            {"name": "Shipping", "quantity": 1, "unit_amount": 500, "external_identifier": "shipping"},
        ],
    })
}

fn transaction_capture(status: &str, code: Option<&str>) -> Value {
    json!({
        "type": "transaction-capture",
        "status": status,
        "code": code,
        "raw_response_code": code.map(|_| "05"),
        "raw_response_description": code.map(|_| "Do not honor"),
        "capture_id": "cap_0a1b2c",
        "transaction": {"type": "transaction", "id": TXN, "status": "capture_succeeded"},
    })
}

fn transaction(status: &str, authorized: i64, captured: i64) -> Value {
    json!({
        "type": "transaction",
        "id": TXN,
        "status": status,
        "amount": authorized,
        "authorized_amount": authorized,
        "captured_amount": captured,
        "currency": "USD",
    })
}

fn gr4vy_error(status: u16, code: &str, message: &str) -> Value {
    json!({"type": "error", "code": code, "status": status, "message": message, "details": []})
}

fn answer(status: u16, body: Value) -> ResponseTemplate {
    json_answer(status, body, ("x-request-id", "req_gr4vy_01"))
}

fn capture_mock(request: &CaptureRequest, response: ResponseTemplate) -> Mock {
    Mock::given(method("POST"))
        .and(path(CAPTURE_PATH))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("idempotency-key", request.idempotency_key.as_str()))
        .and(header("x-gr4vy-merchant-account-id", MERCHANT))
        .and(header("prefer", "resource=transaction-capture"))
        .and(header("content-type", "application/json"))
        .and(body_json(expected_body(request.is_final)))
        .respond_with(response)
        .expect(1)
}

async fn capture_answered_with(response: ResponseTemplate) -> CallResult {
    let request = capture_request(false);
    capture_against(capture_mock(&request, response), gr4vy, &request).await
}

// ---- request shapes ----

#[tokio::test]
async fn non_final_capture_posts_the_exact_gr4vy_request_with_final_false() {
    let request = capture_request(false);
    let mock = capture_mock(
        &request,
        answer(200, transaction_capture("succeeded", None)),
    );

    let result = capture_against(mock, gr4vy, &request).await;

    assert_eq!(
        result.outcome,
        Outcome::Succeeded {
            reference: Some("cap_0a1b2c".to_owned())
        }
    );
    assert_eq!(result.http_status, Some(200));
    assert_eq!(result.provider_request_id.as_deref(), Some("req_gr4vy_01"));
}

#[tokio::test]
async fn final_capture_sends_final_true_explicitly() {
    let request = capture_request(true);
    let mock = capture_mock(
        &request,
        answer(200, transaction_capture("succeeded", None)),
    );

    let result = capture_against(mock, gr4vy, &request).await;

    assert!(matches!(result.outcome, Outcome::Succeeded { .. }));
}

#[tokio::test]
async fn release_voids_the_transaction_under_its_idempotency_key() {
    let server = MockServer::start().await;
    let request = release_request();
    Mock::given(method("POST"))
        .and(path(VOID_PATH))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("idempotency-key", request.idempotency_key.as_str()))
        .and(header("x-gr4vy-merchant-account-id", MERCHANT))
        .respond_with(answer(200, transaction("authorization_voided", 10000, 0)))
        .expect(1)
        .mount(&server)
        .await;

    let result = gr4vy(&server).release(&request).await;

    assert_eq!(
        result.outcome,
        Outcome::Succeeded {
            reference: Some(TXN.to_owned())
        }
    );
    let received = server.received_requests().await.unwrap();
    assert!(received[0].body.is_empty(), "a void carries no body");
}

// ---- capture answers ----

#[tokio::test]
async fn pending_capture_is_pending_with_the_capture_id() {
    let result = capture_answered_with(answer(200, transaction_capture("pending", None))).await;

    assert_eq!(
        result.outcome,
        Outcome::Pending {
            reference: Some("cap_0a1b2c".to_owned())
        }
    );
}

#[tokio::test]
async fn declined_capture_in_a_200_body_is_a_decline_with_gr4vys_code() {
    let result = capture_answered_with(answer(
        200,
        transaction_capture("declined", Some("insufficient_funds")),
    ))
    .await;

    assert_eq!(
        result.outcome,
        Outcome::Declined {
            code: "insufficient_funds".to_owned(),
            message: "Do not honor".to_owned(),
        }
    );
    assert_eq!(result.provider_code.as_deref(), Some("insufficient_funds"));
}

#[tokio::test]
async fn failed_capture_is_an_error_not_a_decline() {
    let result = capture_answered_with(answer(
        200,
        transaction_capture("failed", Some("service_network_error")),
    ))
    .await;

    let reason = failure_reason(&result);
    assert!(reason.contains("not a decline"), "{reason}");
    assert!(reason.contains("service_network_error"), "{reason}");
}

#[tokio::test]
async fn an_unknown_capture_status_is_unknown_and_read_back_before_resending() {
    let result = capture_answered_with(answer(200, transaction_capture("refunded", None))).await;

    match &result.outcome {
        Outcome::Unknown { reason, key_spent } => {
            assert!(*key_spent);
            assert!(reason.contains("refunded"), "{reason}");
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
}

#[tokio::test]
async fn unreadable_success_body_is_unknown_with_the_key_unspent() {
    let result =
        capture_answered_with(ResponseTemplate::new(200).set_body_raw("<html>", "text/html")).await;

    assert!(is_unknown_with_key_unspent(&result), "{result:?}");
}

#[tokio::test]
async fn concurrent_request_on_the_same_key_is_retryable() {
    let result = capture_answered_with(answer(
        409,
        gr4vy_error(
            409,
            "concurrent_request",
            "A request with this idempotency key is in progress",
        ),
    ))
    .await;

    assert!(is_retryable_at_once(&result), "{result:?}");
    assert_eq!(result.provider_code.as_deref(), Some("concurrent_request"));
}

#[tokio::test]
async fn duplicate_record_conflict_fails() {
    let result = capture_answered_with(answer(
        409,
        gr4vy_error(409, "duplicate_record", "Duplicate record"),
    ))
    .await;

    assert!(failure_reason(&result).contains("duplicate_record"));
}

#[tokio::test]
async fn too_early_and_rate_limits_are_retryable_after_the_retry_after_seconds() {
    for (status, code) in [(425, "too_early"), (429, "too_many_requests")] {
        let result = capture_answered_with(
            answer(status, gr4vy_error(status, code, "Slow down"))
                .insert_header("Retry-After", "3"),
        )
        .await;

        assert!(
            matches!(result.outcome, Outcome::Retryable { after: Some(d), .. } if d == Duration::from_secs(3)),
            "HTTP {status}: {result:?}"
        );
    }
}

#[tokio::test]
async fn server_errors_are_retryable_under_the_same_key() {
    for (status, code) in [
        (500, "server_error"),
        (502, "bad_gateway"),
        (504, "gateway_timeout"),
    ] {
        let result = capture_answered_with(answer(status, gr4vy_error(status, code, "oops"))).await;

        assert!(
            matches!(result.outcome, Outcome::Retryable { .. }),
            "HTTP {status}: {result:?}"
        );
    }
}

#[tokio::test]
async fn client_errors_fail_naming_what_went_wrong() {
    for (status, code, word) in [
        (400, "bad_request", "refused"),
        (401, "unauthorized", "authentication"),
        (403, "forbidden", "permission"),
        (404, "not_found", "no such transaction"),
        (405, "method_not_allowed", "method"),
    ] {
        let result = capture_answered_with(answer(status, gr4vy_error(status, code, "no"))).await;

        let reason = failure_reason(&result);
        assert!(reason.contains(word), "HTTP {status}: {reason}");
        assert!(reason.contains(code), "HTTP {status}: {reason}");
    }
    let validation = capture_answered_with(answer(
        422,
        json!({"detail": [{"loc": ["body", "amount"], "msg": "too large", "type": "value_error"}]}),
    ))
    .await;
    assert!(failure_reason(&validation).contains("422"));
}

#[tokio::test]
async fn timeout_after_sending_is_unknown_with_the_key_unspent() {
    let late = answer(200, transaction_capture("succeeded", None));

    let result = capture_answered_late(gr4vy_at, CAPTURE_PATH, late, &capture_request(false)).await;

    assert!(is_unknown_with_key_unspent(&result), "{result:?}");
    assert_eq!(result.http_status, None);
}

#[tokio::test]
async fn refused_connection_is_retryable_because_nothing_was_sent() {
    let result = capture_with_nobody_listening(gr4vy_at, &capture_request(false)).await;

    assert!(is_retryable_at_once(&result), "{result:?}");
}

// ---- void answers ----

#[tokio::test]
async fn void_pending_is_pending_and_a_captured_transaction_cannot_be_voided() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(VOID_PATH))
        .respond_with(answer(
            200,
            transaction("authorization_void_pending", 10000, 0),
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(VOID_PATH))
        .respond_with(answer(200, transaction("capture_succeeded", 10000, 10000)))
        .mount(&server)
        .await;
    let provider = gr4vy(&server);

    let pending = provider.release(&release_request()).await;
    let captured = provider.release(&release_request()).await;

    assert!(matches!(pending.outcome, Outcome::Pending { .. }));
    assert!(failure_reason(&captured).contains("cannot be voided"));
}

// ---- lookup ----

#[tokio::test]
async fn lookup_reads_captured_and_what_is_still_capturable() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(TXN_PATH))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("x-gr4vy-merchant-account-id", MERCHANT))
        .respond_with(answer(200, transaction("capture_succeeded", 10000, 2500)))
        .expect(1)
        .mount(&server)
        .await;

    let snapshot = gr4vy(&server).lookup(&authorization()).await.unwrap();

    assert_eq!(snapshot.captured, Money::new(m(2500), cur("USD")));
    assert_eq!(snapshot.capturable, Money::new(m(7500), cur("USD")));
    assert_eq!(snapshot.status, "capture_succeeded");
}

#[tokio::test]
async fn lookup_of_a_voided_transaction_has_nothing_capturable() {
    let server = serving_get(
        TXN_PATH,
        answer(200, transaction("authorization_voided", 10000, 0)),
    )
    .await;

    let snapshot = gr4vy(&server).lookup(&authorization()).await.unwrap();

    assert!(snapshot.capturable.amount().is_zero());
}

#[tokio::test]
async fn lookup_while_a_capture_is_pending_asks_to_be_retried() {
    let server = serving_get(
        TXN_PATH,
        answer(200, transaction("capture_pending", 10000, 0)),
    )
    .await;

    let result = gr4vy(&server).lookup(&authorization()).await;

    assert_retryable(&result);
}

#[tokio::test]
async fn lookup_of_an_unknown_transaction_is_permanent() {
    let server = serving_get(
        TXN_PATH,
        answer(
            404,
            gr4vy_error(404, "not_found", "The resource could not be found"),
        ),
    )
    .await;

    let result = gr4vy(&server).lookup(&authorization()).await;

    assert_permanent(&result);
}

// ---- configuration and secrecy ----

#[tokio::test]
async fn the_token_never_appears_in_debug_output_or_errors() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(answer(
            401,
            gr4vy_error(401, "unauthorized", "Invalid token"),
        ))
        .mount(&server)
        .await;
    let provider = gr4vy(&server);
    let rejected = provider.capture(&capture_request(false)).await;
    let bad_token = Gr4vyProvider::new(
        ProviderName::parse("gr4vy").unwrap(),
        server.uri(),
        Some(Secret::new(format!("{TOKEN} "))),
        None,
        Duration::from_secs(1),
    );

    assert_no_secret_shows(
        &format!("{provider:?}"),
        &[format!("{rejected:?}"), bad_token.unwrap_err().to_string()],
        &["gr4vySecretNeverLogged"],
    );
}

#[test]
fn capabilities_are_multi_capture_with_an_explicit_final_flag() {
    let provider = gr4vy_at("https://api.sandbox.acme.gr4vy.app", Duration::from_secs(1));

    assert_eq!(provider.name(), "gr4vy");
    let caps = provider.capabilities();
    assert_eq!(caps, Capabilities::gr4vy());
    assert_eq!(caps.final_flag, FinalFlag::Explicit);
    assert_eq!(caps.mode, CaptureMode::Multiple { max_captures: None });
}

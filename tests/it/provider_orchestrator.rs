//! The orchestrator adapter against a mock transactions API: the exact capture request, and
//! one test per answer (the new capture transaction, refusals, lost answers).

use std::time::Duration;

use capture_worker::config::Secret;
use capture_worker::domain::*;
use capture_worker::provider::orchestrator::OrchestratorProvider;
use capture_worker::provider::{
    CallResult, CaptureRequest, Outcome, PaymentProvider, ReleaseRequest,
};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::provider_support::*;
use crate::support::*;

const API_KEY: &str = "orch_live_SecretNeverLogged0123456789";
const TXN: &str = "txn_8f3kQ2mZ9aLwXv";

fn orchestrator_at(
    base_url: &str,
    max_captures: Option<u32>,
    timeout: Duration,
) -> OrchestratorProvider {
    OrchestratorProvider::new(
        ProviderName::parse("orchestrator").unwrap(),
        base_url.to_owned(),
        Some(Secret::new(API_KEY)),
        max_captures,
        timeout,
    )
    .unwrap()
}

fn orchestrator(server: &MockServer) -> OrchestratorProvider {
    orchestrator_at(&server.uri(), None, Duration::from_secs(10))
}

fn authorization() -> AuthorizationId {
    AuthorizationId::parse(TXN).unwrap()
}

fn capture_request(is_final: bool) -> CaptureRequest {
    CaptureRequest {
        sequence: 1,
        is_final,
        ..parcel_capture(
            "orchestrator",
            TXN,
            "SHP-79",
            Money::new(m(125), cur("USD")),
        )
    }
}

fn capture_transaction(status: &str, amount: i64) -> Value {
    json!({
        "id": "txn_C4pTuR3dQ1",
        "type": "capture",
        "amount": amount,
        "currency": "USD",
        "originalTransactionId": TXN,
        "message": "Capture Succeeded",
        "authorization": {
            "approvedAmount": amount,
            "processorCode": "00",
            "processorMessage": "Approved",
            "processorTransactionId": "ch_3Qx9",
            "status": status,
        },
        "processor": {"id": "proc_stripe_1", "name": "Stripe"},
        "merchantId": "mer_acme",
    })
}

fn answer(status: u16, body: Value) -> ResponseTemplate {
    json_answer(status, body, ("x-request-id", "req_orch_01"))
}

fn capture_mock(response: ResponseTemplate) -> Mock {
    Mock::given(method("POST"))
        .and(path("/v1/transactions"))
        .and(header(
            "authorization",
            format!("Bearer {API_KEY}").as_str(),
        ))
        .and(header("content-type", "application/json"))
        .and(body_json(
            json!({"type": "capture", "transactionId": TXN, "amount": 125}),
        ))
        .respond_with(response)
        .expect(1)
}

async fn capture_answered_with(response: ResponseTemplate) -> CallResult {
    capture_against(capture_mock(response), orchestrator, &capture_request(true)).await
}

// ---- request shapes ----

#[tokio::test]
async fn a_capture_posts_a_capture_transaction_with_the_amount_and_no_idempotency_header() {
    let server = MockServer::start().await;
    capture_mock(answer(200, capture_transaction("A", 125)))
        .mount(&server)
        .await;

    let result = orchestrator(&server).capture(&capture_request(true)).await;

    assert_eq!(
        result.outcome,
        Outcome::Succeeded {
            reference: Some("txn_C4pTuR3dQ1".to_owned())
        }
    );
    assert_eq!(result.provider_code.as_deref(), Some("00"));
    let received = server.received_requests().await.unwrap();
    assert!(
        received[0]
            .headers
            .keys()
            .all(|h| !h.as_str().contains("idempotency"))
    );
}

#[tokio::test]
async fn a_non_final_follow_on_capture_has_the_same_shape() {
    let server = MockServer::start().await;
    capture_mock(answer(201, capture_transaction("A", 125)))
        .mount(&server)
        .await;

    let result = orchestrator_at(&server.uri(), Some(5), Duration::from_secs(10))
        .capture(&capture_request(false))
        .await;

    assert!(matches!(result.outcome, Outcome::Succeeded { .. }));
}

#[tokio::test]
async fn release_sends_nothing_and_asks_for_an_operator() {
    let server = MockServer::start().await;
    let request = ReleaseRequest {
        authorization_id: authorization(),
        order_id: OrderId::parse("ORD-1042").unwrap(),
        idempotency_key: capture_request(true).idempotency_key,
    };

    let result = orchestrator(&server).release(&request).await;

    assert!(failure_reason(&result).contains("documents no void"));
    assert!(server.received_requests().await.unwrap().is_empty());
}

// ---- answers ----

#[tokio::test]
async fn a_capture_not_approved_by_the_processor_fails_with_its_codes() {
    let mut body = capture_transaction("D", 125);
    body["authorization"]["processorCode"] = json!("05");
    body["authorization"]["processorMessage"] = json!("Do not honor");
    body["message"] = json!("Capture Declined");

    let result = capture_answered_with(answer(200, body)).await;

    let reason = failure_reason(&result);
    assert!(reason.contains("Do not honor"), "{reason}");
    assert_eq!(result.provider_code.as_deref(), Some("05"));
}

#[tokio::test]
async fn a_capture_of_another_amount_or_transaction_is_unknown_and_never_taken_as_success() {
    let other_amount = capture_answered_with(answer(200, capture_transaction("A", 100))).await;
    let mut other_auth = capture_transaction("A", 125);
    other_auth["originalTransactionId"] = json!("txn_someone_else");
    let other_original = capture_answered_with(answer(200, other_auth)).await;
    let mut not_capture = capture_transaction("A", 125);
    not_capture["type"] = json!("refund");
    let other_type = capture_answered_with(answer(200, not_capture)).await;

    for result in [other_amount, other_original, other_type] {
        assert!(is_unknown_with_key_spent(&result), "{result:?}");
    }
}

#[tokio::test]
async fn server_errors_are_unknown_because_nothing_protects_a_resend() {
    for status in [500, 502, 503] {
        let result = capture_answered_with(ResponseTemplate::new(status)).await;

        assert!(
            is_unknown_with_key_spent(&result),
            "HTTP {status}: {result:?}"
        );
    }
}

#[tokio::test]
async fn rate_limits_are_retryable() {
    let result = capture_answered_with(ResponseTemplate::new(429)).await;

    assert!(matches!(result.outcome, Outcome::Retryable { .. }));
}

#[tokio::test]
async fn refusals_fail_naming_what_went_wrong() {
    for (status, word) in [
        (400, "follow-on"),
        (422, "follow-on"),
        (401, "authentication"),
        (403, "permission"),
        (404, "no such transaction"),
        (409, "state"),
    ] {
        let result = capture_answered_with(answer(
            status,
            json!({"code": "capture_not_allowed", "message": "Follow-on captures are not enabled"}),
        ))
        .await;

        let reason = failure_reason(&result);
        assert!(reason.contains(word), "HTTP {status}: {reason}");
        assert!(reason.contains("capture_not_allowed"), "{reason}");
    }
}

#[tokio::test]
async fn timeout_after_sending_is_unknown_and_never_resent_blindly() {
    let late = answer(200, capture_transaction("A", 125));

    let result = capture_answered_late(
        |url, timeout| orchestrator_at(url, None, timeout),
        "/v1/transactions",
        late,
        &capture_request(true),
    )
    .await;

    assert!(is_unknown_with_key_spent(&result), "{result:?}");
}

#[tokio::test]
async fn refused_connection_is_retryable_because_nothing_was_sent() {
    let result = capture_with_nobody_listening(
        |url, timeout| orchestrator_at(url, None, timeout),
        &capture_request(true),
    )
    .await;

    assert!(is_retryable_at_once(&result), "{result:?}");
}

#[tokio::test]
async fn lookup_is_permanent_because_no_read_back_is_documented() {
    let server = MockServer::start().await;

    let result = orchestrator(&server).lookup(&authorization()).await;

    assert_permanent(&result);
}

// ---- capabilities and secrecy ----

#[test]
fn a_single_capture_by_default_and_follow_ons_only_where_the_merchant_has_them() {
    let single = orchestrator_at(
        "https://api.orchestrator.example",
        None,
        Duration::from_secs(1),
    );
    let one = orchestrator_at(
        "https://api.orchestrator.example",
        Some(1),
        Duration::from_secs(1),
    );
    let five = orchestrator_at(
        "https://api.orchestrator.example",
        Some(5),
        Duration::from_secs(1),
    );

    assert_eq!(single.capabilities().mode, CaptureMode::Single);
    assert_eq!(one.capabilities().mode, CaptureMode::Single);
    assert_eq!(
        five.capabilities().mode,
        CaptureMode::Multiple {
            max_captures: Some(5)
        }
    );
}

#[tokio::test]
async fn the_api_key_never_appears_in_debug_output_or_errors() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let provider = orchestrator(&server);
    let rejected = provider.capture(&capture_request(true)).await;

    assert_no_secret_shows(
        &format!("{provider:?}"),
        &[format!("{rejected:?}")],
        &["SecretNeverLogged"],
    );
}

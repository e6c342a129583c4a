//! The Checkout.com adapter against a mock Checkout.com: exact request shapes, and one test
//! per documented answer (reference/providers.md §4).

use std::time::Duration;

use capture_worker::config::Secret;
use capture_worker::domain::*;
use capture_worker::provider::checkout::CheckoutProvider;
use capture_worker::provider::{
    CallResult, CaptureRequest, Outcome, PaymentProvider, ReleaseRequest,
};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::provider_support::*;
use crate::support::*;

const SECRET_KEY: &str = "sk_sbox_SecretNeverLogged0123456789";
const PAYMENT: &str = "pay_mbabizu24mvu3mela5njyhpit4";
const CAPTURE_PATH: &str = "/payments/pay_mbabizu24mvu3mela5njyhpit4/captures";
const VOID_PATH: &str = "/payments/pay_mbabizu24mvu3mela5njyhpit4/voids";
const PAYMENT_PATH: &str = "/payments/pay_mbabizu24mvu3mela5njyhpit4";

fn checkout_at(base_url: &str, timeout: Duration) -> CheckoutProvider {
    CheckoutProvider::new(
        ProviderName::parse("checkout").unwrap(),
        base_url.to_owned(),
        Some(Secret::new(SECRET_KEY)),
        timeout,
    )
    .unwrap()
}

fn checkout(server: &MockServer) -> CheckoutProvider {
    checkout_at(&server.uri(), Duration::from_secs(10))
}

fn authorization() -> AuthorizationId {
    AuthorizationId::parse(PAYMENT).unwrap()
}

fn capture_request(is_final: bool) -> CaptureRequest {
    CaptureRequest {
        is_final,
        ..parcel_capture(
            "checkout",
            PAYMENT,
            "SHP-77",
            Money::new(m(2500), cur("GBP")),
        )
    }
}

fn release_request() -> ReleaseRequest {
    release_of("checkout", PAYMENT)
}

fn accepted(action: &str) -> Value {
    json!({
        "action_id": action,
        "reference": "ORD-1042/SHP-77",
        "_links": {"payment": {"href": format!("https://api.sandbox.checkout.com/payments/{PAYMENT}")}},
    })
}

fn cko_error(kind: &str, codes: &[&str]) -> Value {
    json!({"request_id": "0HL80RJLS76I7", "error_type": kind, "error_codes": codes})
}

fn answer(status: u16, body: Value) -> ResponseTemplate {
    json_answer(status, body, ("Cko-Request-Id", "req_cko_01"))
}

fn capture_mock(request: &CaptureRequest, response: ResponseTemplate) -> Mock {
    Mock::given(method("POST"))
        .and(path(CAPTURE_PATH))
        .and(header(
            "authorization",
            format!("Bearer {SECRET_KEY}").as_str(),
        ))
        .and(header(
            "cko-idempotency-key",
            request.idempotency_key.as_str(),
        ))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "amount": 2500,
            "capture_type": if request.is_final { "Final" } else { "NonFinal" },
            "reference": "ORD-1042/SHP-77",
        })))
        .respond_with(response)
        .expect(1)
}

async fn capture_answered_with(response: ResponseTemplate) -> CallResult {
    let request = capture_request(false);
    capture_against(capture_mock(&request, response), checkout, &request).await
}

// ---- request shapes ----

#[tokio::test]
async fn non_final_capture_sends_capture_type_non_final_and_is_pending_until_the_webhook() {
    let request = capture_request(false);
    let mock = capture_mock(
        &request,
        answer(202, accepted("act_y3oqhf46pyzuxjbcn2giaqnb44")),
    );

    let result = capture_against(mock, checkout, &request).await;

    assert_eq!(
        result.outcome,
        Outcome::Pending {
            reference: Some("act_y3oqhf46pyzuxjbcn2giaqnb44".to_owned())
        }
    );
    assert_eq!(result.http_status, Some(202));
    assert_eq!(result.provider_request_id.as_deref(), Some("req_cko_01"));
}

#[tokio::test]
async fn final_capture_sends_capture_type_final_explicitly() {
    let request = capture_request(true);
    let mock = capture_mock(&request, answer(202, accepted("act_final")));

    let result = capture_against(mock, checkout, &request).await;

    assert!(matches!(result.outcome, Outcome::Pending { .. }));
}

#[tokio::test]
async fn release_voids_the_payment_under_its_idempotency_key() {
    let server = MockServer::start().await;
    let request = release_request();
    Mock::given(method("POST"))
        .and(path(VOID_PATH))
        .and(header(
            "authorization",
            format!("Bearer {SECRET_KEY}").as_str(),
        ))
        .and(header(
            "cko-idempotency-key",
            request.idempotency_key.as_str(),
        ))
        .and(body_json(json!({"reference": "ORD-1042/release"})))
        .respond_with(answer(202, accepted("act_void")))
        .expect(1)
        .mount(&server)
        .await;

    let result = checkout(&server).release(&request).await;

    assert_eq!(
        result.outcome,
        Outcome::Pending {
            reference: Some("act_void".to_owned())
        }
    );
}

// ---- answers ----

#[tokio::test]
async fn an_accepted_answer_without_an_action_id_is_unknown() {
    let result = capture_answered_with(answer(202, json!({"reference": "x"}))).await;

    assert!(is_unknown_with_key_unspent(&result), "{result:?}");
}

#[tokio::test]
async fn capture_not_allowed_fails() {
    let result = capture_answered_with(ResponseTemplate::new(403)).await;

    assert!(failure_reason(&result).contains("capture not allowed"));
}

#[tokio::test]
async fn invalid_data_fails_with_checkouts_error_codes() {
    let result = capture_answered_with(answer(
        422,
        cko_error("request_invalid", &["amount_invalid", "reference_too_long"]),
    ))
    .await;

    let reason = failure_reason(&result);
    assert!(
        reason.contains("amount_invalid,reference_too_long"),
        "{reason}"
    );
    assert_eq!(
        result.provider_code.as_deref(),
        Some("request_invalid/amount_invalid,reference_too_long")
    );
}

#[tokio::test]
async fn client_errors_fail_naming_what_went_wrong() {
    for (status, word) in [
        (400, "refused the request"),
        (401, "authentication"),
        (404, "no such payment"),
    ] {
        let result = capture_answered_with(ResponseTemplate::new(status)).await;

        assert!(failure_reason(&result).contains(word), "HTTP {status}");
    }
}

#[tokio::test]
async fn conflicts_and_rate_limits_are_retryable() {
    for status in [409, 429] {
        let result = capture_answered_with(ResponseTemplate::new(status)).await;

        assert!(
            matches!(result.outcome, Outcome::Retryable { .. }),
            "HTTP {status}: {result:?}"
        );
    }
}

#[tokio::test]
async fn server_errors_are_read_back_before_any_resend_because_checkout_saves_no_5xx() {
    for status in [500, 502, 503] {
        let result = capture_answered_with(ResponseTemplate::new(status)).await;

        assert!(
            matches!(
                result.outcome,
                Outcome::Unknown {
                    key_spent: true,
                    ..
                }
            ),
            "HTTP {status}: {result:?}"
        );
    }
}

#[tokio::test]
async fn timeout_after_sending_is_unknown_with_the_key_unspent() {
    let late = answer(202, accepted("act_1"));

    let result =
        capture_answered_late(checkout_at, CAPTURE_PATH, late, &capture_request(false)).await;

    assert!(is_unknown_with_key_unspent(&result), "{result:?}");
}

#[tokio::test]
async fn refused_connection_is_retryable_because_nothing_was_sent() {
    let result = capture_with_nobody_listening(checkout_at, &capture_request(false)).await;

    assert!(is_retryable_at_once(&result), "{result:?}");
}

// ---- lookup ----

fn payment(status: &str, captured: i64, capturable: i64) -> Value {
    json!({
        "id": PAYMENT,
        "status": status,
        "amount": 10000,
        "currency": "GBP",
        "balances": {
            "total_authorized": 10000,
            "total_voided": 0,
            "available_to_void": capturable,
            "total_captured": captured,
            "available_to_capture": capturable,
            "total_refunded": 0,
            "available_to_refund": captured,
        },
    })
}

#[tokio::test]
async fn lookup_reads_the_payments_balances() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(PAYMENT_PATH))
        .and(header(
            "authorization",
            format!("Bearer {SECRET_KEY}").as_str(),
        ))
        .respond_with(answer(200, payment("Partially Captured", 2500, 7500)))
        .expect(1)
        .mount(&server)
        .await;

    let snapshot = checkout(&server).lookup(&authorization()).await.unwrap();

    assert_eq!(snapshot.captured, Money::new(m(2500), cur("GBP")));
    assert_eq!(snapshot.capturable, Money::new(m(7500), cur("GBP")));
    assert_eq!(snapshot.status, "Partially Captured");
}

#[tokio::test]
async fn lookup_of_a_pending_payment_asks_to_be_retried_and_an_unknown_one_is_permanent() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(PAYMENT_PATH))
        .respond_with(answer(200, payment("Pending", 0, 0)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(PAYMENT_PATH))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let provider = checkout(&server);

    let pending = provider.lookup(&authorization()).await;
    let missing = provider.lookup(&authorization()).await;

    assert_retryable(&pending);
    assert_permanent(&missing);
}

// ---- configuration and secrecy ----

#[tokio::test]
async fn the_secret_key_never_appears_in_debug_output_or_errors() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let provider = checkout(&server);
    let rejected = provider.capture(&capture_request(false)).await;

    assert_no_secret_shows(
        &format!("{provider:?}"),
        &[format!("{rejected:?}")],
        &["SecretNeverLogged"],
    );
}

#[test]
fn capabilities_allow_at_most_150_captures_with_an_explicit_final_flag() {
    let provider = checkout_at("https://api.sandbox.checkout.com", Duration::from_secs(1));

    let caps = provider.capabilities();
    assert_eq!(caps, Capabilities::checkout());
    assert_eq!(
        caps.mode,
        CaptureMode::Multiple {
            max_captures: Some(150)
        }
    );
    assert_eq!(caps.final_flag, FinalFlag::Explicit);
}

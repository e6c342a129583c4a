//! The Stripe adapter against a mock Stripe: exact request shapes, and one test per documented
//! answer (reference/providers.md §1.4–1.7).

use std::time::Duration;

use capture_worker::config::Secret;
use capture_worker::domain::*;
use capture_worker::provider::stripe::{STRIPE_VERSION, StripeProvider};
use capture_worker::provider::{
    CallResult, CaptureRequest, LookupError, Outcome, PaymentProvider, ReleaseRequest,
};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Match, Mock, MockServer, Request, ResponseTemplate};

use crate::provider_support::*;
use crate::support::*;

const API_KEY: &str = "sk_test_51HxSecretNeverLogged0123456789";
const PI: &str = "pi_3QxCaptureWorker01";
const CAPTURE_PATH: &str = "/v1/payment_intents/pi_3QxCaptureWorker01/capture";
const CANCEL_PATH: &str = "/v1/payment_intents/pi_3QxCaptureWorker01/cancel";
const INTENT_PATH: &str = "/v1/payment_intents/pi_3QxCaptureWorker01";

fn stripe_at(base_url: &str, api_key: Option<&str>, timeout: Duration) -> StripeProvider {
    StripeProvider::new(
        ProviderName::parse("stripe").unwrap(),
        base_url.to_owned(),
        api_key.map(Secret::new),
        timeout,
    )
    .unwrap()
}

fn stripe(server: &MockServer) -> StripeProvider {
    stripe_at(&server.uri(), Some(API_KEY), Duration::from_secs(10))
}

fn authorization() -> AuthorizationId {
    AuthorizationId::parse(PI).unwrap()
}

/// The second parcel of ORD-1042, in USD.
fn capture_request(amount: i64, is_final: bool) -> CaptureRequest {
    CaptureRequest {
        is_final,
        ..parcel_capture("stripe", PI, "SHP-77", Money::new(m(amount), cur("USD")))
    }
}

fn release_request() -> ReleaseRequest {
    release_of("stripe", PI)
}

/// A PaymentIntent as Stripe returns it (trimmed to the fields that matter plus a few others).
fn payment_intent(status: &str, capturable: i64, received: i64, latest_charge: Value) -> Value {
    json!({
        "id": PI,
        "object": "payment_intent",
        "amount": 10000,
        "amount_capturable": capturable,
        "amount_received": received,
        "capture_method": "manual",
        "currency": "usd",
        "latest_charge": latest_charge,
        "livemode": false,
        "metadata": {"order_id": "ORD-1042"},
        "status": status,
    })
}

fn stripe_error(
    kind: &str,
    code: Option<&str>,
    decline_code: Option<&str>,
    message: &str,
) -> Value {
    let mut error = json!({
        "type": kind,
        "message": message,
        "doc_url": "https://stripe.com/docs/error-codes",
        "request_log_url": "https://dashboard.stripe.com/test/logs/req_abc",
    });
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    if let Some(decline_code) = decline_code {
        error["decline_code"] = json!(decline_code);
    }
    json!({ "error": error })
}

fn answer(status: u16, body: Value) -> ResponseTemplate {
    json_answer(status, body, ("Request-Id", "req_8fG2kLm3Np"))
}

/// Matches a form-encoded body with exactly these fields, in any order, nothing more.
struct FormBody(Vec<(String, String)>);

impl FormBody {
    fn of(fields: &[(&str, &str)]) -> Self {
        let mut fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        fields.sort();
        FormBody(fields)
    }
}

impl Match for FormBody {
    fn matches(&self, request: &Request) -> bool {
        let mut got: Vec<(String, String)> =
            form_urlencoded::parse(&request.body).into_owned().collect();
        got.sort();
        got == self.0
    }
}

fn form_of(request: &CaptureRequest) -> FormBody {
    let amount = request.amount.amount().get().to_string();
    let sequence = request.sequence.to_string();
    FormBody::of(&[
        ("amount_to_capture", &amount),
        (
            "final_capture",
            if request.is_final { "true" } else { "false" },
        ),
        ("metadata[order_id]", request.order_id.as_str()),
        ("metadata[capture_cause]", &request.cause),
        ("metadata[capture_sequence]", &sequence),
    ])
}

/// A mock that answers only a capture of exactly `request`'s shape.
fn capture_mock(request: &CaptureRequest, response: ResponseTemplate) -> Mock {
    Mock::given(method("POST"))
        .and(path(CAPTURE_PATH))
        .and(header("Idempotency-Key", request.idempotency_key.as_str()))
        .and(header(
            "Authorization",
            format!("Bearer {API_KEY}").as_str(),
        ))
        .and(header("Content-Type", "application/x-www-form-urlencoded"))
        .and(header("Stripe-Version", STRIPE_VERSION))
        .and(form_of(request))
        .respond_with(response)
        .expect(1)
}

/// Sends the standard non-final capture to a mock that gives `response` to exactly its shape.
async fn capture_answered_with(response: ResponseTemplate) -> CallResult {
    let request = capture_request(2500, false);
    capture_against(capture_mock(&request, response), stripe, &request).await
}

// ---- capture: request shape and success ----

#[tokio::test]
async fn capture_posts_the_exact_stripe_form_and_records_the_charge_id() {
    let request = capture_request(2500, true);
    let mock = capture_mock(
        &request,
        answer(
            200,
            payment_intent("succeeded", 0, 2500, json!("ch_3QxCharge01")),
        ),
    );

    let result = capture_against(mock, stripe, &request).await;

    assert_eq!(
        result.outcome,
        Outcome::Succeeded {
            reference: Some("ch_3QxCharge01".to_owned())
        }
    );
    assert_eq!(result.http_status, Some(200));
    assert_eq!(result.provider_code, None);
    assert_eq!(
        result.provider_request_id.as_deref(),
        Some("req_8fG2kLm3Np")
    );
    assert!(result.latency > Duration::ZERO);
}

#[tokio::test]
async fn partial_capture_sends_final_capture_false_explicitly() {
    let server = MockServer::start().await;
    let request = capture_request(2500, false);
    capture_mock(
        &request,
        answer(
            200,
            payment_intent("requires_capture", 7500, 2500, json!("ch_3QxCharge01")),
        ),
    )
    .mount(&server)
    .await;

    let result = stripe(&server).capture(&request).await;

    assert!(matches!(result.outcome, Outcome::Succeeded { .. }));
    let received = server.received_requests().await.unwrap();
    let fields: Vec<(String, String)> = form_urlencoded::parse(&received[0].body)
        .into_owned()
        .collect();
    assert!(fields.contains(&("final_capture".to_owned(), "false".to_owned())));
    assert!(fields.contains(&("amount_to_capture".to_owned(), "2500".to_owned())));
}

#[tokio::test]
async fn isk_is_sent_times_100_as_stripe_takes_it_with_two_zero_decimals() {
    // 7205 ISK (ISO 4217: no decimals) is Stripe's 720500.
    let request = CaptureRequest {
        is_final: false,
        ..parcel_capture("stripe", PI, "SHP-77", Money::new(m(7205), cur("ISK")))
    };
    let sequence = request.sequence.to_string();
    let mut intent = payment_intent("requires_capture", 279_500, 720_500, json!("ch_3QxIsk"));
    intent["currency"] = json!("isk");
    let mock = Mock::given(method("POST"))
        .and(path(CAPTURE_PATH))
        .and(header("Idempotency-Key", request.idempotency_key.as_str()))
        .and(header("Stripe-Version", STRIPE_VERSION))
        .and(FormBody::of(&[
            ("amount_to_capture", "720500"),
            ("final_capture", "false"),
            ("metadata[order_id]", request.order_id.as_str()),
            ("metadata[capture_cause]", &request.cause),
            ("metadata[capture_sequence]", &sequence),
        ]))
        .respond_with(answer(200, intent))
        .expect(1);

    let result = capture_against(mock, stripe, &request).await;

    assert_eq!(
        result.outcome,
        Outcome::Succeeded {
            reference: Some("ch_3QxIsk".to_owned())
        }
    );
}

#[tokio::test]
async fn an_isk_payment_intent_is_read_back_in_iso_minor_units() {
    let server = MockServer::start().await;
    let mut intent = payment_intent("requires_capture", 279_500, 720_500, json!("ch_3QxIsk"));
    intent["currency"] = json!("isk");
    Mock::given(method("GET"))
        .and(path(INTENT_PATH))
        .respond_with(answer(200, intent))
        .expect(1)
        .mount(&server)
        .await;

    let snapshot = stripe(&server).lookup(&authorization()).await.unwrap();

    assert_eq!(snapshot.captured, Money::new(m(7205), cur("ISK")));
    assert_eq!(snapshot.capturable, Money::new(m(2795), cur("ISK")));
}

#[tokio::test]
async fn success_without_a_charge_is_referenced_by_the_payment_intent() {
    let result = capture_answered_with(answer(
        200,
        payment_intent("requires_capture", 7500, 2500, Value::Null),
    ))
    .await;

    assert_eq!(
        result.outcome,
        Outcome::Succeeded {
            reference: Some(PI.to_owned())
        }
    );
}

#[tokio::test]
async fn no_authorization_header_is_sent_without_an_api_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CAPTURE_PATH))
        .respond_with(answer(
            200,
            payment_intent("requires_capture", 7500, 2500, json!("ch_1")),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let sandbox = StripeProvider::new(
        ProviderName::parse("sandbox").unwrap(),
        server.uri(),
        None,
        Duration::from_secs(10),
    )
    .unwrap();

    let result = sandbox.capture(&capture_request(2500, false)).await;

    assert!(matches!(result.outcome, Outcome::Succeeded { .. }));
    let received = server.received_requests().await.unwrap();
    assert!(received[0].headers.get("authorization").is_none());
    assert_eq!(
        received[0].headers.get("idempotency-key").unwrap(),
        key("stripe", PI, "SHP-77").as_str()
    );
}

#[tokio::test]
async fn authorization_ids_are_one_escaped_path_segment() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents/pi%2F1%23x/capture"))
        .respond_with(answer(
            200,
            payment_intent("requires_capture", 0, 1, json!("ch_1")),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let mut request = capture_request(2500, false);
    request.authorization_id = AuthorizationId::parse("pi/1#x").unwrap();

    let result = stripe(&server).capture(&request).await;

    assert!(matches!(result.outcome, Outcome::Succeeded { .. }));
}

#[tokio::test]
async fn a_base_url_with_a_path_keeps_it() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/stripe/v1/payment_intents/pi_3QxCaptureWorker01/capture",
        ))
        .respond_with(answer(
            200,
            payment_intent("requires_capture", 0, 1, json!("ch_1")),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let provider = stripe_at(
        &format!("{}/stripe/", server.uri()),
        Some(API_KEY),
        Duration::from_secs(10),
    );

    let result = provider.capture(&capture_request(2500, false)).await;

    assert!(matches!(result.outcome, Outcome::Succeeded { .. }));
}

#[tokio::test]
async fn unreadable_success_body_is_unknown_with_the_key_unspent() {
    let result = capture_answered_with(
        ResponseTemplate::new(200).set_body_raw("<html>oops</html>", "text/html"),
    )
    .await;

    assert!(is_unknown_with_key_unspent(&result), "{result:?}");
    assert_eq!(result.http_status, Some(200));
}

// ---- capture: declines and errors ----

#[tokio::test]
async fn declined_card_is_an_outcome_not_an_error() {
    let result = capture_answered_with(answer(
        402,
        stripe_error(
            "card_error",
            Some("card_declined"),
            Some("insufficient_funds"),
            "Your card has insufficient funds.",
        ),
    ))
    .await;

    assert_eq!(
        result.outcome,
        Outcome::Declined {
            code: "insufficient_funds".to_owned(),
            message: "Your card has insufficient funds.".to_owned(),
        }
    );
    assert_eq!(result.http_status, Some(402));
    assert_eq!(
        result.provider_code.as_deref(),
        Some("card_error/card_declined")
    );
    assert_eq!(
        result.provider_request_id.as_deref(),
        Some("req_8fG2kLm3Np")
    );
}

#[tokio::test]
async fn decline_without_a_decline_code_uses_the_error_code() {
    let result = capture_answered_with(answer(
        402,
        stripe_error(
            "card_error",
            Some("expired_card"),
            None,
            "Your card has expired.",
        ),
    ))
    .await;

    assert_eq!(
        result.outcome,
        Outcome::Declined {
            code: "expired_card".to_owned(),
            message: "Your card has expired.".to_owned(),
        }
    );
    assert_eq!(
        result.provider_code.as_deref(),
        Some("card_error/expired_card")
    );
}

#[tokio::test]
async fn decline_with_no_code_at_all_is_card_declined() {
    let result = capture_answered_with(answer(
        402,
        stripe_error("card_error", None, None, "Your card was declined."),
    ))
    .await;

    assert_eq!(
        result.outcome,
        Outcome::Declined {
            code: "card_declined".to_owned(),
            message: "Your card was declined.".to_owned(),
        }
    );
    assert_eq!(result.provider_code.as_deref(), Some("card_error"));
}

#[tokio::test]
async fn should_retry_true_makes_any_status_retryable() {
    for status in [400, 402, 409, 500] {
        let result = capture_answered_with(
            answer(
                status,
                stripe_error(
                    "api_error",
                    Some("lock_timeout"),
                    None,
                    "This object cannot be accessed right now.",
                ),
            )
            .insert_header("Stripe-Should-Retry", "true"),
        )
        .await;

        assert!(
            matches!(result.outcome, Outcome::Retryable { .. }),
            "HTTP {status}: {result:?}"
        );
        assert_eq!(result.http_status, Some(status));
    }
}

#[tokio::test]
async fn saved_server_error_with_should_retry_false_spends_the_key() {
    let result = capture_answered_with(
        answer(
            500,
            stripe_error("api_error", None, None, "An unknown error occurred"),
        )
        .insert_header("Stripe-Should-Retry", "false"),
    )
    .await;

    match &result.outcome {
        Outcome::Unknown { key_spent, reason } => {
            assert!(*key_spent);
            assert!(reason.contains("read the PaymentIntent back"), "{reason}");
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
    assert_eq!(result.http_status, Some(500));
    assert_eq!(result.provider_code.as_deref(), Some("api_error"));
}

#[tokio::test]
async fn a_replayed_server_error_spends_the_key_even_without_should_retry() {
    let result = capture_answered_with(
        answer(
            500,
            stripe_error("api_error", None, None, "An unknown error occurred"),
        )
        .insert_header("Idempotent-Replayed", "true"),
    )
    .await;

    match &result.outcome {
        Outcome::Unknown { key_spent, reason } => {
            assert!(*key_spent);
            assert!(reason.contains("Idempotent-Replayed"), "{reason}");
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
}

#[tokio::test]
async fn a_first_server_error_without_headers_is_retried_under_the_same_key() {
    let result = capture_answered_with(answer(
        500,
        stripe_error("api_error", None, None, "An unknown error occurred"),
    ))
    .await;

    assert!(
        matches!(result.outcome, Outcome::Retryable { .. }),
        "{result:?}"
    );
}

#[tokio::test]
async fn conflict_on_the_idempotency_key_is_retryable() {
    let result = capture_answered_with(answer(
        409,
        stripe_error(
            "invalid_request_error",
            Some("idempotency_key_in_use"),
            None,
            "There is currently another in-progress request using this Idempotent Key.",
        ),
    ))
    .await;

    assert_eq!(retry_after(&result), None);
    assert_eq!(
        result.provider_code.as_deref(),
        Some("invalid_request_error/idempotency_key_in_use")
    );
}

#[tokio::test]
async fn rate_limit_is_retryable_after_the_retry_after_seconds() {
    let rate_limited = || {
        answer(
            429,
            stripe_error(
                "invalid_request_error",
                Some("rate_limit"),
                None,
                "Too many requests hit the API too quickly.",
            ),
        )
    };

    let told = capture_answered_with(rate_limited().insert_header("Retry-After", "7")).await;
    let untold = capture_answered_with(rate_limited()).await;
    let dated = capture_answered_with(
        rate_limited().insert_header("Retry-After", "Wed, 21 Oct 2026 07:28:00 GMT"),
    )
    .await;

    assert_eq!(retry_after(&told), Some(Duration::from_secs(7)));
    assert_eq!(retry_after(&untold), None);
    assert_eq!(retry_after(&dated), None);
    assert_eq!(told.http_status, Some(429));
}

#[tokio::test]
async fn retry_after_is_capped_at_sixty_seconds() {
    let result = capture_answered_with(
        answer(
            429,
            stripe_error(
                "invalid_request_error",
                Some("rate_limit"),
                None,
                "Slow down.",
            ),
        )
        .insert_header("Retry-After", "3600"),
    )
    .await;

    assert_eq!(retry_after(&result), Some(Duration::from_secs(60)));
}

#[tokio::test]
async fn server_error_without_a_retry_header_is_retryable() {
    for status in [500, 502, 503, 504] {
        let result = capture_answered_with(ResponseTemplate::new(status)).await;

        assert!(
            matches!(result.outcome, Outcome::Retryable { .. }),
            "HTTP {status}: {result:?}"
        );
        assert_eq!(result.http_status, Some(status));
        assert_eq!(result.provider_code, None);
    }
}

#[tokio::test]
async fn key_reused_with_different_parameters_fails_as_a_bug() {
    let result = capture_answered_with(answer(
        400,
        stripe_error(
            "idempotency_error",
            None,
            None,
            "Keys for idempotent requests can only be used with the same parameters they were first used with.",
        ),
    ))
    .await;

    let reason = failure_reason(&result);
    assert!(reason.contains("different parameters"), "{reason}");
    assert_eq!(result.provider_code.as_deref(), Some("idempotency_error"));
}

#[tokio::test]
async fn invalid_requests_fail_with_stripes_code_in_the_reason() {
    for code in [
        "charge_expired_for_capture",
        "amount_too_large",
        "payment_intent_unexpected_state",
        "capture_unauthorized_payment",
    ] {
        let result = capture_answered_with(answer(
            400,
            stripe_error("invalid_request_error", Some(code), None, "Stripe says no."),
        ))
        .await;

        let reason = failure_reason(&result);
        assert!(reason.contains(code), "{reason}");
        assert_eq!(
            result.provider_code,
            Some(format!("invalid_request_error/{code}"))
        );
        assert_eq!(result.http_status, Some(400));
    }
}

#[tokio::test]
async fn rejected_api_key_fails_naming_authentication() {
    let result = capture_answered_with(answer(
        401,
        stripe_error(
            "invalid_request_error",
            None,
            None,
            "Invalid API Key provided: sk_test_****6789",
        ),
    ))
    .await;

    assert!(failure_reason(&result).contains("authentication"));
}

#[tokio::test]
async fn forbidden_key_fails_naming_permission() {
    let result = capture_answered_with(answer(
        403,
        stripe_error(
            "invalid_request_error",
            None,
            None,
            "The provided key does not have access to this resource.",
        ),
    ))
    .await;

    assert!(failure_reason(&result).contains("permission"));
}

#[tokio::test]
async fn unknown_payment_intent_fails() {
    let result = capture_answered_with(answer(
        404,
        stripe_error(
            "invalid_request_error",
            Some("resource_missing"),
            None,
            "No such payment_intent: 'pi_3QxCaptureWorker01'",
        ),
    ))
    .await;

    let reason = failure_reason(&result);
    assert!(reason.contains("no such PaymentIntent"), "{reason}");
    assert_eq!(
        result.provider_code.as_deref(),
        Some("invalid_request_error/resource_missing")
    );
}

#[tokio::test]
async fn any_other_status_fails_naming_the_status() {
    let result = capture_answered_with(ResponseTemplate::new(424)).await;

    assert!(failure_reason(&result).contains("424"));
    assert_eq!(result.http_status, Some(424));
}

// ---- capture: transport ----

#[tokio::test]
async fn timeout_after_sending_is_unknown_with_the_key_unspent() {
    let late = answer(200, payment_intent("requires_capture", 0, 1, json!("ch_1")));
    let connect = |url: &str, timeout| stripe_at(url, Some(API_KEY), timeout);

    let result =
        capture_answered_late(connect, CAPTURE_PATH, late, &capture_request(2500, false)).await;

    assert!(is_unknown_with_key_unspent(&result), "{result:?}");
    assert_eq!(result.http_status, None);
    assert!(result.latency >= TIMEOUT_BEFORE_THE_ANSWER);
}

#[tokio::test]
async fn refused_connection_is_retryable_because_nothing_was_sent() {
    let connect = |url: &str, timeout| stripe_at(url, Some(API_KEY), timeout);

    let result = capture_with_nobody_listening(connect, &capture_request(2500, false)).await;

    assert!(is_retryable_at_once(&result), "{result:?}");
    assert_eq!(result.http_status, None);
}

// ---- release ----

#[tokio::test]
async fn release_cancels_the_payment_intent_under_its_idempotency_key() {
    let server = MockServer::start().await;
    let request = release_request();
    Mock::given(method("POST"))
        .and(path(CANCEL_PATH))
        .and(header("Idempotency-Key", request.idempotency_key.as_str()))
        .and(header(
            "Authorization",
            format!("Bearer {API_KEY}").as_str(),
        ))
        .and(FormBody::of(&[]))
        .respond_with(answer(
            200,
            payment_intent("canceled", 0, 2500, json!("ch_3QxCharge01")),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let result = stripe(&server).release(&request).await;

    assert_eq!(
        result.outcome,
        Outcome::Succeeded {
            reference: Some(PI.to_owned())
        }
    );
    assert_eq!(result.http_status, Some(200));
    assert_eq!(
        result.provider_request_id.as_deref(),
        Some("req_8fG2kLm3Np")
    );
}

#[tokio::test]
async fn release_routes_errors_like_capture() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CANCEL_PATH))
        .respond_with(answer(
            400,
            stripe_error(
                "invalid_request_error",
                Some("payment_intent_unexpected_state"),
                None,
                "You cannot cancel this PaymentIntent because it has a status of succeeded.",
            ),
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(CANCEL_PATH))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let provider = stripe(&server);

    let refused = provider.release(&release_request()).await;
    let unavailable = provider.release(&release_request()).await;

    assert!(failure_reason(&refused).contains("payment_intent_unexpected_state"));
    assert_eq!(retry_after(&unavailable), None);
}

// ---- lookup ----

#[tokio::test]
async fn lookup_reads_captured_capturable_and_currency() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(INTENT_PATH))
        .and(header("Stripe-Version", "2024-06-20"))
        .and(header(
            "Authorization",
            format!("Bearer {API_KEY}").as_str(),
        ))
        .respond_with(answer(
            200,
            payment_intent("requires_capture", 7500, 2500, json!("ch_3QxCharge01")),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let snapshot = stripe(&server).lookup(&authorization()).await.unwrap();

    assert_eq!(snapshot.authorization_id, authorization());
    assert_eq!(snapshot.captured, Money::new(m(2500), cur("USD")));
    assert_eq!(snapshot.capturable, Money::new(m(7500), cur("USD")));
    assert_eq!(snapshot.status, "requires_capture");
    let received = server.received_requests().await.unwrap();
    assert!(received[0].headers.get("idempotency-key").is_none());
}

#[tokio::test]
async fn lookup_server_errors_and_rate_limits_are_retryable() {
    for status in [429, 500, 503] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(INTENT_PATH))
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;

        let result = stripe(&server).lookup(&authorization()).await;

        assert!(
            matches!(result, Err(LookupError::Retryable { .. })),
            "HTTP {status}: {result:?}"
        );
    }
}

#[tokio::test]
async fn lookup_of_an_unknown_payment_intent_is_permanent() {
    let server = serving_get(
        INTENT_PATH,
        answer(
            404,
            stripe_error(
                "invalid_request_error",
                Some("resource_missing"),
                None,
                "No such payment_intent: 'pi_3QxCaptureWorker01'",
            ),
        ),
    )
    .await;

    let result = stripe(&server).lookup(&authorization()).await;

    let reason = assert_permanent(&result);
    assert!(reason.contains("resource_missing"), "{reason}");
}

#[tokio::test]
async fn lookup_with_an_unknown_currency_is_permanent() {
    let server = MockServer::start().await;
    let mut body = payment_intent("requires_capture", 7500, 2500, json!("ch_1"));
    body["currency"] = json!("zzz");
    Mock::given(method("GET"))
        .and(path(INTENT_PATH))
        .respond_with(answer(200, body))
        .mount(&server)
        .await;

    let result = stripe(&server).lookup(&authorization()).await;

    assert_permanent(&result);
}

#[tokio::test]
async fn lookup_over_a_refused_connection_is_retryable() {
    let provider = stripe_at(&closed_port_url(), Some(API_KEY), Duration::from_secs(5));

    let result = provider.lookup(&authorization()).await;

    assert_retryable(&result);
}

// ---- configuration and secrecy ----

#[tokio::test]
async fn the_api_key_never_appears_in_debug_output() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CAPTURE_PATH))
        .respond_with(answer(
            401,
            stripe_error(
                "invalid_request_error",
                None,
                None,
                "Invalid API Key provided: sk_test_****6789",
            ),
        ))
        .mount(&server)
        .await;
    let provider = stripe(&server);

    let rejected = provider.capture(&capture_request(2500, false)).await;
    let refused = stripe_at(&closed_port_url(), Some(API_KEY), Duration::from_secs(2))
        .capture(&capture_request(2500, false))
        .await;
    let lookup = provider.lookup(&authorization()).await;
    let bad_url = StripeProvider::new(
        ProviderName::parse("stripe").unwrap(),
        "not a url".to_owned(),
        Some(Secret::new(API_KEY)),
        Duration::from_secs(1),
    );
    let bad_key = StripeProvider::new(
        ProviderName::parse("stripe").unwrap(),
        server.uri(),
        Some(Secret::new(format!("{API_KEY}\n"))),
        Duration::from_secs(1),
    );

    let printed = [
        format!("{rejected:?}"),
        format!("{refused:?}"),
        format!("{lookup:?}"),
        format!("{bad_url:?}"),
        format!("{bad_key:?}"),
        bad_key.map(|_| String::new()).unwrap_err().to_string(),
    ];
    assert_no_secret_shows(&format!("{provider:?}"), &printed, &[API_KEY, "51HxSecret"]);
}

#[test]
fn name_is_as_configured_and_capabilities_are_stripes() {
    let sandbox = StripeProvider::new(
        ProviderName::parse("sandbox").unwrap(),
        "http://127.0.0.1:8081".to_owned(),
        None,
        Duration::from_secs(10),
    )
    .unwrap();

    assert_eq!(sandbox.name(), "sandbox");
    assert_eq!(sandbox.capabilities(), Capabilities::stripe());
}

#[test]
fn setup_rejects_bad_urls_keys_and_timeouts() {
    let build = |url: &str, key: Option<&str>, timeout: Duration| {
        StripeProvider::new(
            ProviderName::parse("stripe").unwrap(),
            url.to_owned(),
            key.map(Secret::new),
            timeout,
        )
    };
    let one_second = Duration::from_secs(1);

    assert!(build("api.stripe.com", None, one_second).is_err());
    assert!(build("ftp://api.stripe.com", None, one_second).is_err());
    assert!(build("https://api.stripe.com?x=1", None, one_second).is_err());
    assert!(build("https://api.stripe.com", Some(""), one_second).is_err());
    assert!(build("https://api.stripe.com", None, Duration::ZERO).is_err());
    let with_credentials = build("https://user:hunter2@api.stripe.com", None, one_second)
        .unwrap_err()
        .to_string();
    assert!(!with_credentials.contains("hunter2"), "{with_credentials}");
    assert!(build("https://api.stripe.com", Some(API_KEY), one_second).is_ok());
}

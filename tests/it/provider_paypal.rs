//! The PayPal adapter against a mock PayPal: the OAuth token, exact request shapes, and one
//! test per documented answer (reference/providers.md §5.2).

use std::time::Duration;

use base64::Engine as _;
use capture_worker::config::Secret;
use capture_worker::domain::*;
use capture_worker::provider::paypal::PayPalProvider;
use capture_worker::provider::{
    CallResult, CaptureRequest, Outcome, PaymentProvider, ReleaseRequest,
};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, body_string, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::provider_support::*;
use crate::support::*;

const CLIENT_ID: &str = "AcmeClientId01";
const CLIENT_SECRET: &str = "EPaypalSecretNeverLogged0123456789";
const ACCESS_TOKEN: &str = "A21AAAccessTokenNeverLogged";
const AUTH: &str = "0VF52814937998046";
const ORDER: &str = "5O190127TN364715T";
const TOKEN_PATH: &str = "/v1/oauth2/token";
const CAPTURE_PATH: &str = "/v2/payments/authorizations/0VF52814937998046/capture";
const VOID_PATH: &str = "/v2/payments/authorizations/0VF52814937998046/void";
const AUTH_PATH: &str = "/v2/payments/authorizations/0VF52814937998046";
const ORDER_PATH: &str = "/v2/checkout/orders/5O190127TN364715T";

fn paypal_at(base_url: &str, timeout: Duration) -> PayPalProvider {
    PayPalProvider::new(
        ProviderName::parse("paypal").unwrap(),
        base_url.to_owned(),
        Some(CLIENT_ID.to_owned()),
        Some(Secret::new(CLIENT_SECRET)),
        timeout,
    )
    .unwrap()
}

fn paypal(server: &MockServer) -> PayPalProvider {
    paypal_at(&server.uri(), Duration::from_secs(10))
}

fn authorization() -> AuthorizationId {
    AuthorizationId::parse(AUTH).unwrap()
}

fn capture_request(amount: Money, is_final: bool) -> CaptureRequest {
    CaptureRequest {
        is_final,
        ..parcel_capture("paypal", AUTH, "SHP-77", amount)
    }
}

fn usd(minor: i64) -> Money {
    Money::new(m(minor), cur("USD"))
}

fn release_request() -> ReleaseRequest {
    release_of("paypal", AUTH)
}

/// The token endpoint, answering the app's Basic credentials `times` times.
fn token_mock(times: u64) -> Mock {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .and(header("authorization", format!("Basic {basic}").as_str()))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string("grant_type=client_credentials"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "scope": "https://uri.paypal.com/services/payments/payment",
            "access_token": ACCESS_TOKEN,
            "token_type": "Bearer",
            "app_id": "APP-80W284485P519543T",
            "expires_in": 32400,
            "nonce": "2026-11-21T10:00:00Znonce",
        })))
        .expect(times)
}

fn capture(status: &str, reason: Option<&str>) -> Value {
    let mut body = json!({
        "id": "2GG279541U471931P",
        "status": status,
        "amount": {"currency_code": "USD", "value": "25.00"},
        "final_capture": false,
        "invoice_id": "ORD-1042/SHP-77",
        "links": [{"href": format!("https://api-m.paypal.com/v2/payments/authorizations/{AUTH}"), "rel": "up", "method": "GET"}],
    });
    if let Some(reason) = reason {
        body["status_details"] = json!({"reason": reason});
    }
    body
}

fn paypal_error(
    status: u16,
    name: &str,
    issue: Option<&str>,
    description: &str,
) -> ResponseTemplate {
    let mut body = json!({"name": name, "message": "The requested action could not be performed.", "debug_id": "90957fca61718"});
    if let Some(issue) = issue {
        body["details"] = json!([{"issue": issue, "description": description}]);
    }
    answer(status, body)
}

fn answer(status: u16, body: Value) -> ResponseTemplate {
    json_answer(status, body, ("Paypal-Debug-Id", "90957fca61718"))
}

fn capture_mock(request: &CaptureRequest, value: &str, response: ResponseTemplate) -> Mock {
    Mock::given(method("POST"))
        .and(path(CAPTURE_PATH))
        .and(header(
            "authorization",
            format!("Bearer {ACCESS_TOKEN}").as_str(),
        ))
        .and(header(
            "paypal-request-id",
            request.idempotency_key.as_str(),
        ))
        .and(header("prefer", "return=representation"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "amount": {"currency_code": request.amount.currency().code(), "value": value},
            "invoice_id": "ORD-1042/SHP-77",
            "final_capture": request.is_final,
        })))
        .respond_with(response)
        .expect(1)
}

async fn capture_answered_with(response: ResponseTemplate) -> CallResult {
    let server = MockServer::start().await;
    token_mock(1).mount(&server).await;
    let request = capture_request(usd(2500), false);
    capture_mock(&request, "25.00", response)
        .mount(&server)
        .await;
    paypal(&server).capture(&request).await
}

// ---- request shapes ----

#[tokio::test]
async fn non_final_capture_sends_a_decimal_amount_and_final_capture_false_with_a_fresh_token() {
    let server = MockServer::start().await;
    token_mock(1).mount(&server).await;
    let request = capture_request(usd(2500), false);
    capture_mock(&request, "25.00", answer(201, capture("COMPLETED", None)))
        .mount(&server)
        .await;

    let result = paypal(&server).capture(&request).await;

    assert_eq!(
        result.outcome,
        Outcome::Succeeded {
            reference: Some("2GG279541U471931P".to_owned())
        }
    );
    assert_eq!(result.http_status, Some(201));
    assert_eq!(result.provider_request_id.as_deref(), Some("90957fca61718"));
}

#[tokio::test]
async fn final_capture_sends_final_capture_true_because_paypal_defaults_to_false() {
    let server = MockServer::start().await;
    token_mock(1).mount(&server).await;
    let request = capture_request(usd(2500), true);
    capture_mock(&request, "25.00", answer(201, capture("COMPLETED", None)))
        .mount(&server)
        .await;

    let result = paypal(&server).capture(&request).await;

    assert!(matches!(result.outcome, Outcome::Succeeded { .. }));
}

#[tokio::test]
async fn a_zero_decimal_currency_is_sent_without_a_decimal_point() {
    let server = MockServer::start().await;
    token_mock(1).mount(&server).await;
    let request = capture_request(Money::new(m(1234), cur("JPY")), false);
    capture_mock(&request, "1234", answer(201, capture("COMPLETED", None)))
        .mount(&server)
        .await;

    let result = paypal(&server).capture(&request).await;

    assert!(
        matches!(result.outcome, Outcome::Succeeded { .. }),
        "{result:?}"
    );
}

#[tokio::test]
async fn huf_and_twd_are_sent_as_whole_units_because_paypal_takes_them_without_decimals() {
    for (minor, code, value) in [(720500, "HUF", "7205"), (120000, "TWD", "1200")] {
        let server = MockServer::start().await;
        token_mock(1).mount(&server).await;
        let request = capture_request(Money::new(m(minor), cur(code)), false);
        capture_mock(&request, value, answer(201, capture("COMPLETED", None)))
            .mount(&server)
            .await;

        let result = paypal(&server).capture(&request).await;

        assert!(
            matches!(result.outcome, Outcome::Succeeded { .. }),
            "{code}: {result:?}"
        );
    }
}

#[tokio::test]
async fn a_huf_amount_with_a_fraction_is_refused_without_calling_paypal() {
    let server = MockServer::start().await;
    let request = capture_request(Money::new(m(720550), cur("HUF")), false);

    let result = paypal(&server).capture(&request).await;

    assert!(
        failure_reason(&result).contains("whole units"),
        "{result:?}"
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn release_voids_the_authorization_under_its_request_id() {
    let server = MockServer::start().await;
    token_mock(1).mount(&server).await;
    let request = release_request();
    Mock::given(method("POST"))
        .and(path(VOID_PATH))
        .and(header(
            "authorization",
            format!("Bearer {ACCESS_TOKEN}").as_str(),
        ))
        .and(header(
            "paypal-request-id",
            request.idempotency_key.as_str(),
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    let result = paypal(&server).release(&request).await;

    assert_eq!(
        result.outcome,
        Outcome::Succeeded {
            reference: Some(AUTH.to_owned())
        }
    );
    let received = server.received_requests().await.unwrap();
    assert!(received.last().unwrap().body.is_empty());
}

// ---- the token ----

#[tokio::test]
async fn the_access_token_is_fetched_once_and_reused() {
    let server = MockServer::start().await;
    token_mock(1).mount(&server).await;
    Mock::given(method("POST"))
        .and(path(CAPTURE_PATH))
        .respond_with(answer(201, capture("COMPLETED", None)))
        .expect(2)
        .mount(&server)
        .await;
    let provider = paypal(&server);

    provider.capture(&capture_request(usd(2500), false)).await;
    provider.capture(&capture_request(usd(2500), false)).await;
}

#[tokio::test]
async fn a_refused_token_is_retryable_and_a_new_one_is_fetched() {
    let server = MockServer::start().await;
    token_mock(2).mount(&server).await;
    Mock::given(method("POST"))
        .and(path(CAPTURE_PATH))
        .respond_with(paypal_error(401, "AUTHENTICATION_FAILURE", None, ""))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(CAPTURE_PATH))
        .respond_with(answer(201, capture("COMPLETED", None)))
        .mount(&server)
        .await;
    let provider = paypal(&server);

    let refused = provider.capture(&capture_request(usd(2500), false)).await;
    let retried = provider.capture(&capture_request(usd(2500), false)).await;

    assert!(
        matches!(refused.outcome, Outcome::Retryable { .. }),
        "{refused:?}"
    );
    assert!(
        matches!(retried.outcome, Outcome::Succeeded { .. }),
        "{retried:?}"
    );
}

#[tokio::test]
async fn rejected_client_credentials_fail_and_no_capture_is_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"error": "invalid_client", "error_description": "Client Authentication failed"}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(CAPTURE_PATH))
        .respond_with(answer(201, capture("COMPLETED", None)))
        .expect(0)
        .mount(&server)
        .await;

    let result = paypal(&server)
        .capture(&capture_request(usd(2500), false))
        .await;

    let reason = failure_reason(&result);
    assert!(reason.contains("invalid_client"), "{reason}");
    assert_eq!(result.provider_code.as_deref(), Some("oauth2_token"));
}

// ---- capture answers ----

#[tokio::test]
async fn a_pending_capture_is_pending() {
    let result =
        capture_answered_with(answer(201, capture("PENDING", Some("PENDING_REVIEW")))).await;

    assert_eq!(
        result.outcome,
        Outcome::Pending {
            reference: Some("2GG279541U471931P".to_owned())
        }
    );
}

#[tokio::test]
async fn a_declined_capture_is_a_decline_and_a_failed_one_is_failed() {
    let declined = capture_answered_with(answer(
        201,
        capture("DECLINED", Some("DECLINED_BY_RISK_FRAUD_FILTERS")),
    ))
    .await;
    let failed = capture_answered_with(answer(201, capture("FAILED", None))).await;

    assert!(matches!(
        &declined.outcome,
        Outcome::Declined { code, .. } if code == "DECLINED_BY_RISK_FRAUD_FILTERS"
    ));
    assert!(failure_reason(&failed).contains("FAILED"));
}

#[tokio::test]
async fn an_unknown_capture_status_is_unknown() {
    let result = capture_answered_with(answer(201, capture("TELEPORTED", None))).await;

    assert!(is_unknown_with_key_spent(&result), "{result:?}");
}

#[tokio::test]
async fn payer_side_422_issues_are_declines() {
    for issue in [
        "AUTHORIZATION_DENIED",
        "PAYER_CANNOT_PAY",
        "TRANSACTION_REFUSED",
        "PAYER_ACCOUNT_LOCKED_OR_CLOSED",
    ] {
        let result = capture_answered_with(paypal_error(
            422,
            "UNPROCESSABLE_ENTITY",
            Some(issue),
            "The payer cannot pay.",
        ))
        .await;

        assert_eq!(
            result.outcome,
            Outcome::Declined {
                code: issue.to_owned(),
                message: "The payer cannot pay.".to_owned(),
            }
        );
        assert_eq!(
            result.provider_code,
            Some(format!("UNPROCESSABLE_ENTITY/{issue}"))
        );
    }
}

#[tokio::test]
async fn closed_authorizations_payee_problems_and_request_errors_are_terminal_failures() {
    for (issue, word) in [
        ("AUTHORIZATION_EXPIRED", "no longer be captured"),
        ("AUTHORIZATION_VOIDED", "no longer be captured"),
        ("AUTHORIZATION_ALREADY_CAPTURED", "no longer be captured"),
        ("PAYEE_ACCOUNT_LOCKED_OR_CLOSED", "merchant"),
        ("PAYEE_ACCOUNT_RESTRICTED", "merchant"),
        ("MAX_CAPTURE_COUNT_EXCEEDED", "rule or limit"),
        ("MAX_CAPTURE_AMOUNT_EXCEEDED", "rule or limit"),
        ("AUTH_CAPTURE_CURRENCY_MISMATCH", "rule or limit"),
        ("DUPLICATE_INVOICE_ID", "rule or limit"),
        ("DECIMAL_PRECISION", "rule or limit"),
        ("CANNOT_BE_ZERO_OR_NEGATIVE", "rule or limit"),
        ("INVALID_CURRENCY_CODE", "rule or limit"),
        ("DECIMALS_NOT_SUPPORTED", "rule or limit"),
        ("SOMETHING_NEW", "does not know"),
    ] {
        let result = capture_answered_with(paypal_error(
            422,
            "UNPROCESSABLE_ENTITY",
            Some(issue),
            "Nope.",
        ))
        .await;

        let reason = failure_reason(&result);
        assert!(reason.contains(word), "{issue}: {reason}");
        assert!(reason.contains(issue), "{issue}: {reason}");
    }
}

#[tokio::test]
async fn a_request_still_in_progress_is_retryable() {
    let in_progress = capture_answered_with(paypal_error(
        422,
        "UNPROCESSABLE_ENTITY",
        Some("PREVIOUS_REQUEST_IN_PROGRESS"),
        "A previous request is in progress.",
    ))
    .await;
    let conflict = capture_answered_with(paypal_error(
        409,
        "RESOURCE_CONFLICT",
        Some("PREVIOUS_REQUEST_IN_PROGRESS"),
        "A previous request is in progress.",
    ))
    .await;

    assert!(matches!(in_progress.outcome, Outcome::Retryable { .. }));
    assert!(matches!(conflict.outcome, Outcome::Retryable { .. }));
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retryable_under_the_same_request_id() {
    for (status, name) in [
        (429, "RATE_LIMIT_REACHED"),
        (500, "INTERNAL_SERVER_ERROR"),
        (503, "SERVICE_UNAVAILABLE"),
    ] {
        let result = capture_answered_with(paypal_error(status, name, None, "")).await;

        assert!(
            matches!(result.outcome, Outcome::Retryable { .. }),
            "HTTP {status}: {result:?}"
        );
    }
}

#[tokio::test]
async fn client_errors_fail_naming_what_went_wrong() {
    for (status, name, word) in [
        (400, "INVALID_REQUEST", "refused the request"),
        (403, "NOT_AUTHORIZED", "permission"),
        (404, "RESOURCE_NOT_FOUND", "no such authorization"),
    ] {
        let result = capture_answered_with(paypal_error(status, name, None, "")).await;

        let reason = failure_reason(&result);
        assert!(reason.contains(word), "HTTP {status}: {reason}");
        assert!(reason.contains(name), "HTTP {status}: {reason}");
    }
}

#[tokio::test]
async fn timeout_after_sending_is_unknown_with_the_key_unspent() {
    let server = answering_late(CAPTURE_PATH, answer(201, capture("COMPLETED", None))).await;
    token_mock(1).mount(&server).await;

    let result = paypal_at(&server.uri(), TIMEOUT_BEFORE_THE_ANSWER)
        .capture(&capture_request(usd(2500), false))
        .await;

    assert!(is_unknown_with_key_unspent(&result), "{result:?}");
}

#[tokio::test]
async fn refused_connection_is_retryable_because_nothing_was_sent() {
    let result = capture_with_nobody_listening(paypal_at, &capture_request(usd(2500), false)).await;

    assert!(is_retryable_at_once(&result), "{result:?}");
}

// ---- lookup ----

fn authorization_body(status: &str) -> Value {
    json!({
        "id": AUTH,
        "status": status,
        "amount": {"currency_code": "USD", "value": "100.00"},
        "invoice_id": "ORD-1042",
        "supplementary_data": {"related_ids": {"order_id": ORDER}},
        "expiration_time": "2026-12-20T10:00:00Z",
    })
}

fn order_with(captures: Value) -> Value {
    json!({
        "id": ORDER,
        "status": "COMPLETED",
        "purchase_units": [{"reference_id": "default", "payments": {
            "authorizations": [{"id": AUTH, "status": "PARTIALLY_CAPTURED"}],
            "captures": captures,
        }}],
    })
}

fn order_capture(id: &str, status: &str, value: &str, up: &str) -> Value {
    json!({
        "id": id,
        "status": status,
        "amount": {"currency_code": "USD", "value": value},
        "links": [{"href": format!("https://api-m.paypal.com/v2/payments/authorizations/{up}"), "rel": "up", "method": "GET"}],
    })
}

#[tokio::test]
async fn lookup_of_a_fresh_authorization_shows_nothing_captured_without_reading_the_order() {
    let server = MockServer::start().await;
    token_mock(1).mount(&server).await;
    Mock::given(method("GET"))
        .and(path(AUTH_PATH))
        .and(header(
            "authorization",
            format!("Bearer {ACCESS_TOKEN}").as_str(),
        ))
        .respond_with(answer(200, authorization_body("CREATED")))
        .expect(1)
        .mount(&server)
        .await;

    let snapshot = paypal(&server).lookup(&authorization()).await.unwrap();

    assert!(snapshot.captured.amount().is_zero());
    assert_eq!(snapshot.capturable, usd(10000));
    assert_eq!(snapshot.status, "CREATED");
}

#[tokio::test]
async fn lookup_sums_the_completed_captures_of_this_authorization_from_its_order() {
    let server = serving_get(
        AUTH_PATH,
        answer(200, authorization_body("PARTIALLY_CAPTURED")),
    )
    .await;
    token_mock(1).mount(&server).await;
    Mock::given(method("GET"))
        .and(path(ORDER_PATH))
        .respond_with(answer(
            200,
            order_with(json!([
                order_capture("C1", "COMPLETED", "25.00", AUTH),
                order_capture("C2", "PARTIALLY_REFUNDED", "10.50", AUTH),
                order_capture("C3", "DECLINED", "5.00", AUTH),
                order_capture("C4", "COMPLETED", "99.00", "OTHERAUTH"),
            ])),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let snapshot = paypal(&server).lookup(&authorization()).await.unwrap();

    assert_eq!(snapshot.captured, usd(3550));
    assert_eq!(snapshot.capturable, usd(6450));
}

#[tokio::test]
async fn lookup_with_a_pending_capture_asks_to_be_retried() {
    let server = serving_get(
        AUTH_PATH,
        answer(200, authorization_body("PARTIALLY_CAPTURED")),
    )
    .await;
    token_mock(1).mount(&server).await;
    Mock::given(method("GET"))
        .and(path(ORDER_PATH))
        .respond_with(answer(
            200,
            order_with(json!([order_capture("C1", "PENDING", "25.00", AUTH)])),
        ))
        .mount(&server)
        .await;

    let result = paypal(&server).lookup(&authorization()).await;

    assert_retryable(&result);
}

#[tokio::test]
async fn lookup_of_an_unknown_authorization_is_permanent() {
    let server = serving_get(
        AUTH_PATH,
        paypal_error(
            404,
            "RESOURCE_NOT_FOUND",
            Some("INVALID_RESOURCE_ID"),
            "Not found.",
        ),
    )
    .await;
    token_mock(1).mount(&server).await;

    let result = paypal(&server).lookup(&authorization()).await;

    assert_permanent(&result);
}

// ---- configuration and secrecy ----

#[tokio::test]
async fn the_secret_and_the_token_never_appear_in_debug_output_or_errors() {
    let server = MockServer::start().await;
    token_mock(1).mount(&server).await;
    Mock::given(method("POST"))
        .and(path(CAPTURE_PATH))
        .respond_with(paypal_error(403, "NOT_AUTHORIZED", None, ""))
        .mount(&server)
        .await;
    let provider = paypal(&server);
    let refused = provider.capture(&capture_request(usd(2500), false)).await;

    assert_no_secret_shows(
        &format!("{provider:?}"),
        &[format!("{refused:?}")],
        &["SecretNeverLogged", "AccessTokenNeverLogged"],
    );
}

#[test]
fn the_client_id_and_secret_come_together() {
    let build = |id: Option<&str>, secret: Option<&str>| {
        PayPalProvider::new(
            ProviderName::parse("paypal").unwrap(),
            "https://api-m.sandbox.paypal.com".to_owned(),
            id.map(str::to_owned),
            secret.map(Secret::new),
            Duration::from_secs(1),
        )
    };

    assert!(build(Some(CLIENT_ID), None).is_err());
    assert!(build(None, Some(CLIENT_SECRET)).is_err());
    assert!(build(Some(CLIENT_ID), Some("")).is_err());
    assert!(build(None, None).is_ok());
}

#[test]
fn capabilities_are_multi_capture_released_by_a_void_within_29_days() {
    let provider = paypal_at("https://api-m.sandbox.paypal.com", Duration::from_secs(1));

    let caps = provider.capabilities();
    assert_eq!(caps, Capabilities::paypal());
    assert_eq!(caps.final_flag, FinalFlag::Explicit);
    assert_eq!(caps.release, ReleaseMethod::Cancel);
    assert_eq!(caps.authorization_window, Some(chrono::Duration::days(29)));
}

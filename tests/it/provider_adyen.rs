//! The Adyen adapter against a mock Adyen: exact request shapes, one test per documented
//! answer (reference/providers.md §3), and signed notifications.

use std::time::Duration;

use capture_worker::config::Secret;
use capture_worker::domain::*;
use capture_worker::provider::adyen::{
    AdyenProvider, NotificationError, NotificationEvent, parse_notification, sign,
};
use capture_worker::provider::{
    CallResult, CaptureLine, CaptureRequest, Outcome, PaymentProvider, ReleaseRequest,
};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::provider_support::*;
use crate::support::*;

const API_KEY: &str = "AQEyhmfxSecretNeverLogged0123456789";
const MERCHANT: &str = "AcmeShopEU";
const PSP: &str = "QFQTPCQ8HXSKGK82";
const CAPTURE_PATH: &str = "/v71/payments/QFQTPCQ8HXSKGK82/captures";
const CANCEL_PATH: &str = "/v71/payments/QFQTPCQ8HXSKGK82/cancels";
const HMAC_KEY: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";

fn adyen_at(base_url: &str, timeout: Duration) -> AdyenProvider {
    AdyenProvider::new(
        ProviderName::parse("adyen").unwrap(),
        format!("{base_url}/v71"),
        Some(Secret::new(API_KEY)),
        Some(MERCHANT.to_owned()),
        timeout,
    )
    .unwrap()
}

fn adyen(server: &MockServer) -> AdyenProvider {
    adyen_at(&server.uri(), Duration::from_secs(10))
}

fn authorization() -> AuthorizationId {
    AuthorizationId::parse(PSP).unwrap()
}

/// Parcel SHP-77 of ORD-1042: three mugs worth 18.97 after rounding, and 7.99 shipping.
fn capture_request(is_final: bool) -> CaptureRequest {
    CaptureRequest {
        is_final,
        lines: vec![CaptureLine {
            line_id: LineId::parse("L1").unwrap(),
            sku: "MUG-1".to_owned(),
            name: "Mug".to_owned(),
            quantity: 3,
            amount: m(1897),
        }],
        ..parcel_capture("adyen", PSP, "SHP-77", Money::new(m(2696), cur("EUR")))
    }
}

fn release_request() -> ReleaseRequest {
    release_of("adyen", PSP)
}

/// The body Adyen must receive; there is no final flag, so final and non-final look alike.
fn expected_capture_body() -> Value {
    json!({
        "merchantAccount": MERCHANT,
        "amount": {"currency": "EUR", "value": 2696},
        "reference": "ORD-1042/SHP-77",
        "lineItems": [
            {"id": "L1", "description": "Mug (3 units)", "quantity": 1, "amountIncludingTax": 1897, "sku": "MUG-1"},
            {"id": "shipping", "description": "Shipping", "quantity": 1, "amountIncludingTax": 799},
        ],
    })
}

fn received(psp: &str) -> Value {
    json!({
        "merchantAccount": MERCHANT,
        "paymentPspReference": PSP,
        "pspReference": psp,
        "reference": "ORD-1042/SHP-77",
        "status": "received",
        "amount": {"currency": "EUR", "value": 2696},
    })
}

fn service_error(status: u16, code: &str, kind: &str, message: &str) -> Value {
    json!({"status": status, "errorCode": code, "errorType": kind, "message": message, "pspReference": "8816178952380553"})
}

fn answer(status: u16, body: Value) -> ResponseTemplate {
    json_answer(status, body, ("pspReference", "8816178952380553"))
}

fn capture_mock(request: &CaptureRequest, response: ResponseTemplate) -> Mock {
    Mock::given(method("POST"))
        .and(path(CAPTURE_PATH))
        .and(header("x-api-key", API_KEY))
        .and(header("idempotency-key", request.idempotency_key.as_str()))
        .and(header("content-type", "application/json"))
        .and(body_json(expected_capture_body()))
        .respond_with(response)
        .expect(1)
}

async fn capture_answered_with(response: ResponseTemplate) -> CallResult {
    let request = capture_request(false);
    capture_against(capture_mock(&request, response), adyen, &request).await
}

// ---- request shapes ----

#[tokio::test]
async fn non_final_capture_posts_amount_reference_and_line_items_and_is_pending_until_notified() {
    let request = capture_request(false);
    let mock = capture_mock(&request, answer(201, received("JDD6LKT8MBLZNN84")));

    let result = capture_against(mock, adyen, &request).await;

    assert_eq!(
        result.outcome,
        Outcome::Pending {
            reference: Some("JDD6LKT8MBLZNN84".to_owned())
        }
    );
    assert_eq!(result.http_status, Some(201));
    assert_eq!(
        result.provider_request_id.as_deref(),
        Some("8816178952380553")
    );
}

/// A capture of `amount` `currency` for three mugs worth `lines`, the rest shipping, whose
/// body must be exactly `body`.
async fn capture_in(currency: &str, amount: i64, lines: i64, body: Value) -> CallResult {
    let request = CaptureRequest {
        lines: vec![CaptureLine {
            line_id: LineId::parse("L1").unwrap(),
            sku: "MUG-1".to_owned(),
            name: "Mug".to_owned(),
            quantity: 3,
            amount: m(lines),
        }],
        ..parcel_capture("adyen", PSP, "SHP-77", Money::new(m(amount), cur(currency)))
    };
    let mock = Mock::given(method("POST"))
        .and(path(CAPTURE_PATH))
        .and(header("idempotency-key", request.idempotency_key.as_str()))
        .and(body_json(body))
        .respond_with(answer(201, received("JDD6LKT8MBLZNN86")))
        .expect(1);
    capture_against(mock, adyen, &request).await
}

#[tokio::test]
async fn clp_goes_with_adyens_two_decimals_and_cve_in_whole_escudos() {
    // 26 960 CLP (ISO 4217: no decimals) is Adyen's 2 696 000; 7 205.00 CVE (ISO 4217: two
    // decimals) is Adyen's 7 205. Line items are converted the same way.
    for (currency, amount, lines, value, unit, shipping) in [
        ("CLP", 26_960, 18_960, 2_696_000, 632_000, 800_000),
        ("CVE", 720_500, 450_000, 7205, 1500, 2705),
    ] {
        let body = json!({
            "merchantAccount": MERCHANT,
            "amount": {"currency": currency, "value": value},
            "reference": "ORD-1042/SHP-77",
            "lineItems": [
                {"id": "L1", "description": "Mug", "quantity": 3, "amountIncludingTax": unit, "sku": "MUG-1"},
                {"id": "shipping", "description": "Shipping", "quantity": 1, "amountIncludingTax": shipping},
            ],
        });
        let result = capture_in(currency, amount, lines, body).await;
        assert!(
            matches!(result.outcome, Outcome::Pending { .. }),
            "{currency}: {result:?}"
        );
    }
}

#[tokio::test]
async fn a_cve_amount_with_centavos_is_refused_without_calling_adyen() {
    let server = MockServer::start().await;
    let request = parcel_capture("adyen", PSP, "SHP-77", Money::new(m(720_550), cur("CVE")));

    let result = adyen(&server).capture(&request).await;

    assert!(
        matches!(&result.outcome, Outcome::Failed { reason } if reason.contains("whole units")),
        "{result:?}"
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn final_capture_sends_the_same_shape_because_adyen_has_no_final_flag() {
    let request = capture_request(true);
    let mock = capture_mock(&request, answer(201, received("JDD6LKT8MBLZNN85")));

    let result = capture_against(mock, adyen, &request).await;

    assert!(matches!(result.outcome, Outcome::Pending { .. }));
}

#[tokio::test]
async fn release_cancels_the_rest_of_the_payment_under_its_idempotency_key() {
    let server = MockServer::start().await;
    let request = release_request();
    Mock::given(method("POST"))
        .and(path(CANCEL_PATH))
        .and(header("x-api-key", API_KEY))
        .and(header("idempotency-key", request.idempotency_key.as_str()))
        .and(body_json(json!({
            "merchantAccount": MERCHANT,
            "reference": "ORD-1042/release",
        })))
        .respond_with(answer(201, received("KHQC5N7G84BLNK43")))
        .expect(1)
        .mount(&server)
        .await;

    let result = adyen(&server).release(&request).await;

    assert_eq!(
        result.outcome,
        Outcome::Pending {
            reference: Some("KHQC5N7G84BLNK43".to_owned())
        }
    );
}

// ---- answers ----

#[tokio::test]
async fn a_success_status_other_than_received_is_unknown() {
    let mut body = received("JDD6LKT8MBLZNN84");
    body["status"] = json!("processed");

    let result = capture_answered_with(answer(201, body)).await;

    assert!(is_unknown_with_key_spent(&result), "{result:?}");
}

#[tokio::test]
async fn request_in_progress_under_the_same_key_is_retryable() {
    let result = capture_answered_with(answer(
        422,
        service_error(
            422,
            "704",
            "validation",
            "request already processed or in progress",
        ),
    ))
    .await;

    assert!(
        matches!(result.outcome, Outcome::Retryable { .. }),
        "{result:?}"
    );
    assert_eq!(result.provider_code.as_deref(), Some("validation/704"));
}

#[tokio::test]
async fn validation_errors_fail_with_adyens_code() {
    let result = capture_answered_with(answer(
        422,
        service_error(422, "14_030", "validation", "Modification amount too high"),
    ))
    .await;

    let reason = failure_reason(&result);
    assert!(reason.contains("14_030"), "{reason}");
    assert!(reason.contains("Modification amount too high"), "{reason}");
}

#[tokio::test]
async fn client_errors_fail_naming_what_went_wrong() {
    for (status, code, word) in [
        (400, "702", "refused the request"),
        (401, "000", "authentication"),
        (403, "010", "permission"),
        (404, "000", "no such payment"),
    ] {
        let result = capture_answered_with(answer(
            status,
            service_error(status, code, "security", "No"),
        ))
        .await;

        assert!(failure_reason(&result).contains(word), "HTTP {status}");
    }
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retryable_under_the_same_key() {
    for status in [429, 500, 503] {
        let result = capture_answered_with(answer(
            status,
            service_error(status, "901", "internal", "Internal error"),
        ))
        .await;

        assert!(
            matches!(result.outcome, Outcome::Retryable { .. }),
            "HTTP {status}: {result:?}"
        );
    }
}

#[tokio::test]
async fn timeout_after_sending_is_unknown_with_the_key_unspent() {
    let late = answer(201, received("X"));

    let result = capture_answered_late(adyen_at, CAPTURE_PATH, late, &capture_request(false)).await;

    assert!(is_unknown_with_key_unspent(&result), "{result:?}");
}

#[tokio::test]
async fn refused_connection_is_retryable_because_nothing_was_sent() {
    let result = capture_with_nobody_listening(adyen_at, &capture_request(false)).await;

    assert!(is_retryable_at_once(&result), "{result:?}");
}

#[tokio::test]
async fn lookup_is_permanent_because_adyen_has_no_read_back() {
    let server = MockServer::start().await;

    let result = adyen(&server).lookup(&authorization()).await;

    assert!(assert_permanent(&result).contains("notification"));
    assert!(server.received_requests().await.unwrap().is_empty());
}

// ---- notifications ----

/// A notification body with one item signed with `key`.
fn notification(event: &str, psp: &str, success: &str, key: &str) -> Vec<u8> {
    notification_of(event, psp, success, key, (2696, "EUR"))
}

/// A notification body with one item worth `value` (Adyen's units) in `currency`.
fn notification_of(
    event: &str,
    psp: &str,
    success: &str,
    key: &str,
    (value, currency): (i64, &str),
) -> Vec<u8> {
    let data =
        format!("{psp}:{PSP}:{MERCHANT}:ORD-1042/SHP-77:{value}:{currency}:{event}:{success}");
    let signature = sign(&data, &Secret::new(key)).unwrap();
    serde_json::to_vec(&json!({
        "live": "false",
        "notificationItems": [{"NotificationRequestItem": {
            "additionalData": {"hmacSignature": signature},
            "amount": {"currency": currency, "value": value},
            "eventCode": event,
            "eventDate": "2026-11-21T10:00:00+01:00",
            "merchantAccountCode": MERCHANT,
            "merchantReference": "ORD-1042/SHP-77",
            "originalReference": PSP,
            "pspReference": psp,
            "reason": "",
            "success": success,
        }}],
    }))
    .unwrap()
}

#[test]
fn a_signed_capture_notification_settles_the_pending_capture() {
    let body = notification("CAPTURE", "JDD6LKT8MBLZNN84", "true", HMAC_KEY);

    let items = parse_notification(&body, &Secret::new(HMAC_KEY)).unwrap();

    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(item.event, NotificationEvent::Capture);
    assert_eq!(item.psp_reference, "JDD6LKT8MBLZNN84");
    assert_eq!(item.original_reference.as_deref(), Some(PSP));
    assert_eq!(item.amount, Some(Money::new(m(2696), cur("EUR"))));
    assert_eq!(
        item.outcome(),
        Some(Outcome::Succeeded {
            reference: Some("JDD6LKT8MBLZNN84".to_owned())
        })
    );
}

#[test]
fn a_clp_notification_amount_is_read_in_iso_minor_units() {
    let body = notification_of(
        "CAPTURE",
        "JDD6LKT8MBLZNN87",
        "true",
        HMAC_KEY,
        (2_696_000, "CLP"),
    );

    let items = parse_notification(&body, &Secret::new(HMAC_KEY)).unwrap();

    assert_eq!(items[0].amount, Some(Money::new(m(26_960), cur("CLP"))));
}

#[test]
fn capture_failed_and_an_unsuccessful_capture_are_declines() {
    let failed = parse_notification(
        &notification("CAPTURE_FAILED", "JDD6LKT8MBLZNN84", "true", HMAC_KEY),
        &Secret::new(HMAC_KEY),
    )
    .unwrap();
    let refused = parse_notification(
        &notification("CAPTURE", "JDD6LKT8MBLZNN84", "false", HMAC_KEY),
        &Secret::new(HMAC_KEY),
    )
    .unwrap();

    assert!(
        matches!(failed[0].outcome(), Some(Outcome::Declined { code, .. }) if code == "CAPTURE_FAILED")
    );
    assert!(
        matches!(refused[0].outcome(), Some(Outcome::Declined { code, .. }) if code == "CAPTURE")
    );
}

#[test]
fn a_cancellation_notification_settles_the_release() {
    let items = parse_notification(
        &notification("CANCELLATION", "KHQC5N7G84BLNK43", "true", HMAC_KEY),
        &Secret::new(HMAC_KEY),
    )
    .unwrap();

    assert_eq!(items[0].event, NotificationEvent::Cancellation);
    assert!(matches!(
        items[0].outcome(),
        Some(Outcome::Succeeded { .. })
    ));
}

#[test]
fn a_notification_signed_with_another_key_is_refused() {
    let other = "0000000000000000000000000000000000000000000000000000000000000000";
    let body = notification("CAPTURE", "JDD6LKT8MBLZNN84", "true", other);

    let result = parse_notification(&body, &Secret::new(HMAC_KEY));

    assert_eq!(
        result,
        Err(NotificationError::BadSignature {
            psp_reference: "JDD6LKT8MBLZNN84".to_owned()
        })
    );
}

#[test]
fn a_tampered_amount_breaks_the_signature() {
    let body = notification("CAPTURE", "JDD6LKT8MBLZNN84", "true", HMAC_KEY);
    let tampered = String::from_utf8(body)
        .unwrap()
        .replace("\"value\":2696", "\"value\":1");

    let result = parse_notification(tampered.as_bytes(), &Secret::new(HMAC_KEY));

    assert!(matches!(
        result,
        Err(NotificationError::BadSignature { .. })
    ));
}

#[test]
fn unsigned_or_malformed_notifications_and_non_hex_keys_are_refused() {
    let unsigned = br#"{"live":"false","notificationItems":[{"NotificationRequestItem":{
        "eventCode":"CAPTURE","pspReference":"P1","success":"true"}}]}"#;

    assert!(matches!(
        parse_notification(unsigned, &Secret::new(HMAC_KEY)),
        Err(NotificationError::MissingSignature { .. })
    ));
    assert!(matches!(
        parse_notification(b"[accepted]", &Secret::new(HMAC_KEY)),
        Err(NotificationError::Malformed(_))
    ));
    let body = notification("CAPTURE", "P1", "true", HMAC_KEY);
    assert_eq!(
        parse_notification(&body, &Secret::new("not hex")),
        Err(NotificationError::BadKey)
    );
}

// ---- configuration and secrecy ----

#[tokio::test]
async fn the_api_key_never_appears_in_debug_output_or_errors() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(answer(
            401,
            service_error(
                401,
                "000",
                "security",
                "HTTP Status Response - Unauthorized",
            ),
        ))
        .mount(&server)
        .await;
    let provider = adyen(&server);
    let rejected = provider.capture(&capture_request(false)).await;

    assert_no_secret_shows(
        &format!("{provider:?}"),
        &[format!("{rejected:?}")],
        &["SecretNeverLogged"],
    );
}

#[test]
fn the_merchant_account_is_required() {
    let missing = AdyenProvider::new(
        ProviderName::parse("adyen").unwrap(),
        "https://checkout-test.adyen.com/v71".to_owned(),
        Some(Secret::new(API_KEY)),
        None,
        Duration::from_secs(1),
    );

    assert!(
        missing
            .unwrap_err()
            .to_string()
            .contains("merchant_account")
    );
}

#[test]
fn capabilities_have_no_final_flag_and_release_by_cancel() {
    let provider = adyen_at("https://checkout-test.adyen.com", Duration::from_secs(1));

    let caps = provider.capabilities();
    assert_eq!(caps, Capabilities::adyen());
    assert_eq!(caps.final_flag, FinalFlag::Absent);
    assert_eq!(caps.release, ReleaseMethod::Cancel);
}

//! Extending and incrementing holds, per adapter, against mock providers: the exact request
//! each provider documents (path, credentials, idempotency header, body), and how each answer
//! is read (docs/providers.md, "Lifecycle: extending and incrementing holds").

use std::time::Duration;

use base64::Engine as _;
use capture_worker::config::Secret;
use capture_worker::domain::lifecycle::lifecycle_key;
use capture_worker::domain::*;
use capture_worker::provider::adyen::AdyenProvider;
use capture_worker::provider::checkout::CheckoutProvider;
use capture_worker::provider::gr4vy::Gr4vyProvider;
use capture_worker::provider::paypal::PayPalProvider;
use capture_worker::provider::stripe::StripeProvider;
use capture_worker::provider::{
    HoldChange, LifecycleCall, LifecycleRequest, Outcome, PaymentProvider,
};
use chrono::{TimeZone, Utc};
use serde_json::json;
use wiremock::matchers::{body_json, body_string, header, method, path};
use wiremock::{Match, Mock, MockServer, Request, ResponseTemplate};

use crate::provider_support::*;
use crate::support::*;

fn request(
    provider: &str,
    authorization: &str,
    call: LifecycleCall,
    authorized: Money,
    by: i64,
) -> LifecycleRequest {
    let provider_name = ProviderName::parse(provider).unwrap();
    let authorization_id = AuthorizationId::parse(authorization).unwrap();
    LifecycleRequest {
        call,
        idempotency_key: lifecycle_key(&provider_name, &authorization_id, call.label(), 1),
        authorization_id,
        order_id: OrderId::parse(ORDER).unwrap(),
        sequence: 1,
        authorized,
        by: m(by),
    }
}

fn usd(minor: i64) -> Money {
    Money::new(m(minor), cur("USD"))
}

// ---------------------------------------------------------------- Stripe

const STRIPE_KEY: &str = "sk_test_51HxSecretNeverLogged0123456789";
const PI: &str = "pi_3QxCaptureWorker01";

fn stripe(server: &MockServer) -> StripeProvider {
    StripeProvider::new(
        ProviderName::parse("stripe").unwrap(),
        server.uri(),
        Some(Secret::new(STRIPE_KEY)),
        Duration::from_secs(10),
    )
    .unwrap()
}

struct FormBody(Vec<(String, String)>);

impl Match for FormBody {
    fn matches(&self, request: &Request) -> bool {
        let mut got: Vec<(String, String)> =
            form_urlencoded::parse(&request.body).into_owned().collect();
        got.sort();
        got == self.0
    }
}

fn form(fields: &[(&str, &str)]) -> FormBody {
    let mut fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    fields.sort();
    FormBody(fields)
}

#[tokio::test]
async fn stripe_increments_with_the_new_total_under_the_lifecycle_key() {
    let server = MockServer::start().await;
    let req = request("stripe", PI, LifecycleCall::Increment, usd(10_000), 2_500);
    Mock::given(method("POST"))
        .and(path(format!(
            "/v1/payment_intents/{PI}/increment_authorization"
        )))
        .and(header(
            "authorization",
            format!("Bearer {STRIPE_KEY}").as_str(),
        ))
        .and(header("idempotency-key", req.idempotency_key.as_str()))
        .and(header("stripe-version", "2024-06-20"))
        .and(form(&[
            ("amount", "12500"),
            ("metadata[order_id]", ORDER),
            ("metadata[lifecycle_cause]", "increment-1"),
        ]))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": PI, "object": "payment_intent", "status": "requires_capture",
            "amount": 12500, "amount_capturable": 12500, "amount_received": 0,
            "currency": "usd", "latest_charge": "ch_3Qx01",
        })))
        .expect(1)
        .mount(&server)
        .await;
    let result = stripe(&server).lifecycle(&req).await;
    assert_eq!(
        result.call.outcome,
        Outcome::Succeeded {
            reference: Some(PI.to_owned())
        }
    );
    assert_eq!(
        result.hold,
        Some(HoldChange {
            authorization_id: None,
            amount: Some(m(12_500)),
            expires_at: None,
        })
    );
}

#[tokio::test]
async fn a_refused_stripe_increment_is_a_decline_and_an_ineligible_one_a_failure() {
    let server = MockServer::start().await;
    let req = request("stripe", PI, LifecycleCall::Increment, usd(10_000), 2_500);
    Mock::given(method("POST"))
        .and(path(format!(
            "/v1/payment_intents/{PI}/increment_authorization"
        )))
        .respond_with(ResponseTemplate::new(402).set_body_json(json!({"error": {
            "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
        }})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/v1/payment_intents/{PI}/increment_authorization"
        )))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "type": "invalid_request_error",
            "message": "This PaymentIntent is not eligible for incremental authorization.",
        }})))
        .mount(&server)
        .await;
    let declined = stripe(&server).lifecycle(&req).await;
    assert!(
        matches!(&declined.call.outcome, Outcome::Declined { code, .. } if code == "insufficient_funds"),
        "{:?}",
        declined.call.outcome
    );
    assert_eq!(declined.hold, None);
    let ineligible = stripe(&server).lifecycle(&req).await;
    assert!(
        matches!(ineligible.call.outcome, Outcome::Failed { .. }),
        "{:?}",
        ineligible.call.outcome
    );
}

#[tokio::test]
async fn stripe_says_an_online_card_hold_cannot_be_extended_and_sends_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    let req = request("stripe", PI, LifecycleCall::Extend, usd(10_000), 0);
    let result = stripe(&server).lifecycle(&req).await;
    let reason = failure_reason(&result.call);
    assert!(reason.contains("cannot extend"), "{reason}");
    assert_eq!(result.call.http_status, None);
}

// ---------------------------------------------------------------- Checkout.com

const CKO_KEY: &str = "sk_sbox_SecretNeverLogged0123456789";
const PAYMENT: &str = "pay_mbabizu24mvu3mela5njyhpit4";

fn checkout(server: &MockServer) -> CheckoutProvider {
    CheckoutProvider::new(
        ProviderName::parse("checkout").unwrap(),
        server.uri(),
        Some(Secret::new(CKO_KEY)),
        Duration::from_secs(10),
    )
    .unwrap()
}

fn cko_authorized(approved: bool, amount: i64) -> serde_json::Value {
    json!({
        "action_id": "act_y3oqhf46pyzuxjbcn2giaqnb44",
        "amount": amount,
        "currency": "GBP",
        "approved": approved,
        "status": if approved { "Authorized" } else { "Declined" },
        "auth_code": "643381",
        "response_code": if approved { "10000" } else { "20051" },
        "response_summary": if approved { "Approved" } else { "Insufficient Funds" },
        "expires_on": "2026-03-15T12:00:00Z",
        "processed_on": "2026-03-08T12:00:00Z",
        "reference": "ORD-1042/increment-1",
        "_links": {"self": {"href": "x"}, "actions": {"href": "y"}},
    })
}

#[tokio::test]
async fn checkout_increments_by_the_increase_and_reads_the_new_amount_and_expiry() {
    let server = MockServer::start().await;
    let req = request(
        "checkout",
        PAYMENT,
        LifecycleCall::Increment,
        Money::new(m(10_000), cur("GBP")),
        2_500,
    );
    Mock::given(method("POST"))
        .and(path(format!("/payments/{PAYMENT}/authorizations")))
        .and(header(
            "authorization",
            format!("Bearer {CKO_KEY}").as_str(),
        ))
        .and(header("cko-idempotency-key", req.idempotency_key.as_str()))
        .and(body_json(
            json!({"amount": 2500, "reference": "ORD-1042/increment-1"}),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(cko_authorized(true, 12_500)))
        .expect(1)
        .mount(&server)
        .await;
    let result = checkout(&server).lifecycle(&req).await;
    assert_eq!(
        result.call.outcome,
        Outcome::Succeeded {
            reference: Some("act_y3oqhf46pyzuxjbcn2giaqnb44".to_owned())
        }
    );
    assert_eq!(
        result.hold,
        Some(HoldChange {
            authorization_id: None,
            amount: Some(m(12_500)),
            expires_at: Some(Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap()),
        })
    );
}

#[tokio::test]
async fn checkout_extends_with_an_increase_of_zero_and_a_decline_is_a_decline() {
    let server = MockServer::start().await;
    let req = request(
        "checkout",
        PAYMENT,
        LifecycleCall::Extend,
        Money::new(m(10_000), cur("GBP")),
        0,
    );
    Mock::given(method("POST"))
        .and(path(format!("/payments/{PAYMENT}/authorizations")))
        .and(header("cko-idempotency-key", req.idempotency_key.as_str()))
        .and(body_json(
            json!({"amount": 0, "reference": "ORD-1042/extend-1"}),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(cko_authorized(false, 10_000)))
        .expect(1)
        .mount(&server)
        .await;
    let result = checkout(&server).lifecycle(&req).await;
    assert_eq!(
        result.call.outcome,
        Outcome::Declined {
            code: "20051".to_owned(),
            message: "Insufficient Funds".to_owned()
        }
    );
    assert_eq!(result.hold, None);
}

#[tokio::test]
async fn a_checkout_increment_after_a_capture_is_refused_403_and_a_5xx_is_unknown() {
    let server = MockServer::start().await;
    let req = request(
        "checkout",
        PAYMENT,
        LifecycleCall::Increment,
        Money::new(m(10_000), cur("GBP")),
        100,
    );
    Mock::given(method("POST"))
        .and(path(format!("/payments/{PAYMENT}/authorizations")))
        .respond_with(ResponseTemplate::new(403))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/payments/{PAYMENT}/authorizations")))
        .respond_with(ResponseTemplate::new(502))
        .mount(&server)
        .await;
    let refused = checkout(&server).lifecycle(&req).await;
    assert!(matches!(refused.call.outcome, Outcome::Failed { .. }));
    let lost = checkout(&server).lifecycle(&req).await;
    assert!(
        is_unknown_with_key_spent(&lost.call),
        "{:?}",
        lost.call.outcome
    );
}

// ---------------------------------------------------------------- Adyen

const ADYEN_KEY: &str = "AQEyhmfxSecretNeverLogged0123456789";
const MERCHANT: &str = "AcmeShopEU";
const PSP: &str = "QFQTPCQ8HXSKGK82";

fn adyen(server: &MockServer) -> AdyenProvider {
    AdyenProvider::new(
        ProviderName::parse("adyen").unwrap(),
        format!("{}/v71", server.uri()),
        Some(Secret::new(ADYEN_KEY)),
        Some(MERCHANT.to_owned()),
        Duration::from_secs(10),
    )
    .unwrap()
}

fn adyen_received(total: i64) -> serde_json::Value {
    json!({
        "merchantAccount": MERCHANT,
        "paymentPspReference": PSP,
        "pspReference": "JDD6LKT8MBLZNN84",
        "reference": "ORD-1042/increment-1",
        "status": "received",
        "amount": {"currency": "EUR", "value": total},
    })
}

#[tokio::test]
async fn adyen_updates_the_amount_to_the_new_total_and_waits_for_the_notification() {
    let server = MockServer::start().await;
    let req = request(
        "adyen",
        PSP,
        LifecycleCall::Increment,
        Money::new(m(10_000), cur("EUR")),
        2_500,
    );
    Mock::given(method("POST"))
        .and(path(format!("/v71/payments/{PSP}/amountUpdates")))
        .and(header("x-api-key", ADYEN_KEY))
        .and(header("idempotency-key", req.idempotency_key.as_str()))
        .and(body_json(json!({
            "merchantAccount": MERCHANT,
            "amount": {"currency": "EUR", "value": 12500},
            "reference": "ORD-1042/increment-1",
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(adyen_received(12_500)))
        .expect(1)
        .mount(&server)
        .await;
    let result = adyen(&server).lifecycle(&req).await;
    assert_eq!(
        result.call.outcome,
        Outcome::Pending {
            reference: Some("JDD6LKT8MBLZNN84".to_owned())
        }
    );
    assert_eq!(result.hold, None);
}

#[tokio::test]
async fn adyen_extends_by_restating_the_current_amount() {
    let server = MockServer::start().await;
    let req = request(
        "adyen",
        PSP,
        LifecycleCall::Extend,
        Money::new(m(10_000), cur("EUR")),
        0,
    );
    Mock::given(method("POST"))
        .and(path(format!("/v71/payments/{PSP}/amountUpdates")))
        .and(header("idempotency-key", req.idempotency_key.as_str()))
        .and(body_json(json!({
            "merchantAccount": MERCHANT,
            "amount": {"currency": "EUR", "value": 10000},
            "reference": "ORD-1042/extend-1",
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(adyen_received(10_000)))
        .expect(1)
        .mount(&server)
        .await;
    let result = adyen(&server).lifecycle(&req).await;
    assert!(matches!(result.call.outcome, Outcome::Pending { .. }));
}

#[test]
fn an_authorisation_adjustment_notification_reads_as_the_adjustments_outcome() {
    use capture_worker::provider::adyen::{NotificationEvent, parse_notification, sign};
    let hmac = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
    let key = Secret::new(hmac);
    let item = |success: &str| {
        let payload = format!(
            "JDD6LKT8MBLZNN84:{PSP}:{MERCHANT}:ORD-1042/increment-1:12500:EUR:AUTHORISATION_ADJUSTMENT:{success}"
        );
        json!({"NotificationRequestItem": {
            "eventCode": "AUTHORISATION_ADJUSTMENT",
            "success": success,
            "pspReference": "JDD6LKT8MBLZNN84",
            "originalReference": PSP,
            "merchantAccountCode": MERCHANT,
            "merchantReference": "ORD-1042/increment-1",
            "amount": {"currency": "EUR", "value": 12500},
            "eventDate": "2026-03-08T12:00:00+01:00",
            "reason": "",
            "additionalData": {"hmacSignature": sign(&payload, &key).unwrap()},
        }})
    };
    let body = json!({"live": "false", "notificationItems": [item("true"), item("false")]});
    let items = parse_notification(body.to_string().as_bytes(), &key).unwrap();
    assert_eq!(items[0].event, NotificationEvent::AuthorisationAdjustment);
    assert!(matches!(
        items[0].outcome(),
        Some(Outcome::Succeeded { .. })
    ));
    assert!(matches!(items[1].outcome(), Some(Outcome::Declined { .. })));
}

// ---------------------------------------------------------------- PayPal

const CLIENT_ID: &str = "AcmeClientId01";
const CLIENT_SECRET: &str = "EPaypalSecretNeverLogged0123456789";
const ACCESS_TOKEN: &str = "A21AAAccessTokenNeverLogged";
const AUTH: &str = "0VF52814937998046";

fn paypal(server: &MockServer) -> PayPalProvider {
    PayPalProvider::new(
        ProviderName::parse("paypal").unwrap(),
        server.uri(),
        Some(CLIENT_ID.to_owned()),
        Some(Secret::new(CLIENT_SECRET)),
        Duration::from_secs(10),
    )
    .unwrap()
}

async fn paypal_token(server: &MockServer) {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    Mock::given(method("POST"))
        .and(path("/v1/oauth2/token"))
        .and(header("authorization", format!("Basic {basic}").as_str()))
        .and(body_string("grant_type=client_credentials"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 32400,
        })))
        .mount(server)
        .await;
}

#[tokio::test]
async fn paypal_reauthorizes_what_is_left_and_answers_with_the_new_authorization() {
    let server = MockServer::start().await;
    paypal_token(&server).await;
    let req = request("paypal", AUTH, LifecycleCall::Extend, usd(7_000), 0);
    Mock::given(method("POST"))
        .and(path(format!(
            "/v2/payments/authorizations/{AUTH}/reauthorize"
        )))
        .and(header(
            "authorization",
            format!("Bearer {ACCESS_TOKEN}").as_str(),
        ))
        .and(header("paypal-request-id", req.idempotency_key.as_str()))
        .and(header("prefer", "return=representation"))
        .and(body_json(
            json!({"amount": {"currency_code": "USD", "value": "70.00"}}),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "8AA831015G517922L",
            "status": "CREATED",
            "amount": {"currency_code": "USD", "value": "70.00"},
            "expiration_time": "2026-03-30T12:00:00Z",
            "create_time": "2026-03-05T12:00:00Z",
            "links": [],
        })))
        .expect(1)
        .mount(&server)
        .await;
    let result = paypal(&server).lifecycle(&req).await;
    assert_eq!(
        result.call.outcome,
        Outcome::Succeeded {
            reference: Some("8AA831015G517922L".to_owned())
        }
    );
    assert_eq!(
        result.hold,
        Some(HoldChange {
            authorization_id: Some(AuthorizationId::parse("8AA831015G517922L").unwrap()),
            amount: Some(m(7_000)),
            expires_at: Some(Utc.with_ymd_and_hms(2026, 3, 30, 12, 0, 0).unwrap()),
        })
    );
}

#[tokio::test]
async fn a_second_paypal_reauthorization_is_refused_as_a_request_paypal_does_not_support() {
    let server = MockServer::start().await;
    paypal_token(&server).await;
    let req = request("paypal", AUTH, LifecycleCall::Extend, usd(7_000), 0);
    Mock::given(method("POST"))
        .and(path(format!("/v2/payments/authorizations/{AUTH}/reauthorize")))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "name": "UNPROCESSABLE_ENTITY",
            "message": "The requested action could not be performed, semantically incorrect, or failed business validation.",
            "debug_id": "b2f7d4e1c5a63",
            "details": [{"issue": "REAUTHORIZATION_NOT_SUPPORTED",
                "description": "A reauthorize cannot be attempted on an authorization_id that is the result of a prior reauthorization"}],
        })))
        .expect(1)
        .mount(&server)
        .await;
    let result = paypal(&server).lifecycle(&req).await;
    let reason = failure_reason(&result.call);
    assert!(reason.contains("REAUTHORIZATION_NOT_SUPPORTED"), "{reason}");
    assert_eq!(result.hold, None);
}

#[tokio::test]
async fn paypal_documents_no_increment_and_sends_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    let req = request("paypal", AUTH, LifecycleCall::Increment, usd(7_000), 500);
    let result = paypal(&server).lifecycle(&req).await;
    assert_eq!(result.call.provider_code.as_deref(), Some("not_supported"));
}

// ---------------------------------------------------------------- the others

#[tokio::test]
async fn providers_that_document_neither_send_nothing_and_say_so() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    let gr4vy = Gr4vyProvider::new(
        ProviderName::parse("gr4vy").unwrap(),
        server.uri(),
        Some(Secret::new("jwt")),
        Some("default".to_owned()),
        Duration::from_secs(10),
    )
    .unwrap();
    for call in [LifecycleCall::Extend, LifecycleCall::Increment] {
        let req = request(
            "gr4vy",
            "8724fd24-5489-4a5d-90fd-0604df7d3b83",
            call,
            usd(1_000),
            0,
        );
        let result = gr4vy.lifecycle(&req).await;
        let reason = failure_reason(&result.call);
        assert!(reason.contains("documents no way"), "{reason}");
        assert_eq!(result.call.provider_code.as_deref(), Some("not_supported"));
    }
}

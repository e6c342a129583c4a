//! The sandbox dialects model extending and incrementing holds, driven by the real adapters
//! over HTTP: the new amount, the new expiry, PayPal's new authorization, Adyen's
//! `AUTHORISATION_ADJUSTMENT` notification, and the documented refusals (after a capture, a
//! second reauthorization).

use std::time::Duration;

use capture_worker::config::Secret;
use capture_worker::domain::lifecycle::lifecycle_key;
use capture_worker::domain::*;
use capture_worker::provider::adyen::{AdyenProvider, NotificationEvent, parse_notification};
use capture_worker::provider::checkout::CheckoutProvider;
use capture_worker::provider::paypal::PayPalProvider;
use capture_worker::provider::stripe::StripeProvider;
use capture_worker::provider::{
    CaptureRequest, LifecycleCall, LifecycleRequest, Outcome, PaymentProvider,
};
use capture_worker::sandbox::{self, NewAuthorization, Sandbox, SandboxOptions, SandboxServer};
use chrono::Utc;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

struct Running {
    base: String,
    sandbox: Sandbox,
    _server: SandboxServer,
}

async fn start() -> Running {
    let (base, sandbox, server) = sandbox::spawn(SandboxOptions::default()).await.unwrap();
    Running {
        base,
        sandbox,
        _server: server,
    }
}

fn name(n: &str) -> ProviderName {
    ProviderName::parse(n).unwrap()
}

fn request(
    provider: &str,
    authorization: &str,
    call: LifecycleCall,
    authorized: Money,
    by: i64,
    sequence: u32,
) -> LifecycleRequest {
    let authorization_id = AuthorizationId::parse(authorization).unwrap();
    LifecycleRequest {
        call,
        idempotency_key: lifecycle_key(&name(provider), &authorization_id, call.label(), sequence),
        authorization_id,
        order_id: OrderId::parse("ORD-77").unwrap(),
        sequence,
        authorized,
        by: m(by),
    }
}

fn capture_of(provider: &str, authorization: &str, amount: Money) -> CaptureRequest {
    let authorization_id = AuthorizationId::parse(authorization).unwrap();
    CaptureRequest {
        idempotency_key: IdempotencyKey::derive(&name(provider), &authorization_id, "SHP-1", 0),
        authorization_id,
        order_id: OrderId::parse("ORD-77").unwrap(),
        cause: "SHP-1".to_owned(),
        sequence: 1,
        amount,
        is_final: false,
        lines: Vec::new(),
    }
}

fn usd(minor: i64) -> Money {
    Money::new(m(minor), cur("USD"))
}

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn stripe_increment_raises_the_payment_intent_and_is_refused_once_captured() {
    let run = start().await;
    run.sandbox
        .create_authorization(NewAuthorization::new("pi_lifecycle_1", 10_000, "USD"))
        .unwrap();
    let stripe = StripeProvider::new(name("sandbox"), run.base.clone(), None, T).unwrap();
    let inc = request(
        "sandbox",
        "pi_lifecycle_1",
        LifecycleCall::Increment,
        usd(10_000),
        2_500,
        1,
    );
    let result = stripe.lifecycle(&inc).await;
    assert!(
        matches!(result.call.outcome, Outcome::Succeeded { .. }),
        "{:?}",
        result.call
    );
    assert_eq!(result.hold.unwrap().amount, Some(m(12_500)));
    let view = run.sandbox.authorization("pi_lifecycle_1").unwrap();
    assert_eq!((view.amount, view.amount_capturable), (12_500, 12_500));
    // The same key again is a replay, not a second increment.
    let again = stripe.lifecycle(&inc).await;
    assert!(matches!(again.call.outcome, Outcome::Succeeded { .. }));
    assert_eq!(
        run.sandbox.authorization("pi_lifecycle_1").unwrap().amount,
        12_500
    );

    let captured = stripe
        .capture(&capture_of("sandbox", "pi_lifecycle_1", usd(5_000)))
        .await;
    assert!(matches!(captured.outcome, Outcome::Succeeded { .. }));
    let late = request(
        "sandbox",
        "pi_lifecycle_1",
        LifecycleCall::Increment,
        usd(12_500),
        100,
        2,
    );
    let refused = stripe.lifecycle(&late).await;
    assert!(
        matches!(refused.call.outcome, Outcome::Failed { .. }),
        "{:?}",
        refused.call
    );
    assert_eq!(
        run.sandbox.authorization("pi_lifecycle_1").unwrap().amount,
        12_500
    );
}

#[tokio::test]
async fn checkout_increment_and_zero_extension_move_the_amount_and_the_expiry() {
    let run = start().await;
    let mut new = NewAuthorization::new("pay_lifecycle_1", 10_000, "GBP");
    new.expires_at = Some(Utc::now() + chrono::Duration::days(1));
    run.sandbox.create_authorization(new).unwrap();
    let checkout =
        CheckoutProvider::new(name("checkout"), format!("{}/checkout", run.base), None, T).unwrap();
    let gbp = |v| Money::new(m(v), cur("GBP"));
    let extend = request(
        "checkout",
        "pay_lifecycle_1",
        LifecycleCall::Extend,
        gbp(10_000),
        0,
        1,
    );
    let result = checkout.lifecycle(&extend).await;
    assert!(
        matches!(result.call.outcome, Outcome::Succeeded { .. }),
        "{:?}",
        result.call
    );
    let hold = result.hold.unwrap();
    assert_eq!(hold.amount, Some(m(10_000)));
    let expires = hold.expires_at.unwrap();
    assert!(
        expires > Utc::now() + chrono::Duration::days(6),
        "{expires}"
    );
    assert_eq!(
        run.sandbox
            .authorization("pay_lifecycle_1")
            .unwrap()
            .expires_at
            .timestamp(),
        expires.timestamp()
    );

    let inc = request(
        "checkout",
        "pay_lifecycle_1",
        LifecycleCall::Increment,
        gbp(10_000),
        1_500,
        2,
    );
    let result = checkout.lifecycle(&inc).await;
    assert_eq!(result.hold.unwrap().amount, Some(m(11_500)));
    assert_eq!(
        run.sandbox
            .authorization("pay_lifecycle_1")
            .unwrap()
            .amount_capturable,
        11_500
    );

    let accepted = checkout
        .capture(&capture_of("checkout", "pay_lifecycle_1", gbp(2_000)))
        .await;
    assert!(matches!(accepted.outcome, Outcome::Pending { .. }));
    let late = request(
        "checkout",
        "pay_lifecycle_1",
        LifecycleCall::Increment,
        gbp(11_500),
        100,
        3,
    );
    let refused = checkout.lifecycle(&late).await;
    assert_eq!(refused.call.http_status, Some(403));
    assert!(matches!(refused.call.outcome, Outcome::Failed { .. }));
}

#[tokio::test]
async fn checkout_reports_a_refused_increment_as_a_decline() {
    let run = start().await;
    let mut new = NewAuthorization::new("pay_lifecycle_2", 10_000, "GBP");
    new.scenario = Some(capture_worker::sandbox::Scenario {
        decline_adjustments: true,
        ..Default::default()
    });
    run.sandbox.create_authorization(new).unwrap();
    let checkout =
        CheckoutProvider::new(name("checkout"), format!("{}/checkout", run.base), None, T).unwrap();
    let inc = request(
        "checkout",
        "pay_lifecycle_2",
        LifecycleCall::Increment,
        Money::new(m(10_000), cur("GBP")),
        1_500,
        1,
    );
    let result = checkout.lifecycle(&inc).await;
    assert!(
        matches!(result.call.outcome, Outcome::Declined { .. }),
        "{:?}",
        result.call
    );
    assert_eq!(
        run.sandbox.authorization("pay_lifecycle_2").unwrap().amount,
        10_000
    );
}

#[tokio::test]
async fn paypal_reauthorization_makes_a_new_authorization_that_captures_and_cannot_be_reauthorized()
{
    let run = start().await;
    run.sandbox
        .create_authorization(NewAuthorization::new("0VF5LIFECYCLE01", 10_000, "USD"))
        .unwrap();
    let paypal = PayPalProvider::new(
        name("paypal"),
        format!("{}/paypal", run.base),
        None,
        None,
        T,
    )
    .unwrap();
    let first = paypal
        .capture(&capture_of("paypal", "0VF5LIFECYCLE01", usd(3_000)))
        .await;
    assert!(
        matches!(first.outcome, Outcome::Succeeded { .. }),
        "{first:?}"
    );

    let reauth = request(
        "paypal",
        "0VF5LIFECYCLE01",
        LifecycleCall::Extend,
        usd(7_000),
        0,
        1,
    );
    let result = paypal.lifecycle(&reauth).await;
    assert!(
        matches!(result.call.outcome, Outcome::Succeeded { .. }),
        "{:?}",
        result.call
    );
    let hold = result.hold.unwrap();
    let new_id = hold.authorization_id.unwrap();
    assert_ne!(new_id.as_str(), "0VF5LIFECYCLE01");
    assert_eq!(hold.amount, Some(m(7_000)));
    let new = run.sandbox.authorization(new_id.as_str()).unwrap();
    assert_eq!(new.amount_capturable, 7_000);
    let honor = new.honor_until.unwrap();
    assert!(honor > Utc::now() + chrono::Duration::hours(71), "{honor}");
    let old = run.sandbox.authorization("0VF5LIFECYCLE01").unwrap();
    assert_eq!((old.amount_received, old.amount_capturable), (3_000, 0));

    let second = paypal
        .capture(&capture_of("paypal", new_id.as_str(), usd(7_000)))
        .await;
    assert!(
        matches!(second.outcome, Outcome::Succeeded { .. }),
        "{second:?}"
    );

    let again = request(
        "paypal",
        new_id.as_str(),
        LifecycleCall::Extend,
        usd(1),
        0,
        2,
    );
    let refused = paypal.lifecycle(&again).await;
    assert!(
        matches!(refused.call.outcome, Outcome::Failed { .. }),
        "{:?}",
        refused.call
    );
}

#[tokio::test]
async fn adyen_amount_update_changes_the_hold_and_notifies_authorisation_adjustment() {
    let run = start().await;
    let hmac = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("[accepted]"))
        .mount(&receiver)
        .await;
    run.sandbox
        .set_notification_target("adyen", &receiver.uri(), Some(hmac));
    run.sandbox
        .create_authorization(NewAuthorization::new("QFQTLIFECYCLE01", 10_000, "EUR"))
        .unwrap();
    let adyen = AdyenProvider::new(
        name("adyen"),
        format!("{}/adyen/v71", run.base),
        None,
        Some("AcmeShopEU".to_owned()),
        T,
    )
    .unwrap();
    let eur = |v| Money::new(m(v), cur("EUR"));
    let inc = request(
        "adyen",
        "QFQTLIFECYCLE01",
        LifecycleCall::Increment,
        eur(10_000),
        2_000,
        1,
    );
    let result = adyen.lifecycle(&inc).await;
    assert!(
        matches!(result.call.outcome, Outcome::Pending { .. }),
        "{:?}",
        result.call
    );
    assert_eq!(
        run.sandbox.authorization("QFQTLIFECYCLE01").unwrap().amount,
        12_000
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let got = receiver.received_requests().await.unwrap_or_default();
        if let Some(r) = got.first() {
            break r.body.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no notification arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let items = parse_notification(&body, &Secret::new(hmac)).unwrap();
    assert_eq!(items[0].event, NotificationEvent::AuthorisationAdjustment);
    assert!(items[0].success);
    assert_eq!(items[0].merchant_reference, "ORD-77/increment-1");
}

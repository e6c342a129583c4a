//! Every adapter end to end against its sandbox dialect, over HTTP, through a real worker:
//! three-parcel orders with retries, declines, final captures and releases; asynchronous
//! outcomes by signed notification or by read-back; the single-capture strategy and the
//! authorization deadline; the capture-count limit; several providers in one worker.

use std::time::Duration;

use capture_worker::config::Secret;
use capture_worker::sandbox::{AuthorizationView, Fault, NewAuthorization, Scenario, Status};
use serde_json::{Value, json};

use crate::harness::*;

/// The USD example order (total 12455; parcels worth 5182, 2890 and 4383) on `provider`,
/// under its own order id, authorization and message ids.
pub fn order_on(
    provider: &str,
    order_id: &str,
    authorization: &str,
    authorized: i64,
) -> (Value, Value, Value, Value) {
    let (mut order, mut s1, mut s2, mut s3) = usd_order();
    for m in [&mut order, &mut s1, &mut s2, &mut s3] {
        let id = format!("{order_id}-{}", m["message_id"].as_str().unwrap());
        m["message_id"] = Value::String(id);
        m["data"]["order_id"] = Value::String(order_id.into());
    }
    order["data"]["payment"]["provider"] = Value::String(provider.into());
    order["data"]["payment"]["authorization_id"] = Value::String(authorization.into());
    order["data"]["payment"]["authorized_amount"] = json!(authorized);
    (order, s1, s2, s3)
}

/// (sequence, kind, amount, final, status) of the order's captures.
type Row = (i32, String, i64, bool, String);

fn row(sequence: i32, kind: &str, amount: i64, is_final: bool, status: &str) -> Row {
    (sequence, kind.into(), amount, is_final, status.into())
}

/// The example order's three parcels, each captured once, the last one final.
fn three_captures() -> Vec<Row> {
    vec![
        row(1, "capture", 5182, false, "succeeded"),
        row(2, "capture", 2890, false, "succeeded"),
        row(3, "capture", 4383, true, "succeeded"),
    ]
}

pub fn authorization(id: &str, amount: i64, scenario: Scenario) -> NewAuthorization {
    let mut a = NewAuthorization::new(id, amount, "USD");
    a.scenario = Some(scenario);
    a
}

/// An authorization whose first capture meets a 503, then a 429 (retry after 1 s), before it
/// goes through.
fn retried(id: &str, amount: i64) -> NewAuthorization {
    let faults = vec![
        Fault::Unavailable,
        Fault::RateLimited {
            retry_after_secs: 1,
        },
    ];
    authorization(
        id,
        amount,
        Scenario {
            faults,
            ..Scenario::default()
        },
    )
}

/// Waits until `count_sql`, a count with the order id as `$1`, gives `expected` for
/// `order_id`.
async fn wait_for_order(app: &TestApp, count_sql: &'static str, order_id: &str, expected: i64) {
    let pool = app.store.pool().clone();
    let order_id = order_id.to_owned();
    eventually(Duration::from_secs(20), || {
        let pool = pool.clone();
        let order_id = order_id.clone();
        async move {
            sqlx::query_scalar::<_, i64>(count_sql)
                .bind(&order_id)
                .fetch_one(&pool)
                .await
                .unwrap()
                == expected
        }
    })
    .await;
}

/// Ships the three parcels of a `provider` order on the authorization `auth` (with its
/// scenario), and waits for `captures` rows to settle.
async fn three_parcels(
    app: &TestApp,
    provider: &str,
    order_id: &str,
    auth: NewAuthorization,
    captures: i64,
) -> Vec<Row> {
    let (order, s1, s2, s3) = order_on(provider, order_id, &auth.id, auth.amount);
    app.authorize_with(auth);
    app.publish(&[order, s1, s2, s3]).await;
    app.wait_settled(order_id, captures).await;
    app.captures(order_id).await
}

/// Ships the three parcels of a `provider` order on `auth` (the order's total, 12455), whose
/// first capture meets a 503 and a 429, and checks the three captures succeeded once each, the
/// last one final, through the dialect's answers (`accepted`: its status for a capture it
/// took). Returns the authorization as the sandbox holds it.
async fn three_parcels_through_retries(
    app: &TestApp,
    provider: &str,
    order_id: &str,
    auth: &str,
    accepted: u16,
) -> AuthorizationView {
    let rows = three_parcels(app, provider, order_id, retried(auth, 12455), 3).await;
    assert_eq!(rows, three_captures(), "{provider}");
    assert_eq!(
        capture_statuses(app, auth),
        vec![503, 429, accepted, accepted, accepted],
        "{provider}"
    );
    let a = app.sandbox.authorization(auth).unwrap();
    assert_eq!(
        (a.amount_received, a.status),
        (12455, Status::Succeeded),
        "{provider}"
    );
    app.assert_keys_sound();
    a
}

/// The HTTP statuses the dialect answered to capture requests, in order.
fn capture_statuses(app: &TestApp, auth: &str) -> Vec<u16> {
    app.sandbox
        .ledger_for(auth)
        .into_iter()
        .filter(|e| {
            e.method == "POST"
                && !e.path.ends_with("/void")
                && !e.path.ends_with("/cancels")
                && !e.path.ends_with("/voids")
        })
        .map(|e| e.http_status)
        .collect()
}

async fn webhook_events(app: &TestApp, provider: &str) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "select event_type, disposition, coalesce(outcome, '') from webhook_events
         where provider = $1 order by webhook_event_id",
    )
    .bind(provider)
    .fetch_all(app.store.pool())
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// Each adapter: three parcels with retries, then the final capture or the release.

#[tokio::test]
async fn gr4vy_captures_three_parcels_through_retries_the_last_one_final() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let auth = "0f7d2b8e-6c1a-4a5e-9d61-3b7f0c9e2a11";
    let a = three_parcels_through_retries(&app, "gr4vy", "ORD-GR-1", auth, 200).await;
    assert_eq!(
        a.captures.iter().map(|c| c.is_final).collect::<Vec<_>>(),
        vec![false, false, true],
        "final is sent explicitly: false, false, true"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn adyen_captures_three_parcels_by_notification_then_cancels_the_rest() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let auth = "ADYENPSP0000001";
    // Authorized above the total: the rest is released with a cancel.
    let rows = three_parcels(&app, "adyen", "ORD-AD-1", retried(auth, 15000), 4).await;
    let mut expected = three_captures();
    expected.push(row(4, "release", 0, false, "succeeded"));
    assert_eq!(rows, expected);
    assert_eq!(capture_statuses(&app, auth), vec![503, 429, 201, 201, 201]);
    let a = app.sandbox.authorization(auth).unwrap();
    assert_eq!((a.amount_received, a.status), (12455, Status::Canceled));
    let events = webhook_events(&app, "adyen").await;
    assert_eq!(
        events.iter().filter(|e| e.0 == "CAPTURE:true").count(),
        3,
        "each capture settled by its CAPTURE notification: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.0 == "CANCELLATION:true" && e.1 == "applied")
    );
    app.assert_keys_sound();
    app.cleanup().await;
}

#[tokio::test]
async fn checkout_captures_three_parcels_through_retries_the_last_one_final() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    // 202: accepted, settled by the signed webhook.
    three_parcels_through_retries(&app, "checkout", "ORD-CK-1", "pay_sbx_checkout_1", 202).await;
    app.cleanup().await;
}

#[tokio::test]
async fn paypal_captures_three_parcels_through_retries_with_final_capture_on_the_last() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    three_parcels_through_retries(&app, "paypal", "ORD-PP-1", "0VF52814937998046", 201).await;
    app.cleanup().await;
}

#[tokio::test]
async fn hellgate_captures_once_after_the_last_parcel_through_retries() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let auth = "hg-payment-0001";
    let rows = three_parcels(&app, "hellgate", "ORD-HG-1", retried(auth, 12455), 1).await;
    assert_eq!(rows, vec![row(1, "capture", 12455, true, "succeeded")]);
    // The 503 left the outcome unknown (no idempotency key): the payment was read back and
    // showed nothing captured before the capture went again; the 429 was retried.
    assert_eq!(capture_statuses(&app, auth), vec![503, 429, 200]);
    let a = app.sandbox.authorization(auth).unwrap();
    assert_eq!(a.amount_received, 12455);
    assert_eq!(a.captures.len(), 1);
    app.cleanup().await;
}

#[tokio::test]
async fn the_orchestrator_captures_once_by_default_and_per_parcel_where_follow_ons_are_allowed() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let single = "txn_single_0001";
    let mut auth = authorization(
        single,
        12455,
        Scenario {
            faults: vec![Fault::RateLimited {
                retry_after_secs: 1,
            }],
            ..Scenario::default()
        },
    );
    auth.max_captures = Some(1);
    let rows = three_parcels(&app, "orchestrator", "ORD-OR-1", auth, 1).await;
    assert_eq!(rows, vec![row(1, "capture", 12455, true, "succeeded")]);
    assert_eq!(capture_statuses(&app, single), vec![429, 201]);

    let multi = "txn_multi_0001";
    let mut auth = authorization(multi, 12455, Scenario::default());
    auth.max_captures = Some(10);
    let rows = three_parcels(&app, "orchestrator_multi", "ORD-OR-2", auth, 3).await;
    assert_eq!(
        rows.iter().map(|r| (r.2, r.4.as_str())).collect::<Vec<_>>(),
        vec![
            (5182, "succeeded"),
            (2890, "succeeded"),
            (4383, "succeeded")
        ]
    );
    assert_eq!(
        app.sandbox.authorization(multi).unwrap().amount_received,
        12455
    );
    app.cleanup().await;
}

// ---------------------------------------------------------------------------------------
// Declines.

/// Ships three parcels on a `provider` authorization that declines its `nth` capture, then
/// returns the order's captures once the decline has latched it.
async fn declined(
    app: &TestApp,
    provider: &str,
    order_id: &str,
    auth: NewAuthorization,
) -> Vec<Row> {
    let (order, s1, s2, s3) = order_on(provider, order_id, &auth.id, auth.amount);
    app.authorize_with(auth);
    app.publish(&[order, s1, s2, s3]).await;
    // Latched, and nothing of the order still open.
    wait_for_order(
        app,
        "select count(*) from orders o where o.order_id = $1 and o.phase = 'declined'
         and not exists (select from captures c where c.order_id = o.order_id
                         and c.status in ('queued','in_flight','pending','retrying'))",
        order_id,
        1,
    )
    .await;
    app.captures(order_id).await
}

fn decline_second() -> Scenario {
    Scenario {
        decline_on_capture: Some(2),
        decline_code: Some("insufficient_funds".into()),
        ..Scenario::default()
    }
}

#[tokio::test]
async fn a_decline_latches_the_order_on_every_multi_capture_dialect() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    for (provider, order_id, auth) in [
        ("gr4vy", "ORD-GR-D", "7c1f3a52-0e4b-4f0e-8a43-5d2b9c6e1f70"),
        ("adyen", "ORD-AD-D", "ADYENPSP000000D"),
        ("checkout", "ORD-CK-D", "pay_sbx_checkout_d"),
        ("paypal", "ORD-PP-D", "1AB23456CD789012D"),
    ] {
        let rows = declined(
            &app,
            provider,
            order_id,
            authorization(auth, 12455, decline_second()),
        )
        .await;
        let statuses: Vec<&str> = rows.iter().map(|r| r.4.as_str()).collect();
        assert_eq!(
            statuses[..2],
            ["succeeded", "declined"],
            "{provider}: {rows:?}"
        );
        assert!(
            statuses[2..].iter().all(|s| *s == "blocked"),
            "{provider}: nothing after the decline is sent: {rows:?}"
        );
        let a = app.sandbox.authorization(auth).unwrap();
        assert_eq!(a.amount_received, 5182, "{provider}");
        assert_eq!(a.captures.len(), 1, "{provider}: one capture moved money");
    }
    // The asynchronous ones were declined by their notification.
    assert!(
        webhook_events(&app, "adyen")
            .await
            .iter()
            .any(|e| e.0 == "CAPTURE:false" && e.2 == "declined")
    );
    assert!(
        webhook_events(&app, "checkout")
            .await
            .iter()
            .any(|e| e.0 == "payment_capture_declined" && e.1 == "applied")
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_refused_single_capture_is_a_decline_on_hellgate_and_needs_an_operator_on_the_orchestrator()
 {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let decline_first = Scenario {
        decline_on_capture: Some(1),
        ..Scenario::default()
    };
    let rows = declined(
        &app,
        "hellgate",
        "ORD-HG-D",
        authorization("hg-payment-000d", 12455, decline_first.clone()),
    )
    .await;
    // Hellgate's capture was accepted (capturing), then the payment read back as failed.
    assert_eq!(rows, vec![row(1, "capture", 12455, true, "declined")]);

    let mut auth = authorization("txn_declined_01", 12455, decline_first);
    auth.max_captures = Some(1);
    let (order, s1, s2, s3) = order_on("orchestrator", "ORD-OR-D", "txn_declined_01", 12455);
    app.authorize_with(auth);
    app.publish(&[order, s1, s2, s3]).await;
    app.wait_settled("ORD-OR-D", 1).await;
    // The orchestrator documents no decline, only a transaction that was not approved.
    let rows = app.captures("ORD-OR-D").await;
    assert_eq!(rows, vec![row(1, "capture", 12455, true, "attention")]);
    assert_eq!(
        app.sandbox.ledger_for("txn_declined_01").len(),
        1,
        "never sent again"
    );
    app.cleanup().await;
}

// ---------------------------------------------------------------------------------------
// Releases.

#[tokio::test]
async fn an_order_cancelled_before_it_ships_releases_the_authorization_on_every_dialect() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    for (provider, order_id, auth) in [
        ("gr4vy", "ORD-GR-V", "2e9c0d1b-5f3a-4c6e-8b7d-9a0f1e2d3c4b"),
        ("adyen", "ORD-AD-V", "ADYENPSP000000V"),
        ("checkout", "ORD-CK-V", "pay_sbx_checkout_v"),
        ("paypal", "ORD-PP-V", "9XY87654WV321098V"),
        ("hellgate", "ORD-HG-V", "hg-payment-000v"),
    ] {
        let (order, _, _, _) = order_on(provider, order_id, auth, 12455);
        let cancel = json!({
            "message_id": format!("{order_id}-cancel"),
            "type": "order.lines_cancelled",
            "schema_version": 1,
            "occurred_at": "2026-11-22T09:00:00Z",
            "data": {"order_id": order_id, "items": [
                {"line_id": "L1", "quantity": 3},
                {"line_id": "L2", "quantity": 2},
                {"line_id": "L3", "quantity": 1}
            ]}
        });
        app.authorize_with(authorization(auth, 12455, Scenario::default()));
        app.publish(&[order, cancel]).await;
        app.wait_settled(order_id, 1).await;
        assert_eq!(
            app.captures(order_id).await,
            vec![row(1, "void", 0, true, "succeeded")],
            "{provider}"
        );
        let a = app.sandbox.authorization(auth).unwrap();
        assert_eq!(
            (a.status, a.amount_received),
            (Status::Canceled, 0),
            "{provider}"
        );
    }
    assert!(
        webhook_events(&app, "adyen")
            .await
            .iter()
            .any(|e| e.0 == "CANCELLATION:true")
    );
    app.cleanup().await;
}

// ---------------------------------------------------------------------------------------
// Asynchronous outcomes.

/// The pending capture's provider reference, once the provider accepted it.
pub async fn pending_reference(app: &TestApp, order_id: &str) -> String {
    wait_for_order(
        app,
        "select count(*) from captures where order_id = $1 and accepted_at is not null
         and provider_reference is not null and status in ('pending', 'retrying')",
        order_id,
        1,
    )
    .await;
    sqlx::query_scalar(
        "select provider_reference from captures where order_id = $1 and accepted_at is not null",
    )
    .bind(order_id)
    .fetch_one(app.store.pool())
    .await
    .unwrap()
}

/// Ships the first parcel of an Adyen order on an authorization whose notifications are lost,
/// and returns the pending capture's reference once Adyen accepted it.
async fn adyen_capture_left_pending(app: &TestApp, order_id: &str, auth: &str) -> String {
    let (order, s1, _, _) = order_on("adyen", order_id, auth, 12455);
    let silent = Scenario {
        silent: true,
        ..Scenario::default()
    };
    app.authorize_with(authorization(auth, 12455, silent));
    app.publish(&[order, s1]).await;
    pending_reference(app, order_id).await
}

/// An Adyen `CAPTURE` notification for `psp` (a capture of `authorization`), signed with
/// `key`.
fn adyen_capture_notification(
    psp: &str,
    authorization: &str,
    reference: &str,
    value: i64,
    key: &str,
) -> String {
    let data =
        format!("{psp}:{authorization}:{ADYEN_MERCHANT}:{reference}:{value}:USD:CAPTURE:true");
    let signature = capture_worker::provider::adyen::sign(&data, &Secret::new(key)).unwrap();
    json!({"live": "false", "notificationItems": [{"NotificationRequestItem": {
        "additionalData": {"hmacSignature": signature},
        "amount": {"currency": "USD", "value": value},
        "eventCode": "CAPTURE",
        "merchantAccountCode": ADYEN_MERCHANT,
        "merchantReference": reference,
        "originalReference": authorization,
        "pspReference": psp,
        "success": "true"
    }}]})
    .to_string()
}

pub async fn post_webhook(app: &TestApp, provider: &str, body: String) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{}/webhooks/{provider}", app.worker_http(0)))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Asserts the order's first capture is still waiting for its outcome (pending, or in flight
/// for a moment while it is read back).
async fn assert_unsettled(app: &TestApp, order_id: &str) {
    let status = capture_status(app, order_id).await;
    assert!(
        ["pending", "in_flight", "retrying"].contains(&status.as_str()),
        "{order_id}: {status}"
    );
}

pub async fn capture_status(app: &TestApp, order_id: &str) -> String {
    sqlx::query_scalar("select status from captures where order_id = $1 order by sequence limit 1")
        .bind(order_id)
        .fetch_one(app.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn an_adyen_capture_stays_pending_until_a_validly_signed_notification_settles_it_once() {
    // The sandbox's own notification is lost, so the test plays Adyen.
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let auth = "ADYENPSP000000N";
    let psp = adyen_capture_left_pending(&app, "ORD-AD-N", auth).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Adyen has no read-back: it waits.
    assert_unsettled(&app, "ORD-AD-N").await;

    // A bad signature: refused with 401, recorded, nothing changes.
    let forged = adyen_capture_notification(
        &psp,
        auth,
        "ORD-AD-N/S1",
        5182,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
    );
    assert_eq!(post_webhook(&app, "adyen", forged).await, 401);
    let rejected: Vec<(String, String)> =
        sqlx::query_as("select provider, reason from webhook_rejections")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    assert_eq!(
        rejected,
        vec![("adyen".to_owned(), "bad_signature".to_owned())]
    );
    assert_unsettled(&app, "ORD-AD-N").await;

    // The genuine notification settles it.
    let genuine = adyen_capture_notification(&psp, auth, "ORD-AD-N/S1", 5182, ADYEN_HMAC_KEY);
    assert_eq!(post_webhook(&app, "adyen", genuine.clone()).await, 200);
    assert_eq!(capture_status(&app, "ORD-AD-N").await, "succeeded");

    // Delivered again: 200, and nothing more happens.
    assert_eq!(post_webhook(&app, "adyen", genuine).await, 200);
    assert_eq!(
        webhook_events(&app, "adyen").await,
        vec![(
            "CAPTURE:true".to_owned(),
            "applied".to_owned(),
            "succeeded".to_owned()
        )]
    );
    let succeeded_at: (i64,) = sqlx::query_as("select count(*) from capture_attempts a join captures c using (capture_id) where c.order_id = 'ORD-AD-N' and a.operation = 'capture'")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(succeeded_at.0, 1, "the capture was sent once");
    app.cleanup().await;
}

#[tokio::test]
async fn an_adyen_capture_whose_notification_never_comes_goes_to_an_operator_and_a_late_one_still_settles_it()
 {
    let app = TestApp::spawn_with_dialects(|s| s.capture.max_retry_age_seconds = 2).await;
    let auth = "ADYENPSP000000L";
    let psp = adyen_capture_left_pending(&app, "ORD-AD-L", auth).await;
    app.wait_count(
        "select count(*) from captures where status = 'attention'",
        1,
    )
    .await;
    let error: String =
        sqlx::query_scalar("select last_error from captures where order_id = 'ORD-AD-L'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert!(error.contains("has not settled it"), "{error}");
    assert_eq!(app.sandbox.ledger_for(auth).len(), 1, "never sent again");

    let genuine = adyen_capture_notification(&psp, auth, "ORD-AD-L/S1", 5182, ADYEN_HMAC_KEY);
    assert_eq!(post_webhook(&app, "adyen", genuine).await, 200);
    assert_eq!(capture_status(&app, "ORD-AD-L").await, "succeeded");
    app.cleanup().await;
}

#[tokio::test]
async fn a_checkout_capture_whose_webhook_is_lost_is_settled_by_reading_the_payment_back() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let auth = "pay_sbx_checkout_p";
    let (order, s1, _, _) = order_on("checkout", "ORD-CK-P", auth, 12455);
    app.authorize_with(authorization(
        auth,
        12455,
        Scenario {
            silent: true,
            settle_after_ms: Some(700),
            ..Scenario::default()
        },
    ));
    app.publish(&[order, s1]).await;
    app.wait_settled("ORD-CK-P", 1).await;
    assert_eq!(capture_status(&app, "ORD-CK-P").await, "succeeded");
    assert!(
        webhook_events(&app, "checkout").await.is_empty(),
        "no webhook came"
    );
    let lookups: Vec<String> = sqlx::query_scalar(
        "select outcome from capture_attempts a join captures c using (capture_id)
         where c.order_id = 'ORD-CK-P' and a.operation = 'lookup' order by attempt_id",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        lookups.last().map(String::as_str),
        Some("succeeded"),
        "{lookups:?}"
    );
    assert!(
        lookups.iter().any(|o| o == "pending"),
        "a read-back before it settled kept it pending rather than sending it again: {lookups:?}"
    );
    assert_eq!(
        app.sandbox
            .ledger_for(auth)
            .iter()
            .filter(|e| e.method == "POST")
            .count(),
        1,
        "sent once"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn pending_gr4vy_and_paypal_captures_hold_their_amount_and_the_next_capture_waits() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    for (provider, order_id, auth) in [
        ("gr4vy", "ORD-GR-P", "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"),
        ("paypal", "ORD-PP-P", "5PA12345PP678901P"),
    ] {
        let (order, s1, s2, _) = order_on(provider, order_id, auth, 12455);
        app.authorize_with(authorization(
            auth,
            12455,
            Scenario {
                settle_after_ms: Some(1500),
                ..Scenario::default()
            },
        ));
        app.publish(&[order, s1, s2]).await;
        pending_reference(&app, order_id).await;
        wait_for_order(
            &app,
            "select count(*) from captures where order_id = $1",
            order_id,
            2,
        )
        .await;
        // While the first is pending: its amount is held at the provider, it is still
        // claimed, and the second capture has not been sent.
        let a = app.sandbox.authorization(auth).unwrap();
        assert_eq!(
            (a.amount_received, a.amount_capturable),
            (0, 12455 - 5182),
            "{provider}"
        );
        let rows = app.captures(order_id).await;
        assert_eq!(rows.len(), 2, "{provider}");
        assert_eq!(
            rows[1].4, "queued",
            "{provider}: the next capture waits behind the pending one"
        );
        app.wait_settled(order_id, 2).await;
        assert_eq!(
            app.captures(order_id)
                .await
                .iter()
                .map(|r| r.4.as_str())
                .collect::<Vec<_>>(),
            vec!["succeeded", "succeeded"],
            "{provider}"
        );
        assert_eq!(
            app.sandbox.authorization(auth).unwrap().amount_received,
            5182 + 2890
        );
    }
    // Gr4vy's signed webhook settled its capture; PayPal's only prompted a read-back.
    assert!(
        webhook_events(&app, "gr4vy")
            .await
            .iter()
            .any(|e| e.0 == "capture.succeeded")
    );
    assert!(
        webhook_events(&app, "paypal")
            .await
            .iter()
            .all(|e| e.1 != "applied")
    );
    app.cleanup().await;
}

// ---------------------------------------------------------------------------------------
// The single-capture strategy and the authorization deadline.

#[tokio::test]
async fn near_its_deadline_a_single_capture_order_captures_what_shipped_once_across_workers() {
    let mut app = TestApp::spawn_with_dialects(|_| {}).await;
    app.start_worker().await;
    let auth = "hg-payment-000x";
    let (order, s1, s2, s3) = order_on("hellgate", "ORD-HG-X", auth, 12455);
    app.authorize_with(authorization(auth, 12455, Scenario::default()));
    app.publish(&[order, s1, s2]).await;
    app.wait_count(
        "select count(*) from shipments where order_id = 'ORD-HG-X'",
        2,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        app.captures("ORD-HG-X").await.is_empty(),
        "a single capture waits for the last parcel"
    );

    // Time passes: the authorization now expires within the provider's capture_ahead.
    sqlx::query("update orders set authorization_expires_at = now() + interval '1 hour' where order_id = 'ORD-HG-X'")
        .execute(app.store.pool())
        .await
        .unwrap();
    app.wait_settled("ORD-HG-X", 1).await;
    assert_eq!(
        app.captures("ORD-HG-X").await,
        vec![row(1, "capture", 5182 + 2890, true, "succeeded")]
    );
    let cause: String =
        sqlx::query_scalar("select cause_kind from captures where order_id = 'ORD-HG-X'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(cause, "deadline");
    assert_eq!(app.sandbox.authorization(auth).unwrap().captures.len(), 1);

    // The last parcel comes too late for this authorization: refused, nothing sent.
    app.publish(&[s3]).await;
    app.wait_count(
        "select count(*) from rejected_messages where reason = 'after_final'",
        1,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.captures("ORD-HG-X").await.len(), 1);
    assert_eq!(
        app.sandbox
            .ledger_for(auth)
            .iter()
            .filter(|e| e.method == "POST")
            .count(),
        1
    );
    app.cleanup().await;
}

// ---------------------------------------------------------------------------------------
// Limits, and several providers at once.

#[tokio::test]
async fn a_sixty_parcel_order_on_stripe_makes_fifty_captures_end_to_end_the_last_final_the_total_exact()
 {
    let app = TestApp::spawn().await;
    let auth = "pi_sixty_parcels";
    app.authorize(auth, 60 * 1000, "USD", None);
    let mut messages = vec![dated(json!({
        "message_id": "ORD-60-order",
        "type": "order.authorized",
        "schema_version": 1,
        "occurred_at": "2026-11-21T10:00:00Z",
        "data": {
            "order_id": "ORD-60",
            "currency": "USD",
            "lines": [{"line_id": "L1", "sku": "SOCK", "name": "Sock", "quantity": 60,
                       "unit_amount": 1000, "tax_amount": 0, "discount_amount": 0}],
            "shipping_amount": 0,
            "order_discount_amount": 0,
            "payment": {"provider": "sandbox", "authorization_id": auth,
                        "authorized_amount": 60000, "authorized_at": "2026-11-21T09:59:58Z",
                        "currency": "USD"}
        }
    }))];
    for i in 1..=60 {
        messages.push(json!({
            "message_id": format!("ORD-60-s{i}"),
            "type": "shipment.shipped",
            "schema_version": 1,
            "occurred_at": "2026-11-22T08:15:00Z",
            "data": {"order_id": "ORD-60", "shipment_id": format!("S{i}"),
                     "shipped_at": "2026-11-22T08:14:30Z",
                     "items": [{"line_id": "L1", "quantity": 1}]}
        }));
    }
    app.publish(&messages).await;
    app.wait_count(
        "select count(*) from shipments where order_id = 'ORD-60'",
        60,
    )
    .await;
    app.wait_count(
        "select count(*) from captures where order_id = 'ORD-60' and status = 'succeeded' and is_final",
        1,
    )
    .await;
    let rows = app.captures("ORD-60").await;
    assert_eq!(rows.len(), 50, "at most Stripe's 50 captures");
    assert!(rows.iter().all(|r| r.4 == "succeeded"));
    assert_eq!(rows.iter().filter(|r| r.3).count(), 1);
    assert!(rows[49].3, "the 50th is the final one");
    assert_eq!(rows.iter().map(|r| r.2).sum::<i64>(), 60000);
    let pi = app.sandbox.authorization(auth).unwrap();
    assert_eq!((pi.amount_received, pi.captures.len()), (60000, 50));
    assert_eq!(pi.status, Status::Succeeded);
    app.assert_keys_sound();
    app.cleanup().await;
}

#[tokio::test]
async fn one_worker_serves_orders_of_three_providers_at_once_each_correct() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let orders = [
        ("sandbox", "ORD-MIX-S", "pi_mix_0001", 12455, 3),
        ("adyen", "ORD-MIX-A", "ADYENPSP00000MX", 12455, 3),
        (
            "gr4vy",
            "ORD-MIX-G",
            "8a7b6c5d-4e3f-4a1b-9c8d-7e6f5a4b3c2d",
            12455,
            3,
        ),
    ];
    let mut messages = Vec::new();
    let mut shipments = Vec::new();
    for (provider, order_id, auth, amount, _) in orders {
        app.authorize(auth, amount, "USD", None);
        let (order, s1, s2, s3) = order_on(provider, order_id, auth, amount);
        messages.push(order);
        shipments.push([s1, s2, s3]);
    }
    // Interleaved: every order's first parcel, then every second, then every third.
    for i in 0..3 {
        for s in &shipments {
            messages.push(s[i].clone());
        }
    }
    app.publish(&messages).await;
    for (_, order_id, auth, _, n) in orders {
        app.wait_settled(order_id, n).await;
        assert_eq!(app.captures(order_id).await, three_captures(), "{order_id}");
        assert_eq!(
            app.sandbox.authorization(auth).unwrap().amount_received,
            12455,
            "{order_id}"
        );
    }
    app.assert_keys_sound();
    app.cleanup().await;
}

#[tokio::test]
async fn every_notification_is_answered_and_unknown_or_unsigned_ones_change_nothing() {
    let app = TestApp::spawn_with_dialects(|s| {
        s.providers.get_mut("checkout").unwrap().webhook_secret = None;
    })
    .await;
    assert_eq!(post_webhook(&app, "nobody", "{}".into()).await, 404);
    assert_eq!(
        post_webhook(&app, "sandbox", "{}".into()).await,
        404,
        "Stripe's dialect sends none"
    );
    assert_eq!(
        post_webhook(&app, "checkout", "{}".into()).await,
        401,
        "no secret configured"
    );
    assert_eq!(
        post_webhook(&app, "gr4vy", "{}".into()).await,
        401,
        "unsigned"
    );
    assert_eq!(post_webhook(&app, "paypal", "not json".into()).await, 400);
    let reasons: Vec<String> =
        sqlx::query_scalar("select reason from webhook_rejections order by webhook_rejection_id")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    assert_eq!(
        reasons,
        vec![
            "unknown_provider",
            "not_supported",
            "not_configured",
            "bad_signature",
            "malformed"
        ]
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_notification_that_cannot_be_recorded_gets_an_error_and_settles_the_capture_when_sent_again()
 {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let auth = "ADYENPSP000000E";
    let psp = adyen_capture_left_pending(&app, "ORD-AD-E", auth).await;
    let genuine = adyen_capture_notification(&psp, auth, "ORD-AD-E/S1", 5182, ADYEN_HMAC_KEY);

    // The ledger cannot take the event: the provider is told so, and nothing changes.
    sqlx::query("alter table webhook_events rename to webhook_events_away")
        .execute(app.store.pool())
        .await
        .unwrap();
    assert_eq!(post_webhook(&app, "adyen", genuine.clone()).await, 500);
    assert_unsettled(&app, "ORD-AD-E").await;

    // The provider sends it again once the ledger is back.
    sqlx::query("alter table webhook_events_away rename to webhook_events")
        .execute(app.store.pool())
        .await
        .unwrap();
    assert_eq!(post_webhook(&app, "adyen", genuine).await, 200);
    assert_eq!(capture_status(&app, "ORD-AD-E").await, "succeeded");
    app.cleanup().await;
}

// ---------------------------------------------------------------------------------------
// A 5xx stored under the idempotency key and replayed, before or after the capture executed
// (each dialect as its provider documents it; Checkout.com stores no 5xx; Hellgate and the
// orchestrator have no key: the same 5xx, answer lost or not).

/// Ships the three parcels of a `provider` order whose first capture meets `fault`, and
/// waits until its first capture is settled (succeeded, or attention). The dialect's
/// notifications are lost, so only the worker's read-back can tell what happened.
async fn first_capture_meets(
    app: &TestApp,
    provider: &str,
    order_id: &str,
    auth: &str,
    fault: Fault,
) {
    first_capture_meets_with(app, provider, order_id, auth, fault, true).await;
}

/// [`first_capture_meets`], the dialect's notifications lost when `silent`.
async fn first_capture_meets_with(
    app: &TestApp,
    provider: &str,
    order_id: &str,
    auth: &str,
    fault: Fault,
    silent: bool,
) {
    let a = authorization(
        auth,
        12455,
        Scenario {
            faults: vec![fault],
            silent,
            ..Scenario::default()
        },
    );
    let (order, s1, s2, s3) = order_on(provider, order_id, &a.id, a.amount);
    app.authorize_with(a);
    app.publish(&[order, s1, s2, s3]).await;
    wait_first_capture_settled(app, order_id).await;
}

/// Waits until the order's first capture succeeded or needs attention, with its call recorded:
/// a notification may settle the capture before the worker has written down the answer of the
/// call that made it.
async fn wait_first_capture_settled(app: &TestApp, order_id: &str) {
    wait_for_order(
        app,
        "select count(*) from captures c where c.order_id = $1 and c.sequence = 1
         and c.status in ('succeeded', 'attention')
         and exists (select 1 from capture_attempts a where a.capture_id = c.capture_id)",
        order_id,
        1,
    )
    .await;
}

/// The first capture's key generation, status and calls (`operation:outcome`, in order).
async fn first_capture_calls(app: &TestApp, order_id: &str) -> (i32, String, Vec<String>) {
    sqlx::query_as(
        "select c.key_generation, c.status,
                array_agg(a.operation || ':' || a.outcome order by a.attempt_id)
         from captures c join capture_attempts a using (capture_id)
         where c.order_id = $1 and c.sequence = 1
         group by c.key_generation, c.status",
    )
    .bind(order_id)
    .fetch_one(app.store.pool())
    .await
    .unwrap()
}

/// Before: every same-key request got the stored 5xx; the read-back showed nothing captured,
/// so the capture went under a new key, once. The whole order is captured, nothing twice.
async fn assert_captured_once_under_a_new_key(
    app: &TestApp,
    provider: &str,
    order_id: &str,
    auth: &str,
    captures: i64,
) {
    app.wait_settled(order_id, captures).await;
    let (generation, status, calls) = first_capture_calls(app, order_id).await;
    assert_eq!(status, "succeeded", "{provider}: {calls:?}");
    assert_eq!(generation, 1, "{provider}: a new key generation: {calls:?}");
    let read_back = calls
        .iter()
        .position(|c| c == "lookup:not_captured")
        .unwrap_or_else(|| panic!("{provider}: no read-back before the new key: {calls:?}"));
    // Sent once after the read-back (an asynchronous provider's answer is `pending`, then a
    // notification or a read-back settles it).
    let sent: Vec<&String> = calls[read_back + 1..]
        .iter()
        .filter(|c| c.starts_with("capture:"))
        .collect();
    assert!(
        sent == ["capture:succeeded"] || sent == ["capture:pending"],
        "{provider}: sent once after the read-back: {calls:?}"
    );
    let a = app.sandbox.authorization(auth).unwrap();
    assert_eq!(a.amount_received, 12455, "{provider}");
    assert_eq!(
        a.captures.len() as i64,
        captures,
        "{provider}: nothing twice"
    );
    app.assert_keys_sound();
}

/// After: the capture executed under the first key and the stored 5xx hid it; the read-back
/// showed it, so it was recorded as succeeded and never sent again.
async fn assert_recorded_after_a_read_back(
    app: &TestApp,
    provider: &str,
    order_id: &str,
    auth: &str,
    captures: i64,
) {
    app.wait_settled(order_id, captures).await;
    let (generation, status, calls) = first_capture_calls(app, order_id).await;
    assert_eq!(status, "succeeded", "{provider}: {calls:?}");
    assert_eq!(generation, 0, "{provider}: the key was kept: {calls:?}");
    assert_eq!(
        calls.last().map(String::as_str),
        Some("lookup:succeeded"),
        "{provider}: settled by the read-back, not sent again: {calls:?}"
    );
    assert!(
        calls.iter().all(|c| c != "capture:succeeded"),
        "{provider}: {calls:?}"
    );
    let a = app.sandbox.authorization(auth).unwrap();
    assert_eq!(a.amount_received, 12455, "{provider}");
    assert_eq!(
        a.captures.len() as i64,
        captures,
        "{provider}: nothing twice"
    );
    app.assert_keys_sound();
}

#[tokio::test]
async fn stripe_5xx_stored_before_the_capture_executed_is_read_back_then_captured_once_under_a_new_key()
 {
    let app = TestApp::spawn().await;
    let (order, auth) = ("ORD-ST-SB", "pi_stored_before");
    first_capture_meets(
        &app,
        "sandbox",
        order,
        auth,
        Fault::StoredErrorBeforeCapture,
    )
    .await;
    assert_captured_once_under_a_new_key(&app, "stripe", order, auth, 3).await;
    // Stripe marks its replay: one replay, then the read-back.
    let replays = app
        .sandbox
        .ledger_for(auth)
        .iter()
        .filter(|e| e.replayed)
        .count();
    assert_eq!(replays, 1);
    app.cleanup().await;
}

/// A Stripe order whose first capture meets a stored 500 and whose next `failed_reads`
/// read-backs answer 503; waits until the first capture is settled.
async fn stripe_stored_error_then_failed_reads(
    app: &TestApp,
    order_id: &str,
    auth: &str,
    failed_reads: u32,
) {
    let a = authorization(
        auth,
        12455,
        Scenario {
            faults: vec![Fault::StoredErrorBeforeCapture],
            failed_reads,
            ..Scenario::default()
        },
    );
    let (order, s1, s2, s3) = order_on("sandbox", order_id, &a.id, a.amount);
    app.authorize_with(a);
    app.publish(&[order, s1, s2, s3]).await;
    wait_first_capture_settled(app, order_id).await;
}

#[tokio::test]
async fn stripe_stored_5xx_whose_read_back_fails_twice_is_read_again_then_captured_under_a_new_key()
{
    let app = TestApp::spawn().await;
    let (order, auth) = ("ORD-ST-RB", "pi_read_again");
    stripe_stored_error_then_failed_reads(&app, order, auth, 2).await;
    let (_, _, calls) = first_capture_calls(&app, order).await;
    assert_eq!(
        calls,
        [
            "capture:retryable",
            "capture:unknown",
            "lookup:retryable",
            "lookup:retryable",
            "lookup:not_captured",
            "capture:succeeded"
        ]
    );
    assert_captured_once_under_a_new_key(&app, "stripe", order, auth, 3).await;
    app.cleanup().await;
}

#[tokio::test]
async fn stripe_stored_5xx_goes_to_an_operator_only_after_five_failed_read_backs() {
    let app = TestApp::spawn().await;
    let (order, auth) = ("ORD-ST-RF", "pi_read_fails");
    stripe_stored_error_then_failed_reads(&app, order, auth, 50).await;
    let (generation, status, calls) = first_capture_calls(&app, order).await;
    assert_eq!(status, "attention", "{calls:?}");
    assert_eq!(generation, 0, "no new key without a read-back: {calls:?}");
    assert_eq!(
        calls.iter().filter(|c| *c == "lookup:retryable").count(),
        5,
        "{calls:?}"
    );
    assert_eq!(app.sandbox.authorization(auth).unwrap().amount_received, 0);
    app.cleanup().await;
}

#[tokio::test]
async fn stripe_5xx_stored_after_the_capture_executed_is_read_back_and_recorded_succeeded() {
    let app = TestApp::spawn().await;
    let (order, auth) = ("ORD-ST-SA", "pi_stored_after");
    first_capture_meets(&app, "sandbox", order, auth, Fault::StoredErrorAfterCapture).await;
    assert_recorded_after_a_read_back(&app, "stripe", order, auth, 3).await;
    app.cleanup().await;
}

#[tokio::test]
async fn gr4vy_5xx_stored_before_the_capture_executed_is_read_back_then_captured_once_under_a_new_key()
 {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let (order, auth) = ("ORD-GR-SB", "3d0c5a7e-1b2f-4c6d-8e9f-0a1b2c3d4e01");
    first_capture_meets(&app, "gr4vy", order, auth, Fault::StoredErrorBeforeCapture).await;
    assert_captured_once_under_a_new_key(&app, "gr4vy", order, auth, 3).await;
    // Gr4vy marks no replay: the same stored 500, three times, then the read-back.
    assert_eq!(&capture_statuses(&app, auth)[..4], &[500, 500, 500, 200]);
    app.cleanup().await;
}

#[tokio::test]
async fn gr4vy_5xx_stored_after_the_capture_executed_is_read_back_and_recorded_succeeded() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let (order, auth) = ("ORD-GR-SA", "3d0c5a7e-1b2f-4c6d-8e9f-0a1b2c3d4e02");
    first_capture_meets(&app, "gr4vy", order, auth, Fault::StoredErrorAfterCapture).await;
    assert_recorded_after_a_read_back(&app, "gr4vy", order, auth, 3).await;
    app.cleanup().await;
}

#[tokio::test]
async fn paypal_5xx_stored_before_the_capture_executed_is_read_back_then_captured_once_under_a_new_key()
 {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let (order, auth) = ("ORD-PP-SB", "5PP12345SB000001");
    first_capture_meets(&app, "paypal", order, auth, Fault::StoredErrorBeforeCapture).await;
    assert_captured_once_under_a_new_key(&app, "paypal", order, auth, 3).await;
    app.cleanup().await;
}

#[tokio::test]
async fn paypal_5xx_stored_after_the_capture_executed_is_read_back_and_recorded_succeeded() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let (order, auth) = ("ORD-PP-SA", "5PP12345SA000001");
    first_capture_meets(&app, "paypal", order, auth, Fault::StoredErrorAfterCapture).await;
    assert_recorded_after_a_read_back(&app, "paypal", order, auth, 3).await;
    app.cleanup().await;
}

#[tokio::test]
async fn checkout_5xx_before_the_capture_executed_is_read_back_then_captured_once_under_a_new_key()
{
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let (order, auth) = ("ORD-CK-SB", "pay_sbx_stored_before");
    first_capture_meets(
        &app,
        "checkout",
        order,
        auth,
        Fault::StoredErrorBeforeCapture,
    )
    .await;
    assert_captured_once_under_a_new_key(&app, "checkout", order, auth, 3).await;
    app.cleanup().await;
}

#[tokio::test]
async fn checkout_5xx_after_the_capture_executed_is_read_back_and_recorded_succeeded() {
    // Checkout.com saves no 5xx: a resend under the same key would capture again, so the
    // payment is read back after the first 5xx.
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let (order, auth) = ("ORD-CK-SA", "pay_sbx_stored_after");
    first_capture_meets(
        &app,
        "checkout",
        order,
        auth,
        Fault::StoredErrorAfterCapture,
    )
    .await;
    assert_recorded_after_a_read_back(&app, "checkout", order, auth, 3).await;
    app.cleanup().await;
}

#[tokio::test]
async fn hellgate_5xx_before_the_capture_executed_is_read_back_then_captured_once() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let (order, auth) = ("ORD-HG-SB", "hg-payment-stored-before");
    first_capture_meets(
        &app,
        "hellgate",
        order,
        auth,
        Fault::StoredErrorBeforeCapture,
    )
    .await;
    assert_captured_once_under_a_new_key(&app, "hellgate", order, auth, 1).await;
    app.cleanup().await;
}

#[tokio::test]
async fn hellgate_5xx_after_the_capture_executed_is_read_back_and_recorded_succeeded() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let (order, auth) = ("ORD-HG-SA", "hg-payment-stored-after");
    first_capture_meets(
        &app,
        "hellgate",
        order,
        auth,
        Fault::StoredErrorAfterCapture,
    )
    .await;
    assert_recorded_after_a_read_back(&app, "hellgate", order, auth, 1).await;
    app.cleanup().await;
}

/// Without a read-back (Adyen's Checkout API, the orchestrator), a stuck key or an unknown
/// outcome goes to an operator with no read-back, and the capture is never sent again.
async fn assert_needs_an_operator_without_a_read_back(
    app: &TestApp,
    provider: &str,
    order_id: &str,
    auth: &str,
    captured: i64,
) {
    let (generation, status, calls) = first_capture_calls(app, order_id).await;
    assert_eq!(status, "attention", "{provider}: {calls:?}");
    assert_eq!(generation, 0, "{provider}: no new key: {calls:?}");
    assert!(
        calls.iter().all(|c| c.starts_with("capture:")),
        "{provider}: no read-back is offered: {calls:?}"
    );
    let a = app.sandbox.authorization(auth).unwrap();
    assert_eq!(a.amount_received, captured, "{provider}");
    app.assert_keys_sound();
}

#[tokio::test]
async fn adyen_5xx_stored_before_the_capture_executed_needs_an_operator_as_adyen_offers_no_read_back()
 {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let (order, auth) = ("ORD-AD-SB", "ADYENPSPSTORED01");
    first_capture_meets(&app, "adyen", order, auth, Fault::StoredErrorBeforeCapture).await;
    assert_needs_an_operator_without_a_read_back(&app, "adyen", order, auth, 0).await;
    // The stored 500, three times, then nothing more.
    assert_eq!(capture_statuses(&app, auth), vec![500, 500, 500]);
    app.cleanup().await;
}

#[tokio::test]
async fn adyen_5xx_stored_after_the_capture_executed_is_settled_by_its_capture_notification() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let (order, auth) = ("ORD-AD-SA", "ADYENPSPSTORED02");
    first_capture_meets_with(
        &app,
        "adyen",
        order,
        auth,
        Fault::StoredErrorAfterCapture,
        false,
    )
    .await;
    let (generation, status, calls) = first_capture_calls(&app, order).await;
    assert_eq!(status, "succeeded", "{calls:?}");
    assert_eq!(generation, 0, "{calls:?}");
    assert!(
        calls
            .iter()
            .all(|c| c.starts_with("capture:") && c != "capture:pending"),
        "only the stored 500s were answered: {calls:?}"
    );
    app.wait_settled(order, 3).await;
    let a = app.sandbox.authorization(auth).unwrap();
    assert_eq!((a.amount_received, a.captures.len()), (12455, 3));
    app.assert_keys_sound();
    app.cleanup().await;
}

#[tokio::test]
async fn orchestrator_5xx_before_the_capture_executed_needs_an_operator_as_it_offers_no_read_back()
{
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let (order, auth) = ("ORD-OR-SB", "txn_stored_before");
    first_capture_meets(
        &app,
        "orchestrator",
        order,
        auth,
        Fault::StoredErrorBeforeCapture,
    )
    .await;
    assert_needs_an_operator_without_a_read_back(&app, "orchestrator", order, auth, 0).await;
    assert_eq!(capture_statuses(&app, auth), vec![500], "never sent again");
    app.cleanup().await;
}

#[tokio::test]
async fn orchestrator_5xx_after_the_capture_executed_needs_an_operator_and_is_never_sent_again() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let (order, auth) = ("ORD-OR-SA", "txn_stored_after");
    first_capture_meets(
        &app,
        "orchestrator",
        order,
        auth,
        Fault::StoredErrorAfterCapture,
    )
    .await;
    assert_needs_an_operator_without_a_read_back(&app, "orchestrator", order, auth, 12455).await;
    assert_eq!(capture_statuses(&app, auth), vec![500], "never sent again");
    app.cleanup().await;
}

// ---------------------------------------------------------------------------------------
// Currencies PayPal takes without decimals.

/// The example order in HUF on `provider`: the USD amounts × 100 minor units (whole
/// forints), with shipping 600 HUF and no order discount, so that every parcel's share is a
/// whole number of forints too.
fn huf_order_on(
    provider: &str,
    order_id: &str,
    authorization: &str,
) -> (Value, Value, Value, Value) {
    let (mut order, s1, s2, s3) = order_on(provider, order_id, authorization, 1_400_000);
    let data = &mut order["data"];
    data["currency"] = json!("HUF");
    data["payment"]["currency"] = json!("HUF");
    for line in data["lines"].as_array_mut().unwrap() {
        for field in ["unit_amount", "tax_amount", "discount_amount"] {
            line[field] = json!(line[field].as_i64().unwrap() * 100);
        }
    }
    data["shipping_amount"] = json!(60_000);
    data["order_discount_amount"] = json!(0);
    (order, s1, s2, s3)
}

#[tokio::test]
async fn paypal_captures_a_huf_order_in_whole_forints() {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let auth = "8HU12345HUF00001";
    app.authorize_with(NewAuthorization::new(auth, 1_400_000, "HUF"));
    let (order, s1, s2, s3) = huf_order_on("paypal", "ORD-PP-HUF", auth);
    app.publish(&[order, s1, s2, s3]).await;
    app.wait_settled("ORD-PP-HUF", 3).await;
    let rows = app.captures("ORD-PP-HUF").await;
    assert!(rows.iter().all(|r| r.4 == "succeeded"), "{rows:?}");
    assert!(
        rows.iter().all(|r| r.2 > 0 && r.2 % 100 == 0),
        "whole forints: {rows:?}"
    );
    let total: i64 = rows.iter().map(|r| r.2).sum();
    let a = app.sandbox.authorization(auth).unwrap();
    assert_eq!((a.amount_received, a.captures.len()), (total, 3));
    // The dialect refuses a decimal HUF amount (422 DECIMALS_NOT_SUPPORTED): none was sent.
    assert_eq!(capture_statuses(&app, auth), vec![201, 201, 201]);
    app.cleanup().await;
}

/// The example order's amounts taken as minor units of `currency` (124.55 HUF, 12.455 KWD…)
/// on `provider`, shipped in its three parcels: the order's captures once settled, and its
/// shortfall.
async fn example_order_captured_in(
    app: &TestApp,
    provider: &str,
    order_id: &str,
    auth: &str,
    currency: &str,
) -> (Vec<Row>, i64) {
    app.authorize_with(NewAuthorization::new(auth, 12455, currency));
    let (mut order, s1, s2, s3) = order_on(provider, order_id, auth, 12455);
    order["data"]["currency"] = json!(currency);
    order["data"]["payment"]["currency"] = json!(currency);
    app.publish(&[order, s1, s2, s3]).await;
    app.wait_settled(order_id, 3).await;
    let shortfall: i64 =
        sqlx::query_scalar("select shortfall_amount from orders where order_id = $1")
            .bind(order_id)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    (app.captures(order_id).await, shortfall)
}

#[tokio::test]
async fn paypal_captures_a_huf_order_with_fractional_forint_parcels_in_whole_forints() {
    // Parcels of 51.82, 28.90 and 43.83 Ft (the order discount split and shipping). PayPal
    // takes HUF only in whole forints (the dialect answers 422 DECIMALS_NOT_SUPPORTED to
    // decimals).
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let auth = "8HU12345HUF00002";
    let (rows, shortfall) =
        example_order_captured_in(&app, "paypal", "ORD-PP-HUF-FRAC", auth, "HUF").await;
    // 51.82 → 51 Ft, 0.82 carried; 0.82 + 28.90 = 29.72 → 29 Ft (0.72 carried, 80.00 in all);
    // the final 0.72 + 43.83 = 44.55 → 44 Ft, and its 0.55 Ft is the order's shortfall.
    assert_eq!(
        rows,
        vec![
            row(1, "capture", 5100, false, "succeeded"),
            row(2, "capture", 2900, false, "succeeded"),
            row(3, "capture", 4400, true, "succeeded"),
        ]
    );
    assert_eq!(shortfall, 55, "the final part of a forint, for finance");
    let a = app.sandbox.authorization(auth).unwrap();
    assert_eq!((a.amount_received, a.captures.len()), (12400, 3));
    // Every capture went through at the first try: nothing refused, nothing for an operator.
    assert_eq!(capture_statuses(&app, auth), vec![201, 201, 201]);
    app.cleanup().await;
}

#[tokio::test]
async fn checkout_captures_a_kwd_order_in_amounts_whose_last_digit_is_0() {
    // Parcels of 5.182, 2.890 and 4.383 KWD. Checkout.com takes three-decimal amounts only
    // with the last digit 0 (the dialect answers 422 amount_invalid otherwise).
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let auth = "pay_sbx_checkout_kwd";
    let (rows, shortfall) =
        example_order_captured_in(&app, "checkout", "ORD-CK-KWD", auth, "KWD").await;
    // 5.182 → 5.180 (0.002 carried); 0.002 + 2.890 → 2.890 (0.002 carried); the final
    // 0.002 + 4.383 = 4.385 → 4.380, and its 0.005 KWD is the order's shortfall.
    assert_eq!(
        rows,
        vec![
            row(1, "capture", 5180, false, "succeeded"),
            row(2, "capture", 2890, false, "succeeded"),
            row(3, "capture", 4380, true, "succeeded"),
        ]
    );
    assert_eq!(shortfall, 5, "the final part of a step, for finance");
    assert_eq!(
        app.sandbox.authorization(auth).unwrap().amount_received,
        12450
    );
    // Nothing refused, nothing for an operator.
    assert_eq!(capture_statuses(&app, auth), vec![202, 202, 202]);
    app.cleanup().await;
}

// ---------------------------------------------------------------------------------------
// Minimum capture amounts.

#[tokio::test]
async fn stripe_parcels_below_the_minimum_are_carried_into_the_next_capture_and_the_order_captured_in_full()
 {
    // Parcels worth 0.30, 0.40 and 20.00 USD; Stripe's minimum is 0.50 USD (the sandbox
    // answers 400 amount_too_small below it).
    let app = TestApp::spawn().await;
    let auth = "pi_minimum_1";
    let (mut order, mut s1, mut s2, mut s3) = order_on("sandbox", "ORD-ST-MIN", auth, 2070);
    let data = &mut order["data"];
    data["lines"] = json!([
        {"line_id": "L1", "sku": "STICKER", "name": "Sticker", "quantity": 1, "unit_amount": 30, "tax_amount": 0, "discount_amount": 0},
        {"line_id": "L2", "sku": "PIN", "name": "Pin", "quantity": 1, "unit_amount": 40, "tax_amount": 0, "discount_amount": 0},
        {"line_id": "L3", "sku": "MUG", "name": "Mug", "quantity": 1, "unit_amount": 2000, "tax_amount": 0, "discount_amount": 0},
    ]);
    data["shipping_amount"] = json!(0);
    data["order_discount_amount"] = json!(0);
    for (s, line) in [(&mut s1, "L1"), (&mut s2, "L2"), (&mut s3, "L3")] {
        s["data"]["items"] = json!([{"line_id": line, "quantity": 1}]);
    }
    app.authorize("pi_minimum_1", 2070, "USD", None);
    app.publish(&[order, s1, s2, s3]).await;
    app.wait_settled("ORD-ST-MIN", 2).await;
    // The 0.30 waited; with the 0.40 it made 0.70; the last parcel is the final capture.
    assert_eq!(
        app.captures("ORD-ST-MIN").await,
        vec![
            row(1, "capture", 70, false, "succeeded"),
            row(2, "capture", 2000, true, "succeeded"),
        ]
    );
    let decisions: Vec<String> = sqlx::query_scalar(
        "select decision from shipments where order_id = $1 order by shipment_id",
    )
    .bind("ORD-ST-MIN")
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(decisions[0], "nothing:below_minimum", "{decisions:?}");
    let a = app.sandbox.authorization(auth).unwrap();
    assert_eq!((a.amount_received, a.status), (2070, Status::Succeeded));
    assert!(
        app.sandbox
            .ledger_for(auth)
            .iter()
            .all(|e| e.http_status != 400),
        "no capture was refused"
    );
    app.cleanup().await;
}

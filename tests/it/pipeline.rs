//! The durable pipeline end to end: real RabbitMQ, real PostgreSQL, the sandbox provider over
//! HTTP through the production Stripe adapter.

use capture_worker::app::intake::{Intake, IntakeOutcome};
use capture_worker::app::providers::Providers;
use capture_worker::queue::consumer::IncomingMessage;
use capture_worker::sandbox::{Fault, LedgerOutcome, Scenario};
use serde_json::{Value, json};

use crate::harness::*;

const ORDER: &str = "ORD-1001";
const AUTH: &str = "pi_example_1";

fn captures_requests(app: &TestApp) -> Vec<(Option<i64>, Option<bool>, String)> {
    app.sandbox
        .ledger_for(AUTH)
        .into_iter()
        .filter(|e| e.path.ends_with("/capture") && !e.replayed && e.captured_amount > 0)
        .map(|e| {
            (
                e.amount_to_capture,
                e.final_capture,
                e.idempotency_key.unwrap_or_default(),
            )
        })
        .collect()
}

/// Takes dead-letter copies until `n` have arrived (a copy is published just after the
/// rejection commits), or 10 s have passed.
async fn dead_letters(app: &TestApp, n: usize) -> Vec<(String, Value)> {
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead.extend(app.drain_dead_letters().await);
        if dead.len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    dead
}

#[tokio::test]
async fn an_order_shipped_in_three_parcels_becomes_three_captures_the_last_final() {
    let app = TestApp::spawn().await;
    app.authorize(AUTH, 12455, "USD", None);
    let (order, s1, s2, s3) = usd_order();
    app.publish(&[order, s1, s2, s3]).await;
    app.wait_settled(ORDER, 3).await;

    let caps = app.captures(ORDER).await;
    let amounts: Vec<_> = caps.iter().map(|c| (c.2, c.3, c.4.as_str())).collect();
    assert_eq!(
        amounts,
        vec![
            (5182, false, "succeeded"),
            (2890, false, "succeeded"),
            (4383, true, "succeeded")
        ]
    );
    let sent = captures_requests(&app);
    assert_eq!(
        sent.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
        vec![
            (Some(5182), Some(false)),
            (Some(2890), Some(false)),
            (Some(4383), Some(true))
        ]
    );
    let keys: std::collections::HashSet<_> = sent.iter().map(|s| s.2.clone()).collect();
    assert_eq!(keys.len(), 3, "each capture has its own key");
    let pi = app.sandbox.authorization(AUTH).unwrap();
    assert_eq!(pi.amount_received, 12455);
    let (status, captured, released): (String, i64, i64) = sqlx::query_as(
        "select status, captured_amount, released_amount from reconciliation_orders where order_id = $1",
    )
    .bind(ORDER)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), captured, released),
        ("completed", 12455, 0)
    );
    app.assert_keys_sound();
    app.cleanup().await;
}

#[tokio::test]
async fn the_same_shipment_published_twice_or_redelivered_after_commit_is_captured_once() {
    let app = TestApp::spawn().await;
    app.authorize(AUTH, 12455, "USD", None);
    let (order, s1, s2, _) = usd_order();
    app.publish(&[order]).await;
    app.wait_count("select count(*) from orders", 1).await;

    // Published twice: the same message id, and the same shipment under a new message id.
    app.publish(&[s1.clone(), s1.clone(), with_id(&s1, "wh-resent-0001")])
        .await;
    // S1 is planned before S2 is committed below, so the amounts are S1's then S2's.
    app.wait_settled(ORDER, 1).await;

    // Redelivery after a crash between commit and ack: intake commits S2 without any ack,
    // then the broker delivers the same message.
    let providers = Providers::from_settings(&app.settings).unwrap();
    let intake = Intake::new(
        app.store.clone(),
        std::sync::Arc::new(providers),
        Default::default(),
        3600,
    );
    let committed = intake
        .handle(&IncomingMessage {
            body: serde_json::to_vec(&s2).unwrap(),
            routing_key: "shipment.shipped".into(),
            traceparent: None,
            tracestate: None,
            redelivered: false,
        })
        .await
        .unwrap();
    assert!(matches!(committed, IntakeOutcome::Processed { .. }));
    app.publish(&[s2]).await;

    app.wait_settled(ORDER, 2).await;
    app.wait_count(
        "select count(*) from inbox_messages where status = 'processed'",
        4,
    )
    .await;
    let sent = captures_requests(&app);
    assert_eq!(
        sent.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![Some(5182), Some(2890)]
    );
    assert!(
        app.drain_dead_letters().await.is_empty(),
        "duplicates are not errors"
    );
    app.assert_keys_sound();
    app.cleanup().await;
}

#[tokio::test]
async fn the_same_shipment_id_with_different_content_is_refused_and_the_first_stands() {
    let app = TestApp::spawn().await;
    app.authorize(AUTH, 12455, "USD", None);
    let (order, s1, _, _) = usd_order();
    let mut changed = with_id(&s1, "wh-changed-0001");
    changed["data"]["items"] = json!([{"line_id": "L1", "quantity": 2}]);
    app.publish(&[order, s1]).await;
    app.wait_settled(ORDER, 1).await;
    app.publish(&[changed]).await;
    app.wait_count(
        "select count(*) from rejected_messages where reason = 'shipment_conflict'",
        1,
    )
    .await;

    assert_eq!(app.captures(ORDER).await.len(), 1);
    assert_eq!(captures_requests(&app).len(), 1);
    let dead = dead_letters(&app, 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "shipment_conflict");
    assert_eq!(dead[0].1["message_id"], "wh-changed-0001");
    app.cleanup().await;
}

#[tokio::test]
async fn a_shipment_before_its_order_is_parked_then_captured_when_the_order_arrives() {
    let app = TestApp::spawn().await;
    app.authorize(AUTH, 12455, "USD", None);
    let (order, s1, _, _) = usd_order();
    app.publish(&[s1]).await;
    app.wait_count(
        "select count(*) from inbox_messages where status = 'parked'",
        1,
    )
    .await;
    assert!(app.sandbox.ledger().is_empty());

    app.publish(&[order]).await;
    app.wait_settled(ORDER, 1).await;
    assert_eq!(app.captures(ORDER).await[0].2, 5182);
    app.wait_count(
        "select count(*) from inbox_messages where status = 'parked'",
        0,
    )
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_shipment_whose_order_never_comes_is_dead_lettered_as_unknown_order() {
    let app = TestApp::spawn_with(|s| s.capture.parking_seconds = 1).await;
    let (_, s1, _, _) = usd_order();
    app.publish(&[s1]).await;
    app.wait_count(
        "select count(*) from rejected_messages where reason = 'unknown_order'",
        1,
    )
    .await;
    app.wait_count(
        "select count(*) from inbox_messages where status = 'rejected'",
        1,
    )
    .await;
    let dead = dead_letters(&app, 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "unknown_order");
    app.cleanup().await;
}

#[tokio::test]
async fn a_decline_on_the_second_capture_stops_the_order_and_the_third_parcel_is_never_sent() {
    let app = TestApp::spawn().await;
    app.authorize(
        AUTH,
        12455,
        "USD",
        Some(Scenario {
            decline_on_capture: Some(2),
            ..Scenario::default()
        }),
    );
    let (order, s1, s2, s3) = usd_order();
    app.publish(&[order, s1, s2]).await;
    app.wait_settled(ORDER, 2).await;
    app.publish(&[s3]).await;
    app.wait_count(
        "select count(*) from rejected_messages where reason = 'order_declined'",
        1,
    )
    .await;

    let caps = app.captures(ORDER).await;
    assert_eq!(
        caps.iter().map(|c| c.4.as_str()).collect::<Vec<_>>(),
        vec!["succeeded", "declined"]
    );
    let requests = app.sandbox.ledger_for(AUTH);
    assert_eq!(requests.len(), 2, "no request for the third parcel");
    assert_eq!(requests[1].outcome, LedgerOutcome::Declined);
    let (status, captured): (String, i64) = sqlx::query_as(
        "select status, captured_amount from reconciliation_orders where order_id = $1",
    )
    .bind(ORDER)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!((status.as_str(), captured), ("declined", 5182));
    app.cleanup().await;
}

#[tokio::test]
async fn captures_queued_behind_a_declined_one_are_blocked_not_sent() {
    // The third capture is already queued when the second is declined.
    let app = TestApp::spawn().await;
    app.authorize(
        AUTH,
        12455,
        "USD",
        Some(Scenario {
            decline_on_capture: Some(2),
            faults: vec![],
            ..Scenario::default()
        }),
    );
    let (order, s1, s2, s3) = usd_order();
    // Slow the provider so all three captures are planned before the second is sent.
    app.sandbox
        .set_scenario(
            AUTH,
            Scenario {
                decline_on_capture: Some(2),
                latency_ms: 300,
                ..Scenario::default()
            },
        )
        .unwrap();
    app.publish(&[order, s1, s2, s3]).await;
    app.wait_count(
        "select count(*) from captures where status in ('succeeded','declined','blocked')",
        3,
    )
    .await;
    let caps = app.captures(ORDER).await;
    assert_eq!(
        caps.iter().map(|c| c.4.as_str()).collect::<Vec<_>>(),
        vec!["succeeded", "declined", "blocked"]
    );
    assert_eq!(app.sandbox.ledger_for(AUTH).len(), 2);
    let claimed: i64 = sqlx::query_scalar("select claimed_amount from orders")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(
        claimed, 5182,
        "declined and blocked captures no longer claim the authorization"
    );
    app.cleanup().await;
}

async fn one_capture_with_faults(faults: Vec<Fault>) -> TestApp {
    let app = TestApp::spawn().await;
    app.authorize(
        AUTH,
        12455,
        "USD",
        Some(Scenario {
            faults,
            ..Scenario::default()
        }),
    );
    let (order, s1, _, _) = usd_order();
    app.publish(&[order, s1]).await;
    app.wait_settled(ORDER, 1).await;
    app
}

async fn assert_captured_exactly_once(app: &TestApp, amount: i64) {
    let caps = app.captures(ORDER).await;
    assert_eq!((caps[0].2, caps[0].4.as_str()), (amount, "succeeded"));
    assert_eq!(
        app.sandbox.authorization(AUTH).unwrap().amount_received,
        amount,
        "captured once"
    );
    app.assert_keys_sound();
}

#[tokio::test]
async fn provider_503s_are_retried_with_the_same_key_until_the_capture_succeeds() {
    let app = one_capture_with_faults(vec![Fault::Unavailable, Fault::Unavailable]).await;
    assert_captured_exactly_once(&app, 5182).await;
    let keys: std::collections::HashSet<_> = app
        .sandbox
        .ledger_for(AUTH)
        .into_iter()
        .filter_map(|e| e.idempotency_key)
        .collect();
    assert_eq!(keys.len(), 1, "every retry reused the key");
    let attempts: i64 = sqlx::query_scalar("select count(*) from capture_attempts")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(attempts, 3);
    app.cleanup().await;
}

#[tokio::test]
async fn a_saved_500_is_resolved_by_reading_the_payment_back_then_a_new_key() {
    let app = one_capture_with_faults(vec![Fault::ServerErrorSaved]).await;
    assert_captured_exactly_once(&app, 5182).await;
    let (generation, lookups): (i32, i64) = sqlx::query_as(
        "select key_generation, (select count(*) from capture_attempts where operation = 'lookup') from captures",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        generation, 1,
        "a new key only after the lookup showed nothing captured"
    );
    assert!(lookups >= 1);
    app.cleanup().await;
}

#[tokio::test]
async fn a_timeout_before_the_capture_happened_is_retried_with_the_same_key() {
    let app = one_capture_with_faults(vec![Fault::Timeout { delay_ms: 1500 }]).await;
    assert_captured_exactly_once(&app, 5182).await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_response_lost_after_the_capture_happened_is_not_captured_twice() {
    let app = one_capture_with_faults(vec![Fault::LostResponse { delay_ms: 1500 }]).await;
    assert_captured_exactly_once(&app, 5182).await;
    let replayed = app
        .sandbox
        .ledger_for(AUTH)
        .iter()
        .filter(|e| e.replayed)
        .count();
    assert!(
        replayed >= 1,
        "the retry was answered from the provider's idempotency store"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_worker_killed_between_the_providers_success_and_recording_it_is_taken_over_without_a_second_capture()
 {
    // The state a SIGKILL leaves: the capture is in flight under a dead worker's lease, and the
    // provider has captured under its key. No worker runs yet.
    let mut app = TestApp::spawn().await;
    app.authorize(AUTH, 12455, "USD", None);
    app.stop_workers().await;
    let (order, s1, _, _) = usd_order();
    let providers = Providers::from_settings(&app.settings).unwrap();
    let intake = Intake::new(
        app.store.clone(),
        std::sync::Arc::new(providers.clone()),
        Default::default(),
        3600,
    );
    for m in [order, s1] {
        let out = intake
            .handle(&IncomingMessage {
                body: serde_json::to_vec(&m).unwrap(),
                routing_key: m["type"].as_str().unwrap().into(),
                traceparent: None,
                tracestate: None,
                redelivered: false,
            })
            .await
            .unwrap();
        assert!(matches!(out, IntakeOutcome::Processed { .. }));
    }
    let claimed =
        capture_worker::storage::captures::claim_next(app.store.pool(), ORDER, "dead-worker", 1.0)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(claimed.amount.currency().code(), "USD");
    let provider = providers.get("sandbox").unwrap();
    let req = capture_worker::provider::CaptureRequest {
        authorization_id: capture_worker::domain::AuthorizationId::parse(AUTH).unwrap(),
        order_id: capture_worker::domain::OrderId::parse(ORDER).unwrap(),
        cause: "S1".into(),
        sequence: 1,
        amount: claimed.amount,
        is_final: claimed.is_final,
        idempotency_key: claimed.idempotency_key.clone(),
        lines: vec![],
    };
    let result = provider.capture(&req).await;
    assert_eq!(result.outcome.label(), "succeeded");
    // …and the worker dies here. A new worker starts; the lease expires; it takes over.
    app.start_worker().await;
    app.wait_settled(ORDER, 1).await;
    assert_captured_exactly_once(&app, 5182).await;
    let owners: Vec<String> =
        sqlx::query_scalar("select worker_id from capture_attempts order by attempt_id")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    assert_eq!(owners.len(), 1, "the takeover's call is the one recorded");
    assert_ne!(owners[0], "dead-worker");
    app.cleanup().await;
}

#[tokio::test]
async fn cancelling_the_remaining_lines_after_two_captures_releases_the_remainder() {
    let app = TestApp::spawn().await;
    app.authorize(AUTH, 12455, "USD", None);
    let (order, s1, s2, _) = usd_order();
    let cancel = json!({
        "message_id": "cancel-0001", "type": "order.lines_cancelled", "schema_version": 1,
        "occurred_at": "2026-11-22T09:00:00Z",
        "data": {"order_id": ORDER, "items": [{"line_id": "L1", "quantity": 1}, {"line_id": "L2", "quantity": 1}]}
    });
    app.publish(&[order, s1, s2]).await;
    app.wait_settled(ORDER, 2).await;
    app.publish(&[cancel]).await;
    app.wait_settled(ORDER, 3).await;
    let caps = app.captures(ORDER).await;
    assert_eq!(
        (caps[2].1.as_str(), caps[2].3, caps[2].4.as_str()),
        ("release", true, "succeeded")
    );
    let pi = app.sandbox.authorization(AUTH).unwrap();
    assert_eq!((pi.amount_received, pi.amount_capturable), (5182 + 2890, 0));
    let (status, captured, released): (String, i64, i64) = sqlx::query_as(
        "select status, captured_amount, released_amount from reconciliation_orders where order_id = $1",
    )
    .bind(ORDER)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), captured, released),
        ("completed", 8072, 12455 - 8072)
    );
    app.cleanup().await;
}

#[tokio::test]
async fn an_order_cancelled_before_any_capture_has_its_authorization_voided() {
    let app = TestApp::spawn().await;
    app.authorize(AUTH, 12455, "USD", None);
    let (order, _, _, _) = usd_order();
    let cancel = json!({
        "message_id": "cancel-all", "type": "order.lines_cancelled", "schema_version": 1,
        "occurred_at": "2026-11-22T09:00:00Z",
        "data": {"order_id": ORDER, "items": [{"line_id": "L1", "quantity": 3}, {"line_id": "L2", "quantity": 2}, {"line_id": "L3", "quantity": 1}]}
    });
    app.publish(&[order, cancel]).await;
    app.wait_settled(ORDER, 1).await;
    assert_eq!(app.captures(ORDER).await[0].1, "void");
    let pi = app.sandbox.authorization(AUTH).unwrap();
    assert_eq!((pi.amount_received, pi.amount_capturable), (0, 0));
    let status: String = sqlx::query_scalar("select status from reconciliation_orders")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(status, "cancelled");
    app.cleanup().await;
}

/// Bad messages, each with the reason it must be refused with.
fn bad_messages() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let (order, s1, _, _) = usd_order();
    let mut v = Vec::new();
    let mut add = |reason: &'static str, rk: &'static str, m: Value| {
        v.push((reason, rk, serde_json::to_vec(&m).unwrap()))
    };
    let ship = |f: &dyn Fn(&mut Value)| {
        let mut m = with_id(&s1, &format!("bad-{}", uuid::Uuid::new_v4().simple()));
        m["data"]["shipment_id"] = json!(format!("SX-{}", uuid::Uuid::new_v4().simple()));
        f(&mut m);
        m
    };
    let ord = |f: &dyn Fn(&mut Value)| {
        let mut m = with_id(&order, &format!("bad-{}", uuid::Uuid::new_v4().simple()));
        m["data"]["order_id"] = json!(format!(
            "ORD-X-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        m["data"]["payment"]["authorization_id"] = json!(format!(
            "pi_x_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        f(&mut m);
        m
    };
    add(
        "invalid_schema",
        "shipment.shipped",
        ship(&|m| {
            m["data"].as_object_mut().unwrap().remove("items");
        }),
    );
    add(
        "unsupported_version",
        "shipment.shipped",
        ship(&|m| m["schema_version"] = json!(2)),
    );
    add(
        "invalid_amount",
        "order.authorized",
        ord(&|m| m["data"]["lines"][0]["unit_amount"] = json!(19.99)),
    );
    add(
        "invalid_amount",
        "order.authorized",
        ord(&|m| m["data"]["lines"][0]["unit_amount"] = json!("1999")),
    );
    add(
        "invalid_amount",
        "order.authorized",
        ord(&|m| m["data"]["lines"][0]["tax_amount"] = json!(-1)),
    );
    add(
        "invalid_quantity",
        "shipment.shipped",
        ship(&|m| m["data"]["items"][0]["quantity"] = json!(0)),
    );
    add(
        "unknown_line",
        "shipment.shipped",
        ship(&|m| m["data"]["items"][0]["line_id"] = json!("L9")),
    );
    add(
        "over_shipment",
        "shipment.shipped",
        ship(&|m| m["data"]["items"][0]["quantity"] = json!(4)),
    );
    add(
        "currency_mismatch",
        "order.authorized",
        ord(&|m| m["data"]["payment"]["currency"] = json!("EUR")),
    );
    add(
        "amount_overflow",
        "order.authorized",
        ord(&|m| m["data"]["lines"][0]["unit_amount"] = json!(i64::MAX)),
    );
    add(
        "unknown_provider",
        "order.authorized",
        ord(&|m| m["data"]["payment"]["provider"] = json!("nosuchpsp")),
    );
    v.push(("malformed", "shipment.shipped", b"{not json".to_vec()));
    v.push(("too_large", "shipment.shipped", vec![b' '; 300 * 1024]));
    v
}

#[tokio::test]
async fn every_rejection_reason_dead_letters_records_and_never_reaches_the_provider() {
    let app = TestApp::spawn().await;
    app.authorize(AUTH, 12455, "USD", None);
    let (order, s1, s2, s3) = usd_order();
    app.publish(&[order, s1]).await;
    app.wait_settled(ORDER, 1).await;
    let bad = bad_messages();
    for (_, rk, body) in &bad {
        app.publish_raw(rk, body).await;
    }
    // The good order carries on unaffected.
    app.publish(&[s2, s3]).await;
    app.wait_count("select count(*) from rejected_messages", bad.len() as i64)
        .await;
    app.wait_settled(ORDER, 3).await;

    let mut recorded: Vec<String> =
        sqlx::query_scalar("select reason from rejected_messages order by reason")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    let mut expected: Vec<String> = bad.iter().map(|b| b.0.to_owned()).collect();
    expected.sort();
    recorded.sort();
    assert_eq!(recorded, expected);
    let mut dead: Vec<String> = dead_letters(&app, expected.len())
        .await
        .into_iter()
        .map(|d| d.0)
        .collect();
    dead.sort();
    assert_eq!(
        dead, expected,
        "each dead-letter copy carries its reason header"
    );
    assert_eq!(
        app.sandbox.ledger().len(),
        3,
        "only the good order's three captures reached the provider"
    );
    assert_eq!(
        app.sandbox.authorization(AUTH).unwrap().amount_received,
        12455
    );
    app.cleanup().await;
}

#[tokio::test]
async fn shipments_after_the_final_capture_are_refused_as_after_final() {
    let app = TestApp::spawn().await;
    app.authorize(AUTH, 12455, "USD", None);
    let (order, s1, s2, s3) = usd_order();
    app.publish(&[order, s1, s2, s3]).await;
    app.wait_settled(ORDER, 3).await;
    let mut late = with_id(&example("shipment-shipped-usd-s1.json"), "late-1");
    late["data"]["shipment_id"] = json!("S4");
    app.publish(&[late]).await;
    app.wait_count(
        "select count(*) from rejected_messages where reason = 'after_final'",
        1,
    )
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn two_workers_on_one_queue_and_database_capture_every_order_exactly_once() {
    let mut app = TestApp::spawn().await;
    app.start_worker().await;
    let (order, s1, s2, s3) = usd_order();
    let mut messages = Vec::new();
    let n = 12;
    for i in 0..n {
        let auth = format!("pi_multi_{i}");
        app.authorize(&auth, 12455, "USD", None);
        let oid = format!("ORD-M{i}");
        for (j, base) in [&order, &s1, &s2, &s3].into_iter().enumerate() {
            let mut m = with_id(base, &format!("m{i}-{j}"));
            m["data"]["order_id"] = json!(oid);
            if j == 0 {
                m["data"]["payment"]["authorization_id"] = json!(auth);
            }
            messages.push(m);
        }
    }
    // Publish shipments first for half of the orders: they park, then complete.
    messages.sort_by_key(|m| {
        (
            m["data"]["order_id"].as_str().unwrap().len() % 2,
            m["type"] == "order.authorized",
        )
    });
    app.publish(&messages).await;
    app.wait_count(
        "select count(*) from captures where status = 'succeeded'",
        (n * 3) as i64,
    )
    .await;
    for i in 0..n {
        let pi = app.sandbox.authorization(&format!("pi_multi_{i}")).unwrap();
        assert_eq!(pi.amount_received, 12455);
    }
    let finals: i64 = sqlx::query_scalar("select count(*) from captures where is_final")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(finals, n as i64);
    app.assert_keys_sound();
    app.cleanup().await;
}

#[tokio::test]
async fn readiness_reports_consuming_and_the_api_key_never_reaches_the_logs_or_ledger() {
    let app = TestApp::spawn().await;
    let body = reqwest::get(format!("http://{}/readyz", app.worker_http(0)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, r#"{"consuming":true,"database":true}"#);
    let health = reqwest::get(format!("http://{}/healthz", app.worker_http(0)))
        .await
        .unwrap();
    assert!(health.status().is_success());
    let dumped: String = sqlx::query_scalar(
        "select coalesce(string_agg(t::text, ' '), '') from (select * from capture_attempts) t",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert!(!dumped.contains("sk_test_canary_key"));
    assert!(!format!("{:?}", app.settings).contains("sk_test_canary_key"));
    app.cleanup().await;
}

#[tokio::test]
async fn unanswered_requests_are_never_resent_under_a_new_key_even_after_the_retries_run_out() {
    // The provider may still be working on a request whose answer never came; only a saved
    // error (a spent key) allows a new key.
    let app = TestApp::spawn_with(|s| s.capture.max_attempts = 2).await;
    app.authorize(
        AUTH,
        12455,
        "USD",
        Some(Scenario {
            faults: vec![
                Fault::Timeout { delay_ms: 900 },
                Fault::Timeout { delay_ms: 900 },
                Fault::Timeout { delay_ms: 900 },
            ],
            ..Scenario::default()
        }),
    );
    let (order, s1, _, _) = usd_order();
    app.publish(&[order, s1]).await;
    app.wait_settled(ORDER, 1).await;
    assert_captured_exactly_once(&app, 5182).await;
    let (generation, lookups): (i32, i64) = sqlx::query_as(
        "select key_generation, (select count(*) from capture_attempts where operation = 'lookup') from captures",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(generation, 0, "the key was kept");
    assert!(
        lookups >= 1,
        "the payment was read back once the retries ran out"
    );
    app.cleanup().await;
}

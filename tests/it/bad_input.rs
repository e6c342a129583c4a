//! Bad input through the whole pipeline (reliability.md §5): every class of bad message is
//! published to a running worker on real RabbitMQ and PostgreSQL. None reaches the provider;
//! each ends dead-lettered (or parked) with its machine-readable reason recorded in
//! PostgreSQL; the worker keeps going and a good order next to it is captured in full.

use std::collections::HashMap;

use capture_worker::sandbox::{LedgerOutcome, NewAuthorization, Scenario};
use serde_json::{Value, json};

use crate::harness::*;

const ORDER: &str = "ORD-1001";
const AUTH: &str = "pi_example_1";

fn raw(m: &Value) -> Vec<u8> {
    serde_json::to_vec(m).unwrap()
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// The USD example order under new order and authorization ids.
fn order_as(order_id: &str, auth_id: &str) -> Value {
    let (order, _, _, _) = usd_order();
    let mut m = with_id(&order, &unique("chk"));
    m["data"]["order_id"] = json!(order_id);
    m["data"]["payment"]["authorization_id"] = json!(auth_id);
    m
}

/// A shipment of the USD example for `order_id` with a new message id.
fn ship_as(base: &Value, order_id: &str) -> Value {
    let mut m = with_id(base, &unique("wh"));
    m["data"]["order_id"] = json!(order_id);
    m
}

/// Applies `edit` to a copy of `m` with a fresh message id.
fn edited(m: &Value, edit: impl FnOnce(&mut Value)) -> Value {
    let mut m = with_id(m, &unique("bad"));
    edit(&mut m);
    m
}

/// An order of its own for a bad-order case (so that a wrongly accepted one could not collide).
fn bad_order(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut m = order_as(&unique("ORD-X"), &unique("pi_x"));
    edit(&mut m);
    raw(&m)
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

/// Publishes the good order with its three parcels.
async fn good_order(app: &TestApp) {
    app.authorize(AUTH, 12455, "USD", None);
    let (order, s1, s2, s3) = usd_order();
    app.publish(&[order, s1, s2, s3]).await;
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Publishes every case, waits until each is refused, then checks the reasons recorded in
/// PostgreSQL and carried by the dead-letter copies, and that the provider saw only the good
/// order's three captures.
async fn refuse_all(app: &TestApp, cases: &[(&str, &str, Vec<u8>)]) {
    for (_, rk, body) in cases {
        app.publish_raw(rk, body).await;
    }
    let n = cases.len();
    let mut rows: Vec<(String, String)> = Vec::new();
    for _ in 0..300 {
        rows = sqlx::query_as("select reason, detail from rejected_messages")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
        if rows.len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.wait_settled(ORDER, 3).await;
    let expected = sorted(cases.iter().map(|c| c.0.to_owned()).collect());
    let recorded = sorted(rows.iter().map(|r| r.0.clone()).collect());
    assert_eq!(
        recorded, expected,
        "reasons recorded in PostgreSQL: {rows:#?}"
    );
    let dead = dead_letters(app, cases.len()).await;
    let dead = dead.into_iter().map(|d| d.0).collect();
    assert_eq!(sorted(dead), expected, "reasons on the dead-letter copies");
    let ledger = app.sandbox.ledger();
    assert_eq!(
        ledger.len(),
        3,
        "only the good order's captures reached the provider: {ledger:?}"
    );
    assert_eq!(
        app.sandbox.authorization(AUTH).unwrap().amount_received,
        12455,
        "the good order was captured in full"
    );
}

#[tokio::test]
async fn malformed_oversized_and_deeply_nested_bodies_are_dead_lettered_and_store_nothing_else() {
    let app = TestApp::spawn().await;
    good_order(&app).await;
    let deep_arrays = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_data = format!(
        r#"{{"message_id":"deep-1","type":"shipment.shipped","schema_version":1,"data":{}1{}}}"#,
        "{\"a\":".repeat(200),
        "}".repeat(200)
    );
    let rk = "shipment.shipped";
    let cases = vec![
        ("malformed", rk, b"{not json".to_vec()),
        ("malformed", rk, b"\xff\xfe\x00 not utf-8".to_vec()),
        ("malformed", rk, Vec::new()),
        ("malformed", rk, b"   \n ".to_vec()),
        ("malformed", rk, b"[1, 2, 3]".to_vec()),
        ("malformed", rk, b"\"a string\"".to_vec()),
        ("malformed", rk, b"42".to_vec()),
        ("malformed", rk, b"null".to_vec()),
        ("malformed", rk, deep_arrays.into_bytes()),
        ("malformed", rk, deep_data.into_bytes()),
        ("too_large", rk, vec![b' '; 300 * 1024]),
    ];
    refuse_all(&app, &cases).await;
    let (inbox, orders): (i64, i64) = sqlx::query_as(
        "select (select count(*) from inbox_messages), (select count(*) from orders)",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        (inbox, orders),
        (4, 1),
        "no state beyond the rejection rows: only the good order's four messages"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn schema_violations_are_refused_with_a_precise_reason() {
    let app = TestApp::spawn().await;
    good_order(&app).await;
    let (order, s1, _, _) = usd_order();
    let ship = |f: &dyn Fn(&mut Value)| {
        raw(&edited(&s1, |m| {
            m["data"]["shipment_id"] = json!(unique("SX"));
            f(m)
        }))
    };
    let remove = |path: &'static [&'static str]| {
        move |m: &mut Value| {
            let (last, parents) = path.split_last().unwrap();
            let mut v = m;
            for p in parents {
                v = &mut v[*p];
            }
            v.as_object_mut().unwrap().remove(*last);
        }
    };
    let rk = "shipment.shipped";
    let ork = "order.authorized";
    let cases = vec![
        ("invalid_schema", rk, ship(&remove(&["data", "order_id"]))),
        (
            "invalid_schema",
            rk,
            ship(&remove(&["data", "shipment_id"])),
        ),
        ("invalid_schema", rk, ship(&remove(&["data", "items"]))),
        ("invalid_schema", rk, ship(&remove(&["message_id"]))),
        (
            "invalid_schema",
            rk,
            ship(&|m| m["occurred_at"] = json!("yesterday")),
        ),
        (
            "invalid_schema",
            rk,
            ship(&|m| m["data"]["order_id"] = json!(1001)),
        ),
        (
            "invalid_quantity",
            rk,
            ship(&|m| m["data"]["items"][0]["quantity"] = json!("3")),
        ),
        (
            "unsupported_version",
            rk,
            ship(&|m| m["schema_version"] = json!(2)),
        ),
        (
            "invalid_schema",
            ork,
            bad_order(|m| {
                m["data"].as_object_mut().unwrap().remove("lines");
            }),
        ),
        (
            "invalid_schema",
            ork,
            bad_order(|m| m["data"]["lines"] = json!("L1")),
        ),
        (
            "invalid_currency",
            ork,
            bad_order(|m| {
                m["data"]["currency"] = json!("XYZ");
                m["data"]["payment"]["currency"] = json!("XYZ");
            }),
        ),
        (
            "invalid_order",
            ork,
            bad_order(|m| m["data"]["lines"] = json!([])),
        ),
        (
            "invalid_schema",
            ork,
            raw(&edited(&order, |m| {
                m["type"] = json!("order.lines_cancelled")
            })),
        ),
    ];
    refuse_all(&app, &cases).await;
    app.cleanup().await;
}

#[tokio::test]
async fn bad_money_and_quantities_are_refused_never_rounded_or_wrapped() {
    let app = TestApp::spawn().await;
    good_order(&app).await;
    let (_, s1, _, _) = usd_order();
    let ship_qty = |q: Value| {
        raw(&edited(&s1, |m| {
            m["data"]["shipment_id"] = json!(unique("SX"));
            m["data"]["items"][0]["quantity"] = q;
        }))
    };
    let unit = |v: Value| bad_order(|m| m["data"]["lines"][0]["unit_amount"] = v);
    let ork = "order.authorized";
    let rk = "shipment.shipped";
    // Numbers written by hand: beyond what serde_json reads as an integer, and an exponent.
    let by_hand = |number: &str| {
        String::from_utf8(bad_order(|m| {
            m["data"]["lines"][0]["unit_amount"] = json!(777_777)
        }))
        .unwrap()
        .replacen("777777", number, 1)
        .into_bytes()
    };
    let too_big = by_hand("9223372036854775808");
    let exponent = by_hand("1.999e3");
    let cases = vec![
        ("invalid_amount", ork, unit(json!(19.99))),
        ("invalid_amount", ork, unit(json!(1999.0))),
        ("invalid_amount", ork, unit(json!(19.999))),
        ("invalid_amount", ork, unit(json!("1999"))),
        ("invalid_amount", ork, unit(json!("1.999e3"))),
        ("invalid_amount", ork, exponent),
        ("invalid_amount", ork, unit(json!(-1999))),
        (
            "invalid_amount",
            ork,
            bad_order(|m| m["data"]["lines"][0]["tax_amount"] = json!(-1)),
        ),
        (
            "invalid_amount",
            ork,
            bad_order(|m| m["data"]["payment"]["authorized_amount"] = json!(12455.5)),
        ),
        ("amount_overflow", ork, unit(json!(i64::MAX))),
        ("amount_overflow", ork, too_big),
        ("invalid_quantity", rk, ship_qty(json!(0))),
        ("invalid_quantity", rk, ship_qty(json!(-1))),
        ("invalid_quantity", rk, ship_qty(json!(1.5))),
        ("invalid_quantity", rk, ship_qty(json!(i64::MAX))),
        (
            "invalid_quantity",
            ork,
            bad_order(|m| m["data"]["lines"][0]["quantity"] = json!(9_223_372_036_854_775_807_i64)),
        ),
    ];
    refuse_all(&app, &cases).await;
    let orders: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(orders, 1, "no bad order was registered");
    app.cleanup().await;
}

#[tokio::test]
async fn ids_with_control_characters_look_alikes_or_too_long_are_refused_as_invalid_id() {
    let app = TestApp::spawn().await;
    good_order(&app).await;
    let (_, s1, _, _) = usd_order();
    let rk = "shipment.shipped";
    let ship_id = |id: Value| raw(&edited(&s1, |m| m["data"]["shipment_id"] = id));
    let cases = vec![
        ("invalid_id", rk, ship_id(json!("S-1\nforged log line"))),
        ("invalid_id", rk, ship_id(json!("S\u{0}1"))),
        ("invalid_id", rk, ship_id(json!("S".repeat(65)))),
        // Cyrillic 'І' looking like a Latin 'I'.
        ("invalid_id", rk, ship_id(json!("SH\u{0406}P-1"))),
        (
            "invalid_id",
            rk,
            raw(&edited(&s1, |m| {
                m["data"]["order_id"] = json!("ORD\u{2010}1001")
            })),
        ),
        (
            "invalid_id",
            "order.authorized",
            bad_order(|m| m["data"]["payment"]["authorization_id"] = json!("pi x")),
        ),
    ];
    refuse_all(&app, &cases).await;
    let details: Vec<String> = sqlx::query_scalar("select detail from rejected_messages")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    assert!(
        details
            .iter()
            .all(|d| !d.contains('\n') && !d.contains('\0')),
        "details stay single-line: {details:?}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn rule_breaking_parcels_are_refused_whole_and_the_order_carries_on() {
    let app = TestApp::spawn().await;
    app.authorize(AUTH, 12455, "USD", None);
    let (order, s1, s2, s3) = usd_order();
    app.publish(&[order.clone(), s1.clone()]).await;
    app.wait_settled(ORDER, 1).await;
    let rk = "shipment.shipped";
    let new_parcel = |f: &dyn Fn(&mut Value)| {
        raw(&edited(&s1, |m| {
            m["data"]["shipment_id"] = json!(unique("SX"));
            f(m)
        }))
    };
    let cases = vec![
        (
            "unknown_line",
            rk,
            new_parcel(&|m| m["data"]["items"][0]["line_id"] = json!("L9")),
        ),
        // Two units of L1 are left; the parcel asks for them plus one more. Nothing of it is
        // captured, not even the part that would fit.
        (
            "over_shipment",
            rk,
            new_parcel(&|m| {
                m["data"]["items"] =
                    json!([{"line_id": "L2", "quantity": 1}, {"line_id": "L1", "quantity": 3}])
            }),
        ),
        (
            "shipment_conflict",
            rk,
            raw(&edited(&s1, |m| {
                m["data"]["items"] = json!([{"line_id": "L1", "quantity": 2}])
            })),
        ),
        (
            "message_conflict",
            rk,
            raw(&{
                let mut m = s1.clone();
                m["data"]["carrier"] = json!("DHL");
                m
            }),
        ),
        (
            "currency_mismatch",
            "order.authorized",
            bad_order(|m| m["data"]["payment"]["currency"] = json!("EUR")),
        ),
    ];
    for (_, rk, body) in &cases {
        app.publish_raw(rk, body).await;
    }
    app.wait_count("select count(*) from rejected_messages", cases.len() as i64)
        .await;
    assert_eq!(app.captures(ORDER).await.len(), 1, "no partial capture");
    app.publish(&[s2, s3]).await;
    app.wait_settled(ORDER, 3).await;
    let mut late = with_id(&example("shipment-shipped-usd-s1.json"), "late-parcel");
    late["data"]["shipment_id"] = json!("S4");
    app.publish(&[late]).await;
    app.wait_count(
        "select count(*) from rejected_messages where reason = 'after_final'",
        1,
    )
    .await;

    let mut expected: Vec<String> = cases.iter().map(|c| c.0.to_owned()).collect();
    expected.push("after_final".into());
    let recorded: Vec<String> = sqlx::query_scalar("select reason from rejected_messages")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    assert_eq!(sorted(recorded), sorted(expected.clone()));
    let dead: Vec<String> = dead_letters(&app, expected.len())
        .await
        .into_iter()
        .map(|d| d.0)
        .collect();
    assert_eq!(sorted(dead), sorted(expected));
    let requests = app.sandbox.ledger();
    assert_eq!(requests.len(), 3, "only the three good parcels were sent");
    assert!(
        requests
            .iter()
            .all(|e| e.amount_to_capture.unwrap_or(0) > 0)
    );
    assert_eq!(
        app.sandbox.authorization(AUTH).unwrap().amount_received,
        12455
    );
    app.assert_keys_sound();
    app.cleanup().await;
}

#[tokio::test]
async fn parcels_after_a_decline_or_a_void_are_refused_without_a_call() {
    let app = TestApp::spawn().await;
    // A: its first capture is declined. B: cancelled whole before anything shipped.
    app.authorize(
        "pi_decl",
        12455,
        "USD",
        Some(Scenario {
            decline_on_capture: Some(1),
            ..Scenario::default()
        }),
    );
    app.authorize("pi_void", 12455, "USD", None);
    let (_, s1, s2, _) = usd_order();
    let cancel_all = json!({
        "message_id": "cancel-all-b", "type": "order.lines_cancelled", "schema_version": 1,
        "occurred_at": "2026-11-22T09:00:00Z",
        "data": {"order_id": "ORD-B", "items": [{"line_id": "L1", "quantity": 3}, {"line_id": "L2", "quantity": 2}, {"line_id": "L3", "quantity": 1}]}
    });
    app.publish(&[
        order_as("ORD-A", "pi_decl"),
        ship_as(&s1, "ORD-A"),
        order_as("ORD-B", "pi_void"),
        cancel_all,
    ])
    .await;
    app.wait_settled("ORD-A", 1).await;
    app.wait_settled("ORD-B", 1).await;
    app.publish(&[ship_as(&s2, "ORD-A"), ship_as(&s1, "ORD-B")])
        .await;
    app.wait_count("select count(*) from rejected_messages", 2)
        .await;

    let reasons: HashMap<String, String> =
        sqlx::query_as::<_, (String, String)>("select order_id, reason from rejected_messages")
            .fetch_all(app.store.pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(reasons["ORD-A"], "order_declined");
    assert_eq!(reasons["ORD-B"], "after_final");
    let a = app.sandbox.ledger_for("pi_decl");
    assert_eq!(a.len(), 1, "one declined request, nothing after it");
    assert_eq!(a[0].outcome, LedgerOutcome::Declined);
    let b = app.sandbox.ledger_for("pi_void");
    assert_eq!(b.len(), 1, "the void, nothing after it");
    assert_eq!(b[0].outcome, LedgerOutcome::Released);
    let dead: Vec<String> = dead_letters(&app, 2)
        .await
        .into_iter()
        .map(|d| d.0)
        .collect();
    assert_eq!(
        sorted(dead),
        vec!["after_final".to_owned(), "order_declined".to_owned()]
    );
    app.cleanup().await;
}

#[tokio::test]
async fn value_above_the_remaining_authorization_is_capped_never_requested() {
    let app = TestApp::spawn().await;
    // The order is worth 12455 but only 10000 is authorized.
    app.authorize(AUTH, 10_000, "USD", None);
    let (mut order, s1, s2, s3) = usd_order();
    order["data"]["payment"]["authorized_amount"] = json!(10_000);
    app.publish(&[order, s1, s2, s3]).await;
    app.wait_settled(ORDER, 3).await;
    let amounts: Vec<(i64, bool)> = app
        .captures(ORDER)
        .await
        .iter()
        .map(|c| (c.2, c.3))
        .collect();
    assert_eq!(amounts, vec![(5182, false), (2890, false), (1928, true)]);
    for e in app.sandbox.ledger() {
        assert_eq!(
            e.http_status, 200,
            "never refused for asking too much: {e:?}"
        );
    }
    let (captured, shortfall): (i64, i64) = sqlx::query_as(
        "select captured_amount, shortfall_amount from reconciliation_orders where order_id = $1",
    )
    .bind(ORDER)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!((captured, shortfall), (10_000, 2455));
    app.cleanup().await;
}

#[tokio::test]
async fn more_parcels_than_the_provider_allows_captures_are_coalesced_within_its_limit() {
    let app = TestApp::spawn().await;
    app.authorize("pi_many", 6_000, "USD", None);
    let order = dated(json!({
        "message_id": "many-order", "type": "order.authorized", "schema_version": 1,
        "occurred_at": "2026-11-21T10:00:00Z",
        "data": {
            "order_id": "ORD-MANY", "currency": "USD",
            "lines": [{"line_id": "L1", "sku": "PIN", "name": "Pin", "quantity": 60, "unit_amount": 100, "tax_amount": 0, "discount_amount": 0}],
            "payment": {"provider": "sandbox", "authorization_id": "pi_many", "authorized_amount": 6000, "authorized_at": "2026-11-21T09:59:58Z", "currency": "USD"}
        }
    }));
    let mut messages = vec![order];
    for i in 0..60 {
        messages.push(json!({
            "message_id": format!("many-s{i}"), "type": "shipment.shipped", "schema_version": 1,
            "occurred_at": "2026-11-22T08:00:00Z",
            "data": {"order_id": "ORD-MANY", "shipment_id": format!("P{i}"), "shipped_at": "2026-11-22T08:00:00Z", "items": [{"line_id": "L1", "quantity": 1}]}
        }));
    }
    app.publish(&messages).await;
    app.wait_settled("ORD-MANY", 50).await;
    let caps = app.captures("ORD-MANY").await;
    assert_eq!(caps.len(), 50, "Stripe's limit of 50 captures");
    assert!(
        caps[..49].iter().all(|c| !c.3) && caps[49].3,
        "the 50th is the final one"
    );
    assert_eq!(caps.iter().map(|c| c.2).sum::<i64>(), 6_000);
    assert_eq!(
        caps[49].2, 1_100,
        "the last one carries the eleven parcels deferred for it"
    );
    assert!(
        app.sandbox.ledger().iter().all(|e| e.http_status == 200),
        "no capture refused by the provider's limit"
    );
    assert_eq!(
        app.sandbox
            .authorization("pi_many")
            .unwrap()
            .amount_received,
        6_000
    );
    app.cleanup().await;
}

#[tokio::test]
async fn duplicates_and_parcels_out_of_order_capture_each_item_once_the_last_final() {
    let app = TestApp::spawn().await;
    app.authorize(AUTH, 12455, "USD", None);
    let (order, s1, s2, s3) = usd_order();
    // Timestamps in the future are not used for money or ordering.
    let mut s1 = s1;
    s1["occurred_at"] = json!("2099-01-01T00:00:00Z");
    s1["data"]["shipped_at"] = json!("2099-01-01T00:00:00Z");
    app.publish(&[
        order,
        s3,
        s2.clone(),
        s2.clone(),
        with_id(&s2, "wh-resent-s2"),
        s1,
    ])
    .await;
    app.wait_settled(ORDER, 3).await;
    app.wait_count(
        "select count(*) from inbox_messages where status = 'processed'",
        5,
    )
    .await;
    let caps = app.captures(ORDER).await;
    assert_eq!(caps.iter().map(|c| c.2).sum::<i64>(), 12455);
    assert_eq!(
        caps.iter().map(|c| c.3).collect::<Vec<_>>(),
        vec![false, false, true],
        "final only on the parcel that completed the order"
    );
    assert_eq!(app.sandbox.ledger().len(), 3);
    assert!(
        app.drain_dead_letters().await.is_empty(),
        "duplicates are not errors"
    );
    app.assert_keys_sound();
    app.cleanup().await;
}

#[tokio::test]
async fn card_numbers_in_free_text_are_masked_wherever_a_message_is_kept() {
    let app = TestApp::spawn().await;
    app.authorize(AUTH, 12455, "USD", None);
    let (order, s1, s2, s3) = usd_order();
    let pan = "4111 1111 1111 1111";
    let refused = edited(&s1, |m| {
        m["data"]["shipment_id"] = json!("SX-PAN");
        m["data"]["items"][0]["quantity"] = json!(0);
        m["data"]["note"] = json!(format!("card {pan}"));
    });
    let mut s2 = s2;
    s2["data"]["note"] = json!(format!("customer paid with {pan}"));
    app.publish(&[order, s1, s2, s3, refused]).await;
    app.wait_settled(ORDER, 3).await;
    app.wait_count("select count(*) from rejected_messages", 1)
        .await;
    let dump: String = sqlx::query_scalar(
        "select concat_ws(' ',
            (select string_agg(t::text, ' ') from rejected_messages t),
            (select string_agg(t::text, ' ') from inbox_messages t),
            (select string_agg(t::text, ' ') from shipments t),
            (select string_agg(t::text, ' ') from captures t))",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert!(!dump.contains(pan) && !dump.contains("4111111111111111"));
    assert!(
        dump.contains("[card-number-masked]"),
        "the refused body is kept, masked"
    );
    let dead = dead_letters(&app, 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "invalid_quantity");
    let copy = dead[0].1.to_string();
    assert!(
        !copy.contains(pan) && !copy.contains("4111111111111111"),
        "{copy}"
    );
    app.cleanup().await;
}

/// Regression: a parcel parked before its order and refused when the order arrived was
/// recorded in PostgreSQL but never copied to the dead-letter queue (its delivery had been
/// acknowledged when it was parked), so the warehouse never saw the refusal.
#[tokio::test]
async fn a_parked_parcel_refused_when_its_order_arrives_is_dead_lettered_with_its_reason() {
    let app = TestApp::spawn().await;
    app.authorize(AUTH, 12455, "USD", None);
    let (order, s1, _, _) = usd_order();
    let unknown_line = edited(&s1, |m| {
        m["data"]["shipment_id"] = json!("SX-1");
        m["data"]["items"][0]["line_id"] = json!("L9");
    });
    let too_many = edited(&s1, |m| {
        m["data"]["shipment_id"] = json!("SX-2");
        m["data"]["items"] = json!([{"line_id": "L3", "quantity": 2}]);
    });
    app.publish(&[unknown_line, too_many]).await;
    app.wait_count(
        "select count(*) from inbox_messages where status = 'parked'",
        2,
    )
    .await;
    app.publish(&[order, s1]).await;
    app.wait_settled(ORDER, 1).await;
    app.wait_count(
        "select count(*) from inbox_messages where status = 'rejected'",
        2,
    )
    .await;
    let dead = dead_letters(&app, 2).await;
    let reasons = sorted(dead.iter().map(|d| d.0.clone()).collect());
    assert_eq!(
        reasons,
        vec!["over_shipment".to_owned(), "unknown_line".to_owned()]
    );
    assert!(
        dead.iter()
            .all(|d| d.1["data"]["shipment_id"].as_str().is_some()),
        "the copies carry the messages"
    );
    // Sent once: the body kept for the copy is gone.
    app.wait_count(
        "select count(*) from inbox_messages where body is not null",
        0,
    )
    .await;
    assert_eq!(
        app.sandbox.ledger().len(),
        1,
        "only the good parcel was sent"
    );
    app.cleanup().await;
}

/// An authorization that lapsed before its parcels shipped (authorized eight days ago, expired
/// an hour ago): each parcel is refused at intake as `authorization_inactive` and dead-lettered
/// with that reason — the one that waited parked for its order too — and the provider hears
/// nothing of them. Cancelling the rest is recorded and sends no void: the hold is gone. The
/// good order next to it is captured in full.
#[tokio::test]
async fn parcels_after_the_authorization_lapsed_are_refused_as_authorization_inactive_without_a_call()
 {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now();
    let expired = now - chrono::Duration::hours(1);
    let mut lapsed = NewAuthorization::new("pi_lapsed", 12455, "USD");
    lapsed.expires_at = Some(expired);
    app.authorize_with(lapsed);
    let mut order = order_as("ORD-LAPSED", "pi_lapsed");
    order["data"]["payment"]["authorized_at"] =
        json!((now - chrono::Duration::days(8)).to_rfc3339());
    order["data"]["payment"]["expires_at"] = json!(expired.to_rfc3339());
    let (_, s1, s2, _) = usd_order();
    let cancel_rest = json!({
        "message_id": unique("cancel"), "type": "order.lines_cancelled", "schema_version": 1,
        "occurred_at": "2026-11-22T09:00:00Z",
        "data": {"order_id": "ORD-LAPSED", "items": [{"line_id": "L1", "quantity": 3}, {"line_id": "L2", "quantity": 2}, {"line_id": "L3", "quantity": 1}]}
    });
    // S1 arrives before its order and waits, parked.
    app.publish(&[ship_as(&s1, "ORD-LAPSED")]).await;
    app.wait_count(
        "select count(*) from inbox_messages where status = 'parked'",
        1,
    )
    .await;

    good_order(&app).await;
    app.publish(&[order, ship_as(&s2, "ORD-LAPSED"), cancel_rest])
        .await;
    app.wait_count(
        "select count(*) from cancellations where order_id = 'ORD-LAPSED'",
        1,
    )
    .await;
    app.wait_settled(ORDER, 3).await;

    let refused: Vec<(String, String)> =
        sqlx::query_as("select order_id, reason from rejected_messages order by rejection_id")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    let inactive = ("ORD-LAPSED".to_owned(), "authorization_inactive".to_owned());
    assert_eq!(refused, vec![inactive.clone(), inactive]);
    let dead = dead_letters(&app, 2).await;
    assert_eq!(
        dead.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(),
        vec!["authorization_inactive"; 2],
        "{dead:?}"
    );
    let parcels = sorted(
        dead.iter()
            .map(|d| d.1["data"]["shipment_id"].as_str().unwrap_or("").to_owned())
            .collect(),
    );
    assert_eq!(parcels, vec!["S1".to_owned(), "S2".to_owned()]);
    assert!(
        app.sandbox.ledger_for("pi_lapsed").is_empty(),
        "no capture, release or void reached the provider: {:?}",
        app.sandbox.ledger_for("pi_lapsed")
    );
    assert!(app.captures("ORD-LAPSED").await.is_empty());
    let (phase, decision): (String, String) = sqlx::query_as(
        "select o.phase, c.decision from orders o join cancellations c using (order_id)
         where order_id = 'ORD-LAPSED'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        (phase.as_str(), decision.as_str()),
        ("completed", "nothing:authorization_lapsed")
    );
    let amounts: (i64, i64, i64, i64, String) = sqlx::query_as(
        "select shipped_amount, captured_amount, pending_amount, released_amount, status
         from reconciliation_orders where order_id = 'ORD-LAPSED'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(amounts, (0, 0, 0, 0, "open".to_owned()));

    assert_eq!(app.sandbox.ledger_for(AUTH).len(), 3);
    assert_eq!(
        app.sandbox.authorization(AUTH).unwrap().amount_received,
        12455,
        "the good order was captured in full"
    );
    app.cleanup().await;
}

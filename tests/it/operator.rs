//! The operator commands against a running worker: `order show`, `capture retry`, `order
//! resume`, `dead-letter list` / `requeue`, `provider reconcile` and `report`, called as
//! functions and through the real binary.

use std::process::Command;

use capture_worker::app::operator::dead_letters::{RequeueResult, Requeuer, SkipReason};
use capture_worker::app::operator::orders::{self, ResumeRequest, StoryFormat};
use capture_worker::app::operator::reconcile::{self, Severity};
use capture_worker::app::operator::{self, OperatorError, OutputFormat, report};
use capture_worker::app::providers::Providers;
use capture_worker::domain::{
    AuthorizationId, Currency, IdempotencyKey, MinorUnits, Money, OrderId, ProviderName,
    ShippingPolicy,
};
use capture_worker::provider::{AuthorizationSnapshot, CaptureRequest};
use capture_worker::sandbox::{Fault, Scenario};
use capture_worker::storage::operator::{
    self as sql, AuthorizationScope, LedgerAuthorization, RejectionFilter,
};
use serde_json::{Value, json};

use crate::finance::{cancel_msg, order_msg, ship_msg};
use crate::harness::*;

const ORDER: &str = "ORD-1001";
const AUTH: &str = "pi_example_1";

async fn capture_id(app: &TestApp, order_id: &str, sequence: i32) -> i64 {
    sqlx::query_scalar("select capture_id from captures where order_id = $1 and sequence = $2")
        .bind(order_id)
        .bind(sequence)
        .fetch_one(app.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn order_show_tells_the_whole_story_in_time_order_with_every_provider_call() {
    let app = TestApp::spawn().await;
    app.authorize(
        AUTH,
        12455,
        "USD",
        Some(Scenario {
            faults: vec![Fault::Unavailable],
            ..Scenario::default()
        }),
    );
    let (order, s1, s2, _) = usd_order();
    let mut over = with_id(&s2, "over-1");
    over["data"]["shipment_id"] = json!("S9");
    over["data"]["items"] = json!([{"line_id": "L1", "quantity": 9}]);
    // One parcel at a time, so that the history's order is the order things happened in.
    app.publish(&[order, s1]).await;
    app.wait_settled(ORDER, 1).await;
    app.publish(&[s2]).await;
    app.wait_settled(ORDER, 2).await;
    app.publish(&[over]).await;
    app.wait_count("select count(*) from rejected_messages", 1)
        .await;

    let story = orders::story(&app.store, ORDER).await.unwrap();
    let kinds: Vec<&str> = story.history.iter().map(|h| h.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "order_registered",
            "shipment",
            "capture_planned",
            "provider_call",
            "provider_call",
            "capture_settled",
            "shipment",
            "capture_planned",
            "provider_call",
            "capture_settled",
            "message_refused",
        ]
    );
    assert!(story.history.windows(2).all(|w| w[0].at <= w[1].at));
    let outcomes: Vec<&str> = story
        .history
        .iter()
        .filter(|h| h.kind == "provider_call")
        .map(|h| h.fields["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["retryable", "succeeded", "succeeded"]);
    let call = story
        .history
        .iter()
        .find(|h| h.kind == "provider_call")
        .unwrap();
    for field in [
        "attempt_no",
        "http_status",
        "trace_id",
        "idempotency_key",
        "latency_ms",
    ] {
        assert!(call.fields.get(field).is_some(), "a call shows {field}");
    }
    assert_eq!(story.overview.lines.len(), 3);
    assert_eq!(story.overview.order["captured_amount"], json!(5182 + 2890));

    let text = orders::render_story(&story, StoryFormat::Text).unwrap();
    assert!(text.contains("retryable · HTTP 503"), "{text}");
    assert!(text.contains("over_shipment"), "{text}");
    let parsed: Value =
        serde_json::from_str(&orders::render_story(&story, StoryFormat::Json).unwrap()).unwrap();
    assert_eq!(parsed["history"].as_array().unwrap().len(), 11);
    assert!(matches!(
        orders::story(&app.store, "ORD-NOPE").await,
        Err(OperatorError::NotFound { .. })
    ));
    app.cleanup().await;
}

#[tokio::test]
async fn capture_retry_sends_a_capture_that_needs_attention_again_with_the_same_key() {
    let app = TestApp::spawn().await;
    // The provider does not know the authorization yet: the capture fails and needs attention.
    let (order, s1, _, _) = usd_order();
    app.publish(&[order, s1]).await;
    app.wait_count(
        "select count(*) from captures where status = 'attention'",
        1,
    )
    .await;
    let id = capture_id(&app, ORDER, 1).await;
    let key_before: String =
        sqlx::query_scalar("select idempotency_key from captures where capture_id = $1")
            .bind(id)
            .fetch_one(app.store.pool())
            .await
            .unwrap();

    // The cause is fixed; the operator puts it back.
    app.authorize(AUTH, 12455, "USD", None);
    let requeued = operator::retry_capture(&app.store, id, false)
        .await
        .unwrap();
    assert_eq!(requeued.idempotency_key, key_before);
    assert_eq!((requeued.amount, requeued.is_final), (5182, false));
    app.wait_settled(ORDER, 1).await;

    let (status, attempts, key): (String, i32, String) = sqlx::query_as(
        "select status, attempts, idempotency_key from captures where capture_id = $1",
    )
    .bind(id)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), attempts, key.as_str()),
        ("succeeded", 1, key_before.as_str()),
        "sent once more, attempts counted afresh, same key"
    );
    assert_eq!(
        app.sandbox.authorization(AUTH).unwrap().amount_received,
        5182
    );
    app.assert_keys_sound();

    assert!(matches!(
        operator::retry_capture(&app.store, id, false).await,
        Err(OperatorError::NotInAttention { ref status, .. }) if status == "succeeded"
    ));
    assert!(matches!(
        operator::retry_capture(&app.store, 987_654, false).await,
        Err(OperatorError::NotFound { .. })
    ));
    app.cleanup().await;
}

fn providers(app: &TestApp) -> Providers {
    Providers::from_settings(&app.settings).unwrap()
}

#[tokio::test]
async fn order_resume_captures_the_declined_and_blocked_value_under_the_new_authorization_with_new_keys()
 {
    // The third capture is queued behind the second when the second is declined.
    let app = TestApp::spawn().await;
    app.authorize(AUTH, 12455, "USD", None);
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
    let (order, s1, s2, s3) = usd_order();
    app.publish(&[order, s1, s2, s3]).await;
    app.wait_count(
        "select count(*) from captures where status in ('succeeded','declined','blocked')",
        3,
    )
    .await;
    let old_keys: Vec<String> =
        sqlx::query_scalar("select idempotency_key from captures order by sequence")
            .fetch_all(app.store.pool())
            .await
            .unwrap();

    // Checkout obtained a new authorization for what is left.
    app.authorize("pi_resumed", 7273, "USD", None);
    let outcome = orders::resume(
        &app.store,
        &providers(&app),
        ShippingPolicy::FirstCapture,
        &ResumeRequest {
            order_id: ORDER,
            authorization_id: "pi_resumed",
            amount: 7273,
            expires_at: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(outcome.carried_amount, 2890 + 4383);
    assert_eq!(outcome.carried_captures.len(), 2);
    assert_eq!(outcome.planned.len(), 1);
    assert_eq!(
        (
            outcome.planned[0].sequence,
            outcome.planned[0].amount,
            outcome.planned[0].is_final
        ),
        (4, 7273, true)
    );
    assert!(orders::render_resume(&outcome).contains("pi_resumed"));
    app.wait_settled(ORDER, 4).await;

    let caps = app.captures(ORDER).await;
    assert_eq!(
        caps.iter().map(|c| c.4.as_str()).collect::<Vec<_>>(),
        vec!["succeeded", "declined", "blocked", "succeeded"]
    );
    let new_key: String =
        sqlx::query_scalar("select idempotency_key from captures where sequence = 4")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert!(
        !old_keys.contains(&new_key),
        "a new key for the new authorization"
    );
    assert_eq!(
        app.sandbox.authorization(AUTH).unwrap().amount_received,
        5182
    );
    let resumed = app.sandbox.authorization("pi_resumed").unwrap();
    assert_eq!(
        (resumed.amount_received, resumed.amount_capturable),
        (7273, 0)
    );
    app.assert_keys_sound();

    let (status, captured, released, authorization, authorizations): (
        String,
        i64,
        i64,
        String,
        i64,
    ) = sqlx::query_as(
        "select status, captured_amount, released_amount, authorization_id, authorization_count
             from reconciliation_orders where order_id = $1",
    )
    .bind(ORDER)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        (
            status.as_str(),
            captured,
            released,
            authorization.as_str(),
            authorizations
        ),
        ("completed", 12455, 0, "pi_resumed", 2)
    );
    let auths: Vec<(String, String)> = sqlx::query_as(
        "select authorization_id, status from reconciliation_authorizations order by authorized_at",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        auths,
        vec![
            ("pi_example_1".to_owned(), "superseded".to_owned()),
            ("pi_resumed".to_owned(), "closed".to_owned())
        ]
    );
    let latches: i64 = sqlx::query_scalar(
        "select count(*) from reconciliation_exceptions where kind = 'declined_latch'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(latches, 0);

    // The latch lifts only once, and only with an authorization no order has used.
    let again = |auth: &'static str| ResumeRequest {
        order_id: ORDER,
        authorization_id: auth,
        amount: 100,
        expires_at: None,
    };
    assert!(matches!(
        orders::resume(
            &app.store,
            &providers(&app),
            ShippingPolicy::FirstCapture,
            &again("pi_other")
        )
        .await,
        Err(OperatorError::Resume { .. })
    ));
    app.cleanup().await;
}

#[tokio::test]
async fn a_shipment_refused_while_latched_is_requeued_after_resume_and_captured() {
    let app = TestApp::spawn().await;
    app.authorize(
        "pi_c",
        4500,
        "USD",
        Some(Scenario {
            decline_on_capture: Some(2),
            ..Scenario::default()
        }),
    );
    app.publish(&[order_msg(
        "ORD-C",
        "pi_c",
        "USD",
        &[("C1", 3, 1500, 0)],
        0,
        4500,
        None,
    )])
    .await;
    app.wait_count("select count(*) from orders", 1).await;
    app.publish(&[
        ship_msg("ORD-C", "S1", &[("C1", 1)]),
        ship_msg("ORD-C", "S2", &[("C1", 1)]),
    ])
    .await;
    app.wait_settled("ORD-C", 2).await;
    app.publish(&[ship_msg("ORD-C", "S3", &[("C1", 1)])]).await;
    app.wait_count(
        "select count(*) from rejected_messages where reason = 'order_declined'",
        1,
    )
    .await;

    // An authorization already used by another order is refused.
    app.authorize("pi_other", 100, "USD", None);
    app.publish(&[order_msg(
        "ORD-O",
        "pi_other",
        "USD",
        &[("O1", 1, 100, 0)],
        0,
        100,
        None,
    )])
    .await;
    app.wait_count("select count(*) from orders", 2).await;
    let in_use = orders::resume(
        &app.store,
        &providers(&app),
        ShippingPolicy::FirstCapture,
        &ResumeRequest {
            order_id: "ORD-C",
            authorization_id: "pi_other",
            amount: 3000,
            expires_at: None,
        },
    )
    .await;
    assert!(matches!(
        in_use,
        Err(OperatorError::AuthorizationInUse { .. })
    ));

    app.authorize("pi_c2", 3000, "USD", None);
    let outcome = orders::resume(
        &app.store,
        &providers(&app),
        ShippingPolicy::FirstCapture,
        &ResumeRequest {
            order_id: "ORD-C",
            authorization_id: "pi_c2",
            amount: 3000,
            expires_at: None,
        },
    )
    .await
    .unwrap();
    // The declined unit is captured again, not final: the refused third unit is still to ship.
    assert_eq!(
        (outcome.planned[0].amount, outcome.planned[0].is_final),
        (1500, false)
    );
    assert_eq!(outcome.refused_while_latched, 1);
    app.wait_settled("ORD-C", 3).await;

    let requeuer = Requeuer::connect(app.store.clone(), &app.settings)
        .await
        .unwrap();
    let ids: Vec<i64> = sql::list_rejections(
        app.store.pool(),
        &RejectionFilter {
            reason: Some("order_declined".into()),
            order_id: Some("ORD-C".into()),
            ..RejectionFilter::default()
        },
    )
    .await
    .unwrap()
    .into_iter()
    .map(|r| r.rejection_id)
    .collect();
    assert_eq!(ids.len(), 1);
    let result = requeuer.requeue(ids[0]).await.unwrap();
    assert!(
        matches!(
            result,
            RequeueResult::Requeued {
                inbox_cleared: true,
                ..
            }
        ),
        "{result:?}"
    );
    assert_eq!(
        requeuer.requeue(ids[0]).await.unwrap(),
        RequeueResult::Skipped {
            rejection_id: ids[0],
            why: SkipReason::AlreadyRequeued
        }
    );
    requeuer.close().await;
    app.wait_settled("ORD-C", 4).await;

    let caps = app.captures("ORD-C").await;
    assert_eq!(
        caps.iter()
            .map(|c| (c.2, c.3, c.4.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (1500, false, "succeeded"),
            (1500, false, "declined"),
            (1500, false, "succeeded"),
            (1500, true, "succeeded")
        ]
    );
    let pi = app.sandbox.authorization("pi_c2").unwrap();
    assert_eq!((pi.amount_received, pi.amount_capturable), (3000, 0));
    let (status, captured): (String, i64) = sqlx::query_as(
        "select status, captured_amount from reconciliation_orders where order_id = 'ORD-C'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!((status.as_str(), captured), ("completed", 4500));
    let open: i64 = sqlx::query_scalar(
        "select count(*) from reconciliation_exceptions where order_id = 'ORD-C'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(open, 0, "nothing left to look at");
    app.cleanup().await;
}

#[tokio::test]
async fn dead_letter_requeue_skips_masked_and_conflicting_bodies_and_records_a_second_refusal_anew()
{
    let app = TestApp::spawn().await;
    app.authorize(AUTH, 12455, "USD", None);
    let (order, s1, s2, _) = usd_order();
    app.publish(&[order, s1.clone()]).await;
    app.wait_settled(ORDER, 1).await;
    // An over-shipment (will be refused again), a body with a card number (masked when kept),
    // and a different message under an id already used.
    let mut over = with_id(&s2, "over-1");
    over["data"]["items"] = json!([{"line_id": "L1", "quantity": 9}]);
    let mut carded = with_id(&s2, "carded-1");
    carded["data"]["shipment_id"] = json!("S7");
    carded["data"]["items"] = json!([{"line_id": "L9", "quantity": 1}]);
    carded["data"]["tracking_number"] = json!("4111 1111 1111 1111");
    let mut conflict = s2.clone();
    conflict["message_id"] = s1["message_id"].clone();
    app.publish(&[over, carded, conflict]).await;
    app.wait_count("select count(*) from rejected_messages", 3)
        .await;
    let listed = sql::list_rejections(app.store.pool(), &RejectionFilter::default())
        .await
        .unwrap();
    let id_of = |reason: &str| {
        listed
            .iter()
            .find(|r| r.reason == reason)
            .unwrap()
            .rejection_id
    };

    let requeuer = Requeuer::connect(app.store.clone(), &app.settings)
        .await
        .unwrap();
    assert_eq!(
        requeuer.requeue(id_of("unknown_line")).await.unwrap(),
        RequeueResult::Skipped {
            rejection_id: id_of("unknown_line"),
            why: SkipReason::MaskedBody
        }
    );
    assert_eq!(
        requeuer.requeue(id_of("message_conflict")).await.unwrap(),
        RequeueResult::Skipped {
            rejection_id: id_of("message_conflict"),
            why: SkipReason::FirstMessageStands
        }
    );
    assert_eq!(
        requeuer.requeue(424_242).await.unwrap(),
        RequeueResult::Skipped {
            rejection_id: 424_242,
            why: SkipReason::NotFound
        }
    );
    assert!(
        requeuer
            .requeue(id_of("over_shipment"))
            .await
            .unwrap()
            .is_requeued()
    );
    requeuer.close().await;

    // Refused again, and recorded as a new refusal rather than lost in the requeued one.
    app.wait_count(
        "select count(*) from rejected_messages where reason = 'over_shipment'",
        2,
    )
    .await;
    let open = sql::list_rejections(app.store.pool(), &RejectionFilter::default())
        .await
        .unwrap();
    assert_eq!(
        open.len(),
        3,
        "the requeued one is replaced by its new refusal"
    );
    let all = sql::list_rejections(
        app.store.pool(),
        &RejectionFilter {
            include_requeued: true,
            ..RejectionFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all.iter().filter(|r| r.requeued_at.is_some()).count(), 1);
    assert_eq!(app.captures(ORDER).await.len(), 1, "nothing was captured");

    let table = operator::dead_letters::render_list(&open, OutputFormat::Table).unwrap();
    assert!(table.contains("over_shipment"));
    let parsed: Value = serde_json::from_str(
        &operator::dead_letters::render_list(&open, OutputFormat::Json).unwrap(),
    )
    .unwrap();
    assert_eq!(parsed.as_array().unwrap().len(), 3);
    assert!(parsed[0].get("body").is_none(), "bodies stay out of lists");
    let csv = operator::dead_letters::render_list(&open, OutputFormat::Csv).unwrap();
    assert_eq!(parse_csv(&csv).len(), 4);
    app.cleanup().await;
}

fn ledger_auth(status: &str, authorized: i64, captured: i64, pending: i64) -> LedgerAuthorization {
    LedgerAuthorization {
        order_id: "ORD-X".into(),
        provider: "sandbox".into(),
        authorization_id: "pi_x".into(),
        currency: "USD".into(),
        authorized_amount: authorized,
        over_capture_allowance: 0,
        captured_amount: captured,
        pending_amount: pending,
        released_amount: 0,
        status: status.into(),
    }
}

fn snapshot(status: &str, captured: i64, capturable: i64) -> AuthorizationSnapshot {
    let usd = Currency::parse("USD").unwrap();
    AuthorizationSnapshot {
        authorization_id: AuthorizationId::parse("pi_x").unwrap(),
        captured: Money::new(MinorUnits::new(captured).unwrap(), usd),
        capturable: Money::new(MinorUnits::new(capturable).unwrap(), usd),
        status: status.into(),
    }
}

#[test]
fn reconcile_classifies_each_kind_of_difference() {
    let kinds = |a: LedgerAuthorization, s: AuthorizationSnapshot| {
        reconcile::compare(&a, &s)
            .into_iter()
            .map(|d| (d.kind, d.severity))
            .collect::<Vec<_>>()
    };
    // In agreement: open with 400 captured of 1000; closed with nothing left.
    assert!(
        kinds(
            ledger_auth("open", 1000, 400, 0),
            snapshot("requires_capture", 400, 600)
        )
        .is_empty()
    );
    assert!(
        kinds(
            ledger_auth("closed", 1000, 1000, 0),
            snapshot("succeeded", 1000, 0)
        )
        .is_empty()
    );
    assert_eq!(
        kinds(
            ledger_auth("open", 1000, 400, 0),
            snapshot("requires_capture", 300, 700)
        ),
        vec![("captured_less", Severity::Error)]
    );
    assert_eq!(
        kinds(
            ledger_auth("open", 1000, 400, 100),
            snapshot("requires_capture", 600, 400)
        ),
        vec![("captured_more", Severity::Error)]
    );
    assert_eq!(
        kinds(
            ledger_auth("open", 1000, 400, 100),
            snapshot("requires_capture", 500, 500)
        ),
        vec![("capture_in_progress", Severity::Info)]
    );
    assert_eq!(
        kinds(
            ledger_auth("closed", 1000, 400, 0),
            snapshot("requires_capture", 400, 600)
        ),
        vec![("not_released", Severity::Error)]
    );
    assert_eq!(
        kinds(
            ledger_auth("open", 1000, 400, 200),
            snapshot("canceled", 400, 0)
        ),
        vec![("released_early", Severity::Error)]
    );
    assert_eq!(
        kinds(
            ledger_auth("open", 1000, 400, 500),
            snapshot("requires_capture", 400, 300)
        ),
        vec![("capturable_short", Severity::Error)]
    );
    assert_eq!(
        kinds(
            ledger_auth("superseded", 1000, 400, 0),
            snapshot("requires_capture", 400, 600)
        ),
        vec![("still_held", Severity::Info)]
    );
}

#[tokio::test]
async fn provider_reconcile_lists_the_differences_and_never_moves_money() {
    let app = TestApp::spawn().await;
    // ORD-A completes and agrees; ORD-B is captured behind the ledger's back; ORD-C is declined
    // and its authorization still holds funds; ORD-H's authorization is unknown to the provider.
    app.authorize("pi_a", 1000, "USD", None);
    app.authorize("pi_b", 3000, "USD", None);
    app.authorize(
        "pi_c",
        2000,
        "USD",
        Some(Scenario {
            decline_on_capture: Some(1),
            ..Scenario::default()
        }),
    );
    app.publish(&[
        order_msg("ORD-A", "pi_a", "USD", &[("A1", 1, 1000, 0)], 0, 1000, None),
        order_msg("ORD-B", "pi_b", "USD", &[("B1", 3, 1000, 0)], 0, 3000, None),
        order_msg("ORD-C", "pi_c", "USD", &[("C1", 2, 1000, 0)], 0, 2000, None),
        order_msg("ORD-H", "pi_h", "USD", &[("H1", 1, 500, 0)], 0, 500, None),
    ])
    .await;
    app.wait_count("select count(*) from orders", 4).await;
    app.publish(&[
        ship_msg("ORD-A", "S1", &[("A1", 1)]),
        ship_msg("ORD-B", "S1", &[("B1", 1)]),
        ship_msg("ORD-C", "S1", &[("C1", 1)]),
    ])
    .await;
    app.wait_count(
        "select count(*) from captures where status in ('succeeded', 'declined')",
        3,
    )
    .await;
    let provider = providers(&app).get("sandbox").unwrap();
    let behind_our_back = provider
        .capture(&CaptureRequest {
            authorization_id: AuthorizationId::parse("pi_b").unwrap(),
            order_id: OrderId::parse("ORD-B").unwrap(),
            cause: "manual".into(),
            sequence: 9,
            amount: Money::new(
                MinorUnits::new(250).unwrap(),
                Currency::parse("USD").unwrap(),
            ),
            is_final: false,
            idempotency_key: IdempotencyKey::derive(
                &ProviderName::parse("sandbox").unwrap(),
                &AuthorizationId::parse("pi_b").unwrap(),
                "manual",
                0,
            ),
            lines: vec![],
        })
        .await;
    assert_eq!(behind_our_back.outcome.label(), "succeeded");
    let moved_before: Vec<(String, i64)> = ["pi_a", "pi_b", "pi_c"]
        .iter()
        .map(|id| {
            let a = app.sandbox.authorization(id).unwrap();
            (id.to_string(), a.amount_received + a.amount_capturable)
        })
        .collect();
    let posts_before = app
        .sandbox
        .ledger()
        .iter()
        .filter(|e| e.method == "POST")
        .count();

    let authorizations = sql::authorizations(
        app.store.pool(),
        &AuthorizationScope::Since(chrono::Utc::now() - chrono::Duration::hours(1)),
    )
    .await
    .unwrap();
    assert_eq!(authorizations.len(), 4);
    let mut seen = 0;
    let result = reconcile::reconcile(&providers(&app), &authorizations, |_| seen += 1).await;
    assert_eq!(seen, 4, "progress for every authorization");
    assert_eq!((result.checked, result.matched), (4, 1));
    let mut found: Vec<(&str, &str, Severity)> = result
        .differences
        .iter()
        .map(|d| (d.order_id.as_str(), d.kind, d.severity))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("ORD-B", "captured_more", Severity::Error),
            ("ORD-C", "still_held", Severity::Info),
            ("ORD-H", "lookup_failed", Severity::Warning),
        ]
    );
    let b = result
        .differences
        .iter()
        .find(|d| d.order_id == "ORD-B")
        .unwrap();
    assert_eq!(
        (
            b.ledger_captured,
            b.provider_captured,
            b.provider_capturable
        ),
        (1000, Some(1250), Some(1750))
    );

    // Nothing moved: no request other than reads, balances unchanged.
    let moved_after: Vec<(String, i64)> = ["pi_a", "pi_b", "pi_c"]
        .iter()
        .map(|id| {
            let a = app.sandbox.authorization(id).unwrap();
            (id.to_string(), a.amount_received + a.amount_capturable)
        })
        .collect();
    assert_eq!(moved_before, moved_after);
    assert_eq!(
        app.sandbox
            .ledger()
            .iter()
            .filter(|e| e.method == "POST")
            .count(),
        posts_before
    );

    let one = sql::authorizations(app.store.pool(), &AuthorizationScope::Order("ORD-A".into()))
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    let json: Value =
        serde_json::from_str(&reconcile::render(&result, OutputFormat::Json).unwrap()).unwrap();
    assert_eq!(json["differences"].as_array().unwrap().len(), 3);
    assert_eq!(
        parse_csv(&reconcile::render(&result, OutputFormat::Csv).unwrap()).len(),
        4
    );
    app.cleanup().await;
}

/// Parses RFC 4180 CSV (quoted fields, doubled quotes, CRLF) into rows of fields.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(
        !quoted && field.is_empty() && row.is_empty(),
        "CSV ends with a line break"
    );
    rows
}

/// The USD example order fully shipped, plus an order cancelled before any capture.
async fn two_orders(app: &TestApp) {
    app.authorize(AUTH, 12455, "USD", None);
    app.authorize("pi_d", 4000, "USD", None);
    let (order, s1, s2, s3) = usd_order();
    app.publish(&[
        order,
        s1,
        s2,
        s3,
        order_msg("ORD-D", "pi_d", "USD", &[("D1", 2, 2000, 0)], 0, 4000, None),
    ])
    .await;
    app.wait_count("select count(*) from orders", 2).await;
    app.publish(&[cancel_msg("ORD-D", "ORD-D-cancel", &[("D1", 2)])])
        .await;
    app.wait_settled(ORDER, 3).await;
    app.wait_settled("ORD-D", 1).await;
}

#[tokio::test]
async fn report_renders_a_table_and_csv_and_json_that_parse_to_the_views_figures() {
    let app = TestApp::spawn().await;
    two_orders(&app).await;
    let today = chrono::Utc::now().date_naive();
    let r = report::build(
        &app.store,
        today - chrono::Duration::days(1),
        today + chrono::Duration::days(1),
    )
    .await
    .unwrap();
    let total = &r.totals[0];
    assert_eq!(
        (
            total.authorized_amount,
            total.captured_amount,
            total.capture_count,
            total.released_amount,
            total.release_count,
            total.provider_calls
        ),
        (12455 + 4000, 12455, 3, 4000, 1, 4)
    );

    let csv = parse_csv(&report::render(&r, OutputFormat::Csv).unwrap());
    assert_eq!(csv[0], report::DAY_COLUMNS.map(str::to_owned).to_vec());
    let captured: i64 = csv[1..]
        .iter()
        .map(|row| row[5].parse::<i64>().unwrap())
        .sum();
    assert_eq!(captured, 12455);

    let json: Value =
        serde_json::from_str(&report::render(&r, OutputFormat::Json).unwrap()).unwrap();
    let days = json["days"].as_array().unwrap();
    assert_eq!(days.len(), csv.len() - 1);
    assert_eq!(
        days.iter()
            .map(|d| d["released_amount"].as_i64().unwrap())
            .sum::<i64>(),
        4000
    );
    let table = report::render(&r, OutputFormat::Table).unwrap();
    assert!(
        table.contains("Totals") && table.contains("16455"),
        "{table}"
    );
    app.cleanup().await;
}

/// Runs the binary against the test's database, broker and sandbox. On a blocking thread, so
/// that the test's runtime keeps serving the sandbox and the worker meanwhile.
pub(crate) async fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    cli_with(app, args, &[]).await
}

/// [`cli`] with more environment variables (later ones win).
pub(crate) async fn cli_with(
    app: &TestApp,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let sandbox = app.settings.providers["sandbox"].base_url.clone();
    let mut command = Command::new(env!("CARGO_BIN_EXE_capture-worker"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CAPTURE__DATABASE__URL", app.settings.database.url.expose())
        .env("CAPTURE__AMQP__EXCHANGE", &app.settings.amqp.exchange)
        .env("CAPTURE__AMQP__QUEUE", &app.settings.amqp.queue)
        .env("CAPTURE__SANDBOX__EMBEDDED", "false")
        .env("CAPTURE__PROVIDERS__SANDBOX__BASE_URL", sandbox)
        .env("CAPTURE__PROVIDERS__SANDBOX__API_KEY", "sk_test_canary_key")
        .env("CAPTURE__TELEMETRY__LOG_LEVEL", "warn")
        .envs(env.iter().copied());
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn stdout_json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn every_operator_command_runs_from_the_binary() {
    let app = TestApp::spawn().await;
    two_orders(&app).await;
    app.publish_raw("shipment.shipped", b"{not json").await;
    app.wait_count("select count(*) from rejected_messages", 1)
        .await;
    let today = chrono::Utc::now().date_naive().to_string();

    let report = stdout_json(&cli(&app, &["report", "--from", &today, "--format", "json"]).await);
    assert_eq!(report["totals"][0]["captured_amount"], json!(12455));
    let out = cli(&app, &["report", "--from", &today, "--format", "csv"]).await;
    assert!(out.status.success());
    let rows = parse_csv(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(rows[0][0], "day");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "no progress drawn when stderr is not a terminal: {stderr:?}"
    );
    let out = cli(&app, &["report", "--from", &today]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("Totals"));

    let story = stdout_json(&cli(&app, &["order", "show", ORDER, "--format", "json"]).await);
    assert_eq!(story["order"]["status"], json!("completed"));
    assert!(story["history"].as_array().unwrap().len() >= 10);
    let out = cli(&app, &["order", "show", ORDER]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("provider_call"));

    let listed = stdout_json(&cli(&app, &["dead-letter", "list", "--format", "json"]).await);
    assert_eq!(listed[0]["reason"], json!("malformed"));
    let id = listed[0]["rejection_id"].as_i64().unwrap().to_string();
    let out = cli(&app, &["dead-letter", "requeue", &id]).await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("requeued"));
    // The malformed bytes are refused again, as a new refusal.
    app.wait_count("select count(*) from rejected_messages", 2)
        .await;
    let out = cli(
        &app,
        &[
            "dead-letter",
            "requeue",
            "--all",
            "--reason",
            "nothing_like_this",
        ],
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to requeue"));

    let reconciled = stdout_json(
        &cli(
            &app,
            &[
                "provider",
                "reconcile",
                "--order",
                ORDER,
                "--format",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(
        (reconciled["checked"].clone(), reconciled["matched"].clone()),
        (json!(1), json!(1)),
        "{reconciled}"
    );
    let out = cli(&app, &["provider", "reconcile"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 authorizations checked"));

    let out = cli(&app, &["capture", "retry", "987654"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no capture 987654"));
    let out = cli(
        &app,
        &[
            "order",
            "resume",
            ORDER,
            "--authorization",
            "pi_new",
            "--amount",
            "100",
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not stopped by a decline"));
    app.cleanup().await;
}

#[tokio::test]
async fn capture_retry_and_order_resume_run_from_the_binary() {
    let app = TestApp::spawn().await;
    app.authorize(
        AUTH,
        12455,
        "USD",
        Some(Scenario {
            decline_on_capture: Some(1),
            ..Scenario::default()
        }),
    );
    let (order, s1, _, _) = usd_order();
    app.publish(&[order, s1]).await;
    app.wait_settled(ORDER, 1).await;
    app.authorize("pi_new", 5182, "USD", None);
    let out = cli(
        &app,
        &[
            "order",
            "resume",
            ORDER,
            "--authorization",
            "pi_new",
            "--amount",
            "5182",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("resumed on authorization pi_new"));
    app.wait_settled(ORDER, 2).await;
    assert_eq!(
        app.sandbox.authorization("pi_new").unwrap().amount_received,
        5182
    );

    // A capture that needs attention (its authorization is unknown), retried once it exists.
    app.publish(&[order_msg(
        "ORD-H",
        "pi_h",
        "USD",
        &[("H1", 1, 500, 0)],
        0,
        500,
        None,
    )])
    .await;
    app.wait_count("select count(*) from orders", 2).await;
    app.publish(&[ship_msg("ORD-H", "S1", &[("H1", 1)])]).await;
    app.wait_count(
        "select count(*) from captures where status = 'attention'",
        1,
    )
    .await;
    app.authorize("pi_h", 500, "USD", None);
    let id = capture_id(&app, "ORD-H", 1).await.to_string();
    let out = cli(&app, &["capture", "retry", &id, "--read-back"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.wait_settled("ORD-H", 1).await;
    assert_eq!(app.captures("ORD-H").await[0].4, "succeeded");
    app.cleanup().await;
}

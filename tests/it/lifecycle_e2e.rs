//! The lifecycle sweep end to end: real worker, RabbitMQ, PostgreSQL (as the least-privileged
//! `capture_worker_app`) and the sandbox dialects over HTTP. The sweep takes the time as an
//! argument (`run_once_at`), so a hold's days pass without sleeping.

use capture_worker::app::lifecycle::LifecycleSweep;
use capture_worker::app::providers::Providers;
use capture_worker::domain::ShippingPolicy;
use capture_worker::domain::lifecycle::{Action, LifecycleSettings, Reason};
use capture_worker::sandbox::{NewAuthorization, Scenario};
use chrono::{DateTime, Duration, Utc};

use crate::harness::*;
use crate::providers_e2e::order_on;

fn sweep(app: &TestApp, settings: LifecycleSettings) -> LifecycleSweep {
    LifecycleSweep {
        store: app.worker_store().clone(),
        providers: Providers::from_settings(&app.settings).unwrap(),
        shipping: ShippingPolicy::default(),
        settings,
        executor: None,
    }
}

fn settings() -> LifecycleSettings {
    LifecycleSettings {
        idle_release_after: None,
        ..LifecycleSettings::default()
    }
}

async fn authorized_at(app: &TestApp, order_id: &str) -> DateTime<Utc> {
    sqlx::query_scalar("select authorized_at from orders where order_id = $1")
        .bind(order_id)
        .fetch_one(app.store.pool())
        .await
        .unwrap()
}

/// Publishes an order's registration and waits for the ledger to hold it; returns when its
/// authorization was taken, where the sweeps' clock starts.
async fn register(app: &TestApp, order: serde_json::Value, order_id: &str) -> DateTime<Utc> {
    app.publish(&[order]).await;
    let pool = app.store.pool().clone();
    eventually(std::time::Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from orders where order_id = $1")
                .bind(order_id)
                .fetch_one(&pool)
                .await
                .unwrap()
                == 1
        }
    })
    .await;
    authorized_at(app, order_id).await
}

/// (action, reason, status, new authorization id) of the order's lifecycle actions.
async fn actions(app: &TestApp, order_id: &str) -> Vec<(String, String, String, Option<String>)> {
    sqlx::query_as(
        "select action, reason, status, new_authorization_id from lifecycle_actions
         where order_id = $1 order by sequence",
    )
    .bind(order_id)
    .fetch_all(app.store.pool())
    .await
    .unwrap()
}

/// Rewinds an order's answered lifecycle action to `status` with no answer recorded, and the
/// order's hold to `authorized`: as if the worker had stopped before recording the answer.
async fn rewind_increment(app: &TestApp, order_id: &str, status: &str, authorized: i64) {
    sqlx::query(
        "update lifecycle_actions set status = $2, finished_at = null, new_amount = null,
         new_expires_at = null where order_id = $1",
    )
    .bind(order_id)
    .bind(status)
    .execute(app.store.pool())
    .await
    .unwrap();
    sqlx::query("update orders set authorized_amount = $2 where order_id = $1")
        .bind(order_id)
        .bind(authorized)
        .execute(app.store.pool())
        .await
        .unwrap();
}

async fn lifecycle_calls(app: &TestApp, auth: &str, suffix: &str) -> usize {
    app.sandbox
        .ledger_for(auth)
        .iter()
        .filter(|e| e.method == "POST" && e.path.ends_with(suffix))
        .count()
}

#[tokio::test]
async fn a_paypal_order_whose_honor_period_runs_out_is_reauthorized_and_then_captured_in_full() {
    let mut app = TestApp::spawn_with_dialects(|_| {}).await;
    app.start_worker().await;
    let auth = "PPLIFECYCLE0001";
    let (order, s1, s2, s3) = order_on("paypal", "ORD-PP-LC", auth, 12455);
    app.authorize_with(NewAuthorization::new(auth, 12455, "USD"));
    app.publish(&[order, s1]).await;
    app.wait_settled("ORD-PP-LC", 1).await;

    let start = authorized_at(&app, "ORD-PP-LC").await;
    let sweep = sweep(&app, settings());
    // Within the honor period nothing is done.
    assert!(
        sweep
            .run_once_at(start + Duration::days(1))
            .await
            .unwrap()
            .is_empty()
    );
    // Past it, with two parcels still to ship: reauthorized, once.
    let swept = sweep
        .run_once_at(start + Duration::days(3) + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].decision.action, Action::Extend);
    assert_eq!(swept[0].decision.reason, Reason::GuaranteeEnding);
    assert_eq!(swept[0].outcome, Some("succeeded"));
    let rows = actions(&app, "ORD-PP-LC").await;
    let new_auth = rows[0].3.clone().expect("the reauthorization's new id");
    assert_eq!(rows[0].2, "succeeded");
    let on_order: String =
        sqlx::query_scalar("select authorization_id from orders where order_id = 'ORD-PP-LC'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(on_order, new_auth);
    let again = sweep
        .run_once_at(start + Duration::days(3) + Duration::hours(2))
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(lifecycle_calls(&app, auth, "/reauthorize").await, 1);

    // The rest ships and is captured from the new authorization, in full.
    app.publish(&[s2, s3]).await;
    app.wait_settled("ORD-PP-LC", 3).await;
    let total: i64 = app.captures("ORD-PP-LC").await.iter().map(|c| c.2).sum();
    assert_eq!(total, 12455);
    let new = app.sandbox.authorization(&new_auth).unwrap();
    assert_eq!(new.amount_received, 2890 + 4383);
    assert_eq!(
        app.sandbox.authorization(auth).unwrap().amount_received,
        5182
    );
    app.cleanup().await;
}

#[tokio::test]
async fn an_order_whose_parcels_exceed_the_hold_is_incremented_on_checkout_and_captured_in_full() {
    let mut app = TestApp::spawn_with_dialects(|_| {}).await;
    app.start_worker().await;
    let auth = "pay_lifecycle_inc_0001";
    // Checkout authorized 100.00 of a 124.55 order (edited after checkout).
    let (order, s1, s2, s3) = order_on("checkout", "ORD-CKO-LC", auth, 10_000);
    app.authorize_with(NewAuthorization::new(auth, 10_000, "USD"));
    let start = register(&app, order, "ORD-CKO-LC").await;
    let swept = sweep(&app, settings())
        .run_once_at(start + Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!(
        swept[0].decision.action,
        Action::Increment {
            by: capture_worker::domain::MinorUnits::new(2455).unwrap()
        }
    );
    assert_eq!(swept[0].outcome, Some("succeeded"));
    let authorized: i64 =
        sqlx::query_scalar("select authorized_amount from orders where order_id = 'ORD-CKO-LC'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(authorized, 12455);
    assert_eq!(app.sandbox.authorization(auth).unwrap().amount, 12455);

    app.publish(&[s1, s2, s3]).await;
    app.wait_settled("ORD-CKO-LC", 3).await;
    let captures = app.captures("ORD-CKO-LC").await;
    assert_eq!(captures.iter().map(|c| c.2).sum::<i64>(), 12455);
    let shortfall: i64 =
        sqlx::query_scalar("select shortfall_amount from orders where order_id = 'ORD-CKO-LC'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(shortfall, 0);
    // Finance sees the increment on the authorization.
    let (increments, incremented, authorized): (i64, i64, i64) = sqlx::query_as(
        "select increments, incremented_amount, authorized_amount
         from reconciliation_authorizations where order_id = 'ORD-CKO-LC'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!((increments, incremented, authorized), (1, 2455, 12455));
    // `order show` has a line for it.
    let story = capture_worker::app::operator::orders::story(&app.store, "ORD-CKO-LC")
        .await
        .unwrap();
    let text = capture_worker::app::operator::orders::render_story(
        &story,
        capture_worker::app::operator::orders::StoryFormat::Text,
    )
    .unwrap();
    assert!(
        text.contains("increment #1 (shortfall) on checkout/pay_lifecycle_inc_0001 · 10000 + 2455 USD → succeeded · authorized 12455"),
        "{text}"
    );
    app.cleanup().await;
}

/// An Adyen order registered with `scenario`, and its `expires_at`.
async fn adyen_order(
    app: &TestApp,
    order_id: &str,
    auth: &str,
    scenario: Scenario,
) -> DateTime<Utc> {
    let (order, _, _, _) = order_on("adyen", order_id, auth, 12455);
    app.authorize_with(NewAuthorization {
        scenario: Some(scenario),
        ..NewAuthorization::new(auth, 12455, "USD")
    });
    app.publish(&[order]).await;
    let pool = app.store.pool().clone();
    let id = order_id.to_owned();
    eventually(std::time::Duration::from_secs(20), || {
        let pool = pool.clone();
        let id = id.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from orders where order_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
                == 1
        }
    })
    .await;
    sqlx::query_scalar("select authorization_expires_at from orders where order_id = $1")
        .bind(order_id)
        .fetch_one(app.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn an_adyen_hold_is_extended_before_it_lapses_and_its_notification_settles_it() {
    let mut app = TestApp::spawn_with_dialects(|_| {}).await;
    app.start_worker().await;
    let auth = "ADYENLIFECYCLE01";
    let expires = adyen_order(&app, "ORD-ADY-LC", auth, Scenario::default()).await;
    let sweep = sweep(&app, settings());
    assert!(
        sweep
            .run_once_at(expires - Duration::days(2))
            .await
            .unwrap()
            .is_empty()
    );
    let swept = sweep
        .run_once_at(expires - Duration::hours(20))
        .await
        .unwrap();
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!(swept[0].decision.action, Action::Extend);
    assert_eq!(swept[0].decision.reason, Reason::Expiring);
    // Adyen answers `received`; the outcome is its AUTHORISATION_ADJUSTMENT notification,
    // which the sandbox posts to the worker's webhook.
    assert_eq!(swept[0].outcome, Some("pending"));
    assert_eq!(lifecycle_calls(&app, auth, "/amountUpdates").await, 1);
    app.wait_count(
        "select count(*) from lifecycle_actions where order_id = 'ORD-ADY-LC' and status = 'succeeded' and new_expires_at is not null",
        1,
    )
    .await;
    let (now_expires, extensions): (DateTime<Utc>, i64) = sqlx::query_as(
        "select o.authorization_expires_at, r.extensions from orders o
         join reconciliation_authorizations r on r.order_id = o.order_id
         where o.order_id = 'ORD-ADY-LC'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert!(now_expires > expires, "{now_expires} after {expires}");
    assert_eq!(extensions, 1);
    app.cleanup().await;
}

#[tokio::test]
async fn an_adyen_adjustment_not_settled_yet_is_not_asked_again() {
    let mut app = TestApp::spawn_with_dialects(|_| {}).await;
    app.start_worker().await;
    let auth = "ADYENLIFECYCLE02";
    // The notification is lost: the action stays pending.
    let silent = Scenario {
        silent: true,
        ..Scenario::default()
    };
    let expires = adyen_order(&app, "ORD-ADY-LC2", auth, silent).await;
    let sweep = sweep(&app, settings());
    let swept = sweep
        .run_once_at(expires - Duration::hours(20))
        .await
        .unwrap();
    assert_eq!(swept[0].outcome, Some("pending"));
    assert!(
        sweep
            .run_once_at(expires - Duration::hours(19))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(lifecycle_calls(&app, auth, "/amountUpdates").await, 1);
    let rows = actions(&app, "ORD-ADY-LC2").await;
    assert_eq!(
        (rows[0].0.as_str(), rows[0].2.as_str()),
        ("extend", "pending")
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_stripe_hold_that_cannot_be_extended_is_left_to_the_expiry_sweep() {
    let mut app = TestApp::spawn_with_dialects(|_| {}).await;
    app.start_worker().await;
    let auth = "pi_lifecycle_noext_01";
    let (order, s1, _, _) = order_on("sandbox", "ORD-STR-LC", auth, 12455);
    app.authorize_with(NewAuthorization::new(auth, 12455, "USD"));
    app.publish(&[order, s1]).await;
    app.wait_settled("ORD-STR-LC", 1).await;
    let expires: DateTime<Utc> = sqlx::query_scalar(
        "select authorization_expires_at from orders where order_id = 'ORD-STR-LC'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    let swept = sweep(&app, settings())
        .run_once_at(expires - Duration::hours(6))
        .await
        .unwrap();
    assert!(swept.is_empty(), "{swept:?}");
    assert_eq!(
        lifecycle_calls(&app, auth, "/increment_authorization").await,
        0
    );
    assert!(actions(&app, "ORD-STR-LC").await.is_empty());
    app.cleanup().await;
}

#[tokio::test]
async fn an_untouched_hold_is_released_after_the_configured_time_and_shows_as_an_exception() {
    let mut app = TestApp::spawn_with_dialects(|_| {}).await;
    app.start_worker().await;
    let auth = "pi_lifecycle_idle_01";
    let (order, _, _, _) = order_on("sandbox", "ORD-IDLE-LC", auth, 12455);
    app.authorize_with(NewAuthorization {
        scenario: Some(Scenario::default()),
        ..NewAuthorization::new(auth, 12455, "USD")
    });
    let start = register(&app, order, "ORD-IDLE-LC").await;
    let sweep = sweep(
        &app,
        LifecycleSettings {
            idle_release_after: Some(Duration::days(3)),
            ..LifecycleSettings::default()
        },
    );
    assert!(
        sweep
            .run_once_at(start + Duration::days(2))
            .await
            .unwrap()
            .is_empty()
    );
    let swept = sweep.run_once_at(start + Duration::days(3)).await.unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].decision.action, Action::ReleaseRemainder);
    assert_eq!(swept[0].decision.reason, Reason::Untouched);
    assert_eq!(swept[0].outcome, Some("planned"));
    // The void is sent by the worker, once; the order is closed.
    app.wait_settled("ORD-IDLE-LC", 1).await;
    assert_eq!(
        app.captures("ORD-IDLE-LC").await,
        vec![(1, "void".to_owned(), 0, true, "succeeded".to_owned())]
    );
    assert_eq!(
        app.sandbox.authorization(auth).unwrap().status,
        capture_worker::sandbox::Status::Canceled
    );
    // Never silently: a row in the exceptions view, worth the whole hold.
    let (kind, amount, reason): (String, i64, String) = sqlx::query_as(
        "select kind, amount, reason from reconciliation_exceptions where order_id = 'ORD-IDLE-LC'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        (kind.as_str(), amount, reason.as_str()),
        ("authorization_released", 12455, "untouched-1")
    );
    assert!(
        sweep
            .run_once_at(start + Duration::days(4))
            .await
            .unwrap()
            .is_empty()
    );
    app.cleanup().await;
}

#[tokio::test]
async fn an_increment_left_unanswered_by_a_stopped_worker_is_resent_under_its_key_and_applied_once()
{
    let mut app = TestApp::spawn_with_dialects(|_| {}).await;
    app.start_worker().await;
    let auth = "pi_lifecycle_crash_01";
    let (order, _, _, _) = order_on("sandbox", "ORD-CRASH-LC", auth, 10_000);
    app.authorize_with(NewAuthorization::new(auth, 10_000, "USD"));
    let start = register(&app, order, "ORD-CRASH-LC").await;
    let sweep = sweep(&app, settings());
    // The first pass increments; then the worker "dies" before recording the answer: the row
    // goes back to `planned`, the order to its old amount, as after a crash mid-call.
    let swept = sweep
        .run_once_at(start + Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(swept[0].outcome, Some("succeeded"));
    rewind_increment(&app, "ORD-CRASH-LC", "planned", 10000).await;
    // The next pass resends the same key: Stripe replays the answer, nothing is applied twice.
    let swept = sweep
        .run_once_at(start + Duration::minutes(6))
        .await
        .unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].outcome, Some("succeeded"));
    let calls: Vec<String> = app
        .sandbox
        .ledger_for(auth)
        .iter()
        .filter(|e| e.path.ends_with("/increment_authorization"))
        .map(|e| format!("{:?}", e.outcome))
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(app.sandbox.authorization(auth).unwrap().amount, 12455);
    assert_eq!(app.sandbox.authorization(auth).unwrap().adjustments, 1);
    let (n, authorized): (i64, i64) = sqlx::query_as(
        "select (select count(*) from lifecycle_actions where order_id = 'ORD-CRASH-LC'),
                (select authorized_amount from orders where order_id = 'ORD-CRASH-LC')",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!((n, authorized), (1, 12455));
    // Nothing more to do.
    assert!(
        sweep
            .run_once_at(start + Duration::minutes(7))
            .await
            .unwrap()
            .is_empty()
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_checkout_increment_whose_answer_was_lost_is_read_back_not_sent_again() {
    let mut app = TestApp::spawn_with_dialects(|_| {}).await;
    app.start_worker().await;
    let auth = "pay_lifecycle_lost_0001";
    let (order, _, _, _) = order_on("checkout", "ORD-LOST-LC", auth, 10_000);
    app.authorize_with(NewAuthorization::new(auth, 10_000, "USD"));
    let start = register(&app, order, "ORD-LOST-LC").await;
    let sweep = sweep(&app, settings());
    let swept = sweep
        .run_once_at(start + Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(swept[0].outcome, Some("succeeded"));
    // As if Checkout.com had answered 5xx after applying it (it keeps no answer for a 5xx, so
    // a resend under the key would increment again).
    rewind_increment(&app, "ORD-LOST-LC", "unknown", 10000).await;
    let swept = sweep
        .run_once_at(start + Duration::minutes(6))
        .await
        .unwrap();
    assert_eq!(swept[0].outcome, Some("succeeded"));
    assert_eq!(lifecycle_calls(&app, auth, "/authorizations").await, 1);
    assert_eq!(app.sandbox.authorization(auth).unwrap().amount, 12455);
    let authorized: i64 =
        sqlx::query_scalar("select authorized_amount from orders where order_id = 'ORD-LOST-LC'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(authorized, 12455);
    app.cleanup().await;
}

#[tokio::test]
async fn a_pass_that_reads_the_order_before_another_worker_records_its_increment_does_not_increment_again()
 {
    let mut app = TestApp::spawn_with_dialects(|_| {}).await;
    app.start_worker().await;
    let auth = "pay_lifecycle_race_0001";
    let (order, _, _, _) = order_on("checkout", "ORD-RACE-LC", auth, 10_000);
    app.authorize_with(NewAuthorization::new(auth, 10_000, "USD"));
    let start = register(&app, order, "ORD-RACE-LC").await;
    let sweep = sweep(&app, settings());
    // Worker A's pass: Checkout.com applies the increment of 2455…
    let swept = sweep
        .run_once_at(start + Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(swept[0].outcome, Some("succeeded"));
    // …and A records the answer only now (the record rewound to the moment before it).
    rewind_increment(&app, "ORD-RACE-LC", "planned", 10000).await;
    let mut record = app.store.pool().begin().await.unwrap();
    for sql in [
        // Held until the commit: worker B's pass reads the order, then waits to read the
        // hold's facts until A's record is committed.
        "lock table lifecycle_actions in access exclusive mode",
        "update lifecycle_actions set status = 'succeeded', finished_at = now(), new_amount = 12455 where order_id = 'ORD-RACE-LC'",
        "update orders set authorized_amount = 12455 where order_id = 'ORD-RACE-LC'",
    ] {
        sqlx::query(sql).execute(&mut *record).await.unwrap();
    }
    let b = tokio::spawn({
        let sweep = sweep.clone();
        async move { sweep.run_once_at(start + Duration::minutes(6)).await }
    });
    let pool = app.store.pool().clone();
    eventually(std::time::Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from pg_stat_activity
                 where wait_event_type = 'Lock' and query like '%as next_sequence%'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
                > 0
        }
    })
    .await;
    record.commit().await.unwrap();
    b.await.unwrap().unwrap();
    // B saw the order and its actions as of one instant: the increment was applied once.
    let applied = app
        .sandbox
        .ledger_for(auth)
        .iter()
        .filter(|e| {
            e.path.ends_with("/authorizations")
                && e.outcome == capture_worker::sandbox::LedgerOutcome::Adjusted
        })
        .count();
    assert_eq!(applied, 1);
    assert_eq!(app.sandbox.authorization(auth).unwrap().amount, 12455);
    let (n, authorized): (i64, i64) = sqlx::query_as(
        "select (select count(*) from lifecycle_actions where order_id = 'ORD-RACE-LC'),
                (select authorized_amount from orders where order_id = 'ORD-RACE-LC')",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!((n, authorized), (1, 12455));
    app.cleanup().await;
}

/// (amount, shortfall) of the order's captures, in order, and the order's shortfall.
async fn amounts(app: &TestApp, order_id: &str) -> (Vec<(i64, i64)>, i64) {
    let captures = sqlx::query_as(
        "select amount, shortfall_amount from captures where order_id = $1 order by sequence",
    )
    .bind(order_id)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    let shortfall = sqlx::query_scalar("select shortfall_amount from orders where order_id = $1")
        .bind(order_id)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    (captures, shortfall)
}

/// The message ids of the order's messages parked for an increment of its hold.
async fn awaiting_increment(app: &TestApp, order_id: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select message_id from inbox_messages
         where order_id = $1 and status = 'parked' and reject_reason = 'awaiting_increment'
         order by message_id",
    )
    .bind(order_id)
    .fetch_all(app.store.pool())
    .await
    .unwrap()
}

/// Waits until the order has `n` messages parked for an increment of its hold.
async fn wait_awaiting(app: &TestApp, order_id: &str, n: usize) {
    eventually(std::time::Duration::from_secs(20), || async {
        awaiting_increment(app, order_id).await.len() == n
    })
    .await;
}

#[tokio::test]
async fn a_parcel_beyond_the_hold_waits_for_an_unanswered_increment_and_is_captured_in_full() {
    let mut app = TestApp::spawn_with_dialects(|_| {}).await;
    app.start_worker().await;
    let auth = "pi_lifecycle_wait_01";
    // Authorized 100.00 of a 124.55 order.
    let (order, s1, s2, s3) = order_on("sandbox", "ORD-WAIT-LC", auth, 10_000);
    app.authorize_with(NewAuthorization::new(auth, 10_000, "USD"));
    let start = register(&app, order, "ORD-WAIT-LC").await;
    let sweep = sweep(&app, settings());
    // The increment of 2455 is asked; its answer is not recorded (a worker stopped mid-call):
    // the row is `planned`, the order holds 100.00.
    let swept = sweep
        .run_once_at(start + Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(swept[0].outcome, Some("succeeded"));
    rewind_increment(&app, "ORD-WAIT-LC", "planned", 10000).await;

    // Parcels that fit in the hold are captured at once, the increment unanswered.
    app.publish(&[s1]).await;
    app.wait_settled("ORD-WAIT-LC", 1).await;
    app.publish(&[s2]).await;
    app.wait_settled("ORD-WAIT-LC", 2).await;
    assert_eq!(
        amounts(&app, "ORD-WAIT-LC").await,
        (vec![(5182, 0), (2890, 0)], 0)
    );
    // The last one exceeds it: it waits instead of being cut.
    app.publish(&[s3]).await;
    wait_awaiting(&app, "ORD-WAIT-LC", 1).await;
    assert_eq!(app.captures("ORD-WAIT-LC").await.len(), 2);
    // `order show` says what it waits for.
    let story = capture_worker::app::operator::orders::story(&app.store, "ORD-WAIT-LC")
        .await
        .unwrap();
    let text = capture_worker::app::operator::orders::render_story(
        &story,
        capture_worker::app::operator::orders::StoryFormat::Text,
    )
    .unwrap();
    assert!(
        text.contains("waits for the answer to an increment of the hold (until "),
        "{text}"
    );

    // The increment is answered (resent under its key): the parcel is captured in full.
    let swept = sweep
        .run_once_at(start + Duration::minutes(6))
        .await
        .unwrap();
    assert_eq!(swept[0].outcome, Some("succeeded"));
    app.wait_settled("ORD-WAIT-LC", 3).await;
    assert_eq!(
        amounts(&app, "ORD-WAIT-LC").await,
        (vec![(5182, 0), (2890, 0), (4383, 0)], 0)
    );
    assert!(awaiting_increment(&app, "ORD-WAIT-LC").await.is_empty());
    assert_eq!(
        app.sandbox.authorization(auth).unwrap().amount_received,
        12455
    );
    app.assert_keys_sound();
    app.cleanup().await;
}

#[tokio::test]
async fn a_parcel_waiting_for_an_increment_that_is_refused_is_captured_up_to_the_hold() {
    let mut app = TestApp::spawn_with_dialects(|_| {}).await;
    app.start_worker().await;
    let auth = "pi_lifecycle_wait_02";
    let (order, s1, s2, s3) = order_on("sandbox", "ORD-WAITNO-LC", auth, 10_000);
    app.authorize_with(NewAuthorization::new(auth, 10_000, "USD"));
    app.publish(&[order]).await;
    app.wait_count(
        "select count(*) from orders where order_id = 'ORD-WAITNO-LC'",
        1,
    )
    .await;
    app.publish(&[s1]).await;
    app.wait_settled("ORD-WAITNO-LC", 1).await;
    let start = authorized_at(&app, "ORD-WAITNO-LC").await;
    // An increment planned and not sent yet (its worker stopped before the call). The
    // provider increments only a hold nothing was captured from: it will refuse it.
    sqlx::query(
        "insert into lifecycle_actions (order_id, sequence, provider, authorization_id, action,
             reason, currency, authorized_before, increase, idempotency_key, status, planned_at)
         values ('ORD-WAITNO-LC', 1, 'sandbox', $1, 'increment', 'shortfall', 'USD', 10000,
                 2455, 'cw1-' || repeat('ab', 24), 'planned', now())",
    )
    .bind(auth)
    .execute(app.store.pool())
    .await
    .unwrap();
    // What fits is captured at once; what exceeds the hold waits.
    app.publish(&[s2]).await;
    app.wait_settled("ORD-WAITNO-LC", 2).await;
    app.publish(&[s3]).await;
    wait_awaiting(&app, "ORD-WAITNO-LC", 1).await;
    assert_eq!(app.captures("ORD-WAITNO-LC").await.len(), 2);

    let swept = sweep(&app, settings())
        .run_once_at(start + Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_ne!(swept[0].outcome, Some("succeeded"));
    let rows = actions(&app, "ORD-WAITNO-LC").await;
    assert!(rows[0].2 == "declined" || rows[0].2 == "failed", "{rows:?}");
    // Planned against the hold as it is: up to it, the rest recorded as shortfall.
    app.wait_settled("ORD-WAITNO-LC", 3).await;
    assert_eq!(
        amounts(&app, "ORD-WAITNO-LC").await,
        (vec![(5182, 0), (2890, 0), (1928, 2455)], 2455)
    );
    assert!(awaiting_increment(&app, "ORD-WAITNO-LC").await.is_empty());
    app.cleanup().await;
}

#[tokio::test]
async fn a_parcel_waits_for_an_unanswered_increment_no_longer_than_the_parking_time() {
    let mut app = TestApp::spawn_with_dialects(|s| s.capture.parking_seconds = 1).await;
    app.start_worker().await;
    let auth = "pi_lifecycle_wait_03";
    let (order, s1, s2, s3) = order_on("sandbox", "ORD-WAITEND-LC", auth, 10_000);
    app.authorize_with(NewAuthorization::new(auth, 10_000, "USD"));
    // The order first: with a parking time of a second, a parcel that overtook it could
    // expire before it arrives.
    app.publish(&[order]).await;
    app.wait_count(
        "select count(*) from orders where order_id = 'ORD-WAITEND-LC'",
        1,
    )
    .await;
    app.publish(&[s1]).await;
    app.wait_settled("ORD-WAITEND-LC", 1).await;
    app.publish(&[s2]).await;
    app.wait_settled("ORD-WAITEND-LC", 2).await;
    sqlx::query(
        "insert into lifecycle_actions (order_id, sequence, provider, authorization_id, action,
             reason, currency, authorized_before, increase, idempotency_key, status, planned_at)
         values ('ORD-WAITEND-LC', 1, 'sandbox', $1, 'increment', 'shortfall', 'USD', 10000,
                 2455, 'cw1-' || repeat('cd', 24), 'unknown', now())",
    )
    .bind(auth)
    .execute(app.store.pool())
    .await
    .unwrap();
    app.publish(&[s3]).await;
    // The answer never comes: after the parking time the parcel is planned as without the
    // increment, and nothing is dead-lettered.
    app.wait_settled("ORD-WAITEND-LC", 3).await;
    assert_eq!(
        amounts(&app, "ORD-WAITEND-LC").await,
        (vec![(5182, 0), (2890, 0), (1928, 2455)], 2455)
    );
    let (parked, rejected): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where status = 'parked'),
                (select count(*) from rejected_messages where order_id = 'ORD-WAITEND-LC')
         from inbox_messages where order_id = 'ORD-WAITEND-LC'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!((parked, rejected), (0, 0));
    // It was planned when its wait ended, not when it arrived.
    let waited: f64 = sqlx::query_scalar(
        "select extract(epoch from s.created_at - i.received_at)::float8
         from shipments s join inbox_messages i on i.message_id = s.message_id
         where s.order_id = 'ORD-WAITEND-LC' order by s.created_at desc limit 1",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert!(waited >= 0.9, "planned {waited}s after it arrived");
    app.cleanup().await;
}

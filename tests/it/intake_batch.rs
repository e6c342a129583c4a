//! Batched intake: several deliveries in one transaction store exactly what they would store
//! one at a time, keep each order's messages in delivery order, and a bad or failing message
//! never takes its batch down.

use std::sync::Arc;
use std::time::Duration;

use capture_worker::app::execute::{Executor, WorkReceiver};
use capture_worker::app::intake::{Intake, IntakeOutcome};
use capture_worker::app::providers::Providers;
use capture_worker::app::retry::RetryPolicy;
use capture_worker::domain::{AuthorizationId, IdempotencyKey, ProviderName};
use capture_worker::queue::consumer::IncomingMessage;
use capture_worker::storage::Store;
use serde_json::{Value, json};

use crate::harness::*;

fn intake(store: &Store) -> Intake {
    let settings = test_settings("unused", "unused", "http://127.0.0.1:9");
    let providers = Providers::from_settings(&settings).unwrap();
    Intake::new(store.clone(), Arc::new(providers), Default::default(), 3600)
}

fn incoming(m: &Value) -> IncomingMessage {
    IncomingMessage {
        body: serde_json::to_vec(m).unwrap(),
        routing_key: m["type"].as_str().unwrap_or("shipment.shipped").into(),
        traceparent: m["message_id"]
            .as_str()
            .filter(|id| id.ends_with("-s2"))
            .map(|_| "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
        tracestate: None,
        redelivered: false,
    }
}

/// The USD example order (three parcels, the last final) under a new order and authorization.
fn usd_order_as(n: usize) -> Vec<Value> {
    let (order, s1, s2, s3) = usd_order();
    let oid = format!("ORD-B{n}");
    [order, s1, s2, s3]
        .into_iter()
        .enumerate()
        .map(|(j, base)| {
            let suffix = if j == 0 {
                "order".to_owned()
            } else {
                format!("s{j}")
            };
            let mut m = with_id(&base, &format!("{oid}-{suffix}"));
            m["data"]["order_id"] = json!(oid);
            if j == 0 {
                m["data"]["payment"]["authorization_id"] = json!(format!("pi_batch_{n}"));
            }
            m
        })
        .collect()
}

/// Intake claiming for an executor of `worker` (30 s leases) that the test runs, or not.
fn claiming_intake(
    store: &Store,
    settings: &capture_worker::config::Settings,
    worker: &str,
) -> (Intake, Executor, WorkReceiver) {
    let providers = Providers::from_settings(settings).unwrap();
    let policy = RetryPolicy {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        max_attempts: 5,
        max_age: Duration::from_secs(60),
        pending_poll: Duration::from_secs(1),
    };
    let (executor, work) = Executor::new(
        store.clone(),
        providers.clone(),
        policy,
        worker.into(),
        30,
        8,
    );
    let intake = Intake::new(store.clone(), Arc::new(providers), Default::default(), 3600)
        .claiming_for(executor.handoff());
    (intake, executor, work)
}

/// Everything intake stores, as comparable JSON (ids and clock times left out).
async fn ledger_snapshot(store: &Store) -> String {
    let mut out = String::new();
    for sql in [
        "select order_id, sequence, kind, cause_kind, cause_id, amount, currency, is_final,
                release_after, lines, shipping_amount, shortfall_amount, idempotency_key,
                key_generation, status, traceparent
         from captures order by order_id, sequence",
        "select idempotency_key, key_generation, amount, is_final from capture_keys
         order by idempotency_key",
        "select order_id, shipment_id, message_id, items, last_shipment, shipped_at,
                shipped_value, decision
         from shipments order by order_id, shipment_id",
        "select order_id, phase, claimed_amount, shipping_charged, shortfall_amount, capture_count
         from orders order by order_id",
        "select order_id, line_id, shipped_quantity, cancelled_quantity, charged_quantity
         from order_lines order by order_id, line_no",
        "select message_id, message_type, order_id, payload_hash, status, reject_reason, body,
                routing_key, traceparent, tracestate, park_expires_at is not null as parked
         from inbox_messages order by message_id",
        "select rejection_key, message_id, reason, order_id from rejected_messages
         order by rejection_key",
    ] {
        let json: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select coalesce(json_agg(t), '[]')::text from ({sql}) t"
        )))
        .fetch_one(store.pool())
        .await
        .unwrap();
        out.push_str(&json);
        out.push('\n');
    }
    out
}

async fn drop_store(name: String, store: Store) {
    store.pool().close().await;
    drop_database(&name).await;
}

#[tokio::test]
async fn a_batch_stores_exactly_what_one_message_at_a_time_stores() {
    // Four USD orders in three parcels each, and a KWD order shipped at once as the last.
    let orders: Vec<Vec<Value>> = (0..4).map(usd_order_as).collect();
    let kwd = vec![
        dated(example("order-authorized-kwd.json")),
        example("shipment-shipped-kwd-last.json"),
    ];
    let registrations: Vec<Value> = orders.iter().chain([&kwd]).map(|o| o[0].clone()).collect();
    // Parcel j of every order, as a warehouse would interleave them.
    let mut rounds: Vec<Vec<Value>> = (1..=3)
        .map(|j| orders.iter().map(|o| o[j].clone()).collect())
        .collect();
    rounds[0].push(kwd[1].clone());

    let (one_db, one_store) = fresh_database().await;
    let one = intake(&one_store);
    for m in registrations.iter().chain(rounds.iter().flatten()) {
        let out = one.handle(&incoming(m)).await.unwrap();
        assert!(matches!(out, IntakeOutcome::Processed { .. }), "{out:?}");
    }

    let (batch_db, batch_store) = fresh_database().await;
    let batched = intake(&batch_store);
    let messages: Vec<IncomingMessage> = registrations.iter().map(incoming).collect();
    for out in batched.handle_batch(&messages).await {
        assert_eq!(out.unwrap(), IntakeOutcome::Processed { dispatch: vec![] });
    }
    for round in &rounds {
        let messages: Vec<IncomingMessage> = round.iter().map(incoming).collect();
        for out in batched.handle_batch(&messages).await {
            let out = out.unwrap();
            match out {
                IntakeOutcome::Processed { dispatch } => assert_eq!(dispatch.len(), 1),
                other => panic!("expected processed, got {other:?}"),
            }
        }
    }

    assert_eq!(
        ledger_snapshot(&one_store).await,
        ledger_snapshot(&batch_store).await
    );
    let captures: i64 = sqlx::query_scalar("select count(*) from captures")
        .fetch_one(batch_store.pool())
        .await
        .unwrap();
    assert_eq!(captures, 4 * 3 + 1);
    // …and each round was one transaction (one `now()`), not one per message.
    let transactions: i64 = sqlx::query_scalar(
        "select count(distinct created_at) from shipments where shipment_id = 'S2'",
    )
    .fetch_one(batch_store.pool())
    .await
    .unwrap();
    assert_eq!(transactions, 1);
    let transactions: i64 = sqlx::query_scalar("select count(distinct created_at) from orders")
        .fetch_one(batch_store.pool())
        .await
        .unwrap();
    assert_eq!(transactions, 1);
    drop_store(one_db, one_store).await;
    drop_store(batch_db, batch_store).await;
}

#[tokio::test]
async fn a_bad_message_in_a_batch_is_refused_alone_and_the_rest_commit() {
    let (db, store) = fresh_database().await;
    let intake = intake(&store);
    let a = usd_order_as(1);
    let b = usd_order_as(2);
    let unknown = usd_order_as(3); // never registered
    for m in [&a[0], &b[0]] {
        intake.handle(&incoming(m)).await.unwrap();
    }
    intake.handle(&incoming(&b[1])).await.unwrap();
    let mut over_shipped = with_id(&a[2], "ORD-B1-too-many");
    over_shipped["data"]["shipment_id"] = json!("S9");
    over_shipped["data"]["items"] = json!([{"line_id": "L3", "quantity": 5}]);
    let malformed = IncomingMessage {
        body: b"{not json".to_vec(),
        routing_key: "shipment.shipped".into(),
        traceparent: None,
        tracestate: None,
        redelivered: false,
    };

    let batch = vec![
        malformed,
        incoming(&a[1]),
        incoming(&unknown[1]),
        incoming(&b[1]), // a redelivery of what was committed above
        incoming(&b[2]),
        incoming(&over_shipped), // the second message of order A in this batch
    ];
    let outcomes: Vec<IntakeOutcome> = intake
        .handle_batch(&batch)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    assert!(
        matches!(&outcomes[0], IntakeOutcome::Rejected { reason, .. } if reason == "malformed"),
        "{:?}",
        outcomes[0]
    );
    assert!(matches!(outcomes[1], IntakeOutcome::Processed { .. }));
    assert_eq!(outcomes[2], IntakeOutcome::Parked);
    assert_eq!(outcomes[3], IntakeOutcome::Duplicate);
    assert!(matches!(outcomes[4], IntakeOutcome::Processed { .. }));
    assert!(
        matches!(&outcomes[5], IntakeOutcome::Rejected { reason, .. } if reason == "over_shipment"),
        "{:?}",
        outcomes[5]
    );
    let captures: Vec<(String, i32)> =
        sqlx::query_as("select order_id, sequence from captures order by order_id, sequence")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        captures,
        vec![
            ("ORD-B1".to_owned(), 1),
            ("ORD-B2".to_owned(), 1),
            ("ORD-B2".to_owned(), 2)
        ]
    );
    let rejected: Vec<String> =
        sqlx::query_scalar("select reason from rejected_messages order by reason")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(rejected, vec!["malformed", "over_shipment"]);
    drop_store(db, store).await;
}

#[tokio::test]
async fn two_messages_of_one_order_in_a_batch_are_applied_in_delivery_order() {
    let (db, store) = fresh_database().await;
    let intake = intake(&store);
    let a = usd_order_as(1);
    let b = usd_order_as(2);
    for m in [&a[0], &b[0]] {
        intake.handle(&incoming(m)).await.unwrap();
    }
    // Order A's three parcels, in order, with order B's first parcel between them.
    let batch: Vec<IncomingMessage> = [&a[1], &b[1], &a[2], &a[3]]
        .into_iter()
        .map(incoming)
        .collect();
    for out in intake.handle_batch(&batch).await {
        assert!(matches!(out.unwrap(), IntakeOutcome::Processed { .. }));
    }
    let a_captures: Vec<(i32, String, i64, bool)> = sqlx::query_as(
        "select sequence, cause_id, amount, is_final from captures where order_id = 'ORD-B1'
         order by sequence",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        a_captures,
        vec![
            (1, "S1".to_owned(), 5182, false),
            (2, "S2".to_owned(), 2890, false),
            (3, "S3".to_owned(), 4383, true)
        ]
    );
    drop_store(db, store).await;
}

#[tokio::test]
async fn a_message_whose_write_fails_does_not_take_its_batch_down() {
    let (db, store) = fresh_database().await;
    let intake = intake(&store);
    let orders: Vec<Vec<Value>> = (1..=3).map(usd_order_as).collect();
    for o in &orders {
        intake.handle(&incoming(&o[0])).await.unwrap();
    }
    // A hand-made capture of order B2 already holds the idempotency key order B1's first
    // parcel derives, so storing that capture fails (a unique key, P3).
    let key = IdempotencyKey::derive(
        &ProviderName::parse("sandbox").unwrap(),
        &AuthorizationId::parse("pi_batch_1").unwrap(),
        "capture:shipment:S1",
        0,
    );
    sqlx::query(
        "insert into captures (order_id, provider, authorization_id, sequence, kind, cause_kind,
             cause_id, amount, currency, is_final, idempotency_key)
         values ('ORD-B2', 'sandbox', 'pi_batch_2', 9, 'capture', 'shipment', 'hand-made', 1,
             'USD', false, $1)",
    )
    .bind(key.as_str())
    .execute(store.pool())
    .await
    .unwrap();

    let batch: Vec<IncomingMessage> = orders.iter().map(|o| incoming(&o[1])).collect();
    let outcomes = intake.handle_batch(&batch).await;

    assert!(
        outcomes[0].is_err(),
        "the poisoned message fails and goes back to the queue: {:?}",
        outcomes[0]
    );
    assert!(matches!(outcomes[1], Ok(IntakeOutcome::Processed { .. })));
    assert!(matches!(outcomes[2], Ok(IntakeOutcome::Processed { .. })));
    let processed: Vec<String> = sqlx::query_scalar(
        "select message_id from inbox_messages where status = 'processed'
           and message_type = 'shipment.shipped' order by message_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(processed, vec!["ORD-B2-s1", "ORD-B3-s1"]);
    let b1: i64 = sqlx::query_scalar("select count(*) from shipments where order_id = 'ORD-B1'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(b1, 0, "nothing of the failed message was committed");
    drop_store(db, store).await;
}

#[tokio::test]
async fn a_registration_that_something_waits_for_or_that_conflicts_goes_one_at_a_time() {
    let (db, store) = fresh_database().await;
    let intake = intake(&store);
    let x = usd_order_as(1);
    let y = usd_order_as(2);
    // Order B3 claims order B2's authorization: the ledger refuses the second.
    let mut z = usd_order_as(3);
    z[0]["data"]["payment"]["authorization_id"] = json!("pi_batch_2");
    // Order B1's first parcel arrived before the order: it waits, parked.
    assert_eq!(
        intake.handle(&incoming(&x[1])).await.unwrap(),
        IntakeOutcome::Parked
    );

    let batch: Vec<IncomingMessage> = [&x[0], &y[0], &z[0]].into_iter().map(incoming).collect();
    let outcomes: Vec<IntakeOutcome> = intake
        .handle_batch(&batch)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    assert_eq!(
        outcomes[0],
        IntakeOutcome::Processed {
            dispatch: vec!["ORD-B1".to_owned()]
        },
        "the parked parcel is planned with its order"
    );
    assert_eq!(outcomes[1], IntakeOutcome::Processed { dispatch: vec![] });
    assert!(
        matches!(&outcomes[2], IntakeOutcome::Rejected { reason, .. } if reason == "authorization_conflict"),
        "{:?}",
        outcomes[2]
    );
    let orders: Vec<String> = sqlx::query_scalar("select order_id from orders order by order_id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(orders, vec!["ORD-B1", "ORD-B2"]);
    let captures: i64 = sqlx::query_scalar("select count(*) from captures")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(captures, 1);
    drop_store(db, store).await;
}

#[tokio::test]
async fn a_batch_claims_the_captures_it_creates_for_its_executor_which_sends_them() {
    use capture_worker::sandbox::{self, NewAuthorization, SandboxOptions};

    // Arrange: an executor that is not running yet, and intake claiming for it.
    let (url, sandbox, _server) = sandbox::spawn(SandboxOptions {
        latency: Duration::ZERO,
        api_key: Some("sk_test_canary_key".into()),
    })
    .await
    .unwrap();
    let (db, store) = fresh_database().await;
    let settings = test_settings(&db, "claims", &url);
    let (intake, executor, work) = claiming_intake(&store, &settings, "w-claims");
    let orders: Vec<Vec<Value>> = (0..2).map(usd_order_as).collect();
    for n in 0..2 {
        sandbox
            .create_authorization(NewAuthorization::new(format!("pi_batch_{n}"), 12455, "USD"))
            .unwrap();
    }
    let registrations: Vec<IncomingMessage> = orders.iter().map(|o| incoming(&o[0])).collect();
    for out in intake.handle_batch(&registrations).await {
        assert!(
            matches!(out, Ok(IntakeOutcome::Processed { .. })),
            "{out:?}"
        );
    }

    // Act: both first parcels in one batch.
    let parcels: Vec<IncomingMessage> = orders.iter().map(|o| incoming(&o[1])).collect();
    let outcomes = intake.handle_batch(&parcels).await;

    // Assert: each capture was claimed for the executor in the batch's transaction, so the
    // orders need no separate dispatch, and nothing reached the provider yet.
    for out in &outcomes {
        assert_eq!(
            out.as_ref().unwrap(),
            &IntakeOutcome::Processed {
                dispatch: Vec::new()
            }
        );
    }
    let claimed: Vec<(String, String, Option<String>, i32)> = sqlx::query_as(
        "select order_id, status, lease_owner, attempts from captures order by order_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        claimed,
        vec![
            (
                "ORD-B0".into(),
                "in_flight".into(),
                Some("w-claims".into()),
                1
            ),
            (
                "ORD-B1".into(),
                "in_flight".into(),
                Some("w-claims".into()),
                1
            ),
        ]
    );
    assert!(sandbox.ledger().is_empty());

    // The executor sends what was handed to it: one capture per order, each once.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = executor.clone();
    let run = tokio::spawn(async move { runner.run(work, stopped).await });
    let pool = store.pool().clone();
    eventually(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from captures where status = 'succeeded'")
                .fetch_one(&pool)
                .await
                .unwrap()
                == 2
        }
    })
    .await;
    let mut sent: Vec<(Option<String>, Option<i64>, Option<bool>)> = sandbox
        .ledger()
        .into_iter()
        .map(|e| (e.authorization_id, e.amount_to_capture, e.final_capture))
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        vec![
            (Some("pi_batch_0".into()), Some(5182), Some(false)),
            (Some("pi_batch_1".into()), Some(5182), Some(false)),
        ]
    );
    let _ = stop.send(true);
    run.await.unwrap();
    drop_store(db, store).await;
}

#[tokio::test]
async fn a_new_head_capture_is_written_once_in_flight_and_one_behind_an_unsettled_one_queued() {
    // Arrange: intake claiming for an executor that is not running, so nothing settles; and a
    // trigger recording every update of a capture row.
    let (db, store) = fresh_database().await;
    let settings = test_settings(&db, "claim-on-insert", "http://127.0.0.1:9");
    let (intake, _executor, _work) = claiming_intake(&store, &settings, "w-insert");
    sqlx::raw_sql(
        "create table capture_row_updates (capture_id bigint, old_status text, new_status text);
         create function record_capture_update() returns trigger language plpgsql as $$
         begin
             insert into capture_row_updates values (new.capture_id, old.status, new.status);
             return new;
         end $$;
         create trigger record_capture_update after update on captures
             for each row execute function record_capture_update();",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let orders: Vec<Vec<Value>> = (0..2).map(usd_order_as).collect();
    let registrations: Vec<IncomingMessage> = orders.iter().map(|o| incoming(&o[0])).collect();
    for out in intake.handle_batch(&registrations).await {
        assert!(
            matches!(out, Ok(IntakeOutcome::Processed { .. })),
            "{out:?}"
        );
    }
    let captures = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (String, i32, String, Option<String>, i32, bool)>(
            "select order_id, sequence, status, lease_owner, attempts,
                 coalesce(lease_expires_at > now() + interval '20 seconds', false)
             from captures order by order_id, sequence",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };

    // Act: both orders' first parcels in one batch.
    let first: Vec<IncomingMessage> = orders.iter().map(|o| incoming(&o[1])).collect();
    let outcomes = intake.handle_batch(&first).await;

    // Assert: each new capture is its order's head and was inserted in flight under the
    // worker's lease (30 s), attempt 1, with no second version of its row; the orders need
    // no separate dispatch.
    for out in &outcomes {
        assert_eq!(
            out.as_ref().unwrap(),
            &IntakeOutcome::Processed {
                dispatch: Vec::new()
            }
        );
    }
    let in_flight = |order: &str, sequence: i32| {
        (
            order.to_owned(),
            sequence,
            "in_flight".to_owned(),
            Some("w-insert".to_owned()),
            1,
            true,
        )
    };
    assert_eq!(
        captures(store.pool().clone()).await,
        vec![in_flight("ORD-B0", 1), in_flight("ORD-B1", 1)]
    );

    // Act: the second parcels while the first captures are still in flight.
    let second: Vec<IncomingMessage> = orders.iter().map(|o| incoming(&o[2])).collect();
    let outcomes = intake.handle_batch(&second).await;

    // Assert: the new captures wait queued behind their orders' in-flight ones (P8), and
    // their orders are left to dispatch; still no capture row was written twice.
    let dispatched: Vec<IntakeOutcome> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        dispatched,
        vec![
            IntakeOutcome::Processed {
                dispatch: vec!["ORD-B0".into()]
            },
            IntakeOutcome::Processed {
                dispatch: vec!["ORD-B1".into()]
            },
        ]
    );
    let queued = |order: &str| (order.to_owned(), 2, "queued".to_owned(), None, 0, false);
    assert_eq!(
        captures(store.pool().clone()).await,
        vec![
            in_flight("ORD-B0", 1),
            queued("ORD-B0"),
            in_flight("ORD-B1", 1),
            queued("ORD-B1"),
        ]
    );
    let updates: i64 = sqlx::query_scalar("select count(*) from capture_row_updates")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        updates, 0,
        "intake updated capture rows it had just inserted"
    );
    drop_store(db, store).await;
}

#[tokio::test]
async fn a_parcel_for_a_lapsed_authorization_is_refused_the_same_in_a_batch_as_on_its_own() {
    // Order B1 was authorized eight days ago and its authorization expired an hour ago.
    let now = chrono::Utc::now();
    let mut lapsed = usd_order_as(1);
    lapsed[0]["data"]["payment"]["authorized_at"] =
        json!((now - chrono::Duration::days(8)).to_rfc3339());
    lapsed[0]["data"]["payment"]["expires_at"] =
        json!((now - chrono::Duration::hours(1)).to_rfc3339());
    let good = usd_order_as(2);
    let parcels = [incoming(&lapsed[1]), incoming(&good[1])];

    let mut runs = Vec::new();
    for batched in [false, true] {
        let (db, store) = fresh_database().await;
        let intake = intake(&store);
        for m in [&lapsed[0], &good[0]] {
            intake.handle(&incoming(m)).await.unwrap();
        }
        let outcomes: Vec<IntakeOutcome> = if batched {
            intake
                .handle_batch(&parcels)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect()
        } else {
            let mut out = Vec::new();
            for p in &parcels {
                out.push(intake.handle(p).await.unwrap());
            }
            out
        };
        runs.push((outcomes, ledger_snapshot(&store).await));
        drop_store(db, store).await;
    }

    let (outcomes, snapshot) = &runs[0];
    match &outcomes[0] {
        IntakeOutcome::Rejected { reason, detail, .. } => {
            assert_eq!(reason, "authorization_inactive");
            assert!(detail.contains("pi_batch_1"), "{detail}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        outcomes[1],
        IntakeOutcome::Processed {
            dispatch: vec!["ORD-B2".to_owned()]
        }
    );
    assert!(
        snapshot.contains("authorization_inactive"),
        "recorded in rejected_messages and the inbox"
    );
    assert_eq!(runs[1].0, *outcomes, "the batch decides as one at a time");
    assert_eq!(runs[1].1, *snapshot, "and stores the same");
}

#[tokio::test]
async fn the_intake_writer_adds_an_inbox_row_once_and_updates_only_a_parked_one() {
    use capture_worker::storage::StorageError;
    use capture_worker::storage::ledger::{InboxStatus, IntakeBatch, NewInbox};

    let (db, store) = fresh_database().await;
    let row = |message_id: &'static str, status: InboxStatus| NewInbox {
        message_id,
        message_type: "shipment.shipped",
        order_id: Some("ORD-W"),
        payload_hash: "hash",
        status,
        reject_reason: None,
        body: (status == InboxStatus::Parked).then_some(b"{}".as_slice()),
        routing_key: Some("shipment.shipped"),
        traceparent: None,
        tracestate: None,
        park_expires_at: (status == InboxStatus::Parked).then(chrono::Utc::now),
    };
    let store_one = |m: NewInbox<'static>| {
        let store = store.clone();
        async move {
            let mut tx = store.begin("test").await?;
            tx.store_intake_batch(&IntakeBatch {
                inbox: vec![m],
                ..Default::default()
            })
            .await?;
            tx.commit("test").await
        }
    };
    store_one(row("M-1", InboxStatus::Processed)).await.unwrap();
    store_one(row("M-2", InboxStatus::Parked)).await.unwrap();

    // A message already processed is not written again: the write set fails as a conflict.
    let again = store_one(row("M-1", InboxStatus::Processed)).await;
    assert!(
        matches!(again, Err(StorageError::Conflict { .. })),
        "{again:?}"
    );
    // A parked message processed now updates its row, dropping its body.
    store_one(row("M-2", InboxStatus::Processed)).await.unwrap();
    let rows: Vec<(String, String, bool, bool)> = sqlx::query_as(
        "select message_id, status, body is null, park_expires_at is null
         from inbox_messages order by message_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("M-1".to_owned(), "processed".to_owned(), true, true),
            ("M-2".to_owned(), "processed".to_owned(), true, true),
        ]
    );
    drop_store(db, store).await;
}

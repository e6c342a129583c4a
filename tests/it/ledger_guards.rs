//! The schema makes violations of P2, P3, P5 and P8 impossible to commit: each guard is
//! attacked directly with SQL and must refuse with its SQLSTATE. What the schema lets through
//! but the domain does not is refused where storage reads the row.

use sqlx::PgPool;

use crate::harness::*;

/// An order of 1000 (USD, provider `sandbox`) under authorization `auth`.
pub(crate) async fn order(pool: &PgPool, id: &str, auth: &str) {
    sqlx::query(
        "insert into orders (order_id, currency, provider, authorization_id, authorized_amount,
             authorized_at, shipping_amount, order_discount_amount, order_total, message_id, payload_hash)
         values ($1, 'USD', 'sandbox', $2, 1000, now(), 0, 0, 1000, $1, 'h')",
    )
    .bind(id)
    .bind(auth)
    .execute(pool)
    .await
    .unwrap();
}

/// A capture of `order` with sequence `seq`, caused by shipment `S<seq>`; its id.
pub(crate) async fn capture(
    pool: &PgPool,
    order: &str,
    seq: i32,
    key: &str,
    amount: i64,
    is_final: bool,
    status: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "insert into captures (order_id, provider, authorization_id, sequence, kind, cause_kind, cause_id,
             amount, currency, is_final, idempotency_key, status, lease_expires_at)
         select $1, provider, authorization_id, $2, 'capture', 'shipment', 'S' || $2, $4, 'USD', $5, $3, $6,
                now() + interval '1 minute'
         from orders where order_id = $1
         returning capture_id",
    )
    .bind(order)
    .bind(seq)
    .bind(key)
    .bind(amount)
    .bind(is_final)
    .bind(status)
    .fetch_one(pool)
    .await
}

fn sqlstate(e: sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.code().unwrap_or_default().into_owned(),
        other => panic!("expected a database error, got {other}"),
    }
}

#[tokio::test]
async fn the_ledger_refuses_what_would_break_a_promise() {
    let (db, store) = fresh_database().await;
    let pool = store.pool();
    order(pool, "O1", "pi_1").await;

    // P2: claims never exceed the authorization plus allowance.
    let e = sqlx::query("update orders set claimed_amount = 1001 where order_id = 'O1'")
        .execute(pool)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(e), "23514");

    // P3: one key, one capture; a key's terms never change.
    let c1 = capture(pool, "O1", 1, "k1", 400, false, "queued")
        .await
        .unwrap();
    assert_eq!(
        sqlstate(
            capture(pool, "O1", 2, "k1", 400, false, "queued")
                .await
                .unwrap_err()
        ),
        "23505"
    );
    let e = sqlx::query("update captures set amount = 401 where capture_id = $1")
        .bind(c1)
        .execute(pool)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(e), "23514");
    sqlx::query("insert into capture_keys (idempotency_key, capture_id, key_generation, amount, is_final) values ('k1', $1, 0, 400, false)")
        .bind(c1)
        .execute(pool)
        .await
        .unwrap();
    let attempt = "insert into capture_attempts (capture_id, attempt_no, operation, idempotency_key, amount, is_final,
                       outcome, latency_ms, worker_id, started_at)
                   values ($1, 1, 'capture', 'k1', $2, false, 'succeeded', 1, 'w', now())";
    let e = sqlx::query(attempt)
        .bind(c1)
        .bind(999_i64)
        .execute(pool)
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(e),
        "23503",
        "a key is never sent with another amount"
    );
    sqlx::query(attempt)
        .bind(c1)
        .bind(400_i64)
        .execute(pool)
        .await
        .unwrap();

    // Attempts are append-only.
    let e = sqlx::query("update capture_attempts set outcome = 'x'")
        .execute(pool)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(e), "42501");
    let e = sqlx::query("delete from capture_attempts")
        .execute(pool)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(e), "42501");

    // P8: one capture in flight per order.
    sqlx::query("update captures set status = 'in_flight' where capture_id = $1")
        .bind(c1)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(
        sqlstate(
            capture(pool, "O1", 3, "k3", 100, false, "in_flight")
                .await
                .unwrap_err()
        ),
        "23505"
    );

    // P5: one final per authorization.
    capture(pool, "O1", 4, "k4", 100, true, "queued")
        .await
        .unwrap();
    assert_eq!(
        sqlstate(
            capture(pool, "O1", 5, "k5", 100, true, "queued")
                .await
                .unwrap_err()
        ),
        "23505"
    );

    // Money is never negative; a zero capture exists only as the final release.
    assert_eq!(
        sqlstate(
            capture(pool, "O1", 6, "k6", -1, false, "queued")
                .await
                .unwrap_err()
        ),
        "23514"
    );
    assert_eq!(
        sqlstate(
            capture(pool, "O1", 7, "k7", 0, false, "queued")
                .await
                .unwrap_err()
        ),
        "23514"
    );

    // Shipped and cancelled units never exceed what was ordered.
    sqlx::query("insert into order_lines (order_id, line_no, line_id, sku, name, quantity, unit_amount, tax_amount,
                     discount_amount, order_discount_share, net_amount) values ('O1', 0, 'L1', 's', 'n', 2, 500, 0, 0, 0, 1000)")
        .execute(pool)
        .await
        .unwrap();
    let e = sqlx::query("update order_lines set shipped_quantity = 2, cancelled_quantity = 1")
        .execute(pool)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(e), "23514");

    store.pool().close().await;
    drop_database(&db).await;
}

/// What the schema lets through but the domain does not (a currency outside the worker's
/// table, here) is caught where storage reads the row: the claim fails with a storage error
/// naming the capture and the column, instead of a request built from a half-parsed row.
#[tokio::test]
async fn a_claimed_row_is_parsed_once_and_an_unparseable_one_names_its_capture_and_column() {
    use capture_worker::domain::{AuthorizationId, IdempotencyKey, ProviderName};
    use capture_worker::storage::{StorageError, captures};

    let (_db, store) = fresh_database().await;
    let pool = store.pool();
    let key = |order: &str| {
        IdempotencyKey::derive(
            &ProviderName::parse("sandbox").unwrap(),
            &AuthorizationId::parse(format!("pi_{order}")).unwrap(),
            "S1",
            0,
        )
    };

    order(pool, "O1", "pi_O1").await;
    capture(pool, "O1", 1, key("O1").as_str(), 400, false, "queued")
        .await
        .unwrap();
    let claimed = captures::claim_next(pool, "O1", "w1", 30.0)
        .await
        .unwrap()
        .expect("the queued capture is claimed");
    assert_eq!(claimed.order_id.as_str(), "O1");
    assert_eq!(claimed.authorization_id.as_str(), "pi_O1");
    assert_eq!(claimed.provider.as_str(), "sandbox");
    assert_eq!(claimed.amount.amount().get(), 400);
    assert_eq!(claimed.amount.currency().code(), "USD");
    assert_eq!(claimed.idempotency_key, key("O1"));
    assert_eq!(claimed.sequence, 1);

    // A capture's currency is one of its fixed terms: the row is written with it.
    order(pool, "O2", "pi_O2").await;
    sqlx::query("update orders set currency = 'QQQ' where order_id = 'O2'")
        .execute(pool)
        .await
        .unwrap();
    let bad: i64 = sqlx::query_scalar(
        "insert into captures (order_id, provider, authorization_id, sequence, kind, cause_kind,
             cause_id, amount, currency, is_final, idempotency_key, status)
         values ('O2', 'sandbox', 'pi_O2', 1, 'capture', 'shipment', 'S1', 400, 'QQQ', false, $1,
             'queued')
         returning capture_id",
    )
    .bind(key("O2").as_str())
    .fetch_one(pool)
    .await
    .unwrap();
    let e = captures::claim_next(pool, "O2", "w1", 30.0)
        .await
        .expect_err("a currency outside the table does not parse");
    assert!(matches!(e, StorageError::Corrupt { .. }), "{e:?}");
    let message = e.to_string();
    assert!(
        message.contains(&format!("capture {bad}")) && message.contains("column currency"),
        "{message}"
    );
}

/// The figures the demo waits on and prints, read through storage: how many of a run's orders
/// exist and how many of their captures are unsettled, then finance's row per order.
#[tokio::test]
async fn the_demo_reads_its_orders_progress_and_reconciliation_through_storage() {
    use capture_worker::domain::{AuthorizationId, IdempotencyKey, ProviderName};
    use capture_worker::storage::operator::{OrdersProgress, orders_progress, reconciled_orders};

    let (_db, store) = fresh_database().await;
    let pool = store.pool();
    order(pool, "demo-1-a", "pi_a").await;
    order(pool, "demo-1-b", "pi_b").await;
    order(pool, "other", "pi_c").await;
    let key = IdempotencyKey::derive(
        &ProviderName::parse("sandbox").unwrap(),
        &AuthorizationId::parse("pi_a").unwrap(),
        "S1",
        0,
    );
    capture(pool, "demo-1-a", 1, key.as_str(), 400, false, "queued")
        .await
        .unwrap();

    assert_eq!(
        orders_progress(pool, "demo-1-%").await.unwrap(),
        OrdersProgress {
            orders: 2,
            unsettled_captures: 1
        }
    );
    sqlx::query("update captures set status = 'attention' where order_id = 'demo-1-a'")
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(
        orders_progress(pool, "demo-1-%")
            .await
            .unwrap()
            .unsettled_captures,
        0
    );

    let rows = reconciled_orders(pool, "demo-1-%").await.unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r.order_id.as_str()).collect();
    assert_eq!(ids, ["demo-1-a", "demo-1-b"]);
    assert_eq!(rows[0].currency.trim(), "USD");
    assert_eq!(rows[0].authorized_amount, 1000);
    assert_eq!(rows[0].order_total, 1000);
}

//! The machine's raw limits, measured in the same run as the end-to-end figures:
//!
//! - RabbitMQ: publish with confirms (pipelined, persistent, mandatory) of our shipment message
//!   to a quorum queue declared exactly as the worker declares it; then consume + ack of those
//!   messages with the worker's per-consumer prefetch, one ack per delivery.
//! - PostgreSQL: the naive per-shipment write pattern on the ledger schema — one intake
//!   transaction (inbox row, shipment, order progress, capture row, its key) and one outcome
//!   transaction (attempt row, capture status) per shipment — from as many concurrent clients
//!   as the worker's pool has connections.
//! - HTTP: round trips to the sandbox provider (latency 0) from as many concurrent clients as
//!   the worker sends captures at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use sqlx::PgPool;

use super::BenchOptions;
use super::report::RawLimits;
use super::support::{BenchEnv, PUBLISH_WINDOW, PipelinedPublisher, Workload, service_cpu_seconds};
use capture_worker::sandbox::{self, NewAuthorization, SandboxOptions};

pub async fn measure(env: &BenchEnv, options: &BenchOptions) -> anyhow::Result<RawLimits> {
    let seconds = options.raw_duration;
    let sample = Workload {
        prefix: "raw".into(),
        orders: 1,
        shipments: 1,
    }
    .shipment(0, 1, chrono::Utc::now());
    let (publish, consume, consumed) = rabbitmq(env, &sample, seconds)
        .await
        .context("measuring RabbitMQ")?;
    eprintln!(
        "bench:   RabbitMQ publish+confirm {publish:.0}/s, consume+ack {consume:.0}/s ({consumed} messages)"
    );
    let clients = env.settings.database.max_connections.max(1);
    let cpu0 = service_cpu_seconds(&env.services);
    let (pg, pg_shipments) = postgres(env, clients, seconds)
        .await
        .context("measuring PostgreSQL")?;
    let pg_cpu = service_cpu_seconds(&env.services).per_item_ms(&cpu0, pg_shipments);
    eprintln!("bench:   PostgreSQL naive per-shipment writes {pg:.0}/s ({clients} clients)");
    // As many clients as the worker sends captures at once, within reason for one process.
    let http_clients = env.settings.capture.concurrency.clamp(1, 256);
    let http = http(http_clients, seconds)
        .await
        .context("measuring HTTP round trips to the sandbox")?;
    eprintln!("bench:   HTTP round trips to the sandbox {http:.0}/s ({http_clients} clients)");
    let mut raw = RawLimits {
        seconds: seconds.as_secs_f64(),
        message_bytes: sample.len(),
        prefetch: env.settings.amqp.prefetch,
        publish_window: PUBLISH_WINDOW,
        postgres_clients: clients,
        http_clients,
        rabbitmq_publish_confirms_per_s: publish,
        rabbitmq_consume_ack_per_s: consume,
        postgres_naive_shipments_per_s: pg,
        postgres_naive_cpu_ms_per_shipment: pg_cpu,
        http_round_trips_per_s: http,
        tighter: String::new(),
        tighter_per_s: 0.0,
    };
    let (name, rate) = [
        ("rabbitmq_publish_confirms", publish),
        ("rabbitmq_consume_ack", consume),
        ("postgres_naive", pg),
        ("http_round_trips", http),
    ]
    .into_iter()
    .min_by(|a, b| a.1.total_cmp(&b.1))
    .unwrap_or(("postgres_naive", pg));
    raw.tighter = name.to_owned();
    raw.tighter_per_s = rate;
    Ok(raw)
}

/// (publish with confirms/s, consume+ack/s, messages consumed).
async fn rabbitmq(
    env: &BenchEnv,
    body: &[u8],
    duration: Duration,
) -> anyhow::Result<(f64, f64, u64)> {
    let topology = env.fresh_topology().await?;
    let conn = env.amqp().await?;
    let mut publisher = PipelinedPublisher::open(&conn, &topology.exchange, PUBLISH_WINDOW).await?;
    let t0 = Instant::now();
    while t0.elapsed() < duration {
        for _ in 0..64 {
            publisher.publish("shipment.shipped", body).await?;
        }
    }
    publisher.flush().await?;
    let published = publisher.published;
    let publish_rate = published as f64 / t0.elapsed().as_secs_f64();

    let channel = conn.create_channel().await?;
    channel
        .basic_qos(
            env.settings.amqp.prefetch,
            BasicQosOptions { global: false },
        )
        .await?;
    let mut consumer = channel
        .basic_consume(
            topology.queue.as_str().into(),
            "capture-worker-bench-raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let t1 = Instant::now();
    let mut consumed = 0u64;
    // Drain what was published, or stop after the measuring time (and a grace for the first
    // delivery).
    while consumed < published && t1.elapsed() < duration * 2 {
        let next = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await;
        let Ok(Some(delivery)) = next else { break };
        let delivery = delivery.context("receiving a delivery")?;
        delivery.ack(BasicAckOptions::default()).await?;
        consumed += 1;
    }
    let consume_rate = consumed as f64 / t1.elapsed().as_secs_f64();
    let _ = channel.close(200, "measured".into()).await;
    publisher.close().await?;
    let _ = conn.close(200, "measured".into()).await;
    Ok((publish_rate, consume_rate, consumed))
}

/// Shipments per second through the naive pattern: two transactions per shipment.
/// (shipments/s, shipments written).
async fn postgres(
    env: &BenchEnv,
    clients: u32,
    duration: Duration,
) -> anyhow::Result<(f64, usize)> {
    let (_url, store) = env.fresh_database(clients).await?;
    let pool = store.pool().clone();
    for c in 0..clients {
        sqlx::query(
            "insert into orders (order_id, currency, provider, authorization_id, authorized_amount,
                 authorized_at, shipping_amount, order_discount_amount, order_total, message_id,
                 payload_hash)
             values ($1, 'USD', 'sandbox', $1, 9000000000000000, now(), 0, 0, 9000000000000000,
                 $1, 'raw')",
        )
        .bind(format!("raw-{c}"))
        .execute(&pool)
        .await
        .context("creating the orders")?;
    }
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let pool = pool.clone();
        let done = done.clone();
        tasks.spawn(async move {
            let order = format!("raw-{c}");
            let mut k: i32 = 0;
            while Instant::now() < deadline {
                k += 1;
                naive_shipment(&pool, &order, k).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), sqlx::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("a PostgreSQL client stopped")?
            .context("writing a shipment")?;
    }
    let n = done.load(Ordering::Relaxed);
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    pool.close().await;
    Ok((rate, n as usize))
}

/// One shipment, the naive way: the intake transaction, then the outcome transaction.
async fn naive_shipment(pool: &PgPool, order: &str, k: i32) -> Result<(), sqlx::Error> {
    let shipment = format!("S{k}");
    let message_id = format!("{order}-{k}");
    let key = format!("raw:{order}:{k}");
    let amount: i64 = 1_000;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into inbox_messages (message_id, message_type, order_id, payload_hash, status)
         values ($1, 'shipment.shipped', $2, 'hash', 'processed')",
    )
    .bind(&message_id)
    .bind(order)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into shipments (order_id, shipment_id, message_id, items, last_shipment,
             shipped_at, shipped_value, decision)
         values ($1, $2, $3, '[{\"line_id\": \"L1\", \"quantity\": 1}]', false, now(), $4, 'capture')",
    )
    .bind(order)
    .bind(&shipment)
    .bind(&message_id)
    .bind(amount)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update orders set claimed_amount = claimed_amount + $2, capture_count = capture_count + 1,
             updated_at = now()
         where order_id = $1",
    )
    .bind(order)
    .bind(amount)
    .execute(&mut *tx)
    .await?;
    let capture_id: i64 = sqlx::query_scalar(
        "insert into captures (order_id, provider, authorization_id, sequence, kind, cause_kind,
             cause_id, amount, currency, is_final, idempotency_key)
         values ($1, 'sandbox', $1, $2, 'capture', 'shipment', $3, $4, 'USD', false, $5)
         returning capture_id",
    )
    .bind(order)
    .bind(k)
    .bind(&shipment)
    .bind(amount)
    .bind(&key)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "insert into capture_keys (idempotency_key, capture_id, key_generation, amount, is_final)
         values ($1, $2, 0, $3, false)",
    )
    .bind(&key)
    .bind(capture_id)
    .bind(amount)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into capture_attempts (capture_id, attempt_no, operation, idempotency_key, amount,
             is_final, outcome, http_status, latency_ms, worker_id, started_at)
         values ($1, 1, 'capture', $2, $3, false, 'succeeded', 200, 1, 'bench', now())",
    )
    .bind(capture_id)
    .bind(&key)
    .bind(amount)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update captures set status = 'succeeded', attempts = 1, provider_reference = 'ch_bench',
             completed_at = now(), updated_at = now()
         where capture_id = $1",
    )
    .bind(capture_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Round trips per second to the sandbox (a PaymentIntent read, latency 0).
async fn http(clients: usize, duration: Duration) -> anyhow::Result<f64> {
    let (url, sb, server) = sandbox::spawn(SandboxOptions::default()).await?;
    sb.create_authorization(NewAuthorization::new("pi_bench_raw", 100_000, "USD"))
        .map_err(|e| anyhow::anyhow!("creating the sandbox authorization: {e}"))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let target = format!("{url}/v1/payment_intents/pi_bench_raw");
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let client = client.clone();
        let target = target.clone();
        let done = done.clone();
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let r = client.get(&target).send().await?;
                let ok = r.status().is_success();
                let _ = r.bytes().await?;
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<(), reqwest::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("an HTTP client stopped")?
            .context("calling the sandbox")?;
    }
    let rate = done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
    let _ = server.stop().await;
    Ok(rate)
}

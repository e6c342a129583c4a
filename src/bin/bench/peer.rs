//! The peer: a hand-written worker, as a team would write one in an afternoon, measured in
//! the same run and on the same machine as `capture-worker`, so that the worker's throughput
//! and CPU per shipment are reported as ratios to it.
//!
//! It runs as a child process of its own (this binary with the hidden first argument
//! `peer-worker`), so its CPU is measured apart from the benchmark's publisher and provider:
//!
//! - RabbitMQ: one consumer with prefetch 500 on a quorum queue declared exactly as the
//!   worker's, one task per delivery, each delivery acknowledged after its work committed;
//! - a pool of 16 PostgreSQL connections, on its own minimal schema ([`SCHEMA`]: orders, inbox,
//!   captures, attempts, with the keys and indexes such a team would add) in its own
//!   database;
//! - per shipment: transaction A (insert the inbox row, lock the order row, insert the capture
//!   row), an HTTP POST to a local provider with the same latency L as the worker's, then
//!   transaction B (update the capture, insert the attempt), then the ack.
//!
//! It computes the capture amount from the order's lines and the final flag from what was
//! captured before, and skips redelivered messages through the inbox. It does none of the
//! rest of what the worker does (parking, retries with backoff, leases, one capture in flight
//! per order, declines, notifications, the ledger's checks): it is the floor a product has to
//! beat, not a competitor.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::oneshot;

use super::BenchOptions;
use super::support::{
    BenchEnv, DbActivity, PUBLISH_WINDOW, PipelinedPublisher, ServiceCpu, Workload,
    proc_cpu_seconds, proc_status_kib, service_cpu_seconds,
};

/// The peer's prefetch and pool, as the issue that asked for it describes them.
pub const PEER_PREFETCH: u16 = 500;
pub const PEER_POOL: u32 = 16;

/// The hidden first argument that runs this binary as the peer.
pub const PEER_ARG: &str = "peer-worker";

/// No capture for this long while work remains: the peer has stalled.
const STALL: Duration = Duration::from_secs(60);

/// The peer's schema: what a team writing this by hand would create.
pub const SCHEMA: &str = "
create table orders (
    order_id text primary key,
    authorization_id text not null,
    currency text not null,
    authorized_amount bigint not null,
    lines jsonb not null,
    created_at timestamptz not null default now()
);
create table inbox (
    message_id text primary key,
    received_at timestamptz not null default now()
);
create table captures (
    capture_id bigserial primary key,
    order_id text not null references orders (order_id),
    shipment_id text not null,
    amount bigint not null,
    is_final boolean not null,
    idempotency_key text not null unique,
    status text not null default 'pending',
    provider_reference text,
    created_at timestamptz not null default now(),
    completed_at timestamptz,
    unique (order_id, shipment_id)
);
create index captures_pending on captures (created_at) where status = 'pending';
create table attempts (
    attempt_id bigserial primary key,
    capture_id bigint not null references captures (capture_id),
    http_status integer not null,
    latency_ms integer not null,
    created_at timestamptz not null default now()
);
create index attempts_capture on attempts (capture_id);
";

/// What the peer did at one provider latency.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRun {
    pub latency_ms: u64,
    /// How the peer is built and configured.
    pub settings: String,
    pub shipments: usize,
    /// Captures between the 10th and 90th percentile of completion times, per second.
    pub throughput_per_s: f64,
    /// Shipments / (first publish → last capture).
    pub overall_throughput_per_s: f64,
    /// CPU ms per shipment of the peer process.
    pub peer_cpu_ms_per_shipment: f64,
    /// CPU ms per shipment of PostgreSQL, RabbitMQ and the benchmark (its provider and
    /// publisher).
    pub service_cpu_ms_per_shipment: ServiceCpu,
    /// Peer + PostgreSQL + RabbitMQ, the figure compared with the worker's.
    pub pipeline_cpu_ms_per_shipment: f64,
    pub peer_peak_rss_mb: f64,
    /// PostgreSQL's work per shipment (`pg_stat_database`).
    pub database: DbActivity,
    /// Captures recorded as succeeded; must equal `shipments`.
    pub captured: u64,
}

/// Settings of the peer child process, passed through its environment.
struct PeerConfig {
    database_url: String,
    amqp_url: String,
    queue: String,
    provider_url: String,
}

/// Runs this process as the peer (`bench peer-worker`): consumes until killed.
pub async fn serve_from_env() -> anyhow::Result<()> {
    let var = |k: &str| std::env::var(k).with_context(|| format!("{k} is not set"));
    let config = PeerConfig {
        database_url: var("BENCH_PEER_DATABASE_URL")?,
        amqp_url: var("BENCH_PEER_AMQP_URL")?,
        queue: var("BENCH_PEER_QUEUE")?,
        provider_url: var("BENCH_PEER_PROVIDER_URL")?,
    };
    serve(config).await
}

async fn serve(config: PeerConfig) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(PEER_POOL)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&config.database_url)
        .await
        .context("peer: connecting to PostgreSQL")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let conn = Connection::connect(&config.amqp_url, ConnectionProperties::default())
        .await
        .context("peer: connecting to RabbitMQ")?;
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(PEER_PREFETCH, BasicQosOptions { global: false })
        .await?;
    let mut consumer = channel
        .basic_consume(
            config.queue.as_str().into(),
            "capture-worker-bench-peer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    println!("ready");
    let provider: Arc<str> = config.provider_url.into();
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.context("peer: receiving a delivery")?;
        let (pool, http, provider) = (pool.clone(), http.clone(), provider.clone());
        tokio::spawn(async move {
            match handle(&pool, &http, &provider, &delivery.data).await {
                Ok(()) => {
                    let _ = delivery.ack(BasicAckOptions::default()).await;
                }
                Err(e) => {
                    eprintln!("peer: {e:#}");
                    let _ = delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await;
                }
            }
        });
    }
    bail!("peer: the consumer was cancelled")
}

async fn handle(
    pool: &PgPool,
    http: &reqwest::Client,
    provider: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    let message: Value = serde_json::from_slice(body).context("parsing the message")?;
    let message_id = text(&message["message_id"])?;
    let data = &message["data"];
    match message["type"].as_str() {
        Some("order.authorized") => {
            let mut tx = pool.begin().await?;
            let fresh =
                sqlx::query("insert into inbox (message_id) values ($1) on conflict do nothing")
                    .bind(message_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if fresh == 1 {
                let payment = &data["payment"];
                sqlx::query(
                    "insert into orders (order_id, authorization_id, currency, authorized_amount,
                         lines)
                     values ($1, $2, $3, $4, $5)",
                )
                .bind(text(&data["order_id"])?)
                .bind(text(&payment["authorization_id"])?)
                .bind(text(&data["currency"])?)
                .bind(payment["authorized_amount"].as_i64().unwrap_or(0))
                .bind(&data["lines"])
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        }
        Some("shipment.shipped") => shipment(pool, http, provider, message_id, data).await,
        other => bail!("unexpected message type {other:?}"),
    }
}

async fn shipment(
    pool: &PgPool,
    http: &reqwest::Client,
    provider: &str,
    message_id: &str,
    data: &Value,
) -> anyhow::Result<()> {
    let order_id = text(&data["order_id"])?;
    let shipment_id = text(&data["shipment_id"])?;
    // Transaction A: the inbox row, the order locked, the capture row.
    let mut tx = pool.begin().await?;
    let fresh = sqlx::query("insert into inbox (message_id) values ($1) on conflict do nothing")
        .bind(message_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if fresh == 0 {
        // Seen before: done.
        tx.commit().await?;
        return Ok(());
    }
    let (authorization_id, authorized, lines, captured): (String, i64, Value, i64) =
        sqlx::query_as(
            "select o.authorization_id, o.authorized_amount, o.lines,
                    coalesce((select sum(c.amount) from captures c where c.order_id = o.order_id),
                             0)::bigint
             from orders o where o.order_id = $1
             for update of o",
        )
        .bind(order_id)
        .fetch_one(&mut *tx)
        .await
        .with_context(|| format!("locking order {order_id}"))?;
    let amount = shipped_amount(&lines, &data["items"]);
    let is_final = captured + amount >= authorized;
    let key = format!("{order_id}:{shipment_id}");
    let capture_id: i64 = sqlx::query_scalar(
        "insert into captures (order_id, shipment_id, amount, is_final, idempotency_key)
         values ($1, $2, $3, $4, $5) returning capture_id",
    )
    .bind(order_id)
    .bind(shipment_id)
    .bind(amount)
    .bind(is_final)
    .bind(&key)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;

    // The provider call, outside any transaction.
    let started = Instant::now();
    let response = http
        .post(format!(
            "{provider}/v1/payment_intents/{authorization_id}/capture"
        ))
        .header("Idempotency-Key", &key)
        .form(&[
            ("amount_to_capture", amount.to_string()),
            ("final_capture", is_final.to_string()),
        ])
        .send()
        .await
        .context("calling the provider")?;
    let status = response.status();
    let answer: Value = response
        .json()
        .await
        .context("reading the provider's answer")?;
    let latency_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
    if !status.is_success() {
        bail!("the provider answered {status} for {key}");
    }

    // Transaction B: the capture's outcome and the attempt.
    let mut tx = pool.begin().await?;
    sqlx::query(
        "update captures set status = 'succeeded', provider_reference = $2, completed_at = now()
         where capture_id = $1",
    )
    .bind(capture_id)
    .bind(answer["id"].as_str())
    .execute(&mut *tx)
    .await?;
    sqlx::query("insert into attempts (capture_id, http_status, latency_ms) values ($1, $2, $3)")
        .bind(capture_id)
        .bind(i32::from(status.as_u16()))
        .bind(latency_ms)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

fn text(v: &Value) -> anyhow::Result<&str> {
    v.as_str()
        .with_context(|| format!("expected a string, got {v}"))
}

/// The value of the shipped items: unit price × quantity, plus tax, less discount, per line
/// (integer minor units).
fn shipped_amount(lines: &Value, items: &Value) -> i64 {
    let empty = Vec::new();
    let lines = lines.as_array().unwrap_or(&empty);
    items
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|item| {
            let qty = item["quantity"].as_i64().unwrap_or(0);
            lines
                .iter()
                .find(|l| l["line_id"] == item["line_id"])
                .map_or(0, |l| {
                    let ordered = l["quantity"].as_i64().unwrap_or(1).max(1);
                    let unit = l["unit_amount"].as_i64().unwrap_or(0);
                    let tax = l["tax_amount"].as_i64().unwrap_or(0);
                    let discount = l["discount_amount"].as_i64().unwrap_or(0);
                    unit * qty + (tax - discount) * qty / ordered
                })
        })
        .sum()
}

/// The local provider the peer calls: answers every capture POST after `latency`, counting
/// them, with a body shaped like a Stripe PaymentIntent.
struct PeerProvider {
    url: String,
    answered: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl PeerProvider {
    async fn spawn(latency: Duration) -> anyhow::Result<PeerProvider> {
        use axum::routing::post;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let answered = Arc::new(AtomicU64::new(0));
        let counter = answered.clone();
        let app = axum::Router::new().route(
            "/v1/payment_intents/{id}/capture",
            post(
                move |axum::extract::Path(id): axum::extract::Path<String>, _body: String| {
                    let counter = counter.clone();
                    async move {
                        if !latency.is_zero() {
                            tokio::time::sleep(latency).await;
                        }
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        axum::Json(serde_json::json!({
                            "id": id, "object": "payment_intent", "status": "succeeded",
                            "latest_charge": format!("ch_peer_{n}")
                        }))
                    }
                },
            ),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(PeerProvider {
            url,
            answered,
            stop: Some(stop),
            task,
        })
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        self.task.abort();
    }
}

/// The peer child process, killed when dropped.
struct PeerProcess {
    child: Child,
}

impl PeerProcess {
    fn spawn(
        env: &BenchEnv,
        database_url: &str,
        queue: &str,
        provider_url: &str,
    ) -> anyhow::Result<PeerProcess> {
        let exe = std::env::current_exe().context("locating the bench binary")?;
        let child = Command::new(exe)
            .arg(PEER_ARG)
            .env("BENCH_PEER_DATABASE_URL", database_url)
            .env("BENCH_PEER_AMQP_URL", env.settings.amqp.url.expose())
            .env("BENCH_PEER_QUEUE", queue)
            .env("BENCH_PEER_PROVIDER_URL", provider_url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the peer")?;
        Ok(PeerProcess { child })
    }

    /// Waits for the peer's `ready` line (it consumes from then on).
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let stdout = self.child.stdout.take().context("the peer's stdout")?;
        let line = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::task::spawn_blocking(move || {
                use std::io::BufRead;
                let mut line = String::new();
                std::io::BufReader::new(stdout)
                    .read_line(&mut line)
                    .map(|_| line)
            }),
        )
        .await
        .context("the peer was not ready within 30 s")???;
        if line.trim() != "ready" {
            bail!("the peer did not start (it said {line:?})");
        }
        Ok(())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The peer at provider latency `latency_ms`: its orders registered through the queue, then
/// every shipment published as fast as the broker confirms, as for the worker's saturated
/// phase.
pub async fn peer_run(
    env: &BenchEnv,
    options: &BenchOptions,
    latency_ms: u64,
) -> anyhow::Result<PeerRun> {
    let (db_url, pool) = env.fresh_empty_database(2).await?;
    sqlx::raw_sql(SCHEMA)
        .execute(&pool)
        .await
        .context("creating the peer's schema")?;
    let topology = env.fresh_topology().await?;
    let provider = PeerProvider::spawn(Duration::from_millis(latency_ms)).await?;
    let mut peer = PeerProcess::spawn(env, &db_url, &topology.queue, &provider.url)?;
    let result = async {
        peer.wait_ready().await?;
        let work = Workload {
            prefix: format!("{}-peer-L{latency_ms}", env.run_id),
            orders: options.orders,
            shipments: options.shipments_per_order,
        };
        let conn = env.amqp().await?;
        let mut publisher =
            PipelinedPublisher::open(&conn, &topology.exchange, PUBLISH_WINDOW).await?;
        let now = Utc::now();
        for i in 0..work.orders {
            publisher
                .publish("order.authorized", &work.authorized(i, now))
                .await?;
        }
        publisher.flush().await?;
        wait_until(STALL, || async {
            let n: i64 = sqlx::query_scalar("select count(*) from orders")
                .fetch_one(&pool)
                .await?;
            Ok(n as usize >= work.orders)
        })
        .await
        .context("waiting for the peer to register its orders")?;
        sqlx::query("analyze orders, inbox").execute(&pool).await?;

        let cpu0 = proc_cpu_seconds(peer.pid()).unwrap_or(0.0);
        let services0 = service_cpu_seconds(&env.services);
        let db0 = super::support::db_activity(&pool).await;
        let t0 = Utc::now();
        for (i, j) in work.shipment_order() {
            publisher
                .publish("shipment.shipped", &work.shipment(i, j, Utc::now()))
                .await?;
        }
        publisher.flush().await?;
        let shipments = work.orders * work.shipments;
        let mut last = (0u64, Instant::now());
        loop {
            let done = provider.answered();
            if done >= shipments as u64 {
                break;
            }
            if done != last.0 {
                last = (done, Instant::now());
            } else if last.1.elapsed() > STALL {
                bail!("the peer stalled at {done} of {shipments} captures");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The last answers are recorded in transaction B after the provider counted them.
        wait_until(STALL, || async {
            let n: i64 =
                sqlx::query_scalar("select count(*) from captures where status = 'succeeded'")
                    .fetch_one(&pool)
                    .await?;
            Ok(n as usize >= shipments)
        })
        .await
        .context("waiting for the peer to record its captures")?;
        let cpu = proc_cpu_seconds(peer.pid()).unwrap_or(cpu0) - cpu0;
        let services = service_cpu_seconds(&env.services).per_item_ms(&services0, shipments);
        let peak = proc_status_kib(peer.pid(), "VmHWM:").unwrap_or(0);

        publisher.close().await?;
        let _ = conn.close(200, "done".into()).await;
        // The peer stopped, its connections close and report their counts.
        peer.kill();
        let database = super::support::db_activity_after_disconnect(&pool)
            .await
            .per_item(&db0, shipments);

        let mut completions: Vec<DateTime<Utc>> = sqlx::query_scalar(
            "select completed_at from captures where status = 'succeeded'",
        )
        .fetch_all(&pool)
        .await?;
        let captured = completions.len() as u64;
        let last = completions.iter().max().copied().unwrap_or(t0);
        let elapsed = (last - t0).num_microseconds().unwrap_or(0) as f64 / 1e6;
        let overall = if elapsed > 0.0 {
            shipments as f64 / elapsed
        } else {
            0.0
        };
        let steady = super::e2e::steady_rate(&mut completions).unwrap_or(overall);
        let peer_ms = cpu * 1e3 / shipments.max(1) as f64;
        Ok::<_, anyhow::Error>(PeerRun {
            latency_ms,
            settings: format!(
                "prefetch {PEER_PREFETCH}, one task per delivery, pool {PEER_POOL}, 2 transactions + 1 POST per shipment"
            ),
            shipments,
            throughput_per_s: steady,
            overall_throughput_per_s: overall,
            peer_cpu_ms_per_shipment: peer_ms,
            service_cpu_ms_per_shipment: services,
            pipeline_cpu_ms_per_shipment: peer_ms + services.postgres + services.rabbitmq,
            peer_peak_rss_mb: peak as f64 * 1024.0 / 1e6,
            database,
            captured,
        })
    }
    .await;
    drop(peer);
    provider.stop().await;
    pool.close().await;
    result
}

/// Polls `ready` every 50 ms until it says yes, or fails after `within`.
async fn wait_until<F, Fut>(within: Duration, mut ready: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + within;
    loop {
        if ready().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not done within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_amount_is_the_lines_value_in_minor_units() {
        let lines = serde_json::json!([
            {"line_id": "L1", "quantity": 2, "unit_amount": 1000, "tax_amount": 100, "discount_amount": 40},
            {"line_id": "L2", "quantity": 1, "unit_amount": 7, "tax_amount": 0, "discount_amount": 0}
        ]);
        let items =
            serde_json::json!([{"line_id": "L1", "quantity": 1}, {"line_id": "L2", "quantity": 1}]);
        assert_eq!(shipped_amount(&lines, &items), 1000 + 30 + 7);
    }
}

//! End to end: the real worker binary as a child process, a fresh database and queue, and an
//! in-process sandbox provider with latency L.
//!
//! A latency run registers its orders first (checkout authorizes long before the warehouse
//! ships), then publishes every shipment as fast as the broker confirms them and measures
//! throughput from the first publish to the last capture recorded as succeeded. A second set
//! of orders is then shipped at half that throughput to measure latency from publish to
//! capture succeeded. A backlog run publishes everything first and starts the worker after.
//! Each run ends with a check of the promises against the sandbox's request ledger.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use super::BenchOptions;
use super::report::{Backlog, EndToEnd, Paced, PromiseCheck};
use super::support::{
    BenchEnv, PUBLISH_WINDOW, Percentiles, PipelinedPublisher, WorkerProcess, Workload,
    service_cpu_seconds,
};
use crate::provider::sandbox::{self, NewAuthorization, Sandbox, SandboxOptions};
use crate::storage::Store;

/// No capture recorded for this long while work remains: the run has stalled.
const STALL: Duration = Duration::from_secs(60);

pub async fn latency_run(
    env: &BenchEnv,
    options: &BenchOptions,
    latency_ms: u64,
) -> anyhow::Result<EndToEnd> {
    let (db_url, store) = env.fresh_database(2).await?;
    let topology = env.fresh_topology().await?;
    let (sandbox_url, sb, server) = sandbox::spawn(SandboxOptions {
        latency: Duration::from_millis(latency_ms),
        api_key: None,
    })
    .await?;
    let saturated = Workload {
        prefix: format!("{}-L{latency_ms}-a", env.run_id),
        orders: options.orders,
        shipments: options.shipments_per_order,
    };
    authorize(&sb, &saturated)?;
    let mut worker = WorkerProcess::spawn(
        env,
        &db_url,
        &topology,
        &sandbox_url,
        &format!("worker-latency-{latency_ms}"),
    )?;
    worker.wait_ready(Duration::from_secs(30)).await?;
    let result = async {
        let conn = env.amqp().await?;
        let mut publisher =
            PipelinedPublisher::open(&conn, &topology.exchange, PUBLISH_WINDOW).await?;
        register(&mut publisher, &store, &saturated).await?;

        // Saturated: every shipment as fast as the broker confirms them.
        let cpu0 = worker.cpu_seconds().unwrap_or(0.0);
        let services0 = service_cpu_seconds();
        let t0 = Utc::now();
        let started = Instant::now();
        let mut published = HashMap::new();
        for (i, j) in saturated.shipment_order() {
            let now = Utc::now();
            publisher
                .publish("shipment.shipped", &saturated.shipment(i, j, now))
                .await?;
            published.insert(key(&saturated.order_id(i), j), now);
        }
        publisher.flush().await?;
        let publish_seconds = started.elapsed().as_secs_f64();
        let shipments = saturated.orders * saturated.shipments;
        let progress = wait_captured(&store, &saturated, &worker, poll_for(shipments)).await?;
        let cpu1 = worker.cpu_seconds().unwrap_or(cpu0);
        let services = service_cpu_seconds().per_item_ms(&services0, shipments);
        let (lat, last) = latencies(&store, &saturated, &published).await?;
        let elapsed = (last - t0).num_microseconds().unwrap_or(0) as f64 / 1e6;
        let throughput = if elapsed > 0.0 {
            shipments as f64 / elapsed
        } else {
            0.0
        };

        // Paced at half the throughput: latency when the worker is not the bottleneck.
        let rate = (throughput / 2.0).max(1.0);
        let wanted = (rate * options.paced_duration.as_secs_f64()).round() as usize;
        let paced_orders = wanted
            .div_ceil(options.shipments_per_order)
            .clamp(1, options.orders.max(1));
        let paced = Workload {
            prefix: format!("{}-L{latency_ms}-b", env.run_id),
            orders: paced_orders,
            shipments: options.shipments_per_order,
        };
        authorize(&sb, &paced)?;
        register(&mut publisher, &store, &paced).await?;
        let mut paced_published = HashMap::new();
        let start = tokio::time::Instant::now();
        for (n, (i, j)) in paced.shipment_order().enumerate() {
            tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / rate)).await;
            let now = Utc::now();
            publisher
                .publish("shipment.shipped", &paced.shipment(i, j, now))
                .await?;
            paced_published.insert(key(&paced.order_id(i), j), now);
        }
        publisher.flush().await?;
        let paced_shipments = paced.orders * paced.shipments;
        wait_captured(&store, &paced, &worker, poll_for(paced_shipments)).await?;
        let (paced_lat, _) = latencies(&store, &paced, &paced_published).await?;
        let cpu_total = worker.cpu_seconds().unwrap_or(cpu1);
        let peak_rss = worker.peak_rss_kib().unwrap_or(0);
        publisher.close().await?;
        let _ = conn.close(200, "done".into()).await;

        let mut promises = check_promises(&sb, &store, &saturated).await?;
        promises.add(check_promises(&sb, &store, &paced).await?);
        Ok::<_, anyhow::Error>(EndToEnd {
            latency_ms,
            orders: saturated.orders,
            shipments_per_order: saturated.shipments,
            shipments,
            publish_seconds,
            publish_per_s: shipments as f64 / publish_seconds.max(1e-9),
            elapsed_seconds: elapsed,
            throughput_per_s: throughput,
            saturated_latency_ms: Percentiles::of(lat),
            paced: Paced {
                rate_per_s: rate,
                shipments: paced_shipments,
                latency_ms: Percentiles::of(paced_lat),
            },
            worker_cpu_seconds: cpu1 - cpu0,
            worker_cpu_ms_per_shipment: (cpu1 - cpu0) * 1e3 / shipments as f64,
            service_cpu_ms_per_shipment: services,
            worker_cpu_seconds_total: cpu_total,
            worker_peak_rss_mb: kib_to_mb(peak_rss),
            max_unsettled_captures: progress.max_unsettled,
            ratio_to_tighter_raw: None,
            ratio_to_postgres_naive: None,
            promises,
        })
    }
    .await;
    finish(worker, server, &store, result).await
}

pub async fn backlog_run(env: &BenchEnv, options: &BenchOptions) -> anyhow::Result<Backlog> {
    let (db_url, store) = env.fresh_database(2).await?;
    let topology = env.fresh_topology().await?;
    let latency_ms = options.backlog_latency_ms;
    let (sandbox_url, sb, server) = sandbox::spawn(SandboxOptions {
        latency: Duration::from_millis(latency_ms),
        api_key: None,
    })
    .await?;
    let work = Workload {
        prefix: format!("{}-backlog", env.run_id),
        orders: options.backlog.div_ceil(options.shipments_per_order),
        shipments: options.shipments_per_order,
    };
    authorize(&sb, &work)?;
    let shipments = work.orders * work.shipments;
    let messages = work.orders + shipments;

    // Everything first: the orders, then every shipment, all waiting in the queue.
    let conn = env.amqp().await?;
    let mut publisher = PipelinedPublisher::open(&conn, &topology.exchange, PUBLISH_WINDOW).await?;
    let started = Instant::now();
    let now = Utc::now();
    for i in 0..work.orders {
        publisher
            .publish("order.authorized", &work.authorized(i, now))
            .await?;
    }
    for (i, j) in work.shipment_order() {
        publisher
            .publish("shipment.shipped", &work.shipment(i, j, now))
            .await?;
    }
    publisher.close().await?;
    let publish_seconds = started.elapsed().as_secs_f64();
    let _ = conn.close(200, "published".into()).await;

    let t0 = Utc::now();
    let services0 = service_cpu_seconds();
    let worker = WorkerProcess::spawn(env, &db_url, &topology, &sandbox_url, "worker-backlog")?;
    let result = async {
        let progress = wait_captured(&store, &work, &worker, poll_for(shipments)).await?;
        let last: Option<DateTime<Utc>> = sqlx::query_scalar(
            "select max(completed_at) from captures where kind = 'capture' and status = 'succeeded'",
        )
        .fetch_one(store.pool())
        .await?;
        let elapsed = last
            .map(|l| (l - t0).num_microseconds().unwrap_or(0) as f64 / 1e6)
            .unwrap_or(0.0);
        let cpu = worker.cpu_seconds().unwrap_or(0.0);
        let services = service_cpu_seconds().per_item_ms(&services0, shipments);
        let peak = worker.peak_rss_kib().unwrap_or(0);
        let samples = &progress.rss_samples;
        let half = samples.len() / 2;
        let peak_of = |s: &[(f64, u64)]| s.iter().map(|x| x.1).max().unwrap_or(0);
        let first_half = peak_of(samples.get(..half).unwrap_or(&[]));
        let second_half = peak_of(samples.get(half..).unwrap_or(&[]));
        let promises = check_promises(&sb, &store, &work).await?;
        Ok::<_, anyhow::Error>(Backlog {
            latency_ms,
            orders: work.orders,
            shipments,
            messages,
            publish_seconds,
            drain_seconds: elapsed,
            shipments_per_s: if elapsed > 0.0 {
                shipments as f64 / elapsed
            } else {
                0.0
            },
            messages_per_s: if elapsed > 0.0 {
                messages as f64 / elapsed
            } else {
                0.0
            },
            worker_cpu_seconds: cpu,
            worker_cpu_ms_per_shipment: cpu * 1e3 / shipments as f64,
            service_cpu_ms_per_shipment: services,
            worker_peak_rss_mb: kib_to_mb(peak),
            rss_peak_first_half_mb: kib_to_mb(first_half),
            rss_peak_second_half_mb: kib_to_mb(second_half),
            rss_samples_mb: samples
                .iter()
                .map(|(t, kib)| (round1(*t), round1(kib_to_mb(*kib))))
                .collect(),
            max_unsettled_captures: progress.max_unsettled,
            promises,
        })
    }
    .await;
    finish(worker, server, &store, result).await
}

/// Stops the worker and the sandbox whatever the result; keeps the worker's log on failure.
async fn finish<T>(
    worker: WorkerProcess,
    server: sandbox::SandboxServer,
    store: &Store,
    result: anyhow::Result<T>,
) -> anyhow::Result<T> {
    let log = worker.log.clone();
    worker.stop(Duration::from_secs(10)).await;
    let _ = server.stop().await;
    store.pool().close().await;
    result.map_err(|e| {
        let kept = std::env::temp_dir().join(
            log.file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default(),
        );
        let note = match std::fs::copy(&log, &kept) {
            Ok(_) => format!("the worker's log is in {}", kept.display()),
            Err(_) => "the worker's log could not be kept".to_owned(),
        };
        e.context(note)
    })
}

fn authorize(sb: &Sandbox, work: &Workload) -> anyhow::Result<()> {
    let total = work.order_total();
    for i in 0..work.orders {
        sb.create_authorization(NewAuthorization::new(
            work.authorization_id(i),
            total,
            "USD",
        ))
        .map_err(|e| anyhow::anyhow!("creating sandbox authorization: {e}"))?;
    }
    Ok(())
}

/// Publishes the orders and waits until the worker has registered them all.
async fn register(
    publisher: &mut PipelinedPublisher,
    store: &Store,
    work: &Workload,
) -> anyhow::Result<()> {
    let now = Utc::now();
    for i in 0..work.orders {
        publisher
            .publish("order.authorized", &work.authorized(i, now))
            .await?;
    }
    publisher.flush().await?;
    let pattern = format!("{}-%", work.prefix);
    let deadline = Instant::now() + STALL;
    loop {
        let n: i64 = sqlx::query_scalar("select count(*) from orders where order_id like $1")
            .bind(&pattern)
            .fetch_one(store.pool())
            .await?;
        if n as usize >= work.orders {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {n} of {} orders were registered within {STALL:?}",
                work.orders
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn key(order_id: &str, shipment: usize) -> String {
    format!("{order_id}/S{shipment}")
}

fn poll_for(shipments: usize) -> Duration {
    // Counting a large table often would compete with the worker for the CPU.
    if shipments > 20_000 {
        Duration::from_millis(500)
    } else {
        Duration::from_millis(200)
    }
}

struct Progress {
    max_unsettled: i64,
    /// (seconds since the wait began, worker RSS in KiB)
    rss_samples: Vec<(f64, u64)>,
}

/// Waits until every capture of the workload succeeded; fails when one ends otherwise or
/// nothing moves for a minute.
async fn wait_captured(
    store: &Store,
    work: &Workload,
    worker: &WorkerProcess,
    every: Duration,
) -> anyhow::Result<Progress> {
    let expected = (work.orders * work.shipments) as i64;
    let pattern = format!("{}-%", work.prefix);
    let started = Instant::now();
    let mut last_change = Instant::now();
    let mut last_done = -1;
    let mut progress = Progress {
        max_unsettled: 0,
        rss_samples: Vec::new(),
    };
    loop {
        let (done, bad, total): (i64, i64, i64) = sqlx::query_as(
            "select count(*) filter (where status = 'succeeded'),
                    count(*) filter (where status in ('declined', 'failed', 'attention', 'blocked')),
                    count(*)
             from captures where order_id like $1",
        )
        .bind(&pattern)
        .fetch_one(store.pool())
        .await
        .context("counting captures")?;
        if let Some(rss) = worker.rss_kib() {
            progress
                .rss_samples
                .push((started.elapsed().as_secs_f64(), rss));
        }
        progress.max_unsettled = progress.max_unsettled.max(total - done);
        if bad > 0 {
            bail!("{bad} capture(s) ended declined, failed, blocked or needing attention");
        }
        if done >= expected {
            return Ok(progress);
        }
        if done != last_done {
            last_done = done;
            last_change = Instant::now();
        } else if last_change.elapsed() > STALL {
            bail!(
                "stalled: {done} of {expected} captures succeeded, none in the last {STALL:?}; see {}",
                worker.log.display()
            );
        }
        tokio::time::sleep(every).await;
    }
}

/// Latencies publish → capture succeeded in milliseconds, and the last completion time.
async fn latencies(
    store: &Store,
    work: &Workload,
    published: &HashMap<String, DateTime<Utc>>,
) -> anyhow::Result<(Vec<f64>, DateTime<Utc>)> {
    let rows: Vec<(String, String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "select order_id, cause_id, completed_at from captures
         where order_id like $1 and kind = 'capture' and status = 'succeeded'",
    )
    .bind(format!("{}-%", work.prefix))
    .fetch_all(store.pool())
    .await
    .context("reading capture times")?;
    let mut out = Vec::with_capacity(rows.len());
    let mut last = DateTime::<Utc>::MIN_UTC;
    for (order_id, shipment, completed) in rows {
        let Some(done) = completed else { continue };
        last = last.max(done);
        if let Some(at) = published.get(&format!("{order_id}/{shipment}")) {
            out.push((done - *at).num_microseconds().unwrap_or(0) as f64 / 1e3);
        }
    }
    Ok((out, last))
}

/// P1, P2, P3 and P5 against the sandbox's request ledger and the database: every shipment
/// captured once, no key moving money twice, nothing over the authorization, one final capture
/// per order.
async fn check_promises(
    sb: &Sandbox,
    store: &Store,
    work: &Workload,
) -> anyhow::Result<PromiseCheck> {
    let ledger = sb.ledger();
    let prefix = format!("pi_{}_", work.prefix.replace('-', "_"));
    let mut moved: HashMap<&str, u32> = HashMap::new();
    let mut terms: HashMap<&str, (Option<i64>, Option<bool>)> = HashMap::new();
    let mut key_reused_with_other_terms = 0;
    for e in &ledger {
        if !e
            .authorization_id
            .as_deref()
            .is_some_and(|a| a.starts_with(&prefix))
        {
            continue;
        }
        let Some(k) = e.idempotency_key.as_deref() else {
            continue;
        };
        let t = (e.amount_to_capture, e.final_capture);
        if let Some(prev) = terms.insert(k, t)
            && prev != t
        {
            key_reused_with_other_terms += 1;
        }
        if e.captured_amount > 0 {
            *moved.entry(k).or_default() += 1;
        }
    }
    let duplicated = moved.values().filter(|&&n| n > 1).count() as u64;
    let total = work.order_total();
    let mut lost = 0u64;
    let mut over = 0u64;
    for i in 0..work.orders {
        match sb.authorization(&work.authorization_id(i)) {
            Some(a) => {
                if a.amount_received > a.amount {
                    over += 1;
                }
                if a.amount_received < total {
                    lost += 1;
                }
            }
            None => lost += 1,
        }
    }
    let finals: i64 = sqlx::query_scalar(
        "select count(*) from captures where order_id like $1 and is_final and status = 'succeeded'",
    )
    .bind(format!("{}-%", work.prefix))
    .fetch_one(store.pool())
    .await?;
    Ok(PromiseCheck {
        orders: work.orders as u64,
        shipments: (work.orders * work.shipments) as u64,
        captured_keys: moved.len() as u64,
        orders_not_fully_captured: lost,
        keys_that_moved_money_twice: duplicated,
        keys_sent_with_other_terms: key_reused_with_other_terms,
        orders_over_captured: over,
        orders_without_one_final: (work.orders as i64 - finals).unsigned_abs(),
    })
}

fn kib_to_mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

//! End to end: the real worker binary as a child process, a fresh database and queue, and an
//! in-process sandbox provider with latency L.
//!
//! A latency run registers its orders first (checkout authorizes long before the warehouse
//! ships), then publishes every shipment as fast as the broker confirms them. Throughput is
//! the steady rate, from the 10th to the 90th percentile of capture completion times (the
//! start-up and the tail are left out: an order's last parcels wait for its earlier captures,
//! one at a time, so a short run's tail grows with provider latency); the overall rate from
//! the first publish to the last capture is reported too. A second set of orders is then
//! shipped at half the steady throughput to measure latency from publish to capture succeeded. A backlog run publishes everything first and starts the worker after.
//! Each run ends with a check of the promises against the sandbox's request ledger.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::BenchOptions;
use super::report::{Backlog, EndToEnd, Paced, PromiseCheck, StageLatency, Statements};
use super::support::{
    BenchEnv, PUBLISH_WINDOW, Percentiles, PipelinedPublisher, WorkerProcess, Workload,
    checkpoints, service_cpu_seconds,
};
use capture_worker::sandbox::{self, NewAuthorization, Sandbox, SandboxOptions};
use capture_worker::storage::Store;

/// No capture recorded for this long while work remains: the run has stalled.
const STALL: Duration = Duration::from_secs(60);

pub async fn latency_run(
    env: &BenchEnv,
    options: &BenchOptions,
    latency_ms: u64,
) -> anyhow::Result<EndToEnd> {
    let (db_url, store) = env.fresh_database(2).await?;
    let topology = env.fresh_topology().await?;
    let provider = CountingSandbox::spawn(Duration::from_millis(latency_ms)).await?;
    let (sandbox_url, sb) = (provider.url.clone(), provider.sandbox.clone());
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
        let services0 = service_cpu_seconds(&env.services);
        let baseline = provider.captured();
        let db0 = super::support::db_activity(store.pool()).await;
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
        let progress = wait_captured(&store, &saturated, &worker, &provider, baseline).await?;
        let cpu1 = worker.cpu_seconds().unwrap_or(cpu0);
        let services = service_cpu_seconds(&env.services).per_item_ms(&services0, shipments);
        // Waiting for PostgreSQL's counts costs 10 s: not in the smoke run.
        let database = if options.quick {
            None
        } else {
            Some(
                super::support::settled_db_activity(store.pool())
                    .await
                    .per_item(&db0, shipments),
            )
        };
        let mut saturated_latencies = latencies(&store, &saturated, &published).await?;
        let last = saturated_latencies.last;
        let steady = steady_rate(&mut saturated_latencies.completions);
        let (lat, _) = saturated_latencies.stages();
        let statements = statements(&store, &saturated).await?;
        let elapsed = (last - t0).num_microseconds().unwrap_or(0) as f64 / 1e6;
        let overall = if elapsed > 0.0 {
            shipments as f64 / elapsed
        } else {
            0.0
        };
        let throughput = steady.unwrap_or(overall);

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
        let baseline = provider.captured();
        let checkpoints0 = checkpoints(&store).await;
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
        wait_captured(&store, &paced, &worker, &provider, baseline).await?;
        let paced_checkpoints = checkpoints0.until(checkpoints(&store).await);
        let (paced_lat, paced_stages) = latencies(&store, &paced, &paced_published).await?.stages();
        let cpu_total = worker.cpu_seconds().unwrap_or(cpu1);
        let peak_rss = worker.peak_rss_kib().unwrap_or(0);
        publisher.close().await?;
        let _ = conn.close(200, "done".into()).await;

        let mut promises = check_promises(&sb, &store, &saturated).await?;
        promises.add(check_promises(&sb, &store, &paced).await?);
        let worker_cpu_ms = (cpu1 - cpu0) * 1e3 / shipments as f64;
        Ok::<_, anyhow::Error>(EndToEnd {
            latency_ms,
            worker_settings: super::report::WorkerSettings::of(&env.settings, &env.overrides),
            orders: saturated.orders,
            shipments_per_order: saturated.shipments,
            shipments,
            publish_seconds,
            publish_per_s: shipments as f64 / publish_seconds.max(1e-9),
            elapsed_seconds: elapsed,
            throughput_per_s: throughput,
            overall_throughput_per_s: overall,
            saturated_latency_ms: Percentiles::of(lat),
            paced: Paced {
                rate_per_s: rate,
                shipments: paced_shipments,
                latency_ms: Percentiles::of(paced_lat),
                stages: paced_stages,
                checkpoints: paced_checkpoints,
            },
            worker_cpu_seconds: cpu1 - cpu0,
            worker_cpu_ms_per_shipment: worker_cpu_ms,
            service_cpu_ms_per_shipment: services,
            pipeline_cpu_ms_per_shipment: worker_cpu_ms + services.postgres + services.rabbitmq,
            ratio_to_peer: None,
            cpu_ratio_to_peer: None,
            worker_cpu_seconds_total: cpu_total,
            worker_peak_rss_mb: kib_to_mb(peak_rss),
            max_unsettled_captures: progress.max_unsettled,
            statements,
            database,
            ratio_to_tighter_raw: None,
            ratio_to_postgres_naive: None,
            promises,
        })
    }
    .await;
    finish(worker, provider, &store, result).await
}

/// Publishes `shipments` (and their orders) first, then starts the worker and waits until all
/// are captured at provider latency `latency_ms`. `name` tells runs apart (`backlog`,
/// `inflight`).
pub async fn backlog_run(
    env: &BenchEnv,
    options: &BenchOptions,
    name: &str,
    shipments: usize,
    latency_ms: u64,
) -> anyhow::Result<Backlog> {
    let (db_url, store) = env.fresh_database(2).await?;
    let topology = env.fresh_topology().await?;
    let provider = CountingSandbox::spawn(Duration::from_millis(latency_ms)).await?;
    let (sandbox_url, sb) = (provider.url.clone(), provider.sandbox.clone());
    let work = Workload {
        prefix: format!("{}-{name}", env.run_id),
        orders: shipments.div_ceil(options.shipments_per_order),
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
    let bar = capture_worker::app::operator::Progress::new("bench publish", messages);
    for i in 0..work.orders {
        publisher
            .publish("order.authorized", &work.authorized(i, now))
            .await?;
        bar.set_position(i as u64 + 1);
    }
    for (n, (i, j)) in work.shipment_order().enumerate() {
        publisher
            .publish("shipment.shipped", &work.shipment(i, j, now))
            .await?;
        bar.set_position((work.orders + n + 1) as u64);
    }
    publisher.close().await?;
    bar.finish(&format!("{messages} messages published"));
    let publish_seconds = started.elapsed().as_secs_f64();
    let _ = conn.close(200, "published".into()).await;

    let t0 = Utc::now();
    let services0 = service_cpu_seconds(&env.services);
    let worker = WorkerProcess::spawn(
        env,
        &db_url,
        &topology,
        &sandbox_url,
        &format!("worker-{name}"),
    )?;
    let result = async {
        let progress = wait_captured(&store, &work, &worker, &provider, 0).await?;
        let mut completions: Vec<DateTime<Utc>> = sqlx::query_scalar(
            "select completed_at from captures where kind = 'capture' and status = 'succeeded'",
        )
        .fetch_all(store.pool())
        .await?;
        let last = completions.iter().max().copied();
        let steady = steady_rate(&mut completions);
        let elapsed = last
            .map(|l| (l - t0).num_microseconds().unwrap_or(0) as f64 / 1e6)
            .unwrap_or(0.0);
        let cpu = worker.cpu_seconds().unwrap_or(0.0);
        let services = service_cpu_seconds(&env.services).per_item_ms(&services0, shipments);
        let peak = worker.peak_rss_kib().unwrap_or(0);
        // Memory over the drain once it runs at full speed (a quarter of the captures done):
        // the peak while the next third is captured against the peak during the rest.
        let samples = &progress.rss_samples;
        let expected = shipments as i64;
        let peak_between = |from: i64, to: i64| {
            samples
                .iter()
                .filter(|(_, _, done)| *done * 4 >= from && *done * 4 < to)
                .map(|(_, rss, _)| *rss)
                .max()
                .unwrap_or(0)
        };
        // In quarters of `expected`, times 4 to stay in integers: [1/4, 7/12) and [7/12, 1].
        let middle = peak_between(expected, expected * 7 / 3);
        let end = peak_between(expected * 7 / 3, expected * 4 + 1);
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
            steady_shipments_per_s: steady.unwrap_or(0.0),
            messages_per_s: if elapsed > 0.0 {
                messages as f64 / elapsed
            } else {
                0.0
            },
            worker_cpu_seconds: cpu,
            worker_cpu_ms_per_shipment: cpu * 1e3 / shipments as f64,
            service_cpu_ms_per_shipment: services,
            worker_peak_rss_mb: kib_to_mb(peak),
            rss_peak_middle_mb: kib_to_mb(middle),
            rss_peak_end_mb: kib_to_mb(end),
            rss_samples_mb: samples
                .iter()
                .map(|(t, kib, done)| (round1(*t), round1(kib_to_mb(*kib)), *done))
                .collect(),
            max_unsettled_captures: progress.max_unsettled,
            promises,
        })
    }
    .await;
    finish(worker, provider, &store, result).await
}

/// Stops the worker and the sandbox whatever the result; keeps the worker's log on failure.
async fn finish<T>(
    worker: WorkerProcess,
    provider: CountingSandbox,
    store: &Store,
    result: anyhow::Result<T>,
) -> anyhow::Result<T> {
    let log = worker.log.clone();
    worker.stop(Duration::from_secs(10)).await;
    provider.stop().await;
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
            // Statistics for the tables intake looks up by key, as autovacuum keeps them for
            // a database in service. A fresh one has none, and the worker's cached plans
            // would scan those tables whole as they grow (inbox lookups at ~100 ms a batch)
            // until autovacuum's first visit, a minute or more later: a cold start, not the
            // steady state measured here. Tables still empty are left alone: statistics
            // saying "empty" would mislead the planner more than none.
            sqlx::query("analyze orders, order_lines, inbox_messages")
                .execute(store.pool())
                .await?;
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

struct Progress {
    max_unsettled: i64,
    /// (seconds since the wait began, worker RSS in KiB, captures the provider made)
    rss_samples: Vec<(f64, u64, i64)>,
}

/// The sandbox provider with latency L, served with a count of the captures it answered with
/// success, so progress is followed without querying (and loading) the database.
struct CountingSandbox {
    url: String,
    sandbox: Sandbox,
    captured: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl CountingSandbox {
    async fn spawn(latency: Duration) -> anyhow::Result<CountingSandbox> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let sandbox = Sandbox::new(SandboxOptions {
            latency,
            api_key: None,
        });
        let captured = Arc::new(AtomicU64::new(0));
        let counter = captured.clone();
        let app = sandbox::router(sandbox.clone()).layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let counter = counter.clone();
                async move {
                    let capture = request.method() == axum::http::Method::POST
                        && request.uri().path().ends_with("/capture");
                    let response = next.run(request).await;
                    if capture && response.status().is_success() {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    response
                }
            },
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(CountingSandbox {
            url,
            sandbox,
            captured,
            stop: Some(stop),
            task,
        })
    }

    fn captured(&self) -> u64 {
        self.captured.load(Ordering::Relaxed)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        self.task.abort();
    }
}

/// Waits until every capture of the workload is recorded as succeeded; fails when one ends
/// otherwise or nothing moves for a minute. `baseline` is the sandbox's count before the
/// workload was published. Progress comes from the sandbox's count; the
/// database is asked only for the small set of unsettled captures (a partial index) and, at
/// the end, for the outcome.
async fn wait_captured(
    store: &Store,
    work: &Workload,
    worker: &WorkerProcess,
    provider: &CountingSandbox,
    baseline: u64,
) -> anyhow::Result<Progress> {
    let expected = (work.orders * work.shipments) as i64;
    let pattern = format!("{}-%", work.prefix);
    let started = Instant::now();
    let mut last_change = Instant::now();
    let mut last_done = -1;
    let mut last_unsettled_check = Instant::now();
    let mut progress = Progress {
        max_unsettled: 0,
        rss_samples: Vec::new(),
    };
    // On a terminal, a bar through the whole wait (a backlog drain takes minutes).
    let bar = capture_worker::app::operator::Progress::new("bench captures", expected as usize);
    loop {
        let done = i64::try_from(provider.captured().saturating_sub(baseline)).unwrap_or(0);
        bar.set_position(u64::try_from(done).unwrap_or(0));
        if let Some(rss) = worker.rss_kib() {
            progress
                .rss_samples
                .push((started.elapsed().as_secs_f64(), rss, done));
        }
        if last_unsettled_check.elapsed() >= Duration::from_secs(1) {
            last_unsettled_check = Instant::now();
            let unsettled: i64 = sqlx::query_scalar(
                "select count(*) from captures
                 where status in ('queued', 'retrying', 'pending', 'in_flight')",
            )
            .fetch_one(store.pool())
            .await
            .context("counting unsettled captures")?;
            progress.max_unsettled = progress.max_unsettled.max(unsettled);
        }
        let stalled = done == last_done && last_change.elapsed() > STALL;
        if done >= expected || stalled {
            let (recorded, bad): (i64, i64) = sqlx::query_as(
                "select count(*) filter (where status = 'succeeded'),
                        count(*) filter (where status in ('declined', 'failed', 'attention', 'blocked'))
                 from captures where order_id like $1",
            )
            .bind(&pattern)
            .fetch_one(store.pool())
            .await
            .context("counting captures")?;
            if bad > 0 {
                bail!("{bad} capture(s) ended declined, failed, blocked or needing attention");
            }
            if recorded >= expected {
                bar.finish(&format!("{recorded} captures succeeded"));
                return Ok(progress);
            }
            if stalled {
                bail!(
                    "stalled: {recorded} of {expected} captures succeeded, none in the last {STALL:?}; see {}",
                    worker.log.display()
                );
            }
        }
        if done != last_done {
            last_done = done;
            last_change = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Captures per second between the 10th and the 90th percentile of completion times; `None`
/// for too small a sample.
pub fn steady_rate(completions: &mut [DateTime<Utc>]) -> Option<f64> {
    let n = completions.len();
    if n < 20 {
        return None;
    }
    completions.sort_unstable();
    let (from, to) = (n / 10, n - n / 10 - 1);
    let seconds =
        (*completions.get(to)? - *completions.get(from)?).num_microseconds()? as f64 / 1e6;
    (seconds > 0.0).then(|| (to - from) as f64 / seconds)
}

/// How many transactions wrote the workload's shipments, claimed and recorded its captures:
/// rows written by one transaction share its `now()`, so distinct times count transactions.
async fn statements(store: &Store, work: &Workload) -> anyhow::Result<Statements> {
    let (intake, claims, records): (i64, i64, i64) = sqlx::query_as(
        "select (select count(distinct created_at) from shipments where order_id like $1),
                (select count(distinct first_attempt_at) from captures where order_id like $1),
                (select count(distinct completed_at) from captures where order_id like $1)",
    )
    .bind(format!("{}-%", work.prefix))
    .fetch_one(store.pool())
    .await
    .context("counting transactions")?;
    let shipments = (work.orders * work.shipments) as f64;
    let per = |n: i64| if n > 0 { shipments / n as f64 } else { 0.0 };
    Ok(Statements {
        intake_transactions: intake,
        shipments_per_intake_transaction: per(intake),
        claim_statements: claims,
        captures_per_claim_statement: per(claims),
        record_statements: records,
        captures_per_record_statement: per(records),
    })
}

/// Latencies publish → capture succeeded in milliseconds, split into stages, and the last
/// completion time.
struct Latencies {
    total: Vec<f64>,
    /// Publish → intake transaction began (waiting in the queue, batching).
    intake: Vec<f64>,
    /// Intake → the provider call began (the intake transaction, the claim, a call slot).
    to_call: Vec<f64>,
    /// The provider call.
    call: Vec<f64>,
    /// The call's answer → recording it began.
    record: Vec<f64>,
    /// Every capture's completion time.
    completions: Vec<DateTime<Utc>>,
    last: DateTime<Utc>,
}

impl Latencies {
    fn stages(self) -> (Vec<f64>, StageLatency) {
        (
            self.total,
            StageLatency {
                queue_and_intake_ms: Percentiles::of(self.intake),
                intake_to_call_ms: Percentiles::of(self.to_call),
                call_ms: Percentiles::of(self.call),
                record_ms: Percentiles::of(self.record),
            },
        )
    }
}

async fn latencies(
    store: &Store,
    work: &Workload,
    published: &HashMap<String, DateTime<Utc>>,
) -> anyhow::Result<Latencies> {
    type Row = (
        String,
        String,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        Option<i32>,
        Option<DateTime<Utc>>,
    );
    // The attempt that captured is the capture's last one.
    let rows: Vec<Row> = sqlx::query_as(
        "select c.order_id, c.cause_id, s.created_at, a.started_at, a.latency_ms, c.completed_at
         from captures c
         left join shipments s on s.order_id = c.order_id and s.shipment_id = c.cause_id
         left join capture_attempts a on a.capture_id = c.capture_id and a.attempt_no = c.attempts
             and a.operation = 'capture'
         where c.order_id like $1 and c.kind = 'capture' and c.status = 'succeeded'",
    )
    .bind(format!("{}-%", work.prefix))
    .fetch_all(store.pool())
    .await
    .context("reading capture times")?;
    let ms = |from: DateTime<Utc>, to: DateTime<Utc>| {
        (to - from).num_microseconds().unwrap_or(0) as f64 / 1e3
    };
    let mut out = Latencies {
        total: Vec::with_capacity(rows.len()),
        intake: Vec::with_capacity(rows.len()),
        to_call: Vec::with_capacity(rows.len()),
        call: Vec::with_capacity(rows.len()),
        record: Vec::with_capacity(rows.len()),
        completions: Vec::with_capacity(rows.len()),
        last: DateTime::<Utc>::MIN_UTC,
    };
    for (order_id, shipment, intake, call_started, call_ms, completed) in rows {
        let Some(done) = completed else { continue };
        out.last = out.last.max(done);
        out.completions.push(done);
        let Some(&at) = published.get(&format!("{order_id}/{shipment}")) else {
            continue;
        };
        out.total.push(ms(at, done));
        if let (Some(intake), Some(started), Some(call_ms)) = (intake, call_started, call_ms) {
            let call_ms = f64::from(call_ms);
            out.intake.push(ms(at, intake));
            out.to_call.push(ms(intake, started));
            out.call.push(call_ms);
            out.record.push((ms(started, done) - call_ms).max(0.0));
        }
    }
    Ok(out)
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

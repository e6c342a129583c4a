//! The scenarios. Each gets its own database, exchange, queues and sandbox on the private
//! services, runs its workload against real worker processes while it breaks things, waits
//! until everything has settled, then hands the evidence to the checker.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use capture_worker::app::operator::Progress as ProgressBar;
use capture_worker::queue::publisher::{DETAIL_HEADER, REASON_HEADER};
use capture_worker::queue::topology::Topology;
use capture_worker::queue::trace::header_str;
use capture_worker::sandbox::{
    self, Fault, FaultRates, LedgerOutcome, NewAuthorization, Sandbox, SandboxOptions,
    SandboxServer, Scenario,
};
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use sqlx::{Connection, PgPool};

use crate::check::{self, DeadLetter, Evidence, Findings};
use crate::infra::{PrivatePostgres, PrivateRabbit, signal};
use crate::proxy::Proxy;
use crate::publish::{self, Progress, PublishPlan};
use crate::rng::Rng;
use crate::worker::{Fleet, WorkerConfig};
use crate::workload::{self, Expect, Message, Mix, OrderSpec, Workload};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Scaled down for CI: a few minutes on two cores.
    Ci,
    /// The sizes of issue 9 and reliability.md §4.
    Full,
}

/// Everything shared by the scenarios of one run.
pub struct Env {
    pub dir: PathBuf,
    pub pg: PrivatePostgres,
    pub rabbit: PrivateRabbit,
    pub worker_bin: PathBuf,
    pub config_dir: PathBuf,
    pub api_key: String,
    pub profile: Profile,
}

/// What one scenario came to.
pub struct Report {
    pub name: &'static str,
    pub title: &'static str,
    pub orders: usize,
    pub kills: u32,
    pub faults: Vec<String>,
    pub findings: Findings,
    pub elapsed: Duration,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.findings.violations.is_empty()
    }
}

/// One scenario's private resources.
struct Stage {
    tag: String,
    db: String,
    pool: PgPool,
    exchange: String,
    queue: String,
    /// The workers' outcomes exchange, and the subscriber queue bound to it.
    outcomes_exchange: String,
    outcomes_queue: String,
    sandbox: Sandbox,
    sandbox_url: String,
    _server: SandboxServer,
    log_dir: PathBuf,
}

impl Stage {
    async fn new(env: &Env, name: &str, seed: u64) -> anyhow::Result<Stage> {
        let tag = format!("{}{:06x}", name.to_lowercase(), seed & 0xff_ffff);
        let db = format!("cw_{tag}");
        let mut admin = sqlx::PgConnection::connect(&env.pg.url("postgres"))
            .await
            .context("connecting to the private PostgreSQL")?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "drop database if exists {db} with (force)"
        )))
        .execute(&mut admin)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {db}")))
            .execute(&mut admin)
            .await?;
        let _ = admin.close().await;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&env.pg.url(&db))
            .await?;
        capture_worker::storage::Store::from_pool(pool.clone())
            .migrate()
            .await
            .context("migrating the scenario database")?;
        let (sandbox_url, sandbox, server) = sandbox::spawn(SandboxOptions {
            latency: Duration::ZERO,
            api_key: Some(env.api_key.clone()),
        })
        .await?;
        let stage = Stage {
            exchange: format!("fulfillment-{tag}"),
            queue: format!("capture-worker-{tag}"),
            outcomes_exchange: format!("fulfillment.outcomes-{tag}"),
            outcomes_queue: format!("outcomes-subscriber-{tag}"),
            log_dir: env.dir.join(format!("logs-{tag}")),
            tag,
            db,
            pool,
            sandbox,
            sandbox_url,
            _server: server,
        };
        std::fs::create_dir_all(&stage.log_dir)?;
        stage.declare(env).await?;
        Ok(stage)
    }

    fn topology(&self) -> Topology {
        Topology::new(self.exchange.clone(), self.queue.clone())
    }

    async fn declare(&self, env: &Env) -> anyhow::Result<()> {
        let conn = lapin::Connection::connect(
            &env.rabbit.amqp_url(),
            lapin::ConnectionProperties::default(),
        )
        .await?;
        let ch = conn.create_channel().await?;
        self.topology().declare(&ch).await?;
        crate::outcomes::declare(&ch, &self.outcomes_exchange, &self.outcomes_queue).await?;
        let _ = conn.close(200, "declared".into()).await;
        Ok(())
    }

    /// Worker settings: this stage's database, queues and sandbox; fast retries and leases.
    fn worker_config(
        &self,
        env: &Env,
        amqp_url: &str,
        provider_url: &str,
        extra: &[(&str, &str)],
    ) -> WorkerConfig {
        let mut vars: Vec<(String, String)> = vec![
            ("CAPTURE__DATABASE__URL", env.pg.url(&self.db)),
            ("CAPTURE__DATABASE__MAX_CONNECTIONS", "16".into()),
            ("CAPTURE__AMQP__URL", amqp_url.to_owned()),
            ("CAPTURE__AMQP__EXCHANGE", self.exchange.clone()),
            ("CAPTURE__AMQP__QUEUE", self.queue.clone()),
            (
                "CAPTURE__AMQP__OUTCOMES_EXCHANGE",
                self.outcomes_exchange.clone(),
            ),
            ("CAPTURE__AMQP__PREFETCH", "32".into()),
            ("CAPTURE__SANDBOX__EMBEDDED", "false".into()),
            (
                "CAPTURE__PROVIDERS__SANDBOX__BASE_URL",
                provider_url.to_owned(),
            ),
            ("CAPTURE__PROVIDERS__SANDBOX__API_KEY", env.api_key.clone()),
            ("CAPTURE__CAPTURE__RETRY_INITIAL_MS", "100".into()),
            ("CAPTURE__CAPTURE__RETRY_MAX_MS", "1000".into()),
            ("CAPTURE__CAPTURE__LEASE_SECONDS", "3".into()),
            ("CAPTURE__CAPTURE__SWEEP_INTERVAL_MS", "250".into()),
            ("CAPTURE__CAPTURE__PROVIDER_TIMEOUT_MS", "1000".into()),
            ("CAPTURE__TELEMETRY__LOG_FORMAT", "json".into()),
            ("CAPTURE__TELEMETRY__LOG_LEVEL", "info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in extra {
            vars.retain(|(x, _)| x != k);
            vars.push(((*k).to_owned(), (*v).to_owned()));
        }
        WorkerConfig {
            bin: env.worker_bin.clone(),
            config_dir: env.config_dir.clone(),
            log_dir: self.log_dir.clone(),
            env: vars,
        }
    }

    fn authorize(&self, o: &OrderSpec, scenario: Scenario) -> anyhow::Result<()> {
        let mut a = NewAuthorization::new(o.auth_id.clone(), o.authorized, o.currency);
        a.scenario = Some(scenario);
        self.sandbox
            .create_authorization(a)
            .map_err(|e| anyhow::anyhow!("creating authorization {}: {e}", o.auth_id))?;
        Ok(())
    }

    /// Messages ready in the work queue (passive declare).
    async fn ready(&self, env: &Env) -> anyhow::Result<u32> {
        let conn = lapin::Connection::connect(
            &env.rabbit.amqp_url(),
            lapin::ConnectionProperties::default(),
        )
        .await?;
        let ch = conn.create_channel().await?;
        let q = ch
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let _ = conn.close(200, "done".into()).await;
        Ok(q.message_count())
    }

    /// Checks the outcome-events promise (after the run settled, before the workers stop):
    /// waits for the outbox to drain, then compares what the subscriber queue received with
    /// the ledger. Returns violations and a note.
    async fn check_outcomes(&self, env: &Env) -> anyhow::Result<(Vec<String>, String)> {
        let mut violations = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = crate::outcomes::unpublished(&self.pool).await?;
            if left == 0 {
                break;
            }
            if Instant::now() >= deadline {
                violations.push(format!(
                    "{}: {left} outcome events still unpublished 60 s after the run settled",
                    crate::outcomes::PROMISE
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let conn = lapin::Connection::connect(
            &env.rabbit.amqp_url(),
            lapin::ConnectionProperties::default(),
        )
        .await?;
        let ch = conn.create_channel().await?;
        let delivered = crate::outcomes::drain(&ch, &self.outcomes_queue).await?;
        let _ = conn.close(200, "done".into()).await;
        let (found, note) = crate::outcomes::check(&self.pool, &delivered).await?;
        violations.extend(found);
        Ok((violations, note))
    }

    async fn drain_dead_letters(&self, env: &Env) -> anyhow::Result<Vec<DeadLetter>> {
        let conn = lapin::Connection::connect(
            &env.rabbit.amqp_url(),
            lapin::ConnectionProperties::default(),
        )
        .await?;
        let ch = conn.create_channel().await?;
        let mut out = Vec::new();
        let dlq = self.topology().dead_letter();
        while let Some(msg) = ch
            .basic_get(dlq.as_str().into(), BasicGetOptions::default())
            .await?
        {
            let headers = msg.delivery.properties.headers().as_ref();
            let reason = header_str(headers, REASON_HEADER)
                .unwrap_or_else(|| format!("broker:{}", x_death_reason(headers)));
            out.push(DeadLetter {
                reason,
                detail: header_str(headers, DETAIL_HEADER).unwrap_or_default(),
                body: msg.delivery.data.clone(),
            });
            msg.delivery.ack(BasicAckOptions::default()).await?;
        }
        let _ = conn.close(200, "done".into()).await;
        Ok(out)
    }

    /// Message keys (ids, or body hashes for messages without one) the worker has accounted for.
    async fn accounted(&self) -> anyhow::Result<HashSet<String>> {
        let keys: Vec<String> = sqlx::query_scalar(
            "select message_id from inbox_messages
             union select message_id from rejected_messages where message_id is not null
             union select split_part(rejection_key, ':', 2) from rejected_messages
                   where rejection_key like 'sha256:%'",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(keys.into_iter().collect())
    }

    async fn unsettled(&self) -> anyhow::Result<(i64, i64)> {
        let r: (i64, i64) = sqlx::query_as(
            "select (select count(*) from captures where status in ('queued','in_flight','pending','retrying')),
                    (select count(*) from inbox_messages where status = 'parked')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(r)
    }

    /// Closes the pool. The database stays for a post-mortem; it goes with the private cluster.
    async fn close(self) {
        self.pool.close().await;
    }
}

fn x_death_reason(headers: Option<&FieldTable>) -> String {
    let Some(h) = headers else {
        return "unknown".into();
    };
    for (k, v) in h.inner().iter() {
        if k.as_str() == "x-first-death-reason" {
            return match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                _ => "unknown".into(),
            };
        }
    }
    "unknown".into()
}

fn message_key(m: &Message) -> String {
    m.message_id.clone().unwrap_or_else(|| m.body_hash())
}

/// How a storm scenario breaks things while the workload flows.
#[derive(Debug, Clone)]
enum Faults {
    None,
    /// SIGKILL a random worker `count` times, `delay_ms` apart, each down for `down_ms`; some
    /// kills wait for the provider to capture first and strike right after.
    Kills {
        count: u32,
        delay_ms: (u64, u64),
        down_ms: (u64, u64),
        after_capture_per_mille: u64,
    },
    /// At these points of the stream (per mille): close every connection, crash the node
    /// (SIGKILL and start), stop and start the node gracefully.
    Broker {
        close_at: Vec<usize>,
        crash_at: Vec<usize>,
        restart_at: Vec<usize>,
    },
    /// At these points: PostgreSQL crashes (immediate stop), down for `down_ms`.
    Database {
        crash_at: Vec<usize>,
        down_ms: (u64, u64),
    },
    /// Silent hangs (SIGSTOP, no RST) of the database then the broker.
    Hangs {
        db_at: usize,
        broker_at: usize,
        secs: u64,
    },
}

/// The sandbox's behaviour per authorization.
#[derive(Debug, Clone, Copy)]
struct ProviderMix {
    latency_ms: (u64, u64),
    server_error_pct: u8,
    timeout_pct: u8,
    lost_response_pct: u8,
    rate_limited_pct: u8,
    /// Capture requests answered with a 5xx the provider stores under the key and replays,
    /// before the capture executed (nothing captured) and after it (captured, answer hidden).
    stored_before_pct: u8,
    stored_after_pct: u8,
    /// Authorizations whose first capture requests meet explicit 503s and a 429, per mille.
    unavailable_first_per_mille: u64,
    /// Orders paid through the Gr4vy dialect instead of Stripe's, per mille.
    gr4vy_per_mille: u64,
}

impl ProviderMix {
    fn calm() -> Self {
        ProviderMix {
            latency_ms: (5, 30),
            server_error_pct: 0,
            timeout_pct: 0,
            lost_response_pct: 1,
            rate_limited_pct: 2,
            stored_before_pct: 0,
            stored_after_pct: 0,
            unavailable_first_per_mille: 0,
            gr4vy_per_mille: 0,
        }
    }
}

struct Storm {
    name: &'static str,
    title: &'static str,
    workers: usize,
    mix: Mix,
    /// Publish rate, messages per second.
    rate: u32,
    provider: ProviderMix,
    faults: Faults,
    settle_within: Duration,
}

/// Runs one storm: workload, workers, faults, quiescence, checks.
async fn storm(env: &mut Env, seed: u64, spec: Storm) -> anyhow::Result<Report> {
    let started = Instant::now();
    let stage = Stage::new(env, spec.name, seed).await?;
    let mut rng = Rng::fork(seed, "workload");
    let mut workload = workload::generate(&mut rng, &stage.tag, &spec.mix);
    let mut grng = Rng::fork(seed, "gr4vy");
    let gr4vy: HashSet<String> = workload
        .orders
        .iter()
        .filter(|_| grng.chance(spec.provider.gr4vy_per_mille))
        .map(|o| o.order_id.clone())
        .collect();
    pay_through(&mut workload, &gr4vy, "gr4vy");
    let mut prng = Rng::fork(seed, "provider");
    for (i, o) in workload.orders.iter().enumerate() {
        let p = spec.provider;
        let mut faults = Vec::new();
        if prng.chance(p.unavailable_first_per_mille) {
            faults = vec![
                Fault::Unavailable,
                Fault::RateLimited {
                    retry_after_secs: 1,
                },
                Fault::Unavailable,
            ];
        }
        let rates = FaultRates {
            seed: crate::rng::mix(seed ^ i as u64),
            server_error_pct: p.server_error_pct,
            timeout_pct: p.timeout_pct,
            lost_response_pct: p.lost_response_pct,
            rate_limited_pct: p.rate_limited_pct,
            stored_error_before_pct: p.stored_before_pct,
            stored_error_after_pct: p.stored_after_pct,
            timeout_ms: 1_500,
        };
        stage.authorize(
            o,
            Scenario {
                decline_on_capture: o.decline_on,
                faults,
                rates: Some(rates),
                latency_ms: prng.range(p.latency_ms.0, p.latency_ms.1),
                ..Scenario::default()
            },
        )?;
    }
    let gr4vy_url = format!("{}/gr4vy", stage.sandbox_url);
    let dialects: &[(&str, &str)] = if gr4vy.is_empty() {
        &[]
    } else {
        &[
            ("CAPTURE__PROVIDERS__GR4VY__KIND", "gr4vy"),
            ("CAPTURE__PROVIDERS__GR4VY__BASE_URL", &gr4vy_url),
            ("CAPTURE__PROVIDERS__GR4VY__API_KEY", &env.api_key),
        ]
    };
    let config = stage.worker_config(env, &env.rabbit.amqp_url(), &stage.sandbox_url, dialects);
    let mut fleet = Fleet::new(config, spec.workers);
    fleet.start_all()?;
    fleet.wait_all_ready(Duration::from_secs(60)).await?;

    let messages = Arc::new(workload.messages.clone());
    let progress = Arc::new(Progress::default());
    let publisher = tokio::spawn(publish::publish_all(
        PublishPlan {
            url: env.rabbit.amqp_url(),
            exchange: stage.exchange.clone(),
            rate: spec.rate,
            deadline: Duration::from_secs(900),
        },
        messages,
        progress.clone(),
    ));
    // On a terminal, a bar of the confirmed publishes while the faults strike.
    let ticker = {
        let progress = progress.clone();
        let bar = ProgressBar::new("fault-harness publish", workload.messages.len());
        tokio::spawn(async move {
            while !progress.finished() {
                bar.set_position(progress.confirmed.load(Ordering::Relaxed) as u64);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let confirmed = progress.confirmed.load(Ordering::Relaxed);
            bar.set_position(confirmed as u64);
            bar.finish(&format!("{confirmed} messages confirmed"));
        })
    };
    let mut frng = Rng::fork(seed, "faults");
    let mut notes = inject(env, &stage, &mut fleet, &progress, &mut frng, &spec.faults).await?;
    let reconnects = publisher
        .await
        .context("the publisher task failed")?
        .context("publishing")?;
    let _ = ticker.await;
    if reconnects > 0 {
        notes.push(format!(
            "publisher reconnected {reconnects} times and retransmitted what was unconfirmed"
        ));
    }
    let mut findings_extra = Vec::new();
    let expected: HashSet<String> = workload.messages.iter().map(message_key).collect();
    if !settle(env, &stage, &mut fleet, &expected, spec.settle_within).await? {
        findings_extra.push(format!(
            "P7: the run did not settle within {:?} (messages unaccounted, captures unsettled or the queue not empty)",
            spec.settle_within
        ));
    }
    // Every ledger transition has exactly one event, delivered at least once, in order per
    // order: checked where the broker and the workers were hit hardest.
    if matches!(spec.name, "S1" | "S3" | "S7") {
        let (violations, note) = stage.check_outcomes(env).await?;
        findings_extra.extend(violations);
        notes.push(note);
    }
    let stop_problems = fleet.stop_all(Duration::from_secs(30)).await;
    findings_extra.extend(stop_problems.into_iter().map(|p| format!("shutdown: {p}")));
    findings_extra.extend(fleet.unexpected_exits.iter().map(|e| format!("P7: {e}")));
    let left = stage.ready(env).await.unwrap_or(u32::MAX);
    if left != 0 {
        findings_extra.push(format!("P7: {left} messages left in the work queue"));
    }
    if spec.provider.stored_before_pct > 0 || spec.provider.stored_after_pct > 0 {
        notes.extend(stored_error_notes(&stage).await);
    }
    let report = finish(
        env,
        stage,
        &workload,
        &fleet,
        notes,
        findings_extra,
        spec.name,
        spec.title,
        started,
    )
    .await?;
    Ok(report)
}

/// What the stored-error faults came to: per dialect, capture requests, 500 answers and
/// replays of them; in the ledger, read-backs and their findings, new key generations.
async fn stored_error_notes(stage: &Stage) -> Vec<String> {
    let ledger = stage.sandbox.ledger();
    let mut notes = Vec::new();
    for (dialect, prefix) in [("stripe", "/v1/"), ("gr4vy", "/gr4vy/")] {
        let captures: Vec<_> = ledger
            .iter()
            .filter(|e| {
                e.method == "POST" && e.path.starts_with(prefix) && e.path.ends_with("/capture")
            })
            .collect();
        let errors = captures.iter().filter(|e| e.http_status == 500).count();
        let replayed = captures
            .iter()
            .filter(|e| e.http_status == 500 && e.replayed)
            .count();
        let hidden = captures
            .iter()
            .filter(|e| e.http_status == 500 && e.captured_amount > 0)
            .count();
        notes.push(format!(
            "{dialect}: {} capture requests, {errors} answered 500 ({replayed} of them replays of a stored 500, {hidden} hiding a capture that happened)",
            captures.len()
        ));
    }
    let counts: Result<(i64, i64, i64, i64, i64), _> = sqlx::query_as(
        "select count(*) filter (where operation = 'lookup' and outcome = 'succeeded'),
                count(*) filter (where operation = 'lookup' and outcome = 'not_captured'),
                count(*) filter (where operation = 'lookup'),
                (select count(*) from captures where key_generation > 0),
                (select count(*) from captures where status = 'attention')
         from capture_attempts",
    )
    .fetch_one(&stage.pool)
    .await;
    if let Ok((found, nothing, lookups, rekeyed, attention)) = counts {
        notes.push(format!(
            "read-backs {lookups}: {found} found the capture (recorded succeeded), {nothing} found nothing under a stuck key; {rekeyed} captures went under a new key; {attention} in attention"
        ));
    }
    notes
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    env: &Env,
    stage: Stage,
    workload: &Workload,
    fleet: &Fleet,
    notes: Vec<String>,
    extra: Vec<String>,
    name: &'static str,
    title: &'static str,
    started: Instant,
) -> anyhow::Result<Report> {
    let dead = stage.drain_dead_letters(env).await?;
    let logs = fleet.log_files();
    let canaries = vec![env.api_key.clone(), env.pg.password.clone()];
    let mut findings = check::check(&Evidence {
        workload,
        sandbox: &stage.sandbox,
        pool: &stage.pool,
        dead_letters: &dead,
        logs: &logs,
        canaries: &canaries,
    })
    .await?;
    findings.violations.extend(extra);
    let report = Report {
        name,
        title,
        orders: workload.orders.len(),
        kills: fleet.kills,
        faults: notes,
        findings,
        elapsed: started.elapsed(),
    };
    stage.close().await;
    Ok(report)
}

/// Waits until every message is accounted for, no capture is unsettled, nothing is parked
/// and the queue is empty with nothing unacknowledged — stable over a few polls.
async fn settle(
    env: &Env,
    stage: &Stage,
    fleet: &mut Fleet,
    expected: &HashSet<String>,
    within: Duration,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + within;
    let mut quiet = 0;
    // On a terminal, a bar of the messages accounted for (processed or refused).
    let bar = ProgressBar::new("fault-harness settle", expected.len());
    while Instant::now() < deadline {
        if !fleet.reap().is_empty() {
            fleet.fill()?;
        }
        let ok = async {
            let accounted = stage.accounted().await?;
            let missing = expected.iter().filter(|k| !accounted.contains(*k)).count();
            bar.set_position((expected.len() - missing) as u64);
            let (unsettled, parked) = stage.unsettled().await?;
            let ready = stage.ready(env).await?;
            anyhow::Ok(missing == 0 && unsettled == 0 && parked == 0 && ready == 0)
        }
        .await
        .unwrap_or(false);
        quiet = if ok { quiet + 1 } else { 0 };
        if quiet >= 3 {
            // Confirm with the broker's own count of unacknowledged deliveries.
            let depths = tokio::task::block_in_place(|| env.rabbit.queue_depths())?;
            let busy = depths
                .iter()
                .any(|(name, ready, unacked)| *name == stage.queue && (*ready > 0 || *unacked > 0));
            if !busy {
                bar.finish("every message accounted for, the queue empty");
                return Ok(true);
            }
            quiet = 0;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    bar.finish("did not settle in time");
    Ok(false)
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Runs the fault plan; returns what was done, for the report.
async fn inject(
    env: &mut Env,
    stage: &Stage,
    fleet: &mut Fleet,
    progress: &Progress,
    rng: &mut Rng,
    faults: &Faults,
) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    match faults {
        Faults::None => {}
        Faults::Kills {
            count,
            delay_ms,
            down_ms,
            after_capture_per_mille,
        } => {
            let mut after_capture = 0;
            for _ in 0..*count {
                sleep_ms(rng.range(delay_ms.0, delay_ms.1)).await;
                if !fleet.reap().is_empty() {
                    fleet.fill()?;
                }
                let running = fleet.running();
                if running.is_empty() {
                    fleet.fill()?;
                    continue;
                }
                let victim = running[rng.index(running.len())];
                if rng.chance(*after_capture_per_mille) {
                    // Strike right after the provider applied a capture.
                    let seen = captured_count(&stage.sandbox);
                    let until = Instant::now() + Duration::from_secs(3);
                    while captured_count(&stage.sandbox) == seen && Instant::now() < until {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    after_capture += 1;
                }
                fleet.kill(victim).await?;
                sleep_ms(rng.range(down_ms.0, down_ms.1)).await;
                fleet.start(victim)?;
            }
            notes.push(format!(
                "{count} SIGKILLs ({after_capture} right after the provider applied a capture), each worker restarted"
            ));
        }
        Faults::Broker {
            close_at,
            crash_at,
            restart_at,
        } => {
            let mut events: Vec<(usize, &str)> = close_at
                .iter()
                .map(|p| (*p, "close"))
                .chain(crash_at.iter().map(|p| (*p, "crash")))
                .chain(restart_at.iter().map(|p| (*p, "restart")))
                .collect();
            events.sort_unstable();
            for (at, what) in events {
                progress.reach(at).await;
                match what {
                    "close" => {
                        tokio::task::block_in_place(|| env.rabbit.close_all_connections())?;
                        notes.push(format!(
                            "all broker connections force-closed at {}‰ of the stream",
                            at
                        ));
                    }
                    "crash" => {
                        let down = rng.range(1_000, 2_000);
                        tokio::task::block_in_place(|| env.rabbit.crash())?;
                        sleep_ms(down).await;
                        let t = Instant::now();
                        tokio::task::block_in_place(|| env.rabbit.start_again())?;
                        notes.push(format!(
                            "broker SIGKILLed at {at}‰, down {down} ms, back after {} ms more",
                            t.elapsed().as_millis()
                        ));
                    }
                    _ => {
                        tokio::task::block_in_place(|| env.rabbit.stop())?;
                        tokio::task::block_in_place(|| env.rabbit.start_again())?;
                        notes.push(format!("broker stopped and started gracefully at {at}‰"));
                    }
                }
            }
        }
        Faults::Database { crash_at, down_ms } => {
            for at in crash_at {
                progress.reach(*at).await;
                let down = rng.range(down_ms.0, down_ms.1);
                tokio::task::block_in_place(|| env.pg.crash())?;
                sleep_ms(down).await;
                tokio::task::block_in_place(|| env.pg.start_again())?;
                notes.push(format!(
                    "PostgreSQL crashed (immediate stop) at {at}‰ of the stream, down {down} ms"
                ));
            }
        }
        Faults::Hangs {
            db_at,
            broker_at,
            secs,
        } => {
            progress.reach(*db_at).await;
            let pids = env.pg.processes()?;
            for p in &pids {
                signal(*p, "STOP")?;
            }
            sleep_ms(secs * 1000).await;
            for p in &pids {
                signal(*p, "CONT")?;
            }
            notes.push(format!(
                "PostgreSQL frozen (SIGSTOP of {} processes) for {secs} s at {db_at}‰",
                pids.len()
            ));
            progress.reach(*broker_at).await;
            let pid = env.rabbit.beam_pid()?;
            signal(pid, "STOP")?;
            sleep_ms(secs * 1000).await;
            signal(pid, "CONT")?;
            notes.push(format!(
                "RabbitMQ frozen (SIGSTOP) for {secs} s at {broker_at}‰"
            ));
        }
    }
    Ok(notes)
}

fn captured_count(sandbox: &Sandbox) -> usize {
    sandbox
        .ledger()
        .iter()
        .filter(|e| e.outcome == LedgerOutcome::Captured)
        .count()
}

// ---------------------------------------------------------------------------------------------
// The scenarios

pub const ALL: [&str; 8] = ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8"];

pub async fn run(env: &mut Env, name: &str, seed: u64) -> anyhow::Result<Report> {
    let full = env.profile == Profile::Full;
    let pick = |ci: usize, f: usize| if full { f } else { ci };
    let within = Duration::from_secs(if full { 900 } else { 150 });
    match name {
        "S1" => {
            storm(env, seed, Storm {
                name: "S1",
                title: "crash storm: SIGKILL at random moments while shipments flow",
                workers: 1,
                mix: Mix::standard(pick(300, 2_000), pick(1_500, 10_000)),
                rate: 150,
                provider: ProviderMix::calm(),
                faults: Faults::Kills {
                    count: if full { 20 } else { 5 },
                    delay_ms: if full { (200, 6_000) } else { (300, 2_500) },
                    down_ms: (0, 1_000),
                    after_capture_per_mille: 250,
                },
                settle_within: within,
            })
            .await
        }
        "S2" => s2(env, seed).await,
        "S3" => {
            storm(env, seed, Storm {
                name: "S3",
                title: "broker: forced connection close, then a broker crash and restart mid-stream",
                workers: 1,
                mix: Mix::standard(pick(100, 1_000), pick(500, 5_000)),
                rate: if full { 150 } else { 60 },
                provider: ProviderMix::calm(),
                faults: Faults::Broker {
                    close_at: vec![250],
                    crash_at: vec![500],
                    restart_at: if full { vec![750] } else { vec![] },
                },
                settle_within: within,
            })
            .await
        }
        "S4" => {
            storm(env, seed, Storm {
                name: "S4",
                title: "PostgreSQL crash and restart mid-stream",
                workers: 1,
                mix: Mix::standard(pick(100, 1_000), pick(500, 5_000)),
                rate: if full { 150 } else { 60 },
                provider: ProviderMix::calm(),
                faults: Faults::Database {
                    crash_at: if full { vec![150, 300, 450, 600, 750] } else { vec![300, 650] },
                    down_ms: (1_000, 3_000),
                },
                settle_within: within,
            })
            .await
        }
        "S5" => {
            storm(env, seed, Storm {
                name: "S5",
                title: "provider faults: 20% saved 5xx, 5% stored 5xx before and 5% after the capture executed, 5% timeouts, 5% lost responses, 429s, 503s; a quarter of the orders on Gr4vy",
                workers: 1,
                mix: Mix::standard(pick(100, 1_000), pick(500, 5_000)),
                rate: if full { 150 } else { 100 },
                provider: ProviderMix {
                    latency_ms: (5, 30),
                    server_error_pct: 20,
                    timeout_pct: 5,
                    lost_response_pct: 5,
                    rate_limited_pct: 5,
                    stored_before_pct: 5,
                    stored_after_pct: 5,
                    unavailable_first_per_mille: 100,
                    gr4vy_per_mille: 250,
                },
                faults: Faults::None,
                settle_within: within,
            })
            .await
        }
        "S6" => {
            storm(env, seed, Storm {
                name: "S6",
                title: "silent hangs: SIGSTOP of PostgreSQL, then of RabbitMQ",
                workers: 1,
                mix: Mix::standard(pick(80, 500), pick(400, 2_500)),
                rate: if full { 30 } else { 25 },
                provider: ProviderMix::calm(),
                faults: Faults::Hangs {
                    db_at: 250,
                    broker_at: 600,
                    secs: if full { 30 } else { 8 },
                },
                settle_within: within,
            })
            .await
        }
        "S7" => {
            storm(env, seed, Storm {
                name: "S7",
                title: "three workers on one queue and database, killed at random",
                workers: 3,
                mix: Mix::standard(pick(150, 1_000), pick(750, 5_000)),
                rate: if full { 150 } else { 100 },
                provider: ProviderMix::calm(),
                faults: Faults::Kills {
                    count: if full { 15 } else { 4 },
                    delay_ms: if full { (500, 4_000) } else { (500, 2_000) },
                    down_ms: (0, 1_000),
                    after_capture_per_mille: 250,
                },
                settle_within: within,
            })
            .await
        }
        "S8" => s8(env, seed).await,
        other => bail!("unknown scenario {other}; known: {}", ALL.join(", ")),
    }
}

// ---------------------------------------------------------------------------------------------
// S2: a kill at each recovery point

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    /// The intake committed; the ack never reached the broker.
    CommitAck,
    /// The capture is leased and in flight; the request never reached the provider.
    LeaseCall,
    /// The provider applied the capture; the worker never recorded it.
    ProviderRecord,
}

impl Point {
    fn label(self) -> &'static str {
        match self {
            Point::CommitAck => "after the intake commit, before the ack",
            Point::LeaseCall => "after taking the lease, before the provider call",
            Point::ProviderRecord => "after the provider's success, before recording it",
        }
    }
}

/// One order of S2 and the parcel whose processing is cut.
struct Case {
    order: usize,
    /// Index of the parcel hit by the kill.
    hit: usize,
}

async fn s2(env: &mut Env, seed: u64) -> anyhow::Result<Report> {
    let started = Instant::now();
    let stage = Stage::new(env, "S2", seed).await?;
    let mut rng = Rng::fork(seed, "workload");
    let amqp_proxy = Proxy::start(([127, 0, 0, 1], env.rabbit.port).into()).await?;
    let sandbox_addr: std::net::SocketAddr = stage
        .sandbox_url
        .trim_start_matches("http://")
        .parse()
        .context("the sandbox URL")?;
    let http_proxy = Proxy::start(sandbox_addr).await?;
    let amqp_via_proxy = format!("amqp://guest:guest@127.0.0.1:{}/%2f", amqp_proxy.port);
    let http_via_proxy = format!("http://127.0.0.1:{}", http_proxy.port);
    let config = stage.worker_config(
        env,
        &amqp_via_proxy,
        &http_via_proxy,
        // Slack for a loaded machine: the kill must land before the worker gives up waiting
        // for the held answer (its provider timeout).
        &[("CAPTURE__CAPTURE__PROVIDER_TIMEOUT_MS", "6000")],
    );
    let mut fleet = Fleet::new(config, 1);
    fleet.start(0)?;
    fleet.wait_ready(0, Duration::from_secs(60)).await?;

    let mix = Mix {
        decline_per_mille: 0,
        short_auth_per_mille: 0,
        over_auth_per_mille: 0,
        last_flag_per_mille: 0,
        ..Mix::standard(0, 0)
    };
    let mut workload = Workload::default();
    let mut cases: Vec<(Point, Vec<Case>)> = Vec::new();
    for point in [Point::CommitAck, Point::LeaseCall, Point::ProviderRecord] {
        let mut list = Vec::new();
        // A one-parcel order (its only capture is final); a three-parcel order cut at its
        // second parcel; one cut at its third, final parcel.
        for (count, hit) in [(1u32, 0usize), (3, 1), (3, 2)] {
            let i = workload.orders.len();
            let o = workload::order_spec(&mut rng, &stage.tag, i, count, &mix);
            stage.authorize(&o, Scenario::default())?;
            workload.orders.push(o);
            list.push(Case { order: i, hit });
        }
        cases.push((point, list));
    }
    let publish = |msgs: Vec<Message>| {
        let url = env.rabbit.amqp_url();
        let exchange = stage.exchange.clone();
        async move {
            publish::publish_all(
                PublishPlan {
                    url,
                    exchange,
                    rate: 0,
                    deadline: Duration::from_secs(60),
                },
                Arc::new(msgs),
                Arc::new(Progress::default()),
            )
            .await
        }
    };
    let order_msg = |o: usize, w: &Workload| -> Message {
        let id = format!("o-{}-{o}", stage.tag);
        Message {
            body: serde_json::to_vec(&workload::order_message(&w.orders[o], &id))
                .unwrap_or_default(),
            message_id: Some(id),
            routing_key: "order.authorized".into(),
            expect: Expect::Order(o),
        }
    };
    let ship_msg = |o: usize, s: usize, w: &Workload| -> Message {
        let id = format!("m-{}-{o}-{s}", stage.tag);
        let order = &w.orders[o];
        Message {
            body: serde_json::to_vec(&workload::shipment_message(order, &order.shipments[s], &id))
                .unwrap_or_default(),
            message_id: Some(id),
            routing_key: "shipment.shipped".into(),
            expect: Expect::Shipment { order: o, ship: s },
        }
    };

    let mut notes = Vec::new();
    let mut violations = Vec::new();
    for (point, list) in &cases {
        // Before: the orders and the parcels ahead of the cut, all settled.
        let mut before = Vec::new();
        for c in list {
            before.push(order_msg(c.order, &workload));
            for s in 0..c.hit {
                before.push(ship_msg(c.order, s, &workload));
            }
        }
        let ahead: usize = list.iter().map(|c| c.hit).sum();
        workload.messages.extend(before.clone());
        publish(before).await?;
        let orders: Vec<String> = list
            .iter()
            .map(|c| workload.orders[c.order].order_id.clone())
            .collect();
        wait_for(Duration::from_secs(30), || async {
            succeeded(&stage.pool, &orders)
                .await
                .map(|n| n == ahead as i64)
        })
        .await
        .context("S2: settling the parcels ahead of the cut")?;

        // Arm the fault that holds the worker at the point, then send the parcels to cut.
        match point {
            Point::CommitAck => amqp_proxy.set_blackhole(true),
            Point::LeaseCall => http_proxy.set_blackhole(true),
            Point::ProviderRecord => {
                for c in list {
                    let o = &workload.orders[c.order];
                    stage
                        .sandbox
                        .set_scenario(
                            &o.auth_id,
                            Scenario {
                                faults: vec![Fault::LostResponse { delay_ms: 20_000 }],
                                ..Scenario::default()
                            },
                        )
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
        }
        let hits: Vec<Message> = list
            .iter()
            .map(|c| ship_msg(c.order, c.hit, &workload))
            .collect();
        let hit_ids: Vec<String> = hits.iter().filter_map(|m| m.message_id.clone()).collect();
        let hit_shipments: Vec<String> = list
            .iter()
            .map(|c| {
                workload.orders[c.order].shipments[c.hit]
                    .shipment_id
                    .clone()
            })
            .collect();
        workload.messages.extend(hits.clone());
        let ledger_before = stage.sandbox.ledger().len();
        publish(hits).await?;
        let n = list.len() as i64;
        let reached = match point {
            Point::CommitAck => {
                wait_for(Duration::from_secs(20), || async {
                    sqlx::query_scalar::<_, i64>(
                        "select count(*) from inbox_messages where message_id = any($1)",
                    )
                    .bind(&hit_ids)
                    .fetch_one(&stage.pool)
                    .await
                    .map_err(anyhow::Error::from)
                    .map(|c| c == n)
                })
                .await
            }
            Point::LeaseCall => {
                wait_for(Duration::from_secs(20), || async {
                    in_flight(&stage.pool, &hit_shipments).await.map(|c| c == n)
                })
                .await
            }
            Point::ProviderRecord => {
                let sandbox = stage.sandbox.clone();
                wait_for(Duration::from_secs(20), || {
                    let sandbox = sandbox.clone();
                    async move {
                        Ok(sandbox.ledger()[ledger_before..]
                            .iter()
                            .filter(|e| e.outcome == LedgerOutcome::Captured)
                            .count() as i64
                            == n)
                    }
                })
                .await
            }
        };
        fleet.kill(0).await?;
        reached
            .with_context(|| format!("S2: the worker never reached the point {}", point.label()))?;

        // Evidence that the kill landed where it should.
        let evidence = match point {
            Point::CommitAck => {
                let queue = stage.queue.clone();
                let back = wait_for(Duration::from_secs(15), || async {
                    let d = tokio::task::block_in_place(|| env.rabbit.queue_depths())?;
                    Ok(d.iter()
                        .any(|(name, ready, _)| *name == queue && *ready >= n as u64))
                })
                .await
                .is_ok();
                if back {
                    format!(
                        "{n} deliveries committed; their acks were swallowed; all {n} back in the queue after the kill"
                    )
                } else {
                    violations.push(format!(
                        "S2 {}: the deliveries did not return to the queue",
                        point.label()
                    ));
                    String::new()
                }
            }
            Point::LeaseCall => {
                let lf = in_flight(&stage.pool, &hit_shipments).await?;
                let sent = stage.sandbox.ledger().len() - ledger_before;
                if lf == n && sent == 0 {
                    format!("{n} captures leased and in flight; the provider had received nothing")
                } else {
                    violations.push(format!(
                        "S2 {}: {lf} in flight, {sent} provider requests at the kill",
                        point.label()
                    ));
                    String::new()
                }
            }
            Point::ProviderRecord => {
                let lf = in_flight(&stage.pool, &hit_shipments).await?;
                if lf == n {
                    format!("{n} captures applied by the provider; none recorded (still in flight)")
                } else {
                    violations.push(format!(
                        "S2 {}: only {lf} of {n} unrecorded at the kill",
                        point.label()
                    ));
                    String::new()
                }
            }
        };
        amqp_proxy.set_blackhole(false);
        http_proxy.set_blackhole(false);
        fleet.start(0)?;
        let want = ahead as i64 + n;
        wait_for(Duration::from_secs(60), || async {
            succeeded(&stage.pool, &orders).await.map(|c| c == want)
        })
        .await
        .with_context(|| format!("S2 {}: the restarted worker did not finish", point.label()))?;
        // How the restarted worker finished the cut captures.
        let after = stage.sandbox.ledger();
        let new = &after[ledger_before..];
        let replays = new.iter().filter(|e| e.replayed).count();
        let moved = new.iter().filter(|e| e.captured_amount > 0).count();
        if moved != list.len() {
            violations.push(format!(
                "S2 {}: {moved} money movements for {} captures",
                point.label(),
                list.len()
            ));
        }
        let how = match point {
            Point::CommitAck => "redelivered and recognised as duplicates".to_owned(),
            Point::LeaseCall => {
                if new.iter().any(|e| e.replayed) {
                    violations.push(format!(
                        "S2 {}: a replay where the first request never arrived",
                        point.label()
                    ));
                }
                "taken over after the lease expired and sent once with the same key".to_owned()
            }
            Point::ProviderRecord => {
                if replays < list.len() {
                    violations.push(format!(
                        "S2 {}: {replays} replays, expected one per capture",
                        point.label()
                    ));
                }
                format!(
                    "taken over and answered from the provider's idempotency store ({replays} replays)"
                )
            }
        };
        notes.push(format!("{}: {evidence}; {how}", point.label()));

        // After: the rest of each order.
        let mut rest = Vec::new();
        for c in list {
            for s in c.hit + 1..workload.orders[c.order].shipments.len() {
                rest.push(ship_msg(c.order, s, &workload));
            }
        }
        let total: i64 = list
            .iter()
            .map(|c| workload.orders[c.order].shipments.len() as i64)
            .sum();
        workload.messages.extend(rest.clone());
        publish(rest).await?;
        wait_for(Duration::from_secs(30), || async {
            succeeded(&stage.pool, &orders).await.map(|c| c == total)
        })
        .await
        .context("S2: finishing the orders")?;
    }
    let expected: HashSet<String> = workload.messages.iter().map(message_key).collect();
    let mut extra = violations;
    if !settle(env, &stage, &mut fleet, &expected, Duration::from_secs(60)).await? {
        extra.push("P7: S2 did not settle".into());
    }
    extra.extend(fleet.stop_all(Duration::from_secs(30)).await);
    extra.extend(fleet.unexpected_exits.iter().map(|e| format!("P7: {e}")));
    drop(amqp_proxy);
    drop(http_proxy);
    finish(
        env,
        stage,
        &workload,
        &fleet,
        notes,
        extra,
        "S2",
        "a kill at each recovery point",
        started,
    )
    .await
}

async fn succeeded(pool: &PgPool, orders: &[String]) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "select count(*) from captures where order_id = any($1) and status = 'succeeded'",
    )
    .bind(orders)
    .fetch_one(pool)
    .await?)
}

async fn in_flight(pool: &PgPool, shipments: &[String]) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "select count(*) from captures where cause_kind = 'shipment' and cause_id = any($1) and status = 'in_flight'",
    )
    .bind(shipments)
    .fetch_one(pool)
    .await?)
}

/// Polls `check` until it holds.
async fn wait_for<F, Fut>(within: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("condition not met within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Makes the orders in `orders` pay through `provider` (every copy of their
/// `order.authorized` message, so duplicates stay duplicates).
fn pay_through(workload: &mut workload::Workload, orders: &HashSet<String>, provider: &str) {
    if orders.is_empty() {
        return;
    }
    for m in &mut workload.messages {
        let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(&m.body) else {
            continue;
        };
        let ours = body["type"] == "order.authorized"
            && body["data"]["order_id"]
                .as_str()
                .is_some_and(|id| orders.contains(id));
        if ours {
            body["data"]["payment"]["provider"] = serde_json::Value::String(provider.to_owned());
            if let Ok(bytes) = serde_json::to_vec(&body) {
                m.body = bytes;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// S8: lifecycle actions under kills

/// What an S8 order needs from the lifecycle sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Authorized for three quarters of its total on Checkout.com: an incremental
    /// authorization of the rest.
    IncrementCheckout,
    /// The same on Stripe: `increment_authorization` to the total.
    IncrementStripe,
    /// Authorized in full on Checkout.com, expiring within the extension lead time (24 h): an
    /// extension (an incremental authorization of 0).
    ExtendCheckout,
    /// Short on Adyen: an amount update to the total, settled by its notification.
    IncrementAdyen,
    /// Expiring on Adyen: an amount update of the same amount, settled by its notification.
    ExtendAdyen,
}

impl Need {
    const ALL: [Need; 5] = [
        Need::IncrementCheckout,
        Need::IncrementStripe,
        Need::ExtendCheckout,
        Need::IncrementAdyen,
        Need::ExtendAdyen,
    ];

    fn provider(self) -> &'static str {
        match self {
            Need::IncrementStripe => "sandbox",
            Need::IncrementCheckout | Need::ExtendCheckout => "checkout",
            Need::IncrementAdyen | Need::ExtendAdyen => "adyen",
        }
    }

    fn extends(self) -> bool {
        matches!(self, Need::ExtendCheckout | Need::ExtendAdyen)
    }
}

/// The HMAC key (hex) S8's workers verify Adyen's notifications with, and its merchant account.
const S8_ADYEN_HMAC_KEY: &str = "7A3F0C55D1E24B8896A0B3C4D5E6F708192A3B4C5D6E7F8091A2B3C4D5E6F7A8";
const S8_ADYEN_MERCHANT: &str = "FaultHarnessMerchant";

/// Hours until an extension order's `expires_at`: inside the sweep's 24 h extension lead
/// time, outside the expiry sweep's 12 h capture-ahead.
const S8_EXPIRES_IN_HOURS: i64 = 20;

async fn s8(env: &mut Env, seed: u64) -> anyhow::Result<Report> {
    let started = Instant::now();
    let full = env.profile == Profile::Full;
    let stage = Stage::new(env, "S8", seed).await?;
    let mut rng = Rng::fork(seed, "workload");
    let mut prng = Rng::fork(seed, "provider");
    let mix = Mix {
        decline_per_mille: 0,
        late_order_per_mille: 0,
        short_auth_per_mille: 0,
        over_auth_per_mille: 0,
        last_flag_per_mille: 0,
        ..Mix::standard(0, 0)
    };
    let n = if full { 150 } else { 40 };
    let mut workload = Workload::default();
    let mut needs = Vec::with_capacity(n);
    let mut order_msgs = Vec::with_capacity(n);
    let mut ship_msgs = Vec::new();
    for i in 0..n {
        let need = Need::ALL[i % Need::ALL.len()];
        let count = rng.range(1, 4) as u32;
        let mut o = workload::order_spec(&mut rng, &stage.tag, i, count, &mix);
        let total = crate::oracle::order_total(&o);
        match need.provider() {
            "checkout" => {
                // Checkout.com takes three-decimal amounts with the last digit 0; keep to USD.
                o.currency = "USD";
                o.auth_id = format!("pay_{}_{i}", stage.tag);
            }
            "adyen" => {
                o.currency = "USD";
                // A pspReference: 16 characters.
                o.auth_id = format!("AD{:06X}{i:08}", seed & 0xff_ffff);
            }
            _ => {}
        }
        o.authorized = if need.extends() {
            total
        } else {
            (total * 3 / 4).max(1)
        };
        stage.authorize(
            &o,
            Scenario {
                // Slow enough that kills land while an action is in flight.
                latency_ms: prng.range(50, 250),
                ..Scenario::default()
            },
        )?;
        let id = format!("o-{}-{i}", stage.tag);
        let mut body = workload::order_message(&o, &id);
        body["data"]["payment"]["provider"] = serde_json::json!(need.provider());
        if need.extends() {
            let at = chrono::Utc::now() + chrono::Duration::hours(S8_EXPIRES_IN_HOURS);
            body["data"]["payment"]["expires_at"] =
                serde_json::json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        order_msgs.push(Message {
            body: serde_json::to_vec(&body).unwrap_or_default(),
            message_id: Some(id),
            routing_key: "order.authorized".into(),
            expect: Expect::Order(i),
        });
        for (s, ship) in o.shipments.iter().enumerate() {
            let id = format!("m-{}-{i}-{s}", stage.tag);
            let m = Message {
                body: serde_json::to_vec(&workload::shipment_message(&o, ship, &id))
                    .unwrap_or_default(),
                message_id: Some(id),
                routing_key: "shipment.shipped".into(),
                expect: Expect::Shipment { order: i, ship: s },
            };
            // One parcel in ten published twice.
            if rng.chance(100) {
                ship_msgs.push(m.clone());
            }
            ship_msgs.push(m);
        }
        workload.orders.push(o);
        needs.push(need);
    }
    rng.shuffle(&mut ship_msgs);
    workload.messages.extend(order_msgs.iter().cloned());
    workload.messages.extend(ship_msgs.iter().cloned());

    let checkout_url = format!("{}/checkout", stage.sandbox_url);
    let adyen_url = format!("{}/adyen/v71", stage.sandbox_url);
    let config = stage.worker_config(
        env,
        &env.rabbit.amqp_url(),
        &stage.sandbox_url,
        &[
            ("CAPTURE__CAPTURE__LIFECYCLE_SWEEP", "true"),
            // The lifecycle sweep runs with the expiry sweep: several passes a second.
            ("CAPTURE__CAPTURE__EXPIRY_SWEEP_MS", "200"),
            // Checkout.com captures are accepted, then settled: read back soon (no webhooks).
            ("CAPTURE__CAPTURE__NOTIFICATION_WAIT_MS", "300"),
            ("CAPTURE__PROVIDERS__CHECKOUT__KIND", "checkout"),
            ("CAPTURE__PROVIDERS__CHECKOUT__BASE_URL", &checkout_url),
            ("CAPTURE__PROVIDERS__CHECKOUT__API_KEY", &env.api_key),
            ("CAPTURE__PROVIDERS__ADYEN__KIND", "adyen"),
            ("CAPTURE__PROVIDERS__ADYEN__BASE_URL", &adyen_url),
            ("CAPTURE__PROVIDERS__ADYEN__API_KEY", &env.api_key),
            (
                "CAPTURE__PROVIDERS__ADYEN__MERCHANT_ACCOUNT",
                S8_ADYEN_MERCHANT,
            ),
            (
                "CAPTURE__PROVIDERS__ADYEN__WEBHOOK_SECRET",
                S8_ADYEN_HMAC_KEY,
            ),
        ],
    );
    let mut fleet = Fleet::new(config, 2);
    // Adyen's notifications (its adjustments' and captures' outcomes) go to worker 0, on the
    // same port after every restart; the sandbox retries a delivery while it is down.
    fleet.pin_ports()?;
    let port = fleet.http_port(0).context("worker 0's port")?;
    stage.sandbox.set_notification_target(
        "adyen",
        &format!("http://127.0.0.1:{port}/webhooks/adyen"),
        Some(S8_ADYEN_HMAC_KEY),
    );
    fleet.start_all()?;
    fleet.wait_all_ready(Duration::from_secs(60)).await?;

    let publish = |msgs: Vec<Message>, rate: u32| {
        let url = env.rabbit.amqp_url();
        let exchange = stage.exchange.clone();
        tokio::spawn(publish::publish_all(
            PublishPlan {
                url,
                exchange,
                rate,
                deadline: Duration::from_secs(120),
            },
            Arc::new(msgs),
            Arc::new(Progress::default()),
        ))
    };
    let mut frng = Rng::fork(seed, "faults");
    let mut violations = Vec::new();
    let mut notes = Vec::new();

    // Phase 1: the orders, then the sweep's extensions and increments while workers die.
    publish(order_msgs, 0)
        .await
        .context("the publisher task failed")?
        .context("publishing the orders")?;
    let lifecycle_kills = if full { 12 } else { 5 };
    let (mut kills, mut after_apply, mut unrecorded) = (0u32, 0u32, 0u32);
    let phase = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(if full { 240 } else { 60 });
    loop {
        let (done, open) = lifecycle_progress(&stage.pool).await?;
        if done >= n as i64 && open == 0 {
            break;
        }
        if Instant::now() > deadline {
            violations.push(format!(
                "S8: {done} of {n} lifecycle actions succeeded ({open} unfinished) within the deadline"
            ));
            break;
        }
        if kills >= lifecycle_kills {
            if !fleet.reap().is_empty() {
                fleet.fill()?;
            }
            sleep_ms(100).await;
            continue;
        }
        sleep_ms(frng.range(200, 900)).await;
        if !fleet.reap().is_empty() {
            fleet.fill()?;
        }
        let running = fleet.running();
        if running.is_empty() {
            fleet.fill()?;
            continue;
        }
        // Every other round waits for the provider to apply an action and strikes at once,
        // every worker (either may have sent it), before the answer can be recorded.
        let mut struck = None;
        let victims = if kills % 2 == 1 {
            let seen = adjusted(&stage.sandbox).len();
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                if let Some(key) = adjusted(&stage.sandbox).get(seen) {
                    struck = Some(key.clone());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            running
        } else {
            vec![running[frng.index(running.len())]]
        };
        for &v in &victims {
            fleet.kill(v).await?;
        }
        kills += 1;
        if let Some(key) = struck {
            after_apply += 1;
            let status: Option<String> = sqlx::query_scalar(
                "select status from lifecycle_actions where idempotency_key = $1",
            )
            .bind(&key)
            .fetch_optional(&stage.pool)
            .await?;
            if status.as_deref() != Some("succeeded") {
                unrecorded += 1;
            }
        }
        sleep_ms(frng.range(0, 400)).await;
        for &v in &victims {
            fleet.start(v)?;
        }
    }
    notes.push(format!(
        "{kills} kill rounds while the sweep extended and incremented ({after_apply} right after the provider applied an action, {unrecorded} of them before the worker recorded the answer); every action succeeded {:.1?} after the orders were published",
        phase.elapsed()
    ));

    // Phase 2: the parcels, captured against the raised holds, while workers die.
    let parcels = publish(ship_msgs, if full { 150 } else { 100 });
    let parcel_kills = if full { 6 } else { 3 };
    for _ in 0..parcel_kills {
        sleep_ms(frng.range(300, 1_500)).await;
        if !fleet.reap().is_empty() {
            fleet.fill()?;
        }
        let running = fleet.running();
        if running.is_empty() {
            fleet.fill()?;
            continue;
        }
        let victim = running[frng.index(running.len())];
        fleet.kill(victim).await?;
        sleep_ms(frng.range(0, 800)).await;
        fleet.start(victim)?;
    }
    notes.push(format!(
        "{parcel_kills} SIGKILLs while the parcels were captured"
    ));
    parcels
        .await
        .context("the publisher task failed")?
        .context("publishing the parcels")?;
    let expected: HashSet<String> = workload.messages.iter().map(message_key).collect();
    let within = Duration::from_secs(if full { 600 } else { 120 });
    if !settle(env, &stage, &mut fleet, &expected, within).await? {
        violations.push(format!("P7: S8 did not settle within {within:?}"));
    }
    violations.extend(
        fleet
            .stop_all(Duration::from_secs(30))
            .await
            .into_iter()
            .map(|p| format!("shutdown: {p}")),
    );
    violations.extend(fleet.unexpected_exits.iter().map(|e| format!("P7: {e}")));
    let left = stage.ready(env).await.unwrap_or(u32::MAX);
    if left != 0 {
        violations.push(format!("P7: {left} messages left in the work queue"));
    }
    let (found, note) = s8_check(&stage, &workload, &needs).await?;
    violations.extend(found);
    notes.push(note);
    finish(
        env,
        stage,
        &workload,
        &fleet,
        notes,
        violations,
        "S8",
        "lifecycle under kills: increments on Checkout.com, Stripe and Adyen, extensions on Checkout.com and Adyen, workers SIGKILLed",
        started,
    )
    .await
}

/// (succeeded lifecycle actions, actions not finished: planned, unknown or pending).
async fn lifecycle_progress(pool: &PgPool) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "select count(*) filter (where status = 'succeeded'),
                count(*) filter (where status in ('planned', 'unknown', 'pending'))
         from lifecycle_actions",
    )
    .fetch_one(pool)
    .await?)
}

/// Keys of the lifecycle requests the provider applied, in arrival order.
fn adjusted(sandbox: &Sandbox) -> Vec<String> {
    sandbox
        .ledger()
        .iter()
        .filter(|e| e.outcome == LedgerOutcome::Adjusted && !e.replayed)
        .filter_map(|e| e.idempotency_key.clone())
        .collect()
}

/// S8's own checks: each order got the one action it needed, applied once by the provider,
/// and was captured in full (its total: the increments raised every short hold to it).
async fn s8_check(
    stage: &Stage,
    workload: &Workload,
    needs: &[Need],
) -> anyhow::Result<(Vec<String>, String)> {
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "select order_id, action, status, increase from lifecycle_actions order by order_id, sequence",
    )
    .fetch_all(&stage.pool)
    .await?;
    let mut violations = Vec::new();
    let (mut increments, mut raised_total, mut extensions) = (0, 0i64, 0);
    for (o, need) in workload.orders.iter().zip(needs) {
        let mine: Vec<&(String, String, String, i64)> =
            rows.iter().filter(|r| r.0 == o.order_id).collect();
        let ok = |action: &str| {
            mine.iter()
                .filter(|r| r.1 == action && r.2 == "succeeded")
                .count()
        };
        let raised: i64 = mine
            .iter()
            .filter(|r| r.1 == "increment" && r.2 == "succeeded")
            .map(|r| r.3)
            .sum();
        let total = crate::oracle::order_total(o);
        if need.extends() {
            if ok("extend") != 1 || ok("increment") != 0 {
                violations.push(format!(
                    "S8: {}: {} extensions and {} increments succeeded, expected one extension",
                    o.order_id,
                    ok("extend"),
                    ok("increment")
                ));
            }
            extensions += ok("extend");
        } else {
            if raised != total - o.authorized {
                violations.push(format!(
                    "S8: {}: increments of {raised} recorded; {} raise the hold to the order total {total}",
                    o.order_id,
                    total - o.authorized
                ));
            }
            increments += ok("increment");
            raised_total += raised;
        }
        match stage.sandbox.authorization(&o.auth_id) {
            Some(a) => {
                if a.adjustments != 1 {
                    violations.push(format!(
                        "S8: {}: the provider applied {} adjustments to {}, expected one",
                        o.order_id, a.adjustments, o.auth_id
                    ));
                }
                if a.amount_received != total {
                    violations.push(format!(
                        "S8: {}: {} captured of the order total {total}",
                        o.order_id, a.amount_received
                    ));
                }
            }
            None => violations.push(format!("harness: authorization {} missing", o.auth_id)),
        }
    }
    let ledger = stage.sandbox.ledger();
    let calls: Vec<&capture_worker::sandbox::LedgerEntry> = ledger
        .iter()
        .filter(|e| crate::check::is_lifecycle(e))
        .collect();
    let replays = calls.iter().filter(|e| e.replayed).count();
    let in_progress = calls.iter().filter(|e| e.http_status == 409).count();
    let adyen: Vec<_> = stage
        .sandbox
        .notifications()
        .into_iter()
        .filter(|d| d.dialect == "adyen" && d.body.contains("AUTHORISATION_ADJUSTMENT"))
        .collect();
    let missed: usize = adyen
        .iter()
        .map(|d| {
            d.statuses
                .iter()
                .filter(|s| !(200..300).contains(*s))
                .count()
        })
        .sum();
    let note = format!(
        "lifecycle: {increments} increments (+{raised_total} in all) and {extensions} extensions recorded; {} requests to the provider, {replays} answered from its idempotency store, {in_progress} refused as in progress; every key applied once; {} Adyen adjustments settled by notification ({missed} delivery attempts unanswered while worker 0 was down)",
        calls.len(),
        adyen.len()
    );
    Ok((violations, note))
}

//! bench: end-to-end throughput and latency beside the machine's raw limits, measured in one
//! run (docs/performance.md).
//!
//! ```sh
//! cargo run --release --bin bench
//! cargo run --release --bin bench -- --quick --out bench.json
//! ```
//!
//! A tool of its own, like the fault harness: it uses the library's public API and runs the
//! real `capture-worker` binary as its worker; neither the library nor the `capture-worker`
//! command line knows it.
//!
//! One run, against the local RabbitMQ and PostgreSQL and an in-process sandbox provider:
//!
//! 1. **Raw limits** ([`raw`]): RabbitMQ publish-with-confirms and consume+ack rates for our
//!    message size and prefetch on a quorum queue; PostgreSQL's rate for the naive per-shipment
//!    write pattern (an intake transaction and an outcome transaction per shipment, as many
//!    concurrent clients as the pool); the HTTP round-trip rate to the sandbox.
//! 2. **End to end** ([`e2e`]): per provider latency L, the real binary runs as a child process
//!    (`capture-worker run`) against a fresh database and queue; N orders × M shipments are
//!    published as fast as the broker takes them (throughput), then a second set is published
//!    at half that rate (latency publish → capture succeeded, p50/p95/p99). The worker's CPU
//!    time and peak RSS come from `/proc/<pid>`.
//! 3. **Backlog drain**: K shipments published first, then the worker started.
//! 4. **Captures in flight**: the same with a slow provider, so that more than 10,000 captures
//!    are accepted and unsettled at once, for the worker's memory under that load.
//!
//! Every database, exchange and queue is uniquely named and removed at the end, and every
//! child process is stopped, whatever happens. Absolute figures drift on a shared machine;
//! the ratio of end-to-end throughput to the tighter raw limit, measured minutes apart in the
//! same run, is the figure to compare across runs.

mod e2e;
mod peer;
mod raw;
mod report;
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use capture_worker::config::Settings;

use report::Report;

/// Measure end-to-end throughput and latency beside the machine's raw limits (RabbitMQ,
/// PostgreSQL, HTTP) in one run, against the local services and an in-process sandbox.
/// Prints a table and writes a JSON report. Uses fresh, uniquely named databases and
/// queues and removes them at the end.
///
/// Sizes not given take the full benchmark's (or `--quick`'s).
#[derive(Debug, Parser)]
#[command(name = "bench", version)]
struct Args {
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench.json")]
    out: PathBuf,
    /// The smoke size: completes in a few seconds (CI).
    #[arg(long)]
    quick: bool,
    /// Orders per end-to-end run (full: 4000).
    #[arg(long)]
    orders: Option<usize>,
    /// Shipments per order, each one capture (full: 5; at most 50).
    #[arg(long)]
    shipments_per_order: Option<usize>,
    /// Provider latencies to run end to end, in milliseconds (full: 0,50,200).
    #[arg(long, value_delimiter = ',')]
    latencies: Option<Vec<u64>>,
    /// Shipments queued before the worker starts in the backlog drain; 0 skips it
    /// (full: 100000).
    #[arg(long)]
    backlog: Option<usize>,
    /// Provider latency during the backlog drain, in milliseconds.
    #[arg(long, default_value_t = 50)]
    backlog_latency: u64,
    /// Shipments queued for a slow provider so that captures pile up unsettled, for the
    /// worker's memory with that many in flight; 0 skips it (full: 16000, quick: 0).
    #[arg(long)]
    inflight: Option<usize>,
    /// Provider latency of that run, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    inflight_latency: u64,
    /// Seconds each raw-limit measurement runs (full: 5).
    #[arg(long)]
    raw_seconds: Option<f64>,
    /// Seconds the half-throughput latency run publishes (full: 10).
    #[arg(long)]
    paced_seconds: Option<f64>,
    /// Run the worker with this `capture.concurrency` instead of its configuration's. Without
    /// it (and without `--prefetch`) the worker runs with its defaults, as the targets
    /// require for the L=200 row.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Run the worker with this `amqp.prefetch` instead of its configuration's.
    #[arg(long)]
    prefetch: Option<u16>,
    /// Skip the hand-written peer worker measured beside the worker at each latency.
    #[arg(long)]
    no_peer: bool,
    /// The worker binary to run as a child process (default: `capture-worker` next to this
    /// binary, built first when run through cargo).
    #[arg(long)]
    worker_binary: Option<PathBuf>,
}

/// Settings and telemetry as `capture-worker` loads them, then the run.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The peer worker runs as a child process of this binary (see `peer`).
    if std::env::args().nth(1).as_deref() == Some(peer::PEER_ARG) {
        return peer::serve_from_env().await;
    }
    let args = Args::parse();
    let settings = Settings::load().context("loading settings")?;
    let _telemetry = capture_worker::telemetry::init(&settings.telemetry);
    run(settings, args.into()).await.map(drop)
}

/// What to measure and how much.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Orders per end-to-end run.
    pub orders: usize,
    /// Shipments (= captures) per order.
    pub shipments_per_order: usize,
    /// Provider latencies to run end to end, in milliseconds.
    pub latencies_ms: Vec<u64>,
    /// Shipments in the backlog drain; 0 skips it.
    pub backlog: usize,
    /// Provider latency during the backlog drain, in milliseconds.
    pub backlog_latency_ms: u64,
    /// Shipments queued for the in-flight memory run (a slow provider, so that captures pile
    /// up unsettled); 0 skips it.
    pub inflight: usize,
    /// Provider latency of the in-flight memory run, in milliseconds.
    pub inflight_latency_ms: u64,
    /// How long each raw-limit measurement runs.
    pub raw_duration: Duration,
    /// How long the paced (half-throughput) latency run publishes.
    pub paced_duration: Duration,
    /// Where the JSON report goes.
    pub out: PathBuf,
    /// The worker binary to run; `capture-worker` next to this binary when `None`.
    pub worker_binary: Option<PathBuf>,
    /// The worker's `capture.concurrency`; the configured value when `None`.
    pub concurrency: Option<usize>,
    /// The worker's `amqp.prefetch`; the configured value when `None`.
    pub prefetch: Option<u16>,
    /// Measure the hand-written peer worker at each latency.
    pub peer: bool,
    /// The smoke size (set by `--quick`), noted in the report.
    pub quick: bool,
}

impl BenchOptions {
    /// The full benchmark's sizes.
    pub fn full(out: PathBuf) -> Self {
        BenchOptions {
            orders: 4_000,
            shipments_per_order: 5,
            latencies_ms: vec![0, 50, 200],
            backlog: 100_000,
            backlog_latency_ms: 50,
            inflight: 16_000,
            inflight_latency_ms: 2_000,
            raw_duration: Duration::from_secs(5),
            paced_duration: Duration::from_secs(10),
            out,
            worker_binary: None,
            concurrency: None,
            prefetch: None,
            peer: true,
            quick: false,
        }
    }

    /// A smoke size that completes in a few seconds (CI).
    pub fn quick(out: PathBuf) -> Self {
        BenchOptions {
            orders: 30,
            shipments_per_order: 2,
            latencies_ms: vec![0, 50],
            backlog: 200,
            backlog_latency_ms: 50,
            inflight: 0,
            inflight_latency_ms: 2_000,
            raw_duration: Duration::from_millis(300),
            paced_duration: Duration::from_millis(500),
            out,
            worker_binary: None,
            concurrency: None,
            prefetch: None,
            peer: true,
            quick: true,
        }
    }
}

impl From<Args> for BenchOptions {
    fn from(a: Args) -> Self {
        let base = if a.quick {
            BenchOptions::quick(a.out)
        } else {
            BenchOptions::full(a.out)
        };
        let seconds = |s: Option<f64>, default: Duration| {
            s.filter(|v| v.is_finite() && *v > 0.0)
                .map_or(default, Duration::from_secs_f64)
        };
        BenchOptions {
            orders: a.orders.unwrap_or(base.orders),
            shipments_per_order: a.shipments_per_order.unwrap_or(base.shipments_per_order),
            latencies_ms: a.latencies.unwrap_or(base.latencies_ms),
            backlog: a.backlog.unwrap_or(base.backlog),
            backlog_latency_ms: a.backlog_latency,
            inflight: a.inflight.unwrap_or(base.inflight),
            inflight_latency_ms: a.inflight_latency,
            raw_duration: seconds(a.raw_seconds, base.raw_duration),
            paced_duration: seconds(a.paced_seconds, base.paced_duration),
            worker_binary: a.worker_binary,
            concurrency: a.concurrency,
            prefetch: a.prefetch,
            peer: !a.no_peer,
            ..base
        }
    }
}

/// Runs the benchmark, prints the table, writes the JSON report and returns it.
pub async fn run(settings: Settings, options: BenchOptions) -> anyhow::Result<Report> {
    anyhow::ensure!(
        options.orders > 0 && options.shipments_per_order > 0,
        "--orders and --shipments-per-order must be at least 1"
    );
    anyhow::ensure!(
        options.shipments_per_order <= 50,
        "--shipments-per-order is at most 50 (the sandbox allows 50 captures per authorization)"
    );
    let worker_binary = match &options.worker_binary {
        Some(p) => p.clone(),
        None => support::worker_binary()?,
    };
    support::check_writable(&options.out)?;
    let started = Instant::now();
    // The worker runs with its own configuration, the same layers this process loaded, and
    // only the overrides asked for (passed to it explicitly); the raw limits use the same
    // prefetch and concurrency.
    let mut settings = settings;
    let mut overrides = Vec::new();
    if let Some(c) = options.concurrency {
        settings.capture.concurrency = c.max(1);
        overrides.push((
            "CAPTURE__CAPTURE__CONCURRENCY".to_owned(),
            settings.capture.concurrency.to_string(),
        ));
    }
    if let Some(p) = options.prefetch {
        settings.amqp.prefetch = p.max(1);
        overrides.push((
            "CAPTURE__AMQP__PREFETCH".to_owned(),
            settings.amqp.prefetch.to_string(),
        ));
    }
    let env = support::BenchEnv::new(&settings, worker_binary, overrides)?;
    let mut report = Report::new(&settings, &options);
    report.worker_settings = report::WorkerSettings::of(&settings, &env.overrides);
    report.run_id = env.run_id.clone();
    report.machine.postgres_postmaster_pid = env.services.postmaster;
    report.machine.rabbitmq_pid = env.services.rabbitmq;
    let busy0 = support::machine_busy_seconds();
    let services0 = support::service_cpu_seconds(&env.services);
    eprintln!(
        "bench: run {} — raw limits ({} s each)…",
        env.run_id,
        options.raw_duration.as_secs_f64()
    );

    // Ctrl-C stops the run; the cleanup below still removes what it created.
    let outcome = tokio::select! {
        r = measure(&env, &options, &mut report) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    env.cleanup().await;
    outcome?;

    let services1 = support::service_cpu_seconds(&env.services);
    let services = (services1.postgres - services0.postgres)
        + (services1.rabbitmq - services0.rabbitmq)
        + (services1.bench - services0.bench);
    let busy = support::machine_busy_seconds()
        .zip(busy0)
        .map(|(b1, b0)| b1 - b0);
    report.finish(started.elapsed(), busy, services);
    println!("{}", report.table());
    let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
    std::fs::write(&options.out, json + "\n")
        .with_context(|| format!("writing {}", options.out.display()))?;
    println!("report written to {}", options.out.display());
    Ok(report)
}

async fn measure(
    env: &support::BenchEnv,
    options: &BenchOptions,
    report: &mut Report,
) -> anyhow::Result<()> {
    report.raw = Some(raw::measure(env, options).await?);
    for &latency in &options.latencies_ms {
        if options.peer {
            eprintln!(
                "bench: hand-written peer worker at provider latency {latency} ms ({} orders × {} shipments)…",
                options.orders, options.shipments_per_order
            );
            let run = peer::peer_run(env, options, latency).await?;
            eprintln!(
                "bench:   peer {:.0} shipments/s, CPU {:.2} ms/shipment (peer + PostgreSQL + RabbitMQ)",
                run.throughput_per_s, run.pipeline_cpu_ms_per_shipment
            );
            report.peer.push(run);
        }
        eprintln!(
            "bench: end to end at provider latency {latency} ms ({} orders × {} shipments)…",
            options.orders, options.shipments_per_order
        );
        let run = e2e::latency_run(env, options, latency).await?;
        report.end_to_end.push(run);
    }
    if options.backlog > 0 {
        eprintln!(
            "bench: backlog drain of {} shipments at provider latency {} ms…",
            options.backlog, options.backlog_latency_ms
        );
        report.backlog = Some(
            e2e::backlog_run(
                env,
                options,
                "backlog",
                options.backlog,
                options.backlog_latency_ms,
            )
            .await?,
        );
    }
    if options.inflight > 0 {
        eprintln!(
            "bench: {} shipments queued for a provider answering in {} ms (captures in flight)…",
            options.inflight, options.inflight_latency_ms
        );
        report.inflight = Some(
            e2e::backlog_run(
                env,
                options,
                "inflight",
                options.inflight,
                options.inflight_latency_ms,
            )
            .await?,
        );
    }
    Ok(())
}

//! The benchmark's report: the JSON written to `--out` and the table printed at the end.
//! Rates and percentiles are floats; no money is reported here.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::BenchOptions;
use super::peer::PeerRun;
use super::support::{self, Checkpoints, DbActivity, Percentiles, ServiceCpu};
use capture_worker::config::Settings;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub version: &'static str,
    /// Part of every database, exchange and queue name this run created.
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub quick: bool,
    pub machine: Machine,
    pub worker_settings: WorkerSettings,
    pub raw: Option<RawLimits>,
    /// The hand-written peer worker, one run per latency, measured just before the worker's.
    pub peer: Vec<PeerRun>,
    pub end_to_end: Vec<EndToEnd>,
    pub backlog: Option<Backlog>,
    /// The backlog run against a slow provider: memory with many captures in flight.
    pub inflight: Option<Backlog>,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub memory_mib: u64,
    pub load_average_at_start: Option<f64>,
    pub load_average_at_end: Option<f64>,
    /// The PostgreSQL postmaster and RabbitMQ node whose CPU is counted (found by port).
    pub postgres_postmaster_pid: Option<u32>,
    pub rabbitmq_pid: Option<u32>,
    /// Cores kept busy on average during the run by processes that are not part of it (other
    /// builds and tests sharing the machine): machine busy time minus the worker, PostgreSQL,
    /// RabbitMQ and this process, over the run's duration.
    pub other_load_cores: Option<f64>,
}

/// The settings that shape throughput, as the worker saw them.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerSettings {
    pub database_max_connections: u32,
    pub amqp_prefetch: u16,
    pub capture_concurrency: usize,
    pub log_level: String,
    /// Settings given to the worker over its configuration (`KEY=value`); empty: its
    /// defaults.
    pub overrides: Vec<String>,
    /// The outbox relay publishes an outcome event per ledger transition (`outbox.relay`).
    pub outbox_relay: bool,
}

impl WorkerSettings {
    /// The settings `settings` carries, with the overrides the benchmark gave the worker.
    pub fn of(settings: &Settings, overrides: &[(String, String)]) -> WorkerSettings {
        WorkerSettings {
            database_max_connections: settings.database.max_connections,
            amqp_prefetch: settings.amqp.prefetch,
            capture_concurrency: settings.capture.concurrency,
            log_level: std::env::var("RUST_LOG")
                .unwrap_or_else(|_| settings.telemetry.log_level.clone()),
            overrides: overrides.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            outbox_relay: settings.outbox.relay,
        }
    }

    /// How a row's worker was configured, for the table.
    pub fn describe(&self) -> String {
        let base = format!(
            "pool {}, prefetch {}, capture concurrency {}",
            self.database_max_connections, self.amqp_prefetch, self.capture_concurrency
        );
        let base = format!(
            "{base}, outcome events {}",
            if self.outbox_relay {
                "on (outbox relay publishing)"
            } else {
                "off"
            }
        );
        if self.overrides.is_empty() {
            format!("{base} (its configuration, no overrides)")
        } else {
            format!("{base} (overridden: {})", self.overrides.join(", "))
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RawLimits {
    pub seconds: f64,
    pub message_bytes: usize,
    pub prefetch: u16,
    pub publish_window: usize,
    pub postgres_clients: u32,
    pub http_clients: usize,
    pub rabbitmq_publish_confirms_per_s: f64,
    pub rabbitmq_consume_ack_per_s: f64,
    pub postgres_naive_shipments_per_s: f64,
    /// CPU of PostgreSQL and of the clients (this process) per naive shipment.
    pub postgres_naive_cpu_ms_per_shipment: ServiceCpu,
    pub http_round_trips_per_s: f64,
    /// Which of the four is lowest, and its rate.
    pub tighter: String,
    pub tighter_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndToEnd {
    pub latency_ms: u64,
    /// The worker's settings in this row.
    pub worker_settings: WorkerSettings,
    pub orders: usize,
    pub shipments_per_order: usize,
    pub shipments: usize,
    pub publish_seconds: f64,
    pub publish_per_s: f64,
    /// First publish → last capture recorded as succeeded.
    pub elapsed_seconds: f64,
    /// Steady rate: captures between the 10th and 90th percentile of completion times, per
    /// second. Targets and ratios use this.
    pub throughput_per_s: f64,
    /// Shipments / (first publish → last capture).
    pub overall_throughput_per_s: f64,
    /// Publish → captured while saturated (mostly time waiting in the queue).
    pub saturated_latency_ms: Percentiles,
    pub paced: Paced,
    /// CPU time of the worker process during the saturated phase.
    pub worker_cpu_seconds: f64,
    pub worker_cpu_ms_per_shipment: f64,
    /// CPU of PostgreSQL, RabbitMQ and the bench process (sandbox, publisher) per shipment
    /// during the saturated phase.
    pub service_cpu_ms_per_shipment: ServiceCpu,
    pub worker_cpu_seconds_total: f64,
    pub worker_peak_rss_mb: f64,
    pub max_unsettled_captures: i64,
    /// How the saturated phase's writes were batched.
    pub statements: Statements,
    /// PostgreSQL's work per shipment in the saturated phase (`pg_stat_database`); not
    /// measured in the smoke run.
    pub database: Option<DbActivity>,
    pub ratio_to_tighter_raw: Option<f64>,
    pub ratio_to_postgres_naive: Option<f64>,
    /// Worker + PostgreSQL + RabbitMQ CPU per shipment (saturated).
    pub pipeline_cpu_ms_per_shipment: f64,
    /// Steady throughput over the peer's at the same latency.
    pub ratio_to_peer: Option<f64>,
    /// Worker + PostgreSQL + RabbitMQ CPU per shipment over the peer's (lower is better).
    pub cpu_ratio_to_peer: Option<f64>,
    pub promises: PromiseCheck,
}

/// Transactions that wrote the saturated phase (first claims and successes only).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Statements {
    pub intake_transactions: i64,
    pub shipments_per_intake_transaction: f64,
    pub claim_statements: i64,
    pub captures_per_claim_statement: f64,
    pub record_statements: i64,
    pub captures_per_record_statement: f64,
}

/// Shipments published at a fixed rate (half the saturated throughput).
#[derive(Debug, Clone, Serialize)]
pub struct Paced {
    pub rate_per_s: f64,
    pub shipments: usize,
    pub latency_ms: Percentiles,
    pub stages: StageLatency,
    /// PostgreSQL checkpoint activity while the paced shipments were published and captured.
    pub checkpoints: Checkpoints,
}

/// Where the time from publish to capture goes (each stage's own percentiles).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageLatency {
    /// Publish → the intake transaction began: the broker, prefetch, waiting for a batch.
    pub queue_and_intake_ms: Percentiles,
    /// Intake began → the provider call began: the intake transaction and its commit, the
    /// claim (in that transaction, or by the executor), waiting for a call slot.
    pub intake_to_call_ms: Percentiles,
    /// The provider call that captured.
    pub call_ms: Percentiles,
    /// The call's answer → recording it began: waiting for a success statement.
    pub record_ms: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Backlog {
    pub latency_ms: u64,
    pub orders: usize,
    pub shipments: usize,
    /// Orders + shipments waiting in the queue when the worker started.
    pub messages: usize,
    pub publish_seconds: f64,
    /// Worker start → last capture recorded as succeeded.
    pub drain_seconds: f64,
    /// Shipments / (worker start → last capture), start-up included.
    pub shipments_per_s: f64,
    /// Between the 10th and 90th percentile of capture completion times.
    pub steady_shipments_per_s: f64,
    pub messages_per_s: f64,
    pub worker_cpu_seconds: f64,
    pub worker_cpu_ms_per_shipment: f64,
    pub service_cpu_ms_per_shipment: ServiceCpu,
    pub worker_peak_rss_mb: f64,
    /// Peak RSS while captures 25%–58% were done, and while the rest were.
    pub rss_peak_middle_mb: f64,
    pub rss_peak_end_mb: f64,
    /// (seconds since the worker started, RSS in MB, captures succeeded)
    pub rss_samples_mb: Vec<(f64, f64, i64)>,
    pub max_unsettled_captures: i64,
    pub promises: PromiseCheck,
}

/// What the run found about the promises; every count but the first three must be 0.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PromiseCheck {
    pub orders: u64,
    pub shipments: u64,
    /// Keys under which the provider moved money.
    pub captured_keys: u64,
    pub orders_not_fully_captured: u64,
    pub keys_that_moved_money_twice: u64,
    pub keys_sent_with_other_terms: u64,
    pub orders_over_captured: u64,
    pub orders_without_one_final: u64,
}

impl PromiseCheck {
    pub fn add(&mut self, other: PromiseCheck) {
        self.orders += other.orders;
        self.shipments += other.shipments;
        self.captured_keys += other.captured_keys;
        self.orders_not_fully_captured += other.orders_not_fully_captured;
        self.keys_that_moved_money_twice += other.keys_that_moved_money_twice;
        self.keys_sent_with_other_terms += other.keys_sent_with_other_terms;
        self.orders_over_captured += other.orders_over_captured;
        self.orders_without_one_final += other.orders_without_one_final;
    }

    pub fn kept(&self) -> bool {
        self.orders_not_fully_captured == 0
            && self.keys_that_moved_money_twice == 0
            && self.keys_sent_with_other_terms == 0
            && self.orders_over_captured == 0
            && self.orders_without_one_final == 0
            && self.captured_keys == self.shipments
    }
}

/// One of issue 8's targets, as measured.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    /// `met`, `missed` or `not_measured`.
    pub result: &'static str,
    pub detail: String,
}

impl Report {
    pub fn new(settings: &Settings, options: &BenchOptions) -> Report {
        Report {
            version: env!("CARGO_PKG_VERSION"),
            run_id: String::new(),
            started_at: Utc::now(),
            duration_seconds: 0.0,
            quick: options.quick,
            machine: support::machine(),
            worker_settings: WorkerSettings::of(settings, &[]),
            raw: None,
            peer: Vec::new(),
            end_to_end: Vec::new(),
            backlog: None,
            inflight: None,
            targets: Vec::new(),
        }
    }

    /// The CPU the run's own processes used: services (delta over the run) and every worker.
    fn own_cpu_seconds(&self, services: f64) -> f64 {
        services
            + self
                .end_to_end
                .iter()
                .map(|r| r.worker_cpu_seconds_total)
                .sum::<f64>()
            + self
                .backlog
                .iter()
                .chain(self.inflight.iter())
                .map(|b| b.worker_cpu_seconds)
                .sum::<f64>()
    }

    /// Fills in the ratios, the machine's other load and the targets. `busy` is the machine's
    /// busy CPU seconds and `services` the run's services' CPU seconds, both over the run.
    pub fn finish(&mut self, elapsed: Duration, busy: Option<f64>, services: f64) {
        self.duration_seconds = elapsed.as_secs_f64();
        if let Some(busy) = busy
            && self.duration_seconds > 0.0
        {
            let other = (busy - self.own_cpu_seconds(services)).max(0.0);
            self.machine.other_load_cores = Some(other / self.duration_seconds);
        }
        self.machine.load_average_at_end = support::load_average();
        if let Some(raw) = &self.raw {
            for run in &mut self.end_to_end {
                if raw.tighter_per_s > 0.0 {
                    run.ratio_to_tighter_raw = Some(run.throughput_per_s / raw.tighter_per_s);
                }
                if raw.postgres_naive_shipments_per_s > 0.0 {
                    run.ratio_to_postgres_naive =
                        Some(run.throughput_per_s / raw.postgres_naive_shipments_per_s);
                }
            }
        }
        let peers = self.peer.clone();
        for run in &mut self.end_to_end {
            if let Some(p) = peers.iter().find(|p| p.latency_ms == run.latency_ms) {
                if p.throughput_per_s > 0.0 {
                    run.ratio_to_peer = Some(run.throughput_per_s / p.throughput_per_s);
                }
                if p.pipeline_cpu_ms_per_shipment > 0.0 {
                    run.cpu_ratio_to_peer =
                        Some(run.pipeline_cpu_ms_per_shipment / p.pipeline_cpu_ms_per_shipment);
                }
            }
        }
        self.targets = self.evaluate();
    }

    fn run_at(&self, latency: u64) -> Option<&EndToEnd> {
        self.end_to_end.iter().find(|r| r.latency_ms == latency)
    }

    fn evaluate(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        let verdict = |ok: bool| if ok { "met" } else { "missed" };
        for (latency, defaults_required) in [(0, false), (200, true)] {
            let name = format!(
                "steady throughput >= 2.0x the hand-written peer at L={latency} ms{}",
                if defaults_required {
                    " with default settings"
                } else {
                    ""
                }
            );
            let peer = self.peer.iter().find(|p| p.latency_ms == latency);
            targets.push(match (self.run_at(latency), peer) {
                (Some(run), Some(peer)) => {
                    let ratio = run.ratio_to_peer.unwrap_or(0.0);
                    let defaults = run.worker_settings.overrides.is_empty();
                    Target {
                        name,
                        result: if defaults_required && !defaults {
                            "not_measured"
                        } else {
                            verdict(ratio >= 2.0)
                        },
                        detail: format!(
                            "{:.0}/s vs peer {:.0}/s: ratio {ratio:.2}; worker {}",
                            run.throughput_per_s,
                            peer.throughput_per_s,
                            run.worker_settings.describe()
                        ),
                    }
                }
                _ => not_measured(&name),
            });
        }
        for run in &self.end_to_end {
            let cpu = run.pipeline_cpu_ms_per_shipment;
            targets.push(Target {
                name: format!(
                    "CPU per shipment, worker + PostgreSQL + RabbitMQ <= 0.6 ms (L={} ms)",
                    run.latency_ms
                ),
                result: verdict(cpu > 0.0 && cpu <= 0.6),
                detail: format!(
                    "{cpu:.2} ms (worker {:.2}, PostgreSQL {:.2}, RabbitMQ {:.2}){}",
                    run.worker_cpu_ms_per_shipment,
                    run.service_cpu_ms_per_shipment.postgres,
                    run.service_cpu_ms_per_shipment.rabbitmq,
                    run.cpu_ratio_to_peer
                        .map(|r| format!("; {r:.2}x the peer's"))
                        .unwrap_or_default()
                ),
            });
        }
        for run in &self.end_to_end {
            let bound = run.latency_ms as f64 + 100.0;
            let p99 = run.paced.latency_ms.p99;
            targets.push(Target {
                name: format!(
                    "p99 publish->captured <= L+100 ms at half throughput (L={} ms)",
                    run.latency_ms
                ),
                result: verdict(run.paced.latency_ms.count > 0 && p99 <= bound),
                detail: format!(
                    "p99 {p99:.0} ms at {:.0}/s (bound {bound:.0} ms)",
                    run.paced.rate_per_s
                ),
            });
        }
        let peak = self
            .end_to_end
            .iter()
            .map(|r| r.worker_peak_rss_mb)
            .chain(self.backlog.iter().map(|b| b.worker_peak_rss_mb))
            .fold(0.0, f64::max);
        targets.push(match &self.inflight {
            Some(f) => Target {
                name: "peak RSS <= 150 MB with 10,000 captures in flight".into(),
                result: if f.max_unsettled_captures < 10_000 {
                    "not_measured"
                } else {
                    verdict(f.worker_peak_rss_mb <= 150.0)
                },
                detail: format!(
                    "peak {:.1} MB with up to {} captures accepted and unsettled at once, {} provider calls at most in flight ({} ms each); other runs peaked at {peak:.1} MB",
                    f.worker_peak_rss_mb,
                    f.max_unsettled_captures,
                    self.worker_settings.capture_concurrency,
                    f.latency_ms
                ),
            },
            None => Target {
                name: "peak RSS <= 150 MB with 10,000 captures in flight".into(),
                result: "not_measured",
                detail: format!("no in-flight run; other runs peaked at {peak:.1} MB"),
            },
        });
        targets.push(match &self.backlog {
            Some(b) => {
                let flat = b.rss_peak_end_mb <= b.rss_peak_middle_mb * 1.10 + 1.0;
                Target {
                    name: "memory flat over the backlog drain".into(),
                    result: verdict(flat),
                    detail: format!(
                        "RSS peak {:.1} MB while captures 25-58% were done, {:.1} MB for the rest ({} shipments)",
                        b.rss_peak_middle_mb, b.rss_peak_end_mb, b.shipments
                    ),
                }
            }
            None => not_measured("memory flat over the backlog drain"),
        });
        let kept = self.end_to_end.iter().all(|r| r.promises.kept())
            && self
                .backlog
                .iter()
                .chain(self.inflight.iter())
                .all(|b| b.promises.kept());
        targets.push(Target {
            name: "promises kept (every shipment captured once, no key twice, no over-capture, one final per order)".into(),
            result: verdict(kept),
            detail: "checked against the sandbox's request ledger and the ledger".into(),
        });
        targets
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let m = &self.machine;
        let load = |l: Option<f64>| l.map_or("?".to_owned(), |v| format!("{v:.2}"));
        let _ = writeln!(
            t,
            "\ncapture-worker bench{} — {} cores ({}), {} MiB; load {} at start, {} at end; {:.0} s",
            if self.quick { " --quick" } else { "" },
            m.cores,
            m.cpu_model,
            m.memory_mib,
            load(m.load_average_at_start),
            load(m.load_average_at_end),
            self.duration_seconds
        );
        let w = &self.worker_settings;
        let _ = writeln!(t, "worker: {}, log level {}", w.describe(), w.log_level);
        if let Some(other) = m.other_load_cores {
            let _ = writeln!(
                t,
                "other processes on the machine kept {other:.2} of {} cores busy on average during the run",
                m.cores
            );
        }
        if let Some(raw) = &self.raw {
            let _ = writeln!(t, "\nraw limits ({:.1} s each)", raw.seconds);
            let row = |t: &mut String, name: String, rate: f64| {
                let _ = writeln!(t, "  {name:<58} {rate:>9.0}/s");
            };
            row(
                &mut t,
                format!(
                    "RabbitMQ publish + confirm ({} B, quorum, window {})",
                    raw.message_bytes, raw.publish_window
                ),
                raw.rabbitmq_publish_confirms_per_s,
            );
            row(
                &mut t,
                format!("RabbitMQ consume + ack (prefetch {})", raw.prefetch),
                raw.rabbitmq_consume_ack_per_s,
            );
            row(
                &mut t,
                format!(
                    "PostgreSQL naive, 2 tx per shipment ({} clients)",
                    raw.postgres_clients
                ),
                raw.postgres_naive_shipments_per_s,
            );
            row(
                &mut t,
                format!(
                    "HTTP round trips to the sandbox ({} clients)",
                    raw.http_clients
                ),
                raw.http_round_trips_per_s,
            );
            let _ = writeln!(
                t,
                "  tighter raw limit: {} at {:.0}/s",
                raw.tighter, raw.tighter_per_s
            );
            let _ = writeln!(
                t,
                "  (naive PostgreSQL CPU ms per shipment: server {:.2}, clients {:.2})",
                raw.postgres_naive_cpu_ms_per_shipment.postgres,
                raw.postgres_naive_cpu_ms_per_shipment.bench
            );
        }
        if !self.peer.is_empty() {
            let _ = writeln!(t, "\nhand-written peer worker ({})", self.peer[0].settings);
            let _ = writeln!(
                t,
                "  {:>5} {:>9} {:>8} {:>8} | {:>10} {:>10} {:>9} {:>9} | {:>8}",
                "L ms",
                "shipments",
                "steady/s",
                "overall",
                "CPU ms/sh",
                "peer",
                "PG",
                "RabbitMQ",
                "peak RSS"
            );
            for p in &self.peer {
                let _ = writeln!(
                    t,
                    "  {:>5} {:>9} {:>8.0} {:>8.0} | {:>10.2} {:>10.2} {:>9.2} {:>9.2} | {:>5.1} MB",
                    p.latency_ms,
                    p.shipments,
                    p.throughput_per_s,
                    p.overall_throughput_per_s,
                    p.pipeline_cpu_ms_per_shipment,
                    p.peer_cpu_ms_per_shipment,
                    p.service_cpu_ms_per_shipment.postgres,
                    p.service_cpu_ms_per_shipment.rabbitmq,
                    p.peer_peak_rss_mb
                );
            }
        }
        if !self.end_to_end.is_empty() {
            let _ = writeln!(
                t,
                "\nend to end (steady shipments/s, 10th-90th percentile of captures; overall = first publish to last capture)"
            );
            let _ = writeln!(
                t,
                "  {:>5} {:>9} {:>8} {:>8} {:>7} {:>7} | {:>8} {:>6} {:>6} {:>6} | {:>9} {:>6} {:>8} {:>9}",
                "L ms",
                "shipments",
                "steady/s",
                "overall",
                "/tight",
                "/pg",
                "paced/s",
                "p50",
                "p95",
                "p99",
                "sat. p99",
                "CPU s",
                "CPU ms/sh",
                "peak RSS"
            );
            for r in &self.end_to_end {
                let _ = writeln!(
                    t,
                    "  {:>5} {:>9} {:>8.0} {:>8.0} {:>7} {:>7} | {:>8.0} {:>6.0} {:>6.0} {:>6.0} | {:>9.0} {:>6.1} {:>8.2} {:>6.1} MB",
                    r.latency_ms,
                    r.shipments,
                    r.throughput_per_s,
                    r.overall_throughput_per_s,
                    ratio(r.ratio_to_tighter_raw),
                    ratio(r.ratio_to_postgres_naive),
                    r.paced.rate_per_s,
                    r.paced.latency_ms.p50,
                    r.paced.latency_ms.p95,
                    r.paced.latency_ms.p99,
                    r.saturated_latency_ms.p99,
                    r.worker_cpu_seconds,
                    r.worker_cpu_ms_per_shipment,
                    r.worker_peak_rss_mb
                );
            }
        }
        if !self.end_to_end.is_empty() {
            let _ = writeln!(
                t,
                "\n  paced latency by stage, p50/p99 ms: queue+batch wait / intake+claim to call / call / answer to record"
            );
            for r in &self.end_to_end {
                let st = &r.paced.stages;
                let _ = writeln!(
                    t,
                    "  L={:<4} {:.0}/{:.0} / {:.0}/{:.0} / {:.0}/{:.0} / {:.0}/{:.0}   (PostgreSQL checkpoints meanwhile: {} started, {} buffers written)",
                    r.latency_ms,
                    st.queue_and_intake_ms.p50,
                    st.queue_and_intake_ms.p99,
                    st.intake_to_call_ms.p50,
                    st.intake_to_call_ms.p99,
                    st.call_ms.p50,
                    st.call_ms.p99,
                    st.record_ms.p50,
                    st.record_ms.p99,
                    r.paced.checkpoints.started,
                    r.paced.checkpoints.buffers_written
                );
            }
            let _ = writeln!(
                t,
                "\n  CPU ms per shipment (saturated): worker / PostgreSQL / RabbitMQ / bench (sandbox + publisher)"
            );
            for r in &self.end_to_end {
                let s = &r.service_cpu_ms_per_shipment;
                let b = &r.statements;
                let _ = writeln!(
                    t,
                    "  L={:<4} {:.2} / {:.2} / {:.2} / {:.2}   (shipments per intake transaction {:.1}, per claim {:.1}, per record {:.1})",
                    r.latency_ms,
                    r.worker_cpu_ms_per_shipment,
                    s.postgres,
                    s.rabbitmq,
                    s.bench,
                    b.shipments_per_intake_transaction,
                    b.captures_per_claim_statement,
                    b.captures_per_record_statement
                );
            }
            let _ = writeln!(
                t,
                "\n  against the hand-written peer at the same latency: throughput ratio, CPU ratio (worker + PostgreSQL + RabbitMQ), worker settings"
            );
            for r in &self.end_to_end {
                let _ = writeln!(
                    t,
                    "  L={:<4} {}x, {}x ({:.2} ms/shipment)   {}",
                    r.latency_ms,
                    ratio(r.ratio_to_peer),
                    ratio(r.cpu_ratio_to_peer),
                    r.pipeline_cpu_ms_per_shipment,
                    r.worker_settings.describe()
                );
            }
            let _ = writeln!(
                t,
                "\n  PostgreSQL per shipment (saturated): commits / rows inserted / updated / deleted / fetched / buffers touched"
            );
            let db = |t: &mut String, who: String, d: &DbActivity| {
                let _ = writeln!(
                    t,
                    "  {who:<12} {:.2} / {:.2} / {:.2} / {:.2} / {:.1} / {:.1}",
                    d.commits,
                    d.rows_inserted,
                    d.rows_updated,
                    d.rows_deleted,
                    d.rows_fetched,
                    d.buffers
                );
            };
            for r in &self.end_to_end {
                if let Some(d) = &r.database {
                    db(&mut t, format!("worker L={}", r.latency_ms), d);
                }
            }
            for p in &self.peer {
                db(&mut t, format!("peer L={}", p.latency_ms), &p.database);
            }
        }
        if let Some(b) = &self.backlog {
            let _ = writeln!(
                t,
                "\nbacklog drain: {} shipments of {} orders ({} messages) queued, then the worker started (L={} ms)",
                b.shipments, b.orders, b.messages, b.latency_ms
            );
            let s = &b.service_cpu_ms_per_shipment;
            let _ = writeln!(
                t,
                "  CPU ms per shipment: worker {:.2}, PostgreSQL {:.2}, RabbitMQ {:.2}, bench {:.2}",
                b.worker_cpu_ms_per_shipment, s.postgres, s.rabbitmq, s.bench
            );
            let _ = writeln!(
                t,
                "  drained in {:.1} s: {:.0} shipments/s ({:.0} messages/s; steady {:.0} shipments/s); CPU {:.1} s ({:.2} ms/shipment); peak RSS {:.1} MB ({:.1} while captures 25-58% were done, {:.1} after); up to {} captures unsettled",
                b.drain_seconds,
                b.shipments_per_s,
                b.messages_per_s,
                b.steady_shipments_per_s,
                b.worker_cpu_seconds,
                b.worker_cpu_ms_per_shipment,
                b.worker_peak_rss_mb,
                b.rss_peak_middle_mb,
                b.rss_peak_end_mb,
                b.max_unsettled_captures
            );
        }
        if let Some(f) = &self.inflight {
            let _ = writeln!(
                t,
                "\ncaptures in flight: {} shipments queued, provider answering in {} ms, at most {} calls at once",
                f.shipments, f.latency_ms, self.worker_settings.capture_concurrency
            );
            let _ = writeln!(
                t,
                "  up to {} captures accepted and unsettled at once; peak RSS {:.1} MB ({:.1} while captures 25-58% were done, {:.1} after); drained in {:.1} s",
                f.max_unsettled_captures,
                f.worker_peak_rss_mb,
                f.rss_peak_middle_mb,
                f.rss_peak_end_mb,
                f.drain_seconds
            );
        }
        if !self.targets.is_empty() {
            let _ = writeln!(t, "\ntargets");
            for target in &self.targets {
                let _ = writeln!(
                    t,
                    "  [{:<12}] {} — {}",
                    target.result, target.name, target.detail
                );
            }
        }
        t
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("-".to_owned(), |v| format!("{v:.2}"))
}

fn not_measured(name: &str) -> Target {
    Target {
        name: name.to_owned(),
        result: "not_measured",
        detail: "not part of this run".into(),
    }
}

//! The use cases and the composition root: intake, execution, recovery, startup and shutdown.
//!
//! `app` is the only module that knows every adapter. [`Application::build`] wires settings
//! into a store, providers, the executor, the sweeper, the consumer and the HTTP server
//! (health, metrics and provider webhooks);
//! [`Application::run_until_stopped`] runs them until the given shutdown future resolves, then
//! stops consuming, lets in-flight captures record their outcome, and returns.
//!
//! # Layout
//!
//! - `intake`    — one message (or one batch of deliveries), one transaction, then the
//!   acknowledgement; a folder, one file per responsibility (see its own layout). It hands
//!   the captures it creates to execution through an `execute::Handoff`, not the executor.
//! - `execute/`  — sends each capture to its provider and records what happened: the run
//!   loop (`mod.rs`), one attempt and its outcome (`attempt`), read-backs (`readback`), batched
//!   claims and successes (`batch`), the provider requests (`request`), spans and metrics
//!   (`spans`).
//! - `recovery`  — the sweeper: captures whose retry is due or whose lease expired.
//! - `expiry`    — the authorization-expiry sweep; dispatches through an `execute::Handoff`.
//! - `lifecycle` — the lifecycle sweep: asks `domain::lifecycle` about each open hold and
//!   extends, increments or releases it through the provider.
//! - `limiter`   — the adaptive limit on each provider's calls in flight (a pure state
//!   machine; `execute` gates its calls with it).
//! - `relay`     — the outbox relay: publishes the outcome events the ledger's transitions
//!   wrote, and prunes published ones.
//! - `retry`     — the retry schedule.
//! - `providers` — the providers this worker can call, built from `providers.<name>`.
//! - `http`, `webhooks` — health, readiness, metrics and the provider webhooks on
//!   `http.listen`.
//! - `commands`  — the commands behind the command line: run, migrate, sandbox, publish, demo.
//! - `operator`  — the operator and finance commands (report, order, capture, dead-letter,
//!   provider), each taking its own request type.
//!
//! Intake, the expiry sweep and `order resume` write the ledger through one unit of work,
//! `storage::LedgerTx`, and record a plan through one writer (`LedgerTx::record_plan`; intake
//! through its write set, `IntakeBatch::record_plan`): no `sqlx` and no SQL in them.
//!
//! None of them knows the command line: `cli` maps clap's arguments to their request, format
//! and units types.
//!
//! They name each other in no circle (`tests/it/architecture.rs` checks it): what several need
//! and is a pure notion lives in the domain (a provider's capabilities, looked up through
//! `domain::CapabilityLookup`, which `providers` implements).
//!
//! The tools (the benchmark, the fault harness) are not here: they are binaries of their own
//! under `src/bin/`.

pub mod commands;
pub mod execute;
pub mod expiry;
pub mod http;
pub mod intake;
pub mod lifecycle;
pub mod limiter;
pub mod operator;
pub mod providers;
pub mod recovery;
pub mod relay;
pub mod retry;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use tokio::sync::watch;

use crate::config::Settings;
use crate::queue::consumer::{
    self, ConsumerConfig, ConsumerStatus, DeliveryHandler, Disposition, IncomingMessage,
};
use crate::queue::dead_letter::DeadLetterSink;
use crate::queue::topology::Topology;
use crate::storage::Store;

use execute::{CallLimits, Executor};
use intake::{Intake, IntakeOutcome};
use providers::Providers;
use recovery::Sweeper;
use retry::RetryPolicy;

/// Options that are not settings: what the command line decided.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Apply migrations at start.
    pub migrate: bool,
    /// Create the database when it is missing (needs CREATEDB).
    pub create_database: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            migrate: true,
            create_database: true,
        }
    }
}

/// Everything wired, not yet running.
pub struct Application {
    settings: Settings,
    store: Store,
    providers: Providers,
    executor: Executor,
    dispatch_rx: execute::WorkReceiver,
    intake: Arc<Intake>,
    listener: tokio::net::TcpListener,
    consumer_status: ConsumerStatus,
}

impl Application {
    pub async fn build(settings: Settings, options: RunOptions) -> anyhow::Result<Application> {
        let store = Store::connect(&settings.database, options.create_database)
            .await
            .context("connecting to PostgreSQL")?;
        if options.migrate {
            store.migrate().await.context("applying migrations")?;
        }
        let providers =
            Providers::from_settings(&settings).context("building provider adapters")?;
        Application::build_with(settings, store, providers).await
    }

    /// Builds with a given store and providers (tests use this to inject adapters).
    pub async fn build_with(
        settings: Settings,
        store: Store,
        providers: Providers,
    ) -> anyhow::Result<Application> {
        // Metrics are process-wide; installing here covers programs that build an application
        // without `telemetry::init` (tests, embedding).
        crate::telemetry::metrics::install();
        // Text the worker stores, logs or forwards never carries its own secrets.
        crate::sanitize::register_secrets(settings.secrets());
        let c = &settings.capture;
        let policy = RetryPolicy {
            initial: Duration::from_millis(c.retry_initial_ms),
            max: Duration::from_millis(c.retry_max_ms),
            max_attempts: c.max_attempts,
            max_age: Duration::from_secs(c.max_retry_age_seconds),
            pending_poll: Duration::from_millis(c.notification_wait_ms),
        };
        let worker_id = format!(
            "w{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let (executor, dispatch_rx) = Executor::with_limits(
            store.clone(),
            providers.clone(),
            policy,
            worker_id,
            c.lease_seconds,
            CallLimits::adaptive(
                c.concurrency_min.min(c.concurrency),
                c.concurrency,
                // A call without an answer after nine tenths of the timeout timed out (the
                // adapters measure a little less than the client waited).
                Duration::from_millis(c.provider_timeout_ms.saturating_mul(9) / 10),
            ),
        );
        let intake = Arc::new(
            Intake::new(
                store.clone(),
                Arc::new(providers.clone()),
                c.shipping_policy.into(),
                c.parking_seconds,
            )
            .with_max_message_bytes(settings.amqp.max_message_bytes)
            .claiming_for(executor.handoff()),
        );
        let listener = tokio::net::TcpListener::bind(&settings.http.listen)
            .await
            .with_context(|| format!("binding http.listen {}", settings.http.listen))?;
        Ok(Application {
            settings,
            store,
            providers,
            executor,
            dispatch_rx,
            intake,
            listener,
            consumer_status: ConsumerStatus::default(),
        })
    }

    /// The address the health server listens on (useful with port 0).
    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    pub fn consumer_status(&self) -> ConsumerStatus {
        self.consumer_status.clone()
    }

    /// Runs until `shutdown` resolves: stops consuming, finishes deliveries and captures in
    /// progress, and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let topology = Topology::new(
            self.settings.amqp.exchange.clone(),
            self.settings.amqp.queue.clone(),
        );
        let sink = Arc::new(DeadLetterSink::new(
            self.settings.amqp.url.expose().to_owned(),
            topology.clone(),
        ));
        let handler: Arc<dyn DeliveryHandler> = Arc::new(IntakeHandler {
            intake: intake::IntakeBatcher::spawn(
                self.intake.clone(),
                usize::from(self.settings.amqp.prefetch),
                INTAKE_WRITERS,
            ),
            executor: self.executor.clone(),
        });
        let consumer_config = ConsumerConfig {
            url: self.settings.amqp.url.expose().to_owned(),
            topology,
            prefetch: self.settings.amqp.prefetch,
            consumer_tag: format!("capture-worker-{}", self.executor.worker_id()),
        };
        let consumer_task = tokio::spawn(consumer::run(
            consumer_config,
            handler,
            self.consumer_status.clone(),
            stop_rx.clone(),
        ));
        let executor = self.executor.clone();
        let exec_rx = stop_rx.clone();
        let executor_task =
            tokio::spawn(async move { executor.run(self.dispatch_rx, exec_rx).await });
        let sweeper =
            Sweeper {
                store: self.store.clone(),
                executor: self.executor.clone(),
                intake: self.intake.clone(),
                dead_letters: Some(sink),
                interval: Duration::from_millis(self.settings.capture.sweep_interval_ms),
                expiry: Some((
                    expiry::ExpirySweep {
                        store: self.store.clone(),
                        providers: self.providers.clone(),
                        handoff: self.executor.handoff(),
                        shipping: self.settings.capture.shipping_policy.into(),
                    },
                    Duration::from_millis(self.settings.capture.expiry_sweep_ms.max(1)),
                )),
                lifecycle: self.settings.capture.lifecycle_sweep.then(|| {
                    lifecycle::LifecycleSweep {
                        store: self.store.clone(),
                        providers: self.providers.clone(),
                        shipping: self.settings.capture.shipping_policy.into(),
                        settings: self.settings.capture.lifecycle(),
                        executor: Some(self.executor.clone()),
                    }
                }),
            };
        let sweeper_task = tokio::spawn(sweeper.run(stop_rx.clone()));
        let relay_task = self.settings.outbox.relay.then(|| {
            let o = &self.settings.outbox;
            let relay = relay::Relay {
                store: self.store.clone(),
                publisher: Arc::new(crate::queue::outcomes::OutcomePublisher::new(
                    self.settings.amqp.url.expose().to_owned(),
                    self.settings.amqp.outcomes_exchange.clone(),
                )),
                batch: i64::from(o.batch.max(1)),
                poll_interval: Duration::from_millis(o.poll_interval_ms.max(1)),
                confirm_timeout: Duration::from_millis(o.confirm_timeout_ms.max(1)),
                retention: Duration::from_secs(o.retention_hours.saturating_mul(3600)),
            };
            tokio::spawn(relay.run(stop_rx.clone()))
        });
        let router = http::router(http::HealthState {
            store: self.store.clone(),
            consumer: self.consumer_status.clone(),
            providers: self.providers.clone(),
        })
        .merge(webhooks::router(webhooks::WebhookState {
            store: self.store.clone(),
            providers: self.providers.clone(),
            executor: self.executor.clone(),
            rejections: webhooks::RejectionBudget::default(),
        }));
        let mut http_stop = stop_rx.clone();
        let http_task = tokio::spawn(async move {
            axum::serve(self.listener, router)
                .with_graceful_shutdown(async move {
                    let _ = http_stop.changed().await;
                })
                .await
        });
        tracing::info!(event = "worker_started", worker_id = %self.executor.worker_id(), "capture-worker running");

        shutdown.await;
        tracing::info!(
            event = "worker_stopping",
            "stopping: no new deliveries; finishing work in progress"
        );
        let _ = stop_tx.send(true);
        let drain = async {
            let _ = consumer_task.await;
            let _ = executor_task.await;
            let _ = sweeper_task.await;
            if let Some(relay_task) = relay_task {
                let _ = relay_task.await;
            }
            let _ = http_task.await;
        };
        if tokio::time::timeout(Duration::from_secs(20), drain)
            .await
            .is_err()
        {
            tracing::warn!(
                event = "shutdown_timeout",
                "work still in progress after 20 s; leases hand it to the next worker"
            );
        }
        tracing::info!(event = "worker_stopped", "capture-worker stopped");
        Ok(())
    }
}

/// Intake transactions that may run at once in one process. One: while it commits, the
/// deliveries that arrive meanwhile gather into the next batch, so under load every
/// transaction carries many messages. Measured on 2 cores (docs/performance.md), two writers
/// committed no more shipments per second and raised publish → captured p99 by ~20 ms: each
/// extra transaction competes with its twin for the same CPUs and row locks.
const INTAKE_WRITERS: usize = 1;

/// Intake behind the consumer: commit (batched with concurrent deliveries), then dispatch the
/// captures it created.
struct IntakeHandler {
    intake: intake::IntakeBatcher,
    executor: Executor,
}

#[async_trait]
impl DeliveryHandler for IntakeHandler {
    async fn handle(&self, message: IncomingMessage) -> Disposition {
        let outcome = self.intake.handle(&message).await;
        crate::telemetry::metrics::message_handled(
            &message.routing_key,
            outcome.as_ref().map_or("retry", intake::outcome_label),
        );
        if let Ok(IntakeOutcome::Processed { dispatch }) = &outcome {
            for order_id in dispatch {
                self.executor.dispatch(order_id.clone());
            }
        }
        intake::disposition(outcome, &message.body)
    }

    fn ordering_key(&self, body: &[u8]) -> Option<String> {
        crate::queue::wire::peek_order_id(body)
    }
}

//! capture-worker: charges customers as their orders ship.
//!
//! Checkout authorizes a card; warehouses publish shipment events; for each shipment this
//! service turns the shipped line items into an exact capture amount and captures it from the
//! authorization, once, with the last capture marked final.
//!
//! # Layout
//!
//! - `domain`    — pure rules: money, currencies, ids, orders, allocation, capture planning.
//!   Imports no I/O or runtime crate and never reads the clock.
//! - `config`    — typed settings: `config/default.toml` → `config/{CAPTURE_ENV}.toml` →
//!   `CAPTURE__SECTION__KEY` environment variables. Secrets are redacted types.
//! - `cli`       — clap definitions only.
//! - `telemetry` — the tracing subscriber (JSON logs with trace ids), OpenTelemetry traces
//!   over OTLP, Prometheus metrics and the named events we alert on. Process-global; any layer
//!   but `domain` may use it. Imports no adapter.
//! - `provider`  — the payment-provider trait and outcome, one adapter per provider, and the
//!   sandbox provider server. Imports `domain` only.
//! - `storage`   — PostgreSQL via sqlx: migrations, the ledger, the capture queue. Imports
//!   `domain` only.
//! - `queue`     — RabbitMQ via lapin: topology, the message contract (wire), consumer,
//!   publisher, trace headers. Imports `domain` only.
//! - `sanitize`  — the one boundary for outside text we store, log, forward or print: NUL and
//!   invalid UTF-8 replaced, card numbers masked, the worker's own secrets removed, length capped.
//! - `app`       — the use cases (intake, execution, recovery) and the composition root; the
//!   only module that knows every adapter.
//!
//! Dependencies point inward: adapters depend on `domain`, never on each other.

pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod provider;
pub mod queue;
pub mod sanitize;
/// The former name of [`sanitize`].
pub use sanitize as redact;
pub mod storage;
pub mod telemetry;

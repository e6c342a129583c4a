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
//!   `CAPTURE__SECTION__KEY` environment variables. Secrets are `secret::Secret`s.
//! - `secret`    — `Secret`, a value that prints, logs and serializes as `[redacted]`; the
//!   adapters take their credentials' type from here. Imports nothing of the crate.
//! - `cli`       — clap definitions of the `capture-worker` command line, mapped to the use
//!   cases' own request, format and units types; used by `main.rs` only.
//! - `telemetry` — the tracing subscriber (JSON logs with trace ids), OpenTelemetry traces
//!   over OTLP, Prometheus metrics and the named events we alert on. Process-global; any layer
//!   but `domain` may use it. Imports no adapter.
//! - `provider`  — the payment-provider trait and outcome, and one adapter per provider
//!   (`provider/<name>/`). Imports `domain` and `secret`.
//! - `storage`   — PostgreSQL via sqlx: migrations, the ledger, the capture queue. Owns every
//!   SQL statement and parses what it reads into the domain's types (a claimed capture carries
//!   `OrderId`, `AuthorizationId`, `Money`…). Imports `domain`, `config` (`DatabaseSettings`)
//!   and `sanitize`.
//! - `queue`     — RabbitMQ via lapin: topology, the message contract (wire), consumer,
//!   publisher, trace headers. Imports `domain`, `telemetry` and `sanitize`.
//! - `sanitize`  — the one boundary for outside text we store, log, forward or print: NUL and
//!   invalid UTF-8 replaced, card numbers masked, the worker's own secrets removed, length capped.
//! - `sandbox`   — the built-in sandbox provider server, which `run` serves by default: one
//!   capture model, one dialect per provider, reached through the same HTTP adapters as
//!   production. Not an adapter: no adapter imports it. Imports `domain` only.
//! - `app`       — the use cases (intake, execution, recovery, the expiry sweep, webhooks,
//!   the operator commands) and the composition root; the only module that knows every
//!   adapter.
//!
//! Dependencies point inward: an adapter (`provider/<name>/`, `storage`, `queue`) depends on
//! `domain` and the shared `secret`, `sanitize` and `telemetry`, never on another adapter,
//! `app`, `sandbox` or `config` (`storage` excepted, for `DatabaseSettings`).
//!
//! The tools are binaries of their own under `src/bin/`, beside `capture-worker` (`main.rs`):
//! `bench`, the benchmark (docs/performance.md), and `fault-harness` (docs/reliability.md).
//! They use this library's public API only; the library holds none of their code.
//! `tests/it/architecture.rs` checks that, the domain's purity, the adapters' imports, who
//! uses `cli`, that the modules of `app` (a folder such as `app/execute/` counts as one) name
//! each other in no circle, and that nothing outside `storage` and the tools names `sqlx` or
//! holds a SQL statement.

pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod provider;
pub mod queue;
pub mod sandbox;
pub mod sanitize;
pub mod secret;
/// The former name of [`sanitize`].
pub use sanitize as redact;
pub mod storage;
pub mod telemetry;

//! Typed settings, layered: `config/default.toml` → `config/{CAPTURE_ENV}.toml` → environment
//! variables `CAPTURE__SECTION__KEY` (DESIGN §5a).
//!
//! Owns the shape of every setting and where it comes from. Secrets (`database.url`,
//! `amqp.url`, provider API keys) are [`Secret`]s: they print as `[redacted]` and are read
//! with `expose()` only where they are used ([`crate::secret`]). Must not import the domain's
//! adapters.
//!
//! Environment overrides use `__` both after the prefix and between keys
//! (`CAPTURE__DATABASE__URL`); a single underscore after the prefix is ignored by the loader,
//! so [`Settings::load_from`] warns about such variables. Values are taken as strings and
//! converted by the field's type, so `"007"` stays `"007"` in a string field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Settings hold their secrets as [`Secret`]s; the type lives in [`crate::secret`], where the
/// adapters take it from. Re-exported here because the settings' public fields are of this type.
pub use crate::secret::Secret;

/// The environment variable prefix.
pub const ENV_PREFIX: &str = "CAPTURE";

/// All settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub http: HttpSettings,
    pub telemetry: TelemetrySettings,
    pub capture: CaptureSettings,
    /// Outcome events: the outbox relay and its retention.
    #[serde(default)]
    pub outbox: OutboxSettings,
    /// The built-in sandbox provider.
    pub sandbox: SandboxSettings,
    /// Per provider, by name (`stripe`, `sandbox`, …).
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSettings>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// PostgreSQL URL, e.g. `postgres://capture_worker@db:5432/capture?sslmode=verify-full`.
    /// A secret: it may carry a password.
    pub url: Secret,
    /// Pool size; at least the number of captures run concurrently plus intake. Example: 16.
    pub max_connections: u32,
    /// How long to wait for a pooled connection before failing, in milliseconds. Example: 5000.
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    /// AMQP URL, e.g. `amqps://worker@rabbit:5671/%2f`. A secret: it may carry a password.
    pub url: Secret,
    /// Topic exchange warehouses publish to. Default `fulfillment`.
    pub exchange: String,
    /// Quorum queue this worker consumes. Default `capture-worker`; the dead-letter queue is
    /// `<queue>.dead-letter`.
    pub queue: String,
    /// Unacknowledged deliveries per consumer (per-consumer QoS). Example: 64.
    pub prefetch: u16,
    /// Largest message body read, in bytes (at most 16 MiB). A larger one is refused as
    /// `too_large`: only a bounded excerpt is kept and dead-lettered. The worker holds at
    /// most `prefetch` deliveries, so what it keeps of message bodies stays under prefetch ×
    /// this limit; set the broker's `max_message_size` near it too, as the broker hands over
    /// whole bodies. Default 262144 (256 KiB).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Durable topic exchange the worker publishes its outcome events to (routing key = the
    /// event type; docs/subscribers.md). Default `fulfillment.outcomes`.
    #[serde(default = "default_outcomes_exchange")]
    pub outcomes_exchange: String,
}

fn default_max_message_bytes() -> usize {
    256 * 1024
}

fn default_outcomes_exchange() -> String {
    "fulfillment.outcomes".to_owned()
}

/// The outbox relay: outcome events are written with the ledger transition they report and
/// published from the `outcome_events` table by a task in every worker.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSettings {
    /// Run the relay in this worker. Off, events still queue up in the outbox (another
    /// replica, or this one restarted with it on, publishes them). Default true.
    pub relay: bool,
    /// How often an idle relay looks for new events, in milliseconds. Example: 100.
    pub poll_interval_ms: u64,
    /// Events published per relay transaction (at most one per order). Example: 256.
    pub batch: u32,
    /// How long the broker may take to confirm a publish, in milliseconds. Example: 10000.
    pub confirm_timeout_ms: u64,
    /// Published events are deleted after this many hours. Example: 168 (a week).
    pub retention_hours: u64,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            relay: true,
            poll_interval_ms: 100,
            batch: 256,
            confirm_timeout_ms: 10_000,
            retention_hours: 168,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address for health, metrics and webhooks, e.g. `127.0.0.1:8080`; port 0 picks a free one.
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// OTLP/HTTP traces endpoint including `/v1/traces`, e.g.
    /// `http://127.0.0.1:4318/v1/traces`. Unset or empty: the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` decide, and without
    /// them traces are not exported.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `auto` (text when stderr is a terminal, else JSON), `json` (one object per line) or
    /// `text`.
    pub log_format: LogFormat,
    /// `tracing` filter directive, e.g. `info,capture_worker=debug`.
    pub log_level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSettings {
    /// `first_capture` (all shipping with the first capture) or `prorated`.
    pub shipping_policy: ShippingPolicySetting,
    /// How long a shipment waits for its order before it is dead-lettered as `unknown_order`,
    /// in seconds; also how long at most a shipment that exceeds its order's hold waits for
    /// the answer to an increment of the hold before it is planned with shortfall. Example:
    /// 3600.
    pub parking_seconds: u64,
    /// Provider calls per capture before it needs attention. Example: 12.
    pub max_attempts: u32,
    /// First retry delay in milliseconds; doubles per attempt with jitter. Example: 500.
    pub retry_initial_ms: u64,
    /// Longest retry delay in milliseconds. Example: 60000.
    pub retry_max_ms: u64,
    /// A capture still failing this many seconds after its first attempt needs attention.
    /// Example: 3600.
    pub max_retry_age_seconds: u64,
    /// How long a worker holds a capture it is sending, in seconds; longer than the provider
    /// timeout. After a crash, another worker takes the capture over when this expires.
    /// Example: 30.
    pub lease_seconds: u64,
    /// How often the sweeper looks for due retries, expired leases and parked messages, in
    /// milliseconds. Example: 1000.
    pub sweep_interval_ms: u64,
    /// Provider request timeout in milliseconds. Example: 10000.
    pub provider_timeout_ms: u64,
    /// The most provider calls in flight at once, per provider, and the most orders whose
    /// captures are sent at once (one capture in flight per order). Each provider's limit
    /// adapts below it: it grows while the provider's latency holds and calls succeed, and
    /// backs off on rising latency, 429s and timeouts (docs/performance.md). Example: 1024.
    pub concurrency: usize,
    /// Where each provider's adaptive limit starts, and the least it backs off to.
    /// Example: 16.
    #[serde(default = "default_concurrency_min")]
    pub concurrency_min: usize,
    /// How long a capture the provider accepted (a pending answer) waits for the provider's
    /// notification before the worker reads the authorization back, in milliseconds; later
    /// read-backs back off like retries. A pending capture still unsettled after
    /// `max_retry_age_seconds` needs attention. Example: 30000.
    #[serde(default = "default_notification_wait_ms")]
    pub notification_wait_ms: u64,
    /// How often the sweeper looks for open orders whose authorization expires within the
    /// provider's `capture_ahead` (12 h), captures what has shipped for them, and lists the
    /// orders at risk, in milliseconds. Example: 60000.
    #[serde(default = "default_expiry_sweep_ms")]
    pub expiry_sweep_ms: u64,
    /// Whether the lifecycle sweep runs (with the expiry sweep, every `expiry_sweep_ms`):
    /// it extends holds before they lapse and increments them for a shortfall where the
    /// provider documents it (docs/providers.md, Lifecycle). Example: true.
    #[serde(default = "default_true")]
    pub lifecycle_sweep: bool,
    /// How long before a hold (or PayPal's honor period) runs out it is extended, in hours.
    /// Example: 24.
    #[serde(default = "default_extend_ahead_hours")]
    pub extend_ahead_hours: u64,
    /// A hold with nothing shipped and nothing captured this many hours after it was made is
    /// released (event `authorization_released`, a `reconciliation_exceptions` row); 0: never.
    /// Example: 0.
    #[serde(default)]
    pub idle_release_hours: u64,
    /// What is left of a hold this many days old with nothing left to ship is released;
    /// 0: never.
    /// Example: 30.
    #[serde(default = "default_max_hold_age_days")]
    pub max_hold_age_days: u64,
}

fn default_true() -> bool {
    true
}

fn default_extend_ahead_hours() -> u64 {
    24
}

fn default_max_hold_age_days() -> u64 {
    30
}

impl CaptureSettings {
    /// The lifecycle policy's settings.
    pub fn lifecycle(&self) -> crate::domain::lifecycle::LifecycleSettings {
        let hours = |h: u64| chrono::Duration::hours(i64::try_from(h).unwrap_or(i64::MAX / 7200));
        crate::domain::lifecycle::LifecycleSettings {
            extend_ahead: hours(self.extend_ahead_hours),
            idle_release_after: (self.idle_release_hours > 0)
                .then(|| hours(self.idle_release_hours)),
            max_age: (self.max_hold_age_days > 0)
                .then(|| hours(self.max_hold_age_days.saturating_mul(24))),
            ..crate::domain::lifecycle::LifecycleSettings::default()
        }
    }
}

fn default_concurrency_min() -> usize {
    16
}

fn default_notification_wait_ms() -> u64 {
    30_000
}

fn default_expiry_sweep_ms() -> u64 {
    60_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShippingPolicySetting {
    FirstCapture,
    Prorated,
}

impl From<ShippingPolicySetting> for crate::domain::ShippingPolicy {
    fn from(value: ShippingPolicySetting) -> Self {
        match value {
            ShippingPolicySetting::FirstCapture => crate::domain::ShippingPolicy::FirstCapture,
            ShippingPolicySetting::Prorated => crate::domain::ShippingPolicy::Prorated,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSettings {
    /// `run` serves the sandbox provider in-process, so the worker runs with no provider
    /// credentials. Off in production.
    pub embedded: bool,
    /// Where the sandbox listens, e.g. `127.0.0.1:8081`; `providers.sandbox.base_url` points
    /// here.
    pub listen: String,
    /// Latency added to every sandbox call, in milliseconds (realistic provider latency for
    /// demos and benchmarks). Example: 0.
    pub latency_ms: u64,
    /// Where the sandbox posts the notifications of its asynchronous dialects, by dialect
    /// (`adyen`, `checkout`, `gr4vy`, `paypal`), e.g. `[sandbox.notifications.adyen]
    /// url = "http://127.0.0.1:8080/webhooks/adyen"` with `secret` the key it signs with (the
    /// worker's `providers.adyen.webhook_secret`). Unset: the sandbox sends none.
    #[serde(default)]
    pub notifications: BTreeMap<String, SandboxNotificationSettings>,
}

/// One notification target of the sandbox.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxNotificationSettings {
    /// The worker's webhook URL for this dialect's provider, e.g.
    /// `http://127.0.0.1:8080/webhooks/adyen`.
    pub url: String,
    /// The key the sandbox signs with: Adyen's HMAC key in hex, Gr4vy's subscription secret,
    /// Checkout.com's signature key. PayPal's notifications are not signed by the sandbox.
    #[serde(default)]
    pub secret: Option<Secret>,
}

/// One provider account, under `providers.<name>`. The name is what orders carry in
/// `payment.provider`; `kind` picks the adapter, so one worker can serve several accounts of
/// the same provider (`[providers.acme_adyen] kind = "adyen"`). `Default` leaves every
/// optional setting unset (and `base_url` empty), for building settings in code.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// Which adapter serves this entry: `stripe`, `sandbox` (the built-in sandbox, Stripe's
    /// dialect), `gr4vy`, `adyen`, `checkout` (Checkout.com), `paypal`, `hellgate` or
    /// `orchestrator`. Unset: the entry's name, so `[providers.adyen]` needs no `kind`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Base URL of the provider's API, e.g. `https://api.stripe.com`,
    /// `https://checkout-test.adyen.com/v71` (Adyen: with the API version),
    /// `https://api.sandbox.acme.gr4vy.app`, `https://api-m.paypal.com`.
    pub base_url: String,
    /// The provider's secret, from the environment (`CAPTURE__PROVIDERS__STRIPE__API_KEY`):
    /// Stripe secret key, Gr4vy bearer JWT, Adyen API key, Checkout.com secret key, PayPal
    /// client secret, Hellgate API key, orchestrator API key.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// A file holding the secret (a mounted secret); used when `api_key` is unset.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// The merchant account: Adyen's merchant account name (required for `adyen`, e.g.
    /// `AcmeShopEU`), or Gr4vy's merchant account id (sent as
    /// `x-gr4vy-merchant-account-id`, e.g. `default`). Not a secret.
    #[serde(default)]
    pub merchant_account: Option<String>,
    /// PayPal's REST app client id (required for `paypal` with `api_key`, the client
    /// secret). Not a secret.
    #[serde(default)]
    pub client_id: Option<String>,
    /// `orchestrator` only: captures the merchant's processor connection allows on one
    /// authorization. Unset or 1: a single capture, sent when the order completes; e.g. 10
    /// for a connection with follow-on captures.
    #[serde(default)]
    pub max_captures: Option<u32>,
    /// The key the provider signs its notifications with (`adyen`, `gr4vy`, `checkout` only):
    /// Adyen's HMAC key in hex as the Customer Area shows it, Gr4vy's webhook subscription
    /// secret, Checkout.com's webhook signature key. From the environment
    /// (`CAPTURE__PROVIDERS__ADYEN__WEBHOOK_SECRET`). Unset: notifications to
    /// `/webhooks/<name>` are refused with 401, and pending captures are settled by reading
    /// the provider back.
    #[serde(default)]
    pub webhook_secret: Option<Secret>,
    /// A file holding the webhook secret; used when `webhook_secret` is unset.
    #[serde(default)]
    pub webhook_secret_file: Option<PathBuf>,
}

impl ProviderSettings {
    /// The API key from `api_key`, else from `api_key_file` (trailing newline trimmed).
    pub fn resolve_api_key(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(key) = &self.api_key {
            return Ok(Some(key.clone()));
        }
        match &self.api_key_file {
            None => Ok(None),
            Some(path) => std::fs::read_to_string(path)
                .map(|s| Some(Secret::new(s.trim_end_matches(['\r', '\n']))))
                .map_err(|source| ConfigError::SecretFile {
                    path: path.clone(),
                    source,
                }),
        }
    }
}

impl ProviderSettings {
    /// The webhook secret from `webhook_secret`, else from `webhook_secret_file` (trailing
    /// newline trimmed).
    pub fn resolve_webhook_secret(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(secret) = &self.webhook_secret {
            return Ok(Some(secret.clone()));
        }
        match &self.webhook_secret_file {
            None => Ok(None),
            Some(path) => std::fs::read_to_string(path)
                .map(|s| Some(Secret::new(s.trim_end_matches(['\r', '\n']))))
                .map_err(|source| ConfigError::SecretFile {
                    path: path.clone(),
                    source,
                }),
        }
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error(
        "loading settings from {dir} (environment {env:?}) failed: {source}; check the TOML files and CAPTURE__* variables"
    )]
    Load {
        dir: PathBuf,
        env: Option<String>,
        source: Box<::config::ConfigError>,
    },
    #[error("reading the secret file {path} failed: {source}")]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Settings {
    /// Loads from `CAPTURE_CONFIG_DIR` (default `config`), `CAPTURE_ENV` and the process
    /// environment.
    pub fn load() -> Result<Settings, ConfigError> {
        let dir = std::env::var("CAPTURE_CONFIG_DIR").unwrap_or_else(|_| "config".to_owned());
        let env_name = std::env::var("CAPTURE_ENV").ok().filter(|s| !s.is_empty());
        Settings::load_from(Path::new(&dir), env_name.as_deref(), std::env::vars())
    }

    /// Loads from `dir/default.toml`, then `dir/{env_name}.toml` if it exists, then the
    /// `CAPTURE__*` entries of `vars`.
    pub fn load_from(
        dir: &Path,
        env_name: Option<&str>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut env_map = ::config::Map::new();
        for (k, v) in vars {
            if k.starts_with("CAPTURE__") {
                env_map.insert(k, v);
            } else if k.starts_with("CAPTURE_") && k.contains("__") {
                // The loader needs `__` right after the prefix; say so instead of ignoring it.
                eprintln!(
                    "warning: environment variable {k} is ignored: overrides are spelled CAPTURE__SECTION__KEY"
                );
            }
        }
        let mut builder = ::config::Config::builder()
            .add_source(::config::File::from(dir.join("default.toml")).required(true));
        if let Some(env) = env_name {
            builder = builder
                .add_source(::config::File::from(dir.join(format!("{env}.toml"))).required(false));
        }
        let built = builder
            .add_source(
                ::config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(env_map)),
            )
            .build()
            .and_then(|c| c.try_deserialize::<Settings>());
        let mut settings = built.map_err(|source| ConfigError::Load {
            dir: dir.to_path_buf(),
            env: env_name.map(str::to_owned),
            source: Box::new(source),
        })?;
        if settings
            .telemetry
            .otlp_endpoint
            .as_deref()
            .is_some_and(|e| e.trim().is_empty())
        {
            settings.telemetry.otlp_endpoint = None;
        }
        Ok(settings)
    }

    /// The worker's own secrets, for [`crate::sanitize::register_secrets`]: provider API keys
    /// and webhook secrets (from their files too, when readable) and the passwords in
    /// `database.url` and `amqp.url`.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = crate::sanitize::url_password(self.database.url.expose());
        out.extend(crate::sanitize::url_password(self.amqp.url.expose()));
        for p in self.providers.values() {
            for secret in [p.resolve_api_key(), p.resolve_webhook_secret()] {
                if let Ok(Some(s)) = secret {
                    out.push(s.expose().to_owned());
                }
            }
        }
        out
    }
}

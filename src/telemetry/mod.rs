//! Telemetry: the process-wide `tracing` subscriber (JSON or text logs carrying trace and span
//! ids), OpenTelemetry traces exported over OTLP/HTTP, Prometheus metrics, and the named events
//! we alert on.
//!
//! Owns everything process-global about observability, so the rest of the code only creates
//! spans, records fields and emits typed events. Every layer except `domain` may use it; it
//! imports no adapter. Nothing here may log or export a secret: settings print through
//! `secret::Secret`, which redacts itself, and no span or metric is given an API key, a URL with
//! credentials or card data.

pub mod events;
mod logs;
pub mod metrics;
pub mod trace;

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::dispatcher::WeakDispatch;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetrySettings};

/// The installed subscriber, weakly held so the log formatter can read a span's OpenTelemetry
/// ids (they live in the OpenTelemetry layer, reachable only through the dispatcher).
static DISPATCH: OnceLock<WeakDispatch> = OnceLock::new();

/// How long shutdown waits for the last batch of spans to reach the collector.
const EXPORT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Flushes telemetry when dropped; keep it alive for the life of the process.
#[must_use = "telemetry is flushed when the guard drops"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // The batch processor exports on its own thread; without this the spans of the last
        // seconds (often the interesting ones, before a shutdown) are lost (STACK trap 9).
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown_with_timeout(EXPORT_SHUTDOWN_TIMEOUT)
        {
            eprintln!("capture-worker: flushing traces at exit failed: {e}");
        }
    }
}

/// Installs the global subscriber and the metrics recorder. `RUST_LOG`, when set, overrides
/// `telemetry.log_level`.
///
/// Spans always get OpenTelemetry trace and span ids, so logs and `capture_attempts.trace_id`
/// carry them even when no collector is configured; they are exported only when
/// `telemetry.otlp_endpoint` or a standard endpoint variable is set (see [`export_endpoint`]). A collector that cannot be configured is reported and
/// skipped: telemetry never stops payments.
pub fn init(settings: &TelemetrySettings) -> TelemetryGuard {
    metrics::install();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let endpoint = export_endpoint(settings.otlp_endpoint.as_deref(), |name| {
        std::env::var(name).ok()
    });
    let (provider, export_problem) = tracer_provider(endpoint.as_ref());
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("capture-worker"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false);
    let stderr_is_terminal = std::io::stderr().is_terminal();
    let (json, text) = if logs_as_json(settings.log_format, stderr_is_terminal) {
        let json = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .map_event_format(logs::WithTraceIds::new);
        (Some(json), None)
    } else {
        let text = tracing_subscriber::fmt::layer()
            .with_ansi(stderr_is_terminal)
            .with_writer(std::io::stderr);
        (None, Some(text))
    };
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(json)
        .with(text);
    let dispatch = tracing::Dispatch::new(subscriber);
    let weak = dispatch.downgrade();
    // A second init (tests, embedding) keeps the first subscriber; that is not an error.
    if dispatch.try_init().is_ok() {
        let _ = DISPATCH.set(weak);
    }
    if let Some(problem) = export_problem {
        tracing::warn!(event = "trace_export_disabled", error = %problem, "traces are not exported");
    } else if let Some(endpoint) = &endpoint {
        tracing::info!(
            event = "trace_export_enabled",
            endpoint_from = endpoint.source(),
            "exporting traces over OTLP/HTTP"
        );
    }
    TelemetryGuard {
        provider: Some(provider),
    }
}

/// Whether log lines are JSON: `auto` writes readable text for a person at a terminal and JSON
/// for a pipe, a file or a log collector.
pub fn logs_as_json(format: LogFormat, stderr_is_terminal: bool) -> bool {
    match format {
        LogFormat::Auto => !stderr_is_terminal,
        LogFormat::Json => true,
        LogFormat::Text => false,
    }
}

/// Where traces are exported to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    /// `telemetry.otlp_endpoint`, as [`traces_url`] makes it.
    Setting(String),
    /// A standard variable, which the exporter reads itself: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// used verbatim, else `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces` appended.
    Environment(&'static str),
}

impl Endpoint {
    /// What configured the endpoint, for the start-up log line.
    fn source(&self) -> &'static str {
        match self {
            Endpoint::Setting(_) => "telemetry.otlp_endpoint",
            Endpoint::Environment(variable) => variable,
        }
    }
}

/// The standard endpoint variables, the signal's own first (OpenTelemetry OTLP exporter
/// configuration).
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The settings key when set (not empty), else the first standard variable that is set; none:
/// traces are not exported. `env` reads a variable.
fn export_endpoint(
    setting: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Option<Endpoint> {
    if let Some(endpoint) = setting.map(str::trim).filter(|e| !e.is_empty()) {
        return Some(Endpoint::Setting(traces_url(endpoint)));
    }
    ENDPOINT_VARIABLES
        .into_iter()
        .find(|name| env(name).is_some_and(|v| !v.trim().is_empty()))
        .map(Endpoint::Environment)
}

/// The service name: `OTEL_SERVICE_NAME`, else a `service.name` in `OTEL_RESOURCE_ATTRIBUTES`
/// (`detected`, unless it is the SDK's `unknown_service` fallback), else `capture-worker`.
fn service_name(env_service_name: Option<String>, detected: Option<String>) -> String {
    env_service_name
        .filter(|n| !n.trim().is_empty())
        .or_else(|| detected.filter(|n| !n.starts_with("unknown_service")))
        .unwrap_or_else(|| "capture-worker".to_owned())
}

/// The resource: what the SDK reads from `OTEL_RESOURCE_ATTRIBUTES`, the service name (see
/// [`service_name`]) and, unless given there, our `service.version`.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let name = service_name(
        std::env::var("OTEL_SERVICE_NAME").ok(),
        detected
            .get(&opentelemetry::Key::from_static_str("service.name"))
            .map(|v| v.to_string()),
    );
    let mut builder = Resource::builder().with_service_name(name);
    if detected
        .get(&opentelemetry::Key::from_static_str("service.version"))
        .is_none()
    {
        builder = builder.with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ));
    }
    builder.build()
}

/// The tracer provider: with a batch OTLP/HTTP exporter when there is an endpoint, else one
/// that only mints ids. The second value says why export is off despite an endpoint. The
/// exporter reads `OTEL_EXPORTER_OTLP_HEADERS` (and `OTEL_EXPORTER_OTLP_TRACES_HEADERS`) itself.
fn tracer_provider(endpoint: Option<&Endpoint>) -> (SdkTracerProvider, Option<String>) {
    let builder = SdkTracerProvider::builder().with_resource(resource());
    let Some(endpoint) = endpoint else {
        return (builder.build(), None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(Duration::from_secs(10));
    // A programmatic endpoint is used verbatim and wins over the variables (STACK trap 9).
    let exporter = match endpoint {
        Endpoint::Setting(url) => exporter.with_endpoint(url),
        Endpoint::Environment(_) => exporter,
    };
    match exporter.build() {
        Ok(exporter) => (builder.with_batch_exporter(exporter).build(), None),
        Err(e) => (builder.build(), Some(e.to_string())),
    }
}

/// The exporter uses a programmatic endpoint verbatim (STACK trap 9): a bare collector address
/// such as `http://collector:4318` gets the standard `/v1/traces` path; a URL with a path is
/// kept as it is.
fn traces_url(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(url) if url.path() == "/" || url.path().is_empty() => {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        }
        _ => endpoint.to_owned(),
    }
}

/// The subscriber installed by [`init`], if any.
fn dispatch() -> Option<tracing::Dispatch> {
    DISPATCH.get()?.upgrade()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_key_wins_only_when_set_then_the_standard_variables() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let both: &[(&str, &str)] = &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/t"),
        ];
        assert_eq!(
            export_endpoint(Some("http://key:4318"), env(both)),
            Some(Endpoint::Setting("http://key:4318/v1/traces".to_owned()))
        );
        assert_eq!(
            export_endpoint(Some("  "), env(both)),
            Some(Endpoint::Environment("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        );
        assert_eq!(
            export_endpoint(
                None,
                env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318")])
            ),
            Some(Endpoint::Environment("OTEL_EXPORTER_OTLP_ENDPOINT"))
        );
        assert_eq!(
            export_endpoint(None, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")])),
            None
        );
    }

    #[test]
    fn otel_service_name_then_resource_attributes_then_ours() {
        let named = |s: &str| Some(s.to_owned());
        assert_eq!(service_name(named("billing"), named("other")), "billing");
        assert_eq!(service_name(None, named("other")), "other");
        assert_eq!(service_name(named(""), named("other")), "other");
        assert_eq!(
            service_name(None, named("unknown_service:capture-worker")),
            "capture-worker"
        );
        assert_eq!(service_name(None, None), "capture-worker");
    }

    #[test]
    fn a_bare_collector_address_gets_the_traces_path() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://127.0.0.1:4318/"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example/custom/v1/traces"),
            "https://otel.example/custom/v1/traces"
        );
    }
}

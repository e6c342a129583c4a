//! Telemetry: the process-wide `tracing` subscriber (JSON or text logs carrying trace and span
//! ids), OpenTelemetry traces exported over OTLP/HTTP, Prometheus metrics, and the named events
//! we alert on.
//!
//! Owns everything process-global about observability, so the rest of the code only creates
//! spans, records fields and emits typed events. Every layer except `domain` may use it; it
//! imports no adapter. Nothing here may log or export a secret: settings print through
//! `config::Secret`, which redacts itself, and no span or metric is given an API key, a URL with
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
/// `telemetry.otlp_endpoint` is set. A collector that cannot be configured is reported and
/// skipped: telemetry never stops payments.
pub fn init(settings: &TelemetrySettings) -> TelemetryGuard {
    metrics::install();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (provider, export_problem) = tracer_provider(settings.otlp_endpoint.as_deref());
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
    let exporting = settings
        .otlp_endpoint
        .as_deref()
        .is_some_and(|e| !e.trim().is_empty());
    if let Some(problem) = export_problem {
        tracing::warn!(event = "trace_export_disabled", error = %problem, "traces are not exported");
    } else if exporting {
        tracing::info!(
            event = "trace_export_enabled",
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

/// The tracer provider: with a batch OTLP/HTTP exporter when an endpoint is configured, else
/// one that only mints ids. The second value says why export is off despite an endpoint.
fn tracer_provider(endpoint: Option<&str>) -> (SdkTracerProvider, Option<String>) {
    let resource = Resource::builder()
        .with_service_name("capture-worker")
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let Some(endpoint) = endpoint.map(str::trim).filter(|e| !e.is_empty()) else {
        return (builder.build(), None);
    };
    let url = traces_url(endpoint);
    match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(10))
        .build()
    {
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
    use super::traces_url;

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

//! Logging setup: a `tracing` subscriber writing JSON lines (or text) to stderr.
//!
//! Owns the process-wide subscriber. Nothing here may log a secret: settings print through
//! `config::Secret`, which redacts itself.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetrySettings};

/// Flushes telemetry when dropped; keep it alive for the life of the process.
#[must_use = "telemetry is flushed when the guard drops"]
pub struct TelemetryGuard {
    _private: (),
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `telemetry.log_level`.
pub fn init(settings: &TelemetrySettings) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests, embedding) keeps the first subscriber; that is not an error.
    let _ = match settings.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    TelemetryGuard { _private: () }
}

//! JSON log lines with the OpenTelemetry `trace_id` and `span_id` of the span they were written
//! in, so a log line leads to its trace and a trace to its log lines.
//!
//! Wraps `tracing-subscriber`'s JSON formatter rather than replacing it: the fixed fields
//! (`timestamp`, `level`, `event`, `message`, the span list) stay exactly as before and two keys
//! are added before the closing brace.

use opentelemetry::trace::TraceContextExt;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// A JSON event formatter that adds `trace_id` and `span_id` to lines written inside a span.
pub struct WithTraceIds<F> {
    inner: F,
}

impl<F> WithTraceIds<F> {
    pub fn new(inner: F) -> Self {
        WithTraceIds { inner }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        // The innermost span of the event: its explicit parent or the current span.
        let ids = ctx
            .event_scope()
            .and_then(|mut scope| scope.next())
            .and_then(|span| {
                // Must not hold the span's extensions here: reading the OpenTelemetry context
                // takes them (the inner formatter has released its borrow by now).
                let cx = tracing_opentelemetry::get_otel_context(&span.id(), &super::dispatch()?)?;
                let sc = cx.span().span_context().clone();
                sc.is_valid()
                    .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
            });
        let body = line.trim_end();
        match (ids, body.strip_suffix('}')) {
            (Some((trace_id, span_id)), Some(open)) => {
                let sep = if open.trim_end().ends_with('{') {
                    ""
                } else {
                    ","
                };
                writer.write_str(open)?;
                write!(
                    writer,
                    "{sep}\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
                )?;
                writeln!(writer)
            }
            _ => writer.write_str(&line),
        }
    }
}

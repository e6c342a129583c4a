//! W3C trace context as text: reading a stored or received `traceparent` into an
//! OpenTelemetry context, and writing the current span's context back out.
//!
//! A capture row keeps the `traceparent` of the span that created it, so work done later (a
//! retry after a backoff, a takeover after a crash) can join or link to the trace the
//! warehouse's message started. Without an installed subscriber (library use, in-process tests)
//! the current span has no valid context and these functions return `None`.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The context a `traceparent` (and optional `tracestate`) describes; empty (a new root) when
/// absent or malformed.
pub fn remote_context(
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> opentelemetry::Context {
    let mut carrier = HashMap::new();
    if let Some(tp) = traceparent {
        carrier.insert("traceparent".to_owned(), tp.to_owned());
    }
    if let Some(ts) = tracestate {
        carrier.insert("tracestate".to_owned(), ts.to_owned());
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// The span context a stored `traceparent` names, when it is well formed.
pub fn span_context(traceparent: Option<&str>) -> Option<SpanContext> {
    let cx = remote_context(traceparent, None);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// Makes `span` a child of the remote context, if there is one. Call before the span is first
/// entered: a started span keeps its parent.
pub fn set_remote_parent(span: &tracing::Span, cx: opentelemetry::Context) {
    if cx.span().span_context().is_valid() {
        // Fails only without the OpenTelemetry layer (nothing to parent) or on a started span.
        let _ = span.set_parent(cx);
    }
}

/// Links `span` to the span a stored `traceparent` names (work caused by that trace but done
/// later, in a trace of its own).
pub fn link_to(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(sc) = span_context(traceparent) {
        span.add_link(sc);
    }
}

/// The current span's trace id as 32 lowercase hex digits.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The current span's context as a W3C `traceparent` header value.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// `span`'s context as a W3C `traceparent` header value (none without a valid context, e.g.
/// when no OpenTelemetry layer is installed).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_names_its_span_and_garbage_names_none() {
        let sc = span_context(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ))
        .unwrap_or_else(SpanContext::empty_context);
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_remote());
        assert!(span_context(Some("not-a-traceparent")).is_none());
        assert!(span_context(None).is_none());
    }

    #[test]
    fn without_a_subscriber_there_is_no_current_trace() {
        assert_eq!(current_trace_id(), None);
        assert_eq!(current_traceparent(), None);
    }
}

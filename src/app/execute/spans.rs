//! Spans and metrics of capture steps and provider calls.

use tracing::field::Empty;

use crate::provider::{CallResult, Outcome};
use crate::storage::captures::{ClaimedCapture, Transition};
use crate::storage::ledger::CaptureKind;
use crate::telemetry::{metrics, trace};

/// The span of one step of a capture. The first attempt continues the trace that created the
/// capture; a later one is a new trace linked to it, so a retry hours later does not stretch
/// the original trace but can still be followed from it.
pub(super) fn capture_span(c: &ClaimedCapture) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "capture",
        otel.name = %format!("execute {}", c.kind.as_str()),
        otel.status_code = Empty,
        capture_id = c.capture_id,
        order_id = %c.order_id,
        sequence = c.sequence,
        kind = c.kind.as_str(),
        payment.provider = %c.provider,
        payment.attempt = c.attempts,
        taken_over = c.taken_over,
        needs_lookup = c.needs_lookup,
        status = Empty,
    );
    if c.attempts <= 1 && !c.taken_over {
        trace::set_remote_parent(&span, trace::remote_context(c.traceparent.as_deref(), None));
    } else {
        trace::link_to(&span, c.traceparent.as_deref());
    }
    span
}

/// The span of one provider call (kind internal: each HTTP request inside it is a client span
/// of its own). Only what identifies the call and its terms: never the API key, never card
/// data.
pub(super) fn provider_span(c: &ClaimedCapture, operation: &'static str) -> tracing::Span {
    tracing::info_span!(
        "provider call",
        otel.name = %format!("{} {operation}", c.provider),
        otel.kind = "internal",
        otel.status_code = Empty,
        payment.provider = %c.provider,
        payment.operation = operation,
        payment.capture_id = c.capture_id,
        payment.amount = c.amount.amount().get(),
        payment.currency = %c.amount.currency(),
        payment.final = c.is_final,
        payment.attempt = c.attempts,
        payment.key_generation = c.key_generation,
        payment.outcome = Empty,
        payment.decline_code = Empty,
        payment.provider_code = Empty,
        payment.provider_status = Empty,
        payment.provider_request_id = Empty,
    )
}

/// Writes what the provider answered onto the call's span.
pub(super) fn record_call(span: &tracing::Span, call: &CallResult) {
    span.record("payment.outcome", call.outcome.label());
    if let Some(code) = &call.provider_code {
        span.record("payment.provider_code", code.as_str());
    }
    if let Some(id) = &call.provider_request_id {
        span.record("payment.provider_request_id", id.as_str());
    }
    match &call.outcome {
        Outcome::Declined { code, .. } => {
            span.record("payment.decline_code", code.as_str());
        }
        Outcome::Succeeded { .. } | Outcome::Pending { .. } => {}
        Outcome::Retryable { .. } | Outcome::Failed { .. } | Outcome::Unknown { .. } => {
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// The capture's status after a transition (for its span).
pub(super) fn transition_status(t: &Transition) -> &'static str {
    match t {
        Transition::Succeeded { .. } => "succeeded",
        Transition::Pending { .. } => "pending",
        Transition::Declined { .. } => "declined",
        Transition::Retry { .. } => "retrying",
        Transition::Attention { .. } => "attention",
    }
}

/// Metrics for a recorded transition: outcomes, money captured, retries.
pub(super) fn count_transition(
    c: &ClaimedCapture,
    operation: &'static str,
    outcome: &Outcome,
    transition: &Transition,
) {
    let (kind, provider) = (c.kind.as_str(), c.provider.as_str());
    match transition {
        Transition::Succeeded { .. } => {
            metrics::capture_outcome(provider, kind, "succeeded");
            if c.kind == CaptureKind::Capture {
                metrics::captured(
                    provider,
                    c.amount.currency().code(),
                    c.amount.amount().get(),
                );
            }
        }
        Transition::Declined { .. } => metrics::capture_outcome(provider, kind, "declined"),
        Transition::Attention { .. } => metrics::capture_outcome(provider, kind, "attention"),
        Transition::Retry { .. } => {
            let reason = if operation == "lookup" {
                "lookup"
            } else {
                outcome.label()
            };
            metrics::retry_scheduled(provider, reason);
        }
        Transition::Pending { .. } => {}
    }
}

//! W3C trace context in AMQP headers (`traceparent`, `tracestate`).
//!
//! Headers set by other clients (pika, amqp-tools) arrive as long strings of bytes or short
//! strings; both are read (STACK trap 11). [`HeaderExtractor`] hands them to OpenTelemetry's
//! propagator, so the consumer's span joins the publisher's trace.

use std::collections::HashMap;

use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The trace-context headers a message may carry.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// The string value of header `name`, whatever string type the publisher used.
pub fn header_str(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    let value = headers?.inner().iter().find(|(k, _)| k.as_str() == name)?.1;
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::ByteArray(b) => Some(String::from_utf8_lossy(b.as_slice()).into_owned()),
        _ => None,
    }
    .filter(|s| !s.is_empty() && s.len() <= 512)
}

/// The trace-context headers of a message, decoded to text for the propagator (which reads
/// `&str`, while AMQP long strings are bytes).
#[derive(Debug, Default)]
pub struct HeaderExtractor {
    values: HashMap<&'static str, String>,
}

impl HeaderExtractor {
    pub fn new(headers: Option<&FieldTable>) -> Self {
        let values = TRACE_HEADERS
            .iter()
            .filter_map(|name| Some((*name, header_str(headers, name)?)))
            .collect();
        HeaderExtractor { values }
    }

    /// The publisher's context: the parent of the span that processes the message. Empty (a
    /// new trace) when the headers are absent or malformed.
    pub fn parent_context(&self) -> opentelemetry::Context {
        TraceContextPropagator::new().extract(self)
    }
}

impl Extractor for HeaderExtractor {
    fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key.to_ascii_lowercase().as_str())
            .map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.values.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{LongString, ShortString};
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn a_traceparent_sent_as_long_string_bytes_parents_the_message() {
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from("traceparent"),
            AMQPValue::LongString(LongString::from(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                    .as_bytes()
                    .to_vec(),
            )),
        );
        headers.insert(
            ShortString::from("tracestate"),
            AMQPValue::ShortString(ShortString::from("warehouse=7")),
        );
        let cx = HeaderExtractor::new(Some(&headers)).parent_context();
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(sc.trace_state().get("warehouse"), Some("7"));
    }

    #[test]
    fn no_headers_start_a_new_trace() {
        let cx = HeaderExtractor::new(None).parent_context();
        assert!(!cx.span().span_context().is_valid());
    }
}

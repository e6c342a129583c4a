//! W3C trace context in AMQP headers (`traceparent`, `tracestate`).
//!
//! Headers set by other clients (pika, amqp-tools) arrive as long strings of bytes or short
//! strings; both are read (STACK trap 11).

use lapin::types::{AMQPValue, FieldTable};

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

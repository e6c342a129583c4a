//! Publishing with publisher confirms and `mandatory`: a publish succeeds only when the broker
//! acked it and did not return it as unroutable (STACK trap 6). Used for the dead-letter copies
//! of refused messages and by the `publish` and `demo` commands; the outbox relay publishes
//! outcome events with confirms but without `mandatory` (subscribers bind what they want). Every publish is a producer
//! span whose `traceparent` the message carries.

use crate::sanitize;
use crate::telemetry::trace;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection};
use thiserror::Error;
use tracing::Instrument as _;
use tracing::field::Empty;

use super::topology::Topology;

#[derive(Debug, Error)]
pub enum PublishError {
    #[error(
        "the broker did not confirm the message within {seconds} s; the connection may be gone"
    )]
    NoConfirm { seconds: u64 },
    #[error(
        "publishing to exchange {exchange:?} with routing key {routing_key:?} failed: {source}"
    )]
    Broker {
        exchange: String,
        routing_key: String,
        source: lapin::Error,
    },
    #[error(
        "the broker refused the message for exchange {exchange:?} (routing key {routing_key:?}): nack; the queue may be full (x-overflow=reject-publish)"
    )]
    Nacked {
        exchange: String,
        routing_key: String,
    },
    #[error("no queue is bound to exchange {exchange:?} for routing key {routing_key:?}: {reply}")]
    Unroutable {
        exchange: String,
        routing_key: String,
        reply: String,
    },
}

/// Header carrying our machine-readable rejection reason on dead-letter copies.
pub const REASON_HEADER: &str = "x-capture-reject-reason";
/// Header carrying the human-readable detail (truncated).
pub const DETAIL_HEADER: &str = "x-capture-reject-detail";
/// Header carrying the routing key the message was first published with.
pub const ORIGINAL_ROUTING_KEY_HEADER: &str = "x-original-routing-key";

/// A channel in confirm mode.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    pub async fn open(connection: &Connection) -> Result<Publisher, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher { channel })
    }

    /// Wraps a channel the caller already put in confirm mode.
    pub fn from_confirm_channel(channel: Channel) -> Publisher {
        Publisher { channel }
    }

    /// Publishes one persistent JSON message and waits for the broker's confirm, in a producer
    /// span (see [`producer_span`]) whose W3C `traceparent` the message carries. A message that
    /// already carries a `traceparent` (a dead-letter copy, a requeue) stays in that trace: the
    /// producer span is its child unless the current span is already in that trace.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        headers: FieldTable,
        message_id: Option<&str>,
    ) -> Result<(), PublishError> {
        self.publish_with(exchange, routing_key, body, headers, message_id, true)
            .await
    }

    /// Publishes an outcome event (see [`Publisher::publish`]) without `mandatory`: an event
    /// no subscriber has bound a queue for is delivered to nobody, which is not a failure of
    /// the publish. The broker's confirm still decides.
    pub async fn publish_event(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        headers: FieldTable,
        message_id: &str,
    ) -> Result<(), PublishError> {
        self.publish_with(
            exchange,
            routing_key,
            body,
            headers,
            Some(message_id),
            false,
        )
        .await
    }

    async fn publish_with(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        mut headers: FieldTable,
        message_id: Option<&str>,
        mandatory: bool,
    ) -> Result<(), PublishError> {
        let span = producer_span(exchange, routing_key, body, message_id);
        let carried = super::trace::header_str(Some(&headers), "traceparent");
        if let Some(sc) = trace::span_context(carried.as_deref())
            && trace::current_trace_id() != Some(sc.trace_id().to_string())
        {
            trace::set_remote_parent(&span, trace::remote_context(carried.as_deref(), None));
        }
        if let Some(traceparent) = trace::traceparent_of(&span) {
            headers.insert("traceparent".into(), text(&traceparent));
        }
        let result = self
            .confirmed(exchange, routing_key, body, headers, message_id, mandatory)
            .instrument(span.clone())
            .await;
        if let Err(error) = &result {
            span.record("error.type", error.class());
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    /// Publishes and waits for the broker's confirm (see [`Publisher::publish`]).
    async fn confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        headers: FieldTable,
        message_id: Option<&str>,
        mandatory: bool,
    ) -> Result<(), PublishError> {
        let broker = |source| PublishError::Broker {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            source,
        };
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(headers);
        if let Some(id) = message_id {
            props = props.with_message_id(id.into());
        }
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory,
                    ..BasicPublishOptions::default()
                },
                body,
                props,
            )
            .await
            .map_err(broker)?
            .await
            .map_err(broker)?;
        if confirm.is_nack() {
            return Err(PublishError::Nacked {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
            });
        }
        if let Some(returned) = confirm.take_message() {
            return Err(PublishError::Unroutable {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
                reply: returned.reply_text.to_string(),
            });
        }
        Ok(())
    }

    /// Sends a refused message to the dead-letter queue with our reason in its headers. The
    /// body and the headers pass through the text boundary ([`crate::sanitize`]): NUL and
    /// invalid UTF-8 replaced, card numbers masked (P9), the worker's secrets removed.
    // Each argument is one header or the body; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub async fn dead_letter(
        &self,
        topology: &Topology,
        body: &[u8],
        routing_key: &str,
        reason: &str,
        detail: &str,
        message_id: Option<&str>,
        traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        let mut headers = FieldTable::default();
        headers.insert(REASON_HEADER.into(), text(reason));
        let detail = sanitize::text(detail, 512);
        headers.insert(DETAIL_HEADER.into(), text(&detail));
        let routing_key = sanitize::text(routing_key, 255);
        headers.insert(ORIGINAL_ROUTING_KEY_HEADER.into(), text(&routing_key));
        let body = sanitize::bytes(body, sanitize::BODY_CHARS);
        if let Some(tp) = traceparent {
            headers.insert("traceparent".into(), text(tp));
        }
        self.publish(
            &topology.dead_letter(),
            &routing_key,
            body.as_bytes(),
            headers,
            message_id,
        )
        .await
    }
}

/// The span of one publish, kind producer, with the attributes of the OpenTelemetry messaging
/// conventions for RabbitMQ (semantic conventions 1.45): named `publish <exchange>`,
/// `messaging.operation.type` `send` (which replaced `publish` in 1.28),
/// `messaging.destination.name` the exchange, the routing key and the message id.
fn producer_span(
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    message_id: Option<&str>,
) -> tracing::Span {
    tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {exchange}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = exchange,
        messaging.rabbitmq.destination.routing_key = routing_key,
        messaging.message.id = message_id,
        messaging.message.body.size = body.len() as i64,
        error.type = Empty,
    )
}

impl PublishError {
    /// A low-cardinality class of the failure, for `error.type`.
    fn class(&self) -> &'static str {
        match self {
            PublishError::NoConfirm { .. } => "timeout",
            PublishError::Broker { .. } => "broker_error",
            PublishError::Nacked { .. } => "nack",
            PublishError::Unroutable { .. } => "unroutable",
        }
    }
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

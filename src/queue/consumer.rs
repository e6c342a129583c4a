//! The consume loop: one `select!` over shutdown, finished handlers and deliveries.
//!
//! Each delivery is handed to a [`DeliveryHandler`] (the app's intake) and acknowledged only
//! after the handler says its effect is committed. Refused messages are copied to the
//! dead-letter queue with our reason, confirmed, then acked. A consumer stream that ends is a
//! failure (STACK trap 1): the loop reconnects with backoff, it never just stops. Deliveries
//! in progress at shutdown finish; prefetched ones go back to the queue when the channel
//! closes.
//!
//! Each delivery is processed in a span of kind consumer (OpenTelemetry messaging conventions)
//! whose parent is the publisher's context from the message's `traceparent`/`tracestate`
//! headers, so the worker's spans join the warehouse's trace.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tracing::Instrument;
use tracing::field::Empty;

use super::publisher::{PublishError, Publisher};
use super::topology::Topology;
use super::trace::{HeaderExtractor, header_str};
use crate::telemetry::events::{self, Emit};
use crate::telemetry::metrics;

/// A message as it came off the queue.
#[derive(Debug, Clone)]
pub struct IncomingMessage {
    pub body: Vec<u8>,
    pub routing_key: String,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub redelivered: bool,
}

/// What the consumer does with a delivery once the handler is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The effect is committed (or the message was a duplicate): acknowledge.
    Ack,
    /// Refused and recorded: copy to the dead-letter queue with the reason, then acknowledge.
    DeadLetter {
        reason: String,
        detail: String,
        message_id: Option<String>,
        /// The body to keep, with card-number-like digit runs masked.
        masked_body: Vec<u8>,
    },
    /// Nothing committed (the database is away): return it to the queue.
    Retry { why: String },
}

/// The use case that turns a message into committed effects.
#[async_trait]
pub trait DeliveryHandler: Send + Sync + 'static {
    async fn handle(&self, message: IncomingMessage) -> Disposition;

    /// Deliveries with the same key are handled one after another, in delivery order;
    /// different keys run concurrently. Intake keys by order id so that a warehouse's
    /// parcels are planned in the order it published them.
    fn ordering_key(&self, _body: &[u8]) -> Option<String> {
        None
    }
}

/// Per-key chains of deliveries: each waits for the previous one with the same key.
#[derive(Default)]
struct OrderingChains {
    tails: HashMap<String, oneshot::Receiver<()>>,
}

impl OrderingChains {
    /// Returns what the new delivery must wait for and the sender it completes.
    fn enqueue(
        &mut self,
        key: Option<String>,
    ) -> (Option<oneshot::Receiver<()>>, Option<oneshot::Sender<()>>) {
        let Some(key) = key else { return (None, None) };
        if self.tails.len() > 10_000 {
            // Forget chains whose last delivery is done.
            self.tails
                .retain(|_, rx| matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        }
        let (tx, rx) = oneshot::channel();
        let prev = self.tails.insert(key, rx);
        (prev, Some(tx))
    }
}

/// Where the consumer connects and what it consumes.
#[derive(Clone)]
pub struct ConsumerConfig {
    /// AMQP URL (a secret; never logged).
    pub url: String,
    pub topology: Topology,
    pub prefetch: u16,
    pub consumer_tag: String,
}

impl std::fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerConfig")
            .field("url", &"[redacted]")
            .field("topology", &self.topology)
            .field("prefetch", &self.prefetch)
            .finish()
    }
}

/// Whether the consumer is connected and consuming (for `/readyz`).
#[derive(Debug, Clone, Default)]
pub struct ConsumerStatus(Arc<AtomicBool>);

impl ConsumerStatus {
    pub fn is_consuming(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
        metrics::consumer_connected(on);
    }
}

/// Connects, declares the topology, consumes until `shutdown` turns true, reconnecting after
/// any failure.
pub async fn run(
    config: ConsumerConfig,
    handler: Arc<dyn DeliveryHandler>,
    status: ConsumerStatus,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        if *shutdown.borrow() {
            return;
        }
        match session(&config, &handler, &status, &mut shutdown).await {
            Ok(()) => return,
            Err(e) => {
                status.set(false);
                events::ConsumerDisconnected {
                    error: &e,
                    retry_in_ms: delay.as_millis() as u64,
                }
                .emit();
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{context}: {source}")]
    Amqp {
        context: &'static str,
        source: lapin::Error,
    },
    #[error("the broker cancelled the consumer (queue deleted or node gone)")]
    StreamEnded,
}

fn amqp(context: &'static str) -> impl FnOnce(lapin::Error) -> SessionError {
    move |source| SessionError::Amqp { context, source }
}

async fn session(
    config: &ConsumerConfig,
    handler: &Arc<dyn DeliveryHandler>,
    status: &ConsumerStatus,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), SessionError> {
    let conn = Connection::connect(
        &config.url,
        ConnectionProperties::default().with_connection_name("capture-worker".into()),
    )
    .await
    .map_err(amqp("connecting to RabbitMQ (amqp.url)"))?;
    let channel = conn
        .create_channel()
        .await
        .map_err(amqp("opening a channel"))?;
    config
        .topology
        .declare(&channel)
        .await
        .map_err(amqp("declaring the topology"))?;
    // Per-consumer prefetch: global QoS on a quorum queue closes the connection (trap 3).
    channel
        .basic_qos(config.prefetch, BasicQosOptions { global: false })
        .await
        .map_err(amqp("setting the prefetch"))?;
    let publisher = Publisher::open(&conn)
        .await
        .map_err(amqp("opening the publisher channel"))?;
    let mut consumer = channel
        .basic_consume(
            config.topology.queue.as_str().into(),
            config.consumer_tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp("starting to consume"))?;
    status.set(true);
    tracing::info!(event = "consumer_connected", queue = %config.topology.queue, prefetch = config.prefetch, "consuming");

    let permits = Arc::new(Semaphore::new(usize::from(config.prefetch.max(1))));
    let mut tasks = JoinSet::new();
    let mut chains = OrderingChains::default();
    let result = loop {
        tokio::select! {
            _ = shutdown.changed() => break Ok(()),
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    tracing::error!(event = "handler_panicked", error = %e, "a message handler panicked; its delivery will be redelivered");
                }
            }
            next = consumer.next() => match next {
                None => break Err(SessionError::StreamEnded),
                Some(Err(e)) => break Err(SessionError::Amqp { context: "receiving a delivery", source: e }),
                Some(Ok(delivery)) => {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        break Ok(());
                    };
                    let (wait_for, done) = chains.enqueue(handler.ordering_key(&delivery.data));
                    let handler = handler.clone();
                    let publisher = publisher.clone();
                    let topology = config.topology.clone();
                    tasks.spawn(async move {
                        if let Some(prev) = wait_for {
                            // Err means the previous handler is gone (it panicked): go on.
                            let _ = prev.await;
                        }
                        process(delivery, handler, publisher, topology).await;
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                        drop(permit);
                    });
                }
            }
        }
    };
    status.set(false);
    // Stop receiving, let handlers in progress finish, then close: unacked prefetched
    // deliveries return to the queue.
    let _ = channel
        .basic_cancel(
            config.consumer_tag.as_str().into(),
            BasicCancelOptions::default(),
        )
        .await;
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            tracing::error!(event = "handler_panicked", error = %e, "a message handler panicked");
        }
    }
    let _ = conn.close(200, "capture-worker stopping".into()).await;
    result
}

/// Handles one delivery in its consumer span.
async fn process(
    delivery: Delivery,
    handler: Arc<dyn DeliveryHandler>,
    publisher: Publisher,
    topology: Topology,
) {
    let span = delivery_span(&delivery);
    process_in_span(delivery, handler, publisher, topology)
        .instrument(span)
        .await
}

/// The span of one delivery: kind consumer, named `process <message type>`, with the
/// messaging attributes of the OpenTelemetry conventions for RabbitMQ, parented by the
/// publisher's trace context.
fn delivery_span(delivery: &Delivery) -> tracing::Span {
    let headers = delivery.properties.headers().as_ref();
    let routing_key = delivery.routing_key.as_str();
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_owned())
        .or_else(|| peek_message_id(&delivery.data));
    let span = tracing::info_span!(
        parent: None,
        "process",
        otel.name = %format!("process {}", metrics::message_type(routing_key)),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %delivery.exchange,
        messaging.rabbitmq.destination.routing_key = %routing_key,
        messaging.rabbitmq.message.delivery_tag = delivery.delivery_tag as i64,
        messaging.message.id = Empty,
        messaging.message.body.size = delivery.data.len() as i64,
        messaging.message.redelivered = delivery.redelivered,
        disposition = Empty,
    );
    if let Some(id) = &message_id {
        span.record("messaging.message.id", id.as_str());
    }
    crate::telemetry::trace::set_remote_parent(
        &span,
        HeaderExtractor::new(headers).parent_context(),
    );
    span
}

/// The contract's `message_id`, for the span, when the publisher did not set the AMQP
/// `message_id` property. Intake parses the body properly; this only reads one field.
fn peek_message_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Peek {
        message_id: String,
    }
    if body.len() > 1024 * 1024 {
        return None;
    }
    serde_json::from_slice::<Peek>(body)
        .ok()
        .map(|p| p.message_id)
        .filter(|id| id.len() <= 128)
        // From the body, unchecked: it goes into the span through the text boundary.
        .map(|id| crate::sanitize::text(&id, 128))
}

async fn process_in_span(
    mut delivery: Delivery,
    handler: Arc<dyn DeliveryHandler>,
    publisher: Publisher,
    topology: Topology,
) {
    let headers = delivery.properties.headers().as_ref();
    // Moved, not copied: a delivery's body is held once.
    let body = std::mem::take(&mut delivery.data);
    let message = IncomingMessage {
        body,
        routing_key: delivery.routing_key.to_string(),
        traceparent: header_str(headers, "traceparent"),
        tracestate: header_str(headers, "tracestate"),
        redelivered: delivery.redelivered,
    };
    let traceparent = message.traceparent.clone();
    let routing_key = message.routing_key.clone();
    let disposition = handler.handle(message).await;
    let span = tracing::Span::current();
    span.record(
        "disposition",
        match &disposition {
            Disposition::Ack => "ack",
            Disposition::DeadLetter { .. } => "dead_letter",
            Disposition::Retry { .. } => "retry",
        },
    );
    match disposition {
        Disposition::Ack => ack(&delivery).await,
        Disposition::DeadLetter {
            reason,
            detail,
            message_id,
            masked_body,
        } => {
            // Boxed: the closure's error type is large (clippy::result_large_err).
            let published: Result<(), Box<PublishError>> = tokio::time::timeout(
                BROKER_REPLY_TIMEOUT,
                publisher.dead_letter(
                    &topology,
                    &masked_body,
                    &routing_key,
                    &reason,
                    &detail,
                    message_id.as_deref(),
                    traceparent.as_deref(),
                ),
            )
            .await
            .map(|r| r.map_err(Box::new))
            .unwrap_or_else(|_| {
                Err(Box::new(PublishError::NoConfirm {
                    seconds: BROKER_REPLY_TIMEOUT.as_secs(),
                }))
            });
            match published {
                Ok(()) => ack(&delivery).await,
                Err(e) => {
                    span.record("otel.status_code", "ERROR");
                    events::DeadLetterFailed {
                        reason: &reason,
                        error: &e,
                        then: "returned to the queue",
                    }
                    .emit();
                    requeue(&delivery).await;
                }
            }
        }
        Disposition::Retry { why } => {
            span.record("otel.status_code", "ERROR");
            tracing::warn!(event = "intake_retry", why = %why, "message returned to the queue");
            // Give the database a moment before the broker hands the message out again.
            tokio::time::sleep(Duration::from_millis(500)).await;
            requeue(&delivery).await;
        }
    }
}

/// How long a handler waits for the broker to take an ack, a nack or a dead-letter confirm.
/// A broker that dies mid-reply must not hold a handler (and its prefetch permit) forever: the
/// session would stop reading the delivery stream and never notice the connection is gone.
/// Giving up is safe: an unacknowledged delivery is redelivered and intake deduplicates it.
const BROKER_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

async fn ack(delivery: &Delivery) {
    let Ok(acked) = tokio::time::timeout(
        BROKER_REPLY_TIMEOUT,
        delivery.ack(BasicAckOptions::default()),
    )
    .await
    else {
        events::AckLost { error: None }.emit();
        return;
    };
    match acked {
        Ok(true) => {}
        // After a connection recovery the ack of an older delivery is not delivered (trap 2);
        // the broker redelivers it and intake recognises it as a duplicate.
        Ok(false) => events::AckLost { error: None }.emit(),
        Err(e) => events::AckLost { error: Some(&e) }.emit(),
    }
}

async fn requeue(delivery: &Delivery) {
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    match tokio::time::timeout(BROKER_REPLY_TIMEOUT, delivery.nack(options)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(event = "nack_failed", error = %e, "nack failed; the broker redelivers after the channel closes");
        }
        Err(_) => {
            tracing::warn!(
                event = "nack_failed",
                "the broker did not take the nack in time; it redelivers after the channel closes"
            );
        }
    }
}

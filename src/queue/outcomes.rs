//! Outcome events on the wire (contract v1, docs/subscribers.md): the body every event shares,
//! and a lazily connected publisher to the durable topic exchange `amqp.outcomes_exchange`.
//!
//! Each event is published persistent, with `message_id` = `event_id`, `content_type`
//! `application/json`, routing key = the event type, publisher confirms, and the W3C
//! `traceparent` of a producer span in the trace the event came from (the capture's).

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use serde_json::json;
use tokio::sync::Mutex;

use super::publisher::{PublishError, Publisher};

/// The version of the outcome event contract.
pub const SCHEMA_VERSION: u32 = 1;

/// One event to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeEvent {
    pub event_id: String,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub order_id: Option<String>,
    pub sequence: Option<i64>,
    pub data: serde_json::Value,
    pub traceparent: Option<String>,
}

impl OutcomeEvent {
    /// The JSON body: `event_id`, `type`, `schema_version`, `occurred_at`, `order_id`,
    /// `sequence`, `data`.
    pub fn body(&self) -> Vec<u8> {
        json!({
            "event_id": self.event_id,
            "type": self.event_type,
            "schema_version": SCHEMA_VERSION,
            "occurred_at": self.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "order_id": self.order_id,
            "sequence": self.sequence,
            "data": self.data,
        })
        .to_string()
        .into_bytes()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    #[error(
        "connecting to RabbitMQ to publish outcome events failed: {0}; they stay in the outbox until it answers"
    )]
    Connect(lapin::Error),
    #[error(
        "declaring the outcomes exchange {exchange:?} failed: {source}; if it exists with other arguments, it must be a durable topic exchange"
    )]
    Declare {
        exchange: String,
        source: lapin::Error,
    },
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Publishes outcome events, connecting (and declaring the exchange) on first use and again
/// after a failure.
pub struct OutcomePublisher {
    url: String,
    exchange: String,
    state: Mutex<Option<(Connection, Publisher)>>,
}

impl OutcomePublisher {
    pub fn new(url: String, exchange: String) -> Self {
        OutcomePublisher {
            url,
            exchange,
            state: Mutex::new(None),
        }
    }

    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    async fn publisher(&self) -> Result<Publisher, OutcomeError> {
        let mut state = self.state.lock().await;
        if let Some((conn, p)) = state.as_ref()
            && conn.status().connected()
        {
            return Ok(p.clone());
        }
        *state = None;
        let conn = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(OutcomeError::Connect)?;
        let channel = conn.create_channel().await.map_err(OutcomeError::Connect)?;
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|source| OutcomeError::Declare {
                exchange: self.exchange.clone(),
                source,
            })?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(OutcomeError::Connect)?;
        let p = Publisher::from_confirm_channel(channel);
        *state = Some((conn, p.clone()));
        Ok(p)
    }

    /// Connects now (and declares the exchange), so a subscriber can bind right after start.
    pub async fn connect(&self) -> Result<(), OutcomeError> {
        self.publisher().await.map(|_| ())
    }

    /// Publishes the events concurrently on one channel and waits for every confirm; returns
    /// each one's result in the same order, or the connection's failure. The caller passes at
    /// most one event per order, so their relative order does not matter.
    pub async fn publish_all(
        &self,
        events: &[OutcomeEvent],
    ) -> Result<Vec<Result<(), PublishError>>, OutcomeError> {
        let publisher = self.publisher().await?;
        let results = futures_util::future::join_all(events.iter().map(|e| {
            let publisher = publisher.clone();
            let body = e.body();
            async move {
                let mut headers = FieldTable::default();
                if let Some(tp) = &e.traceparent {
                    headers.insert(
                        "traceparent".into(),
                        AMQPValue::LongString(LongString::from(tp.as_str())),
                    );
                }
                publisher
                    .publish_event(&self.exchange, &e.event_type, &body, headers, &e.event_id)
                    .await
            }
        }))
        .await;
        if results.iter().any(Result::is_err) {
            // Reconnect next time: the channel may be closed.
            *self.state.lock().await = None;
        }
        Ok(results)
    }

    /// Forgets the connection (after a confirm timed out).
    pub async fn reset(&self) {
        *self.state.lock().await = None;
    }
}

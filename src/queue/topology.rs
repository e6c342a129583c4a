//! The RabbitMQ topology (DESIGN §3.2), declared idempotently at start-up.
//!
//! - topic exchange `<exchange>` (durable), the warehouses' and checkout's entry point;
//! - quorum queue `<queue>` (durable) bound to the three routing keys, with a delivery limit
//!   and at-least-once dead-lettering (which needs `x-overflow=reject-publish`, STACK trap 4);
//! - fanout exchange and quorum queue `<queue>.dead-letter` for messages we refuse and for
//!   messages the broker gives up on after the delivery limit.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use super::wire::MessageType;

/// How many times the broker redelivers a message before dead-lettering it. Well above the
/// number of worker crashes a message may live through (STACK trap 5): our retry state lives
/// in PostgreSQL, not in redeliveries.
pub const DELIVERY_LIMIT: i64 = 100;

/// Names of everything the worker declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub exchange: String,
    pub queue: String,
}

impl Topology {
    pub fn new(exchange: impl Into<String>, queue: impl Into<String>) -> Self {
        Topology {
            exchange: exchange.into(),
            queue: queue.into(),
        }
    }

    /// The dead-letter exchange and queue share this name.
    pub fn dead_letter(&self) -> String {
        format!("{}.dead-letter", self.queue)
    }

    /// Declares exchanges, queues and bindings. Declaring what exists with the same arguments
    /// is a no-op; different arguments close the channel with PRECONDITION_FAILED, which we
    /// report rather than paper over.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        let dl = self.dead_letter();
        channel
            .exchange_declare(
                dl.as_str().into(),
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        let mut dl_args = FieldTable::default();
        dl_args.insert("x-queue-type".into(), long_string("quorum"));
        channel
            .queue_declare(dl.as_str().into(), durable_queue, dl_args)
            .await?;
        channel
            .queue_bind(
                dl.as_str().into(),
                dl.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string("quorum"));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        args.insert("x-dead-letter-exchange".into(), long_string(&dl));
        args.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        args.insert("x-overflow".into(), long_string("reject-publish"));
        channel
            .queue_declare(self.queue.as_str().into(), durable_queue, args)
            .await?;
        for kind in [
            MessageType::OrderAuthorized,
            MessageType::ShipmentShipped,
            MessageType::LinesCancelled,
        ] {
            channel
                .queue_bind(
                    self.queue.as_str().into(),
                    self.exchange.as_str().into(),
                    kind.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

//! The RabbitMQ adapter: the topology we declare, wire messages turned into domain commands,
//! the consumer, the publisher, and W3C trace-context headers.
//!
//! Owns everything that knows the shape of a message or of the broker. Imports `domain` only;
//! never `provider` or `storage` (adapters do not know each other: `app` wires them together).
//! The message contract it reads is published as files in `contract/v1/` and explained to
//! publishers in `docs/publishers.md`.

pub mod consumer;
pub mod dead_letter;
pub mod outcomes;
pub mod publisher;
pub mod topology;
pub mod trace;
pub mod wire;

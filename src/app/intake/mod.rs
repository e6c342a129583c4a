//! Intake: one message, one transaction, then the acknowledgement (DESIGN §4, flow step 1).
//!
//! Dedupe by message id (same bytes → the first outcome again; different bytes → refused),
//! serialize per order with an advisory lock, register orders, park shipments that arrive
//! before their order (or that would be cut as shortfall while an increment of the order's
//! hold is unanswered), plan with the domain, and persist the plan (progress, shipment or
//! cancellation, capture rows with their keys) — all in one commit. Bad input is recorded with
//! its reason and dead-lettered; it never reaches the provider.
//!
//! Each message is handled in an `intake` span (a child of the consumer's span). A capture row
//! stores that span's `traceparent`, so its execution joins the same trace, and a retry made
//! long after links back to it.
//!
//! # Layout
//!
//! - `mod.rs`  — the use case ([`Intake`]) and what became of a message ([`IntakeOutcome`]).
//! - `message` — the per-message path: one message, one transaction.
//! - `batch`   — the batched path and the [`IntakeBatcher`] that groups deliveries.
//! - `rows`    — what each decision writes (an order, a plan with its shipment or
//!   cancellation row, an inbox row), added to the write set, the same for both paths.
//! - `refuse`  — refusals: what is recorded and dead-lettered, and why.
//! - `parked`  — shipments and cancellations waiting for their order (or for an increment).
//! - `plan`    — what a message asks to plan (a shipment or a cancellation), and an order
//!   registration's fingerprint.
//!
//! Both paths plan with the same domain code, add their rows to a write set
//! (`storage::ledger::IntakeBatch`) through `rows`, and persist it with one storage writer
//! (`LedgerTx::store_intake_batch`, one statement): a message on its own is a write set of
//! one. Every statement runs in a `storage::LedgerTx`; captures created by a batch are claimed
//! in it and handed to execution through an `execute::Handoff`.

mod batch;
mod message;
mod parked;
mod plan;
mod refuse;
mod rows;

pub use batch::IntakeBatcher;

use super::execute::Handoff;

use std::sync::Arc;

use chrono::Duration as ChronoDuration;
use tracing::field::Empty;

use crate::domain::{CapabilityLookup, ShippingPolicy};
use crate::queue::consumer::Disposition;
use crate::queue::wire::{self};
use crate::sanitize;
use crate::storage::{StorageError, Store};

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeOutcome {
    /// Effects committed; these orders have captures to send.
    Processed { dispatch: Vec<String> },
    /// Seen before with the same content: nothing to do.
    Duplicate,
    /// Waiting for its order, or for the answer to an increment of its order's hold.
    Parked,
    /// Refused with a reason, recorded in `rejected_messages`.
    Rejected {
        reason: String,
        detail: String,
        message_id: Option<String>,
    },
}

/// The intake use case.
pub struct Intake {
    store: Store,
    capabilities: Arc<dyn CapabilityLookup>,
    shipping: ShippingPolicy,
    parking: ChronoDuration,
    /// When set, batched intake claims the captures it creates for this handle's worker in the
    /// same transaction and hands them over, saving a claim round trip per capture.
    claimer: Option<Handoff>,
    /// Largest body read (`amqp.max_message_bytes`); a larger one is refused as `too_large`.
    max_message_bytes: usize,
}

/// Reason of a message the ledger cannot store (a data exception): refused, never redelivered.
pub const UNSTORABLE: &str = "unstorable";

/// Characters of a `too_large` body kept in `rejected_messages` and forwarded to the
/// dead-letter queue.
pub const TOO_LARGE_EXCERPT_CHARS: usize = 4_096;

impl Intake {
    pub fn new(
        store: Store,
        capabilities: Arc<dyn CapabilityLookup>,
        shipping: ShippingPolicy,
        parking_seconds: u64,
    ) -> Self {
        Intake {
            store,
            capabilities,
            shipping,
            parking: ChronoDuration::seconds(
                i64::try_from(parking_seconds).unwrap_or(i64::MAX / 2_000),
            ),
            claimer: None,
            max_message_bytes: 256 * 1024,
        }
    }

    /// Refuses bodies over `bytes` as `too_large` (`amqp.max_message_bytes`), at most
    /// [`wire::MAX_MESSAGE_BYTES`].
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes.min(wire::MAX_MESSAGE_BYTES);
        self
    }

    /// Batched intake claims the captures it creates for the worker behind `handoff` and hands
    /// them over after the commit (see [`Intake::handle_batch`]).
    pub fn claiming_for(mut self, handoff: Handoff) -> Self {
        self.claimer = Some(handoff);
        self
    }
}

/// The span of one message's intake, a child of the current span (the message's consumer
/// span).
fn intake_span() -> tracing::Span {
    tracing::info_span!(
        "intake",
        otel.status_code = Empty,
        otel.status_description = Empty,
        db.system.name = "postgresql",
        messaging.message.id = Empty,
        message_type = Empty,
        order_id = Empty,
        outcome = Empty,
        reject_reason = Empty,
        transaction_attempts = Empty,
        batch_size = Empty,
    )
}

/// Writes a message's outcome on its `intake` span.
fn record_outcome(span: &tracing::Span, outcome: &Result<IntakeOutcome, StorageError>) {
    match outcome {
        Ok(o) => {
            span.record("outcome", outcome_label(o));
            if let IntakeOutcome::Rejected { reason, .. } = o {
                span.record("reject_reason", reason.as_str());
            }
        }
        Err(e) => {
            span.record("outcome", "retry");
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", e.to_string().as_str());
        }
    }
}

/// The outcome's name in metrics and spans.
pub fn outcome_label(outcome: &IntakeOutcome) -> &'static str {
    match outcome {
        IntakeOutcome::Processed { .. } => "processed",
        IntakeOutcome::Duplicate => "duplicate",
        IntakeOutcome::Parked => "parked",
        IntakeOutcome::Rejected { .. } => "rejected",
    }
}

/// Turns an intake outcome into what the consumer does with the delivery.
pub fn disposition(outcome: Result<IntakeOutcome, StorageError>, body: &[u8]) -> Disposition {
    match outcome {
        Ok(IntakeOutcome::Processed { .. } | IntakeOutcome::Duplicate | IntakeOutcome::Parked) => {
            Disposition::Ack
        }
        Ok(IntakeOutcome::Rejected {
            reason,
            detail,
            message_id,
        }) => {
            // A body over the limit is forwarded as the excerpt kept of it.
            let chars = if reason == wire::RejectReason::TooLarge.as_str() {
                TOO_LARGE_EXCERPT_CHARS
            } else {
                sanitize::BODY_CHARS
            };
            Disposition::DeadLetter {
                reason,
                detail,
                message_id,
                masked_body: sanitize::bytes(body, chars).into_bytes(),
            }
        }
        Err(e) => Disposition::Retry { why: e.to_string() },
    }
}

//! Parked messages: shipments and cancellations that arrived before their order, processed
//! once it is registered or dead-lettered when they waited too long; and shipments waiting for
//! the answer to an increment of their order's hold, processed by the sweeper once it is
//! answered or their wait is over (then planned with shortfall, never dead-lettered).

use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::domain;
use crate::queue::consumer::IncomingMessage;
use crate::queue::wire;
use crate::storage::ledger::{self, InboxStatus, IntakeBatch};
use crate::storage::{LedgerTx, StorageError};

use super::refuse::Refusal;
use super::{Intake, IntakeOutcome};

impl Intake {
    /// Processes the messages parked for an order just registered, in arrival order, in the
    /// registration's transaction; returns the orders with captures to send.
    pub(super) async fn release_parked(
        &self,
        tx: &mut LedgerTx,
        order_id: &domain::OrderId,
    ) -> Result<Vec<String>, StorageError> {
        let mut dispatch = Vec::new();
        for parked in tx.parked_for_order(order_id.as_str()).await? {
            let incoming = IncomingMessage {
                body: parked.body.clone(),
                routing_key: parked.routing_key.clone().unwrap_or_default(),
                traceparent: parked.traceparent.clone(),
                tracestate: parked.tracestate.clone(),
                redelivered: false,
            };
            let hash = hex::encode(Sha256::digest(&parked.body));
            match wire::parse(&parked.body, None) {
                Ok(p) => {
                    let out = Box::pin(self.apply(tx, &incoming, &p, &hash, true))
                        .instrument(parked_span(&parked))
                        .await?;
                    if let IntakeOutcome::Processed { dispatch: d } = out {
                        dispatch.extend(d);
                    }
                }
                Err(rej) => {
                    // Parsed fine when it was parked; only a contract change could get here.
                    tracing::error!(message_id = %parked.message_id, reason = %rej.reason, "a parked message no longer parses");
                }
            }
        }
        Ok(dispatch)
    }

    /// Dead-letters a parked message that waited longer than `capture.parking_seconds`.
    pub async fn expire_parked(
        &self,
        parked: &ledger::ParkedMessage,
    ) -> Result<IntakeOutcome, StorageError> {
        let Ok(parsed) = wire::parse(&parked.body, None) else {
            return Ok(IntakeOutcome::Duplicate);
        };
        let incoming = IncomingMessage {
            body: parked.body.clone(),
            routing_key: parked.routing_key.clone().unwrap_or_default(),
            traceparent: parked.traceparent.clone(),
            tracestate: parked.tracestate.clone(),
            redelivered: false,
        };
        let hash = hex::encode(Sha256::digest(&parked.body));
        let mut tx = self.store.begin("expiring a parked message").await?;
        tx.lock_order_key(parsed.command.order_id()).await?;
        // Still parked? (Its order may have arrived since the sweeper looked.)
        let still = tx.inbox_get(parsed.envelope.message_id.as_str()).await?;
        if !matches!(still.map(|s| s.status), Some(InboxStatus::Parked)) {
            return Ok(IntakeOutcome::Duplicate);
        }
        if tx
            .load_order(parsed.command.order_id(), false)
            .await?
            .is_some()
        {
            drop(tx);
            return Ok(IntakeOutcome::Duplicate);
        }
        let mut writes = IntakeBatch::default();
        let out = self
            .refuse(&mut tx, Some(&mut writes), &incoming, &parsed, &hash, Refusal {
                reason: "unknown_order".into(),
                detail: format!("order {} was not registered within the parking time; publish order.authorized first, then requeue this message", parsed.command.order_id()),
            })
            .await?;
        tx.store_intake_batch(&writes).await?;
        tx.commit("expiring a parked message").await?;
        Ok(out)
    }

    /// Processes the parked messages of an order that now exists (the sweeper's safety net).
    pub async fn process_parked(&self, order_id: &str) -> Result<Vec<String>, StorageError> {
        let mut tx = self.store.begin("processing parked messages").await?;
        let Ok(oid) = domain::OrderId::parse(order_id) else {
            return Ok(Vec::new());
        };
        tx.lock_order_key(&oid).await?;
        let mut dispatch = Vec::new();
        for parked in tx.parked_for_order(order_id).await? {
            let Ok(p) = wire::parse(&parked.body, None) else {
                continue;
            };
            let incoming = IncomingMessage {
                body: parked.body.clone(),
                routing_key: parked.routing_key.clone().unwrap_or_default(),
                traceparent: parked.traceparent.clone(),
                tracestate: parked.tracestate.clone(),
                redelivered: false,
            };
            let hash = hex::encode(Sha256::digest(&parked.body));
            if let IntakeOutcome::Processed { dispatch: d } = self
                .apply(&mut tx, &incoming, &p, &hash, true)
                .instrument(parked_span(&parked))
                .await?
            {
                dispatch.extend(d);
            }
        }
        tx.commit("processing parked messages").await?;
        Ok(dispatch)
    }
}

/// The span of a parked message processed now that its order exists: part of the current
/// trace (the order's message, or the sweeper's pass), linked to the trace that published it.
pub(super) fn parked_span(parked: &ledger::ParkedMessage) -> tracing::Span {
    let span = tracing::info_span!(
        "intake parked message",
        messaging.message.id = %parked.message_id,
        order_id = parked.order_id.as_deref().unwrap_or_default(),
    );
    crate::telemetry::trace::link_to(&span, parked.traceparent.as_deref());
    span
}

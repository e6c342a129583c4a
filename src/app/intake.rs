//! Intake: one message, one transaction, then the acknowledgement (DESIGN §4, flow step 1).
//!
//! Dedupe by message id (same bytes → the first outcome again; different bytes → refused),
//! serialize per order with an advisory lock, register orders, park shipments that arrive
//! before their order, plan with the domain, and persist the plan (progress, shipment or
//! cancellation, capture rows with their keys) — all in one commit. Bad input is recorded with
//! its reason and dead-lettered; it never reaches the provider.
//!
//! Each message is handled in an `intake` span (a child of the consumer's span). A capture row
//! stores that span's `traceparent`, so its execution joins the same trace, and a retry made
//! long after links back to it.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{Duration as ChronoDuration, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use tracing::Instrument;
use tracing::field::Empty;

use crate::domain::{
    self, CapabilityLookup, Decision, Event, MinorUnits, Order, PlanContext, Rejection,
    ReleaseMethod, ShippingPolicy,
};
use crate::queue::consumer::{Disposition, IncomingMessage};
use crate::queue::wire::{self, Command, Parsed};
use crate::sanitize;
use crate::storage::ledger::{
    self, CaptureKind, InboxStatus, NewCapture, NewInbox, NewRejection, StoredCaptureLine,
};
use crate::storage::{StorageError, Store, captures};
use crate::telemetry::events::{self, Emit};

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeOutcome {
    /// Effects committed; these orders have captures to send.
    Processed { dispatch: Vec<String> },
    /// Seen before with the same content: nothing to do.
    Duplicate,
    /// Waiting for its order.
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
    /// When set, batched intake claims the captures it creates for this executor in the same
    /// transaction and hands them over, saving a claim round trip per capture.
    claimer: Option<super::execute::Executor>,
    /// Largest body read (`amqp.max_message_bytes`); a larger one is refused as `too_large`.
    max_message_bytes: usize,
}

/// Reason of a message the ledger cannot store (a data exception): refused, never redelivered.
pub const UNSTORABLE: &str = "unstorable";

/// Characters of a `too_large` body kept in `rejected_messages` and forwarded to the
/// dead-letter queue.
pub const TOO_LARGE_EXCERPT_CHARS: usize = 4_096;

/// A refusal decided without the ledger's state.
struct Unread {
    reason: &'static str,
    detail: String,
    message_id: Option<String>,
    message_type: Option<String>,
    order_id: Option<String>,
}

/// A refusal decided inside a transaction.
struct Refusal {
    reason: String,
    detail: String,
}

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

    /// Batched intake claims the captures it creates for `executor` and hands them over
    /// after the commit (see [`Intake::handle_batch`]).
    pub fn claiming_for(mut self, executor: super::execute::Executor) -> Self {
        self.claimer = Some(executor);
        self
    }

    /// Processes one message, retrying the transaction on conflicts and transient database
    /// errors a few times before giving up (the caller then returns the message to the queue).
    pub async fn handle(&self, message: &IncomingMessage) -> Result<IntakeOutcome, StorageError> {
        self.handle_in(message, intake_span()).await
    }

    /// [`Intake::handle`] inside the given `intake` span.
    async fn handle_in(
        &self,
        message: &IncomingMessage,
        span: tracing::Span,
    ) -> Result<IntakeOutcome, StorageError> {
        let outcome = match self
            .handle_with_retries(message)
            .instrument(span.clone())
            .await
        {
            // The same message would fail the same way on every delivery: refuse it (P7).
            Err(e) if e.refuses_data() => {
                self.refuse_unstorable(message, &e)
                    .instrument(span.clone())
                    .await
            }
            other => other,
        };
        record_outcome(&span, &outcome);
        outcome
    }

    /// Records a message the ledger cannot store as refused (`unstorable`), with the database's
    /// reason, in a transaction of its own.
    async fn refuse_unstorable(
        &self,
        message: &IncomingMessage,
        error: &StorageError,
    ) -> Result<IntakeOutcome, StorageError> {
        let body_hash = hex::encode(Sha256::digest(&message.body));
        let parsed = wire::parse(&message.body, Some(&message.routing_key)).ok();
        let envelope = parsed.as_ref().map(|p| &p.envelope);
        let unread = Unread {
            reason: UNSTORABLE,
            detail: format!(
                "the ledger cannot store this message ({error}); it is refused, not retried. Remove control characters or out-of-range values and publish it again with a new message_id"
            ),
            message_id: envelope.map(|e| e.message_id.as_str().to_owned()),
            message_type: envelope.map(|e| e.message_type.as_str().to_owned()),
            order_id: parsed
                .as_ref()
                .map(|p| p.command.order_id().as_str().to_owned()),
        };
        let body = String::from_utf8_lossy(&message.body);
        self.refuse_unread(message, &body_hash, unread, &body).await
    }

    /// Records a refusal decided without the ledger (the body could not be read, or was too
    /// large, or the ledger cannot store it), in a transaction of its own.
    async fn refuse_unread(
        &self,
        message: &IncomingMessage,
        body_hash: &str,
        unread: Unread,
        body: &str,
    ) -> Result<IntakeOutcome, StorageError> {
        let mut tx = self
            .store
            .pool()
            .begin()
            .await
            .map_err(|e| StorageError::classify("starting intake", e))?;
        ledger::insert_rejection(
            &mut tx,
            &NewRejection {
                message_id: unread.message_id.as_deref(),
                message_type: unread.message_type.as_deref(),
                order_id: unread.order_id.as_deref(),
                reason: unread.reason,
                detail: &unread.detail,
                routing_key: Some(&message.routing_key),
                body: Some(body),
                body_hash,
            },
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| StorageError::classify("committing intake", e))?;
        events::MessageRejected {
            reason: unread.reason,
            message_id: unread.message_id.as_deref().unwrap_or_default(),
            order_id: unread.order_id.as_deref().unwrap_or_default(),
            detail: &unread.detail,
        }
        .emit();
        Ok(IntakeOutcome::Rejected {
            reason: unread.reason.to_owned(),
            detail: unread.detail,
            message_id: unread.message_id,
        })
    }

    async fn handle_with_retries(
        &self,
        message: &IncomingMessage,
    ) -> Result<IntakeOutcome, StorageError> {
        let mut attempt = 0;
        loop {
            tracing::Span::current().record("transaction_attempts", (attempt + 1) as i64);
            attempt += 1;
            match self.handle_once(message).await {
                Err(e)
                    if attempt < 5
                        && (e.is_retryable() || matches!(e, StorageError::Conflict { .. })) =>
                {
                    tracing::debug!(error = %e, attempt, "intake transaction retried");
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn handle_once(&self, message: &IncomingMessage) -> Result<IntakeOutcome, StorageError> {
        let body_hash = hex::encode(Sha256::digest(&message.body));
        if message.body.len() > self.max_message_bytes {
            // Not parsed, and only an excerpt is kept: the body is dropped with the delivery.
            let unread = Unread {
                reason: wire::RejectReason::TooLarge.as_str(),
                detail: format!(
                    "the body is {} bytes; at most {} bytes are read (amqp.max_message_bytes); only its first {TOO_LARGE_EXCERPT_CHARS} characters are kept",
                    message.body.len(),
                    self.max_message_bytes
                ),
                message_id: None,
                message_type: None,
                order_id: None,
            };
            let excerpt = sanitize::bytes(&message.body, TOO_LARGE_EXCERPT_CHARS);
            return self
                .refuse_unread(message, &body_hash, unread, &excerpt)
                .await;
        }
        let parsed = match wire::parse(&message.body, Some(&message.routing_key)) {
            Ok(p) => p,
            Err(rej) => {
                let unread = Unread {
                    reason: rej.reason.as_str(),
                    detail: rej.detail,
                    message_id: rej.message_id,
                    message_type: rej.message_type,
                    order_id: None,
                };
                let body = String::from_utf8_lossy(&message.body);
                return self.refuse_unread(message, &body_hash, unread, &body).await;
            }
        };
        let message_id = parsed.envelope.message_id.as_str().to_owned();
        let span = tracing::Span::current();
        span.record("messaging.message.id", message_id.as_str());
        span.record("message_type", parsed.envelope.message_type.as_str());
        span.record("order_id", parsed.command.order_id().as_str());
        let mut tx = self
            .store
            .pool()
            .begin()
            .await
            .map_err(|e| StorageError::classify("starting intake", e))?;
        let outcome = self
            .apply(&mut tx, message, &parsed, &body_hash, false)
            .await?;
        tx.commit()
            .await
            .map_err(|e| StorageError::classify("committing intake", e))?;
        Ok(match outcome {
            IntakeOutcome::Rejected { reason, detail, .. } => IntakeOutcome::Rejected {
                reason,
                detail,
                message_id: Some(message_id),
            },
            other => other,
        })
    }

    /// Applies a parsed message inside `tx`. `from_park` is set when a parked message is being
    /// processed now that its order exists.
    async fn apply(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
        parsed: &Parsed,
        body_hash: &str,
        from_park: bool,
    ) -> Result<IntakeOutcome, StorageError> {
        let message_id = parsed.envelope.message_id.as_str();
        let order_id = parsed.command.order_id().clone();
        ledger::lock_order_key(tx, &order_id).await?;

        if let Some(seen) = ledger::inbox_get(tx, message_id).await? {
            if seen.payload_hash != body_hash {
                return self
                    .refuse(tx, message, parsed, body_hash, Refusal {
                        reason: "message_conflict".into(),
                        detail: format!("message_id {message_id} was already received with different content; the first stands. Publish a new message with a new message_id"),
                    }, false)
                    .await;
            }
            match (seen.status, from_park) {
                (InboxStatus::Parked, true) => {} // process it now
                (InboxStatus::Processed, _) => return Ok(IntakeOutcome::Duplicate),
                (InboxStatus::Parked, false) => return Ok(IntakeOutcome::Parked),
                (InboxStatus::Rejected, _) => {
                    return Ok(IntakeOutcome::Rejected {
                        reason: seen.reject_reason.unwrap_or_else(|| "rejected".into()),
                        detail: "already refused; see rejected_messages".into(),
                        message_id: Some(message_id.to_owned()),
                    });
                }
            }
        }

        let result = match &parsed.command {
            Command::RegisterOrder(order) => {
                self.register(tx, message, parsed, order, body_hash).await?
            }
            Command::Ship { shipment, .. } => {
                self.plan_event(
                    tx,
                    message,
                    parsed,
                    body_hash,
                    PlanInput::Shipment(shipment),
                )
                .await?
            }
            Command::Cancel { cancellation, .. } => {
                self.plan_event(
                    tx,
                    message,
                    parsed,
                    body_hash,
                    PlanInput::Cancellation(cancellation),
                )
                .await?
            }
        };
        if from_park && matches!(result, IntakeOutcome::Rejected { .. }) {
            // Its delivery was acknowledged when it was parked: the dead-letter copy is owed,
            // and the sweeper sends it.
            ledger::owe_dead_letter(tx, message_id, &message.body).await?;
        }
        Ok(result)
    }

    async fn register(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
        parsed: &Parsed,
        order: &Order,
        body_hash: &str,
    ) -> Result<IntakeOutcome, StorageError> {
        let auth = order.authorization();
        let Some(caps) = self.capabilities.capabilities(auth.provider.as_str()) else {
            return self
                .refuse(tx, message, parsed, body_hash, Refusal {
                    reason: "unknown_provider".into(),
                    detail: format!("payment.provider {:?} is not configured on this worker; configure providers.{}.base_url or correct the provider name", auth.provider.as_str(), auth.provider.as_str()),
                }, true)
                .await;
        };
        let order_hash = order_fingerprint(order);
        let mut dispatch = Vec::new();
        match ledger::order_payload_hash(tx, order.order_id()).await? {
            Some(h) if h == order_hash => {
                self.remember(tx, message, parsed, body_hash, InboxStatus::Processed, None)
                    .await?;
                return Ok(IntakeOutcome::Duplicate);
            }
            Some(_) => {
                return self
                    .refuse(tx, message, parsed, body_hash, Refusal {
                        reason: "order_conflict".into(),
                        detail: format!("order {} was already registered with different content; the first stands", order.order_id()),
                    }, true)
                    .await;
            }
            None => {
                // Checked before inserting: a unique violation would abort the transaction
                // and leave no way to record the refusal in it. Two registrations racing for
                // one authorization still meet the constraint; the loser's transaction is
                // retried by `handle` and refused here.
                if ledger::authorization_taken(tx, &auth.provider, &auth.authorization_id).await? {
                    return self
                        .refuse(tx, message, parsed, body_hash, Refusal {
                            reason: "authorization_conflict".into(),
                            detail: format!("authorization {} of provider {} already belongs to another order", auth.authorization_id, auth.provider),
                        }, true)
                        .await;
                }
                let allowance = caps.over_capture.for_authorized(auth.amount);
                ledger::insert_order(
                    tx,
                    order,
                    allowance,
                    parsed.envelope.message_id.as_str(),
                    &order_hash,
                )
                .await?;
            }
        }
        self.remember(tx, message, parsed, body_hash, InboxStatus::Processed, None)
            .await?;
        // Shipments and cancellations that arrived first are processed now, in arrival order,
        // in this same transaction.
        for parked in ledger::parked_for_order(tx, order.order_id().as_str()).await? {
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
        dispatch.dedup();
        Ok(IntakeOutcome::Processed { dispatch })
    }

    async fn plan_event(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
        parsed: &Parsed,
        body_hash: &str,
        input: PlanInput<'_>,
    ) -> Result<IntakeOutcome, StorageError> {
        let order_id = parsed.command.order_id();
        let Some(mut stored) = ledger::load_order(tx, order_id, true).await? else {
            self.remember(tx, message, parsed, body_hash, InboxStatus::Parked, None)
                .await?;
            return Ok(IntakeOutcome::Parked);
        };
        let caps = match self
            .capabilities
            .capabilities(stored.order.authorization().provider.as_str())
        {
            Some(c) => c,
            None => {
                return Err(StorageError::Corrupt {
                    context: "planning a capture",
                    detail: format!(
                        "provider {} of order {} is no longer configured",
                        stored.order.authorization().provider,
                        order_id
                    ),
                });
            }
        };
        let event = match input {
            PlanInput::Shipment(s) => {
                if let Some(prev) = ledger::load_shipment(tx, order_id, s.shipment_id()).await? {
                    stored.state.shipments.push(prev);
                }
                Event::Shipment(s)
            }
            PlanInput::Cancellation(c) => {
                if let Some(prev) =
                    ledger::load_cancellation(tx, order_id, c.cancellation_id()).await?
                {
                    stored.state.cancellations.push(prev);
                }
                Event::Cancellation(c)
            }
        };
        let ctx = PlanContext {
            capabilities: caps,
            shipping: self.shipping,
            now: Utc::now(),
        };
        let plan = match domain::plan(&stored.order, &stored.state, event, &ctx) {
            Ok(p) => p,
            Err(Rejection::Duplicate) => {
                self.remember(tx, message, parsed, body_hash, InboxStatus::Processed, None)
                    .await?;
                return Ok(IntakeOutcome::Duplicate);
            }
            Err(rej) => {
                return self
                    .refuse(
                        tx,
                        message,
                        parsed,
                        body_hash,
                        Refusal {
                            reason: rej.reason().to_owned(),
                            detail: format!("order {order_id}: {rej}"),
                        },
                        true,
                    )
                    .await;
            }
        };
        let value_before = domain::shipped_value(&stored.order, &stored.state, self.shipping);
        let value_after = domain::shipped_value(&stored.order, &plan.state, self.shipping);
        let shipped_value = match (value_before, value_after) {
            (Ok(b), Ok(a)) => a.saturating_sub(b),
            _ => {
                return self
                    .refuse(
                        tx,
                        message,
                        parsed,
                        body_hash,
                        Refusal {
                            reason: "amount_overflow".into(),
                            detail: format!(
                                "order {order_id}: the shipped value overflows 64-bit minor units"
                            ),
                        },
                        true,
                    )
                    .await;
            }
        };
        ledger::save_progress(tx, &stored.order, &plan.state).await?;
        let order = &stored.order;
        let (cause_kind, cause_id) = match input {
            PlanInput::Shipment(s) => ("shipment", s.shipment_id().as_str()),
            PlanInput::Cancellation(c) => ("cancellation", c.cancellation_id().as_str()),
        };
        // The capture's execution joins this span's trace (or links to it when it runs later);
        // without tracing installed, the publisher's context is the best we have.
        let traceparent =
            crate::telemetry::trace::current_traceparent().or_else(|| message.traceparent.clone());
        let traceparent = traceparent.as_deref();
        let mut dispatch = Vec::new();
        let (captures, label) = capture_rows(order, &plan, cause_kind, cause_id, traceparent);
        for capture in &captures {
            ledger::insert_capture(tx, capture).await?;
        }
        if !captures.is_empty() {
            dispatch.push(order_id.as_str().to_owned());
        }
        match input {
            PlanInput::Shipment(s) => {
                ledger::insert_shipment(
                    tx,
                    order_id,
                    s,
                    parsed.envelope.message_id.as_str(),
                    shipped_value,
                    &label,
                )
                .await?
            }
            PlanInput::Cancellation(c) => {
                ledger::insert_cancellation(tx, order_id, c, &label).await?
            }
        }
        self.remember(tx, message, parsed, body_hash, InboxStatus::Processed, None)
            .await?;
        Ok(IntakeOutcome::Processed { dispatch })
    }

    /// Records the message in the inbox with its status.
    async fn remember(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
        parsed: &Parsed,
        body_hash: &str,
        status: InboxStatus,
        reason: Option<&str>,
    ) -> Result<(), StorageError> {
        let parked = status == InboxStatus::Parked;
        ledger::inbox_upsert(
            tx,
            &NewInbox {
                message_id: parsed.envelope.message_id.as_str(),
                message_type: parsed.envelope.message_type.as_str(),
                order_id: Some(parsed.command.order_id().as_str()),
                payload_hash: body_hash,
                status,
                reject_reason: reason,
                body: parked.then_some(message.body.as_slice()),
                routing_key: Some(&message.routing_key),
                traceparent: message.traceparent.as_deref(),
                tracestate: message.tracestate.as_deref(),
                park_expires_at: parked.then(|| Utc::now() + self.parking),
            },
        )
        .await
    }

    /// Records a refusal; `in_inbox` also marks the message id as rejected, so a redelivery
    /// is refused the same way.
    async fn refuse(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
        parsed: &Parsed,
        body_hash: &str,
        refusal: Refusal,
        in_inbox: bool,
    ) -> Result<IntakeOutcome, StorageError> {
        // Stored through the text boundary (storage).
        let body = String::from_utf8_lossy(&message.body);
        ledger::insert_rejection(
            tx,
            &NewRejection {
                message_id: Some(parsed.envelope.message_id.as_str()),
                message_type: Some(parsed.envelope.message_type.as_str()),
                order_id: Some(parsed.command.order_id().as_str()),
                reason: &refusal.reason,
                detail: &refusal.detail,
                routing_key: Some(&message.routing_key),
                body: Some(&body),
                body_hash,
            },
        )
        .await?;
        if in_inbox {
            self.remember(
                tx,
                message,
                parsed,
                body_hash,
                InboxStatus::Rejected,
                Some(&refusal.reason),
            )
            .await?;
        }
        events::MessageRejected {
            reason: &refusal.reason,
            message_id: parsed.envelope.message_id.as_str(),
            order_id: parsed.command.order_id().as_str(),
            detail: &refusal.detail,
        }
        .emit();
        Ok(IntakeOutcome::Rejected {
            reason: refusal.reason,
            detail: refusal.detail,
            message_id: Some(parsed.envelope.message_id.as_str().to_owned()),
        })
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
        let mut tx = self
            .store
            .pool()
            .begin()
            .await
            .map_err(|e| StorageError::classify("expiring a parked message", e))?;
        ledger::lock_order_key(&mut tx, parsed.command.order_id()).await?;
        // Still parked? (Its order may have arrived since the sweeper looked.)
        let still = ledger::inbox_get(&mut tx, parsed.envelope.message_id.as_str()).await?;
        if !matches!(still.map(|s| s.status), Some(InboxStatus::Parked)) {
            return Ok(IntakeOutcome::Duplicate);
        }
        if ledger::load_order(&mut tx, parsed.command.order_id(), false)
            .await?
            .is_some()
        {
            drop(tx);
            return Ok(IntakeOutcome::Duplicate);
        }
        let out = self
            .refuse(&mut tx, &incoming, &parsed, &hash, Refusal {
                reason: "unknown_order".into(),
                detail: format!("order {} was not registered within the parking time; publish order.authorized first, then requeue this message", parsed.command.order_id()),
            }, true)
            .await?;
        tx.commit()
            .await
            .map_err(|e| StorageError::classify("expiring a parked message", e))?;
        Ok(out)
    }

    /// Processes the parked messages of an order that now exists (the sweeper's safety net).
    pub async fn process_parked(&self, order_id: &str) -> Result<Vec<String>, StorageError> {
        let mut tx = self
            .store
            .pool()
            .begin()
            .await
            .map_err(|e| StorageError::classify("processing parked messages", e))?;
        let Ok(oid) = domain::OrderId::parse(order_id) else {
            return Ok(Vec::new());
        };
        ledger::lock_order_key(&mut tx, &oid).await?;
        let mut dispatch = Vec::new();
        for parked in ledger::parked_for_order(&mut tx, order_id).await? {
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
        tx.commit()
            .await
            .map_err(|e| StorageError::classify("processing parked messages", e))?;
        Ok(dispatch)
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

/// The span of a parked message processed now that its order exists: part of the current
/// trace (the order's message, or the sweeper's pass), linked to the trace that published it.
fn parked_span(parked: &ledger::ParkedMessage) -> tracing::Span {
    let span = tracing::info_span!(
        "intake parked message",
        messaging.message.id = %parked.message_id,
        order_id = parked.order_id.as_deref().unwrap_or_default(),
    );
    crate::telemetry::trace::link_to(&span, parked.traceparent.as_deref());
    span
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

/// Batched intake: many deliveries, one transaction.
///
/// Under load, committing one transaction per message makes the database's per-statement and
/// per-commit costs the bottleneck. A batch holds messages of *different* orders (the consumer
/// hands a later message of an order over only after the earlier one committed), takes every
/// order's intake lock in one statement (sorted, so batches never deadlock on each other),
/// reads the inbox, the orders and earlier shipments in one statement each, plans every
/// shipment with the same domain code as the per-message path, and writes each table in one
/// statement. Each message's effect is still all or nothing and still committed before its
/// acknowledgement.
///
/// Only the common cases take this path: a shipment, seen for the first time, of a registered
/// order, that plans without a refusal; and the registration of a new order that nothing is
/// parked for. Anything else — cancellations, parked, duplicate, conflicting, refused or
/// unreadable messages, an order twice in one batch — and every message of a batch whose
/// transaction fails, goes through [`Intake::handle`] on its own afterwards, so a bad or
/// failing message never takes its batch down.
impl Intake {
    /// Processes `messages` (in delivery order), returning one outcome per message.
    pub async fn handle_batch(
        &self,
        messages: &[IncomingMessage],
    ) -> Vec<Result<IntakeOutcome, StorageError>> {
        let spans = messages.iter().map(|_| intake_span()).collect();
        self.handle_batch_in(messages, spans).await
    }

    /// [`Intake::handle_batch`] with one `intake` span per message (each a child of its
    /// message's consumer span).
    async fn handle_batch_in(
        &self,
        messages: &[IncomingMessage],
        spans: Vec<tracing::Span>,
    ) -> Vec<Result<IntakeOutcome, StorageError>> {
        let mut outcomes: Vec<Option<Result<IntakeOutcome, StorageError>>> =
            messages.iter().map(|_| None).collect();
        let mut spans: Vec<Option<tracing::Span>> = spans.into_iter().map(Some).collect();
        let candidates = batch_candidates(messages, &spans, self.max_message_bytes);
        if !candidates.is_empty() {
            match self.apply_batch(&candidates).await {
                Ok(done) => {
                    let size = done.len() as i64;
                    for (index, outcome) in done {
                        let outcome = Ok(outcome);
                        // The message's span ends with the commit that settled it.
                        if let Some(span) = spans.get_mut(index).and_then(Option::take)
                            && let Some(c) = candidates.iter().find(|c| c.index == index)
                        {
                            span.record(
                                "messaging.message.id",
                                c.parsed.envelope.message_id.as_str(),
                            );
                            span.record("message_type", c.parsed.envelope.message_type.as_str());
                            span.record("order_id", c.order_id().as_str());
                            span.record("transaction_attempts", 1_i64);
                            span.record("batch_size", size);
                            record_outcome(&span, &outcome);
                        }
                        if let Some(slot) = outcomes.get_mut(index) {
                            *slot = Some(outcome);
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, size = candidates.len(), "batched intake failed; processing its messages one by one");
                }
            }
        }
        let mut out = Vec::with_capacity(messages.len());
        for ((message, outcome), span) in messages.iter().zip(outcomes).zip(spans) {
            out.push(match outcome {
                Some(done) => done,
                None => {
                    let span = span.unwrap_or_else(intake_span);
                    self.handle_in(message, span).await
                }
            });
        }
        out
    }

    /// Applies the candidates it can in one transaction; returns (index, outcome) of those it
    /// committed. The others are left for the per-message path.
    async fn apply_batch(
        &self,
        candidates: &[Candidate<'_>],
    ) -> Result<Vec<(usize, IntakeOutcome)>, StorageError> {
        let mut tx = self
            .store
            .pool()
            .begin()
            .await
            .map_err(|e| StorageError::classify("starting batched intake", e))?;
        let mut order_ids: Vec<&str> = candidates.iter().map(|c| c.order_id().as_str()).collect();
        order_ids.sort_unstable();
        ledger::lock_order_keys(&mut tx, &order_ids).await?;
        let message_ids: Vec<&str> = candidates
            .iter()
            .map(|c| c.parsed.envelope.message_id.as_str())
            .collect();
        let seen = ledger::inbox_get_many(&mut tx, &message_ids).await?;
        let orders = ledger::load_orders_for_update(&mut tx, &order_ids).await?;
        let (ship_orders, ship_ids): (Vec<&str>, Vec<&str>) = candidates
            .iter()
            .filter_map(|c| Some((c.order_id().as_str(), c.shipment()?.shipment_id().as_str())))
            .unzip();
        let earlier = ledger::existing_shipments(&mut tx, &ship_orders, &ship_ids).await?;
        let registering: Vec<&str> = candidates
            .iter()
            .filter(|c| matches!(c.parsed.command, Command::RegisterOrder(_)))
            .map(|c| c.order_id().as_str())
            .collect();
        let parked = if registering.is_empty() {
            Default::default()
        } else {
            ledger::orders_with_parked(&mut tx, &registering).await?
        };

        let now = Utc::now();
        let mut writes = ledger::IntakeBatch::default();
        let mut done = Vec::new();
        for c in candidates {
            let message_id = c.parsed.envelope.message_id.as_str();
            let order_id = c.order_id();
            let inbox = NewInbox {
                message_id,
                message_type: c.parsed.envelope.message_type.as_str(),
                order_id: Some(order_id.as_str()),
                payload_hash: &c.body_hash,
                status: InboxStatus::Processed,
                reject_reason: None,
                body: None,
                routing_key: Some(&c.message.routing_key),
                traceparent: c.message.traceparent.as_deref(),
                tracestate: c.message.tracestate.as_deref(),
                park_expires_at: None,
            };
            if let Command::RegisterOrder(order) = &c.parsed.command {
                // A new order with nothing waiting for it; a known one (duplicate or conflict)
                // and one with parked messages go through the per-message path.
                if seen.contains_key(message_id)
                    || orders.contains_key(order_id.as_str())
                    || parked.contains(order_id.as_str())
                {
                    continue;
                }
                let auth = order.authorization();
                let Some(caps) = self.capabilities.capabilities(auth.provider.as_str()) else {
                    continue;
                };
                writes.orders.push(ledger::NewOrder {
                    order,
                    allowance: caps.over_capture.for_authorized(auth.amount),
                    message_id,
                    payload_hash: order_fingerprint(order),
                });
                writes.inbox.push(inbox);
                done.push((
                    c.index,
                    IntakeOutcome::Processed {
                        dispatch: Vec::new(),
                    },
                ));
                continue;
            }
            let Some(shipment) = c.shipment() else {
                continue;
            };
            let shipment_id = shipment.shipment_id().as_str();
            if seen.contains_key(message_id)
                || earlier.contains(&(order_id.as_str().to_owned(), shipment_id.to_owned()))
            {
                continue; // a redelivery or a duplicate: the per-message path decides
            }
            let Some(stored) = orders.get(order_id.as_str()) else {
                continue; // not registered yet: the per-message path parks it
            };
            let Some(caps) = self
                .capabilities
                .capabilities(stored.order.authorization().provider.as_str())
            else {
                continue;
            };
            let ctx = PlanContext {
                capabilities: caps,
                shipping: self.shipping,
                now,
            };
            let Ok(plan) = domain::plan(
                &stored.order,
                &stored.state,
                Event::Shipment(shipment),
                &ctx,
            ) else {
                continue; // refused or a duplicate: the per-message path records why
            };
            let before = domain::shipped_value(&stored.order, &stored.state, self.shipping);
            let after = domain::shipped_value(&stored.order, &plan.state, self.shipping);
            let (Ok(before), Ok(after)) = (before, after) else {
                continue;
            };
            let (rows, label) = capture_rows(
                &stored.order,
                &plan,
                "shipment",
                shipment_id,
                c.traceparent.as_deref(),
            );
            let dispatch = if rows.is_empty() {
                Vec::new()
            } else {
                vec![order_id.as_str().to_owned()]
            };
            writes.captures.extend(rows);
            writes.shipments.push(ledger::NewShipment {
                order_id,
                shipment,
                message_id,
                shipped_value: after.saturating_sub(before),
                decision: label,
            });
            writes.inbox.push(inbox);
            writes.progress.push((&stored.order, plan.state));
            done.push((c.index, IntakeOutcome::Processed { dispatch }));
        }
        if done.is_empty() {
            return Ok(done); // nothing written; the transaction rolls back on drop
        }
        ledger::store_intake_batch(&mut tx, &writes).await?;
        let claimed = match &self.claimer {
            Some(executor) => {
                // The orders' head captures, claimed before anyone else can see the new rows:
                // usually the capture just created; an earlier one if it is still unsettled
                // and due (P8 holds either way: the claim takes only the head).
                let mut orders: Vec<&str> = done
                    .iter()
                    .filter_map(|(_, o)| match o {
                        IntakeOutcome::Processed { dispatch } => dispatch.first(),
                        _ => None,
                    })
                    .map(String::as_str)
                    .collect();
                orders.sort_unstable();
                orders.dedup();
                captures::claim_many(
                    &mut *tx,
                    &orders,
                    executor.worker_id(),
                    executor.lease_seconds(),
                )
                .await?
            }
            None => Vec::new(),
        };
        tx.commit()
            .await
            .map_err(|e| StorageError::classify("committing batched intake", e))?;
        if let Some(executor) = &self.claimer {
            let claimed_orders: std::collections::HashSet<String> = claimed
                .iter()
                .map(|c| c.order_id.as_str().to_owned())
                .collect();
            for (_, outcome) in &mut done {
                if let IntakeOutcome::Processed { dispatch } = outcome {
                    dispatch.retain(|order| !claimed_orders.contains(order));
                }
            }
            for capture in claimed {
                executor.send_claimed(capture);
            }
        }
        Ok(done)
    }
}

/// Groups the deliveries the consumer hands over at the same time into batches for
/// [`Intake::handle_batch`].
///
/// Each delivery's handler awaits its own outcome, so the acknowledgement still follows the
/// commit of that delivery's effect. A batch starts as soon as a writer is free: at low load
/// that is a batch of one with no added wait; under load, deliveries that arrive while the
/// writers are busy share the next transaction. Cheap to clone.
#[derive(Clone)]
pub struct IntakeBatcher {
    intake: Arc<Intake>,
    tx: tokio::sync::mpsc::UnboundedSender<PendingMessage>,
}

/// A delivery waiting for its batch, its `intake` span (opened when it was handed over, so the
/// wait for a batch is part of it), and where its outcome goes.
type PendingMessage = (
    IncomingMessage,
    tracing::Span,
    tokio::sync::oneshot::Sender<Result<IntakeOutcome, StorageError>>,
);

impl IntakeBatcher {
    /// Starts the batching task: at most `writers` batch transactions at once, each of at most
    /// `max_batch` messages. The task ends when every clone is dropped.
    pub fn spawn(intake: Arc<Intake>, max_batch: usize, writers: usize) -> IntakeBatcher {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PendingMessage>();
        let writers = Arc::new(tokio::sync::Semaphore::new(writers.max(1)));
        let max_batch = max_batch.max(1);
        let batch_intake = intake.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Wait for a free writer before closing the batch: what arrives meanwhile joins.
                let Ok(permit) = writers.clone().acquire_owned().await else {
                    break;
                };
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let intake = batch_intake.clone();
                tokio::spawn(async move {
                    let mut messages = Vec::with_capacity(batch.len());
                    let mut spans = Vec::with_capacity(batch.len());
                    let mut replies = Vec::with_capacity(batch.len());
                    for (message, span, reply) in batch {
                        messages.push(message);
                        spans.push(span);
                        replies.push(reply);
                    }
                    let outcomes = intake.handle_batch_in(&messages, spans).await;
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(outcome);
                    }
                    drop(permit);
                });
            }
        });
        IntakeBatcher { intake, tx }
    }

    /// Processes one message as part of whatever batch it joins; returns once its effect is
    /// committed (or refused, or failed).
    pub async fn handle(&self, message: &IncomingMessage) -> Result<IntakeOutcome, StorageError> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        if self
            .tx
            .send((message.clone(), intake_span(), reply))
            .is_ok()
            && let Ok(outcome) = outcome.await
        {
            return outcome;
        }
        // The batching task is gone (shutting down): process the message on its own. Intake
        // is idempotent, so this is safe even if its batch committed.
        self.intake.handle(message).await
    }
}

/// A message that may take the batched path: a shipment or an order registration.
struct Candidate<'a> {
    index: usize,
    message: &'a IncomingMessage,
    parsed: Parsed,
    body_hash: String,
    /// The trace the message's captures continue.
    traceparent: Option<String>,
}

impl Candidate<'_> {
    fn order_id(&self) -> &domain::OrderId {
        self.parsed.command.order_id()
    }

    fn shipment(&self) -> Option<&domain::Shipment> {
        match &self.parsed.command {
            Command::Ship { shipment, .. } => Some(shipment),
            _ => None,
        }
    }
}

/// Shipments and registrations whose order appears once in the batch and whose message id
/// appears once.
fn batch_candidates<'a>(
    messages: &'a [IncomingMessage],
    spans: &[Option<tracing::Span>],
    max_message_bytes: usize,
) -> Vec<Candidate<'a>> {
    let parsed: Vec<(usize, &IncomingMessage, Parsed)> = messages
        .iter()
        .enumerate()
        // A body over the limit is refused on its own, unread.
        .filter(|(_, m)| m.body.len() <= max_message_bytes)
        .filter_map(|(i, m)| Some((i, m, wire::parse(&m.body, Some(&m.routing_key)).ok()?)))
        .collect();
    let mut per_order: HashMap<String, usize> = HashMap::new();
    let mut per_message: HashMap<String, usize> = HashMap::new();
    for (_, _, p) in &parsed {
        *per_order
            .entry(p.command.order_id().as_str().to_owned())
            .or_default() += 1;
        *per_message
            .entry(p.envelope.message_id.as_str().to_owned())
            .or_default() += 1;
    }
    parsed
        .into_iter()
        .filter(|(_, _, p)| {
            matches!(p.command, Command::Ship { .. } | Command::RegisterOrder(_))
                && per_order.get(p.command.order_id().as_str()) == Some(&1)
                && per_message.get(p.envelope.message_id.as_str()) == Some(&1)
        })
        .map(|(index, message, parsed)| Candidate {
            index,
            message,
            body_hash: hex::encode(Sha256::digest(&message.body)),
            parsed,
            // Captures continue the trace of the message's intake span, as on the
            // per-message path.
            traceparent: spans
                .get(index)
                .and_then(Option::as_ref)
                .and_then(crate::telemetry::trace::traceparent_of)
                .or_else(|| message.traceparent.clone()),
        })
        .collect()
}

#[derive(Clone, Copy)]
enum PlanInput<'a> {
    Shipment(&'a domain::Shipment),
    Cancellation(&'a domain::Cancellation),
}

/// The capture rows a plan asks for (none, one, or a capture and the release after it) and the
/// decision's label for the shipment or cancellation row. Shared by the per-message and the
/// batched intake so both store exactly the same rows.
fn capture_rows<'a>(
    order: &'a Order,
    plan: &domain::Plan,
    cause_kind: &'static str,
    cause_id: &'a str,
    traceparent: Option<&'a str>,
) -> (Vec<NewCapture<'a>>, String) {
    let mut rows = Vec::new();
    let label = match &plan.decision {
        Decision::Capture(cp) => {
            let lines = cp
                .lines
                .iter()
                .map(|l| {
                    let line = order.line_index(&l.line_id).map(|i| &order.lines()[i]);
                    StoredCaptureLine {
                        line_id: l.line_id.as_str().to_owned(),
                        sku: line.map(|x| x.sku.clone()).unwrap_or_default(),
                        name: line.map(|x| x.name.clone()).unwrap_or_default(),
                        units: l.units,
                        amount: l.amount.get(),
                    }
                })
                .collect();
            rows.push(NewCapture {
                order,
                sequence: cp.sequence,
                kind: CaptureKind::Capture,
                cause_kind,
                cause_id,
                amount: cp.amount,
                is_final: cp.is_final,
                release_after: cp.release_after,
                lines,
                shipping: cp.shipping,
                shortfall: plan.shortfall,
                traceparent,
            });
            if cp.release_after {
                rows.push(NewCapture {
                    order,
                    sequence: cp.sequence + 1,
                    kind: CaptureKind::Release,
                    cause_kind,
                    cause_id,
                    amount: MinorUnits::ZERO,
                    is_final: false,
                    release_after: false,
                    lines: Vec::new(),
                    shipping: MinorUnits::ZERO,
                    shortfall: MinorUnits::ZERO,
                    traceparent,
                });
            }
            "capture".to_owned()
        }
        Decision::ReleaseRemainder { method, sequence } => {
            let (kind, amount) = match method {
                ReleaseMethod::ZeroAmountFinalCapture => (CaptureKind::Capture, MinorUnits::ZERO),
                ReleaseMethod::Cancel => (CaptureKind::Release, MinorUnits::ZERO),
            };
            rows.push(NewCapture {
                order,
                sequence: *sequence,
                kind,
                cause_kind,
                cause_id,
                amount,
                is_final: true,
                release_after: false,
                lines: Vec::new(),
                shipping: MinorUnits::ZERO,
                shortfall: plan.shortfall,
                traceparent,
            });
            "release".to_owned()
        }
        Decision::VoidAuthorization => {
            rows.push(NewCapture {
                order,
                sequence: plan.state.captures + 1,
                kind: CaptureKind::Void,
                cause_kind,
                cause_id,
                amount: MinorUnits::ZERO,
                is_final: true,
                release_after: false,
                lines: Vec::new(),
                shipping: MinorUnits::ZERO,
                shortfall: plan.shortfall,
                traceparent,
            });
            "void".to_owned()
        }
        Decision::Nothing(reason) => format!("nothing:{}", reason.label()),
    };
    (rows, label)
}

/// A content hash of an order registration, independent of the message id and of key order.
fn order_fingerprint(order: &Order) -> String {
    let auth = order.authorization();
    let lines: Vec<serde_json::Value> = order
        .lines()
        .iter()
        .map(|l| {
            serde_json::json!([
                l.line_id.as_str(),
                l.sku,
                l.name,
                l.quantity.get(),
                l.unit_amount.get(),
                l.tax_amount.get(),
                l.discount_amount.get()
            ])
        })
        .collect();
    let canonical = serde_json::json!([
        order.currency().code(),
        order.shipping_amount().get(),
        order.order_discount_amount().get(),
        auth.provider.as_str(),
        auth.authorization_id.as_str(),
        auth.amount.get(),
        auth.authorized_at.to_rfc3339(),
        auth.expires_at.map(|t| t.to_rfc3339()),
        lines,
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
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

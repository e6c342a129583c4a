//! The per-message path: one message, one transaction, retried on conflicts and transient
//! database errors. Each step decides from what it reads in the transaction and adds its rows
//! to a write set ([`IntakeBatch`], see `rows`), which storage persists in one statement, as
//! for a batch: the write set of one message.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::domain::{Capabilities, Order};
use crate::queue::consumer::IncomingMessage;
use crate::queue::wire::{self, Command, Parsed};
use crate::sanitize;
use crate::storage::ledger::{AWAITING_INCREMENT, InboxStatus, IntakeBatch, StoredOrder};
use crate::storage::{LedgerTx, StorageError};

use super::plan::{PlanInput, Verdict, order_fingerprint};
use super::refuse::{Refusal, Unread};
use super::rows::{Entry, inbox_row, stage_order};
use super::{Intake, IntakeOutcome, TOO_LARGE_EXCERPT_CHARS, intake_span, record_outcome};

impl Intake {
    /// Processes one message, retrying the transaction on conflicts and transient database
    /// errors a few times before giving up (the caller then returns the message to the queue).
    pub async fn handle(&self, message: &IncomingMessage) -> Result<IntakeOutcome, StorageError> {
        self.handle_in(message, intake_span()).await
    }

    /// [`Intake::handle`] inside the given `intake` span.
    pub(super) async fn handle_in(
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

    pub(super) async fn handle_with_retries(
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

    pub(super) async fn handle_once(
        &self,
        message: &IncomingMessage,
    ) -> Result<IntakeOutcome, StorageError> {
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
        let mut tx = self.store.begin("starting intake").await?;
        let outcome = self
            .apply(&mut tx, message, &parsed, &body_hash, false)
            .await?;
        tx.commit("committing intake").await?;
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
    /// processed now that its order exists. Each step stores its write set before it returns,
    /// so what follows in the same transaction (the messages parked for an order just
    /// registered, one after the other) reads it.
    pub(super) async fn apply(
        &self,
        tx: &mut LedgerTx,
        message: &IncomingMessage,
        parsed: &Parsed,
        body_hash: &str,
        from_park: bool,
    ) -> Result<IntakeOutcome, StorageError> {
        let message_id = parsed.envelope.message_id.as_str();
        let order_id = parsed.command.order_id().clone();
        tx.lock_order_key(&order_id).await?;

        // A message parked for an increment of its order's hold waits until its own deadline.
        let mut waiting_until = None;
        if let Some(seen) = tx.inbox_get(message_id).await? {
            if seen.payload_hash != body_hash {
                // Not marked in the inbox: the first message's row stands.
                return self
                    .refuse(tx, None, message, parsed, body_hash, Refusal {
                        reason: "message_conflict".into(),
                        detail: format!("message_id {message_id} was already received with different content; the first stands. Publish a new message with a new message_id"),
                    })
                    .await;
            }
            match (seen.status, from_park) {
                (InboxStatus::Parked, true) => {
                    // process it now
                    if seen.reject_reason.as_deref() == Some(AWAITING_INCREMENT) {
                        waiting_until = seen.park_expires_at;
                    }
                }
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
                    waiting_until,
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
                    waiting_until,
                )
                .await?
            }
        };
        if from_park && matches!(result, IntakeOutcome::Rejected { .. }) {
            // Its delivery was acknowledged when it was parked: the dead-letter copy is owed,
            // and the sweeper sends it.
            tx.owe_dead_letter(message_id, &message.body).await?;
        }
        Ok(result)
    }

    /// Registers an order (or finds it a duplicate or a conflict), then processes the messages
    /// parked for it.
    pub(super) async fn register(
        &self,
        tx: &mut LedgerTx,
        message: &IncomingMessage,
        parsed: &Parsed,
        order: &Order,
        body_hash: &str,
    ) -> Result<IntakeOutcome, StorageError> {
        let mut writes = IntakeBatch::default();
        let outcome = self
            .stage_registration(tx, &mut writes, message, parsed, order, body_hash)
            .await?;
        tx.store_intake_batch(&writes).await?;
        if !matches!(outcome, IntakeOutcome::Processed { .. }) {
            return Ok(outcome);
        }
        // Shipments and cancellations that arrived first are processed now, in arrival order,
        // in this same transaction.
        let mut dispatch = self.release_parked(tx, order.order_id()).await?;
        dispatch.dedup();
        Ok(IntakeOutcome::Processed { dispatch })
    }

    /// What a registration writes, added to `writes`: the new order, or the message as a
    /// duplicate, or its refusal.
    async fn stage_registration<'a>(
        &self,
        tx: &mut LedgerTx,
        writes: &mut IntakeBatch<'a>,
        message: &'a IncomingMessage,
        parsed: &'a Parsed,
        order: &'a Order,
        body_hash: &'a str,
    ) -> Result<IntakeOutcome, StorageError> {
        let auth = order.authorization();
        let Some(caps) = self.capabilities.capabilities(auth.provider.as_str()) else {
            return self
                .refuse(tx, Some(writes), message, parsed, body_hash, Refusal {
                    reason: "unknown_provider".into(),
                    detail: format!("payment.provider {:?} is not configured on this worker; configure providers.{}.base_url or correct the provider name", auth.provider.as_str(), auth.provider.as_str()),
                })
                .await;
        };
        let order_hash = order_fingerprint(order);
        match tx.order_payload_hash(order.order_id()).await? {
            Some(h) if h == order_hash => {
                writes
                    .inbox
                    .push(inbox_row(message, parsed, body_hash, Entry::Processed));
                return Ok(IntakeOutcome::Duplicate);
            }
            Some(_) => {
                return self
                    .refuse(tx, Some(writes), message, parsed, body_hash, Refusal {
                        reason: "order_conflict".into(),
                        detail: format!("order {} was already registered with different content; the first stands", order.order_id()),
                    })
                    .await;
            }
            None => {
                // Checked before writing: a unique violation would abort the transaction and
                // leave no way to record the refusal in it. Two registrations racing for one
                // authorization still meet the constraint; the loser's transaction is retried
                // by `handle` and refused here.
                if tx
                    .authorization_taken(&auth.provider, &auth.authorization_id)
                    .await?
                {
                    return self
                        .refuse(tx, Some(writes), message, parsed, body_hash, Refusal {
                            reason: "authorization_conflict".into(),
                            detail: format!("authorization {} of provider {} already belongs to another order", auth.authorization_id, auth.provider),
                        })
                        .await;
                }
            }
        }
        let inbox = inbox_row(message, parsed, body_hash, Entry::Processed);
        stage_order(writes, order, caps, order_hash, inbox);
        Ok(IntakeOutcome::Processed {
            dispatch: Vec::new(),
        })
    }

    /// Plans a shipment or cancellation against its order and stores what the plan decided;
    /// parks it when its order is not registered yet, or, a shipment, when it would cut value
    /// as shortfall while an increment of the order's hold is unanswered (until the increment is answered,
    /// and at most `capture.parking_seconds`: `waiting_until`, for a message parked so
    /// before, is when that wait ends).
    pub(super) async fn plan_event(
        &self,
        tx: &mut LedgerTx,
        message: &IncomingMessage,
        parsed: &Parsed,
        body_hash: &str,
        input: PlanInput<'_>,
        waiting_until: Option<DateTime<Utc>>,
    ) -> Result<IntakeOutcome, StorageError> {
        let order_id = parsed.command.order_id();
        let Some(mut stored) = tx.load_order(order_id, true).await? else {
            let mut writes = IntakeBatch::default();
            let until = Utc::now() + self.parking;
            writes
                .inbox
                .push(inbox_row(message, parsed, body_hash, Entry::Parked(until)));
            tx.store_intake_batch(&writes).await?;
            return Ok(IntakeOutcome::Parked);
        };
        let caps = self.configured(&stored)?;
        with_earlier(tx, input, &mut stored).await?;
        let now = Utc::now();
        // A shipment may wait; a cancellation is planned at once.
        let wait_until = waiting_until.unwrap_or(now + self.parking);
        let may_wait = matches!(input, PlanInput::Shipment(_)) && now < wait_until;
        // The capture's execution joins this span's trace (or links to it when it runs later);
        // without tracing installed, the publisher's context is the best we have.
        let traceparent =
            crate::telemetry::trace::current_traceparent().or_else(|| message.traceparent.clone());
        let mut writes = IntakeBatch::default();
        let stage = |writes: &mut _, not_short: bool| {
            let inbox = inbox_row(message, parsed, body_hash, Entry::Processed);
            self.stage_event(
                writes,
                &stored,
                caps,
                input,
                now,
                traceparent.as_deref(),
                inbox,
                not_short,
            )
        };
        let mut staged = stage(&mut writes, may_wait);
        // Only a plan that would cut value looks for an unanswered increment; read after the
        // order's row is locked, so an answer recorded meanwhile (the answer and the raised
        // hold commit together) is seen with its hold, or not at all. With none to wait for,
        // the plan stands as without the lifecycle sweep.
        if matches!(staged, Err(Verdict::WouldCut)) && !tx.increment_unfinished(order_id).await? {
            staged = stage(&mut writes, false);
        }
        let outcome = match staged {
            Ok(dispatch) => IntakeOutcome::Processed { dispatch },
            Err(Verdict::WouldCut) => {
                writes.inbox.push(inbox_row(
                    message,
                    parsed,
                    body_hash,
                    Entry::AwaitingIncrement(wait_until),
                ));
                tracing::info!(
                    event = "shipment_awaiting_increment",
                    order_id = %order_id,
                    message_id = parsed.envelope.message_id.as_str(),
                    until = %wait_until,
                    "the shipment exceeds the hold while an increment is unanswered: it waits for the answer"
                );
                IntakeOutcome::Parked
            }
            Err(Verdict::Duplicate) => {
                writes
                    .inbox
                    .push(inbox_row(message, parsed, body_hash, Entry::Processed));
                IntakeOutcome::Duplicate
            }
            Err(Verdict::Refused(refusal)) => {
                self.refuse(tx, Some(&mut writes), message, parsed, body_hash, refusal)
                    .await?
            }
        };
        tx.store_intake_batch(&writes).await?;
        Ok(outcome)
    }

    /// The capabilities of the order's provider; an order whose provider is no longer
    /// configured cannot be planned (retried until the configuration is fixed).
    fn configured(&self, stored: &StoredOrder) -> Result<Capabilities, StorageError> {
        let provider = &stored.order.authorization().provider;
        self.capabilities
            .capabilities(provider.as_str())
            .ok_or_else(|| StorageError::Corrupt {
                context: "planning a capture",
                detail: format!(
                    "provider {provider} of order {} is no longer configured",
                    stored.order.order_id()
                ),
            })
    }
}

/// Adds the earlier shipment or cancellation of the same id (if any) to the order's state, so
/// planning can tell a duplicate from a conflict.
async fn with_earlier(
    tx: &mut LedgerTx,
    input: PlanInput<'_>,
    stored: &mut StoredOrder,
) -> Result<(), StorageError> {
    let order_id = stored.order.order_id().clone();
    match input {
        PlanInput::Shipment(s) => {
            if let Some(prev) = tx.load_shipment(&order_id, s.shipment_id()).await? {
                stored.state.shipments.push(prev);
            }
        }
        PlanInput::Cancellation(c) => {
            if let Some(prev) = tx.load_cancellation(&order_id, c.cancellation_id()).await? {
                stored.state.cancellations.push(prev);
            }
        }
    }
    Ok(())
}

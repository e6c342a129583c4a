//! The batched path: many deliveries, one transaction.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::domain::{self, Event, PlanContext};
use crate::queue::consumer::IncomingMessage;
use crate::queue::wire::{self, Command, Parsed};
use crate::storage::ledger::{self, InboxStatus, NewInbox};
use crate::storage::{StorageError, captures};

use super::plan::{capture_rows, order_fingerprint};
use super::{Intake, IntakeOutcome, intake_span, record_outcome};

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
    pub(super) async fn handle_batch_in(
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
    pub(super) async fn apply_batch(
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
            let claimed_orders: std::collections::HashSet<String> =
                claimed.iter().map(|c| c.order_id.clone()).collect();
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
pub(super) type PendingMessage = (
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
pub(super) struct Candidate<'a> {
    index: usize,
    message: &'a IncomingMessage,
    parsed: Parsed,
    body_hash: String,
    /// The trace the message's captures continue.
    traceparent: Option<String>,
}

impl Candidate<'_> {
    pub(super) fn order_id(&self) -> &domain::OrderId {
        self.parsed.command.order_id()
    }

    pub(super) fn shipment(&self) -> Option<&domain::Shipment> {
        match &self.parsed.command {
            Command::Ship { shipment, .. } => Some(shipment),
            _ => None,
        }
    }
}

/// Shipments and registrations whose order appears once in the batch and whose message id
/// appears once.
pub(super) fn batch_candidates<'a>(
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

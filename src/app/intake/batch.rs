//! The batched path: many deliveries, one transaction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::domain::{self, Order};
use crate::queue::consumer::IncomingMessage;
use crate::queue::wire::{self, Command, Parsed};
use crate::storage::captures::ClaimedCapture;
use crate::storage::ledger::{self, InboxRecord, NewInbox, StoredOrder};
use crate::storage::{LedgerTx, StorageError};

use super::plan::{PlanInput, order_fingerprint};
use super::rows::{Entry, inbox_row, stage_order};
use super::{Intake, IntakeOutcome, intake_span, record_outcome};

/// Batched intake: many deliveries, one transaction.
///
/// Under load, committing one transaction per message makes the database's per-statement and
/// per-commit costs the bottleneck. A batch holds messages of *different* orders (the consumer
/// hands a later message of an order over only after the earlier one committed), takes every
/// order's intake lock in one statement (sorted, so batches never deadlock on each other),
/// reads the inbox, the orders and earlier shipments in one statement each, plans every
/// shipment with the same domain code as the per-message path, adds each message's rows to
/// the write set with the same functions (`rows`), and persists the write set with the same
/// writer, one statement. Each message's effect is still all or nothing and still committed
/// before its acknowledgement.
///
/// Only the common cases take this path: a shipment, seen for the first time, of a registered
/// order, that plans without a refusal and without shortfall (one that would cut value may
/// have to wait for an increment of its hold); and the registration of a new order that nothing is
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
        let mut tx = self.store.begin("starting batched intake").await?;
        let found = read_batch(&mut tx, candidates).await?;
        let now = Utc::now();
        let mut writes = ledger::IntakeBatch {
            claim_for: self.claimer.as_ref().map(|handoff| ledger::ClaimFor {
                worker: handoff.worker_id(),
                lease_seconds: handoff.lease_seconds(),
            }),
            ..Default::default()
        };
        let mut done = Vec::new();
        for c in candidates {
            let outcome = match &c.parsed.command {
                Command::RegisterOrder(order) => self.register_new(c, order, &found, &mut writes),
                Command::Ship { shipment, .. } => {
                    self.plan_shipment(c, shipment, &found, now, &mut writes)
                }
                Command::Cancel { .. } => None,
            };
            if let Some(outcome) = outcome {
                done.push((c.index, outcome));
            }
        }
        if done.is_empty() {
            return Ok(done); // nothing written; the transaction rolls back on drop
        }
        let mut claimed = tx.store_intake_batch(&writes).await?;
        let heads = self.claim_heads(&mut tx, &done, &claimed).await?;
        claimed.extend(heads);
        tx.commit("committing batched intake").await?;
        self.hand_over(claimed, &mut done);
        Ok(done)
    }

    /// A registration of a new order with nothing waiting for it, added to `writes`; `None`
    /// for a known order (duplicate or conflict) and one with parked messages: those go
    /// through the per-message path.
    fn register_new<'a>(
        &self,
        c: &'a Candidate<'_>,
        order: &'a Order,
        found: &BatchReads,
        writes: &mut ledger::IntakeBatch<'a>,
    ) -> Option<IntakeOutcome> {
        let order_id = c.order_id().as_str();
        if found.seen.contains_key(c.message_id())
            || found.orders.contains_key(order_id)
            || found.parked.contains(order_id)
        {
            return None;
        }
        let caps = self
            .capabilities
            .capabilities(order.authorization().provider.as_str())?;
        stage_order(writes, order, caps, order_fingerprint(order), c.processed());
        Some(IntakeOutcome::Processed {
            dispatch: Vec::new(),
        })
    }

    /// A first shipment of a registered order that plans without a refusal and without
    /// shortfall, its plan added to `writes`; `None` for anything else (a redelivery, a
    /// duplicate, an order not registered yet, a refusal, shortfall): the per-message path decides and records why.
    fn plan_shipment<'a>(
        &self,
        c: &'a Candidate<'_>,
        shipment: &'a domain::Shipment,
        found: &'a BatchReads,
        now: DateTime<Utc>,
        writes: &mut ledger::IntakeBatch<'a>,
    ) -> Option<IntakeOutcome> {
        let order_id = c.order_id();
        let shipment_id = shipment.shipment_id().as_str();
        if found.seen.contains_key(c.message_id())
            || found
                .earlier
                .contains(&(order_id.as_str().to_owned(), shipment_id.to_owned()))
        {
            return None;
        }
        let stored = found.orders.get(order_id.as_str())?;
        let caps = self
            .capabilities
            .capabilities(stored.order.authorization().provider.as_str())?;
        // A duplicate, a refusal or a plan that would cut value as shortfall (it may have to
        // wait for an increment of the hold) is decided and recorded by the per-message path.
        let dispatch = self
            .stage_event(
                writes,
                stored,
                caps,
                PlanInput::Shipment(shipment),
                now,
                c.traceparent.as_deref(),
                c.processed(),
                true,
            )
            .ok()?;
        Some(IntakeOutcome::Processed { dispatch })
    }

    /// With a [`Handoff`](super::super::execute::Handoff), claims the head capture of every
    /// order the batch dispatches, before anyone else can see the new rows. The batch's writer
    /// has inserted the new captures that are their order's head already in flight
    /// (`inserted`); the others' head is an earlier capture, claimed here if it is unsettled
    /// and due (P8 holds either way: the claim takes only the head). Saves a claim round trip
    /// per capture, and for a new head capture a second version of its row.
    async fn claim_heads(
        &self,
        tx: &mut LedgerTx,
        done: &[(usize, IntakeOutcome)],
        inserted: &[ClaimedCapture],
    ) -> Result<Vec<ClaimedCapture>, StorageError> {
        let Some(handoff) = &self.claimer else {
            return Ok(Vec::new());
        };
        let claimed: HashSet<&str> = inserted.iter().map(|c| c.order_id.as_str()).collect();
        let mut orders: Vec<&str> = done
            .iter()
            .filter_map(|(_, o)| match o {
                IntakeOutcome::Processed { dispatch } => dispatch.first(),
                _ => None,
            })
            .map(String::as_str)
            .filter(|order| !claimed.contains(order))
            .collect();
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        orders.sort_unstable();
        orders.dedup();
        tx.claim_many(&orders, handoff.worker_id(), handoff.lease_seconds())
            .await
    }

    /// After the commit: sends the claimed captures to execution, and leaves their orders out
    /// of the outcomes' dispatch lists (they are on their way already).
    fn hand_over(&self, claimed: Vec<ClaimedCapture>, done: &mut [(usize, IntakeOutcome)]) {
        let Some(handoff) = &self.claimer else {
            return;
        };
        let claimed_orders: HashSet<String> = claimed
            .iter()
            .map(|c| c.order_id.as_str().to_owned())
            .collect();
        for (_, outcome) in done.iter_mut() {
            if let IntakeOutcome::Processed { dispatch } = outcome {
                dispatch.retain(|order| !claimed_orders.contains(order));
            }
        }
        for capture in claimed {
            handoff.send_claimed(capture);
        }
    }
}

/// What a batch reads under its orders' locks, one statement each.
struct BatchReads {
    /// The batch's message ids already in the inbox.
    seen: HashMap<String, InboxRecord>,
    /// The batch's orders that are registered, locked for update.
    orders: HashMap<String, StoredOrder>,
    /// (order id, shipment id) of the batch's shipments already stored.
    earlier: HashSet<(String, String)>,
    /// The orders being registered that have parked messages.
    parked: HashSet<String>,
}

/// Locks the candidates' orders (sorted, so batches never deadlock on each other) and reads
/// what planning them needs.
async fn read_batch(
    tx: &mut LedgerTx,
    candidates: &[Candidate<'_>],
) -> Result<BatchReads, StorageError> {
    let mut order_ids: Vec<&str> = candidates.iter().map(|c| c.order_id().as_str()).collect();
    order_ids.sort_unstable();
    tx.lock_order_keys(&order_ids).await?;
    let message_ids: Vec<&str> = candidates.iter().map(|c| c.message_id()).collect();
    let seen = tx.inbox_get_many(&message_ids).await?;
    let orders = tx.load_orders_for_update(&order_ids).await?;
    let (ship_orders, ship_ids): (Vec<&str>, Vec<&str>) = candidates
        .iter()
        .filter_map(|c| Some((c.order_id().as_str(), c.shipment()?.shipment_id().as_str())))
        .unzip();
    let earlier = tx.existing_shipments(&ship_orders, &ship_ids).await?;
    let registering: Vec<&str> = candidates
        .iter()
        .filter(|c| matches!(c.parsed.command, Command::RegisterOrder(_)))
        .map(|c| c.order_id().as_str())
        .collect();
    let parked = if registering.is_empty() {
        HashSet::new()
    } else {
        tx.orders_with_parked(&registering).await?
    };
    Ok(BatchReads {
        seen,
        orders,
        earlier,
        parked,
    })
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
    fn order_id(&self) -> &domain::OrderId {
        self.parsed.command.order_id()
    }

    fn message_id(&self) -> &str {
        self.parsed.envelope.message_id.as_str()
    }

    /// The message's inbox row, as processed.
    fn processed(&self) -> NewInbox<'_> {
        inbox_row(
            self.message,
            &self.parsed,
            &self.body_hash,
            Entry::Processed,
        )
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

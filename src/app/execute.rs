//! Execution: send each capture to its provider, one at a time per order, and record what
//! happened (DESIGN §4, flow step 2).
//!
//! A capture is dispatched right after intake commits (no polling delay on the happy path).
//! The worker takes the order's head capture under a lease, calls the provider outside any
//! transaction, and records the attempt and the outcome in one transaction. Retries keep the
//! key; a new key is taken only after a lookup showed the provider captured nothing under the
//! old one (P3). A decline latches the order (P4). After a success the next capture of the
//! same order goes at once.
//!
//! Claims and successes are written in batches: drive tasks that claim (or record a success)
//! at the same time share one statement and one commit, so the database's per-statement and
//! per-commit costs do not grow with the number of orders in flight. A batch starts as soon as
//! a writer is free, so at low load nothing waits. Each task still gets its own answer, and a
//! batch that fails is retried one capture at a time. Everything else (declines, retries,
//! lookups, attention) is recorded one capture at a time as before.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::domain::{
    AuthorizationId, Currency, IdempotencyKey, LineId, MinorUnits, Money, OrderId,
};
use crate::provider::{
    CallResult, CaptureLine, CaptureRequest, Outcome, PaymentProvider, ReleaseRequest,
};
use crate::storage::captures::{self, AttemptRecord, ClaimedCapture, Success, Transition};
use crate::storage::ledger::CaptureKind;
use crate::storage::{StorageError, Store};

use super::providers::Providers;
use super::retry::RetryPolicy;

/// Sends captures. Cheap to clone; all clones share one dispatch queue.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    providers: Providers,
    policy: RetryPolicy,
    worker_id: String,
    lease_seconds: f64,
    /// Orders being driven by this process right now, and whether each was dispatched again
    /// meanwhile (then it is driven once more, so a capture queued just as the drive ended is
    /// not left to the sweeper).
    active: Mutex<HashMap<String, bool>>,
    permits: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<String>,
    claims: mpsc::UnboundedSender<ClaimRequest>,
    successes: mpsc::UnboundedSender<SuccessRequest>,
}

/// Claim and success statements that may run at once (each batches many captures).
const BATCH_WRITERS: usize = 2;
/// Captures per claim or success statement, at most.
const MAX_BATCH: usize = 256;

impl Executor {
    /// Creates the executor and the receiver its [`Executor::run`] loop consumes.
    pub fn new(
        store: Store,
        providers: Providers,
        policy: RetryPolicy,
        worker_id: String,
        lease_seconds: u64,
        concurrency: usize,
    ) -> (Executor, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let lease_seconds = lease_seconds as f64;
        let claims = spawn_batcher({
            let (store, worker) = (store.clone(), worker_id.clone());
            move |batch| claim_batch(store.clone(), worker.clone(), lease_seconds, batch)
        });
        let successes = spawn_batcher({
            let (store, worker) = (store.clone(), worker_id.clone());
            move |batch| success_batch(store.clone(), worker.clone(), batch)
        });
        let inner = Inner {
            store,
            providers,
            policy,
            worker_id,
            lease_seconds,
            active: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            tx,
            claims,
            successes,
        };
        (
            Executor {
                inner: Arc::new(inner),
            },
            rx,
        )
    }

    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// Asks for the order's captures to be sent now.
    pub fn dispatch(&self, order_id: impl Into<String>) {
        // The receiver lives as long as the run loop; after shutdown the sweeper of the next
        // start picks the capture up.
        let _ = self.inner.tx.send(order_id.into());
    }

    /// Drives dispatched orders until `shutdown`; then waits for captures in flight to be
    /// recorded.
    pub async fn run(
        &self,
        mut rx: mpsc::UnboundedReceiver<String>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                next = rx.recv() => {
                    let Some(order_id) = next else { break };
                    {
                        let Ok(mut active) = self.inner.active.lock() else { break };
                        match active.entry(order_id.clone()) {
                            // Already being driven: it loops until the order has no due work,
                            // and once more for this dispatch.
                            Entry::Occupied(mut again) => {
                                *again.get_mut() = true;
                                continue;
                            }
                            Entry::Vacant(slot) => {
                                slot.insert(false);
                            }
                        }
                    }
                    let Ok(permit) = self.inner.permits.clone().acquire_owned().await else { break };
                    let this = self.clone();
                    tasks.spawn(async move {
                        loop {
                            this.drive(&order_id).await;
                            let Ok(mut active) = this.inner.active.lock() else { break };
                            match active.get_mut(&order_id) {
                                Some(again) if *again => *again = false,
                                _ => {
                                    active.remove(&order_id);
                                    break;
                                }
                            }
                        }
                        drop(permit);
                    });
                }
            }
        }
        // Finish the calls in progress so their outcomes are recorded, not left to a lease
        // takeover.
        while tasks.join_next().await.is_some() {}
    }

    /// Sends the order's due captures, in sequence, until none is due.
    pub async fn drive(&self, order_id: &str) {
        loop {
            match self.step(order_id).await {
                Ok(true) => continue,
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(event = "capture_step_failed", order_id, error = %e, "capture step failed; the sweeper retries");
                    return;
                }
            }
        }
    }

    /// Claims and sends one capture of the order. Ok(true) when something was done and the
    /// next capture may be due, Ok(false) when nothing was due or the order has nothing left
    /// to send (a capture queued meanwhile comes with its own dispatch).
    pub async fn step(&self, order_id: &str) -> Result<bool, StorageError> {
        let inner = &self.inner;
        let Some(mut capture) = self.claim(order_id).await? else {
            return Ok(false);
        };
        if capture.taken_over {
            tracing::warn!(
                event = "lease_taken_over",
                capture_id = capture.capture_id,
                order_id,
                "a capture's lease expired; sending it again with the same key"
            );
        }
        let Some(provider) = inner.providers.get(&capture.provider) else {
            let error = format!(
                "provider {:?} is not configured on this worker",
                capture.provider
            );
            self.finish(
                &capture,
                "capture",
                None,
                &error_call(&error),
                Transition::Attention {
                    error: error.clone(),
                },
            )
            .await?;
            return Ok(true);
        };
        if capture.needs_lookup {
            match self.resolve_by_lookup(&provider, &mut capture).await? {
                Resolution::Settled => return Ok(true),
                Resolution::Send => {}
            }
        }
        let started = Utc::now();
        let call = match capture.kind {
            CaptureKind::Capture => match capture_request(&capture) {
                Ok(req) => provider.capture(&req).await,
                Err(e) => error_call(&e),
            },
            CaptureKind::Release | CaptureKind::Void => match release_request(&capture) {
                Ok(req) => provider.release(&req).await,
                Err(e) => error_call(&e),
            },
        };
        let transition = self.transition_for(&capture, &call.outcome);
        let op = if capture.kind == CaptureKind::Capture {
            "capture"
        } else {
            "release"
        };
        let key = capture.idempotency_key.clone();
        let more = self
            .record(&capture, op, Some(&key), &call, started, transition)
            .await?;
        Ok(more)
    }

    /// Claims the order's next capture, batched with concurrent claims.
    async fn claim(&self, order_id: &str) -> Result<Option<ClaimedCapture>, StorageError> {
        let inner = &self.inner;
        let (reply, answer) = oneshot::channel();
        let request = ClaimRequest {
            order_id: order_id.to_owned(),
            reply,
        };
        if inner.claims.send(request).is_ok()
            && let Ok(result) = answer.await
        {
            return result;
        }
        // The batching task is gone: claim on our own.
        captures::claim_next(
            inner.store.pool(),
            order_id,
            &inner.worker_id,
            inner.lease_seconds,
        )
        .await
    }

    /// Records a success, batched with concurrent ones. Returns whether the lease was held and
    /// whether the order has more to send.
    async fn record_success(
        &self,
        c: &ClaimedCapture,
        attempt: &AttemptRecord<'_>,
        reference: Option<String>,
    ) -> Result<captures::Recorded, StorageError> {
        let inner = &self.inner;
        let (reply, answer) = oneshot::channel();
        let request = SuccessRequest {
            capture: c.clone(),
            attempt: OwnedAttempt::from(attempt),
            reference: reference.clone(),
            reply,
        };
        if inner.successes.send(request).is_ok()
            && let Ok(result) = answer.await
        {
            return result;
        }
        let held = captures::record(
            inner.store.pool(),
            c,
            &inner.worker_id,
            attempt,
            &Transition::Succeeded { reference },
        )
        .await?;
        Ok(captures::Recorded { held, more: true })
    }

    fn transition_for(&self, c: &ClaimedCapture, outcome: &Outcome) -> Transition {
        let now = Utc::now();
        let policy = &self.inner.policy;
        let exhausted = policy.exhausted(c.attempts, c.first_attempt_at, now);
        let next = |after: Option<Duration>| {
            now + chrono::Duration::from_std(after.unwrap_or_else(|| policy.delay(c.attempts)))
                .unwrap_or_else(|_| chrono::Duration::seconds(60))
        };
        match outcome {
            Outcome::Succeeded { reference } => Transition::Succeeded {
                reference: reference.clone(),
            },
            Outcome::Pending { reference } => Transition::Pending {
                reference: reference.clone(),
                next_at: next(Some(policy.pending_poll)),
            },
            Outcome::Declined { code, message } => Transition::Declined {
                code: code.clone(),
                message: message.clone(),
            },
            Outcome::Retryable { after, reason } => {
                if exhausted {
                    Transition::Attention {
                        error: format!("gave up after {} attempts: {reason}", c.attempts),
                    }
                } else {
                    Transition::Retry {
                        next_at: next(*after),
                        error: reason.clone(),
                        needs_lookup: false,
                    }
                }
            }
            Outcome::Failed { reason } => Transition::Attention {
                error: reason.clone(),
            },
            // An unknown outcome never ends in attention by itself: it is resolved by reading
            // the authorization back, which moves it to succeeded, a new key, or attention.
            Outcome::Unknown { reason, key_spent } => Transition::Retry {
                next_at: next(None),
                error: reason.clone(),
                needs_lookup: *key_spent || exhausted,
            },
        }
    }

    async fn record(
        &self,
        c: &ClaimedCapture,
        operation: &'static str,
        key: Option<&str>,
        call: &CallResult,
        started: chrono::DateTime<Utc>,
        transition: Transition,
    ) -> Result<bool, StorageError> {
        let (error, code) = match &call.outcome {
            Outcome::Succeeded { .. } | Outcome::Pending { .. } => (None, None),
            Outcome::Declined { code, message } => (Some(message.clone()), Some(code.clone())),
            Outcome::Retryable { reason, .. }
            | Outcome::Failed { reason }
            | Outcome::Unknown { reason, .. } => (Some(reason.clone()), None),
        };
        let provider_code = call.provider_code.clone().or(code);
        let attempt = AttemptRecord {
            operation,
            idempotency_key: key,
            outcome: call.outcome.label(),
            http_status: call.http_status,
            provider_code: provider_code.as_deref(),
            provider_request_id: call.provider_request_id.as_deref(),
            error: error.as_deref(),
            latency_ms: call.latency.as_millis() as u64,
            trace_id: None,
            worker_id: &self.inner.worker_id,
            started_at: started,
        };
        self.log_outcome(c, &call.outcome, &transition);
        let recorded = match &transition {
            Transition::Succeeded { reference } => {
                self.record_success(c, &attempt, reference.clone()).await?
            }
            _ => captures::Recorded {
                held: captures::record(
                    self.inner.store.pool(),
                    c,
                    &self.inner.worker_id,
                    &attempt,
                    &transition,
                )
                .await?,
                more: true,
            },
        };
        if !recorded.held {
            tracing::warn!(event = "lease_lost", capture_id = c.capture_id, order_id = %c.order_id, "the capture's lease was taken over while the call was in progress; its new holder records the outcome");
        }
        Ok(recorded.more)
    }

    async fn finish(
        &self,
        c: &ClaimedCapture,
        operation: &'static str,
        key: Option<&str>,
        call: &CallResult,
        transition: Transition,
    ) -> Result<(), StorageError> {
        self.record(c, operation, key, call, Utc::now(), transition)
            .await
            .map(drop)
    }

    fn log_outcome(&self, c: &ClaimedCapture, outcome: &Outcome, transition: &Transition) {
        match outcome {
            Outcome::Declined { code, .. } => tracing::error!(
                event = "capture_declined",
                order_id = %c.order_id,
                capture_id = c.capture_id,
                authorization_id = %c.authorization_id,
                provider = %c.provider,
                decline_code = %code,
                amount = c.amount,
                currency = %c.currency,
                "capture declined: the order is latched and no further capture will be sent until an operator resumes it"
            ),
            _ if matches!(transition, Transition::Attention { .. }) => tracing::error!(
                event = "capture_needs_attention",
                order_id = %c.order_id,
                capture_id = c.capture_id,
                provider = %c.provider,
                outcome = outcome.label(),
                "capture needs attention: run `capture-worker capture retry {}` after fixing the cause",
                c.capture_id
            ),
            _ => tracing::info!(
                event = "capture_attempt",
                order_id = %c.order_id,
                capture_id = c.capture_id,
                sequence = c.sequence,
                kind = c.kind.as_str(),
                provider = %c.provider,
                amount = c.amount,
                currency = %c.currency,
                is_final = c.is_final,
                attempt = c.attempts,
                outcome = outcome.label(),
            ),
        }
    }

    /// Reads the authorization back to learn whether an earlier call under the current key
    /// captured. Only sound because captures of an authorization go one at a time (P8): the
    /// provider's captured total is either what we recorded as succeeded, or that plus this
    /// capture.
    async fn resolve_by_lookup(
        &self,
        provider: &Arc<dyn PaymentProvider>,
        c: &mut ClaimedCapture,
    ) -> Result<Resolution, StorageError> {
        let started = Utc::now();
        let t0 = Instant::now();
        let auth = match AuthorizationId::parse(c.authorization_id.clone()) {
            Ok(a) => a,
            Err(e) => {
                self.finish(
                    c,
                    "lookup",
                    None,
                    &error_call(&e.to_string()),
                    Transition::Attention {
                        error: e.to_string(),
                    },
                )
                .await?;
                return Ok(Resolution::Settled);
            }
        };
        let snapshot = provider.lookup(&auth).await;
        let latency = t0.elapsed();
        let lookup_call = |outcome: Outcome| CallResult {
            outcome,
            http_status: None,
            provider_code: None,
            provider_request_id: None,
            latency,
        };
        let snapshot = match snapshot {
            Ok(s) => s,
            Err(crate::provider::LookupError::Retryable { reason, .. }) => {
                let next_at = Utc::now()
                    + chrono::Duration::from_std(self.inner.policy.delay(c.attempts))
                        .unwrap_or_else(|_| chrono::Duration::seconds(60));
                self.record(
                    c,
                    "lookup",
                    None,
                    &lookup_call(Outcome::Retryable {
                        after: None,
                        reason: reason.clone(),
                    }),
                    started,
                    Transition::Retry {
                        next_at,
                        error: reason,
                        needs_lookup: true,
                    },
                )
                .await?;
                return Ok(Resolution::Settled);
            }
            Err(crate::provider::LookupError::Permanent { reason, .. }) => {
                self.record(
                    c,
                    "lookup",
                    None,
                    &lookup_call(Outcome::Failed {
                        reason: reason.clone(),
                    }),
                    started,
                    Transition::Attention {
                        error: format!("cannot read the authorization back: {reason}"),
                    },
                )
                .await?;
                return Ok(Resolution::Settled);
            }
        };
        let attempt_ok = |outcome: &'static str| AttemptRecord {
            operation: "lookup",
            idempotency_key: None,
            outcome,
            http_status: None,
            provider_code: Some(&snapshot.status),
            provider_request_id: None,
            error: None,
            latency_ms: latency.as_millis() as u64,
            trace_id: None,
            worker_id: &self.inner.worker_id,
            started_at: started,
        };
        match c.kind {
            CaptureKind::Release | CaptureKind::Void => {
                if snapshot.status == "canceled" || snapshot.capturable.amount().is_zero() {
                    self.record(
                        c,
                        "lookup",
                        None,
                        &lookup_call(Outcome::Succeeded { reference: None }),
                        started,
                        Transition::Succeeded { reference: None },
                    )
                    .await?;
                    return Ok(Resolution::Settled);
                }
                captures::record_lookup(self.inner.store.pool(), c, &attempt_ok("not_released"))
                    .await?;
                Ok(Resolution::Send)
            }
            CaptureKind::Capture => {
                let ours = captures::succeeded_total(
                    self.inner.store.pool(),
                    &c.provider,
                    &c.authorization_id,
                    c.capture_id,
                )
                .await?;
                let theirs = snapshot.captured.amount().get();
                if theirs == ours + c.amount && c.amount > 0 {
                    tracing::info!(event = "capture_resolved_by_lookup", capture_id = c.capture_id, order_id = %c.order_id, "the provider shows this capture happened");
                    self.record(
                        c,
                        "lookup",
                        None,
                        &lookup_call(Outcome::Succeeded { reference: None }),
                        started,
                        Transition::Succeeded { reference: None },
                    )
                    .await?;
                    Ok(Resolution::Settled)
                } else if theirs == ours {
                    // Nothing was captured under the old key: safe to send under a new one.
                    captures::record_lookup(
                        self.inner.store.pool(),
                        c,
                        &attempt_ok("not_captured"),
                    )
                    .await?;
                    captures::new_key_generation(self.inner.store.pool(), c, &self.inner.worker_id)
                        .await?;
                    tracing::info!(event = "capture_rekeyed", capture_id = c.capture_id, order_id = %c.order_id, generation = c.key_generation, "the provider shows nothing captured under the old key; sending under a new key");
                    Ok(Resolution::Send)
                } else {
                    let error = format!(
                        "the provider reports {theirs} captured on {}, but the ledger expects {ours} (or {} if this capture happened); reconcile by hand",
                        c.authorization_id,
                        ours + c.amount
                    );
                    self.record(
                        c,
                        "lookup",
                        None,
                        &lookup_call(Outcome::Failed {
                            reason: error.clone(),
                        }),
                        started,
                        Transition::Attention { error },
                    )
                    .await?;
                    Ok(Resolution::Settled)
                }
            }
        }
    }
}

/// A drive task waiting for its order's next capture.
struct ClaimRequest {
    order_id: String,
    reply: oneshot::Sender<Result<Option<ClaimedCapture>, StorageError>>,
}

/// A drive task waiting for its success to be recorded.
struct SuccessRequest {
    capture: ClaimedCapture,
    attempt: OwnedAttempt,
    reference: Option<String>,
    reply: oneshot::Sender<Result<captures::Recorded, StorageError>>,
}

/// An [`AttemptRecord`] that can wait in a batch.
struct OwnedAttempt {
    operation: &'static str,
    idempotency_key: Option<String>,
    outcome: String,
    http_status: Option<u16>,
    provider_code: Option<String>,
    provider_request_id: Option<String>,
    error: Option<String>,
    latency_ms: u64,
    trace_id: Option<String>,
    worker_id: String,
    started_at: chrono::DateTime<Utc>,
}

impl From<&AttemptRecord<'_>> for OwnedAttempt {
    fn from(a: &AttemptRecord<'_>) -> Self {
        OwnedAttempt {
            operation: a.operation,
            idempotency_key: a.idempotency_key.map(str::to_owned),
            outcome: a.outcome.to_owned(),
            http_status: a.http_status,
            provider_code: a.provider_code.map(str::to_owned),
            provider_request_id: a.provider_request_id.map(str::to_owned),
            error: a.error.map(str::to_owned),
            latency_ms: a.latency_ms,
            trace_id: a.trace_id.map(str::to_owned),
            worker_id: a.worker_id.to_owned(),
            started_at: a.started_at,
        }
    }
}

impl OwnedAttempt {
    fn record(&self) -> AttemptRecord<'_> {
        AttemptRecord {
            operation: self.operation,
            idempotency_key: self.idempotency_key.as_deref(),
            outcome: &self.outcome,
            http_status: self.http_status,
            provider_code: self.provider_code.as_deref(),
            provider_request_id: self.provider_request_id.as_deref(),
            error: self.error.as_deref(),
            latency_ms: self.latency_ms,
            trace_id: self.trace_id.as_deref(),
            worker_id: &self.worker_id,
            started_at: self.started_at,
        }
    }
}

/// Runs `run` on batches of what is sent to the returned channel: a batch starts when one of
/// [`BATCH_WRITERS`] is free and takes everything waiting then, up to [`MAX_BATCH`]. The task
/// ends when the channel's senders are dropped.
fn spawn_batcher<R, F, Fut>(run: F) -> mpsc::UnboundedSender<R>
where
    R: Send + 'static,
    F: Fn(Vec<R>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<R>();
    let writers = Arc::new(Semaphore::new(BATCH_WRITERS));
    let run = Arc::new(run);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let Ok(permit) = writers.clone().acquire_owned().await else {
                break;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let work = run(batch);
            tokio::spawn(async move {
                work.await;
                drop(permit);
            });
        }
    });
    tx
}

/// Claims the head captures of a batch of orders in one statement; one at a time if that fails.
async fn claim_batch(store: Store, worker: String, lease_seconds: f64, batch: Vec<ClaimRequest>) {
    let mut order_ids: Vec<&str> = batch.iter().map(|r| r.order_id.as_str()).collect();
    order_ids.sort_unstable();
    order_ids.dedup();
    match captures::claim_many(store.pool(), &order_ids, &worker, lease_seconds).await {
        Ok(claimed) => {
            let mut by_order: HashMap<String, ClaimedCapture> = claimed
                .into_iter()
                .map(|c| (c.order_id.clone(), c))
                .collect();
            for r in batch {
                let claimed = by_order.remove(&r.order_id);
                let _ = r.reply.send(Ok(claimed));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, size = batch.len(), "batched claim failed; claiming one order at a time");
            for r in batch {
                let result =
                    captures::claim_next(store.pool(), &r.order_id, &worker, lease_seconds).await;
                let _ = r.reply.send(result);
            }
        }
    }
}

/// Records a batch of successes in one statement; one at a time if that fails.
async fn success_batch(store: Store, worker: String, mut batch: Vec<SuccessRequest>) {
    // Present rows in order id order, as claims lock them, so that batches of two workers do
    // not wait on each other in a cycle (PostgreSQL would end one; it is retried one by one).
    batch.sort_by(|a, b| a.capture.order_id.cmp(&b.capture.order_id));
    let successes: Vec<Success<'_>> = batch
        .iter()
        .map(|r| Success {
            capture: &r.capture,
            attempt: r.attempt.record(),
            reference: r.reference.as_deref(),
        })
        .collect();
    let result = captures::record_succeeded_many(store.pool(), &worker, &successes).await;
    drop(successes);
    match result {
        Ok(recorded) => {
            for (r, recorded) in batch.into_iter().zip(recorded) {
                let _ = r.reply.send(Ok(recorded));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, size = batch.len(), "batched success record failed; recording one at a time");
            for r in batch {
                let transition = Transition::Succeeded {
                    reference: r.reference.clone(),
                };
                let result = captures::record(
                    store.pool(),
                    &r.capture,
                    &worker,
                    &r.attempt.record(),
                    &transition,
                )
                .await
                .map(|held| captures::Recorded { held, more: true });
                let _ = r.reply.send(result);
            }
        }
    }
}

enum Resolution {
    /// The lookup settled the capture.
    Settled,
    /// Send the request (under the current, possibly new, key).
    Send,
}

fn error_call(reason: &str) -> CallResult {
    CallResult {
        outcome: Outcome::Failed {
            reason: reason.to_owned(),
        },
        http_status: None,
        provider_code: None,
        provider_request_id: None,
        latency: Duration::ZERO,
    }
}

fn capture_request(c: &ClaimedCapture) -> Result<CaptureRequest, String> {
    let currency = Currency::parse(&c.currency).map_err(|e| e.to_string())?;
    let amount = MinorUnits::new(c.amount).map_err(|e| e.to_string())?;
    Ok(CaptureRequest {
        authorization_id: AuthorizationId::parse(c.authorization_id.clone())
            .map_err(|e| e.to_string())?,
        order_id: OrderId::parse(c.order_id.clone()).map_err(|e| e.to_string())?,
        cause: c.cause_id.clone(),
        sequence: u32::try_from(c.sequence).unwrap_or(0),
        amount: Money::new(amount, currency),
        is_final: c.is_final,
        idempotency_key: IdempotencyKey::from_stored(&c.idempotency_key)
            .map_err(|e| e.to_string())?,
        lines: c
            .lines
            .iter()
            .filter_map(|l| {
                Some(CaptureLine {
                    line_id: LineId::parse(l.line_id.clone()).ok()?,
                    sku: l.sku.clone(),
                    name: l.name.clone(),
                    quantity: l.units,
                    amount: MinorUnits::new(l.amount).ok()?,
                })
            })
            .collect(),
    })
}

fn release_request(c: &ClaimedCapture) -> Result<ReleaseRequest, String> {
    Ok(ReleaseRequest {
        authorization_id: AuthorizationId::parse(c.authorization_id.clone())
            .map_err(|e| e.to_string())?,
        order_id: OrderId::parse(c.order_id.clone()).map_err(|e| e.to_string())?,
        idempotency_key: IdempotencyKey::from_stored(&c.idempotency_key)
            .map_err(|e| e.to_string())?,
    })
}

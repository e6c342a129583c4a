//! Execution: send each capture to its provider, one at a time per order, and record what
//! happened (DESIGN §4, flow step 2).
//!
//! A capture is sent right after intake commits (no polling delay on the happy path): batched
//! intake claims the capture it creates in its own transaction and hands it over; otherwise
//! the order is dispatched and its head capture claimed here. Either way the worker holds the
//! order's head capture under a lease, calls the provider outside any transaction, and records
//! the attempt and the outcome in one transaction. Claims and successes of concurrent orders
//! share statements. Retries keep the
//! key; a new key is taken only after a lookup showed the provider captured nothing under the
//! old one (P3). A decline latches the order (P4). After a success the next capture of the
//! same order goes at once.
//!
//! Each step runs in a `capture` span. The first attempt continues the trace that created the
//! capture (the `traceparent` stored on its row, written by intake); a later one — after a
//! backoff, a crash or to poll a pending answer — starts a trace of its own linked to that
//! one. Each provider call is a child span of kind client, and the attempt row records the
//! trace id.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument;
use tracing::field::Empty;

use crate::domain::readback;
use crate::domain::{
    AuthorizationId, Currency, IdempotencyKey, LineId, MinorUnits, Money, OrderId,
};
use crate::provider::{
    CallResult, CaptureLine, CaptureRequest, Outcome, PaymentProvider, ReleaseRequest,
};
use crate::storage::captures::{self, AttemptRecord, ClaimedCapture, Success, Transition};
use crate::storage::ledger::CaptureKind;
use crate::storage::{StorageError, Store};
use crate::telemetry::events::{self, Emit};
use crate::telemetry::{metrics, trace};

use super::providers::Providers;
use super::retry::RetryPolicy;

/// What one [`Executor::step`] did for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing was claimed: no capture of the order is due now (or another worker holds it).
    Idle,
    /// One capture was handled (sent, settled by a read-back, or handed to an operator) and
    /// the order may have its next capture due now.
    Handled,
    /// One capture was handled and the order has nothing left to send (a capture queued
    /// meanwhile comes with its own dispatch).
    Drained,
}

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
    tx: mpsc::UnboundedSender<Work>,
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
    ) -> (Executor, WorkReceiver) {
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
            WorkReceiver(rx),
        )
    }

    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// How long a claim holds a capture, in seconds.
    pub fn lease_seconds(&self) -> f64 {
        self.inner.lease_seconds
    }

    /// Asks for the order's captures to be sent now.
    pub fn dispatch(&self, order_id: impl Into<String>) {
        // The receiver lives as long as the run loop; after shutdown the sweeper of the next
        // start picks the capture up.
        let _ = self.inner.tx.send(Work::Order(order_id.into()));
    }

    /// Sends a capture this worker has already claimed (intake claims the captures it creates
    /// in the same transaction), then goes on with the order if it has more to send.
    pub fn send_claimed(&self, capture: ClaimedCapture) {
        // Undelivered only after the run loop ended: the lease expires and the sweeper of the
        // next start takes the capture over.
        let _ = self.inner.tx.send(Work::Claimed(Box::new(capture)));
    }

    /// Drives dispatched orders until `shutdown`; then waits for captures in flight to be
    /// recorded.
    pub async fn run(
        &self,
        WorkReceiver(mut rx): WorkReceiver,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                next = rx.recv() => {
                    let order_id = match next {
                        None => break,
                        Some(Work::Order(order_id)) => order_id,
                        Some(Work::Claimed(capture)) => {
                            let Ok(permit) = self.inner.permits.clone().acquire_owned().await else { break };
                            let this = self.clone();
                            tasks.spawn(async move {
                                this.send_claimed_now(*capture).await;
                                drop(permit);
                            });
                            continue;
                        }
                    };
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
        // Send what is already claimed (its lease would otherwise have to expire first), and
        // finish the calls in progress so their outcomes are recorded, not left to a lease
        // takeover.
        rx.close();
        while let Some(work) = rx.recv().await {
            if let Work::Claimed(capture) = work {
                let this = self.clone();
                tasks.spawn(async move { this.send_claimed_now(*capture).await });
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Sends a capture claimed elsewhere; when the order has more to send, dispatches it (the
    /// run loop then drives it, once, whoever else is driving it now).
    async fn send_claimed_now(&self, capture: ClaimedCapture) {
        let order_id = capture.order_id.clone();
        let span = capture_span(&capture);
        match self.execute(capture).instrument(span).await {
            Ok(Step::Handled) => self.dispatch(order_id),
            Ok(Step::Idle | Step::Drained) => {}
            Err(e) => events::CaptureStepFailed {
                order_id: &order_id,
                error: &e,
            }
            .emit(),
        }
    }

    /// Sends the order's due captures, in sequence, until none is due.
    pub async fn drive(&self, order_id: &str) {
        loop {
            match self.step(order_id).await {
                Ok(Step::Handled) => continue,
                Ok(Step::Idle | Step::Drained) => return,
                Err(e) => {
                    events::CaptureStepFailed {
                        order_id,
                        error: &e,
                    }
                    .emit();
                    return;
                }
            }
        }
    }

    /// Claims and sends one capture of the order, and says what it did.
    pub async fn step(&self, order_id: &str) -> Result<Step, StorageError> {
        let Some(capture) = self.claim(order_id).await? else {
            return Ok(Step::Idle);
        };
        let span = capture_span(&capture);
        self.execute(capture).instrument(span).await
    }

    /// Sends one claimed capture and records the outcome, inside its `capture` span.
    async fn execute(&self, mut capture: ClaimedCapture) -> Result<Step, StorageError> {
        let inner = &self.inner;
        if capture.taken_over {
            events::LeaseTakenOver {
                provider: &capture.provider,
                order_id: &capture.order_id,
                capture_id: capture.capture_id,
            }
            .emit();
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
            return Ok(Step::Handled);
        };
        // A capture the provider accepted is only ever read back, never sent again — also
        // after an operator put it back in the queue.
        if capture.needs_lookup || capture.accepted_at.is_some() {
            match self.resolve_by_lookup(&provider, &mut capture).await? {
                Resolution::Settled => return Ok(Step::Handled),
                Resolution::Send => {}
            }
        }
        let started = Utc::now();
        let op = if capture.kind == CaptureKind::Capture {
            "capture"
        } else {
            "release"
        };
        let call_span = provider_span(&capture, op);
        let call = async {
            let _in_flight = metrics::InFlight::start();
            match capture.kind {
                CaptureKind::Capture => match capture_request(&capture) {
                    Ok(req) => provider.capture(&req).await,
                    Err(e) => error_call(&e),
                },
                CaptureKind::Release | CaptureKind::Void => match release_request(&capture) {
                    Ok(req) => provider.release(&req).await,
                    Err(e) => error_call(&e),
                },
            }
        }
        .instrument(call_span.clone())
        .await;
        record_call(&call_span, &call);
        metrics::provider_call(&capture.provider, op, call.outcome.label(), call.latency);
        let transition = self.transition_after(&capture, &provider, &call).await?;
        let key = capture.idempotency_key.clone();
        self.record(&capture, op, Some(&key), &call, started, transition)
            .await
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

    /// Calls the retry budget still allows after the capture's current one (0 once its
    /// attempts or its age are used up).
    fn attempts_left(&self, c: &ClaimedCapture) -> u32 {
        let policy = &self.inner.policy;
        if policy.exhausted(0, c.first_attempt_at, Utc::now()) {
            return 0;
        }
        policy
            .max_attempts
            .saturating_sub(u32::try_from(c.attempts).unwrap_or(0))
    }

    /// Whether the capture is younger than the retry budget's age limit.
    fn within_age(&self, c: &ClaimedCapture) -> bool {
        !self
            .inner
            .policy
            .exhausted(0, c.first_attempt_at, Utc::now())
    }

    /// What follows a call: for a failure without a definite answer, the read-back rule
    /// ([`readback::after_failure`]) over the key's history; otherwise by the outcome alone.
    async fn transition_after(
        &self,
        c: &ClaimedCapture,
        provider: &Arc<dyn PaymentProvider>,
        call: &CallResult,
    ) -> Result<Transition, StorageError> {
        let failure = match &call.outcome {
            Outcome::Retryable { .. } => readback::Failure::Retryable,
            Outcome::Unknown { key_spent, .. } => readback::Failure::Ambiguous {
                key_spent: *key_spent,
            },
            outcome => return Ok(self.transition_for(c, outcome, None)),
        };
        let mut answers = vec![readback::Answer {
            http_status: call.http_status,
            provider_code: call.provider_code.clone(),
        }];
        answers.extend(
            captures::key_history(self.inner.store.pool(), c.capture_id, &c.idempotency_key)
                .await?
                .answers,
        );
        let next = readback::after_failure(&readback::KeyHistory {
            failure,
            answers: &answers,
            attempts_left: self.attempts_left(c),
            read_back: if provider.offers_read_back() {
                readback::ReadBack::Offered
            } else {
                readback::ReadBack::NotOffered
            },
        });
        Ok(self.transition_for(c, &call.outcome, Some(next)))
    }

    /// The transition for an outcome; `next` is the read-back rule's step for a failure
    /// without a definite answer.
    fn transition_for(
        &self,
        c: &ClaimedCapture,
        outcome: &Outcome,
        next_step: Option<readback::NextStep>,
    ) -> Transition {
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
            Outcome::Retryable { reason, .. } | Outcome::Unknown { reason, .. } => {
                let after = match outcome {
                    Outcome::Retryable { after, .. } => *after,
                    _ => None,
                };
                let step = next_step.unwrap_or(if exhausted {
                    readback::NextStep::Attention
                } else {
                    readback::NextStep::RetrySameKey
                });
                match step {
                    readback::NextStep::RetrySameKey => Transition::Retry {
                        next_at: next(after),
                        error: reason.clone(),
                        needs_lookup: false,
                        key_spent: false,
                    },
                    // Read the payment back before anything is sent again: it moves the
                    // capture to succeeded, the same key, a new key, or attention.
                    readback::NextStep::ReadBackFirst { key_stuck } => Transition::Retry {
                        next_at: next(after),
                        error: reason.clone(),
                        needs_lookup: true,
                        key_spent: key_stuck,
                    },
                    readback::NextStep::Attention if exhausted => Transition::Attention {
                        error: format!("gave up after {} attempts: {reason}", c.attempts),
                    },
                    readback::NextStep::Attention => Transition::Attention {
                        error: format!(
                            "the outcome of this {} is unknown (the provider may have stored this answer under the key) and the provider offers no read-back to show whether it happened; check it in the provider's dashboard before any resend: {reason}",
                            c.kind.as_str()
                        ),
                    },
                }
            }
            Outcome::Failed { reason } => Transition::Attention {
                error: reason.clone(),
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
    ) -> Result<Step, StorageError> {
        let (error, code) = match &call.outcome {
            Outcome::Succeeded { .. } | Outcome::Pending { .. } => (None, None),
            Outcome::Declined { code, message } => (Some(message.clone()), Some(code.clone())),
            Outcome::Retryable { reason, .. }
            | Outcome::Failed { reason }
            | Outcome::Unknown { reason, .. } => (Some(reason.clone()), None),
        };
        let provider_code = call.provider_code.clone().or(code);
        let trace_id = trace::current_trace_id();
        let attempt = AttemptRecord {
            operation,
            idempotency_key: key,
            outcome: call.outcome.label(),
            http_status: call.http_status,
            provider_code: provider_code.as_deref(),
            provider_request_id: call.provider_request_id.as_deref(),
            error: error.as_deref(),
            latency_ms: call.latency.as_millis() as u64,
            trace_id: trace_id.as_deref(),
            worker_id: &self.inner.worker_id,
            started_at: started,
        };
        self.log_outcome(c, &call.outcome, &transition);
        tracing::Span::current().record("status", transition_status(&transition));
        let recorded = match &transition {
            // Successes of concurrent orders share one statement.
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
        if recorded.held {
            count_transition(c, operation, &call.outcome, &transition);
        } else {
            tracing::warn!(event = "lease_lost", capture_id = c.capture_id, order_id = %c.order_id, "the capture was settled or taken over while the call was in progress (a provider notification, or a worker that took the lease over); the ledger keeps that outcome");
        }
        Ok(if recorded.more {
            Step::Handled
        } else {
            Step::Drained
        })
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
            Outcome::Declined { code, .. } => events::CaptureDeclined {
                provider: &c.provider,
                decline_code: code,
                order_id: &c.order_id,
                capture_id: c.capture_id,
                authorization_id: &c.authorization_id,
                amount: c.amount,
                currency: &c.currency,
            }
            .emit(),
            _ if let Transition::Attention { error } = transition => {
                events::CaptureNeedsAttention {
                    provider: &c.provider,
                    outcome: outcome.label(),
                    order_id: &c.order_id,
                    capture_id: c.capture_id,
                    error,
                }
                .emit()
            }
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
        let call_span = provider_span(c, "lookup");
        let snapshot = async {
            let _in_flight = metrics::InFlight::start();
            provider.lookup(&auth).await
        }
        .instrument(call_span.clone())
        .await;
        let latency = t0.elapsed();
        let lookup_outcome = match &snapshot {
            Ok(_) => "succeeded",
            Err(crate::provider::LookupError::Retryable { .. }) => "retryable",
            Err(crate::provider::LookupError::Permanent { .. }) => "failed",
        };
        call_span.record("payment.outcome", lookup_outcome);
        if let Ok(s) = &snapshot {
            call_span.record("payment.provider_status", s.status.as_str());
        } else {
            call_span.record("otel.status_code", "ERROR");
        }
        metrics::provider_call(&c.provider, "lookup", lookup_outcome, latency);
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
                let failed_before = if c.accepted_at.is_none() {
                    captures::key_history(self.inner.store.pool(), c.capture_id, &c.idempotency_key)
                        .await?
                        .failed_read_backs
                } else {
                    0
                };
                let gave_up = readback::after_read_back(
                    readback::Finding::Unclear,
                    c.key_spent,
                    self.within_age(c),
                    failed_before,
                ) == readback::AfterReadBack::Attention;
                let gave_up = gave_up.then(|| {
                    format!(
                        "the read-back of {} failed {} times in a row, so whether this {} happened is unknown; check it in the provider's dashboard: {reason}",
                        c.authorization_id,
                        failed_before + 1,
                        c.kind.as_str()
                    )
                });
                if let Some(error) = self.waited_too_long(c, &reason).or(gave_up) {
                    self.record(
                        c,
                        "lookup",
                        None,
                        &lookup_call(Outcome::Retryable {
                            after: None,
                            reason: reason.clone(),
                        }),
                        started,
                        Transition::Attention { error },
                    )
                    .await?;
                    return Ok(Resolution::Settled);
                }
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
                    if c.accepted_at.is_some() {
                        // Still in progress at the provider: it stays pending.
                        Transition::Pending {
                            reference: None,
                            next_at,
                        }
                    } else {
                        Transition::Retry {
                            next_at,
                            error: reason,
                            needs_lookup: true,
                            key_spent: false,
                        }
                    },
                )
                .await?;
                return Ok(Resolution::Settled);
            }
            Err(crate::provider::LookupError::Permanent { reason, .. })
                if c.accepted_at.is_some() =>
            {
                // The provider has the request and cannot be read back (Adyen): only its
                // notification settles it. Wait for it, within the retry age.
                let transition = match self.waited_too_long(c, &reason) {
                    Some(error) => Transition::Attention { error },
                    None => Transition::Pending {
                        reference: None,
                        next_at: self.next_poll(c),
                    },
                };
                self.record(
                    c,
                    "lookup",
                    None,
                    &lookup_call(Outcome::Failed {
                        reason: reason.clone(),
                    }),
                    started,
                    transition,
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
        let trace_id = trace::current_trace_id();
        let attempt_ok = |outcome: &'static str| AttemptRecord {
            operation: "lookup",
            idempotency_key: None,
            outcome,
            http_status: None,
            provider_code: Some(&snapshot.status),
            provider_request_id: None,
            error: None,
            latency_ms: latency.as_millis() as u64,
            trace_id: trace_id.as_deref(),
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
                if c.accepted_at.is_some() {
                    // The provider accepted the release; it is never sent again.
                    self.still_pending(provider, c, &snapshot, started, latency)
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
                } else if theirs == ours && c.accepted_at.is_some() {
                    // Accepted but not shown as captured: still processing, or refused after
                    // the fact. Never "nothing captured": it is not sent again.
                    self.still_pending(provider, c, &snapshot, started, latency)
                        .await?;
                    Ok(Resolution::Settled)
                } else if theirs == ours {
                    let next = readback::after_read_back(
                        readback::Finding::NothingCaptured,
                        c.key_spent,
                        self.within_age(c),
                        0,
                    );
                    match next {
                        readback::AfterReadBack::SendNewKey => {
                            // The provider stored an answer under the old key and will only
                            // replay it, and it shows nothing captured: safe to send under a
                            // new key.
                            captures::record_lookup(
                                self.inner.store.pool(),
                                c,
                                &attempt_ok("not_captured"),
                            )
                            .await?;
                            captures::new_key_generation(
                                self.inner.store.pool(),
                                c,
                                &self.inner.worker_id,
                            )
                            .await?;
                            tracing::info!(event = "capture_rekeyed", capture_id = c.capture_id, order_id = %c.order_id, generation = c.key_generation, "the provider shows nothing captured under the old key; sending under a new key");
                            Ok(Resolution::Send)
                        }
                        readback::AfterReadBack::Attention => {
                            let error = format!(
                                "gave up after {} attempts and the retry age: the read-back of {} shows nothing captured under key {}, and the last answers were not a stored error (so no new key is taken); send it again or release it",
                                c.attempts, c.authorization_id, c.idempotency_key
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
                        readback::AfterReadBack::SendSameKey
                        | readback::AfterReadBack::RecordSucceeded
                        | readback::AfterReadBack::ReadAgain => {
                            // Nothing captured yet, but the key's request may still be running
                            // at the provider (its answer was lost, not refused): resend under
                            // the same key, which the provider either executes once or
                            // answers from its store.
                            captures::record_lookup(
                                self.inner.store.pool(),
                                c,
                                &attempt_ok("not_captured_yet"),
                            )
                            .await?;
                            Ok(Resolution::Send)
                        }
                    }
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

impl Executor {
    /// When the next read-back of a pending capture is due: backing off like retries.
    fn next_poll(&self, c: &ClaimedCapture) -> chrono::DateTime<Utc> {
        Utc::now()
            + chrono::Duration::from_std(self.inner.policy.delay(c.attempts))
                .unwrap_or_else(|_| chrono::Duration::seconds(60))
    }

    /// For a capture the provider accepted: the attention reason once it has waited
    /// `capture.max_retry_age_seconds` for its outcome, else `None`.
    fn waited_too_long(&self, c: &ClaimedCapture, why: &str) -> Option<String> {
        let accepted = c.accepted_at?;
        let waited = (Utc::now() - accepted).to_std().unwrap_or(Duration::ZERO);
        (waited >= self.inner.policy.max_age).then(|| {
            format!(
                "the provider accepted this {} at {accepted} but has not settled it after {}s (no notification, and the read-back shows nothing final: {why}); check it in the provider's dashboard",
                c.kind.as_str(),
                waited.as_secs()
            )
        })
    }

    /// A capture the provider accepted whose read-back does not show it yet: declined when
    /// the provider says it refused it, attention once it waited too long, else still
    /// pending (read back again later).
    async fn still_pending(
        &self,
        provider: &Arc<dyn PaymentProvider>,
        c: &ClaimedCapture,
        snapshot: &crate::provider::AuthorizationSnapshot,
        started: chrono::DateTime<Utc>,
        latency: Duration,
    ) -> Result<(), StorageError> {
        let call = |outcome: Outcome| CallResult {
            outcome,
            http_status: None,
            provider_code: Some(snapshot.status.clone()),
            provider_request_id: None,
            latency,
        };
        if c.kind == CaptureKind::Capture
            && let Some(code) = provider.refused_capture(snapshot)
        {
            let message = format!(
                "the provider refused the capture it had accepted (read back as {:?})",
                snapshot.status
            );
            let outcome = Outcome::Declined {
                code: code.clone(),
                message: message.clone(),
            };
            return self
                .record(
                    c,
                    "lookup",
                    None,
                    &call(outcome),
                    started,
                    Transition::Declined { code, message },
                )
                .await
                .map(drop);
        }
        let why = format!(
            "the read-back shows {} captured, status {:?}",
            snapshot.captured.amount(),
            snapshot.status
        );
        let transition = match self.waited_too_long(c, &why) {
            Some(error) => Transition::Attention { error },
            None => Transition::Pending {
                reference: None,
                next_at: self.next_poll(c),
            },
        };
        self.record(
            c,
            "lookup",
            None,
            &call(Outcome::Pending { reference: None }),
            started,
            transition,
        )
        .await
        .map(drop)
    }
}

/// What the run loop is asked to do.
enum Work {
    /// Drive the order: claim and send its due captures in sequence.
    Order(String),
    /// Send this capture, already claimed by this worker.
    Claimed(Box<ClaimedCapture>),
}

/// The receiving end of an executor's work queue, for [`Executor::run`].
pub struct WorkReceiver(mpsc::UnboundedReceiver<Work>);

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

/// The span of one step of a capture. The first attempt continues the trace that created the
/// capture; a later one is a new trace linked to it, so a retry hours later does not stretch
/// the original trace but can still be followed from it.
fn capture_span(c: &ClaimedCapture) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "capture",
        otel.name = %format!("execute {}", c.kind.as_str()),
        otel.status_code = Empty,
        capture_id = c.capture_id,
        order_id = %c.order_id,
        sequence = c.sequence,
        kind = c.kind.as_str(),
        payment.provider = %c.provider,
        payment.attempt = c.attempts,
        taken_over = c.taken_over,
        needs_lookup = c.needs_lookup,
        status = Empty,
    );
    if c.attempts <= 1 && !c.taken_over {
        trace::set_remote_parent(&span, trace::remote_context(c.traceparent.as_deref(), None));
    } else {
        trace::link_to(&span, c.traceparent.as_deref());
    }
    span
}

/// The span of one provider call (kind internal: each HTTP request inside it is a client span
/// of its own). Only what identifies the call and its terms: never the API key, never card
/// data.
fn provider_span(c: &ClaimedCapture, operation: &'static str) -> tracing::Span {
    tracing::info_span!(
        "provider call",
        otel.name = %format!("{} {operation}", c.provider),
        otel.kind = "internal",
        otel.status_code = Empty,
        payment.provider = %c.provider,
        payment.operation = operation,
        payment.capture_id = c.capture_id,
        payment.amount = c.amount,
        payment.currency = %c.currency,
        payment.final = c.is_final,
        payment.attempt = c.attempts,
        payment.key_generation = c.key_generation,
        payment.outcome = Empty,
        payment.decline_code = Empty,
        payment.provider_code = Empty,
        payment.provider_status = Empty,
        payment.provider_request_id = Empty,
    )
}

/// Writes what the provider answered onto the call's span.
fn record_call(span: &tracing::Span, call: &CallResult) {
    span.record("payment.outcome", call.outcome.label());
    if let Some(code) = &call.provider_code {
        span.record("payment.provider_code", code.as_str());
    }
    if let Some(id) = &call.provider_request_id {
        span.record("payment.provider_request_id", id.as_str());
    }
    match &call.outcome {
        Outcome::Declined { code, .. } => {
            span.record("payment.decline_code", code.as_str());
        }
        Outcome::Succeeded { .. } | Outcome::Pending { .. } => {}
        Outcome::Retryable { .. } | Outcome::Failed { .. } | Outcome::Unknown { .. } => {
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// The capture's status after a transition (for its span).
fn transition_status(t: &Transition) -> &'static str {
    match t {
        Transition::Succeeded { .. } => "succeeded",
        Transition::Pending { .. } => "pending",
        Transition::Declined { .. } => "declined",
        Transition::Retry { .. } => "retrying",
        Transition::Attention { .. } => "attention",
    }
}

/// Metrics for a recorded transition: outcomes, money captured, retries.
fn count_transition(
    c: &ClaimedCapture,
    operation: &'static str,
    outcome: &Outcome,
    transition: &Transition,
) {
    let kind = c.kind.as_str();
    match transition {
        Transition::Succeeded { .. } => {
            metrics::capture_outcome(&c.provider, kind, "succeeded");
            if c.kind == CaptureKind::Capture {
                metrics::captured(&c.provider, &c.currency, c.amount);
            }
        }
        Transition::Declined { .. } => metrics::capture_outcome(&c.provider, kind, "declined"),
        Transition::Attention { .. } => metrics::capture_outcome(&c.provider, kind, "attention"),
        Transition::Retry { .. } => {
            let reason = if operation == "lookup" {
                "lookup"
            } else {
                outcome.label()
            };
            metrics::retry_scheduled(&c.provider, reason);
        }
        Transition::Pending { .. } => {}
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

/// What intake and the expiry sweep need of execution: a way to hand work over. Obtained from
/// [`Executor::handoff`]; holds the executor's work queue and the terms of its claims, not the
/// executor, so those use cases do not depend on how captures are sent. Cheap to clone.
#[derive(Clone)]
pub struct Handoff {
    tx: mpsc::UnboundedSender<Work>,
    worker_id: Arc<str>,
    lease_seconds: f64,
}

impl Executor {
    /// A handle that hands work to this executor.
    pub fn handoff(&self) -> Handoff {
        Handoff {
            tx: self.inner.tx.clone(),
            worker_id: Arc::from(self.inner.worker_id.as_str()),
            lease_seconds: self.inner.lease_seconds,
        }
    }
}

impl Handoff {
    /// The worker that claims captures handed over through this handle.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// How long a claim holds a capture, in seconds.
    pub fn lease_seconds(&self) -> f64 {
        self.lease_seconds
    }

    /// Asks for the order's captures to be sent now (as [`Executor::dispatch`]).
    pub fn dispatch(&self, order_id: impl Into<String>) {
        // After shutdown the sweeper of the next start picks the capture up.
        let _ = self.tx.send(Work::Order(order_id.into()));
    }

    /// Sends a capture already claimed for this worker (as [`Executor::send_claimed`]).
    pub fn send_claimed(&self, capture: ClaimedCapture) {
        // Undelivered only after the run loop ended: the lease expires and the sweeper of the
        // next start takes the capture over.
        let _ = self.tx.send(Work::Claimed(Box::new(capture)));
    }
}

//! Batched claims and successes: concurrent orders share one statement.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::storage::captures::{self, AttemptRecord, ClaimedCapture, Success, Transition};
use crate::storage::{StorageError, Store};

use super::Executor;

/// Claim and success statements that may run at once (each batches many captures).
pub(super) const BATCH_WRITERS: usize = 2;
/// Captures per claim or success statement, at most.
pub(super) const MAX_BATCH: usize = 256;

impl Executor {
    /// Claims the order's next capture, batched with concurrent claims.
    pub(super) async fn claim(
        &self,
        order_id: &str,
    ) -> Result<Option<ClaimedCapture>, StorageError> {
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

    /// Records a success, batched with concurrent ones. Says whether the lease was still held
    /// and whether the order has more to send.
    pub(super) async fn record_success(
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
        let lease = captures::record(
            inner.store.pool(),
            c,
            &inner.worker_id,
            attempt,
            &Transition::Succeeded { reference },
        )
        .await?;
        Ok(captures::Recorded::alone(lease))
    }
}

/// A drive task waiting for its order's next capture.
pub(super) struct ClaimRequest {
    order_id: String,
    reply: oneshot::Sender<Result<Option<ClaimedCapture>, StorageError>>,
}

/// A drive task waiting for its success to be recorded.
pub(super) struct SuccessRequest {
    capture: ClaimedCapture,
    attempt: OwnedAttempt,
    reference: Option<String>,
    reply: oneshot::Sender<Result<captures::Recorded, StorageError>>,
}

/// An [`AttemptRecord`] that can wait in a batch.
pub(super) struct OwnedAttempt {
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
    pub(super) fn record(&self) -> AttemptRecord<'_> {
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
pub(super) fn spawn_batcher<R, F, Fut>(run: F) -> mpsc::UnboundedSender<R>
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
pub(super) async fn claim_batch(
    store: Store,
    worker: String,
    lease_seconds: f64,
    batch: Vec<ClaimRequest>,
) {
    let mut order_ids: Vec<&str> = batch.iter().map(|r| r.order_id.as_str()).collect();
    order_ids.sort_unstable();
    order_ids.dedup();
    match captures::claim_many(store.pool(), &order_ids, &worker, lease_seconds).await {
        Ok(claimed) => {
            let mut by_order: HashMap<String, ClaimedCapture> = claimed
                .into_iter()
                .map(|c| (c.order_id.as_str().to_owned(), c))
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
pub(super) async fn success_batch(store: Store, worker: String, mut batch: Vec<SuccessRequest>) {
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
                .map(captures::Recorded::alone);
                let _ = r.reply.send(result);
            }
        }
    }
}

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
//! one. Each provider call is a child span (each HTTP request in it a client span of its own),
//! and the attempt row records the trace id.
//!
//! # Layout
//!
//! - `mod.rs`   — [`Executor`]: the dispatch queue, the run loop, driving an order step by step.
//! - `attempt`  — one attempt: send the claimed capture, decide the transition from the
//!   provider's answer (with [`crate::domain::readback`] for a failure without a definite
//!   answer), record it, log it.
//! - `readback` — reading the authorization back, as named steps: after a release, after a
//!   capture (the provider's total against the ledger's), nothing captured, a read-back that
//!   failed or cannot be done, a capture still pending.
//! - `batch`    — claims and successes of concurrent orders sharing one statement.
//! - `request`  — the provider's capture and release requests, built from the claimed capture
//!   (typed when storage read it, so building cannot fail).
//! - `spans`    — the `capture` and `provider call` spans and the capture metrics.

mod attempt;
mod batch;
mod readback;
mod request;
mod spans;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

use crate::storage::captures::ClaimedCapture;
use crate::storage::{StorageError, Store};
use crate::telemetry::events::{self, Emit};

use super::providers::Providers;
use super::retry::RetryPolicy;

use batch::{ClaimRequest, SuccessRequest, claim_batch, spawn_batcher, success_batch};
use spans::capture_span;

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
    active: Mutex<HashMap<String, Dispatched>>,
    permits: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Work>,
    claims: mpsc::UnboundedSender<ClaimRequest>,
    successes: mpsc::UnboundedSender<SuccessRequest>,
}

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
                            Entry::Occupied(mut driven) => {
                                *driven.get_mut() = Dispatched::Again;
                                continue;
                            }
                            Entry::Vacant(slot) => {
                                slot.insert(Dispatched::Once);
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
                                Some(dispatched) if *dispatched == Dispatched::Again => {
                                    *dispatched = Dispatched::Once;
                                }
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
                order_id: order_id.as_str(),
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
}

/// Whether an order being driven was dispatched again since its drive began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dispatched {
    Once,
    /// Drive it once more when this drive ends.
    Again,
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

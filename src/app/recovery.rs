//! Recovery: the sweeper (DESIGN §4, flow step 3).
//!
//! On every tick it dispatches captures whose retry is due or whose lease expired (a crashed
//! worker's capture is taken over with the same key) — pending captures whose notification is
//! late among them, resolved by reading the provider back — processes parked messages whose
//! order has arrived, dead-letters parked messages that waited too long, and sends the
//! dead-letter copies of parked messages refused once their order arrived. Every
//! `capture.expiry_sweep_ms` it also runs the authorization-expiry sweep (`expiry`). Every
//! query is safe to run from several workers at once: claims go through row locks and leases.
//!
//! A pass that finds work runs in a `recovery sweep` span (an idle pass makes no span, so the
//! trace backend is not flooded once a second). Parked messages handled late link to the
//! trace that published them; the captures it dispatches run in spans of their own, linked to
//! the trace that created them (see `execute`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use crate::queue::dead_letter::DeadLetterSink;
use crate::storage::{StorageError, Store, captures, ledger};
use crate::telemetry::events::{self, Emit};

use super::execute::Executor;
use super::expiry::ExpirySweep;
use super::intake::{Intake, IntakeOutcome};
use super::lifecycle::LifecycleSweep;

pub struct Sweeper {
    pub store: Store,
    pub executor: Executor,
    pub intake: Arc<Intake>,
    pub dead_letters: Option<Arc<DeadLetterSink>>,
    pub interval: Duration,
    /// The authorization-expiry sweep and how often it runs.
    pub expiry: Option<(ExpirySweep, Duration)>,
    /// The lifecycle sweep, run with the expiry sweep.
    pub lifecycle: Option<LifecycleSweep>,
}

impl Sweeper {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut expiry_due = tokio::time::Instant::now();
        loop {
            if let Err(e) = self.tick().await {
                events::SweepFailed { error: &e }.emit();
            }
            if let Some((expiry, every)) = &self.expiry
                && tokio::time::Instant::now() >= expiry_due
            {
                expiry_due = tokio::time::Instant::now() + *every;
                if let Err(e) = expiry.run_once().await {
                    events::SweepFailed { error: &e }.emit();
                }
                if let Some(lifecycle) = &self.lifecycle
                    && let Err(e) = lifecycle.run_once_at(chrono::Utc::now()).await
                {
                    events::SweepFailed { error: &e }.emit();
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One pass. Returns how many orders were dispatched.
    pub async fn tick(&self) -> Result<usize, StorageError> {
        let due = captures::due_orders(self.store.pool(), 500).await?;
        let n = due.len();
        let (ready, expired) = ledger::parked_work(self.store.pool(), 200).await?;
        // Copies owed for parked messages refused when their order arrived (their deliveries
        // were acknowledged when they were parked).
        self.send_owed_dead_letters().await?;
        if n == 0 && ready.is_empty() && expired.is_empty() {
            return Ok(0);
        }
        let span = tracing::info_span!(
            "recovery sweep",
            // Integers, not usize: OpenTelemetry attributes are i64.
            due_orders = n as i64,
            parked_ready = ready.len() as i64,
            parked_expired = expired.len() as i64,
        );
        async {
            for order_id in due {
                self.executor.dispatch(order_id);
            }
            for order_id in ready {
                let span = tracing::info_span!("recovery process parked", order_id = %order_id);
                for o in self
                    .intake
                    .process_parked(&order_id)
                    .instrument(span)
                    .await?
                {
                    self.executor.dispatch(o);
                }
            }
            for parked in expired {
                let span = tracing::info_span!(
                    "recovery expire parked",
                    messaging.message.id = %parked.message_id,
                );
                crate::telemetry::trace::link_to(&span, parked.traceparent.as_deref());
                self.expire(parked).instrument(span).await?;
            }
            Ok::<(), StorageError>(())
        }
        .instrument(span)
        .await?;
        Ok(n)
    }

    /// Dead-letters a parked message whose order never came.
    async fn expire(&self, parked: ledger::ParkedMessage) -> Result<(), StorageError> {
        if let IntakeOutcome::Rejected {
            reason,
            detail,
            message_id,
        } = self.intake.expire_parked(&parked).await?
            && let Some(sink) = &self.dead_letters
        {
            // The sink's publisher passes the copy through the text boundary.
            if let Err(e) = sink
                .dead_letter(
                    &parked.body,
                    parked.routing_key.as_deref().unwrap_or(""),
                    &reason,
                    &detail,
                    message_id.as_deref(),
                    parked.traceparent.as_deref(),
                )
                .await
            {
                // The rejection is recorded in PostgreSQL either way; the queue copy is a
                // convenience for the publisher's team.
                events::DeadLetterFailed {
                    reason: &reason,
                    error: &e,
                    then: "recorded in rejected_messages only",
                }
                .emit();
            }
        }
        Ok(())
    }

    /// Sends the dead-letter copies of parked messages refused once their order arrived (their
    /// deliveries were acknowledged when they were parked). At least once: a copy is forgotten
    /// only after the broker confirmed it.
    async fn send_owed_dead_letters(&self) -> Result<(), StorageError> {
        let Some(sink) = &self.dead_letters else {
            return Ok(());
        };
        for owed in ledger::owed_dead_letters(self.store.pool(), 200).await? {
            match sink
                .dead_letter(
                    &owed.body,
                    owed.routing_key.as_deref().unwrap_or(""),
                    &owed.reason,
                    &owed.detail,
                    Some(&owed.message_id),
                    owed.traceparent.as_deref(),
                )
                .await
            {
                Ok(()) => ledger::dead_letter_sent(self.store.pool(), &owed.message_id).await?,
                Err(e) => {
                    tracing::warn!(event = "dead_letter_failed", reason = %owed.reason, error = %e, "could not copy a refused parked message to the dead-letter queue; trying again next tick");
                    break;
                }
            }
        }
        Ok(())
    }
}

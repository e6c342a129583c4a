//! Recovery: the sweeper (DESIGN §4, flow step 3).
//!
//! On every tick it dispatches captures whose retry is due or whose lease expired (a crashed
//! worker's capture is taken over with the same key), processes parked messages whose order
//! has arrived, dead-letters parked messages that waited too long, and sends the dead-letter
//! copies of parked messages refused once their order arrived. Every query is safe to
//! run from several workers at once: claims go through row locks and leases.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::queue::dead_letter::DeadLetterSink;
use crate::redact::mask_card_numbers;
use crate::storage::{StorageError, Store, captures, ledger};

use super::execute::Executor;
use super::intake::{Intake, IntakeOutcome};

pub struct Sweeper {
    pub store: Store,
    pub executor: Executor,
    pub intake: Arc<Intake>,
    pub dead_letters: Option<Arc<DeadLetterSink>>,
    pub interval: Duration,
}

impl Sweeper {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(event = "sweep_failed", error = %e, "sweep failed; trying again next tick");
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
        for order_id in due {
            self.executor.dispatch(order_id);
        }
        let (ready, expired) = ledger::parked_work(self.store.pool(), 200).await?;
        for order_id in ready {
            for o in self.intake.process_parked(&order_id).await? {
                self.executor.dispatch(o);
            }
        }
        for parked in expired {
            if let IntakeOutcome::Rejected {
                reason,
                detail,
                message_id,
            } = self.intake.expire_parked(&parked).await?
                && let Some(sink) = &self.dead_letters
            {
                let masked = mask_card_numbers(&String::from_utf8_lossy(&parked.body));
                if let Err(e) = sink
                    .dead_letter(
                        masked.as_bytes(),
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
                    tracing::warn!(event = "dead_letter_failed", reason = %reason, error = %e, "could not copy an expired parked message to the dead-letter queue");
                }
            }
        }
        self.send_owed_dead_letters().await?;
        Ok(n)
    }

    /// Sends the dead-letter copies of parked messages refused once their order arrived (their
    /// deliveries were acknowledged when they were parked). At least once: a copy is forgotten
    /// only after the broker confirmed it.
    async fn send_owed_dead_letters(&self) -> Result<(), StorageError> {
        let Some(sink) = &self.dead_letters else {
            return Ok(());
        };
        for owed in ledger::owed_dead_letters(self.store.pool(), 200).await? {
            let masked = mask_card_numbers(&String::from_utf8_lossy(&owed.body));
            match sink
                .dead_letter(
                    masked.as_bytes(),
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

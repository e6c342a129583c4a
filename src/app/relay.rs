//! The outbox relay: publishes the outcome events the ledger's transitions wrote to
//! `outcome_events` (in the transaction of each transition) to the outcomes exchange, and
//! prunes published ones after `outbox.retention_hours`.
//!
//! One pass claims the oldest unpublished event of each order (`FOR UPDATE SKIP LOCKED`: other
//! replicas skip them), publishes them with publisher confirms, and marks published, in the
//! claim's transaction, only those the broker confirmed. A worker killed between the confirm
//! and that commit publishes the same `event_id` again after restart: delivery is at least
//! once, and per order in sequence. While the broker is down the events wait in the outbox and
//! the ledger goes on; the relay retries with a growing pause (up to 5 s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::queue::outcomes::{OutcomeEvent, OutcomePublisher};
use crate::storage::{Store, outbox};
use crate::telemetry::metrics;

/// Test-only fault hook: when set to a number of milliseconds, the relay waits that long
/// after the broker confirmed a pass and before marking it published, so a test can kill the
/// process in between. Unset (always, in production) it does nothing.
pub const HOLD_AFTER_CONFIRM_ENV: &str = "CAPTURE_TEST_RELAY_HOLD_AFTER_CONFIRM_MS";

/// Longest pause after a failed pass.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often published events past their retention are deleted, and how many per statement.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const PRUNE_BATCH: i64 = 10_000;

pub struct Relay {
    pub store: Store,
    pub publisher: Arc<OutcomePublisher>,
    pub batch: i64,
    pub poll_interval: Duration,
    pub confirm_timeout: Duration,
    pub retention: Duration,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pass {
    pub published: usize,
    pub failed: usize,
}

impl Relay {
    /// Publishes until `stop` turns true; the pass in progress finishes first.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let hold = std::env::var(HOLD_AFTER_CONFIRM_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        if let Err(error) = self.publisher.connect().await {
            tracing::warn!(event = "outbox_relay_failed", error = %error, "outcome events wait in the outbox");
        }
        let mut backoff = self.poll_interval;
        let mut last_prune: Option<Instant> = None;
        while !*stop.borrow() {
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                self.prune().await;
            }
            let pause = match self.pass(hold).await {
                Ok(p) if p.failed == 0 && p.published > 0 => {
                    backoff = self.poll_interval;
                    continue;
                }
                Ok(p) if p.failed == 0 => {
                    backoff = self.poll_interval;
                    self.poll_interval
                }
                Ok(_) => {
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    backoff
                }
                Err(error) => {
                    tracing::warn!(event = "outbox_relay_failed", error = %error, "outcome events wait in the outbox");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    backoff
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// One pass: claim, publish, mark. Public for tests.
    pub async fn pass(&self, hold: Option<Duration>) -> anyhow::Result<Pass> {
        let claim = outbox::claim(self.store.pool(), self.batch).await?;
        if claim.events.is_empty() {
            claim.finish(&[], &[]).await?;
            return Ok(Pass::default());
        }
        let events: Vec<OutcomeEvent> = claim
            .events
            .iter()
            .map(|e| OutcomeEvent {
                event_id: e.event_id.clone(),
                event_type: e.event_type.clone(),
                occurred_at: e.occurred_at,
                order_id: e.order_id.clone(),
                sequence: e.sequence,
                data: e.data.clone(),
                traceparent: e.traceparent.clone(),
            })
            .collect();
        let ids: Vec<i64> = claim.events.iter().map(|e| e.outcome_event_id).collect();
        let results =
            match tokio::time::timeout(self.confirm_timeout, self.publisher.publish_all(&events))
                .await
            {
                Ok(Ok(results)) => results
                    .into_iter()
                    .map(|r| r.map_err(|e| e.to_string()))
                    .collect(),
                Ok(Err(error)) => {
                    // Not connected: nothing was sent; the events stay as they were.
                    drop(claim);
                    return Err(error.into());
                }
                Err(_) => {
                    self.publisher.reset().await;
                    let text = format!(
                        "the broker did not confirm within {} ms",
                        self.confirm_timeout.as_millis()
                    );
                    vec![Err(text); events.len()]
                }
            };
        let (mut published, mut failed) = (Vec::new(), Vec::new());
        for ((id, event), result) in ids.iter().zip(&events).zip(results) {
            match result {
                Ok(()) => {
                    published.push(*id);
                    metrics::outcome_published(&event.event_type);
                }
                Err(error) => failed.push((*id, error)),
            }
        }
        if let Some(hold) = hold
            && !published.is_empty()
        {
            tracing::warn!(
                event = "outbox_relay_hold",
                hold_ms = hold.as_millis() as u64,
                "test hook: holding confirmed events unmarked"
            );
            tokio::time::sleep(hold).await;
        }
        let pass = Pass {
            published: published.len(),
            failed: failed.len(),
        };
        if let Some((_, error)) = failed.first() {
            tracing::warn!(event = "outbox_publish_failed", failed = failed.len(), error = %error, "outcome events not confirmed; retrying");
        }
        claim.finish(&published, &failed).await?;
        Ok(pass)
    }

    async fn prune(&self) {
        let seconds = i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX);
        match outbox::prune(self.store.pool(), seconds, PRUNE_BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                event = "outbox_pruned",
                events = n,
                "published outcome events past their retention deleted"
            ),
            Err(error) => {
                tracing::warn!(event = "outbox_prune_failed", error = %error, "pruning the outbox failed; next try in a minute")
            }
        }
    }
}

//! Read-backs: learn from the provider whether an earlier call captured, and what follows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tracing::Instrument;

use crate::domain::readback;
use crate::provider::{AuthorizationSnapshot, CallResult, LookupError, Outcome, PaymentProvider};
use crate::storage::StorageError;
use crate::storage::captures::{self, AttemptRecord, ClaimedCapture, Transition};
use crate::storage::ledger::CaptureKind;
use crate::telemetry::{metrics, trace};

use super::Executor;
use super::spans::provider_span;

pub(super) enum Resolution {
    /// The lookup settled the capture.
    Settled,
    /// Send the request (under the current, possibly new, key).
    Send,
}

/// One read-back call: when it started and how long the provider took to answer.
pub(super) struct ReadBackCall {
    started: DateTime<Utc>,
    latency: Duration,
}

impl ReadBackCall {
    /// The call as the attempts table records it, with `outcome`.
    fn call(&self, outcome: Outcome) -> CallResult {
        CallResult {
            outcome,
            http_status: None,
            provider_code: None,
            provider_request_id: None,
            latency: self.latency,
        }
    }
}

/// What the provider's captured total on the authorization says about this capture, given
/// what the ledger recorded as captured before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tally {
    /// The provider's total includes this capture.
    ThisCaptureHappened,
    /// The provider's total is what was captured before this capture.
    NothingMore,
    /// Neither: the ledger and the provider disagree.
    Mismatch { theirs: i64, ours: i64 },
}

impl Tally {
    fn of(theirs: i64, ours: i64, amount: i64) -> Tally {
        if theirs == ours + amount && amount > 0 {
            Tally::ThisCaptureHappened
        } else if theirs == ours {
            Tally::NothingMore
        } else {
            Tally::Mismatch { theirs, ours }
        }
    }
}

impl Executor {
    /// Reads the authorization back to learn whether an earlier call under the current key
    /// captured. Only sound because captures of an authorization go one at a time (P8): the
    /// provider's captured total is either what we recorded as succeeded, or that plus this
    /// capture.
    pub(super) async fn resolve_by_lookup(
        &self,
        provider: &Arc<dyn PaymentProvider>,
        c: &mut ClaimedCapture,
    ) -> Result<Resolution, StorageError> {
        let started = Utc::now();
        let (snapshot, latency) = read_back(provider, c).await;
        let lookup = ReadBackCall { started, latency };
        match snapshot {
            Ok(snapshot) => match c.kind {
                CaptureKind::Release | CaptureKind::Void => {
                    self.after_release_read_back(provider, c, &snapshot, &lookup)
                        .await
                }
                CaptureKind::Capture => {
                    self.after_capture_read_back(provider, c, &snapshot, &lookup)
                        .await
                }
            },
            Err(LookupError::Retryable { reason, .. }) => {
                self.read_back_unclear(c, reason, &lookup).await
            }
            Err(LookupError::Permanent { reason, .. }) => {
                self.read_back_refused(c, reason, &lookup).await
            }
        }
    }

    /// Records the read-back with `outcome` and moves the capture by `transition`: the
    /// read-back settled it for now.
    async fn settle(
        &self,
        c: &ClaimedCapture,
        lookup: &ReadBackCall,
        outcome: Outcome,
        transition: Transition,
    ) -> Result<Resolution, StorageError> {
        self.record(
            c,
            "lookup",
            None,
            &lookup.call(outcome),
            lookup.started,
            transition,
        )
        .await?;
        Ok(Resolution::Settled)
    }

    /// Records a read-back that showed the capture not done yet, leaving it in flight under
    /// this lease to be sent: `outcome` names what it showed.
    async fn note_read_back(
        &self,
        c: &ClaimedCapture,
        snapshot: &AuthorizationSnapshot,
        lookup: &ReadBackCall,
        outcome: &'static str,
    ) -> Result<(), StorageError> {
        let trace_id = trace::current_trace_id();
        let attempt = AttemptRecord {
            operation: "lookup",
            idempotency_key: None,
            outcome,
            http_status: None,
            provider_code: Some(&snapshot.status),
            provider_request_id: None,
            error: None,
            latency_ms: lookup.latency.as_millis() as u64,
            trace_id: trace_id.as_deref(),
            worker_id: &self.inner.worker_id,
            started_at: lookup.started,
        };
        captures::record_lookup(self.inner.store.pool(), c, &attempt).await
    }

    /// A release or void read back: done once the authorization is canceled or has nothing
    /// left to capture; otherwise awaited (when the provider accepted it) or sent.
    async fn after_release_read_back(
        &self,
        provider: &Arc<dyn PaymentProvider>,
        c: &ClaimedCapture,
        snapshot: &AuthorizationSnapshot,
        lookup: &ReadBackCall,
    ) -> Result<Resolution, StorageError> {
        if snapshot.status == "canceled" || snapshot.capturable.amount().is_zero() {
            return self
                .settle(
                    c,
                    lookup,
                    Outcome::Succeeded { reference: None },
                    Transition::Succeeded { reference: None },
                )
                .await;
        }
        if c.accepted_at.is_some() {
            // The provider accepted the release; it is never sent again.
            self.still_pending(provider, c, snapshot, lookup).await?;
            return Ok(Resolution::Settled);
        }
        self.note_read_back(c, snapshot, lookup, "not_released")
            .await?;
        Ok(Resolution::Send)
    }

    /// A capture read back: its provider's captured total against the ledger's.
    async fn after_capture_read_back(
        &self,
        provider: &Arc<dyn PaymentProvider>,
        c: &mut ClaimedCapture,
        snapshot: &AuthorizationSnapshot,
        lookup: &ReadBackCall,
    ) -> Result<Resolution, StorageError> {
        let ours = captures::succeeded_total(
            self.inner.store.pool(),
            c.provider.as_str(),
            c.authorization_id.as_str(),
            c.capture_id,
        )
        .await?;
        let theirs = snapshot.captured.amount().get();
        let amount = c.minor_units();
        match Tally::of(theirs, ours, amount) {
            Tally::ThisCaptureHappened => {
                tracing::info!(event = "capture_resolved_by_lookup", capture_id = c.capture_id, order_id = %c.order_id, "the provider shows this capture happened");
                self.settle(
                    c,
                    lookup,
                    Outcome::Succeeded { reference: None },
                    Transition::Succeeded { reference: None },
                )
                .await
            }
            Tally::NothingMore if c.accepted_at.is_some() => {
                // Accepted but not shown as captured: still processing, or refused after the
                // fact. Never "nothing captured": it is not sent again.
                self.still_pending(provider, c, snapshot, lookup).await?;
                Ok(Resolution::Settled)
            }
            Tally::NothingMore => self.nothing_captured(c, snapshot, lookup).await,
            Tally::Mismatch { theirs, ours } => {
                let error = format!(
                    "the provider reports {theirs} captured on {}, but the ledger expects {ours} (or {} if this capture happened); reconcile by hand",
                    c.authorization_id,
                    ours + amount
                );
                self.settle(
                    c,
                    lookup,
                    Outcome::Failed {
                        reason: error.clone(),
                    },
                    Transition::Attention { error },
                )
                .await
            }
        }
    }

    /// The read-back shows nothing captured under the current key: send again under the same
    /// key, under a new one (when the old one is stuck), or hand it to an operator.
    async fn nothing_captured(
        &self,
        c: &mut ClaimedCapture,
        snapshot: &AuthorizationSnapshot,
        lookup: &ReadBackCall,
    ) -> Result<Resolution, StorageError> {
        let next = readback::after_read_back(
            readback::Finding::NothingCaptured,
            c.key_spent,
            self.within_age(c),
            0,
        );
        match next {
            readback::AfterReadBack::SendNewKey => {
                // The provider stored an answer under the old key and will only replay it,
                // and it shows nothing captured: safe to send under a new key.
                self.note_read_back(c, snapshot, lookup, "not_captured")
                    .await?;
                captures::new_key_generation(self.inner.store.pool(), c, &self.inner.worker_id)
                    .await?;
                tracing::info!(event = "capture_rekeyed", capture_id = c.capture_id, order_id = %c.order_id, generation = c.key_generation, "the provider shows nothing captured under the old key; sending under a new key");
                Ok(Resolution::Send)
            }
            readback::AfterReadBack::Attention => {
                let error = format!(
                    "gave up after {} attempts and the retry age: the read-back of {} shows nothing captured under key {}, and the last answers were not a stored error (so no new key is taken); send it again or release it",
                    c.attempts, c.authorization_id, c.idempotency_key
                );
                self.settle(
                    c,
                    lookup,
                    Outcome::Failed {
                        reason: error.clone(),
                    },
                    Transition::Attention { error },
                )
                .await
            }
            readback::AfterReadBack::SendSameKey
            | readback::AfterReadBack::RecordSucceeded
            | readback::AfterReadBack::ReadAgain => {
                // Nothing captured yet, but the key's request may still be running at the
                // provider (its answer was lost, not refused): resend under the same key,
                // which the provider either executes once or answers from its store.
                self.note_read_back(c, snapshot, lookup, "not_captured_yet")
                    .await?;
                Ok(Resolution::Send)
            }
        }
    }

    /// The read-back failed in a way worth asking again: read again after a backoff, unless
    /// the read-backs kept failing or the accepted capture waited too long (then attention).
    async fn read_back_unclear(
        &self,
        c: &ClaimedCapture,
        reason: String,
        lookup: &ReadBackCall,
    ) -> Result<Resolution, StorageError> {
        let outcome = Outcome::Retryable {
            after: None,
            reason: reason.clone(),
        };
        let gave_up = match self.read_backs_exhausted(c).await? {
            ReadBacks::Exhausted { failed } => Some(format!(
                "the read-back of {} failed {failed} times in a row, so whether this {} happened is unknown; check it in the provider's dashboard: {reason}",
                c.authorization_id,
                c.kind.as_str()
            )),
            ReadBacks::MayReadAgain => None,
        };
        if let Some(error) = self.waited_too_long(c, &reason).or(gave_up) {
            return self
                .settle(c, lookup, outcome, Transition::Attention { error })
                .await;
        }
        let next_at = Utc::now()
            + chrono::Duration::from_std(self.inner.policy.delay(c.attempts))
                .unwrap_or_else(|_| chrono::Duration::seconds(60));
        let transition = if c.accepted_at.is_some() {
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
        };
        self.settle(c, lookup, outcome, transition).await
    }

    /// Whether the read-backs of a capture not yet accepted failed too often in a row (this
    /// one included) to try again. An accepted capture is bounded by its age instead.
    async fn read_backs_exhausted(&self, c: &ClaimedCapture) -> Result<ReadBacks, StorageError> {
        let failed_before = if c.accepted_at.is_none() {
            captures::key_history(
                self.inner.store.pool(),
                c.capture_id,
                c.idempotency_key.as_str(),
            )
            .await?
            .failed_read_backs
        } else {
            0
        };
        let next = readback::after_read_back(
            readback::Finding::Unclear,
            c.key_spent,
            self.within_age(c),
            failed_before,
        );
        Ok(if next == readback::AfterReadBack::Attention {
            ReadBacks::Exhausted {
                failed: failed_before + 1,
            }
        } else {
            ReadBacks::MayReadAgain
        })
    }

    /// The provider cannot read the authorization back. For a request it accepted (Adyen) only
    /// its notification settles it: wait for it, within the retry age. Otherwise attention.
    async fn read_back_refused(
        &self,
        c: &ClaimedCapture,
        reason: String,
        lookup: &ReadBackCall,
    ) -> Result<Resolution, StorageError> {
        let transition = if c.accepted_at.is_some() {
            match self.waited_too_long(c, &reason) {
                Some(error) => Transition::Attention { error },
                None => Transition::Pending {
                    reference: None,
                    next_at: self.next_poll(c),
                },
            }
        } else {
            Transition::Attention {
                error: format!("cannot read the authorization back: {reason}"),
            }
        };
        self.settle(c, lookup, Outcome::Failed { reason }, transition)
            .await
    }

    /// When the next read-back of a pending capture is due: backing off like retries.
    pub(super) fn next_poll(&self, c: &ClaimedCapture) -> chrono::DateTime<Utc> {
        Utc::now()
            + chrono::Duration::from_std(self.inner.policy.delay(c.attempts))
                .unwrap_or_else(|_| chrono::Duration::seconds(60))
    }

    /// For a capture the provider accepted: the attention reason once it has waited
    /// `capture.max_retry_age_seconds` for its outcome, else `None`.
    pub(super) fn waited_too_long(&self, c: &ClaimedCapture, why: &str) -> Option<String> {
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
    pub(super) async fn still_pending(
        &self,
        provider: &Arc<dyn PaymentProvider>,
        c: &ClaimedCapture,
        snapshot: &AuthorizationSnapshot,
        lookup: &ReadBackCall,
    ) -> Result<(), StorageError> {
        let started = lookup.started;
        let call = |outcome: Outcome| CallResult {
            provider_code: Some(snapshot.status.clone()),
            ..lookup.call(outcome)
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

/// Whether a failed read-back may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadBacks {
    MayReadAgain,
    /// `failed` read-backs in a row could not tell: enough.
    Exhausted {
        failed: u32,
    },
}

/// Reads the authorization back inside a provider-call span, and counts the call. Returns the
/// provider's answer and how long it took.
async fn read_back(
    provider: &Arc<dyn PaymentProvider>,
    c: &ClaimedCapture,
) -> (Result<AuthorizationSnapshot, LookupError>, Duration) {
    let t0 = Instant::now();
    let call_span = provider_span(c, "lookup");
    let snapshot = async {
        let _in_flight = metrics::InFlight::start();
        provider.lookup(&c.authorization_id).await
    }
    .instrument(call_span.clone())
    .await;
    let latency = t0.elapsed();
    let outcome = match &snapshot {
        Ok(_) => "succeeded",
        Err(LookupError::Retryable { .. }) => "retryable",
        Err(LookupError::Permanent { .. }) => "failed",
    };
    call_span.record("payment.outcome", outcome);
    if let Ok(s) = &snapshot {
        call_span.record("payment.provider_status", s.status.as_str());
    } else {
        call_span.record("otel.status_code", "ERROR");
    }
    metrics::provider_call(c.provider.as_str(), "lookup", outcome, latency);
    (snapshot, latency)
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn the_tally_tells_this_capture_from_nothing_and_from_a_mismatch() {
        assert_eq!(Tally::of(1500, 1000, 500), Tally::ThisCaptureHappened);
        assert_eq!(Tally::of(1000, 1000, 500), Tally::NothingMore);
        // A zero capture never shows in the total: nothing is to be learnt from it.
        assert_eq!(Tally::of(1000, 1000, 0), Tally::NothingMore);
        assert_eq!(
            Tally::of(1200, 1000, 500),
            Tally::Mismatch {
                theirs: 1200,
                ours: 1000
            }
        );
    }
}

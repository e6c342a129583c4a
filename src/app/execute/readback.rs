//! Read-backs: learn from the provider whether an earlier call captured, and what follows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::Instrument;

use crate::domain::AuthorizationId;
use crate::domain::readback;
use crate::provider::{CallResult, Outcome, PaymentProvider};
use crate::storage::StorageError;
use crate::storage::captures::{self, AttemptRecord, ClaimedCapture, Transition};
use crate::storage::ledger::CaptureKind;
use crate::telemetry::{metrics, trace};

use super::Executor;
use super::attempt::error_call;
use super::spans::provider_span;

pub(super) enum Resolution {
    /// The lookup settled the capture.
    Settled,
    /// Send the request (under the current, possibly new, key).
    Send,
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

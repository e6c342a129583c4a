//! One attempt: send a claimed capture, decide what follows from the answer, record it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tracing::Instrument;

use crate::domain::readback;
use crate::provider::{CallResult, Outcome, PaymentProvider};
use crate::storage::StorageError;
use crate::storage::captures::{self, AttemptRecord, ClaimedCapture, Following, Lease, Transition};
use crate::storage::ledger::CaptureKind;
use crate::telemetry::events::{self, Emit};
use crate::telemetry::{metrics, trace};

use super::readback::Resolution;
use super::request::{capture_request, release_request};
use super::spans::{count_transition, provider_span, record_call, transition_status};
use super::{Executor, Step};

impl Executor {
    /// Sends one claimed capture and records the outcome, inside its `capture` span.
    pub(super) async fn execute(&self, mut capture: ClaimedCapture) -> Result<Step, StorageError> {
        let inner = &self.inner;
        if capture.taken_over {
            events::LeaseTakenOver {
                provider: capture.provider.as_str(),
                order_id: capture.order_id.as_str(),
                capture_id: capture.capture_id,
            }
            .emit();
        }
        let Some(provider) = inner.providers.get(capture.provider.as_str()) else {
            let error = format!(
                "provider {:?} is not configured on this worker",
                capture.provider.as_str()
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
                CaptureKind::Capture => provider.capture(&capture_request(&capture)).await,
                CaptureKind::Release | CaptureKind::Void => {
                    provider.release(&release_request(&capture)).await
                }
            }
        }
        .instrument(call_span.clone())
        .await;
        record_call(&call_span, &call);
        metrics::provider_call(
            capture.provider.as_str(),
            op,
            call.outcome.label(),
            call.latency,
        );
        let transition = self.transition_after(&capture, &provider, &call).await?;
        let key = capture.idempotency_key.clone();
        self.record(&capture, op, Some(key.as_str()), &call, started, transition)
            .await
    }

    /// Calls the retry budget still allows after the capture's current one (0 once its
    /// attempts or its age are used up).
    pub(super) fn attempts_left(&self, c: &ClaimedCapture) -> u32 {
        let policy = &self.inner.policy;
        if policy.exhausted(0, c.first_attempt_at, Utc::now()) {
            return 0;
        }
        policy
            .max_attempts
            .saturating_sub(u32::try_from(c.attempts).unwrap_or(0))
    }

    /// Whether the capture is younger than the retry budget's age limit.
    pub(super) fn within_age(&self, c: &ClaimedCapture) -> bool {
        !self
            .inner
            .policy
            .exhausted(0, c.first_attempt_at, Utc::now())
    }

    /// What follows a call: for a failure without a definite answer, the read-back rule
    /// ([`readback::after_failure`]) over the key's history; otherwise by the outcome alone.
    pub(super) async fn transition_after(
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
            captures::key_history(
                self.inner.store.pool(),
                c.capture_id,
                c.idempotency_key.as_str(),
            )
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
    pub(super) fn transition_for(
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

    pub(super) async fn record(
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
            _ => captures::Recorded::alone(
                captures::record(
                    self.inner.store.pool(),
                    c,
                    &self.inner.worker_id,
                    &attempt,
                    &transition,
                )
                .await?,
            ),
        };
        match recorded.lease {
            Lease::Held => count_transition(c, operation, &call.outcome, &transition),
            Lease::Lost => {
                tracing::warn!(event = "lease_lost", capture_id = c.capture_id, order_id = %c.order_id, "the capture was settled or taken over while the call was in progress (a provider notification, or a worker that took the lease over); the ledger keeps that outcome");
            }
        }
        Ok(match recorded.following {
            Following::More => Step::Handled,
            Following::Nothing => Step::Drained,
        })
    }

    pub(super) async fn finish(
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

    pub(super) fn log_outcome(
        &self,
        c: &ClaimedCapture,
        outcome: &Outcome,
        transition: &Transition,
    ) {
        match outcome {
            Outcome::Declined { code, .. } => events::CaptureDeclined {
                provider: c.provider.as_str(),
                decline_code: code,
                order_id: c.order_id.as_str(),
                capture_id: c.capture_id,
                authorization_id: c.authorization_id.as_str(),
                amount: c.amount.amount().get(),
                currency: c.amount.currency().code(),
            }
            .emit(),
            _ if let Transition::Attention { error } = transition => {
                events::CaptureNeedsAttention {
                    provider: c.provider.as_str(),
                    outcome: outcome.label(),
                    order_id: c.order_id.as_str(),
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
                amount = c.amount.amount().get(),
                currency = %c.amount.currency(),
                is_final = c.is_final,
                attempt = c.attempts,
                outcome = outcome.label(),
            ),
        }
    }
}

pub(super) fn error_call(reason: &str) -> CallResult {
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

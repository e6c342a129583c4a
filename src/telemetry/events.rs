//! Named events we alert on: each `emit()` writes one log line with a fixed `event` key and
//! bumps one counter whose labels are fields of that same line, so a graph, an alert and the
//! log lines behind it always agree.
//!
//! The log line carries the ids (order, capture, message) that let on-call find the case; the
//! counter carries only bounded labels. The line is written inside the caller's span, so it
//! also carries that span's `trace_id`. Event names and their fields are a contract with
//! `docs/runbook.md` and `deploy/prometheus/alerts.yaml`.

use metrics::counter;

use super::metrics::{self as m, label};

/// A named event: one log line and one counter, same labels.
/// Outside text in a log field, through the one text boundary.
fn clean(text: &str) -> String {
    crate::sanitize::text(text, crate::sanitize::FIELD_CHARS)
}

pub trait Emit {
    fn emit(self);
}

/// A message was refused and recorded in `rejected_messages` (then dead-lettered).
pub struct MessageRejected<'a> {
    pub reason: &'a str,
    pub message_id: &'a str,
    pub order_id: &'a str,
    pub detail: &'a str,
}

impl Emit for MessageRejected<'_> {
    fn emit(self) {
        let reason = label(self.reason);
        tracing::warn!(
            event = "message_rejected",
            reason = %reason,
            message_id = %self.message_id,
            order_id = %self.order_id,
            // The detail may quote the message: it leaves through the text boundary.
            detail = %clean(self.detail),
            "message refused"
        );
        counter!(m::MESSAGES_REJECTED, "reason" => reason).increment(1);
    }
}

/// The provider declined a capture; the order is latched (P4).
pub struct CaptureDeclined<'a> {
    pub provider: &'a str,
    pub decline_code: &'a str,
    pub order_id: &'a str,
    pub capture_id: i64,
    pub authorization_id: &'a str,
    pub amount: i64,
    pub currency: &'a str,
}

impl Emit for CaptureDeclined<'_> {
    fn emit(self) {
        let provider = label(self.provider);
        let decline_code = label(self.decline_code);
        tracing::error!(
            event = "capture_declined",
            provider = %provider,
            decline_code = %decline_code,
            provider_decline_code = %self.decline_code,
            order_id = %self.order_id,
            capture_id = self.capture_id,
            authorization_id = %self.authorization_id,
            amount = self.amount,
            currency = %self.currency,
            "capture declined: the order is latched and no further capture will be sent until an operator resumes it"
        );
        counter!(m::DECLINES, "provider" => provider, "decline_code" => decline_code).increment(1);
    }
}

/// A capture stopped and waits for an operator.
pub struct CaptureNeedsAttention<'a> {
    pub provider: &'a str,
    /// The provider outcome that stopped it (`failed`, `retryable` after the last attempt…).
    pub outcome: &'static str,
    pub order_id: &'a str,
    pub capture_id: i64,
    pub error: &'a str,
}

impl Emit for CaptureNeedsAttention<'_> {
    fn emit(self) {
        let provider = label(self.provider);
        tracing::error!(
            event = "capture_needs_attention",
            provider = %provider,
            outcome = self.outcome,
            order_id = %self.order_id,
            capture_id = self.capture_id,
            // Provider text: it may echo what the worker sent.
            error = %clean(self.error),
            "capture needs attention: fix the cause, then put it back in the queue (docs/runbook.md)"
        );
        counter!(m::ATTENTION, "provider" => provider, "outcome" => self.outcome).increment(1);
    }
}

/// A capture's lease expired in another worker's hands; this worker sends it again with the
/// same key.
pub struct LeaseTakenOver<'a> {
    pub provider: &'a str,
    pub order_id: &'a str,
    pub capture_id: i64,
}

impl Emit for LeaseTakenOver<'_> {
    fn emit(self) {
        let provider = label(self.provider);
        tracing::warn!(
            event = "lease_taken_over",
            provider = %provider,
            order_id = %self.order_id,
            capture_id = self.capture_id,
            "a capture's lease expired; sending it again with the same key"
        );
        counter!(m::LEASE_TAKEOVERS, "provider" => provider).increment(1);
    }
}

/// The RabbitMQ connection or consumer was lost; the consumer reconnects.
pub struct ConsumerDisconnected<'a> {
    pub error: &'a dyn std::fmt::Display,
    pub retry_in_ms: u64,
}

impl Emit for ConsumerDisconnected<'_> {
    fn emit(self) {
        tracing::warn!(
            event = "consumer_disconnected",
            error = %self.error,
            retry_in_ms = self.retry_in_ms,
            "consuming stopped; reconnecting"
        );
        counter!(m::CONSUMER_DISCONNECTS).increment(1);
    }
}

/// A refused message could not be copied to the dead-letter queue.
pub struct DeadLetterFailed<'a> {
    pub reason: &'a str,
    pub error: &'a dyn std::fmt::Display,
    /// What happens to the message now.
    pub then: &'static str,
}

impl Emit for DeadLetterFailed<'_> {
    fn emit(self) {
        let reason = label(self.reason);
        tracing::error!(
            event = "dead_letter_failed",
            reason = %reason,
            error = %self.error,
            then = self.then,
            "could not copy a refused message to the dead-letter queue"
        );
        counter!(m::DEAD_LETTER_FAILURES, "reason" => reason).increment(1);
    }
}

/// An ack did not reach the broker; the message comes back and is deduplicated.
pub struct AckLost<'a> {
    pub error: Option<&'a dyn std::fmt::Display>,
}

impl Emit for AckLost<'_> {
    fn emit(self) {
        match self.error {
            Some(error) => tracing::warn!(
                event = "ack_lost",
                error = %error,
                "ack failed; the message will be redelivered and deduplicated"
            ),
            None => tracing::warn!(
                event = "ack_lost",
                "ack not delivered; the message will be redelivered and deduplicated"
            ),
        }
        counter!(m::ACKS_LOST).increment(1);
    }
}

/// A capture step failed on the database; the sweeper tries again.
pub struct CaptureStepFailed<'a> {
    pub order_id: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl Emit for CaptureStepFailed<'_> {
    fn emit(self) {
        tracing::warn!(
            event = "capture_step_failed",
            order_id = %self.order_id,
            error = %self.error,
            "capture step failed; the sweeper retries"
        );
        counter!(m::STEP_FAILURES).increment(1);
    }
}

/// A sweeper pass failed; the next tick tries again.
pub struct SweepFailed<'a> {
    pub error: &'a dyn std::fmt::Display,
}

impl Emit for SweepFailed<'_> {
    fn emit(self) {
        tracing::warn!(
            event = "sweep_failed",
            error = %self.error,
            "sweep failed; trying again next tick"
        );
        counter!(m::SWEEP_FAILURES).increment(1);
    }
}

/// A provider notification was refused (bad or missing signature, no webhook secret, not the
/// provider's shape, unknown provider) and recorded in `webhook_rejections`; nothing changed.
pub struct NotificationRejected<'a> {
    pub provider: &'a str,
    /// `bad_signature`, `not_configured`, `malformed`, `unknown_provider`, `not_supported`.
    pub reason: &'static str,
    pub detail: &'a str,
}

impl Emit for NotificationRejected<'_> {
    fn emit(self) {
        let provider = label(self.provider);
        tracing::warn!(
            event = "notification_rejected",
            provider = %provider,
            reason = self.reason,
            detail = %clean(self.detail),
            "provider notification refused and recorded in webhook_rejections; nothing changed"
        );
        counter!(m::NOTIFICATIONS, "provider" => provider, "result" => self.reason).increment(1);
    }
}

/// A provider notification contradicts a capture the ledger already settled the other way
/// (Adyen's `CAPTURE_FAILED` after a successful `CAPTURE`, or a re-capture after a decline).
/// Recorded; the capture is left as it is for an operator.
pub struct NotificationConflict<'a> {
    pub provider: &'a str,
    pub event_type: &'a str,
    pub provider_reference: &'a str,
    pub order_id: &'a str,
    pub capture_id: i64,
    pub detail: &'a str,
}

impl Emit for NotificationConflict<'_> {
    fn emit(self) {
        let provider = label(self.provider);
        tracing::error!(
            event = "notification_conflict",
            provider = %provider,
            event_type = %self.event_type,
            provider_reference = %self.provider_reference,
            order_id = %self.order_id,
            capture_id = self.capture_id,
            detail = %clean(self.detail),
            "a provider notification contradicts a settled capture: reconcile it by hand (docs/runbook.md)"
        );
        counter!(m::NOTIFICATIONS, "provider" => provider, "result" => "conflict").increment(1);
    }
}

/// An open order's authorization expires within its provider's `capture_ahead`: what had
/// shipped was captured (`captured`), or nothing could be done (`at_risk`: nothing waiting,
/// so the unshipped value is lost at the deadline unless the order ships or is
/// re-authorized).
pub struct AuthorizationAtRisk<'a> {
    pub provider: &'a str,
    pub order_id: &'a str,
    pub authorization_id: &'a str,
    pub deadline: chrono::DateTime<chrono::Utc>,
    /// Value the order still expects, minor units.
    pub unclaimed: i64,
    /// `captured` or `at_risk`.
    pub action: &'static str,
}

impl Emit for AuthorizationAtRisk<'_> {
    fn emit(self) {
        let provider = label(self.provider);
        tracing::warn!(
            event = "authorization_at_risk",
            provider = %provider,
            order_id = %self.order_id,
            authorization_id = %self.authorization_id,
            deadline = %self.deadline.to_rfc3339(),
            unclaimed = self.unclaimed,
            action = self.action,
            "an open order's authorization is about to expire"
        );
        counter!(m::AUTHORIZATION_DEADLINES, "provider" => provider, "action" => self.action)
            .increment(1);
    }
}

/// The lifecycle sweep extended or incremented a hold, or the provider would not.
pub struct LifecycleActionDone<'a> {
    pub provider: &'a str,
    pub order_id: &'a str,
    pub authorization_id: &'a str,
    /// `extend` or `increment`.
    pub action: &'a str,
    /// The policy's reason (`expiring`, `guarantee_ending`, `shortfall`).
    pub reason: &'a str,
    /// The provider call's outcome label.
    pub outcome: &'static str,
    /// Why it failed, when it did (sanitized).
    pub error: Option<&'a str>,
}

impl Emit for LifecycleActionDone<'_> {
    fn emit(self) {
        let provider = label(self.provider);
        if matches!(self.outcome, "declined" | "failed") {
            tracing::warn!(
                event = "lifecycle_action_failed",
                provider = %provider,
                order_id = %self.order_id,
                authorization_id = %self.authorization_id,
                action = %self.action,
                reason = %self.reason,
                outcome = self.outcome,
                error = self.error.unwrap_or(""),
                "the provider did not extend or increment the hold; what shipped is captured before it lapses"
            );
        } else {
            tracing::info!(
                event = "lifecycle_action",
                provider = %provider,
                order_id = %self.order_id,
                authorization_id = %self.authorization_id,
                action = %self.action,
                reason = %self.reason,
                outcome = self.outcome,
                "hold extended or incremented"
            );
        }
        let action = if self.action == "increment" {
            "increment"
        } else {
            "extend"
        };
        counter!(m::LIFECYCLE_ACTIONS, "provider" => provider, "action" => action, "outcome" => self.outcome)
            .increment(1);
    }
}

/// The lifecycle sweep planned the release of a hold nobody used (`untouched`) or of an old
/// one with nothing left to ship (`aged_nothing_to_ship`).
pub struct AuthorizationReleased<'a> {
    pub provider: &'a str,
    pub order_id: &'a str,
    pub authorization_id: &'a str,
    pub reason: &'a str,
}

impl Emit for AuthorizationReleased<'_> {
    fn emit(self) {
        let provider = label(self.provider);
        tracing::warn!(
            event = "authorization_released",
            provider = %provider,
            order_id = %self.order_id,
            authorization_id = %self.authorization_id,
            reason = %self.reason,
            "the worker releases a hold nobody will use"
        );
        counter!(m::LIFECYCLE_ACTIONS, "provider" => provider, "action" => "release", "outcome" => "planned")
            .increment(1);
    }
}

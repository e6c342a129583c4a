//! Prometheus metrics: the process-wide recorder, every metric name we export, and small typed
//! helpers so call sites cannot misspell a name or a label.
//!
//! Metrics are process-global by nature (one recorder per process), so [`install`] is
//! idempotent and called both by `telemetry::init` and by the composition root (tests build
//! applications without `init`). `/metrics` renders the recorder from our own HTTP route.
//!
//! Labels take only bounded values (message types, reasons, outcomes, provider names, currency
//! codes, decline codes cleaned by [`label`]); ids go to logs and traces, never to labels.
//! Amounts are counted in integer minor units.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Messages handled, by `type` (contract message type, `unknown` otherwise) and `outcome`
/// (`processed`, `duplicate`, `parked`, `rejected`, `retry`).
pub const MESSAGES: &str = "capture_worker_messages_total";
/// Messages refused, by `reason` (the machine-readable reason in `rejected_messages`).
pub const MESSAGES_REJECTED: &str = "capture_worker_messages_rejected_total";
/// Provider calls, by `provider`, `operation` (`capture`, `release`, `lookup`) and `outcome`
/// (`succeeded`, `pending`, `declined`, `retryable`, `failed`, `unknown`).
pub const PROVIDER_CALLS: &str = "capture_worker_provider_calls_total";
/// Provider call latency in seconds, by `provider` and `operation`.
pub const PROVIDER_CALL_DURATION: &str = "capture_worker_provider_call_duration_seconds";
/// Captures that reached an outcome, by `provider`, `kind` (`capture`, `release`, `void`) and
/// `outcome` (`succeeded`, `declined`, `attention`).
pub const CAPTURES: &str = "capture_worker_captures_total";
/// Money captured, in minor units of `currency`, by `provider` and `currency`.
pub const CAPTURED_AMOUNT: &str = "capture_worker_captured_amount_minor_total";
/// Retries scheduled, by `provider` and `reason` (`retryable`, `unknown`, `lookup`).
pub const RETRIES: &str = "capture_worker_capture_retries_total";
/// Provider calls in progress in this process.
pub const IN_FLIGHT: &str = "capture_worker_captures_in_flight";
/// The adaptive limit of calls in flight, by `provider` (docs/performance.md).
pub const PROVIDER_CONCURRENCY_LIMIT: &str = "capture_worker_provider_concurrency_limit";
/// Capture and release calls in flight, by `provider`.
pub const PROVIDER_CALLS_IN_FLIGHT: &str = "capture_worker_provider_calls_in_flight";
/// Declines, by `provider` and `decline_code` (event `capture_declined`).
pub const DECLINES: &str = "capture_worker_declines_total";
/// Captures stopped for an operator, by `provider` and `outcome` (event
/// `capture_needs_attention`).
pub const ATTENTION: &str = "capture_worker_captures_attention_total";
/// Captures taken over from a worker that stopped mid-call, by `provider` (event
/// `lease_taken_over`).
pub const LEASE_TAKEOVERS: &str = "capture_worker_lease_takeovers_total";
/// Lost broker connections or consumers (event `consumer_disconnected`).
pub const CONSUMER_DISCONNECTS: &str = "capture_worker_consumer_disconnects_total";
/// 1 while consuming from RabbitMQ, else 0.
pub const CONSUMER_CONNECTED: &str = "capture_worker_consumer_connected";
/// Refused messages that could not be copied to the dead-letter queue, by `reason` (event
/// `dead_letter_failed`).
pub const DEAD_LETTER_FAILURES: &str = "capture_worker_dead_letter_failures_total";
/// Acks that did not reach the broker (event `ack_lost`).
pub const ACKS_LOST: &str = "capture_worker_acks_lost_total";
/// Capture steps that failed on the database (event `capture_step_failed`).
pub const STEP_FAILURES: &str = "capture_worker_capture_step_failures_total";
/// Sweeper passes that failed (event `sweep_failed`).
pub const SWEEP_FAILURES: &str = "capture_worker_sweep_failures_total";
/// Age in seconds of the oldest capture in each unsettled `status` (`queued`, `in_flight`,
/// `pending`, `retrying`, `attention`); 0 when there is none. Read from the ledger on scrape.
pub const OLDEST_CAPTURE_AGE: &str = "capture_worker_oldest_capture_age_seconds";
/// Captures in each unsettled `status`, read from the ledger on scrape.
pub const OPEN_CAPTURES: &str = "capture_worker_captures_open";
/// Open orders whose authorization (its `expires_at`, else the provider's window) expires
/// within 24 hours or already has; read on scrape.
pub const AUTHORIZATIONS_EXPIRING: &str = "capture_worker_authorizations_expiring_soon";
/// 1 when the last scrape could read the ledger gauges, else 0 (their values are then stale).
pub const LEDGER_SCRAPE_OK: &str = "capture_worker_ledger_scrape_ok";
/// Provider notifications (webhooks), by `provider` and `result`: what became of an event
/// (`applied`, `read_back`, `unmatched`, `ignored`, `conflict`, `duplicate`, `error`) or why
/// the delivery was refused (`bad_signature`, `not_configured`, `malformed`,
/// `unknown_provider`, `not_supported`; events `notification_rejected`,
/// `notification_conflict`), and `unrecorded`: a refusal beyond the per-minute record cap.
pub const NOTIFICATIONS: &str = "capture_worker_notifications_total";
/// Open orders found with their authorization about to expire, by `provider` and `action`
/// (`captured`: what had shipped was captured; `at_risk`: nothing could be done; event
/// `authorization_at_risk`).
pub const AUTHORIZATION_DEADLINES: &str = "capture_worker_authorization_deadlines_total";

/// Outcome events published (the broker confirmed them), by `type` (the event type).
pub const OUTCOMES_PUBLISHED: &str = "capture_worker_outcome_events_published_total";
/// Outcome events in the outbox not yet published, read from the ledger on scrape.
pub const OUTBOX_BACKLOG: &str = "capture_worker_outbox_backlog";
/// Age in seconds of the oldest outcome event not yet published (0: none), read on scrape.
pub const OUTBOX_OLDEST_AGE: &str = "capture_worker_outbox_oldest_unpublished_age_seconds";
/// Extensions and increments of holds by the lifecycle sweep, by `provider`, `action`
/// (`extend`, `increment`) and `outcome` (the provider call's: `succeeded`, `pending`,
/// `declined`, `failed`, `retryable`, `unknown`; events `lifecycle_action` and
/// `lifecycle_action_failed`).
pub const LIFECYCLE_ACTIONS: &str = "capture_worker_lifecycle_actions_total";

/// Every metric this service exports (deploy/ files are checked against it).
pub const ALL: &[&str] = &[
    MESSAGES,
    MESSAGES_REJECTED,
    PROVIDER_CALLS,
    PROVIDER_CALL_DURATION,
    CAPTURES,
    CAPTURED_AMOUNT,
    RETRIES,
    IN_FLIGHT,
    PROVIDER_CONCURRENCY_LIMIT,
    PROVIDER_CALLS_IN_FLIGHT,
    DECLINES,
    ATTENTION,
    LEASE_TAKEOVERS,
    CONSUMER_DISCONNECTS,
    CONSUMER_CONNECTED,
    DEAD_LETTER_FAILURES,
    ACKS_LOST,
    STEP_FAILURES,
    SWEEP_FAILURES,
    OLDEST_CAPTURE_AGE,
    OPEN_CAPTURES,
    AUTHORIZATIONS_EXPIRING,
    LEDGER_SCRAPE_OK,
    NOTIFICATIONS,
    AUTHORIZATION_DEADLINES,
    OUTCOMES_PUBLISHED,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    LIFECYCLE_ACTIONS,
];

/// The statuses of a capture that still needs something to happen.
pub const UNSETTLED_STATUSES: &[&str] =
    &["queued", "in_flight", "pending", "retrying", "attention"];

/// Provider latency buckets, in seconds: the sandbox answers in milliseconds, real providers
/// in hundreds of them, and the timeout is 10 s by default.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle. `None` when
/// another recorder was installed first (an embedding program's): then `/metrics` says so.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(PROVIDER_CALL_DURATION.to_owned()),
                    LATENCY_BUCKETS,
                )
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            // Series that exist before their first event, so rates and alerts start at 0.
            counter!(CONSUMER_DISCONNECTS).absolute(0);
            counter!(ACKS_LOST).absolute(0);
            counter!(STEP_FAILURES).absolute(0);
            counter!(SWEEP_FAILURES).absolute(0);
            gauge!(IN_FLIGHT).set(0.0);
            gauge!(CONSUMER_CONNECTED).set(0.0);
            Some(handle)
        })
        .clone()
}

/// The Prometheus text exposition of every metric, or `None` without our recorder.
pub fn render() -> Option<String> {
    let handle = install()?;
    handle.run_upkeep();
    Some(handle.render())
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(MESSAGES, "Messages handled, by contract type and outcome.");
    describe_counter!(MESSAGES_REJECTED, "Messages refused, by reason.");
    describe_counter!(
        PROVIDER_CALLS,
        "Provider calls, by provider, operation and outcome."
    );
    describe_histogram!(
        PROVIDER_CALL_DURATION,
        Unit::Seconds,
        "Provider call latency, by provider and operation."
    );
    describe_counter!(
        CAPTURES,
        "Captures that reached an outcome (succeeded, declined, attention), by provider and kind."
    );
    describe_counter!(
        CAPTURED_AMOUNT,
        "Money captured in integer minor units of the currency, by provider and currency."
    );
    describe_counter!(
        RETRIES,
        "Capture retries scheduled, by provider and reason."
    );
    describe_gauge!(IN_FLIGHT, "Provider calls in progress in this process.");
    describe_gauge!(
        PROVIDER_CONCURRENCY_LIMIT,
        "Capture and release calls this process lets be in flight at once, by provider: adapted to the provider's latency and push-back, within capture.concurrency_min and capture.concurrency."
    );
    describe_gauge!(
        PROVIDER_CALLS_IN_FLIGHT,
        "Capture and release calls in flight, by provider."
    );
    describe_counter!(DECLINES, "Declined captures, by provider and decline code.");
    describe_counter!(
        ATTENTION,
        "Captures stopped for an operator, by provider and the outcome that stopped them."
    );
    describe_counter!(
        LEASE_TAKEOVERS,
        "Captures taken over from a worker that stopped mid-call."
    );
    describe_counter!(
        CONSUMER_DISCONNECTS,
        "Lost RabbitMQ connections or consumers."
    );
    describe_gauge!(CONSUMER_CONNECTED, "1 while consuming from RabbitMQ.");
    describe_counter!(
        DEAD_LETTER_FAILURES,
        "Refused messages not copied to the dead-letter queue (returned to the queue)."
    );
    describe_counter!(ACKS_LOST, "Acks that did not reach the broker.");
    describe_counter!(STEP_FAILURES, "Capture steps that failed on the database.");
    describe_counter!(SWEEP_FAILURES, "Sweeper passes that failed.");
    describe_gauge!(
        OLDEST_CAPTURE_AGE,
        Unit::Seconds,
        "Age of the oldest capture in each unsettled status (0: none)."
    );
    describe_gauge!(OPEN_CAPTURES, "Captures in each unsettled status.");
    describe_counter!(
        NOTIFICATIONS,
        "Provider notifications, by provider and what became of them (or why they were refused)."
    );
    describe_counter!(
        AUTHORIZATION_DEADLINES,
        "Open orders found with their authorization about to expire, by provider and action."
    );
    describe_gauge!(
        AUTHORIZATIONS_EXPIRING,
        "Open orders whose authorization expires within 24 hours or already has."
    );
    describe_counter!(
        OUTCOMES_PUBLISHED,
        "Outcome events the broker confirmed, by event type."
    );
    describe_gauge!(OUTBOX_BACKLOG, "Outcome events not yet published.");
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest outcome event not yet published (0: none)."
    );
    describe_gauge!(
        LEDGER_SCRAPE_OK,
        "1 when the last scrape read the ledger gauges; 0 means they are stale."
    );
}

/// A label value from outside input (a decline code, a routing key): lowercase ASCII letters,
/// digits, `_`, `-` and `.`, at most 48 characters, else `other`. Keeps series bounded and
/// keeps anything resembling free text or card data out of labels.
pub fn label(value: &str) -> String {
    let ok = !value.is_empty()
        && value.len() <= 48
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
        // Long digit runs are never a code we want to see in a label.
        && value.bytes().filter(u8::is_ascii_digit).count() < 6;
    if ok {
        value.to_owned()
    } else {
        "other".to_owned()
    }
}

/// The contract type of a message for the `type` label.
pub fn message_type(routing_key: &str) -> &'static str {
    match routing_key {
        "order.authorized" => "order.authorized",
        "shipment.shipped" => "shipment.shipped",
        "order.lines_cancelled" => "order.lines_cancelled",
        _ => "unknown",
    }
}

/// One message handled.
pub fn message_handled(routing_key: &str, outcome: &'static str) {
    counter!(MESSAGES, "type" => message_type(routing_key), "outcome" => outcome).increment(1);
}

/// One provider call and how long it took.
pub fn provider_call(
    provider: &str,
    operation: &'static str,
    outcome: &'static str,
    took: Duration,
) {
    let provider = label(provider);
    counter!(PROVIDER_CALLS, "provider" => provider.clone(), "operation" => operation, "outcome" => outcome)
        .increment(1);
    histogram!(PROVIDER_CALL_DURATION, "provider" => provider, "operation" => operation)
        .record(took.as_secs_f64());
}

/// A provider's adaptive concurrency limit and its calls in flight now.
pub fn provider_concurrency(provider: &str, limit: usize, in_flight: usize) {
    let provider = label(provider);
    gauge!(PROVIDER_CONCURRENCY_LIMIT, "provider" => provider.clone()).set(limit as f64);
    gauge!(PROVIDER_CALLS_IN_FLIGHT, "provider" => provider).set(in_flight as f64);
}

/// A capture reached `outcome` (`succeeded`, `declined`, `attention`).
pub fn capture_outcome(provider: &str, kind: &'static str, outcome: &'static str) {
    counter!(CAPTURES, "provider" => label(provider), "kind" => kind, "outcome" => outcome)
        .increment(1);
}

/// Money captured, in minor units of `currency`.
pub fn captured(provider: &str, currency: &str, minor_units: i64) {
    if let Ok(amount) = u64::try_from(minor_units)
        && amount > 0
    {
        counter!(CAPTURED_AMOUNT, "provider" => label(provider), "currency" => currency_label(currency))
            .increment(amount);
    }
}

/// A retry was scheduled.
pub fn retry_scheduled(provider: &str, reason: &'static str) {
    counter!(RETRIES, "provider" => label(provider), "reason" => reason).increment(1);
}

/// Counts an outcome event the broker confirmed.
pub fn outcome_published(event_type: &str) {
    counter!(OUTCOMES_PUBLISHED, "type" => label(event_type)).increment(1);
}

/// One provider notification event, or one refused delivery.
pub fn notification(provider: &str, result: &'static str) {
    counter!(NOTIFICATIONS, "provider" => label(provider), "result" => result).increment(1);
}

/// Whether the consumer is consuming.
pub fn consumer_connected(on: bool) {
    gauge!(CONSUMER_CONNECTED).set(if on { 1.0 } else { 0.0 });
}

/// Counts a provider call in flight until dropped.
pub struct InFlight(());

impl InFlight {
    pub fn start() -> InFlight {
        gauge!(IN_FLIGHT).increment(1.0);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!(IN_FLIGHT).decrement(1.0);
    }
}

/// What the ledger says about unsettled work, for the gauges refreshed on scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerSnapshot {
    /// (status, count, age of the oldest in seconds) for the statuses that have captures.
    pub captures: Vec<(String, i64, i64)>,
    pub authorizations_expiring: i64,
    /// Unpublished outcome events and the age in seconds of the oldest.
    pub outbox: (i64, i64),
}

/// Sets the ledger gauges; statuses absent from the snapshot read 0.
pub fn ledger_snapshot(snapshot: Option<&LedgerSnapshot>) {
    let Some(s) = snapshot else {
        gauge!(LEDGER_SCRAPE_OK).set(0.0);
        return;
    };
    for status in UNSETTLED_STATUSES {
        let (count, age) = s
            .captures
            .iter()
            .find(|(st, _, _)| st == status)
            .map(|(_, c, a)| (*c, *a))
            .unwrap_or((0, 0));
        gauge!(OPEN_CAPTURES, "status" => *status).set(count as f64);
        gauge!(OLDEST_CAPTURE_AGE, "status" => *status).set(age.max(0) as f64);
    }
    gauge!(AUTHORIZATIONS_EXPIRING).set(s.authorizations_expiring as f64);
    gauge!(OUTBOX_BACKLOG).set(s.outbox.0 as f64);
    gauge!(OUTBOX_OLDEST_AGE).set(s.outbox.1.max(0) as f64);
    gauge!(LEDGER_SCRAPE_OK).set(1.0);
}

fn currency_label(code: &str) -> String {
    let code = code.trim();
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        code.to_owned()
    } else {
        "other".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_from_outside_input_stay_bounded_and_carry_no_digit_runs() {
        assert_eq!(label("insufficient_funds"), "insufficient_funds");
        assert_eq!(label("card_error/card_declined"), "other");
        assert_eq!(label("4242424242424242"), "other");
        assert_eq!(label("Some Free Text"), "other");
        assert_eq!(label(""), "other");
        assert_eq!(message_type("shipment.shipped"), "shipment.shipped");
        assert_eq!(message_type("anything.else"), "unknown");
        assert_eq!(currency_label("USD "), "USD");
        assert_eq!(currency_label("usd"), "other");
    }
}

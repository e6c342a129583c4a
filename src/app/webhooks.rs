//! The webhook endpoint on `http.listen`: `POST /webhooks/{provider}` for the providers that
//! notify (Adyen, Gr4vy, Checkout.com; PayPal's notifications only prompt a read-back).
//!
//! The adapter of `providers.<provider>` verifies the signature and translates the body into
//! events; each event is recorded once and applied in one transaction (`storage::webhooks`):
//! the capture it answers moves from pending to its outcome with the same effects as a
//! provider answer (the decline latch included), and the order's next capture is dispatched.
//! Answers: 200 (`[accepted]`, which Adyen expects) once every event is recorded, duplicates
//! included; 401 for a missing or bad signature (recorded in `webhook_rejections`, nothing
//! changed); 400 for a body that is not the provider's shape; 404 for a provider that is not
//! configured or sends nothing the worker reads; 500 when the event could not be recorded —
//! never a 200, so the provider sends it again.
//!
//! Anyone can post here, so refusals are bounded: at most [`REJECTIONS_RECORDED_PER_MINUTE`]
//! per worker are recorded, each with at most [`REJECTED_BODY_LIMIT`] characters of body;
//! the rest get the same answer and are counted (`notifications_total{result="unrecorded"}`)
//! without a row.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use tracing::Instrument as _;

use crate::provider::{
    NotificationEffect, NotificationSubject, Outcome, WebhookError, WebhookEvent,
};
use crate::sanitize;
use crate::storage::Store;
use crate::storage::ledger::CaptureKind;
use crate::storage::webhooks::{
    self, Disposition, Effect, NewEvent, Recorded, RejectionReason, Settlement, Subject,
};
use crate::telemetry::events::{self, Emit};
use crate::telemetry::metrics;

use super::execute::Executor;
use super::providers::Providers;

/// Longest body kept in the ledger, in characters.
const BODY_LIMIT: usize = 16_000;
/// Longest body of a refused notification kept, in characters.
pub const REJECTED_BODY_LIMIT: usize = 2_000;
/// Refused notifications recorded per minute by one worker.
pub const REJECTIONS_RECORDED_PER_MINUTE: u32 = 60;

/// How many refused notifications this worker may still record in the current minute.
#[derive(Clone, Default)]
pub struct RejectionBudget(Arc<Mutex<Option<(Instant, u32)>>>);

impl RejectionBudget {
    /// Takes one recording from the current window's budget; false when it is spent.
    fn take(&self) -> bool {
        let mut window = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match window.as_mut() {
            Some((start, used)) if now.duration_since(*start) < Duration::from_secs(60) => {
                *used += 1;
                *used <= REJECTIONS_RECORDED_PER_MINUTE
            }
            _ => {
                *window = Some((now, 1));
                true
            }
        }
    }
}

/// What the webhook routes need.
#[derive(Clone)]
pub struct WebhookState {
    pub store: Store,
    pub providers: Providers,
    pub executor: Executor,
    pub rejections: RejectionBudget,
}

pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/webhooks/{provider}", post(receive))
        .route_layer(axum::middleware::from_fn(server_span))
        .with_state(state)
}

/// Runs one webhook request in its server span, with the attributes of the OpenTelemetry HTTP
/// server span conventions (semantic conventions 1.45): named `<method> <route>`,
/// `http.request.method`, `http.route` (`/webhooks/{provider}`), `url.path`, `url.scheme`,
/// `http.response.status_code`, and `error.type` with status error for a 5xx only (a 4xx is
/// the sender's error, not the server's). The handler adds `provider` and `events`.
async fn server_span(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!(
        "webhook",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method.as_str(),
        http.route = route.as_str(),
        url.path = sanitize::text(request.uri().path(), 256).as_str(),
        url.scheme = "http",
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        provider = tracing::field::Empty,
        events = tracing::field::Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("error.type", status.as_str());
        span.record("otel.status_code", "ERROR");
    }
    response
}

async fn receive(
    State(state): State<WebhookState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    tracing::Span::current().record("provider", sanitize::text(&name, 64).as_str());
    let Some(provider) = state.providers.get(&name) else {
        let shown: String = name.chars().take(64).collect();
        return refuse(
            &state,
            "unknown",
            RejectionReason::UnknownProvider,
            &format!("no provider {shown:?} is configured on this worker"),
            &body,
        )
        .await;
    };
    let read = provider.read_notification(&headers, &body, Utc::now());
    let events = match read {
        Ok(events) => events,
        Err(e) => {
            let reason = match &e {
                WebhookError::NotSupported => RejectionReason::NotSupported,
                WebhookError::NotConfigured => RejectionReason::NotConfigured,
                WebhookError::Unauthenticated(_) => RejectionReason::BadSignature,
                WebhookError::Malformed(_) => RejectionReason::Malformed,
            };
            return refuse(&state, &name, reason, &e.to_string(), &body).await;
        }
    };
    let masked = sanitize::bytes(&body, BODY_LIMIT);
    tracing::Span::current().record("events", events.len() as i64);
    let mut dispatch = Vec::new();
    for event in &events {
        let effect = effect_of(event);
        // An extension or increment the provider settled: applied before the event is recorded
        // (idempotent: only a pending action changes), so a delivery that cannot be recorded
        // and comes again changes nothing twice.
        if event.subject == NotificationSubject::Lifecycle
            && let NotificationEffect::Settle(outcome) = &event.effect
            && let Err(e) = super::lifecycle::settle_notified(
                &state.store,
                &state.providers,
                &name,
                &event.reference,
                event.merchant_reference.as_deref(),
                outcome,
                Utc::now(),
            )
            .await
        {
            tracing::error!(event = "notification_not_recorded", provider = %name, provider_reference = %event.reference, event_type = %event.event_type, error = %e, "a provider notification could not be recorded; answering 500 so the provider sends it again");
            metrics::notification(&name, "error");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the notification could not be recorded; send it again\n",
            )
                .into_response();
        }
        let new = NewEvent {
            provider: &name,
            reference: &event.reference,
            event_type: &event.event_type,
            authorization_id: event.authorization_id.as_deref(),
            merchant_reference: event.merchant_reference.as_deref(),
            subject: match event.subject {
                NotificationSubject::Capture => Subject::Capture,
                NotificationSubject::Release => Subject::Release,
                // Recorded for dedupe only: the lifecycle action was settled above.
                NotificationSubject::Other | NotificationSubject::Lifecycle => Subject::Other,
            },
            effect: &effect,
            body: &masked,
        };
        match webhooks::record_event(state.store.pool(), &new).await {
            Ok(recorded) => {
                report(&name, event, &effect, &recorded);
                if let Some(c) = &recorded.capture
                    && matches!(
                        recorded.disposition,
                        Disposition::Applied | Disposition::ReadBack
                    )
                {
                    dispatch.push(c.order_id.clone());
                }
            }
            Err(e) => {
                // Not recorded: the provider must send it again. Events already recorded
                // from this delivery are duplicates then.
                tracing::error!(event = "notification_not_recorded", provider = %name, provider_reference = %event.reference, event_type = %event.event_type, error = %e, "a provider notification could not be recorded; answering 500 so the provider sends it again");
                metrics::notification(&name, "error");
                for order_id in dispatch {
                    state.executor.dispatch(order_id);
                }
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the notification could not be recorded; send it again\n",
                )
                    .into_response();
            }
        }
    }
    dispatch.dedup();
    for order_id in dispatch {
        state.executor.dispatch(order_id);
    }
    (StatusCode::OK, "[accepted]").into_response()
}

/// Records a refused notification (within the budget) and answers with the matching status;
/// 500 if even the refusal could not be recorded.
async fn refuse(
    state: &WebhookState,
    provider: &str,
    reason: RejectionReason,
    detail: &str,
    body: &[u8],
) -> Response {
    events::NotificationRejected {
        provider,
        reason: reason.as_str(),
        detail,
    }
    .emit();
    let recorded = if state.rejections.take() {
        let body = sanitize::bytes(body, REJECTED_BODY_LIMIT);
        webhooks::record_rejection(state.store.pool(), provider, reason, detail, &body).await
    } else {
        metrics::notification(provider, "unrecorded");
        Ok(())
    };
    if let Err(e) = recorded {
        tracing::error!(event = "notification_not_recorded", provider = %provider, error = %e, "a refused notification could not be recorded");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the notification could not be recorded\n",
        )
            .into_response();
    }
    let status = match reason {
        RejectionReason::BadSignature | RejectionReason::NotConfigured => StatusCode::UNAUTHORIZED,
        RejectionReason::Malformed => StatusCode::BAD_REQUEST,
        RejectionReason::UnknownProvider | RejectionReason::NotSupported => StatusCode::NOT_FOUND,
    };
    (status, format!("{}\n", reason.as_str())).into_response()
}

/// The storage effect of an event.
fn effect_of(event: &WebhookEvent) -> Effect {
    match &event.effect {
        NotificationEffect::Settle(outcome) => match outcome {
            Outcome::Succeeded { reference } => Effect::Settle(Settlement::Succeeded {
                reference: reference.clone().or_else(|| Some(event.reference.clone())),
            }),
            Outcome::Declined { code, message } => Effect::Settle(Settlement::Declined {
                code: code.clone(),
                message: message.clone(),
            }),
            Outcome::Failed { reason } => Effect::Settle(Settlement::Failed {
                reason: reason.clone(),
            }),
            // Not final: treat as a prompt to read the authorization back.
            Outcome::Pending { .. } | Outcome::Retryable { .. } | Outcome::Unknown { .. } => {
                Effect::ReadBack
            }
        },
        NotificationEffect::ReadBack => Effect::ReadBack,
        NotificationEffect::Ignore => Effect::Ignore,
    }
}

/// Logs, counts and raises the alert events of one recorded event.
fn report(provider: &str, event: &WebhookEvent, effect: &Effect, recorded: &Recorded) {
    // A conflict is counted by its alert event.
    if recorded.disposition != Disposition::Conflict {
        metrics::notification(provider, recorded.disposition.as_str());
    }
    let capture = recorded.capture.as_ref();
    match (recorded.disposition, effect, capture) {
        (Disposition::Applied, Effect::Settle(settlement), Some(c)) => {
            let kind = c.kind.as_str();
            match settlement {
                Settlement::Succeeded { .. } => {
                    metrics::capture_outcome(provider, kind, "succeeded");
                    if c.kind == CaptureKind::Capture {
                        metrics::captured(provider, &c.currency, c.amount);
                    }
                    tracing::info!(event = "capture_settled_by_notification", provider = %provider, order_id = %c.order_id, capture_id = c.capture_id, kind, provider_reference = %event.reference, event_type = %event.event_type, "the provider's notification settled the capture");
                }
                Settlement::Declined { code, .. } => {
                    metrics::capture_outcome(provider, kind, "declined");
                    events::CaptureDeclined {
                        provider,
                        decline_code: code,
                        order_id: &c.order_id,
                        capture_id: c.capture_id,
                        authorization_id: &c.authorization_id,
                        amount: c.amount,
                        currency: &c.currency,
                    }
                    .emit();
                }
                Settlement::Failed { reason } => {
                    metrics::capture_outcome(provider, kind, "attention");
                    events::CaptureNeedsAttention {
                        provider,
                        outcome: "failed",
                        order_id: &c.order_id,
                        capture_id: c.capture_id,
                        error: reason,
                    }
                    .emit();
                }
            }
        }
        (Disposition::Conflict, _, Some(c)) => events::NotificationConflict {
            provider,
            event_type: &event.event_type,
            provider_reference: &event.reference,
            order_id: &c.order_id,
            capture_id: c.capture_id,
            detail: recorded.detail.as_deref().unwrap_or(""),
        }
        .emit(),
        (disposition, _, _) => tracing::info!(
            event = "notification_recorded",
            provider = %provider,
            disposition = disposition.as_str(),
            provider_reference = %event.reference,
            event_type = %event.event_type,
            order_id = capture.map(|c| c.order_id.as_str()).unwrap_or(""),
            "provider notification recorded"
        ),
    }
}

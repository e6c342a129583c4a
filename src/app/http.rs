//! The operations endpoints on `http.listen`: `/healthz` (the process answers), `/readyz`
//! (consuming from the broker and the database reachable) and `/metrics` (Prometheus text).
//! The provider webhooks on the same listener are `app::webhooks`.
//!
//! `/metrics` also refreshes the gauges that describe the ledger rather than this process (the
//! oldest unsettled capture per status, authorizations about to expire) with two small
//! read-only queries, so they are as fresh as the scrape and cost nothing when nobody scrapes.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::queue::consumer::ConsumerStatus;

use super::providers::Providers;
use crate::domain::CapabilityLookup;
use crate::storage::{StorageError, Store, gauges};
use crate::telemetry::metrics::{self, LedgerSnapshot};

/// How long a scrape waits for the ledger before rendering stale ledger gauges.
const LEDGER_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct HealthState {
    pub store: Store,
    pub consumer: ConsumerStatus,
    /// For each provider's authorization window (orders without `expires_at`).
    pub providers: Providers,
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

async fn readyz(State(state): State<HealthState>) -> impl IntoResponse {
    let consuming = state.consumer.is_consuming();
    let database = state.store.ping().await;
    let body = serde_json::json!({ "consuming": consuming, "database": database }).to_string();
    let status = if consuming && database {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [("content-type", "application/json")], body)
}

async fn metrics_text(State(state): State<HealthState>) -> impl IntoResponse {
    let snapshot = match tokio::time::timeout(
        LEDGER_QUERY_TIMEOUT,
        ledger_snapshot(&state.store, &state.providers),
    )
    .await
    {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "ledger gauges not refreshed");
            None
        }
        Err(_) => None,
    };
    metrics::ledger_snapshot(snapshot.as_ref());
    match metrics::render() {
        Some(text) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            text,
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "text/plain; charset=utf-8")],
            "another metrics recorder is installed in this process\n".to_owned(),
        ),
    }
}

/// Unsettled captures per status with the age of the oldest, and open orders whose
/// authorization (its `expires_at`, else its provider's window) expires within a day, and the
/// outbox backlog.
async fn ledger_snapshot(
    store: &Store,
    providers: &Providers,
) -> Result<LedgerSnapshot, StorageError> {
    let captures = gauges::unsettled_captures(store.pool()).await?;
    let names = providers.names();
    let windows: Vec<Option<i64>> = names
        .iter()
        .map(|n| {
            providers
                .capabilities(n)
                .and_then(|c| c.authorization_window)
                .map(|w| w.num_seconds())
        })
        .collect();
    let authorizations_expiring =
        gauges::authorizations_expiring_within_a_day(store.pool(), &names, &windows).await?;
    let outbox = crate::storage::outbox::backlog(store.pool()).await?;
    Ok(LedgerSnapshot {
        captures,
        authorizations_expiring,
        outbox,
    })
}

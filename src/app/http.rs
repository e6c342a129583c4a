//! The operations endpoints on `http.listen`: `/healthz` (the process answers), `/readyz`
//! (consuming from the broker and the database reachable) and `/metrics` (Prometheus text).
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
use sqlx::PgPool;

use crate::queue::consumer::ConsumerStatus;
use crate::storage::Store;
use crate::telemetry::metrics::{self, LedgerSnapshot};

/// How long a scrape waits for the ledger before rendering stale ledger gauges.
const LEDGER_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct HealthState {
    pub store: Store,
    pub consumer: ConsumerStatus,
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
    let snapshot =
        match tokio::time::timeout(LEDGER_QUERY_TIMEOUT, ledger_snapshot(state.store.pool())).await
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
/// authorization expires within a day. Read-only; the partial index on unsettled captures
/// keeps it cheap.
async fn ledger_snapshot(pool: &PgPool) -> Result<LedgerSnapshot, sqlx::Error> {
    let captures: Vec<(String, i64, i64)> = sqlx::query_as(
        "select status, count(*)::bigint,
                coalesce(extract(epoch from now() - min(created_at)), 0)::bigint
         from captures
         where status in ('queued', 'in_flight', 'pending', 'retrying', 'attention')
         group by status",
    )
    .fetch_all(pool)
    .await?;
    let authorizations_expiring: i64 = sqlx::query_scalar(
        "select count(*)::bigint from orders
         where phase = 'open' and authorization_expires_at < now() + interval '24 hours'",
    )
    .fetch_one(pool)
    .await?;
    Ok(LedgerSnapshot {
        captures,
        authorizations_expiring,
    })
}

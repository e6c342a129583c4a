//! Health endpoints on `http.listen`: `/healthz` (the process answers) and `/readyz`
//! (consuming from the broker and the database reachable).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::queue::consumer::ConsumerStatus;
use crate::storage::Store;

#[derive(Clone)]
pub struct HealthState {
    pub store: Store,
    pub consumer: ConsumerStatus,
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
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

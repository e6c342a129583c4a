//! The outbox of outcome events (`outcome_events`): the relay's claim, publication marks and
//! retention, the backlog figures for `/metrics`, and one order's events for `order show`.
//!
//! The rows are written by triggers on the ledger transitions they report (migration
//! `20261207310000_outcome_outbox.sql`; captures that succeed, once per statement:
//! `20261208110000_capture_succeeded_events_per_statement.sql`), so no function here creates
//! an event, except the expiry warning in [`super::deadlines::at_risk`].
//!
//! A claim is a transaction that holds its rows (`FOR UPDATE SKIP LOCKED`) while the relay
//! publishes them: another relay skips them, and a relay that dies lets them go with its
//! connection. It takes only the oldest unpublished event of each order, so an order's events
//! are published one after the other, in sequence, whichever replica publishes them.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::{Ctx, StorageError, outside};

/// An event waiting to be published.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    pub outcome_event_id: i64,
    pub event_id: String,
    pub event_type: String,
    pub order_id: Option<String>,
    pub sequence: Option<i64>,
    pub occurred_at: DateTime<Utc>,
    pub data: serde_json::Value,
    pub traceparent: Option<String>,
}

/// Events claimed by one relay, held until [`Claim::finish`] (or dropped: released unmarked).
pub struct Claim {
    tx: Transaction<'static, Postgres>,
    pub events: Vec<PendingEvent>,
}

/// Claims up to `limit` events: the oldest unpublished event of each order that no other relay
/// holds, oldest first.
pub async fn claim(pool: &PgPool, limit: i64) -> Result<Claim, StorageError> {
    const CTX: &str = "claiming outcome events to publish";
    let mut tx = pool.begin().await.ctx(CTX)?;
    let rows = sqlx::query(
        "select e.outcome_event_id, e.event_id::text as event_id, e.event_type, e.order_id,
                e.sequence, e.occurred_at, e.data, e.traceparent
         from outcome_events e
         where e.published_at is null
           -- only an order's head: an earlier unpublished event (held by another relay or
           -- not) makes this one wait
           and not exists (select 1 from outcome_events p
                           where p.published_at is null and p.order_id = e.order_id
                             and p.sequence < e.sequence)
         order by e.outcome_event_id
         limit $1
         for update of e skip locked",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await
    .ctx(CTX)?;
    let events = rows
        .into_iter()
        .map(|r| PendingEvent {
            outcome_event_id: r.get("outcome_event_id"),
            event_id: r.get("event_id"),
            event_type: r.get("event_type"),
            order_id: r.get("order_id"),
            sequence: r.get("sequence"),
            occurred_at: r.get("occurred_at"),
            data: r.get("data"),
            traceparent: r.get("traceparent"),
        })
        .collect();
    Ok(Claim { tx, events })
}

impl Claim {
    /// Marks the confirmed events published and records the failures, then lets the rows go.
    pub async fn finish(
        mut self,
        published: &[i64],
        failed: &[(i64, String)],
    ) -> Result<(), StorageError> {
        const CTX: &str = "marking outcome events published";
        if !published.is_empty() {
            sqlx::query(
                "update outcome_events set published_at = now()
                 where outcome_event_id = any($1) and published_at is null",
            )
            .bind(published)
            .execute(&mut *self.tx)
            .await
            .ctx(CTX)?;
        }
        if !failed.is_empty() {
            let ids: Vec<i64> = failed.iter().map(|(id, _)| *id).collect();
            let errors: Vec<String> = failed.iter().map(|(_, e)| outside(e)).collect();
            sqlx::query(
                "update outcome_events e
                 set publish_failures = e.publish_failures + 1, last_error = f.error
                 from unnest($1::bigint[], $2::text[]) as f(id, error)
                 where e.outcome_event_id = f.id",
            )
            .bind(&ids)
            .bind(&errors)
            .execute(&mut *self.tx)
            .await
            .ctx("recording failed outcome event publishes")?;
        }
        self.tx.commit().await.ctx(CTX)
    }
}

/// Deletes up to `limit` events published more than `retention_seconds` ago; returns how many.
pub async fn prune(pool: &PgPool, retention_seconds: i64, limit: i64) -> Result<u64, StorageError> {
    let done = sqlx::query(
        "delete from outcome_events where outcome_event_id in (
             select outcome_event_id from outcome_events
             where published_at is not null
               and published_at < now() - make_interval(secs => $1)
             order by published_at
             limit $2)",
    )
    .bind(retention_seconds as f64)
    .bind(limit)
    .execute(pool)
    .await
    .ctx("pruning published outcome events")?;
    Ok(done.rows_affected())
}

/// The outbox backlog: unpublished events and the age in seconds of the oldest (0 when none).
pub async fn backlog(pool: &PgPool) -> Result<(i64, i64), StorageError> {
    sqlx::query_as(
        "select count(*)::bigint,
                coalesce(extract(epoch from now() - min(occurred_at)), 0)::bigint
         from outcome_events where published_at is null",
    )
    .fetch_one(pool)
    .await
    .ctx("measuring the outcome event backlog")
}

/// One of an order's events, as `order show` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OrderEvent {
    pub sequence: i64,
    pub event_type: String,
    pub event_id: String,
    pub occurred_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub publish_failures: i32,
    pub last_error: Option<String>,
}

/// An order's events in sequence (those not yet pruned).
pub async fn order_events(pool: &PgPool, order_id: &str) -> Result<Vec<OrderEvent>, StorageError> {
    let rows = sqlx::query(
        "select sequence, event_type, event_id::text as event_id, occurred_at, published_at,
                publish_failures, last_error
         from outcome_events where order_id = $1 order by sequence",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
    .ctx("reading the order's outcome events")?;
    Ok(rows
        .into_iter()
        .map(|r| OrderEvent {
            sequence: r.get("sequence"),
            event_type: r.get("event_type"),
            event_id: r.get("event_id"),
            occurred_at: r.get("occurred_at"),
            published_at: r.get("published_at"),
            publish_failures: r.get("publish_failures"),
            last_error: r.get("last_error"),
        })
        .collect())
}

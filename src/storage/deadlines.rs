//! The expiry sweep's SQL: open orders whose authorization's deadline is near.
//!
//! An authorization's deadline is the `expires_at` checkout sent, else its provider's window
//! after `authorized_at` (DESIGN §3.4; `domain::authorization_deadline` is the same rule).
//! The only write: the first time an authorization is found at risk for a deadline, a row of
//! `expiry_warnings`, whose trigger emits the `authorization.expiring` outcome event in the
//! same statement (once per authorization and deadline, however many workers sweep). The
//! partial indexes on open orders keep it cheap.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

use super::{Ctx, StorageError};

/// A provider's authorization window and how long before the deadline the worker acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderWindow {
    pub provider: String,
    /// `None`: the provider has no default window; only orders with `expires_at` count.
    pub window_seconds: Option<i64>,
    pub ahead_seconds: i64,
}

/// An open order whose authorization's deadline is within its provider's `capture_ahead`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtRisk {
    pub order_id: String,
    pub provider: String,
    pub authorization_id: String,
    pub deadline: DateTime<Utc>,
    /// Shipped units whose value is not in a capture yet (a single-capture provider waiting
    /// for the last parcel, or coalescing before a capture limit).
    pub waiting: bool,
    /// Value the order still expects: authorized minus claimed.
    pub unclaimed: i64,
}

/// Open orders of the given providers whose deadline is near, soonest first; each one found
/// for the first time at this deadline is warned about (`authorization.expiring`).
pub async fn at_risk(
    pool: &PgPool,
    windows: &[ProviderWindow],
    limit: i64,
) -> Result<Vec<AtRisk>, StorageError> {
    let providers: Vec<&str> = windows.iter().map(|w| w.provider.as_str()).collect();
    let window: Vec<Option<i64>> = windows.iter().map(|w| w.window_seconds).collect();
    let ahead: Vec<i64> = windows.iter().map(|w| w.ahead_seconds).collect();
    let rows = sqlx::query(
        "with w as (
             select * from unnest($1::text[], $2::bigint[], $3::bigint[])
                 as w(provider, window_seconds, ahead_seconds)
         ), o as (
             select o.order_id, o.provider, o.authorization_id,
                    o.authorized_amount - o.claimed_amount as unclaimed,
                    coalesce(o.authorization_expires_at,
                             o.authorized_at + make_interval(secs => w.window_seconds)) as deadline,
                    w.ahead_seconds
             from orders o join w on w.provider = o.provider
             where o.phase = 'open'
         ), found as (
             select o.order_id, o.provider, o.authorization_id, o.deadline, o.unclaimed,
                    exists (select 1 from order_lines l
                            where l.order_id = o.order_id
                              and l.shipped_quantity > l.charged_quantity) as waiting
             from o
             where o.deadline is not null
               and o.deadline <= now() + make_interval(secs => o.ahead_seconds)
             order by o.deadline
             limit $4
         ), warned as (
             -- once per authorization and deadline; its trigger writes authorization.expiring
             insert into expiry_warnings (provider, authorization_id, deadline, order_id)
             select provider, authorization_id, deadline, order_id from found
             on conflict do nothing
         )
         select * from found order by deadline",
    )
    .bind(&providers)
    .bind(&window)
    .bind(&ahead)
    .bind(limit)
    .fetch_all(pool)
    .await
    .ctx("finding authorizations about to expire")?;
    Ok(rows
        .into_iter()
        .map(|r| AtRisk {
            order_id: r.get("order_id"),
            provider: r.get("provider"),
            authorization_id: r.get("authorization_id"),
            deadline: r.get("deadline"),
            waiting: r.get("waiting"),
            unclaimed: r.get("unclaimed"),
        })
        .collect())
}

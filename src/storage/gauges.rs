//! Read-only figures for the ledger gauges on `/metrics`: unsettled captures per status with the
//! age of the oldest, and open orders whose authorization expires soon. The partial indexes on
//! unsettled captures and open orders keep both cheap.

use sqlx::PgPool;

use super::{Ctx, StorageError};

/// Unsettled captures per status: `(status, count, age in seconds of the oldest)`.
pub async fn unsettled_captures(pool: &PgPool) -> Result<Vec<(String, i64, i64)>, StorageError> {
    sqlx::query_as(
        "select status, count(*)::bigint,
                coalesce(extract(epoch from now() - min(created_at)), 0)::bigint
         from captures
         where status in ('queued', 'in_flight', 'pending', 'retrying', 'attention')
         group by status",
    )
    .fetch_all(pool)
    .await
    .ctx("counting unsettled captures")
}

/// Open orders whose authorization (its `expires_at`, else `authorized_at` plus its provider's
/// window in seconds, from `providers` and `windows` in step) expires within a day.
pub async fn authorizations_expiring_within_a_day(
    pool: &PgPool,
    providers: &[String],
    windows: &[Option<i64>],
) -> Result<i64, StorageError> {
    sqlx::query_scalar(
        "select count(*)::bigint from orders o
         left join unnest($1::text[], $2::bigint[]) as w(provider, window_seconds)
             on w.provider = o.provider
         where o.phase = 'open'
           and coalesce(o.authorization_expires_at,
                        o.authorized_at + make_interval(secs => w.window_seconds))
               < now() + interval '24 hours'",
    )
    .bind(providers)
    .bind(windows)
    .fetch_one(pool)
    .await
    .ctx("counting authorizations that expire within a day")
}

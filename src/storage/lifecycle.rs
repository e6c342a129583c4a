//! The lifecycle sweep's SQL: the open orders it looks at, what it needs to know about each
//! hold beyond the order's own row, and the `lifecycle_actions` ledger (one row per extension
//! or increment, planned with its idempotency key before the provider is called).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};

use super::ledger::{self, StoredOrder};
use super::{Ctx, StorageError};
use crate::domain::{OrderId, Phase};

/// Open orders of `providers`, oldest authorization first.
pub async fn open_orders(
    pool: &PgPool,
    providers: &[String],
    limit: i64,
) -> Result<Vec<String>, StorageError> {
    sqlx::query_scalar(
        "select order_id from orders
         where phase = 'open' and provider = any($1)
         order by authorized_at
         limit $2",
    )
    .bind(providers)
    .bind(limit)
    .fetch_all(pool)
    .await
    .ctx("listing the open orders the lifecycle sweep looks at")
}

/// An open order and its hold's facts, read in one read-only transaction with one snapshot for
/// all its reads (`repeatable read`): an action another worker records between two reads (its
/// answer and the raised amount on the order, in one transaction) is seen in both or in
/// neither. Seen in neither, the action is still `planned` and is resent under its key; a stale
/// order beside fresh facts would plan another increment under a new key. `None` when the
/// order is gone or no longer open.
pub async fn open_order_with_facts(
    pool: &PgPool,
    order_id: &OrderId,
) -> Result<Option<(StoredOrder, HoldFacts)>, StorageError> {
    const CTX: &str = "reading an order and its hold's facts for the lifecycle sweep";
    let mut tx = pool.begin().await.ctx(CTX)?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await
        .ctx(CTX)?;
    let Some(stored) = ledger::load_order(&mut tx, order_id, false).await? else {
        return Ok(None);
    };
    if stored.state.phase != Phase::Open {
        return Ok(None);
    }
    let facts = facts(&mut tx, order_id.as_str()).await?;
    tx.commit().await.ctx(CTX)?;
    Ok(Some((stored, facts)))
}

/// What the sweep knows of an order beyond its row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HoldFacts {
    /// Σ succeeded captures.
    pub captured: i64,
    /// When the last shipment was recorded.
    pub last_shipment_at: Option<DateTime<Utc>>,
    /// Extensions and increments asked for (any outcome but `failed` before sending).
    pub extensions: u32,
    pub increments: u32,
    /// When the last extension that succeeded was answered.
    pub last_extension_at: Option<DateTime<Utc>>,
    /// An action the provider accepted and has not settled yet (Adyen's adjustment, until
    /// its notification): nothing more is asked meanwhile.
    pub awaiting: bool,
    /// The next action's sequence.
    pub next_sequence: u32,
    /// An action not finished yet (a worker stopped mid-call), to resend under its key.
    pub unfinished: Option<ActionRow>,
}

/// The facts of `order_id`'s hold.
pub async fn facts(conn: &mut PgConnection, order_id: &str) -> Result<HoldFacts, StorageError> {
    const CTX: &str = "reading what the lifecycle sweep needs to know about a hold";
    let captured: i64 = sqlx::query_scalar(
        "select coalesce(sum(amount), 0)::bigint from captures
         where order_id = $1 and kind = 'capture' and status = 'succeeded'",
    )
    .bind(order_id)
    .fetch_one(&mut *conn)
    .await
    .ctx(CTX)?;
    let last_shipment_at: Option<DateTime<Utc>> =
        sqlx::query_scalar("select max(created_at) from shipments where order_id = $1")
            .bind(order_id)
            .fetch_one(&mut *conn)
            .await
            .ctx(CTX)?;
    let counts = sqlx::query(
        "select count(*) filter (where action = 'extend' and status <> 'failed') as extensions,
                count(*) filter (where action = 'increment' and status <> 'failed') as increments,
                max(finished_at) filter (where action = 'extend' and status = 'succeeded')
                    as last_extension_at,
                count(*) filter (where status = 'pending') > 0 as awaiting,
                coalesce(max(sequence), 0) + 1 as next_sequence
         from lifecycle_actions where order_id = $1",
    )
    .bind(order_id)
    .fetch_one(&mut *conn)
    .await
    .ctx(CTX)?;
    let count =
        |name: &str| -> u32 { u32::try_from(counts.get::<i64, _>(name)).unwrap_or(u32::MAX) };
    let next_sequence = u32::try_from(counts.get::<i32, _>("next_sequence")).unwrap_or(u32::MAX);
    let unfinished = sqlx::query(
        "select * from lifecycle_actions
         where order_id = $1 and status in ('planned', 'unknown')
         order by sequence limit 1",
    )
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await
    .ctx(CTX)?
    .map(|r| action_row(&r));
    Ok(HoldFacts {
        captured,
        last_shipment_at,
        extensions: count("extensions"),
        increments: count("increments"),
        last_extension_at: counts.get("last_extension_at"),
        awaiting: counts.get("awaiting"),
        next_sequence,
        unfinished,
    })
}

/// One lifecycle action as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRow {
    pub order_id: String,
    pub sequence: i32,
    pub provider: String,
    pub authorization_id: String,
    pub action: String,
    pub reason: String,
    pub currency: String,
    pub authorized_before: i64,
    pub increase: i64,
    pub idempotency_key: String,
    pub status: String,
    pub provider_reference: Option<String>,
    pub provider_code: Option<String>,
    pub new_authorization_id: Option<String>,
    pub new_amount: Option<i64>,
    pub new_expires_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub planned_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

fn action_row(r: &sqlx::postgres::PgRow) -> ActionRow {
    ActionRow {
        order_id: r.get("order_id"),
        sequence: r.get("sequence"),
        provider: r.get("provider"),
        authorization_id: r.get("authorization_id"),
        action: r.get("action"),
        reason: r.get("reason"),
        currency: r.get::<String, _>("currency"),
        authorized_before: r.get("authorized_before"),
        increase: r.get("increase"),
        idempotency_key: r.get("idempotency_key"),
        status: r.get("status"),
        provider_reference: r.get("provider_reference"),
        provider_code: r.get("provider_code"),
        new_authorization_id: r.get("new_authorization_id"),
        new_amount: r.get("new_amount"),
        new_expires_at: r.get("new_expires_at"),
        error: r.get("error"),
        planned_at: r.get("planned_at"),
        finished_at: r.get("finished_at"),
    }
}

/// Records an action before its call, under the order's intake lock: a shipment planned at
/// the same time is planned either before the action exists or after, when it sees the
/// increment unanswered and waits for it. `false` when another worker planned this sequence
/// first (the caller then leaves the order to it).
pub async fn plan_action(pool: &PgPool, row: &ActionRow) -> Result<bool, StorageError> {
    const CTX: &str = "recording a lifecycle action before its call";
    let order_id = OrderId::parse(row.order_id.clone()).map_err(|e| StorageError::Corrupt {
        context: CTX,
        detail: e.to_string(),
    })?;
    let mut tx = pool.begin().await.ctx(CTX)?;
    ledger::lock_order_key(&mut tx, &order_id).await?;
    let done = sqlx::query(
        "insert into lifecycle_actions (order_id, sequence, provider, authorization_id, action,
             reason, currency, authorized_before, increase, idempotency_key, status, planned_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'planned', $11)
         on conflict (order_id, sequence) do nothing",
    )
    .bind(&row.order_id)
    .bind(row.sequence)
    .bind(&row.provider)
    .bind(&row.authorization_id)
    .bind(&row.action)
    .bind(&row.reason)
    .bind(&row.currency)
    .bind(row.authorized_before)
    .bind(row.increase)
    .bind(&row.idempotency_key)
    .bind(row.planned_at)
    .execute(&mut *tx)
    .await
    .ctx(CTX)?;
    tx.commit().await.ctx(CTX)?;
    Ok(done.rows_affected() == 1)
}

/// The answer to an action's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionAnswer<'a> {
    pub status: &'a str,
    pub provider_reference: Option<&'a str>,
    pub provider_code: Option<&'a str>,
    pub http_status: Option<i32>,
    pub new_authorization_id: Option<&'a str>,
    pub new_amount: Option<i64>,
    pub new_expires_at: Option<DateTime<Utc>>,
    pub error: Option<&'a str>,
}

/// Records the answer to the action under `idempotency_key`, and, for one that succeeded,
/// puts the hold it reports on the order (amount, expiry, and for a reauthorization the new
/// authorization, keeping the replaced one in `superseded_authorizations`), in one
/// transaction.
pub async fn finish_action(
    pool: &PgPool,
    idempotency_key: &str,
    answer: &ActionAnswer<'_>,
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    const CTX: &str = "recording the answer to a lifecycle action";
    let mut tx = pool.begin().await.ctx(CTX)?;
    let row = sqlx::query(
        "update lifecycle_actions set status = $2, provider_reference = $3, provider_code = $4,
             http_status = $5, new_authorization_id = $6, new_amount = $7, new_expires_at = $8,
             error = $9, finished_at = $10
         where idempotency_key = $1 and status in ('planned', 'unknown')
         returning order_id",
    )
    .bind(idempotency_key)
    .bind(answer.status)
    .bind(answer.provider_reference)
    .bind(answer.provider_code)
    .bind(answer.http_status)
    .bind(answer.new_authorization_id)
    .bind(answer.new_amount)
    .bind(answer.new_expires_at)
    .bind(answer.error)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await
    .ctx(CTX)?;
    // Already settled by the provider's notification, which overtook the call's answer.
    let Some(row) = row else {
        return Ok(());
    };
    let order_id: String = row.get("order_id");
    if answer.status == "succeeded" {
        if let Some(new_id) = answer.new_authorization_id {
            sqlx::query(
                "insert into superseded_authorizations (provider, authorization_id, order_id,
                     authorized_amount, over_capture_allowance, authorized_at, expires_at,
                     declined_code, declined_at, superseded_by)
                 select provider, authorization_id, order_id, authorized_amount,
                        over_capture_allowance, authorized_at, authorization_expires_at,
                        declined_code, declined_at, $2
                 from orders where order_id = $1 and authorization_id <> $2",
            )
            .bind(&order_id)
            .bind(new_id)
            .execute(&mut *tx)
            .await
            .ctx(CTX)?;
        }
        sqlx::query(
            "update orders set
                 authorization_id = coalesce($2, authorization_id),
                 authorized_amount = greatest(authorized_amount, coalesce($3, authorized_amount)),
                 authorization_expires_at = coalesce($4, authorization_expires_at),
                 updated_at = now()
             where order_id = $1",
        )
        .bind(&order_id)
        .bind(answer.new_authorization_id)
        .bind(answer.new_amount)
        .bind(answer.new_expires_at)
        .execute(&mut *tx)
        .await
        .ctx(CTX)?;
    }
    tx.commit().await.ctx(CTX)?;
    Ok(())
}

/// Settles the pending action of `provider` whose pending answer gave `reference` (Adyen's
/// adjustment, by its notification): `succeeded` puts the amount asked and `expires_at` on the
/// order. Returns the order, or `None` when no pending action carries the reference (already
/// settled, or not ours). Idempotent.
#[allow(clippy::too_many_arguments)]
pub async fn settle_pending(
    pool: &PgPool,
    provider: &str,
    reference: &str,
    merchant_reference: Option<&str>,
    succeeded: bool,
    error: Option<&str>,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Option<String>, StorageError> {
    const CTX: &str = "settling a lifecycle action from its notification";
    let mut tx = pool.begin().await.ctx(CTX)?;
    let row = sqlx::query(
        "update lifecycle_actions set status = $3, error = $4, finished_at = $5,
             new_amount = case when $3 = 'succeeded' then authorized_before + increase end,
             new_expires_at = case when $3 = 'succeeded' then $6 end
         where provider = $1 and status in ('pending', 'planned', 'unknown')
           and (provider_reference = $2
                or order_id || '/' || action || '-' || sequence = $7)
         returning order_id, authorized_before + increase as total",
    )
    .bind(provider)
    .bind(reference)
    .bind(if succeeded { "succeeded" } else { "declined" })
    .bind(error)
    .bind(now)
    .bind(expires_at)
    .bind(merchant_reference)
    .fetch_optional(&mut *tx)
    .await
    .ctx(CTX)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let order_id: String = row.get("order_id");
    if succeeded {
        let total: i64 = row.get("total");
        sqlx::query(
            "update orders set authorized_amount = greatest(authorized_amount, $2),
                 authorization_expires_at = coalesce(greatest(authorization_expires_at, $3), $3,
                                                     authorization_expires_at),
                 updated_at = now()
             where order_id = $1",
        )
        .bind(&order_id)
        .bind(total)
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .ctx(CTX)?;
    }
    tx.commit().await.ctx(CTX)?;
    Ok(Some(order_id))
}

/// Every lifecycle action of `order_id`, in order.
pub async fn actions(pool: &PgPool, order_id: &str) -> Result<Vec<ActionRow>, StorageError> {
    let rows = sqlx::query("select * from lifecycle_actions where order_id = $1 order by sequence")
        .bind(order_id)
        .fetch_all(pool)
        .await
        .ctx("reading an order's lifecycle actions")?;
    Ok(rows.iter().map(action_row).collect())
}

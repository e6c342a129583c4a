//! Operator and finance SQL: the reconciliation report, one order's story, putting a capture
//! that needs attention back in the queue, resuming a declined order on a new authorization,
//! refused messages and their requeue, and the authorizations to compare with the provider.
//!
//! Reads go through finance's views where one fits, so the commands show what finance sees.
//! Writes run inside the caller's transaction where several must commit together.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};

use super::ledger::StoredCaptureLine;
use super::{Ctx, StorageError, Store};

/// One row of `reconciliation_daily`: a UTC day, a currency and a provider. The view's amounts
/// are numeric (a day's sum can exceed 64 bits); they are read as 128-bit integers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailyRow {
    pub day: NaiveDate,
    pub currency: String,
    pub provider: String,
    pub authorized_amount: i128,
    pub authorization_count: i64,
    pub captured_amount: i128,
    pub capture_count: i64,
    pub released_amount: i128,
    pub release_count: i64,
    pub declined_amount: i128,
    pub decline_count: i64,
    pub provider_calls: i64,
    pub calls_succeeded: i64,
    pub calls_pending: i64,
    pub calls_declined: i64,
    pub calls_retryable: i64,
    pub calls_failed: i64,
    pub calls_unknown: i64,
}

/// Days `from..=to` of `reconciliation_daily`, by day, currency and provider.
pub async fn daily(
    pool: &PgPool,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DailyRow>, StorageError> {
    let rows = sqlx::query(
        "select day, trim(currency) as currency, provider,
                authorized_amount::text as authorized_amount, authorization_count,
                captured_amount::text as captured_amount, capture_count,
                released_amount::text as released_amount, release_count,
                declined_amount::text as declined_amount, decline_count, provider_calls, calls_succeeded, calls_pending, calls_declined,
                calls_retryable, calls_failed, calls_unknown
         from reconciliation_daily where day between $1 and $2
         order by day, currency, provider",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .ctx("reading reconciliation_daily")?;
    let amount = |r: &sqlx::postgres::PgRow, column: &str| -> Result<i128, StorageError> {
        let text: String = r.get(column);
        text.parse().map_err(|_| StorageError::Corrupt {
            context: "reading reconciliation_daily",
            detail: format!("{column} {text:?} is not a whole number of minor units"),
        })
    };
    rows.into_iter()
        .map(|r| {
            Ok(DailyRow {
                day: r.get("day"),
                currency: r.get("currency"),
                provider: r.get("provider"),
                authorized_amount: amount(&r, "authorized_amount")?,
                authorization_count: r.get("authorization_count"),
                captured_amount: amount(&r, "captured_amount")?,
                capture_count: r.get("capture_count"),
                released_amount: amount(&r, "released_amount")?,
                release_count: r.get("release_count"),
                declined_amount: amount(&r, "declined_amount")?,
                decline_count: r.get("decline_count"),
                provider_calls: r.get("provider_calls"),
                calls_succeeded: r.get("calls_succeeded"),
                calls_pending: r.get("calls_pending"),
                calls_declined: r.get("calls_declined"),
                calls_retryable: r.get("calls_retryable"),
                calls_failed: r.get("calls_failed"),
                calls_unknown: r.get("calls_unknown"),
            })
        })
        .collect()
}

/// Open problems of one kind in `reconciliation_exceptions` (default thresholds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionCount {
    pub kind: String,
    pub count: i64,
}

pub async fn exception_counts(pool: &PgPool) -> Result<Vec<ExceptionCount>, StorageError> {
    let rows = sqlx::query(
        "select kind, count(*) as n from reconciliation_exceptions group by kind order by kind",
    )
    .fetch_all(pool)
    .await
    .ctx("counting reconciliation_exceptions")?;
    Ok(rows
        .into_iter()
        .map(|r| ExceptionCount {
            kind: r.get("kind"),
            count: r.get("n"),
        })
        .collect())
}

/// One order as finance sees it (`reconciliation_orders`), its authorizations and its lines,
/// as JSON objects keyed by column name.
#[derive(Debug, Clone, Serialize)]
pub struct OrderOverview {
    pub order: serde_json::Value,
    pub authorizations: Vec<serde_json::Value>,
    pub lines: Vec<serde_json::Value>,
}

pub async fn order_overview(
    pool: &PgPool,
    order_id: &str,
) -> Result<Option<OrderOverview>, StorageError> {
    let order: Option<serde_json::Value> =
        sqlx::query_scalar("select to_jsonb(r) from reconciliation_orders r where order_id = $1")
            .bind(order_id)
            .fetch_optional(pool)
            .await
            .ctx("reading the order")?;
    let Some(order) = order else { return Ok(None) };
    let authorizations = sqlx::query_scalar(
        "select to_jsonb(a) - 'order_id' from reconciliation_authorizations a where order_id = $1
         order by is_current, authorized_at",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
    .ctx("reading the order's authorizations")?;
    let lines = sqlx::query_scalar(
        "select to_jsonb(l) - 'order_id' from order_lines l where order_id = $1 order by line_no",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
    .ctx("reading the order's lines")?;
    Ok(Some(OrderOverview {
        order,
        authorizations,
        lines,
    }))
}

/// Something that happened to an order, with the columns that tell it.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineRow {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub fields: serde_json::Value,
}

/// Everything that happened to an order, oldest first: its registration, replaced
/// authorizations, shipments, cancellations, captures planned and settled, every provider call
/// (with outcome and trace id), and messages parked or refused. Bodies of refused messages are
/// left out.
pub async fn order_timeline(
    pool: &PgPool,
    order_id: &str,
) -> Result<Vec<TimelineRow>, StorageError> {
    let rows = sqlx::query(
        "select at, kind, fields from (
             select created_at as at, 0 as rank, 'order_registered' as kind,
                    jsonb_build_object('message_id', message_id, 'provider', provider,
                        'authorization_id', authorization_id, 'authorized_amount', authorized_amount,
                        'currency', trim(currency), 'order_total', order_total) as fields
             from orders where order_id = $1
             union all
             select received_at, 1, 'message_parked',
                    jsonb_build_object('message_id', message_id, 'message_type', message_type,
                                       'reason', reject_reason, 'until', park_expires_at)
             from inbox_messages where order_id = $1 and status = 'parked'
             union all
             select created_at, 2, 'shipment', to_jsonb(s) - 'order_id'
             from shipments s where order_id = $1
             union all
             select created_at, 2, 'cancellation', to_jsonb(x) - 'order_id'
             from cancellations x where order_id = $1
             union all
             select superseded_at, 2, 'authorization_replaced', to_jsonb(a) - 'order_id'
             from superseded_authorizations a where order_id = $1
             union all
             select created_at, 3, 'capture_planned',
                    jsonb_build_object('capture_id', capture_id, 'sequence', sequence, 'kind', kind,
                        'cause_kind', cause_kind, 'cause_id', cause_id, 'amount', amount,
                        'currency', trim(currency), 'is_final', is_final,
                        'shipping_amount', shipping_amount, 'shortfall_amount', shortfall_amount,
                        'provider', provider, 'authorization_id', authorization_id,
                        'idempotency_key', idempotency_key, 'key_generation', key_generation,
                        'status', status, 'attempts', attempts, 'last_error', last_error,
                        'lines', lines)
             from captures where order_id = $1
             union all
             select a.started_at, 4, 'provider_call', to_jsonb(a) || jsonb_build_object('sequence', c.sequence)
             from capture_attempts a join captures c on c.capture_id = a.capture_id
             where c.order_id = $1
             union all
             select completed_at, 5, 'capture_settled',
                    jsonb_build_object('capture_id', capture_id, 'sequence', sequence, 'kind', kind,
                        'status', status, 'amount', amount, 'currency', trim(currency),
                        'provider_reference', provider_reference, 'decline_code', decline_code)
             from captures where order_id = $1 and completed_at is not null
             union all
             select received_at, 6, 'message_refused', to_jsonb(r) - 'body' - 'order_id'
             from rejected_messages r where order_id = $1
             union all
             select planned_at, 3, 'lifecycle_action', to_jsonb(l) - 'order_id'
             from lifecycle_actions l where order_id = $1
         ) t
         order by at, rank, (fields->>'capture_id')::bigint nulls first, (fields->>'attempt_id')::bigint nulls first",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
    .ctx("reading the order's history")?;
    Ok(rows
        .into_iter()
        .map(|r| TimelineRow {
            at: r.get("at"),
            kind: r.get("kind"),
            fields: r.get("fields"),
        })
        .collect())
}

/// A capture an operator put back in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequeuedCapture {
    pub capture_id: i64,
    pub order_id: String,
    pub sequence: i32,
    pub kind: String,
    pub amount: i64,
    pub currency: String,
    pub is_final: bool,
    pub idempotency_key: String,
}

/// What `capture retry` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryResult {
    Requeued(RequeuedCapture),
    NotFound,
    /// Only a capture that needs attention is put back; others are moving or settled.
    NotInAttention {
        status: String,
    },
}

/// Puts a capture that needs attention back in the queue, due now, with its attempts and
/// retry age reset. Its key, amount and final flag stay as they are (P3). With `read_back`,
/// the worker first reads the payment back: if the provider shows the capture happened it is
/// recorded as succeeded; if it shows nothing captured under the key, the capture is sent
/// under a new key (the only case P3 allows one).
pub async fn retry_capture(
    pool: &PgPool,
    capture_id: i64,
    read_back: bool,
) -> Result<RetryResult, StorageError> {
    let row = sqlx::query(
        "update captures set status = 'retrying', next_attempt_at = now(), attempts = 0,
             first_attempt_at = null, completed_at = null, needs_lookup = $2,
             last_error = 'put back in the queue by an operator', updated_at = now()
         where capture_id = $1 and status = 'attention'
         returning capture_id, order_id, sequence, kind, amount, trim(currency) as currency,
                   is_final, idempotency_key",
    )
    .bind(capture_id)
    .bind(read_back)
    .fetch_optional(pool)
    .await
    .ctx("putting the capture back in the queue")?;
    if let Some(r) = row {
        return Ok(RetryResult::Requeued(RequeuedCapture {
            capture_id: r.get("capture_id"),
            order_id: r.get("order_id"),
            sequence: r.get("sequence"),
            kind: r.get("kind"),
            amount: r.get("amount"),
            currency: r.get("currency"),
            is_final: r.get("is_final"),
            idempotency_key: r.get("idempotency_key"),
        }));
    }
    let status: Option<String> =
        sqlx::query_scalar("select status from captures where capture_id = $1")
            .bind(capture_id)
            .fetch_optional(pool)
            .await
            .ctx("reading the capture")?;
    Ok(match status {
        None => RetryResult::NotFound,
        Some(status) => RetryResult::NotInAttention { status },
    })
}

/// A declined or blocked capture of the current authorization, whose value a resume plans
/// again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedCapture {
    pub capture_id: i64,
    pub status: String,
    pub amount: i64,
    pub lines: Vec<StoredCaptureLine>,
    pub shipping: i64,
    pub shortfall: i64,
}

pub async fn carried_captures(
    tx: &mut PgConnection,
    order_id: &str,
    provider: &str,
    authorization_id: &str,
) -> Result<Vec<CarriedCapture>, StorageError> {
    const CTX: &str = "reading the declined and blocked captures";
    let rows = sqlx::query(
        "select capture_id, status, amount, lines, shipping_amount, shortfall_amount from captures
         where order_id = $1 and provider = $2 and authorization_id = $3
           and kind = 'capture' and status in ('declined', 'blocked')
         order by sequence for update",
    )
    .bind(order_id)
    .bind(provider)
    .bind(authorization_id)
    .fetch_all(tx)
    .await
    .ctx(CTX)?;
    rows.into_iter()
        .map(|r| {
            Ok(CarriedCapture {
                capture_id: r.get("capture_id"),
                status: r.get("status"),
                amount: r.get("amount"),
                lines: serde_json::from_value(r.get("lines")).map_err(|e| {
                    StorageError::Corrupt {
                        context: CTX,
                        detail: e.to_string(),
                    }
                })?,
                shipping: r.get("shipping_amount"),
                shortfall: r.get("shortfall_amount"),
            })
        })
        .collect()
}

/// Shipments and cancellations of `order_id` refused while its decline latch was set and not
/// requeued since: what an operator should requeue after lifting the latch.
pub async fn refused_while_latched(
    tx: &mut PgConnection,
    order_id: &crate::domain::OrderId,
) -> Result<i64, StorageError> {
    sqlx::query_scalar(
        "select count(*) from rejected_messages
         where order_id = $1 and reason = 'order_declined' and requeued_at is null",
    )
    .bind(order_id.as_str())
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| StorageError::classify("counting messages refused while latched", e))
}

/// The order an authorization belongs to (now or before a resume), if any.
pub async fn authorization_owner(
    tx: &mut PgConnection,
    provider: &str,
    authorization_id: &str,
) -> Result<Option<String>, StorageError> {
    sqlx::query_scalar(
        "select order_id from orders where provider = $1 and authorization_id = $2
         union all
         select order_id from superseded_authorizations where provider = $1 and authorization_id = $2
         limit 1",
    )
    .bind(provider)
    .bind(authorization_id)
    .fetch_optional(tx)
    .await
    .ctx("checking whether the authorization is in use")
}

/// The order's new authorization, as `order resume` sets it.
#[derive(Debug, Clone)]
pub struct NewAuthorization<'a> {
    pub authorization_id: &'a str,
    pub amount: i64,
    pub over_capture_allowance: i64,
    pub authorized_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// What the resume's plan claims on it (P2 is checked against the new amount).
    pub claimed: i64,
}

/// Moves the order's current authorization to `superseded_authorizations` and puts the new one
/// on the order, with the claim of the resume's plan, in one statement each so that the P2
/// check sees the new amount and the new claim together. Lifts the latch's code and time (the
/// superseded row keeps them); the caller saves the phase and line progress.
pub async fn replace_authorization(
    tx: &mut PgConnection,
    order_id: &str,
    new: &NewAuthorization<'_>,
) -> Result<(), StorageError> {
    sqlx::query(
        "insert into superseded_authorizations (provider, authorization_id, order_id,
             authorized_amount, over_capture_allowance, authorized_at, expires_at, declined_code,
             declined_at, superseded_by)
         select provider, authorization_id, order_id, authorized_amount, over_capture_allowance,
                authorized_at, authorization_expires_at, declined_code, declined_at, $2
         from orders where order_id = $1",
    )
    .bind(order_id)
    .bind(new.authorization_id)
    .execute(&mut *tx)
    .await
    .ctx("keeping the replaced authorization")?;
    sqlx::query(
        "update orders set authorization_id = $2, authorized_amount = $3,
             over_capture_allowance = $4, authorized_at = $5, authorization_expires_at = $6,
             claimed_amount = $7, declined_code = null, declined_at = null, updated_at = now()
         where order_id = $1",
    )
    .bind(order_id)
    .bind(new.authorization_id)
    .bind(new.amount)
    .bind(new.over_capture_allowance)
    .bind(new.authorized_at)
    .bind(new.expires_at)
    .bind(new.claimed)
    .execute(tx)
    .await
    .ctx("putting the new authorization on the order")?;
    Ok(())
}

/// A refused message as recorded in `rejected_messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectionRow {
    pub rejection_id: i64,
    pub received_at: DateTime<Utc>,
    pub reason: String,
    pub detail: String,
    pub message_id: Option<String>,
    pub message_type: Option<String>,
    pub order_id: Option<String>,
    pub routing_key: Option<String>,
    /// The body with card-number-like digit runs masked; not shown in lists.
    #[serde(skip)]
    pub body: Option<String>,
    pub has_body: bool,
    pub requeued_at: Option<DateTime<Utc>>,
}

fn rejection_from_row(r: &sqlx::postgres::PgRow) -> RejectionRow {
    let body: Option<String> = r.get("body");
    RejectionRow {
        rejection_id: r.get("rejection_id"),
        received_at: r.get("received_at"),
        reason: r.get("reason"),
        detail: r.get("detail"),
        message_id: r.get("message_id"),
        message_type: r.get("message_type"),
        order_id: r.get("order_id"),
        routing_key: r.get("routing_key"),
        has_body: body.is_some(),
        body,
        requeued_at: r.get("requeued_at"),
    }
}

/// Which refused messages to list or requeue.
#[derive(Debug, Clone, Default)]
pub struct RejectionFilter {
    /// Include messages already requeued.
    pub include_requeued: bool,
    pub reason: Option<String>,
    pub order_id: Option<String>,
    pub limit: Option<i64>,
}

/// Refused messages, oldest first.
pub async fn list_rejections(
    pool: &PgPool,
    filter: &RejectionFilter,
) -> Result<Vec<RejectionRow>, StorageError> {
    let rows = sqlx::query(
        "select rejection_id, received_at, reason, detail, message_id, message_type, order_id,
                routing_key, body, requeued_at
         from rejected_messages
         where ($1 or requeued_at is null)
           and ($2::text is null or reason = $2)
           and ($3::text is null or order_id = $3)
         order by received_at, rejection_id
         limit $4",
    )
    .bind(filter.include_requeued)
    .bind(filter.reason.as_deref())
    .bind(filter.order_id.as_deref())
    .bind(filter.limit.unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .ctx("reading rejected_messages")?;
    Ok(rows.iter().map(rejection_from_row).collect())
}

/// A requeue in progress: one transaction that holds the refused message's row. Committed only
/// once the broker confirmed the publish; dropped (so rolled back) otherwise, and on a dry run.
pub struct Requeue {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
}

impl Requeue {
    /// Starts the requeue of `rejection_id`: the refused message, locked until the requeue ends,
    /// or `None` when there is no such message.
    pub async fn begin(
        store: &Store,
        rejection_id: i64,
    ) -> Result<(Requeue, Option<RejectionRow>), StorageError> {
        let mut tx = store.pool().begin().await.ctx("starting the requeue")?;
        let row = lock_rejection(&mut tx, rejection_id).await?;
        Ok((Requeue { tx }, row))
    }

    /// [`forget_refusal`], inside the requeue.
    pub async fn forget_refusal(&mut self, message_id: &str) -> Result<u64, StorageError> {
        forget_refusal(&mut self.tx, message_id).await
    }

    /// [`mark_requeued`], inside the requeue.
    pub async fn mark_requeued(&mut self, rejection_id: i64) -> Result<(), StorageError> {
        mark_requeued(&mut self.tx, rejection_id).await
    }

    /// Makes the requeue permanent (after the broker confirmed the publish).
    pub async fn commit(self) -> Result<(), StorageError> {
        self.tx.commit().await.ctx("committing the requeue")
    }
}

/// One refused message, locked until the caller's transaction ends.
pub async fn lock_rejection(
    tx: &mut PgConnection,
    rejection_id: i64,
) -> Result<Option<RejectionRow>, StorageError> {
    let row = sqlx::query(
        "select rejection_id, received_at, reason, detail, message_id, message_type, order_id,
                routing_key, body, requeued_at
         from rejected_messages where rejection_id = $1 for update",
    )
    .bind(rejection_id)
    .fetch_optional(tx)
    .await
    .ctx("reading the rejected message")?;
    Ok(row.as_ref().map(rejection_from_row))
}

/// The inbox's status for a message id, if it has one.
pub async fn inbox_status(
    tx: &mut PgConnection,
    message_id: &str,
) -> Result<Option<String>, StorageError> {
    sqlx::query_scalar("select status from inbox_messages where message_id = $1 for update")
        .bind(message_id)
        .fetch_optional(tx)
        .await
        .ctx("reading the inbox")
}

/// Forgets that a message id was refused, so that its requeued copy is processed afresh
/// instead of being answered "already refused". Only a refused message's row goes: a processed
/// or parked message keeps its dedupe (P1).
pub async fn forget_refusal(tx: &mut PgConnection, message_id: &str) -> Result<u64, StorageError> {
    Ok(
        sqlx::query("delete from inbox_messages where message_id = $1 and status = 'rejected'")
            .bind(message_id)
            .execute(tx)
            .await
            .ctx("clearing the refused message from the inbox")?
            .rows_affected(),
    )
}

/// Marks a refusal requeued. Its dedupe key is retired with it, so that if the requeued copy is
/// refused again, that refusal is recorded as a new row instead of vanishing into the old one.
pub async fn mark_requeued(tx: &mut PgConnection, rejection_id: i64) -> Result<(), StorageError> {
    sqlx::query(
        "update rejected_messages set requeued_at = now(),
             rejection_key = rejection_key || ':requeued:' || rejection_id
         where rejection_id = $1",
    )
    .bind(rejection_id)
    .execute(tx)
    .await
    .ctx("marking the rejected message requeued")?;
    Ok(())
}

/// An authorization as the ledger sees it (`reconciliation_authorizations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerAuthorization {
    pub order_id: String,
    pub provider: String,
    pub authorization_id: String,
    pub currency: String,
    pub authorized_amount: i64,
    pub over_capture_allowance: i64,
    pub captured_amount: i64,
    /// Queued, in flight, pending or retrying: may or may not be captured at the provider yet.
    pub pending_amount: i64,
    pub released_amount: i64,
    /// `open`, `closed`, `declined` or `superseded`.
    pub status: String,
}

/// Which authorizations to reconcile.
#[derive(Debug, Clone)]
pub enum AuthorizationScope {
    Order(String),
    /// Authorized, replaced, closed or with capture activity at or after this time.
    Since(DateTime<Utc>),
}

pub async fn authorizations(
    pool: &PgPool,
    scope: &AuthorizationScope,
) -> Result<Vec<LedgerAuthorization>, StorageError> {
    let (order_id, since) = match scope {
        AuthorizationScope::Order(id) => (Some(id.as_str()), None),
        AuthorizationScope::Since(t) => (None, Some(*t)),
    };
    let rows = sqlx::query(
        "select order_id, provider, authorization_id, trim(currency) as currency,
                authorized_amount, over_capture_allowance, captured_amount, pending_amount,
                released_amount, status
         from reconciliation_authorizations a
         where ($1::text is null or a.order_id = $1)
           and ($2::timestamptz is null
                or a.authorized_at >= $2 or a.superseded_at >= $2 or a.closed_at >= $2
                or exists (select 1 from captures c
                           where c.order_id = a.order_id and c.provider = a.provider
                             and c.authorization_id = a.authorization_id and c.updated_at >= $2))
         order by a.order_id, a.is_current, a.authorized_at",
    )
    .bind(order_id)
    .bind(since)
    .fetch_all(pool)
    .await
    .ctx("reading the authorizations to reconcile")?;
    Ok(rows
        .into_iter()
        .map(|r| LedgerAuthorization {
            order_id: r.get("order_id"),
            provider: r.get("provider"),
            authorization_id: r.get("authorization_id"),
            currency: r.get("currency"),
            authorized_amount: r.get("authorized_amount"),
            over_capture_allowance: r.get("over_capture_allowance"),
            captured_amount: r.get("captured_amount"),
            pending_amount: r.get("pending_amount"),
            released_amount: r.get("released_amount"),
            status: r.get("status"),
        })
        .collect())
}

/// The SQLSTATE PostgreSQL refused a statement with, when it did (`None` for any other
/// failure): for telling the user which of the database's refusals happened.
pub fn sqlstate(e: &StorageError) -> Option<String> {
    match e {
        StorageError::Permanent {
            source: sqlx::Error::Database(db),
            ..
        }
        | StorageError::Retryable {
            source: sqlx::Error::Database(db),
            ..
        } => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// How far the orders whose id matches a `like` pattern got: how many exist, and how many of
/// their captures are not settled yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrdersProgress {
    pub orders: i64,
    pub unsettled_captures: i64,
}

/// [`OrdersProgress`] of the orders whose id matches `pattern` (`demo-7-%`).
pub async fn orders_progress(pool: &PgPool, pattern: &str) -> Result<OrdersProgress, StorageError> {
    let unsettled_captures: i64 = sqlx::query_scalar(
        "select count(*) from captures where order_id like $1
           and status in ('queued', 'in_flight', 'pending', 'retrying')",
    )
    .bind(pattern)
    .fetch_one(pool)
    .await
    .ctx("counting the orders' unsettled captures")?;
    let orders: i64 = sqlx::query_scalar("select count(*) from orders where order_id like $1")
        .bind(pattern)
        .fetch_one(pool)
        .await
        .ctx("counting the orders")?;
    Ok(OrdersProgress {
        orders,
        unsettled_captures,
    })
}

/// One row of `reconciliation_orders`: an order's amounts as finance sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconciledOrder {
    pub order_id: String,
    pub currency: String,
    pub order_total: i64,
    pub authorized_amount: i64,
    pub shipped_amount: i64,
    pub captured_amount: i64,
    pub pending_amount: i64,
    pub capture_count: i64,
    pub status: String,
}

/// The `reconciliation_orders` rows of the orders whose id matches `pattern`, by order id.
pub async fn reconciled_orders(
    pool: &PgPool,
    pattern: &str,
) -> Result<Vec<ReconciledOrder>, StorageError> {
    let rows = sqlx::query_as::<_, (String, String, i64, i64, i64, i64, i64, i64, String)>(
        "select order_id, currency, order_total, authorized_amount, shipped_amount, captured_amount,
                pending_amount, capture_count, status
         from reconciliation_orders where order_id like $1 order by order_id",
    )
    .bind(pattern)
    .fetch_all(pool)
    .await
    .ctx("reading reconciliation_orders")?;
    Ok(rows
        .into_iter()
        .map(
            |(order_id, currency, total, authorized, shipped, captured, pending, count, status)| {
                ReconciledOrder {
                    order_id,
                    currency,
                    order_total: total,
                    authorized_amount: authorized,
                    shipped_amount: shipped,
                    captured_amount: captured,
                    pending_amount: pending,
                    capture_count: count,
                    status,
                }
            },
        )
        .collect())
}

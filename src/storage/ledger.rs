//! Intake's SQL: the inbox, orders and their progress, shipments, cancellations, capture rows
//! and rejected messages. Every function runs inside the caller's transaction, so one
//! message's effect commits whole or not at all.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgArguments;
use sqlx::{PgConnection, Postgres, Row};

use super::captures::ClaimedCapture;
use super::{Ctx, StorageError, outside};
use crate::domain::{
    Authorization, AuthorizationId, Cancellation, Currency, EventId, IdempotencyKey, Item, LineId,
    MinorUnits, Order, OrderDraft, OrderId, OrderLine, OrderState, Phase, ProviderName, Quantity,
    Shipment, ShipmentId,
};
use crate::sanitize;

/// Serializes every intake transaction that touches `order_id`, including one that registers
/// the order, so a shipment and its order can never miss each other.
pub async fn lock_order_key(tx: &mut PgConnection, order_id: &OrderId) -> Result<(), StorageError> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 7411))")
        .bind(order_id.as_str())
        .execute(tx)
        .await
        .ctx("locking the order for intake")?;
    Ok(())
}

/// Where a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxStatus {
    Processed,
    Parked,
    Rejected,
}

impl InboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InboxStatus::Processed => "processed",
            InboxStatus::Parked => "parked",
            InboxStatus::Rejected => "rejected",
        }
    }
    fn parse(s: &str) -> Result<Self, StorageError> {
        match s {
            "processed" => Ok(InboxStatus::Processed),
            "parked" => Ok(InboxStatus::Parked),
            "rejected" => Ok(InboxStatus::Rejected),
            other => Err(StorageError::Corrupt {
                context: "reading inbox status",
                detail: format!("unknown status {other:?}"),
            }),
        }
    }
}

/// A message as the inbox remembers it.
#[derive(Debug, Clone)]
pub struct InboxRecord {
    pub status: InboxStatus,
    pub payload_hash: String,
    /// Why it was refused; for a parked message, why it waits
    /// ([`AWAITING_INCREMENT`], or none: its order is not registered yet).
    pub reject_reason: Option<String>,
    /// Until when a parked message waits.
    pub park_expires_at: Option<DateTime<Utc>>,
}

/// The reason of a message parked because its order's hold is being raised: its shipment
/// exceeds what is left of the hold while an increment is planned and not answered yet. It is
/// planned once the increment is answered, or at `park_expires_at` at the latest.
pub const AWAITING_INCREMENT: &str = "awaiting_increment";

/// Whether an increment of `order_id`'s hold is planned and not answered yet (planned, sent
/// without an answer, or accepted and waiting for the provider's notification).
pub async fn increment_unfinished(
    tx: &mut PgConnection,
    order_id: &OrderId,
) -> Result<bool, StorageError> {
    sqlx::query_scalar(
        "select exists (select 1 from lifecycle_actions
                        where order_id = $1 and action = 'increment'
                          and status in ('planned', 'unknown', 'pending'))",
    )
    .bind(order_id.as_str())
    .fetch_one(tx)
    .await
    .ctx("looking for an unanswered increment of the order's hold")
}

pub async fn inbox_get(
    tx: &mut PgConnection,
    message_id: &str,
) -> Result<Option<InboxRecord>, StorageError> {
    let row = sqlx::query(
        "select status, payload_hash, reject_reason, park_expires_at from inbox_messages
         where message_id = $1 for update",
    )
    .bind(message_id)
    .fetch_optional(tx)
    .await
    .ctx("reading the inbox")?;
    row.map(|r| {
        Ok(InboxRecord {
            status: InboxStatus::parse(r.get::<&str, _>("status"))?,
            payload_hash: r.get("payload_hash"),
            reject_reason: r.get("reject_reason"),
            park_expires_at: r.get("park_expires_at"),
        })
    })
    .transpose()
}

/// A message to remember, written with [`store_intake_batch`]: a new inbox row, or the row of
/// a parked message that is processed now.
#[derive(Debug, Clone)]
pub struct NewInbox<'a> {
    pub message_id: &'a str,
    pub message_type: &'a str,
    pub order_id: Option<&'a str>,
    pub payload_hash: &'a str,
    pub status: InboxStatus,
    pub reject_reason: Option<String>,
    /// Kept only while parked (and, after a refusal, until its dead-letter copy is sent).
    pub body: Option<&'a [u8]>,
    pub routing_key: Option<&'a str>,
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
    pub park_expires_at: Option<DateTime<Utc>>,
}

/// A message waiting for its order.
#[derive(Debug, Clone)]
pub struct ParkedMessage {
    pub message_id: String,
    pub order_id: Option<String>,
    pub body: Vec<u8>,
    pub routing_key: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

fn parked_from_row(r: sqlx::postgres::PgRow) -> ParkedMessage {
    ParkedMessage {
        message_id: r.get("message_id"),
        order_id: r.get("order_id"),
        body: r.get::<Option<Vec<u8>>, _>("body").unwrap_or_default(),
        routing_key: r.get("routing_key"),
        traceparent: r.get("traceparent"),
        tracestate: r.get("tracestate"),
    }
}

/// Parked messages of one order, oldest first, locked for processing.
pub async fn parked_for_order(
    tx: &mut PgConnection,
    order_id: &str,
) -> Result<Vec<ParkedMessage>, StorageError> {
    let rows = sqlx::query(
        "select message_id, order_id, body, routing_key, traceparent, tracestate
         from inbox_messages where order_id = $1 and status = 'parked'
         order by received_at, message_id for update",
    )
    .bind(order_id)
    .fetch_all(tx)
    .await
    .ctx("reading parked messages")?;
    Ok(rows.into_iter().map(parked_from_row).collect())
}

/// Keeps the body of a parked message that was refused once its order arrived: its delivery
/// was acknowledged when it was parked, so its dead-letter copy is still owed. The body stays
/// until the sweeper has sent the copy ([`owed_dead_letters`], [`dead_letter_sent`]).
pub async fn owe_dead_letter(
    tx: &mut PgConnection,
    message_id: &str,
    body: &[u8],
) -> Result<(), StorageError> {
    sqlx::query(
        "update inbox_messages set body = $2, updated_at = now()
         where message_id = $1 and status = 'rejected'",
    )
    .bind(message_id)
    .bind(body)
    .execute(tx)
    .await
    .ctx("marking a dead-letter copy as owed")?;
    Ok(())
}

/// A refused message whose dead-letter copy has not been sent yet.
#[derive(Debug, Clone)]
pub struct OwedDeadLetter {
    pub message_id: String,
    pub body: Vec<u8>,
    pub routing_key: Option<String>,
    pub traceparent: Option<String>,
    pub reason: String,
    pub detail: String,
}

/// Refused messages whose dead-letter copy is still owed, oldest first.
pub async fn owed_dead_letters(
    pool: &sqlx::PgPool,
    limit: i64,
) -> Result<Vec<OwedDeadLetter>, StorageError> {
    let rows = sqlx::query(
        "select i.message_id, i.body, i.routing_key, i.traceparent,
                coalesce(i.reject_reason, 'rejected') as reason,
                coalesce((select r.detail from rejected_messages r where r.message_id = i.message_id
                          order by r.rejection_id desc limit 1), '') as detail
         from inbox_messages i
         where i.status = 'rejected' and i.body is not null
         order by i.updated_at limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
    .ctx("finding owed dead-letter copies")?;
    Ok(rows
        .into_iter()
        .map(|r| OwedDeadLetter {
            message_id: r.get("message_id"),
            body: r.get::<Option<Vec<u8>>, _>("body").unwrap_or_default(),
            routing_key: r.get("routing_key"),
            traceparent: r.get("traceparent"),
            reason: r.get("reason"),
            detail: r.get("detail"),
        })
        .collect())
}

/// The dead-letter copy of a refused message was sent: forget its body.
pub async fn dead_letter_sent(pool: &sqlx::PgPool, message_id: &str) -> Result<(), StorageError> {
    sqlx::query(
        "update inbox_messages set body = null, updated_at = now()
         where message_id = $1 and status = 'rejected'",
    )
    .bind(message_id)
    .execute(pool)
    .await
    .ctx("recording a sent dead-letter copy")?;
    Ok(())
}

/// Orders that have parked messages and now exist (the sweeper processes them), and parked
/// messages whose wait is over (they are dead-lettered as `unknown_order`). A message parked
/// while its order's hold is being raised ([`AWAITING_INCREMENT`]) is ready once the increment
/// is answered or its wait is over.
pub async fn parked_work(
    pool: &sqlx::PgPool,
    limit: i64,
) -> Result<(Vec<String>, Vec<ParkedMessage>), StorageError> {
    let ready: Vec<String> = sqlx::query_scalar(
        "select distinct i.order_id from inbox_messages i join orders o on o.order_id = i.order_id
         where i.status = 'parked'
           and not (i.reject_reason is not distinct from 'awaiting_increment'
                    and i.park_expires_at >= now()
                    and exists (select 1 from lifecycle_actions a
                                where a.order_id = i.order_id and a.action = 'increment'
                                  and a.status in ('planned', 'unknown', 'pending')))
         limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
    .ctx("finding parked messages whose order arrived")?;
    let expired = sqlx::query(
        "select message_id, order_id, body, routing_key, traceparent, tracestate
         from inbox_messages where status = 'parked' and park_expires_at < now()
         order by park_expires_at limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
    .ctx("finding parked messages that waited too long")?;
    Ok((ready, expired.into_iter().map(parked_from_row).collect()))
}

/// What we know about an order registration already stored under this order id.
pub async fn order_payload_hash(
    tx: &mut PgConnection,
    order_id: &OrderId,
) -> Result<Option<String>, StorageError> {
    sqlx::query_scalar("select payload_hash from orders where order_id = $1")
        .bind(order_id.as_str())
        .fetch_optional(tx)
        .await
        .ctx("reading the order")
}

/// Whether another order already holds this authorization.
pub async fn authorization_taken(
    tx: &mut PgConnection,
    provider: &ProviderName,
    authorization_id: &AuthorizationId,
) -> Result<bool, StorageError> {
    sqlx::query_scalar(
        "select exists (select 1 from orders where provider = $1 and authorization_id = $2)",
    )
    .bind(provider.as_str())
    .bind(authorization_id.as_str())
    .fetch_one(tx)
    .await
    .ctx("checking the authorization")
}

fn corrupt(context: &'static str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt {
        context,
        detail: e.to_string(),
    }
}

/// An order as stored, rebuilt into the domain, with its progress.
#[derive(Debug, Clone)]
pub struct StoredOrder {
    pub order: Order,
    pub state: OrderState,
}

/// Loads an order and its progress; `lock` takes the order row for update.
pub async fn load_order(
    tx: &mut PgConnection,
    order_id: &OrderId,
    lock: bool,
) -> Result<Option<StoredOrder>, StorageError> {
    const CTX: &str = "loading the order";
    let sql = if lock {
        "select * from orders where order_id = $1 for update"
    } else {
        "select * from orders where order_id = $1"
    };
    let Some(o) = sqlx::query(sql)
        .bind(order_id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .ctx(CTX)?
    else {
        return Ok(None);
    };
    let lines = sqlx::query("select * from order_lines where order_id = $1 order by line_no")
        .bind(order_id.as_str())
        .fetch_all(&mut *tx)
        .await
        .ctx(CTX)?;
    stored_order(order_id, &o, &lines).map(Some)
}

/// Rebuilds an order and its progress from its `orders` row and its `order_lines` rows (in
/// line order).
fn stored_order(
    order_id: &OrderId,
    o: &sqlx::postgres::PgRow,
    lines: &[sqlx::postgres::PgRow],
) -> Result<StoredOrder, StorageError> {
    const CTX: &str = "loading the order";
    let m = |v: i64| MinorUnits::new(v).map_err(|e| corrupt(CTX, e));
    let mut order_lines = Vec::with_capacity(lines.len());
    let (mut shipped, mut cancelled, mut charged) = (Vec::new(), Vec::new(), Vec::new());
    for l in lines {
        order_lines.push(OrderLine {
            line_id: LineId::parse(l.get::<String, _>("line_id")).map_err(|e| corrupt(CTX, e))?,
            sku: l.get("sku"),
            name: l.get("name"),
            quantity: Quantity::new(i64::from(l.get::<i32, _>("quantity")))
                .map_err(|e| corrupt(CTX, e))?,
            unit_amount: m(l.get("unit_amount"))?,
            tax_amount: m(l.get("tax_amount"))?,
            discount_amount: m(l.get("discount_amount"))?,
        });
        let q = |name: &str| u32::try_from(l.get::<i32, _>(name)).map_err(|e| corrupt(CTX, e));
        shipped.push(q("shipped_quantity")?);
        cancelled.push(q("cancelled_quantity")?);
        charged.push(q("charged_quantity")?);
    }
    let currency =
        Currency::parse(o.get::<String, _>("currency").trim()).map_err(|e| corrupt(CTX, e))?;
    let order = Order::new(OrderDraft {
        order_id: order_id.clone(),
        currency,
        lines: order_lines,
        shipping_amount: m(o.get("shipping_amount"))?,
        order_discount_amount: m(o.get("order_discount_amount"))?,
        authorization: Authorization {
            provider: ProviderName::parse(o.get::<String, _>("provider"))
                .map_err(|e| corrupt(CTX, e))?,
            authorization_id: AuthorizationId::parse(o.get::<String, _>("authorization_id"))
                .map_err(|e| corrupt(CTX, e))?,
            amount: m(o.get("authorized_amount"))?,
            authorized_at: o.get("authorized_at"),
            expires_at: o.get("authorization_expires_at"),
        },
        payment_currency: None,
    })
    .map_err(|e| corrupt(CTX, e))?;
    let phase = match o.get::<&str, _>("phase") {
        "open" => Phase::Open,
        "completed" => Phase::Completed,
        "declined" => Phase::Declined,
        other => return Err(corrupt(CTX, format!("unknown phase {other:?}"))),
    };
    let state = OrderState {
        shipped,
        cancelled,
        charged,
        shipping_charged: m(o.get("shipping_charged"))?,
        claimed: m(o.get("claimed_amount"))?,
        shortfall: m(o.get("shortfall_amount"))?,
        captures: u32::try_from(o.get::<i32, _>("capture_count")).map_err(|e| corrupt(CTX, e))?,
        phase,
        shipments: Vec::new(),
        cancellations: Vec::new(),
    };
    Ok(StoredOrder { order, state })
}

/// Items as stored in JSON.
#[derive(Debug, Serialize, Deserialize)]
struct StoredItem {
    line_id: String,
    quantity: i64,
}

fn items_json(items: &[Item]) -> serde_json::Value {
    serde_json::Value::Array(
        items
            .iter()
            .map(|i| serde_json::json!({"line_id": i.line_id.as_str(), "quantity": i.quantity.get()}))
            .collect(),
    )
}

fn items_from_json(v: serde_json::Value, context: &'static str) -> Result<Vec<Item>, StorageError> {
    let stored: Vec<StoredItem> = serde_json::from_value(v).map_err(|e| corrupt(context, e))?;
    stored
        .into_iter()
        .map(|s| {
            Ok(Item {
                line_id: LineId::parse(s.line_id).map_err(|e| corrupt(context, e))?,
                quantity: Quantity::new(s.quantity).map_err(|e| corrupt(context, e))?,
            })
        })
        .collect()
}

/// The shipment already applied under this id, if any (for dedupe by content).
pub async fn load_shipment(
    tx: &mut PgConnection,
    order_id: &OrderId,
    shipment_id: &ShipmentId,
) -> Result<Option<Shipment>, StorageError> {
    const CTX: &str = "loading an earlier shipment";
    let row = sqlx::query(
        "select items, last_shipment, shipped_at from shipments where order_id = $1 and shipment_id = $2",
    )
    .bind(order_id.as_str())
    .bind(shipment_id.as_str())
    .fetch_optional(tx)
    .await
    .ctx(CTX)?;
    row.map(|r| {
        Shipment::new(
            shipment_id.clone(),
            items_from_json(r.get("items"), CTX)?,
            r.get("last_shipment"),
            r.get("shipped_at"),
        )
        .map_err(|e| corrupt(CTX, e))
    })
    .transpose()
}

/// The cancellation already applied under this id, if any.
pub async fn load_cancellation(
    tx: &mut PgConnection,
    order_id: &OrderId,
    cancellation_id: &EventId,
) -> Result<Option<Cancellation>, StorageError> {
    const CTX: &str = "loading an earlier cancellation";
    let row =
        sqlx::query("select items from cancellations where order_id = $1 and cancellation_id = $2")
            .bind(order_id.as_str())
            .bind(cancellation_id.as_str())
            .fetch_optional(tx)
            .await
            .ctx(CTX)?;
    row.map(|r| {
        Cancellation::new(
            cancellation_id.clone(),
            items_from_json(r.get("items"), CTX)?,
        )
        .map_err(|e| corrupt(CTX, e))
    })
    .transpose()
}

/// Writes the order's progress after a plan.
pub async fn save_progress(
    tx: &mut PgConnection,
    order: &Order,
    state: &OrderState,
) -> Result<(), StorageError> {
    let phase = match state.phase {
        Phase::Open => "open",
        Phase::Completed => "completed",
        Phase::Declined => "declined",
    };
    sqlx::query(
        "update orders set phase = $2, claimed_amount = $3, shipping_charged = $4,
             shortfall_amount = $5, capture_count = $6, updated_at = now()
         where order_id = $1",
    )
    .bind(order.order_id().as_str())
    .bind(phase)
    .bind(state.claimed.get())
    .bind(state.shipping_charged.get())
    .bind(state.shortfall.get())
    .bind(state.captures as i32)
    .execute(&mut *tx)
    .await
    .ctx("saving the order's progress")?;
    let ids: Vec<&str> = order.lines().iter().map(|l| l.line_id.as_str()).collect();
    let to_i32 = |v: &[u32]| v.iter().map(|&x| x as i32).collect::<Vec<i32>>();
    sqlx::query(
        "update order_lines l set shipped_quantity = v.s, cancelled_quantity = v.c,
             charged_quantity = v.ch
         from unnest($2::text[], $3::int[], $4::int[], $5::int[]) as v(line_id, s, c, ch)
         where l.order_id = $1 and l.line_id = v.line_id
           and (l.shipped_quantity, l.cancelled_quantity, l.charged_quantity) is distinct from (v.s, v.c, v.ch)",
    )
    .bind(order.order_id().as_str())
    .bind(&ids)
    .bind(to_i32(&state.shipped))
    .bind(to_i32(&state.cancelled))
    .bind(to_i32(&state.charged))
    .execute(tx)
    .await
    .ctx("saving line progress")?;
    Ok(())
}

/// What a capture row is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureKind {
    Capture,
    Release,
    Void,
}

impl CaptureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureKind::Capture => "capture",
            CaptureKind::Release => "release",
            CaptureKind::Void => "void",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "capture" => Some(CaptureKind::Capture),
            "release" => Some(CaptureKind::Release),
            "void" => Some(CaptureKind::Void),
            _ => None,
        }
    }
}

/// A line carried by a capture, as stored (and sent to providers that take line items).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredCaptureLine {
    pub line_id: String,
    pub sku: String,
    pub name: String,
    pub units: u32,
    pub amount: i64,
}

/// Capture lines as stored, their free text through the text boundary.
fn clean_lines(lines: &[StoredCaptureLine]) -> Vec<StoredCaptureLine> {
    lines
        .iter()
        .map(|l| StoredCaptureLine {
            sku: outside(&l.sku),
            name: outside(&l.name),
            ..l.clone()
        })
        .collect()
}

/// A capture row to insert.
#[derive(Debug, Clone)]
pub struct NewCapture<'a> {
    pub order: &'a Order,
    pub sequence: u32,
    pub kind: CaptureKind,
    /// `shipment`, `cancellation`, `deadline` or `resume` (see [`super::plans::PlanCause`]).
    pub cause_kind: &'static str,
    pub cause_id: std::borrow::Cow<'a, str>,
    pub amount: MinorUnits,
    pub is_final: bool,
    pub release_after: bool,
    pub lines: Vec<StoredCaptureLine>,
    pub shipping: MinorUnits,
    pub shortfall: MinorUnits,
    pub traceparent: Option<&'a str>,
}

/// A capture's generation-0 idempotency key, derived from stable facts: provider,
/// authorization, kind and cause (P3).
fn capture_key(c: &NewCapture<'_>) -> IdempotencyKey {
    let auth = c.order.authorization();
    IdempotencyKey::derive(
        &auth.provider,
        &auth.authorization_id,
        &format!("{}:{}:{}", c.kind.as_str(), c.cause_kind, c.cause_id),
        0,
    )
}

/// Inserts a queued capture with its generation-0 idempotency key and records the key's terms.
pub async fn insert_capture(
    tx: &mut PgConnection,
    c: &NewCapture<'_>,
) -> Result<i64, StorageError> {
    let auth = c.order.authorization();
    let key = capture_key(c);
    let lines = serde_json::to_value(clean_lines(&c.lines))
        .map_err(|e| corrupt("encoding capture lines", e))?;
    let id: i64 = sqlx::query_scalar(
        "insert into captures (order_id, provider, authorization_id, sequence, kind, cause_kind,
             cause_id, amount, currency, is_final, release_after, lines, shipping_amount,
             shortfall_amount, idempotency_key, traceparent)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         returning capture_id",
    )
    .bind(c.order.order_id().as_str())
    .bind(auth.provider.as_str())
    .bind(auth.authorization_id.as_str())
    .bind(c.sequence as i32)
    .bind(c.kind.as_str())
    .bind(c.cause_kind)
    .bind(c.cause_id.as_ref())
    .bind(c.amount.get())
    .bind(c.order.currency().code())
    .bind(c.is_final)
    .bind(c.release_after)
    .bind(lines)
    .bind(c.shipping.get())
    .bind(c.shortfall.get())
    .bind(key.as_str())
    .bind(c.traceparent)
    .fetch_one(&mut *tx)
    .await
    .ctx("storing the capture")?;
    sqlx::query(
        "insert into capture_keys (idempotency_key, capture_id, key_generation, amount, is_final)
         values ($1, $2, 0, $3, $4)",
    )
    .bind(key.as_str())
    .bind(id)
    .bind(c.amount.get())
    .bind(c.is_final)
    .execute(tx)
    .await
    .ctx("recording the capture's key")?;
    Ok(id)
}

/// A refused message, as recorded for finance, on-call and the warehouse team.
#[derive(Debug, Clone)]
pub struct NewRejection<'a> {
    pub message_id: Option<&'a str>,
    pub message_type: Option<&'a str>,
    pub order_id: Option<&'a str>,
    pub reason: &'a str,
    pub detail: &'a str,
    pub routing_key: Option<&'a str>,
    /// Body with card-number-like digit runs already masked.
    pub body: Option<&'a str>,
    /// sha-256 of the raw body, hex.
    pub body_hash: &'a str,
}

/// Records a rejection once per message (by id, else by body hash) and reason.
pub async fn insert_rejection(
    tx: &mut PgConnection,
    r: &NewRejection<'_>,
) -> Result<(), StorageError> {
    let key = match r.message_id {
        Some(id) => format!("{id}:{}", r.reason),
        None => format!("sha256:{}:{}", r.body_hash, r.reason),
    };
    // Outside text: a NUL would make the rejection impossible to record (the message would
    // be redelivered until the broker gives up); a detail may quote a card number.
    let detail = outside(r.detail);
    let body = r.body.map(|b| sanitize::text(b, sanitize::BODY_CHARS));
    sqlx::query(
        "insert into rejected_messages (rejection_key, message_id, message_type, order_id, reason,
             detail, routing_key, body)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         on conflict (rejection_key) do nothing",
    )
    .bind(key)
    .bind(r.message_id)
    .bind(r.message_type)
    .bind(r.order_id)
    .bind(r.reason)
    .bind(&detail)
    .bind(r.routing_key)
    .bind(body.as_deref())
    .execute(tx)
    .await
    .ctx("recording the rejected message")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Batched intake: the same reads as above for many messages of different orders in one
// transaction, one statement per table, and the one writer of what intake stores
// ([`store_intake_batch`]), for a batch of many messages or of one.

/// Takes the intake locks of several orders (as [`lock_order_key`] does for one). The caller
/// passes the ids sorted, so two batches always lock in the same order and never deadlock on
/// each other; `unnest` yields the array in order.
pub async fn lock_order_keys(
    tx: &mut PgConnection,
    sorted_order_ids: &[&str],
) -> Result<(), StorageError> {
    sqlx::query(
        "select pg_advisory_xact_lock(hashtextextended(k, 7411)) from unnest($1::text[]) as t(k)",
    )
    .bind(sorted_order_ids)
    .execute(tx)
    .await
    .ctx("locking the orders for intake")?;
    Ok(())
}

/// The inbox rows of these message ids, locked, by message id.
pub async fn inbox_get_many(
    tx: &mut PgConnection,
    message_ids: &[&str],
) -> Result<HashMap<String, InboxRecord>, StorageError> {
    let rows = sqlx::query(
        "select message_id, status, payload_hash, reject_reason, park_expires_at from inbox_messages
         where message_id = any($1) order by message_id for update",
    )
    .bind(message_ids)
    .fetch_all(tx)
    .await
    .ctx("reading the inbox")?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.get("message_id"),
                InboxRecord {
                    status: InboxStatus::parse(r.get::<&str, _>("status"))?,
                    payload_hash: r.get("payload_hash"),
                    reject_reason: r.get("reject_reason"),
                    park_expires_at: r.get("park_expires_at"),
                },
            ))
        })
        .collect()
}

/// Loads several orders and their progress, taking their rows for update (in order id order),
/// by order id. Orders that do not exist are absent.
pub async fn load_orders_for_update(
    tx: &mut PgConnection,
    order_ids: &[&str],
) -> Result<HashMap<String, StoredOrder>, StorageError> {
    const CTX: &str = "loading the orders";
    let orders =
        sqlx::query("select * from orders where order_id = any($1) order by order_id for update")
            .bind(order_ids)
            .fetch_all(&mut *tx)
            .await
            .ctx(CTX)?;
    if orders.is_empty() {
        return Ok(HashMap::new());
    }
    let lines = sqlx::query(
        "select * from order_lines where order_id = any($1) order by order_id, line_no",
    )
    .bind(order_ids)
    .fetch_all(&mut *tx)
    .await
    .ctx(CTX)?;
    let mut lines_by_order: HashMap<String, Vec<sqlx::postgres::PgRow>> = HashMap::new();
    for l in lines {
        lines_by_order
            .entry(l.get::<String, _>("order_id"))
            .or_default()
            .push(l);
    }
    let mut out = HashMap::with_capacity(orders.len());
    for o in orders {
        let id: String = o.get("order_id");
        let order_id = OrderId::parse(id.clone()).map_err(|e| corrupt(CTX, e))?;
        let lines = lines_by_order.remove(&id).unwrap_or_default();
        out.insert(id, stored_order(&order_id, &o, &lines)?);
    }
    Ok(out)
}

/// Which of these orders have messages parked, waiting for them.
pub async fn orders_with_parked(
    tx: &mut PgConnection,
    order_ids: &[&str],
) -> Result<HashSet<String>, StorageError> {
    let rows: Vec<String> = sqlx::query_scalar(
        "select distinct order_id from inbox_messages
         where status = 'parked' and order_id = any($1)",
    )
    .bind(order_ids)
    .fetch_all(tx)
    .await
    .ctx("looking for parked messages")?;
    Ok(rows.into_iter().collect())
}

/// Which of these (order id, shipment id) pairs are already stored.
pub async fn existing_shipments(
    tx: &mut PgConnection,
    order_ids: &[&str],
    shipment_ids: &[&str],
) -> Result<HashSet<(String, String)>, StorageError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select s.order_id, s.shipment_id
         from shipments s join unnest($1::text[], $2::text[]) as v(order_id, shipment_id)
           on s.order_id = v.order_id and s.shipment_id = v.shipment_id",
    )
    .bind(order_ids)
    .bind(shipment_ids)
    .fetch_all(tx)
    .await
    .ctx("looking for earlier shipments")?;
    Ok(rows.into_iter().collect())
}

/// A shipment row to insert with [`store_intake_batch`].
#[derive(Debug, Clone)]
pub struct NewShipment<'a> {
    pub order_id: &'a OrderId,
    pub shipment: &'a Shipment,
    pub message_id: &'a str,
    pub shipped_value: MinorUnits,
    pub decision: String,
}

/// A cancellation row to insert with [`store_intake_batch`].
#[derive(Debug, Clone)]
pub struct NewCancellation<'a> {
    pub order_id: &'a OrderId,
    pub cancellation: &'a Cancellation,
    pub decision: String,
}

/// An order registration to insert with [`store_intake_batch`].
#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    pub order: &'a Order,
    pub allowance: MinorUnits,
    pub message_id: &'a str,
    pub payload_hash: String,
}

/// What intake writes for a batch of messages (or for one): new orders with their lines, each
/// planned order's progress, the capture rows with their keys, the shipment and cancellation
/// rows, and the messages in the inbox.
#[derive(Debug, Default)]
pub struct IntakeBatch<'a> {
    pub orders: Vec<NewOrder<'a>>,
    pub progress: Vec<(&'a Order, OrderState)>,
    pub captures: Vec<NewCapture<'a>>,
    pub shipments: Vec<NewShipment<'a>>,
    pub cancellations: Vec<NewCancellation<'a>>,
    /// Messages seen for the first time, or parked ones processed now. A message id already in
    /// the inbox and not parked fails the statement (a conflict): intake only writes messages
    /// it found absent (or parked) under the orders' locks.
    pub inbox: Vec<NewInbox<'a>>,
    /// Claim the batch's new head captures for this worker as they are inserted (see
    /// [`store_intake_batch`]); `None` inserts every capture queued.
    pub claim_for: Option<ClaimFor<'a>>,
}

/// The worker a batch's new head captures are claimed for, and its lease.
#[derive(Debug, Clone, Copy)]
pub struct ClaimFor<'a> {
    pub worker: &'a str,
    pub lease_seconds: f64,
}

impl IntakeBatch<'_> {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
            && self.progress.is_empty()
            && self.captures.is_empty()
            && self.shipments.is_empty()
            && self.cancellations.is_empty()
            && self.inbox.is_empty()
    }
}

/// Writes a batch in one statement (one round trip): the new orders and their lines, the
/// progress, capture rows and keys of the plans, the shipment and cancellation rows and the
/// inbox rows of every message of the batch. The parts do not depend on each other's rows
/// except the keys, which take their capture ids from the captures' `returning`; foreign keys
/// are checked at the end of the statement. An empty batch writes nothing.
///
/// With [`IntakeBatch::claim_for`], each order's first new capture is inserted already in
/// flight under that worker's lease when it is the order's head — no earlier capture of the
/// order is unsettled (queued, retrying, pending, in flight or waiting for attention) and the
/// order is not latched by a decline — exactly the capture [`super::captures::claim_many`]
/// would claim next, written once instead of inserted and then updated. The partial unique
/// index `captures_one_in_flight_per_order` still guards P8. Returns the captures so claimed.
pub async fn store_intake_batch(
    tx: &mut PgConnection,
    batch: &IntakeBatch<'_>,
) -> Result<Vec<ClaimedCapture>, StorageError> {
    const CTX: &str = "storing the batch";
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let progress = ProgressColumns::of(&batch.progress);
    let captures = CaptureColumns::of(&batch.captures, batch.claim_for.is_some())?;
    let shipments = ShipmentColumns::of(&batch.shipments);
    let inbox = InboxColumns::of(&batch.inbox);
    let orders = NewOrderColumns::of(&batch.orders);
    let cancellations = CancellationColumns::of(&batch.cancellations);
    // Bound in the order the statement numbers its parameters.
    let query = sqlx::query(STORE_BATCH.as_str());
    let query = progress.bind(query);
    let query = captures.bind(query);
    let query = shipments.bind(query);
    let query = inbox.bind(query);
    let query = orders.bind(query);
    let query = cancellations.bind(query);
    let query = query
        .bind(batch.claim_for.map(|c| c.worker))
        .bind(batch.claim_for.map_or(0.0, |c| c.lease_seconds))
        .bind(&captures.claims);
    let rows = query.fetch_all(tx).await.ctx(CTX)?;
    // Every message's inbox row is inserted or updated: a row neither inserted nor updated is
    // a message id already there and not parked.
    let inbox_rows: i64 = rows.first().map_or(0, |r| r.get("inbox_rows"));
    if inbox_rows != batch.inbox.len() as i64 {
        return Err(StorageError::Conflict {
            context: CTX,
            constraint: "inbox_messages_pkey".into(),
        });
    }
    rows.iter()
        .filter(|r| r.get::<Option<i64>, _>("capture_id").is_some())
        .map(super::captures::claimed_from_row)
        .collect()
}

/// The batch statement, one named part per table it writes. It returns one row: the number of
/// inbox rows written and, joined to it, the captures inserted in flight (none: one row of
/// nulls). Parameters are numbered across the parts: progress $1–$11, captures $12–$27 and
/// $75–$77 (the claiming worker, its lease in seconds, which rows may be claimed), shipments
/// $28–$35, inbox $36–$46, new orders and their lines $47–$70, cancellations $71–$74.
static STORE_BATCH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "with {PROGRESS}, {LINE_PROGRESS}, {NEW_CAPTURES}, {NEW_KEYS}, {NEW_SHIPMENTS}, \
         {NEW_CANCELLATIONS}, {NEW_ORDERS}, {NEW_LINES}, new_inbox as ({NEW_INBOX} returning 1)
         select (select count(*) from new_inbox) as inbox_rows, c.*, false as taken_over
         from (values (1)) as one (x)
         left join new_captures c on c.status = 'in_flight'"
    )
});

/// Each shipped order's progress ($1–$6).
const PROGRESS: &str = "progress as (
             update orders o set phase = v.phase, claimed_amount = v.claimed,
                 shipping_charged = v.shipping, shortfall_amount = v.shortfall,
                 capture_count = v.captures, updated_at = now()
             from unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                 $6::int[]) as v(order_id, phase, claimed, shipping, shortfall, captures)
             where o.order_id = v.order_id
         )";

/// Its lines' quantities, where they changed ($7–$11).
const LINE_PROGRESS: &str = "line_progress as (
             update order_lines l set shipped_quantity = v.s, cancelled_quantity = v.c,
                 charged_quantity = v.ch
             from unnest($7::text[], $8::text[], $9::int[], $10::int[], $11::int[])
                 as v(order_id, line_id, s, c, ch)
             where l.order_id = v.order_id and l.line_id = v.line_id
               and (l.shipped_quantity, l.cancelled_quantity, l.charged_quantity)
                   is distinct from (v.s, v.c, v.ch)
         )";

/// The capture rows the plans asked for ($12–$27), each order's head inserted in flight for
/// the claiming worker ($75–$77; see [`store_intake_batch`]). The lookups read the state before
/// this statement: the batch's own new captures are not among them.
const NEW_CAPTURES: &str = "new_captures as (
             insert into captures (order_id, provider, authorization_id, sequence, kind,
                 cause_kind, cause_id, amount, currency, is_final, release_after, lines,
                 shipping_amount, shortfall_amount, idempotency_key, traceparent, status,
                 lease_owner, lease_expires_at, attempts, first_attempt_at)
             select order_id, provider, authorization_id, sequence, kind, cause_kind, cause_id,
                 amount, currency, is_final, release_after, lines::jsonb, shipping_amount,
                 shortfall_amount, idempotency_key, traceparent,
                 case when head then 'in_flight' else 'queued' end,
                 case when head then $75::text end,
                 case when head then now() + make_interval(secs => $76::float8) end,
                 case when head then 1 else 0 end,
                 case when head then now() end
             from (
                 select v.*, $75::text is not null and v.claim
                     -- nothing of the order unsettled before it (P8)
                     and not exists (select 1 from captures a where a.order_id = v.order_id
                         and a.status not in ('succeeded', 'declined', 'failed', 'blocked'))
                     -- the decline latch (P4): nothing is sent for a declined order
                     and not exists (select 1 from orders o
                         where o.order_id = v.order_id and o.phase = 'declined') as head
                 from unnest($12::text[], $13::text[], $14::text[], $15::int[], $16::text[],
                     $17::text[], $18::text[], $19::bigint[], $20::text[], $21::bool[],
                     $22::bool[], $23::text[], $24::bigint[], $25::bigint[], $26::text[],
                     $27::text[], $77::bool[])
                     as v(order_id, provider, authorization_id, sequence, kind, cause_kind,
                          cause_id, amount, currency, is_final, release_after, lines,
                          shipping_amount, shortfall_amount, idempotency_key, traceparent, claim)
             ) as v
             returning *
         )";

/// Their generation-0 keys, from the captures' `returning`.
const NEW_KEYS: &str = "new_keys as (
             insert into capture_keys (idempotency_key, capture_id, key_generation, amount,
                 is_final)
             select idempotency_key, capture_id, 0, amount, is_final from new_captures
         )";

/// The shipment rows ($28–$35).
const NEW_SHIPMENTS: &str = "new_shipments as (
             insert into shipments (order_id, shipment_id, message_id, items, last_shipment,
                 shipped_at, shipped_value, decision)
             select order_id, shipment_id, message_id, items::jsonb, last_shipment, shipped_at,
                 shipped_value, decision
             from unnest($28::text[], $29::text[], $30::text[], $31::text[], $32::bool[],
                 $33::timestamptz[], $34::bigint[], $35::text[])
                 as v(order_id, shipment_id, message_id, items, last_shipment, shipped_at,
                      shipped_value, decision)
         )";

/// The cancellation rows ($71–$74).
const NEW_CANCELLATIONS: &str = "new_cancellations as (
             insert into cancellations (order_id, cancellation_id, items, decision)
             select order_id, cancellation_id, items::jsonb, decision
             from unnest($71::text[], $72::text[], $73::text[], $74::text[])
                 as v(order_id, cancellation_id, items, decision)
         )";

/// New orders ($47–$59).
const NEW_ORDERS: &str = "new_orders as (
             insert into orders (order_id, currency, provider, authorization_id,
                 authorized_amount, over_capture_allowance, authorized_at,
                 authorization_expires_at, shipping_amount, order_discount_amount, order_total,
                 message_id, payload_hash)
             select * from unnest($47::text[], $48::text[], $49::text[], $50::text[],
                 $51::bigint[], $52::bigint[], $53::timestamptz[], $54::timestamptz[],
                 $55::bigint[], $56::bigint[], $57::bigint[], $58::text[], $59::text[])
         )";

/// Their lines ($60–$70).
const NEW_LINES: &str = "new_lines as (
             insert into order_lines (order_id, line_no, line_id, sku, name, quantity,
                 unit_amount, tax_amount, discount_amount, order_discount_share, net_amount)
             select * from unnest($60::text[], $61::int[], $62::text[], $63::text[], $64::text[],
                 $65::int[], $66::bigint[], $67::bigint[], $68::bigint[], $69::bigint[],
                 $70::bigint[])
         )";

/// The messages ($36–$46): inserted, or, for a parked message processed now, updated. A row
/// already there and not parked is left alone (and fails the batch, see
/// [`store_intake_batch`]). The batch statement adds its `returning`.
const NEW_INBOX: &str =
    "insert into inbox_messages (message_id, message_type, order_id, payload_hash, status,
             reject_reason, body, routing_key, traceparent, tracestate, park_expires_at)
         select * from unnest($36::text[], $37::text[], $38::text[], $39::text[], $40::text[],
             $41::text[], $42::bytea[], $43::text[], $44::text[], $45::text[],
             $46::timestamptz[])
         on conflict (message_id) do update set
             status = excluded.status, reject_reason = excluded.reject_reason,
             body = excluded.body, park_expires_at = excluded.park_expires_at, updated_at = now()
         where inbox_messages.status = 'parked'";

type BatchQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// The parameters of [`PROGRESS`] and [`LINE_PROGRESS`], one array per column.
#[derive(Default)]
struct ProgressColumns<'a> {
    order_ids: Vec<&'a str>,
    phases: Vec<&'static str>,
    claimed: Vec<i64>,
    shipping: Vec<i64>,
    shortfall: Vec<i64>,
    captures: Vec<i32>,
    line_orders: Vec<&'a str>,
    line_ids: Vec<&'a str>,
    shipped: Vec<i32>,
    cancelled: Vec<i32>,
    charged: Vec<i32>,
}

impl<'a> ProgressColumns<'a> {
    fn of(progress: &'a [(&'a Order, OrderState)]) -> Self {
        let mut c = ProgressColumns::default();
        for (order, state) in progress {
            c.order_ids.push(order.order_id().as_str());
            c.phases.push(match state.phase {
                Phase::Open => "open",
                Phase::Completed => "completed",
                Phase::Declined => "declined",
            });
            c.claimed.push(state.claimed.get());
            c.shipping.push(state.shipping_charged.get());
            c.shortfall.push(state.shortfall.get());
            c.captures.push(state.captures as i32);
            for (i, line) in order.lines().iter().enumerate() {
                let at = |v: &[u32]| v.get(i).copied().unwrap_or(0) as i32;
                c.line_orders.push(order.order_id().as_str());
                c.line_ids.push(line.line_id.as_str());
                c.shipped.push(at(&state.shipped));
                c.cancelled.push(at(&state.cancelled));
                c.charged.push(at(&state.charged));
            }
        }
        c
    }

    fn bind<'q>(&'q self, query: BatchQuery<'q>) -> BatchQuery<'q> {
        query
            .bind(&self.order_ids)
            .bind(&self.phases)
            .bind(&self.claimed)
            .bind(&self.shipping)
            .bind(&self.shortfall)
            .bind(&self.captures)
            .bind(&self.line_orders)
            .bind(&self.line_ids)
            .bind(&self.shipped)
            .bind(&self.cancelled)
            .bind(&self.charged)
    }
}

/// The parameters of [`NEW_CAPTURES`], one array per column.
#[derive(Default)]
struct CaptureColumns<'a> {
    orders: Vec<&'a str>,
    providers: Vec<&'a str>,
    authorizations: Vec<&'a str>,
    sequences: Vec<i32>,
    kinds: Vec<&'static str>,
    cause_kinds: Vec<&'static str>,
    cause_ids: Vec<&'a str>,
    amounts: Vec<i64>,
    currencies: Vec<String>,
    finals: Vec<bool>,
    release_after: Vec<bool>,
    lines: Vec<String>,
    shipping: Vec<i64>,
    shortfall: Vec<i64>,
    keys: Vec<String>,
    traceparents: Vec<Option<&'a str>>,
    /// Whether the row may be inserted in flight: with `claim`, each order's lowest sequence.
    claims: Vec<bool>,
}

impl<'a> CaptureColumns<'a> {
    fn of(captures: &'a [NewCapture<'a>], claim: bool) -> Result<Self, StorageError> {
        let mut c = CaptureColumns::default();
        let mut first: HashMap<&str, u32> = HashMap::new();
        if claim {
            for row in captures {
                let at = first
                    .entry(row.order.order_id().as_str())
                    .or_insert(row.sequence);
                *at = (*at).min(row.sequence);
            }
        }
        for row in captures {
            c.claims
                .push(first.get(row.order.order_id().as_str()) == Some(&row.sequence));
            let auth = row.order.authorization();
            c.orders.push(row.order.order_id().as_str());
            c.providers.push(auth.provider.as_str());
            c.authorizations.push(auth.authorization_id.as_str());
            c.sequences.push(row.sequence as i32);
            c.kinds.push(row.kind.as_str());
            c.cause_kinds.push(row.cause_kind);
            c.cause_ids.push(row.cause_id.as_ref());
            c.amounts.push(row.amount.get());
            c.currencies.push(row.order.currency().code().to_owned());
            c.finals.push(row.is_final);
            c.release_after.push(row.release_after);
            c.lines.push(
                serde_json::to_string(&clean_lines(&row.lines))
                    .map_err(|e| corrupt("encoding capture lines", e))?,
            );
            c.shipping.push(row.shipping.get());
            c.shortfall.push(row.shortfall.get());
            c.keys.push(capture_key(row).as_str().to_owned());
            c.traceparents.push(row.traceparent);
        }
        Ok(c)
    }

    fn bind<'q>(&'q self, query: BatchQuery<'q>) -> BatchQuery<'q> {
        query
            .bind(&self.orders)
            .bind(&self.providers)
            .bind(&self.authorizations)
            .bind(&self.sequences)
            .bind(&self.kinds)
            .bind(&self.cause_kinds)
            .bind(&self.cause_ids)
            .bind(&self.amounts)
            .bind(&self.currencies)
            .bind(&self.finals)
            .bind(&self.release_after)
            .bind(&self.lines)
            .bind(&self.shipping)
            .bind(&self.shortfall)
            .bind(&self.keys)
            .bind(&self.traceparents)
    }
}

/// The parameters of [`NEW_SHIPMENTS`], one array per column.
#[derive(Default)]
struct ShipmentColumns<'a> {
    orders: Vec<&'a str>,
    ids: Vec<&'a str>,
    messages: Vec<&'a str>,
    items: Vec<String>,
    last: Vec<bool>,
    shipped_at: Vec<DateTime<Utc>>,
    values: Vec<i64>,
    decisions: Vec<&'a str>,
}

impl<'a> ShipmentColumns<'a> {
    fn of(shipments: &'a [NewShipment<'a>]) -> Self {
        let mut c = ShipmentColumns::default();
        for s in shipments {
            c.orders.push(s.order_id.as_str());
            c.ids.push(s.shipment.shipment_id().as_str());
            c.messages.push(s.message_id);
            c.items.push(items_json(s.shipment.items()).to_string());
            c.last.push(s.shipment.last_shipment());
            c.shipped_at.push(s.shipment.shipped_at());
            c.values.push(s.shipped_value.get());
            c.decisions.push(s.decision.as_str());
        }
        c
    }

    fn bind<'q>(&'q self, query: BatchQuery<'q>) -> BatchQuery<'q> {
        query
            .bind(&self.orders)
            .bind(&self.ids)
            .bind(&self.messages)
            .bind(&self.items)
            .bind(&self.last)
            .bind(&self.shipped_at)
            .bind(&self.values)
            .bind(&self.decisions)
    }
}

/// The parameters of [`NEW_CANCELLATIONS`], one array per column.
#[derive(Default)]
struct CancellationColumns<'a> {
    orders: Vec<&'a str>,
    ids: Vec<&'a str>,
    items: Vec<String>,
    decisions: Vec<&'a str>,
}

impl<'a> CancellationColumns<'a> {
    fn of(cancellations: &'a [NewCancellation<'a>]) -> Self {
        let mut c = CancellationColumns::default();
        for x in cancellations {
            c.orders.push(x.order_id.as_str());
            c.ids.push(x.cancellation.cancellation_id().as_str());
            c.items.push(items_json(x.cancellation.items()).to_string());
            c.decisions.push(x.decision.as_str());
        }
        c
    }

    fn bind<'q>(&'q self, query: BatchQuery<'q>) -> BatchQuery<'q> {
        query
            .bind(&self.orders)
            .bind(&self.ids)
            .bind(&self.items)
            .bind(&self.decisions)
    }
}

/// The parameters of [`NEW_INBOX`], one array per column.
#[derive(Default)]
struct InboxColumns<'a> {
    ids: Vec<&'a str>,
    types: Vec<&'a str>,
    orders: Vec<Option<&'a str>>,
    hashes: Vec<&'a str>,
    statuses: Vec<&'static str>,
    reasons: Vec<Option<&'a str>>,
    bodies: Vec<Option<&'a [u8]>>,
    routing_keys: Vec<Option<&'a str>>,
    traceparents: Vec<Option<&'a str>>,
    tracestates: Vec<Option<&'a str>>,
    park_expires_at: Vec<Option<DateTime<Utc>>>,
}

impl<'a> InboxColumns<'a> {
    fn of(inbox: &'a [NewInbox<'a>]) -> Self {
        let mut c = InboxColumns::default();
        for m in inbox {
            c.ids.push(m.message_id);
            c.types.push(m.message_type);
            c.orders.push(m.order_id);
            c.hashes.push(m.payload_hash);
            c.statuses.push(m.status.as_str());
            c.reasons.push(m.reject_reason.as_deref());
            c.bodies.push(m.body);
            c.routing_keys.push(m.routing_key);
            c.traceparents.push(m.traceparent);
            c.tracestates.push(m.tracestate);
            c.park_expires_at.push(m.park_expires_at);
        }
        c
    }

    fn bind<'q>(&'q self, query: BatchQuery<'q>) -> BatchQuery<'q> {
        query
            .bind(&self.ids)
            .bind(&self.types)
            .bind(&self.orders)
            .bind(&self.hashes)
            .bind(&self.statuses)
            .bind(&self.reasons)
            .bind(&self.bodies)
            .bind(&self.routing_keys)
            .bind(&self.traceparents)
            .bind(&self.tracestates)
            .bind(&self.park_expires_at)
    }
}

/// The parameters of [`NEW_ORDERS`] and [`NEW_LINES`], one array per column.
#[derive(Default)]
struct NewOrderColumns<'a> {
    ids: Vec<&'a str>,
    currencies: Vec<String>,
    providers: Vec<&'a str>,
    authorizations: Vec<&'a str>,
    authorized: Vec<i64>,
    allowances: Vec<i64>,
    authorized_at: Vec<DateTime<Utc>>,
    expires_at: Vec<Option<DateTime<Utc>>>,
    shipping: Vec<i64>,
    discounts: Vec<i64>,
    totals: Vec<i64>,
    messages: Vec<&'a str>,
    hashes: Vec<&'a str>,
    line_orders: Vec<&'a str>,
    line_nos: Vec<i32>,
    line_ids: Vec<&'a str>,
    skus: Vec<String>,
    names: Vec<String>,
    quantities: Vec<i32>,
    unit_amounts: Vec<i64>,
    tax_amounts: Vec<i64>,
    discount_amounts: Vec<i64>,
    discount_shares: Vec<i64>,
    nets: Vec<i64>,
}

impl<'a> NewOrderColumns<'a> {
    fn of(orders: &'a [NewOrder<'a>]) -> Self {
        let mut c = NewOrderColumns::default();
        for n in orders {
            let (order, auth) = (n.order, n.order.authorization());
            c.ids.push(order.order_id().as_str());
            c.currencies.push(order.currency().code().to_owned());
            c.providers.push(auth.provider.as_str());
            c.authorizations.push(auth.authorization_id.as_str());
            c.authorized.push(auth.amount.get());
            c.allowances.push(n.allowance.get());
            c.authorized_at.push(auth.authorized_at);
            c.expires_at.push(auth.expires_at);
            c.shipping.push(order.shipping_amount().get());
            c.discounts.push(order.order_discount_amount().get());
            c.totals.push(order.total().amount().get());
            c.messages.push(n.message_id);
            c.hashes.push(n.payload_hash.as_str());
            let (shares, nets) = (order.discount_shares(), order.line_nets());
            for (i, l) in order.lines().iter().enumerate() {
                c.line_orders.push(order.order_id().as_str());
                c.line_nos.push(i as i32);
                c.line_ids.push(l.line_id.as_str());
                c.skus.push(outside(&l.sku));
                c.names.push(outside(&l.name));
                c.quantities.push(l.quantity.get() as i32);
                c.unit_amounts.push(l.unit_amount.get());
                c.tax_amounts.push(l.tax_amount.get());
                c.discount_amounts.push(l.discount_amount.get());
                c.discount_shares.push(shares.get(i).map_or(0, |m| m.get()));
                c.nets.push(nets.get(i).map_or(0, |m| m.get()));
            }
        }
        c
    }

    fn bind<'q>(&'q self, query: BatchQuery<'q>) -> BatchQuery<'q> {
        query
            .bind(&self.ids)
            .bind(&self.currencies)
            .bind(&self.providers)
            .bind(&self.authorizations)
            .bind(&self.authorized)
            .bind(&self.allowances)
            .bind(&self.authorized_at)
            .bind(&self.expires_at)
            .bind(&self.shipping)
            .bind(&self.discounts)
            .bind(&self.totals)
            .bind(&self.messages)
            .bind(&self.hashes)
            .bind(&self.line_orders)
            .bind(&self.line_nos)
            .bind(&self.line_ids)
            .bind(&self.skus)
            .bind(&self.names)
            .bind(&self.quantities)
            .bind(&self.unit_amounts)
            .bind(&self.tax_amounts)
            .bind(&self.discount_amounts)
            .bind(&self.discount_shares)
            .bind(&self.nets)
    }
}

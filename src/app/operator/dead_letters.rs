//! `dead-letter list` and `dead-letter requeue`: refused messages from `rejected_messages`.
//!
//! A requeue publishes the stored body again to the exchange with its routing key and message
//! id, and marks the refusal `requeued_at`. Decisions:
//!
//! - **The inbox.** A refused message's id is remembered as `rejected` in the inbox, so that a
//!   redelivery is refused the same way. Requeued with the same id and bytes, it would only be
//!   answered "already refused". A requeue is an operator saying "the cause is fixed, process
//!   it afresh", so it deletes that inbox row, in the same transaction that marks the refusal
//!   requeued. Only a `rejected` row goes: a processed or parked message keeps its dedupe (P1),
//!   and a shipment id already applied is still deduplicated by the shipments table.
//! - **Refused again.** The refusal's dedupe key is retired when it is requeued, so a second
//!   refusal of the requeued copy is recorded as a new row (and shows in `reconciliation_
//!   exceptions` again) instead of disappearing into the old one.
//! - **Masked bodies.** We keep bodies with card-number-like digit runs masked (P9). Such a body
//!   is not the message that was sent; publishing it could change what it says. It is skipped:
//!   publish the original again with `capture-worker publish`.
//! - **Conflicts.** A `message_conflict` refusal is a second, different message under an id
//!   already used; the first stands and requeueing cannot change that. It is skipped: publish it
//!   under a new message id.
//! - Refusals without a body (none are recorded today) or without a routing key are skipped.
//!
//! The copy in the RabbitMQ dead-letter queue is left alone; it is a convenience for the
//! publisher's team, and PostgreSQL is the record.
//!
//! A dry run ([`Requeuer::dry_run`]) makes the same checks in a transaction it rolls back and
//! never connects to RabbitMQ: it says what would be requeued and changes nothing.

use std::fmt;

use lapin::types::{AMQPValue, FieldTable, LongString};
use serde::Serialize;

use crate::config::Settings;
use crate::queue::publisher::Publisher;
use crate::queue::topology::Topology;
use crate::storage::Store;
use crate::storage::operator::{self as sql, RejectionRow};

use super::{Cell, OperatorError, OutputFormat, csv, table};

/// What `crate::sanitize` writes in place of a card-number-like digit run.
pub const MASK_MARKER: &str = crate::sanitize::CARD_MASKED;

/// Header on a requeued message naming the refusal it came from.
pub const REQUEUED_FROM_HEADER: &str = "x-capture-requeued-from";

/// Why a refusal was not requeued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    NotFound,
    AlreadyRequeued,
    NoBody,
    MaskedBody,
    NoRoutingKey,
    FirstMessageStands,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::NotFound => "no such rejection",
            SkipReason::AlreadyRequeued => "already requeued",
            SkipReason::NoBody => "no body was kept",
            SkipReason::MaskedBody => {
                "its body was altered when kept (card-number-like digits masked, a secret removed, or cut to an excerpt); publish the original with `capture-worker publish`"
            }
            SkipReason::NoRoutingKey => "no routing key or message type was recorded",
            SkipReason::FirstMessageStands => {
                "another message with this id was applied first; publish this one under a new message_id"
            }
        })
    }
}

/// What became of one refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RequeueResult {
    Requeued {
        rejection_id: i64,
        reason: String,
        message_id: Option<String>,
        routing_key: String,
        /// The inbox's "already refused" row was deleted.
        inbox_cleared: bool,
    },
    Skipped {
        rejection_id: i64,
        why: SkipReason,
    },
    /// A dry run: this refusal would be requeued; nothing was changed.
    WouldRequeue {
        rejection_id: i64,
        reason: String,
        message_id: Option<String>,
        routing_key: String,
    },
}

impl RequeueResult {
    pub fn is_requeued(&self) -> bool {
        matches!(self, RequeueResult::Requeued { .. })
    }
}

impl fmt::Display for RequeueResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequeueResult::Requeued {
                rejection_id,
                reason,
                message_id,
                routing_key,
                ..
            } => write!(
                f,
                "rejection {rejection_id} ({reason}): requeued with routing key {routing_key} (message {})",
                message_id.as_deref().unwrap_or("-")
            ),
            RequeueResult::Skipped { rejection_id, why } => {
                write!(f, "rejection {rejection_id}: skipped, {why}")
            }
            RequeueResult::WouldRequeue {
                rejection_id,
                reason,
                message_id,
                routing_key,
            } => write!(
                f,
                "rejection {rejection_id} ({reason}): would be requeued with routing key {routing_key} (message {}); dry run, nothing changed",
                message_id.as_deref().unwrap_or("-")
            ),
        }
    }
}

/// Publishes refused messages again, one transaction each; a dry run has no broker.
pub struct Requeuer {
    store: Store,
    broker: Option<(lapin::Connection, Publisher)>,
    exchange: String,
}

impl Requeuer {
    /// Connects to RabbitMQ and declares the topology (idempotent), so the exchange exists.
    pub async fn connect(store: Store, settings: &Settings) -> Result<Requeuer, OperatorError> {
        let connection = lapin::Connection::connect(
            settings.amqp.url.expose(),
            lapin::ConnectionProperties::default(),
        )
        .await
        .map_err(OperatorError::Broker)?;
        let channel = connection
            .create_channel()
            .await
            .map_err(OperatorError::Broker)?;
        Topology::new(settings.amqp.exchange.clone(), settings.amqp.queue.clone())
            .declare(&channel)
            .await
            .map_err(OperatorError::Broker)?;
        let publisher = Publisher::open(&connection)
            .await
            .map_err(OperatorError::Broker)?;
        Ok(Requeuer {
            store,
            broker: Some((connection, publisher)),
            exchange: settings.amqp.exchange.clone(),
        })
    }

    /// A requeuer that only says what it would do: no broker, every transaction rolled back.
    pub fn dry_run(store: Store) -> Requeuer {
        Requeuer {
            store,
            broker: None,
            exchange: String::new(),
        }
    }

    /// Requeues one refusal (see the module's decisions), in one transaction committed after
    /// the broker confirmed the publish: if the publish fails, nothing changes.
    pub async fn requeue(&self, rejection_id: i64) -> Result<RequeueResult, OperatorError> {
        let skipped = |why| Ok(RequeueResult::Skipped { rejection_id, why });
        let (mut requeue, rejection) = sql::Requeue::begin(&self.store, rejection_id).await?;
        let Some(r) = rejection else {
            return skipped(SkipReason::NotFound);
        };
        if r.requeued_at.is_some() {
            return skipped(SkipReason::AlreadyRequeued);
        }
        let Some(body) = r.body.as_deref() else {
            return skipped(SkipReason::NoBody);
        };
        if [
            MASK_MARKER,
            crate::sanitize::SECRET_REMOVED,
            crate::sanitize::TRUNCATED,
        ]
        .iter()
        .any(|marker| body.contains(marker))
        {
            return skipped(SkipReason::MaskedBody);
        }
        if r.reason == "message_conflict" {
            return skipped(SkipReason::FirstMessageStands);
        }
        let Some(routing_key) = r
            .routing_key
            .clone()
            .or_else(|| r.message_type.clone())
            .filter(|k| !k.is_empty())
        else {
            return skipped(SkipReason::NoRoutingKey);
        };
        let Some((_, publisher)) = &self.broker else {
            // Dry run: the transaction is dropped, so rolled back.
            return Ok(RequeueResult::WouldRequeue {
                rejection_id,
                reason: r.reason,
                message_id: r.message_id,
                routing_key,
            });
        };
        // Both before the publish, under this transaction: the worker that receives the copy
        // waits on these rows until the commit, then finds the message id forgotten and the
        // old refusal's dedupe key retired, so a second refusal is recorded as a new row.
        let inbox_cleared = match r.message_id.as_deref() {
            Some(id) => requeue.forget_refusal(id).await? > 0,
            None => false,
        };
        requeue.mark_requeued(rejection_id).await?;
        let mut headers = FieldTable::default();
        headers.insert(
            REQUEUED_FROM_HEADER.into(),
            AMQPValue::LongString(LongString::from(rejection_id.to_string())),
        );
        publisher
            .publish(
                &self.exchange,
                &routing_key,
                body.as_bytes(),
                headers,
                r.message_id.as_deref(),
            )
            .await
            .map_err(Box::new)?;
        requeue.commit().await?;
        tracing::info!(
            event = "message_requeued",
            rejection_id,
            reason = %r.reason,
            message_id = r.message_id.as_deref().unwrap_or(""),
            routing_key = %routing_key,
            "a refused message was published again by an operator"
        );
        Ok(RequeueResult::Requeued {
            rejection_id,
            reason: r.reason,
            message_id: r.message_id,
            routing_key,
            inbox_cleared,
        })
    }

    pub async fn close(self) {
        if let Some((connection, _)) = self.broker {
            let _ = connection.close(200, "done".into()).await;
        }
    }
}

const LIST_COLUMNS: [&str; 9] = [
    "rejection_id",
    "received_at",
    "reason",
    "message_type",
    "message_id",
    "order_id",
    "has_body",
    "requeued_at",
    "detail",
];

fn list_cells(r: &RejectionRow, detail_width: Option<usize>) -> Vec<Cell> {
    let detail = match detail_width {
        Some(w) if r.detail.chars().count() > w => {
            format!("{}…", r.detail.chars().take(w).collect::<String>())
        }
        _ => r.detail.clone(),
    };
    let time =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    vec![
        Cell::number(r.rejection_id),
        Cell::text(time(r.received_at)),
        Cell::text(r.reason.clone()),
        Cell::text(r.message_type.clone().unwrap_or_default()),
        Cell::text(r.message_id.clone().unwrap_or_default()),
        Cell::text(r.order_id.clone().unwrap_or_default()),
        Cell::text(if r.has_body { "yes" } else { "no" }),
        Cell::text(r.requeued_at.map(time).unwrap_or_default()),
        Cell::text(detail),
    ]
}

pub fn render_list(rows: &[RejectionRow], format: OutputFormat) -> Result<String, OperatorError> {
    match format {
        OutputFormat::Json => serde_json::to_string_pretty(rows)
            .map(|s| s + "\n")
            .map_err(|e| OperatorError::Invalid(format!("encoding the list as JSON: {e}"))),
        OutputFormat::Csv => csv(
            &LIST_COLUMNS,
            &rows.iter().map(|r| list_cells(r, None)).collect::<Vec<_>>(),
        ),
        OutputFormat::Table if rows.is_empty() => Ok("no refused messages\n".to_owned()),
        OutputFormat::Table => Ok(table(
            &LIST_COLUMNS,
            &rows
                .iter()
                .map(|r| list_cells(r, Some(70)))
                .collect::<Vec<_>>(),
        )),
    }
}

pub fn render_requeue(results: &[RequeueResult]) -> String {
    let mut out = String::new();
    for r in results {
        out.push_str(&r.to_string());
        out.push('\n');
    }
    if results.is_empty() {
        out.push_str("nothing to requeue\n");
    }
    out
}

//! `order show` (one order's whole story, in time order) and `order resume` (lift a decline
//! latch with a new authorization).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::domain::plan::{self, Carried, LineCharge, PlanContext, ResumeError};
use crate::domain::{Authorization, AuthorizationId, LineId, MinorUnits, OrderId, ShippingPolicy};
use crate::storage::Store;
use crate::storage::operator::{
    self as sql, CarriedCapture, NewAuthorization, OrderOverview, TimelineRow,
};
use crate::storage::plans::{PlanCause, PlannedCapture};

use super::{OperatorError, table};
use crate::domain::CapabilityLookup;

/// How one order's story is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoryFormat {
    /// Lines of text for a person.
    Text,
    /// One JSON document.
    Json,
}

/// One order as finance sees it, and everything that happened to it, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct OrderStory {
    #[serde(flatten)]
    pub overview: OrderOverview,
    pub history: Vec<TimelineRow>,
    /// Its outcome events with their publication state.
    pub events: Vec<crate::storage::outbox::OrderEvent>,
}

pub async fn story(store: &Store, order_id: &str) -> Result<OrderStory, OperatorError> {
    let overview = sql::order_overview(store.pool(), order_id)
        .await?
        .ok_or_else(|| OperatorError::NotFound {
            what: "order",
            id: order_id.to_owned(),
        })?;
    let history = sql::order_timeline(store.pool(), order_id).await?;
    let events = crate::storage::outbox::order_events(store.pool(), order_id).await?;
    Ok(OrderStory {
        overview,
        history,
        events,
    })
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn items(v: &Value) -> String {
    v.as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| format!("{}×{}", text(&i["line_id"]), text(&i["quantity"])))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// One history line, in words.
fn summary(row: &TimelineRow) -> String {
    let f = &row.fields;
    match row.kind.as_str() {
        "order_registered" => format!(
            "message {} · authorization {}/{} for {} {} · order total {}",
            text(&f["message_id"]),
            text(&f["provider"]),
            text(&f["authorization_id"]),
            text(&f["authorized_amount"]),
            text(&f["currency"]),
            text(&f["order_total"])
        ),
        "message_parked" if f["reason"] == "awaiting_increment" => format!(
            "{} {} waits for the answer to an increment of the hold (until {})",
            text(&f["message_type"]),
            text(&f["message_id"]),
            text(&f["until"])
        ),
        "message_parked" => format!(
            "{} {} waits for its order",
            text(&f["message_type"]),
            text(&f["message_id"])
        ),
        "shipment" => format!(
            "{}: {}{} · value {} · {} (message {})",
            text(&f["shipment_id"]),
            items(&f["items"]),
            if f["last_shipment"] == Value::Bool(true) {
                " · last shipment"
            } else {
                ""
            },
            text(&f["shipped_value"]),
            text(&f["decision"]),
            text(&f["message_id"])
        ),
        "cancellation" => format!(
            "{}: {} · {}",
            text(&f["cancellation_id"]),
            items(&f["items"]),
            text(&f["decision"])
        ),
        "authorization_replaced" => format!(
            "{}/{} ({}) replaced by {} after decline {}",
            text(&f["provider"]),
            text(&f["authorization_id"]),
            text(&f["authorized_amount"]),
            text(&f["superseded_by"]),
            text(&f["declined_code"])
        ),
        "capture_planned" => format!(
            "#{} {} {} {}{} on {} · cause {} {} · key {} (generation {}) · now {}{}",
            text(&f["sequence"]),
            text(&f["kind"]),
            text(&f["amount"]),
            text(&f["currency"]),
            if f["is_final"] == Value::Bool(true) {
                " final"
            } else {
                ""
            },
            text(&f["authorization_id"]),
            text(&f["cause_kind"]),
            text(&f["cause_id"]),
            text(&f["idempotency_key"]),
            text(&f["key_generation"]),
            text(&f["status"]),
            match &f["shortfall_amount"] {
                Value::Number(n) if n.as_i64().unwrap_or(0) > 0 => format!(" · shortfall {n}"),
                // In major units (--units major): shown unless it is zero.
                Value::String(s) if s.bytes().any(|b| b.is_ascii_digit() && b != b'0') => {
                    format!(" · shortfall {s}")
                }
                _ => String::new(),
            }
        ),
        "provider_call" => format!(
            "#{} attempt {} {} → {} · HTTP {} · code {} · {} ms · trace {} · request {}{}",
            text(&f["sequence"]),
            text(&f["attempt_no"]),
            text(&f["operation"]),
            text(&f["outcome"]),
            text(&f["http_status"]),
            text(&f["provider_code"]),
            text(&f["latency_ms"]),
            text(&f["trace_id"]),
            text(&f["provider_request_id"]),
            match &f["error"] {
                Value::String(e) => format!(" · {e}"),
                _ => String::new(),
            }
        ),
        "capture_settled" => format!(
            "#{} {} {} {} {} · reference {}{}",
            text(&f["sequence"]),
            text(&f["kind"]),
            text(&f["amount"]),
            text(&f["currency"]),
            text(&f["status"]),
            text(&f["provider_reference"]),
            match &f["decline_code"] {
                Value::String(c) => format!(" · decline {c}"),
                _ => String::new(),
            }
        ),
        "message_refused" => format!(
            "{} · {} (message {}, rejection {}{})",
            text(&f["reason"]),
            text(&f["detail"]),
            text(&f["message_id"]),
            text(&f["rejection_id"]),
            match &f["requeued_at"] {
                Value::String(t) => format!(", requeued {t}"),
                _ => String::new(),
            }
        ),
        "lifecycle_action" => crate::app::lifecycle::summary(f),
        _ => f.to_string(),
    }
}

/// The story as text for a terminal, or JSON.
pub fn render_story(story: &OrderStory, format: StoryFormat) -> Result<String, OperatorError> {
    if format == StoryFormat::Json {
        return serde_json::to_string_pretty(story)
            .map(|s| s + "\n")
            .map_err(|e| OperatorError::Invalid(format!("encoding the order as JSON: {e}")));
    }
    let o = &story.overview.order;
    let mut out = format!(
        "order {} · {} · {}\n  total {} · authorized {} on {}/{} · shipped {} · captured {} · pending {} · released {} · declined {} · blocked {} · shortfall {} · unshipped {}\n",
        text(&o["order_id"]),
        text(&o["currency"]).trim(),
        text(&o["status"]),
        text(&o["order_total"]),
        text(&o["authorized_amount"]),
        text(&o["provider"]),
        text(&o["authorization_id"]),
        text(&o["shipped_amount"]),
        text(&o["captured_amount"]),
        text(&o["pending_amount"]),
        text(&o["released_amount"]),
        text(&o["declined_amount"]),
        text(&o["blocked_amount"]),
        text(&o["shortfall_amount"]),
        text(&o["unshipped_amount"]),
    );
    out.push_str("\nauthorizations\n");
    let rows: Vec<Vec<String>> = story
        .overview
        .authorizations
        .iter()
        .map(|a| {
            vec![
                format!("{}/{}", text(&a["provider"]), text(&a["authorization_id"])),
                text(&a["status"]),
                text(&a["authorized_amount"]),
                text(&a["captured_amount"]),
                text(&a["pending_amount"]),
                text(&a["declined_amount"]),
                text(&a["blocked_amount"]),
                text(&a["released_amount"]),
                text(&a["expires_at"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "authorization",
            "status",
            "authorized",
            "captured",
            "pending",
            "declined",
            "blocked",
            "released",
            "expires_at",
        ],
        &rows,
    ));
    out.push_str("\nlines\n");
    let rows: Vec<Vec<String>> = story
        .overview
        .lines
        .iter()
        .map(|l| {
            vec![
                text(&l["line_id"]),
                text(&l["sku"]),
                text(&l["quantity"]),
                text(&l["net_amount"]),
                text(&l["shipped_quantity"]),
                text(&l["cancelled_quantity"]),
                text(&l["charged_quantity"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "line",
            "sku",
            "quantity",
            "net",
            "shipped",
            "cancelled",
            "charged",
        ],
        &rows,
    ));
    out.push_str("\nhistory\n");
    for row in &story.history {
        out.push_str(&format!(
            "{}  {:<22} {}\n",
            row.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            row.kind,
            summary(row)
        ));
    }
    out.push_str(&super::order_events::render(&story.events));
    Ok(out)
}

/// What `order resume` was asked to do.
#[derive(Debug, Clone)]
pub struct ResumeRequest<'a> {
    pub order_id: &'a str,
    pub authorization_id: &'a str,
    /// Minor units of the order's currency.
    pub amount: i64,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A capture row the resume planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedRow {
    pub capture_id: i64,
    pub sequence: u32,
    pub kind: &'static str,
    pub amount: i64,
    pub is_final: bool,
}

/// What `order resume` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResumeOutcome {
    pub order_id: String,
    pub currency: String,
    pub replaced_authorization: String,
    pub authorization: String,
    pub authorized_amount: i64,
    /// Declined and blocked captures whose value was planned again.
    pub carried_captures: Vec<i64>,
    pub carried_amount: i64,
    pub planned: Vec<PlannedRow>,
    /// Value the new authorization could not cover.
    pub shortfall: i64,
    /// `capture`, `release`, `void`, or `nothing:<reason>`.
    pub decision: String,
    /// Shipments and cancellations refused while the order was latched, not yet requeued.
    pub refused_while_latched: i64,
}

/// Lifts the decline latch of `order_id` with a new authorization, in one transaction: the
/// replaced authorization is kept in `superseded_authorizations`, the declined and blocked
/// captures' value is planned again under the new one (new capture rows, new keys; they stay
/// declined and blocked on the old one), and the order is open again. The running worker
/// sends the new captures. The replaced authorization is left as the provider has it; `provider
/// reconcile` shows whether it still holds funds.
pub async fn resume(
    store: &Store,
    capabilities: &dyn CapabilityLookup,
    shipping: ShippingPolicy,
    request: &ResumeRequest<'_>,
) -> Result<ResumeOutcome, OperatorError> {
    let (order_id, authorization_id, amount) = parse_request(request)?;
    let now = Utc::now();
    let mut tx = store.begin("starting the resume").await?;
    tx.lock_order_key(&order_id).await?;
    let stored = tx
        .load_order(&order_id, true)
        .await?
        .ok_or_else(|| OperatorError::NotFound {
            what: "order",
            id: order_id.to_string(),
        })?;
    let current = stored.order.authorization().clone();
    let caps = capabilities
        .capabilities(current.provider.as_str())
        .ok_or_else(|| OperatorError::UnknownProvider(current.provider.to_string()))?;
    if let Some(owner) = tx
        .authorization_owner(current.provider.as_str(), authorization_id.as_str())
        .await?
    {
        return Err(OperatorError::AuthorizationInUse {
            authorization_id: authorization_id.to_string(),
            owner,
        });
    }
    let carried_rows = tx
        .carried_captures(
            order_id.as_str(),
            current.provider.as_str(),
            current.authorization_id.as_str(),
        )
        .await?;
    let resume_error = |source: ResumeError| OperatorError::Resume {
        order_id: order_id.to_string(),
        source,
    };
    let carried = carried_value(&carried_rows).map_err(resume_error)?;
    let new_authorization = Authorization {
        provider: current.provider.clone(),
        authorization_id: authorization_id.clone(),
        amount,
        authorized_at: now,
        expires_at: request.expires_at,
    };
    let resumed = plan::resume(
        &stored.order,
        &stored.state,
        new_authorization,
        &carried,
        &PlanContext {
            capabilities: caps,
            shipping,
            now,
        },
    )
    .map_err(resume_error)?;
    tx.replace_authorization(
        order_id.as_str(),
        &NewAuthorization {
            authorization_id: authorization_id.as_str(),
            amount: amount.get(),
            over_capture_allowance: caps.over_capture.for_authorized(amount).get(),
            authorized_at: now,
            expires_at: request.expires_at,
            claimed: resumed.plan.state.claimed.get(),
        },
    )
    .await?;
    let order = &resumed.order;
    let recorded = tx
        .record_plan(
            order,
            &resumed.plan,
            PlanCause::Resume(&authorization_id),
            None,
        )
        .await?;
    let refused_while_latched = tx.refused_while_latched(&order_id).await?;
    tx.commit("committing the resume").await?;
    let decision = recorded.decision.clone();
    tracing::warn!(
        event = "order_resumed",
        order_id = %order_id,
        replaced_authorization = %current.authorization_id,
        authorization = %authorization_id,
        decision = %decision,
        "an operator lifted the decline latch with a new authorization"
    );
    Ok(ResumeOutcome {
        order_id: order_id.to_string(),
        currency: order.currency().code().to_owned(),
        replaced_authorization: current.authorization_id.to_string(),
        authorization: authorization_id.to_string(),
        authorized_amount: amount.get(),
        carried_captures: carried_rows.iter().map(|c| c.capture_id).collect(),
        carried_amount: carried_rows.iter().map(|c| c.amount).sum(),
        planned: planned_rows(&recorded.captures),
        shortfall: resumed.plan.shortfall.get(),
        decision,
        refused_while_latched,
    })
}

/// The request's order, new authorization and its amount, parsed.
fn parse_request(
    request: &ResumeRequest<'_>,
) -> Result<(OrderId, AuthorizationId, MinorUnits), OperatorError> {
    let invalid = |e: &dyn std::fmt::Display| OperatorError::Invalid(e.to_string());
    let order_id = OrderId::parse(request.order_id).map_err(|e| invalid(&e))?;
    let authorization_id =
        AuthorizationId::parse(request.authorization_id).map_err(|e| invalid(&e))?;
    let amount = MinorUnits::new(request.amount).map_err(|e| invalid(&e))?;
    if amount.is_zero() {
        return Err(OperatorError::Invalid(
            "--amount must be above 0: the new authorization's amount in minor units".into(),
        ));
    }
    Ok((order_id, authorization_id, amount))
}

/// The value of the declined and blocked captures, as the domain plans it again.
fn carried_value(rows: &[CarriedCapture]) -> Result<Vec<Carried>, ResumeError> {
    let mismatch = |e: &dyn std::fmt::Display| ResumeError::CarriedMismatch(e.to_string());
    rows.iter()
        .map(|c| {
            Ok(Carried {
                lines: c
                    .lines
                    .iter()
                    .map(|l| {
                        Ok(LineCharge {
                            line_id: LineId::parse(l.line_id.clone()).map_err(|e| mismatch(&e))?,
                            units: l.units,
                            amount: MinorUnits::new(l.amount).map_err(|e| mismatch(&e))?,
                        })
                    })
                    .collect::<Result<Vec<_>, ResumeError>>()?,
                shipping: MinorUnits::new(c.shipping).map_err(|e| mismatch(&e))?,
                shortfall: MinorUnits::new(c.shortfall).map_err(|e| mismatch(&e))?,
            })
        })
        .collect()
}

/// The capture rows the resume planned, as `order resume` reports them.
fn planned_rows(captures: &[PlannedCapture]) -> Vec<PlannedRow> {
    captures
        .iter()
        .map(|c| PlannedRow {
            capture_id: c.capture_id,
            sequence: c.sequence,
            kind: c.kind.as_str(),
            amount: c.amount.get(),
            is_final: c.is_final,
        })
        .collect()
}

pub fn render_resume(o: &ResumeOutcome) -> String {
    let mut out = format!(
        "order {} resumed on authorization {} ({} {}); {} replaced.\n",
        o.order_id, o.authorization, o.authorized_amount, o.currency, o.replaced_authorization
    );
    out.push_str(&format!(
        "captures {:?} (declined or blocked, {} {}) are planned again: ",
        o.carried_captures, o.carried_amount, o.currency
    ));
    if o.planned.is_empty() {
        out.push_str(&format!("{} (nothing to send now)\n", o.decision));
    } else {
        let parts: Vec<String> = o
            .planned
            .iter()
            .map(|p| {
                format!(
                    "capture {} (#{} {} {}{})",
                    p.capture_id,
                    p.sequence,
                    p.kind,
                    p.amount,
                    if p.is_final { ", final" } else { "" }
                )
            })
            .collect();
        out.push_str(&parts.join(", "));
        out.push_str(" queued; the running worker sends it within capture.sweep_interval_ms\n");
    }
    if o.shortfall > 0 {
        out.push_str(&format!(
            "the new authorization does not cover {} {}: recorded as shortfall\n",
            o.shortfall, o.currency
        ));
    }
    if o.refused_while_latched > 0 {
        out.push_str(&format!(
            "{} message(s) were refused while the order was latched; send them again with\n  capture-worker dead-letter requeue --all --order {} --reason order_declined\n",
            o.refused_while_latched, o.order_id
        ));
    }
    out
}

//! The outcome-events promise: every ledger transition has exactly one event, delivered at
//! least once, in order per order. A durable queue bound to the stage's outcomes exchange
//! (declared before the workers start, so it sees every event) is what a subscriber gets; the
//! ledger's `outcome_events` and `captures` say what it should have got.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use sqlx::{PgPool, Row};

/// The promise's name in violations.
pub const PROMISE: &str = "OUTCOMES";

/// One delivery the subscriber queue received: (event_id, order_id, sequence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub event_id: String,
    pub order_id: Option<String>,
    pub sequence: Option<i64>,
}

/// Declares the outcomes exchange (as the worker does) and a durable quorum queue bound to every
/// routing key.
pub async fn declare(ch: &Channel, exchange: &str, queue: &str) -> anyhow::Result<()> {
    ch.exchange_declare(
        exchange.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await?;
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Takes everything in the subscriber queue, in arrival order.
pub async fn drain(ch: &Channel, queue: &str) -> anyhow::Result<Vec<Delivered>> {
    let mut out = Vec::new();
    while let Some(msg) = ch
        .basic_get(queue.into(), BasicGetOptions::default())
        .await?
    {
        let body: serde_json::Value =
            serde_json::from_slice(&msg.delivery.data).context("an outcome event is not JSON")?;
        out.push(Delivered {
            event_id: body["event_id"].as_str().unwrap_or_default().to_owned(),
            order_id: body["order_id"].as_str().map(str::to_owned),
            sequence: body["sequence"].as_i64(),
        });
        msg.delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(out)
}

/// Unpublished events in the outbox.
pub async fn unpublished(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("select count(*) from outcome_events where published_at is null")
            .fetch_one(pool)
            .await?,
    )
}

/// A row of `outcome_events`: (event_id, order_id, sequence, type, data's capture_id).
type EventRow = (String, Option<String>, Option<i64>, String, Option<String>);

/// Checks the promise; returns the violations and a one-line summary.
pub async fn check(
    pool: &PgPool,
    delivered: &[Delivered],
) -> anyhow::Result<(Vec<String>, String)> {
    let mut v = Vec::new();
    // What the ledger recorded.
    let events: Vec<EventRow> = sqlx::query(
        "select event_id::text, order_id, sequence, event_type, data->>'capture_id'
             from outcome_events order by outcome_event_id",
    )
    .fetch_all(pool)
    .await
    .context("reading outcome events")?
    .into_iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect();
    let captures: Vec<(i64, String, String, String, bool)> =
        sqlx::query("select capture_id, order_id, kind, status, is_final from captures")
            .fetch_all(pool)
            .await
            .context("reading captures")?
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect();
    let latched: Vec<String> =
        sqlx::query_scalar("select order_id from orders where declined_at is not null")
            .fetch_all(pool)
            .await?;
    let rejections: i64 = sqlx::query_scalar("select count(*) from rejected_messages")
        .fetch_one(pool)
        .await?;

    // Exactly one event per transition.
    let mut per_capture: HashMap<(String, &str), usize> = HashMap::new();
    let mut per_order: HashMap<(String, &str), usize> = HashMap::new();
    let mut rejected_events = 0i64;
    for (_, order, _, kind, capture) in &events {
        if let Some(c) = capture {
            *per_capture.entry((c.clone(), kind.as_str())).or_default() += 1;
        }
        if let Some(o) = order {
            *per_order.entry((o.clone(), kind.as_str())).or_default() += 1;
        }
        if kind == "message.rejected" {
            rejected_events += 1;
        }
    }
    let count = |m: &HashMap<(String, &str), usize>, id: &str, kind: &str| {
        m.get(&(id.to_owned(), kind)).copied().unwrap_or(0)
    };
    let mut finals: HashMap<&str, usize> = HashMap::new();
    for (id, order, kind, status, is_final) in &captures {
        let id = id.to_string();
        let expected: &[(&str, usize)] = match (kind.as_str(), status.as_str()) {
            ("capture", "succeeded") => &[("capture.succeeded", 1), ("capture.declined", 0)],
            ("capture", "declined") => &[("capture.declined", 1), ("capture.succeeded", 0)],
            ("release", "succeeded") => &[("authorization.released", 1)],
            ("void", "succeeded") => &[("authorization.voided", 1)],
            (_, "queued" | "in_flight" | "pending" | "retrying" | "blocked") => &[
                ("capture.succeeded", 0),
                ("capture.declined", 0),
                ("authorization.released", 0),
                ("authorization.voided", 0),
            ],
            _ => &[],
        };
        for (event, n) in expected {
            let got = count(&per_capture, &id, event);
            if got != *n {
                v.push(format!(
                    "{PROMISE}: capture {id} of order {order} ({kind}, {status}) has {got} {event} events, expected {n}"
                ));
            }
        }
        if status == "attention" && count(&per_capture, &id, "capture.needs_attention") == 0 {
            v.push(format!(
                "{PROMISE}: capture {id} of order {order} needs attention without a capture.needs_attention event"
            ));
        }
        if status == "succeeded" && *is_final {
            *finals.entry(order.as_str()).or_default() += 1;
        }
    }
    let orders: HashSet<&str> = captures.iter().map(|c| c.1.as_str()).collect();
    for order in orders {
        let want = finals.get(order).copied().unwrap_or(0);
        let got = count(&per_order, order, "order.completed");
        if got != want {
            v.push(format!(
                "{PROMISE}: order {order} has {got} order.completed events, expected {want}"
            ));
        }
    }
    let latched: HashSet<String> = latched.into_iter().collect();
    for ((order, kind), n) in &per_order {
        if *kind == "order.capture_stopped" && (*n != 1 || !latched.contains(order)) {
            v.push(format!(
                "{PROMISE}: order {order} has {n} order.capture_stopped events (latched: {})",
                latched.contains(order)
            ));
        }
    }
    for order in &latched {
        if count(&per_order, order, "order.capture_stopped") == 0 {
            v.push(format!(
                "{PROMISE}: order {order} was latched without an order.capture_stopped event"
            ));
        }
    }
    if rejected_events != rejections {
        v.push(format!(
            "{PROMISE}: {rejections} rejected messages but {rejected_events} message.rejected events"
        ));
    }

    // Sequences in the ledger: 1..n per order.
    let mut sequences: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (_, order, seq, _, _) in &events {
        if let (Some(o), Some(s)) = (order, seq) {
            sequences.entry(o.as_str()).or_default().push(*s);
        }
    }
    for (order, mut seqs) in sequences {
        seqs.sort_unstable();
        if seqs.iter().enumerate().any(|(i, s)| *s != i as i64 + 1) {
            v.push(format!(
                "{PROMISE}: order {order}'s event sequences are not 1..{}: {seqs:?}",
                seqs.len()
            ));
        }
    }

    // Delivered at least once, and per order in sequence (first arrival of each event).
    let known: HashSet<&str> = events.iter().map(|e| e.0.as_str()).collect();
    let mut seen = HashSet::new();
    let mut last: HashMap<&str, i64> = HashMap::new();
    let mut duplicates = 0usize;
    for d in delivered {
        if !known.contains(d.event_id.as_str()) {
            v.push(format!(
                "{PROMISE}: delivered event {} is not in the ledger",
                d.event_id
            ));
            continue;
        }
        if !seen.insert(d.event_id.as_str()) {
            duplicates += 1;
            continue;
        }
        if let (Some(o), Some(s)) = (&d.order_id, d.sequence) {
            let prev = last.insert(o.as_str(), s).unwrap_or(0);
            if s != prev + 1 {
                v.push(format!(
                    "{PROMISE}: order {o}: event {s} arrived after {prev} (out of order or a gap)"
                ));
            }
        }
    }
    let missing = known.len() - seen.len().min(known.len());
    if missing > 0 {
        v.push(format!(
            "{PROMISE}: {missing} of {} events never reached the subscriber",
            known.len()
        ));
    }
    let summary = format!(
        "outcome events: {} in the ledger, {} deliveries ({} duplicates, same event_id), {} missing",
        known.len(),
        delivered.len(),
        duplicates,
        missing
    );
    Ok((v, summary))
}

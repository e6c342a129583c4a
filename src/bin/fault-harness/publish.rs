//! The generator's publisher: persistent messages, publisher confirms, `mandatory`, and
//! retransmission of everything unconfirmed after a connection loss (a broker restart, a
//! forced close, a frozen node). A retransmitted message may arrive twice; that is the point.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::workload::Message;

/// How far publishing got; read by fault injectors that strike at a point of the stream.
#[derive(Debug, Default)]
pub struct Progress {
    pub confirmed: AtomicUsize,
    pub total: AtomicUsize,
    pub done: AtomicBool,
    pub reconnects: AtomicUsize,
}

impl Progress {
    /// Confirmed share in per mille.
    pub fn per_mille(&self) -> usize {
        let total = self.total.load(Ordering::Relaxed).max(1);
        self.confirmed.load(Ordering::Relaxed) * 1000 / total
    }

    pub fn finished(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits until `per_mille` of the stream is confirmed (or publishing ended).
    pub async fn reach(&self, per_mille: usize) {
        while self.per_mille() < per_mille && !self.finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub struct PublishPlan {
    pub url: String,
    pub exchange: String,
    /// Messages per second (0: as fast as confirms allow).
    pub rate: u32,
    /// Give up after this long without finishing.
    pub deadline: Duration,
}

const BATCH: usize = 50;

/// Publishes every message once (or more, after connection losses) and returns how many
/// times the connection had to be re-established.
pub async fn publish_all(
    plan: PublishPlan,
    messages: Arc<Vec<Message>>,
    progress: Arc<Progress>,
) -> anyhow::Result<usize> {
    progress.total.store(messages.len(), Ordering::Relaxed);
    let started = Instant::now();
    let mut next = 0usize;
    let mut reconnects = 0usize;
    let mut backoff = Duration::from_millis(200);
    let result = loop {
        if next >= messages.len() {
            break Ok(reconnects);
        }
        if started.elapsed() > plan.deadline {
            break Err(anyhow::anyhow!(
                "publishing did not finish within {:?} ({next} of {} confirmed)",
                plan.deadline,
                messages.len()
            ));
        }
        match session(&plan, &messages, &mut next, &progress, started).await {
            Ok(()) => {}
            Err(_) => {
                reconnects += 1;
                progress.reconnects.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    };
    progress.done.store(true, Ordering::Relaxed);
    result
}

async fn session(
    plan: &PublishPlan,
    messages: &[Message],
    next: &mut usize,
    progress: &Progress,
    started: Instant,
) -> anyhow::Result<()> {
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(
            &plan.url,
            ConnectionProperties::default().with_connection_name("fault-harness-publisher".into()),
        ),
    )
    .await
    .context("connecting timed out")??;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let result = async {
        while *next < messages.len() {
            let end = (*next + BATCH).min(messages.len());
            let mut confirms = Vec::with_capacity(end - *next);
            for m in &messages[*next..end] {
                let mut props = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_headers(FieldTable::default());
                if let Some(id) = &m.message_id {
                    props = props.with_message_id(id.as_str().into());
                }
                let c = channel
                    .basic_publish(
                        plan.exchange.as_str().into(),
                        m.routing_key.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        &m.body,
                        props,
                    )
                    .await?;
                confirms.push(c);
            }
            for c in confirms {
                let confirm = tokio::time::timeout(Duration::from_secs(15), c)
                    .await
                    .context("no publisher confirm within 15 s")??;
                if confirm.is_nack() {
                    bail!("the broker nacked a message");
                }
                if confirm.take_message().is_some() {
                    bail!("a message was returned as unroutable");
                }
            }
            *next = end;
            progress.confirmed.store(end, Ordering::Relaxed);
            if plan.rate > 0 {
                // Pace to the planned rate.
                let due = Duration::from_millis(end as u64 * 1000 / u64::from(plan.rate));
                let elapsed = started.elapsed();
                if due > elapsed {
                    tokio::time::sleep(due - elapsed).await;
                }
            }
        }
        Ok(())
    }
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "done".into())).await;
    result
}

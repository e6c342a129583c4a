//! The commands behind the CLI: run, migrate, sandbox, publish, demo.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::config::Settings;
use crate::queue::publisher::Publisher;
use crate::queue::topology::Topology;
use crate::sandbox::{self, SandboxOptions};
use crate::storage::Store;
use crate::storage::operator as operator_sql;

use super::operator::units::Units;
use super::{Application, RunOptions};

/// Resolves when the process receives SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// `capture-worker run`.
pub async fn run(settings: Settings, migrate: bool) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sandbox_task = if settings.sandbox.embedded {
        let listener = tokio::net::TcpListener::bind(&settings.sandbox.listen)
            .await
            .with_context(|| {
                format!(
                    "binding the embedded sandbox on sandbox.listen {}",
                    settings.sandbox.listen
                )
            })?;
        let sb = sandbox::Sandbox::new(SandboxOptions {
            latency: Duration::from_millis(settings.sandbox.latency_ms),
            api_key: None,
        });
        route_sandbox_notifications(&sb, &settings);
        Some(tokio::spawn(sandbox::serve(listener, sb, async move {
            let _ = stop_rx.await;
        })))
    } else {
        None
    };
    let app = Application::build(
        settings,
        RunOptions {
            migrate,
            create_database: true,
        },
    )
    .await?;
    app.run_until_stopped(shutdown_signal()).await?;
    let _ = stop_tx.send(());
    if let Some(t) = sandbox_task {
        let _ = t.await;
    }
    Ok(())
}

/// `capture-worker migrate`.
pub async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let store = Store::connect(&settings.database, true).await?;
    store.migrate().await?;
    println!("migrations applied");
    Ok(())
}

/// Points the sandbox's notifications at the targets in `sandbox.notifications`.
fn route_sandbox_notifications(sb: &sandbox::Sandbox, settings: &Settings) {
    for (dialect, target) in &settings.sandbox.notifications {
        sb.set_notification_target(
            dialect,
            &target.url,
            target.secret.as_ref().map(|s| s.expose()),
        );
    }
}

/// `capture-worker sandbox`.
pub async fn serve_sandbox(
    settings: Settings,
    listen: Option<String>,
    latency_ms: Option<u64>,
) -> anyhow::Result<()> {
    let listen = listen.unwrap_or_else(|| settings.sandbox.listen.clone());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding the sandbox on {listen}"))?;
    let api_key = settings
        .providers
        .get("sandbox")
        .map(|p| p.resolve_api_key())
        .transpose()?
        .flatten()
        .map(|s| s.expose().to_owned());
    let sb = sandbox::Sandbox::new(SandboxOptions {
        latency: Duration::from_millis(latency_ms.unwrap_or(settings.sandbox.latency_ms)),
        api_key,
    });
    route_sandbox_notifications(&sb, &settings);
    println!("sandbox provider listening on http://{listen}");
    sandbox::serve(listener, sb, shutdown_signal()).await?;
    Ok(())
}

/// Splits input into messages: one JSON object, a JSON array, or one object per line.
pub fn split_messages(text: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        bail!("no messages in the input");
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(trimmed) {
        return Ok(match v {
            serde_json::Value::Array(items) => items,
            other => vec![other],
        });
    }
    trimmed
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("line {} is not JSON", i + 1))
        })
        .collect()
}

/// Connects and publishes messages to the exchange, routing key = `type`, with confirms.
pub async fn publish_messages(
    settings: &Settings,
    messages: &[serde_json::Value],
    traceparent: Option<&str>,
) -> anyhow::Result<usize> {
    let conn = lapin::Connection::connect(
        settings.amqp.url.expose(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .context("connecting to RabbitMQ (amqp.url)")?;
    let channel = conn.create_channel().await?;
    Topology::new(settings.amqp.exchange.clone(), settings.amqp.queue.clone())
        .declare(&channel)
        .await
        .context("declaring the topology")?;
    let publisher = Publisher::open(&conn).await?;
    let mut n = 0;
    for (i, m) in messages.iter().enumerate() {
        let Some(kind) = m.get("type").and_then(|t| t.as_str()) else {
            bail!(
                "message {} has no \"type\" string; it is the routing key",
                i + 1
            );
        };
        let id = m.get("message_id").and_then(|t| t.as_str());
        let mut headers = FieldTable::default();
        if let Some(tp) = traceparent {
            headers.insert(
                "traceparent".into(),
                AMQPValue::LongString(LongString::from(tp)),
            );
        }
        let body = serde_json::to_vec(m)?;
        publisher
            .publish(&settings.amqp.exchange, kind, &body, headers, id)
            .await
            .with_context(|| format!("publishing message {}", i + 1))?;
        n += 1;
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(n)
}

/// `capture-worker publish <file|->`.
pub async fn publish(
    settings: Settings,
    file: &Path,
    traceparent: Option<&str>,
) -> anyhow::Result<()> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let messages = split_messages(&text)?;
    let n = publish_messages(&settings, &messages, traceparent).await?;
    println!(
        "published {n} message(s) to exchange {} with confirms",
        settings.amqp.exchange
    );
    Ok(())
}

/// A sandbox authorization for the demo: id, amount, and the capture to decline, if any.
type DemoAuthorization = (String, i64, Option<u32>);
/// A demo order: name, lines (id, quantity, unit, tax), shipments (line, quantity), the
/// capture the sandbox declines, and how far the authorization falls short of the total.
type DemoOrder<'a> = (
    &'a str,
    &'a [(&'a str, i64, i64, i64)],
    &'a [&'a [(&'a str, i64)]],
    Option<u32>,
    i64,
);

/// The demo's messages and the sandbox authorizations they need.
fn demo_messages(run: &str) -> (Vec<serde_json::Value>, Vec<DemoAuthorization>) {
    use serde_json::json;
    let now = chrono::Utc::now().to_rfc3339();
    let mut msgs = Vec::new();
    let mut auths = Vec::new();
    let orders: [DemoOrder<'_>; 4] = [
        (
            "complete",
            &[("A", 2, 2500, 400), ("B", 1, 999, 80)],
            &[&[("A", 1)], &[("A", 1), ("B", 1)]],
            None,
            0,
        ),
        ("partial", &[("A", 3, 1000, 0)], &[&[("A", 1)]], None, 0),
        (
            "declined",
            &[("A", 3, 1500, 0)],
            &[&[("A", 1)], &[("A", 1)], &[("A", 1)]],
            Some(2),
            0,
        ),
        (
            "short",
            &[("A", 2, 5000, 0)],
            &[&[("A", 1)], &[("A", 1)]],
            None,
            3000,
        ),
    ];
    for (name, lines, shipments, decline, short_by) in orders {
        let order_id = format!("demo-{run}-{name}");
        let auth_id = format!("pi_demo_{run}_{name}");
        let total: i64 = lines.iter().map(|(_, q, u, t)| q * u + t).sum::<i64>() + 500;
        let authorized = total - short_by;
        auths.push((auth_id.clone(), authorized, decline));
        msgs.push(json!({
            "message_id": format!("{order_id}-authorized"),
            "type": "order.authorized", "schema_version": 1, "occurred_at": now,
            "data": {
                "order_id": order_id, "currency": "USD", "shipping_amount": 500,
                "lines": lines.iter().map(|(id, q, u, t)| json!({
                    "line_id": id, "sku": format!("SKU-{id}"), "name": format!("Item {id}"),
                    "quantity": q, "unit_amount": u, "tax_amount": t, "discount_amount": 0
                })).collect::<Vec<_>>(),
                "payment": {"provider": "sandbox", "authorization_id": auth_id,
                            "authorized_amount": authorized, "authorized_at": now}
            }
        }));
        for (i, items) in shipments.iter().enumerate() {
            msgs.push(json!({
                "message_id": format!("{order_id}-ship-{}", i + 1),
                "type": "shipment.shipped", "schema_version": 1, "occurred_at": now,
                "data": {
                    "order_id": order_id, "shipment_id": format!("S{}", i + 1), "shipped_at": now,
                    "items": items.iter().map(|(l, q)| json!({"line_id": l, "quantity": q})).collect::<Vec<_>>()
                }
            }));
        }
    }
    (msgs, auths)
}

/// `capture-worker demo`.
pub async fn demo(settings: Settings, wait: Duration, units: Units) -> anyhow::Result<()> {
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (messages, auths) = demo_messages(run);
    let sandbox_url = settings
        .providers
        .get("sandbox")
        .map(|p| p.base_url.clone())
        .context("providers.sandbox is not configured; the demo captures through the sandbox")?;
    let http = reqwest::Client::new();
    for (id, amount, decline) in &auths {
        let mut body = serde_json::json!({"id": id, "amount": amount, "currency": "USD"});
        if let Some(n) = decline {
            body["scenario"] = serde_json::json!({"decline_on_capture": n});
        }
        let resp = http
            .post(format!("{sandbox_url}/sandbox/authorizations"))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("registering authorization {id} in the sandbox at {sandbox_url}; is `capture-worker run` (or `capture-worker sandbox`) running?"))?;
        if !resp.status().is_success() {
            bail!("the sandbox refused authorization {id}: {}", resp.status());
        }
    }
    let n = publish_messages(&settings, &messages, None).await?;
    println!("published {n} messages for 4 orders (run {run}); waiting for captures…");
    let store = Store::connect(&settings.database, false).await?;
    let deadline = tokio::time::Instant::now() + wait;
    let pattern = format!("demo-{run}-%");
    loop {
        let progress = operator_sql::orders_progress(store.pool(), &pattern).await?;
        if (progress.orders == 4 && progress.unsettled_captures == 0)
            || tokio::time::Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = operator_sql::reconciled_orders(store.pool(), &pattern).await?;
    let mut table_rows = Vec::with_capacity(rows.len());
    for operator_sql::ReconciledOrder {
        order_id: id,
        currency: cur,
        order_total: total,
        authorized_amount: auth,
        shipped_amount: shipped,
        captured_amount: captured,
        pending_amount: pending,
        capture_count: caps,
        status,
    } in rows
    {
        let money = |v: i64| super::operator::units::amount(units, v, &cur);
        table_rows.push(vec![
            id,
            cur.clone(),
            money(total)?,
            money(auth)?,
            money(shipped)?,
            money(captured)?,
            money(pending)?,
            caps.to_string(),
            status,
        ]);
    }
    print!(
        "{}",
        super::operator::table(
            &[
                "order",
                "cur",
                "total",
                "authorized",
                "shipped",
                "captured",
                "pending",
                "caps",
                "status"
            ],
            &table_rows
        )
    );
    Ok(())
}

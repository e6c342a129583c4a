//! Outcome events end to end: the ledger's transitions, written to the outbox in their own
//! transaction, reach a subscriber we did not write (pika, from the `python_tools`
//! environment) through the outcomes exchange, in sequence per order, with `message_id` =
//! `event_id`, persistent, JSON, and the capture's trace. Also: the broker going away while
//! captures go on, and the real binary killed between the broker's confirm and the mark.

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use capture_worker::app::operator::orders::{self, StoryFormat};
use capture_worker::config::{Secret, Settings};
use capture_worker::sandbox::{self, NewAuthorization, SandboxOptions, Scenario};
use serde_json::{Value, json};

use crate::harness::*;
use crate::python_tools;

const ORDER: &str = "ORD-1001";
const AUTH: &str = "pi_example_1";

/// A pika subscriber: declares the outcomes exchange (as the worker does), a durable queue
/// bound to every routing key, then takes up to `expected` messages within `seconds`, acking
/// each, and prints one JSON line per message.
const SUBSCRIBE_PY: &str = r##"
import json, sys, time, pika
url, exchange, queue, expected, seconds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
conn = pika.BlockingConnection(pika.URLParameters(url))
ch = conn.channel()
ch.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
ch.queue_declare(queue=queue, durable=True)
ch.queue_bind(queue=queue, exchange=exchange, routing_key="#")
got = []
end = time.monotonic() + seconds
while len(got) < expected and time.monotonic() < end:
    method, props, body = ch.basic_get(queue=queue, auto_ack=False)
    if method is None:
        time.sleep(0.05)
        continue
    tp = (props.headers or {}).get("traceparent")
    if isinstance(tp, bytes):
        tp = tp.decode()
    got.append({"routing_key": method.routing_key, "message_id": props.message_id,
                "content_type": props.content_type, "delivery_mode": props.delivery_mode,
                "traceparent": tp, "body": json.loads(body)})
    ch.basic_ack(method.delivery_tag)
conn.close()
for g in got:
    print(json.dumps(g))
"##;

/// What the subscriber received of one message.
#[derive(Debug, Clone)]
struct Received {
    routing_key: String,
    message_id: String,
    content_type: String,
    delivery_mode: i64,
    traceparent: Option<String>,
    body: Value,
}

impl Received {
    fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }
    fn seq(&self) -> i64 {
        self.body["sequence"].as_i64().unwrap_or(-1)
    }
}

/// The subscriber's queue on the outcomes exchange of `settings`.
struct Subscriber {
    exchange: String,
    queue: String,
}

impl Subscriber {
    /// Binds the queue now, so every event published from here on reaches it.
    async fn bind(settings: &Settings) -> Subscriber {
        let s = Subscriber {
            exchange: settings.amqp.outcomes_exchange.clone(),
            queue: format!("{}.subscriber", settings.amqp.outcomes_exchange),
        };
        assert!(s.take(0, 1.0).await.is_empty());
        s
    }

    /// Takes up to `expected` messages, waiting at most `seconds` (on a blocking thread: the
    /// worker under test runs on this test's runtime meanwhile).
    async fn take(&self, expected: usize, seconds: f64) -> Vec<Received> {
        let args = [
            "-c".to_owned(),
            SUBSCRIBE_PY.to_owned(),
            AMQP.to_owned(),
            self.exchange.clone(),
            self.queue.clone(),
            expected.to_string(),
            seconds.to_string(),
        ];
        let out = tokio::task::spawn_blocking(move || {
            Command::new(python_tools::python())
                .args(&args)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "the pika subscriber failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line).unwrap();
                Received {
                    routing_key: v["routing_key"].as_str().unwrap().to_owned(),
                    message_id: v["message_id"].as_str().unwrap_or_default().to_owned(),
                    content_type: v["content_type"].as_str().unwrap_or_default().to_owned(),
                    delivery_mode: v["delivery_mode"].as_i64().unwrap_or(0),
                    traceparent: v["traceparent"].as_str().map(str::to_owned),
                    body: v["body"].clone(),
                }
            })
            .collect()
    }

    /// Takes messages until `distinct` different event ids have arrived (duplicates kept), or
    /// fails after `seconds`.
    async fn take_distinct(&self, distinct: usize, seconds: u64) -> Vec<Received> {
        let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
        let mut got: Vec<Received> = Vec::new();
        loop {
            let ids: HashSet<&str> = got.iter().map(|r| r.message_id.as_str()).collect();
            if ids.len() >= distinct {
                return got;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "only {} distinct events of {distinct} arrived: {:#?}",
                ids.len(),
                got.iter().map(|r| (r.kind(), r.seq())).collect::<Vec<_>>()
            );
            let want = distinct - ids.len();
            got.extend(self.take(want, 2.0).await);
        }
    }

    async fn delete(&self) {
        if let Ok(conn) =
            lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await
            && let Ok(ch) = conn.create_channel().await
        {
            let _ = ch
                .queue_delete(self.queue.as_str().into(), Default::default())
                .await;
            let _ = ch
                .exchange_delete(self.exchange.as_str().into(), Default::default())
                .await;
            let _ = conn.close(200, "done".into()).await;
        }
    }
}

/// The outcome event types of contract v1.
pub(crate) const OUTCOME_TYPES: [&str; 9] = [
    "capture.succeeded",
    "capture.declined",
    "capture.needs_attention",
    "order.capture_stopped",
    "order.completed",
    "authorization.released",
    "authorization.voided",
    "authorization.expiring",
    "message.rejected",
];

pub(crate) fn outcomes_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contract/v1/outcomes")
}

/// The schema of an outcome event type, `contract/v1/outcomes/<type>.schema.json`.
pub(crate) fn outcome_schema(event_type: &str) -> Value {
    let path = outcomes_dir().join(format!("{event_type}.schema.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Panics, listing the errors, unless `event` is valid against its type's schema.
pub(crate) fn assert_valid_outcome(event: &Value) {
    let event_type = event["type"].as_str().expect("an event type");
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&outcome_schema(event_type))
        .unwrap();
    let errors: Vec<String> = validator
        .iter_errors(event)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{event_type} {event}: {errors:?}");
}

#[test]
fn every_outcome_schema_is_draft_2020_12_and_its_example_is_valid() {
    for t in OUTCOME_TYPES {
        let schema = outcome_schema(t);
        jsonschema::draft202012::meta::validate(&schema).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(schema["properties"]["type"]["const"], t);
        let path = outcomes_dir().join("examples").join(format!("{t}.json"));
        let example: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_valid_outcome(&example);
    }
    // The check can fail: an amount in decimals is refused.
    let path = outcomes_dir().join("examples/capture.succeeded.json");
    let mut bad: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    bad["data"]["amount"] = json!(51.82);
    let result = std::panic::catch_unwind(|| assert_valid_outcome(&bad));
    assert!(result.is_err(), "a decimal amount must be refused");
}

/// Every message is well formed (contract v1: the schema of its type, the envelope, the AMQP
/// properties); returns one per event id, in arrival order, after checking that per order the
/// sequences arrive in order and, deduplicated, run 1, 2, 3… without gaps.
fn dedupe_and_check(received: &[Received]) -> Vec<Received> {
    let mut seen = HashSet::new();
    let mut unique = Vec::new();
    for r in received {
        assert_eq!(r.routing_key, r.kind(), "routing key = type");
        assert_eq!(r.message_id, r.body["event_id"].as_str().unwrap());
        assert_eq!(r.content_type, "application/json");
        assert_eq!(r.delivery_mode, 2, "persistent");
        assert_eq!(r.body["schema_version"], 1);
        assert_valid_outcome(&r.body);
        if seen.insert(r.message_id.clone()) {
            unique.push(r.clone());
        }
    }
    let mut per_order: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &unique {
        if let Some(order) = r.body["order_id"].as_str() {
            per_order.entry(order.to_owned()).or_default().push(r.seq());
        }
    }
    for (order, seqs) in per_order {
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, expected, "order {order}: sequences in order, no gaps");
    }
    unique
}

fn kinds(events: &[Received]) -> Vec<&str> {
    events.iter().map(Received::kind).collect()
}

#[tokio::test]
async fn a_three_parcel_order_yields_three_capture_events_one_final_then_order_completed() {
    let app = TestApp::spawn().await;
    let sub = Subscriber::bind(&app.settings).await;
    app.authorize(AUTH, 12455, "USD", None);
    let (order, s1, s2, s3) = usd_order();
    app.publish(&[order, s1, s2, s3]).await;
    app.wait_settled(ORDER, 3).await;

    let events = dedupe_and_check(&sub.take_distinct(4, 30).await);
    assert_eq!(
        kinds(&events),
        vec![
            "capture.succeeded",
            "capture.succeeded",
            "capture.succeeded",
            "order.completed"
        ]
    );
    let captures: Vec<(i64, bool)> = events[..3]
        .iter()
        .map(|e| {
            (
                e.body["data"]["amount"].as_i64().unwrap(),
                e.body["data"]["is_final"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        captures,
        vec![(5182, false), (2890, false), (4383, true)],
        "the right amounts, exactly one final"
    );
    assert_eq!(events[0].body["data"]["shipment_ids"], json!(["S1"]));
    assert_eq!(events[0].body["data"]["currency"], "USD");
    assert_eq!(events[0].body["data"]["authorization_id"], AUTH);
    let done = &events[3].body["data"];
    assert_eq!(
        (
            done["captured_amount"].as_i64(),
            done["released_amount"].as_i64()
        ),
        (Some(12455), Some(0))
    );

    // Each event carries the capture's trace (with tracing on, the traceparent of a producer
    // span in it: tests/it/telemetry.rs follows one into an OTLP receiver).
    let traces: Vec<Option<String>> = sqlx::query_scalar(
        "select split_part(traceparent, '-', 2) from captures where order_id = $1 order by sequence",
    )
    .bind(ORDER)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    for (event, trace) in events[..3].iter().zip(&traces) {
        assert_eq!(
            event
                .traceparent
                .as_deref()
                .and_then(|t| t.split('-').nth(1)),
            trace.as_deref(),
            "the event carries the capture's trace"
        );
    }

    // Every event is marked published; `order show` lists them with their state.
    app.wait_count(
        "select count(*) from outcome_events where published_at is not null",
        4,
    )
    .await;
    let story = orders::story(&app.store, ORDER).await.unwrap();
    let listed: Vec<(i64, &str, bool)> = story
        .events
        .iter()
        .map(|e| (e.sequence, e.event_type.as_str(), e.published_at.is_some()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (1, "capture.succeeded", true),
            (2, "capture.succeeded", true),
            (3, "capture.succeeded", true),
            (4, "order.completed", true)
        ]
    );
    let text = orders::render_story(&story, StoryFormat::Text).unwrap();
    let section = text
        .split("outcome events")
        .nth(1)
        .expect("an events section");
    assert_eq!(section.matches("published 20").count(), 4, "{section}");
    assert!(section.contains("order.completed"), "{section}");
    let json: Value =
        serde_json::from_str(&orders::render_story(&story, StoryFormat::Json).unwrap()).unwrap();
    assert_eq!(json["events"][0]["event_id"], events[0].body["event_id"]);
    sub.delete().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_decline_yields_capture_declined_then_order_capture_stopped_and_the_refused_parcel_message_rejected()
 {
    let app = TestApp::spawn().await;
    let sub = Subscriber::bind(&app.settings).await;
    app.authorize(
        AUTH,
        12455,
        "USD",
        Some(Scenario {
            decline_on_capture: Some(2),
            decline_code: Some("insufficient_funds".into()),
            ..Scenario::default()
        }),
    );
    let (order, s1, s2, s3) = usd_order();
    app.publish(&[order, s1, s2]).await;
    app.wait_settled(ORDER, 2).await;
    app.publish(&[s3]).await;

    let events = dedupe_and_check(&sub.take_distinct(4, 30).await);
    assert_eq!(
        kinds(&events),
        vec![
            "capture.succeeded",
            "capture.declined",
            "order.capture_stopped",
            "message.rejected"
        ]
    );
    assert_eq!(events[1].body["data"]["decline_code"], "insufficient_funds");
    assert_eq!(events[1].body["data"]["amount"], 2890);
    assert_eq!(events[2].body["data"]["decline_code"], "insufficient_funds");
    assert_eq!(events[3].body["data"]["reason"], "order_declined");
    assert_eq!(events[3].body["order_id"], ORDER);
    sub.delete().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_cancellation_after_a_partial_capture_yields_authorization_released() {
    let app = TestApp::spawn().await;
    let sub = Subscriber::bind(&app.settings).await;
    app.authorize(AUTH, 12455, "USD", None);
    let (order, s1, s2, _) = usd_order();
    let cancel = json!({
        "message_id": "cancel-0001", "type": "order.lines_cancelled", "schema_version": 1,
        "occurred_at": "2026-11-22T09:00:00Z",
        "data": {"order_id": ORDER, "items": [{"line_id": "L1", "quantity": 1}, {"line_id": "L2", "quantity": 1}]}
    });
    app.publish(&[order, s1, s2]).await;
    app.wait_settled(ORDER, 2).await;
    app.publish(&[cancel]).await;
    app.wait_settled(ORDER, 3).await;

    let events = dedupe_and_check(&sub.take_distinct(4, 30).await);
    assert_eq!(
        kinds(&events),
        vec![
            "capture.succeeded",
            "capture.succeeded",
            "authorization.released",
            "order.completed"
        ]
    );
    assert_eq!(events[2].body["data"]["amount"], 12455 - 8072);
    assert_eq!(events[3].body["data"]["captured_amount"], 8072);
    assert_eq!(events[3].body["data"]["released_amount"], 12455 - 8072);
    sub.delete().await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_bad_message_yields_message_rejected_with_its_reason() {
    let app = TestApp::spawn().await;
    let sub = Subscriber::bind(&app.settings).await;
    // Unreadable JSON: no order, no message id.
    app.publish_raw("shipment.shipped", b"{not json").await;
    // A shipment of an order that does not exist yet is parked, not refused; one with a
    // quantity of zero is refused at once as invalid.
    let (_, s1, _, _) = usd_order();
    let mut zero = with_id(&s1, "bad-zero-qty");
    zero["data"]["items"][0]["quantity"] = json!(0);
    app.publish_raw("shipment.shipped", &serde_json::to_vec(&zero).unwrap())
        .await;

    let events = dedupe_and_check(&sub.take_distinct(2, 30).await);
    assert_eq!(kinds(&events), vec!["message.rejected"; 2]);
    let reasons: BTreeMap<Option<String>, (String, Value)> = events
        .iter()
        .map(|e| {
            (
                e.body["data"]["message_id"].as_str().map(str::to_owned),
                (
                    e.body["data"]["reason"].as_str().unwrap().to_owned(),
                    e.body["order_id"].clone(),
                ),
            )
        })
        .collect();
    let db: Vec<(Option<String>, String)> =
        sqlx::query_as("select message_id, reason from rejected_messages order by rejection_id")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    assert_eq!(db.len(), 2);
    for (message_id, reason) in db {
        assert_eq!(
            reasons[&message_id].0, reason,
            "the event says why, as the dead-letter header does"
        );
    }
    assert_eq!(reasons[&None].1, Value::Null, "no order: no order_id");
    sub.delete().await;
    app.cleanup().await;
}

/// A TCP proxy to RabbitMQ that can be cut (every connection closed, new ones refused) and
/// restored, on the same port.
struct BrokerLink {
    port: u16,
    up: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl BrokerLink {
    async fn start() -> BrokerLink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let is_up = up.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !is_up.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let mut cuts = cuts.clone();
                // Only cuts from now on close this connection.
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5672").await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        BrokerLink {
            port,
            up,
            cut,
            task,
        }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn set_up(&self, on: bool) {
        self.up.store(on, Ordering::SeqCst);
        if !on {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

impl Drop for BrokerLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn with_the_broker_gone_the_ledger_goes_on_and_the_backlog_drains_in_order_when_it_returns() {
    let link = BrokerLink::start().await;
    let url = link.url();
    let app = TestApp::spawn_least_privileged(|s| {
        s.amqp.url = Secret::new(url.clone());
        s.capture.provider_timeout_ms = 5_000;
    })
    .await;
    let sub = Subscriber::bind(&app.settings).await;
    app.authorize(
        AUTH,
        12455,
        "USD",
        Some(Scenario {
            latency_ms: 400,
            ..Scenario::default()
        }),
    );
    let (order, s1, s2, s3) = usd_order();
    let mut direct = app.settings.clone();
    direct.amqp.url = Secret::new(AMQP);
    capture_worker::app::commands::publish_messages(&direct, &[order, s1, s2, s3], None)
        .await
        .unwrap();
    app.wait_count(
        "select count(*) from inbox_messages where status = 'processed'",
        4,
    )
    .await;

    // The broker goes away while the captures are still being made.
    link.set_up(false);
    app.wait_settled(ORDER, 3).await;
    let unpublished: i64 = sqlx::query_scalar(
        "select count(*) from outcome_events where order_id = $1 and published_at is null",
    )
    .bind(ORDER)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert!(
        unpublished >= 1,
        "events made while the broker was away wait in the outbox"
    );
    let total: i64 = sqlx::query_scalar("select count(*) from outcome_events")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(total, 4, "three captures and the completion, each once");

    // It comes back: the backlog drains, in order.
    link.set_up(true);
    let events = dedupe_and_check(&sub.take_distinct(4, 60).await);
    assert_eq!(
        kinds(&events),
        vec![
            "capture.succeeded",
            "capture.succeeded",
            "capture.succeeded",
            "order.completed"
        ]
    );
    app.wait_count(
        "select count(*) from outcome_events where published_at is null",
        0,
    )
    .await;
    sub.delete().await;
    app.cleanup().await;
}

fn spawn_binary(
    settings: &Settings,
    sandbox_url: &str,
    log: &std::path::Path,
    hold: bool,
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capture-worker"));
    cmd.arg("run")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CAPTURE__DATABASE__URL", settings.database.url.expose())
        .env("CAPTURE__AMQP__EXCHANGE", &settings.amqp.exchange)
        .env("CAPTURE__AMQP__QUEUE", &settings.amqp.queue)
        .env(
            "CAPTURE__AMQP__OUTCOMES_EXCHANGE",
            &settings.amqp.outcomes_exchange,
        )
        .env("CAPTURE__HTTP__LISTEN", "127.0.0.1:0")
        .env("CAPTURE__SANDBOX__EMBEDDED", "false")
        .env("CAPTURE__PROVIDERS__SANDBOX__BASE_URL", sandbox_url)
        .env("CAPTURE__PROVIDERS__SANDBOX__API_KEY", API_KEY)
        .env("CAPTURE__CAPTURE__LEASE_SECONDS", "2")
        .env("CAPTURE__CAPTURE__SWEEP_INTERVAL_MS", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    if hold {
        cmd.env(capture_worker::app::relay::HOLD_AFTER_CONFIRM_ENV, "600000");
    }
    cmd.spawn().unwrap()
}

#[tokio::test]
async fn the_binary_killed_between_the_confirm_and_the_mark_publishes_the_same_events_after_restart()
 {
    let (url, sb, _server) = sandbox::spawn(SandboxOptions {
        latency: Duration::ZERO,
        api_key: Some(API_KEY.into()),
    })
    .await
    .unwrap();
    sb.create_authorization(NewAuthorization::new(AUTH, 12455, "USD"))
        .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("worker.log");
    let (db, store) = fresh_database().await;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let settings = test_settings(&db, &tag, &url);
    let sub = Subscriber::bind(&settings).await;
    // The test hook: after the broker confirms a pass, the relay waits before marking it.
    let mut worker = spawn_binary(&settings, &url, &log, true);

    let (order, s1, s2, s3) = usd_order();
    let msgs = [order, s1, s2, s3];
    eventually(Duration::from_secs(20), || {
        let s = settings.clone();
        let msgs = msgs.clone();
        async move {
            capture_worker::app::commands::publish_messages(&s, &msgs, None)
                .await
                .is_ok()
        }
    })
    .await;
    let pool = store.pool().clone();
    eventually(Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from outcome_events")
                .fetch_one(&pool)
                .await
                .unwrap()
                == 4
        }
    })
    .await;
    // The first pass reached the subscriber (confirmed), and was never marked published.
    let before = sub.take(1, 20.0).await;
    assert_eq!(before.len(), 1, "a confirmed event reached the subscriber");
    worker.kill().unwrap(); // SIGKILL
    worker.wait().unwrap();
    let marked: i64 =
        sqlx::query_scalar("select count(*) from outcome_events where published_at is not null")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(marked, 0, "killed after the confirm, before the mark");

    let mut worker = spawn_binary(&settings, &url, &log, false);
    let after = sub.take_distinct(4, 60).await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    let mut all = before.clone();
    all.extend(after.iter().cloned());
    let events = dedupe_and_check(&all);
    assert_eq!(events.len(), 4, "every event arrives");
    assert!(
        after.iter().any(|r| r.message_id == before[0].message_id),
        "the event confirmed before the kill is published again under the same event_id"
    );
    let ids: HashSet<String> = sqlx::query_scalar("select event_id::text from outcome_events")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .into_iter()
        .collect();
    let delivered: HashSet<String> = events.iter().map(|e| e.message_id.clone()).collect();
    assert_eq!(ids, delivered);

    sub.delete().await;
    if let Ok(conn) = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await
        && let Ok(ch) = conn.create_channel().await
    {
        let t = capture_worker::queue::topology::Topology::new(
            settings.amqp.exchange.clone(),
            settings.amqp.queue.clone(),
        );
        for q in [t.queue.clone(), t.dead_letter()] {
            let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
        }
        for x in [t.exchange.clone(), t.dead_letter()] {
            let _ = ch
                .exchange_delete(x.as_str().into(), Default::default())
                .await;
        }
    }
    store.pool().close().await;
    drop_database(&db).await;
}

#[tokio::test]
async fn captures_settled_together_in_one_statement_get_the_events_one_at_a_time_would_give() {
    use crate::ledger_guards::{capture, order};

    // Arrange: order O1 with two events already (its counter at 2) and two captures, the
    // second final; order O2 with one final capture.
    let (db, store) = fresh_database().await;
    let pool = store.pool();
    order(pool, "O1", "pi_1").await;
    order(pool, "O2", "pi_2").await;
    sqlx::query("insert into outcome_sequences (order_id, last_sequence) values ('O1', 2)")
        .execute(pool)
        .await
        .unwrap();
    let o1_first = capture(pool, "O1", 1, "k-o1-1", 300, false, "queued")
        .await
        .unwrap();
    let o1_final = capture(pool, "O1", 2, "k-o1-2", 700, true, "queued")
        .await
        .unwrap();
    let o2_final = capture(pool, "O2", 1, "k-o2-1", 1000, true, "queued")
        .await
        .unwrap();

    // Act: all three succeed in one statement (the worker records its successes in batches).
    sqlx::query(
        "update captures set status = 'succeeded', provider_reference = 'ref-' || capture_id
         where capture_id = any($1)",
    )
    .bind(vec![o1_first, o1_final, o2_final])
    .execute(pool)
    .await
    .unwrap();

    // Assert: per order, each capture's event in the order of its captures, then
    // `order.completed` with the order's sums, numbered on from the order's counter.
    let events: Vec<(String, i64, String, Value)> = sqlx::query_as(
        "select order_id, sequence, event_type, data from outcome_events
         order by order_id, sequence",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let succeeded = |id: i64, auth: &str, amount: i64, is_final: bool| {
        json!({
            "capture_id": id.to_string(), "provider": "sandbox", "authorization_id": auth,
            "amount": amount, "currency": "USD", "is_final": is_final, "shipment_ids": [],
            "provider_reference": format!("ref-{id}"),
        })
    };
    let completed = |auth: &str| {
        json!({
            "provider": "sandbox", "authorization_id": auth, "captured_amount": 1000,
            "released_amount": 0, "currency": "USD",
        })
    };
    assert_eq!(
        events,
        vec![
            (
                "O1".into(),
                3,
                "capture.succeeded".into(),
                succeeded(o1_first, "pi_1", 300, false)
            ),
            (
                "O1".into(),
                4,
                "capture.succeeded".into(),
                succeeded(o1_final, "pi_1", 700, true)
            ),
            ("O1".into(), 5, "order.completed".into(), completed("pi_1")),
            (
                "O2".into(),
                1,
                "capture.succeeded".into(),
                succeeded(o2_final, "pi_2", 1000, true)
            ),
            ("O2".into(), 2, "order.completed".into(), completed("pi_2")),
        ]
    );
    let counters: Vec<(String, i64)> =
        sqlx::query_as("select order_id, last_sequence from outcome_sequences order by order_id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(counters, vec![("O1".into(), 5), ("O2".into(), 2)]);

    // A capture already succeeded and written again makes no event.
    sqlx::query("update captures set status = 'succeeded' where capture_id = $1")
        .bind(o2_final)
        .execute(pool)
        .await
        .unwrap();
    let count: i64 = sqlx::query_scalar("select count(*) from outcome_events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(count, 5);
    store.pool().close().await;
    drop_database(&db).await;
}

//! Observability as on-call sees it, checked with tools we did not write: a shipment published
//! by pika with a W3C `traceparent` is traced by the real binary into an OTLP receiver from
//! `oteltest` (its `HttpSink`), a crashed capture's retry links back to that trace, `/metrics`
//! moves as work is done, `/readyz` follows the broker, and the deploy files parse and name
//! only metrics the worker exports.
//!
//! pika and oteltest run from the virtual environment `python_tools` builds on first use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use capture_worker::config::{Secret, Settings};
use capture_worker::sandbox::{
    self, Fault, LedgerOutcome, NewAuthorization, SandboxOptions, Scenario,
};
use serde_json::Value;

use crate::harness::*;
use crate::python_tools;

const CANARY: &str = "sk_test_canary_key";
const ORDER: &str = "ORD-1001";
const AUTH: &str = "pi_example_1";

/// OTLP span kinds (opentelemetry-proto `Span.SpanKind`).
const KIND_INTERNAL: i64 = 1;
const KIND_CLIENT: i64 = 3;
const KIND_SERVER: i64 = 2;
const KIND_CONSUMER: i64 = 5;
const KIND_PRODUCER: i64 = 4;
/// OTLP `Status.StatusCode` error.
const STATUS_ERROR: i64 = 2;

/// An OTLP/HTTP receiver built on oteltest's `HttpSink` (otelsink's server): it writes every
/// span it receives as one JSON line, ids in hex, so the test can read the tree. otelsink
/// itself only prints Python reprs and always binds 4318; this keeps its server and handler API
/// and lets each test have its own port.
const SINK_PY: &str = r#"
import json, logging, sys, threading
from google.protobuf.json_format import MessageToDict
from oteltest.sink import HttpSink
from oteltest.sink.handler import RequestHandler

port, out = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()

def value(v):
    d = MessageToDict(v)
    if not d:
        return None
    (kind, x), = d.items()
    return int(x) if kind == "intValue" else x

class Dump(RequestHandler):
    def handle_logs(self, request, headers): pass
    def handle_metrics(self, request, headers): pass
    def handle_trace(self, request, headers):
        sent = {k.lower(): v for k, v in headers.items()}
        rows = []
        for rs in request.resource_spans:
            resource = {a.key: value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    rows.append({
                        "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(), "name": s.name,
                        "kind": s.kind, "status": s.status.code,
                        "attributes": {a.key: value(a.value) for a in s.attributes},
                        "links": [{"trace_id": l.trace_id.hex(), "span_id": l.span_id.hex()}
                                  for l in s.links],
                        "events": [{"name": e.name,
                                    "attributes": {a.key: value(a.value) for a in e.attributes}}
                                   for e in s.events],
                        "resource": resource,
                        "export_headers": sent,
                    })
        with lock, open(out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")

logging.basicConfig(level=logging.WARNING)
HttpSink(Dump(), logging.getLogger("sink"), port=port, daemon=False).start()
"#;

/// Publishes contract example files with pika, each with the given W3C trace headers and the
/// message id as the AMQP `message_id` property, with publisher confirms and `mandatory`.
const PUBLISH_PY: &str = r#"
import json, sys, pika
url, exchange, traceparent = sys.argv[1], sys.argv[2], sys.argv[3]
conn = pika.BlockingConnection(pika.URLParameters(url))
ch = conn.channel()
ch.confirm_delivery()
for path in sys.argv[4:]:
    body = open(path, "rb").read()
    msg = json.loads(body)
    props = pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                 message_id=msg["message_id"],
                                 headers={"traceparent": traceparent, "tracestate": "warehouse=berlin"})
    ch.basic_publish(exchange, msg["type"], body, props, mandatory=True)
conn.close()
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when the test ends, pass or fail.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The OTLP receiver: a child process and the file it writes.
struct Sink {
    _child: ChildGuard,
    port: u16,
    file: PathBuf,
}

impl Sink {
    async fn start(dir: &Path) -> Sink {
        let port = free_port();
        let file = dir.join("spans.jsonl");
        let child = Command::new(python_tools::python())
            .args(["-c", SINK_PY, &port.to_string()])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("sink.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let sink = Sink {
            _child: ChildGuard(child),
            port,
            file,
        };
        eventually(Duration::from_secs(20), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        sink
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.file).unwrap_or_default()
    }

    fn spans(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `pick` finds what it looks for among the spans received so far.
    async fn wait_for<T>(&self, what: &str, pick: impl Fn(&[Value]) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(found) = pick(&self.spans()) {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the receiver did not get {what}; it has:\n{}",
                summary(&self.spans())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn summary(spans: &[Value]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {} parent={} kind={} {}",
                s["trace_id"], s["span_id"], s["parent_span_id"], s["kind"], s["name"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

/// The HTTP client span conventions: named by the method, kind client, the server's address
/// and port from `base_url`, the status, and `error.type` (the status code) only on an error
/// answer, with status error.
fn assert_http_client_span(span: &Value, base_url: &str, method: &str, status: i64) {
    let base = reqwest::Url::parse(base_url).unwrap();
    assert_eq!(span["name"], method, "{span}");
    assert_eq!(span["kind"], KIND_CLIENT, "{span}");
    assert_eq!(attr(span, "http.request.method"), method, "{span}");
    assert_eq!(
        attr(span, "server.address"),
        base.host_str().unwrap(),
        "{span}"
    );
    assert_eq!(
        attr(span, "server.port"),
        i64::from(base.port_or_known_default().unwrap()),
        "{span}"
    );
    assert!(
        attr(span, "url.full")
            .as_str()
            .is_some_and(|u| u.starts_with(base_url)),
        "{span}"
    );
    assert_eq!(attr(span, "http.response.status_code"), status, "{span}");
    if status >= 400 {
        assert_eq!(
            attr(span, "error.type"),
            status.to_string().as_str(),
            "{span}"
        );
        assert_eq!(span["status"], STATUS_ERROR, "{span}");
    } else {
        assert!(attr(span, "error.type").is_null(), "{span}");
        assert_ne!(span["status"], STATUS_ERROR, "{span}");
    }
    for key in ["http_status", "http.status_code", "http.method", "http.url"] {
        assert!(attr(span, key).is_null(), "no {key} on {span}");
    }
}

/// Where an end-to-end telemetry test runs: a sandbox holding the order's authorization (which
/// answers with `faults` first), a receiver, a fresh database and the run's settings.
struct Scene {
    url: String,
    sb: sandbox::Sandbox,
    _server: sandbox::SandboxServer,
    _dir: tempfile::TempDir,
    log: PathBuf,
    sink: Sink,
    db: String,
    store: capture_worker::storage::Store,
    settings: Settings,
}

impl Scene {
    async fn arrange(faults: Vec<Fault>) -> Scene {
        let (url, sb, _server) = sandbox::spawn(SandboxOptions {
            latency: Duration::ZERO,
            api_key: Some(CANARY.into()),
        })
        .await
        .unwrap();
        let mut auth = NewAuthorization::new(AUTH, 12455, "USD");
        if !faults.is_empty() {
            auth.scenario = Some(Scenario {
                faults,
                ..Scenario::default()
            });
        }
        sb.create_authorization(auth).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
        let sink = Sink::start(dir.path()).await;
        let (db, store) = fresh_database().await;
        let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let settings = test_settings(&db, &tag, &url);
        Scene {
            url,
            sb,
            _server,
            _dir: dir,
            log,
            sink,
            db,
            store,
            settings,
        }
    }
}

/// The real worker binary, exporting to the receiver.
struct WorkerProcess {
    child: ChildGuard,
    http: String,
}

impl WorkerProcess {
    async fn start(settings: &Settings, sandbox_url: &str, otlp: &str, log: &Path) -> Self {
        // The SDK's standard knob: export every 100 ms instead of every 5 s.
        Self::start_with_export_delay(settings, sandbox_url, otlp, log, 100).await
    }

    async fn start_with_export_delay(
        settings: &Settings,
        sandbox_url: &str,
        otlp: &str,
        log: &Path,
        export_delay_ms: u64,
    ) -> Self {
        Self::start_with_env(settings, sandbox_url, otlp, log, export_delay_ms, &[]).await
    }

    /// As [`WorkerProcess::start_with_export_delay`], with more environment variables; an
    /// empty `otlp` leaves `telemetry.otlp_endpoint` unset.
    async fn start_with_env(
        settings: &Settings,
        sandbox_url: &str,
        otlp: &str,
        log: &Path,
        export_delay_ms: u64,
        env: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_capture-worker"))
            .arg("run")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("RUST_LOG")
            .env("CAPTURE__DATABASE__URL", settings.database.url.expose())
            .env("CAPTURE__AMQP__EXCHANGE", &settings.amqp.exchange)
            .env("CAPTURE__AMQP__QUEUE", &settings.amqp.queue)
            .env("CAPTURE__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("CAPTURE__SANDBOX__EMBEDDED", "false")
            .env("CAPTURE__PROVIDERS__SANDBOX__BASE_URL", sandbox_url)
            .env("CAPTURE__PROVIDERS__SANDBOX__API_KEY", CANARY)
            .env("CAPTURE__CAPTURE__PROVIDER_TIMEOUT_MS", "10000")
            .env("CAPTURE__CAPTURE__LEASE_SECONDS", "2")
            .env("CAPTURE__CAPTURE__SWEEP_INTERVAL_MS", "200")
            .env("CAPTURE__TELEMETRY__OTLP_ENDPOINT", otlp)
            .env("CAPTURE__TELEMETRY__LOG_FORMAT", "json")
            .env("CAPTURE__TELEMETRY__LOG_LEVEL", "info")
            .env("OTEL_BSP_SCHEDULE_DELAY", export_delay_ms.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let worker = WorkerProcess {
            child: ChildGuard(child),
            http: format!("http://127.0.0.1:{port}"),
        };
        let url = format!("{}/readyz", worker.http);
        eventually(Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        })
        .await;
        worker
    }

    fn kill(mut self) {
        self.child.0.kill().unwrap(); // SIGKILL
        self.child.0.wait().unwrap();
    }

    /// SIGTERM, as an orchestrator stops it; waits for a clean exit.
    async fn stop(mut self) {
        let pid = self.child.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                assert!(status.success(), "the worker exits cleanly: {status}");
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the worker did not stop"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Publishes example messages with pika under `traceparent`, each as its file reads except
/// that an order's authorization is [`dated`] to this run.
fn publish_with_pika(settings: &Settings, traceparent: &str, examples: &[&str]) {
    let messages: Vec<Value> = examples
        .iter()
        .map(|name| {
            let message = example(name);
            if message["type"] == "order.authorized" {
                dated(message)
            } else {
                message
            }
        })
        .collect();
    publish_messages_with_pika(settings, traceparent, &messages);
}

/// Publishes `messages` with pika under `traceparent`.
fn publish_messages_with_pika(settings: &Settings, traceparent: &str, messages: &[Value]) {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let path = dir.path().join(format!("{i}.json"));
            std::fs::write(&path, serde_json::to_vec(message).unwrap()).unwrap();
            path
        })
        .collect();
    let status = Command::new(python_tools::python())
        .args([
            "-c",
            PUBLISH_PY,
            AMQP,
            settings.amqp.exchange.as_str(),
            traceparent,
        ])
        .args(&files)
        .status()
        .unwrap();
    assert!(status.success(), "pika could not publish");
}

/// A fresh W3C trace context, as a warehouse's instrumented publisher would send.
fn new_traceparent() -> (String, String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let header = format!("00-{trace_id}-{span_id}-01");
    (header, trace_id, span_id)
}

/// Prometheus text → `series{labels}` → value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(base: &str) -> HashMap<String, f64> {
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert!(response.status().is_success());
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    parse_metrics(&response.text().await.unwrap())
}

fn metric(m: &HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

/// Deletes the test's broker objects and database.
async fn cleanup(settings: &Settings, db: &str, store: capture_worker::storage::Store) {
    let t = capture_worker::queue::topology::Topology::new(
        settings.amqp.exchange.clone(),
        settings.amqp.queue.clone(),
    );
    if let Ok(conn) = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await
        && let Ok(ch) = conn.create_channel().await
    {
        for q in [t.queue.clone(), t.dead_letter()] {
            let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
        }
        for x in [t.exchange.clone(), t.dead_letter()] {
            let _ = ch
                .exchange_delete(x.as_str().into(), Default::default())
                .await;
        }
        let _ = conn.close(200, "done".into()).await;
    }
    store.pool().close().await;
    drop_database(db).await;
}

/// The span's ancestors within its trace, nearest first.
fn ancestors<'a>(spans: &'a [Value], span: &'a Value) -> Vec<&'a Value> {
    let by_id: HashMap<(&str, &str), &Value> = spans
        .iter()
        .map(|s| {
            (
                (
                    s["trace_id"].as_str().unwrap_or(""),
                    s["span_id"].as_str().unwrap_or(""),
                ),
                s,
            )
        })
        .collect();
    let mut out = Vec::new();
    let mut current = span;
    while let Some(parent) = by_id.get(&(
        current["trace_id"].as_str().unwrap_or(""),
        current["parent_span_id"].as_str().unwrap_or(""),
    )) {
        out.push(*parent);
        current = parent;
    }
    out
}

#[tokio::test]
async fn a_shipment_published_by_pika_with_a_traceparent_is_traced_from_the_queue_to_the_provider()
{
    // Arrange: a sandbox, a database, a receiver, and the real binary exporting to it.
    let Scene {
        url,
        sb: _,
        _server,
        _dir,
        log,
        sink,
        db,
        store,
        settings,
    } = Scene::arrange(vec![]).await;
    let worker = WorkerProcess::start(&settings, &url, &sink.endpoint(), &log).await;
    let before = scrape(&worker.http).await;

    // Act: the warehouse publishes the order and its first parcel with pika, in its trace.
    let (traceparent, trace_id, publisher_span) = new_traceparent();
    publish_with_pika(
        &settings,
        &traceparent,
        &["order-authorized-usd.json", "shipment-shipped-usd-s1.json"],
    );

    // Assert: the receiver gets the worker's spans in the warehouse's trace, shaped
    // consumer → intake → capture → provider call.
    let spans = sink
        .wait_for("the provider call span in the publisher's trace", |spans| {
            let in_trace = |s: &&Value| s["trace_id"] == trace_id.as_str();
            let has_consumer = spans
                .iter()
                .filter(in_trace)
                .any(|s| s["kind"] == KIND_CONSUMER && s["name"] == "process shipment.shipped");
            let has_call = spans.iter().filter(in_trace).any(|s| {
                // A child ends first and may come in an earlier batch than its parents:
                // wait for the whole chain up to the consumer span.
                s["kind"] == KIND_CLIENT && s["name"] == "POST" && ancestors(spans, s).len() >= 5
            });
            (has_consumer && has_call).then(|| spans.to_vec())
        })
        .await;
    let in_trace: Vec<&Value> = spans
        .iter()
        .filter(|s| s["trace_id"] == trace_id.as_str())
        .collect();
    let consumer = *in_trace
        .iter()
        .find(|s| s["name"] == "process shipment.shipped")
        .unwrap();
    assert_eq!(consumer["kind"], KIND_CONSUMER);
    assert_eq!(
        consumer["parent_span_id"], publisher_span,
        "the consumer span's parent is the publisher's span from the traceparent header"
    );
    assert_eq!(attr(consumer, "messaging.system"), "rabbitmq");
    assert_eq!(attr(consumer, "messaging.operation.type"), "process");
    assert_eq!(
        attr(consumer, "messaging.destination.name"),
        settings.amqp.exchange.as_str()
    );
    assert_eq!(
        attr(consumer, "messaging.rabbitmq.destination.routing_key"),
        "shipment.shipped"
    );
    assert_eq!(attr(consumer, "messaging.message.id"), "wh-7f3a-0001");
    assert_eq!(attr(consumer, "disposition"), "ack");
    assert_eq!(consumer["resource"]["service.name"], "capture-worker");

    let intake = *in_trace
        .iter()
        .find(|s| s["name"] == "intake" && s["parent_span_id"] == consumer["span_id"])
        .expect("an intake span under the consumer span");
    assert_eq!(intake["kind"], KIND_INTERNAL);
    assert_eq!(attr(intake, "order_id"), ORDER);
    assert_eq!(attr(intake, "outcome"), "processed");
    assert_eq!(attr(intake, "db.system.name"), "postgresql");
    assert!(
        attr(intake, "batch_size").as_i64().is_some_and(|n| n >= 1),
        "the shipment was committed by the batched intake, under its own span: {intake}"
    );

    let capture = *in_trace
        .iter()
        .find(|s| s["name"] == "execute capture")
        .unwrap();
    assert_eq!(
        capture["parent_span_id"], intake["span_id"],
        "the first attempt continues the trace of the intake that created the capture"
    );
    assert_eq!(attr(capture, "status"), "succeeded");

    let call = *in_trace
        .iter()
        .find(|s| s["name"] == "sandbox capture")
        .unwrap();
    assert_eq!(call["kind"], KIND_INTERNAL);
    assert_eq!(call["parent_span_id"], capture["span_id"]);
    let chain: Vec<&str> = ancestors(&spans, call)
        .iter()
        .map(|s| s["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        chain,
        vec!["execute capture", "intake", "process shipment.shipped"],
        "the provider call descends from the consumer span"
    );
    assert_eq!(attr(call, "payment.provider"), "sandbox");
    assert_eq!(attr(call, "payment.operation"), "capture");
    assert_eq!(attr(call, "payment.amount"), 5182);
    assert_eq!(attr(call, "payment.currency"), "USD");
    assert_eq!(attr(call, "payment.final"), false);
    assert_eq!(attr(call, "payment.attempt"), 1);
    assert_eq!(attr(call, "payment.outcome"), "succeeded");

    // Inside it, the HTTP request is the trace's only client span, with the HTTP client span
    // conventions' attributes.
    let clients: Vec<&&Value> = in_trace
        .iter()
        .filter(|s| s["kind"] == KIND_CLIENT)
        .collect();
    assert_eq!(clients.len(), 1, "one client span per HTTP request");
    let request = *clients[0];
    let adapter = ancestors(&spans, request)[0];
    assert_eq!(adapter["name"], "stripe.capture");
    assert_eq!(adapter["kind"], KIND_INTERNAL);
    assert_eq!(adapter["parent_span_id"], call["span_id"]);
    assert_http_client_span(request, &url, "POST", 200);
    assert_eq!(
        attr(request, "url.full"),
        format!("{url}/v1/payment_intents/{AUTH}/capture").as_str()
    );

    // The attempt row names the trace; the log lines of the trace carry its id.
    let recorded: Option<String> = sqlx::query_scalar(
        "select a.trace_id from capture_attempts a join captures c using (capture_id)
         where c.order_id = $1 and a.operation = 'capture'",
    )
    .bind(ORDER)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(recorded.as_deref(), Some(trace_id.as_str()));
    let logs = std::fs::read_to_string(&log).unwrap();
    let attempt_line: Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["event"] == "capture_attempt")
        .expect("a capture_attempt log line");
    assert_eq!(attempt_line["trace_id"], trace_id.as_str());
    assert_eq!(attempt_line["span_id"], capture["span_id"]);

    // The metrics moved with the work.
    let after = scrape(&worker.http).await;
    let moved = |series: &str| metric(&after, series) - metric(&before, series);
    assert_eq!(
        moved(r#"capture_worker_messages_total{type="shipment.shipped",outcome="processed"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"capture_worker_captured_amount_minor_total{provider="sandbox",currency="USD"}"#),
        5182.0
    );
    assert_eq!(
        moved(
            r#"capture_worker_provider_call_duration_seconds_count{provider="sandbox",operation="capture"}"#
        ),
        1.0
    );
    assert_eq!(metric(&after, "capture_worker_consumer_connected"), 1.0);

    // P9: the API key is in neither the logs nor the spans.
    assert!(!sink.text().contains(CANARY), "the API key reached a span");
    assert!(!logs.contains(CANARY), "the API key reached the logs");

    worker.kill();
    cleanup(&settings, &db, store).await;
}

#[tokio::test]
async fn a_capture_retried_after_a_worker_crash_runs_in_a_trace_linked_to_the_one_that_created_it()
{
    // Arrange: the sandbox captures, then holds its answer 5 s: the worker dies not knowing.
    let Scene {
        url,
        sb,
        _server,
        _dir,
        log,
        sink,
        db,
        store,
        settings,
    } = Scene::arrange(vec![Fault::LostResponse { delay_ms: 5_000 }]).await;
    let first = WorkerProcess::start(&settings, &url, &sink.endpoint(), &log).await;
    let (traceparent, trace_id, _) = new_traceparent();
    publish_with_pika(
        &settings,
        &traceparent,
        &["order-authorized-usd.json", "shipment-shipped-usd-s1.json"],
    );
    eventually(Duration::from_secs(20), || {
        let sb = sb.clone();
        async move {
            sb.ledger()
                .iter()
                .any(|e| e.outcome == LedgerOutcome::Captured)
        }
    })
    .await;

    // Act: kill -9 mid-call; a new process takes the capture over when the lease expires.
    first.kill();
    let second = WorkerProcess::start(&settings, &url, &sink.endpoint(), &log).await;
    let pool = store.pool().clone();
    eventually(Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("select status from captures")
                .fetch_one(&pool)
                .await
                .unwrap()
                == "succeeded"
        }
    })
    .await;

    // Assert: the takeover runs in a trace of its own, linked to the trace that created the
    // capture, and its attempt row names that new trace.
    let (retry, call) = sink
        .wait_for("the takeover's capture and provider call spans", |spans| {
            let retry = spans.iter().find(|s| {
                s["name"] == "execute capture" && attr(s, "taken_over") == &Value::Bool(true)
            })?;
            let call = spans.iter().find(|s| {
                s["name"] == "sandbox capture" && s["parent_span_id"] == retry["span_id"]
            })?;
            Some((retry.clone(), call.clone()))
        })
        .await;
    assert_ne!(
        retry["trace_id"],
        trace_id.as_str(),
        "a retry is a new trace"
    );
    assert_eq!(retry["parent_span_id"], "", "a retry's span is a root");
    let links = retry["links"].as_array().unwrap();
    assert!(
        links.iter().any(|l| l["trace_id"] == trace_id.as_str()),
        "the retry links to the trace that created the capture: {links:?}"
    );
    assert_eq!(attr(&retry, "payment.attempt"), 2);
    assert_eq!(attr(&call, "payment.attempt"), 2);
    assert_eq!(attr(&call, "payment.outcome"), "succeeded");
    let retry_trace: Option<String> = sqlx::query_scalar(
        "select trace_id from capture_attempts where attempt_no = 2 and operation = 'capture'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(retry_trace.as_deref(), retry["trace_id"].as_str());
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("\"event\":\"lease_taken_over\""));
    assert!(!logs.contains(CANARY) && !sink.text().contains(CANARY));

    second.kill();
    cleanup(&settings, &db, store).await;
}

#[tokio::test]
async fn spans_still_waiting_for_their_batch_reach_the_collector_when_the_worker_stops() {
    // Arrange: a worker that would export only once a minute.
    let Scene {
        url,
        sb: _,
        _server,
        _dir,
        log,
        sink,
        db,
        store,
        settings,
    } = Scene::arrange(vec![]).await;
    let worker =
        WorkerProcess::start_with_export_delay(&settings, &url, &sink.endpoint(), &log, 60_000)
            .await;
    let (traceparent, trace_id, _) = new_traceparent();
    publish_with_pika(
        &settings,
        &traceparent,
        &["order-authorized-usd.json", "shipment-shipped-usd-s1.json"],
    );
    let pool = store.pool().clone();
    eventually(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from captures where status = 'succeeded'")
                .fetch_one(&pool)
                .await
                .unwrap()
                == 1
        }
    })
    .await;
    assert!(
        sink.spans().is_empty(),
        "nothing exported before the batch is due"
    );

    // Act: SIGTERM.
    worker.stop().await;

    // Assert: the telemetry guard flushed the batch on the way out.
    sink.wait_for("the flushed provider call span", |spans| {
        spans
            .iter()
            .any(|s| s["trace_id"] == trace_id.as_str() && s["name"] == "sandbox capture")
            .then_some(())
    })
    .await;
    cleanup(&settings, &db, store).await;
}

#[tokio::test]
async fn provider_requests_webhooks_and_dead_letter_copies_follow_the_semantic_conventions_and_otel_exporter_otlp_endpoint_alone_routes_them()
 {
    // Arrange: the sandbox answers the first capture with a 503; the worker has no
    // `telemetry.otlp_endpoint`, only the standard variables.
    let Scene {
        url,
        sb: _,
        _server,
        _dir,
        log,
        sink,
        db,
        store,
        settings,
    } = Scene::arrange(vec![Fault::Unavailable]).await;
    let base = format!("http://127.0.0.1:{}", sink.port);
    let worker = WorkerProcess::start_with_env(
        &settings,
        &url,
        "",
        &log,
        100,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", base.as_str()),
            ("OTEL_SERVICE_NAME", "capture-worker-semconv"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=test",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-otlp-tenant=payments"),
        ],
    )
    .await;

    // Act: an order and its parcel, a shipment without its items, and two webhook posts.
    let (traceparent, trace_id, _) = new_traceparent();
    let mut broken = with_id(&example("shipment-shipped-usd-s2.json"), "wh-broken-0001");
    broken["data"].as_object_mut().unwrap().remove("items");
    publish_messages_with_pika(
        &settings,
        &traceparent,
        &[
            dated(example("order-authorized-usd.json")),
            example("shipment-shipped-usd-s1.json"),
            broken,
        ],
    );
    let client = reqwest::Client::new();
    for provider in ["sandbox", "nope"] {
        let answer = client
            .post(format!("{}/webhooks/{provider}", worker.http))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_client_error(), "{answer:?}");
    }

    // Assert: every span reached the receiver named by OTEL_EXPORTER_OTLP_ENDPOINT, with the
    // headers, service name and resource attributes of the variables.
    let spans = sink
        .wait_for(
            "a 503 and a 200 client span with their provider call spans, two webhooks and a producer span",
            |spans| {
                // A child ends first and may come in an earlier batch than its parents.
                let clients = spans
                    .iter()
                    .filter(|s| s["kind"] == KIND_CLIENT)
                    .filter(|s| ancestors(spans, s).len() >= 2)
                    .map(|s| attr(s, "http.response.status_code").as_i64())
                    .collect::<Vec<_>>();
                let webhooks = spans.iter().filter(|s| s["kind"] == KIND_SERVER).count();
                let producer = spans.iter().any(|s| {
                    s["kind"] == KIND_PRODUCER
                        && s["name"].as_str().is_some_and(|n| n.ends_with(".dead-letter"))
                });
                // The outbox relay's publish of the capture's outcome event.
                let outcome = spans.iter().any(|s| {
                    s["kind"] == KIND_PRODUCER
                        && attr(s, "messaging.rabbitmq.destination.routing_key")
                            == "capture.succeeded"
                });
                (clients.contains(&Some(503))
                    && clients.contains(&Some(200))
                    && webhooks == 2
                    && producer
                    && outcome)
                    .then(|| spans.to_vec())
            },
        )
        .await;
    for span in &spans {
        assert_eq!(span["resource"]["service.name"], "capture-worker-semconv");
        assert_eq!(span["resource"]["deployment.environment.name"], "test");
        assert_eq!(span["export_headers"]["x-otlp-tenant"], "payments");
    }

    // Provider requests: one client span each, under the internal provider call span.
    for (status, parent_trace) in [(503, true), (200, false)] {
        let request = spans
            .iter()
            .find(|s| s["kind"] == KIND_CLIENT && attr(s, "http.response.status_code") == status)
            .unwrap();
        assert_http_client_span(request, &url, "POST", status);
        let chain = ancestors(&spans, request);
        assert_eq!(chain[0]["name"], "stripe.capture");
        assert_eq!(chain[1]["name"], "sandbox capture");
        assert_eq!(chain[1]["kind"], KIND_INTERNAL);
        assert!(
            chain.iter().all(|s| s["kind"] != KIND_CLIENT),
            "no client span around another"
        );
        if parent_trace {
            assert_eq!(request["trace_id"], trace_id.as_str(), "the first attempt");
        }
    }

    // Webhooks: server spans with the HTTP server span attributes.
    for provider in ["sandbox", "nope"] {
        let path = format!("/webhooks/{provider}");
        let server = spans
            .iter()
            .find(|s| s["kind"] == KIND_SERVER && attr(s, "url.path") == path.as_str())
            .unwrap_or_else(|| panic!("no server span for {path}:\n{}", summary(&spans)));
        assert_eq!(server["name"], "POST /webhooks/{provider}");
        assert_eq!(attr(server, "http.request.method"), "POST");
        assert_eq!(attr(server, "http.route"), "/webhooks/{provider}");
        assert_eq!(attr(server, "url.scheme"), "http");
        assert_eq!(attr(server, "provider"), provider);
        let status = attr(server, "http.response.status_code").as_i64().unwrap();
        assert!((400..500).contains(&status), "{server}");
        assert!(
            attr(server, "error.type").is_null() && server["status"] != STATUS_ERROR,
            "a 4xx is not the server's error: {server}"
        );
    }

    // The outcome event of the capture: the relay's publish is a producer span in the
    // capture's trace (here the publisher's, which the capture joined).
    let outcome = spans
        .iter()
        .find(|s| {
            s["kind"] == KIND_PRODUCER
                && attr(s, "messaging.rabbitmq.destination.routing_key") == "capture.succeeded"
        })
        .unwrap();
    assert_eq!(outcome["trace_id"], trace_id.as_str(), "{outcome}");
    assert_eq!(outcome["name"], "publish fulfillment.outcomes");

    // The dead-letter copy: a producer span in the publisher's trace, with messaging
    // attributes from the conventions only, whose traceparent the copy carries.
    let topology = capture_worker::queue::topology::Topology::new(
        settings.amqp.exchange.clone(),
        settings.amqp.queue.clone(),
    );
    let producer = spans
        .iter()
        .find(|s| {
            s["kind"] == KIND_PRODUCER
                && s["name"] == format!("publish {}", topology.dead_letter()).as_str()
        })
        .unwrap();
    assert_eq!(producer["trace_id"], trace_id.as_str(), "{producer}");
    assert_eq!(
        producer["name"],
        format!("publish {}", topology.dead_letter()).as_str()
    );
    let expected = serde_json::json!({
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": topology.dead_letter(),
        "messaging.rabbitmq.destination.routing_key": "shipment.shipped",
        "messaging.message.id": "wh-broken-0001",
    });
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(attr(producer, key), value, "{key} on {producer}");
    }
    // `target` is the tracing layer's, on every span.
    for key in producer["attributes"].as_object().unwrap().keys() {
        assert!(
            key.starts_with("messaging.") || key == "error.type" || key == "target",
            "{key} is not a messaging attribute of the conventions: {producer}"
        );
    }
    let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let copy = ch
        .basic_get(
            topology.dead_letter().as_str().into(),
            lapin::options::BasicGetOptions::default(),
        )
        .await
        .unwrap()
        .expect("the dead-letter copy");
    let carried = capture_worker::queue::trace::header_str(
        copy.delivery.properties.headers().as_ref(),
        "traceparent",
    );
    assert_eq!(
        carried.as_deref(),
        Some(format!("00-{trace_id}-{}-01", producer["span_id"].as_str().unwrap()).as_str()),
        "the copy's traceparent names the producer span"
    );
    let _ = conn.close(200, "done".into()).await;

    assert!(!sink.text().contains(CANARY), "the API key reached a span");
    worker.kill();
    cleanup(&settings, &db, store).await;
}

/// A TCP proxy in front of RabbitMQ that the test can cut, to stop "the broker" for one worker
/// without stopping it for the tests running beside this one.
struct BrokerProxy {
    port: u16,
    up: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl BrokerProxy {
    async fn start() -> BrokerProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let cut_rx = cut.subscribe();
        let is_up = up.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !is_up.load(Ordering::SeqCst) {
                    continue; // dropped: the broker is "down"
                }
                let mut cut = cut_rx.clone();
                cut.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5672").await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        BrokerProxy {
            port,
            up,
            cut,
            task,
        }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn stop_broker(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn start_broker(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for BrokerProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let r = reqwest::get(format!("http://{}/readyz", app.worker_http(0)))
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn metrics_move_as_messages_are_handled_and_readyz_follows_the_broker() {
    // Arrange: a worker that reaches RabbitMQ through a proxy the test can cut.
    let proxy = BrokerProxy::start().await;
    let amqp_url = proxy.url();
    let app = TestApp::spawn_with(|s| s.amqp.url = Secret::new(amqp_url)).await;
    let base = format!("http://{}", app.worker_http(0));
    let before = scrape(&base).await;
    app.authorize(AUTH, 12455, "USD", None);

    // Act: an order, a parcel and a message that is not JSON.
    let (order, s1, _, _) = usd_order();
    app.publish(&[order, s1]).await;
    app.publish_raw("shipment.shipped", b"this is not json")
        .await;
    app.wait_settled(ORDER, 1).await;
    app.wait_count("select count(*) from rejected_messages", 1)
        .await;

    // Assert: counters only grow, and other tests share this process's recorder, so each
    // series moved by at least this test's share.
    let after = scrape(&base).await;
    let moved = |series: &str| metric(&after, series) - metric(&before, series);
    for (series, at_least) in [
        (
            r#"capture_worker_messages_total{type="order.authorized",outcome="processed"}"#,
            1.0,
        ),
        (
            r#"capture_worker_messages_total{type="shipment.shipped",outcome="processed"}"#,
            1.0,
        ),
        (
            r#"capture_worker_messages_total{type="shipment.shipped",outcome="rejected"}"#,
            1.0,
        ),
        (
            r#"capture_worker_messages_rejected_total{reason="malformed"}"#,
            1.0,
        ),
        (
            r#"capture_worker_provider_calls_total{provider="sandbox",operation="capture",outcome="succeeded"}"#,
            1.0,
        ),
        (
            r#"capture_worker_captures_total{provider="sandbox",kind="capture",outcome="succeeded"}"#,
            1.0,
        ),
        (
            r#"capture_worker_captured_amount_minor_total{provider="sandbox",currency="USD"}"#,
            5182.0,
        ),
        (
            r#"capture_worker_provider_call_duration_seconds_count{provider="sandbox",operation="capture"}"#,
            1.0,
        ),
    ] {
        assert!(
            moved(series) >= at_least,
            "{series} moved by {} (expected at least {at_least})",
            moved(series)
        );
    }
    for status in ["queued", "in_flight", "pending", "retrying", "attention"] {
        assert!(
            after.contains_key(&format!(
                r#"capture_worker_oldest_capture_age_seconds{{status="{status}"}}"#
            )),
            "age gauge for {status}"
        );
    }
    for name in [
        "capture_worker_authorizations_expiring_soon",
        "capture_worker_captures_in_flight",
        "capture_worker_consumer_connected",
    ] {
        assert!(after.contains_key(name), "{name} is exported");
    }
    assert_eq!(metric(&after, "capture_worker_ledger_scrape_ok"), 1.0);

    // Act and assert: the broker goes away, then comes back.
    assert_eq!(readyz(&app).await.0, 200);
    let disconnects_before = metric(&after, "capture_worker_consumer_disconnects_total");
    proxy.stop_broker();
    let app_ref = &app;
    eventually(Duration::from_secs(20), || async move {
        readyz(app_ref).await
            == (
                503,
                serde_json::json!({"consuming": false, "database": true}),
            )
    })
    .await;
    let during = scrape(&base).await;
    assert!(metric(&during, "capture_worker_consumer_disconnects_total") > disconnects_before);
    proxy.start_broker();
    eventually(Duration::from_secs(30), || async move {
        readyz(app_ref).await.0 == 200
    })
    .await;

    app.cleanup().await;
}

/// Every alert rule and the dashboard parse, use only metrics the worker exports, and every
/// alert has a description and a runbook entry linked by a `runbook_url` on the configured base.
#[test]
fn alert_rules_and_the_dashboard_parse_and_name_only_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join("deploy/prometheus/alerts.yaml")).unwrap(),
    )
    .unwrap();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/capture-worker.json")).unwrap(),
    )
    .unwrap();
    let runbook = std::fs::read_to_string(root.join("docs/runbook.md")).unwrap();

    let mut exprs = Vec::new();
    let mut alerts = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            assert!(
                matches!(rule["labels"]["severity"].as_str(), Some("page" | "ticket")),
                "{name} has a severity"
            );
            assert!(rule["annotations"]["summary"].is_string(), "{name} summary");
            assert!(
                rule["annotations"]["description"]
                    .as_str()
                    .is_some_and(|d| d.len() > 40),
                "{name} has a description"
            );
            // runbook_url: the configurable base, then this alert's section.
            let anchor = format!(
                "${{CAPTURE_WORKER_RUNBOOK_BASE_URL}}/docs/runbook.md#{}",
                name.to_lowercase()
            );
            assert_eq!(
                rule["annotations"]["runbook_url"].as_str(),
                Some(anchor.as_str()),
                "{name} links its runbook section"
            );
            assert!(
                runbook.contains(&format!("### {name}")),
                "docs/runbook.md has a section for {name}"
            );
            exprs.push(rule["expr"].as_str().unwrap().to_owned());
            alerts.push(name.to_owned());
        }
    }
    assert!(alerts.len() >= 8, "alerts: {alerts:?}");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }

    let exported = capture_worker::telemetry::metrics::ALL;
    let mut used = std::collections::BTreeSet::new();
    for expr in &exprs {
        for (i, _) in expr.match_indices("capture_worker_") {
            let name: String = expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| exported.contains(b))
                .unwrap_or(&name)
                .to_owned();
            assert!(
                exported.contains(&base.as_str()),
                "{name} in `{expr}` is not exported"
            );
            used.insert(base);
        }
    }
    // The dashboard and alerts together show everything the worker exports.
    for name in exported {
        assert!(
            used.contains(*name),
            "{name} is neither graphed nor alerted on"
        );
    }
}

/// `auto` logs are readable text for a person at a terminal and JSON for anything else; `json`
/// and `text` are what they say either way.
#[test]
fn auto_log_format_is_text_at_a_terminal_and_json_elsewhere() {
    use capture_worker::config::LogFormat;
    use capture_worker::telemetry::logs_as_json;
    assert!(!logs_as_json(LogFormat::Auto, true));
    assert!(logs_as_json(LogFormat::Auto, false));
    for terminal in [true, false] {
        assert!(logs_as_json(LogFormat::Json, terminal));
        assert!(!logs_as_json(LogFormat::Text, terminal));
    }
}

/// The real binary with the default `log_format = "auto"`: `config` with an OTLP endpoint logs
/// `trace_export_enabled` at start and exits. `wrap` turns the command into the one to run.
fn log_line_at_start(wrap: impl FnOnce(Command) -> Command) -> String {
    let mut binary = Command::new(env!("CARGO_BIN_EXE_capture-worker"));
    binary
        .arg("config")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .env_remove("CAPTURE_ENV")
        .env_remove("CAPTURE__TELEMETRY__LOG_FORMAT")
        .env_remove("CAPTURE__TELEMETRY__LOG_LEVEL")
        .env(
            "CAPTURE__TELEMETRY__OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}/v1/traces", free_port()),
        );
    let output = wrap(binary).stdin(Stdio::null()).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    all.lines()
        .find(|l| l.contains("exporting traces over OTLP/HTTP"))
        .unwrap_or_else(|| panic!("no start-up log line in:\n{all}"))
        .to_owned()
}

#[test]
fn the_binary_logs_json_lines_into_a_pipe() {
    let line = log_line_at_start(|mut c| {
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    });
    let json: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(json["event"], "trace_export_enabled", "{line}");
    assert_eq!(json["level"], "INFO", "{line}");
}

/// A terminal from util-linux's `script`, which runs the binary on a pseudo-terminal.
#[test]
fn the_binary_logs_readable_lines_to_a_terminal() {
    let line = log_line_at_start(|binary| {
        let shell_line = std::iter::once(binary.get_program())
            .chain(binary.get_args())
            .map(|a| format!("'{}'", a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut script = Command::new("script");
        script.args(["--quiet", "--return", "--command", &shell_line, "/dev/null"]);
        for (key, value) in binary.get_envs() {
            match value {
                Some(v) => script.env(key, v),
                None => script.env_remove(key),
            };
        }
        if let Some(dir) = binary.get_current_dir() {
            script.current_dir(dir);
        }
        script
    });
    // Colours (SGR escapes) are for the terminal; the words are what a person reads.
    let mut plain = String::new();
    let mut rest = line.as_str();
    while let Some(i) = rest.find("\x1b[") {
        plain.push_str(&rest[..i]);
        rest = rest[i..].split_once('m').map_or("", |(_, after)| after);
    }
    plain.push_str(rest);
    assert!(
        serde_json::from_str::<Value>(&plain).is_err(),
        "a JSON line on a terminal: {plain}"
    );
    assert!(plain.contains(" INFO "), "{plain}");
    assert!(
        plain.contains("exporting traces over OTLP/HTTP event=\"trace_export_enabled\""),
        "{plain}"
    );
}

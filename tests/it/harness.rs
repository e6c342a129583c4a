//! `TestApp`: a running worker on its own PostgreSQL database, its own RabbitMQ exchange and
//! queues, and its own sandbox provider, all real, so tests run in parallel and survive
//! leftovers.

use std::path::Path;
use std::time::Duration;

use capture_worker::app::providers::Providers;
use capture_worker::app::{Application, commands};
use capture_worker::config::{ProviderSettings, Secret, Settings};
use capture_worker::queue::publisher::REASON_HEADER;
use capture_worker::queue::topology::Topology;
use capture_worker::sandbox::{
    self, NewAuthorization, Sandbox, SandboxOptions, SandboxServer, Scenario,
};
use capture_worker::storage::Store;
use lapin::options::{BasicAckOptions, BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use serde_json::Value;
use sqlx::{Connection, PgConnection};

pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Settings for one test: unique database and queue names, fast retries.
pub fn test_settings(db: &str, tag: &str, sandbox_url: &str) -> Settings {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut s = Settings::load_from(&dir, None, vec![]).unwrap();
    s.database.url = Secret::new(format!("postgres://postgres@127.0.0.1:5432/{db}"));
    s.database.max_connections = 8;
    s.amqp.url = Secret::new(AMQP);
    s.amqp.exchange = format!("fulfillment-{tag}");
    s.amqp.queue = format!("capture-worker-{tag}");
    s.amqp.outcomes_exchange = format!("fulfillment.outcomes-{tag}");
    s.amqp.prefetch = 16;
    s.http.listen = "127.0.0.1:0".into();
    s.capture.retry_initial_ms = 50;
    s.capture.retry_max_ms = 300;
    s.capture.max_attempts = 8;
    s.capture.lease_seconds = 2;
    s.capture.sweep_interval_ms = 150;
    s.capture.provider_timeout_ms = 400;
    s.capture.parking_seconds = 3600;
    s.capture.notification_wait_ms = 300;
    s.capture.expiry_sweep_ms = 200;
    // Tests drive the lifecycle sweep with a clock of their own (`run_once_at`).
    s.capture.lifecycle_sweep = false;
    s.sandbox.embedded = false;
    s.providers.insert(
        "sandbox".into(),
        ProviderSettings {
            base_url: sandbox_url.to_owned(),
            api_key: Some(Secret::new("sk_test_canary_key")),
            api_key_file: None,
            ..ProviderSettings::default()
        },
    );
    s
}

/// The sandbox's API key in tests.
pub const API_KEY: &str = "sk_test_canary_key";
/// Adyen's HMAC key in tests (Adyen's published sample key).
pub const ADYEN_HMAC_KEY: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
/// Gr4vy's webhook subscription secret in tests.
pub const GR4VY_WEBHOOK_SECRET: &str = "gr4vy-webhook-secret";
/// Checkout.com's webhook signature key in tests.
pub const CHECKOUT_WEBHOOK_SECRET: &str = "cko-webhook-secret";
/// The Adyen merchant account in tests.
pub const ADYEN_MERCHANT: &str = "SandboxMerchantEU";

/// Adds one provider per sandbox dialect, each named after its kind (`gr4vy`, `adyen`,
/// `checkout`, `paypal`, `hellgate`, `orchestrator`), next to the Stripe-dialect `sandbox`,
/// and `orchestrator_multi`, an orchestrator merchant whose connection allows 10 captures.
pub fn with_dialects(s: &mut Settings) {
    let base = s.providers["sandbox"].base_url.clone();
    let entry = |kind: &str, path: &str| ProviderSettings {
        kind: Some(kind.to_owned()),
        base_url: format!("{base}{path}"),
        api_key: Some(Secret::new(API_KEY)),
        ..ProviderSettings::default()
    };
    s.providers.insert(
        "gr4vy".into(),
        ProviderSettings {
            webhook_secret: Some(Secret::new(GR4VY_WEBHOOK_SECRET)),
            ..entry("gr4vy", "/gr4vy")
        },
    );
    s.providers.insert(
        "adyen".into(),
        ProviderSettings {
            merchant_account: Some(ADYEN_MERCHANT.into()),
            webhook_secret: Some(Secret::new(ADYEN_HMAC_KEY)),
            ..entry("adyen", "/adyen/v71")
        },
    );
    s.providers.insert(
        "checkout".into(),
        ProviderSettings {
            webhook_secret: Some(Secret::new(CHECKOUT_WEBHOOK_SECRET)),
            ..entry("checkout", "/checkout")
        },
    );
    s.providers.insert(
        "paypal".into(),
        ProviderSettings {
            client_id: Some("sandbox-client".into()),
            ..entry("paypal", "/paypal")
        },
    );
    s.providers
        .insert("hellgate".into(), entry("hellgate", "/hellgate"));
    s.providers.insert(
        "orchestrator".into(),
        entry("orchestrator", "/orchestrator"),
    );
    s.providers.insert(
        "orchestrator_multi".into(),
        ProviderSettings {
            max_captures: Some(10),
            ..entry("orchestrator", "/orchestrator")
        },
    );
}

/// A fresh, migrated database.
pub async fn fresh_database() -> (String, Store) {
    let name = format!("cw_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(PG_ADMIN).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&format!("postgres://postgres@127.0.0.1:5432/{name}"))
        .await
        .unwrap();
    let store = Store::from_pool(pool);
    store.migrate().await.unwrap();
    (name, store)
}

pub struct TestApp {
    pub settings: Settings,
    /// The database owner's store: tests read and arrange the ledger through it.
    pub store: Store,
    /// What the workers use: the owner's store, or a login member of `capture_worker_app`'s.
    worker_store: Store,
    worker_login: Option<String>,
    pub sandbox: Sandbox,
    _sandbox_server: SandboxServer,
    workers: Vec<Worker>,
    db: String,
}

pub struct Worker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub http: std::net::SocketAddr,
}

impl TestApp {
    /// A running worker with a sandbox that requires the configured API key.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
        TestApp::spawn_as(tweak, false).await
    }

    /// A running worker migrated by the database owner that logs in as a member of
    /// `capture_worker_app`, as deployments run it (`run --no-migrate`).
    pub async fn spawn_least_privileged(tweak: impl FnOnce(&mut Settings)) -> TestApp {
        TestApp::spawn_as(tweak, true).await
    }

    async fn spawn_as(tweak: impl FnOnce(&mut Settings), least_privileged: bool) -> TestApp {
        let (url, sandbox, server) = sandbox::spawn(SandboxOptions {
            latency: Duration::ZERO,
            api_key: Some("sk_test_canary_key".into()),
        })
        .await
        .unwrap();
        let (db, store) = fresh_database().await;
        let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let mut settings = test_settings(&db, &tag, &url);
        tweak(&mut settings);
        let (worker_store, worker_login) = if least_privileged {
            let user = login_in_role("capture_worker_app").await;
            let pool = sqlx::PgPool::connect(&format!("postgres://{user}@127.0.0.1:5432/{db}"))
                .await
                .unwrap();
            (Store::from_pool(pool), Some(user))
        } else {
            (store.clone(), None)
        };
        let mut app = TestApp {
            settings,
            store,
            worker_store,
            worker_login,
            sandbox,
            _sandbox_server: server,
            workers: Vec::new(),
            db,
        };
        app.start_worker().await;
        app.wait_consuming().await;
        app
    }

    /// Starts one more worker process-equivalent on the same queue and database.
    pub async fn start_worker(&mut self) {
        let providers = Providers::from_settings(&self.settings).unwrap();
        let app =
            Application::build_with(self.settings.clone(), self.worker_store.clone(), providers)
                .await
                .unwrap();
        let http = app.http_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        self.workers.push(Worker {
            stop: Some(tx),
            task,
            http,
        });
    }

    pub fn worker_http(&self, i: usize) -> std::net::SocketAddr {
        self.workers[i].http
    }

    /// A running worker serving every sandbox dialect (see [`with_dialects`]), with the
    /// sandbox posting its notifications to the worker's webhook endpoint. The worker logs in
    /// as a member of `capture_worker_app`, so every notification and asynchronous outcome
    /// these tests drive also proves the role's grants suffice.
    pub async fn spawn_with_dialects(tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let app = TestApp::spawn_least_privileged(|s| {
            with_dialects(s);
            tweak(s);
        })
        .await;
        app.route_notifications();
        app
    }

    /// Points the sandbox's notifications of every dialect at worker 0's webhook endpoint,
    /// signed with the keys the worker is configured with.
    pub fn route_notifications(&self) {
        let http = self.worker_http(0);
        for (dialect, secret) in [
            ("adyen", Some(ADYEN_HMAC_KEY)),
            ("gr4vy", Some(GR4VY_WEBHOOK_SECRET)),
            ("checkout", Some(CHECKOUT_WEBHOOK_SECRET)),
            ("paypal", None),
        ] {
            self.sandbox.set_notification_target(
                dialect,
                &format!("http://{http}/webhooks/{dialect}"),
                secret,
            );
        }
    }

    /// The store the workers use (a login of `capture_worker_app` where least privileged).
    pub fn worker_store(&self) -> &Store {
        &self.worker_store
    }

    /// Registers an authorization in the sandbox, as given.
    pub fn authorize_with(&self, authorization: NewAuthorization) {
        self.sandbox.create_authorization(authorization).unwrap();
    }

    /// Stops every worker gracefully and waits for them.
    pub async fn stop_workers(&mut self) {
        for w in &mut self.workers {
            if let Some(tx) = w.stop.take() {
                let _ = tx.send(());
            }
        }
        for w in self.workers.drain(..) {
            w.task.await.unwrap().unwrap();
        }
    }

    async fn wait_consuming(&self) {
        let client = reqwest::Client::new();
        for w in &self.workers {
            let url = format!("http://{}/readyz", w.http);
            eventually(Duration::from_secs(15), || {
                let client = client.clone();
                let url = url.clone();
                async move {
                    client
                        .get(&url)
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false)
                }
            })
            .await;
        }
    }

    /// Registers an authorization in the sandbox.
    pub fn authorize(&self, id: &str, amount: i64, currency: &str, scenario: Option<Scenario>) {
        let mut a = NewAuthorization::new(id, amount, currency);
        a.scenario = scenario;
        self.sandbox.create_authorization(a).unwrap();
    }

    /// Publishes messages with confirms, routing key = type.
    pub async fn publish(&self, messages: &[Value]) {
        commands::publish_messages(&self.settings, messages, None)
            .await
            .unwrap();
    }

    /// Publishes raw bytes with a routing key (for malformed input).
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let p = capture_worker::queue::publisher::Publisher::open(&conn)
            .await
            .unwrap();
        p.publish(
            &self.settings.amqp.exchange,
            routing_key,
            body,
            Default::default(),
            None,
        )
        .await
        .unwrap();
        let _ = conn.close(200, "done".into()).await;
    }

    pub fn topology(&self) -> Topology {
        Topology::new(
            self.settings.amqp.exchange.clone(),
            self.settings.amqp.queue.clone(),
        )
    }

    /// Takes every message now in the dead-letter queue: (reason header, body).
    pub async fn drain_dead_letters(&self) -> Vec<(String, Value)> {
        self.take_dead_letters()
            .await
            .into_iter()
            .map(|(headers, body)| {
                let reason =
                    capture_worker::queue::trace::header_str(headers.as_ref(), REASON_HEADER)
                        .unwrap_or_default();
                (reason, serde_json::from_slice(&body).unwrap_or(Value::Null))
            })
            .collect()
    }

    /// Takes every message now in the dead-letter queue: (headers, body).
    pub async fn take_dead_letters(&self) -> Vec<(Option<lapin::types::FieldTable>, Vec<u8>)> {
        let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(msg) = ch
            .basic_get(
                self.topology().dead_letter().as_str().into(),
                BasicGetOptions::default(),
            )
            .await
            .unwrap()
        {
            msg.delivery.ack(BasicAckOptions::default()).await.unwrap();
            out.push((msg.delivery.properties.headers().clone(), msg.delivery.data));
        }
        let _ = conn.close(200, "done".into()).await;
        out
    }

    /// Waits until the order has `n` captures and none is unsettled.
    pub async fn wait_settled(&self, order_id: &str, n: i64) {
        let pool = self.store.pool().clone();
        let order_id = order_id.to_owned();
        eventually(Duration::from_secs(20), || {
            let pool = pool.clone();
            let order_id = order_id.clone();
            async move {
                let (total, open): (i64, i64) = sqlx::query_as(
                    "select count(*), count(*) filter (where status in ('queued','in_flight','pending','retrying'))
                     from captures where order_id = $1",
                )
                .bind(&order_id)
                .fetch_one(&pool)
                .await
                .unwrap();
                total == n && open == 0
            }
        })
        .await;
    }

    /// Waits until `sql` (returning one bigint) equals `expected`.
    pub async fn wait_count(&self, sql: &'static str, expected: i64) {
        let pool = self.store.pool().clone();
        eventually(Duration::from_secs(20), || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                    == expected
            }
        })
        .await;
    }

    /// (sequence, kind, amount, is_final, status) of the order's captures.
    pub async fn captures(&self, order_id: &str) -> Vec<(i32, String, i64, bool, String)> {
        sqlx::query_as(
            "select sequence, kind, amount, is_final, status from captures where order_id = $1 order by sequence",
        )
        .bind(order_id)
        .fetch_all(self.store.pool())
        .await
        .unwrap()
    }

    /// Checks the request ledger: no key was ever sent with two different amounts or final
    /// flags (P3), and money moved at most once per key (P1).
    pub fn assert_keys_sound(&self) {
        use std::collections::HashMap;
        let mut terms: HashMap<String, (Option<i64>, Option<bool>)> = HashMap::new();
        let mut moved: HashMap<String, i64> = HashMap::new();
        for e in self.sandbox.ledger() {
            let Some(key) = e.idempotency_key.clone() else {
                continue;
            };
            let t = (e.amount_to_capture, e.final_capture);
            if let Some(prev) = terms.insert(key.clone(), t) {
                assert_eq!(prev, t, "key {key} sent with different terms");
            }
            if e.captured_amount > 0 {
                *moved.entry(key.clone()).or_default() += 1;
            }
        }
        for (key, n) in moved {
            assert_eq!(n, 1, "key {key} moved money {n} times");
        }
    }

    /// Stops workers, deletes the queues and exchanges, drops the database.
    pub async fn cleanup(mut self) {
        self.stop_workers().await;
        let t = self.topology();
        if let Ok(conn) =
            lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await
            && let Ok(ch) = conn.create_channel().await
        {
            for q in [t.queue.clone(), t.dead_letter()] {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            for x in [
                t.exchange.clone(),
                t.dead_letter(),
                self.settings.amqp.outcomes_exchange.clone(),
            ] {
                let _ = ch
                    .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
            let _ = conn.close(200, "done".into()).await;
        }
        self.worker_store.pool().close().await;
        self.store.pool().close().await;
        drop_database(&self.db).await;
        if let Some(user) = &self.worker_login {
            drop_login(user).await;
        }
    }
}

/// Creates a login user in `role`, returning its name.
pub async fn login_in_role(role: &str) -> String {
    let user = format!(
        "cw_login_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let mut admin = PgConnection::connect(PG_ADMIN).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "create role {user} login in role {role}"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    user
}

pub async fn drop_login(user: &str) {
    if let Ok(mut admin) = PgConnection::connect(PG_ADMIN).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("drop role if exists {user}")))
            .execute(&mut admin)
            .await;
    }
}

/// Polls `check` until it is true, failing the test after `within`.
pub async fn eventually<F, Fut>(within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An example message from `contract/v1/examples`.
pub fn example(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contract/v1/examples")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// An order message with its authorization dated to this test run: authorized a minute before
/// the run started and, when it has `expires_at`, expiring seven days after it. Fixed dates
/// pass: a shipment after `expires_at` is refused, and the provider's window after
/// `authorized_at` makes the worker capture ahead of it. One instant per run, so every copy of
/// an order is the same registration (a duplicate, never a conflict).
pub fn dated(mut order: Value) -> Value {
    static STARTED: std::sync::OnceLock<chrono::DateTime<chrono::Utc>> = std::sync::OnceLock::new();
    let started = *STARTED.get_or_init(chrono::Utc::now);
    let stamp = |t: chrono::DateTime<chrono::Utc>| {
        Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    let payment = &mut order["data"]["payment"];
    payment["authorized_at"] = stamp(started - chrono::Duration::minutes(1));
    if payment.get("expires_at").is_some() {
        payment["expires_at"] = stamp(started + chrono::Duration::days(7));
    }
    order
}

/// The USD example order (total 12455) with its three shipments; the authorization is
/// [`dated`] to this run.
pub fn usd_order() -> (Value, Value, Value, Value) {
    (
        dated(example("order-authorized-usd.json")),
        example("shipment-shipped-usd-s1.json"),
        example("shipment-shipped-usd-s2.json"),
        example("shipment-shipped-usd-s3.json"),
    )
}

/// A copy of `msg` with a new message id.
pub fn with_id(msg: &Value, id: &str) -> Value {
    let mut m = msg.clone();
    m["message_id"] = Value::String(id.into());
    m
}

/// Drops a test database, best effort.
pub async fn drop_database(name: &str) {
    if let Ok(mut admin) = PgConnection::connect(PG_ADMIN).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "drop database if exists {name} with (force)"
        )))
        .execute(&mut admin)
        .await;
    }
}

//! The real binary as a separate process, killed with SIGKILL at the worst moment.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use capture_worker::sandbox::{
    self, Fault, LedgerOutcome, NewAuthorization, SandboxOptions, Scenario,
};

use crate::harness::*;

fn spawn_worker(
    settings: &capture_worker::config::Settings,
    sandbox_url: &str,
    log: &std::path::Path,
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_capture-worker"))
        .arg("run")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CAPTURE__DATABASE__URL", settings.database.url.expose())
        .env("CAPTURE__AMQP__EXCHANGE", &settings.amqp.exchange)
        .env("CAPTURE__AMQP__QUEUE", &settings.amqp.queue)
        .env("CAPTURE__HTTP__LISTEN", "127.0.0.1:0")
        .env("CAPTURE__SANDBOX__EMBEDDED", "false")
        .env("CAPTURE__PROVIDERS__SANDBOX__BASE_URL", sandbox_url)
        .env("CAPTURE__CAPTURE__PROVIDER_TIMEOUT_MS", "10000")
        .env("CAPTURE__CAPTURE__LEASE_SECONDS", "2")
        .env("CAPTURE__CAPTURE__SWEEP_INTERVAL_MS", "200")
        .env("CAPTURE__PROVIDERS__SANDBOX__API_KEY", "sk_test_canary_key")
        .env("CAPTURE__TELEMETRY__LOG_LEVEL", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_worker_killed_with_sigkill_after_the_providers_success_does_not_capture_twice_after_restart()
 {
    // Arrange: a database, a queue, and a sandbox that captures, then holds its answer 5 s.
    let (url, sb, _server) = sandbox::spawn(SandboxOptions {
        latency: Duration::ZERO,
        api_key: Some("sk_test_canary_key".into()),
    })
    .await
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("worker.log");
    let mut auth = NewAuthorization::new("pi_example_1", 12455, "USD");
    auth.scenario = Some(Scenario {
        faults: vec![Fault::LostResponse { delay_ms: 5_000 }],
        ..Scenario::default()
    });
    sb.create_authorization(auth).unwrap();
    let (db, store) = fresh_database().await;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let settings = test_settings(&db, &tag, &url);
    let mut worker = spawn_worker(&settings, &url, &log);

    // Act: publish the order and one shipment; kill -9 once the provider has captured.
    let (order, s1, _, _) = usd_order();
    let publish_settings = settings.clone();
    eventually(Duration::from_secs(20), || {
        let s = publish_settings.clone();
        let msgs = [order.clone(), s1.clone()];
        async move {
            capture_worker::app::commands::publish_messages(&s, &msgs, None)
                .await
                .is_ok()
        }
    })
    .await;
    eventually(Duration::from_secs(20), || {
        let sb = sb.clone();
        async move {
            sb.ledger()
                .iter()
                .any(|e| e.outcome == LedgerOutcome::Captured)
        }
    })
    .await;
    worker.kill().unwrap(); // SIGKILL
    worker.wait().unwrap();
    let status: String = sqlx::query_scalar("select status from captures")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        status, "in_flight",
        "killed before it could record the outcome"
    );

    // A new process takes the capture over when the lease expires.
    let mut worker = spawn_worker(&settings, &url, &log);
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
    worker.kill().unwrap();
    worker.wait().unwrap();

    // Assert: money moved once, the retry was a replay under the same key.
    let pi = sb.authorization("pi_example_1").unwrap();
    assert_eq!(pi.amount_received, 5182);
    let ledger = sb.ledger();
    assert_eq!(ledger.iter().filter(|e| e.captured_amount > 0).count(), 1);
    assert!(ledger.iter().any(|e| e.replayed));
    let keys: std::collections::HashSet<_> = ledger
        .iter()
        .filter_map(|e| e.idempotency_key.clone())
        .collect();
    assert_eq!(keys.len(), 1);

    // The API key never reaches the logs (P9), though the logs tell the story.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("lease_taken_over"), "the takeover is logged");
    assert!(
        !text.contains("sk_test_canary_key"),
        "the API key leaked into the logs"
    );

    // Clean up the broker objects and the database.
    let app_like = capture_worker::queue::topology::Topology::new(
        settings.amqp.exchange.clone(),
        settings.amqp.queue.clone(),
    );
    if let Ok(conn) = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await
        && let Ok(ch) = conn.create_channel().await
    {
        for q in [app_like.queue.clone(), app_like.dead_letter()] {
            let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
        }
        for x in [app_like.exchange.clone(), app_like.dead_letter()] {
            let _ = ch
                .exchange_delete(x.as_str().into(), Default::default())
                .await;
        }
    }
    store.pool().close().await;
    drop_database(&db).await;
}

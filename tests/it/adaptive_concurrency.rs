//! Provider calls in flight adapt per provider (docs/performance.md, "Adaptive provider
//! concurrency"): with a provider that answers in 300 ms and more orders waiting than the
//! limit admits at first, the worker's calls in flight to it grow above where the limit
//! starts. Observed through `/metrics`, polled with a deadline; nothing about speed is
//! asserted.

use std::collections::HashMap;
use std::time::Duration;

use capture_worker::config::ProviderSettings;
use capture_worker::sandbox::Scenario;
use serde_json::json;

use crate::harness::*;

/// A provider name only this test uses, so the process-wide gauges it reads are its own.
const PROVIDER: &str = "adaptive";

async fn gauges(base: &str) -> HashMap<String, f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn calls_in_flight_to_a_slow_provider_grow_above_the_initial_limit() {
    let initial = 2;
    let app = TestApp::spawn_with(|s| {
        s.capture.concurrency_min = initial;
        s.capture.concurrency = 64;
        s.amqp.prefetch = 64;
        s.capture.provider_timeout_ms = 5_000;
        s.capture.lease_seconds = 30;
        let sandbox = s.providers["sandbox"].clone();
        s.providers.insert(
            PROVIDER.into(),
            ProviderSettings {
                kind: Some("sandbox".into()),
                ..sandbox
            },
        );
    })
    .await;
    let (order, s1, _, _) = usd_order();
    let n = 60;
    let mut messages = Vec::new();
    for i in 0..n {
        let auth = format!("pi_adaptive_{i}");
        app.authorize(
            &auth,
            12455,
            "USD",
            Some(Scenario {
                latency_ms: 300,
                ..Scenario::default()
            }),
        );
        let oid = format!("ORD-ADAPT{i}");
        let mut o = with_id(&order, &format!("adapt{i}-order"));
        o["data"]["order_id"] = json!(oid);
        o["data"]["payment"]["authorization_id"] = json!(auth);
        o["data"]["payment"]["provider"] = json!(PROVIDER);
        let mut s = with_id(&s1, &format!("adapt{i}-s1"));
        s["data"]["order_id"] = json!(oid);
        messages.push(o);
        messages.push(s);
    }
    app.publish(&messages).await;

    let base = format!("http://{}", app.worker_http(0));
    let in_flight = format!("capture_worker_provider_calls_in_flight{{provider=\"{PROVIDER}\"}}");
    let limit = format!("capture_worker_provider_concurrency_limit{{provider=\"{PROVIDER}\"}}");
    eventually(Duration::from_secs(60), || {
        let (base, in_flight, limit) = (base.clone(), in_flight.clone(), limit.clone());
        async move {
            let g = gauges(&base).await;
            let calls = g.get(&in_flight).copied().unwrap_or(0.0);
            let allowed = g.get(&limit).copied().unwrap_or(0.0);
            assert!(
                calls <= allowed.max(initial as f64) + 1.0,
                "{calls} calls in flight over a limit of {allowed}"
            );
            calls > initial as f64
        }
    })
    .await;
    app.wait_count(
        "select count(*) from captures where status = 'succeeded'",
        n,
    )
    .await;
    app.assert_keys_sound();
    app.cleanup().await;
}

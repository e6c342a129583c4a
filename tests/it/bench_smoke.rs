//! The benchmark in CI: the `bench` tool's `--quick` run completes and writes its report. It
//! asserts nothing about speed (figures on a shared machine drift); only that every section
//! ran (the hand-written peer included), the promises held, and the run cleaned up after
//! itself.

use std::process::Command;

use serde_json::Value;

use crate::harness::PG_ADMIN;

#[tokio::test]
async fn the_quick_benchmark_completes_and_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let output = tokio::task::spawn_blocking({
        let out = out.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_bench"))
                .args(["--quick", "--out"])
                .arg(&out)
                // The worker this test run built, named rather than looked up beside the tool.
                .arg("--worker-binary")
                .arg(env!("CARGO_BIN_EXE_capture-worker"))
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env("CAPTURE__TELEMETRY__LOG_LEVEL", "warn")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("raw limits"),
        "the table is printed:\n{stdout}"
    );
    assert!(
        stdout.contains("end to end"),
        "the table is printed:\n{stdout}"
    );

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let raw = &report["raw"];
    for key in [
        "rabbitmq_publish_confirms_per_s",
        "rabbitmq_consume_ack_per_s",
        "postgres_naive_shipments_per_s",
        "http_round_trips_per_s",
    ] {
        assert!(raw[key].as_f64().unwrap() > 0.0, "{key} measured");
    }
    // The hand-written peer ran at every latency and captured every shipment once.
    let peers = report["peer"].as_array().unwrap();
    assert!(!peers.is_empty(), "the peer ran");
    for peer in peers {
        assert!(peer["throughput_per_s"].as_f64().unwrap() > 0.0);
        assert_eq!(peer["captured"], peer["shipments"], "peer: {peer}");
        assert!(peer["pipeline_cpu_ms_per_shipment"].as_f64().is_some());
    }
    let runs = report["end_to_end"].as_array().unwrap();
    assert!(!runs.is_empty());
    assert_eq!(runs.len(), peers.len());
    for run in runs {
        assert!(run["throughput_per_s"].as_f64().unwrap() > 0.0);
        assert!(run["ratio_to_tighter_raw"].as_f64().is_some());
        assert!(run["ratio_to_peer"].as_f64().is_some(), "ratio to the peer");
        // No overrides: the worker ran with its configuration's settings.
        assert_eq!(
            run["worker_settings"]["overrides"].as_array().map(Vec::len),
            Some(0)
        );
        assert!(run["paced"]["latency_ms"]["count"].as_u64().unwrap() > 0);
        assert!(run["worker_peak_rss_mb"].as_f64().unwrap() > 0.0);
        assert_eq!(run["promises"]["keys_that_moved_money_twice"], 0);
        assert_eq!(run["promises"]["orders_not_fully_captured"], 0);
    }
    assert!(report["backlog"]["shipments_per_s"].as_f64().unwrap() > 0.0);
    assert!(!report["targets"].as_array().unwrap().is_empty());

    // Fresh, uniquely named databases: none of this run's is left behind.
    let run_id = report["run_id"].as_str().unwrap();
    let mut admin = {
        use sqlx::Connection;
        sqlx::PgConnection::connect(PG_ADMIN).await.unwrap()
    };
    let left: i64 = sqlx::query_scalar("select count(*) from pg_database where datname like $1")
        .bind(format!("cw_bench_{run_id}_%"))
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(left, 0, "the run's databases are dropped");
}

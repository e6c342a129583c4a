//! What an attacker or a careless publisher can send, and what must hold: outside text is
//! stored, forwarded, logged and printed through one boundary (NUL replaced, card numbers
//! masked, the worker's secrets removed, length capped); a message the ledger cannot store is
//! refused with a reason; bodies over the limit are kept as an excerpt; finance's sums cannot
//! overflow; unauthenticated notifications are bounded; operator commands fail when they act
//! on nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use capture_worker::config::Secret;
use capture_worker::sandbox::Scenario;
use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::finance::{order_msg, ship_msg};
use crate::harness::*;
use crate::operator::cli;
use crate::providers_e2e::{authorization, capture_status, order_on, pending_reference};

/// Card numbers (Luhn-valid test PANs) as they may appear, grouped or not.
const PANS: [&str; 3] = ["4242424242424242", "4111111111111111", "5555555555554444"];

/// An order of one line (L1: 4000) on the sandbox, authorized for 5000.
fn one_line_order(order_id: &str, authorization: &str) -> Value {
    order_msg(
        order_id,
        authorization,
        "USD",
        &[("L1", 1, 4000, 0)],
        0,
        5000,
        None,
    )
}

/// Every way `pan` may be written: its digits, in groups of four by spaces or dashes.
fn spellings(pan: &str) -> Vec<String> {
    let groups: Vec<&str> = (0..pan.len())
        .step_by(4)
        .map(|i| &pan[i..(i + 4).min(pan.len())])
        .collect();
    vec![pan.to_owned(), groups.join(" "), groups.join("-")]
}

/// Every text column of every table and view of the test's database, as one string.
async fn whole_ledger(app: &TestApp) -> String {
    let relations: Vec<String> = sqlx::query_scalar(
        "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'public' and c.relkind in ('r', 'v') order by 1",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    let mut all = String::new();
    for r in relations {
        let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select coalesce(string_agg(t::text, ' '), '') from {r} t"
        )))
        .fetch_one(app.store.pool())
        .await
        .unwrap();
        all.push_str(&format!("\n[{r}] {text}"));
    }
    all
}

/// Takes every dead-letter copy: its headers as `name=value` lines, and its body.
async fn dead_letter_copies(app: &TestApp) -> Vec<(String, String)> {
    app.take_dead_letters()
        .await
        .into_iter()
        .map(|(headers, body)| {
            let headers: Vec<String> = headers
                .as_ref()
                .map(|t| {
                    t.inner()
                        .iter()
                        .map(|(k, v)| match v {
                            lapin::types::AMQPValue::LongString(s) => {
                                format!("{k}={}", String::from_utf8_lossy(s.as_bytes()))
                            }
                            other => format!("{k}={other:?}"),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                headers.join("\n"),
                String::from_utf8_lossy(&body).into_owned(),
            )
        })
        .collect()
}

/// Waits for at least `n` dead-letter copies and takes them.
async fn wait_dead_letters(app: &TestApp, n: usize) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut copies = Vec::new();
    while copies.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} dead-letter copies within 10 s",
            copies.len()
        );
        copies.extend(dead_letter_copies(app).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    copies
}

fn assert_no_pan(place: &str, text: &str) {
    for pan in PANS {
        for s in spellings(pan) {
            assert!(
                !text.contains(&s),
                "{place} holds the card number {s}: {text}"
            );
        }
    }
}

/// Log lines written on this thread (the test's runtime runs the worker's tasks here too).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(self.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A Checkout.com notification signed with the test's webhook key.
async fn post_checkout(app: &TestApp, body: &[u8], signed: bool) -> u16 {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/webhooks/checkout", app.worker_http(0)))
        .header("content-type", "application/json");
    if signed {
        let signature = capture_worker::provider::checkout::sign_webhook(
            &Secret::new(CHECKOUT_WEBHOOK_SECRET),
            body,
        )
        .unwrap();
        request = request.header("cko-signature", signature);
    }
    request
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_nul_in_a_signed_checkout_notification_settles_the_capture_and_an_unsigned_one_is_recorded_as_refused()
 {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    let auth = "pay_sbx_checkout_nul";
    let (order, s1, _, _) = order_on("checkout", "ORD-CK-NUL", auth, 12455);
    app.authorize_with(authorization(
        auth,
        12455,
        Scenario {
            silent: true,
            ..Scenario::default()
        },
    ));
    app.publish(&[order, s1]).await;
    let action = pending_reference(&app, "ORD-CK-NUL").await;

    // Signed, with a NUL in the text the worker keeps (the decline's summary): recorded and
    // applied.
    let body = json!({"id": "evt_nul", "type": "payment_capture_declined", "data": {
        "id": auth, "action_id": action, "reference": "ORD-CK-NUL/S1",
        "response_code": "20051", "response_summary": "Insufficient\u{0}Funds"
    }})
    .to_string();
    assert!(body.contains("\\u0000"));
    assert_eq!(post_checkout(&app, body.as_bytes(), true).await, 200);
    assert_eq!(capture_status(&app, "ORD-CK-NUL").await, "declined");
    let error: String =
        sqlx::query_scalar("select last_error from captures where order_id = 'ORD-CK-NUL'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(error, "Insufficient\u{FFFD}Funds");
    // Unsigned, with a NUL byte: refused (401) and recorded.
    let unsigned = b"{\"id\":\"evt_x\",\"type\":\"payment_captured\",\"x\":\"a\x00b\"}";
    assert_eq!(post_checkout(&app, unsigned, false).await, 401);
    app.wait_count(
        "select count(*) from webhook_rejections where reason = 'bad_signature'",
        1,
    )
    .await;

    let events: i64 =
        sqlx::query_scalar("select count(*) from webhook_events where provider = 'checkout'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(events, 1);
    app.cleanup().await;
}

#[tokio::test]
async fn a_nul_in_an_order_line_name_is_stored_replaced_and_the_order_is_captured() {
    let app = TestApp::spawn().await;
    app.authorize("pi_nul_line", 5000, "USD", None);
    let mut order = one_line_order("ORD-NUL", "pi_nul_line");
    order["data"]["lines"][0]["name"] = json!("Blue\u{0}mug");
    app.publish(&[order, ship_msg("ORD-NUL", "S1", &[("L1", 1)])])
        .await;
    app.wait_settled("ORD-NUL", 1).await;
    let name: String =
        sqlx::query_scalar("select name from order_lines where order_id = 'ORD-NUL'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(name, "Blue\u{FFFD}mug");
    assert_eq!(
        app.captures("ORD-NUL").await[0].4,
        "succeeded",
        "the order was accepted and captured"
    );
    let rejected: i64 = sqlx::query_scalar("select count(*) from rejected_messages")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(rejected, 0);
    app.cleanup().await;
}

#[tokio::test]
async fn card_numbers_in_free_text_and_refused_fields_are_never_stored_forwarded_or_printed_raw() {
    let app = TestApp::spawn().await;
    app.authorize("pi_pan", 5000, "USD", None);
    let mut order = one_line_order("ORD-PAN", "pi_pan");
    order["data"]["lines"][0]["sku"] = json!(PANS[0]);
    order["data"]["lines"][0]["name"] = json!("card 4111 1111 1111 1111 on file");
    // Refused messages quoting card numbers in an id and a currency.
    let unknown_line = ship_msg("ORD-PAN", "S9", &[("5555-5555-5555-4444", 1)]);
    let mut bad_currency = one_line_order("ORD-PAN-2", "pi_pan_2");
    bad_currency["data"]["currency"] = json!(PANS[1]);
    app.publish(&[order, ship_msg("ORD-PAN", "S1", &[("L1", 1)])])
        .await;
    app.wait_settled("ORD-PAN", 1).await;
    app.publish(&[unknown_line, bad_currency]).await;
    app.wait_count("select count(*) from rejected_messages", 2)
        .await;
    let copies = wait_dead_letters(&app, 2).await;

    let ledger = whole_ledger(&app).await;
    assert!(ledger.contains("[card-number-masked]"), "{ledger}");
    assert_no_pan("the ledger", &ledger);
    for (headers, body) in &copies {
        assert!(headers.contains("x-capture-reject-detail"), "{headers}");
        assert_no_pan("a dead-letter copy's headers", headers);
        assert_no_pan("a dead-letter copy", body);
    }
    for format in ["text", "json"] {
        let out = cli(&app, &["order", "show", "ORD-PAN", "--format", format]).await;
        assert!(out.status.success(), "{out:?}");
        assert_no_pan("order show", &String::from_utf8_lossy(&out.stdout));
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_provider_echoing_the_api_key_leaves_it_in_no_record_view_log_or_command_output() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let provider = MockServer::start().await;
    // What a proxy in front of the provider may answer: the credentials it received.
    Mock::given(method("POST"))
        .and(path_regex("^/v1/payment_intents/.*/capture$"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {
            "type": "invalid_request_error",
            "message": format!("Invalid API Key provided: {API_KEY} (Authorization: Bearer {API_KEY})")
        }})))
        .mount(&provider)
        .await;
    let uri = provider.uri();
    let app = TestApp::spawn_with(|s| {
        s.providers.get_mut("sandbox").unwrap().base_url = uri;
    })
    .await;
    app.publish(&[
        one_line_order("ORD-KEY", "pi_key"),
        ship_msg("ORD-KEY", "S1", &[("L1", 1)]),
    ])
    .await;
    app.wait_count(
        "select count(*) from captures where status in ('attention', 'failed')",
        1,
    )
    .await;
    assert!(
        !provider.received_requests().await.unwrap().is_empty(),
        "the provider was called"
    );
    let error: String =
        sqlx::query_scalar("select last_error from captures where order_id = 'ORD-KEY'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert!(error.contains("[secret-removed]"), "{error}");
    let ledger = whole_ledger(&app).await;
    assert!(!ledger.contains(API_KEY), "{ledger}");
    for format in ["text", "json"] {
        let out = cli(&app, &["order", "show", "ORD-KEY", "--format", format]).await;
        assert!(out.status.success(), "{out:?}");
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(shown.contains("ORD-KEY"), "{shown}");
        assert!(!shown.contains(API_KEY), "{shown}");
    }
    let logged = logs.text();
    assert!(logged.contains("capture_needs_attention"), "{logged}");
    assert!(!logged.contains(API_KEY), "{logged}");
    app.cleanup().await;
}

#[tokio::test]
async fn a_message_the_ledger_cannot_store_is_refused_with_a_reason_not_redelivered() {
    let app = TestApp::spawn().await;
    // A rule of the database the message breaks, whatever its cause: the same data fails the
    // same way on every delivery.
    sqlx::query(
        "alter table order_lines add constraint order_lines_test_refuses check (sku <> 'REFUSED')",
    )
    .execute(app.store.pool())
    .await
    .unwrap();
    app.authorize("pi_unstorable", 5000, "USD", None);
    let mut order = one_line_order("ORD-UNSTORABLE", "pi_unstorable");
    order["data"]["lines"][0]["sku"] = json!("REFUSED");
    app.publish(&[order]).await;
    let copies = wait_dead_letters(&app, 1).await;
    assert!(copies[0].0.contains("unstorable"), "{}", copies[0].0);
    let copy: Value = serde_json::from_str(&copies[0].1).unwrap();
    assert_eq!(copy["data"]["order_id"], "ORD-UNSTORABLE");
    let (reason, detail, message_id): (String, String, Option<String>) = sqlx::query_as(
        "select reason, detail, message_id from rejected_messages where order_id = 'ORD-UNSTORABLE'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(reason, "unstorable");
    assert!(detail.contains("order_lines_test_refuses"), "{detail}");
    assert_eq!(message_id.as_deref(), Some("ORD-UNSTORABLE-authorized"));
    app.cleanup().await;
}

#[tokio::test]
async fn a_body_over_the_size_limit_is_dead_lettered_as_too_large_keeping_only_a_bounded_excerpt() {
    let app = TestApp::spawn().await;
    // The default amqp.max_message_bytes.
    let limit = 262_144;
    let mut order = one_line_order("ORD-BIG", "pi_big");
    order["data"]["note"] = json!(format!("{} {}", PANS[2], "x".repeat(limit * 4)));
    let body = serde_json::to_vec(&order).unwrap();
    assert!(body.len() > limit);
    app.publish_raw("order.authorized", &body).await;
    let copies = wait_dead_letters(&app, 1).await;
    let (headers, copy) = &copies[0];
    assert!(headers.contains("too_large"), "{headers}");
    assert!(copy.len() <= 5_000, "the copy is {} bytes", copy.len());
    assert!(copy.starts_with("{\"data\""), "{copy}");
    assert_no_pan("the dead-letter copy", copy);
    let (reason, detail_len, body_len): (String, i32, i32) =
        sqlx::query_as("select reason, length(detail), length(body) from rejected_messages")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(reason, "too_large");
    assert!(detail_len < 500, "{detail_len}");
    assert!(body_len <= 4_200, "{body_len}");
    app.cleanup().await;
}

#[tokio::test]
async fn a_day_summing_beyond_64_bits_is_reported_exactly() {
    let mut app = TestApp::spawn().await;
    app.stop_workers().await;
    for (order_id, amount) in [("ORD-MAX", i64::MAX), ("ORD-ONE", 1)] {
        sqlx::query(
            "insert into orders (order_id, currency, provider, authorization_id, authorized_amount,
                 authorized_at, shipping_amount, order_discount_amount, order_total, message_id,
                 payload_hash)
             values ($1, 'USD', 'sandbox', $1, $2, '2026-12-01T12:00:00Z', 0, 0, 1, $1, 'h')",
        )
        .bind(order_id)
        .bind(amount)
        .execute(app.store.pool())
        .await
        .unwrap();
    }
    let sum: String = sqlx::query_scalar(
        "select authorized_amount::text from reconciliation_daily where day = '2026-12-01'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(sum, "9223372036854775808");
    for format in ["table", "json", "csv"] {
        let out = cli(
            &app,
            &[
                "report",
                "--from",
                "2026-12-01",
                "--to",
                "2026-12-01",
                "--format",
                format,
            ],
        )
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{format}: {out:?}");
        assert!(stdout.contains("9223372036854775808"), "{format}: {stdout}");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn unauthenticated_notifications_are_recorded_up_to_a_cap_and_an_empty_adyen_batch_is_refused()
 {
    let app = TestApp::spawn_with_dialects(|_| {}).await;
    assert_eq!(
        crate::providers_e2e::post_webhook(&app, "adyen", r#"{"notificationItems":[]}"#.into())
            .await,
        401
    );
    let body: Value = json!({"id": "evt", "type": "payment_captured", "pad": "y".repeat(20_000)});
    for _ in 0..70 {
        assert_eq!(
            post_checkout(&app, body.to_string().as_bytes(), false).await,
            401
        );
    }
    let (rows, longest): (i64, Option<i32>) =
        sqlx::query_as("select count(*), max(length(body)) from webhook_rejections")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    // REJECTIONS_RECORDED_PER_MINUTE
    assert_eq!(rows, 60);
    assert!(longest.unwrap_or(0) <= 2_100, "{longest:?}");
    app.cleanup().await;
}

#[tokio::test]
async fn requeueing_a_rejection_that_does_not_exist_fails() {
    let app = TestApp::spawn().await;
    let out = cli(&app, &["dead-letter", "requeue", "987654321"]).await;
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("987654321"), "{stderr}");
    app.cleanup().await;
}

//! The sandbox provider over real HTTP, in Stripe's dialect and the others: balances,
//! idempotency, scenarios, the ledger. Delays appear only where the delay is the thing under
//! test.

use std::time::Duration;

use capture_worker::sandbox::{
    self, Fault, LedgerOutcome, NewAuthorization, Sandbox, SandboxOptions, SandboxServer, Scenario,
};
use chrono::Utc;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

struct Provider {
    base: String,
    sandbox: Sandbox,
    http: Client,
    _server: SandboxServer,
}

async fn start() -> Provider {
    start_with(SandboxOptions::default()).await
}

async fn start_with(options: SandboxOptions) -> Provider {
    let (base, sandbox, server) = sandbox::spawn(options).await.unwrap();
    Provider {
        base,
        sandbox,
        http: Client::new(),
        _server: server,
    }
}

impl Provider {
    /// Creates `pi_…` through the admin API, with an optional scenario.
    async fn authorize(&self, id: &str, amount: i64, scenario: Option<Value>) -> Value {
        let mut body = json!({"id": id, "amount": amount, "currency": "USD"});
        if let Some(s) = scenario {
            body["scenario"] = s;
        }
        let r = self
            .http
            .post(format!("{}/sandbox/authorizations", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }

    async fn capture(&self, id: &str, key: Option<&str>, params: &[(&str, &str)]) -> Response {
        self.capture_within(id, key, params, None).await.unwrap()
    }

    async fn capture_within(
        &self,
        id: &str,
        key: Option<&str>,
        params: &[(&str, &str)],
        timeout: Option<Duration>,
    ) -> reqwest::Result<Response> {
        let mut req = self
            .http
            .post(format!("{}/v1/payment_intents/{id}/capture", self.base))
            .form(params);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        req.send().await
    }

    async fn cancel(&self, id: &str, key: Option<&str>) -> Response {
        let mut req = self
            .http
            .post(format!("{}/v1/payment_intents/{id}/cancel", self.base))
            .form(&[("cancellation_reason", "abandoned")]);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        req.send().await.unwrap()
    }

    async fn payment_intent(&self, id: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/v1/payment_intents/{id}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    async fn ledger(&self, id: Option<&str>) -> Vec<Value> {
        let url = match id {
            Some(id) => format!("{}/sandbox/ledger?authorization_id={id}", self.base),
            None => format!("{}/sandbox/ledger", self.base),
        };
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn error_of(r: Response) -> Value {
    let body: Value = r.json().await.unwrap();
    body["error"].clone()
}

fn outcomes(ledger: &[Value]) -> Vec<&str> {
    ledger
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect()
}

fn money_moved(ledger: &[Value]) -> i64 {
    ledger
        .iter()
        .map(|e| e["captured_amount"].as_i64().unwrap())
        .sum()
}

#[tokio::test]
async fn partial_captures_draw_down_the_balance_and_a_final_capture_releases_the_rest() {
    let p = start().await;
    let created = p.authorize("pi_partial", 12455, None).await;
    assert_eq!(created["status"], "requires_capture");
    assert_eq!(created["currency"], "usd");
    assert_eq!(created["amount_capturable"], 12455);

    let r = p
        .capture(
            "pi_partial",
            Some("k1"),
            &[("amount_to_capture", "5000"), ("final_capture", "false")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(header(&r, "request-id").unwrap().starts_with("req_"));
    let pi: Value = r.json().await.unwrap();
    assert_eq!(pi["object"], "payment_intent");
    assert_eq!(pi["status"], "requires_capture");
    assert_eq!(pi["amount_received"], 5000);
    assert_eq!(pi["amount_capturable"], 7455);
    assert!(pi["latest_charge"].as_str().unwrap().starts_with("ch_"));

    let r = p
        .capture(
            "pi_partial",
            Some("k2"),
            &[
                ("amount_to_capture", "3000"),
                ("final_capture", "true"),
                ("metadata[shipment_id]", "S2"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let pi: Value = r.json().await.unwrap();
    assert_eq!(pi["status"], "succeeded");
    assert_eq!(pi["amount_received"], 8000);
    assert_eq!(pi["amount_capturable"], 0);
    assert_eq!(pi["metadata"]["shipment_id"], "S2");

    let r = p
        .capture("pi_partial", Some("k3"), &[("amount_to_capture", "1")])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(r).await["code"], "payment_intent_unexpected_state");
    assert_eq!(
        p.payment_intent("pi_partial").await["amount_received"],
        8000
    );

    let view = p.sandbox.authorization("pi_partial").unwrap();
    let captured: Vec<(i64, bool)> = view
        .captures
        .iter()
        .map(|c| (c.amount, c.is_final))
        .collect();
    assert_eq!(captured, vec![(5000, false), (3000, true)]);
}

#[tokio::test]
async fn a_capture_without_an_amount_takes_everything_capturable_and_is_final_by_default() {
    let p = start().await;
    p.authorize("pi_all", 900, None).await;
    let r = p.capture("pi_all", Some("k-all"), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let pi: Value = r.json().await.unwrap();
    assert_eq!(
        (
            &pi["amount_received"],
            &pi["amount_capturable"],
            &pi["status"]
        ),
        (&json!(900), &json!(0), &json!("succeeded"))
    );
}

#[tokio::test]
async fn a_replayed_key_returns_the_saved_response_and_moves_money_once() {
    let p = start().await;
    p.authorize("pi_replay", 10_000, None).await;
    let params = [("amount_to_capture", "2500"), ("final_capture", "false")];

    let first = p.capture("pi_replay", Some("key-A"), &params).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "idempotent-replayed"), None);
    let first_id = header(&first, "request-id").unwrap().to_owned();
    let first_body = first.text().await.unwrap();

    let again = p.capture("pi_replay", Some("key-A"), &params).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(header(&again, "idempotent-replayed"), Some("true"));
    assert_eq!(header(&again, "original-request"), Some(first_id.as_str()));
    assert_eq!(again.text().await.unwrap(), first_body);

    assert_eq!(p.payment_intent("pi_replay").await["amount_received"], 2500);
    let ledger = p.ledger(Some("pi_replay")).await;
    assert_eq!(outcomes(&ledger)[..2], ["captured", "replayed"]);
    assert_eq!(ledger[1]["replayed"], true);
    assert_eq!(money_moved(&ledger), 2500);
}

#[tokio::test]
async fn the_same_key_with_a_different_amount_is_an_idempotency_error_and_moves_nothing() {
    let p = start().await;
    p.authorize("pi_mismatch", 10_000, None).await;
    let ok = p
        .capture(
            "pi_mismatch",
            Some("key-B"),
            &[("amount_to_capture", "1000"), ("final_capture", "false")],
        )
        .await;
    assert_eq!(ok.status(), StatusCode::OK);

    for params in [
        [("amount_to_capture", "1001"), ("final_capture", "false")],
        [("amount_to_capture", "1000"), ("final_capture", "true")],
    ] {
        let r = p.capture("pi_mismatch", Some("key-B"), &params).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error_of(r).await["type"], "idempotency_error");
    }
    // The same key on another endpoint is refused too.
    let r = p.cancel("pi_mismatch", Some("key-B")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(r).await["type"], "idempotency_error");

    let pi = p.payment_intent("pi_mismatch").await;
    assert_eq!(pi["amount_received"], 1000);
    assert_eq!(pi["status"], "requires_capture");
    assert_eq!(money_moved(&p.ledger(Some("pi_mismatch")).await), 1000);
}

#[tokio::test]
async fn a_saved_server_error_replays_as_the_same_500_and_captures_nothing() {
    let p = start().await;
    p.authorize(
        "pi_500",
        5000,
        Some(json!({"faults": [{"kind": "server_error_saved"}]})),
    )
    .await;
    let params = [("amount_to_capture", "1200"), ("final_capture", "false")];

    let first = p.capture("pi_500", Some("key-500"), &params).await;
    assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(header(&first, "stripe-should-retry"), Some("false"));
    let first_body = first.text().await.unwrap();
    let error: Value = serde_json::from_str(&first_body).unwrap();
    assert_eq!(error["error"]["type"], "api_error");

    let again = p.capture("pi_500", Some("key-500"), &params).await;
    assert_eq!(again.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(header(&again, "stripe-should-retry"), Some("false"));
    assert_eq!(header(&again, "idempotent-replayed"), Some("true"));
    assert_eq!(again.text().await.unwrap(), first_body);

    let pi = p.payment_intent("pi_500").await;
    assert_eq!(pi["amount_received"], 0);
    assert_eq!(pi["amount_capturable"], 5000);
    assert_eq!(money_moved(&p.ledger(Some("pi_500")).await), 0);

    // A new key, after the lookup showed nothing moved, captures normally.
    let r = p.capture("pi_500", Some("key-500-next"), &params).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_capture_below_stripes_minimum_for_the_currency_is_refused_as_amount_too_small() {
    let p = start().await;
    p.authorize("pi_small", 5000, None).await;
    let r = p
        .capture(
            "pi_small",
            Some("k1"),
            &[("amount_to_capture", "30"), ("final_capture", "false")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(r).await["code"], "amount_too_small");
    assert_eq!(p.payment_intent("pi_small").await["amount_received"], 0);
    let r = p
        .capture(
            "pi_small",
            Some("k2"),
            &[("amount_to_capture", "50"), ("final_capture", "false")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "0.50 USD is the minimum");
}

#[tokio::test]
async fn the_second_capture_is_declined_when_the_scenario_says_so() {
    let p = start().await;
    p.authorize("pi_decline", 6000, Some(json!({"decline_on_capture": 2})))
        .await;
    let part = [("amount_to_capture", "2000"), ("final_capture", "false")];
    assert_eq!(
        p.capture("pi_decline", Some("d1"), &part).await.status(),
        StatusCode::OK
    );

    let r = p.capture("pi_decline", Some("d2"), &part).await;
    assert_eq!(r.status(), StatusCode::PAYMENT_REQUIRED);
    let error = error_of(r).await;
    assert_eq!(error["type"], "card_error");
    assert_eq!(error["code"], "card_declined");
    assert_eq!(error["decline_code"], "insufficient_funds");
    assert_eq!(error["payment_intent"]["amount_received"], 2000);

    // The decline is saved under its key, as Stripe saves it.
    let r = p.capture("pi_decline", Some("d2"), &part).await;
    assert_eq!(r.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(header(&r, "idempotent-replayed"), Some("true"));

    assert_eq!(
        p.payment_intent("pi_decline").await["amount_received"],
        2000
    );
    let ledger = p.ledger(Some("pi_decline")).await;
    assert_eq!(
        outcomes(&ledger),
        ["captured", "declined", "replayed", "read"]
    );
}

#[tokio::test]
async fn an_unavailable_answer_captures_nothing_and_the_same_key_succeeds_on_retry() {
    let p = start().await;
    p.authorize(
        "pi_503",
        4000,
        Some(json!({"faults": [{"kind": "unavailable"}]})),
    )
    .await;
    let params = [("amount_to_capture", "4000"), ("final_capture", "true")];

    let r = p.capture("pi_503", Some("key-503"), &params).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&r, "stripe-should-retry"), Some("true"));
    assert_eq!(p.payment_intent("pi_503").await["amount_received"], 0);

    let r = p.capture("pi_503", Some("key-503"), &params).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "idempotent-replayed"), None);
    let pi: Value = r.json().await.unwrap();
    assert_eq!(pi["amount_received"], 4000);
    assert_eq!(pi["status"], "succeeded");

    let ledger = p.ledger(Some("pi_503")).await;
    let captures: Vec<_> = ledger
        .iter()
        .filter(|e| e["path"].as_str().unwrap().ends_with("/capture"))
        .map(|e| {
            (
                e["http_status"].as_u64().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(captures, vec![(503, "error"), (200, "captured")]);
    assert_eq!(money_moved(&ledger), 4000);
}

#[tokio::test]
async fn a_rate_limited_request_says_when_to_retry_and_captures_nothing() {
    let p = start().await;
    p.authorize(
        "pi_429",
        4000,
        Some(json!({"faults": [{"kind": "rate_limited", "retry_after_secs": 2}]})),
    )
    .await;
    let r = p
        .capture("pi_429", Some("key-429"), &[("amount_to_capture", "100")])
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after"), Some("2"));
    assert_eq!(error_of(r).await["code"], "rate_limit");
    let r = p
        .capture("pi_429", Some("key-429"), &[("amount_to_capture", "100")])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(p.payment_intent("pi_429").await["amount_received"], 100);
}

#[tokio::test]
async fn a_lost_response_captures_the_money_and_the_retry_replays_the_success() {
    let p = start().await;
    p.authorize(
        "pi_lost",
        8000,
        Some(json!({"faults": [{"kind": "lost_response", "delay_ms": 800}]})),
    )
    .await;
    let params = [("amount_to_capture", "3000"), ("final_capture", "false")];

    let lost = p
        .capture_within(
            "pi_lost",
            Some("key-lost"),
            &params,
            Some(Duration::from_millis(200)),
        )
        .await;
    assert!(lost.unwrap_err().is_timeout());

    let pi = p.payment_intent("pi_lost").await;
    assert_eq!(pi["amount_received"], 3000);
    assert_eq!(pi["amount_capturable"], 5000);

    let r = p.capture("pi_lost", Some("key-lost"), &params).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "idempotent-replayed"), Some("true"));
    let replayed: Value = r.json().await.unwrap();
    assert_eq!(replayed["amount_received"], 3000);

    let ledger = p.ledger(Some("pi_lost")).await;
    assert_eq!(outcomes(&ledger), ["captured", "read", "replayed"]);
    assert_eq!(money_moved(&ledger), 3000);
}

#[tokio::test]
async fn a_timeout_fault_captures_nothing_even_though_the_client_gave_up() {
    let p = start().await;
    p.authorize(
        "pi_timeout",
        8000,
        Some(json!({"faults": [{"kind": "timeout", "delay_ms": 600}]})),
    )
    .await;
    let timed_out = p
        .capture_within(
            "pi_timeout",
            Some("key-timeout"),
            &[("amount_to_capture", "3000")],
            Some(Duration::from_millis(150)),
        )
        .await;
    assert!(timed_out.unwrap_err().is_timeout());
    assert_eq!(p.payment_intent("pi_timeout").await["amount_received"], 0);
    let ledger = p.ledger(Some("pi_timeout")).await;
    assert_eq!(ledger[0]["http_status"], 503);
    assert_eq!(money_moved(&ledger), 0);
}

#[tokio::test]
async fn a_concurrent_request_with_the_same_key_gets_idempotency_key_in_use() {
    let p = start().await;
    p.authorize("pi_race", 8000, Some(json!({"latency_ms": 500})))
        .await;
    let params = [("amount_to_capture", "1000"), ("final_capture", "false")];
    let (a, b) = tokio::join!(
        p.capture("pi_race", Some("key-race"), &params),
        p.capture("pi_race", Some("key-race"), &params),
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
    let conflict = if a.status() == StatusCode::CONFLICT {
        a
    } else {
        b
    };
    assert_eq!(error_of(conflict).await["code"], "idempotency_key_in_use");
    assert_eq!(money_moved(&p.ledger(Some("pi_race")).await), 1000);
}

#[tokio::test]
async fn capturing_more_than_is_capturable_is_refused_as_amount_too_large() {
    let p = start().await;
    p.authorize("pi_over", 1000, None).await;
    let r = p
        .capture("pi_over", Some("over"), &[("amount_to_capture", "1001")])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let error = error_of(r).await;
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["code"], "amount_too_large");
    assert_eq!(p.payment_intent("pi_over").await["amount_received"], 0);
}

#[tokio::test]
async fn bad_parameters_are_refused_in_stripes_shape_without_capturing() {
    let p = start().await;
    p.authorize("pi_bad", 1000, None).await;
    for (params, code) in [
        (
            vec![("amount_to_capture", "12.50")],
            "parameter_invalid_integer",
        ),
        (vec![("amount_to_capture", "0")], "amount_too_small"),
        (vec![("amount", "100")], "parameter_unknown"),
    ] {
        let r = p.capture("pi_bad", None, &params).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{params:?}");
        assert_eq!(error_of(r).await["code"], code);
    }
    assert_eq!(p.payment_intent("pi_bad").await["amount_received"], 0);
}

#[tokio::test]
async fn the_capture_limit_refuses_one_capture_too_many() {
    let p = start().await;
    p.sandbox
        .create_authorization(NewAuthorization {
            max_captures: Some(2),
            ..NewAuthorization::new("pi_limit", 1000, "EUR")
        })
        .unwrap();
    let part = [("amount_to_capture", "100"), ("final_capture", "false")];
    for key in ["l1", "l2"] {
        assert_eq!(
            p.capture("pi_limit", Some(key), &part).await.status(),
            StatusCode::OK
        );
    }
    let r = p.capture("pi_limit", Some("l3"), &part).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let error = error_of(r).await;
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["code"], "capture_limit_reached");
    assert!(error["message"].as_str().unwrap().contains("limit"));
    assert_eq!(p.payment_intent("pi_limit").await["amount_received"], 200);
}

#[tokio::test]
async fn an_expired_authorization_refuses_captures_and_reads_as_canceled() {
    let p = start().await;
    let expired = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let r = p
        .http
        .post(format!("{}/sandbox/authorizations", p.base))
        .json(
            &json!({"id": "pi_expired", "amount": 1000, "currency": "usd", "expires_at": expired}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let r = p
        .capture("pi_expired", Some("e1"), &[("amount_to_capture", "100")])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(r).await["code"], "charge_expired_for_capture");
    let pi = p.payment_intent("pi_expired").await;
    assert_eq!(pi["status"], "canceled");
    assert_eq!(pi["cancellation_reason"], "expired");
    assert_eq!(pi["amount_capturable"], 0);
}

#[tokio::test]
async fn cancel_releases_the_remainder_and_later_captures_are_refused() {
    let p = start().await;
    p.authorize("pi_cancel", 5000, None).await;
    let r = p
        .capture(
            "pi_cancel",
            Some("c1"),
            &[("amount_to_capture", "1500"), ("final_capture", "false")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    let r = p.cancel("pi_cancel", Some("cancel-1")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let pi: Value = r.json().await.unwrap();
    assert_eq!(pi["status"], "canceled");
    assert_eq!(pi["amount_capturable"], 0);
    assert_eq!(pi["amount_received"], 1500);
    assert_eq!(pi["cancellation_reason"], "abandoned");

    let again = p.cancel("pi_cancel", Some("cancel-1")).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(header(&again, "idempotent-replayed"), Some("true"));

    let r = p
        .capture("pi_cancel", Some("c2"), &[("amount_to_capture", "100")])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(r).await["code"], "payment_intent_unexpected_state");
    let ledger = p.ledger(Some("pi_cancel")).await;
    assert_eq!(
        outcomes(&ledger),
        ["captured", "released", "replayed", "error"]
    );
}

#[tokio::test]
async fn an_unknown_payment_intent_is_404_resource_missing() {
    let p = start().await;
    let r = p
        .capture("pi_nope", Some("n1"), &[("amount_to_capture", "1")])
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(header(&r, "request-id").is_some());
    let error = error_of(r).await;
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["code"], "resource_missing");

    let r = p
        .http
        .get(format!("{}/v1/payment_intents/pi_nope", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_of(r).await["code"], "resource_missing");

    let r = p
        .http
        .get(format!("{}/v1/charges", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(header(&r, "request-id").unwrap().starts_with("req_"));
    assert_eq!(error_of(r).await["type"], "invalid_request_error");
}

#[tokio::test]
async fn the_api_key_is_required_when_configured() {
    let p = start_with(SandboxOptions {
        api_key: Some("sk_test_sandbox".to_owned()),
        ..SandboxOptions::default()
    })
    .await;
    p.authorize("pi_auth", 1000, None).await;
    let url = format!("{}/v1/payment_intents/pi_auth", p.base);

    let r = p.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(r).await["type"], "invalid_request_error");

    let r = p
        .http
        .get(&url)
        .bearer_auth("sk_test_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(!r.text().await.unwrap().contains("sk_test_wrong"));

    let r = p
        .http
        .post(format!("{url}/capture"))
        .form(&[("amount_to_capture", "100")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = p
        .http
        .get(&url)
        .bearer_auth("sk_test_sandbox")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = p
        .http
        .get(&url)
        .basic_auth("sk_test_sandbox", None::<&str>)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        p.sandbox.authorization("pi_auth").unwrap().amount_received,
        0
    );
}

#[tokio::test]
async fn the_ledger_filters_by_authorization_and_keeps_arrival_order() {
    let p = start().await;
    p.authorize("pi_a", 1000, None).await;
    p.authorize("pi_b", 1000, None).await;
    p.capture(
        "pi_a",
        Some("a1"),
        &[("amount_to_capture", "100"), ("final_capture", "false")],
    )
    .await;
    p.capture("pi_b", Some("b1"), &[("amount_to_capture", "200")])
        .await;
    p.payment_intent("pi_a").await;

    let all = p.ledger(None).await;
    assert_eq!(all.len(), 3);
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    let a = p.ledger(Some("pi_a")).await;
    assert_eq!(outcomes(&a), ["captured", "read"]);
    assert_eq!(a[0]["method"], "POST");
    assert_eq!(a[0]["path"], "/v1/payment_intents/pi_a/capture");
    assert_eq!(a[0]["idempotency_key"], "a1");
    assert_eq!(a[0]["amount_to_capture"], 100);
    assert_eq!(a[0]["final_capture"], false);
    assert_eq!(a[0]["http_status"], 200);
    assert_eq!(a[0]["captured_amount"], 100);
    assert_eq!(a[1]["method"], "GET");

    let b = p.sandbox.ledger_for("pi_b");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].outcome, LedgerOutcome::Captured);
    assert_eq!(b[0].final_capture, None);
    assert_eq!(b[0].captured_amount, 200);
}

#[tokio::test]
async fn the_admin_api_creates_idempotently_and_refuses_a_conflicting_authorization() {
    let p = start().await;
    let body = json!({"id": "pi_admin", "amount": 700, "currency": "USD", "max_captures": 5});
    let url = format!("{}/sandbox/authorizations", p.base);
    let r = p.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = p.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut different = body.clone();
    different["amount"] = json!(701);
    let r = p.http.post(&url).json(&different).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = p
        .http
        .post(&url)
        .json(&json!({"id": "pi_neg", "amount": -1, "currency": "USD"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = p
        .http
        .post(&url)
        .json(&json!({"id": "pi_cur", "amount": 1, "currency": "ZZZ"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let r = p
        .http
        .put(format!("{url}/pi_admin/scenario"))
        .json(&json!({"faults": [{"kind": "unavailable"}], "decline_code": "do_not_honor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = p
        .http
        .put(format!("{url}/pi_admin/scenario"))
        .json(&json!({"faults": [{"kind": "explode"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    p.capture(
        "pi_admin",
        Some("adm-1"),
        &[("amount_to_capture", "300"), ("final_capture", "false")],
    )
    .await;
    p.capture(
        "pi_admin",
        Some("adm-1"),
        &[("amount_to_capture", "300"), ("final_capture", "false")],
    )
    .await;
    let view: Value = p
        .http
        .get(format!("{url}/pi_admin"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["object"], "payment_intent");
    assert_eq!(view["amount_received"], 300);
    assert_eq!(view["captures"].as_array().unwrap().len(), 1);
    assert_eq!(view["captures"][0]["amount"], 300);
    assert_eq!(view["captures"][0]["final"], false);
    assert_eq!(view["captures"][0]["idempotency_key"], "adm-1");
    assert!(view["captures"][0]["at"].is_string());

    let r = p
        .http
        .post(format!("{}/sandbox/reset", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(p.sandbox.authorization("pi_admin").is_none());
    assert!(p.sandbox.ledger().is_empty());
}

#[tokio::test]
async fn scenarios_set_from_rust_take_effect_on_the_next_capture() {
    let p = start().await;
    p.authorize("pi_direct", 3000, None).await;
    p.sandbox
        .set_scenario(
            "pi_direct",
            Scenario {
                faults: vec![Fault::ServerErrorSaved],
                ..Scenario::default()
            },
        )
        .unwrap();
    let r = p
        .capture("pi_direct", Some("x1"), &[("amount_to_capture", "10")])
        .await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        p.sandbox
            .set_scenario("pi_missing", Scenario::default())
            .is_err()
    );
}

// ---------------------------------------------------------------------------------------
// The other dialects, over the same model.

/// POSTs a JSON body to a dialect path with the headers given; returns (status, body).
async fn post_json(
    p: &Provider,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (StatusCode, Value) {
    let mut request = p.http.post(format!("{}{path}", p.base)).json(&body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let r = request.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn each_dialect_replays_an_idempotent_request_and_moves_the_money_once() {
    let p = start().await;
    for id in ["gr-1", "ad-1", "ck-1", "pp-1"] {
        p.authorize(id, 10_000, None).await;
    }
    let cases: [(&str, &str, &str, Value); 4] = [
        (
            "gr-1",
            "/gr4vy/transactions/gr-1/capture",
            "idempotency-key",
            json!({"amount": 2500, "final": false}),
        ),
        (
            "ad-1",
            "/adyen/v71/payments/ad-1/captures",
            "idempotency-key",
            json!({"merchantAccount": "M", "amount": {"currency": "USD", "value": 2500}, "reference": "O/S1"}),
        ),
        (
            "ck-1",
            "/checkout/payments/ck-1/captures",
            "cko-idempotency-key",
            json!({"amount": 2500, "capture_type": "NonFinal", "reference": "O/S1"}),
        ),
        (
            "pp-1",
            "/paypal/v2/payments/authorizations/pp-1/capture",
            "paypal-request-id",
            json!({"amount": {"currency_code": "USD", "value": "25.00"}, "invoice_id": "O/S1", "final_capture": false}),
        ),
    ];
    for (id, path, header, body) in cases {
        let first = post_json(&p, path, &[(header, "key-1")], body.clone()).await;
        let again = post_json(&p, path, &[(header, "key-1")], body.clone()).await;
        assert!(first.0.is_success(), "{id}: {first:?}");
        assert_eq!(first, again, "{id}: the same key replays the same answer");
        let other = post_json(&p, path, &[(header, "key-1")], json!({"amount": 1})).await;
        assert!(
            other.0.is_client_error(),
            "{id}: the key with other parameters is refused: {other:?}"
        );
        // Asynchronous dialects settle at once by default; reading settles what is due.
        let a = p.sandbox.authorization(id).unwrap();
        assert_eq!(
            (a.amount_received, a.captures.len()),
            (2500, 1),
            "{id}: money moved once"
        );
        assert!(p.sandbox.ledger_for(id).iter().any(|e| e.replayed), "{id}");
    }
}

/// The four keyed dialects' capture requests, each on its own authorization `<prefix>-<n>`.
fn keyed_captures(prefix: &str) -> [(String, String, &'static str, Value); 4] {
    let id = |n: &str| format!("{prefix}-{n}");
    [
        (
            id("gr"),
            format!("/gr4vy/transactions/{}/capture", id("gr")),
            "idempotency-key",
            json!({"amount": 2500, "final": false}),
        ),
        (
            id("ad"),
            format!("/adyen/v71/payments/{}/captures", id("ad")),
            "idempotency-key",
            json!({"merchantAccount": "M", "amount": {"currency": "USD", "value": 2500}, "reference": "O/S1"}),
        ),
        (
            id("ck"),
            format!("/checkout/payments/{}/captures", id("ck")),
            "cko-idempotency-key",
            json!({"amount": 2500, "capture_type": "NonFinal", "reference": "O/S1"}),
        ),
        (
            id("pp"),
            format!("/paypal/v2/payments/authorizations/{}/capture", id("pp")),
            "paypal-request-id",
            json!({"amount": {"currency_code": "USD", "value": "25.00"}, "invoice_id": "O/S1", "final_capture": false}),
        ),
    ]
}

#[tokio::test]
async fn a_5xx_stored_before_the_capture_executed_is_replayed_by_the_dialects_that_store_errors() {
    let p = start().await;
    let fault = json!({"faults": [{"kind": "stored_error_before_capture"}]});
    for (id, path, header, body) in keyed_captures("sb") {
        p.authorize(&id, 10_000, Some(fault.clone())).await;
        let first = post_json(&p, &path, &[(header, "key-1")], body.clone()).await;
        let again = post_json(&p, &path, &[(header, "key-1")], body.clone()).await;
        assert_eq!(first.0, StatusCode::INTERNAL_SERVER_ERROR, "{id}");
        if id.ends_with("-ck") {
            // Checkout.com saves no 5xx: the key executes the next request.
            assert!(again.0.is_success(), "{id}: {again:?}");
            assert_eq!(p.sandbox.authorization(&id).unwrap().amount_received, 2500);
        } else {
            assert_eq!(
                first, again,
                "{id}: every same-key request gets the stored 500"
            );
            assert_eq!(
                p.sandbox.authorization(&id).unwrap().amount_received,
                0,
                "{id}: nothing captured"
            );
            // A new key captures normally.
            let next = post_json(&p, &path, &[(header, "key-2")], body).await;
            assert!(next.0.is_success(), "{id}: {next:?}");
        }
    }
    // Stripe: the stored 500 (no Stripe-Should-Retry), then its marked replay.
    p.authorize("pi_stored_before", 5000, Some(fault)).await;
    let params = [("amount_to_capture", "1200"), ("final_capture", "false")];
    let first = p.capture("pi_stored_before", Some("k"), &params).await;
    assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(header(&first, "stripe-should-retry"), None);
    let again = p.capture("pi_stored_before", Some("k"), &params).await;
    assert_eq!(again.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(header(&again, "idempotent-replayed"), Some("true"));
    assert_eq!(
        p.payment_intent("pi_stored_before").await["amount_received"],
        0
    );
}

#[tokio::test]
async fn a_5xx_stored_after_the_capture_executed_hides_a_capture_that_happened() {
    let p = start().await;
    let fault = json!({"faults": [{"kind": "stored_error_after_capture"}]});
    for (id, path, header, body) in keyed_captures("sa") {
        p.authorize(&id, 10_000, Some(fault.clone())).await;
        let first = post_json(&p, &path, &[(header, "key-1")], body.clone()).await;
        assert_eq!(first.0, StatusCode::INTERNAL_SERVER_ERROR, "{id}");
        assert_eq!(
            p.sandbox.authorization(&id).unwrap().amount_received,
            2500,
            "{id}: the money moved"
        );
        let again = post_json(&p, &path, &[(header, "key-1")], body).await;
        if id.ends_with("-ck") {
            // Checkout.com saves no 5xx and processes the key again: a resend under the
            // same key captures twice, which is why the worker reads back first.
            assert!(again.0.is_success(), "{id}: {again:?}");
        } else {
            assert_eq!(first, again, "{id}: the stored 500 hides the capture");
            assert_eq!(p.sandbox.authorization(&id).unwrap().captures.len(), 1);
        }
    }
    p.authorize("pi_stored_after", 5000, Some(fault)).await;
    let params = [("amount_to_capture", "1200"), ("final_capture", "false")];
    let first = p.capture("pi_stored_after", Some("k"), &params).await;
    assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let again = p.capture("pi_stored_after", Some("k"), &params).await;
    assert_eq!(header(&again, "idempotent-replayed"), Some("true"));
    let pi = p.payment_intent("pi_stored_after").await;
    assert_eq!(pi["amount_received"], 1200, "captured once, under the 500s");
}

#[tokio::test]
async fn paypal_refuses_decimals_for_currencies_it_takes_without_them() {
    let p = start().await;
    let authorize = |id: &'static str, currency: &'static str| {
        p.sandbox
            .create_authorization(NewAuthorization::new(id, 1_000_000, currency))
            .unwrap();
    };
    authorize("pp-huf", "HUF");
    authorize("pp-usd", "USD");
    let capture = |id: &str, currency: &str, value: &str| json!({"amount": {"currency_code": currency, "value": value}, "invoice_id": format!("O/{id}/{value}"), "final_capture": false});
    let path = |id: &str| format!("/paypal/v2/payments/authorizations/{id}/capture");
    let (status, body) = post_json(
        &p,
        &path("pp-huf"),
        &[],
        capture("pp-huf", "HUF", "7205.00"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["details"][0]["issue"], "DECIMALS_NOT_SUPPORTED",
        "{body}"
    );
    assert_eq!(
        p.sandbox.authorization("pp-huf").unwrap().amount_received,
        0
    );
    let (status, body) =
        post_json(&p, &path("pp-huf"), &[], capture("pp-huf", "HUF", "7205")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["amount"]["value"], "7205");
    assert_eq!(
        p.sandbox.authorization("pp-huf").unwrap().amount_received,
        720_500
    );
    let (status, _) = post_json(&p, &path("pp-usd"), &[], capture("pp-usd", "USD", "72.05")).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn checkout_refuses_a_three_decimal_amount_whose_last_digit_is_not_0() {
    let p = start().await;
    for (id, currency) in [("ck-kwd", "KWD"), ("ck-usd", "USD")] {
        p.sandbox
            .create_authorization(NewAuthorization::new(id, 100_000, currency))
            .unwrap();
    }
    let capture = |amount: i64| json!({"amount": amount, "capture_type": "NonFinal", "reference": format!("O/{amount}")});
    let path = |id: &str| format!("/checkout/payments/{id}/captures");
    let (status, body) = post_json(&p, &path("ck-kwd"), &[], capture(7205)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error_codes"][0], "amount_invalid", "{body}");
    assert_eq!(
        p.sandbox.authorization("ck-kwd").unwrap().amount_received,
        0
    );
    let (status, body) = post_json(&p, &path("ck-kwd"), &[], capture(7200)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = post_json(&p, &path("ck-usd"), &[], capture(7205)).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "two decimals take any last digit: {body}"
    );
}

#[tokio::test]
async fn hellgate_takes_one_capture_and_the_orchestrator_follow_ons_only_where_allowed() {
    let p = start().await;
    p.authorize("hg-1", 10_000, None).await;
    let capture = json!({"amount": 4000, "currency_code": "USD", "reference": "O/S1"});
    let (status, payment) =
        post_json(&p, "/hellgate/payments/hg-1/capture", &[], capture.clone()).await;
    assert_eq!(
        (status.as_u16(), payment["status"].as_str()),
        (200, Some("capturing"))
    );
    let (status, _) = post_json(&p, "/hellgate/payments/hg-1/capture", &[], capture).await;
    assert_eq!(
        status.as_u16(),
        409,
        "Hellgate does not support multiple captures"
    );
    let read: Value = p
        .http
        .get(format!("{}/hellgate/payments/hg-1", p.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["status"], "captured");
    assert_eq!(read["amount"]["captured"], 4000);

    let mut single = NewAuthorization::new("txn_one", 10_000, "USD");
    single.max_captures = Some(1);
    p.sandbox.create_authorization(single).unwrap();
    let body = json!({"type": "capture", "transactionId": "txn_one", "amount": 3000});
    let (status, txn) = post_json(&p, "/orchestrator/v1/transactions", &[], body.clone()).await;
    assert_eq!(status.as_u16(), 201);
    assert_eq!(
        (
            txn["type"].as_str(),
            txn["originalTransactionId"].as_str(),
            txn["authorization"]["status"].as_str()
        ),
        (Some("capture"), Some("txn_one"), Some("A"))
    );
    let (status, _) = post_json(&p, "/orchestrator/v1/transactions", &[], body).await;
    assert_eq!(
        status.as_u16(),
        422,
        "no follow-on capture on this connection"
    );
}

#[tokio::test]
async fn a_dialect_refuses_requests_without_its_credentials() {
    let p = start_with(SandboxOptions {
        latency: Duration::ZERO,
        api_key: Some("sk_dialects".into()),
    })
    .await;
    p.authorize("any", 10_000, None).await;
    for (path, body) in [
        ("/gr4vy/transactions/any/capture", json!({"amount": 1})),
        (
            "/adyen/v71/payments/any/captures",
            json!({"merchantAccount": "M", "amount": {"currency": "USD", "value": 1}}),
        ),
        ("/checkout/payments/any/captures", json!({"amount": 1})),
        ("/paypal/v2/payments/authorizations/any/capture", json!({})),
        ("/hellgate/payments/any/capture", json!({})),
        (
            "/orchestrator/v1/transactions",
            json!({"type": "capture", "transactionId": "any"}),
        ),
    ] {
        let (status, _) = post_json(&p, path, &[], body).await;
        assert_eq!(status.as_u16(), 401, "{path}");
    }
    assert_eq!(p.sandbox.authorization("any").unwrap().amount_received, 0);
}

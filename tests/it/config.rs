//! Settings load in layers: default.toml → {env}.toml → CAPTURE__SECTION__KEY.

use std::path::Path;

use capture_worker::config::{LogFormat, Settings};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn defaults_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let default =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml"))
            .unwrap();
    write(dir.path(), "default.toml", &default);
    dir
}

fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn shipped_defaults_run_against_local_services_and_the_sandbox() {
    let s = Settings::load_from(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config")),
        None,
        vec![],
    )
    .unwrap();
    assert_eq!(s.amqp.exchange, "fulfillment");
    assert_eq!(s.amqp.queue, "capture-worker");
    assert!(s.database.url.expose().contains("127.0.0.1"));
    assert!(s.providers.contains_key("sandbox"));
    assert_eq!(
        s.telemetry.otlp_endpoint, None,
        "an empty endpoint means traces off"
    );
}

#[test]
fn environment_file_overrides_default_and_env_vars_override_both() {
    let dir = defaults_dir();
    write(
        dir.path(),
        "staging.toml",
        "[amqp]\nqueue = \"from-file\"\nprefetch = 8\n[telemetry]\nlog_format = \"text\"\n",
    );
    let s = Settings::load_from(
        dir.path(),
        Some("staging"),
        vars(&[("CAPTURE__AMQP__QUEUE", "from-env")]),
    )
    .unwrap();
    assert_eq!(s.amqp.queue, "from-env");
    assert_eq!(s.amqp.prefetch, 8);
    assert_eq!(s.telemetry.log_format, LogFormat::Text);
    assert_eq!(s.amqp.exchange, "fulfillment");
}

#[test]
fn nested_provider_keys_are_overridden_from_the_environment() {
    let dir = defaults_dir();
    let s = Settings::load_from(
        dir.path(),
        None,
        vars(&[
            (
                "CAPTURE__PROVIDERS__STRIPE__BASE_URL",
                "http://127.0.0.1:9999",
            ),
            ("CAPTURE__PROVIDERS__STRIPE__API_KEY", "sk_test_007"),
            (
                "CAPTURE__PROVIDERS__SANDBOX__BASE_URL",
                "http://127.0.0.1:7777",
            ),
            ("CAPTURE__DATABASE__MAX_CONNECTIONS", "32"),
        ]),
    )
    .unwrap();
    let stripe = &s.providers["stripe"];
    assert_eq!(stripe.base_url, "http://127.0.0.1:9999");
    assert_eq!(
        stripe.api_key.as_ref().unwrap().expose(),
        "sk_test_007",
        "string values are never reparsed as numbers"
    );
    assert_eq!(s.providers["sandbox"].base_url, "http://127.0.0.1:7777");
    assert_eq!(s.database.max_connections, 32);
}

#[test]
fn a_single_underscore_after_the_prefix_is_not_an_override() {
    let dir = defaults_dir();
    let s = Settings::load_from(
        dir.path(),
        None,
        vars(&[
            ("CAPTURE_AMQP__QUEUE", "ignored"),
            ("OTHER__AMQP__QUEUE", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(s.amqp.queue, "capture-worker");
}

#[test]
fn a_wrongly_typed_value_fails_with_the_key_named() {
    let dir = defaults_dir();
    let err = Settings::load_from(
        dir.path(),
        None,
        vars(&[("CAPTURE__AMQP__PREFETCH", "many")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("prefetch"), "{err}");
}

#[test]
fn unknown_keys_are_rejected_rather_than_silently_ignored() {
    let dir = defaults_dir();
    write(dir.path(), "typo.toml", "[amqp]\nqeueu = \"x\"\n");
    let err = Settings::load_from(dir.path(), Some("typo"), vec![])
        .unwrap_err()
        .to_string();
    assert!(err.contains("qeueu"), "{err}");
}

#[test]
fn secrets_never_print_in_debug_or_json() {
    let dir = defaults_dir();
    let s = Settings::load_from(
        dir.path(),
        None,
        vars(&[
            ("CAPTURE__DATABASE__URL", "postgres://u:hunter2@db/x"),
            ("CAPTURE__AMQP__URL", "amqp://u:hunter3@mq"),
            (
                "CAPTURE__PROVIDERS__STRIPE__BASE_URL",
                "https://api.stripe.com",
            ),
            ("CAPTURE__PROVIDERS__STRIPE__API_KEY", "sk_live_canary"),
        ]),
    )
    .unwrap();
    let debug = format!("{s:?}");
    let json = serde_json::to_string(&s).unwrap();
    for text in [debug, json] {
        for secret in ["hunter2", "hunter3", "sk_live_canary"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("[redacted]"));
    }
}

#[test]
fn api_key_can_come_from_a_file() {
    let dir = defaults_dir();
    let key_file = dir.path().join("stripe_key");
    std::fs::write(&key_file, "sk_test_fromfile\n").unwrap();
    let s = Settings::load_from(
        dir.path(),
        None,
        vars(&[
            (
                "CAPTURE__PROVIDERS__STRIPE__BASE_URL",
                "https://api.stripe.com",
            ),
            (
                "CAPTURE__PROVIDERS__STRIPE__API_KEY_FILE",
                key_file.to_str().unwrap(),
            ),
        ]),
    )
    .unwrap();
    let key = s.providers["stripe"].resolve_api_key().unwrap().unwrap();
    assert_eq!(key.expose(), "sk_test_fromfile");
}

#[test]
fn async_outcome_settings_default_and_the_sandbox_notification_targets_parse() {
    let dir = defaults_dir();
    // An overlay written before these settings existed still loads, with their defaults.
    let mut default = std::fs::read_to_string(dir.path().join("default.toml")).unwrap();
    default = default
        .lines()
        .filter(|l| !l.starts_with("notification_wait_ms") && !l.starts_with("expiry_sweep_ms"))
        .collect::<Vec<_>>()
        .join("\n");
    write(dir.path(), "default.toml", &default);
    write(
        dir.path(),
        "local.toml",
        "[sandbox.notifications.adyen]\nurl = \"http://127.0.0.1:8080/webhooks/adyen\"\nsecret = \"44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056\"\n",
    );
    let s = Settings::load_from(dir.path(), Some("local"), vec![]).unwrap();
    assert_eq!(s.capture.notification_wait_ms, 30_000);
    assert_eq!(s.capture.expiry_sweep_ms, 60_000);
    let adyen = &s.sandbox.notifications["adyen"];
    assert_eq!(adyen.url, "http://127.0.0.1:8080/webhooks/adyen");
    assert!(adyen.secret.is_some());
    assert!(!format!("{s:?}").contains("44782DEF"));
}

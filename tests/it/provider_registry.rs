//! The provider registry: `providers.<name>` picks its adapter by `kind` (default: the name),
//! so one worker serves many providers and accounts, each with its own settings and secret.

use std::path::Path;

use capture_worker::app::providers::{AdapterKind, Providers};
use capture_worker::config::Settings;
use capture_worker::domain::*;

/// Settings from the shipped defaults plus `extra` TOML and `vars` environment overrides.
fn settings(extra: &str, vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
    let dir = tempfile::tempdir().unwrap();
    let default =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml"))
            .unwrap();
    std::fs::write(dir.path().join("default.toml"), default).unwrap();
    std::fs::write(dir.path().join("multi.toml"), extra).unwrap();
    let vars = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>();
    Ok(Settings::load_from(dir.path(), Some("multi"), vars)?)
}

const EVERY_PROVIDER: &str = r#"
[providers.stripe]
base_url = "https://api.stripe.com"

[providers.gr4vy]
base_url = "https://api.sandbox.acme.gr4vy.app"
merchant_account = "default"

[providers.acme_adyen]
kind = "adyen"
base_url = "https://checkout-test.adyen.com/v71"
merchant_account = "AcmeShopEU"

[providers.checkout]
base_url = "https://api.sandbox.checkout.com"

[providers.paypal]
base_url = "https://api-m.sandbox.paypal.com"
client_id = "AcmeClientId01"

[providers.hellgate]
base_url = "https://sandbox.hellgate.io"

[providers.orchestrator]
base_url = "https://api.orchestrator.example"

[providers.orchestrator_multi]
kind = "orchestrator"
base_url = "https://api.orchestrator.example"
max_captures = 10
"#;

#[test]
fn one_worker_builds_an_adapter_for_every_provider_each_with_its_own_rules() {
    let s = settings(
        EVERY_PROVIDER,
        &[
            ("CAPTURE__PROVIDERS__ACME_ADYEN__API_KEY", "AQE_adyen_key"),
            ("CAPTURE__PROVIDERS__PAYPAL__API_KEY", "paypal_secret"),
        ],
    )
    .unwrap();

    let providers = Providers::from_settings(&s).unwrap();

    assert_eq!(
        providers.names(),
        vec![
            "acme_adyen",
            "checkout",
            "gr4vy",
            "hellgate",
            "orchestrator",
            "orchestrator_multi",
            "paypal",
            "sandbox",
            "stripe"
        ]
    );
    let caps = |name: &str| providers.get(name).unwrap().capabilities();
    assert_eq!(caps("stripe"), Capabilities::stripe());
    assert_eq!(caps("sandbox"), Capabilities::stripe());
    assert_eq!(caps("gr4vy"), Capabilities::gr4vy());
    assert_eq!(caps("acme_adyen"), Capabilities::adyen());
    assert_eq!(caps("checkout"), Capabilities::checkout());
    assert_eq!(caps("paypal"), Capabilities::paypal());
    assert_eq!(caps("hellgate"), Capabilities::hellgate());
    assert_eq!(caps("orchestrator").mode, CaptureMode::Single);
    assert_eq!(
        caps("orchestrator_multi").mode,
        CaptureMode::Multiple {
            max_captures: Some(10)
        }
    );
    assert_eq!(providers.get("acme_adyen").unwrap().name(), "acme_adyen");
}

#[test]
fn the_kind_defaults_to_the_name_and_unknown_kinds_are_refused() {
    let unknown_kind = settings(
        "[providers.acme]\nkind = \"worldpay\"\nbase_url = \"https://x.example\"\n",
        &[],
    )
    .unwrap();
    let unknown_name =
        settings("[providers.acme]\nbase_url = \"https://x.example\"\n", &[]).unwrap();

    let by_kind = Providers::from_settings(&unknown_kind)
        .err()
        .unwrap()
        .to_string();
    let by_name = Providers::from_settings(&unknown_name)
        .err()
        .unwrap()
        .to_string();

    assert!(
        by_kind.contains("worldpay") && by_kind.contains(AdapterKind::KNOWN),
        "{by_kind}"
    );
    assert!(by_name.contains("set kind"), "{by_name}");
    assert_eq!(AdapterKind::parse("sandbox"), Some(AdapterKind::Stripe));
}

#[test]
fn settings_that_do_not_apply_to_the_kind_are_refused_not_ignored() {
    for (extra, setting) in [
        (
            "[providers.checkout]\nbase_url = \"https://x.example\"\nmerchant_account = \"m\"\n",
            "merchant_account",
        ),
        (
            "[providers.hellgate]\nbase_url = \"https://x.example\"\nclient_id = \"c\"\n",
            "client_id",
        ),
        (
            "[providers.gr4vy]\nbase_url = \"https://x.example\"\nmax_captures = 3\n",
            "max_captures",
        ),
    ] {
        let s = settings(extra, &[]).unwrap();

        let error = Providers::from_settings(&s).err().unwrap().to_string();

        assert!(error.contains(setting), "{error}");
    }
}

#[test]
fn required_per_provider_settings_are_named_when_missing() {
    let adyen = settings(
        "[providers.adyen]\nbase_url = \"https://checkout-test.adyen.com/v71\"\n",
        &[],
    )
    .unwrap();
    let paypal = settings(
        "[providers.paypal]\nbase_url = \"https://api-m.sandbox.paypal.com\"\nclient_id = \"c\"\n",
        &[],
    )
    .unwrap();

    let adyen = Providers::from_settings(&adyen).err().unwrap().to_string();
    let paypal = Providers::from_settings(&paypal).err().unwrap().to_string();

    assert!(
        adyen.contains("providers.adyen") && adyen.contains("merchant_account"),
        "{adyen}"
    );
    assert!(paypal.contains("api_key"), "{paypal}");
}

#[test]
fn a_providers_secret_can_come_from_a_file_and_never_prints() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("checkout_key");
    std::fs::write(&key_file, "sk_sbox_from_file_canary\n").unwrap();
    let s = settings(
        "[providers.cko_uk]\nkind = \"checkout\"\nbase_url = \"https://api.sandbox.checkout.com\"\n",
        &[(
            "CAPTURE__PROVIDERS__CKO_UK__API_KEY_FILE",
            key_file.to_str().unwrap(),
        )],
    )
    .unwrap();

    let key = s.providers["cko_uk"].resolve_api_key().unwrap().unwrap();
    let providers = Providers::from_settings(&s).unwrap();

    assert_eq!(key.expose(), "sk_sbox_from_file_canary");
    assert_eq!(
        providers.get("cko_uk").unwrap().capabilities(),
        Capabilities::checkout()
    );
    assert!(!format!("{s:?}").contains("canary"));
}

#[test]
fn a_webhook_secret_is_taken_only_where_notifications_are_signed_with_one() {
    for (extra, ok) in [
        (
            "[providers.adyen]\nbase_url = \"https://checkout-test.adyen.com/v71\"\nmerchant_account = \"m\"\nwebhook_secret = \"44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056\"\n",
            true,
        ),
        (
            "[providers.gr4vy]\nbase_url = \"https://x.example\"\nwebhook_secret = \"s\"\n",
            true,
        ),
        (
            "[providers.checkout]\nbase_url = \"https://x.example\"\nwebhook_secret = \"s\"\n",
            true,
        ),
        (
            "[providers.stripe]\nbase_url = \"https://x.example\"\nwebhook_secret = \"s\"\n",
            false,
        ),
        (
            "[providers.paypal]\nbase_url = \"https://x.example\"\nwebhook_secret = \"s\"\n",
            false,
        ),
        // Adyen's HMAC key is hex.
        (
            "[providers.adyen]\nbase_url = \"https://checkout-test.adyen.com/v71\"\nmerchant_account = \"m\"\nwebhook_secret = \"not hex\"\n",
            false,
        ),
    ] {
        let s = settings(extra, &[]).unwrap();

        let built = Providers::from_settings(&s);

        match built {
            Ok(_) => assert!(ok, "{extra}"),
            Err(e) => {
                assert!(!ok, "{extra}: {e}");
                assert!(e.to_string().contains("webhook_secret"), "{e}");
            }
        }
    }
}

#[test]
fn a_webhook_secret_comes_from_the_environment_or_a_file_and_never_prints() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gr4vy_webhook");
    std::fs::write(&file, "whsec_from_file_canary\n").unwrap();
    let s = settings(
        "[providers.gr4vy]\nbase_url = \"https://x.example\"\n[providers.checkout]\nbase_url = \"https://y.example\"\n",
        &[
            ("CAPTURE__PROVIDERS__GR4VY__WEBHOOK_SECRET_FILE", file.to_str().unwrap()),
            ("CAPTURE__PROVIDERS__CHECKOUT__WEBHOOK_SECRET", "cko_env_canary"),
        ],
    )
    .unwrap();

    let gr4vy = s.providers["gr4vy"]
        .resolve_webhook_secret()
        .unwrap()
        .unwrap();
    let checkout = s.providers["checkout"]
        .resolve_webhook_secret()
        .unwrap()
        .unwrap();
    let providers = Providers::from_settings(&s).unwrap();

    assert_eq!(gr4vy.expose(), "whsec_from_file_canary");
    assert_eq!(checkout.expose(), "cko_env_canary");
    assert!(!format!("{s:?}").contains("canary"));
    assert!(!serde_json::to_string(&s).unwrap().contains("canary"));
    assert!(!format!("{:?}", providers.names()).contains("canary"));
}

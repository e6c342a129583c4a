//! The providers this worker can call, built from `providers.<name>` settings.
//!
//! Each entry's `kind` (default: its name) picks the adapter, so one worker serves orders of
//! many providers and accounts at once, chosen by the order's `payment.provider`. Settings
//! that do not apply to an entry's kind are refused rather than ignored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ProviderSettings, Settings};
use crate::domain::{Capabilities, ProviderName};
use crate::provider::PaymentProvider;
use crate::provider::adyen::AdyenProvider;
use crate::provider::checkout::CheckoutProvider;
use crate::provider::gr4vy::Gr4vyProvider;
use crate::provider::hellgate::HellgateProvider;
use crate::provider::orchestrator::OrchestratorProvider;
use crate::provider::paypal::PayPalProvider;
use crate::provider::stripe::StripeProvider;

use crate::domain::CapabilityLookup;

/// The adapters a `providers.<name>.kind` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterKind {
    /// Stripe, or the built-in sandbox (which speaks Stripe's dialect).
    Stripe,
    Gr4vy,
    Adyen,
    Checkout,
    PayPal,
    Hellgate,
    Orchestrator,
}

impl AdapterKind {
    pub const KNOWN: &'static str =
        "stripe, sandbox, gr4vy, adyen, checkout, paypal, hellgate, orchestrator";

    pub fn parse(kind: &str) -> Option<AdapterKind> {
        match kind {
            "stripe" | "sandbox" => Some(AdapterKind::Stripe),
            "gr4vy" => Some(AdapterKind::Gr4vy),
            "adyen" => Some(AdapterKind::Adyen),
            "checkout" => Some(AdapterKind::Checkout),
            "paypal" => Some(AdapterKind::PayPal),
            "hellgate" => Some(AdapterKind::Hellgate),
            "orchestrator" => Some(AdapterKind::Orchestrator),
            _ => None,
        }
    }

    /// The kind of the entry `providers.<name>`: its `kind`, else its name.
    pub fn of(name: &str, settings: &ProviderSettings) -> anyhow::Result<AdapterKind> {
        let kind = settings.kind.as_deref().unwrap_or(name);
        AdapterKind::parse(kind).ok_or_else(|| match &settings.kind {
            Some(kind) => anyhow::anyhow!(
                "providers.{name}.kind = {kind:?} is not an adapter; known kinds are {}",
                AdapterKind::KNOWN
            ),
            None => anyhow::anyhow!(
                "providers.{name}: no adapter is called {name:?}; set kind to one of {}",
                AdapterKind::KNOWN
            ),
        })
    }
}

/// Provider adapters by configured name.
#[derive(Clone, Default)]
pub struct Providers {
    by_name: Arc<HashMap<String, Arc<dyn PaymentProvider>>>,
}

impl Providers {
    /// Builds one adapter per configured provider.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Providers> {
        let timeout = Duration::from_millis(settings.capture.provider_timeout_ms);
        let mut by_name: HashMap<String, Arc<dyn PaymentProvider>> = HashMap::new();
        for (name, p) in &settings.providers {
            let adapter = build(name, p, timeout)?;
            by_name.insert(name.clone(), adapter);
        }
        Ok(Providers {
            by_name: Arc::new(by_name),
        })
    }

    /// A registry of the given adapters (tests, embedding).
    pub fn from_adapters(adapters: Vec<Arc<dyn PaymentProvider>>) -> Providers {
        Providers {
            by_name: Arc::new(
                adapters
                    .into_iter()
                    .map(|a| (a.name().to_owned(), a))
                    .collect(),
            ),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn PaymentProvider>> {
        self.by_name.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_name.keys().cloned().collect();
        v.sort();
        v
    }
}

impl CapabilityLookup for Providers {
    fn capabilities(&self, provider: &str) -> Option<Capabilities> {
        self.by_name.get(provider).map(|p| p.capabilities())
    }
}

/// The adapter for `providers.<name>`.
fn build(
    name: &str,
    p: &ProviderSettings,
    timeout: Duration,
) -> anyhow::Result<Arc<dyn PaymentProvider>> {
    let provider_name = ProviderName::parse(name.to_owned())
        .map_err(|e| anyhow::anyhow!("providers.{name}: {e}"))?;
    let kind = AdapterKind::of(name, p)?;
    let not_for = |setting: &str, applies: &str| {
        anyhow::anyhow!(
            "providers.{name}.{setting} does not apply to kind {kind:?}; it is for {applies}"
        )
    };
    if p.merchant_account.is_some() && !matches!(kind, AdapterKind::Adyen | AdapterKind::Gr4vy) {
        return Err(not_for("merchant_account", "adyen and gr4vy"));
    }
    if p.client_id.is_some() && kind != AdapterKind::PayPal {
        return Err(not_for("client_id", "paypal"));
    }
    if p.max_captures.is_some() && kind != AdapterKind::Orchestrator {
        return Err(not_for("max_captures", "orchestrator"));
    }
    let webhook_secret = p.resolve_webhook_secret()?;
    if webhook_secret.is_some()
        && !matches!(
            kind,
            AdapterKind::Adyen | AdapterKind::Gr4vy | AdapterKind::Checkout
        )
    {
        return Err(not_for(
            "webhook_secret",
            "adyen, gr4vy and checkout (the providers whose notifications are signed with a shared key)",
        ));
    }
    let secret = p.resolve_api_key()?;
    let base_url = p.base_url.clone();
    let context = |e: crate::provider::ProviderSetupError| anyhow::anyhow!("providers.{name}: {e}");
    let adapter: Arc<dyn PaymentProvider> = match kind {
        AdapterKind::Stripe => Arc::new(
            StripeProvider::new(provider_name, base_url, secret, timeout).map_err(context)?,
        ),
        AdapterKind::Gr4vy => {
            let adapter = Gr4vyProvider::new(
                provider_name,
                base_url,
                secret,
                p.merchant_account.clone(),
                timeout,
            )
            .map_err(context)?;
            Arc::new(match webhook_secret {
                Some(w) => adapter.with_webhook_secret(w),
                None => adapter,
            })
        }
        AdapterKind::Adyen => {
            let adapter = AdyenProvider::new(
                provider_name,
                base_url,
                secret,
                p.merchant_account.clone(),
                timeout,
            )
            .map_err(context)?;
            Arc::new(match webhook_secret {
                Some(w) => adapter.with_webhook_secret(w).map_err(context)?,
                None => adapter,
            })
        }
        AdapterKind::Checkout => {
            let adapter =
                CheckoutProvider::new(provider_name, base_url, secret, timeout).map_err(context)?;
            Arc::new(match webhook_secret {
                Some(w) => adapter.with_webhook_secret(w),
                None => adapter,
            })
        }
        AdapterKind::PayPal => Arc::new(
            PayPalProvider::new(
                provider_name,
                base_url,
                p.client_id.clone(),
                secret,
                timeout,
            )
            .map_err(context)?,
        ),
        AdapterKind::Hellgate => Arc::new(
            HellgateProvider::new(provider_name, base_url, secret, timeout).map_err(context)?,
        ),
        AdapterKind::Orchestrator => Arc::new(
            OrchestratorProvider::new(provider_name, base_url, secret, p.max_captures, timeout)
                .map_err(context)?,
        ),
    };
    Ok(adapter)
}

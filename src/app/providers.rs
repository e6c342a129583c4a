//! The providers this worker can call, built from `providers.<name>` settings.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::domain::{Capabilities, ProviderName};
use crate::provider::PaymentProvider;
use crate::provider::stripe::StripeProvider;

use super::intake::CapabilityLookup;

/// Provider adapters by configured name.
#[derive(Clone, Default)]
pub struct Providers {
    by_name: Arc<HashMap<String, Arc<dyn PaymentProvider>>>,
}

impl Providers {
    /// Builds one adapter per configured provider. `stripe` and `sandbox` (the built-in
    /// sandbox server, which speaks Stripe's dialect) use the Stripe adapter.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Providers> {
        let timeout = Duration::from_millis(settings.capture.provider_timeout_ms);
        let mut by_name: HashMap<String, Arc<dyn PaymentProvider>> = HashMap::new();
        for (name, p) in &settings.providers {
            let provider_name = ProviderName::parse(name.clone())
                .map_err(|e| anyhow::anyhow!("providers.{name}: {e}"))?;
            let adapter: Arc<dyn PaymentProvider> = match name.as_str() {
                "stripe" | "sandbox" => Arc::new(
                    StripeProvider::new(
                        provider_name,
                        p.base_url.clone(),
                        p.resolve_api_key()?,
                        timeout,
                    )
                    .map_err(|e| anyhow::anyhow!("providers.{name}: {e}"))?,
                ),
                other => anyhow::bail!(
                    "providers.{other}: no adapter for this provider; known providers are stripe and sandbox"
                ),
            };
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

//! The integration test binary: one binary, shared helpers, one module per area.
// Test helpers fail loudly: an unwrap here is an assertion that the fixture is valid.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod adaptive_concurrency;
mod architecture;
mod asyncapi;
mod bad_input;
mod bench_smoke;
mod capture_limits;
mod config;
mod db_socket;
mod domain_examples;
mod domain_properties;
mod finance;
mod hardening;
mod harness;
mod intake_batch;
mod ledger_guards;
mod lifecycle_e2e;
mod lifecycle_properties;
mod operator;
mod operator_output;
mod outbox;
mod pipeline;
mod process;
mod provider_adyen;
mod provider_checkout;
mod provider_gr4vy;
mod provider_hellgate;
mod provider_lifecycle;
mod provider_orchestrator;
mod provider_paypal;
mod provider_registry;
mod provider_stripe;
mod provider_support;
mod providers_e2e;
mod python_tools;
mod sandbox;
mod sandbox_lifecycle;
mod support;
mod telemetry;
mod tls;
mod wire;

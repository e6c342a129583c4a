//! The integration test binary: one binary, shared helpers, one module per area.
// Test helpers fail loudly: an unwrap here is an assertion that the fixture is valid.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod architecture;
mod bench_smoke;
mod config;
mod domain_examples;
mod domain_properties;
mod harness;
mod intake_batch;
mod ledger_guards;
mod pipeline;
mod process;
mod provider_stripe;
mod sandbox;
mod support;
mod wire;

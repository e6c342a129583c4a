//! The sandbox provider: a built-in payment-provider server with real capture semantics.
//!
//! Speaks Stripe's dialect over one core model (`model.rs`); `wire.rs` holds the Stripe-shaped
//! JSON and form parameters. Imports `domain` only, never another adapter.

pub mod model;
pub mod wire;

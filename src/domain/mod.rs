//! The capture rules, pure: money, currencies, ids, orders, allocation and capture planning.
//!
//! Owns every decision about amounts and final flags. Must not import an I/O or runtime crate
//! (tokio, sqlx, lapin, reqwest, axum, tracing, std::fs/net/io/process) and never reads the
//! clock: callers pass `now` and ids in. `tests/it/architecture.rs` enforces this.

pub mod allocation;
pub mod capability;
pub mod currency;
pub mod ids;
pub mod lifecycle;
pub mod money;
pub mod order;
pub mod plan;
pub mod readback;

pub use allocation::{OverCaptureAllowance, ShippingPolicy};
pub use capability::{
    Capabilities, CapabilityLookup, CaptureMode, ExtensionCall, ExtensionRule, FinalFlag,
    IncrementAmount, IncrementRule, LifecycleCapabilities, ReleaseMethod,
};
pub use currency::{Currency, UnknownCurrency};
pub use ids::{
    AuthorizationId, EventId, IdempotencyKey, InvalidId, LineId, OrderId, ProviderName, ShipmentId,
};
pub use money::{MinorUnits, Money, MoneyError, major_string};
pub use order::{
    Authorization, Cancellation, Item, Order, OrderDraft, OrderError, OrderLine, Quantity, Shipment,
};
pub use plan::{
    CapturePlan, Decision, Event, LineCharge, NothingReason, OrderState, Phase, Plan, PlanContext,
    Rejection, authorization_deadline, plan, shipped_value,
};

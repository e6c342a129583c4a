//! The payment-provider boundary: one trait, one outcome enum, one adapter per provider.
//!
//! Owns the translation between the domain's capture request and a provider's wire format.
//! Each adapter lives in its own folder (`mod.rs`: URL, headers, auth, idempotency header,
//! status routing; `wire.rs`: request and response structs). Wire structs never leave their
//! folder. What every adapter does the same way (the client, sending and timing a call,
//! transport failures, the read-back path, the adapter's span) is in `http.rs`. Declines are
//! outcomes, not errors (DESIGN §3.4).
//!
//! Adapters import `domain`, `secret` and this boundary (`provider::{http, items}` and the types
//! here); never `config`, `storage`, `queue`, `app` or the sandbox provider
//! (`crate::sandbox`, a server the adapters reach over HTTP like any other), and never each
//! other.

pub mod adyen;
pub mod checkout;
pub mod gr4vy;
pub mod hellgate;
pub(crate) mod http;
mod items;
pub mod orchestrator;
pub mod paypal;

pub use http::ProviderSetupError;

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{
    AuthorizationId, Capabilities, IdempotencyKey, LineId, MinorUnits, Money, OrderId,
};

pub mod stripe;

/// One line of a capture, for providers that take line items (Gr4vy `cart_items`, Adyen
/// `lineItems`). Never card data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureLine {
    pub line_id: LineId,
    pub sku: String,
    pub name: String,
    pub quantity: u32,
    /// Value of these units in this capture, in the capture's currency.
    pub amount: MinorUnits,
}

/// A capture to send. Built from the persisted capture row: the amount, final flag and key are
/// never recomputed between attempts (P3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRequest {
    pub authorization_id: AuthorizationId,
    pub order_id: OrderId,
    /// What caused the capture: the shipment id, or the id of the cancellation that completed
    /// the order. Sent as metadata / reference.
    pub cause: String,
    /// 1, 2, 3… within the order.
    pub sequence: u32,
    pub amount: Money,
    pub is_final: bool,
    pub idempotency_key: IdempotencyKey,
    pub lines: Vec<CaptureLine>,
}

/// A request to release what is left of an authorization (the cancel / void call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRequest {
    pub authorization_id: AuthorizationId,
    pub order_id: OrderId,
    pub idempotency_key: IdempotencyKey,
}

/// Which lifecycle call a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleCall {
    /// Keep the hold alive: PayPal reauthorize, Adyen amount update with the same amount,
    /// Checkout.com increment of 0.
    Extend,
    /// Raise the authorized amount.
    Increment,
}

impl LifecycleCall {
    /// `extend` / `increment`: the label of the ledger, metrics and references.
    pub fn label(self) -> &'static str {
        match self {
            LifecycleCall::Extend => "extend",
            LifecycleCall::Increment => "increment",
        }
    }
}

/// A request to extend or increment a hold. Built from the persisted lifecycle row: the
/// amounts and the key are never recomputed between attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleRequest {
    pub call: LifecycleCall,
    pub authorization_id: AuthorizationId,
    pub order_id: OrderId,
    /// 1, 2, 3… lifecycle actions within the order; names the action in references
    /// (`order/increment-1`).
    pub sequence: u32,
    /// The amount authorized before the call.
    pub authorized: Money,
    /// The increase (zero for an extension).
    pub by: MinorUnits,
    pub idempotency_key: IdempotencyKey,
}

impl LifecycleRequest {
    /// The authorized total the call asks for: `authorized + by`.
    pub fn new_total(&self) -> Result<MinorUnits, crate::domain::MoneyError> {
        self.authorized
            .amount()
            .checked_add(self.by, "authorized total")
    }

    /// The merchant reference of the call: `extend-1`, `increment-2`.
    pub fn cause(&self) -> String {
        format!("{}-{}", self.call.label(), self.sequence)
    }
}

/// What a provider's answer says the hold is after a lifecycle call, as far as it says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldChange {
    /// The authorization to capture from from now on, when the call made a new one
    /// (PayPal's reauthorization has an id of its own).
    pub authorization_id: Option<AuthorizationId>,
    /// The authorized amount after the call.
    pub amount: Option<MinorUnits>,
    /// When the hold now lapses.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One lifecycle call as it happened: the call's result and, for a call that succeeded, what
/// the answer says about the hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleResult {
    pub call: CallResult,
    pub hold: Option<HoldChange>,
}

impl LifecycleResult {
    /// The answer of a provider that documents no such call: nothing is sent.
    pub fn not_supported(provider: &str, request: &LifecycleRequest) -> Self {
        LifecycleResult {
            call: CallResult {
                outcome: Outcome::Failed {
                    reason: format!(
                        "{provider} documents no way to {} authorization {} (see docs/providers.md, Lifecycle); nothing was sent",
                        request.call.label(),
                        request.authorization_id
                    ),
                },
                http_status: None,
                provider_code: Some("not_supported".to_owned()),
                provider_request_id: None,
                latency: Duration::ZERO,
            },
            hold: None,
        }
    }
}

/// What the provider said about one call. Exhaustive: every answer maps to exactly one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Captured (or released). `reference` is the provider's id for it, when it gives one.
    Succeeded { reference: Option<String> },
    /// Accepted; the result comes later (webhook or lookup).
    Pending { reference: Option<String> },
    /// A definite no from the issuer or the provider's risk rules: latch the authorization.
    Declined { code: String, message: String },
    /// Not done; safe to retry with the same key, after `after` when the provider says.
    Retryable {
        after: Option<Duration>,
        reason: String,
    },
    /// Definitely not captured and retrying the same request will not help (a request the
    /// provider refuses, an expired authorization, a replayed error under this key).
    Failed { reason: String },
    /// No answer, or an error answer the provider saved under this key: the capture may or
    /// may not have happened. Resolve by lookup before any new key. `key_spent` is true when
    /// the provider will only replay this same answer under this key (Stripe's saved 500 with
    /// `Stripe-Should-Retry: false`), so retrying the key is pointless.
    Unknown { reason: String, key_spent: bool },
}

impl Outcome {
    /// Short label for metrics, logs and the attempts table.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Succeeded { .. } => "succeeded",
            Outcome::Pending { .. } => "pending",
            Outcome::Declined { .. } => "declined",
            Outcome::Retryable { .. } => "retryable",
            Outcome::Failed { .. } => "failed",
            Outcome::Unknown { .. } => "unknown",
        }
    }
}

/// One provider call as it happened: the outcome plus what the attempts table records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallResult {
    pub outcome: Outcome,
    /// HTTP status, when a response arrived.
    pub http_status: Option<u16>,
    /// Provider error type / code / decline code, when given (e.g. `card_error/card_declined`).
    pub provider_code: Option<String>,
    /// The provider's request id header, for support tickets.
    pub provider_request_id: Option<String>,
    pub latency: Duration,
}

/// What the provider reports about an authorization, read back to resolve unknown outcomes
/// and for reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationSnapshot {
    pub authorization_id: AuthorizationId,
    /// Total captured so far (Stripe `amount_received`).
    pub captured: Money,
    /// Still capturable (Stripe `amount_capturable`).
    pub capturable: Money,
    /// The provider's status word, verbatim (e.g. `requires_capture`, `succeeded`, `canceled`).
    pub status: String,
}

/// Why a lookup could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("provider lookup of {authorization_id} failed and may be retried: {reason}")]
    Retryable {
        authorization_id: String,
        reason: String,
    },
    #[error("provider lookup of {authorization_id} failed: {reason}")]
    Permanent {
        authorization_id: String,
        reason: String,
    },
}

impl LookupError {
    /// Builds the "ask again later" error of a lookup of `authorization_id` from its reason.
    pub(crate) fn retryable_for(
        authorization_id: &AuthorizationId,
    ) -> impl Fn(String) -> Self + Copy {
        move |reason| LookupError::Retryable {
            authorization_id: authorization_id.to_string(),
            reason,
        }
    }

    /// Builds the error of a lookup of `authorization_id` that asking again will not fix.
    pub(crate) fn permanent_for(
        authorization_id: &AuthorizationId,
    ) -> impl Fn(String) -> Self + Copy {
        move |reason| LookupError::Permanent {
            authorization_id: authorization_id.to_string(),
            reason,
        }
    }
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationSubject {
    /// A capture the worker sent.
    Capture,
    /// The release (cancel / void) of an authorization's remainder.
    Release,
    /// An extension or increment of the hold the worker asked for (Adyen's
    /// `AUTHORISATION_ADJUSTMENT`); `reference` is the one the call's pending answer gave.
    Lifecycle,
    /// Anything else (refunds, authorisations, disputes…).
    Other,
}

/// What the worker should do about one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationEffect {
    /// Settle the call it answers with this outcome (`Succeeded`, `Declined` or `Failed`).
    Settle(Outcome),
    /// Read the authorization back now: the event says something happened but is not trusted
    /// (PayPal's, whose signature cannot be checked offline) or is not final.
    ReadBack,
    /// Nothing for the worker to do.
    Ignore,
}

/// One event of a provider notification, verified and translated. Never card data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// The provider's event type, as recorded (`CAPTURE:true`, `payment_captured`,
    /// `capture.succeeded`, `PAYMENT.CAPTURE.COMPLETED`). With `reference`, the dedupe key.
    pub event_type: String,
    /// The provider's reference of what the event is about: the reference its pending answer
    /// gave (Adyen's modification pspReference, Checkout.com's action id, Gr4vy's capture id,
    /// PayPal's capture id).
    pub reference: String,
    /// The authorization the event belongs to, when the event names it.
    pub authorization_id: Option<String>,
    /// Our reference as the provider echoes it (`order/cause`, or `order/release`).
    pub merchant_reference: Option<String>,
    pub subject: NotificationSubject,
    pub effect: NotificationEffect,
}

/// Why a notification was refused. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// This provider sends no notifications the worker reads.
    #[error("this provider sends no notifications the worker reads")]
    NotSupported,
    /// The provider signs its notifications, but no webhook secret is configured.
    #[error("no webhook secret is configured for this provider (providers.<name>.webhook_secret)")]
    NotConfigured,
    /// The signature is missing or does not match: not from the provider, or altered.
    #[error("signature refused: {0}")]
    Unauthenticated(String),
    /// Not the provider's notification shape.
    #[error("not a notification of this provider: {0}")]
    Malformed(String),
}

/// A payment provider's capture API.
///
/// Implementations never panic on a provider answer and never log the API key. Every call
/// carries the idempotency key where the provider supports one.
#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// The configured provider name (`stripe`, `sandbox`…).
    fn name(&self) -> &str;

    /// What this provider (as configured) can do.
    fn capabilities(&self) -> Capabilities;

    /// Sends one capture.
    async fn capture(&self, request: &CaptureRequest) -> CallResult;

    /// Releases what is left of the authorization (Stripe: cancel the PaymentIntent).
    async fn release(&self, request: &ReleaseRequest) -> CallResult;

    /// Extends or increments the hold ([`LifecycleCall`]), where the provider documents it.
    /// Default: not supported, nothing is sent.
    async fn lifecycle(&self, request: &LifecycleRequest) -> LifecycleResult {
        LifecycleResult::not_supported(self.name(), request)
    }

    /// Reads the authorization back.
    async fn lookup(
        &self,
        authorization_id: &AuthorizationId,
    ) -> Result<AuthorizationSnapshot, LookupError>;

    /// Verifies and reads a notification the provider posted to the worker's webhook
    /// endpoint. `now` bounds the age of timestamped signatures. Default: the provider sends
    /// none the worker reads.
    fn read_notification(
        &self,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<WebhookEvent>, WebhookError> {
        let _ = (headers, body, now);
        Err(WebhookError::NotSupported)
    }

    /// Whether [`PaymentProvider::lookup`] can show what was captured on an authorization.
    /// Without one, a capture whose outcome is unknown goes to an operator rather than being
    /// sent under a new key. Default: it can.
    fn offers_read_back(&self) -> bool {
        true
    }

    /// For a capture the provider accepted and whose amount the read-back does not show: the
    /// provider's decline code when the read-back says the capture was refused (Hellgate's
    /// `failed` payment). Default: a read-back cannot tell, so the capture keeps waiting.
    fn refused_capture(&self, snapshot: &AuthorizationSnapshot) -> Option<String> {
        let _ = snapshot;
        None
    }
}

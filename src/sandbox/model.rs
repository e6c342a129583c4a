//! The sandbox's core model, pure: authorizations and their captures, the idempotency store,
//! scenarios with their faults, and the request ledger.
//!
//! Dialect-neutral: the Stripe-shaped wire lives in `wire.rs`, HTTP, the clock and every sleep
//! in `mod.rs`. Callers pass `now` in; nothing here blocks or reads the clock. Money is `i64`
//! minor units with checked arithmetic; a bad input is a [`ModelError`], never a panic.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{AuthorizationId, Currency};

/// Captures one authorization accepts unless it says otherwise (Stripe multicapture: 50).
pub const DEFAULT_MAX_CAPTURES: u32 = 50;

/// How long an authorization stays capturable when it is created without `expires_at`
/// (Stripe's default for card-not-present holds).
pub const DEFAULT_AUTHORIZATION_DAYS: i64 = 7;

/// Longest delay a scenario may ask for (latency, timeouts, lost responses), in milliseconds.
pub const MAX_DELAY_MS: u64 = 600_000;

/// Decline code used when a scenario declines without naming one.
pub const DEFAULT_DECLINE_CODE: &str = "insufficient_funds";

/// Where an authorization stands (Stripe's PaymentIntent `status` words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Capturable: no final capture, cancel or expiry yet.
    RequiresCapture,
    /// A final capture happened; nothing more is capturable.
    Succeeded,
    /// Cancelled or expired; the remainder was released.
    Canceled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::RequiresCapture => "requires_capture",
            Status::Succeeded => "succeeded",
            Status::Canceled => "canceled",
        }
    }
}

/// Why an authorization was cancelled (Stripe's `cancellation_reason` words we use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancellationReason {
    Duplicate,
    Fraudulent,
    RequestedByCustomer,
    Abandoned,
    /// The hold ran out before a final capture.
    Expired,
}

impl CancellationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancellationReason::Duplicate => "duplicate",
            CancellationReason::Fraudulent => "fraudulent",
            CancellationReason::RequestedByCustomer => "requested_by_customer",
            CancellationReason::Abandoned => "abandoned",
            CancellationReason::Expired => "expired",
        }
    }

    /// The reasons a client may give when cancelling (not `expired`, which only time gives).
    pub fn parse_requested(text: &str) -> Option<Self> {
        match text {
            "duplicate" => Some(CancellationReason::Duplicate),
            "fraudulent" => Some(CancellationReason::Fraudulent),
            "requested_by_customer" => Some(CancellationReason::RequestedByCustomer),
            "abandoned" => Some(CancellationReason::Abandoned),
            _ => None,
        }
    }
}

/// One injected failure, consumed by one executed capture request before normal processing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// 503 with `Stripe-Should-Retry: true`; nothing captured, nothing saved under the key.
    Unavailable,
    /// 500 saved under the key with `Stripe-Should-Retry: false`; nothing captured. Replays of
    /// the key return the same 500.
    ServerErrorSaved,
    /// 429 with `Retry-After`; nothing captured, nothing saved.
    RateLimited {
        #[serde(default = "one")]
        retry_after_secs: u64,
    },
    /// Waits `delay_ms`, then 503; nothing captured, nothing saved. The key counts as in
    /// progress while waiting. The client is expected to time out first.
    Timeout { delay_ms: u64 },
    /// Captures (normal processing), saves the answer under the key, then waits `delay_ms`
    /// before answering: the money moved but the client times out without knowing.
    LostResponse { delay_ms: u64 },
    /// A 500 the dialect stores under the idempotency key before the capture executed:
    /// nothing is captured, and every later request with the key gets the stored 500 back
    /// where the provider stores error answers (Stripe, without `Stripe-Should-Retry`; Gr4vy;
    /// Adyen, a non-transient error; PayPal, whose docs are silent). Checkout.com stores no
    /// 5xx, so its key executes the next request; dialects without a key store nothing.
    StoredErrorBeforeCapture,
    /// The capture executed (the money moved), then the answer was a 500, stored under the
    /// key as [`Fault::StoredErrorBeforeCapture`] is: the replays hide that it captured.
    StoredErrorAfterCapture,
}

fn one() -> u64 {
    1
}

/// Random faults for fault harnesses, drawn from a deterministic generator: the same seed and
/// authorization id give the same sequence in every run. Percentages are whole numbers whose
/// sum is at most 100; the rest of the requests are processed normally.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultRates {
    pub seed: u64,
    /// Share of capture requests answered with a saved 500 ([`Fault::ServerErrorSaved`]).
    pub server_error_pct: u8,
    /// Share answered with [`Fault::Timeout`] of `timeout_ms`.
    pub timeout_pct: u8,
    /// Share answered with [`Fault::LostResponse`] of `timeout_ms`.
    pub lost_response_pct: u8,
    /// Share answered with [`Fault::RateLimited`] (`Retry-After: 1`).
    pub rate_limited_pct: u8,
    /// Share answered with [`Fault::StoredErrorBeforeCapture`].
    pub stored_error_before_pct: u8,
    /// Share answered with [`Fault::StoredErrorAfterCapture`].
    pub stored_error_after_pct: u8,
    /// Delay of the timeouts and lost responses, in milliseconds.
    pub timeout_ms: u64,
}

/// How one authorization misbehaves. The default behaves like a healthy provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Declines the n-th capture request (1-based) that reaches normal processing for this
    /// authorization, counted since it was created: faulted requests and replays do not
    /// count; requests refused for the authorization's state (expired, over the balance…) do.
    pub decline_on_capture: Option<u32>,
    /// The decline code of that decline; `insufficient_funds` when absent.
    pub decline_code: Option<String>,
    /// Faults consumed in order, one per executed capture request.
    pub faults: Vec<Fault>,
    /// Random faults once `faults` is used up.
    pub rates: Option<FaultRates>,
    /// Added to the global latency on every call about this authorization, in milliseconds.
    pub latency_ms: u64,
    /// Captures are accepted and settle this long after, in milliseconds (the capture is
    /// pending until then). The asynchronous dialects (Adyen, Checkout.com, Hellgate) settle
    /// at once when unset; the others (Gr4vy, PayPal) answer synchronously unless it is set.
    pub settle_after_ms: Option<u64>,
    /// The provider's notifications for this authorization are lost: none is sent, so only a
    /// read-back settles its pending captures.
    pub silent: bool,
    /// The next this many read-backs of the authorization (Stripe's `GET` of the
    /// PaymentIntent) answer 503, as a provider that cannot be read for a while.
    pub failed_reads: u32,
    /// Increments, extensions and reauthorizations of this authorization are refused by the
    /// issuer (Stripe `card_declined`, Checkout.com `approved: false`, Adyen
    /// `AUTHORISATION_ADJUSTMENT` with `success: false`, PayPal `DENIED`).
    pub decline_adjustments: bool,
}

impl Scenario {
    /// Checks the parts serde cannot: rates that add up, a printable decline code.
    pub fn validate(&self) -> Result<(), ModelError> {
        if let Some(code) = &self.decline_code {
            let ok = !code.is_empty()
                && code.len() <= 64
                && code.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            if !ok {
                return Err(ModelError::Invalid(format!(
                    "decline_code {code:?} must be 1 to 64 characters of a-z and _"
                )));
            }
        }
        if self.decline_on_capture == Some(0) {
            return Err(ModelError::Invalid(
                "decline_on_capture counts from 1".to_owned(),
            ));
        }
        let delays = self
            .faults
            .iter()
            .map(|f| match f {
                Fault::Timeout { delay_ms } | Fault::LostResponse { delay_ms } => *delay_ms,
                Fault::RateLimited { retry_after_secs } => retry_after_secs.saturating_mul(1000),
                Fault::Unavailable
                | Fault::ServerErrorSaved
                | Fault::StoredErrorBeforeCapture
                | Fault::StoredErrorAfterCapture => 0,
            })
            .chain([
                self.latency_ms,
                self.rates.as_ref().map_or(0, |r| r.timeout_ms),
                self.settle_after_ms.unwrap_or(0),
            ]);
        if delays.into_iter().any(|d| d > MAX_DELAY_MS) {
            return Err(ModelError::Invalid(format!(
                "delays and latencies are at most {MAX_DELAY_MS} ms"
            )));
        }
        if let Some(r) = &self.rates {
            let total = u32::from(r.server_error_pct)
                + u32::from(r.timeout_pct)
                + u32::from(r.lost_response_pct)
                + u32::from(r.rate_limited_pct)
                + u32::from(r.stored_error_before_pct)
                + u32::from(r.stored_error_after_pct);
            if total > 100 {
                return Err(ModelError::Invalid(format!(
                    "fault rates add up to {total}%, more than 100%"
                )));
            }
        }
        Ok(())
    }
}

/// An authorization to create: the body of `POST /sandbox/authorizations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAuthorization {
    /// The PaymentIntent id, e.g. `pi_123`: 1 to 64 characters of `A–Z a–z 0–9 - _ . : / # @ +`.
    pub id: String,
    /// Authorized amount in minor units; positive.
    pub amount: i64,
    /// ISO 4217 code, either case (`USD` or `usd`).
    pub currency: String,
    /// When the hold lapses; seven days after creation when absent.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Captures allowed; 50 when absent.
    #[serde(default)]
    pub max_captures: Option<u32>,
    #[serde(default)]
    pub scenario: Option<Scenario>,
}

impl NewAuthorization {
    /// A healthy authorization with the defaults: seven days, 50 captures, no scenario.
    pub fn new(id: impl Into<String>, amount: i64, currency: impl Into<String>) -> Self {
        NewAuthorization {
            id: id.into(),
            amount,
            currency: currency.into(),
            expires_at: None,
            max_captures: None,
            scenario: None,
        }
    }
}

/// One capture that moved money.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRecord {
    pub amount: i64,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub idempotency_key: Option<String>,
    pub at: DateTime<Utc>,
    /// The dialect's id for this capture (asynchronous and dialect captures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// A capture accepted by an asynchronous dialect and not settled yet. Its amount is held:
/// no longer capturable, not yet received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCapture {
    /// The dialect's id for the capture (Adyen's modification pspReference, Checkout.com's
    /// action id, Gr4vy's capture id, PayPal's capture id).
    pub reference: String,
    /// The dialect that accepted it, which formats its notification.
    pub channel: String,
    pub amount: i64,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub idempotency_key: Option<String>,
    /// The client's reference as sent (`order/cause`).
    pub merchant_reference: Option<String>,
    /// The merchant account the request named (Adyen), echoed in its notification.
    pub account: Option<String>,
    pub accepted_at: DateTime<Utc>,
    pub settles_at: DateTime<Utc>,
    /// Decided when accepted (the scenario's decline): the code it settles declined with.
    pub decline: Option<String>,
    /// The ledger entry of the request that was accepted.
    pub ledger_seq: u64,
}

/// A capture that settled declined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclinedCapture {
    pub reference: String,
    pub amount: i64,
    pub decline_code: String,
    pub at: DateTime<Utc>,
}

/// A pending capture that settled, for the dialect that accepted it to notify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub authorization_id: String,
    pub channel: String,
    pub reference: String,
    pub merchant_reference: Option<String>,
    pub account: Option<String>,
    pub amount: i64,
    pub currency: Currency,
    pub is_final: bool,
    /// `None`: captured; `Some(code)`: declined.
    pub decline: Option<String>,
    /// The notification for this authorization is lost (the scenario's `silent`).
    pub silent: bool,
    pub at: DateTime<Utc>,
}

/// An asynchronous capture to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    pub command: CaptureCommand,
    pub reference: String,
    pub channel: String,
    pub merchant_reference: Option<String>,
    pub account: Option<String>,
    /// When it settles.
    pub settles_at: DateTime<Utc>,
    pub ledger_seq: u64,
}

/// A copy of one authorization's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationView {
    pub id: String,
    pub amount: i64,
    pub amount_capturable: i64,
    pub amount_received: i64,
    pub currency: Currency,
    pub status: Status,
    pub cancellation_reason: Option<CancellationReason>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub max_captures: u32,
    pub latest_charge: String,
    pub metadata: BTreeMap<String, String>,
    pub captures: Vec<CaptureRecord>,
    /// Accepted captures not settled yet.
    pub pending: Vec<PendingCapture>,
    /// Accepted captures that settled declined.
    pub declined: Vec<DeclinedCapture>,
    /// Capture requests that reached normal processing (what `decline_on_capture` counts).
    pub capture_requests: u32,
    /// Increments and extensions asked for, refused ones included.
    pub adjustments: u32,
    /// When the funds stop being guaranteed (PayPal's honor period).
    pub honor_until: Option<DateTime<Utc>>,
    /// The authorization this one reauthorizes, and the one that reauthorized this one.
    pub reauthorization_of: Option<String>,
    pub reauthorized_as: Option<String>,
    pub scenario: Scenario,
}

/// Changes to an authorization's metadata carried by a request (`metadata[k]=v`; an empty
/// value removes `k`; `metadata=` with no key clears all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataUpdate {
    pub clear_all: bool,
    pub set: Vec<(String, String)>,
}

/// A capture to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureCommand {
    /// `None` captures everything capturable.
    pub amount: Option<i64>,
    pub is_final: bool,
    pub idempotency_key: Option<String>,
    pub metadata: MetadataUpdate,
    /// The dialect's id for the capture it records, when it has one.
    pub reference: Option<String>,
}

/// A capture that moved money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub amount: i64,
    pub view: AuthorizationView,
}

/// Why the model refused. Each maps to one provider error in the dialect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("no such authorization: {id:?}")]
    NotFound { id: String },
    #[error("{0}")]
    Invalid(String),
    #[error("authorization {id:?} already exists with different fields")]
    Conflict { id: String },
    #[error("the amount to capture must be at least 1, got {requested}")]
    AmountTooSmall { requested: i64 },
    #[error(
        "the amount to capture ({requested}) is greater than the amount capturable ({capturable})"
    )]
    AmountTooLarge { requested: i64, capturable: i64 },
    #[error("the authorization has status {status:?}; only requires_capture may be {action}")]
    UnexpectedState {
        status: Status,
        action: &'static str,
    },
    #[error("the authorization expired and can no longer be captured")]
    Expired,
    #[error("capture limit reached: the authorization allows at most {limit} captures")]
    LimitReached { limit: u32 },
    #[error("the card was declined ({decline_code})")]
    Declined { decline_code: String },
    #[error("the authorization cannot be adjusted: {why}")]
    NotAdjustable { why: &'static str },
    #[error("the issuer refused the adjustment")]
    AdjustmentDeclined,
    #[error("amount arithmetic overflowed")]
    Overflow,
}

/// An increment or extension of a hold, as a dialect's request asks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adjustment {
    /// The authorized total afterwards (an increment); `None` keeps the amount.
    pub new_total: Option<i64>,
    /// The hold then lapses this long after now (an extension, or an increment that renews
    /// it); `None` keeps the expiry.
    pub renew_for: Option<Duration>,
    /// Refused once anything is captured or pending (Stripe, Adyen, Checkout.com).
    pub before_first_capture: bool,
    /// At most this many adjustments, refused ones included (Stripe: 10 attempts).
    pub max_adjustments: Option<u32>,
}

/// What one request on a provider-dialect endpoint came to, for the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerOutcome {
    /// A capture executed and moved money.
    Captured,
    /// A saved answer was replayed under its idempotency key.
    Replayed,
    /// The issuer declined (402).
    Declined,
    /// Any other error answer.
    Error,
    /// A cancel released the remainder.
    Released,
    /// An increment, extension or reauthorization changed the hold.
    Adjusted,
    /// A read.
    Read,
    /// An asynchronous capture was accepted; the entry becomes `captured` or `declined` when
    /// it settles.
    Accepted,
}

/// One request received on a provider-dialect endpoint, as it arrived and as it was answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Arrival order, from 1.
    pub seq: u64,
    /// Arrival time.
    pub at: DateTime<Utc>,
    pub method: String,
    pub path: String,
    pub authorization_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// As sent; `None` when absent or not an integer.
    pub amount_to_capture: Option<i64>,
    /// As sent; `None` when absent (Stripe then treats it as true) or not a boolean.
    pub final_capture: Option<bool>,
    pub http_status: u16,
    pub outcome: LedgerOutcome,
    pub replayed: bool,
    /// Money this request moved, in minor units; 0 when none.
    pub captured_amount: i64,
}

/// splitmix64: tiny, deterministic and good enough to pick faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        Prng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
}

/// The splitmix64 finaliser: a bijection on `u64` that scatters nearby inputs.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, to give each authorization its own fault sequence under one seed.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

#[derive(Debug, Clone)]
struct Authorization {
    /// The creation request as given, to tell an identical re-creation from a conflict.
    spec: NewAuthorization,
    id: String,
    amount: i64,
    amount_capturable: i64,
    amount_received: i64,
    currency: Currency,
    status: Status,
    cancellation_reason: Option<CancellationReason>,
    canceled_at: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    max_captures: u32,
    latest_charge: String,
    metadata: BTreeMap<String, String>,
    captures: Vec<CaptureRecord>,
    pending: Vec<PendingCapture>,
    declined: Vec<DeclinedCapture>,
    capture_requests: u32,
    /// Increments and extensions asked for, refused ones included.
    adjustments: u32,
    /// When the funds stop being guaranteed (PayPal's honor period), if sooner than expiry.
    honor_until: Option<DateTime<Utc>>,
    /// The authorization this one reauthorizes (PayPal), or the one that reauthorized it.
    reauthorization_of: Option<String>,
    reauthorized_as: Option<String>,
    scenario: Scenario,
    rng: Prng,
}

impl Authorization {
    /// Applies expiry: a hold past its deadline without a final capture is cancelled.
    fn refresh(&mut self, now: DateTime<Utc>) {
        if self.status == Status::RequiresCapture && now > self.expires_at {
            self.status = Status::Canceled;
            self.cancellation_reason = Some(CancellationReason::Expired);
            self.canceled_at = Some(self.expires_at);
            self.amount_capturable = 0;
        }
    }

    fn set_scenario(&mut self, scenario: Scenario) {
        let seed = scenario.rates.as_ref().map_or(0, |r| r.seed);
        self.rng = Prng::new(seed ^ fnv1a(&self.id));
        self.scenario = scenario;
    }

    fn apply_metadata(&mut self, update: &MetadataUpdate) {
        if update.clear_all {
            self.metadata.clear();
        }
        for (k, v) in &update.set {
            if v.is_empty() {
                self.metadata.remove(k);
            } else {
                self.metadata.insert(k.clone(), v.clone());
            }
        }
    }

    fn view(&self) -> AuthorizationView {
        AuthorizationView {
            id: self.id.clone(),
            amount: self.amount,
            amount_capturable: self.amount_capturable,
            amount_received: self.amount_received,
            currency: self.currency,
            status: self.status,
            cancellation_reason: self.cancellation_reason,
            canceled_at: self.canceled_at,
            created: self.created,
            expires_at: self.expires_at,
            max_captures: self.max_captures,
            latest_charge: self.latest_charge.clone(),
            metadata: self.metadata.clone(),
            captures: self.captures.clone(),
            pending: self.pending.clone(),
            declined: self.declined.clone(),
            capture_requests: self.capture_requests,
            adjustments: self.adjustments,
            honor_until: self.honor_until,
            reauthorization_of: self.reauthorization_of.clone(),
            reauthorized_as: self.reauthorized_as.clone(),
            scenario: self.scenario.clone(),
        }
    }
}

/// Whether [`Model::create`] made a new authorization or found an identical one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    AlreadyExisted,
}

/// Every authorization and the ledger.
#[derive(Debug, Default)]
pub struct Model {
    authorizations: BTreeMap<String, Authorization>,
    ledger: Vec<LedgerEntry>,
    charges: u64,
    /// Settled pending captures not yet handed to the dialects for notification.
    outbox: Vec<Settled>,
}

impl Model {
    pub fn new() -> Self {
        Model::default()
    }

    /// Forgets every authorization and ledger entry.
    pub fn reset(&mut self) {
        *self = Model::default();
    }

    /// Creates an authorization. The same id with identical fields is not an error (the
    /// existing one is returned); with different fields it is a conflict.
    pub fn create(
        &mut self,
        new: NewAuthorization,
        now: DateTime<Utc>,
    ) -> Result<(AuthorizationView, Created), ModelError> {
        AuthorizationId::parse(new.id.as_str()).map_err(|e| ModelError::Invalid(e.to_string()))?;
        let currency = Currency::parse(&new.currency.to_ascii_uppercase())
            .map_err(|e| ModelError::Invalid(e.to_string()))?;
        if new.amount <= 0 {
            return Err(ModelError::Invalid(format!(
                "amount must be a positive integer in minor units, got {}",
                new.amount
            )));
        }
        let max_captures = new.max_captures.unwrap_or(DEFAULT_MAX_CAPTURES);
        if max_captures == 0 {
            return Err(ModelError::Invalid(
                "max_captures must be at least 1".to_owned(),
            ));
        }
        let scenario = new.scenario.clone().unwrap_or_default();
        scenario.validate()?;
        let mut spec = new;
        spec.currency = currency.code().to_owned();
        if let Some(same) = self.authorizations.get(&spec.id).map(|e| e.spec == spec) {
            if !same {
                return Err(ModelError::Conflict { id: spec.id });
            }
            self.settle(&spec.id, now);
            let existing = self.get_mut(&spec.id)?;
            existing.refresh(now);
            return Ok((existing.view(), Created::AlreadyExisted));
        }
        let expires_at = match spec.expires_at {
            Some(at) => at,
            None => now
                .checked_add_signed(Duration::days(DEFAULT_AUTHORIZATION_DAYS))
                .ok_or_else(|| ModelError::Invalid("creation time out of range".to_owned()))?,
        };
        self.charges = self.charges.checked_add(1).ok_or(ModelError::Overflow)?;
        let mut auth = Authorization {
            id: spec.id.clone(),
            amount: spec.amount,
            amount_capturable: spec.amount,
            amount_received: 0,
            currency,
            status: Status::RequiresCapture,
            cancellation_reason: None,
            canceled_at: None,
            created: now,
            expires_at,
            max_captures,
            latest_charge: format!("ch_sbx{:016x}", mix(self.charges)),
            metadata: BTreeMap::new(),
            captures: Vec::new(),
            pending: Vec::new(),
            declined: Vec::new(),
            capture_requests: 0,
            adjustments: 0,
            honor_until: None,
            reauthorization_of: None,
            reauthorized_as: None,
            scenario: Scenario::default(),
            rng: Prng::new(0),
            spec,
        };
        auth.set_scenario(scenario);
        auth.refresh(now);
        let view = auth.view();
        self.authorizations.insert(auth.id.clone(), auth);
        Ok((view, Created::New))
    }

    /// Replaces an authorization's scenario. The capture-request count keeps running.
    pub fn set_scenario(&mut self, id: &str, scenario: Scenario) -> Result<(), ModelError> {
        scenario.validate()?;
        let auth = self.get_mut(id)?;
        auth.set_scenario(scenario);
        Ok(())
    }

    pub fn contains(&self, id: &str) -> bool {
        self.authorizations.contains_key(id)
    }

    /// The authorization as of `now` (expiry applied).
    pub fn view(&mut self, id: &str, now: DateTime<Utc>) -> Option<AuthorizationView> {
        self.settle(id, now);
        let auth = self.authorizations.get_mut(id)?;
        auth.refresh(now);
        Some(auth.view())
    }

    /// The scenario latency of an authorization, in milliseconds; 0 for an unknown id.
    pub fn latency_ms(&self, id: &str) -> u64 {
        self.authorizations
            .get(id)
            .map_or(0, |a| a.scenario.latency_ms)
    }

    /// The fault for the next executed capture request: the next queued one, else a random
    /// draw when rates are set, else none.
    pub fn next_fault(&mut self, id: &str) -> Option<Fault> {
        let auth = self.authorizations.get_mut(id)?;
        if !auth.scenario.faults.is_empty() {
            return Some(auth.scenario.faults.remove(0));
        }
        let rates = auth.scenario.rates.clone()?;
        let roll = auth.rng.next_u64() % 100;
        let mut edge = 0u64;
        let table = [
            (rates.server_error_pct, Fault::ServerErrorSaved),
            (
                rates.timeout_pct,
                Fault::Timeout {
                    delay_ms: rates.timeout_ms,
                },
            ),
            (
                rates.lost_response_pct,
                Fault::LostResponse {
                    delay_ms: rates.timeout_ms,
                },
            ),
            (
                rates.rate_limited_pct,
                Fault::RateLimited {
                    retry_after_secs: 1,
                },
            ),
            (
                rates.stored_error_before_pct,
                Fault::StoredErrorBeforeCapture,
            ),
            (rates.stored_error_after_pct, Fault::StoredErrorAfterCapture),
        ];
        for (pct, fault) in table {
            edge += u64::from(pct);
            if roll < edge {
                return Some(fault);
            }
        }
        None
    }

    /// Executes a capture: state checks, the scenario's decline, then the money.
    pub fn capture(
        &mut self,
        id: &str,
        command: &CaptureCommand,
        now: DateTime<Utc>,
    ) -> Result<Captured, ModelError> {
        self.settle(id, now);
        let auth = self.get_mut(id)?;
        auth.refresh(now);
        auth.capture_requests = auth
            .capture_requests
            .checked_add(1)
            .ok_or(ModelError::Overflow)?;
        if auth.cancellation_reason == Some(CancellationReason::Expired) {
            return Err(ModelError::Expired);
        }
        if auth.status != Status::RequiresCapture {
            return Err(ModelError::UnexpectedState {
                status: auth.status,
                action: "captured",
            });
        }
        let done = u32::try_from(auth.captures.len() + auth.pending.len())
            .map_err(|_| ModelError::Overflow)?;
        if auth.pending.iter().any(|p| p.is_final) {
            return Err(ModelError::UnexpectedState {
                status: auth.status,
                action: "captured again (a final capture is pending)",
            });
        }
        if done >= auth.max_captures {
            return Err(ModelError::LimitReached {
                limit: auth.max_captures,
            });
        }
        let amount = command.amount.unwrap_or(auth.amount_capturable);
        if amount < 1 {
            return Err(ModelError::AmountTooSmall { requested: amount });
        }
        if amount > auth.amount_capturable {
            return Err(ModelError::AmountTooLarge {
                requested: amount,
                capturable: auth.amount_capturable,
            });
        }
        if auth.scenario.decline_on_capture == Some(auth.capture_requests) {
            return Err(ModelError::Declined {
                decline_code: auth
                    .scenario
                    .decline_code
                    .clone()
                    .unwrap_or_else(|| DEFAULT_DECLINE_CODE.to_owned()),
            });
        }
        let received = auth
            .amount_received
            .checked_add(amount)
            .ok_or(ModelError::Overflow)?;
        let capturable = auth
            .amount_capturable
            .checked_sub(amount)
            .ok_or(ModelError::Overflow)?;
        auth.amount_received = received;
        auth.amount_capturable = capturable;
        if command.is_final {
            auth.amount_capturable = 0;
            auth.status = Status::Succeeded;
        }
        auth.apply_metadata(&command.metadata);
        auth.captures.push(CaptureRecord {
            amount,
            is_final: command.is_final,
            idempotency_key: command.idempotency_key.clone(),
            at: now,
            reference: command.reference.clone(),
        });
        Ok(Captured {
            amount,
            view: auth.view(),
        })
    }

    /// Increments or extends a hold that is still capturable (see [`Adjustment`]). A refused
    /// adjustment (the scenario's `decline_adjustments`) still counts against the limit and
    /// changes nothing else.
    pub fn adjust(
        &mut self,
        id: &str,
        adjustment: Adjustment,
        now: DateTime<Utc>,
    ) -> Result<AuthorizationView, ModelError> {
        self.settle(id, now);
        let auth = self.get_mut(id)?;
        auth.refresh(now);
        if auth.cancellation_reason == Some(CancellationReason::Expired) {
            return Err(ModelError::Expired);
        }
        if auth.status != Status::RequiresCapture {
            return Err(ModelError::UnexpectedState {
                status: auth.status,
                action: "adjusted",
            });
        }
        if adjustment.before_first_capture && (auth.amount_received > 0 || !auth.pending.is_empty())
        {
            return Err(ModelError::NotAdjustable {
                why: "it has been partly captured",
            });
        }
        if adjustment
            .max_adjustments
            .is_some_and(|max| auth.adjustments >= max)
        {
            return Err(ModelError::NotAdjustable {
                why: "it has been adjusted as many times as allowed",
            });
        }
        if let Some(total) = adjustment.new_total
            && total < auth.amount
        {
            return Err(ModelError::Invalid(format!(
                "the new total {total} is below the authorized amount {}",
                auth.amount
            )));
        }
        auth.adjustments = auth
            .adjustments
            .checked_add(1)
            .ok_or(ModelError::Overflow)?;
        if auth.scenario.decline_adjustments {
            return Err(ModelError::AdjustmentDeclined);
        }
        if let Some(total) = adjustment.new_total {
            let increase = total - auth.amount;
            auth.amount_capturable = auth
                .amount_capturable
                .checked_add(increase)
                .ok_or(ModelError::Overflow)?;
            auth.amount = total;
        }
        if let Some(renew) = adjustment.renew_for {
            let until = now.checked_add_signed(renew).ok_or(ModelError::Overflow)?;
            auth.expires_at = auth.expires_at.max(until);
        }
        Ok(auth.view())
    }

    /// PayPal's reauthorization: a new authorization `new_id` for `amount` (at most what is
    /// left) with a new honor period, valid until the original's expiry; the original keeps
    /// its captures and can capture no more. Once per original; never of a reauthorization.
    pub fn reauthorize(
        &mut self,
        id: &str,
        new_id: &str,
        amount: i64,
        honor: Duration,
        now: DateTime<Utc>,
    ) -> Result<AuthorizationView, ModelError> {
        self.settle(id, now);
        let charges = self.charges.checked_add(1).ok_or(ModelError::Overflow)?;
        let auth = self.get_mut(id)?;
        auth.refresh(now);
        if auth.cancellation_reason == Some(CancellationReason::Expired) {
            return Err(ModelError::Expired);
        }
        if auth.status != Status::RequiresCapture {
            return Err(ModelError::UnexpectedState {
                status: auth.status,
                action: "reauthorized",
            });
        }
        if auth.reauthorization_of.is_some() || auth.reauthorized_as.is_some() {
            return Err(ModelError::NotAdjustable {
                why: "it is, or already has, a reauthorization",
            });
        }
        if !auth.pending.is_empty() {
            return Err(ModelError::NotAdjustable {
                why: "a capture is pending",
            });
        }
        if amount < 1 || amount > auth.amount_capturable {
            return Err(ModelError::AmountTooLarge {
                requested: amount,
                capturable: auth.amount_capturable,
            });
        }
        auth.adjustments = auth
            .adjustments
            .checked_add(1)
            .ok_or(ModelError::Overflow)?;
        if auth.scenario.decline_adjustments {
            return Err(ModelError::AdjustmentDeclined);
        }
        let honor_until = now.checked_add_signed(honor).ok_or(ModelError::Overflow)?;
        let mut new = auth.clone();
        auth.reauthorized_as = Some(new_id.to_owned());
        auth.amount_capturable = 0;
        auth.status = Status::Succeeded;
        new.spec.id = new_id.to_owned();
        new.spec.amount = amount;
        new.id = new_id.to_owned();
        new.amount = amount;
        new.amount_capturable = amount;
        new.amount_received = 0;
        new.created = now;
        new.captures = Vec::new();
        new.declined = Vec::new();
        new.capture_requests = 0;
        new.adjustments = 0;
        new.honor_until = Some(honor_until);
        new.reauthorization_of = Some(id.to_owned());
        new.reauthorized_as = None;
        new.latest_charge = format!("ch_sbx{:016x}", mix(charges));
        self.charges = charges;
        let view = new.view();
        self.authorizations.insert(new_id.to_owned(), new);
        Ok(view)
    }

    /// Sets the end of an authorization's honor period (PayPal's dialect, at creation).
    pub fn set_honor_until(&mut self, id: &str, until: DateTime<Utc>) -> Result<(), ModelError> {
        self.get_mut(id)?.honor_until = Some(until);
        Ok(())
    }

    /// Cancels an authorization that is still capturable, releasing the remainder.
    pub fn cancel(
        &mut self,
        id: &str,
        reason: Option<CancellationReason>,
        now: DateTime<Utc>,
    ) -> Result<AuthorizationView, ModelError> {
        self.settle(id, now);
        let auth = self.get_mut(id)?;
        auth.refresh(now);
        if auth.status != Status::RequiresCapture {
            return Err(ModelError::UnexpectedState {
                status: auth.status,
                action: "canceled",
            });
        }
        auth.status = Status::Canceled;
        auth.cancellation_reason = reason;
        auth.canceled_at = Some(now);
        auth.amount_capturable = 0;
        Ok(auth.view())
    }

    /// Accepts an asynchronous capture: the same checks as [`Model::capture`] (the scenario's
    /// decline is decided now and applied when it settles), then its amount is held until
    /// `settles_at`.
    pub fn accept(
        &mut self,
        id: &str,
        acceptance: Acceptance,
        now: DateTime<Utc>,
    ) -> Result<AuthorizationView, ModelError> {
        self.settle(id, now);
        let auth = self.get_mut(id)?;
        auth.refresh(now);
        auth.capture_requests = auth
            .capture_requests
            .checked_add(1)
            .ok_or(ModelError::Overflow)?;
        if auth.cancellation_reason == Some(CancellationReason::Expired) {
            return Err(ModelError::Expired);
        }
        if auth.status != Status::RequiresCapture || auth.pending.iter().any(|p| p.is_final) {
            return Err(ModelError::UnexpectedState {
                status: auth.status,
                action: "captured",
            });
        }
        let done = u32::try_from(auth.captures.len() + auth.pending.len())
            .map_err(|_| ModelError::Overflow)?;
        if done >= auth.max_captures {
            return Err(ModelError::LimitReached {
                limit: auth.max_captures,
            });
        }
        let command = acceptance.command;
        let amount = command.amount.unwrap_or(auth.amount_capturable);
        if amount < 1 {
            return Err(ModelError::AmountTooSmall { requested: amount });
        }
        if amount > auth.amount_capturable {
            return Err(ModelError::AmountTooLarge {
                requested: amount,
                capturable: auth.amount_capturable,
            });
        }
        let decline =
            (auth.scenario.decline_on_capture == Some(auth.capture_requests)).then(|| {
                auth.scenario
                    .decline_code
                    .clone()
                    .unwrap_or_else(|| DEFAULT_DECLINE_CODE.to_owned())
            });
        auth.amount_capturable = auth
            .amount_capturable
            .checked_sub(amount)
            .ok_or(ModelError::Overflow)?;
        auth.apply_metadata(&command.metadata);
        auth.pending.push(PendingCapture {
            reference: acceptance.reference,
            channel: acceptance.channel,
            amount,
            is_final: command.is_final,
            idempotency_key: command.idempotency_key,
            merchant_reference: acceptance.merchant_reference,
            account: acceptance.account,
            accepted_at: now,
            settles_at: acceptance.settles_at,
            decline,
            ledger_seq: acceptance.ledger_seq,
        });
        Ok(auth.view())
    }

    /// Releases what is left of a capturable authorization without a capture (a final
    /// capture of nothing): `succeeded` when something was captured, else `canceled`.
    pub fn close(&mut self, id: &str, now: DateTime<Utc>) -> Result<AuthorizationView, ModelError> {
        self.settle(id, now);
        let auth = self.get_mut(id)?;
        auth.refresh(now);
        if auth.status != Status::RequiresCapture || !auth.pending.is_empty() {
            return Err(ModelError::UnexpectedState {
                status: auth.status,
                action: "closed",
            });
        }
        auth.amount_capturable = 0;
        if auth.amount_received > 0 {
            auth.status = Status::Succeeded;
        } else {
            auth.status = Status::Canceled;
            auth.canceled_at = Some(now);
        }
        Ok(auth.view())
    }

    /// Settles the authorization's pending captures that are due at `now`: their money moves
    /// (or their hold is released, when declined), their ledger entries say so, and each is
    /// queued for notification.
    pub fn settle(&mut self, id: &str, now: DateTime<Utc>) {
        let Some(auth) = self.authorizations.get_mut(id) else {
            return;
        };
        if auth.pending.iter().all(|p| p.settles_at > now) {
            return;
        }
        let (due, waiting): (Vec<PendingCapture>, Vec<PendingCapture>) =
            std::mem::take(&mut auth.pending)
                .into_iter()
                .partition(|p| p.settles_at <= now);
        auth.pending = waiting;
        let mut entries = Vec::new();
        for p in due {
            match &p.decline {
                Some(code) => {
                    if auth.status == Status::RequiresCapture {
                        auth.amount_capturable = auth.amount_capturable.saturating_add(p.amount);
                    }
                    auth.declined.push(DeclinedCapture {
                        reference: p.reference.clone(),
                        amount: p.amount,
                        decline_code: code.clone(),
                        at: p.settles_at,
                    });
                    entries.push((p.ledger_seq, LedgerOutcome::Declined, 0));
                }
                None => {
                    auth.amount_received = auth.amount_received.saturating_add(p.amount);
                    if p.is_final && auth.status == Status::RequiresCapture {
                        auth.amount_capturable = 0;
                        auth.status = Status::Succeeded;
                    }
                    auth.captures.push(CaptureRecord {
                        amount: p.amount,
                        is_final: p.is_final,
                        idempotency_key: p.idempotency_key.clone(),
                        at: p.settles_at,
                        reference: Some(p.reference.clone()),
                    });
                    entries.push((p.ledger_seq, LedgerOutcome::Captured, p.amount));
                }
            }
            self.outbox.push(Settled {
                authorization_id: auth.id.clone(),
                channel: p.channel,
                reference: p.reference,
                merchant_reference: p.merchant_reference,
                account: p.account,
                amount: p.amount,
                currency: auth.currency,
                is_final: p.is_final,
                decline: p.decline,
                silent: auth.scenario.silent,
                at: p.settles_at,
            });
        }
        auth.refresh(now);
        for (seq, outcome, moved) in entries {
            if let Some(entry) = self.ledger.iter_mut().find(|e| e.seq == seq) {
                entry.outcome = outcome;
                entry.captured_amount = moved;
            }
        }
    }

    /// The settled captures not yet handed out for notification.
    pub fn take_outbox(&mut self) -> Vec<Settled> {
        std::mem::take(&mut self.outbox)
    }

    /// Whether this read-back of the authorization fails (its scenario's `failed_reads`,
    /// consumed one per read).
    pub fn read_fails(&mut self, id: &str) -> bool {
        match self.authorizations.get_mut(id) {
            Some(a) if a.scenario.failed_reads > 0 => {
                a.scenario.failed_reads -= 1;
                true
            }
            _ => false,
        }
    }

    /// Whether the authorization's scenario loses its notifications.
    pub fn silent(&self, id: &str) -> bool {
        self.authorizations
            .get(id)
            .is_some_and(|a| a.scenario.silent)
    }

    /// The scenario's settle delay for an authorization.
    pub fn settle_after_ms(&self, id: &str) -> Option<u64> {
        self.authorizations
            .get(id)
            .and_then(|a| a.scenario.settle_after_ms)
    }

    /// Adds a ledger entry; entries are kept in arrival (`seq`) order whatever order they are
    /// recorded in.
    pub fn record(&mut self, entry: LedgerEntry) {
        let at = self.ledger.partition_point(|e| e.seq < entry.seq);
        self.ledger.insert(at, entry);
    }

    /// The ledger in arrival order, optionally only one authorization's requests.
    pub fn ledger(&self, authorization_id: Option<&str>) -> Vec<LedgerEntry> {
        self.ledger
            .iter()
            .filter(|e| authorization_id.is_none_or(|id| e.authorization_id.as_deref() == Some(id)))
            .cloned()
            .collect()
    }

    fn get_mut(&mut self, id: &str) -> Result<&mut Authorization, ModelError> {
        self.authorizations
            .get_mut(id)
            .ok_or_else(|| ModelError::NotFound { id: id.to_owned() })
    }
}

/// What identifies a request for idempotency: the path and every parameter, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub path: String,
    pub params: Vec<(String, String)>,
}

impl Fingerprint {
    pub fn new(path: impl Into<String>, mut params: Vec<(String, String)>) -> Self {
        params.sort();
        Fingerprint {
            path: path.into(),
            params,
        }
    }
}

/// What the idempotency store says about a request carrying a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim<R> {
    /// First use (or the earlier use saved nothing): the key is now in progress.
    Claimed,
    /// The saved answer to replay.
    Replay(R),
    /// The key was first used with other parameters or another path.
    Mismatch { original_path: String },
    /// Another request with this key is executing.
    InProgress,
}

#[derive(Debug, Clone)]
enum Slot<R> {
    InProgress { fingerprint: Fingerprint },
    Done { fingerprint: Fingerprint, saved: R },
}

/// Idempotency keys and the first answer saved under each, as Stripe keeps them: one
/// namespace of keys per account, each bound to the path and parameters of its first use.
/// Nothing is pruned: the sandbox lives shorter than Stripe's 24 hours.
#[derive(Debug, Clone)]
pub struct IdempotencyStore<R> {
    slots: HashMap<String, Slot<R>>,
}

impl<R> Default for IdempotencyStore<R> {
    fn default() -> Self {
        IdempotencyStore {
            slots: HashMap::new(),
        }
    }
}

impl<R: Clone> IdempotencyStore<R> {
    /// Looks the key up and, when it is free, marks it in progress with this fingerprint.
    pub fn claim(&mut self, key: &str, fingerprint: &Fingerprint) -> Claim<R> {
        match self.slots.get(key) {
            Some(Slot::InProgress { .. }) => Claim::InProgress,
            Some(Slot::Done {
                fingerprint: first,
                saved,
            }) => {
                if first == fingerprint {
                    Claim::Replay(saved.clone())
                } else {
                    Claim::Mismatch {
                        original_path: first.path.clone(),
                    }
                }
            }
            None => {
                self.slots.insert(
                    key.to_owned(),
                    Slot::InProgress {
                        fingerprint: fingerprint.clone(),
                    },
                );
                Claim::Claimed
            }
        }
    }

    /// Saves the answer of a claimed key; later requests with the key get it replayed.
    pub fn save(&mut self, key: &str, saved: R) {
        if let Some(slot) = self.slots.remove(key) {
            let fingerprint = match slot {
                Slot::InProgress { fingerprint } | Slot::Done { fingerprint, .. } => fingerprint,
            };
            self.slots
                .insert(key.to_owned(), Slot::Done { fingerprint, saved });
        }
    }

    /// Frees a claimed key without saving anything, so it can be retried.
    pub fn release(&mut self, key: &str) {
        if matches!(self.slots.get(key), Some(Slot::InProgress { .. })) {
            self.slots.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap()
    }

    fn cmd(amount: Option<i64>, is_final: bool) -> CaptureCommand {
        CaptureCommand {
            amount,
            is_final,
            idempotency_key: None,
            metadata: MetadataUpdate::default(),
            reference: None,
        }
    }

    #[test]
    fn partial_captures_draw_down_and_a_final_capture_releases_the_rest() {
        let mut m = Model::new();
        m.create(NewAuthorization::new("pi_1", 1000, "usd"), t0())
            .unwrap();
        let c = m.capture("pi_1", &cmd(Some(300), false), t0()).unwrap();
        assert_eq!(
            (c.view.amount_received, c.view.amount_capturable),
            (300, 700)
        );
        let c = m.capture("pi_1", &cmd(Some(200), true), t0()).unwrap();
        assert_eq!((c.view.amount_received, c.view.amount_capturable), (500, 0));
        assert_eq!(c.view.status, Status::Succeeded);
        assert!(matches!(
            m.capture("pi_1", &cmd(Some(1), true), t0()),
            Err(ModelError::UnexpectedState { .. })
        ));
    }

    #[test]
    fn a_hold_past_its_deadline_is_canceled_and_refuses_captures() {
        let mut m = Model::new();
        let mut new = NewAuthorization::new("pi_1", 1000, "USD");
        new.expires_at = Some(t0() + Duration::hours(1));
        m.create(new, t0()).unwrap();
        let later = t0() + Duration::hours(2);
        assert_eq!(
            m.capture("pi_1", &cmd(None, true), later),
            Err(ModelError::Expired)
        );
        let v = m.view("pi_1", later).unwrap();
        assert_eq!(v.status, Status::Canceled);
        assert_eq!(v.cancellation_reason, Some(CancellationReason::Expired));
    }

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        let draw = || {
            let mut m = Model::new();
            let mut new = NewAuthorization::new("pi_1", 1000, "USD");
            new.scenario = Some(Scenario {
                rates: Some(FaultRates {
                    seed: 7,
                    server_error_pct: 25,
                    timeout_pct: 25,
                    lost_response_pct: 15,
                    rate_limited_pct: 0,
                    stored_error_before_pct: 5,
                    stored_error_after_pct: 5,
                    timeout_ms: 10,
                }),
                ..Scenario::default()
            });
            m.create(new, t0()).unwrap();
            (0..64).map(|_| m.next_fault("pi_1")).collect::<Vec<_>>()
        };
        let a = draw();
        assert_eq!(a, draw());
        assert!(a.iter().any(Option::is_none));
        assert!(a.contains(&Some(Fault::ServerErrorSaved)));
        assert!(a.contains(&Some(Fault::StoredErrorBeforeCapture)));
        assert!(a.contains(&Some(Fault::StoredErrorAfterCapture)));
        assert!(
            !a.iter()
                .any(|f| matches!(f, Some(Fault::RateLimited { .. })))
        );
    }

    #[test]
    fn rates_over_one_hundred_percent_are_refused() {
        let s = Scenario {
            rates: Some(FaultRates {
                server_error_pct: 60,
                timeout_pct: 50,
                ..FaultRates::default()
            }),
            ..Scenario::default()
        };
        assert!(s.validate().is_err());
    }

    #[test]
    fn a_key_binds_to_its_first_parameters() {
        let mut store = IdempotencyStore::<u16>::default();
        let a = Fingerprint::new("/p", vec![("amount".into(), "1".into())]);
        let b = Fingerprint::new("/p", vec![("amount".into(), "2".into())]);
        assert_eq!(store.claim("k", &a), Claim::Claimed);
        assert_eq!(store.claim("k", &a), Claim::InProgress);
        store.save("k", 200);
        assert_eq!(store.claim("k", &a), Claim::Replay(200));
        assert!(matches!(store.claim("k", &b), Claim::Mismatch { .. }));
        assert_eq!(store.claim("k2", &b), Claim::Claimed);
        store.release("k2");
        assert_eq!(store.claim("k2", &a), Claim::Claimed);
    }

    #[test]
    fn scenarios_read_from_snake_case_json() {
        let s: Scenario = serde_json::from_str(
            r#"{"decline_on_capture":2,"faults":[{"kind":"server_error_saved"},{"kind":"lost_response","delay_ms":3000},{"kind":"rate_limited"}]}"#,
        )
        .unwrap();
        assert_eq!(s.decline_on_capture, Some(2));
        assert_eq!(
            s.faults,
            vec![
                Fault::ServerErrorSaved,
                Fault::LostResponse { delay_ms: 3000 },
                Fault::RateLimited {
                    retry_after_secs: 1
                }
            ]
        );
        assert!(serde_json::from_str::<Scenario>(r#"{"fault":[]}"#).is_err());
        assert!(serde_json::from_str::<Scenario>(r#"{"faults":[{"kind":"boom"}]}"#).is_err());
    }
}

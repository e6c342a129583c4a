//! What a payment provider can do, as data the capture plan reads.
//!
//! Each provider adapter publishes one [`Capabilities`] record; operators may narrow it per
//! merchant (for example a Stripe account without multicapture). Pure: no I/O.

use chrono::Duration;

use super::allocation::OverCaptureAllowance;
use super::currency::Currency;
use super::money::MinorUnits;

/// How many captures one authorization accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMode {
    /// Several partial captures, optionally at most `max_captures` of them (Stripe 50,
    /// Checkout.com 150). When the limit is near, the plan coalesces so that the last allowed
    /// capture is the final one.
    Multiple { max_captures: Option<u32> },
    /// One capture only: the plan accumulates shipped value and captures once, when the order
    /// completes or the authorization deadline approaches.
    Single,
}

/// Whether the capture request carries a "final" flag that releases the rest of the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalFlag {
    /// The adapter sends the flag on every capture, true or false (Stripe, Gr4vy,
    /// Checkout.com, PayPal; their defaults differ, so it is never left out).
    Explicit,
    /// There is no flag: the remainder must be released with the provider's cancel call after
    /// the last capture (Adyen).
    Absent,
}

/// How the remainder of an authorization is released when the order completes with nothing
/// left to capture after earlier, non-final captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseMethod {
    /// A final capture of amount 0.
    ZeroAmountFinalCapture,
    /// The provider's cancel or void call on the authorization.
    Cancel,
}

/// A provider's capture rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub mode: CaptureMode,
    pub final_flag: FinalFlag,
    pub release: ReleaseMethod,
    pub over_capture: OverCaptureAllowance,
    /// How long an authorization stays capturable when checkout did not send `expires_at`.
    pub authorization_window: Option<Duration>,
    /// How long before the deadline deferred value is captured rather than kept waiting.
    pub capture_ahead: Duration,
    /// The provider's documented minimum capture per currency (ISO code, minor units); a
    /// currency not listed has none. A capture below it is refused by the provider, so the
    /// plan carries such a value into the order's next capture.
    pub minimums: &'static [(&'static str, i64)],
    /// The provider's amount step per currency (ISO code, minor units): every capture in that
    /// currency must be a whole multiple of it, because the provider takes the currency with
    /// fewer decimals than ISO 4217 gives it. A currency not listed has step 1. The plan
    /// carries the part of a capture that is not a whole step into the order's next capture.
    pub steps: &'static [(&'static str, i64)],
}

/// Stripe's minimum charge amounts per currency, in minor units
/// (docs.stripe.com/currencies#minimum-and-maximum-charge-amounts; below them Stripe answers
/// `amount_too_small`). The page gives them per settlement currency; each capture is treated
/// as subject to them.
pub const STRIPE_MINIMUMS: &[(&str, i64)] = &[
    ("USD", 50),
    ("AED", 200),
    ("AUD", 50),
    ("BGN", 100),
    ("BRL", 50),
    ("CAD", 50),
    ("CHF", 50),
    ("CZK", 1500),
    ("DKK", 250),
    ("EUR", 50),
    ("GBP", 30),
    ("HKD", 400),
    ("HUF", 17500),
    ("INR", 50),
    ("JPY", 50),
    ("MXN", 1000),
    ("MYR", 200),
    ("NOK", 300),
    ("NZD", 50),
    ("PLN", 200),
    ("RON", 200),
    ("SEK", 300),
    ("SGD", 50),
    ("THB", 1000),
];

/// PayPal takes HUF and TWD without decimals ("This currency does not support decimals. If
/// you pass a decimal amount, an error occurs", developer.paypal.com/docs/api/reference/currency-codes/;
/// a decimal amount is answered 422 `DECIMALS_NOT_SUPPORTED`). ISO 4217 gives both two
/// decimals, so a capture must be a multiple of 100 minor units. JPY has no decimals in ISO
/// 4217 either, so it needs no step.
pub const PAYPAL_STEPS: &[(&str, i64)] = &[("HUF", 100), ("TWD", 100)];

/// Checkout.com takes the three-decimal currencies with the last digit 0 ("The last digit
/// must always be a 0", www.checkout.com/docs/payments/accept-payments/format-the-amount-value),
/// so a capture in them must be a multiple of 10 minor units.
pub const CHECKOUT_STEPS: &[(&str, i64)] = &[
    ("BHD", 10),
    ("IQD", 10),
    ("JOD", 10),
    ("KWD", 10),
    ("LYD", 10),
    ("OMR", 10),
    ("TND", 10),
];

/// Adyen takes CVE with no decimals although ISO 4217 gives it two ("Some currencies have an
/// exponent that differs from standard", docs.adyen.com/development-resources/currency-codes:
/// CVE 0), so a capture in CVE must be whole escudos, a multiple of 100 minor units.
pub const ADYEN_STEPS: &[(&str, i64)] = &[("CVE", 100)];

/// Looks up a provider's capabilities by name; `None` for a provider this worker cannot use.
///
/// The use cases (intake, the expiry sweep, resume, the HTTP order check) plan through it; the
/// provider registry implements it.
pub trait CapabilityLookup: Send + Sync {
    fn capabilities(&self, provider: &str) -> Option<Capabilities>;
}

impl Capabilities {
    /// The amount step in `currency`: every capture is a whole multiple of it. 1 when the
    /// provider takes the currency as ISO 4217 gives it.
    pub fn step_for(&self, currency: Currency) -> MinorUnits {
        self.steps
            .iter()
            .find(|(code, _)| *code == currency.code())
            .and_then(|&(_, minor)| MinorUnits::new(minor).ok())
            .filter(|step| step.get() > 0)
            .unwrap_or(MinorUnits::ONE)
    }

    /// The minimum capture in `currency`, when the provider documents one.
    pub fn minimum_for(&self, currency: Currency) -> Option<MinorUnits> {
        self.minimums
            .iter()
            .find(|(code, _)| *code == currency.code())
            .and_then(|&(_, minor)| MinorUnits::new(minor).ok())
    }
}

impl Capabilities {
    /// Multi-capture with an explicit final flag and no limits: the shape most tests start from.
    pub fn multi_capture() -> Self {
        Capabilities {
            mode: CaptureMode::Multiple { max_captures: None },
            final_flag: FinalFlag::Explicit,
            release: ReleaseMethod::ZeroAmountFinalCapture,
            over_capture: OverCaptureAllowance::NONE,
            authorization_window: None,
            capture_ahead: Duration::hours(12),
            minimums: &[],
            steps: &[],
        }
    }

    /// Stripe's PaymentIntent multicapture: up to 50 captures, `final_capture` explicit, about
    /// seven days to capture, and the remainder released by a final capture of the rest
    /// (a zero-amount final capture is not accepted, so the cancel call releases it), and
    /// Stripe's per-currency minimum charge amounts ([`STRIPE_MINIMUMS`]).
    pub fn stripe() -> Self {
        Capabilities {
            mode: CaptureMode::Multiple {
                max_captures: Some(50),
            },
            final_flag: FinalFlag::Explicit,
            release: ReleaseMethod::Cancel,
            over_capture: OverCaptureAllowance::NONE,
            authorization_window: Some(Duration::days(7)),
            capture_ahead: Duration::hours(12),
            minimums: STRIPE_MINIMUMS,
            steps: &[],
        }
    }

    /// Gr4vy multi-capture: no documented count limit, `final` explicit (Gr4vy defaults it to
    /// `true`), and the remainder after non-final captures released by a final capture of
    /// amount 0 (the capture schema allows 0; an order with nothing captured is voided
    /// instead). The authorization window depends on the connection; seven days is the
    /// common card-not-present hold.
    pub fn gr4vy() -> Self {
        Capabilities {
            mode: CaptureMode::Multiple { max_captures: None },
            final_flag: FinalFlag::Explicit,
            release: ReleaseMethod::ZeroAmountFinalCapture,
            over_capture: OverCaptureAllowance::NONE,
            authorization_window: Some(Duration::days(7)),
            capture_ahead: Duration::hours(12),
            minimums: &[],
            steps: &[],
        }
    }

    /// Adyen multiple partial captures (enabled on the merchant account): no final flag, so the
    /// remainder is released with Adyen's cancel call after the last capture. CVE captures are
    /// whole escudos ([`ADYEN_STEPS`]).
    pub fn adyen() -> Self {
        Capabilities {
            mode: CaptureMode::Multiple { max_captures: None },
            final_flag: FinalFlag::Absent,
            release: ReleaseMethod::Cancel,
            over_capture: OverCaptureAllowance::NONE,
            authorization_window: Some(Duration::days(7)),
            capture_ahead: Duration::hours(12),
            minimums: &[],
            steps: ADYEN_STEPS,
        }
    }

    /// Checkout.com: at most 150 partial actions per payment (the worker makes no refunds,
    /// so all 150 are captures), `capture_type` `Final`/`NonFinal` explicit, the remainder
    /// released by a void, and the payment voided by Checkout.com after seven days. Captures in
    /// the three-decimal currencies are whole multiples of 10 ([`CHECKOUT_STEPS`]).
    pub fn checkout() -> Self {
        Capabilities {
            mode: CaptureMode::Multiple {
                max_captures: Some(150),
            },
            final_flag: FinalFlag::Explicit,
            release: ReleaseMethod::Cancel,
            over_capture: OverCaptureAllowance::NONE,
            authorization_window: Some(Duration::days(7)),
            capture_ahead: Duration::hours(12),
            minimums: &[],
            steps: CHECKOUT_STEPS,
        }
    }

    /// PayPal authorizations: `final_capture` explicit (PayPal defaults it to `false`), the
    /// remainder released by voiding the authorization, valid for 29 days. The count limit is
    /// per account (`MAX_CAPTURE_COUNT_EXCEEDED`), so none is assumed here; over-capture
    /// (up to 115 % or +75 USD) needs account eligibility and is not planned for. HUF and TWD
    /// captures are whole units ([`PAYPAL_STEPS`]).
    pub fn paypal() -> Self {
        Capabilities {
            mode: CaptureMode::Multiple { max_captures: None },
            final_flag: FinalFlag::Explicit,
            release: ReleaseMethod::Cancel,
            over_capture: OverCaptureAllowance::NONE,
            authorization_window: Some(Duration::days(29)),
            capture_ahead: Duration::hours(12),
            minimums: &[],
            steps: PAYPAL_STEPS,
        }
    }

    /// Hellgate: one capture per payment, sent when the order completes (or the deadline
    /// nears). The single capture closes the payment, so no cancel follows it; the final flag
    /// is recorded as explicit for that reason (no release after the capture), although
    /// Hellgate's request carries none. An order with nothing captured is voided.
    pub fn hellgate() -> Self {
        Capabilities {
            mode: CaptureMode::Single,
            final_flag: FinalFlag::Explicit,
            release: ReleaseMethod::Cancel,
            over_capture: OverCaptureAllowance::NONE,
            authorization_window: Some(Duration::days(7)),
            capture_ahead: Duration::hours(12),
            minimums: &[],
            steps: &[],
        }
    }

    /// The orchestrator's transactions API: whether a follow-on capture is allowed depends on
    /// the merchant's processor connection, so `max_captures` comes from the merchant's
    /// settings — `None` or `Some(1)` is a single capture (the default), `Some(n)` allows up
    /// to `n`. There is no final flag and no documented void, so no release call follows a
    /// capture (the flag is recorded as explicit for that reason); what is left lapses with
    /// the authorization.
    pub fn orchestrator(max_captures: Option<u32>) -> Self {
        let mode = match max_captures {
            None | Some(0 | 1) => CaptureMode::Single,
            Some(n) => CaptureMode::Multiple {
                max_captures: Some(n),
            },
        };
        Capabilities {
            mode,
            final_flag: FinalFlag::Explicit,
            release: ReleaseMethod::Cancel,
            over_capture: OverCaptureAllowance::NONE,
            authorization_window: Some(Duration::days(7)),
            capture_ahead: Duration::hours(12),
            minimums: &[],
            steps: &[],
        }
    }

    /// One capture per authorization (Hellgate, or a processor connection without follow-ons).
    pub fn single_capture() -> Self {
        Capabilities {
            mode: CaptureMode::Single,
            final_flag: FinalFlag::Absent,
            release: ReleaseMethod::Cancel,
            over_capture: OverCaptureAllowance::NONE,
            authorization_window: Some(Duration::days(7)),
            capture_ahead: Duration::hours(12),
            minimums: &[],
            steps: &[],
        }
    }
}

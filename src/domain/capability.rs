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
    /// What the provider documents for keeping a hold alive and raising it: increments,
    /// extensions, and a guarantee shorter than the capture window (PayPal's honor period).
    /// The lifecycle policy (`super::lifecycle`) never proposes more than this allows.
    pub lifecycle: LifecycleCapabilities,
}

/// How an increment request states its amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrementAmount {
    /// The new authorized total (Stripe `amount`, Adyen `amount` of `/amountUpdates`).
    NewTotal,
    /// The increase only (Checkout.com `amount` of `/payments/{id}/authorizations`).
    Increase,
}

/// A provider's documented incremental authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncrementRule {
    pub amount: IncrementAmount,
    /// At most this many increments per authorization (Stripe: 10 attempts, declines
    /// included); `None`: no documented limit.
    pub max_increments: Option<u32>,
    /// Increments only while nothing has been captured (Stripe, Adyen and Checkout.com all say
    /// so).
    pub before_first_capture: bool,
    /// The authorized total may reach at most this many basis points of the original amount;
    /// `None`: no documented cap (the issuer decides).
    pub max_total_bp: Option<u32>,
    /// A successful increment also renews the hold for this long from when it is made
    /// (Checkout.com: "increase the authorization amount or extend the authorization's validity
    /// period"); `None`: the expiry is unchanged.
    pub renews_for: Option<Duration>,
}

/// Which call extends a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtensionCall {
    /// PayPal `POST /v2/payments/authorizations/{id}/reauthorize`: a new authorization with a
    /// new id and a new honor period.
    Reauthorize,
    /// Adyen `POST /payments/{pspReference}/amountUpdates` with the current amount: "each time
    /// that ... the validity period of the authorization is about to expire, you send another
    /// authorization adjustment request".
    AmountUpdate,
    /// Checkout.com `POST /payments/{id}/authorizations` with amount 0 ("Omit the amount or
    /// provide a value of `0` to extend the authorization validity period", Mastercard only).
    ZeroIncrement,
}

/// A provider's documented extension of a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionRule {
    pub call: ExtensionCall,
    /// The extension may be asked for from this long after the original authorization
    /// (PayPal: after the 3-day honor period).
    pub opens_after: Duration,
    /// ... and no later than this long after it (PayPal: 29 days); `None`: while the hold is
    /// valid.
    pub closes_after: Option<Duration>,
    /// At most this many extensions per authorization (PayPal: once); `None`: no documented
    /// limit.
    pub max_extensions: Option<u32>,
    /// A successful extension holds the funds this much longer from when it is made.
    pub renews_for: Duration,
    /// Extensions only while nothing has been captured (Adyen, Checkout.com).
    pub before_first_capture: bool,
}

/// What a provider documents for keeping a hold alive and raising it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleCapabilities {
    /// `None`: the provider documents no increment (or the worker does not use it).
    pub increment: Option<IncrementRule>,
    /// `None`: the hold cannot be extended after the fact.
    pub extension: Option<ExtensionRule>,
    /// How long the funds are guaranteed after an authorization (or an extension) when that
    /// is shorter than the capture window: PayPal's 3-day honor period of a 29-day
    /// authorization. `None`: the whole window.
    pub honor_period: Option<Duration>,
}

impl LifecycleCapabilities {
    /// Neither increments nor extensions: the hold lapses at its deadline.
    pub const NONE: LifecycleCapabilities = LifecycleCapabilities {
        increment: None,
        extension: None,
        honor_period: None,
    };

    /// Stripe: `increment_authorization` with the new total, at most 10 attempts, only on a
    /// PaymentIntent that is "completely uncaptured" and whose card allows it; an online card
    /// hold cannot be extended after the fact (extended holds are requested at confirmation).
    pub fn stripe() -> Self {
        LifecycleCapabilities {
            increment: Some(IncrementRule {
                amount: IncrementAmount::NewTotal,
                max_increments: Some(10),
                before_first_capture: true,
                max_total_bp: None,
                renews_for: None,
            }),
            extension: None,
            honor_period: None,
        }
    }

    /// Adyen authorisation adjustment of a pre-authorised payment (`/amountUpdates`): the new
    /// total, only before any capture; the same amount again extends the hold (by the card
    /// scheme's period, taken as the 7-day window).
    pub fn adyen() -> Self {
        LifecycleCapabilities {
            increment: Some(IncrementRule {
                amount: IncrementAmount::NewTotal,
                max_increments: None,
                before_first_capture: true,
                max_total_bp: None,
                renews_for: Some(Duration::days(7)),
            }),
            extension: Some(ExtensionRule {
                call: ExtensionCall::AmountUpdate,
                opens_after: Duration::zero(),
                closes_after: None,
                max_extensions: None,
                renews_for: Duration::days(7),
                before_first_capture: true,
            }),
            honor_period: None,
        }
    }

    /// Checkout.com incremental authorization of an estimated authorization: the increase,
    /// any number within the validity period, none once the payment is partly captured; an
    /// amount of 0 extends the validity (Mastercard only). Both renew the expiry
    /// (`expires_on` in the answer; 7 days is the payment's window).
    pub fn checkout() -> Self {
        LifecycleCapabilities {
            increment: Some(IncrementRule {
                amount: IncrementAmount::Increase,
                max_increments: None,
                before_first_capture: true,
                max_total_bp: None,
                renews_for: Some(Duration::days(7)),
            }),
            extension: Some(ExtensionRule {
                call: ExtensionCall::ZeroIncrement,
                opens_after: Duration::zero(),
                closes_after: None,
                max_extensions: None,
                renews_for: Duration::days(7),
                before_first_capture: true,
            }),
            honor_period: None,
        }
    }

    /// PayPal: a 3-day honor period within the 29-day authorization; reauthorize once, from
    /// the end of the honor period to day 29, for a new 3-day honor period. Reauthorizing for
    /// more (up to 115 %, +75 USD in the US) is not planned, so no increments.
    pub fn paypal() -> Self {
        LifecycleCapabilities {
            increment: None,
            extension: Some(ExtensionRule {
                call: ExtensionCall::Reauthorize,
                opens_after: Duration::days(3),
                closes_after: Some(Duration::days(29)),
                max_extensions: Some(1),
                renews_for: Duration::days(3),
                before_first_capture: false,
            }),
            honor_period: Some(Duration::days(3)),
        }
    }
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
            lifecycle: LifecycleCapabilities::NONE,
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
            lifecycle: LifecycleCapabilities::stripe(),
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
            lifecycle: LifecycleCapabilities::NONE,
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
            lifecycle: LifecycleCapabilities::adyen(),
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
            lifecycle: LifecycleCapabilities::checkout(),
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
            lifecycle: LifecycleCapabilities::paypal(),
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
            lifecycle: LifecycleCapabilities::NONE,
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
            lifecycle: LifecycleCapabilities::NONE,
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
            lifecycle: LifecycleCapabilities::NONE,
        }
    }
}

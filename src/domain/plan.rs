//! Capture planning: given an order, its progress and one new event, decide what money moves.
//!
//! [`plan`] is a pure function of `(order, state, event, context)`. It returns the decision
//! (capture an amount, final or not; nothing; release the remainder; void the authorization)
//! and the order's next state, or a typed [`Rejection`] that leaves the state untouched.
//! The app persists the decision and the new state in one transaction; the provider call
//! happens later, outside it. Pure: no I/O, no clock (`now` is passed in).

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::allocation::{self, ShippingPolicy};
use super::capability::{Capabilities, CaptureMode, FinalFlag, ReleaseMethod};
use super::ids::{AuthorizationId, LineId};
use super::money::{MinorUnits, MoneyError};
use super::order::{Authorization, Cancellation, Order, OrderError, Shipment};

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Units remain to ship; captures may follow.
    Open,
    /// The final capture, release or void has been planned; nothing more is sent. Also an
    /// order whose last units were cancelled after its authorization lapsed: nothing is left to
    /// send, and the lapsed hold needs no release.
    Completed,
    /// A capture was declined: no new capture until an operator resumes with a new
    /// authorization (the latch, P4).
    Declined,
}

/// An order's progress: what shipped, what was cancelled, what has been turned into captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderState {
    /// Units shipped per line, index-aligned with the order's lines.
    pub shipped: Vec<u32>,
    /// Units cancelled per line.
    pub cancelled: Vec<u32>,
    /// Units per line whose value has been planned into a capture (or cut by the cap). Lags
    /// `shipped` while a single-capture provider accumulates.
    pub charged: Vec<u32>,
    /// Shipping already planned into a capture (or cut by the cap).
    pub shipping_charged: MinorUnits,
    /// Σ amounts of planned captures that were not declined: succeeded + pending + in flight
    /// + queued. Never above authorized + allowance (P2).
    pub claimed: MinorUnits,
    /// Value cut by the authorization cap, recorded for finance and never captured.
    pub shortfall: MinorUnits,
    /// Capture requests planned so far, including a zero-amount final capture.
    pub captures: u32,
    pub phase: Phase,
    /// Shipments applied, for dedupe by shipment id.
    pub shipments: Vec<Shipment>,
    /// Cancellations applied, for dedupe by id.
    pub cancellations: Vec<Cancellation>,
}

impl OrderState {
    /// The state of an order that was just authorized.
    pub fn new(order: &Order) -> Self {
        let n = order.lines().len();
        OrderState {
            shipped: vec![0; n],
            cancelled: vec![0; n],
            charged: vec![0; n],
            shipping_charged: MinorUnits::ZERO,
            claimed: MinorUnits::ZERO,
            shortfall: MinorUnits::ZERO,
            captures: 0,
            phase: Phase::Open,
            shipments: Vec::new(),
            cancellations: Vec::new(),
        }
    }

    /// Every unit has shipped or been cancelled.
    pub fn is_resolved(&self, order: &Order) -> bool {
        order
            .lines()
            .iter()
            .enumerate()
            .all(|(i, l)| self.shipped[i] + self.cancelled[i] == l.quantity.get())
    }

    /// A planned capture of `amount` was declined: its claim is dropped and the order latches.
    pub fn on_declined(&mut self, amount: MinorUnits) {
        self.claimed = self.claimed.saturating_sub(amount);
        self.phase = Phase::Declined;
    }

    /// Lifts the decline latch with a new authorization (P4: the only way it lifts).
    ///
    /// Returns the order drawing on `authorization` and the state to plan from: the units,
    /// shipping and shortfall that the declined and blocked captures carried (`carried`) are
    /// no longer charged, so the next plan captures their value again, under the new
    /// authorization and with new keys; nothing is claimed on the new authorization yet. The
    /// captures that succeeded before the decline stay on the old authorization. The capture
    /// counter is not reset: it numbers the order's captures across authorizations.
    pub fn resume(
        &self,
        order: &Order,
        authorization: Authorization,
        carried: &[Carried],
    ) -> Result<(Order, OrderState), ResumeError> {
        if self.phase != Phase::Declined {
            return Err(ResumeError::NotDeclined);
        }
        let current = order.authorization();
        if authorization.provider == current.provider
            && authorization.authorization_id == current.authorization_id
        {
            return Err(ResumeError::SameAuthorization);
        }
        let mut draft = order.draft().clone();
        draft.authorization = authorization;
        let resumed = Order::new(draft)?;
        let mut next = self.clone();
        for capture in carried {
            for charge in &capture.lines {
                let i = order.line_index(&charge.line_id).ok_or_else(|| {
                    ResumeError::CarriedMismatch(format!(
                        "line {} is not a line of this order",
                        charge.line_id
                    ))
                })?;
                next.charged[i] = next.charged[i].checked_sub(charge.units).ok_or_else(|| {
                    ResumeError::CarriedMismatch(format!(
                        "line {}: {} units carried but only {} charged",
                        charge.line_id, charge.units, next.charged[i]
                    ))
                })?;
            }
            next.shipping_charged = next
                .shipping_charged
                .checked_sub(capture.shipping)
                .map_err(|_| {
                    ResumeError::CarriedMismatch("more shipping carried than charged".into())
                })?;
            next.shortfall = next.shortfall.checked_sub(capture.shortfall).map_err(|_| {
                ResumeError::CarriedMismatch("more shortfall carried than recorded".into())
            })?;
        }
        next.claimed = MinorUnits::ZERO;
        next.phase = Phase::Open;
        Ok((resumed, next))
    }
}

/// What one declined or blocked capture carried, as stored with it: its lines (units and
/// value before the cap), its shipping, and the value the cap cut from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    pub lines: Vec<LineCharge>,
    pub shipping: MinorUnits,
    pub shortfall: MinorUnits,
}

/// Why an order cannot be resumed. Nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResumeError {
    #[error("the order is not stopped by a decline; only a declined order is resumed")]
    NotDeclined,
    #[error("the new authorization is the order's current one; resume needs a new authorization")]
    SameAuthorization,
    #[error("the new authorization is not valid for this order: {0}")]
    Authorization(#[from] OrderError),
    #[error("the declined and blocked captures do not match the order's progress: {0}")]
    CarriedMismatch(String),
    #[error("planning the capture under the new authorization failed: {0}")]
    Plan(#[from] Rejection),
}

/// The order on its new authorization and the plan for the value the decline left uncaptured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    pub order: Order,
    pub plan: Plan,
}

/// Resumes a declined order with a new authorization and plans its uncaptured value
/// ([`OrderState::resume`], then the same rules as a shipment: one capture of the carried value,
/// capped by the new authorization (the rest is shortfall), final when nothing is left to ship;
/// a void of the new authorization when there is nothing to capture and nothing left to ship;
/// deferred where the provider captures once and units are still to ship). P2–P5 hold as for
/// any plan: the claim starts from zero on the new authorization, the capture gets a new key
/// (its cause is the resume), and at most one final capture is planned per authorization.
pub fn resume(
    order: &Order,
    state: &OrderState,
    authorization: Authorization,
    carried: &[Carried],
    ctx: &PlanContext,
) -> Result<Resumed, ResumeError> {
    let (order, next) = state.resume(order, authorization, carried)?;
    if let Some(inactive) = lapsed(&order, ctx.now) {
        return Err(inactive.into());
    }
    let plan = decide(&order, next, ctx, Trigger::Resume)?;
    Ok(Resumed { order, plan })
}

/// What happened to the order.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    Shipment(&'a Shipment),
    Cancellation(&'a Cancellation),
    /// The authorization deadline is near (sent by the sweeper): capture what has shipped and
    /// is still waiting.
    Deadline,
}

/// Settings and facts the plan needs besides the order.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext {
    pub capabilities: Capabilities,
    pub shipping: ShippingPolicy,
    pub now: DateTime<Utc>,
}

/// One line's part of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineCharge {
    pub line_id: LineId,
    /// Units whose value this capture carries.
    pub units: u32,
    /// Their value (before the authorization cap).
    pub amount: MinorUnits,
}

/// A capture to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturePlan {
    /// 1 for the order's first capture request, then 2, 3…
    pub sequence: u32,
    /// What to capture, after the cap.
    pub amount: MinorUnits,
    /// This capture leaves nothing to ship (or is the last one the provider or the
    /// authorization deadline allows).
    pub is_final: bool,
    /// The provider has no final flag and authorization is left over: cancel it after this
    /// capture succeeds.
    pub release_after: bool,
    pub lines: Vec<LineCharge>,
    /// Shipping carried by this capture (before the cap).
    pub shipping: MinorUnits,
}

/// Why no money moves for this event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NothingReason {
    /// The event is worth 0 (free items, or a cancellation with units still to ship).
    ZeroValue,
    /// Value is kept for a later capture: the provider captures once, or only one capture of
    /// its limit is left and it must be the final one.
    Deferred,
    /// The authorization is used up: the whole value became shortfall.
    AuthorizationExhausted,
    /// The order is latched after a decline; the cancellation is recorded only.
    Latched,
    /// A deadline tick for an order that is no longer open.
    NotOpen,
    /// The authorization has lapsed (checkout's `expires_at` has passed): a cancellation is
    /// recorded and a deadline tick does nothing. No capture, release or void is sent: the
    /// provider would refuse it, and the hold is already gone.
    AuthorizationLapsed,
    /// The value is below the provider's minimum capture for the currency, or below one
    /// amount step: it stays shipped but uncharged and rides with the order's next capture.
    BelowMinimum,
}

impl NothingReason {
    /// The machine-readable label, as stored after `nothing:` in a shipment's or
    /// cancellation's decision.
    pub fn label(self) -> &'static str {
        match self {
            NothingReason::ZeroValue => "zero_value",
            NothingReason::Deferred => "deferred",
            NothingReason::AuthorizationExhausted => "authorization_exhausted",
            NothingReason::Latched => "latched",
            NothingReason::NotOpen => "not_open",
            NothingReason::AuthorizationLapsed => "authorization_lapsed",
            NothingReason::BelowMinimum => "below_minimum",
        }
    }
}

/// The decision for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Capture(CapturePlan),
    Nothing(NothingReason),
    /// The order completed with nothing left to capture after earlier captures: release the
    /// rest of the authorization with `method` (a zero-amount final capture takes `sequence`).
    ReleaseRemainder {
        method: ReleaseMethod,
        sequence: u32,
    },
    /// The order completed with nothing ever captured: void the authorization.
    VoidAuthorization,
}

/// The decision, the shortfall it recorded and the order's next state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub decision: Decision,
    /// Value cut by the authorization cap in this step.
    pub shortfall: MinorUnits,
    pub state: OrderState,
}

/// Why an event is refused. The state is unchanged. `reason()` is the machine-readable code
/// recorded with the rejected message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    #[error("already applied with the same content")]
    Duplicate,
    #[error("already applied with different content; the first one stands")]
    ConflictingDuplicate,
    #[error("line {line_id} is not a line of this order")]
    UnknownLine { line_id: LineId },
    #[error(
        "line {line_id}: {requested} more units would exceed the {ordered} ordered ({shipped} shipped, {cancelled} cancelled)"
    )]
    OverShipment {
        line_id: LineId,
        ordered: u32,
        shipped: u32,
        cancelled: u32,
        requested: u32,
    },
    #[error(
        "line {line_id}: cancelling {requested} units would exceed the {ordered} ordered ({shipped} shipped, {cancelled} cancelled)"
    )]
    OverCancellation {
        line_id: LineId,
        ordered: u32,
        shipped: u32,
        cancelled: u32,
        requested: u32,
    },
    #[error("the order is complete: its final capture, release or void was already planned")]
    AfterFinal,
    #[error("a capture for this order was declined: no capture until an operator resumes it")]
    AfterDecline,
    #[error(
        "authorization {authorization_id} expired at {expires_at} (the order's expires_at): the provider would refuse a capture, so none is sent; the payments team must collect this value another way"
    )]
    AuthorizationInactive {
        authorization_id: AuthorizationId,
        expires_at: DateTime<Utc>,
    },
    #[error("currency mismatch: {0}")]
    CurrencyMismatch(String),
    #[error("amount overflow: {0}")]
    AmountOverflow(String),
}

impl Rejection {
    /// The machine-readable reason, as recorded in PostgreSQL and the dead-letter header.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Duplicate => "duplicate",
            Rejection::ConflictingDuplicate => "shipment_conflict",
            Rejection::UnknownLine { .. } => "unknown_line",
            Rejection::OverShipment { .. } => "over_shipment",
            Rejection::OverCancellation { .. } => "over_cancellation",
            Rejection::AfterFinal => "after_final",
            Rejection::AfterDecline => "order_declined",
            Rejection::AuthorizationInactive { .. } => "authorization_inactive",
            Rejection::CurrencyMismatch(_) => "currency_mismatch",
            Rejection::AmountOverflow(_) => "amount_overflow",
        }
    }
}

impl From<MoneyError> for Rejection {
    fn from(e: MoneyError) -> Self {
        match e {
            MoneyError::CurrencyMismatch { .. } => Rejection::CurrencyMismatch(e.to_string()),
            MoneyError::Overflow { .. } | MoneyError::Negative { .. } => {
                Rejection::AmountOverflow(e.to_string())
            }
        }
    }
}

/// The value of everything shipped so far (DESIGN §5): Σ per line
/// `round_half_up(net × shipped / quantity)` plus the shipping owed. A shipment's value is the
/// difference of this before and after it.
pub fn shipped_value(
    order: &Order,
    state: &OrderState,
    policy: ShippingPolicy,
) -> Result<MinorUnits, MoneyError> {
    let mut value = MinorUnits::ZERO;
    for (i, line) in order.lines().iter().enumerate() {
        let v = allocation::cumulative_line_value(
            order.line_nets()[i],
            state.shipped[i],
            line.quantity.get(),
        )?;
        value = value.checked_add(v, "shipped value")?;
    }
    let shipped_units: u64 = state.shipped.iter().map(|&u| u64::from(u)).sum();
    let live_units: u64 = order
        .lines()
        .iter()
        .zip(&state.cancelled)
        .map(|(l, &c)| u64::from(l.quantity.get() - c))
        .sum();
    let shipping =
        allocation::shipping_due(policy, order.shipping_amount(), shipped_units, live_units)?;
    value.checked_add(shipping, "shipped value")
}

/// Decides what `event` means for `order` in `state`.
///
/// Once the authorization has lapsed (its `expires_at` is not after `ctx.now`) nothing is sent
/// on it: a shipment is refused as `authorization_inactive` (after the order's own refusals:
/// `after_final` for a completed order, `order_declined` for a latched one), a cancellation is
/// recorded without a release or void, and a deadline tick does nothing.
pub fn plan(
    order: &Order,
    state: &OrderState,
    event: Event<'_>,
    ctx: &PlanContext,
) -> Result<Plan, Rejection> {
    let mut next = state.clone();
    match event {
        Event::Shipment(shipment) => {
            if let Some(prior) = state
                .shipments
                .iter()
                .find(|s| s.shipment_id() == shipment.shipment_id())
            {
                return Err(if prior.same_content(shipment) {
                    Rejection::Duplicate
                } else {
                    Rejection::ConflictingDuplicate
                });
            }
            match state.phase {
                Phase::Completed => return Err(Rejection::AfterFinal),
                Phase::Declined => return Err(Rejection::AfterDecline),
                Phase::Open => {}
            }
            if let Some(inactive) = lapsed(order, ctx.now) {
                return Err(inactive);
            }
            for item in shipment.items() {
                let i = line_index(order, &item.line_id)?;
                let ordered = order.lines()[i].quantity.get();
                let requested = item.quantity.get();
                if u64::from(state.shipped[i])
                    + u64::from(state.cancelled[i])
                    + u64::from(requested)
                    > u64::from(ordered)
                {
                    return Err(Rejection::OverShipment {
                        line_id: item.line_id.clone(),
                        ordered,
                        shipped: state.shipped[i],
                        cancelled: state.cancelled[i],
                        requested,
                    });
                }
                next.shipped[i] += requested;
            }
            if shipment.last_shipment() {
                for (i, line) in order.lines().iter().enumerate() {
                    next.cancelled[i] = line.quantity.get() - next.shipped[i];
                }
            }
            next.shipments.push(shipment.clone());
            decide(order, next, ctx, Trigger::Shipment)
        }
        Event::Cancellation(cancellation) => {
            if let Some(prior) = state
                .cancellations
                .iter()
                .find(|c| c.cancellation_id() == cancellation.cancellation_id())
            {
                return Err(if prior.same_content(cancellation) {
                    Rejection::Duplicate
                } else {
                    Rejection::ConflictingDuplicate
                });
            }
            if state.phase == Phase::Completed {
                return Err(Rejection::AfterFinal);
            }
            for item in cancellation.items() {
                let i = line_index(order, &item.line_id)?;
                let ordered = order.lines()[i].quantity.get();
                let requested = item.quantity.get();
                if u64::from(state.shipped[i])
                    + u64::from(state.cancelled[i])
                    + u64::from(requested)
                    > u64::from(ordered)
                {
                    return Err(Rejection::OverCancellation {
                        line_id: item.line_id.clone(),
                        ordered,
                        shipped: state.shipped[i],
                        cancelled: state.cancelled[i],
                        requested,
                    });
                }
                next.cancelled[i] += requested;
            }
            next.cancellations.push(cancellation.clone());
            if state.phase == Phase::Declined {
                return Ok(Plan {
                    decision: Decision::Nothing(NothingReason::Latched),
                    shortfall: MinorUnits::ZERO,
                    state: next,
                });
            }
            if lapsed(order, ctx.now).is_some() {
                // The units are recorded, so shipped, cancelled and unshipped figures stay
                // true, but no money moves: the hold is gone, and a release, void or capture
                // would be refused. Once nothing is left to ship the order is closed, with no
                // closing request.
                if next.is_resolved(order) {
                    next.phase = Phase::Completed;
                }
                return Ok(Plan {
                    decision: Decision::Nothing(NothingReason::AuthorizationLapsed),
                    shortfall: MinorUnits::ZERO,
                    state: next,
                });
            }
            decide(order, next, ctx, Trigger::Cancellation)
        }
        Event::Deadline => {
            let reason = if state.phase != Phase::Open {
                NothingReason::NotOpen
            } else if lapsed(order, ctx.now).is_some() {
                // Too late: the capture the deadline was for would be refused.
                NothingReason::AuthorizationLapsed
            } else {
                return decide(order, next, ctx, Trigger::Deadline);
            };
            Ok(Plan {
                decision: Decision::Nothing(reason),
                shortfall: MinorUnits::ZERO,
                state: next,
            })
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Shipment,
    Cancellation,
    Deadline,
    Resume,
}

fn line_index(order: &Order, line_id: &LineId) -> Result<usize, Rejection> {
    order
        .line_index(line_id)
        .ok_or_else(|| Rejection::UnknownLine {
            line_id: line_id.clone(),
        })
}

/// The refusal for an event planned at `now` on an authorization whose `expires_at` (from
/// checkout, or given at resume) is not after `now`: the provider has let the hold go, so any
/// capture, release or void on it would be refused. An authorization without `expires_at`
/// never lapses here: the provider's window is an estimate, used only to capture ahead of it.
fn lapsed(order: &Order, now: DateTime<Utc>) -> Option<Rejection> {
    let auth = order.authorization();
    auth.expires_at
        .filter(|&expires_at| expires_at <= now)
        .map(|expires_at| Rejection::AuthorizationInactive {
            authorization_id: auth.authorization_id.clone(),
            expires_at,
        })
}

/// The moment the authorization stops being capturable, if known.
pub fn authorization_deadline(order: &Order, caps: &Capabilities) -> Option<DateTime<Utc>> {
    let auth = order.authorization();
    auth.expires_at
        .or_else(|| caps.authorization_window.map(|w| auth.authorized_at + w))
}

fn deadline_near(order: &Order, ctx: &PlanContext) -> bool {
    authorization_deadline(order, &ctx.capabilities)
        .is_some_and(|d| ctx.now >= d - ctx.capabilities.capture_ahead)
}

/// `amount` rounded down to a whole multiple of `step`.
fn whole_steps(amount: MinorUnits, step: MinorUnits) -> Result<MinorUnits, MoneyError> {
    let step = step.get().max(1);
    MinorUnits::new(amount.get() - amount.get() % step)
}

/// The amount the captures may still claim: authorized + allowance − claimed.
fn headroom(
    order: &Order,
    state: &OrderState,
    caps: &Capabilities,
) -> Result<MinorUnits, MoneyError> {
    let authorized = order.authorization().amount;
    let limit = authorized.checked_add(
        caps.over_capture.for_authorized(authorized),
        "authorized amount plus over-capture allowance",
    )?;
    Ok(limit.saturating_sub(state.claimed))
}

fn decide(
    order: &Order,
    mut next: OrderState,
    ctx: &PlanContext,
    trigger: Trigger,
) -> Result<Plan, Rejection> {
    let caps = &ctx.capabilities;
    let complete = next.is_resolved(order);

    // What has shipped and is not yet in a capture: per line, then shipping.
    let mut lines = Vec::new();
    let mut raw = MinorUnits::ZERO;
    // The value already turned into captures (or shortfall, or carried as a part step).
    let mut booked = next.shipping_charged;
    let nets = order.line_nets();
    for (i, line) in order.lines().iter().enumerate() {
        let qty = line.quantity.get();
        let before = allocation::cumulative_line_value(nets[i], next.charged[i], qty)?;
        let after = allocation::cumulative_line_value(nets[i], next.shipped[i], qty)?;
        let value = after.checked_sub(before)?;
        let units = next.shipped[i] - next.charged[i];
        if units > 0 {
            lines.push(LineCharge {
                line_id: line.line_id.clone(),
                units,
                amount: value,
            });
        }
        raw = raw.checked_add(value, "capture amount")?;
        booked = booked.checked_add(before, "charged value")?;
    }
    let shipped_units: u64 = next.shipped.iter().map(|&u| u64::from(u)).sum();
    let live_units: u64 = order
        .lines()
        .iter()
        .zip(&next.cancelled)
        .map(|(l, &c)| u64::from(l.quantity.get() - c))
        .sum();
    let shipping_due = allocation::shipping_due(
        ctx.shipping,
        order.shipping_amount(),
        shipped_units,
        live_units,
    )?;
    let shipping = shipping_due.checked_sub(next.shipping_charged)?;
    raw = raw.checked_add(shipping, "capture amount")?;
    // A provider that takes the currency with fewer decimals than ISO 4217 takes only whole
    // steps. Captures are the differences of the charged value rounded down to a step, so
    // the part of a capture that is not a whole step rides with the next one (it is never
    // lost: the charged value keeps it) and the last capture leaves it as shortfall.
    let step = caps.step_for(order.currency());
    let charged_after = booked.checked_add(raw, "charged value")?;
    let due = whole_steps(charged_after, step)?.checked_sub(whole_steps(booked, step)?)?;
    let part_step = charged_after.checked_sub(whole_steps(charged_after, step)?)?;

    // Defer when this cannot be the last capture the provider allows, unless the
    // authorization is about to lapse.
    let last_allowed = match caps.mode {
        CaptureMode::Single => true,
        CaptureMode::Multiple {
            max_captures: Some(max),
        } => next.captures + 1 >= max,
        CaptureMode::Multiple { max_captures: None } => false,
    };
    let deadline = trigger == Trigger::Deadline || deadline_near(order, ctx);
    if !complete && last_allowed && !deadline {
        let reason = if raw.is_zero() {
            NothingReason::ZeroValue
        } else {
            NothingReason::Deferred
        };
        return Ok(Plan {
            decision: Decision::Nothing(reason),
            shortfall: MinorUnits::ZERO,
            state: next,
        });
    }
    // A capture below the provider's minimum would be refused (Stripe `amount_too_small`),
    // and so would one smaller than a whole step. Before the order completes its value
    // waits, uncharged, for the next capture; a final remainder still below the minimum is
    // not sent but recorded as shortfall for finance, and the rest of the authorization is
    // released as after any final capture.
    let below_minimum = !raw.is_zero()
        && (due.is_zero()
            || caps
                .minimum_for(order.currency())
                .is_some_and(|minimum| due < minimum));
    if below_minimum && !complete && !deadline {
        return Ok(Plan {
            decision: Decision::Nothing(NothingReason::BelowMinimum),
            shortfall: MinorUnits::ZERO,
            state: next,
        });
    }
    if !complete && trigger == Trigger::Cancellation && !deadline {
        // A cancellation with units still to ship moves no money; any value it adds (prorated
        // shipping) rides with the next capture.
        return Ok(Plan {
            decision: Decision::Nothing(NothingReason::ZeroValue),
            shortfall: MinorUnits::ZERO,
            state: next,
        });
    }

    // A capture forced by the deadline on a provider that allows no further capture is the
    // last one, even with units unshipped.
    let is_final = complete || (deadline && last_allowed);
    let amount = if below_minimum && complete {
        MinorUnits::ZERO
    } else {
        due.min(whole_steps(headroom(order, &next, caps)?, step)?)
    };
    // What the cap cuts, and after the last capture the part of a step nothing can carry.
    let mut shortfall = due.checked_sub(amount)?;
    if is_final {
        shortfall = shortfall.checked_add(part_step, "shortfall")?;
    }
    next.charged.clone_from(&next.shipped);
    next.shipping_charged = shipping_due;
    next.shortfall = next.shortfall.checked_add(shortfall, "shortfall")?;
    if amount.is_zero() {
        if !is_final {
            let reason = if shortfall.is_zero() {
                NothingReason::ZeroValue
            } else {
                NothingReason::AuthorizationExhausted
            };
            return Ok(Plan {
                decision: Decision::Nothing(reason),
                shortfall,
                state: next,
            });
        }
        next.phase = Phase::Completed;
        // After a resume nothing has been captured on the new authorization yet: void it.
        let decision = if next.captures == 0 || trigger == Trigger::Resume {
            Decision::VoidAuthorization
        } else {
            let method = match caps.final_flag {
                FinalFlag::Absent => ReleaseMethod::Cancel,
                FinalFlag::Explicit => caps.release,
            };
            let sequence = next.captures + 1;
            if method == ReleaseMethod::ZeroAmountFinalCapture {
                next.captures = sequence;
            }
            Decision::ReleaseRemainder { method, sequence }
        };
        return Ok(Plan {
            decision,
            shortfall,
            state: next,
        });
    }

    next.claimed = next.claimed.checked_add(amount, "claimed amount")?;
    next.captures += 1;
    if is_final {
        next.phase = Phase::Completed;
    }
    let release_after = is_final
        && caps.final_flag == FinalFlag::Absent
        && next.claimed < order.authorization().amount;
    Ok(Plan {
        decision: Decision::Capture(CapturePlan {
            sequence: next.captures,
            amount,
            is_final,
            release_after,
            lines,
            shipping,
        }),
        shortfall,
        state: next,
    })
}

#[cfg(test)]
mod tests {
    //! The resume rules; the rest of the plan is exercised by `tests/it/domain_*`.

    use chrono::TimeZone;

    use super::*;
    use crate::domain::{
        AuthorizationId, Currency, OrderDraft, OrderId, OrderLine, ProviderName, Quantity,
    };

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap()
    }

    fn m(v: i64) -> MinorUnits {
        MinorUnits::new(v).unwrap()
    }

    fn auth(id: &str, amount: i64) -> Authorization {
        Authorization {
            provider: ProviderName::parse("sandbox").unwrap(),
            authorization_id: AuthorizationId::parse(id).unwrap(),
            amount: m(amount),
            authorized_at: t0(),
            expires_at: None,
        }
    }

    /// One line of `qty` units at `unit`, shipping 500, authorized `authorized`.
    fn order(qty: i64, unit: i64, authorized: i64) -> Order {
        Order::new(OrderDraft {
            order_id: OrderId::parse("ORD-R").unwrap(),
            currency: Currency::parse("USD").unwrap(),
            lines: vec![OrderLine {
                line_id: LineId::parse("L1").unwrap(),
                sku: "SKU-1".into(),
                name: "Item".into(),
                quantity: Quantity::new(qty).unwrap(),
                unit_amount: m(unit),
                tax_amount: m(0),
                discount_amount: m(0),
            }],
            shipping_amount: m(500),
            order_discount_amount: m(0),
            authorization: auth("pi_old", authorized),
            payment_currency: None,
        })
        .unwrap()
    }

    fn ctx() -> PlanContext {
        PlanContext {
            capabilities: Capabilities::multi_capture(),
            shipping: ShippingPolicy::FirstCapture,
            now: t0(),
        }
    }

    fn ship(id: &str, units: i64) -> Shipment {
        Shipment::new(
            crate::domain::ShipmentId::parse(id).unwrap(),
            vec![crate::domain::Item {
                line_id: LineId::parse("L1").unwrap(),
                quantity: Quantity::new(units).unwrap(),
            }],
            false,
            t0(),
        )
        .unwrap()
    }

    fn captured(p: &Plan) -> CapturePlan {
        match &p.decision {
            Decision::Capture(c) => c.clone(),
            other => panic!("expected a capture, got {other:?}"),
        }
    }

    fn carried(c: &CapturePlan, shortfall: i64) -> Carried {
        Carried {
            lines: c.lines.clone(),
            shipping: c.shipping,
            shortfall: m(shortfall),
        }
    }

    /// Ships `parcels` one after another; returns the captures and the state after them.
    fn shipped(order: &Order, parcels: &[i64]) -> (Vec<CapturePlan>, OrderState) {
        let mut state = OrderState::new(order);
        let mut caps = Vec::new();
        for (i, units) in parcels.iter().enumerate() {
            let s = ship(&format!("S{}", i + 1), *units);
            let p = plan(order, &state, Event::Shipment(&s), &ctx()).unwrap();
            caps.push(captured(&p));
            state = p.state;
        }
        (caps, state)
    }

    #[test]
    fn resume_plans_the_declined_and_blocked_value_as_one_final_capture_on_the_new_authorization() {
        // 3 × 1000 + shipping 500: captures 1500, 1000, 1000 (final). The second is declined
        // while the third is queued behind it (blocked).
        let order = order(3, 1000, 3500);
        let (caps, mut state) = shipped(&order, &[1, 1, 1]);
        assert_eq!(
            caps.iter().map(|c| c.amount.get()).collect::<Vec<_>>(),
            vec![1500, 1000, 1000]
        );
        state.on_declined(m(2000));
        assert_eq!(state.claimed, m(1500));

        let resumed = resume(
            &order,
            &state,
            auth("pi_new", 2000),
            &[carried(&caps[1], 0), carried(&caps[2], 0)],
            &ctx(),
        )
        .unwrap();

        let cap = captured(&resumed.plan);
        assert_eq!((cap.amount, cap.is_final, cap.sequence), (m(2000), true, 4));
        assert_eq!(
            cap.shipping,
            MinorUnits::ZERO,
            "shipping was captured before"
        );
        assert_eq!(
            resumed.order.authorization().authorization_id.as_str(),
            "pi_new"
        );
        assert_eq!(
            resumed.plan.state.claimed,
            m(2000),
            "claims start from zero"
        );
        assert_eq!(resumed.plan.state.phase, Phase::Completed);
        // Everything shipped is captured exactly once across the two authorizations (P1, P6).
        assert_eq!(1500 + cap.amount.get(), order.total().amount().get());
    }

    #[test]
    fn resume_caps_the_capture_at_the_new_authorization_and_records_the_rest_as_shortfall() {
        let order = order(2, 1000, 2500);
        let (caps, mut state) = shipped(&order, &[1, 1]);
        state.on_declined(caps[1].amount);
        let resumed = resume(
            &order,
            &state,
            auth("pi_small", 600),
            &[carried(&caps[1], 0)],
            &ctx(),
        )
        .unwrap();
        let cap = captured(&resumed.plan);
        assert_eq!((cap.amount, cap.is_final), (m(600), true));
        assert_eq!(resumed.plan.shortfall, m(400));
        assert_eq!(resumed.plan.state.shortfall, m(400));
    }

    #[test]
    fn resume_with_units_still_to_ship_captures_non_final_and_later_shipments_finish_the_order() {
        // 4 × 1000: the first parcel (1 unit + shipping) is declined; two units remain.
        let order = order(4, 1000, 4500);
        let (caps, mut state) = shipped(&order, &[1, 1]);
        state.on_declined(m(1000));
        let resumed = resume(
            &order,
            &state,
            auth("pi_new", 4500),
            &[carried(&caps[1], 0)],
            &ctx(),
        )
        .unwrap();
        let cap = captured(&resumed.plan);
        assert_eq!((cap.amount, cap.is_final), (m(1000), false));
        assert_eq!(resumed.plan.state.phase, Phase::Open);

        let rest = ship("S3", 2);
        let last = plan(
            &resumed.order,
            &resumed.plan.state,
            Event::Shipment(&rest),
            &ctx(),
        )
        .unwrap();
        let fin = captured(&last);
        assert_eq!((fin.amount, fin.is_final), (m(2000), true));
        assert_eq!(
            caps[0].amount.get() + cap.amount.get() + fin.amount.get(),
            order.total().amount().get()
        );
        assert_eq!(
            last.state.claimed,
            m(3000),
            "only the new authorization's claims"
        );
    }

    #[test]
    fn resume_with_nothing_left_to_capture_voids_the_new_authorization() {
        let order = order(1, 1000, 1500);
        let (caps, mut state) = shipped(&order, &[1]);
        state.on_declined(caps[0].amount);
        // Nothing carried (the declined value was written off elsewhere): nothing to capture.
        let resumed = resume(&order, &state, auth("pi_new", 1500), &[], &ctx()).unwrap();
        assert_eq!(resumed.plan.decision, Decision::VoidAuthorization);
    }

    #[test]
    fn only_a_declined_order_is_resumed_and_only_with_another_authorization() {
        let order = order(2, 1000, 2500);
        let (caps, state) = shipped(&order, &[1]);
        assert_eq!(
            resume(&order, &state, auth("pi_new", 2500), &[], &ctx()),
            Err(ResumeError::NotDeclined)
        );
        let mut latched = state.clone();
        latched.on_declined(caps[0].amount);
        assert_eq!(
            resume(&order, &latched, auth("pi_old", 2500), &[], &ctx()),
            Err(ResumeError::SameAuthorization)
        );
        let too_much = Carried {
            lines: vec![LineCharge {
                line_id: LineId::parse("L1").unwrap(),
                units: 2,
                amount: m(2000),
            }],
            shipping: MinorUnits::ZERO,
            shortfall: MinorUnits::ZERO,
        };
        assert!(matches!(
            resume(&order, &latched, auth("pi_new", 2500), &[too_much], &ctx()),
            Err(ResumeError::CarriedMismatch(_))
        ));
    }
}

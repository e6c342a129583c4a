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
use super::ids::LineId;
use super::money::{MinorUnits, MoneyError};
use super::order::{Cancellation, Order, Shipment};

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Units remain to ship; captures may follow.
    Open,
    /// The final capture, release or void has been planned; nothing more is sent.
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
            decide(order, next, ctx, Trigger::Cancellation)
        }
        Event::Deadline => {
            if state.phase != Phase::Open {
                return Ok(Plan {
                    decision: Decision::Nothing(NothingReason::NotOpen),
                    shortfall: MinorUnits::ZERO,
                    state: next,
                });
            }
            decide(order, next, ctx, Trigger::Deadline)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Shipment,
    Cancellation,
    Deadline,
}

fn line_index(order: &Order, line_id: &LineId) -> Result<usize, Rejection> {
    order
        .line_index(line_id)
        .ok_or_else(|| Rejection::UnknownLine {
            line_id: line_id.clone(),
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
    if !complete && trigger == Trigger::Cancellation && !deadline {
        // A cancellation with units still to ship moves no money; any value it adds (prorated
        // shipping) rides with the next capture.
        return Ok(Plan {
            decision: Decision::Nothing(NothingReason::ZeroValue),
            shortfall: MinorUnits::ZERO,
            state: next,
        });
    }

    let amount = raw.min(headroom(order, &next, caps)?);
    let shortfall = raw.checked_sub(amount)?;
    next.charged.clone_from(&next.shipped);
    next.shipping_charged = shipping_due;
    next.shortfall = next.shortfall.checked_add(shortfall, "shortfall")?;

    // A capture forced by the deadline on a provider that allows no further capture is the
    // last one, even with units unshipped.
    let is_final = complete || (deadline && last_allowed);
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
        let decision = if next.captures == 0 {
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

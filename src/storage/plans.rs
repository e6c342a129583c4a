//! A plan turned into ledger rows: the one place that decides which capture rows a plan asks
//! for, with which cause, and what its decision is called. Intake (both paths), the expiry
//! sweep and `order resume` record their plans through it, so a capture column is added here
//! once.

use std::borrow::Cow;

use crate::domain::plan::LineCharge;
use crate::domain::{
    AuthorizationId, Decision, EventId, MinorUnits, Order, Plan, ReleaseMethod, ShipmentId,
};

use super::ledger::{CaptureKind, IntakeBatch, NewCapture, StoredCaptureLine};
use super::{LedgerTx, StorageError};

/// Why a plan was made. Its capture rows carry the cause, and their idempotency keys derive
/// from it.
#[derive(Debug, Clone, Copy)]
pub enum PlanCause<'a> {
    /// A shipment of the order.
    Shipment(&'a ShipmentId),
    /// A cancellation of some of its lines.
    Cancellation(&'a EventId),
    /// Its authorization is about to expire: what shipped is captured now.
    Deadline,
    /// An operator lifted its decline latch with this new authorization.
    Resume(&'a AuthorizationId),
}

impl<'a> PlanCause<'a> {
    /// The rows' `cause_kind`.
    fn kind(self) -> &'static str {
        match self {
            PlanCause::Shipment(_) => "shipment",
            PlanCause::Cancellation(_) => "cancellation",
            PlanCause::Deadline => "deadline",
            PlanCause::Resume(_) => "resume",
        }
    }

    /// The rows' `cause_id`. A deadline has no id of its own: its rows are named after the
    /// sequence of the first row the plan asks for (`deadline-<sequence>`).
    fn id(self, first_sequence: u32) -> Cow<'a, str> {
        match self {
            PlanCause::Shipment(id) => Cow::Borrowed(id.as_str()),
            PlanCause::Cancellation(id) => Cow::Borrowed(id.as_str()),
            PlanCause::Deadline => Cow::Owned(format!("deadline-{first_sequence}")),
            PlanCause::Resume(id) => Cow::Borrowed(id.as_str()),
        }
    }
}

/// A capture row a recorded plan wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCapture {
    pub capture_id: i64,
    pub sequence: u32,
    pub kind: CaptureKind,
    pub amount: MinorUnits,
    pub is_final: bool,
}

/// What [`LedgerTx::record_plan`] wrote.
#[derive(Debug, Clone)]
pub struct RecordedPlan {
    /// The capture rows, in sequence order (none when the plan moves no money).
    pub captures: Vec<PlannedCapture>,
    /// The decision's name: `capture`, `release`, `void` or `nothing:<reason>`.
    pub decision: String,
}

/// The decision's name, as the shipment and cancellation rows and `order resume` show it:
/// `capture`, `release`, `void` or `nothing:<reason>`.
pub fn decision_label(decision: &Decision) -> String {
    match decision {
        Decision::Capture(_) => "capture".to_owned(),
        Decision::ReleaseRemainder { .. } => "release".to_owned(),
        Decision::VoidAuthorization => "void".to_owned(),
        Decision::Nothing(reason) => format!("nothing:{}", reason.label()),
    }
}

/// The capture rows a plan asks for: none, one, or a capture and the release after it.
fn capture_rows<'a>(
    order: &'a Order,
    plan: &Plan,
    cause: PlanCause<'a>,
    traceparent: Option<&'a str>,
) -> Vec<NewCapture<'a>> {
    // A row that moves no money: a release, a void or a zero-amount final capture.
    let bare =
        |sequence: u32, kind: CaptureKind, is_final: bool, shortfall: MinorUnits| NewCapture {
            order,
            sequence,
            kind,
            cause_kind: cause.kind(),
            cause_id: Cow::Borrowed(""),
            amount: MinorUnits::ZERO,
            is_final,
            release_after: false,
            lines: Vec::new(),
            shipping: MinorUnits::ZERO,
            shortfall,
            traceparent,
        };
    let mut rows = match &plan.decision {
        Decision::Capture(cp) => {
            let mut rows = vec![NewCapture {
                amount: cp.amount,
                is_final: cp.is_final,
                release_after: cp.release_after,
                lines: stored_lines(order, &cp.lines),
                shipping: cp.shipping,
                ..bare(
                    cp.sequence,
                    CaptureKind::Capture,
                    cp.is_final,
                    plan.shortfall,
                )
            }];
            if cp.release_after {
                rows.push(bare(
                    cp.sequence + 1,
                    CaptureKind::Release,
                    false,
                    MinorUnits::ZERO,
                ));
            }
            rows
        }
        Decision::ReleaseRemainder { method, sequence } => {
            let kind = match method {
                ReleaseMethod::ZeroAmountFinalCapture => CaptureKind::Capture,
                ReleaseMethod::Cancel => CaptureKind::Release,
            };
            vec![bare(*sequence, kind, true, plan.shortfall)]
        }
        Decision::VoidAuthorization => vec![bare(
            plan.state.captures + 1,
            CaptureKind::Void,
            true,
            plan.shortfall,
        )],
        Decision::Nothing(_) => Vec::new(),
    };
    if let Some(first) = rows.first().map(|r| r.sequence) {
        let id = cause.id(first);
        for row in &mut rows {
            row.cause_id = id.clone();
        }
    }
    rows
}

/// The plan's lines as a capture row stores them, with each line's SKU and name.
fn stored_lines(order: &Order, lines: &[LineCharge]) -> Vec<StoredCaptureLine> {
    lines
        .iter()
        .map(|l| {
            let line = order.line_index(&l.line_id).map(|i| &order.lines()[i]);
            StoredCaptureLine {
                line_id: l.line_id.as_str().to_owned(),
                sku: line.map(|x| x.sku.clone()).unwrap_or_default(),
                name: line.map(|x| x.name.clone()).unwrap_or_default(),
                units: l.units,
                amount: l.amount.get(),
            }
        })
        .collect()
}

impl LedgerTx {
    /// Records a plan: the order's progress and the capture rows the plan asks for (queued,
    /// each with its generation-0 key). `traceparent` is the trace the captures' execution
    /// continues.
    pub async fn record_plan(
        &mut self,
        order: &Order,
        plan: &Plan,
        cause: PlanCause<'_>,
        traceparent: Option<&str>,
    ) -> Result<RecordedPlan, StorageError> {
        self.save_progress(order, &plan.state).await?;
        let rows = capture_rows(order, plan, cause, traceparent);
        let mut captures = Vec::with_capacity(rows.len());
        for row in &rows {
            captures.push(PlannedCapture {
                capture_id: self.insert_capture(row).await?,
                sequence: row.sequence,
                kind: row.kind,
                amount: row.amount,
                is_final: row.is_final,
            });
        }
        Ok(RecordedPlan {
            captures,
            decision: decision_label(&plan.decision),
        })
    }
}

impl<'a> IntakeBatch<'a> {
    /// Adds a plan to the batch: what [`LedgerTx::record_plan`] writes, written with the rest
    /// of the batch. Returns the decision's name.
    pub fn record_plan(
        &mut self,
        order: &'a Order,
        plan: Plan,
        cause: PlanCause<'a>,
        traceparent: Option<&'a str>,
    ) -> String {
        self.captures
            .extend(capture_rows(order, &plan, cause, traceparent));
        let decision = decision_label(&plan.decision);
        self.progress.push((order, plan.state));
        decision
    }
}

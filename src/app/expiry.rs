//! The authorization-expiry sweep (DESIGN §4, flow step 3: act before authorizations
//! expire).
//!
//! Every `capture.expiry_sweep_ms` the sweeper lists open orders whose authorization's
//! deadline (checkout's `expires_at`, else the provider's window after `authorized_at`) is
//! within the provider's `capture_ahead`. For an order with shipped value still waiting — a
//! single-capture provider holding parcels until the last one, or a provider near its capture
//! limit coalescing them — it plans `Event::Deadline` in an intake-like transaction, so what
//! shipped is captured before the authorization lapses. Every order found is reported with
//! the `authorization_at_risk` event (and counted), and the `authorizations_expiring_soon`
//! gauge counts them on scrape.
//!
//! Several workers may sweep at once: the transaction takes the order's intake lock and its
//! row, and plans only if value is still waiting, so the deadline capture is planned once.

use chrono::Utc;
use tracing::Instrument;

use crate::domain::{
    self, Decision, Event, MinorUnits, OrderId, Phase, PlanContext, ReleaseMethod, ShippingPolicy,
};
use crate::storage::deadlines::{self, AtRisk, ProviderWindow};
use crate::storage::ledger::{CaptureKind, NewCapture, StoredCaptureLine};
use crate::storage::{StorageError, Store};
use crate::telemetry::events::{self, Emit};

use super::execute::Handoff;
use super::providers::Providers;
use crate::domain::CapabilityLookup;

/// Orders looked at per pass; the soonest deadlines first.
const BATCH: i64 = 500;

/// The expiry sweep.
#[derive(Clone)]
pub struct ExpirySweep {
    pub store: Store,
    pub providers: Providers,
    /// Where the orders it planned captures for are dispatched.
    pub handoff: Handoff,
    pub shipping: ShippingPolicy,
}

impl ExpirySweep {
    /// Each configured provider's window and lead time.
    fn windows(&self) -> Vec<ProviderWindow> {
        self.providers
            .names()
            .into_iter()
            .filter_map(|name| {
                let caps = self.providers.capabilities(&name)?;
                Some(ProviderWindow {
                    provider: name,
                    window_seconds: caps.authorization_window.map(|w| w.num_seconds()),
                    ahead_seconds: caps.capture_ahead.num_seconds(),
                })
            })
            .collect()
    }

    /// One pass: captures what waits on authorizations about to expire and reports every
    /// order found. Returns how many orders were found.
    pub async fn run_once(&self) -> Result<usize, StorageError> {
        let found = deadlines::at_risk(self.store.pool(), &self.windows(), BATCH).await?;
        if found.is_empty() {
            return Ok(0);
        }
        let n = found.len();
        let span = tracing::info_span!("expiry sweep", orders = n as i64);
        async {
            for order in found {
                let captured = if order.waiting {
                    let span = tracing::info_span!("deadline capture", order_id = %order.order_id);
                    self.plan_deadline(&order).instrument(span).await?
                } else {
                    false
                };
                events::AuthorizationAtRisk {
                    provider: &order.provider,
                    order_id: &order.order_id,
                    authorization_id: &order.authorization_id,
                    deadline: order.deadline,
                    unclaimed: order.unclaimed,
                    action: if captured { "captured" } else { "at_risk" },
                }
                .emit();
            }
            Ok::<(), StorageError>(())
        }
        .instrument(span)
        .await?;
        Ok(n)
    }

    /// Plans the deadline for one order in one transaction. Returns whether money will move
    /// (a capture, release or void was planned and dispatched).
    async fn plan_deadline(&self, found: &AtRisk) -> Result<bool, StorageError> {
        const CTX: &str = "planning a capture before the authorization expires";
        let corrupt = |detail: String| StorageError::Corrupt {
            context: CTX,
            detail,
        };
        let order_id =
            OrderId::parse(found.order_id.clone()).map_err(|e| corrupt(e.to_string()))?;
        let mut tx = self.store.begin(CTX).await?;
        tx.lock_order_key(&order_id).await?;
        let Some(stored) = tx.load_order(&order_id, true).await? else {
            return Ok(false);
        };
        // Another worker may have planned it since the list was read.
        if stored.state.phase != Phase::Open || stored.state.shipped == stored.state.charged {
            return Ok(false);
        }
        let provider = stored.order.authorization().provider.as_str().to_owned();
        let Some(capabilities) = self.providers.capabilities(&provider) else {
            return Ok(false);
        };
        let ctx = PlanContext {
            capabilities,
            shipping: self.shipping,
            now: Utc::now(),
        };
        let plan = domain::plan(&stored.order, &stored.state, Event::Deadline, &ctx)
            .map_err(|e| corrupt(format!("order {order_id}: {e}")))?;
        let order = &stored.order;
        let traceparent = crate::telemetry::trace::current_traceparent();
        let traceparent = traceparent.as_deref();
        let moved = match &plan.decision {
            Decision::Capture(cp) => {
                let cause_id = format!("deadline-{}", cp.sequence);
                let lines = cp
                    .lines
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
                    .collect();
                tx.insert_capture(&NewCapture {
                    order,
                    sequence: cp.sequence,
                    kind: CaptureKind::Capture,
                    cause_kind: "deadline",
                    cause_id: &cause_id,
                    amount: cp.amount,
                    is_final: cp.is_final,
                    release_after: cp.release_after,
                    lines,
                    shipping: cp.shipping,
                    shortfall: plan.shortfall,
                    traceparent,
                })
                .await?;
                if cp.release_after {
                    tx.insert_capture(&bare(
                        order,
                        cp.sequence + 1,
                        CaptureKind::Release,
                        &cause_id,
                        false,
                        MinorUnits::ZERO,
                        traceparent,
                    ))
                    .await?;
                }
                true
            }
            Decision::ReleaseRemainder { method, sequence } => {
                let kind = match method {
                    ReleaseMethod::ZeroAmountFinalCapture => CaptureKind::Capture,
                    ReleaseMethod::Cancel => CaptureKind::Release,
                };
                let cause_id = format!("deadline-{sequence}");
                tx.insert_capture(&bare(
                    order,
                    *sequence,
                    kind,
                    &cause_id,
                    true,
                    plan.shortfall,
                    traceparent,
                ))
                .await?;
                true
            }
            Decision::VoidAuthorization => {
                let sequence = plan.state.captures + 1;
                let cause_id = format!("deadline-{sequence}");
                tx.insert_capture(&bare(
                    order,
                    sequence,
                    CaptureKind::Void,
                    &cause_id,
                    true,
                    plan.shortfall,
                    traceparent,
                ))
                .await?;
                true
            }
            Decision::Nothing(_) => false,
        };
        tx.save_progress(order, &plan.state).await?;
        tx.commit(CTX).await?;
        if moved {
            tracing::info!(event = "deadline_capture_planned", order_id = %order_id, provider = %provider, deadline = %found.deadline.to_rfc3339(), "the authorization is about to expire: what shipped is captured now");
            self.handoff.dispatch(order_id.as_str());
        }
        Ok(moved)
    }
}

/// A capture row that moves no money: a release, a void or a zero-amount final capture.
fn bare<'a>(
    order: &'a domain::Order,
    sequence: u32,
    kind: CaptureKind,
    cause_id: &'a str,
    is_final: bool,
    shortfall: MinorUnits,
    traceparent: Option<&'a str>,
) -> NewCapture<'a> {
    NewCapture {
        order,
        sequence,
        kind,
        cause_kind: "deadline",
        cause_id,
        amount: MinorUnits::ZERO,
        is_final,
        release_after: false,
        lines: Vec::new(),
        shipping: MinorUnits::ZERO,
        shortfall,
        traceparent,
    }
}

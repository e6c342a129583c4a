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

use crate::domain::{self, Event, OrderId, Phase, PlanContext, ShippingPolicy};
use crate::storage::deadlines::{self, AtRisk, ProviderWindow};
use crate::storage::plans::PlanCause;
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
        let traceparent = crate::telemetry::trace::current_traceparent();
        let recorded = tx
            .record_plan(
                &stored.order,
                &plan,
                PlanCause::Deadline,
                traceparent.as_deref(),
            )
            .await?;
        // Money moves when the plan asked for a capture, a release or a void.
        let moved = !recorded.captures.is_empty();
        tx.commit(CTX).await?;
        if moved {
            tracing::info!(event = "deadline_capture_planned", order_id = %order_id, provider = %provider, deadline = %found.deadline.to_rfc3339(), "the authorization is about to expire: what shipped is captured now");
            self.handoff.dispatch(order_id.as_str());
        }
        Ok(moved)
    }
}

//! The authorization lifecycle sweep: asks the domain's lifecycle policy
//! (`domain::lifecycle::decide`) about each open order's hold and performs what it proposes
//! where the provider documents it — extend the hold, or increment it for a shortfall.
//!
//! Each action is planned in `lifecycle_actions` with its idempotency key before the provider
//! is called, and finished with the answer; a successful answer puts the hold it reports on
//! the order (amount, expiry, and for PayPal's reauthorization the new authorization, the old
//! one kept in `superseded_authorizations`). An action left `planned` or `unknown` by a worker
//! that stopped mid-call is resent under the same key before anything else, so the provider
//! applies it once.
//!
//! An action is recorded under the order's intake lock. While an increment is unanswered, a
//! shipment that would exceed the hold waits for the answer (intake parks it,
//! `awaiting_increment`); the recovery sweeper plans it once the answer is recorded.
//!
//! The time is an argument (`run_once_at(now)`): the sweep never reads the clock itself, so
//! tests drive days of a hold's life without sleeping. The expiry sweep (`expiry.rs`) keeps
//! capturing what shipped before a hold that cannot be extended lapses; this sweep leaves
//! `CaptureShippedNow` to it. `ReleaseRemainder` (an untouched or aged hold) is planned as a
//! void or release row (`cause_kind` `lifecycle`) the executor sends, never silently (event
//! `authorization_released`, a `reconciliation_exceptions` row).

use chrono::{DateTime, Utc};

use crate::domain::ReleaseMethod;
use crate::domain::lifecycle::{self, Action, Decision, Hold, LifecycleSettings};
use crate::domain::{
    AuthorizationId, CapabilityLookup, IdempotencyKey, MinorUnits, Money, OrderId, Phase,
    ShippingPolicy, authorization_deadline,
};
use crate::provider::{LifecycleCall, LifecycleRequest, LifecycleResult, Outcome};
use crate::storage::ledger::{CaptureKind, NewCapture};
use crate::storage::lifecycle::{self as store, ActionAnswer, ActionRow};
use crate::storage::{StorageError, Store};

use crate::telemetry::events::{self, Emit};

use super::execute::Executor;
use super::providers::Providers;

/// Orders looked at per pass, oldest authorization first.
const BATCH: i64 = 500;

/// The lifecycle sweep.
#[derive(Clone)]
pub struct LifecycleSweep {
    pub store: Store,
    pub providers: Providers,
    pub shipping: ShippingPolicy,
    pub settings: LifecycleSettings,
    /// Dispatches a planned release at once; without it the sweeper's next tick sends it.
    pub executor: Option<Executor>,
}

/// What one pass did about one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept {
    pub order_id: String,
    pub decision: Decision,
    /// The outcome label of the provider call made for it, if one was made.
    pub outcome: Option<&'static str>,
}

impl LifecycleSweep {
    /// One pass at `now`. Returns every order whose decision was not "nothing".
    pub async fn run_once_at(&self, now: DateTime<Utc>) -> Result<Vec<Swept>, StorageError> {
        let providers = self.providers.names();
        let ids = store::open_orders(self.store.pool(), &providers, BATCH).await?;
        let mut swept = Vec::new();
        for order_id in ids {
            if let Some(s) = self.sweep_order(&order_id, now).await? {
                swept.push(s);
            }
        }
        Ok(swept)
    }

    async fn sweep_order(
        &self,
        order_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Swept>, StorageError> {
        const CTX: &str = "sweeping an authorization's lifecycle";
        let corrupt = |detail: String| StorageError::Corrupt {
            context: CTX,
            detail,
        };
        let id = OrderId::parse(order_id.to_owned()).map_err(|e| corrupt(e.to_string()))?;
        let Some((stored, facts)) = store::open_order_with_facts(self.store.pool(), &id).await?
        else {
            return Ok(None);
        };
        let provider_name = stored.order.authorization().provider.as_str().to_owned();
        let (Some(provider), Some(caps)) = (
            self.providers.get(&provider_name),
            self.providers.capabilities(&provider_name),
        ) else {
            return Ok(None);
        };
        // A call a stopped worker left unanswered goes first, under its own key.
        if let Some(row) = &facts.unfinished {
            let request = request_of(row).map_err(corrupt)?;
            // An increment whose answer was lost may have been applied; a provider that keeps
            // no answer for a 5xx (Checkout.com) would apply a resend again. Read the hold
            // back first where possible: if it already holds the total, it was applied.
            let applied = if row.status == "unknown"
                && request.call == LifecycleCall::Increment
                && provider.offers_read_back()
            {
                let total = request.new_total().map_err(|e| corrupt(e.to_string()))?;
                match provider.lookup(&request.authorization_id).await {
                    Ok(snapshot) => snapshot
                        .captured
                        .amount()
                        .checked_add(snapshot.capturable.amount(), "read-back total")
                        .is_ok_and(|held| held >= total),
                    // Not readable now: try again on the next pass, sending nothing.
                    Err(_) => return Ok(None),
                }
            } else {
                false
            };
            let result = if applied {
                LifecycleResult {
                    call: crate::provider::CallResult {
                        outcome: Outcome::Succeeded { reference: None },
                        http_status: None,
                        provider_code: Some("read_back".to_owned()),
                        provider_request_id: None,
                        latency: std::time::Duration::ZERO,
                    },
                    hold: None,
                }
            } else {
                provider.lifecycle(&request).await
            };
            let outcome = self.finish(row, &result, now).await?;
            let decision = Decision {
                action: match request.call {
                    LifecycleCall::Extend => Action::Extend,
                    LifecycleCall::Increment => Action::Increment { by: request.by },
                },
                reason: lifecycle::Reason::CaptureInFlight,
            };
            return Ok(Some(Swept {
                order_id: order_id.to_owned(),
                decision,
                outcome: Some(outcome),
            }));
        }
        // An adjustment the provider accepted is settled by its notification first.
        if facts.awaiting {
            return Ok(None);
        }
        let order = &stored.order;
        let auth = order.authorization();
        let (unshipped, shipped_uncaptured) =
            lifecycle::progress(order, &stored.state, self.shipping)
                .map_err(|e| corrupt(format!("order {order_id}: {e}")))?;
        let captured = MinorUnits::new(facts.captured).map_err(|e| corrupt(e.to_string()))?;
        let pending = stored.state.claimed.saturating_sub(captured);
        // The honor period runs from the authorization, or from its last reauthorization.
        let guaranteed_until = caps
            .lifecycle
            .honor_period
            .map(|honor| facts.last_extension_at.unwrap_or(auth.authorized_at) + honor);
        let hold = Hold {
            authorized_at: auth.authorized_at,
            original_amount: auth.amount,
            amount: auth.amount,
            captured,
            pending,
            expires_at: authorization_deadline(order, &caps),
            guaranteed_until,
            extensions: facts.extensions,
            increments: facts.increments,
            unshipped,
            shipped_uncaptured,
            last_shipment_at: facts.last_shipment_at,
            capabilities: caps.lifecycle,
        };
        let decision = lifecycle::decide(now, &hold, &self.settings);
        let call = match decision.action {
            Action::Nothing => return Ok(None),
            Action::ReleaseRemainder => {
                let planned = self.release(&id, &decision, &caps).await?;
                return Ok(Some(Swept {
                    order_id: order_id.to_owned(),
                    decision,
                    outcome: planned.then_some("planned"),
                }));
            }
            Action::CaptureShippedNow => {
                tracing::info!(
                    event = "lifecycle_decision",
                    order_id,
                    provider = %provider_name,
                    action = decision.action.label(),
                    reason = decision.reason.label(),
                    "the hold cannot be kept: the expiry sweep captures what shipped before it lapses"
                );
                return Ok(Some(Swept {
                    order_id: order_id.to_owned(),
                    decision,
                    outcome: None,
                }));
            }
            Action::Extend => LifecycleCall::Extend,
            Action::Increment { .. } => LifecycleCall::Increment,
        };
        let by = match decision.action {
            Action::Increment { by } => by,
            _ => MinorUnits::ZERO,
        };
        // PayPal reauthorizes what is left of the hold; the others restate the amount.
        let authorized = match call {
            LifecycleCall::Extend if caps.lifecycle.honor_period.is_some() => {
                auth.amount.saturating_sub(captured)
            }
            _ => auth.amount,
        };
        let key = lifecycle::lifecycle_key(
            &auth.provider,
            &auth.authorization_id,
            call.label(),
            facts.next_sequence,
        );
        let row = ActionRow {
            order_id: order_id.to_owned(),
            sequence: i32::try_from(facts.next_sequence).map_err(|e| corrupt(e.to_string()))?,
            provider: provider_name.clone(),
            authorization_id: auth.authorization_id.as_str().to_owned(),
            action: call.label().to_owned(),
            reason: decision.reason.label().to_owned(),
            currency: order.currency().code().to_owned(),
            authorized_before: authorized.get(),
            increase: by.get(),
            idempotency_key: key.as_str().to_owned(),
            status: "planned".to_owned(),
            provider_reference: None,
            provider_code: None,
            new_authorization_id: None,
            new_amount: None,
            new_expires_at: None,
            error: None,
            planned_at: now,
            finished_at: None,
        };
        if !store::plan_action(self.store.pool(), &row).await? {
            return Ok(None);
        }
        let request = request_of(&row).map_err(corrupt)?;
        let result = provider.lifecycle(&request).await;
        let outcome = self.finish(&row, &result, now).await?;
        Ok(Some(Swept {
            order_id: order_id.to_owned(),
            decision,
            outcome: Some(outcome),
        }))
    }

    /// Plans the release of what is left of the hold (a void when nothing was claimed, else
    /// the provider's release), closing the order, in one transaction under the order's
    /// intake lock; re-checks that nothing shipped is waiting and, for an untouched hold, that
    /// nothing shipped at all. Returns whether it was planned. The capture row's
    /// `cause_kind` is `lifecycle`, so the release is a row of `reconciliation_exceptions`.
    async fn release(
        &self,
        order_id: &OrderId,
        decision: &Decision,
        caps: &crate::domain::Capabilities,
    ) -> Result<bool, StorageError> {
        const CTX: &str = "releasing a hold the lifecycle policy found unused";
        let mut tx = self.store.begin(CTX).await?;
        tx.lock_order_key(order_id).await?;
        let Some(stored) = tx.load_order(order_id, true).await? else {
            return Ok(false);
        };
        let mut state = stored.state;
        let untouched = decision.reason == lifecycle::Reason::Untouched;
        if state.phase != Phase::Open
            || state.shipped != state.charged
            || (untouched && state.shipped.iter().any(|&u| u > 0))
        {
            return Ok(false);
        }
        let kind = if state.claimed.is_zero() {
            CaptureKind::Void
        } else {
            match caps.release {
                ReleaseMethod::Cancel => CaptureKind::Release,
                ReleaseMethod::ZeroAmountFinalCapture => CaptureKind::Capture,
            }
        };
        let sequence = state.captures + 1;
        let cause_id = format!("{}-{sequence}", decision.reason.label());
        tx.insert_capture(&NewCapture {
            order: &stored.order,
            sequence,
            kind,
            cause_kind: "lifecycle",
            cause_id: std::borrow::Cow::Borrowed(cause_id.as_str()),
            amount: MinorUnits::ZERO,
            is_final: true,
            release_after: false,
            lines: Vec::new(),
            shipping: MinorUnits::ZERO,
            shortfall: MinorUnits::ZERO,
            traceparent: None,
        })
        .await?;
        state.captures = sequence;
        state.phase = Phase::Completed;
        tx.save_progress(&stored.order, &state).await?;
        tx.commit(CTX).await?;
        let auth = stored.order.authorization();
        events::AuthorizationReleased {
            provider: auth.provider.as_str(),
            order_id: order_id.as_str(),
            authorization_id: auth.authorization_id.as_str(),
            reason: decision.reason.label(),
        }
        .emit();
        if let Some(executor) = &self.executor {
            executor.dispatch(order_id.as_str());
        }
        Ok(true)
    }

    /// Records the answer and, for a success, the hold it reports (for an increment without
    /// an amount in the answer, the amount asked for).
    async fn finish(
        &self,
        row: &ActionRow,
        result: &LifecycleResult,
        now: DateTime<Utc>,
    ) -> Result<&'static str, StorageError> {
        let call = &result.call;
        let (status, reference, error) = match &call.outcome {
            Outcome::Succeeded { reference } => ("succeeded", reference.clone(), None),
            Outcome::Pending { reference } => ("pending", reference.clone(), None),
            Outcome::Declined { code, message } => {
                ("declined", None, Some(format!("{code}: {message}")))
            }
            Outcome::Failed { reason } => ("failed", None, Some(reason.clone())),
            // Not applied yet, or maybe applied: the same key is resent on the next pass.
            Outcome::Retryable { reason, .. } => ("planned", None, Some(reason.clone())),
            Outcome::Unknown { reason, .. } => ("unknown", None, Some(reason.clone())),
        };
        let hold = result.hold.clone().unwrap_or_default();
        let asked = row.authorized_before.checked_add(row.increase);
        let new_amount = hold
            .amount
            .map(MinorUnits::get)
            .or(match row.action.as_str() {
                "increment" if status == "succeeded" => asked,
                _ => None,
            });
        let new_id = hold.authorization_id.as_ref().map(AuthorizationId::as_str);
        let error = error.map(|e| crate::sanitize::text(&e, crate::sanitize::FIELD_CHARS));
        store::finish_action(
            self.store.pool(),
            &row.idempotency_key,
            &ActionAnswer {
                status,
                provider_reference: reference.as_deref(),
                provider_code: call.provider_code.as_deref(),
                http_status: call.http_status.map(i32::from),
                new_authorization_id: new_id,
                // A reauthorization holds what was left; the order keeps its total.
                new_amount: if new_id.is_some() { None } else { new_amount },
                new_expires_at: hold.expires_at,
                error: error.as_deref(),
            },
            now,
        )
        .await?;
        let label = call.outcome.label();
        events::LifecycleActionDone {
            provider: &row.provider,
            order_id: &row.order_id,
            authorization_id: &row.authorization_id,
            action: &row.action,
            reason: &row.reason,
            outcome: label,
            error: error.as_deref(),
        }
        .emit();
        Ok(label)
    }
}

/// The provider request an action row describes.
fn request_of(row: &ActionRow) -> Result<LifecycleRequest, String> {
    let currency = crate::domain::Currency::parse(&row.currency).map_err(|e| e.to_string())?;
    Ok(LifecycleRequest {
        call: if row.action == "increment" {
            LifecycleCall::Increment
        } else {
            LifecycleCall::Extend
        },
        authorization_id: AuthorizationId::parse(row.authorization_id.clone())
            .map_err(|e| e.to_string())?,
        order_id: OrderId::parse(row.order_id.clone()).map_err(|e| e.to_string())?,
        sequence: u32::try_from(row.sequence).map_err(|e| e.to_string())?,
        authorized: Money::new(
            MinorUnits::new(row.authorized_before).map_err(|e| e.to_string())?,
            currency,
        ),
        by: MinorUnits::new(row.increase).map_err(|e| e.to_string())?,
        idempotency_key: IdempotencyKey::from_stored(&row.idempotency_key)
            .map_err(|e| e.to_string())?,
    })
}

/// Settles the extension or increment whose pending answer gave `reference`, from the
/// provider's notification (Adyen's `AUTHORISATION_ADJUSTMENT`): a success renews the hold for
/// the provider's documented period from now and puts the amount asked on the order.
pub async fn settle_notified(
    store: &Store,
    providers: &Providers,
    provider: &str,
    reference: &str,
    merchant_reference: Option<&str>,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> Result<Option<String>, StorageError> {
    let renews = providers.capabilities(provider).and_then(|caps| {
        let l = caps.lifecycle;
        l.extension
            .map(|e| e.renews_for)
            .or(l.increment.and_then(|i| i.renews_for))
    });
    let (succeeded, error) = match outcome {
        Outcome::Succeeded { .. } => (true, None),
        Outcome::Declined { code, message } => (false, Some(format!("{code}: {message}"))),
        Outcome::Failed { reason } => (false, Some(reason.clone())),
        Outcome::Pending { .. } | Outcome::Retryable { .. } | Outcome::Unknown { .. } => {
            return Ok(None);
        }
    };
    let settled = store::settle_pending(
        store.pool(),
        provider,
        reference,
        merchant_reference,
        succeeded,
        error.as_deref(),
        renews.map(|r| now + r),
        now,
    )
    .await?;
    if let Some(order_id) = &settled {
        tracing::info!(
            event = "lifecycle_action_settled",
            order_id = %order_id,
            provider,
            succeeded,
            "the provider settled an extension or increment"
        );
    }
    Ok(settled)
}

/// One `order show` line for a lifecycle action (the `lifecycle_actions` row as JSON):
/// `extend #1 (guarantee_ending) on 0VF5… → succeeded · new authorization 8AA8… · holds until
/// 2026-03-30T12:00:00Z · key cw1-…`.
pub fn summary(f: &serde_json::Value) -> String {
    use serde_json::Value;
    let text = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut line = format!(
        "{} #{} ({}) on {}/{}",
        text(&f["action"]),
        text(&f["sequence"]),
        text(&f["reason"]),
        text(&f["provider"]),
        text(&f["authorization_id"]),
    );
    if f["action"] == "increment" {
        line.push_str(&format!(
            " · {} + {} {}",
            text(&f["authorized_before"]),
            text(&f["increase"]),
            text(&f["currency"]).trim()
        ));
    }
    line.push_str(&format!(" → {}", text(&f["status"])));
    if let Value::String(id) = &f["new_authorization_id"] {
        line.push_str(&format!(" · new authorization {id}"));
    }
    if !f["new_amount"].is_null() {
        line.push_str(&format!(" · authorized {}", text(&f["new_amount"])));
    }
    if let Value::String(at) = &f["new_expires_at"] {
        line.push_str(&format!(" · holds until {at}"));
    }
    if let Value::String(code) = &f["provider_code"] {
        line.push_str(&format!(" · code {code}"));
    }
    line.push_str(&format!(" · key {}", text(&f["idempotency_key"])));
    if let Value::String(e) = &f["error"] {
        line.push_str(&format!(" · {e}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::summary;
    use serde_json::json;

    #[test]
    fn an_order_show_line_says_what_was_asked_and_what_came_back() {
        let line = summary(&json!({
            "action": "increment", "sequence": 1, "reason": "shortfall", "provider": "checkout",
            "authorization_id": "pay_1", "authorized_before": 10000, "increase": 2455,
            "currency": "USD", "status": "succeeded", "new_authorization_id": null,
            "new_amount": 12455, "new_expires_at": "2026-03-15T12:00:00+00:00",
            "provider_code": "10000", "idempotency_key": "cw1-abc", "error": null,
        }));
        assert_eq!(
            line,
            "increment #1 (shortfall) on checkout/pay_1 · 10000 + 2455 USD → succeeded · authorized 12455 · holds until 2026-03-15T12:00:00+00:00 · code 10000 · key cw1-abc"
        );
        let line = summary(&json!({
            "action": "extend", "sequence": 2, "reason": "guarantee_ending", "provider": "paypal",
            "authorization_id": "0VF5", "status": "failed", "idempotency_key": "cw1-def",
            "error": "422 REAUTHORIZATION_NOT_SUPPORTED",
        }));
        assert_eq!(
            line,
            "extend #2 (guarantee_ending) on paypal/0VF5 → failed · key cw1-def · 422 REAUTHORIZATION_NOT_SUPPORTED"
        );
    }
}

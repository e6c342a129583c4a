//! `provider reconcile`: what the provider reports per authorization (captured, capturable,
//! status, read with [`PaymentProvider::lookup`](crate::provider::PaymentProvider::lookup))
//! against the ledger, and the differences. Reads only: it never captures, releases or
//! changes a row.
//!
//! What the ledger expects:
//! - captured at the provider = our succeeded captures, up to our captures still in progress
//!   (queued, in flight, pending, retrying) on top;
//! - a closed authorization (final capture, release or void succeeded) holds nothing more;
//! - an open one is not cancelled and can still give what it was authorized for, less what
//!   was captured;
//! - a declined or superseded one (replaced by `order resume`) may still hold funds at the
//!   provider: reported as information, since releasing it is a decision for a person.

use serde::Serialize;

use crate::domain::AuthorizationId;
use crate::provider::AuthorizationSnapshot;
use crate::storage::operator::LedgerAuthorization;

use super::super::providers::Providers;
use super::{Cell, OperatorError, OutputFormat, csv, table};

/// How much a difference matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Money moved, or will not move, differently from the ledger: reconcile by hand.
    Error,
    /// The comparison could not be made, or an open order will fail to capture later.
    Warning,
    /// Expected in passing (a capture in progress) or a hold a person may want released.
    Info,
}

/// One difference between the ledger and the provider for one authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub order_id: String,
    pub provider: String,
    pub authorization_id: String,
    pub currency: String,
    /// `captured_less`, `captured_more`, `capture_in_progress`, `not_released`,
    /// `released_early`, `capturable_short`, `still_held`, `currency_differs`,
    /// `lookup_failed`, `no_adapter`.
    pub kind: &'static str,
    pub severity: Severity,
    pub ledger_status: String,
    pub ledger_captured: i64,
    pub ledger_pending: i64,
    pub provider_status: Option<String>,
    pub provider_captured: Option<i64>,
    pub provider_capturable: Option<i64>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reconciliation {
    pub checked: usize,
    /// Authorizations with no difference at all.
    pub matched: usize,
    pub differences: Vec<Difference>,
}

impl Reconciliation {
    /// Whether a person must look: a difference of severity error or warning. Informational
    /// ones (a capture in progress, a hold still held) are listed but do not count.
    pub fn needs_attention(&self) -> bool {
        self.differences
            .iter()
            .any(|d| matches!(d.severity, Severity::Error | Severity::Warning))
    }
}

fn difference(
    a: &LedgerAuthorization,
    snapshot: Option<&AuthorizationSnapshot>,
    kind: &'static str,
    severity: Severity,
    detail: String,
) -> Difference {
    Difference {
        order_id: a.order_id.clone(),
        provider: a.provider.clone(),
        authorization_id: a.authorization_id.clone(),
        currency: a.currency.clone(),
        kind,
        severity,
        ledger_status: a.status.clone(),
        ledger_captured: a.captured_amount,
        ledger_pending: a.pending_amount,
        provider_status: snapshot.map(|s| s.status.clone()),
        provider_captured: snapshot.map(|s| s.captured.amount().get()),
        provider_capturable: snapshot.map(|s| s.capturable.amount().get()),
        detail,
    }
}

/// The differences between one ledger authorization and the provider's snapshot of it. Pure.
pub fn compare(a: &LedgerAuthorization, s: &AuthorizationSnapshot) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut add = |kind, severity, detail: String| {
        out.push(difference(a, Some(s), kind, severity, detail));
    };
    if s.captured.currency().code() != a.currency {
        add(
            "currency_differs",
            Severity::Error,
            format!(
                "the provider reports {}, the ledger {}",
                s.captured.currency().code(),
                a.currency
            ),
        );
        return out;
    }
    let theirs = s.captured.amount().get();
    let capturable = s.capturable.amount().get();
    let ours = a.captured_amount;
    let in_progress = a.pending_amount;
    if theirs < ours {
        add(
            "captured_less",
            Severity::Error,
            format!(
                "the ledger records {ours} captured, the provider reports {theirs}: {} recorded as succeeded did not arrive",
                ours - theirs
            ),
        );
    } else if theirs > ours + in_progress {
        add(
            "captured_more",
            Severity::Error,
            format!(
                "the provider reports {theirs} captured, the ledger {ours} (+{in_progress} in progress): {} captured that the ledger does not know",
                theirs - ours - in_progress
            ),
        );
    } else if theirs > ours {
        add(
            "capture_in_progress",
            Severity::Info,
            format!(
                "{} of the {in_progress} in progress is already captured at the provider; the worker records it when it reads the outcome",
                theirs - ours
            ),
        );
    }
    let cancelled = s.status == "canceled";
    match a.status.as_str() {
        "closed" if capturable > 0 => add(
            "not_released",
            Severity::Error,
            format!(
                "the ledger released this authorization, the provider still holds {capturable}"
            ),
        ),
        "open" => {
            // What the queued and in-progress captures still need, and what an open Stripe-like
            // authorization should still allow: its amount less what was captured on it.
            let still_to_send = (ours + in_progress - theirs).max(0);
            let expected = (a.authorized_amount - theirs).max(0);
            if cancelled {
                add(
                    "released_early",
                    if in_progress > 0 {
                        Severity::Error
                    } else {
                        Severity::Warning
                    },
                    format!(
                        "the provider cancelled or expired the authorization while the order is open ({in_progress} in progress); later captures will fail"
                    ),
                );
            } else if capturable < still_to_send {
                add(
                    "capturable_short",
                    Severity::Error,
                    format!(
                        "the provider lets us capture {capturable}, but {still_to_send} is queued or in progress"
                    ),
                );
            } else if capturable < expected {
                add(
                    "capturable_short",
                    Severity::Warning,
                    format!(
                        "the provider lets us capture {capturable} of the {expected} the ledger expects"
                    ),
                );
            }
        }
        "declined" | "superseded" if capturable > 0 && !cancelled => add(
            "still_held",
            Severity::Info,
            format!(
                "the authorization is {} in the ledger and the provider still holds {capturable}; cancel it at the provider if the customer should get the hold back",
                a.status
            ),
        ),
        _ => {}
    }
    out
}

/// Reads every authorization back from its provider and compares. `progress` is called once
/// per authorization. Lookups that fail are reported as differences, not errors.
pub async fn reconcile(
    providers: &Providers,
    authorizations: &[LedgerAuthorization],
    mut progress: impl FnMut(&str),
) -> Reconciliation {
    let mut differences = Vec::new();
    let mut matched = 0;
    for a in authorizations {
        let found = match providers.get(&a.provider) {
            None => vec![difference(
                a,
                None,
                "no_adapter",
                Severity::Warning,
                format!(
                    "provider {:?} is not configured here; cannot read the authorization back",
                    a.provider
                ),
            )],
            Some(provider) => match AuthorizationId::parse(a.authorization_id.clone()) {
                Err(e) => vec![difference(
                    a,
                    None,
                    "lookup_failed",
                    Severity::Warning,
                    e.to_string(),
                )],
                Ok(id) => match provider.lookup(&id).await {
                    Ok(snapshot) => compare(a, &snapshot),
                    Err(e) => vec![difference(
                        a,
                        None,
                        "lookup_failed",
                        Severity::Warning,
                        e.to_string(),
                    )],
                },
            },
        };
        if found.is_empty() {
            matched += 1;
        }
        progress(&a.authorization_id);
        differences.extend(found);
    }
    Reconciliation {
        checked: authorizations.len(),
        matched,
        differences,
    }
}

const COLUMNS: [&str; 13] = [
    "severity",
    "kind",
    "order_id",
    "provider",
    "authorization_id",
    "currency",
    "ledger_status",
    "ledger_captured",
    "ledger_pending",
    "provider_status",
    "provider_captured",
    "provider_capturable",
    "detail",
];

fn cells(d: &Difference) -> Vec<Cell> {
    let opt = |v: Option<i64>| v.map(Cell::number).unwrap_or(Cell::text(""));
    vec![
        Cell::text(format!("{:?}", d.severity).to_lowercase()),
        Cell::text(d.kind),
        Cell::text(d.order_id.clone()),
        Cell::text(d.provider.clone()),
        Cell::text(d.authorization_id.clone()),
        Cell::text(d.currency.clone()),
        Cell::text(d.ledger_status.clone()),
        Cell::number(d.ledger_captured),
        Cell::number(d.ledger_pending),
        Cell::text(d.provider_status.clone().unwrap_or_default()),
        opt(d.provider_captured),
        opt(d.provider_capturable),
        Cell::text(d.detail.clone()),
    ]
}

pub fn render(r: &Reconciliation, format: OutputFormat) -> Result<String, OperatorError> {
    let mut rows: Vec<&Difference> = r.differences.iter().collect();
    rows.sort_by(|a, b| (a.severity, &a.order_id).cmp(&(b.severity, &b.order_id)));
    match format {
        OutputFormat::Json => serde_json::to_string_pretty(r)
            .map(|s| s + "\n")
            .map_err(|e| OperatorError::Invalid(format!("encoding the result as JSON: {e}"))),
        OutputFormat::Csv => csv(&COLUMNS, &rows.iter().map(|d| cells(d)).collect::<Vec<_>>()),
        OutputFormat::Table => {
            let mut out = format!(
                "{} authorizations checked: {} match, {} differences\n",
                r.checked,
                r.matched,
                r.differences.len()
            );
            if !rows.is_empty() {
                out.push('\n');
                out.push_str(&table(
                    &COLUMNS,
                    &rows.iter().map(|d| cells(d)).collect::<Vec<_>>(),
                ));
            }
            Ok(out)
        }
    }
}

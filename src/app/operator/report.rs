//! `report`: reconciliation for a range of UTC days from `reconciliation_daily`, with totals
//! per currency and provider and the open exceptions, as a table, CSV or JSON. Amounts are
//! integer minor units of the row's currency, in every format.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::cli::OutputFormat;
use crate::storage::Store;
use crate::storage::operator::{self as sql, DailyRow, ExceptionCount};

use super::{OperatorError, csv, table};

/// The range's totals for one currency and provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Total {
    pub currency: String,
    pub provider: String,
    pub authorized_amount: i128,
    pub authorization_count: i64,
    pub captured_amount: i128,
    pub capture_count: i64,
    pub released_amount: i128,
    pub release_count: i64,
    pub declined_amount: i128,
    pub decline_count: i64,
    pub provider_calls: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub generated_at: DateTime<Utc>,
    pub days: Vec<DailyRow>,
    pub totals: Vec<Total>,
    /// Problems open now (`reconciliation_exceptions`, default thresholds), by kind.
    pub open_exceptions: Vec<ExceptionCount>,
}

pub async fn build(store: &Store, from: NaiveDate, to: NaiveDate) -> Result<Report, OperatorError> {
    let days = sql::daily(store.pool(), from, to).await?;
    let open_exceptions = sql::exception_counts(store.pool()).await?;
    Ok(Report {
        from,
        to,
        generated_at: Utc::now(),
        totals: totals(&days),
        days,
        open_exceptions,
    })
}

fn totals(days: &[DailyRow]) -> Vec<Total> {
    let mut by: BTreeMap<(String, String), Total> = BTreeMap::new();
    for d in days {
        let t = by
            .entry((d.currency.clone(), d.provider.clone()))
            .or_insert_with(|| Total {
                currency: d.currency.clone(),
                provider: d.provider.clone(),
                ..Total::default()
            });
        t.authorized_amount += d.authorized_amount;
        t.authorization_count += d.authorization_count;
        t.captured_amount += d.captured_amount;
        t.capture_count += d.capture_count;
        t.released_amount += d.released_amount;
        t.release_count += d.release_count;
        t.declined_amount += d.declined_amount;
        t.decline_count += d.decline_count;
        t.provider_calls += d.provider_calls;
    }
    by.into_values().collect()
}

/// The columns of the CSV and of the table's day rows, in order.
pub const DAY_COLUMNS: [&str; 18] = [
    "day",
    "currency",
    "provider",
    "authorized_amount",
    "authorization_count",
    "captured_amount",
    "capture_count",
    "released_amount",
    "release_count",
    "declined_amount",
    "decline_count",
    "provider_calls",
    "calls_succeeded",
    "calls_pending",
    "calls_declined",
    "calls_retryable",
    "calls_failed",
    "calls_unknown",
];

fn day_cells(d: &DailyRow) -> Vec<String> {
    vec![
        d.day.to_string(),
        d.currency.clone(),
        d.provider.clone(),
        d.authorized_amount.to_string(),
        d.authorization_count.to_string(),
        d.captured_amount.to_string(),
        d.capture_count.to_string(),
        d.released_amount.to_string(),
        d.release_count.to_string(),
        d.declined_amount.to_string(),
        d.decline_count.to_string(),
        d.provider_calls.to_string(),
        d.calls_succeeded.to_string(),
        d.calls_pending.to_string(),
        d.calls_declined.to_string(),
        d.calls_retryable.to_string(),
        d.calls_failed.to_string(),
        d.calls_unknown.to_string(),
    ]
}

/// The report as text: a table for people, CSV (the day rows only) or JSON (everything).
pub fn render(report: &Report, format: OutputFormat) -> Result<String, OperatorError> {
    match format {
        OutputFormat::Csv => Ok(csv(
            &DAY_COLUMNS,
            &report.days.iter().map(day_cells).collect::<Vec<_>>(),
        )),
        OutputFormat::Json => serde_json::to_string_pretty(report)
            .map(|s| s + "\n")
            .map_err(|e| OperatorError::Invalid(format!("encoding the report as JSON: {e}"))),
        OutputFormat::Table => {
            let mut out = format!(
                "Reconciliation {} to {} (UTC days; amounts in minor units)\n\n",
                report.from, report.to
            );
            let headers = [
                "day",
                "cur",
                "provider",
                "authorized",
                "auths",
                "captured",
                "caps",
                "released",
                "rels",
                "declined",
                "decl",
                "calls",
                "ok",
                "pend",
                "declined",
                "retry",
                "failed",
                "unknown",
            ];
            if report.days.is_empty() {
                out.push_str("no activity in this range\n");
            } else {
                out.push_str(&table(
                    &headers,
                    &report.days.iter().map(day_cells).collect::<Vec<_>>(),
                ));
            }
            out.push_str("\nTotals\n");
            let rows: Vec<Vec<String>> = report
                .totals
                .iter()
                .map(|t| {
                    vec![
                        t.currency.clone(),
                        t.provider.clone(),
                        t.authorized_amount.to_string(),
                        t.authorization_count.to_string(),
                        t.captured_amount.to_string(),
                        t.capture_count.to_string(),
                        t.released_amount.to_string(),
                        t.release_count.to_string(),
                        t.declined_amount.to_string(),
                        t.decline_count.to_string(),
                        t.provider_calls.to_string(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "cur",
                    "provider",
                    "authorized",
                    "auths",
                    "captured",
                    "caps",
                    "released",
                    "rels",
                    "declined",
                    "decl",
                    "calls",
                ],
                &rows,
            ));
            out.push_str("\nOpen exceptions (reconciliation_exceptions)\n");
            if report.open_exceptions.is_empty() {
                out.push_str("none\n");
            } else {
                let rows: Vec<Vec<String>> = report
                    .open_exceptions
                    .iter()
                    .map(|e| vec![e.kind.clone(), e.count.to_string()])
                    .collect();
                out.push_str(&table(&["kind", "count"], &rows));
            }
            Ok(out)
        }
    }
}

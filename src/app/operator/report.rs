//! `report`: reconciliation for a range of UTC days from `reconciliation_daily`, with totals
//! per currency and provider and the open exceptions, as a table, CSV or JSON. Amounts are
//! integer minor units of the row's currency unless `--units major` asks for decimals (table
//! and CSV only; JSON always carries minor units).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::storage::Store;
use crate::storage::operator::{self as sql, DailyRow, ExceptionCount};

use super::units::{self, Units};
use super::{Cell, OperatorError, OutputFormat, csv, table};

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

fn day_cells(d: &DailyRow, units: Units) -> Result<Vec<Cell>, OperatorError> {
    let money = |v: i128| units::amount(units, v, &d.currency).map(Cell::Number);
    Ok(vec![
        Cell::text(d.day.to_string()),
        Cell::text(d.currency.clone()),
        Cell::text(d.provider.clone()),
        money(d.authorized_amount)?,
        Cell::number(d.authorization_count),
        money(d.captured_amount)?,
        Cell::number(d.capture_count),
        money(d.released_amount)?,
        Cell::number(d.release_count),
        money(d.declined_amount)?,
        Cell::number(d.decline_count),
        Cell::number(d.provider_calls),
        Cell::number(d.calls_succeeded),
        Cell::number(d.calls_pending),
        Cell::number(d.calls_declined),
        Cell::number(d.calls_retryable),
        Cell::number(d.calls_failed),
        Cell::number(d.calls_unknown),
    ])
}

fn total_cells(t: &Total, units: Units) -> Result<Vec<Cell>, OperatorError> {
    let money = |v: i128| units::amount(units, v, &t.currency).map(Cell::Number);
    Ok(vec![
        Cell::text(t.currency.clone()),
        Cell::text(t.provider.clone()),
        money(t.authorized_amount)?,
        Cell::number(t.authorization_count),
        money(t.captured_amount)?,
        Cell::number(t.capture_count),
        money(t.released_amount)?,
        Cell::number(t.release_count),
        money(t.declined_amount)?,
        Cell::number(t.decline_count),
        Cell::number(t.provider_calls),
    ])
}

/// The report in minor units.
pub fn render(report: &Report, format: OutputFormat) -> Result<String, OperatorError> {
    render_in(report, format, Units::Minor)
}

/// The report as text: a table for people, CSV (the day rows only) or JSON (everything, in
/// minor units).
pub fn render_in(
    report: &Report,
    format: OutputFormat,
    units: Units,
) -> Result<String, OperatorError> {
    units::only_for_people(units, format == OutputFormat::Json)?;
    let days = report
        .days
        .iter()
        .map(|d| day_cells(d, units))
        .collect::<Result<Vec<_>, _>>()?;
    match format {
        OutputFormat::Csv => csv(&DAY_COLUMNS, &days),
        OutputFormat::Json => serde_json::to_string_pretty(report)
            .map(|s| s + "\n")
            .map_err(|e| OperatorError::Invalid(format!("encoding the report as JSON: {e}"))),
        OutputFormat::Table => {
            let mut out = format!(
                "Reconciliation {} to {} (UTC days; amounts in {} units)\n\n",
                report.from,
                report.to,
                match units {
                    Units::Minor => "minor",
                    Units::Major => "major",
                }
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
                out.push_str(&table(&headers, &days));
            }
            out.push_str("\nTotals\n");
            let rows = report
                .totals
                .iter()
                .map(|t| total_cells(t, units))
                .collect::<Result<Vec<_>, _>>()?;
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

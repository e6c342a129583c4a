//! `--units major`: amounts for people, as decimals in the currency's major unit with its
//! ISO 4217 exponent (the domain's currency table), built from integers only. Minor units stay
//! the default and JSON always carries them, so programs never parse a decimal.

use serde_json::Value;

use crate::domain::{Currency, major_string};

use super::OperatorError;
use super::orders::OrderStory;

/// How amounts are printed in tables, text and CSV. JSON always carries integer minor units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Units {
    /// Integer minor units of the currency, as stored and sent: `6979` for $69.79.
    #[default]
    Minor,
    /// Decimals in the currency's major unit with its ISO 4217 exponent: `69.79` for 6979 USD.
    Major,
}

/// `minor` minor units of `currency` (a code as stored: surrounding blanks are ignored) as
/// the units ask.
pub fn amount(
    units: Units,
    minor: impl Into<i128>,
    currency: &str,
) -> Result<String, OperatorError> {
    let minor: i128 = minor.into();
    match units {
        Units::Minor => Ok(minor.to_string()),
        Units::Major => Ok(major_string(minor, currency_of(currency)?)),
    }
}

fn currency_of(code: &str) -> Result<Currency, OperatorError> {
    Currency::parse(code.trim()).map_err(|_| {
        OperatorError::Invalid(format!(
            "currency {code:?} is not in the currency table, so its amounts cannot be shown in major units; use --units minor"
        ))
    })
}

/// Refuses major units where the output is for programs.
pub fn only_for_people(units: Units, json: bool) -> Result<(), OperatorError> {
    if units == Units::Major && json {
        return Err(OperatorError::Invalid(
            "--units major applies to tables, text and CSV; JSON always carries integer minor units"
                .into(),
        ));
    }
    Ok(())
}

/// Whether a column of the ledger's views holds an amount of the order's currency.
fn is_amount(key: &str) -> bool {
    key == "amount"
        || key.ends_with("_amount")
        || matches!(
            key,
            "order_total" | "shipped_value" | "open_value" | "over_capture_allowance"
        )
}

/// The story with every amount (an integer in an amount column) written as a major-unit
/// decimal string of the order's currency, for the text rendering.
pub fn story_in_major_units(story: &OrderStory) -> Result<OrderStory, OperatorError> {
    let currency = currency_of(story.overview.order["currency"].as_str().unwrap_or(""))?;
    let mut story = story.clone();
    convert(&mut story.overview.order, currency);
    for v in story
        .overview
        .authorizations
        .iter_mut()
        .chain(story.overview.lines.iter_mut())
    {
        convert(v, currency);
    }
    for row in &mut story.history {
        convert(&mut row.fields, currency);
    }
    Ok(story)
}

fn convert(value: &mut Value, currency: Currency) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v.as_i64() {
                    Some(minor) if is_amount(key) => {
                        *v = Value::String(major_string(minor, currency));
                    }
                    _ => convert(v, currency),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| convert(v, currency)),
        _ => {}
    }
}

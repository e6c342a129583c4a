//! Money: integer minor units tagged with a currency, with checked arithmetic.
//!
//! Owns [`MinorUnits`] (a non-negative count of a currency's smallest unit) and [`Money`]
//! (an amount and its currency). Overflow is an error, never a wrap; mixing currencies is an
//! error, never a conversion. No floats. Pure: no I/O.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::currency::Currency;

/// Why an amount could not be formed or combined.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MoneyError {
    #[error("amount {value} is negative: amounts are non-negative integers in minor units")]
    Negative { value: i64 },
    #[error(
        "amount arithmetic overflowed while computing {what}: the amounts involved are too large"
    )]
    Overflow { what: &'static str },
    #[error("currency mismatch: {left} and {right} cannot be combined")]
    CurrencyMismatch { left: Currency, right: Currency },
}

/// A non-negative amount in a currency's minor unit (cents for USD, yen for JPY, fils for KWD).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct MinorUnits(i64);

impl MinorUnits {
    pub const ZERO: MinorUnits = MinorUnits(0);
    pub const ONE: MinorUnits = MinorUnits(1);

    /// Accepts any value in `0..=i64::MAX`.
    pub fn new(value: i64) -> Result<Self, MoneyError> {
        if value < 0 {
            Err(MoneyError::Negative { value })
        } else {
            Ok(MinorUnits(value))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `self + rhs`, or `Overflow` naming `what` was being computed.
    pub fn checked_add(self, rhs: MinorUnits, what: &'static str) -> Result<Self, MoneyError> {
        self.0
            .checked_add(rhs.0)
            .map(MinorUnits)
            .ok_or(MoneyError::Overflow { what })
    }

    /// `self - rhs`; a result below zero is an error (`Negative`), since amounts never go negative.
    pub fn checked_sub(self, rhs: MinorUnits) -> Result<Self, MoneyError> {
        MinorUnits::new(self.0 - rhs.0)
    }

    /// `self - rhs`, or zero when `rhs` is larger.
    pub fn saturating_sub(self, rhs: MinorUnits) -> Self {
        MinorUnits((self.0 - rhs.0).max(0))
    }

    /// `self × factor`, checked.
    pub fn checked_mul(self, factor: u32, what: &'static str) -> Result<Self, MoneyError> {
        self.0
            .checked_mul(i64::from(factor))
            .map(MinorUnits)
            .ok_or(MoneyError::Overflow { what })
    }

    /// Sums an iterator of amounts, checked.
    pub fn checked_sum(
        items: impl IntoIterator<Item = MinorUnits>,
        what: &'static str,
    ) -> Result<Self, MoneyError> {
        items
            .into_iter()
            .try_fold(MinorUnits::ZERO, |acc, x| acc.checked_add(x, what))
    }
}

impl TryFrom<i64> for MinorUnits {
    type Error = MoneyError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        MinorUnits::new(value)
    }
}

impl From<MinorUnits> for i64 {
    fn from(value: MinorUnits) -> Self {
        value.0
    }
}

impl fmt::Display for MinorUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An amount with its currency. Arithmetic between two `Money` values requires equal currencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    amount: MinorUnits,
    currency: Currency,
}

impl Money {
    pub fn new(amount: MinorUnits, currency: Currency) -> Self {
        Money { amount, currency }
    }

    pub fn zero(currency: Currency) -> Self {
        Money::new(MinorUnits::ZERO, currency)
    }

    pub fn amount(&self) -> MinorUnits {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    fn same_currency(&self, rhs: &Money) -> Result<(), MoneyError> {
        if self.currency == rhs.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: rhs.currency,
            })
        }
    }

    pub fn checked_add(self, rhs: Money, what: &'static str) -> Result<Money, MoneyError> {
        self.same_currency(&rhs)?;
        Ok(Money::new(
            self.amount.checked_add(rhs.amount, what)?,
            self.currency,
        ))
    }

    pub fn checked_sub(self, rhs: Money) -> Result<Money, MoneyError> {
        self.same_currency(&rhs)?;
        Ok(Money::new(
            self.amount.checked_sub(rhs.amount)?,
            self.currency,
        ))
    }

    /// The amount as a decimal string in major units with exactly the currency's exponent
    /// digits ("12.34" for 1234 USD, "1234" for 1234 JPY, "1.234" for 1234 KWD). Built from
    /// integers only, for providers whose wire format wants decimals.
    pub fn to_major_string(&self) -> String {
        major_string(self.amount.get(), self.currency)
    }

    /// Parses a major-unit decimal string with at most the currency's exponent digits after
    /// the point ("12.3" → 1230 USD). The inverse of [`Money::to_major_string`].
    pub fn parse_major(text: &str, currency: Currency) -> Result<Money, MajorParseError> {
        let bad = || MajorParseError {
            text: text.chars().take(40).collect(),
            currency,
        };
        let exp = usize::from(currency.exponent());
        let (int, frac) = match text.split_once('.') {
            Some((i, f)) => (i, f),
            None => (text, ""),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || (text.contains('.') && !digits(frac)) || frac.len() > exp {
            return Err(bad());
        }
        let mut value: i64 = int.parse().map_err(|_| bad())?;
        for _ in 0..exp {
            value = value.checked_mul(10).ok_or_else(bad)?;
        }
        if !frac.is_empty() {
            let f: i64 = frac.parse().map_err(|_| bad())?;
            let f = f * 10_i64.pow((exp - frac.len()) as u32);
            value = value.checked_add(f).ok_or_else(bad)?;
        }
        Ok(Money::new(MinorUnits(value), currency))
    }
}

/// `minor` minor units of `currency` as a decimal string in major units with exactly the
/// currency's exponent digits, from integers only: "69.79" for 6979 USD, "1000" for 1000 JPY,
/// "-1.234" for -1234 KWD. Signed, for differences and reports; money itself never is.
pub fn major_string(minor: impl Into<i128>, currency: Currency) -> String {
    let minor: i128 = minor.into();
    let exp = u32::from(currency.exponent());
    if exp == 0 {
        return minor.to_string();
    }
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let scale = 10_u128.pow(exp);
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = exp as usize
    )
}

/// A major-unit decimal string that is not a valid amount in its currency.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{text:?} is not a non-negative {currency} amount with at most {} decimals", currency.exponent())]
pub struct MajorParseError {
    pub text: String,
    pub currency: Currency,
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_major_string(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(c: &str) -> Currency {
        Currency::parse(c).unwrap()
    }

    #[test]
    fn major_strings_use_the_currency_exponent() {
        let m = |v, c| Money::new(MinorUnits::new(v).unwrap(), cur(c)).to_major_string();
        assert_eq!(m(1234, "USD"), "12.34");
        assert_eq!(m(5, "USD"), "0.05");
        assert_eq!(m(1234, "JPY"), "1234");
        assert_eq!(m(1234, "KWD"), "1.234");
        assert_eq!(m(7, "KWD"), "0.007");
        assert_eq!(m(0, "CLF"), "0.0000");
    }

    #[test]
    fn major_strings_round_trip_and_reject_excess_precision() {
        for c in ["USD", "JPY", "KWD", "CLF"] {
            for v in [0, 1, 9, 10, 99, 100, 12345, i64::MAX] {
                let money = Money::new(MinorUnits::new(v).unwrap(), cur(c));
                assert_eq!(
                    Money::parse_major(&money.to_major_string(), cur(c)),
                    Ok(money)
                );
            }
        }
        assert!(Money::parse_major("1.234", cur("USD")).is_err());
        assert!(Money::parse_major("1.5", cur("JPY")).is_err());
        assert!(Money::parse_major("-1.00", cur("USD")).is_err());
        assert!(Money::parse_major("1e3", cur("USD")).is_err());
        assert!(Money::parse_major("", cur("USD")).is_err());
        assert!(Money::parse_major("1.", cur("USD")).is_err());
        assert!(Money::parse_major("92233720368547758.08", cur("USD")).is_err());
        assert_eq!(
            Money::parse_major("12.3", cur("USD"))
                .unwrap()
                .amount()
                .get(),
            1230
        );
    }

    #[test]
    fn arithmetic_is_checked_and_currency_strict() {
        let usd = cur("USD");
        let max = Money::new(MinorUnits::new(i64::MAX).unwrap(), usd);
        let one = Money::new(MinorUnits::new(1).unwrap(), usd);
        assert!(matches!(
            max.checked_add(one, "t"),
            Err(MoneyError::Overflow { .. })
        ));
        assert!(matches!(
            one.checked_sub(max),
            Err(MoneyError::Negative { .. })
        ));
        let eur = Money::zero(cur("EUR"));
        assert!(matches!(
            one.checked_add(eur, "t"),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
        assert!(MinorUnits::new(-1).is_err());
    }
}

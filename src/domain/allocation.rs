//! Money allocation, exactly as DESIGN §5: largest-remainder splitting and cumulative
//! rounding half up.
//!
//! Every function here conserves totals to the minor unit; intermediate products are computed
//! in `i128`, so no input in range can overflow silently. Pure: no I/O.

use super::money::{MinorUnits, MoneyError};

/// Splits `total` over `weights` in proportion to each weight by the largest-remainder method.
///
/// Each part gets `floor(total × w / Σw)`; the units left over go one each to the parts with
/// the largest remainders, ties to the earlier part. The parts always sum to `total`. When all
/// weights are zero, the total goes to the first part (it can only be non-zero there if the
/// caller allowed a total larger than the weights, which `Order::new` does not).
pub fn largest_remainder(
    total: MinorUnits,
    weights: &[MinorUnits],
) -> Result<Vec<MinorUnits>, MoneyError> {
    if weights.is_empty() {
        return Ok(Vec::new());
    }
    let sum: i128 = weights.iter().map(|w| i128::from(w.get())).sum();
    let t = i128::from(total.get());
    if sum == 0 {
        let mut parts = vec![MinorUnits::ZERO; weights.len()];
        parts[0] = total;
        return Ok(parts);
    }
    let mut parts: Vec<i128> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(i128, usize)> = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let p = t * i128::from(w.get());
        parts.push(p / sum);
        remainders.push((p % sum, i));
    }
    let given: i128 = parts.iter().sum();
    let mut left = t - given;
    // Largest remainder first; equal remainders keep message order (stable sort on index).
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in remainders {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts
        .into_iter()
        .map(|p| {
            i64::try_from(p)
                .map_err(|_| MoneyError::Overflow {
                    what: "largest remainder share",
                })
                .and_then(MinorUnits::new)
        })
        .collect()
}

/// `round_half_up(amount × numerator / denominator)` for non-negative inputs; zero when the
/// denominator is zero.
pub fn prorate(
    amount: MinorUnits,
    numerator: u64,
    denominator: u64,
) -> Result<MinorUnits, MoneyError> {
    if denominator == 0 {
        return Ok(MinorUnits::ZERO);
    }
    let a = i128::from(amount.get());
    let n = i128::from(numerator);
    let d = i128::from(denominator);
    // floor((2·a·n + d) / (2·d)) is a·n/d rounded half up, for a, n ≥ 0 and d > 0.
    let v = (2 * a * n + d) / (2 * d);
    i64::try_from(v)
        .map_err(|_| MoneyError::Overflow {
            what: "prorated amount",
        })
        .and_then(MinorUnits::new)
}

/// The cumulative value of `shipped` of `quantity` units of a line whose net total is `net`:
/// `round_half_up(net × shipped / quantity)`. A shipment's value for the line is the
/// difference of this before and after it, so a line's captures sum to `net` exactly once all
/// of its units have shipped.
pub fn cumulative_line_value(
    net: MinorUnits,
    shipped: u32,
    quantity: u32,
) -> Result<MinorUnits, MoneyError> {
    prorate(net, u64::from(shipped), u64::from(quantity))
}

/// How `shipping_amount` is charged across an order's captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShippingPolicy {
    /// All of it with the first capture (the default; DESIGN §5).
    #[default]
    FirstCapture,
    /// In proportion to units shipped out of units that will ship (ordered − cancelled),
    /// rounding half up cumulatively; all of it once the order completes with something shipped.
    Prorated,
}

/// The cumulative amount of shipping owed after `shipped_units` of `live_units` (ordered minus
/// cancelled) have shipped.
pub fn shipping_due(
    policy: ShippingPolicy,
    shipping: MinorUnits,
    shipped_units: u64,
    live_units: u64,
) -> Result<MinorUnits, MoneyError> {
    if shipped_units == 0 {
        return Ok(MinorUnits::ZERO);
    }
    match policy {
        ShippingPolicy::FirstCapture => Ok(shipping),
        ShippingPolicy::Prorated => prorate(shipping, shipped_units, live_units),
    }
}

/// The over-capture a provider allows above the authorized amount:
/// `min(authorized × basis_points / 10 000, cap)`, rounded down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OverCaptureAllowance {
    /// Allowance as a share of the authorized amount, in basis points (1500 = 15 %).
    pub basis_points: u32,
    /// Upper bound of the allowance in minor units, if the provider sets one.
    pub cap: Option<MinorUnits>,
}

impl OverCaptureAllowance {
    pub const NONE: OverCaptureAllowance = OverCaptureAllowance {
        basis_points: 0,
        cap: None,
    };

    /// The allowance for an authorization of `authorized`, in the same minor units.
    pub fn for_authorized(&self, authorized: MinorUnits) -> MinorUnits {
        let raw = i128::from(authorized.get()) * i128::from(self.basis_points) / 10_000;
        let raw = i64::try_from(raw).unwrap_or(i64::MAX);
        let raw = MinorUnits::new(raw).unwrap_or(MinorUnits::ZERO);
        match self.cap {
            Some(cap) => raw.min(cap),
            None => raw,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(v: i64) -> MinorUnits {
        MinorUnits::new(v).unwrap()
    }

    #[test]
    fn largest_remainder_splits_foemmels_five_cents_thirty_seventy() {
        let parts = largest_remainder(m(5), &[m(30), m(70)]).unwrap();
        assert_eq!(parts, vec![m(2), m(3)]);
    }

    #[test]
    fn largest_remainder_ties_go_to_the_earlier_line() {
        let parts = largest_remainder(m(1), &[m(10), m(10), m(10)]).unwrap();
        assert_eq!(parts, vec![m(1), m(0), m(0)]);
        let parts = largest_remainder(m(2), &[m(10), m(10), m(10)]).unwrap();
        assert_eq!(parts, vec![m(1), m(1), m(0)]);
    }

    #[test]
    fn prorate_rounds_half_up() {
        assert_eq!(prorate(m(5), 1, 2).unwrap(), m(3)); // 2.5 → 3
        assert_eq!(prorate(m(10), 1, 3).unwrap(), m(3)); // 3.33 → 3
        assert_eq!(prorate(m(10), 2, 3).unwrap(), m(7)); // 6.67 → 7
        assert_eq!(prorate(m(1), 1, 4).unwrap(), m(0)); // 0.25 → 0
        assert_eq!(prorate(m(i64::MAX), 1, 1).unwrap(), m(i64::MAX));
    }

    #[test]
    fn allowance_is_the_smaller_of_share_and_cap() {
        let paypal = OverCaptureAllowance {
            basis_points: 1_500,
            cap: Some(m(7_500)),
        };
        assert_eq!(paypal.for_authorized(m(10_000)), m(1_500));
        assert_eq!(paypal.for_authorized(m(100_000)), m(7_500));
        assert_eq!(OverCaptureAllowance::NONE.for_authorized(m(100)), m(0));
    }
}

//! The expected-totals oracle: DESIGN §5's allocation written again, as plainly as possible,
//! in `i128` and without any code from the worker's domain. The checker compares the worker's
//! captures and the provider's books with what this computes.

use crate::workload::{OrderSpec, ShipSpec};

/// Each line's merchandise value: unit × quantity − line discount.
fn merchandise(o: &OrderSpec) -> Vec<i128> {
    o.lines
        .iter()
        .map(|l| i128::from(l.unit) * i128::from(l.quantity) - i128::from(l.discount))
        .collect()
}

/// The order discount split over lines by merchandise value, largest remainder first, ties to
/// the earlier line.
fn discount_shares(o: &OrderSpec) -> Vec<i128> {
    let weights = merchandise(o);
    let total: i128 = weights.iter().sum();
    let discount = i128::from(o.order_discount);
    if total == 0 {
        let mut v = vec![0; weights.len()];
        if let Some(first) = v.first_mut() {
            *first = discount;
        }
        return v;
    }
    let mut shares: Vec<i128> = weights.iter().map(|w| discount * w / total).collect();
    let mut left = discount - shares.iter().sum::<i128>();
    // (remainder, index): biggest remainder first, then the earlier line.
    let mut order: Vec<(i128, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| ((discount * w) % total, i))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in order {
        if left == 0 {
            break;
        }
        shares[i] += 1;
        left -= 1;
    }
    shares
}

/// Each line's net total: merchandise + tax − its share of the order discount.
pub fn line_nets(o: &OrderSpec) -> Vec<i128> {
    let shares = discount_shares(o);
    merchandise(o)
        .iter()
        .zip(&o.lines)
        .zip(&shares)
        .map(|((m, l), s)| m + i128::from(l.tax) - s)
        .collect()
}

/// Σ line nets + shipping.
pub fn order_total(o: &OrderSpec) -> i64 {
    let t: i128 = line_nets(o).iter().sum::<i128>() + i128::from(o.shipping);
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// round_half_up(net × shipped / quantity)
fn cumulative(net: i128, shipped: u32, quantity: u32) -> i128 {
    if quantity == 0 {
        return 0;
    }
    let q = i128::from(quantity);
    (2 * net * i128::from(shipped) + q) / (2 * q)
}

/// The value of `shipped` units per line (plus shipping once anything shipped), uncapped.
pub fn shipped_value(o: &OrderSpec, shipped: &[u32]) -> i64 {
    let nets = line_nets(o);
    let mut v: i128 = nets
        .iter()
        .zip(&o.lines)
        .zip(shipped)
        .map(|((n, l), s)| cumulative(*n, *s, l.quantity))
        .sum();
    if shipped.iter().any(|s| *s > 0) {
        v += i128::from(o.shipping);
    }
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Units per line in the given parcels.
pub fn units(o: &OrderSpec, parcels: &[&ShipSpec]) -> Vec<u32> {
    let mut shipped = vec![0u32; o.lines.len()];
    for s in parcels {
        for (l, q) in &s.items {
            if let Some(x) = shipped.get_mut(*l) {
                *x += q;
            }
        }
    }
    shipped
}

/// What the captures of an order must add up to once these parcels have shipped: the shipped
/// value capped by the authorization. Independent of the order the parcels were applied in.
pub fn expected_total(o: &OrderSpec, parcels: &[&ShipSpec]) -> i64 {
    shipped_value(o, &units(o, parcels)).min(o.authorized)
}

/// What one applied parcel must turn into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Capture {
        amount: i64,
        is_final: bool,
    },
    /// The order completed with nothing left to capture after earlier captures.
    Release,
    /// The order completed with nothing ever captured.
    Void,
    Nothing,
}

/// Replays parcels in the order the worker applied them.
pub fn replay(o: &OrderSpec, applied: &[&ShipSpec]) -> Vec<Step> {
    let nets = line_nets(o);
    let mut shipped = vec![0u32; o.lines.len()];
    let mut cancelled = vec![0u32; o.lines.len()];
    let mut claimed: i128 = 0;
    let mut captures = 0u32;
    let mut steps = Vec::with_capacity(applied.len());
    for s in applied {
        let before = shipped.clone();
        for (l, q) in &s.items {
            if let Some(x) = shipped.get_mut(*l) {
                *x += q;
            }
        }
        if s.last_shipment {
            for (i, l) in o.lines.iter().enumerate() {
                cancelled[i] = l.quantity.saturating_sub(shipped[i]);
            }
        }
        let mut raw: i128 = 0;
        for (i, l) in o.lines.iter().enumerate() {
            raw += cumulative(nets[i], shipped[i], l.quantity)
                - cumulative(nets[i], before[i], l.quantity);
        }
        if before.iter().all(|b| *b == 0) && shipped.iter().any(|x| *x > 0) {
            raw += i128::from(o.shipping);
        }
        let complete = o
            .lines
            .iter()
            .enumerate()
            .all(|(i, l)| shipped[i] + cancelled[i] == l.quantity);
        let headroom = (i128::from(o.authorized) - claimed).max(0);
        let amount = raw.min(headroom);
        let step = if amount > 0 {
            claimed += amount;
            captures += 1;
            Step::Capture {
                amount: i64::try_from(amount).unwrap_or(i64::MAX),
                is_final: complete,
            }
        } else if complete {
            if captures == 0 {
                Step::Void
            } else {
                Step::Release
            }
        } else {
            Step::Nothing
        };
        steps.push(step);
    }
    steps
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::workload::LineSpec;

    /// The README's USD example: total 12455, captures 5182, 2890, 4383.
    fn usd() -> OrderSpec {
        let line = |id: &str, q, unit, tax, discount| LineSpec {
            line_id: id.into(),
            quantity: q,
            unit,
            tax,
            discount,
        };
        let ship = |id: &str, items: Vec<(usize, u32)>| ShipSpec {
            shipment_id: id.into(),
            items,
            last_shipment: false,
        };
        OrderSpec {
            order_id: "ORD-1001".into(),
            auth_id: "pi".into(),
            currency: "USD",
            lines: vec![
                line("L1", 3, 1999, 480, 300),
                line("L2", 2, 2500, 400, 0),
                line("L3", 1, 999, 80, 0),
            ],
            shipping: 799,
            order_discount: 1000,
            authorized: 12455,
            shipments: vec![
                ship("S1", vec![(0, 1), (1, 1)]),
                ship("S2", vec![(0, 1), (2, 1)]),
                ship("S3", vec![(0, 1), (1, 1)]),
            ],
            decline_on: None,
            has_last_flag: false,
        }
    }

    #[test]
    fn the_usd_example_comes_out_as_documented() {
        let o = usd();
        assert_eq!(order_total(&o), 12455);
        let applied: Vec<&ShipSpec> = o.shipments.iter().collect();
        assert_eq!(
            replay(&o, &applied),
            vec![
                Step::Capture {
                    amount: 5182,
                    is_final: false
                },
                Step::Capture {
                    amount: 2890,
                    is_final: false
                },
                Step::Capture {
                    amount: 4383,
                    is_final: true
                },
            ]
        );
        assert_eq!(expected_total(&o, &applied), 12455);
    }
}

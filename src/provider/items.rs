//! Line items for providers that take them per unit (Gr4vy `cart_items`, Adyen `lineItems`).
//!
//! A capture line carries the value of `quantity` units, which after cumulative rounding
//! (DESIGN §5) need not divide evenly by the quantity. Providers want a unit price, so a line
//! that does not divide is sent as one item of quantity 1 carrying its whole value: the items
//! then still add up to the capture amount exactly. What the lines do not cover (shipping) is
//! one more item. Pure: no I/O, no floats.

use crate::provider::CaptureRequest;

/// One item as a provider sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) id: String,
    pub(crate) sku: Option<String>,
    pub(crate) name: String,
    pub(crate) quantity: u32,
    /// Minor units per unit; `quantity × unit_amount` is the item's value exactly.
    pub(crate) unit_amount: i64,
}

/// The items of `request`, summing exactly to its amount, or `None` when it has no lines or
/// when its lines are worth more than the amount (the authorization cap cut it), since items
/// that contradict the amount are worse than none.
pub(crate) fn itemize(request: &CaptureRequest, shipping_name: &str) -> Option<Vec<Item>> {
    if request.lines.is_empty() {
        return None;
    }
    let mut items = Vec::with_capacity(request.lines.len() + 1);
    let mut covered: i64 = 0;
    for line in request.lines.iter().filter(|l| l.quantity > 0) {
        let value = line.amount.get();
        covered = covered.checked_add(value)?;
        let name = if line.name.trim().is_empty() {
            line.line_id.as_str().to_owned()
        } else {
            line.name.clone()
        };
        let sku = Some(line.sku.clone()).filter(|s| !s.trim().is_empty());
        let per_unit = i64::from(line.quantity);
        let item = if value % per_unit == 0 {
            Item {
                id: line.line_id.as_str().to_owned(),
                sku,
                name,
                quantity: line.quantity,
                unit_amount: value / per_unit,
            }
        } else {
            Item {
                id: line.line_id.as_str().to_owned(),
                sku,
                name: format!("{name} ({} units)", line.quantity),
                quantity: 1,
                unit_amount: value,
            }
        };
        items.push(item);
    }
    let rest = request.amount.amount().get().checked_sub(covered)?;
    if rest < 0 {
        return None;
    }
    if rest > 0 {
        items.push(Item {
            id: "shipping".to_owned(),
            sku: None,
            name: shipping_name.to_owned(),
            quantity: 1,
            unit_amount: rest,
        });
    }
    Some(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        AuthorizationId, Currency, IdempotencyKey, LineId, MinorUnits, Money, OrderId, ProviderName,
    };
    use crate::provider::CaptureLine;

    fn request(amount: i64, lines: &[(&str, u32, i64)]) -> CaptureRequest {
        let auth = AuthorizationId::parse("a1").unwrap();
        CaptureRequest {
            authorization_id: auth.clone(),
            order_id: OrderId::parse("ORD-1").unwrap(),
            cause: "S1".to_owned(),
            sequence: 1,
            amount: Money::new(
                MinorUnits::new(amount).unwrap(),
                Currency::parse("EUR").unwrap(),
            ),
            is_final: false,
            idempotency_key: IdempotencyKey::derive(
                &ProviderName::parse("p").unwrap(),
                &auth,
                "S1",
                0,
            ),
            lines: lines
                .iter()
                .map(|(id, q, a)| CaptureLine {
                    line_id: LineId::parse(*id).unwrap(),
                    sku: format!("SKU-{id}"),
                    name: format!("Item {id}"),
                    quantity: *q,
                    amount: MinorUnits::new(*a).unwrap(),
                })
                .collect(),
        }
    }

    fn total(items: &[Item]) -> i64 {
        items
            .iter()
            .map(|i| i64::from(i.quantity) * i.unit_amount)
            .sum()
    }

    #[test]
    fn even_lines_keep_their_quantity_and_shipping_is_one_more_item() {
        let items = itemize(&request(2799, &[("L1", 2, 2000)]), "Shipping").unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!((items[0].quantity, items[0].unit_amount), (2, 1000));
        assert_eq!(
            (items[1].id.as_str(), items[1].unit_amount),
            ("shipping", 799)
        );
        assert_eq!(total(&items), 2799);
    }

    #[test]
    fn an_uneven_line_becomes_one_item_worth_its_whole_value() {
        let items = itemize(&request(1897, &[("L1", 3, 1897)]), "Shipping").unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!((items[0].quantity, items[0].unit_amount), (1, 1897));
        assert_eq!(items[0].name, "Item L1 (3 units)");
        assert_eq!(total(&items), 1897);
    }

    #[test]
    fn no_lines_or_lines_above_a_capped_amount_give_no_items() {
        assert_eq!(itemize(&request(100, &[]), "Shipping"), None);
        assert_eq!(itemize(&request(100, &[("L1", 1, 150)]), "Shipping"), None);
    }
}

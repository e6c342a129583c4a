//! Orders, shipments and cancellations as parsed, valid values.
//!
//! An [`Order`] can only be built through [`Order::new`], which checks every rule that makes
//! the allocation of §5 well defined (unique line ids, line discounts within the line's
//! merchandise, the order discount within the order's merchandise, totals within `i64`) and
//! computes each line's net total once. Shipments and cancellations are checked for shape
//! here and against an order's progress in `plan`. Pure: no I/O, no clock.

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::allocation;
use super::currency::Currency;
use super::ids::{AuthorizationId, EventId, LineId, OrderId, ProviderName, ShipmentId};
use super::money::{MinorUnits, Money, MoneyError};

/// Most lines one order may have, and most items one shipment may list.
pub const MAX_LINES: usize = 1_000;
/// Largest quantity of one line.
pub const MAX_QUANTITY: u32 = 1_000_000;

/// A positive count of units, at most [`MAX_QUANTITY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(u32);

impl Quantity {
    pub fn new(value: i64) -> Result<Self, OrderError> {
        if value <= 0 || value > i64::from(MAX_QUANTITY) {
            Err(OrderError::InvalidQuantity { value })
        } else {
            Ok(Quantity(value as u32))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// Why an order, shipment or cancellation is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OrderError {
    #[error(
        "quantity {value} is out of range: quantities are whole numbers from 1 to {MAX_QUANTITY}"
    )]
    InvalidQuantity { value: i64 },
    #[error("the order has no lines")]
    NoLines,
    #[error("{count} lines or items is more than the {MAX_LINES} allowed")]
    TooManyLines { count: usize },
    #[error("line {line_id} appears more than once")]
    DuplicateLine { line_id: LineId },
    #[error(
        "line {line_id}: discount_amount {discount} exceeds unit_amount × quantity = {merchandise}"
    )]
    LineDiscountTooLarge {
        line_id: LineId,
        discount: MinorUnits,
        merchandise: MinorUnits,
    },
    #[error("order_discount_amount {discount} exceeds the order's merchandise value {merchandise}")]
    OrderDiscountTooLarge {
        discount: MinorUnits,
        merchandise: MinorUnits,
    },
    #[error("the shipment or cancellation lists no items")]
    NoItems,
    #[error("payment currency {payment} differs from the order currency {order}")]
    CurrencyMismatch { order: Currency, payment: Currency },
    #[error("authorization expires_at {expires_at} is not after authorized_at {authorized_at}")]
    ExpiryBeforeAuthorization {
        authorized_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// One order line as checkout sent it. Amounts are in the order's currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    pub line_id: LineId,
    pub sku: String,
    pub name: String,
    pub quantity: Quantity,
    /// Price of one unit, before discounts and tax.
    pub unit_amount: MinorUnits,
    /// Tax for the whole line (all units).
    pub tax_amount: MinorUnits,
    /// Discount for the whole line (all units).
    pub discount_amount: MinorUnits,
}

/// The provider authorization the captures draw down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub provider: ProviderName,
    pub authorization_id: AuthorizationId,
    /// Authorized amount, in the order's currency.
    pub amount: MinorUnits,
    pub authorized_at: DateTime<Utc>,
    /// When the provider voids the authorization, if checkout knows it.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Everything needed to build an [`Order`]; checked by [`Order::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderDraft {
    pub order_id: OrderId,
    pub currency: Currency,
    pub lines: Vec<OrderLine>,
    pub shipping_amount: MinorUnits,
    pub order_discount_amount: MinorUnits,
    pub authorization: Authorization,
    /// The currency the payment block names, when it names one; must equal `currency`.
    pub payment_currency: Option<Currency>,
}

/// A valid order with each line's net total computed (§5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    draft: OrderDraft,
    /// Share of the order discount per line, index-aligned with the lines.
    discount_shares: Vec<MinorUnits>,
    /// Net total per line: merchandise + tax − share of the order discount.
    nets: Vec<MinorUnits>,
    /// Σ nets + shipping.
    total: MinorUnits,
}

impl Order {
    pub fn new(draft: OrderDraft) -> Result<Order, OrderError> {
        if draft.lines.is_empty() {
            return Err(OrderError::NoLines);
        }
        if draft.lines.len() > MAX_LINES {
            return Err(OrderError::TooManyLines {
                count: draft.lines.len(),
            });
        }
        if let Some(payment) = draft.payment_currency
            && payment != draft.currency
        {
            return Err(OrderError::CurrencyMismatch {
                order: draft.currency,
                payment,
            });
        }
        let auth = &draft.authorization;
        if let Some(expires_at) = auth.expires_at
            && expires_at <= auth.authorized_at
        {
            return Err(OrderError::ExpiryBeforeAuthorization {
                authorized_at: auth.authorized_at,
                expires_at,
            });
        }
        let mut seen = std::collections::HashSet::new();
        let mut merchandise = Vec::with_capacity(draft.lines.len());
        for line in &draft.lines {
            if !seen.insert(&line.line_id) {
                return Err(OrderError::DuplicateLine {
                    line_id: line.line_id.clone(),
                });
            }
            let gross = line
                .unit_amount
                .checked_mul(line.quantity.get(), "unit_amount × quantity")?;
            let merch = gross.checked_sub(line.discount_amount).map_err(|_| {
                OrderError::LineDiscountTooLarge {
                    line_id: line.line_id.clone(),
                    discount: line.discount_amount,
                    merchandise: gross,
                }
            })?;
            merchandise.push(merch);
        }
        let merch_total =
            MinorUnits::checked_sum(merchandise.iter().copied(), "merchandise total")?;
        if draft.order_discount_amount > merch_total {
            return Err(OrderError::OrderDiscountTooLarge {
                discount: draft.order_discount_amount,
                merchandise: merch_total,
            });
        }
        let discount_shares =
            allocation::largest_remainder(draft.order_discount_amount, &merchandise)?;
        let mut nets = Vec::with_capacity(draft.lines.len());
        for ((line, merch), share) in draft.lines.iter().zip(&merchandise).zip(&discount_shares) {
            // share ≤ merch (largest remainder never gives a line more than its weight when
            // the total is within the weights' sum), so this cannot go negative.
            let net = merch
                .checked_add(line.tax_amount, "line net total")?
                .checked_sub(*share)?;
            nets.push(net);
        }
        let total = MinorUnits::checked_sum(nets.iter().copied(), "order total")?
            .checked_add(draft.shipping_amount, "order total")?;
        Ok(Order {
            draft,
            discount_shares,
            nets,
            total,
        })
    }

    pub fn order_id(&self) -> &OrderId {
        &self.draft.order_id
    }
    pub fn currency(&self) -> Currency {
        self.draft.currency
    }
    pub fn lines(&self) -> &[OrderLine] {
        &self.draft.lines
    }
    pub fn shipping_amount(&self) -> MinorUnits {
        self.draft.shipping_amount
    }
    pub fn order_discount_amount(&self) -> MinorUnits {
        self.draft.order_discount_amount
    }
    pub fn authorization(&self) -> &Authorization {
        &self.draft.authorization
    }
    /// Share of the order-level discount carried by each line (index-aligned with `lines`).
    pub fn discount_shares(&self) -> &[MinorUnits] {
        &self.discount_shares
    }
    /// Net total of each line (index-aligned with `lines`).
    pub fn line_nets(&self) -> &[MinorUnits] {
        &self.nets
    }
    /// What the customer owes for the whole order: Σ line nets + shipping.
    pub fn total(&self) -> Money {
        Money::new(self.total, self.draft.currency)
    }
    pub fn line_index(&self, line_id: &LineId) -> Option<usize> {
        self.draft.lines.iter().position(|l| &l.line_id == line_id)
    }
    pub fn draft(&self) -> &OrderDraft {
        &self.draft
    }
}

/// A line and a quantity, as listed in a shipment or a cancellation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Item {
    pub line_id: LineId,
    pub quantity: Quantity,
}

fn check_items(items: &[Item]) -> Result<(), OrderError> {
    if items.is_empty() {
        return Err(OrderError::NoItems);
    }
    if items.len() > MAX_LINES {
        return Err(OrderError::TooManyLines { count: items.len() });
    }
    let mut seen = std::collections::HashSet::new();
    for item in items {
        if !seen.insert(&item.line_id) {
            return Err(OrderError::DuplicateLine {
                line_id: item.line_id.clone(),
            });
        }
    }
    Ok(())
}

/// One parcel that left the warehouse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    shipment_id: ShipmentId,
    items: Vec<Item>,
    last_shipment: bool,
    shipped_at: DateTime<Utc>,
}

impl Shipment {
    /// Items must be non-empty with each line at most once.
    pub fn new(
        shipment_id: ShipmentId,
        items: Vec<Item>,
        last_shipment: bool,
        shipped_at: DateTime<Utc>,
    ) -> Result<Self, OrderError> {
        check_items(&items)?;
        Ok(Shipment {
            shipment_id,
            items,
            last_shipment,
            shipped_at,
        })
    }
    pub fn shipment_id(&self) -> &ShipmentId {
        &self.shipment_id
    }
    pub fn items(&self) -> &[Item] {
        &self.items
    }
    /// The warehouse says nothing more will ship: unshipped quantities are cancelled.
    pub fn last_shipment(&self) -> bool {
        self.last_shipment
    }
    pub fn shipped_at(&self) -> DateTime<Utc> {
        self.shipped_at
    }
    /// Whether two shipments with the same id carry the same facts (item order ignored).
    pub fn same_content(&self, other: &Shipment) -> bool {
        let mut a = self.items.clone();
        let mut b = other.items.clone();
        a.sort();
        b.sort();
        a == b && self.last_shipment == other.last_shipment
    }
}

/// Units of an order that will never ship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancellation {
    cancellation_id: EventId,
    items: Vec<Item>,
}

impl Cancellation {
    pub fn new(cancellation_id: EventId, items: Vec<Item>) -> Result<Self, OrderError> {
        check_items(&items)?;
        Ok(Cancellation {
            cancellation_id,
            items,
        })
    }
    pub fn cancellation_id(&self) -> &EventId {
        &self.cancellation_id
    }
    pub fn items(&self) -> &[Item] {
        &self.items
    }
    pub fn same_content(&self, other: &Cancellation) -> bool {
        let mut a = self.items.clone();
        let mut b = other.items.clone();
        a.sort();
        b.sort();
        a == b
    }
}

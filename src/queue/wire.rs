//! Message contract v1 on the wire: one JSON envelope per message, read into a domain command
//! or a rejection with a machine-readable reason.
//!
//! Owns the reading of message bodies (DESIGN §3.1; the schemas and examples in
//! `contract/v1/`). Imports `domain` only; no broker, storage or provider code, and no I/O, so
//! every rule here is tested on bytes alone.
//!
//! Reading rules, each a promise to publishers (`docs/publishers.md`):
//! - A body over [`MAX_MESSAGE_BYTES`] is rejected before it is parsed (`too_large`).
//! - The JSON is walked as a [`serde_json::Value`], so every rejection can name the field that
//!   failed as a JSON path (`data.lines[2].unit_amount`) and say what was expected.
//! - Amounts are JSON integers from 0 to `i64::MAX` in minor units. A number with a decimal
//!   point or an exponent (`12.5`, and also `12.0` or `1e3`), a string, a boolean or `null` is
//!   `invalid_amount`; a whole number above `i64::MAX` is `amount_overflow`. An amount is only
//!   ever read from an integer: floating point is used solely to tell an over-large integer
//!   from a decimal one, never to produce a value.
//! - Unknown fields are ignored (forward compatibility). `null` is not a value of any field:
//!   an optional field is omitted, not sent as `null`.
//! - When a key appears twice in one object, the last occurrence wins (serde_json's
//!   behaviour). Publishers must not rely on it.
//! - Nesting deeper than serde_json's recursion limit (128) is `malformed`; nothing here
//!   recurses on input, and no input makes this module panic.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::{Map, Number, Value};
use thiserror::Error;

use crate::domain::{
    Authorization, AuthorizationId, Cancellation, Currency, EventId, InvalidId, Item, LineId,
    MinorUnits, MoneyError, Order, OrderDraft, OrderError, OrderId, OrderLine, ProviderName,
    Quantity, Shipment, ShipmentId,
};

/// The only `schema_version` this worker reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Largest body ever read, in bytes: the ceiling of `amqp.max_message_bytes` (intake refuses
/// bodies over the setting before they reach here). Larger bodies are rejected as `too_large`
/// without parsing.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The message types of contract v1. The routing key of a message equals its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// `order.authorized`: checkout registers an order and its authorization.
    OrderAuthorized,
    /// `shipment.shipped`: the warehouse reports one parcel.
    ShipmentShipped,
    /// `order.lines_cancelled`: units of an order that will never ship.
    LinesCancelled,
}

impl MessageType {
    /// Every type, in the order of DESIGN §3.1.
    pub const ALL: [MessageType; 3] = [
        MessageType::OrderAuthorized,
        MessageType::ShipmentShipped,
        MessageType::LinesCancelled,
    ];

    /// The `type` field's value, which is also the routing key.
    pub fn as_str(&self) -> &'static str {
        match self {
            MessageType::OrderAuthorized => "order.authorized",
            MessageType::ShipmentShipped => "shipment.shipped",
            MessageType::LinesCancelled => "order.lines_cancelled",
        }
    }

    /// The type named by a `type` field or routing key; `None` when it is not a v1 type.
    pub fn from_name(name: &str) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The envelope fields every message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The publisher's unique id of this message: the dedupe key of messages that carry no
    /// other id (cancellations), and a tracing attribute.
    pub message_id: EventId,
    pub message_type: MessageType,
    /// When the publisher says the event happened. Informational: never used for money or
    /// ordering decisions.
    pub occurred_at: DateTime<Utc>,
}

/// What a valid message asks the worker to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `order.authorized`: a valid order with its authorization.
    RegisterOrder(Order),
    /// `shipment.shipped`: one parcel of an order. Checked against the order's progress later.
    Ship {
        order_id: OrderId,
        shipment: Shipment,
    },
    /// `order.lines_cancelled`. The cancellation's id is the envelope's `message_id`.
    Cancel {
        order_id: OrderId,
        cancellation: Cancellation,
    },
}

impl Command {
    /// The order the command is about.
    pub fn order_id(&self) -> &OrderId {
        match self {
            Command::RegisterOrder(order) => order.order_id(),
            Command::Ship { order_id, .. } | Command::Cancel { order_id, .. } => order_id,
        }
    }
}

/// A message read successfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub envelope: Envelope,
    pub command: Command,
}

/// Why a message body was rejected before it reached any order. The code (`as_str`) is the
/// machine-readable reason recorded in PostgreSQL and sent in the dead-letter header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Not UTF-8, not JSON, nested too deeply, or not a JSON object.
    Malformed,
    /// A required field is missing or has the wrong JSON type, a timestamp is not RFC 3339,
    /// or the routing key differs from `type`.
    InvalidSchema,
    /// `schema_version` is an integer other than [`SCHEMA_VERSION`].
    UnsupportedVersion,
    /// An amount that is not a JSON integer ≥ 0.
    InvalidAmount,
    /// A quantity that is not a JSON integer from 1 to 1,000,000.
    InvalidQuantity,
    /// An id outside the length or character rules.
    InvalidId,
    /// A currency that is not an active ISO 4217 code in upper case.
    InvalidCurrency,
    /// A well-typed order, shipment or cancellation that breaks a rule of its own: duplicate
    /// lines, a discount larger than what it discounts, no lines or items, too many, or an
    /// authorization that expires before it was made.
    InvalidOrder,
    /// `data.payment.currency` differs from `data.currency`.
    CurrencyMismatch,
    /// An amount above `i64::MAX`, or order totals that overflow 64-bit arithmetic.
    AmountOverflow,
    /// A body larger than [`MAX_MESSAGE_BYTES`].
    TooLarge,
    /// A `type` that contract v1 does not define.
    UnknownType,
}

impl RejectReason {
    /// Every reason, in declaration order.
    pub const ALL: [RejectReason; 12] = [
        RejectReason::Malformed,
        RejectReason::InvalidSchema,
        RejectReason::UnsupportedVersion,
        RejectReason::InvalidAmount,
        RejectReason::InvalidQuantity,
        RejectReason::InvalidId,
        RejectReason::InvalidCurrency,
        RejectReason::InvalidOrder,
        RejectReason::CurrencyMismatch,
        RejectReason::AmountOverflow,
        RejectReason::TooLarge,
        RejectReason::UnknownType,
    ];

    /// The stable machine-readable code. Part of the contract: never renamed.
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::InvalidSchema => "invalid_schema",
            RejectReason::UnsupportedVersion => "unsupported_version",
            RejectReason::InvalidAmount => "invalid_amount",
            RejectReason::InvalidQuantity => "invalid_quantity",
            RejectReason::InvalidId => "invalid_id",
            RejectReason::InvalidCurrency => "invalid_currency",
            RejectReason::InvalidOrder => "invalid_order",
            RejectReason::CurrencyMismatch => "currency_mismatch",
            RejectReason::AmountOverflow => "amount_overflow",
            RejectReason::TooLarge => "too_large",
            RejectReason::UnknownType => "unknown_type",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected message body. Permanent: the same bytes are rejected the same way every time,
/// so a rejected message is dead-lettered, never requeued.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{reason}: {detail}")]
pub struct WireRejection {
    pub reason: RejectReason,
    /// What failed, at which JSON path, and what is expected, e.g.
    /// `data.lines[2].unit_amount: got the decimal number 12.5; expected …`. Single line;
    /// values from the message appear only escaped and truncated.
    pub detail: String,
    /// The message's `message_id`, when the body had one that passes the id rules.
    pub message_id: Option<String>,
    /// The message's `type`, when the body had one made of printable id characters.
    pub message_type: Option<String>,
}

/// The `data.order_id` of a body, read cheaply and without validation, for ordering
/// deliveries of one order; `None` when the body has none.
pub fn peek_order_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Peek {
        data: PeekData,
    }
    #[derive(serde::Deserialize)]
    struct PeekData {
        order_id: String,
    }
    if body.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    serde_json::from_slice::<Peek>(body)
        .ok()
        .map(|p| p.data.order_id)
        .filter(|id| id.len() <= 64)
}

/// Reads one message body. `routing_key`, when given, must equal the body's `type`.
///
/// Pure and total: never panics, whatever the bytes.
pub fn parse(body: &[u8], routing_key: Option<&str>) -> Result<Parsed, WireRejection> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(reject(
            RejectReason::TooLarge,
            format!(
                "the body is {} bytes; at most {MAX_MESSAGE_BYTES} bytes are read",
                body.len()
            ),
        ));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        reject(
            RejectReason::Malformed,
            format!(
                "the body is not UTF-8: invalid byte sequence at offset {}",
                e.valid_up_to()
            ),
        )
    })?;
    if text.trim().is_empty() {
        return Err(reject(
            RejectReason::Malformed,
            "the body is empty; expected a JSON object".to_owned(),
        ));
    }
    // serde_json stops at its recursion limit (128 levels) with an error, so deep nesting is
    // a rejection here, not a stack overflow.
    let value: Value = serde_json::from_str(text).map_err(|e| {
        reject(
            RejectReason::Malformed,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(root) = value else {
        return Err(reject(
            RejectReason::Malformed,
            format!("the body is {}; expected a JSON object", describe(&value)),
        ));
    };
    let message_id = root
        .get("message_id")
        .and_then(Value::as_str)
        .filter(|s| EventId::parse(*s).is_ok())
        .map(str::to_owned);
    let message_type = root
        .get("type")
        .and_then(Value::as_str)
        .filter(|s| is_printable_token(s))
        .map(str::to_owned);
    read_message(&root, routing_key).map_err(|mut rejection| {
        rejection.message_id = message_id;
        rejection.message_type = message_type;
        rejection
    })
}

fn read_message(
    root: &Map<String, Value>,
    routing_key: Option<&str>,
) -> Result<Parsed, WireRejection> {
    let root = Obj {
        map: root,
        path: String::new(),
    };

    // The version first: a later version may change every other field, and deserves
    // `unsupported_version` (replayable after an upgrade) rather than a schema complaint.
    let version = root.required("schema_version")?;
    let integer = version
        .as_i64()
        .map(i128::from)
        .or_else(|| version.as_u64().map(i128::from));
    match integer {
        Some(v) if v == i128::from(SCHEMA_VERSION) => {}
        Some(v) => {
            return Err(reject(
                RejectReason::UnsupportedVersion,
                format!(
                    "schema_version: this worker reads version {SCHEMA_VERSION}, the message has version {v}"
                ),
            ));
        }
        None => {
            return Err(root.wrong_type(
                "schema_version",
                version,
                &format!("the integer {SCHEMA_VERSION}"),
            ));
        }
    }

    let type_name = root.string("type")?;
    let message_type = MessageType::from_name(type_name).ok_or_else(|| {
        reject(
            RejectReason::UnknownType,
            format!(
                "type: {} is not a message type of contract v1; expected one of order.authorized, shipment.shipped, order.lines_cancelled",
                excerpt(type_name)
            ),
        )
    })?;
    if let Some(key) = routing_key
        && key != message_type.as_str()
    {
        return Err(reject(
            RejectReason::InvalidSchema,
            format!(
                "routing key {} differs from type {}; expected the routing key to equal the type",
                excerpt(key),
                message_type.as_str()
            ),
        ));
    }

    let message_id = root.id("message_id", EventId::parse)?;
    let occurred_at = root.timestamp("occurred_at")?;
    let data = root.object("data")?;
    let command = match message_type {
        MessageType::OrderAuthorized => order_authorized(&data)?,
        MessageType::ShipmentShipped => shipment_shipped(&data)?,
        MessageType::LinesCancelled => lines_cancelled(&data, &message_id)?,
    };
    Ok(Parsed {
        envelope: Envelope {
            message_id,
            message_type,
            occurred_at,
        },
        command,
    })
}

fn order_authorized(data: &Obj<'_>) -> Result<Command, WireRejection> {
    let order_id = data.id("order_id", OrderId::parse)?;
    let currency = data.currency("currency")?;
    let raw_lines = data.array("lines")?;
    let mut lines = Vec::with_capacity(raw_lines.len().min(crate::domain::order::MAX_LINES));
    for (i, raw) in raw_lines.iter().enumerate() {
        let line = data.element("lines", i, raw)?;
        let parsed = OrderLine {
            line_id: line.id("line_id", LineId::parse)?,
            sku: line.string("sku")?.to_owned(),
            name: line.string("name")?.to_owned(),
            quantity: line.quantity("quantity")?,
            unit_amount: line.amount("unit_amount")?,
            tax_amount: line.amount("tax_amount")?,
            discount_amount: line.amount("discount_amount")?,
        };
        // `Order::new` checks this too; checking here lets the rejection name the line.
        if let Err(e) = parsed
            .unit_amount
            .checked_mul(parsed.quantity.get(), "unit_amount × quantity")
        {
            return Err(reject(
                RejectReason::AmountOverflow,
                format!("{}: {e}", line.path),
            ));
        }
        lines.push(parsed);
    }
    let shipping_amount = data
        .optional_amount("shipping_amount")?
        .unwrap_or(MinorUnits::ZERO);
    let order_discount_amount = data
        .optional_amount("order_discount_amount")?
        .unwrap_or(MinorUnits::ZERO);
    let payment = data.object("payment")?;
    let authorization = Authorization {
        provider: payment.id("provider", ProviderName::parse)?,
        authorization_id: payment.id("authorization_id", AuthorizationId::parse)?,
        amount: payment.amount("authorized_amount")?,
        authorized_at: payment.timestamp("authorized_at")?,
        expires_at: payment.optional_timestamp("expires_at")?,
    };
    let payment_currency = payment.optional_currency("currency")?;
    let draft = OrderDraft {
        order_id,
        currency,
        lines,
        shipping_amount,
        order_discount_amount,
        authorization,
        payment_currency,
    };
    Order::new(draft)
        .map(Command::RegisterOrder)
        .map_err(|e| order_rejection(e, "lines", raw_lines))
}

fn shipment_shipped(data: &Obj<'_>) -> Result<Command, WireRejection> {
    let order_id = data.id("order_id", OrderId::parse)?;
    let shipment_id = data.id("shipment_id", ShipmentId::parse)?;
    let shipped_at = data.timestamp("shipped_at")?;
    let (items, raw_items) = items(data)?;
    let last_shipment = data.optional_bool("last_shipment")?.unwrap_or(false);
    // Carried for people, not used for money; still held to their documented type.
    data.optional_string("carrier")?;
    data.optional_string("tracking_number")?;
    let shipment = Shipment::new(shipment_id, items, last_shipment, shipped_at)
        .map_err(|e| order_rejection(e, "items", raw_items))?;
    Ok(Command::Ship { order_id, shipment })
}

fn lines_cancelled(data: &Obj<'_>, message_id: &EventId) -> Result<Command, WireRejection> {
    let order_id = data.id("order_id", OrderId::parse)?;
    let (items, raw_items) = items(data)?;
    let cancellation = Cancellation::new(message_id.clone(), items)
        .map_err(|e| order_rejection(e, "items", raw_items))?;
    Ok(Command::Cancel {
        order_id,
        cancellation,
    })
}

fn items<'a>(data: &Obj<'a>) -> Result<(Vec<Item>, &'a [Value]), WireRejection> {
    let raw_items = data.array("items")?;
    let mut items = Vec::with_capacity(raw_items.len().min(crate::domain::order::MAX_LINES));
    for (i, raw) in raw_items.iter().enumerate() {
        let item = data.element("items", i, raw)?;
        items.push(Item {
            line_id: item.id("line_id", LineId::parse)?,
            quantity: item.quantity("quantity")?,
        });
    }
    Ok((items, raw_items))
}

/// Maps a domain rule broken by a well-typed message to its reason, naming the field.
/// `list` is `lines` or `items`; `raw` is that array as sent, to find a line's index.
fn order_rejection(error: OrderError, list: &str, raw: &[Value]) -> WireRejection {
    let line_index = |line_id: &LineId, nth: usize| {
        raw.iter()
            .enumerate()
            .filter(|(_, v)| v.get("line_id").and_then(Value::as_str) == Some(line_id.as_str()))
            .nth(nth)
            .map(|(i, _)| i)
    };
    let at_line = |line_id: &LineId, nth: usize, field: &str| match line_index(line_id, nth) {
        Some(i) => format!("data.{list}[{i}].{field}"),
        None => format!("data.{list}"),
    };
    let (reason, path) = match &error {
        OrderError::InvalidQuantity { .. } => {
            (RejectReason::InvalidQuantity, format!("data.{list}"))
        }
        OrderError::NoLines | OrderError::NoItems | OrderError::TooManyLines { .. } => {
            (RejectReason::InvalidOrder, format!("data.{list}"))
        }
        OrderError::DuplicateLine { line_id } => {
            (RejectReason::InvalidOrder, at_line(line_id, 1, "line_id"))
        }
        OrderError::LineDiscountTooLarge { line_id, .. } => (
            RejectReason::InvalidOrder,
            at_line(line_id, 0, "discount_amount"),
        ),
        OrderError::OrderDiscountTooLarge { .. } => (
            RejectReason::InvalidOrder,
            "data.order_discount_amount".to_owned(),
        ),
        OrderError::ExpiryBeforeAuthorization { .. } => (
            RejectReason::InvalidOrder,
            "data.payment.expires_at".to_owned(),
        ),
        OrderError::CurrencyMismatch { .. } => (
            RejectReason::CurrencyMismatch,
            "data.payment.currency".to_owned(),
        ),
        OrderError::Money(MoneyError::Overflow { .. }) => {
            (RejectReason::AmountOverflow, "data".to_owned())
        }
        OrderError::Money(MoneyError::CurrencyMismatch { .. }) => {
            (RejectReason::CurrencyMismatch, "data".to_owned())
        }
        // Amounts were checked non-negative when read, and `Order::new` checks every
        // subtraction it makes, so this means an order whose figures do not add up.
        OrderError::Money(MoneyError::Negative { .. }) => {
            (RejectReason::InvalidOrder, "data".to_owned())
        }
    };
    reject(reason, format!("{path}: {error}"))
}

/// A JSON object and its path from the root, for naming fields in rejections.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    /// `""` for the envelope, `data`, `data.payment`, `data.lines[2]`…
    path: String,
}

impl<'a> Obj<'a> {
    fn at(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    fn required(&self, key: &str) -> Result<&'a Value, WireRejection> {
        self.get(key).ok_or_else(|| {
            reject(
                RejectReason::InvalidSchema,
                format!("{}: the required field is missing", self.at(key)),
            )
        })
    }

    fn wrong_type(&self, key: &str, value: &Value, expected: &str) -> WireRejection {
        reject(
            RejectReason::InvalidSchema,
            format!(
                "{}: got {}; expected {expected}",
                self.at(key),
                describe(value)
            ),
        )
    }

    fn string(&self, key: &str) -> Result<&'a str, WireRejection> {
        let value = self.required(key)?;
        value
            .as_str()
            .ok_or_else(|| self.wrong_type(key, value, "a string"))
    }

    fn optional_string(&self, key: &str) -> Result<Option<&'a str>, WireRejection> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => value
                .as_str()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, value, "a string, or the field omitted")),
        }
    }

    fn optional_bool(&self, key: &str) -> Result<Option<bool>, WireRejection> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => value
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, value, "true or false, or the field omitted")),
        }
    }

    fn object(&self, key: &str) -> Result<Obj<'a>, WireRejection> {
        let value = self.required(key)?;
        match value {
            Value::Object(map) => Ok(Obj {
                map,
                path: self.at(key),
            }),
            other => Err(self.wrong_type(key, other, "an object")),
        }
    }

    fn array(&self, key: &str) -> Result<&'a [Value], WireRejection> {
        let value = self.required(key)?;
        match value {
            Value::Array(items) => Ok(items),
            other => Err(self.wrong_type(key, other, "an array")),
        }
    }

    /// The `i`th element of the array at `key`, which must be an object.
    fn element(&self, key: &str, i: usize, value: &'a Value) -> Result<Obj<'a>, WireRejection> {
        let path = format!("{}[{i}]", self.at(key));
        match value {
            Value::Object(map) => Ok(Obj { map, path }),
            other => Err(reject(
                RejectReason::InvalidSchema,
                format!("{path}: got {}; expected an object", describe(other)),
            )),
        }
    }

    fn id<T>(
        &self,
        key: &str,
        parse: fn(String) -> Result<T, InvalidId>,
    ) -> Result<T, WireRejection> {
        let text = self.string(key)?;
        parse(text.to_owned())
            .map_err(|e| reject(RejectReason::InvalidId, format!("{}: {e}", self.at(key))))
    }

    fn currency(&self, key: &str) -> Result<Currency, WireRejection> {
        let text = self.string(key)?;
        Currency::parse(text).map_err(|e| {
            reject(
                RejectReason::InvalidCurrency,
                format!("{}: {e}", self.at(key)),
            )
        })
    }

    fn optional_currency(&self, key: &str) -> Result<Option<Currency>, WireRejection> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.currency(key).map(Some),
        }
    }

    fn timestamp(&self, key: &str) -> Result<DateTime<Utc>, WireRejection> {
        let text = self.string(key)?;
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                reject(
                    RejectReason::InvalidSchema,
                    format!(
                        "{}: {} is not a timestamp ({e}); expected RFC 3339 with an offset, e.g. 2026-11-21T10:00:00Z",
                        self.at(key),
                        excerpt(text)
                    ),
                )
            })
    }

    fn optional_timestamp(&self, key: &str) -> Result<Option<DateTime<Utc>>, WireRejection> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.timestamp(key).map(Some),
        }
    }

    fn amount(&self, key: &str) -> Result<MinorUnits, WireRejection> {
        let value = self.required(key)?;
        read_amount(value, &self.at(key))
    }

    fn optional_amount(&self, key: &str) -> Result<Option<MinorUnits>, WireRejection> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => read_amount(value, &self.at(key)).map(Some),
        }
    }

    fn quantity(&self, key: &str) -> Result<Quantity, WireRejection> {
        let value = self.required(key)?;
        let path = self.at(key);
        let bad = |got: String| {
            reject(
                RejectReason::InvalidQuantity,
                format!(
                    "{path}: got {got}; expected a whole number of units from 1 to {}, without a decimal point",
                    crate::domain::order::MAX_QUANTITY
                ),
            )
        };
        match value {
            Value::Number(n) => match number_kind(n) {
                NumberKind::Integer(v) => {
                    Quantity::new(v).map_err(|_| bad(format!("the number {v}")))
                }
                NumberKind::AboveI64 | NumberKind::NotAnInteger => Err(bad(number_excerpt(n))),
            },
            other => Err(bad(describe(other))),
        }
    }
}

const AMOUNT_EXPECTED: &str = "expected a whole number of minor units from 0 to 9223372036854775807, without a decimal point or exponent";

fn read_amount(value: &Value, path: &str) -> Result<MinorUnits, WireRejection> {
    let invalid = |got: String| {
        reject(
            RejectReason::InvalidAmount,
            format!("{path}: got {got}; {AMOUNT_EXPECTED}"),
        )
    };
    match value {
        Value::Number(n) => match number_kind(n) {
            NumberKind::Integer(v) => {
                MinorUnits::new(v).map_err(|_| invalid(format!("the negative number {v}")))
            }
            NumberKind::AboveI64 => Err(reject(
                RejectReason::AmountOverflow,
                format!(
                    "{path}: the number {} is above 9223372036854775807, the largest amount this worker can hold",
                    number_excerpt(n)
                ),
            )),
            NumberKind::NotAnInteger => Err(invalid(format!("the number {}", number_excerpt(n)))),
        },
        other => Err(invalid(describe(other))),
    }
}

enum NumberKind {
    /// Written as an integer that fits `i64`.
    Integer(i64),
    /// A whole number above `i64::MAX`.
    AboveI64,
    /// Written with a fraction or an exponent (or a whole number below `i64::MIN`).
    NotAnInteger,
}

fn number_kind(n: &Number) -> NumberKind {
    if let Some(v) = n.as_i64() {
        return NumberKind::Integer(v);
    }
    if n.is_u64() {
        return NumberKind::AboveI64;
    }
    // Beyond u64, serde_json holds even a plain integer literal as a float (unless the
    // `arbitrary_precision` feature keeps its digits). Every float ≥ 2^63 is a whole number,
    // so such a value is reported as an overflow; anything smaller that is not an i64 was
    // written with a fraction or an exponent. The float is only compared, never used as money.
    let text = n.to_string();
    let digits = text.strip_prefix('-').unwrap_or(&text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return if text.starts_with('-') {
            NumberKind::NotAnInteger
        } else {
            NumberKind::AboveI64
        };
    }
    match n.as_f64() {
        Some(f) if f >= 2_f64.powi(63) => NumberKind::AboveI64,
        _ => NumberKind::NotAnInteger,
    }
}

fn reject(reason: RejectReason, detail: String) -> WireRejection {
    WireRejection {
        reason,
        detail,
        message_id: None,
        message_type: None,
    }
}

/// The JSON type of a value, for "got …" in details. Strings are not echoed: they may be
/// long or sensitive.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {}", number_excerpt(n)),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

fn number_excerpt(n: &Number) -> String {
    let text = n.to_string();
    if text.len() <= 40 {
        text
    } else {
        format!("{}…", text.chars().take(40).collect::<String>())
    }
}

/// A value from the message for a detail: quoted, escaped (one line) and truncated.
fn excerpt(text: &str) -> String {
    let head: String = text.chars().take(64).collect();
    if head.len() < text.len() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

/// Short printable text safe to store and log as-is (used for the `type` hint).
fn is_printable_token(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/#@+".contains(&b))
}

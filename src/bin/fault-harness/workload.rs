//! The workload: orders with their authorizations, shipments that partition every order's
//! units, duplicates, bad messages and declines, all drawn from one seed, and the publish order.
//!
//! Every message carries what the checker must find at the end (`Expect`): the order or
//! shipment it registers, or the rejection reason a bad message must end with.

use chrono::{Duration as ChronoDuration, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::rng::Rng;

/// A planted card number (a Luhn-valid test PAN) in a free-text field of some bad messages: it
/// must never reach a log, the dead-letter copy or a stored rejection in clear (P9).
pub const PLANTED_PAN: &str = "4111 1111 1111 1111";

/// Text a careless publisher (or a proxy) may echo: the worker's own API key, when the harness
/// set it (once, at startup, from the key it configures the workers with). Planted in some bad
/// messages; the checker finds it nowhere afterwards.
pub static ECHOED_CREDENTIAL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Body size of the oversized bad messages: over the workers' `amqp.max_message_bytes`
/// (default 262,144).
pub const OVERSIZED_BYTES: usize = 300_000;

/// Every string in `v` (keys aside) passed through `f`.
fn every_string(v: &mut Value, f: &dyn Fn(&str) -> String) {
    match v {
        Value::String(s) => *s = f(s),
        Value::Array(a) => a.iter_mut().for_each(|x| every_string(x, f)),
        Value::Object(o) => o.values_mut().for_each(|x| every_string(x, f)),
        _ => {}
    }
}

/// How much of what.
#[derive(Debug, Clone)]
pub struct Mix {
    pub orders: usize,
    /// Shipment events to publish: shipments + duplicates + bad messages.
    pub events: usize,
    /// Shares of the events, per mille.
    pub duplicate_per_mille: u64,
    pub malformed_per_mille: u64,
    /// Orders whose authorization declines one of its captures, per mille.
    pub decline_per_mille: u64,
    /// Orders published after some of their shipments (they park), per mille.
    pub late_order_per_mille: u64,
    /// Orders authorized for less than their total (the cap cuts), per mille.
    pub short_auth_per_mille: u64,
    /// Orders authorized for more than their total (the final capture releases the rest).
    pub over_auth_per_mille: u64,
    /// Orders whose last parcel says `last_shipment: true` with units never shipped.
    pub last_flag_per_mille: u64,
    pub max_shipments: u32,
}

impl Mix {
    pub fn standard(orders: usize, events: usize) -> Mix {
        Mix {
            orders,
            events,
            duplicate_per_mille: 50,
            malformed_per_mille: 10,
            decline_per_mille: 20,
            late_order_per_mille: 50,
            short_auth_per_mille: 30,
            over_auth_per_mille: 30,
            last_flag_per_mille: 30,
            max_shipments: 8,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LineSpec {
    pub line_id: String,
    pub quantity: u32,
    pub unit: i64,
    pub tax: i64,
    pub discount: i64,
}

#[derive(Debug, Clone)]
pub struct ShipSpec {
    pub shipment_id: String,
    /// (line index, units)
    pub items: Vec<(usize, u32)>,
    pub last_shipment: bool,
}

#[derive(Debug, Clone)]
pub struct OrderSpec {
    pub order_id: String,
    pub auth_id: String,
    pub currency: &'static str,
    pub lines: Vec<LineSpec>,
    pub shipping: i64,
    pub order_discount: i64,
    pub authorized: i64,
    pub shipments: Vec<ShipSpec>,
    /// The sandbox declines this capture request (1-based), if set.
    pub decline_on: Option<u32>,
    /// Some parcels come after a `last_shipment: true` parcel only through broker reordering.
    pub has_last_flag: bool,
}

/// What the checker must find for a message at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Order(usize),
    Shipment {
        order: usize,
        ship: usize,
    },
    /// A bad message: rejected with one of these reasons.
    Bad {
        reasons: &'static [&'static str],
    },
}

#[derive(Debug, Clone)]
pub struct Message {
    /// The body's `message_id` when it has a valid one.
    pub message_id: Option<String>,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub expect: Expect,
}

impl Message {
    /// The sha-256 of the body, as the worker records it for messages without a usable id.
    pub fn body_hash(&self) -> String {
        hex::encode(Sha256::digest(&self.body))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Workload {
    pub orders: Vec<OrderSpec>,
    /// In publish order, duplicates included.
    pub messages: Vec<Message>,
}

fn now_text(offset_seconds: i64) -> String {
    (Utc::now() + ChronoDuration::seconds(offset_seconds))
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The `order.authorized` message of an order.
pub fn order_message(o: &OrderSpec, message_id: &str) -> Value {
    let lines: Vec<Value> = o
        .lines
        .iter()
        .map(|l| {
            json!({
                "line_id": l.line_id, "sku": format!("SKU-{}", l.line_id), "name": format!("Item {}", l.line_id),
                "quantity": l.quantity, "unit_amount": l.unit, "tax_amount": l.tax, "discount_amount": l.discount
            })
        })
        .collect();
    json!({
        "message_id": message_id, "type": "order.authorized", "schema_version": 1,
        "occurred_at": now_text(0),
        "data": {
            "order_id": o.order_id, "currency": o.currency, "lines": lines,
            "shipping_amount": o.shipping, "order_discount_amount": o.order_discount,
            "payment": {
                "provider": "sandbox", "authorization_id": o.auth_id,
                "authorized_amount": o.authorized, "authorized_at": now_text(-60),
                "expires_at": now_text(7 * 24 * 3600 - 120), "currency": o.currency
            }
        }
    })
}

/// The `shipment.shipped` message of one parcel.
pub fn shipment_message(o: &OrderSpec, s: &ShipSpec, message_id: &str) -> Value {
    let items: Vec<Value> = s
        .items
        .iter()
        .map(|(i, q)| json!({"line_id": o.lines[*i].line_id, "quantity": q}))
        .collect();
    let mut m = json!({
        "message_id": message_id, "type": "shipment.shipped", "schema_version": 1,
        "occurred_at": now_text(0),
        "data": {"order_id": o.order_id, "shipment_id": s.shipment_id, "shipped_at": now_text(0), "items": items, "carrier": "UPS"}
    });
    if s.last_shipment {
        m["data"]["last_shipment"] = json!(true);
    }
    m
}

fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// One order with `count` parcels.
pub fn order_spec(rng: &mut Rng, tag: &str, i: usize, count: u32, mix: &Mix) -> OrderSpec {
    let currency = ["USD", "USD", "JPY", "KWD"][rng.index(4)];
    let n_lines = rng.range(1, 4) as usize;
    let last_flag = count >= 2 && rng.chance(mix.last_flag_per_mille);
    // Units: at least one per parcel and one per line, a few more at random.
    let units = u64::from(count).max(n_lines as u64) + rng.below(u64::from(count) + 1);
    let mut quantities = vec![1u32; n_lines];
    for _ in n_lines as u64..units {
        let l = rng.index(n_lines);
        quantities[l] += 1;
    }
    // Tokens (line index per unit), shuffled, cut into `count` non-empty parcels.
    let mut tokens: Vec<usize> = quantities
        .iter()
        .enumerate()
        .flat_map(|(l, q)| std::iter::repeat_n(l, *q as usize))
        .collect();
    rng.shuffle(&mut tokens);
    let mut cuts: Vec<usize> = (1..tokens.len()).collect();
    rng.shuffle(&mut cuts);
    let mut cuts: Vec<usize> = cuts.into_iter().take(count as usize - 1).collect();
    cuts.sort_unstable();
    let mut shipments = Vec::new();
    let mut start = 0;
    for (j, end) in cuts.into_iter().chain([tokens.len()]).enumerate() {
        let mut per_line = vec![0u32; n_lines];
        for &l in &tokens[start..end] {
            per_line[l] += 1;
        }
        start = end;
        shipments.push(ShipSpec {
            shipment_id: format!("SH-{tag}-{i}-{j}"),
            items: per_line
                .iter()
                .enumerate()
                .filter(|(_, q)| **q > 0)
                .map(|(l, q)| (l, *q))
                .collect(),
            last_shipment: false,
        });
    }
    if last_flag {
        // Units that never ship; the last parcel says so.
        let l = rng.index(n_lines);
        quantities[l] += rng.range(1, 3) as u32;
        if let Some(last) = shipments.last_mut() {
            last.last_shipment = true;
        }
    }
    let lines: Vec<LineSpec> = quantities
        .iter()
        .enumerate()
        .map(|(l, &q)| {
            let unit = rng.range_i64(100, 50_000);
            let merch = unit * i64::from(q);
            LineSpec {
                line_id: format!("L{}", l + 1),
                quantity: q,
                unit,
                tax: rng.range_i64(0, merch / 5),
                discount: if rng.chance(300) {
                    rng.range_i64(0, merch / 10)
                } else {
                    0
                },
            }
        })
        .collect();
    let merch_total: i64 = lines
        .iter()
        .map(|l| l.unit * i64::from(l.quantity) - l.discount)
        .sum();
    let order_discount = if rng.chance(300) {
        rng.range_i64(1, merch_total / 10)
    } else {
        0
    };
    let shipping = if rng.chance(700) {
        rng.range_i64(0, 2_000)
    } else {
        0
    };
    let mut o = OrderSpec {
        order_id: format!("ORD-{tag}-{i}"),
        auth_id: format!("pi_{tag}_{i}"),
        currency,
        lines,
        shipping,
        order_discount,
        authorized: 0,
        shipments,
        decline_on: None,
        has_last_flag: last_flag,
    };
    let total = crate::oracle::order_total(&o);
    let roll = rng.below(1000);
    o.authorized = if roll < mix.short_auth_per_mille {
        (total * 3 / 4).max(1)
    } else if roll < mix.short_auth_per_mille + mix.over_auth_per_mille {
        total + rng.range_i64(1, (total / 4).max(1))
    } else {
        total
    };
    if o.authorized == total && rng.chance(mix.decline_per_mille) {
        o.decline_on = Some(rng.range(1, u64::from(count)) as u32);
    }
    o
}

/// Shipment counts per order, 1..=max, summing to `target` when that is reachable.
fn shipment_counts(rng: &mut Rng, orders: usize, target: usize, max: u32) -> Vec<u32> {
    let mut counts: Vec<u32> = (0..orders)
        .map(|_| rng.range(1, u64::from(max)) as u32)
        .collect();
    let target = target.clamp(orders, orders * max as usize);
    let mut sum: usize = counts.iter().map(|c| *c as usize).sum();
    let mut guard = 0;
    while sum != target && guard < 10_000_000 {
        guard += 1;
        let i = rng.index(orders);
        if sum < target && counts[i] < max {
            counts[i] += 1;
            sum += 1;
        } else if sum > target && counts[i] > 1 {
            counts[i] -= 1;
            sum -= 1;
        }
    }
    counts
}

/// A bad message of a random kind, unique by its nonce, with the reason it must end with.
fn bad_message(rng: &mut Rng, tag: &str, n: usize, orders: &[OrderSpec]) -> Message {
    let nonce = format!("{tag}-{n}-{:08x}", rng.next_u64() as u32);
    let id = format!("bad-{nonce}");
    let order = &orders[rng.index(orders.len())];
    let ship = |extra: &dyn Fn(&mut Value)| {
        let s = ShipSpec {
            shipment_id: format!("SHX-{nonce}"),
            items: vec![(0, 1)],
            last_shipment: false,
        };
        let mut m = shipment_message(order, &s, &id);
        extra(&mut m);
        m
    };
    // A new order of its own, refused for what its strings carry (ids are checked first).
    let tainted_order = |taint: &dyn Fn(&str) -> String| {
        let mut o = order.clone();
        o.order_id = format!("ORD-T-{nonce}");
        o.auth_id = format!("pi_t_{nonce}");
        let mut m = order_message(&o, &id);
        every_string(&mut m, taint);
        to_bytes(&m)
    };
    const TAINTED: &[&str] = &[
        "invalid_id",
        "invalid_schema",
        "unknown_type",
        "invalid_currency",
    ];
    let kind = rng.below(13);
    let (reasons, routing_key, body, has_id): (&'static [&'static str], &str, Vec<u8>, bool) =
        match kind {
            0 => (
                &["malformed"],
                "shipment.shipped",
                format!("{{\"message_id\": \"{id}\", \"data\": {{").into_bytes(),
                false,
            ),
            1 => {
                let mut b = b"\xff\xfe\x00 not utf-8 ".to_vec();
                b.extend_from_slice(nonce.as_bytes());
                (&["malformed"], "shipment.shipped", b, false)
            }
            2 => (
                &["malformed"],
                "shipment.shipped",
                format!("[\"{nonce}\"]").into_bytes(),
                false,
            ),
            3 => (
                &["invalid_schema"],
                "shipment.shipped",
                to_bytes(&ship(&|m| {
                    if let Some(d) = m["data"].as_object_mut() {
                        d.remove("items");
                    }
                })),
                true,
            ),
            4 => (
                &["invalid_amount"],
                "order.authorized",
                {
                    let mut o = order.clone();
                    o.order_id = format!("ORD-X-{nonce}");
                    o.auth_id = format!("pi_x_{nonce}");
                    let mut m = order_message(&o, &id);
                    m["data"]["lines"][0]["unit_amount"] = json!(19.99);
                    to_bytes(&m)
                },
                true,
            ),
            5 => (
                &["invalid_quantity"],
                "shipment.shipped",
                to_bytes(&ship(&|m| {
                    m["data"]["items"][0]["quantity"] = json!(0);
                    m["data"]["note"] = json!(format!("customer card {PLANTED_PAN}"));
                })),
                true,
            ),
            6 => (
                &["unsupported_version"],
                "shipment.shipped",
                to_bytes(&ship(&|m| m["schema_version"] = json!(2))),
                true,
            ),
            7 => (
                &["invalid_quantity"],
                "shipment.shipped",
                to_bytes(&ship(&|m| m["data"]["items"][0]["quantity"] = json!("3"))),
                true,
            ),
            // NUL in every string field.
            9 => (
                TAINTED,
                "order.authorized",
                tainted_order(&|s| format!("{s}\u{0}x")),
                false,
            ),
            // A card number in every string field.
            10 => (
                TAINTED,
                "order.authorized",
                tainted_order(&|s| format!("{s} {PLANTED_PAN}")),
                false,
            ),
            // A body over the size limit, a card number at its start.
            11 => (
                &["too_large"],
                "shipment.shipped",
                to_bytes(&ship(&|m| {
                    m["data"]["note"] =
                        json!(format!("{PLANTED_PAN} {}", "x".repeat(OVERSIZED_BYTES)));
                })),
                false,
            ),
            // The worker's own credential echoed back in a refused message.
            12 => (
                &["invalid_quantity"],
                "shipment.shipped",
                to_bytes(&ship(&|m| {
                    m["data"]["items"][0]["quantity"] = json!(0);
                    let echoed = ECHOED_CREDENTIAL.get().map_or("", String::as_str);
                    m["data"]["note"] = json!(format!("Authorization: Bearer {echoed}"));
                })),
                true,
            ),
            _ => (
                // Checked against the order: refused for its state first when it is complete or
                // declined by the time the parcel is planned.
                &["unknown_line", "after_final", "order_declined"],
                "shipment.shipped",
                to_bytes(&ship(&|m| m["data"]["items"][0]["line_id"] = json!("L99"))),
                true,
            ),
        };
    Message {
        message_id: has_id.then_some(id),
        routing_key: routing_key.to_owned(),
        body,
        expect: Expect::Bad { reasons },
    }
}

/// Generates orders and the message stream for one scenario. `tag` makes ids unique.
pub fn generate(rng: &mut Rng, tag: &str, mix: &Mix) -> Workload {
    let bad = mix.events * mix.malformed_per_mille as usize / 1000;
    let good_events = mix.events - bad;
    // good_events = shipments × (1 + duplicate share)
    let shipments = good_events * 1000 / (1000 + mix.duplicate_per_mille as usize);
    let counts = shipment_counts(rng, mix.orders, shipments, mix.max_shipments);
    let orders: Vec<OrderSpec> = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| order_spec(rng, tag, i, c, mix))
        .collect();

    // Per order: its messages in the order the warehouse sends them.
    let mut per_order: Vec<Vec<Message>> = Vec::with_capacity(orders.len());
    for (oi, o) in orders.iter().enumerate() {
        let mut ship_msgs: Vec<Message> = o
            .shipments
            .iter()
            .enumerate()
            .map(|(si, s)| {
                let id = format!("m-{tag}-{oi}-{si}");
                Message {
                    body: to_bytes(&shipment_message(o, s, &id)),
                    message_id: Some(id),
                    routing_key: "shipment.shipped".into(),
                    expect: Expect::Shipment {
                        order: oi,
                        ship: si,
                    },
                }
            })
            .collect();
        // Parcels in random order, except that a `last_shipment` parcel goes last.
        let flagged_last = o.has_last_flag;
        let n = ship_msgs.len();
        let shuffle_len = if flagged_last { n - 1 } else { n };
        rng.shuffle(&mut ship_msgs[..shuffle_len]);
        let order_id = format!("o-{tag}-{oi}");
        let order_msg = Message {
            body: to_bytes(&order_message(o, &order_id)),
            message_id: Some(order_id),
            routing_key: "order.authorized".into(),
            expect: Expect::Order(oi),
        };
        let at = if rng.chance(mix.late_order_per_mille) {
            rng.range(1, n as u64) as usize
        } else {
            0
        };
        ship_msgs.insert(at, order_msg);
        ship_msgs.reverse(); // popped from the end
        per_order.push(ship_msgs);
    }

    // Interleave the orders at random.
    let mut active: Vec<usize> = (0..per_order.len()).collect();
    let mut messages = Vec::new();
    while !active.is_empty() {
        let k = rng.index(active.len());
        let oi = active[k];
        if let Some(m) = per_order[oi].pop() {
            messages.push(m);
        }
        if per_order[oi].is_empty() {
            active.swap_remove(k);
        }
    }

    // Duplicates: the same message again later, or the same parcel under a new message id.
    let originals: Vec<usize> = (0..messages.len())
        .filter(|&i| matches!(messages[i].expect, Expect::Shipment { .. }))
        .collect();
    let want = good_events.saturating_sub(originals.len());
    let mut dups = Vec::new();
    for n in 0..want {
        let src = originals[rng.index(originals.len())];
        let m = &messages[src];
        let dup = if rng.chance(500) {
            m.clone()
        } else if let Expect::Shipment { order, ship } = m.expect {
            let id = format!("d-{tag}-{n}");
            let o = &orders[order];
            Message {
                body: to_bytes(&shipment_message(o, &o.shipments[ship], &id)),
                message_id: Some(id),
                routing_key: "shipment.shipped".into(),
                expect: m.expect.clone(),
            }
        } else {
            continue;
        };
        dups.push((src, dup));
    }
    // Insert from the back so earlier indices stay valid.
    dups.sort_by_key(|(src, _)| std::cmp::Reverse(*src));
    for (src, dup) in dups {
        let at = rng.range(src as u64 + 1, messages.len() as u64) as usize;
        messages.insert(at.min(messages.len()), dup);
    }
    for n in 0..bad {
        let m = bad_message(rng, tag, n, &orders);
        let at = rng.index(messages.len() + 1);
        messages.insert(at, m);
    }
    Workload { orders, messages }
}

//! Message contract v1: the published examples and schemas, one test per rejection reason,
//! and the promise that no body makes the parser panic.

use std::path::{Path, PathBuf};

use capture_worker::domain::*;
use capture_worker::queue::wire::{
    Command, MAX_MESSAGE_BYTES, MessageType, Parsed, RejectReason, WireRejection, parse,
};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::{ctx, run};

// ---------------------------------------------------------------------------------------------
// Helpers

fn contract_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contract/v1")
}

pub(crate) fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(contract_dir().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

fn example(name: &str) -> Value {
    let path = contract_dir().join("examples").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn schema_for(message_type: &str) -> Value {
    let path = contract_dir().join(format!("{message_type}.schema.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Parses a message as the consumer would: with its `type` as the routing key.
fn read(message: &Value) -> Result<Parsed, WireRejection> {
    let key = message["type"].as_str().map(str::to_owned);
    parse(&serde_json::to_vec(message).unwrap(), key.as_deref())
}

fn rejected(message: &Value) -> WireRejection {
    match read(message) {
        Ok(parsed) => panic!("expected a rejection, parsed {parsed:?}"),
        Err(rejection) => rejection,
    }
}

fn rejected_bytes(body: &[u8]) -> WireRejection {
    match parse(body, None) {
        Ok(parsed) => panic!("expected a rejection, parsed {parsed:?}"),
        Err(rejection) => rejection,
    }
}

/// The example with the value at a JSON pointer set (added when the field is absent).
fn with(mut message: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match message.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(key.to_owned(), value);
        }
        Some(Value::Array(items)) => items[key.parse::<usize>().unwrap()] = value,
        _ => panic!("no {parent}"),
    }
    message
}

/// The example with a field removed; `pointer` names the field.
fn without(mut message: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    message
        .pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(key)
        .unwrap_or_else(|| panic!("no {pointer}"));
    message
}

fn usd_order() -> Value {
    example("order-authorized-usd.json")
}

fn usd_shipment() -> Value {
    example("shipment-shipped-usd-s1.json")
}

fn jpy_cancellation() -> Value {
    example("order-lines-cancelled-jpy.json")
}

fn assert_reason(rejection: &WireRejection, reason: RejectReason, path: &str) {
    assert_eq!(rejection.reason, reason, "{rejection}");
    assert!(
        rejection.detail.contains(path),
        "detail should name {path}: {}",
        rejection.detail
    );
}

fn order_of(parsed: Parsed) -> Order {
    match parsed.command {
        Command::RegisterOrder(order) => order,
        other => panic!("expected an order, got {other:?}"),
    }
}

fn shipment_of(parsed: Parsed) -> Shipment {
    match parsed.command {
        Command::Ship { shipment, .. } => shipment,
        other => panic!("expected a shipment, got {other:?}"),
    }
}

fn item_list(items: &[Item]) -> Vec<(&str, u32)> {
    items
        .iter()
        .map(|i| (i.line_id.as_str(), i.quantity.get()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The published examples and schemas

#[test]
fn usd_example_registers_the_order_with_a_total_of_12455() {
    let parsed = read(&usd_order()).unwrap();
    assert_eq!(parsed.envelope.message_type, MessageType::OrderAuthorized);
    assert_eq!(parsed.envelope.message_id.as_str(), "chk-2026-11-21-0001");
    let order = order_of(parsed);
    assert_eq!(order.order_id().as_str(), "ORD-1001");
    assert_eq!(order.currency().code(), "USD");
    assert_eq!(order.lines().len(), 3);
    assert_eq!(order.shipping_amount().get(), 799);
    assert_eq!(order.order_discount_amount().get(), 1000);
    assert_eq!(order.total().amount().get(), 12455);
    let auth = order.authorization();
    assert_eq!(auth.provider.as_str(), "sandbox");
    assert_eq!(auth.authorization_id.as_str(), "pi_example_1");
    assert_eq!(auth.amount.get(), 12455);
    assert!(auth.expires_at.is_some());
    let l1 = &order.lines()[0];
    assert_eq!(
        (
            l1.quantity.get(),
            l1.unit_amount.get(),
            l1.tax_amount.get(),
            l1.discount_amount.get()
        ),
        (3, 1999, 480, 300)
    );
}

#[test]
fn usd_example_shipments_capture_the_order_total_and_the_last_is_final() {
    let order = order_of(read(&usd_order()).unwrap());
    let shipments: Vec<Shipment> = ["s1", "s2", "s3"]
        .iter()
        .map(|s| shipment_of(read(&example(&format!("shipment-shipped-usd-{s}.json"))).unwrap()))
        .collect();
    assert_eq!(item_list(shipments[0].items()), [("L1", 1), ("L2", 1)]);
    assert_eq!(item_list(shipments[1].items()), [("L1", 1), ("L3", 1)]);
    assert_eq!(item_list(shipments[2].items()), [("L1", 1), ("L2", 1)]);

    let events: Vec<Event<'_>> = shipments.iter().map(Event::Shipment).collect();
    let (decisions, state) = run(&order, &ctx(Capabilities::multi_capture()), &events);

    let captures: Vec<(i64, bool)> = decisions
        .iter()
        .map(|d| match d {
            Decision::Capture(c) => (c.amount.get(), c.is_final),
            other => panic!("expected a capture, got {other:?}"),
        })
        .collect();
    assert_eq!(captures, [(5182, false), (2890, false), (4383, true)]);
    assert_eq!(state.claimed.get(), 12455);
}

#[test]
fn jpy_and_kwd_examples_register_orders_in_their_own_minor_units() {
    let jpy = order_of(read(&example("order-authorized-jpy.json")).unwrap());
    assert_eq!(
        (jpy.currency().code(), jpy.currency().exponent()),
        ("JPY", 0)
    );
    assert_eq!(jpy.total().amount().get(), 9020);
    assert_eq!(jpy.authorization().amount.get(), 9020);
    assert_eq!(jpy.authorization().expires_at, None);

    let kwd = order_of(read(&example("order-authorized-kwd.json")).unwrap());
    assert_eq!(
        (kwd.currency().code(), kwd.currency().exponent()),
        ("KWD", 3)
    );
    assert_eq!(kwd.total().amount().get(), 39050);
    assert_eq!(kwd.total().to_major_string(), "39.050");
}

#[test]
fn cancellation_example_uses_its_message_id_as_the_cancellation_id() {
    let parsed = read(&jpy_cancellation()).unwrap();
    let Command::Cancel {
        order_id,
        cancellation,
    } = parsed.command
    else {
        panic!("expected a cancellation");
    };
    assert_eq!(order_id.as_str(), "ORD-2001");
    assert_eq!(cancellation.cancellation_id(), &parsed.envelope.message_id);
    assert_eq!(item_list(cancellation.items()), [("J2", 1)]);
}

#[test]
fn last_shipment_example_says_nothing_more_will_ship() {
    let shipment = shipment_of(read(&example("shipment-shipped-kwd-last.json")).unwrap());
    assert!(shipment.last_shipment());
    assert_eq!(shipment.shipment_id().as_str(), "KW-3001-A");
    assert_eq!(item_list(shipment.items()), [("K1", 2), ("K2", 2)]);
    assert!(!shipment_of(read(&usd_shipment()).unwrap()).last_shipment());
}

#[test]
fn every_example_parses_to_the_command_its_type_promises() {
    let files = example_files();
    assert!(files.len() >= 8, "expected the examples, found {files:?}");
    for file in files {
        let message: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let parsed = read(&message).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            parsed.envelope.message_type.as_str(),
            message["type"].as_str().unwrap()
        );
        let kind_matches = matches!(
            (parsed.envelope.message_type, &parsed.command),
            (MessageType::OrderAuthorized, Command::RegisterOrder(_))
                | (MessageType::ShipmentShipped, Command::Ship { .. })
                | (MessageType::LinesCancelled, Command::Cancel { .. })
        );
        assert!(kind_matches, "{}: {:?}", file.display(), parsed.command);
        assert_eq!(
            parsed.command.order_id().as_str(),
            message["data"]["order_id"].as_str().unwrap()
        );
    }
}

#[test]
fn every_schema_is_a_valid_draft_2020_12_schema() {
    for t in MessageType::ALL {
        let schema = schema_for(t.as_str());
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(schema["properties"]["type"]["const"], t.as_str());
        jsonschema::draft202012::meta::validate(&schema)
            .unwrap_or_else(|e| panic!("{}: {e}", t.as_str()));
    }
}

fn validator(message_type: &str) -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema_for(message_type))
        .unwrap()
}

#[test]
fn every_example_validates_against_its_schema() {
    for file in example_files() {
        let message: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let validator = validator(message["type"].as_str().unwrap());
        let errors: Vec<String> = validator
            .iter_errors(&message)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    }
}

#[test]
fn schemas_reject_what_the_parser_rejects() {
    let cases = [
        without(usd_order(), "/data/order_id"),
        with(usd_order(), "/data/lines/0/unit_amount", json!(-1)),
        with(usd_order(), "/data/lines/0/unit_amount", json!("1999")),
        with(usd_order(), "/data/lines/0/unit_amount", json!(19.99)),
        with(usd_order(), "/data/lines/1/quantity", json!(0)),
        with(usd_order(), "/data/currency", json!("usd")),
        with(usd_order(), "/data/payment/provider", json!("Sandbox")),
        with(usd_order(), "/data/lines", json!([])),
        with(usd_order(), "/schema_version", json!(2)),
        with(usd_order(), "/message_id", json!("has space")),
        with(usd_shipment(), "/data/shipment_id", json!("x".repeat(65))),
        with(usd_shipment(), "/data/shipped_at", json!("yesterday")),
        with(usd_shipment(), "/data/last_shipment", json!("yes")),
        with(jpy_cancellation(), "/data/items", json!([])),
        with(
            jpy_cancellation(),
            "/data/items/0/quantity",
            json!(1_000_001),
        ),
    ];
    for message in cases {
        let by_parser = read(&message);
        assert!(by_parser.is_err(), "parser accepted {message}");
        let validator = validator(message["type"].as_str().unwrap());
        assert!(
            !validator.is_valid(&message),
            "schema accepted what the parser rejects ({}): {message}",
            by_parser.unwrap_err()
        );
    }
}

#[test]
fn every_reject_reason_has_a_distinct_code_and_is_documented_for_publishers() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/publishers.md"))
            .unwrap();
    let mut codes: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
    for code in &codes {
        assert!(
            docs.contains(&format!("`{code}`")),
            "docs/publishers.md does not explain `{code}`"
        );
    }
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), RejectReason::ALL.len());
}

// ---------------------------------------------------------------------------------------------
// One test per rejection reason

#[test]
fn body_over_the_size_limit_is_rejected_as_too_large_before_parsing() {
    let mut body = vec![b' '; MAX_MESSAGE_BYTES + 1];
    body[0] = b'{';
    let rejection = rejected_bytes(&body);
    assert_eq!(rejection.reason, RejectReason::TooLarge);
    assert!(rejection.detail.contains(&MAX_MESSAGE_BYTES.to_string()));

    // Padding up to the limit is still read.
    let mut padded = serde_json::to_vec(&usd_shipment()).unwrap();
    padded.resize(MAX_MESSAGE_BYTES, b' ');
    assert!(parse(&padded, None).is_ok());
}

#[test]
fn bodies_that_are_not_a_json_object_are_rejected_as_malformed() {
    for body in [
        &b""[..],
        b"   ",
        b"\xff\xfe{}",
        b"{\"message_id\": \"\xc3\x28\"}",
        b"{\"message_id\": ",
        b"not json",
        b"[]",
        b"\"order.authorized\"",
        b"42",
        b"null",
        b"{} {}",
    ] {
        let rejection = rejected_bytes(body);
        assert_eq!(
            rejection.reason,
            RejectReason::Malformed,
            "{:?}: {rejection}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn deeply_nested_json_is_rejected_as_malformed_without_overflowing_the_stack() {
    let depth = MAX_MESSAGE_BYTES / 2 - 8;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    assert_eq!(
        rejected_bytes(arrays.as_bytes()).reason,
        RejectReason::Malformed
    );

    let nested_data = format!(
        r#"{{"message_id":"m1","type":"shipment.shipped","schema_version":1,"occurred_at":"2026-11-21T10:00:00Z","data":{}1{}}}"#,
        "{\"a\":".repeat(20_000),
        "}".repeat(20_000)
    );
    assert_eq!(
        rejected_bytes(nested_data.as_bytes()).reason,
        RejectReason::Malformed
    );
}

#[test]
fn missing_required_fields_are_rejected_as_invalid_schema_naming_the_path() {
    let cases = [
        (without(usd_order(), "/message_id"), "message_id"),
        (without(usd_order(), "/occurred_at"), "occurred_at"),
        (without(usd_order(), "/data"), "data"),
        (without(usd_order(), "/data/order_id"), "data.order_id"),
        (without(usd_order(), "/data/lines"), "data.lines"),
        (
            without(usd_order(), "/data/lines/2/tax_amount"),
            "data.lines[2].tax_amount",
        ),
        (
            without(usd_order(), "/data/payment/authorized_at"),
            "data.payment.authorized_at",
        ),
        (
            without(usd_shipment(), "/data/shipment_id"),
            "data.shipment_id",
        ),
        (
            without(usd_shipment(), "/data/items/1/quantity"),
            "data.items[1].quantity",
        ),
        (without(jpy_cancellation(), "/data/items"), "data.items"),
    ];
    for (message, path) in cases {
        let rejection = rejected(&message);
        assert_reason(&rejection, RejectReason::InvalidSchema, path);
        assert!(rejection.detail.contains("missing"), "{rejection}");
    }
    let no_version = rejected(&without(usd_order(), "/schema_version"));
    assert_reason(&no_version, RejectReason::InvalidSchema, "schema_version");
    let no_type = parse(
        &serde_json::to_vec(&without(usd_order(), "/type")).unwrap(),
        None,
    )
    .unwrap_err();
    assert_reason(&no_type, RejectReason::InvalidSchema, "type");
}

#[test]
fn wrong_typed_fields_are_rejected_as_invalid_schema_naming_the_path() {
    let cases = [
        (
            with(usd_order(), "/data/order_id", json!(1001)),
            "data.order_id",
        ),
        (
            with(usd_order(), "/data/lines/1/sku", json!(42)),
            "data.lines[1].sku",
        ),
        (
            with(usd_order(), "/data/lines/0", json!("L1")),
            "data.lines[0]",
        ),
        (
            with(usd_order(), "/data/lines", json!({"L1": 3})),
            "data.lines",
        ),
        (
            with(usd_order(), "/data/payment", json!("sandbox")),
            "data.payment",
        ),
        (with(usd_order(), "/data", json!([])), "data"),
        (
            with(usd_order(), "/schema_version", json!("1")),
            "schema_version",
        ),
        (
            with(usd_order(), "/schema_version", json!(1.0)),
            "schema_version",
        ),
        (
            with(usd_shipment(), "/data/last_shipment", json!("true")),
            "data.last_shipment",
        ),
        (
            with(usd_shipment(), "/data/carrier", json!(null)),
            "data.carrier",
        ),
        (
            with(usd_shipment(), "/data/tracking_number", json!(123)),
            "data.tracking_number",
        ),
    ];
    for (message, path) in cases {
        assert_reason(&rejected(&message), RejectReason::InvalidSchema, path);
    }
}

#[test]
fn timestamps_that_are_not_rfc_3339_are_rejected_as_invalid_schema() {
    for bad in [
        json!("2026-11-21"),
        json!("21/11/2026 10:00"),
        json!("2026-11-21T10:00:00"),
        json!(1763719200),
    ] {
        assert_reason(
            &rejected(&with(usd_shipment(), "/data/shipped_at", bad)),
            RejectReason::InvalidSchema,
            "data.shipped_at",
        );
    }
    assert_reason(
        &rejected(&with(usd_order(), "/occurred_at", json!("soon"))),
        RejectReason::InvalidSchema,
        "occurred_at",
    );
    assert_reason(
        &rejected(&with(usd_order(), "/data/payment/expires_at", json!(""))),
        RejectReason::InvalidSchema,
        "data.payment.expires_at",
    );
}

#[test]
fn routing_key_that_differs_from_type_is_rejected_as_invalid_schema() {
    let body = serde_json::to_vec(&usd_shipment()).unwrap();
    let rejection = parse(&body, Some("order.authorized")).unwrap_err();
    assert_reason(&rejection, RejectReason::InvalidSchema, "routing key");
    assert!(parse(&body, Some("shipment.shipped")).is_ok());
    assert!(parse(&body, None).is_ok());
}

#[test]
fn schema_version_other_than_1_is_rejected_as_unsupported_version() {
    for version in [json!(0), json!(2), json!(-1), json!(u64::MAX)] {
        // A later version may reshape everything else: the version is judged first.
        let message = with(
            with(usd_order(), "/schema_version", version),
            "/data",
            json!("v2 shape"),
        );
        assert_reason(
            &rejected(&message),
            RejectReason::UnsupportedVersion,
            "schema_version",
        );
    }
}

#[test]
fn unknown_type_is_rejected_as_unknown_type() {
    let message = with(usd_shipment(), "/type", json!("shipment.returned"));
    let rejection = rejected(&message);
    assert_reason(&rejection, RejectReason::UnknownType, "shipment.returned");
    assert_eq!(rejection.message_type.as_deref(), Some("shipment.returned"));
}

#[test]
fn float_amount_is_rejected_as_invalid_amount() {
    for amount in [
        json!(12.5),
        json!(12.0),
        json!(19.99),
        json!(1e3),
        json!(-0.0),
    ] {
        let rejection = rejected(&with(usd_order(), "/data/lines/2/unit_amount", amount));
        assert_reason(
            &rejection,
            RejectReason::InvalidAmount,
            "data.lines[2].unit_amount",
        );
        assert!(rejection.detail.contains("whole number"), "{rejection}");
    }
    // Written by hand, not through serde_json's float formatting.
    let text = serde_json::to_string(&usd_order())
        .unwrap()
        .replace("\"shipping_amount\":799", "\"shipping_amount\":799.00");
    assert_reason(
        &rejected_bytes(text.as_bytes()),
        RejectReason::InvalidAmount,
        "data.shipping_amount",
    );
}

#[test]
fn string_amount_is_rejected_as_invalid_amount() {
    for amount in [json!("100"), json!("1e3"), json!("12.50"), json!("")] {
        assert_reason(
            &rejected(&with(
                usd_order(),
                "/data/payment/authorized_amount",
                amount,
            )),
            RejectReason::InvalidAmount,
            "data.payment.authorized_amount",
        );
    }
}

#[test]
fn negative_boolean_null_and_structured_amounts_are_rejected_as_invalid_amount() {
    for amount in [
        json!(-1),
        json!(i64::MIN),
        json!(true),
        json!(null),
        json!([100]),
        json!({"value": 100}),
    ] {
        assert_reason(
            &rejected(&with(usd_order(), "/data/order_discount_amount", amount)),
            RejectReason::InvalidAmount,
            "data.order_discount_amount",
        );
    }
    let huge_negative = serde_json::to_string(&usd_order()).unwrap().replace(
        "\"tax_amount\":480",
        "\"tax_amount\":-99999999999999999999999",
    );
    assert_reason(
        &rejected_bytes(huge_negative.as_bytes()),
        RejectReason::InvalidAmount,
        "data.lines[0].tax_amount",
    );
}

#[test]
fn amount_above_i64_max_is_rejected_as_amount_overflow() {
    let text = serde_json::to_string(&usd_order()).unwrap();
    for huge in [
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "100000000000000000000000000000000000000000",
    ] {
        let body = text.replace(
            "\"authorized_amount\":12455",
            &format!("\"authorized_amount\":{huge}"),
        );
        assert_reason(
            &rejected_bytes(body.as_bytes()),
            RejectReason::AmountOverflow,
            "data.payment.authorized_amount",
        );
    }
    // The largest i64 itself is an amount, read exactly.
    let max = with(
        usd_order(),
        "/data/payment/authorized_amount",
        json!(i64::MAX),
    );
    let order = order_of(read(&max).unwrap());
    assert_eq!(order.authorization().amount.get(), i64::MAX);
}

#[test]
fn order_totals_that_overflow_are_rejected_as_amount_overflow() {
    let message = with(
        usd_order(),
        "/data/lines/0/unit_amount",
        json!(i64::MAX / 2),
    );
    let rejection = rejected(&message);
    assert_reason(&rejection, RejectReason::AmountOverflow, "data.lines[0]");
    assert!(
        rejection.detail.contains("unit_amount × quantity"),
        "{rejection}"
    );

    let message = with(usd_order(), "/data/shipping_amount", json!(i64::MAX));
    assert_reason(
        &rejected(&message),
        RejectReason::AmountOverflow,
        "order total",
    );
}

#[test]
fn zero_negative_fractional_string_and_huge_quantities_are_rejected_as_invalid_quantity() {
    for quantity in [
        json!(0),
        json!(-1),
        json!(2.5),
        json!(3.0),
        json!("3"),
        json!(null),
        json!(1_000_001),
        json!(i64::MAX),
        json!(u64::MAX),
    ] {
        assert_reason(
            &rejected(&with(
                usd_order(),
                "/data/lines/1/quantity",
                quantity.clone(),
            )),
            RejectReason::InvalidQuantity,
            "data.lines[1].quantity",
        );
        assert_reason(
            &rejected(&with(usd_shipment(), "/data/items/0/quantity", quantity)),
            RejectReason::InvalidQuantity,
            "data.items[0].quantity",
        );
    }
    let ok = with(usd_order(), "/data/lines/1/quantity", json!(1_000_000));
    assert!(read(&ok).is_ok());
}

#[test]
fn ids_outside_the_id_rules_are_rejected_as_invalid_id() {
    let cases = [
        (with(usd_order(), "/message_id", json!("")), "message_id"),
        (
            with(usd_order(), "/data/order_id", json!("ORD 1001")),
            "data.order_id",
        ),
        (
            with(
                usd_order(),
                "/data/order_id",
                json!("ORD-1001\nforged log line"),
            ),
            "data.order_id",
        ),
        (
            with(usd_order(), "/data/lines/0/line_id", json!("L\u{0}1")),
            "data.lines[0].line_id",
        ),
        (
            with(
                usd_order(),
                "/data/payment/authorization_id",
                json!("x".repeat(65)),
            ),
            "data.payment.authorization_id",
        ),
        (
            with(usd_order(), "/data/payment/provider", json!("Stripe")),
            "data.payment.provider",
        ),
        (
            with(usd_shipment(), "/data/shipment_id", json!("S\u{0406}1")),
            "data.shipment_id",
        ),
        (
            with(jpy_cancellation(), "/data/items/0/line_id", json!("J2\"")),
            "data.items[0].line_id",
        ),
    ];
    for (message, path) in cases {
        let rejection = rejected(&message);
        assert_reason(&rejection, RejectReason::InvalidId, path);
        assert!(!rejection.detail.contains('\n'), "{rejection:?}");
        assert!(!rejection.detail.contains('\0'), "{rejection:?}");
    }
}

#[test]
fn unknown_or_lower_case_currency_is_rejected_as_invalid_currency() {
    for currency in [json!("usd"), json!("XYZ"), json!("US"), json!("XAU")] {
        assert_reason(
            &rejected(&with(usd_order(), "/data/currency", currency.clone())),
            RejectReason::InvalidCurrency,
            "data.currency",
        );
        assert_reason(
            &rejected(&with(usd_order(), "/data/payment/currency", currency)),
            RejectReason::InvalidCurrency,
            "data.payment.currency",
        );
    }
}

#[test]
fn payment_currency_other_than_the_order_currency_is_rejected_as_currency_mismatch() {
    let message = with(usd_order(), "/data/payment/currency", json!("EUR"));
    assert_reason(
        &rejected(&message),
        RejectReason::CurrencyMismatch,
        "data.payment.currency",
    );
    // Omitting the payment currency means the order currency.
    assert!(read(&without(usd_order(), "/data/payment/currency")).is_ok());
}

#[test]
fn orders_and_shipments_that_break_their_own_rules_are_rejected_as_invalid_order() {
    let duplicate_line = with(usd_order(), "/data/lines/2/line_id", json!("L1"));
    let too_many_lines = with(
        usd_order(),
        "/data/lines",
        Value::Array(
            (0..1001)
                .map(|i| {
                    json!({"line_id": format!("L{i}"), "sku": "S", "name": "N", "quantity": 1,
                           "unit_amount": 1, "tax_amount": 0, "discount_amount": 0})
                })
                .collect(),
        ),
    );
    let cases = [
        (duplicate_line, "data.lines[2].line_id"),
        (with(usd_order(), "/data/lines", json!([])), "data.lines"),
        (too_many_lines, "data.lines"),
        (
            with(usd_order(), "/data/lines/1/discount_amount", json!(5001)),
            "data.lines[1].discount_amount",
        ),
        (
            with(usd_order(), "/data/order_discount_amount", json!(11697)),
            "data.order_discount_amount",
        ),
        (
            with(
                usd_order(),
                "/data/payment/expires_at",
                json!("2026-11-21T09:59:58Z"),
            ),
            "data.payment.expires_at",
        ),
        (with(usd_shipment(), "/data/items", json!([])), "data.items"),
        (
            with(usd_shipment(), "/data/items/1/line_id", json!("L1")),
            "data.items[1].line_id",
        ),
        (
            with(jpy_cancellation(), "/data/items", json!([])),
            "data.items",
        ),
    ];
    for (message, path) in cases {
        assert_reason(&rejected(&message), RejectReason::InvalidOrder, path);
    }
}

// ---------------------------------------------------------------------------------------------
// Forward compatibility and what a rejection carries

#[test]
fn unknown_fields_are_ignored_everywhere() {
    let mut message = usd_order();
    message["trace_note"] = json!({"anything": [1, 2.5, null]});
    message["data"]["channel"] = json!("web");
    message["data"]["lines"][0]["colour"] = json!("blue");
    message["data"]["lines"][0]["weight_grams"] = json!(12.5);
    message["data"]["payment"]["network"] = json!("visa");
    let order = order_of(read(&message).unwrap());
    assert_eq!(order, order_of(read(&usd_order()).unwrap()));

    let mut shipment = usd_shipment();
    shipment["data"]["items"][0]["serials"] = json!(["A1", "A2"]);
    shipment["data"]["warehouse"] = json!("DC-3");
    assert_eq!(
        shipment_of(read(&shipment).unwrap()),
        shipment_of(read(&usd_shipment()).unwrap())
    );
}

#[test]
fn optional_fields_may_be_omitted() {
    let mut order = without(usd_order(), "/data/shipping_amount");
    order = without(order, "/data/order_discount_amount");
    order = without(order, "/data/payment/expires_at");
    order = without(order, "/data/payment/currency");
    let order = order_of(read(&order).unwrap());
    assert_eq!(order.shipping_amount().get(), 0);
    assert_eq!(order.order_discount_amount().get(), 0);
    assert_eq!(
        order.total().amount().get(),
        5697 + 480 + 5000 + 400 + 999 + 80
    );

    let shipment = without(
        without(usd_shipment(), "/data/carrier"),
        "/data/tracking_number",
    );
    assert!(!shipment_of(read(&shipment).unwrap()).last_shipment());
}

#[test]
fn a_repeated_key_keeps_its_last_value() {
    let text = serde_json::to_string(&usd_shipment()).unwrap().replace(
        "\"shipment_id\":\"S1\"",
        "\"shipment_id\":\"S0\",\"shipment_id\":\"S1\"",
    );
    assert!(text.contains("\"S0\""));
    let shipment = shipment_of(parse(text.as_bytes(), None).unwrap());
    assert_eq!(shipment.shipment_id().as_str(), "S1");
}

#[test]
fn a_rejection_carries_the_message_id_and_type_when_they_can_be_read() {
    let rejection = rejected(&with(usd_shipment(), "/data/items", json!([])));
    assert_eq!(rejection.message_id.as_deref(), Some("wh-7f3a-0001"));
    assert_eq!(rejection.message_type.as_deref(), Some("shipment.shipped"));
    assert_eq!(
        rejection.to_string(),
        format!("invalid_order: {}", rejection.detail)
    );

    let unreadable = rejected(&with(
        with(usd_shipment(), "/message_id", json!("bad id\n")),
        "/type",
        json!("x\ny"),
    ));
    assert_eq!(unreadable.message_id, None);
    assert_eq!(unreadable.message_type, None);

    let malformed = rejected_bytes(b"{\"message_id\":\"m1\"");
    assert_eq!(malformed.message_id, None);
}

// ---------------------------------------------------------------------------------------------
// No input makes the parser panic

/// Arbitrary JSON values, biased towards the shapes that matter: numbers at the edges,
/// strings that look like ids, amounts or timestamps.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e30..1e30_f64).prop_map(Value::from),
        prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(1),
            json!(1_000_000),
            json!(1_000_001),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(12.0),
            json!(""),
            json!("USD"),
            json!("L1"),
            json!("2026-11-21T10:00:00Z"),
            json!("order.authorized"),
            json!("shipment.shipped"),
        ]),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Edit {
    Replace(Value),
    Remove,
    Insert(String, Value),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        arb_json().prop_map(Edit::Replace),
        Just(Edit::Remove),
        ("[a-z_]{1,12}", arb_json()).prop_map(|(k, v)| Edit::Insert(k, v)),
    ]
}

/// Every JSON pointer in a value, root first.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match value {
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                pointers(v, format!("{at}/{k}"), out);
            }
        }
        _ => {}
    }
}

fn apply(message: &mut Value, target: usize, edit: Edit) {
    let mut all = Vec::new();
    pointers(message, String::new(), &mut all);
    let pointer = &all[target % all.len()];
    match edit {
        Edit::Replace(v) => {
            if let Some(slot) = message.pointer_mut(pointer) {
                *slot = v;
            }
        }
        Edit::Remove => {
            if let Some((parent, key)) = pointer.rsplit_once('/')
                && let Some(parent) = message.pointer_mut(parent)
            {
                match parent {
                    Value::Object(map) => {
                        map.remove(key);
                    }
                    Value::Array(items) => {
                        if let Ok(i) = key.parse::<usize>()
                            && i < items.len()
                        {
                            items.remove(i);
                        }
                    }
                    _ => {}
                }
            }
        }
        Edit::Insert(key, v) => {
            if let Some(Value::Object(map)) = message.pointer_mut(pointer) {
                map.insert(key, v);
            }
        }
    }
}

/// Text fragments that stress a JSON reader when spliced into a valid message.
const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "null",
    "-",
    "0",
    "-0",
    "1e400",
    "12.0",
    "1e3",
    "99999999999999999999999999",
    "-9223372036854775809",
    "9223372036854775808",
    "\\u0000",
    "\\ud800",
    "\u{feff}",
    "\u{0}",
    "\n",
    "true",
    "\"type\":\"x\",",
    "\"quantity\":",
];

fn assert_well_formed(result: &Result<Parsed, WireRejection>) {
    if let Err(rejection) = result {
        assert!(
            !rejection.detail.contains(['\n', '\r', '\0']),
            "detail must stay one line: {rejection:?}"
        );
        assert!(rejection.detail.len() < 1024, "{rejection:?}");
    }
}

fn examples_as_text() -> Vec<String> {
    example_files()
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(
        body in prop::collection::vec(any::<u8>(), 0..512),
        key in prop::option::of("[a-z._]{0,24}"),
    ) {
        assert_well_formed(&parse(&body, key.as_deref()));
    }

    #[test]
    fn parse_never_panics_on_structurally_mutated_examples(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<usize>(), arb_edit()), 1..4),
    ) {
        let files = example_files();
        let text = std::fs::read_to_string(which.get(&files)).unwrap();
        let mut message: Value = serde_json::from_str(&text).unwrap();
        for (target, edit) in edits {
            apply(&mut message, target, edit);
        }
        let body = serde_json::to_vec(&message).unwrap();
        assert_well_formed(&parse(&body, None));
        assert_well_formed(&parse(&body, message.get("type").and_then(Value::as_str)));
    }

    #[test]
    fn parse_never_panics_on_textually_mutated_examples(
        which in any::<prop::sample::Index>(),
        splices in prop::collection::vec(
            (any::<prop::sample::Index>(), 0..8_usize, prop::sample::select(FRAGMENTS)),
            1..5,
        ),
    ) {
        let texts = examples_as_text();
        let mut body = which.get(&texts).clone().into_bytes();
        for (at, cut, fragment) in splices {
            let start = at.index(body.len() + 1);
            let end = (start + cut).min(body.len());
            body.splice(start..end, fragment.bytes());
        }
        assert_well_formed(&parse(&body, None));
    }
}

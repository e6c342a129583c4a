//! The AsyncAPI document (`contract/asyncapi.yaml`): it parses, declares AsyncAPI 3, every
//! `$ref` in it resolves, every message a publisher sends names a JSON Schema file that exists,
//! every example it names is valid against its message's schemas, and what it says about the
//! topology and the rejection reasons matches the code and docs/publishers.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use capture_worker::queue::publisher::{DETAIL_HEADER, ORIGINAL_ROUTING_KEY_HEADER, REASON_HEADER};
use capture_worker::queue::topology::DELIVERY_LIMIT;
use capture_worker::queue::wire::{MessageType, RejectReason};
use serde_json::Value;

use crate::wire::example_files;

fn contract() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contract")
}

fn document() -> Value {
    let text = std::fs::read_to_string(contract().join("asyncapi.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// Reads a JSON or YAML file of the contract folder.
fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    } else {
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

/// What a `$ref` points at: `#/json/pointer` in `doc`, or `relative/file[#/pointer]` next to
/// the document. Panics, naming the reference, when it resolves to nothing.
fn resolve(doc: &Value, reference: &str) -> Value {
    let (file, pointer) = reference.split_once('#').unwrap_or((reference, ""));
    let target = if file.is_empty() {
        doc.clone()
    } else {
        assert!(
            !file.contains("://"),
            "{reference}: only references relative to contract/ are expected"
        );
        load(&contract().join(file))
    };
    target
        .pointer(pointer)
        .unwrap_or_else(|| panic!("$ref {reference:?} points at nothing"))
        .clone()
}

/// Follows a reference object to its target (several hops), or returns the value itself.
fn deref(doc: &Value, value: &Value) -> Value {
    let mut value = value.clone();
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        value = resolve(doc, reference);
    }
    value
}

/// Every `$ref` string in `value`, depth first.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(s)) => out.push(s.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// `value` with every local reference replaced by its target, for a JSON Schema validator
/// that does not know the document it came from.
fn inline(doc: &Value, value: &Value) -> Value {
    match value {
        Value::Object(map) if map.contains_key("$ref") => inline(doc, &deref(doc, value)),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), inline(doc, v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| inline(doc, v)).collect()),
        other => other.clone(),
    }
}

fn messages(doc: &Value) -> Vec<(String, Value)> {
    doc["components"]["messages"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), deref(doc, v)))
        .collect()
}

/// The message's payload schema file, for messages that have one.
fn payload_schema_file(message: &Value) -> Option<PathBuf> {
    let payload = &message["payload"];
    let reference = payload["schema"]["$ref"].as_str()?;
    assert_eq!(
        payload["schemaFormat"], "application/schema+json;version=2020-12",
        "the contract's schemas are JSON Schema draft 2020-12"
    );
    Some(contract().join(reference))
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap()
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn asyncapi_document_declares_version_3_and_every_ref_resolves() {
    let doc = document();
    let version = doc["asyncapi"].as_str().unwrap();
    assert!(version.starts_with("3."), "asyncapi: {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 20, "the document refers to its parts: {all:?}");
    for reference in &all {
        let target = resolve(&doc, reference);
        assert!(!target.is_null(), "$ref {reference:?} resolves to null");
    }
    // Every operation's channel and messages are the document's own, and each message an
    // operation names belongs to its channel (AsyncAPI 3).
    for (name, op) in doc["operations"].as_object().unwrap() {
        let action = op["action"].as_str().unwrap();
        assert!(action == "send" || action == "receive", "{name}: {action}");
        let channel_ref = op["channel"]["$ref"].as_str().unwrap();
        assert!(channel_ref.starts_with("#/channels/"), "{name}");
        for m in op["messages"].as_array().unwrap() {
            let m = m["$ref"].as_str().unwrap();
            assert!(
                m.starts_with(&format!("{channel_ref}/messages/")),
                "{name}: {m} is not a message of {channel_ref}"
            );
        }
    }
}

#[test]
fn every_published_message_references_its_schema_file_and_every_example_is_valid() {
    let doc = document();
    let queue = &doc["channels"]["workerQueue"];
    let mut names = BTreeSet::new();
    let mut examples_named = BTreeSet::new();
    for m in queue["messages"].as_object().unwrap().values() {
        let message = deref(&doc, m);
        let name = message["name"].as_str().unwrap().to_owned();
        let file = payload_schema_file(&message)
            .unwrap_or_else(|| panic!("{name} references no schema file"));
        assert!(file.is_file(), "{name}: {} does not exist", file.display());
        let schema = load(&file);
        assert_eq!(schema["properties"]["type"]["const"], name.as_str());
        let payload = validator(&schema);
        let headers = validator(&inline(&doc, &message["headers"]));

        let examples = message["examples"].as_array().unwrap();
        assert!(!examples.is_empty(), "{name} has no example");
        for example in examples {
            let label = format!("{name} example {}", example["name"]);
            let reference = example["payload"]["$ref"].as_str().unwrap();
            examples_named.insert(contract().join(reference));
            let body = deref(&doc, &example["payload"]);
            assert_eq!(body["type"], name.as_str(), "{label}");
            let found = errors(&payload, &body);
            assert!(found.is_empty(), "{label}: {found:?}");
            if let Some(h) = example.get("headers") {
                let found = errors(&headers, h);
                assert!(found.is_empty(), "{label} headers: {found:?}");
            }
        }
        names.insert(name);
    }
    let types: BTreeSet<String> = MessageType::ALL
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    assert_eq!(
        names, types,
        "the queue carries exactly the contract's types"
    );
    let files: BTreeSet<PathBuf> = example_files().into_iter().collect();
    assert_eq!(
        examples_named, files,
        "every example file is named by the document"
    );

    // A broken example is caught: the check above can fail.
    let message = deref(&doc, &queue["messages"]["shipmentShipped"]);
    let payload = validator(&load(&payload_schema_file(&message).unwrap()));
    let mut body = deref(&doc, &message["examples"][0]["payload"]);
    body["data"]["items"][0]["quantity"] = Value::from(0);
    assert!(!errors(&payload, &body).is_empty());
    let headers = validator(&inline(&doc, &message["headers"]));
    let bad = serde_json::json!({ "traceparent": "not-a-traceparent" });
    assert!(!errors(&headers, &bad).is_empty());
}

#[test]
fn every_message_component_is_on_a_channel_and_the_dead_letter_copy_is_described() {
    let doc = document();
    let on_channels: BTreeSet<String> = doc["channels"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|c| c["messages"].as_object().unwrap().values())
        .map(|m| m["$ref"].as_str().unwrap().to_owned())
        .collect();
    for (key, message) in messages(&doc) {
        assert!(
            on_channels.contains(&format!("#/components/messages/{key}")),
            "{key} is on no channel"
        );
        assert!(message["name"].is_string() && message["contentType"].is_string());
    }

    let dead = deref(&doc, &doc["components"]["messages"]["deadLetter"]);
    let headers = inline(&doc, &dead["headers"]);
    for h in [REASON_HEADER, DETAIL_HEADER, ORIGINAL_ROUTING_KEY_HEADER] {
        assert!(headers["properties"][h].is_object(), "{h} is not described");
    }
    let validator = validator(&headers);
    for example in dead["examples"].as_array().unwrap() {
        let found = errors(&validator, &example["headers"]);
        assert!(found.is_empty(), "{found:?}");
    }
}

#[test]
fn asyncapi_rejection_reasons_are_the_code_s_and_the_publishers_guide_s() {
    let doc = document();
    let listed: BTreeSet<String> = doc["components"]["schemas"]["deadLetterHeaders"]["properties"]
        [REASON_HEADER]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    for r in RejectReason::ALL {
        assert!(listed.contains(r.as_str()), "{} is not listed", r.as_str());
    }
    // The guide's rejection tables: rows of the form "| `code` | …" under "## Rejections".
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/publishers.md"))
            .unwrap();
    let section = guide.split("## Rejections").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    let documented: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(code, _)| code.to_owned())
        .collect();
    assert_eq!(listed, documented);
}

#[test]
fn asyncapi_topology_matches_what_the_worker_declares() {
    let doc = document();
    let queue = &doc["channels"]["workerQueue"];
    let args = &queue["x-amqp-queue-arguments"];
    assert_eq!(args["x-queue-type"], "quorum");
    assert_eq!(args["x-delivery-limit"], DELIVERY_LIMIT);
    assert_eq!(args["x-dead-letter-strategy"], "at-least-once");
    assert_eq!(args["x-overflow"], "reject-publish");
    let dead_letter = args["x-dead-letter-exchange"].as_str().unwrap();
    assert_eq!(
        doc["channels"]["deadLetterExchange"]["bindings"]["amqp"]["exchange"]["name"],
        dead_letter
    );
    let keys: BTreeSet<&str> = queue["x-amqp-bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["exchange"], "fulfillment");
            b["routingKey"].as_str().unwrap()
        })
        .collect();
    let types: BTreeSet<&str> = MessageType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(keys, types);
    let exchange = deref(&doc, &doc["channels"]["shipmentShipped"]["bindings"]);
    assert_eq!(exchange["amqp"]["exchange"]["name"], "fulfillment");
    assert_eq!(exchange["amqp"]["exchange"]["type"], "topic");
    assert_eq!(exchange["amqp"]["exchange"]["durable"], true);
}

/// The outcomes channel carries exactly the outcome event types, each message naming its schema
/// file in contract/v1/outcomes/ and an example there that is valid against it; the exchange is
/// the default `amqp.outcomes_exchange`, a durable topic exchange.
#[test]
fn the_outcomes_channel_names_every_event_type_its_schema_and_a_valid_example() {
    let doc = document();
    let channel = &doc["channels"]["outcomes"];
    let exchange = &channel["bindings"]["amqp"]["exchange"];
    assert_eq!(
        (exchange["name"].as_str(), exchange["type"].as_str()),
        (Some("fulfillment.outcomes"), Some("topic"))
    );
    assert_eq!(exchange["durable"], true);
    let mut names = BTreeSet::new();
    for m in channel["messages"].as_object().unwrap().values() {
        let message = deref(&doc, m);
        let name = message["name"].as_str().unwrap().to_owned();
        let file = payload_schema_file(&message).unwrap();
        assert_eq!(
            file,
            contract().join(format!("./v1/outcomes/{name}.schema.json"))
        );
        let schema = load(&file);
        assert_eq!(schema["properties"]["type"]["const"], name.as_str());
        let payload = validator(&schema);
        let headers = validator(&inline(&doc, &message["headers"]));
        for example in message["examples"].as_array().unwrap() {
            let body = deref(&doc, &example["payload"]);
            assert_eq!(body["type"], name.as_str());
            let found = errors(&payload, &body);
            assert!(found.is_empty(), "{name}: {found:?}");
            let found = errors(&headers, &example["headers"]);
            assert!(found.is_empty(), "{name} headers: {found:?}");
        }
        names.insert(name);
    }
    let types: BTreeSet<String> = crate::outbox::OUTCOME_TYPES
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
    assert_eq!(names, types);
    let config = capture_worker::config::Settings::load_from(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        None,
        vec![],
    )
    .unwrap();
    assert_eq!(config.amqp.outcomes_exchange, "fulfillment.outcomes");
}

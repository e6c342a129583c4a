//! The outcome events section of `order show`: each event of the order (those not yet pruned
//! after `outbox.retention_hours`), in sequence, with its publication state.

use crate::storage::outbox::OrderEvent;

use super::table;

/// The section's text: a heading and one row per event. An event is `published` once the
/// broker confirmed it, `waiting` before, and says how many publishes failed and the last error.
pub fn render(events: &[OrderEvent]) -> String {
    let mut out = String::from("\noutcome events (docs/subscribers.md)\n");
    if events.is_empty() {
        out.push_str("  none\n");
        return out;
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let state = match (&e.published_at, e.publish_failures) {
                (Some(at), _) => format!(
                    "published {}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                ),
                (None, 0) => "waiting".to_owned(),
                (None, n) => format!(
                    "waiting, {n} failed: {}",
                    e.last_error.as_deref().unwrap_or("-")
                ),
            };
            vec![
                e.sequence.to_string(),
                e.event_type.clone(),
                // enough to find it; `--format json` has the whole id
                e.event_id.chars().take(8).collect(),
                e.occurred_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                state,
            ]
        })
        .collect();
    out.push_str(&table(
        &["sequence", "type", "event_id", "occurred_at", "state"],
        &rows,
    ));
    out
}

//! Gr4vy webhooks: signature verification and the capture events the worker acts on, pure.
//!
//! Gr4vy signs every delivery: `X-Gr4vy-Webhook-Signatures` lists hex HMAC-SHA256
//! signatures (comma separated, several while a secret is being rotated) of
//! `{X-Gr4vy-Webhook-Timestamp}.{raw body}`, keyed with the subscription's secret as UTF-8,
//! which is how Gr4vy's SDKs verify them (`verify_webhook`). A delivery whose timestamp is
//! further than [`TOLERANCE_SECONDS`] from now is refused as a replay. The body is one event
//! whose `target` is the resource that changed; per-capture events (`capture.succeeded`,
//! `capture.declined`, `capture.failed`, `capture.pending`) carry the capture, whose `id` is
//! the `capture_id` the capture call answered with. No I/O, no clock (`now` is passed in).

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::provider::http::{MESSAGE_LIMIT, clip};
use crate::provider::{
    NotificationEffect, NotificationSubject, Outcome, WebhookError, WebhookEvent,
};
use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// How far a delivery's timestamp may be from now, in seconds.
pub(super) const TOLERANCE_SECONDS: i64 = 600;

const SIGNATURES: &str = "x-gr4vy-webhook-signatures";
const TIMESTAMP: &str = "x-gr4vy-webhook-timestamp";

#[derive(Debug, Deserialize)]
struct Event {
    name: String,
    target: Target,
}

#[derive(Debug, Deserialize)]
struct Target {
    id: String,
    #[serde(default)]
    transaction_id: Option<String>,
    #[serde(default)]
    external_identifier: Option<String>,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    raw_response_description: Option<String>,
}

/// The signature Gr4vy sends for `body` at `timestamp` (hex).
pub fn sign(secret: &Secret, timestamp: i64, body: &[u8]) -> Option<String> {
    let mut mac = keyed(secret)?;
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// HMAC accepts keys of any length, so this is `None` only in theory.
fn keyed(secret: &Secret) -> Option<HmacSha256> {
    HmacSha256::new_from_slice(secret.expose().as_bytes()).ok()
}

/// Verifies and reads one delivery.
pub(super) fn read(
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
    secret: &Secret,
    now: DateTime<Utc>,
) -> Result<Vec<WebhookEvent>, WebhookError> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let (Some(signatures), Some(timestamp)) = (text(SIGNATURES), text(TIMESTAMP)) else {
        return Err(WebhookError::Unauthenticated(format!(
            "{SIGNATURES} or {TIMESTAMP} is missing"
        )));
    };
    let timestamp: i64 = timestamp.parse().map_err(|_| {
        WebhookError::Unauthenticated(format!("{TIMESTAMP} is not a number of seconds"))
    })?;
    let Some(mut signed) = keyed(secret) else {
        return Err(WebhookError::NotConfigured);
    };
    signed.update(format!("{timestamp}.").as_bytes());
    signed.update(body);
    let matched = signatures.split(',').any(|candidate| {
        hex::decode(candidate.trim()).is_ok_and(|given| signed.clone().verify_slice(&given).is_ok())
    });
    if !matched {
        return Err(WebhookError::Unauthenticated(
            "no signature matches the body".to_owned(),
        ));
    }
    if (now.timestamp() - timestamp).abs() > TOLERANCE_SECONDS {
        return Err(WebhookError::Unauthenticated(format!(
            "the signature's timestamp is more than {TOLERANCE_SECONDS} s from now (a replay?)"
        )));
    }
    let event: Event = serde_json::from_slice(body)
        .map_err(|e| WebhookError::Malformed(clip(&e.to_string(), MESSAGE_LIMIT)))?;
    let target = event.target;
    let message = clip(
        target.raw_response_description.as_deref().unwrap_or(""),
        MESSAGE_LIMIT,
    );
    let (subject, effect) = match event.name.as_str() {
        "capture.succeeded" => (
            NotificationSubject::Capture,
            NotificationEffect::Settle(Outcome::Succeeded {
                reference: Some(target.id.clone()),
            }),
        ),
        "capture.declined" => (
            NotificationSubject::Capture,
            NotificationEffect::Settle(Outcome::Declined {
                code: target
                    .error_code
                    .clone()
                    .unwrap_or_else(|| "declined".to_owned()),
                message,
            }),
        ),
        // An error, not a decline: the order is not latched; an operator looks.
        "capture.failed" => (
            NotificationSubject::Capture,
            NotificationEffect::Settle(Outcome::Failed {
                reason: format!(
                    "Gr4vy reports capture {} failed (an error, not a decline): {} {message}",
                    target.id,
                    target.error_code.as_deref().unwrap_or("no code"),
                ),
            }),
        ),
        "capture.pending" => (NotificationSubject::Capture, NotificationEffect::Ignore),
        _ => (NotificationSubject::Other, NotificationEffect::Ignore),
    };
    Ok(vec![WebhookEvent {
        event_type: event.name,
        reference: target.id,
        authorization_id: target.transaction_id,
        merchant_reference: target.external_identifier,
        subject,
        effect,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn headers(signatures: &str, timestamp: i64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURES, HeaderValue::from_str(signatures).unwrap());
        h.insert(TIMESTAMP, HeaderValue::from(timestamp));
        h
    }

    const BODY: &[u8] = br#"{"type":"event","id":"e1","name":"capture.succeeded","target":{"type":"capture","id":"cap_1","transaction_id":"tx_1","status":"succeeded","external_identifier":"ORD-1/S1"}}"#;

    #[test]
    fn a_signed_capture_event_settles_the_capture_and_any_listed_signature_may_match() {
        let secret = Secret::new("whsec");
        let now = Utc::now();
        let good = sign(&secret, now.timestamp(), BODY).unwrap();
        let events = read(
            &headers(&format!("00ff,{good}"), now.timestamp()),
            BODY,
            &secret,
            now,
        )
        .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reference, "cap_1");
        assert_eq!(events[0].authorization_id.as_deref(), Some("tx_1"));
        assert_eq!(events[0].merchant_reference.as_deref(), Some("ORD-1/S1"));
        assert_eq!(
            events[0].effect,
            NotificationEffect::Settle(Outcome::Succeeded {
                reference: Some("cap_1".into())
            })
        );
    }

    #[test]
    fn a_wrong_key_an_altered_body_or_an_old_timestamp_is_refused() {
        let secret = Secret::new("whsec");
        let now = Utc::now();
        let ts = now.timestamp();
        let bad = sign(&Secret::new("other"), ts, BODY).unwrap();
        assert!(matches!(
            read(&headers(&bad, ts), BODY, &secret, now),
            Err(WebhookError::Unauthenticated(_))
        ));
        let good = sign(&secret, ts, BODY).unwrap();
        assert!(matches!(
            read(&headers(&good, ts), b"{}", &secret, now),
            Err(WebhookError::Unauthenticated(_))
        ));
        let old = ts - TOLERANCE_SECONDS - 1;
        assert!(matches!(
            read(
                &headers(&sign(&secret, old, BODY).unwrap(), old),
                BODY,
                &secret,
                now
            ),
            Err(WebhookError::Unauthenticated(_))
        ));
        assert!(matches!(
            read(&HeaderMap::new(), BODY, &secret, now),
            Err(WebhookError::Unauthenticated(_))
        ));
    }
}

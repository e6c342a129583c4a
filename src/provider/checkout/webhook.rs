//! Checkout.com webhooks: signature verification and the capture and void events the worker
//! acts on, pure.
//!
//! Checkout.com signs each delivery with the webhook's signature key: `Cko-Signature` is the
//! hex HMAC-SHA256 of the raw body. The body is one event (`id`, `type`, `data`), whose
//! `data.action_id` is the action the `202` answer named. Events: `payment_captured`,
//! `payment_capture_declined`, `payment_capture_pending`, `payment_voided`,
//! `payment_void_declined`; the rest are ignored. No I/O.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::provider::http::{MESSAGE_LIMIT, clip};
use crate::provider::{
    NotificationEffect, NotificationSubject, Outcome, WebhookError, WebhookEvent,
};
use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

const SIGNATURE: &str = "cko-signature";

#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Debug, Deserialize)]
struct Data {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    action_id: Option<String>,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    response_code: Option<String>,
    #[serde(default)]
    response_summary: Option<String>,
}

/// The `Cko-Signature` of `body` under `key` (hex).
pub fn sign(key: &Secret, body: &[u8]) -> Option<String> {
    let mut mac = HmacSha256::new_from_slice(key.expose().as_bytes()).ok()?;
    mac.update(body);
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// Verifies and reads one delivery.
pub(super) fn read(
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
    key: &Secret,
) -> Result<Vec<WebhookEvent>, WebhookError> {
    let Some(given) = headers
        .get(SIGNATURE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    else {
        return Err(WebhookError::Unauthenticated(
            "Cko-Signature is missing".into(),
        ));
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(key.expose().as_bytes()) else {
        return Err(WebhookError::NotConfigured);
    };
    mac.update(body);
    let matched = hex::decode(given).is_ok_and(|g| mac.verify_slice(&g).is_ok());
    if !matched {
        return Err(WebhookError::Unauthenticated(
            "Cko-Signature does not match the body".into(),
        ));
    }
    let event: Event = serde_json::from_slice(body)
        .map_err(|e| WebhookError::Malformed(clip(&e.to_string(), MESSAGE_LIMIT)))?;
    let data = event.data.unwrap_or(Data {
        id: None,
        action_id: None,
        reference: None,
        response_code: None,
        response_summary: None,
    });
    let summary = clip(
        data.response_summary.as_deref().unwrap_or(""),
        MESSAGE_LIMIT,
    );
    let reference = data.action_id.clone().unwrap_or_else(|| event.id.clone());
    let (subject, effect) = match event.kind.as_str() {
        "payment_captured" => (
            NotificationSubject::Capture,
            NotificationEffect::Settle(Outcome::Succeeded {
                reference: Some(reference.clone()),
            }),
        ),
        "payment_capture_declined" => (
            NotificationSubject::Capture,
            NotificationEffect::Settle(Outcome::Declined {
                code: data
                    .response_code
                    .clone()
                    .unwrap_or_else(|| "payment_capture_declined".to_owned()),
                message: summary,
            }),
        ),
        "payment_capture_pending" => (NotificationSubject::Capture, NotificationEffect::Ignore),
        "payment_voided" => (
            NotificationSubject::Release,
            NotificationEffect::Settle(Outcome::Succeeded {
                reference: Some(reference.clone()),
            }),
        ),
        "payment_void_declined" => (
            NotificationSubject::Release,
            NotificationEffect::Settle(Outcome::Failed {
                reason: format!(
                    "Checkout.com declined the void of payment {}: {} {summary}",
                    data.id.as_deref().unwrap_or("?"),
                    data.response_code.as_deref().unwrap_or("")
                ),
            }),
        ),
        _ => (NotificationSubject::Other, NotificationEffect::Ignore),
    };
    Ok(vec![WebhookEvent {
        event_type: event.kind,
        reference,
        authorization_id: data.id,
        merchant_reference: data.reference,
        subject,
        effect,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_capture_declined","data":{"id":"pay_1","action_id":"act_1","reference":"ORD-1/S1","response_code":"20051","response_summary":"Insufficient Funds"}}"#;

    fn signed(sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE, HeaderValue::from_str(sig).unwrap());
        h
    }

    #[test]
    fn a_signed_decline_latches_with_the_response_code() {
        let key = Secret::new("sk_webhook");
        let events = read(&signed(&sign(&key, BODY).unwrap()), BODY, &key).unwrap();
        assert_eq!(events[0].reference, "act_1");
        assert_eq!(events[0].authorization_id.as_deref(), Some("pay_1"));
        assert_eq!(
            events[0].effect,
            NotificationEffect::Settle(Outcome::Declined {
                code: "20051".into(),
                message: "Insufficient Funds".into()
            })
        );
    }

    #[test]
    fn a_signature_under_another_key_or_none_is_refused() {
        let key = Secret::new("sk_webhook");
        let other = sign(&Secret::new("nope"), BODY).unwrap();
        assert!(matches!(
            read(&signed(&other), BODY, &key),
            Err(WebhookError::Unauthenticated(_))
        ));
        assert!(matches!(
            read(&HeaderMap::new(), BODY, &key),
            Err(WebhookError::Unauthenticated(_))
        ));
    }
}

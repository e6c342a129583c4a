//! PayPal webhooks, read but never trusted, pure.
//!
//! PayPal signs a delivery with its own certificate: `PAYPAL-TRANSMISSION-SIG` is an
//! RSA-SHA256 signature of `transmission_id|transmission_time|webhook_id|crc32(body)`,
//! verifiable only with the certificate behind `PAYPAL-CERT-URL` (fetched from PayPal) or by
//! asking PayPal (`POST /v1/notifications/verify-webhook-signature`). Neither is possible
//! offline, so the worker never takes an outcome from the body: a capture or void event only
//! makes the named capture due for a read-back now, through the authenticated API. A forged
//! event can therefore cost one early read-back and nothing else. No I/O.

use serde::Deserialize;

use crate::provider::http::{MESSAGE_LIMIT, clip};
use crate::provider::{NotificationEffect, NotificationSubject, WebhookError, WebhookEvent};

#[derive(Debug, Deserialize)]
struct Event {
    event_type: String,
    resource: Resource,
}

#[derive(Debug, Deserialize)]
struct Resource {
    id: String,
    #[serde(default)]
    invoice_id: Option<String>,
    #[serde(default)]
    supplementary_data: Option<Supplementary>,
    #[serde(default)]
    links: Vec<Link>,
}

#[derive(Debug, Deserialize)]
struct Supplementary {
    #[serde(default)]
    related_ids: Option<RelatedIds>,
}

#[derive(Debug, Deserialize)]
struct RelatedIds {
    #[serde(default)]
    authorization_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Link {
    #[serde(default)]
    href: String,
    #[serde(default)]
    rel: String,
}

/// Reads one delivery.
pub(super) fn read(body: &[u8]) -> Result<Vec<WebhookEvent>, WebhookError> {
    let event: Event = serde_json::from_slice(body)
        .map_err(|e| WebhookError::Malformed(clip(&e.to_string(), MESSAGE_LIMIT)))?;
    let resource = event.resource;
    let up_authorization = || {
        resource
            .links
            .iter()
            .filter(|l| l.rel == "up")
            .find_map(|l| l.href.rsplit_once("/authorizations/").map(|(_, id)| id))
            .map(str::to_owned)
    };
    let (subject, authorization_id) = match event.event_type.as_str() {
        "PAYMENT.CAPTURE.COMPLETED"
        | "PAYMENT.CAPTURE.PENDING"
        | "PAYMENT.CAPTURE.DENIED"
        | "PAYMENT.CAPTURE.DECLINED" => (
            NotificationSubject::Capture,
            resource
                .supplementary_data
                .as_ref()
                .and_then(|s| s.related_ids.as_ref())
                .and_then(|r| r.authorization_id.clone())
                .or_else(up_authorization),
        ),
        "PAYMENT.AUTHORIZATION.VOIDED" => (NotificationSubject::Release, Some(resource.id.clone())),
        _ => (NotificationSubject::Other, None),
    };
    let effect = match subject {
        NotificationSubject::Capture | NotificationSubject::Release => NotificationEffect::ReadBack,
        NotificationSubject::Other | NotificationSubject::Lifecycle => NotificationEffect::Ignore,
    };
    Ok(vec![WebhookEvent {
        event_type: event.event_type,
        reference: resource.id,
        authorization_id,
        merchant_reference: resource.invoice_id,
        subject,
        effect,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_event_only_asks_for_a_read_back() {
        let body = br#"{"id":"WH-1","event_type":"PAYMENT.CAPTURE.COMPLETED","resource":{"id":"CAP1","status":"COMPLETED","invoice_id":"ORD-1/S1","links":[{"rel":"up","href":"https://api-m.paypal.com/v2/payments/authorizations/AUTH1"}]}}"#;
        let events = read(body).unwrap();
        assert_eq!(events[0].effect, NotificationEffect::ReadBack);
        assert_eq!(events[0].authorization_id.as_deref(), Some("AUTH1"));
        assert_eq!(events[0].merchant_reference.as_deref(), Some("ORD-1/S1"));
        assert!(matches!(read(b"nope"), Err(WebhookError::Malformed(_))));
    }
}

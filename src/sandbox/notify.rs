//! The sandbox's notifications: what its asynchronous dialects post to the worker's webhook
//! endpoint when an accepted capture settles or a cancel is done, signed as each provider
//! signs (Adyen: HMAC-SHA256 of the item fields with the hex key, in
//! `additionalData.hmacSignature`; Checkout.com: `Cko-Signature`, the hex HMAC-SHA256 of the
//! body; Gr4vy: `X-Gr4vy-Webhook-Signatures`, the hex HMAC-SHA256 of `{timestamp}.{body}`;
//! PayPal: sent unsigned, since its certificate scheme cannot be reproduced).
//!
//! A target (URL and key) is set per dialect. Deliveries are retried with backoff until the
//! worker answers 2xx (as the providers do), and every one is kept so tests can replay or
//! tamper with it. Independent of the adapters: the signing is written out here again.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::Sandbox;
use super::model::Settled;
use crate::domain::{Currency, MinorUnits, Money};

type HmacSha256 = Hmac<Sha256>;

/// Delivery attempts before the sandbox gives up on a notification.
const ATTEMPTS: u32 = 10;

/// Where one dialect's notifications go.
#[derive(Clone)]
pub(super) struct Target {
    pub url: String,
    pub secret: Option<String>,
}

/// One notification as delivered (or attempted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `adyen`, `checkout`, `gr4vy` or `paypal`.
    pub dialect: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The HTTP status of each attempt, 0 for no answer.
    pub statuses: Vec<u16>,
    /// What the notification says: `captured`, `declined`, `cancelled`, `cancel_failed`.
    pub what: String,
    /// The capture's (or cancel's) reference.
    pub reference: String,
}

/// Something to notify.
#[derive(Debug, Clone)]
pub(super) struct Outgoing {
    pub channel: String,
    pub release: bool,
    /// The result of an authorisation adjustment (Adyen's `AUTHORISATION_ADJUSTMENT`), not of
    /// a capture or cancel.
    pub adjustment: bool,
    pub authorization_id: String,
    pub reference: String,
    pub merchant_reference: Option<String>,
    pub account: Option<String>,
    pub amount: i64,
    pub currency: Currency,
    pub is_final: bool,
    pub success: bool,
    /// The decline code of a declined capture.
    pub code: Option<String>,
}

/// The notification of a settled capture, for the dialects that send one.
pub(super) fn for_settled(s: &Settled) -> Option<Outgoing> {
    match s.channel.as_str() {
        "adyen" | "checkout" | "gr4vy" | "paypal" => Some(Outgoing {
            channel: s.channel.clone(),
            release: false,
            adjustment: false,
            authorization_id: s.authorization_id.clone(),
            reference: s.reference.clone(),
            merchant_reference: s.merchant_reference.clone(),
            account: s.account.clone(),
            amount: s.amount,
            currency: s.currency,
            is_final: s.is_final,
            success: s.decline.is_none(),
            code: s.decline.clone(),
        }),
        _ => None,
    }
}

impl Sandbox {
    /// Sends notifications of `dialect` to `url`, signed with `secret` (Adyen: the HMAC key
    /// in hex). Replaces an earlier target.
    pub fn set_notification_target(&self, dialect: &str, url: &str, secret: Option<&str>) {
        if let Ok(mut targets) = self.shared.targets.lock() {
            targets.insert(
                dialect.to_owned(),
                Target {
                    url: url.to_owned(),
                    secret: secret.map(str::to_owned),
                },
            );
        }
    }

    /// Every notification delivered or attempted so far, in order.
    pub fn notifications(&self) -> Vec<Delivery> {
        self.shared
            .deliveries
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    /// Sends each notification to its dialect's target, if one is set, in the background.
    pub(super) fn deliver(&self, outgoing: Vec<Outgoing>) {
        for o in outgoing {
            let target = self
                .shared
                .targets
                .lock()
                .ok()
                .and_then(|t| t.get(&o.channel).cloned());
            let Some(target) = target else {
                tracing::debug!(dialect = %o.channel, reference = %o.reference, "no notification target; not sent");
                continue;
            };
            let Some((headers, body)) = format(&o, target.secret.as_deref()) else {
                tracing::warn!(dialect = %o.channel, "the sandbox cannot sign with the configured notification key");
                continue;
            };
            let what = match (o.release, o.success) {
                _ if o.adjustment && o.success => "adjusted",
                _ if o.adjustment => "adjustment_refused",
                (false, true) => "captured",
                (false, false) => "declined",
                (true, true) => "cancelled",
                (true, false) => "cancel_failed",
            };
            let index = match self.shared.deliveries.lock() {
                Ok(mut d) => {
                    d.push(Delivery {
                        dialect: o.channel.clone(),
                        url: target.url.clone(),
                        headers: headers.clone(),
                        body: body.clone(),
                        statuses: Vec::new(),
                        what: what.to_owned(),
                        reference: o.reference.clone(),
                    });
                    d.len() - 1
                }
                Err(_) => continue,
            };
            let sandbox = self.clone();
            tokio::spawn(async move {
                sandbox.post(index, &target.url, &headers, body).await;
            });
        }
    }

    async fn post(&self, index: usize, url: &str, headers: &[(String, String)], body: String) {
        let Some(client) = &self.shared.client else {
            return;
        };
        let mut wait = Duration::from_millis(50);
        for _ in 0..ATTEMPTS {
            let mut request = client
                .post(url)
                .header("content-type", "application/json")
                .body(body.clone());
            for (name, value) in headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let status = match request.send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            };
            if let Ok(mut d) = self.shared.deliveries.lock()
                && let Some(delivery) = d.get_mut(index)
            {
                delivery.statuses.push(status);
            }
            if (200..300).contains(&status) {
                return;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }
}

fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> Option<String> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    for p in parts {
        mac.update(p);
    }
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// The headers and body of a notification, signed with `secret`.
fn format(o: &Outgoing, secret: Option<&str>) -> Option<(Vec<(String, String)>, String)> {
    let now = Utc::now();
    match o.channel.as_str() {
        "adyen" => {
            let event_code = if o.adjustment {
                "AUTHORISATION_ADJUSTMENT"
            } else if o.release {
                "CANCELLATION"
            } else {
                "CAPTURE"
            };
            let success = if o.success { "true" } else { "false" };
            let account = o.account.clone().unwrap_or_default();
            let merchant_reference = o.merchant_reference.clone().unwrap_or_default();
            let value = if o.release && !o.adjustment {
                0
            } else {
                o.amount
            };
            let data = [
                o.reference.as_str(),
                o.authorization_id.as_str(),
                account.as_str(),
                merchant_reference.as_str(),
                &value.to_string(),
                o.currency.code(),
                event_code,
                success,
            ]
            .join(":");
            let mut item = json!({
                "amount": {"currency": o.currency.code(), "value": value},
                "eventCode": event_code,
                "eventDate": now.to_rfc3339(),
                "merchantAccountCode": account,
                "merchantReference": merchant_reference,
                "originalReference": o.authorization_id,
                "pspReference": o.reference,
                "reason": o.code.clone().unwrap_or_default(),
                "success": success,
            });
            if let Some(key) = secret {
                let raw = hex::decode(key.trim()).ok()?;
                let mut mac = HmacSha256::new_from_slice(&raw).ok()?;
                mac.update(data.as_bytes());
                item["additionalData"] =
                    json!({"hmacSignature": BASE64.encode(mac.finalize().into_bytes())});
            }
            let body = json!({
                "live": "false",
                "notificationItems": [{"NotificationRequestItem": item}],
            });
            Some((Vec::new(), body.to_string()))
        }
        "checkout" => {
            let kind = match (o.release, o.success) {
                (false, true) => "payment_captured",
                (false, false) => "payment_capture_declined",
                (true, true) => "payment_voided",
                (true, false) => "payment_void_declined",
            };
            let (code, summary) = if o.success {
                ("10000".to_owned(), "Approved".to_owned())
            } else {
                (
                    "20051".to_owned(),
                    o.code.clone().unwrap_or_else(|| "Declined".to_owned()),
                )
            };
            let body = json!({
                "id": format!("evt_{}", &o.reference.trim_start_matches("act_")),
                "type": kind,
                "version": "1.0.33",
                "created_on": now.to_rfc3339(),
                "data": {
                    "id": o.authorization_id,
                    "action_id": o.reference,
                    "reference": o.merchant_reference,
                    "amount": o.amount,
                    "currency": o.currency.code(),
                    "response_code": code,
                    "response_summary": summary,
                },
            })
            .to_string();
            let mut headers = Vec::new();
            if let Some(key) = secret {
                headers.push((
                    "cko-signature".to_owned(),
                    hmac_hex(key.as_bytes(), &[body.as_bytes()])?,
                ));
            }
            Some((headers, body))
        }
        "gr4vy" => {
            let (name, status) = if o.success {
                ("capture.succeeded", "succeeded")
            } else {
                ("capture.declined", "declined")
            };
            let body = json!({
                "type": "event",
                "id": format!("evt-{}", o.reference),
                "name": name,
                "created_at": now.to_rfc3339(),
                "merchant_account_id": "default",
                "target": {
                    "type": "capture",
                    "id": o.reference,
                    "transaction_id": o.authorization_id,
                    "status": status,
                    "amount": o.amount,
                    "currency": o.currency.code(),
                    "final": o.is_final,
                    "external_identifier": o.merchant_reference,
                    "error_code": o.code,
                },
            })
            .to_string();
            let timestamp = now.timestamp();
            let mut headers = vec![
                (
                    "x-gr4vy-webhook-id".to_owned(),
                    format!("evt-{}", o.reference),
                ),
                (
                    "x-gr4vy-webhook-timestamp".to_owned(),
                    timestamp.to_string(),
                ),
            ];
            if let Some(key) = secret {
                headers.push((
                    "x-gr4vy-webhook-signatures".to_owned(),
                    hmac_hex(
                        key.as_bytes(),
                        &[format!("{timestamp}.").as_bytes(), body.as_bytes()],
                    )?,
                ));
            }
            Some((headers, body))
        }
        "paypal" => {
            let (event_type, status) = if o.success {
                ("PAYMENT.CAPTURE.COMPLETED", "COMPLETED")
            } else {
                ("PAYMENT.CAPTURE.DECLINED", "DECLINED")
            };
            let value = MinorUnits::new(o.amount)
                .map(|m| Money::new(m, o.currency).to_major_string())
                .unwrap_or_default();
            let body = json!({
                "id": format!("WH-{}", o.reference),
                "event_type": event_type,
                "resource_type": "capture",
                "create_time": now.to_rfc3339(),
                "resource": {
                    "id": o.reference,
                    "status": status,
                    "invoice_id": o.merchant_reference,
                    "final_capture": o.is_final,
                    "amount": {"currency_code": o.currency.code(), "value": value},
                    "supplementary_data": {"related_ids": {"authorization_id": o.authorization_id}},
                },
            })
            .to_string();
            let headers = vec![
                (
                    "paypal-transmission-id".to_owned(),
                    format!("sbx-{}", o.reference),
                ),
                ("paypal-transmission-time".to_owned(), now.to_rfc3339()),
                ("paypal-auth-algo".to_owned(), "SHA256withRSA".to_owned()),
                (
                    "paypal-transmission-sig".to_owned(),
                    "unsigned-by-the-sandbox".to_owned(),
                ),
            ];
            Some((headers, body))
        }
        _ => None,
    }
}

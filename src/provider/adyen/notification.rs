//! Adyen standard notifications (webhooks): parsing and HMAC verification, pure.
//!
//! Owns the notification wire shape and the signature check, so the worker's webhook
//! endpoint only has to hand over the body and the account's HMAC key and record what comes
//! back. Each `NotificationRequestItem` is signed with HMAC-SHA256 over
//! `pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success`
//! (empty strings for absent fields), keyed with the hex-decoded HMAC key, and carries the
//! base64 result in `additionalData.hmacSignature`. A batch with one bad or missing signature
//! is refused whole. No I/O, no clock.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::domain::{Currency, Money};
use crate::provider::Outcome;
use crate::provider::http::{MESSAGE_LIMIT, clip};
use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Why a notification body was refused. Never contains the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("the notification body is not an Adyen notification: {0}")]
    Malformed(String),
    #[error("the HMAC key is not hex; configure the key exactly as Adyen shows it")]
    BadKey,
    #[error("notification item {psp_reference} carries no HMAC signature")]
    MissingSignature { psp_reference: String },
    #[error("notification item {psp_reference} has a signature that does not match")]
    BadSignature { psp_reference: String },
}

/// The events the worker acts on; everything else is recorded and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationEvent {
    /// `CAPTURE`: the capture's result (`success`).
    Capture,
    /// `CAPTURE_FAILED`: the card scheme rejected a capture Adyen had accepted.
    CaptureFailed,
    /// `CANCELLATION`: the result of a cancel (the release of the rest).
    Cancellation,
    /// `AUTHORISATION_ADJUSTMENT`: the result of an `/amountUpdates` request (an increment or
    /// an extension of the hold; `success`).
    AuthorisationAdjustment,
    /// Any other event code (refunds, chargebacks, authorisations…).
    Other,
}

/// One verified notification item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub event_code: String,
    pub event: NotificationEvent,
    /// Adyen's reference of the modification (the capture or cancel), as the capture call's
    /// `received` answer gave it.
    pub psp_reference: String,
    /// The payment's `pspReference`: the authorization id.
    pub original_reference: Option<String>,
    pub merchant_account: String,
    /// The `reference` the worker sent (`order/cause`).
    pub merchant_reference: String,
    pub amount: Option<Money>,
    pub success: bool,
    pub reason: Option<String>,
    pub live: bool,
}

impl Notification {
    /// What this notification says about the call it answers, for the events the worker
    /// acts on. The deduplication key is `(psp_reference, event_code)`.
    pub fn outcome(&self) -> Option<Outcome> {
        let reason = self.reason.clone().unwrap_or_default();
        match (self.event, self.success) {
            (NotificationEvent::Capture | NotificationEvent::Cancellation, true) => {
                Some(Outcome::Succeeded {
                    reference: Some(self.psp_reference.clone()),
                })
            }
            (NotificationEvent::Capture, false) => Some(Outcome::Declined {
                code: "CAPTURE".to_owned(),
                message: reason,
            }),
            // The webhook carries no reason (Adyen's failure-reasons page); the latch holds
            // the order until someone looks, as for any decline.
            (NotificationEvent::CaptureFailed, _) => Some(Outcome::Declined {
                code: "CAPTURE_FAILED".to_owned(),
                message: if reason.is_empty() {
                    "the card scheme rejected the capture".to_owned()
                } else {
                    reason
                },
            }),
            (NotificationEvent::Cancellation, false) => Some(Outcome::Failed {
                reason: format!("Adyen could not cancel the rest of the authorization: {reason}"),
            }),
            (NotificationEvent::AuthorisationAdjustment, true) => Some(Outcome::Succeeded {
                reference: Some(self.psp_reference.clone()),
            }),
            (NotificationEvent::AuthorisationAdjustment, false) => Some(Outcome::Declined {
                code: "AUTHORISATION_ADJUSTMENT".to_owned(),
                message: if reason.is_empty() {
                    "the issuer refused the authorisation adjustment".to_owned()
                } else {
                    reason
                },
            }),
            (NotificationEvent::Other, _) => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    live: Option<String>,
    notification_items: Vec<ItemWrapper>,
}

#[derive(Debug, Deserialize)]
struct ItemWrapper {
    #[serde(rename = "NotificationRequestItem")]
    item: Item,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    #[serde(default)]
    additional_data: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    amount: Option<ItemAmount>,
    event_code: String,
    psp_reference: String,
    #[serde(default)]
    original_reference: Option<String>,
    #[serde(default)]
    merchant_account_code: Option<String>,
    #[serde(default)]
    merchant_reference: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    /// `"true"` or `"false"`, as a string.
    success: String,
}

#[derive(Debug, Deserialize)]
struct ItemAmount {
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    value: Option<i64>,
}

impl Item {
    /// The string Adyen signs.
    fn signed_data(&self) -> String {
        let (value, currency) = match &self.amount {
            Some(a) => (
                a.value.map(|v| v.to_string()).unwrap_or_default(),
                a.currency.clone().unwrap_or_default(),
            ),
            None => (String::new(), String::new()),
        };
        [
            self.psp_reference.as_str(),
            self.original_reference.as_deref().unwrap_or(""),
            self.merchant_account_code.as_deref().unwrap_or(""),
            self.merchant_reference.as_deref().unwrap_or(""),
            &value,
            &currency,
            &self.event_code,
            &self.success,
        ]
        .join(":")
    }

    fn signature(&self) -> Option<&str> {
        self.additional_data
            .as_ref()?
            .get("hmacSignature")?
            .as_str()
    }
}

/// The HMAC-SHA256 signature of `data` under the hex `key`, base64: what Adyen puts in
/// `additionalData.hmacSignature`.
pub fn sign(data: &str, key: &Secret) -> Result<String, NotificationError> {
    let mut mac = keyed(key)?;
    mac.update(data.as_bytes());
    Ok(BASE64.encode(mac.finalize().into_bytes()))
}

fn keyed(key: &Secret) -> Result<HmacSha256, NotificationError> {
    let raw = hex::decode(key.expose().trim()).map_err(|_| NotificationError::BadKey)?;
    HmacSha256::new_from_slice(&raw).map_err(|_| NotificationError::BadKey)
}

/// Parses a notification body and verifies every item's signature with `hmac_key` (the
/// account's HMAC key in hex). Any malformed, unsigned or wrongly signed item refuses the
/// whole batch: answer it with an error status so Adyen sends it again.
pub fn parse_notification(
    body: &[u8],
    hmac_key: &Secret,
) -> Result<Vec<Notification>, NotificationError> {
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|e| NotificationError::Malformed(clip(&e.to_string(), MESSAGE_LIMIT)))?;
    let live = envelope.live.as_deref() == Some("true");
    let mut out = Vec::with_capacity(envelope.notification_items.len());
    for ItemWrapper { item } in envelope.notification_items {
        let Some(signature) = item.signature() else {
            return Err(NotificationError::MissingSignature {
                psp_reference: item.psp_reference,
            });
        };
        let given =
            BASE64
                .decode(signature.trim())
                .map_err(|_| NotificationError::BadSignature {
                    psp_reference: item.psp_reference.clone(),
                })?;
        let mut mac = keyed(hmac_key)?;
        mac.update(item.signed_data().as_bytes());
        // Constant-time comparison.
        if mac.verify_slice(&given).is_err() {
            return Err(NotificationError::BadSignature {
                psp_reference: item.psp_reference,
            });
        }
        let success = match item.success.as_str() {
            "true" => true,
            "false" => false,
            other => {
                return Err(NotificationError::Malformed(format!(
                    "item {} has success {:?}; expected \"true\" or \"false\"",
                    item.psp_reference,
                    clip(other, 20)
                )));
            }
        };
        let amount = match &item.amount {
            Some(ItemAmount {
                currency: Some(c),
                value: Some(v),
            }) => {
                let currency = Currency::parse(c).map_err(|e| {
                    NotificationError::Malformed(format!("item {}: {e}", item.psp_reference))
                })?;
                let units = super::wire::from_adyen_value(*v, currency).map_err(|e| {
                    NotificationError::Malformed(format!("item {}: {e}", item.psp_reference))
                })?;
                Some(Money::new(units, currency))
            }
            Some(_) | None => None,
        };
        let event = match item.event_code.as_str() {
            "CAPTURE" => NotificationEvent::Capture,
            "CAPTURE_FAILED" => NotificationEvent::CaptureFailed,
            "CANCELLATION" => NotificationEvent::Cancellation,
            "AUTHORISATION_ADJUSTMENT" => NotificationEvent::AuthorisationAdjustment,
            _ => NotificationEvent::Other,
        };
        out.push(Notification {
            event,
            event_code: item.event_code,
            psp_reference: item.psp_reference,
            original_reference: item.original_reference.filter(|r| !r.is_empty()),
            merchant_account: item.merchant_account_code.unwrap_or_default(),
            merchant_reference: item.merchant_reference.unwrap_or_default(),
            amount,
            success,
            reason: item
                .reason
                .filter(|r| !r.is_empty())
                .map(|r| clip(&r, MESSAGE_LIMIT)),
            live,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adyen's published sample key and signature (its API libraries test the same pair).
    const SAMPLE_KEY: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";

    #[test]
    fn signs_adyens_sample_item_as_adyen_does() {
        let data =
            "7914073381342284::TestMerchant:TestPayment-1407325143704:1130:EUR:AUTHORISATION:true";
        assert_eq!(
            sign(data, &Secret::new(SAMPLE_KEY)).unwrap(),
            "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0="
        );
    }

    #[test]
    fn adyens_sample_notification_verifies_and_is_not_one_the_worker_acts_on() {
        let body = br#"{"live":"false","notificationItems":[{"NotificationRequestItem":{
            "additionalData":{"hmacSignature":"coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0="},
            "amount":{"value":1130,"currency":"EUR"},"pspReference":"7914073381342284",
            "eventCode":"AUTHORISATION","merchantAccountCode":"TestMerchant",
            "merchantReference":"TestPayment-1407325143704","paymentMethod":"visa","success":"true"}}]}"#;
        let items = parse_notification(body, &Secret::new(SAMPLE_KEY)).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].event, NotificationEvent::Other);
        assert_eq!(items[0].outcome(), None);
        assert!(!items[0].live);
    }
}

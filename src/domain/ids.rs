//! Identifiers: bounded, printable, parsed once at the edge; and the idempotency key derived
//! from them.
//!
//! An id is 1 to 64 characters from `A–Z a–z 0–9 - _ . : / # @ +`: enough for every order,
//! shipment and provider reference format we know, and never whitespace, quotes or control
//! characters that would corrupt a header, a log line or a SQL literal. Pure: no I/O.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Longest id accepted, in bytes (all accepted characters are one byte).
pub const MAX_ID_LEN: usize = 64;

/// An id that failed the length or character rules.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "invalid {kind} {value:?}: {problem}; ids are 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 - _ . : / # @ +"
)]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
    pub problem: &'static str,
}

fn check_id(kind: &'static str, value: &str) -> Result<(), InvalidId> {
    let err = |problem| InvalidId {
        kind,
        value: value.chars().take(MAX_ID_LEN + 8).collect(),
        problem,
    };
    if value.is_empty() {
        return Err(err("it is empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(err("it is too long"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || "-_.:/#@+".contains(c);
    if !value.chars().all(ok) {
        return Err(err("it contains a character outside the allowed set"));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses an id, enforcing the length and character rules of this module.
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                check_id($kind, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// The merchant's order id, as sent by checkout.
    OrderId,
    "order_id"
);
id_type!(
    /// A line of an order, unique within the order.
    LineId,
    "line_id"
);
id_type!(
    /// The warehouse's id for one parcel; unique per order and stable across redelivery.
    ShipmentId,
    "shipment_id"
);
id_type!(
    /// The provider's id of the authorization (PaymentIntent, transaction, pspReference…).
    AuthorizationId,
    "authorization_id"
);
id_type!(
    /// The id of a message or a cancellation; the dedupe key for events that have no other id.
    EventId,
    "message_id"
);

/// The name of a payment provider as configured (`stripe`, `gr4vy`, `sandbox`…): lower-case
/// letters, digits, `-` and `_`, 1 to 32 characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProviderName(String);

impl ProviderName {
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidId> {
        let value = value.into();
        let ok = !value.is_empty()
            && value.len() <= 32
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok {
            Ok(ProviderName(value))
        } else {
            Err(InvalidId {
                kind: "provider",
                value: value.chars().take(40).collect(),
                problem: "a provider name is 1 to 32 characters of a-z 0-9 - _",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProviderName {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<ProviderName> for String {
    fn from(value: ProviderName) -> String {
        value.0
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProviderName({:?})", self.0)
    }
}

/// The idempotency key of one capture request (P3).
///
/// Derived only from stable facts: the provider, the authorization, the event that caused the
/// capture (a shipment id, or the id of the cancellation that completed the order) and a
/// generation that starts at 0 and moves on only after the provider has shown that the
/// earlier key captured nothing. The same inputs give the same key in every process and after
/// every restart. 52 characters, within every provider's limit (Adyen: 64).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn derive(
        provider: &ProviderName,
        authorization: &AuthorizationId,
        cause: &str,
        generation: u32,
    ) -> Self {
        let mut h = Sha256::new();
        // Length-prefixed fields, so ("ab","c") and ("a","bc") never collide.
        for part in [
            provider.as_str(),
            authorization.as_str(),
            cause,
            &generation.to_string(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let digest = h.finalize();
        let hex: String = digest.iter().take(24).map(|b| format!("{b:02x}")).collect();
        IdempotencyKey(format!("cw1-{hex}"))
    }

    /// Re-creates a key read back from storage; accepts only the shape `derive` produces.
    pub fn from_stored(value: &str) -> Result<Self, InvalidId> {
        let ok = value.len() == 52
            && value.starts_with("cw1-")
            && value[4..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        if ok {
            Ok(IdempotencyKey(value.to_owned()))
        } else {
            Err(InvalidId {
                kind: "idempotency_key",
                value: value.chars().take(60).collect(),
                problem: "a stored key is 'cw1-' followed by 48 lower-case hex digits",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_enforce_length_and_characters() {
        assert!(OrderId::parse("ORD-2026/11#7").is_ok());
        assert!(OrderId::parse("").is_err());
        assert!(OrderId::parse("a".repeat(65)).is_err());
        assert!(OrderId::parse("a".repeat(64)).is_ok());
        assert!(OrderId::parse("has space").is_err());
        assert!(OrderId::parse("quote\"").is_err());
        assert!(OrderId::parse("é").is_err());
        assert!(ProviderName::parse("stripe").is_ok());
        assert!(ProviderName::parse("Stripe").is_err());
    }

    #[test]
    fn keys_are_deterministic_distinct_and_round_trip() {
        let p = ProviderName::parse("stripe").unwrap();
        let a = AuthorizationId::parse("pi_123").unwrap();
        let k = IdempotencyKey::derive(&p, &a, "S1", 0);
        assert_eq!(k, IdempotencyKey::derive(&p, &a, "S1", 0));
        assert_ne!(k, IdempotencyKey::derive(&p, &a, "S1", 1));
        assert_ne!(k, IdempotencyKey::derive(&p, &a, "S2", 0));
        assert_eq!(k.as_str().len(), 52);
        assert_eq!(IdempotencyKey::from_stored(k.as_str()), Ok(k));
        assert!(IdempotencyKey::from_stored("cw1-xyz").is_err());
    }
}

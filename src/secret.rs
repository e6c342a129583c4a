//! A secret value (a connection string, an API key, a webhook signing key): printed, logged and
//! serialized as `[redacted]`, read with [`Secret::expose`] only where it is sent.
//!
//! Its own module so that the adapters which need a credential take it from here, not from the
//! settings (`config`). Imports nothing of the crate.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret value. Never printed, logged or serialized in clear.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for the one place that sends it (a connection string, an auth header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

//! The orchestrator's wire format: the capture transaction request and answer, and the
//! error body.
//!
//! Owns every field name of the transactions API (`POST /v1/transactions`, ids like `txn_…`).
//! Nothing here leaves the `orchestrator` folder; `mod.rs` decides what an answer means.
//! No I/O.

use serde::{Deserialize, Serialize};

use crate::provider::CaptureRequest;
use crate::provider::http::{MESSAGE_LIMIT, clip};

/// The body of `POST /v1/transactions` for a capture. `amount` is always sent: without it
/// the orchestrator captures the full authorized amount.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CaptureBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    transaction_id: &'a str,
    /// Minor units.
    amount: i64,
}

impl<'a> CaptureBody<'a> {
    pub(super) fn from_request(request: &'a CaptureRequest) -> Self {
        CaptureBody {
            kind: "capture",
            transaction_id: request.authorization_id.as_str(),
            amount: request.amount.amount().get(),
        }
    }
}

/// The new capture transaction.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Transaction {
    pub(super) id: String,
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) amount: Option<i64>,
    #[serde(default)]
    pub(super) currency: Option<String>,
    #[serde(default)]
    pub(super) original_transaction_id: Option<String>,
    #[serde(default)]
    pub(super) message: Option<String>,
    #[serde(default)]
    pub(super) authorization: Option<ProcessorAuthorization>,
}

/// The processor's answer inside the transaction.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProcessorAuthorization {
    #[serde(default)]
    pub(super) status: Option<String>,
    #[serde(default)]
    pub(super) processor_code: Option<String>,
    #[serde(default)]
    pub(super) processor_message: Option<String>,
}

/// The processor authorization `status`: `A` (approved) is the one documented value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ApprovalStatus {
    Approved,
    Unrecognized,
}

impl Transaction {
    pub(super) fn approval(&self) -> ApprovalStatus {
        match self
            .authorization
            .as_ref()
            .and_then(|a| a.status.as_deref())
        {
            Some("A") => ApprovalStatus::Approved,
            Some(_) | None => ApprovalStatus::Unrecognized,
        }
    }

    /// `status processorCode: processorMessage (message)` for reasons.
    pub(super) fn describe(&self) -> String {
        let auth = self.authorization.as_ref();
        let text = format!(
            "status {:?}, processor code {:?}, processor message {:?}, message {:?}",
            auth.and_then(|a| a.status.as_deref()).unwrap_or(""),
            auth.and_then(|a| a.processor_code.as_deref()).unwrap_or(""),
            auth.and_then(|a| a.processor_message.as_deref())
                .unwrap_or(""),
            self.message.as_deref().unwrap_or(""),
        );
        clip(&text, MESSAGE_LIMIT)
    }

    /// The processor's code, for the attempts table.
    pub(super) fn processor_code(&self) -> Option<String> {
        self.authorization.as_ref()?.processor_code.clone()
    }
}

/// An error body, as far as it can be read: a `code` and a `message`.
pub(super) use crate::provider::http::CodeAndMessage as ApiError;

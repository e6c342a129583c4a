//! The orchestrator adapter: captures through a payment-orchestration transactions API
//! (`POST /v1/transactions`, ids like `txn_…`) that routes them to the merchant's processor.
//!
//! Owns the HTTP shape of that API: bearer API-key auth, the capture transaction request and
//! the routing of every answer to one [`Outcome`]. The wire structs live in `wire.rs` and
//! never leave this folder. Imports `domain` and the provider boundary only. The API key is
//! held as a sensitive header value and never reaches a log field, an error or a `Debug`
//! string.
//!
//! Rules this adapter encodes: the answer is the new capture transaction, synchronous;
//! `authorization.status` `A` is approved, and the transaction must be a `capture` of our
//! authorization for our amount, or the outcome is unknown. Whether a follow-on capture is
//! allowed depends on the merchant's processor connection, so the capture count comes from
//! the merchant's settings (single capture by default). No idempotency header and no void or
//! read-back are documented: a capture whose answer was lost is never resent blindly (the
//! outcome is `Unknown` with the key marked spent, and the read-back that would settle it
//! reports that it does not exist, so the capture goes to an operator), and the release call
//! sends nothing and asks for an operator.

mod wire;

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use tracing::Instrument as _;

use crate::domain::{AuthorizationId, Capabilities, ProviderName};
use crate::provider::http::{self, Api, Credential, ProviderSetupError, Refusal, Replay, Shape};
use crate::provider::{
    AuthorizationSnapshot, CallResult, CaptureRequest, LookupError, Outcome, PaymentProvider,
    ReleaseRequest,
};
use crate::secret::Secret;

use self::wire::{ApiError, ApprovalStatus, CaptureBody, Transaction};

/// Bearer API-key auth, `x-request-id`, and no idempotency header: a resend may apply the
/// capture twice.
static SHAPE: Shape = Shape {
    kind: "orchestrator",
    example_url: "https://api.orchestrator.example",
    credential: Credential::Bearer("API key"),
    request_id: "x-request-id",
    replay: Replay::Unprotected,
};

/// One merchant on the orchestrator, reached over HTTPS.
#[derive(Debug)]
pub struct OrchestratorProvider {
    /// `Authorization: Bearer <API key>` on every call.
    api: Api,
    max_captures: Option<u32>,
}

impl OrchestratorProvider {
    /// Builds the adapter. `api_key` is sent as `Authorization: Bearer <key>`.
    /// `max_captures` is what the merchant's processor connection allows: `None` or 1 is a
    /// single capture, `n` allows up to `n`.
    pub fn new(
        name: ProviderName,
        base_url: String,
        api_key: Option<Secret>,
        max_captures: Option<u32>,
        timeout: Duration,
    ) -> Result<Self, ProviderSetupError> {
        Ok(OrchestratorProvider {
            api: Api::new(&name, &SHAPE, base_url, api_key.as_ref(), timeout)?,
            max_captures,
        })
    }
}

#[async_trait]
impl PaymentProvider for OrchestratorProvider {
    fn name(&self) -> &str {
        self.api.name().as_str()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::orchestrator(self.max_captures)
    }

    async fn capture(&self, request: &CaptureRequest) -> CallResult {
        let what = format!("capture of transaction {}", request.authorization_id);
        self.api
            .post(
                &what,
                &["v1", "transactions"],
                |builder| builder.json(&CaptureBody::from_request(request)),
                |status, headers, body| answered(&what, request, status, headers, body),
            )
            .instrument(self.api.capture_span(request))
            .await
    }

    /// Sends nothing: the transactions API documents no void. The authorization lapses at its
    /// deadline, or an operator releases it in the orchestrator's dashboard.
    async fn release(&self, request: &ReleaseRequest) -> CallResult {
        let result = CallResult {
            outcome: Outcome::Failed {
                reason: format!(
                    "release of transaction {}: the orchestrator's transactions API documents no void; release it in the orchestrator's dashboard (or let it lapse)",
                    request.authorization_id
                ),
            },
            http_status: None,
            provider_code: None,
            provider_request_id: None,
            latency: Duration::ZERO,
        };
        tracing::warn!(
            event = "release_not_supported",
            provider = %self.api.name(),
            authorization_id = %request.authorization_id,
            order_id = %request.order_id,
            "the orchestrator has no documented void; the release needs an operator"
        );
        result
    }

    /// Reports that no read-back is documented, so an unknown capture goes to an operator
    /// rather than being sent again without an idempotency key.
    /// No read-back is documented (the outcome arrives by notification or in the dashboard).
    fn offers_read_back(&self) -> bool {
        false
    }

    async fn lookup(
        &self,
        authorization_id: &AuthorizationId,
    ) -> Result<AuthorizationSnapshot, LookupError> {
        Err(LookupError::Permanent {
            authorization_id: authorization_id.to_string(),
            reason: "the orchestrator's transactions API documents no read-back of an authorization's captures; check the transaction in the orchestrator's dashboard before any resend".to_owned(),
        })
    }
}

/// Routes an answer to a capture.
fn answered(
    what: &str,
    request: &CaptureRequest,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> (Outcome, Option<String>) {
    if !status.is_success() {
        return refused(what, status, headers, body);
    }
    let transaction: Transaction =
        match http::decode(what, status, body, "transaction", SHAPE.replay) {
            Ok(transaction) => transaction,
            Err(unreadable) => return (unreadable, None),
        };
    let code = transaction.processor_code();
    let currency = request.amount.currency();
    let expected_currency = currency.code();
    // Anything but a capture of our authorization for our amount would corrupt the ledger if
    // taken as success: let a person look.
    let mismatch = if transaction.kind != "capture" {
        Some(format!("a {:?} transaction", transaction.kind))
    } else if transaction.original_transaction_id.as_deref()
        != Some(request.authorization_id.as_str())
    {
        Some(format!(
            "a capture of {:?}",
            transaction.original_transaction_id
        ))
    } else if transaction.amount != Some(request.amount.amount().get()) {
        Some(format!("a capture of amount {:?}", transaction.amount))
    } else if transaction
        .currency
        .as_deref()
        .is_some_and(|c| !c.eq_ignore_ascii_case(expected_currency))
    {
        Some(format!("a capture in {:?}", transaction.currency))
    } else {
        None
    };
    if let Some(got) = mismatch {
        return (
            Outcome::Unknown {
                reason: format!(
                    "{what}: asked for a capture of {} {} but the answer is {got} (transaction {}); reconcile by hand",
                    request.amount.amount(),
                    expected_currency,
                    transaction.id
                ),
                key_spent: true,
            },
            code,
        );
    }
    let outcome = match transaction.approval() {
        ApprovalStatus::Approved => Outcome::Succeeded {
            reference: Some(transaction.id),
        },
        ApprovalStatus::Unrecognized => Outcome::Failed {
            reason: format!(
                "{what}: capture transaction {} was not approved: {}",
                transaction.id,
                transaction.describe()
            ),
        },
    };
    (outcome, code)
}

/// Routes a non-2xx answer. No idempotency key protects a resend, so a server error is
/// `Unknown` (read back first), never a plain retry.
fn refused(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> (Outcome, Option<String>) {
    let error = ApiError::parse(body);
    let code = error.as_ref().and_then(|e| e.code.clone());
    let r = Refusal::new(what, headers, describe(status, error.as_ref()));
    let outcome = match status.as_u16() {
        429 => r.retry("rate limited"),
        500..=599 => r.unknown(
            "server error; without an idempotency key the capture may have been applied",
        ),
        400 | 422 => r.failed(
            "the orchestrator refused the capture (a follow-on capture the connection does not allow, or more than authorized)",
        ),
        401 => r.failed("the orchestrator refused the API key (authentication)"),
        403 => r.failed("the API key may not do this (permission)"),
        404 => r.failed("no such transaction for this merchant"),
        409 => r.failed("the transaction is not in a state that allows a capture"),
        _ => r.failed("unexpected HTTP status"),
    };
    (outcome, code)
}

fn describe(status: StatusCode, error: Option<&ApiError>) -> String {
    ApiError::detail(status, error, "an orchestrator")
}

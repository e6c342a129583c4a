//! The Hellgate adapter: payment capture, void and read-back over HTTP (Commerce API v2).
//!
//! Owns the HTTP shape of Hellgate's API (reference/providers.md §6): the `X-API-Key` header,
//! the capture body, and the routing of every answer to one [`Outcome`]. The wire structs live
//! in `wire.rs` and never leave this folder. Imports `domain` and the provider boundary only.
//! The API key is held as a sensitive header value and never reaches a log field, an error or
//! a `Debug` string.
//!
//! Hellgate rules this adapter encodes: one capture per payment (the capture plan sends it
//! when the order completes, or at the authorization deadline, for what shipped); the outcome
//! is asynchronous (`capturing` → `captured` or `failed`). Hellgate documents no idempotency
//! header, so a capture whose answer was lost is never simply sent again: the outcome is
//! `Unknown` with the key marked spent, and the worker reads the payment back (`lookup`)
//! before anything is resent. Server errors are treated the same way, since the capture may
//! have been applied before the error.

mod wire;

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use tracing::Instrument as _;

use crate::domain::{AuthorizationId, Capabilities, ProviderName};
use crate::provider::http::{
    self, Api, Credential, ProviderSetupError, Refusal, RefusedRead, Replay, Shape,
};
use crate::provider::{
    AuthorizationSnapshot, CallResult, CaptureRequest, LookupError, Outcome, PaymentProvider,
    ReleaseRequest,
};
use crate::secret::Secret;

use self::wire::{ApiError, CaptureBody, Payment, PaymentStatus};

/// `X-API-Key` auth, `x-request-id`, and no idempotency header: a resend may apply the call
/// twice.
static SHAPE: Shape = Shape {
    kind: "hellgate",
    example_url: "https://api.hellgate.io",
    credential: Credential::Header("x-api-key", "API key"),
    request_id: "x-request-id",
    replay: Replay::Unprotected,
};

/// A Hellgate Commerce account reached over HTTPS.
#[derive(Debug)]
pub struct HellgateProvider {
    /// `X-API-Key` on every call.
    api: Api,
}

impl HellgateProvider {
    /// Builds the adapter. Without `api_key` no `X-API-Key` header is sent.
    pub fn new(
        name: ProviderName,
        base_url: String,
        api_key: Option<Secret>,
        timeout: Duration,
    ) -> Result<Self, ProviderSetupError> {
        Ok(HellgateProvider {
            api: Api::new(&name, &SHAPE, base_url, api_key.as_ref(), timeout)?,
        })
    }
}

#[async_trait]
impl PaymentProvider for HellgateProvider {
    fn name(&self) -> &str {
        self.api.name().as_str()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::hellgate()
    }

    async fn capture(&self, request: &CaptureRequest) -> CallResult {
        let id = &request.authorization_id;
        let what = format!("capture of Hellgate payment {id}");
        self.api
            .post(
                &what,
                &["payments", id.as_str(), "capture"],
                |builder| builder.json(&CaptureBody::from_request(request)),
                |status, headers, body| {
                    routed(&what, status, headers, body, |payment| {
                        capture_outcome(&what, payment)
                    })
                },
            )
            .instrument(self.api.capture_span(request))
            .await
    }

    /// Voids the payment: used when the order completes with nothing captured.
    async fn release(&self, request: &ReleaseRequest) -> CallResult {
        let id = &request.authorization_id;
        let what = format!("void of Hellgate payment {id}");
        self.api
            .post(
                &what,
                &["payments", id.as_str(), "void"],
                |builder| builder,
                |status, headers, body| {
                    routed(&what, status, headers, body, |payment| {
                        void_outcome(&what, payment)
                    })
                },
            )
            .instrument(self.api.release_span(request))
            .await
    }

    async fn lookup(
        &self,
        authorization_id: &AuthorizationId,
    ) -> Result<AuthorizationSnapshot, LookupError> {
        let read = async {
            let payment: Payment = self
                .api
                .get(
                    authorization_id,
                    &["payments", authorization_id.as_str()],
                    "payment",
                    |status, _, body| RefusedRead {
                        detail: describe(status, ApiError::parse(body).as_ref()),
                        retryable: false,
                    },
                )
                .await?;
            snapshot(authorization_id, payment)
        };
        self.api.traced_lookup(authorization_id, read).await
    }

    /// A payment that went from `capturing` to `failed`: the capture was refused.
    fn refused_capture(&self, snapshot: &AuthorizationSnapshot) -> Option<String> {
        (snapshot.status == "failed").then(|| "failed".to_owned())
    }
}

/// What a payment read back says about the authorization.
fn snapshot(
    authorization_id: &AuthorizationId,
    payment: Payment,
) -> Result<AuthorizationSnapshot, LookupError> {
    let permanent = LookupError::permanent_for(authorization_id);
    let (captured_state, open) = match payment.status() {
        // Still moving: a capture in progress must not be read as "nothing captured".
        PaymentStatus::Capturing
        | PaymentStatus::Voiding
        | PaymentStatus::Processing
        | PaymentStatus::Open => {
            return Err(LookupError::retryable_for(authorization_id)(format!(
                "payment {} is {}; waiting for it to settle",
                payment.id, payment.status
            )));
        }
        PaymentStatus::Authorized => (false, true),
        PaymentStatus::Captured | PaymentStatus::Settling | PaymentStatus::Settled => (true, false),
        PaymentStatus::Voided | PaymentStatus::Failed => (false, false),
        PaymentStatus::Unrecognized => {
            return Err(permanent(format!(
                "payment {} has a status this worker does not know: {:?}",
                payment.id, payment.status
            )));
        }
    };
    payment
        .into_snapshot(authorization_id, captured_state, open)
        .map_err(permanent)
}

/// Routes an answer: a 2xx payment through `on_payment`, anything else by status.
fn routed(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    on_payment: impl FnOnce(Payment) -> Outcome,
) -> (Outcome, Option<String>) {
    if !status.is_success() {
        return refused(what, status, headers, body);
    }
    match http::decode::<Payment>(what, status, body, "payment", SHAPE.replay) {
        Ok(payment) => {
            let label = payment.status.clone();
            (on_payment(payment), Some(label))
        }
        Err(unreadable) => (unreadable, None),
    }
}

/// The payment right after the capture call.
fn capture_outcome(what: &str, payment: Payment) -> Outcome {
    let label = payment.status.clone();
    match payment.status() {
        // Accepted; `captured` or `failed` follows by notification or read-back.
        PaymentStatus::Capturing | PaymentStatus::Authorized => Outcome::Pending {
            reference: Some(payment.id),
        },
        PaymentStatus::Captured | PaymentStatus::Settling | PaymentStatus::Settled => {
            Outcome::Succeeded {
                reference: Some(payment.id),
            }
        }
        PaymentStatus::Failed => Outcome::Declined {
            code: "failed".to_owned(),
            message: format!("Hellgate reports payment {} failed", payment.id),
        },
        PaymentStatus::Voiding | PaymentStatus::Voided => Outcome::Failed {
            reason: format!("{what}: the payment is {label}; nothing can be captured"),
        },
        PaymentStatus::Open | PaymentStatus::Processing | PaymentStatus::Unrecognized => {
            Outcome::Unknown {
                reason: format!(
                    "{what}: after the capture call the payment is {label:?}, which says nothing about the capture"
                ),
                key_spent: true,
            }
        }
    }
}

/// The payment right after the void call.
fn void_outcome(what: &str, payment: Payment) -> Outcome {
    let label = payment.status.clone();
    match payment.status() {
        PaymentStatus::Voided => Outcome::Succeeded {
            reference: Some(payment.id),
        },
        PaymentStatus::Voiding | PaymentStatus::Authorized => Outcome::Pending {
            reference: Some(payment.id),
        },
        PaymentStatus::Capturing
        | PaymentStatus::Captured
        | PaymentStatus::Settling
        | PaymentStatus::Settled => Outcome::Failed {
            reason: format!("{what}: the payment is {label}; a captured payment cannot be voided"),
        },
        PaymentStatus::Failed => Outcome::Failed {
            reason: format!("{what}: the payment failed; nothing is held to release"),
        },
        PaymentStatus::Open | PaymentStatus::Processing | PaymentStatus::Unrecognized => {
            Outcome::Unknown {
                reason: format!("{what}: after the void call the payment is {label:?}"),
                key_spent: true,
            }
        }
    }
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
        // Rate limiting happens before the call is processed.
        429 => r.retry("rate limited"),
        500..=599 => r.unknown(
            "Hellgate server error; without an idempotency key the capture may have been applied, so read the payment back before resending",
        ),
        400 | 422 => r.failed("Hellgate refused the request"),
        401 => r.failed("Hellgate refused the API key (authentication)"),
        403 => r.failed("the API key may not do this (permission)"),
        404 => r.failed("no such payment for this account"),
        409 => r.failed(
            "the payment is not in a state that allows this (a second capture is never possible)",
        ),
        _ => r.failed("unexpected HTTP status"),
    };
    (outcome, code)
}

fn describe(status: StatusCode, error: Option<&ApiError>) -> String {
    ApiError::detail(status, error, "a Hellgate")
}

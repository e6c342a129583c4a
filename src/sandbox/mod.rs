//! The sandbox provider: a built-in payment-provider server with real capture semantics.
//!
//! Speaks Stripe's dialect at the root (`/v1/payment_intents/...`, form bodies,
//! `Idempotency-Key`, Stripe's error JSON and headers) and each other provider's under its
//! prefix — `/gr4vy`, `/adyen/v71`, `/checkout`, `/paypal`, `/hellgate`, `/orchestrator`
//! (`gr4vy.rs`, `adyen.rs`… over the shared pipeline in `dialect.rs`) — all over one core
//! model (`model.rs`), so the worker reaches it through the same HTTP adapters as production.
//! Asynchronous dialects accept a capture, hold its amount, settle it later and post the
//! provider's signed notification to a configured target (`notify.rs`). Scenarios inject declines, 5xx, 429, timeouts,
//! lost responses and latency per authorization; the ledger records every provider-dialect
//! request so tests can prove that nothing was captured twice. Admin endpoints live under
//! `/sandbox`. Not an adapter but the default provider that `run` serves (`sandbox.embedded`) and
//! the `sandbox` command serves alone; it imports `domain` only, and no adapter imports it.
//!
//! Concurrency: one `std::sync::Mutex` around the model, held only for synchronous steps and
//! never across a sleep. A request claims its idempotency key, sleeps the latency, then
//! executes under the lock, so a concurrent duplicate sees `idempotency_key_in_use` as on
//! Stripe.

mod adyen;
mod checkout;
mod dialect;
mod gr4vy;
mod hellgate;
pub mod model;
mod notify;
mod orchestrator;
mod paypal;
pub mod wire;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use model::{
    AuthorizationView, CancellationReason, CaptureRecord, DeclinedCapture, Fault, FaultRates,
    LedgerEntry, LedgerOutcome, ModelError, NewAuthorization, PendingCapture, Scenario, Status,
};
pub use notify::Delivery;

use model::{Adjustment, CaptureCommand, Claim, Created, Fingerprint, IdempotencyStore, Model};
use wire::{AdminAuthorization, ApiError, CaptureForm, ErrorType, PaymentIntent};

/// How the sandbox server behaves as a whole.
#[derive(Clone, Default)]
pub struct SandboxOptions {
    /// Added to every provider-dialect call (on top of an authorization's `latency_ms`).
    pub latency: Duration,
    /// When set, provider-dialect calls need `Authorization: Bearer <key>` (or HTTP Basic with
    /// the key as user name, as Stripe also accepts) and get a Stripe-style 401 otherwise. The
    /// admin endpoints stay open.
    pub api_key: Option<String>,
}

impl std::fmt::Debug for SandboxOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxOptions")
            .field("latency", &self.latency)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Why a direct call on [`Sandbox`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the sandbox state is unusable: a thread panicked while holding its lock")]
    Poisoned,
}

/// The sandbox's state, shared by the server and by tests. Cloning is cheap and every clone
/// sees the same authorizations and ledger.
#[derive(Clone)]
pub struct Sandbox {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

struct Shared {
    options: SandboxOptions,
    /// `base64("<api key>:")`, the HTTP Basic form of the key.
    basic_credential: Option<String>,
    state: Mutex<SandboxState>,
    next_seq: AtomicU64,
    next_request: AtomicU64,
    /// Where each dialect's notifications go.
    targets: Mutex<std::collections::HashMap<String, notify::Target>>,
    /// Every notification sent or attempted.
    deliveries: Mutex<Vec<notify::Delivery>>,
    /// Posts notifications; `None` if no HTTP client could be built.
    client: Option<reqwest::Client>,
    /// PayPal access tokens handed out.
    tokens: Mutex<std::collections::HashSet<String>>,
}

struct SandboxState {
    model: Model,
    keys: IdempotencyStore<Saved>,
    /// Moves on at every reset, so a request that began before a reset cannot touch the keys
    /// of the new era.
    epoch: u64,
}

/// A response saved under an idempotency key: replayed byte for byte.
#[derive(Debug, Clone)]
struct Saved {
    status: u16,
    body: String,
    should_retry: Option<bool>,
    request_id: String,
}

impl Sandbox {
    pub fn new(options: SandboxOptions) -> Self {
        let basic_credential = options
            .api_key
            .as_ref()
            .map(|k| base64(format!("{k}:").as_bytes()));
        Sandbox {
            shared: Arc::new(Shared {
                options,
                basic_credential,
                state: Mutex::new(SandboxState {
                    model: Model::new(),
                    keys: IdempotencyStore::default(),
                    epoch: 0,
                }),
                next_seq: AtomicU64::new(0),
                next_request: AtomicU64::new(0),
                targets: Mutex::new(std::collections::HashMap::new()),
                deliveries: Mutex::new(Vec::new()),
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .ok(),
                tokens: Mutex::new(std::collections::HashSet::new()),
            }),
        }
    }

    /// Creates an authorization (a PaymentIntent in `requires_capture`). Creating the same id
    /// again with identical fields returns it; with different fields is a conflict.
    pub fn create_authorization(
        &self,
        new: NewAuthorization,
    ) -> Result<AuthorizationView, SandboxError> {
        let (view, _) = self.lock()?.model.create(new, Utc::now())?;
        Ok(view)
    }

    /// Replaces an authorization's scenario.
    pub fn set_scenario(&self, id: &str, scenario: Scenario) -> Result<(), SandboxError> {
        self.lock()?.model.set_scenario(id, scenario)?;
        Ok(())
    }

    /// Every provider-dialect request so far, in arrival order.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.read().model.ledger(None)
    }

    /// The provider-dialect requests about one authorization, in arrival order.
    pub fn ledger_for(&self, authorization_id: &str) -> Vec<LedgerEntry> {
        self.read().model.ledger(Some(authorization_id))
    }

    /// The authorization as it stands now (expiry applied).
    pub fn authorization(&self, id: &str) -> Option<AuthorizationView> {
        self.read().model.view(id, Utc::now())
    }

    /// Forgets every authorization, idempotency key and ledger entry.
    pub fn reset(&self) {
        let mut state = self.read();
        state.model.reset();
        state.keys = IdempotencyStore::default();
        state.epoch = state.epoch.wrapping_add(1);
    }

    fn lock(&self) -> Result<MutexGuard<'_, SandboxState>, SandboxError> {
        self.shared.state.lock().map_err(|_| {
            tracing::error!("sandbox state lock poisoned");
            SandboxError::Poisoned
        })
    }

    /// The state for the direct accessors, which have no error to return. No code path
    /// panics while holding the lock (panics are denied in `src`), and every mutation is
    /// completed before the guard drops, so a poisoned state is still consistent.
    fn read(&self) -> MutexGuard<'_, SandboxState> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn request_id(&self) -> String {
        let n = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        format!("req_{:016x}", model::mix(n.wrapping_add(1)))
    }

    fn call(
        &self,
        method: &'static str,
        path: String,
        id: Option<String>,
        headers: &HeaderMap,
    ) -> Call {
        Call {
            seq: self.shared.next_seq.fetch_add(1, Ordering::Relaxed) + 1,
            at: Utc::now(),
            method,
            path,
            authorization_id: id,
            idempotency_key: headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            amount_to_capture: None,
            final_capture: None,
            request_id: self.request_id(),
        }
    }

    fn check_auth(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(key) = &self.shared.options.api_key else {
            return Ok(());
        };
        let Some(given) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Err(Refusal::new(
                401,
                ApiError::invalid(
                    None,
                    "You did not provide an API key. You need to provide your API key in the \
                     Authorization header, using Bearer auth (e.g. 'Authorization: Bearer \
                     YOUR_SECRET_KEY').",
                ),
            ));
        };
        let bearer = given.strip_prefix("Bearer ").is_some_and(|k| k == key);
        let basic = given
            .strip_prefix("Basic ")
            .is_some_and(|b| Some(b) == self.shared.basic_credential.as_deref());
        if bearer || basic {
            Ok(())
        } else {
            // The key given is never echoed: it may be a real secret sent to the wrong place.
            Err(Refusal::new(
                401,
                ApiError::invalid(None, "Invalid API Key provided."),
            ))
        }
    }

    fn latency_for(&self, state: &SandboxState, id: Option<&str>) -> Duration {
        let extra = id.map_or(0, |id| state.model.latency_ms(id));
        self.shared
            .options
            .latency
            .saturating_add(Duration::from_millis(extra))
    }

    /// Records the call in the ledger and builds its reply.
    fn finish(
        &self,
        state: &mut SandboxState,
        call: &Call,
        reply: Reply,
        outcome: LedgerOutcome,
        captured_amount: i64,
    ) -> Reply {
        tracing::debug!(
            seq = call.seq,
            method = call.method,
            path = %call.path,
            status = reply.status,
            ?outcome,
            captured_amount,
            "sandbox provider call"
        );
        state.model.record(LedgerEntry {
            seq: call.seq,
            at: call.at,
            method: call.method.to_owned(),
            path: call.path.clone(),
            authorization_id: call.authorization_id.clone(),
            idempotency_key: call.idempotency_key.clone(),
            amount_to_capture: call.amount_to_capture,
            final_capture: call.final_capture,
            http_status: reply.status,
            outcome,
            replayed: outcome == LedgerOutcome::Replayed,
            captured_amount,
        });
        reply
    }

    /// Capture and cancel: admit (auth, parameters, idempotency), wait the latency, execute.
    async fn mutate(
        &self,
        op: Op,
        id: String,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Reply {
        let path = format!("/v1/payment_intents/{id}/{}", op.as_str());
        let mut call = self.call("POST", path, Some(id), headers);
        let (latency, admitted) = {
            let mut guard = match self.lock() {
                Ok(g) => g,
                Err(_) => return poisoned(&call),
            };
            let state = &mut *guard;
            let latency = self.latency_for(state, call.authorization_id.as_deref());
            let admitted = match self.admit(state, &mut call, op, headers, body) {
                Ok(Admitted::Go(go)) => Ok(go),
                Ok(Admitted::Replay(saved)) => {
                    let reply = Reply::replay(&call, saved);
                    Err(self.finish(state, &call, reply, LedgerOutcome::Replayed, 0))
                }
                Err(refusal) => {
                    let reply = refusal.reply(&call);
                    Err(self.finish(state, &call, reply, LedgerOutcome::Error, 0))
                }
            };
            (latency, admitted)
        };
        // Frees the claimed key when this request ends without saving an answer, even if the
        // client hangs up and the future is dropped mid-sleep.
        let _claim = admitted.as_ref().ok().and_then(|go| {
            go.target.key.as_ref().map(|key| ClaimGuard {
                sandbox: self.clone(),
                epoch: go.target.epoch,
                key: key.clone(),
            })
        });
        tokio::time::sleep(latency).await;
        let go = match admitted {
            Ok(go) => go,
            Err(reply) => return reply,
        };
        let (reply, delay) = self.execute(&call, go);
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        reply
    }

    fn admit(
        &self,
        state: &mut SandboxState,
        call: &mut Call,
        op: Op,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Admitted, Refusal> {
        self.check_auth(headers)?;
        let key = idempotency_key(headers)?;
        let body = body.map_err(|e| Refusal::new(400, ApiError::invalid(None, e.body_text())))?;
        let pairs = wire::decode_form(&body)
            .map_err(|e| Refusal::new(400, ApiError::invalid(None, e.0)))?;
        let action = match op {
            Op::Capture => {
                call.amount_to_capture =
                    param(&pairs, "amount_to_capture").and_then(|v| v.parse().ok());
                call.final_capture = param(&pairs, "final_capture").and_then(|v| v.parse().ok());
                Action::Capture(wire::parse_capture(&pairs).map_err(|e| Refusal::new(400, e))?)
            }
            Op::Cancel => {
                Action::Cancel(wire::parse_cancel(&pairs).map_err(|e| Refusal::new(400, e))?)
            }
            Op::Increment => {
                let amount = param(&pairs, "amount")
                    .and_then(|v| v.parse::<i64>().ok())
                    .ok_or_else(|| {
                        Refusal::new(
                            400,
                            ApiError::invalid(
                                Some("parameter_missing"),
                                "Missing required param: amount.",
                            )
                            .with_param("amount"),
                        )
                    })?;
                Action::Increment(amount)
            }
        };
        let id = call.authorization_id.clone().unwrap_or_default();
        if !state.model.contains(&id) {
            return Err(Refusal::new(404, ApiError::no_such_payment_intent(&id)));
        }
        if let Some(key) = &key {
            let fingerprint = Fingerprint::new(call.path.clone(), pairs);
            match state.keys.claim(key, &fingerprint) {
                Claim::Claimed => {}
                Claim::Replay(saved) => return Ok(Admitted::Replay(saved)),
                Claim::Mismatch { original_path } => {
                    let message = if original_path == call.path {
                        format!(
                            "Keys for idempotent requests can only be used with the same \
                             parameters they were first used with. Try using a key other than \
                             '{key}' if you meant to execute a different request."
                        )
                    } else {
                        format!(
                            "Keys for idempotent requests can only be used for the same endpoint \
                             they were first used for ('{original_path}' vs '{}'). Try using a \
                             key other than '{key}' if you meant to execute a different request.",
                            call.path
                        )
                    };
                    return Err(Refusal::new(
                        400,
                        ApiError::new(ErrorType::IdempotencyError, None, message),
                    ));
                }
                Claim::InProgress => {
                    return Err(Refusal {
                        should_retry: Some(true),
                        ..Refusal::new(
                            409,
                            ApiError::invalid(
                                Some("idempotency_key_in_use"),
                                "The idempotency key provided is currently being used in another \
                                 request. This occurs if your integration is making duplicate \
                                 requests simultaneously.",
                            ),
                        )
                    });
                }
            }
        }
        Ok(Admitted::Go(Go {
            target: Target {
                id,
                epoch: state.epoch,
                key,
            },
            action,
        }))
    }

    /// Runs an admitted request under the lock. Returns the reply and how long to hold it back.
    fn execute(&self, call: &Call, go: Go) -> (Reply, Option<Duration>) {
        let mut guard = match self.lock() {
            Ok(g) => g,
            Err(_) => return (poisoned(call), None),
        };
        let state = &mut *guard;
        if state.epoch != go.target.epoch {
            // Reset while this request waited: its authorization is gone.
            let reply =
                Refusal::new(404, ApiError::no_such_payment_intent(&go.target.id)).reply(call);
            return (
                self.finish(state, call, reply, LedgerOutcome::Error, 0),
                None,
            );
        }
        let now = Utc::now();
        match go.action {
            // Stripe: the new total, at most 10 attempts, only while nothing is captured.
            Action::Increment(total) => {
                let adjustment = Adjustment {
                    new_total: Some(total),
                    renew_for: None,
                    before_first_capture: true,
                    max_adjustments: Some(10),
                };
                let (reply, outcome) = match state.model.adjust(&go.target.id, adjustment, now) {
                    Ok(view) => (
                        Reply::json(call, 200, &PaymentIntent::from(&view)),
                        LedgerOutcome::Adjusted,
                    ),
                    Err(e) => model_refusal(state, &go.target.id, &e, now, call),
                };
                let reply = save(state, &go.target, reply);
                (self.finish(state, call, reply, outcome, 0), None)
            }
            Action::Cancel(reason) => {
                let (reply, outcome) = match state.model.cancel(&go.target.id, reason, now) {
                    Ok(view) => (
                        Reply::json(call, 200, &PaymentIntent::from(&view)),
                        LedgerOutcome::Released,
                    ),
                    Err(e) => model_refusal(state, &go.target.id, &e, now, call),
                };
                let reply = save(state, &go.target, reply);
                (self.finish(state, call, reply, outcome, 0), None)
            }
            Action::Capture(form) => match state.model.next_fault(&go.target.id) {
                None => (self.capture_now(state, call, &go.target, form, now), None),
                Some(Fault::LostResponse { delay_ms }) => (
                    self.capture_now(state, call, &go.target, form, now),
                    Some(Duration::from_millis(delay_ms)),
                ),
                Some(Fault::ServerErrorSaved) => {
                    let reply = Refusal {
                        should_retry: Some(false),
                        ..Refusal::new(500, server_error())
                    }
                    .reply(call);
                    let reply = save(state, &go.target, reply);
                    (
                        self.finish(state, call, reply, LedgerOutcome::Error, 0),
                        None,
                    )
                }
                // Stripe stores a 500 under the key and replays it, marked
                // `Idempotent-Replayed: true`; `Stripe-Should-Retry` is not always sent.
                Some(Fault::StoredErrorBeforeCapture) => {
                    let reply = save(
                        state,
                        &go.target,
                        Refusal::new(500, server_error()).reply(call),
                    );
                    (
                        self.finish(state, call, reply, LedgerOutcome::Error, 0),
                        None,
                    )
                }
                Some(Fault::StoredErrorAfterCapture) => {
                    let command = CaptureCommand {
                        amount: form.amount_to_capture,
                        is_final: form.is_final(),
                        idempotency_key: go.target.key.clone(),
                        metadata: form.metadata,
                        reference: None,
                    };
                    let (outcome, moved) = match state.model.capture(&go.target.id, &command, now) {
                        Ok(captured) => (LedgerOutcome::Captured, captured.amount),
                        Err(e) => (dialect::refusal_outcome(&e), 0),
                    };
                    let reply = save(
                        state,
                        &go.target,
                        Refusal::new(500, server_error()).reply(call),
                    );
                    (self.finish(state, call, reply, outcome, moved), None)
                }
                Some(Fault::Unavailable) => {
                    let reply = unavailable().reply(call);
                    (
                        self.finish(state, call, reply, LedgerOutcome::Error, 0),
                        None,
                    )
                }
                Some(Fault::Timeout { delay_ms }) => {
                    // The key stays in progress while the answer is held back (ClaimGuard).
                    let reply = unavailable().reply(call);
                    (
                        self.finish(state, call, reply, LedgerOutcome::Error, 0),
                        Some(Duration::from_millis(delay_ms)),
                    )
                }
                Some(Fault::RateLimited { retry_after_secs }) => {
                    let reply = Refusal {
                        retry_after: Some(retry_after_secs),
                        ..Refusal::new(
                            429,
                            ApiError::invalid(
                                Some("rate_limit"),
                                "Too many requests hit the API too quickly. We recommend an \
                                 exponential backoff of your requests.",
                            ),
                        )
                    }
                    .reply(call);
                    (
                        self.finish(state, call, reply, LedgerOutcome::Error, 0),
                        None,
                    )
                }
            },
        }
    }

    fn capture_now(
        &self,
        state: &mut SandboxState,
        call: &Call,
        target: &Target,
        form: CaptureForm,
        now: DateTime<Utc>,
    ) -> Reply {
        let command = CaptureCommand {
            amount: form.amount_to_capture,
            is_final: form.is_final(),
            idempotency_key: target.key.clone(),
            metadata: form.metadata,
            reference: None,
        };
        let captured = match below_stripe_minimum(state, &target.id, command.amount, now) {
            Some(requested) => Err(ModelError::AmountTooSmall { requested }),
            None => state.model.capture(&target.id, &command, now),
        };
        let (reply, outcome, moved) = match captured {
            Ok(captured) => (
                Reply::json(call, 200, &PaymentIntent::from(&captured.view)),
                LedgerOutcome::Captured,
                captured.amount,
            ),
            Err(e) => {
                let (reply, outcome) = model_refusal(state, &target.id, &e, now, call);
                (reply, outcome, 0)
            }
        };
        let reply = save(state, target, reply);
        self.finish(state, call, reply, outcome, moved)
    }

    async fn retrieve(&self, id: String, headers: &HeaderMap) -> Reply {
        let path = format!("/v1/payment_intents/{id}");
        let call = self.call("GET", path, Some(id.clone()), headers);
        let (latency, refused) = {
            let mut guard = match self.lock() {
                Ok(g) => g,
                Err(_) => return poisoned(&call),
            };
            let state = &mut *guard;
            let latency = self.latency_for(state, Some(&id));
            let refused = self.check_auth(headers).err().map(|refusal| {
                let reply = refusal.reply(&call);
                self.finish(state, &call, reply, LedgerOutcome::Error, 0)
            });
            (latency, refused)
        };
        tokio::time::sleep(latency).await;
        if let Some(reply) = refused {
            return reply;
        }
        let mut guard = match self.lock() {
            Ok(g) => g,
            Err(_) => return poisoned(&call),
        };
        let state = &mut *guard;
        if state.model.read_fails(&id) {
            let reply = unavailable().reply(&call);
            return self.finish(state, &call, reply, LedgerOutcome::Error, 0);
        }
        let (reply, outcome) = match state.model.view(&id, Utc::now()) {
            Some(view) => (
                Reply::json(&call, 200, &PaymentIntent::from(&view)),
                LedgerOutcome::Read,
            ),
            None => (
                Refusal::new(404, ApiError::no_such_payment_intent(&id)).reply(&call),
                LedgerOutcome::Error,
            ),
        };
        self.finish(state, &call, reply, outcome, 0)
    }
}

/// Frees a claimed idempotency key when the request that claimed it ends. A no-op when the
/// request saved an answer under the key.
struct ClaimGuard {
    sandbox: Sandbox,
    epoch: u64,
    key: String,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let mut state = self.sandbox.read();
        if state.epoch == self.epoch {
            state.keys.release(&self.key);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Capture,
    Cancel,
    Increment,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Capture => "capture",
            Op::Cancel => "cancel",
            Op::Increment => "increment_authorization",
        }
    }
}

enum Action {
    Capture(CaptureForm),
    Cancel(Option<CancellationReason>),
    /// The new total of an `increment_authorization`.
    Increment(i64),
}

/// An admitted request: its key is claimed (when it has one) and it may execute.
struct Go {
    target: Target,
    action: Action,
}

/// What an admitted request is about.
struct Target {
    id: String,
    epoch: u64,
    key: Option<String>,
}

enum Admitted {
    Go(Go),
    Replay(Saved),
}

/// One provider-dialect request as it arrived, for the ledger and the reply headers.
struct Call {
    seq: u64,
    at: DateTime<Utc>,
    method: &'static str,
    path: String,
    authorization_id: Option<String>,
    idempotency_key: Option<String>,
    amount_to_capture: Option<i64>,
    final_capture: Option<bool>,
    request_id: String,
}

/// An error answer before or instead of normal processing.
struct Refusal {
    status: u16,
    error: ApiError,
    should_retry: Option<bool>,
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(status: u16, error: ApiError) -> Self {
        Refusal {
            status,
            error,
            should_retry: None,
            retry_after: None,
        }
    }

    fn reply(self, call: &Call) -> Reply {
        let mut reply = Reply::json(call, self.status, &self.error.body());
        reply.should_retry = self.should_retry;
        reply.retry_after = self.retry_after;
        reply
    }
}

fn server_error() -> ApiError {
    ApiError::new(
        ErrorType::ApiError,
        None,
        "An unknown error occurred while processing your request.",
    )
}

fn unavailable() -> Refusal {
    Refusal {
        should_retry: Some(true),
        ..Refusal::new(
            503,
            ApiError::new(
                ErrorType::ApiError,
                None,
                "The service is temporarily unavailable. Please retry the request.",
            ),
        )
    }
}

fn poisoned(call: &Call) -> Reply {
    Refusal::new(
        500,
        ApiError::new(
            ErrorType::ApiError,
            None,
            "The sandbox state is unusable after an internal failure; restart the sandbox.",
        ),
    )
    .reply(call)
}

/// The reply for a refusal by the model, with the PaymentIntent attached as Stripe does.
fn model_refusal(
    state: &mut SandboxState,
    id: &str,
    error: &ModelError,
    now: DateTime<Utc>,
    call: &Call,
) -> (Reply, LedgerOutcome) {
    let (status, api_error) = ApiError::from_model(error);
    let view = state.model.view(id, now);
    let outcome = if status == 402 {
        LedgerOutcome::Declined
    } else {
        LedgerOutcome::Error
    };
    (
        Refusal::new(status, api_error.with_payment_intent(view.as_ref())).reply(call),
        outcome,
    )
}

/// The amount asked for when it is below Stripe's minimum charge amount for the
/// authorization's currency (docs.stripe.com/currencies#minimum-and-maximum-charge-amounts):
/// Stripe refuses it with 400 `amount_too_small`. A final capture of 0 is not a charge.
fn below_stripe_minimum(
    state: &mut SandboxState,
    id: &str,
    amount: Option<i64>,
    now: DateTime<Utc>,
) -> Option<i64> {
    let view = state.model.view(id, now)?;
    // The PaymentIntent's state is checked first (a succeeded one refuses any capture).
    if view.status != model::Status::RequiresCapture {
        return None;
    }
    let requested = amount.unwrap_or(view.amount_capturable);
    let minimum = crate::domain::capability::STRIPE_MINIMUMS
        .iter()
        .find(|(code, _)| *code == view.currency.code())?
        .1;
    (requested > 0 && requested < minimum).then_some(requested)
}

/// Saves an executed request's answer under its key, as Stripe does for every answer once
/// execution began (declines and 500s included).
fn save(state: &mut SandboxState, target: &Target, reply: Reply) -> Reply {
    if let Some(key) = &target.key {
        state.keys.save(
            key,
            Saved {
                status: reply.status,
                body: reply.body.clone(),
                should_retry: reply.should_retry,
                request_id: reply.request_id.clone(),
            },
        );
    }
    reply
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= wire::MAX_IDEMPOTENCY_KEY_LEN)
        .ok_or_else(|| {
            Refusal::new(
                400,
                ApiError::invalid(
                    None,
                    format!(
                        "Idempotency keys are 1 to {} printable ASCII characters.",
                        wire::MAX_IDEMPOTENCY_KEY_LEN
                    ),
                ),
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// A JSON answer with the headers Stripe sends.
struct Reply {
    status: u16,
    body: String,
    request_id: String,
    idempotency_key: Option<String>,
    should_retry: Option<bool>,
    retry_after: Option<u64>,
    /// The request id of the answer being replayed.
    original_request: Option<String>,
}

impl Reply {
    fn json<T: Serialize>(call: &Call, status: u16, value: &T) -> Self {
        Reply {
            status,
            body: to_json(value),
            request_id: call.request_id.clone(),
            idempotency_key: call.idempotency_key.clone(),
            should_retry: None,
            retry_after: None,
            original_request: None,
        }
    }

    fn admin<T: Serialize>(sandbox: &Sandbox, status: u16, value: &T) -> Self {
        Reply {
            status,
            body: to_json(value),
            request_id: sandbox.request_id(),
            idempotency_key: None,
            should_retry: None,
            retry_after: None,
            original_request: None,
        }
    }

    fn replay(call: &Call, saved: Saved) -> Self {
        Reply {
            status: saved.status,
            body: saved.body,
            request_id: call.request_id.clone(),
            idempotency_key: call.idempotency_key.clone(),
            should_retry: saved.should_retry,
            retry_after: None,
            original_request: Some(saved.request_id),
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| {
        tracing::error!(error = %e, "sandbox could not serialise a response");
        r#"{"error":{"type":"api_error","message":"The sandbox could not serialise its response."}}"#
            .to_owned()
    })
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, self.body).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        set(headers, "request-id", Some(self.request_id));
        set(headers, "idempotency-key", self.idempotency_key);
        set(
            headers,
            "stripe-should-retry",
            self.should_retry.map(|b| b.to_string()),
        );
        set(
            headers,
            "retry-after",
            self.retry_after.map(|s| s.to_string()),
        );
        if let Some(original) = self.original_request {
            set(headers, "idempotent-replayed", Some("true".to_owned()));
            set(headers, "original-request", Some(original));
        }
        response
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: Option<String>) {
    if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// Standard base64 with padding, for the HTTP Basic form of the API key.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                let index = usize::try_from((n >> shift) & 63).unwrap_or(0);
                out.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// The sandbox's routes: Stripe's PaymentIntent endpoints at the root, the other dialects
/// under their prefix (`/gr4vy`, `/adyen/v71`, `/checkout`, `/paypal`, `/hellgate`,
/// `/orchestrator`: each provider's base URL), and the `/sandbox` admin API.
pub fn router(sandbox: Sandbox) -> Router {
    Router::new()
        .nest("/gr4vy", gr4vy::routes())
        .nest("/adyen/v71", adyen::routes())
        .nest("/checkout", checkout::routes())
        .nest("/paypal", paypal::routes())
        .nest("/hellgate", hellgate::routes())
        .nest("/orchestrator", orchestrator::routes())
        .route("/v1/payment_intents/{id}", get(retrieve_handler))
        .route("/v1/payment_intents/{id}/capture", post(capture_handler))
        .route("/v1/payment_intents/{id}/cancel", post(cancel_handler))
        .route(
            "/v1/payment_intents/{id}/increment_authorization",
            post(increment_handler),
        )
        .route("/sandbox/authorizations", post(create_handler))
        .route("/sandbox/authorizations/{id}", get(admin_get_handler))
        .route(
            "/sandbox/authorizations/{id}/scenario",
            put(scenario_handler),
        )
        .route("/sandbox/ledger", get(ledger_handler))
        .route("/sandbox/reset", post(reset_handler))
        .fallback(unrecognized_handler)
        .method_not_allowed_fallback(unrecognized_handler)
        .layer(axum::middleware::map_response_with_state(
            sandbox.clone(),
            add_request_id,
        ))
        .with_state(sandbox)
}

/// Serves the sandbox on `listener` until `shutdown` completes, then finishes in-flight
/// requests and returns.
pub async fn serve(
    listener: TcpListener,
    sandbox: Sandbox,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "sandbox provider listening");
    }
    axum::serve(listener, router(sandbox))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A running sandbox server started by [`spawn`]. Dropping it stops the server.
#[must_use = "the sandbox server stops when this is dropped"]
pub struct SandboxServer {
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl SandboxServer {
    /// Stops the server and waits for in-flight requests to finish.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for SandboxServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            // The server may already be gone; nothing to do then.
            let _ = tx.send(());
        }
    }
}

/// Starts a sandbox on `127.0.0.1` on a free port. Returns its base URL
/// (`http://127.0.0.1:PORT`), the shared state and the server handle.
pub async fn spawn(options: SandboxOptions) -> std::io::Result<(String, Sandbox, SandboxServer)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let sandbox = Sandbox::new(options);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, sandbox.clone(), async move {
        // A dropped sender also means stop.
        let _ = rx.await;
    }));
    let server = SandboxServer {
        shutdown: Some(tx),
        task: Some(task),
    };
    Ok((format!("http://{addr}"), sandbox, server))
}

async fn add_request_id(State(sandbox): State<Sandbox>, mut response: Response) -> Response {
    if !response.headers().contains_key("request-id") {
        set(
            response.headers_mut(),
            "request-id",
            Some(sandbox.request_id()),
        );
    }
    response
}

fn path_id(path: Result<Path<String>, PathRejection>) -> String {
    // A path that does not decode still gets a Stripe-shaped answer: as an unknown id.
    path.map(|Path(id)| id).unwrap_or_default()
}

async fn capture_handler(
    State(sandbox): State<Sandbox>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    sandbox
        .mutate(Op::Capture, path_id(path), &headers, body)
        .await
}

async fn cancel_handler(
    State(sandbox): State<Sandbox>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    sandbox
        .mutate(Op::Cancel, path_id(path), &headers, body)
        .await
}

async fn increment_handler(
    State(sandbox): State<Sandbox>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    sandbox
        .mutate(Op::Increment, path_id(path), &headers, body)
        .await
}

async fn retrieve_handler(
    State(sandbox): State<Sandbox>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Reply {
    sandbox.retrieve(path_id(path), &headers).await
}

fn admin_error(sandbox: &Sandbox, error: SandboxError) -> Reply {
    match error {
        SandboxError::Model(e) => {
            let (status, api_error) = ApiError::from_model(&e);
            Reply::admin(sandbox, status, &api_error.body())
        }
        SandboxError::Poisoned => Reply::admin(
            sandbox,
            500,
            &ApiError::new(
                ErrorType::ApiError,
                None,
                SandboxError::Poisoned.to_string(),
            )
            .body(),
        ),
    }
}

fn bad_request(sandbox: &Sandbox, message: String) -> Reply {
    Reply::admin(sandbox, 400, &ApiError::invalid(None, message).body())
}

async fn create_handler(
    State(sandbox): State<Sandbox>,
    body: Result<axum::Json<NewAuthorization>, JsonRejection>,
) -> Reply {
    let new = match body {
        Ok(axum::Json(new)) => new,
        Err(e) => return bad_request(&sandbox, e.body_text()),
    };
    let created = sandbox
        .lock()
        .and_then(|mut state| Ok(state.model.create(new, Utc::now())?));
    match created {
        Ok((view, Created::New)) => Reply::admin(&sandbox, 201, &PaymentIntent::from(&view)),
        Ok((view, Created::AlreadyExisted)) => {
            Reply::admin(&sandbox, 200, &PaymentIntent::from(&view))
        }
        Err(e) => admin_error(&sandbox, e),
    }
}

async fn admin_get_handler(
    State(sandbox): State<Sandbox>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = path_id(path);
    match sandbox.authorization(&id) {
        Some(view) => Reply::admin(&sandbox, 200, &AdminAuthorization::from(&view)),
        None => Reply::admin(&sandbox, 404, &ApiError::no_such_payment_intent(&id).body()),
    }
}

async fn scenario_handler(
    State(sandbox): State<Sandbox>,
    path: Result<Path<String>, PathRejection>,
    body: Result<axum::Json<Scenario>, JsonRejection>,
) -> Reply {
    let id = path_id(path);
    let scenario = match body {
        Ok(axum::Json(s)) => s,
        Err(e) => return bad_request(&sandbox, e.body_text()),
    };
    if let Err(e) = sandbox.set_scenario(&id, scenario) {
        return admin_error(&sandbox, e);
    }
    match sandbox.authorization(&id) {
        Some(view) => Reply::admin(&sandbox, 200, &AdminAuthorization::from(&view)),
        None => Reply::admin(&sandbox, 404, &ApiError::no_such_payment_intent(&id).body()),
    }
}

/// `GET /sandbox/ledger?authorization_id=...`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerQuery {
    authorization_id: Option<String>,
}

async fn ledger_handler(
    State(sandbox): State<Sandbox>,
    query: Result<Query<LedgerQuery>, QueryRejection>,
) -> Reply {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return bad_request(&sandbox, e.body_text()),
    };
    let ledger = match &query.authorization_id {
        Some(id) => sandbox.ledger_for(id),
        None => sandbox.ledger(),
    };
    Reply::admin(&sandbox, 200, &ledger)
}

async fn reset_handler(State(sandbox): State<Sandbox>) -> Reply {
    sandbox.reset();
    Reply::admin(&sandbox, 200, &serde_json::json!({ "reset": true }))
}

async fn unrecognized_handler(State(sandbox): State<Sandbox>, method: Method, uri: Uri) -> Reply {
    let shown: String = uri.path().chars().take(200).collect();
    Reply::admin(
        &sandbox,
        404,
        &ApiError::invalid(
            None,
            format!("Unrecognized request URL ({method}: {shown})."),
        )
        .body(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"sk_test_123:"), "c2tfdGVzdF8xMjM6");
    }

    #[test]
    fn options_never_print_the_api_key() {
        let o = SandboxOptions {
            latency: Duration::ZERO,
            api_key: Some("sk_test_secret".into()),
        };
        assert!(!format!("{o:?}").contains("secret"));
    }
}

//! The request pipeline the non-Stripe dialects share: credentials, the authorization's
//! existence, the idempotency key (claim, replay, mismatch, in progress), latency, the
//! scenario's faults, execution under the lock, the request ledger, and the work that follows
//! an answer (settling accepted captures later, sending notifications).
//!
//! Each dialect (`gr4vy.rs`, `adyen.rs`, `checkout.rs`, `paypal.rs`, `hellgate.rs`,
//! `orchestrator.rs`) says how its errors look ([`Dialect`]) and what a request does (the
//! `exec` closure over the core model); the pipeline is the same for all. Stripe's dialect
//! keeps its own pipeline in `mod.rs`.

use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::model::{Fault, Fingerprint, LedgerEntry, LedgerOutcome, ModelError};
use super::notify::Outgoing;
use super::{Call, Claim, ClaimGuard, Sandbox, SandboxState, Saved};

/// A dialect's answer: status, body (JSON unless empty) and extra headers.
#[derive(Debug, Clone)]
pub(super) struct DialectReply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

impl DialectReply {
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        DialectReply {
            status,
            body: value.to_string(),
            headers: Vec::new(),
        }
    }

    pub fn empty(status: u16) -> Self {
        DialectReply {
            status,
            body: String::new(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl IntoResponse for DialectReply {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let json = !self.body.is_empty();
        let mut response = (status, self.body).into_response();
        let headers = response.headers_mut();
        if json {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        response
    }
}

/// How a dialect answers the pipeline's own refusals.
pub(super) trait Dialect {
    /// The dialect's name (`gr4vy`, `adyen`…): the notification channel.
    const NAME: &'static str;
    /// The request carries this dialect's credentials for the sandbox's API key.
    fn authorized(sandbox: &Sandbox, headers: &HeaderMap) -> bool;
    fn unauthorized() -> DialectReply;
    fn not_found(id: &str) -> DialectReply;
    /// The same idempotency key is still being processed.
    fn in_progress() -> DialectReply;
    /// The idempotency key was first used with another request.
    fn key_reused() -> DialectReply;
    /// 503: nothing happened.
    fn unavailable() -> DialectReply;
    /// 500: nothing happened (the dialects other than Stripe's save no error answers).
    fn server_error() -> DialectReply;
    /// 429 with `Retry-After`.
    fn rate_limited(retry_after_secs: u64) -> DialectReply {
        Self::unavailable()
            .with_status(429)
            .with_header("retry-after", retry_after_secs.to_string())
    }
    /// Whether a 5xx answer is stored under the idempotency key and replayed
    /// ([`Fault::StoredErrorBeforeCapture`], [`Fault::StoredErrorAfterCapture`]). Default: yes,
    /// as Gr4vy and Adyen document it and as assumed where a provider's docs are silent.
    fn stores_server_errors() -> bool {
        true
    }
    /// Whether an executed answer with this status is saved under its idempotency key.
    fn saves(status: u16) -> bool {
        (200..300).contains(&status)
    }
}

impl DialectReply {
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
}

/// One dialect request entering the pipeline.
pub(super) struct Request {
    pub method: &'static str,
    pub path: String,
    pub authorization_id: String,
    /// The idempotency key header's value, when the dialect has one and it was sent.
    pub key: Option<String>,
    /// The raw body: the request's fingerprint for its key.
    pub body: String,
    pub amount: Option<i64>,
    pub is_final: Option<bool>,
    /// A capture: the scenario's faults apply.
    pub capture: bool,
}

/// What an executed request came to.
pub(super) struct Executed {
    pub reply: DialectReply,
    pub outcome: LedgerOutcome,
    /// Money it moved now, in minor units.
    pub moved: i64,
    /// An accepted capture to settle after this delay.
    pub settle: Option<Duration>,
    /// Notifications to send now (a cancel's result).
    pub notify: Vec<Outgoing>,
}

impl Executed {
    pub fn reply(reply: DialectReply, outcome: LedgerOutcome) -> Self {
        Executed {
            reply,
            outcome,
            moved: 0,
            settle: None,
            notify: Vec::new(),
        }
    }
}

/// The ledger outcome of a model refusal.
pub(super) fn refusal_outcome(error: &ModelError) -> LedgerOutcome {
    match error {
        ModelError::Declined { .. } => LedgerOutcome::Declined,
        _ => LedgerOutcome::Error,
    }
}

impl Sandbox {
    /// Runs a mutation (capture, cancel, void) of dialect `D` through the pipeline.
    pub(super) async fn dialect_call<D: Dialect>(
        &self,
        headers: &HeaderMap,
        request: Request,
        exec: impl FnOnce(&mut SandboxState, &Call, DateTime<Utc>) -> Executed,
    ) -> DialectReply {
        let mut call = self.call(
            request.method,
            request.path.clone(),
            Some(request.authorization_id.clone()),
            headers,
        );
        call.idempotency_key = request.key.clone();
        call.amount_to_capture = request.amount;
        call.final_capture = request.is_final;
        let id = request.authorization_id.clone();
        // Each provider has its own key space: the same key at two dialects is two keys.
        let store_key = request
            .key
            .as_ref()
            .map(|k| format!("{}\u{1f}{k}", D::NAME));
        let (latency, admitted) = {
            let mut guard = self.read();
            let state = &mut *guard;
            let latency = self.latency_for(state, Some(&id));
            let admitted = if !D::authorized(self, headers) {
                Err((D::unauthorized(), LedgerOutcome::Error))
            } else if !state.model.contains(&id) {
                Err((D::not_found(&id), LedgerOutcome::Error))
            } else if let Some(key) = &store_key {
                let fingerprint = Fingerprint::new(
                    call.path.clone(),
                    vec![("body".into(), request.body.clone())],
                );
                match state.keys.claim(key, &fingerprint) {
                    Claim::Claimed => Ok(state.epoch),
                    // Byte for byte, unmarked: only Stripe documents a replay marker
                    // (`Idempotent-Replayed`), and its dialect keeps its own pipeline.
                    Claim::Replay(saved) => Err((
                        DialectReply {
                            status: saved.status,
                            body: saved.body,
                            headers: Vec::new(),
                        },
                        LedgerOutcome::Replayed,
                    )),
                    Claim::Mismatch { .. } => Err((D::key_reused(), LedgerOutcome::Error)),
                    Claim::InProgress => Err((D::in_progress(), LedgerOutcome::Error)),
                }
            } else {
                Ok(state.epoch)
            };
            let admitted = admitted.map_err(|(reply, outcome)| {
                log(state, &call, reply.status, outcome, 0);
                reply
            });
            (latency, admitted)
        };
        let _claim = match (&admitted, &store_key) {
            (Ok(epoch), Some(key)) => Some(ClaimGuard {
                sandbox: self.clone(),
                epoch: *epoch,
                key: key.clone(),
            }),
            _ => None,
        };
        tokio::time::sleep(latency).await;
        let epoch = match admitted {
            Ok(epoch) => epoch,
            Err(reply) => return reply,
        };
        let (reply, hold, settle, notify) = {
            let mut guard = self.read();
            let state = &mut *guard;
            if state.epoch != epoch {
                let reply = D::not_found(&id);
                log(state, &call, reply.status, LedgerOutcome::Error, 0);
                return reply;
            }
            let now = Utc::now();
            let fault = if request.capture {
                state.model.next_fault(&id)
            } else {
                None
            };
            let (executed, hold) = match fault {
                None => (Some(exec(state, &call, now)), None),
                Some(Fault::LostResponse { delay_ms }) => (
                    Some(exec(state, &call, now)),
                    Some(Duration::from_millis(delay_ms)),
                ),
                Some(Fault::ServerErrorSaved) => (None, None),
                Some(Fault::StoredErrorBeforeCapture) => {
                    let reply = D::server_error();
                    store_error::<D>(state, store_key.as_deref(), &reply, &call);
                    log(state, &call, reply.status, LedgerOutcome::Error, 0);
                    (Some(Executed::reply(reply, LedgerOutcome::Error)), None)
                }
                Some(Fault::StoredErrorAfterCapture) => {
                    let mut done = exec(state, &call, now);
                    let moved = done.moved;
                    let outcome = done.outcome;
                    let reply = D::server_error();
                    store_error::<D>(state, store_key.as_deref(), &reply, &call);
                    // The ledger shows what happened: the money moved, the answer was a 500.
                    log(state, &call, reply.status, outcome, moved);
                    done.reply = reply;
                    done.outcome = LedgerOutcome::Error;
                    done.moved = 0;
                    (Some(done), None)
                }
                Some(Fault::Unavailable) => (None, None),
                Some(Fault::Timeout { delay_ms }) => (None, Some(Duration::from_millis(delay_ms))),
                Some(Fault::RateLimited { retry_after_secs }) => {
                    let reply = D::rate_limited(retry_after_secs);
                    log(state, &call, reply.status, LedgerOutcome::Error, 0);
                    return reply;
                }
            };
            let logged = matches!(
                fault,
                Some(Fault::StoredErrorBeforeCapture | Fault::StoredErrorAfterCapture)
            );
            match executed {
                Some(done) if logged => (done.reply, hold, done.settle, done.notify),
                Some(done) => {
                    if let Some(key) = &store_key
                        && D::saves(done.reply.status)
                    {
                        state.keys.save(
                            key,
                            Saved {
                                status: done.reply.status,
                                body: done.reply.body.clone(),
                                should_retry: None,
                                request_id: call.request_id.clone(),
                            },
                        );
                    }
                    log(state, &call, done.reply.status, done.outcome, done.moved);
                    (done.reply, hold, done.settle, done.notify)
                }
                None => {
                    let reply = if matches!(fault, Some(Fault::ServerErrorSaved)) {
                        D::server_error()
                    } else {
                        D::unavailable()
                    };
                    log(state, &call, reply.status, LedgerOutcome::Error, 0);
                    (reply, hold, None, Vec::new())
                }
            }
        };
        self.deliver(notify);
        if let Some(after) = settle {
            self.settle_later(id, after);
        } else {
            self.flush();
        }
        if let Some(hold) = hold {
            tokio::time::sleep(hold).await;
        }
        reply
    }

    /// Runs a read (or a token request) of dialect `D`: credentials, latency, then `read`
    /// under the lock, which settles what is due first.
    pub(super) async fn dialect_read<D: Dialect>(
        &self,
        headers: &HeaderMap,
        path: String,
        authorization_id: Option<String>,
        read: impl FnOnce(&mut SandboxState, DateTime<Utc>) -> DialectReply,
    ) -> DialectReply {
        let call = self.call("GET", path, authorization_id.clone(), headers);
        let latency = {
            let guard = self.read();
            self.latency_for(&guard, authorization_id.as_deref())
        };
        tokio::time::sleep(latency).await;
        let reply = {
            let mut guard = self.read();
            let state = &mut *guard;
            let reply = if D::authorized(self, headers) {
                if let Some(id) = &authorization_id {
                    state.model.settle(id, Utc::now());
                }
                read(state, Utc::now())
            } else {
                D::unauthorized()
            };
            let outcome = if (200..300).contains(&reply.status) {
                LedgerOutcome::Read
            } else {
                LedgerOutcome::Error
            };
            log(state, &call, reply.status, outcome, 0);
            reply
        };
        self.flush();
        reply
    }

    /// Settles the authorization's accepted captures once `after` has passed, and sends
    /// their notifications.
    pub(super) fn settle_later(&self, authorization_id: String, after: Duration) {
        let sandbox = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            {
                let mut state = sandbox.read();
                state.model.settle(&authorization_id, Utc::now());
            }
            sandbox.flush();
        });
    }

    /// Sends the notifications of everything the model settled so far.
    pub(super) fn flush(&self) {
        let settled = self.read().model.take_outbox();
        if settled.is_empty() {
            return;
        }
        let outgoing = settled
            .into_iter()
            .filter(|s| !s.silent)
            .filter_map(|s| super::notify::for_settled(&s))
            .collect();
        self.deliver(outgoing);
    }
}

/// Stores a 5xx answer under the request's idempotency key when the dialect stores them.
fn store_error<D: Dialect>(
    state: &mut SandboxState,
    key: Option<&str>,
    reply: &DialectReply,
    call: &Call,
) {
    if let Some(key) = key
        && D::stores_server_errors()
    {
        state.keys.save(
            key,
            Saved {
                status: reply.status,
                body: reply.body.clone(),
                should_retry: None,
                request_id: call.request_id.clone(),
            },
        );
    }
}

/// Adds one ledger entry for a dialect request.
fn log(state: &mut SandboxState, call: &Call, status: u16, outcome: LedgerOutcome, moved: i64) {
    state.model.record(LedgerEntry {
        seq: call.seq,
        at: call.at,
        method: call.method.to_owned(),
        path: call.path.clone(),
        authorization_id: call.authorization_id.clone(),
        idempotency_key: call.idempotency_key.clone(),
        amount_to_capture: call.amount_to_capture,
        final_capture: call.final_capture,
        http_status: status,
        outcome,
        replayed: outcome == LedgerOutcome::Replayed,
        captured_amount: moved,
    });
}

/// The header's value as text, trimmed; `None` when absent or empty.
pub(super) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// `Bearer <key>` with the sandbox's API key, or no key configured.
pub(super) fn bearer_ok(sandbox: &Sandbox, headers: &HeaderMap) -> bool {
    match &sandbox.shared.options.api_key {
        None => true,
        Some(key) => header(headers, "authorization")
            .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
            .is_some_and(|given| &given == key),
    }
}

/// `X-API-Key: <key>` with the sandbox's API key, or no key configured.
pub(super) fn api_key_ok(sandbox: &Sandbox, headers: &HeaderMap) -> bool {
    match &sandbox.shared.options.api_key {
        None => true,
        Some(key) => header(headers, "x-api-key").is_some_and(|given| &given == key),
    }
}

/// A short, unique, dialect-looking id: `prefix` + 16 hex digits.
pub(super) fn new_id(sandbox: &Sandbox, prefix: &str) -> String {
    let n = sandbox
        .shared
        .next_request
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}{:016x}", super::model::mix(n.wrapping_add(0x5a5a)))
}

/// How long after acceptance a capture of `id` settles: the scenario's delay, else
/// `default_ms`.
pub(super) fn settle_delay(state: &SandboxState, id: &str, default_ms: u64) -> Duration {
    Duration::from_millis(state.model.settle_after_ms(id).unwrap_or(default_ms))
}

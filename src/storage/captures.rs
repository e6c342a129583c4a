//! Execution's SQL: claiming the head capture of an order under a lease, recording each
//! provider call and its outcome, the decline latch, new key generations, and finding due work.
//!
//! No transaction here is held across a provider call: a claim commits before the call, the
//! outcome commits after it (STACK trap 8).

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

use super::ledger::{CaptureKind, StoredCaptureLine};
use super::{Ctx, StorageError, outside};
use crate::domain::{
    AuthorizationId, Currency, IdempotencyKey, LineId, MinorUnits, Money, OrderId, ProviderName,
};

/// A capture this worker holds the lease on, parsed into the domain's types once, here.
#[derive(Debug, Clone)]
pub struct ClaimedCapture {
    pub capture_id: i64,
    pub order_id: OrderId,
    pub provider: ProviderName,
    pub authorization_id: AuthorizationId,
    /// 1, 2, 3… within the order.
    pub sequence: u32,
    pub kind: CaptureKind,
    pub cause_id: String,
    pub amount: Money,
    pub is_final: bool,
    pub release_after: bool,
    pub lines: Vec<ClaimedLine>,
    pub idempotency_key: IdempotencyKey,
    pub key_generation: u32,
    /// Calls already made, including this one.
    pub attempts: i32,
    pub needs_lookup: bool,
    /// The provider will only replay a saved error under the current key.
    pub key_spent: bool,
    pub first_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub traceparent: Option<String>,
    /// The lease was taken over from a worker that stopped mid-call.
    pub taken_over: bool,
    /// When the provider accepted this request with a pending answer: from then on it is
    /// never sent again, only awaited.
    pub accepted_at: Option<DateTime<Utc>>,
}

impl ClaimedCapture {
    /// The amount in minor units, as the ledger stores it.
    pub fn minor_units(&self) -> i64 {
        self.amount.amount().get()
    }

    /// The sequence as the ledger stores it (it was read from there, so it fits).
    fn stored_sequence(&self) -> i32 {
        i32::try_from(self.sequence).unwrap_or(i32::MAX)
    }
}

/// A line a claimed capture carries, in the capture's currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedLine {
    pub line_id: LineId,
    pub sku: String,
    pub name: String,
    pub units: u32,
    pub amount: MinorUnits,
}

/// Takes the order's next capture, if it is due and nobody else holds it.
///
/// The head is the lowest-sequence capture not yet settled; a later capture never goes before
/// it (P8). A capture needing attention stays the head until an operator acts. The partial
/// unique index `captures_one_in_flight_per_order` backs this up.
pub async fn claim_next(
    pool: &PgPool,
    order_id: &str,
    worker: &str,
    lease_seconds: f64,
) -> Result<Option<ClaimedCapture>, StorageError> {
    Ok(claim_many(pool, &[order_id], worker, lease_seconds)
        .await?
        .pop())
}

/// A claimed capture from a `returning c.*, … as taken_over` row. A value that does not parse
/// is a [`StorageError::Corrupt`] naming the capture and the column.
pub(super) fn claimed_from_row(r: &sqlx::postgres::PgRow) -> Result<ClaimedCapture, StorageError> {
    const CTX: &str = "claiming the order's next capture";
    let capture_id: i64 = r.get("capture_id");
    let corrupt = |column: &str, detail: &dyn std::fmt::Display| StorageError::Corrupt {
        context: CTX,
        detail: format!(
            "capture {capture_id}, column {column}: {detail}; correct the row (or set the capture aside) before it is claimed again"
        ),
    };
    let text = |column: &str| -> String { r.get(column) };
    let kind_text = text("kind");
    let kind = CaptureKind::parse(&kind_text)
        .ok_or_else(|| corrupt("kind", &format!("unknown capture kind {kind_text:?}")))?;
    let stored: Vec<StoredCaptureLine> =
        serde_json::from_value(r.get("lines")).map_err(|e| corrupt("lines", &e))?;
    let lines = stored
        .into_iter()
        .map(|l| {
            Ok(ClaimedLine {
                line_id: LineId::parse(l.line_id).map_err(|e| corrupt("lines", &e))?,
                sku: l.sku,
                name: l.name,
                units: l.units,
                amount: MinorUnits::new(l.amount).map_err(|e| corrupt("lines", &e))?,
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    let currency = Currency::parse(text("currency").trim()).map_err(|e| corrupt("currency", &e))?;
    let amount = MinorUnits::new(r.get("amount")).map_err(|e| corrupt("amount", &e))?;
    let key_generation: i32 = r.get("key_generation");
    let sequence: i32 = r.get("sequence");
    Ok(ClaimedCapture {
        capture_id,
        order_id: OrderId::parse(text("order_id")).map_err(|e| corrupt("order_id", &e))?,
        provider: ProviderName::parse(text("provider")).map_err(|e| corrupt("provider", &e))?,
        authorization_id: AuthorizationId::parse(text("authorization_id"))
            .map_err(|e| corrupt("authorization_id", &e))?,
        sequence: u32::try_from(sequence).map_err(|e| corrupt("sequence", &e))?,
        kind,
        cause_id: r.get("cause_id"),
        amount: Money::new(amount, currency),
        is_final: r.get("is_final"),
        release_after: r.get("release_after"),
        lines,
        idempotency_key: IdempotencyKey::from_stored(&text("idempotency_key"))
            .map_err(|e| corrupt("idempotency_key", &e))?,
        key_generation: u32::try_from(key_generation).map_err(|e| corrupt("key_generation", &e))?,
        attempts: r.get("attempts"),
        needs_lookup: r.get("needs_lookup"),
        key_spent: r.get("key_spent"),
        first_attempt_at: r
            .get::<Option<DateTime<Utc>>, _>("first_attempt_at")
            .unwrap_or_else(Utc::now),
        created_at: r.get("created_at"),
        traceparent: r.get("traceparent"),
        taken_over: r.get("taken_over"),
        accepted_at: r.get("accepted_at"),
    })
}

/// [`claim_next`] for several orders in one statement: each order's head capture, if it is
/// due and nobody else holds it. Returns the captures claimed (at most one per order, P8).
/// The caller passes the order ids sorted, so concurrent claims lock heads in the same order.
/// Runs on the pool, or inside a caller's transaction (intake claims the captures it has just
/// created in the transaction that creates them).
pub async fn claim_many<'e>(
    db: impl sqlx::PgExecutor<'e>,
    sorted_order_ids: &[&str],
    worker: &str,
    lease_seconds: f64,
) -> Result<Vec<ClaimedCapture>, StorageError> {
    let rows = sqlx::query(
        "with head as (
             select h.capture_id, h.status, h.lease_expires_at
             from unnest($1::text[]) as o(order_id)
             cross join lateral (
                 select capture_id, status, lease_expires_at from captures c
                 where c.order_id = o.order_id
                   and c.status not in ('succeeded', 'declined', 'failed', 'blocked')
                 order by c.sequence limit 1
                 for update
             ) h
         )
         update captures c set
             status = 'in_flight',
             lease_owner = $2,
             lease_expires_at = now() + make_interval(secs => $3),
             attempts = c.attempts + 1,
             first_attempt_at = coalesce(c.first_attempt_at, now()),
             updated_at = now()
         from head
         where c.capture_id = head.capture_id
           -- the decline latch (P4): nothing is sent for a declined order
           and not exists (select 1 from orders o where o.order_id = c.order_id and o.phase = 'declined')
           and ((head.status in ('queued', 'retrying', 'pending')
                 and coalesce(c.next_attempt_at, '-infinity') <= now())
                or (head.status = 'in_flight' and head.lease_expires_at < now()))
         returning c.*, head.status = 'in_flight' as taken_over",
    )
    .bind(sorted_order_ids)
    .bind(worker)
    .bind(lease_seconds)
    .fetch_all(db)
    .await
    .ctx("claiming the orders' next captures")?;
    rows.iter().map(claimed_from_row).collect()
}

/// One provider call, for the append-only attempts table.
#[derive(Debug, Clone)]
pub struct AttemptRecord<'a> {
    pub operation: &'static str,
    pub idempotency_key: Option<&'a str>,
    pub outcome: &'a str,
    pub http_status: Option<u16>,
    pub provider_code: Option<&'a str>,
    pub provider_request_id: Option<&'a str>,
    pub error: Option<&'a str>,
    pub latency_ms: u64,
    pub trace_id: Option<&'a str>,
    pub worker_id: &'a str,
    pub started_at: DateTime<Utc>,
}

/// What to do with the capture after a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Succeeded {
        reference: Option<String>,
    },
    /// The provider accepted; poll at `next_at`.
    Pending {
        reference: Option<String>,
        next_at: DateTime<Utc>,
    },
    /// Latch the order: this capture declined, later ones are blocked.
    Declined {
        code: String,
        message: String,
    },
    /// Try again at `next_at`; `needs_lookup` reads the authorization back first.
    Retry {
        next_at: DateTime<Utc>,
        error: String,
        needs_lookup: bool,
        /// The provider saved an error under the key and will only replay it.
        key_spent: bool,
    },
    /// Stop and wait for an operator.
    Attention {
        error: String,
    },
}

impl Transition {
    fn status(&self) -> &'static str {
        match self {
            Transition::Succeeded { .. } => "succeeded",
            Transition::Pending { .. } => "pending",
            Transition::Declined { .. } => "declined",
            Transition::Retry { .. } => "retrying",
            Transition::Attention { .. } => "attention",
        }
    }
}

/// Records a call and moves the capture on, in one transaction. Returns [`Lease::Lost`] when
/// this worker no longer held the lease (another worker took the capture over, or a provider
/// notification settled it); the attempt is still recorded, the capture is left as it is.
pub async fn record(
    pool: &PgPool,
    capture: &ClaimedCapture,
    worker: &str,
    attempt: &AttemptRecord<'_>,
    transition: &Transition,
) -> Result<Lease, StorageError> {
    const CTX: &str = "recording the capture's outcome";
    let mut tx = pool.begin().await.ctx(CTX)?;
    if matches!(transition, Transition::Declined { .. }) {
        // Take the order row first: intake holds it while it plans and inserts captures, so
        // the latch below sees every capture committed before it and none can slip in after.
        sqlx::query("select 1 from orders where order_id = $1 for update")
            .bind(capture.order_id.as_str())
            .execute(&mut *tx)
            .await
            .ctx("locking the order to latch it")?;
    }
    insert_attempt(&mut tx, capture, attempt).await?;
    let key_spent = matches!(
        transition,
        Transition::Retry {
            key_spent: true,
            ..
        }
    );
    let (reference, next_at, error, needs_lookup, decline_code) = match transition {
        Transition::Succeeded { reference } => (reference.clone(), None, None, false, None),
        // A pending capture is polled by reading the authorization back.
        Transition::Pending { reference, next_at } => {
            (reference.clone(), Some(*next_at), None, true, None)
        }
        Transition::Declined { code, message } => {
            (None, None, Some(message.clone()), false, Some(code.clone()))
        }
        Transition::Retry {
            next_at,
            error,
            needs_lookup,
            ..
        } => (
            None,
            Some(*next_at),
            Some(error.clone()),
            *needs_lookup,
            None,
        ),
        Transition::Attention { error } => (None, None, Some(error.clone()), false, None),
    };
    // The provider's words: they may echo the credentials the worker sent.
    let (error, decline_code) = (
        error.as_deref().map(outside),
        decline_code.as_deref().map(outside),
    );
    let terminal = matches!(
        transition,
        Transition::Succeeded { .. } | Transition::Declined { .. }
    );
    let updated = sqlx::query(
        "update captures set status = $3,
             provider_reference = coalesce($4, provider_reference),
             next_attempt_at = $5,
             last_error = $6,
             needs_lookup = $7,
             decline_code = coalesce($8, decline_code),
             lease_owner = null, lease_expires_at = null,
             completed_at = case when $9 then now() else completed_at end,
             -- once spent, a key stays spent until a new generation replaces it
             key_spent = key_spent or $10,
             -- a pending answer: the provider has the request; it is never sent again
             accepted_at = case when $11 then coalesce(accepted_at, now()) else accepted_at end,
             updated_at = now()
         where capture_id = $1 and lease_owner = $2 and status = 'in_flight'",
    )
    .bind(capture.capture_id)
    .bind(worker)
    .bind(transition.status())
    .bind(reference)
    .bind(next_at)
    .bind(error)
    .bind(needs_lookup)
    .bind(decline_code.clone())
    .bind(terminal)
    .bind(key_spent)
    .bind(matches!(transition, Transition::Pending { .. }))
    .execute(&mut *tx)
    .await
    .ctx(CTX)?
    .rows_affected()
        == 1;
    if updated && let Transition::Declined { code, .. } = transition {
        latch(
            &mut tx,
            capture.order_id.as_str(),
            capture.stored_sequence(),
            capture.minor_units(),
            code,
        )
        .await?;
    }
    tx.commit().await.ctx(CTX)?;
    Ok(if updated { Lease::Held } else { Lease::Lost })
}

/// The decline latch (P4), inside the caller's transaction, which holds the order row: the
/// order stops, every later capture is blocked, and their claims on the authorization are
/// dropped along with the declined one's `amount`.
pub(super) async fn latch(
    tx: &mut sqlx::PgConnection,
    order_id: &str,
    sequence: i32,
    amount: i64,
    code: &str,
) -> Result<(), StorageError> {
    let blocked: i64 = sqlx::query_scalar(
        "with b as (
             update captures set status = 'blocked', updated_at = now(),
                 last_error = 'an earlier capture of this order was declined'
             where order_id = $1 and sequence > $2
               and status in ('queued', 'retrying', 'pending', 'attention')
             returning amount
         ) select coalesce(sum(amount), 0)::bigint from b",
    )
    .bind(order_id)
    .bind(sequence)
    .fetch_one(&mut *tx)
    .await
    .ctx("blocking later captures after a decline")?;
    sqlx::query(
        "update orders set phase = 'declined', declined_code = $2, declined_at = now(),
             claimed_amount = greatest(claimed_amount - $3, 0), updated_at = now()
         where order_id = $1",
    )
    .bind(order_id)
    .bind(code)
    .bind(amount + blocked)
    .execute(&mut *tx)
    .await
    .ctx("latching the order after a decline")?;
    Ok(())
}

async fn insert_attempt(
    tx: &mut sqlx::PgConnection,
    capture: &ClaimedCapture,
    a: &AttemptRecord<'_>,
) -> Result<(), StorageError> {
    sqlx::query(
        "insert into capture_attempts (capture_id, attempt_no, operation, idempotency_key, amount,
             is_final, outcome, http_status, provider_code, provider_request_id, error, latency_ms,
             trace_id, worker_id, started_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(capture.capture_id)
    .bind(capture.attempts.max(1))
    .bind(a.operation)
    .bind(a.idempotency_key)
    .bind(capture.minor_units())
    .bind(capture.is_final)
    .bind(a.outcome)
    .bind(a.http_status.map(i32::from))
    .bind(a.provider_code.map(outside))
    .bind(a.provider_request_id)
    .bind(a.error.map(outside))
    .bind(i32::try_from(a.latency_ms).unwrap_or(i32::MAX))
    .bind(a.trace_id)
    .bind(a.worker_id)
    .bind(a.started_at)
    .execute(tx)
    .await
    .ctx("recording the provider call")?;
    Ok(())
}

/// A call that captured (or released), to record with [`record_succeeded_many`].
#[derive(Debug, Clone)]
pub struct Success<'a> {
    pub capture: &'a ClaimedCapture,
    pub attempt: AttemptRecord<'a>,
    pub reference: Option<&'a str>,
}

/// Whether this worker still held a capture's lease when it recorded the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// It did: the capture moved on as recorded.
    Held,
    /// It did not (settled by a notification, or taken over meanwhile): only the attempt was
    /// recorded.
    Lost,
}

/// Whether the order has a capture after the one recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Following {
    /// A next capture exists (worth claiming now); also when not known.
    More,
    /// None: the order has nothing left to send.
    Nothing,
}

/// What [`record_succeeded_many`] did for one capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// [`Lease::Held`]: the capture is now succeeded.
    pub lease: Lease,
    /// [`Following::More`] when not known (the lease was lost).
    pub following: Following,
}

impl Recorded {
    /// A capture recorded one at a time: whether the order has more is not known.
    pub fn alone(lease: Lease) -> Recorded {
        Recorded {
            lease,
            following: Following::More,
        }
    }
}

/// [`record`] with [`Transition::Succeeded`] for several captures, in one statement (so one
/// commit): every attempt row is inserted, and each capture this worker still holds moves to
/// succeeded. Returns, per capture, whether this worker still held its lease and whether the
/// order has more to send.
pub async fn record_succeeded_many(
    pool: &PgPool,
    worker: &str,
    successes: &[Success<'_>],
) -> Result<Vec<Recorded>, StorageError> {
    let n = successes.len();
    let mut ids = Vec::with_capacity(n);
    let (mut attempt_nos, mut operations, mut keys, mut amounts, mut finals) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut outcomes, mut statuses, mut codes, mut request_ids, mut errors) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut latencies, mut traces, mut workers, mut started, mut references) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for s in successes {
        let (c, a) = (s.capture, &s.attempt);
        ids.push(c.capture_id);
        attempt_nos.push(c.attempts.max(1));
        operations.push(a.operation);
        keys.push(a.idempotency_key);
        amounts.push(c.minor_units());
        finals.push(c.is_final);
        outcomes.push(a.outcome);
        statuses.push(a.http_status.map(i32::from));
        codes.push(a.provider_code.map(outside));
        request_ids.push(a.provider_request_id);
        errors.push(a.error.map(outside));
        latencies.push(i32::try_from(a.latency_ms).unwrap_or(i32::MAX));
        traces.push(a.trace_id);
        workers.push(a.worker_id);
        started.push(a.started_at);
        references.push(s.reference);
    }
    // The attempts are inserted whether or not the lease is still held (as `record` does);
    // the capture moves on only under this worker's lease.
    let updated: Vec<(i64, bool)> = sqlx::query_as(
        "with attempts as (
             insert into capture_attempts (capture_id, attempt_no, operation, idempotency_key,
                 amount, is_final, outcome, http_status, provider_code, provider_request_id, error,
                 latency_ms, trace_id, worker_id, started_at)
             select * from unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::bigint[],
                 $6::bool[], $7::text[], $8::int[], $9::text[], $10::text[], $11::text[],
                 $12::int[], $13::text[], $14::text[], $15::timestamptz[])
         )
         update captures c set status = 'succeeded',
             provider_reference = coalesce(v.reference, c.provider_reference),
             next_attempt_at = null, last_error = null, needs_lookup = false,
             lease_owner = null, lease_expires_at = null,
             completed_at = now(), updated_at = now()
         from unnest($1::bigint[], $16::text[]) as v(capture_id, reference)
         where c.capture_id = v.capture_id and c.lease_owner = $17 and c.status = 'in_flight'
         -- Captures of an order go in sequence (P8): the order has more to send when the
         -- next sequence exists (a unique-index lookup, not a scan).
         returning c.capture_id,
             exists (select 1 from captures n
                     where n.order_id = c.order_id and n.sequence = c.sequence + 1) as more",
    )
    .bind(&ids)
    .bind(&attempt_nos)
    .bind(&operations)
    .bind(&keys)
    .bind(&amounts)
    .bind(&finals)
    .bind(&outcomes)
    .bind(&statuses)
    .bind(&codes)
    .bind(&request_ids)
    .bind(&errors)
    .bind(&latencies)
    .bind(&traces)
    .bind(&workers)
    .bind(&started)
    .bind(&references)
    .bind(worker)
    .fetch_all(pool)
    .await
    .ctx("recording the captures' outcomes")?;
    let updated: std::collections::HashMap<i64, bool> = updated.into_iter().collect();
    Ok(ids
        .iter()
        .map(|id| match updated.get(id) {
            Some(&more) => Recorded {
                lease: Lease::Held,
                following: if more {
                    Following::More
                } else {
                    Following::Nothing
                },
            },
            None => Recorded::alone(Lease::Lost),
        })
        .collect())
}

/// Records a lookup call without moving the capture (it stays in flight under this lease).
pub async fn record_lookup(
    pool: &PgPool,
    capture: &ClaimedCapture,
    attempt: &AttemptRecord<'_>,
) -> Result<(), StorageError> {
    let mut conn = pool.acquire().await.ctx("recording the lookup")?;
    insert_attempt(&mut conn, capture, attempt).await
}

/// Moves the capture to a new key generation after the provider showed the old key captured
/// nothing. The new key is bound to the same amount and final flag (P3).
pub async fn new_key_generation(
    pool: &PgPool,
    capture: &mut ClaimedCapture,
    worker: &str,
) -> Result<(), StorageError> {
    const CTX: &str = "moving the capture to a new idempotency key";
    let generation = capture.key_generation + 1;
    let stored_generation = i32::try_from(generation).map_err(|e| StorageError::Corrupt {
        context: CTX,
        detail: format!(
            "capture {}: key generation {generation}: {e}",
            capture.capture_id
        ),
    })?;
    let cause = format!("{}:regen:{}", capture.kind.as_str(), capture.capture_id);
    let key = IdempotencyKey::derive(
        &capture.provider,
        &capture.authorization_id,
        &cause,
        generation,
    );
    let mut tx = pool.begin().await.ctx(CTX)?;
    sqlx::query(
        "insert into capture_keys (idempotency_key, capture_id, key_generation, amount, is_final)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(key.as_str())
    .bind(capture.capture_id)
    .bind(stored_generation)
    .bind(capture.minor_units())
    .bind(capture.is_final)
    .execute(&mut *tx)
    .await
    .ctx(CTX)?;
    let n = sqlx::query(
        "update captures set idempotency_key = $2, key_generation = $3, needs_lookup = false,
             key_spent = false,
             updated_at = now()
         where capture_id = $1 and lease_owner = $4 and status = 'in_flight'",
    )
    .bind(capture.capture_id)
    .bind(key.as_str())
    .bind(stored_generation)
    .bind(worker)
    .execute(&mut *tx)
    .await
    .ctx(CTX)?
    .rows_affected();
    if n != 1 {
        return Err(StorageError::Conflict {
            context: CTX,
            constraint: "lease lost".into(),
        });
    }
    tx.commit().await.ctx(CTX)?;
    capture.idempotency_key = key;
    capture.key_generation = generation;
    capture.needs_lookup = false;
    capture.key_spent = false;
    Ok(())
}

/// Σ of succeeded captures on an authorization other than `except`: what the provider should
/// report as captured before this capture.
pub async fn succeeded_total(
    pool: &PgPool,
    provider: &str,
    authorization_id: &str,
    except: i64,
) -> Result<i64, StorageError> {
    sqlx::query_scalar(
        "select coalesce(sum(amount), 0)::bigint from captures
         where provider = $1 and authorization_id = $2 and kind = 'capture'
           and status = 'succeeded' and capture_id <> $3",
    )
    .bind(provider)
    .bind(authorization_id)
    .bind(except)
    .fetch_one(pool)
    .await
    .ctx("summing the authorization's captures")
}

/// Orders with a capture that is due now, or whose lease expired.
///
/// A capture queued in the last few seconds and never attempted is left out: intake dispatched
/// it when it committed, and under load thousands of those are waiting for a claim at any
/// moment, so dispatching them again would only repeat claims. If that dispatch was lost (the
/// process stopped, a claim failed), the capture is picked up once it is older than that.
pub async fn due_orders(pool: &PgPool, limit: i64) -> Result<Vec<String>, StorageError> {
    sqlx::query_scalar(
        "select order_id from (
             select order_id, min(coalesce(next_attempt_at, created_at)) as due from captures
             where (status in ('queued', 'retrying', 'pending')
                    and coalesce(next_attempt_at, '-infinity') <= now()
                    and not (status = 'queued' and attempts = 0
                             and created_at > now() - interval '5 seconds'))
                or (status = 'in_flight' and lease_expires_at < now())
             group by order_id
         ) d order by due limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
    .ctx("finding due captures")
}

/// The capture's recent calls, for deciding what follows a failure: the failed answers under
/// `key` (newest first, read-backs skipped) and how many read-backs in a row, newest first,
/// failed to say anything.
pub async fn key_history(
    pool: &PgPool,
    capture_id: i64,
    key: &str,
) -> Result<KeyHistoryRows, StorageError> {
    let rows = sqlx::query(
        "select operation, idempotency_key, outcome, http_status, provider_code
         from capture_attempts where capture_id = $1
         order by attempt_id desc limit 50",
    )
    .bind(capture_id)
    .fetch_all(pool)
    .await
    .ctx("reading the capture's recent calls")?;
    let mut history = KeyHistoryRows::default();
    let mut read_backs_in_a_row = true;
    for r in &rows {
        let operation: String = r.get("operation");
        let outcome: String = r.get("outcome");
        if operation == "lookup" {
            if read_backs_in_a_row && outcome == "retryable" {
                history.failed_read_backs += 1;
            } else {
                read_backs_in_a_row = false;
            }
            continue;
        }
        read_backs_in_a_row = false;
        if r.get::<Option<String>, _>("idempotency_key").as_deref() != Some(key) {
            break;
        }
        if !matches!(outcome.as_str(), "retryable" | "unknown" | "failed") {
            break;
        }
        history.answers.push(crate::domain::readback::Answer {
            http_status: r
                .get::<Option<i32>, _>("http_status")
                .and_then(|s| u16::try_from(s).ok()),
            provider_code: r.get("provider_code"),
        });
    }
    Ok(history)
}

/// What [`key_history`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyHistoryRows {
    /// Failed answers under the key, newest first.
    pub answers: Vec<crate::domain::readback::Answer>,
    /// Read-backs in a row (newest first) that could not tell.
    pub failed_read_backs: u32,
}

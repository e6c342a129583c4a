//! Webhooks' SQL: recording each provider notification once, settling the capture it answers
//! with the same effects as a recorded provider call (the decline latch included), and
//! keeping the notifications refused for on-call.
//!
//! One notification event is one transaction: it is deduplicated on (provider, provider
//! reference, event type), its capture is found by the provider's reference or ours
//! (`order/cause`), and the capture moves from pending (or in flight: the notification may
//! overtake the answer) to its outcome. Locks follow the rest of the ledger's order: the
//! order row first, then the capture row.

use sqlx::{PgPool, Row};

use super::captures::latch;
use super::ledger::CaptureKind;
use super::{Ctx, StorageError, outside};
use crate::sanitize;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Capture,
    Release,
    Other,
}

/// The outcome a trusted notification carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Succeeded {
        reference: Option<String>,
    },
    Declined {
        code: String,
        message: String,
    },
    /// Definitely not done, and not a decline: an operator looks (attention).
    Failed {
        reason: String,
    },
}

impl Settlement {
    fn label(&self) -> &'static str {
        match self {
            Settlement::Succeeded { .. } => "succeeded",
            Settlement::Declined { .. } => "declined",
            Settlement::Failed { .. } => "failed",
        }
    }
}

/// What to do with the capture a notification names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Settle(Settlement),
    /// Make the capture due for a read-back now.
    ReadBack,
    Ignore,
}

/// A notification event to record.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// The configured provider name.
    pub provider: &'a str,
    /// The provider's reference; with `event_type`, the dedupe key.
    pub reference: &'a str,
    pub event_type: &'a str,
    pub authorization_id: Option<&'a str>,
    /// Our reference as echoed (`order/cause`, `order/release`).
    pub merchant_reference: Option<&'a str>,
    pub subject: Subject,
    pub effect: &'a Effect,
    /// The body as received (it is stored through the text boundary).
    pub body: &'a str,
}

/// What became of a notification event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Settled its capture.
    Applied,
    /// Made its capture due for a read-back.
    ReadBack,
    /// No capture of ours carries its reference.
    Unmatched,
    /// Nothing to do (an event the worker does not act on, or a capture already settled the
    /// same way).
    Ignored,
    /// Contradicts a capture already settled the other way; recorded for an operator.
    Conflict,
    /// Seen before: nothing changed.
    Duplicate,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Applied => "applied",
            Disposition::ReadBack => "read_back",
            Disposition::Unmatched => "unmatched",
            Disposition::Ignored => "ignored",
            Disposition::Conflict => "conflict",
            Disposition::Duplicate => "duplicate",
        }
    }
}

/// The capture a notification named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedCapture {
    pub capture_id: i64,
    pub order_id: String,
    pub kind: CaptureKind,
    pub amount: i64,
    pub currency: String,
    pub authorization_id: String,
    /// Its status before the notification.
    pub status: String,
}

/// The result of recording one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub disposition: Disposition,
    pub capture: Option<MatchedCapture>,
    pub detail: Option<String>,
}

const UNSETTLED: &[&str] = &["in_flight", "pending", "retrying", "attention"];

/// Records one notification event and applies it, in one transaction.
pub async fn record_event(pool: &PgPool, ev: &NewEvent<'_>) -> Result<Recorded, StorageError> {
    const CTX: &str = "recording a provider notification";
    // Every field came from outside: a NUL in any of them would make the notification
    // impossible to record (and the provider would send it forever).
    let (provider, reference, event_type) = (
        outside(ev.provider),
        outside(ev.reference),
        outside(ev.event_type),
    );
    let authorization_id = ev.authorization_id.map(outside);
    let merchant_reference = ev.merchant_reference.map(outside);
    let body = sanitize::text(ev.body, sanitize::BODY_CHARS);
    let ev = &NewEvent {
        provider: &provider,
        reference: &reference,
        event_type: &event_type,
        authorization_id: authorization_id.as_deref(),
        merchant_reference: merchant_reference.as_deref(),
        subject: ev.subject,
        effect: ev.effect,
        body: &body,
    };
    let mut tx = pool.begin().await.ctx(CTX)?;
    // Two deliveries of the same event at once: the second waits, then sees the first.
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 7412))")
        .bind(format!(
            "{}\u{1f}{}\u{1f}{}",
            ev.provider, ev.reference, ev.event_type
        ))
        .execute(&mut *tx)
        .await
        .ctx(CTX)?;
    let seen: bool = sqlx::query_scalar(
        "select exists (select 1 from webhook_events
                        where provider = $1 and provider_reference = $2 and event_type = $3)",
    )
    .bind(ev.provider)
    .bind(ev.reference)
    .bind(ev.event_type)
    .fetch_one(&mut *tx)
    .await
    .ctx(CTX)?;
    if seen {
        return Ok(Recorded {
            disposition: Disposition::Duplicate,
            capture: None,
            detail: None,
        });
    }
    let found = match ev.subject {
        Subject::Other => None,
        Subject::Capture | Subject::Release => find_capture(&mut tx, ev).await?,
    };
    let (disposition, capture, detail) = match found {
        None if ev.subject == Subject::Other => (Disposition::Ignored, None, None),
        None => (
            Disposition::Unmatched,
            None,
            Some("no capture of this provider carries this reference".to_owned()),
        ),
        Some((capture_id, order_id)) => {
            // The order row first, as intake and the decline latch take it.
            sqlx::query("select 1 from orders where order_id = $1 for update")
                .bind(&order_id)
                .execute(&mut *tx)
                .await
                .ctx("locking the order for a notification")?;
            let c = lock_capture(&mut tx, capture_id).await?;
            let (disposition, detail) = apply(&mut tx, &c, ev.effect).await?;
            (disposition, Some(c.matched), detail)
        }
    };
    let outcome = match ev.effect {
        Effect::Settle(s) => Some(s.label()),
        Effect::ReadBack | Effect::Ignore => None,
    };
    sqlx::query(
        "insert into webhook_events (provider, provider_reference, event_type, disposition,
             capture_id, outcome, merchant_reference, authorization_id, detail, body)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(ev.provider)
    .bind(ev.reference)
    .bind(ev.event_type)
    .bind(disposition.as_str())
    .bind(capture.as_ref().map(|c| c.capture_id))
    .bind(outcome)
    .bind(ev.merchant_reference)
    .bind(ev.authorization_id)
    .bind(detail.as_deref())
    .bind(ev.body)
    .execute(&mut *tx)
    .await
    .ctx(CTX)?;
    tx.commit().await.ctx(CTX)?;
    Ok(Recorded {
        disposition,
        capture,
        detail,
    })
}

/// The capture the event names: by the provider's reference, else by ours. Release events
/// carry `order/release` and name the order's release or void.
async fn find_capture(
    tx: &mut sqlx::PgConnection,
    ev: &NewEvent<'_>,
) -> Result<Option<(i64, String)>, StorageError> {
    let release = ev.subject == Subject::Release;
    let row = sqlx::query(
        "select capture_id, order_id from captures
         where provider = $1
           and ($2::text is null or authorization_id = $2)
           and case when $5 then kind in ('release', 'void') else kind = 'capture' end
           and (provider_reference = $3
                or ($4::text is not null
                    and case when $5 then order_id || '/release' = $4
                             else order_id || '/' || cause_id = $4 end))
         order by (provider_reference is not distinct from $3) desc, sequence desc
         limit 1",
    )
    .bind(ev.provider)
    .bind(ev.authorization_id)
    .bind(ev.reference)
    .bind(ev.merchant_reference)
    .bind(release)
    .fetch_optional(&mut *tx)
    .await
    .ctx("finding the capture a notification names")?;
    Ok(row.map(|r| (r.get("capture_id"), r.get("order_id"))))
}

struct Locked {
    matched: MatchedCapture,
    sequence: i32,
}

async fn lock_capture(
    tx: &mut sqlx::PgConnection,
    capture_id: i64,
) -> Result<Locked, StorageError> {
    const CTX: &str = "locking the capture a notification names";
    let r = sqlx::query(
        "select capture_id, order_id, sequence, kind, amount, currency, authorization_id, status
         from captures where capture_id = $1 for update",
    )
    .bind(capture_id)
    .fetch_one(&mut *tx)
    .await
    .ctx(CTX)?;
    let kind_text: String = r.get("kind");
    let kind = CaptureKind::parse(&kind_text).ok_or_else(|| StorageError::Corrupt {
        context: CTX,
        detail: format!("unknown capture kind {kind_text:?}"),
    })?;
    Ok(Locked {
        matched: MatchedCapture {
            capture_id: r.get("capture_id"),
            order_id: r.get("order_id"),
            kind,
            amount: r.get("amount"),
            currency: r.get::<String, _>("currency").trim().to_owned(),
            authorization_id: r.get("authorization_id"),
            status: r.get("status"),
        },
        sequence: r.get("sequence"),
    })
}

/// Applies the event's effect to its locked capture.
async fn apply(
    tx: &mut sqlx::PgConnection,
    c: &Locked,
    effect: &Effect,
) -> Result<(Disposition, Option<String>), StorageError> {
    let status = c.matched.status.as_str();
    let settlement = match effect {
        Effect::Ignore => return Ok((Disposition::Ignored, None)),
        Effect::ReadBack => {
            // Only a capture waiting for its outcome is brought forward; one in flight is
            // being handled right now, a settled one needs nothing.
            sqlx::query(
                "update captures set next_attempt_at = now(), updated_at = now()
                 where capture_id = $1 and status in ('pending', 'retrying')",
            )
            .bind(c.matched.capture_id)
            .execute(&mut *tx)
            .await
            .ctx("bringing a read-back forward")?;
            return Ok((Disposition::ReadBack, None));
        }
        Effect::Settle(s) => s,
    };
    if !UNSETTLED.contains(&status) {
        let agrees = matches!(
            (status, settlement),
            ("succeeded", Settlement::Succeeded { .. }) | ("declined", Settlement::Declined { .. })
        );
        let detail = format!(
            "the capture is {status}; the notification says {}",
            settlement.label()
        );
        return Ok(if agrees {
            (Disposition::Ignored, Some(detail))
        } else {
            (Disposition::Conflict, Some(detail))
        });
    }
    let (new_status, reference, error, decline_code) = match settlement {
        Settlement::Succeeded { reference } => ("succeeded", reference.clone(), None, None),
        Settlement::Declined { code, message } => {
            ("declined", None, Some(message.clone()), Some(code.clone()))
        }
        Settlement::Failed { reason } => ("attention", None, Some(reason.clone()), None),
    };
    let (error, decline_code) = (
        error.as_deref().map(outside),
        decline_code.as_deref().map(outside),
    );
    let terminal = new_status != "attention";
    sqlx::query(
        "update captures set status = $2,
             provider_reference = coalesce(provider_reference, $3),
             next_attempt_at = null,
             last_error = $4,
             needs_lookup = false,
             decline_code = coalesce($5, decline_code),
             lease_owner = null, lease_expires_at = null,
             completed_at = case when $6 then now() else completed_at end,
             accepted_at = coalesce(accepted_at, now()),
             updated_at = now()
         where capture_id = $1",
    )
    .bind(c.matched.capture_id)
    .bind(new_status)
    .bind(reference)
    .bind(error)
    .bind(decline_code.clone())
    .bind(terminal)
    .execute(&mut *tx)
    .await
    .ctx("settling a capture from a notification")?;
    if let Some(code) = decline_code {
        latch(tx, &c.matched.order_id, c.sequence, c.matched.amount, &code).await?;
    }
    Ok((Disposition::Applied, None))
}

/// Why a notification was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionReason {
    BadSignature,
    NotConfigured,
    Malformed,
    UnknownProvider,
    NotSupported,
}

impl RejectionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionReason::BadSignature => "bad_signature",
            RejectionReason::NotConfigured => "not_configured",
            RejectionReason::Malformed => "malformed",
            RejectionReason::UnknownProvider => "unknown_provider",
            RejectionReason::NotSupported => "not_supported",
        }
    }
}

/// Records a refused notification for on-call; `detail` and `body` are stored through the
/// text boundary.
pub async fn record_rejection(
    pool: &PgPool,
    provider: &str,
    reason: RejectionReason,
    detail: &str,
    body: &str,
) -> Result<(), StorageError> {
    sqlx::query(
        "insert into webhook_rejections (provider, reason, detail, body) values ($1, $2, $3, $4)",
    )
    .bind(outside(provider))
    .bind(reason.as_str())
    .bind(outside(detail))
    .bind(sanitize::text(body, sanitize::BODY_CHARS))
    .execute(pool)
    .await
    .ctx("recording a refused notification")?;
    Ok(())
}

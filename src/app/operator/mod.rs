//! Operator and finance commands: `report`, `order show`, `order resume`, `capture retry`,
//! `dead-letter list` / `requeue` and `provider reconcile`.
//!
//! Each command has a function that takes a [`Store`] (and the adapters it needs) and returns
//! data, so tests call it directly; the functions at the bottom of this file are the command
//! line's glue: connect, call, print the result on stdout and progress on stderr. None of them
//! moves money by itself: a retried, resumed or requeued capture is sent by the running
//! worker's sweeper, through the same executor as every other capture.

pub mod dead_letters;
pub mod orders;
pub mod reconcile;
pub mod report;

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{Duration as ChronoDuration, NaiveDate, Utc};
use thiserror::Error;

use crate::cli::{CaptureCommand, DeadLetterCommand, OrderCommand, ProviderCommand, ReportArgs};
use crate::config::Settings;
use crate::domain::plan::ResumeError;
use crate::queue::publisher::PublishError;
use crate::storage::operator::{self as sql, AuthorizationScope, RejectionFilter, RetryResult};
use crate::storage::{StorageError, Store};

use super::providers::Providers;
use dead_letters::{RequeueResult, SkipReason};

/// Why an operator command could not do what was asked. Nothing was changed unless the
/// variant says so.
#[derive(Debug, Error)]
pub enum OperatorError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("no {what} {id}")]
    NotFound { what: &'static str, id: String },
    #[error(
        "capture {capture_id} is {status}, not attention: only a capture that needs attention is put back in the queue"
    )]
    NotInAttention { capture_id: i64, status: String },
    #[error("order {order_id} cannot be resumed: {source}")]
    Resume {
        order_id: String,
        source: ResumeError,
    },
    #[error(
        "authorization {authorization_id} already belongs to order {owner}; a resume needs an authorization no order has used"
    )]
    AuthorizationInUse {
        authorization_id: String,
        owner: String,
    },
    #[error(
        "provider {0:?} is not configured on this worker (providers.{0}.base_url); configure it to use this command"
    )]
    UnknownProvider(String),
    #[error("{0}")]
    Invalid(String),
    #[error("connecting to RabbitMQ (amqp.url) to requeue messages: {0}")]
    Broker(#[source] lapin::Error),
    #[error(transparent)]
    Publish(#[from] Box<PublishError>),
}

/// Progress of a long command on stderr: a live counter on a terminal, a line every tenth of
/// the way otherwise (logs, CI).
pub struct Progress {
    label: &'static str,
    total: usize,
    done: usize,
    tty: bool,
    started: Instant,
}

impl Progress {
    pub fn new(label: &'static str, total: usize) -> Progress {
        Progress {
            label,
            total,
            done: 0,
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    /// One item done; `note` says which.
    pub fn step(&mut self, note: &str) {
        self.done += 1;
        if self.tty {
            eprint!(
                "\r\x1b[2K{}: {}/{} {note}",
                self.label, self.done, self.total
            );
        } else if self.done == self.total || self.done.is_multiple_of((self.total / 10).max(1)) {
            eprintln!("{}: {}/{} {note}", self.label, self.done, self.total);
        }
    }

    /// Ends the counter with a summary and the time taken.
    pub fn finish(&self, summary: &str) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
        eprintln!(
            "{}: {summary} in {:.2} s",
            self.label,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Aligned columns; numbers right-aligned.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    let mut numeric = vec![true; headers.len()];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(headers.len()) {
            widths[i] = widths[i].max(cell.chars().count());
            if !cell.is_empty() && cell.parse::<i64>().is_err() {
                numeric[i] = false;
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if numeric[i] {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                if i + 1 < cells.len() {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// RFC 4180 CSV with a header row; fields with a comma, quote or line break are quoted.
pub fn csv(headers: &[&str], rows: &[Vec<String>]) -> String {
    let field = |f: &str| {
        if f.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", f.replace('"', "\"\""))
        } else {
            f.to_owned()
        }
    };
    let mut out = String::new();
    for row in std::iter::once(headers.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .chain(rows.iter().cloned())
    {
        let cells: Vec<String> = row.iter().map(|c| field(c)).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

async fn connect(settings: &Settings) -> anyhow::Result<Store> {
    Store::connect(&settings.database, false)
        .await
        .context("connecting to PostgreSQL (database.url)")
}

/// `capture-worker report`.
pub async fn report(settings: Settings, args: ReportArgs) -> anyhow::Result<()> {
    let to = args.to.unwrap_or_else(|| Utc::now().date_naive());
    if to < args.from {
        bail!("--to {to} is before --from {}", args.from);
    }
    let store = connect(&settings).await?;
    let progress = Progress::new("report", 1);
    eprintln!("report: reading {} to {} (UTC days)…", args.from, to);
    let r = report::build(&store, args.from, to)
        .await
        .map_err(|e| anyhow::anyhow!(report_failure(&e, args.from, to)))?;
    progress.finish(&format!("{} day × currency × provider rows", r.days.len()));
    print!("{}", report::render(&r, args.format)?);
    Ok(())
}

/// What `report` says when the ledger could not be read: what failed and what to do, not the
/// database's own text.
fn report_failure(e: &OperatorError, from: NaiveDate, to: NaiveDate) -> String {
    let code = match e {
        OperatorError::Storage(
            StorageError::Permanent {
                source: sqlx::Error::Database(db),
                ..
            }
            | StorageError::Retryable {
                source: sqlx::Error::Database(db),
                ..
            },
        ) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    let what = match (e, code.as_deref()) {
        (_, Some(c)) if c.starts_with("22") => format!(
            "PostgreSQL could not compute the reconciliation figures (SQLSTATE {c}: a value out of range or invalid); run the report day by day to find the day, and tell the payments team"
        ),
        (_, Some("42501")) => "the database user may not read the reconciliation views (SQLSTATE 42501); run the report as a member of capture_finance or capture_operator".to_owned(),
        (_, Some(c)) if c.starts_with("42") => format!(
            "the reconciliation views are missing or out of date (SQLSTATE {c}); apply the migrations with `capture-worker migrate`"
        ),
        (OperatorError::Storage(StorageError::Retryable { .. }), _) => {
            "PostgreSQL is unavailable; check database.url and try again".to_owned()
        }
        (OperatorError::Storage(StorageError::Corrupt { detail, .. }), _) => {
            format!("the reconciliation views returned an unexpected value ({detail})")
        }
        (_, Some(c)) => format!("PostgreSQL refused the query (SQLSTATE {c})"),
        (other, None) => other.to_string(),
    };
    format!("report for {from} to {to} failed: {what}")
}

/// `capture-worker order show|resume`.
pub async fn order(settings: Settings, command: OrderCommand) -> anyhow::Result<()> {
    let store = connect(&settings).await?;
    match command {
        OrderCommand::Show { order_id, format } => {
            let story = orders::story(&store, &order_id).await?;
            print!("{}", shown(&orders::render_story(&story, format)?));
        }
        OrderCommand::Resume {
            order_id,
            authorization,
            amount,
            expires_at,
        } => {
            let providers =
                Providers::from_settings(&settings).context("building provider adapters")?;
            let outcome = orders::resume(
                &store,
                &providers,
                settings.capture.shipping_policy.into(),
                &orders::ResumeRequest {
                    order_id: &order_id,
                    authorization_id: &authorization,
                    amount,
                    expires_at,
                },
            )
            .await?;
            print!("{}", orders::render_resume(&outcome));
        }
    }
    Ok(())
}

/// `capture-worker capture retry`.
pub async fn capture(settings: Settings, command: CaptureCommand) -> anyhow::Result<()> {
    let store = connect(&settings).await?;
    match command {
        CaptureCommand::Retry {
            capture_id,
            read_back,
        } => {
            let c = retry_capture(&store, capture_id, read_back).await?;
            println!(
                "capture {} (order {}, #{} {} {} {}{}) is back in the queue, due now, with key {}; the running worker sends it within capture.sweep_interval_ms{}",
                c.capture_id,
                c.order_id,
                c.sequence,
                c.kind,
                c.amount,
                c.currency,
                if c.is_final { ", final" } else { "" },
                c.idempotency_key,
                if read_back {
                    ", after reading the payment back"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

/// Puts a capture in `attention` back in the queue (see [`sql::retry_capture`]).
pub async fn retry_capture(
    store: &Store,
    capture_id: i64,
    read_back: bool,
) -> Result<sql::RequeuedCapture, OperatorError> {
    match sql::retry_capture(store.pool(), capture_id, read_back).await? {
        RetryResult::Requeued(c) => {
            tracing::info!(event = "capture_retried_by_operator", capture_id, order_id = %c.order_id, read_back, "capture put back in the queue");
            Ok(c)
        }
        RetryResult::NotFound => Err(OperatorError::NotFound {
            what: "capture",
            id: capture_id.to_string(),
        }),
        RetryResult::NotInAttention { status } => {
            Err(OperatorError::NotInAttention { capture_id, status })
        }
    }
}

/// `capture-worker dead-letter list|requeue`.
pub async fn dead_letter(settings: Settings, command: DeadLetterCommand) -> anyhow::Result<()> {
    let store = connect(&settings).await?;
    match command {
        DeadLetterCommand::List {
            all,
            reason,
            order,
            limit,
            format,
        } => {
            let rows = sql::list_rejections(
                store.pool(),
                &RejectionFilter {
                    include_requeued: all,
                    reason,
                    order_id: order,
                    limit: Some(limit),
                },
            )
            .await?;
            print!("{}", shown(&dead_letters::render_list(&rows, format)?));
        }
        DeadLetterCommand::Requeue {
            ids,
            all,
            reason,
            order,
        } => {
            let ids = if all {
                sql::list_rejections(
                    store.pool(),
                    &RejectionFilter {
                        include_requeued: false,
                        reason,
                        order_id: order,
                        limit: None,
                    },
                )
                .await?
                .into_iter()
                .map(|r| r.rejection_id)
                .collect()
            } else {
                ids
            };
            let requeuer = dead_letters::Requeuer::connect(store, &settings).await?;
            let mut progress = Progress::new("requeue", ids.len());
            let mut results = Vec::with_capacity(ids.len());
            for id in ids {
                let result = requeuer.requeue(id).await?;
                progress.step(&result.to_string());
                results.push(result);
            }
            requeuer.close().await;
            let sent = results.iter().filter(|r| r.is_requeued()).count();
            progress.finish(&format!(
                "{sent} requeued, {} skipped",
                results.len() - sent
            ));
            print!("{}", dead_letters::render_requeue(&results));
            let missing: Vec<String> = results
                .iter()
                .filter_map(|r| match r {
                    RequeueResult::Skipped {
                        rejection_id,
                        why: SkipReason::NotFound,
                    } => Some(rejection_id.to_string()),
                    _ => None,
                })
                .collect();
            if !missing.is_empty() {
                bail!(
                    "no rejection {} exists: nothing was done for {}; `capture-worker dead-letter list --all` shows the ids",
                    missing.join(", "),
                    if missing.len() == 1 { "it" } else { "them" }
                );
            }
        }
    }
    Ok(())
}

/// Outside text the ledger holds (message lines, provider errors, notification bodies) as an
/// operator command prints it: through the text boundary, so rows stored before it existed
/// show no card number or secret either.
fn shown(output: &str) -> String {
    crate::sanitize::text(output, usize::MAX)
}

/// `capture-worker provider reconcile`.
pub async fn provider(settings: Settings, command: ProviderCommand) -> anyhow::Result<()> {
    let store = connect(&settings).await?;
    match command {
        ProviderCommand::Reconcile {
            order,
            since,
            format,
        } => {
            let scope = match (order, since) {
                (Some(order), _) => AuthorizationScope::Order(order),
                (None, Some(since)) => AuthorizationScope::Since(since),
                (None, None) => AuthorizationScope::Since(Utc::now() - ChronoDuration::hours(24)),
            };
            let providers =
                Providers::from_settings(&settings).context("building provider adapters")?;
            let authorizations = sql::authorizations(store.pool(), &scope).await?;
            let mut progress = Progress::new("reconcile", authorizations.len());
            let result =
                reconcile::reconcile(&providers, &authorizations, |note| progress.step(note)).await;
            progress.finish(&format!(
                "{} authorizations checked, {} match, {} differences",
                result.checked,
                result.matched,
                result.differences.len()
            ));
            print!("{}", reconcile::render(&result, format)?);
        }
    }
    Ok(())
}

//! Operator and finance commands: `report`, `order show`, `order resume`, `capture retry`,
//! `dead-letter list` / `requeue` and `provider reconcile`.
//!
//! Each command has a function that takes a [`Store`] (and the adapters it needs) and returns
//! data, so tests call it directly; the functions at the bottom of this file run one request
//! ([`ReportRequest`], [`OrderRequest`], …, which the command line maps its arguments to):
//! connect, call, print the result on stdout and progress on stderr. None of them
//! moves money by itself: a retried, resumed or requeued capture is sent by the running
//! worker's sweeper, through the same executor as every other capture.

pub mod dead_letters;
pub mod orders;
pub mod reconcile;
pub mod report;
pub mod units;

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use thiserror::Error;

use crate::config::Settings;
use crate::domain::plan::ResumeError;
use crate::queue::publisher::PublishError;
use crate::storage::operator::{self as sql, AuthorizationScope, RejectionFilter, RetryResult};
use crate::storage::{StorageError, Store};

use super::providers::Providers;
use dead_letters::{RequeueResult, SkipReason};
use orders::StoryFormat;
use units::Units;

/// How a report or a list is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns for a terminal.
    Table,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One JSON document.
    Json,
}

/// `report`: reconciliation for the UTC days `from` to `to` (today when absent), included.
#[derive(Debug, Clone)]
pub struct ReportRequest {
    pub from: NaiveDate,
    pub to: Option<NaiveDate>,
    pub format: OutputFormat,
    /// Major units apply to the table and CSV only.
    pub units: Units,
}

/// `order show` or `order resume`.
#[derive(Debug, Clone)]
pub enum OrderRequest {
    /// One order's whole story.
    Show {
        order_id: String,
        format: StoryFormat,
        /// Major units apply to the text only.
        units: Units,
    },
    /// Lift the order's decline latch with a new authorization (see [`orders::resume`]).
    Resume {
        order_id: String,
        /// The new authorization's id at the order's provider.
        authorization: String,
        /// Its amount, in minor units of the order's currency.
        amount: i64,
        expires_at: Option<DateTime<Utc>>,
    },
}

/// `capture retry`: put a capture that needs attention back in the queue (see
/// [`retry_capture`]).
#[derive(Debug, Clone)]
pub struct CaptureRetryRequest {
    pub capture_id: i64,
    /// Read the payment back before sending.
    pub read_back: bool,
}

/// `dead-letter list` or `dead-letter requeue`.
#[derive(Debug, Clone)]
pub enum DeadLetterRequest {
    /// Refused messages, oldest first.
    List {
        /// Include messages already requeued.
        all: bool,
        reason: Option<String>,
        order: Option<String>,
        limit: i64,
        format: OutputFormat,
    },
    /// Publish refused messages again: these `ids`, or with `all` every one not yet requeued
    /// (narrowed by `reason` and `order`).
    Requeue {
        ids: Vec<i64>,
        all: bool,
        reason: Option<String>,
        order: Option<String>,
        /// Say what would be requeued; change nothing and do not connect to RabbitMQ.
        dry_run: bool,
    },
}

/// `provider reconcile`: the authorizations of one order, or those active since a time (the
/// last 24 hours when neither is given).
#[derive(Debug, Clone)]
pub struct ReconcileRequest {
    pub order: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub format: OutputFormat,
}

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

/// Progress of a long command. On a terminal, a bar on stderr (indicatif) and a summary line
/// at the end. Otherwise nothing is drawn (`ProgressDrawTarget::hidden`), so stderr keeps
/// only log lines (one JSON object each with `telemetry.log_format = "json"`), and the notes
/// and the summary are log events (`event = "operator_progress"`).
pub struct Progress {
    label: &'static str,
    bar: indicatif::ProgressBar,
    tty: bool,
    started: Instant,
}

impl Progress {
    pub fn new(label: &'static str, total: usize) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let target = if tty {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        };
        let bar = indicatif::ProgressBar::with_draw_target(Some(total as u64), target);
        // A fixed template: it parses, so the fallback is only there to avoid a panic path.
        let style = indicatif::ProgressStyle::with_template(
            "{prefix}: [{bar:30}] {pos}/{len} {elapsed} (eta {eta}) {wide_msg}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(label);
        Progress {
            label,
            bar,
            tty,
            started: Instant::now(),
        }
    }

    /// Something worth saying before the work starts.
    pub fn note(&self, note: &str) {
        if self.tty {
            self.bar.suspend(|| eprintln!("{}: {note}", self.label));
        } else {
            tracing::info!(
                event = "operator_progress",
                command = self.label,
                note,
                "{note}"
            );
        }
    }

    /// `done` items done so far, for work counted elsewhere.
    pub fn set_position(&self, done: u64) {
        self.bar.set_position(done);
    }

    /// One item done; `note` says which.
    pub fn step(&mut self, note: &str) {
        self.bar.set_message(note.to_owned());
        self.bar.inc(1);
    }

    /// Ends the bar with a summary and the time taken.
    pub fn finish(&self, summary: &str) {
        self.bar.finish_and_clear();
        let seconds = self.started.elapsed().as_secs_f64();
        if self.tty {
            eprintln!("{}: {summary} in {seconds:.2} s", self.label);
        } else {
            tracing::info!(
                event = "operator_progress",
                command = self.label,
                done = self.bar.position(),
                seconds,
                "{summary}"
            );
        }
    }
}

/// Aligned columns for a terminal, without borders; columns whose cells are all numbers are
/// right-aligned. Cells are shown as they are: no wrapping or truncation.
pub fn table<C: AsRef<str>>(headers: &[&str], rows: &[Vec<C>]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_header(headers.to_vec());
    for row in rows {
        t.add_row(row.iter().map(AsRef::as_ref).collect::<Vec<&str>>());
    }
    for (i, column) in t.column_iter_mut().enumerate() {
        // Two spaces between columns, none before the first.
        column.set_padding((if i == 0 { 0 } else { 1 }, 1));
        let numeric = rows.iter().all(|row| {
            row.get(i)
                .is_none_or(|c| c.as_ref().is_empty() || is_number(c.as_ref()))
        });
        if numeric && !rows.is_empty() {
            column.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    let mut out = t.trim_fmt();
    out.push('\n');
    out
}

/// `-?digits(.digits)?`: how we write counts and amounts (minor or major units).
fn is_number(s: &str) -> bool {
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    [whole, fraction]
        .iter()
        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

/// One CSV cell. Text is anything that may come from a message or a provider (ids, reasons,
/// details, statuses) and is guarded against formula injection; a number is a count or amount
/// we formatted ourselves from an integer (`-?digits`, or `-?digits.digits` in major units) and
/// is written as it is, so a spreadsheet reads it as a number and a negative amount stays
/// negative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Text(String),
    Number(String),
}

impl Cell {
    pub fn text(s: impl Into<String>) -> Cell {
        Cell::Text(s.into())
    }

    pub fn number(n: impl ToString) -> Cell {
        Cell::Number(n.to_string())
    }

    /// The cell as written to CSV: text starting with `=`, `+`, `-`, `@`, a tab or a carriage
    /// return (what spreadsheet software reads as the start of a formula) gets a leading `'`,
    /// as OWASP's CSV injection guidance advises.
    pub fn csv_field(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Cell::Text(s) if s.starts_with(['=', '+', '-', '@', '\t', '\r']) => {
                format!("'{s}").into()
            }
            Cell::Text(s) | Cell::Number(s) => s.as_str().into(),
        }
    }
}

impl AsRef<str> for Cell {
    fn as_ref(&self) -> &str {
        match self {
            Cell::Text(s) | Cell::Number(s) => s,
        }
    }
}

/// RFC 4180 CSV (CRLF line ends) with a header row, written by the `csv` crate; text cells are
/// guarded against formula injection ([`Cell::csv_field`]).
pub fn csv(headers: &[&str], rows: &[Vec<Cell>]) -> Result<String, OperatorError> {
    let failed = |e: &dyn std::fmt::Display| OperatorError::Invalid(format!("writing CSV: {e}"));
    let mut w = ::csv::WriterBuilder::new()
        .terminator(::csv::Terminator::CRLF)
        .from_writer(Vec::new());
    w.write_record(headers).map_err(|e| failed(&e))?;
    for row in rows {
        w.write_record(row.iter().map(|c| c.csv_field().into_owned()))
            .map_err(|e| failed(&e))?;
    }
    let bytes = w.into_inner().map_err(|e| failed(&e))?;
    String::from_utf8(bytes).map_err(|e| failed(&e))
}

async fn connect(settings: &Settings) -> anyhow::Result<Store> {
    Store::connect(&settings.database, false)
        .await
        .context("connecting to PostgreSQL (database.url)")
}

/// `capture-worker report`.
pub async fn report(settings: Settings, request: ReportRequest) -> anyhow::Result<()> {
    let to = request.to.unwrap_or_else(|| Utc::now().date_naive());
    if to < request.from {
        bail!("--to {to} is before --from {}", request.from);
    }
    units::only_for_people(request.units, request.format == OutputFormat::Json)?;
    let store = connect(&settings).await?;
    let progress = Progress::new("report", 1);
    progress.note(&format!("reading {} to {} (UTC days)…", request.from, to));
    let r = report::build(&store, request.from, to)
        .await
        .map_err(|e| anyhow::anyhow!(report_failure(&e, request.from, to)))?;
    progress.finish(&format!("{} day × currency × provider rows", r.days.len()));
    print!("{}", report::render_in(&r, request.format, request.units)?);
    Ok(())
}

/// What `report` says when the ledger could not be read: what failed and what to do, not the
/// database's own text.
fn report_failure(e: &OperatorError, from: NaiveDate, to: NaiveDate) -> String {
    let code = match e {
        OperatorError::Storage(e) => sql::sqlstate(e),
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
pub async fn order(settings: Settings, request: OrderRequest) -> anyhow::Result<()> {
    let store = connect(&settings).await?;
    match request {
        OrderRequest::Show {
            order_id,
            format,
            units,
        } => {
            units::only_for_people(units, format == StoryFormat::Json)?;
            let mut story = orders::story(&store, &order_id).await?;
            if units == Units::Major {
                story = units::story_in_major_units(&story)?;
            }
            print!("{}", shown(&orders::render_story(&story, format)?));
        }
        OrderRequest::Resume {
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
pub async fn capture(settings: Settings, request: CaptureRetryRequest) -> anyhow::Result<()> {
    let CaptureRetryRequest {
        capture_id,
        read_back,
    } = request;
    let store = connect(&settings).await?;
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
pub async fn dead_letter(settings: Settings, request: DeadLetterRequest) -> anyhow::Result<()> {
    let store = connect(&settings).await?;
    match request {
        DeadLetterRequest::List {
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
        DeadLetterRequest::Requeue {
            ids,
            all,
            reason,
            order,
            dry_run,
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
            let requeuer = if dry_run {
                dead_letters::Requeuer::dry_run(store)
            } else {
                dead_letters::Requeuer::connect(store, &settings).await?
            };
            let mut progress = Progress::new("requeue", ids.len());
            let mut results = Vec::with_capacity(ids.len());
            for id in ids {
                let result = requeuer.requeue(id).await?;
                progress.step(&result.to_string());
                results.push(result);
            }
            requeuer.close().await;
            let sent = results
                .iter()
                .filter(|r| r.is_requeued() || matches!(r, RequeueResult::WouldRequeue { .. }))
                .count();
            progress.finish(&format!(
                "{sent} {}, {} skipped",
                if dry_run {
                    "would be requeued (dry run)"
                } else {
                    "requeued"
                },
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

/// `capture-worker provider reconcile`: whether it found differences that need attention
/// (the binary then exits 1).
pub async fn provider(settings: Settings, request: ReconcileRequest) -> anyhow::Result<bool> {
    let ReconcileRequest {
        order,
        since,
        format,
    } = request;
    let store = connect(&settings).await?;
    let scope = match (order, since) {
        (Some(order), _) => AuthorizationScope::Order(order),
        (None, Some(since)) => AuthorizationScope::Since(since),
        (None, None) => AuthorizationScope::Since(Utc::now() - ChronoDuration::hours(24)),
    };
    let providers = Providers::from_settings(&settings).context("building provider adapters")?;
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
    Ok(result.needs_attention())
}

//! PostgreSQL: the ledger. Owns the pool, migrations, transactions and every SQL statement.
//!
//! Finance reads the views this schema defines; the worker writes through the functions here.
//! Errors are classified at this edge by SQLSTATE: retryable (connection loss, serialization
//! failure, deadlock, pool timeout), conflict (a named unique constraint), invariant (a check
//! or trigger that guards a promise refused the write) or permanent. Imports `domain` only,
//! and `sanitize`: every text that came from outside (a message's free text, a provider's
//! answer, a notification) passes through it on its way into the ledger.
//!
//! # Layout
//!
//! - `tx`        — [`LedgerTx`], the ledger's unit of work: [`Store::begin`] opens it, the use
//!   cases (intake, the expiry sweep, `order resume`) run their operations through its methods
//!   and commit it. Nothing outside `storage` names `sqlx` to write the ledger.
//! - `plans`     — a plan turned into rows: which capture rows a plan asks for, with which
//!   cause (`plans::PlanCause`) and what its decision is called. The one writer of a plan:
//!   `LedgerTx::record_plan`, and `IntakeBatch::record_plan` for intake's write set.
//! - `ledger`    — intake's SQL: the inbox, orders and their progress, parked messages,
//!   shipments, cancellations, capture rows and refusals; the batched intake's reads, and the
//!   one statement that writes intake's write set (`IntakeBatch`) for a batch or one message.
//! - `captures`  — execution's SQL: claims under a lease, provider calls and outcomes, the
//!   decline latch, due work.
//! - `deadlines` — the expiry sweep's SQL: open orders whose authorization expires soon.
//! - `webhooks`  — provider notifications, recorded once and settled.
//! - `operator`  — the operator and finance commands' SQL.
//! - `gauges`    — the read-only figures behind the ledger gauges on `/metrics`.

pub mod captures;
pub mod deadlines;
pub mod gauges;
pub mod ledger;
pub mod lifecycle;
pub mod operator;
pub mod outbox;
pub mod plans;
pub mod tx;
pub mod webhooks;

pub use tx::LedgerTx;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use thiserror::Error;

use crate::config::DatabaseSettings;

/// A pooled connection idle this long is pinged before it is handed out.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(5);

/// Migrations embedded in the binary, from `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A failed database operation, classified for the caller's decision.
#[derive(Debug, Error)]
pub enum StorageError {
    /// Try again: the connection dropped, the pool was exhausted, or PostgreSQL asked for a
    /// retry (serialization failure, deadlock, shutdown).
    #[error("{context}: database temporarily unavailable, retry: {source}")]
    Retryable {
        context: &'static str,
        source: sqlx::Error,
    },
    /// A unique constraint refused the write: someone else got there first.
    #[error("{context}: conflicts with existing data ({constraint})")]
    Conflict {
        context: &'static str,
        constraint: String,
    },
    /// A check or trigger that guards a promise refused the write: a bug, never retried.
    #[error("{context}: refused by the ledger's guard {constraint}: {message}")]
    Invariant {
        context: &'static str,
        /// The SQLSTATE.
        code: String,
        constraint: String,
        message: String,
    },
    /// Anything else: bad data read back, a missing table, a permission error.
    #[error("{context}: {source}")]
    Permanent {
        context: &'static str,
        source: sqlx::Error,
    },
    /// A row that does not parse into the domain (corrupt or hand-edited data).
    #[error("{context}: stored data is invalid: {detail}")]
    Corrupt {
        context: &'static str,
        detail: String,
    },
}

impl StorageError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Retryable { .. })
    }

    /// The data itself cannot be stored: a data exception (SQLSTATE class 22: a NUL in text, a
    /// number out of range, an invalid value) or an integrity rule (class 23) other than the
    /// unique conflicts callers expect. The same data fails the same way every time, so a
    /// message that meets it is refused rather than redelivered. A permission error (42501)
    /// is not one: granting the privilege fixes it.
    pub fn refuses_data(&self) -> bool {
        match self {
            StorageError::Permanent {
                source: sqlx::Error::Database(db),
                ..
            } => db.code().is_some_and(|c| c.starts_with("22")),
            StorageError::Invariant { code, .. } => code.starts_with("23"),
            _ => false,
        }
    }

    /// Classifies an sqlx error by SQLSTATE; `context` says what we were doing.
    pub fn classify(context: &'static str, source: sqlx::Error) -> StorageError {
        match &source {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => StorageError::Retryable { context, source },
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                let constraint = db.constraint().unwrap_or("").to_owned();
                match code.as_str() {
                    "23505" => StorageError::Conflict {
                        context,
                        constraint,
                    },
                    "23514" | "23503" | "23502" | "42501" => StorageError::Invariant {
                        context,
                        code,
                        constraint,
                        message: db.message().to_owned(),
                    },
                    c if c.starts_with("08")
                        || c == "40001"
                        || c == "40P01"
                        || c == "55P03"
                        || c.starts_with("57P")
                        || c == "53300" =>
                    {
                        StorageError::Retryable { context, source }
                    }
                    _ => StorageError::Permanent { context, source },
                }
            }
            _ => StorageError::Permanent { context, source },
        }
    }
}

/// Text that came from outside, as stored in a short column: NUL replaced, the worker's own
/// secrets removed, card numbers masked, capped (see [`crate::sanitize`]).
pub(crate) fn outside(text: &str) -> String {
    crate::sanitize::text(text, crate::sanitize::FIELD_CHARS)
}

/// Shorthand for mapping sqlx errors with a context.
pub(crate) trait Ctx<T> {
    fn ctx(self, context: &'static str) -> Result<T, StorageError>;
}

impl<T> Ctx<T> for Result<T, sqlx::Error> {
    fn ctx(self, context: &'static str) -> Result<T, StorageError> {
        self.map_err(|e| StorageError::classify(context, e))
    }
}

/// The database handle: a pool sized for intake plus concurrent captures.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects, creating the database first when it is missing and `create_missing` is set
    /// (the connecting role needs CREATEDB for that).
    pub async fn connect(
        settings: &DatabaseSettings,
        create_missing: bool,
    ) -> Result<Store, StorageError> {
        let options = PgConnectOptions::from_str(settings.url.expose())
            .ctx("parsing database.url")?
            .disable_statement_logging();
        if create_missing {
            ensure_database(&options).await?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
            // Ping only a connection that sat idle (a restart or a network cut may have
            // broken it unnoticed), not one used a moment ago: under load a ping on every
            // acquire is a round trip per transaction. A connection that breaks between
            // uses fails its statement with a retryable error, and callers retry.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_BEFORE_PING {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .ctx("connecting to PostgreSQL (database.url)")?;
        Ok(Store { pool })
    }

    pub fn from_pool(pool: PgPool) -> Store {
        Store { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations. Safe to run from several processes at once (sqlx takes an
    /// advisory lock).
    pub async fn migrate(&self) -> Result<(), StorageError> {
        MIGRATOR.run(&self.pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(source) => {
                StorageError::classify("applying migrations", source)
            }
            other => StorageError::Corrupt {
                context: "applying migrations",
                detail: other.to_string(),
            },
        })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("select 1").execute(&self.pool).await.is_ok()
    }
}

async fn ensure_database(options: &PgConnectOptions) -> Result<(), StorageError> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let admin = options.clone().database("postgres");
    let mut conn = match sqlx::PgConnection::connect_with(&admin).await {
        Ok(c) => c,
        // No access to the maintenance database: assume the target exists and let the real
        // connection report a clear error if it does not.
        Err(_) => return Ok(()),
    };
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .ctx("checking whether the database exists")?;
    if !exists {
        let quoted = name.replace('"', "\"\"");
        let sql = format!("create database \"{quoted}\"");
        match sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created the database"),
            // Another process created it at the same moment.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(StorageError::classify("creating the database", e)),
        }
    }
    let _ = conn.close().await;
    Ok(())
}

//! Command-line definitions (clap) and their mapping to the use cases' own request, format and
//! units types (`From` impls at the bottom); no behaviour lives here.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::app::operator::{
    self, CaptureRetryRequest, DeadLetterRequest, OrderRequest, ReconcileRequest, ReportRequest,
    orders, units,
};

/// Captures card payments as orders ship.
#[derive(Debug, Parser)]
#[command(name = "capture-worker", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume shipment events and capture payments until SIGTERM or Ctrl-C.
    Run {
        /// Do not apply database migrations at start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Serve the sandbox provider (Stripe's dialect at the root; Gr4vy, Adyen, Checkout.com,
    /// PayPal, Hellgate and the orchestrator under their prefixes) until SIGTERM or Ctrl-C.
    Sandbox {
        /// Address to listen on; defaults to `sandbox.listen`.
        #[arg(long)]
        listen: Option<String>,
        /// Latency added to every provider call, in milliseconds; defaults to `sandbox.latency_ms`.
        #[arg(long)]
        latency_ms: Option<u64>,
    },
    /// Publish contract messages (one JSON object, an array, or one object per line) from a
    /// file or `-` for standard input, with publisher confirms.
    Publish {
        /// The file to read, or `-`.
        file: PathBuf,
        /// W3C traceparent header to send with every message.
        #[arg(long)]
        traceparent: Option<String>,
    },
    /// Publish a sample set of orders and shipments to the running worker and print what was
    /// captured per order.
    Demo {
        /// How long to wait for the captures to settle, in seconds.
        #[arg(long, default_value_t = 30)]
        wait_seconds: u64,
        /// Amounts in minor units (default) or decimal major units.
        #[arg(long, value_enum, default_value_t = Units::Minor)]
        units: Units,
    },
    /// Print the effective settings as JSON, secrets redacted.
    Config,
    /// Reconciliation per UTC day, currency and provider for a date range: authorized,
    /// captured, released and declined amounts (minor units), provider calls by outcome, and
    /// the open exceptions.
    Report(ReportArgs),
    /// One order: its whole story, or resume it after a decline.
    #[command(subcommand)]
    Order(OrderCommand),
    /// One capture: put it back in the queue after fixing why it needs attention.
    #[command(subcommand)]
    Capture(CaptureCommand),
    /// Refused messages: list them, or send them back to the exchange once the cause is fixed.
    #[command(subcommand)]
    DeadLetter(DeadLetterCommand),
    /// The payment provider's view of our authorizations.
    #[command(subcommand)]
    Provider(ProviderCommand),
}

/// How a report or a list is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for a terminal.
    Table,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One JSON document.
    Json,
}

/// How amounts are printed in tables and CSV. JSON always carries integer minor units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Units {
    /// Integer minor units of the currency, as stored and sent: `6979` for $69.79. The default,
    /// for programs.
    #[default]
    Minor,
    /// Decimals in the currency's major unit with its ISO 4217 exponent: `69.79` for 6979 USD,
    /// `1000` for 1000 JPY, `1.234` for 1234 KWD. For people.
    Major,
}

/// How one order's story is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoryFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// First day, UTC (YYYY-MM-DD).
    #[arg(long)]
    pub from: NaiveDate,
    /// Last day, UTC, included; defaults to today.
    #[arg(long)]
    pub to: Option<NaiveDate>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Amounts in minor units (default) or decimal major units (table and CSV only).
    #[arg(long, value_enum, default_value_t = Units::Minor)]
    pub units: Units,
}

#[derive(Debug, Subcommand)]
pub enum OrderCommand {
    /// Lines, shipments, captures, every provider call with its outcome and trace id, and
    /// refused messages, in time order.
    Show {
        /// The order id, as in the messages.
        order_id: String,
        #[arg(long, value_enum, default_value_t = StoryFormat::Text)]
        format: StoryFormat,
        /// Amounts in minor units (default) or decimal major units (text only).
        #[arg(long, value_enum, default_value_t = Units::Minor)]
        units: Units,
    },
    /// Lift a decline latch with a new authorization: the declined and blocked captures'
    /// value is captured again under it, with new keys. Nothing else lifts the latch.
    Resume {
        /// The declined order.
        order_id: String,
        /// The new authorization's id at the order's provider.
        #[arg(long)]
        authorization: String,
        /// The new authorization's amount, in minor units of the order's currency.
        #[arg(long)]
        amount: i64,
        /// When the provider voids the new authorization (RFC 3339), if known.
        #[arg(long)]
        expires_at: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaptureCommand {
    /// Put a capture that needs attention back in the queue, due now, attempts reset. Its key,
    /// amount and final flag do not change.
    Retry {
        /// The capture id, as `order show` and reconciliation_captures show it.
        capture_id: i64,
        /// Read the payment back before sending: a capture the provider shows as done is
        /// recorded as succeeded; one it shows nothing for is sent under a new key.
        #[arg(long)]
        read_back: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// Refused messages not yet requeued, oldest first.
    List {
        /// Include messages already requeued.
        #[arg(long)]
        all: bool,
        /// Only this rejection reason (e.g. `order_declined`, `unknown_order`).
        #[arg(long)]
        reason: Option<String>,
        /// Only this order's messages.
        #[arg(long)]
        order: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Publish refused messages again to the exchange with their routing key, so that the
    /// worker processes them afresh. Only messages whose body we kept unmasked.
    Requeue {
        /// Rejection ids, as `dead-letter list` shows them.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<i64>,
        /// Every refused message not yet requeued (narrow with --reason and --order).
        #[arg(long)]
        all: bool,
        /// With --all: only this rejection reason.
        #[arg(long, requires = "all")]
        reason: Option<String>,
        /// With --all: only this order's messages.
        #[arg(long, requires = "all")]
        order: Option<String>,
        /// List what would be requeued and why the others would be skipped; publish nothing,
        /// change nothing, and do not connect to RabbitMQ.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// Compare the ledger with what the provider reports per authorization (captured,
    /// capturable, status) and list the differences. Reads only; never moves money.
    Reconcile {
        /// Only this order's authorizations.
        #[arg(long, conflicts_with = "since")]
        order: Option<String>,
        /// Authorizations authorized, replaced, closed or with capture activity since this
        /// time (RFC 3339); defaults to the last 24 hours.
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
}

impl From<OutputFormat> for operator::OutputFormat {
    fn from(format: OutputFormat) -> Self {
        match format {
            OutputFormat::Table => operator::OutputFormat::Table,
            OutputFormat::Csv => operator::OutputFormat::Csv,
            OutputFormat::Json => operator::OutputFormat::Json,
        }
    }
}

impl From<Units> for units::Units {
    fn from(units: Units) -> Self {
        match units {
            Units::Minor => units::Units::Minor,
            Units::Major => units::Units::Major,
        }
    }
}

impl From<StoryFormat> for orders::StoryFormat {
    fn from(format: StoryFormat) -> Self {
        match format {
            StoryFormat::Text => orders::StoryFormat::Text,
            StoryFormat::Json => orders::StoryFormat::Json,
        }
    }
}

impl From<ReportArgs> for ReportRequest {
    fn from(args: ReportArgs) -> Self {
        ReportRequest {
            from: args.from,
            to: args.to,
            format: args.format.into(),
            units: args.units.into(),
        }
    }
}

impl From<OrderCommand> for OrderRequest {
    fn from(command: OrderCommand) -> Self {
        match command {
            OrderCommand::Show {
                order_id,
                format,
                units,
            } => OrderRequest::Show {
                order_id,
                format: format.into(),
                units: units.into(),
            },
            OrderCommand::Resume {
                order_id,
                authorization,
                amount,
                expires_at,
            } => OrderRequest::Resume {
                order_id,
                authorization,
                amount,
                expires_at,
            },
        }
    }
}

impl From<CaptureCommand> for CaptureRetryRequest {
    fn from(command: CaptureCommand) -> Self {
        match command {
            CaptureCommand::Retry {
                capture_id,
                read_back,
            } => CaptureRetryRequest {
                capture_id,
                read_back,
            },
        }
    }
}

impl From<DeadLetterCommand> for DeadLetterRequest {
    fn from(command: DeadLetterCommand) -> Self {
        match command {
            DeadLetterCommand::List {
                all,
                reason,
                order,
                limit,
                format,
            } => DeadLetterRequest::List {
                all,
                reason,
                order,
                limit,
                format: format.into(),
            },
            DeadLetterCommand::Requeue {
                ids,
                all,
                reason,
                order,
                dry_run,
            } => DeadLetterRequest::Requeue {
                ids,
                all,
                reason,
                order,
                dry_run,
            },
        }
    }
}

impl From<ProviderCommand> for ReconcileRequest {
    fn from(command: ProviderCommand) -> Self {
        match command {
            ProviderCommand::Reconcile {
                order,
                since,
                format,
            } => ReconcileRequest {
                order,
                since,
                format: format.into(),
            },
        }
    }
}

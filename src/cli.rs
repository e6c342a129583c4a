//! Command-line definitions (clap) only; no behaviour lives here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Serve the sandbox provider (Stripe's dialect) until SIGTERM or Ctrl-C.
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
    },
    /// Print the effective settings as JSON, secrets redacted.
    Config,
    /// Measure end-to-end throughput and latency beside the machine's raw limits (RabbitMQ,
    /// PostgreSQL, HTTP) in one run, against the local services and an in-process sandbox.
    /// Prints a table and writes a JSON report. Uses fresh, uniquely named databases and
    /// queues and removes them at the end.
    Bench(BenchArgs),
}

/// Sizes of `capture-worker bench`; unset sizes take the full benchmark's (or `--quick`'s).
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench.json")]
    pub out: PathBuf,
    /// The smoke size: completes in a few seconds (CI).
    #[arg(long)]
    pub quick: bool,
    /// Orders per end-to-end run (full: 4000).
    #[arg(long)]
    pub orders: Option<usize>,
    /// Shipments per order, each one capture (full: 5; at most 50).
    #[arg(long)]
    pub shipments_per_order: Option<usize>,
    /// Provider latencies to run end to end, in milliseconds (full: 0,50,200).
    #[arg(long, value_delimiter = ',')]
    pub latencies: Option<Vec<u64>>,
    /// Shipments queued before the worker starts in the backlog drain; 0 skips it
    /// (full: 100000).
    #[arg(long)]
    pub backlog: Option<usize>,
    /// Provider latency during the backlog drain, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub backlog_latency: u64,
    /// Shipments queued for a slow provider so that captures pile up unsettled, for the
    /// worker's memory with that many in flight; 0 skips it (full: 12000, quick: 0).
    #[arg(long)]
    pub inflight: Option<usize>,
    /// Provider latency of that run, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub inflight_latency: u64,
    /// Seconds each raw-limit measurement runs (full: 5).
    #[arg(long)]
    pub raw_seconds: Option<f64>,
    /// Seconds the half-throughput latency run publishes (full: 10).
    #[arg(long)]
    pub paced_seconds: Option<f64>,
    /// The worker's `capture.concurrency` (orders whose captures are sent at once, one in
    /// flight per order). Provider latency is hidden only while concurrency ≥ throughput ×
    /// latency, so the benchmark runs with more than the default.
    #[arg(long, default_value_t = 1024)]
    pub concurrency: usize,
    /// The worker's `amqp.prefetch`: deliveries in hand at once, which is also the largest
    /// intake batch.
    #[arg(long, default_value_t = 256)]
    pub prefetch: u16,
    /// The worker binary to run as a child process (default: this executable).
    #[arg(long)]
    pub worker_binary: Option<PathBuf>,
}

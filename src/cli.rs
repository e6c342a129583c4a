//! Command-line definitions (clap) only; no behaviour lives here.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    },
    /// Print the effective settings as JSON, secrets redacted.
    Config,
}

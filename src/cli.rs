//! Command-line definitions (clap) only; no behaviour lives here.

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
    /// Print the effective settings as JSON, secrets redacted.
    Config,
}

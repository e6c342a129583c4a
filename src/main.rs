//! The `capture-worker` binary: parse the command line, load settings, start telemetry, run.

use anyhow::Context;
use clap::Parser;

use capture_worker::cli::{Cli, Command};
use capture_worker::config::Settings;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load().context("loading settings")?;
    let _telemetry = capture_worker::telemetry::init(&settings.telemetry);
    match cli.command {
        Command::Config => {
            let json = serde_json::to_string_pretty(&settings).context("printing settings")?;
            println!("{json}");
        }
    }
    Ok(())
}

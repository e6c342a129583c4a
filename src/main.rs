//! The `capture-worker` binary: parse the command line, load settings, start telemetry, run.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use capture_worker::app::{commands, operator};
use capture_worker::cli::{Cli, Command};
use capture_worker::config::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load().context("loading settings")?;
    let _telemetry = capture_worker::telemetry::init(&settings.telemetry);
    match cli.command {
        Command::Run { no_migrate } => commands::run(settings, !no_migrate).await,
        Command::Migrate => commands::migrate(settings).await,
        Command::Sandbox { listen, latency_ms } => {
            commands::serve_sandbox(settings, listen, latency_ms).await
        }
        Command::Publish { file, traceparent } => {
            commands::publish(settings, &file, traceparent.as_deref()).await
        }
        Command::Demo { wait_seconds } => {
            commands::demo(settings, Duration::from_secs(wait_seconds)).await
        }
        Command::Report(args) => operator::report(settings, args).await,
        Command::Order(cmd) => operator::order(settings, cmd).await,
        Command::Capture(cmd) => operator::capture(settings, cmd).await,
        Command::DeadLetter(cmd) => operator::dead_letter(settings, cmd).await,
        Command::Provider(cmd) => operator::provider(settings, cmd).await,
        Command::Config => {
            println!(
                "{}",
                serde_json::to_string_pretty(&settings).context("printing settings")?
            );
            Ok(())
        }
    }
}

//! The `capture-worker` binary: parse the command line, load settings, start telemetry, run.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use capture_worker::app::{commands, operator};
use capture_worker::cli::{Cli, Command};
use capture_worker::config::Settings;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // `provider reconcile` exits 1 when it finds differences, so it reports failure as 2
    // (docs/runbook.md); every other command fails with 1.
    let failed = if matches!(cli.command, Command::Provider(_)) {
        2
    } else {
        1
    };
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::from(failed)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::load().context("loading settings")?;
    // Whatever a command stores, logs or prints passes through this boundary.
    capture_worker::sanitize::register_secrets(settings.secrets());
    let _telemetry = capture_worker::telemetry::init(&settings.telemetry);
    let done = match cli.command {
        Command::Run { no_migrate } => commands::run(settings, !no_migrate).await,
        Command::Migrate => commands::migrate(settings).await,
        Command::Sandbox { listen, latency_ms } => {
            commands::serve_sandbox(settings, listen, latency_ms).await
        }
        Command::Publish { file, traceparent } => {
            commands::publish(settings, &file, traceparent.as_deref()).await
        }
        Command::Demo {
            wait_seconds,
            units,
        } => commands::demo(settings, Duration::from_secs(wait_seconds), units.into()).await,
        Command::Report(args) => operator::report(settings, args.into()).await,
        Command::Order(cmd) => operator::order(settings, cmd.into()).await,
        Command::Capture(cmd) => operator::capture(settings, cmd.into()).await,
        Command::DeadLetter(cmd) => operator::dead_letter(settings, cmd.into()).await,
        Command::Provider(cmd) => {
            let differences = operator::provider(settings, cmd.into()).await?;
            return Ok(if differences {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            });
        }
        Command::Config => {
            println!(
                "{}",
                serde_json::to_string_pretty(&settings).context("printing settings")?
            );
            Ok(())
        }
    };
    done.map(|()| ExitCode::SUCCESS)
}

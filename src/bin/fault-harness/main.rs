//! fault-harness: breaks the worker, the broker, the database and the provider on purpose and
//! proves with an independent checker that no capture was lost, duplicated or over-captured.
//!
//! ```sh
//! cargo run --release --bin fault-harness -- --profile full
//! cargo run --bin fault-harness -- --profile ci --seed 42 --scenario S3
//! ```
//!
//! It starts a private PostgreSQL cluster and a private RabbitMQ node on free loopback ports,
//! an in-process sandbox provider per scenario, and the real `capture-worker run` binary as
//! child processes; it stops all of them when it ends. Every random choice comes from the
//! printed seed. See `docs/reliability.md`.

mod check;
mod infra;
mod oracle;
mod outcomes;
mod proxy;
mod publish;
mod rng;
mod scenario;
mod worker;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;

use scenario::{Env, Profile, Report};

/// Fault harness for capture-worker: kill storms, restarts, hangs and provider faults, checked
/// against the promises P1–P9.
#[derive(Debug, Parser)]
#[command(name = "fault-harness")]
struct Args {
    /// `ci` (a few minutes on two cores) or `full` (the sizes of issue 9).
    #[arg(long, value_enum, default_value = "ci")]
    profile: Profile,
    /// Seed for every random choice; printed when not given.
    #[arg(long)]
    seed: Option<u64>,
    /// Scenarios to run (S1…S8, repeatable or comma-separated); all when absent.
    #[arg(long = "scenario", value_delimiter = ',')]
    scenarios: Vec<String>,
    /// The worker binary; defaults to `capture-worker` next to this binary (built if missing).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Keep the run directory (databases, logs) even when everything passed.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fault-harness: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("fault-harness: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| rng::mix(d.as_nanos() as u64))
            .unwrap_or(1)
            % 1_000_000_000
    });
    let selected: Vec<String> = if args.scenarios.is_empty() {
        scenario::ALL.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.scenarios
            .iter()
            .map(|s| s.trim().to_uppercase())
            .collect()
    };
    for s in &selected {
        if !scenario::ALL.contains(&s.as_str()) {
            bail!("unknown scenario {s}; known: {}", scenario::ALL.join(", "));
        }
    }
    let profile_name = match args.profile {
        Profile::Ci => "ci",
        Profile::Full => "full",
    };
    println!(
        "fault-harness: profile {profile_name}, seed {seed}, scenarios {}",
        selected.join(",")
    );
    println!(
        "  reproduce: cargo run --release --bin fault-harness -- --profile {profile_name} --seed {seed} --scenario {}",
        selected.join(",")
    );

    let worker_bin = match args.worker_bin {
        Some(p) => p,
        None => worker_binary()?,
    };
    let unique = format!("{}-{seed}", std::process::id());
    let dir = std::env::temp_dir().join(format!("fault-harness-{unique}"));
    std::fs::create_dir_all(&dir)?;
    // PostgreSQL and RabbitMQ run as their own users and write below this directory.
    infra::run(
        std::process::Command::new("chmod").arg("a+rwx").arg(&dir),
        "chmod",
    )?;
    println!("  run directory: {}", dir.display());
    let t = Instant::now();
    let api_key = format!("sk_test_fh_canary_{seed}");
    let _ = workload::ECHOED_CREDENTIAL.set(api_key.clone());
    let pg = tokio::task::block_in_place(|| {
        infra::PrivatePostgres::start(&dir, &format!("pgcanary{seed}x"))
    })
    .context("starting the private PostgreSQL")?;
    let rabbit = tokio::task::block_in_place(|| infra::PrivateRabbit::start(&dir, &unique))
        .context("starting the private RabbitMQ node")?;
    println!(
        "  private PostgreSQL on 127.0.0.1:{}, RabbitMQ node {} on 127.0.0.1:{} (up in {:.1?})",
        pg.port,
        rabbit.node,
        rabbit.port,
        t.elapsed()
    );
    let mut env = Env {
        dir: dir.clone(),
        pg,
        rabbit,
        worker_bin,
        config_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        api_key,
        profile: args.profile,
    };

    let mut reports: Vec<Report> = Vec::new();
    let outcome = async {
        for name in &selected {
            // Each scenario has its own stream: `--scenario S3 --seed N` replays S3 of a full run.
            let sub = rng::Rng::fork(seed, name).next_u64();
            println!("\n== {name} (seed {seed}) ==");
            let report = scenario::run(&mut env, name, sub).await?;
            print_report(&report);
            reports.push(report);
        }
        anyhow::Ok(())
    };
    let interrupted = tokio::select! {
        r = outcome => { r?; false }
        _ = tokio::signal::ctrl_c() => true,
    };
    if interrupted {
        eprintln!("fault-harness: interrupted; stopping everything it started");
        drop(env);
        return Ok(false);
    }
    let all_passed = reports.iter().all(Report::passed);
    print_summary(&reports, seed, profile_name);
    drop(env);
    if all_passed && !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("  run directory kept: {}", dir.display());
    }
    Ok(all_passed)
}

/// `capture-worker` next to this binary, built first when run through cargo.
fn worker_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let dir = exe.parent().context("this binary has no directory")?;
    let bin = dir.join("capture-worker");
    if let Ok(cargo) = std::env::var("CARGO") {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut c = std::process::Command::new(cargo);
        c.current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("build")
            .arg("--quiet")
            .arg("--bin")
            .arg("capture-worker");
        if release {
            c.arg("--release");
        }
        infra::run(&mut c, "building capture-worker")?;
    }
    if !bin.exists() {
        bail!(
            "{} is missing: build it (cargo build --bin capture-worker) or pass --worker-bin",
            bin.display()
        );
    }
    Ok(bin)
}

fn print_report(r: &Report) {
    let f = &r.findings;
    println!("{}: {}", r.name, r.title);
    for n in &r.faults {
        println!("  fault: {n}");
    }
    println!(
        "  events {} | orders {} | kills {} | provider requests {} | captures {} | replays {} | declined orders {} | completed orders {}",
        f.messages,
        r.orders,
        r.kills,
        f.provider_requests,
        f.provider_captures,
        f.replays,
        f.declined_orders,
        f.completed_orders
    );
    println!(
        "  lost {} | duplicated {} | over-captured {} | key conflicts {} | stuck {} | violations {}",
        f.lost,
        f.duplicated,
        f.over_captured,
        f.key_conflicts,
        f.stuck,
        f.violations.len()
    );
    let dl: Vec<String> = f
        .dead_lettered
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!(
        "  dead-lettered by reason: {}",
        if dl.is_empty() {
            "none".to_owned()
        } else {
            dl.join(", ")
        }
    );
    for v in f.violations.iter().take(25) {
        println!("  VIOLATION {v}");
    }
    if f.violations.len() > 25 {
        println!("  … and {} more", f.violations.len() - 25);
    }
    println!(
        "  {} in {:.1?}",
        if r.passed() { "PASS" } else { "FAIL" },
        r.elapsed
    );
}

fn print_summary(reports: &[Report], seed: u64, profile: &str) {
    println!("\n== summary (profile {profile}, seed {seed}) ==");
    println!(
        "{:<4} {:>7} {:>6} {:>5} {:>8} {:>5} {:>5} {:>5} {:>5} {:>5} {:>7}  result",
        "", "events", "orders", "kills", "captures", "lost", "dup", "over", "keyc", "stuck", "time"
    );
    let mut dead: std::collections::BTreeMap<String, usize> = Default::default();
    for r in reports {
        let f = &r.findings;
        for (k, v) in &f.dead_lettered {
            *dead.entry(k.clone()).or_default() += v;
        }
        println!(
            "{:<4} {:>7} {:>6} {:>5} {:>8} {:>5} {:>5} {:>5} {:>5} {:>5} {:>6}s  {}",
            r.name,
            f.messages,
            r.orders,
            r.kills,
            f.provider_captures,
            f.lost,
            f.duplicated,
            f.over_captured,
            f.key_conflicts,
            f.stuck,
            r.elapsed.as_secs(),
            if r.passed() { "PASS" } else { "FAIL" }
        );
    }
    let dl: Vec<String> = dead.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("dead-lettered by reason: {}", dl.join(", "));
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.name)
        .collect();
    if failed.is_empty() {
        println!("all promises held (seed {seed})");
    } else {
        println!(
            "FAILED: {} — reproduce with: cargo run --release --bin fault-harness -- --profile {profile} --seed {seed} --scenario {}",
            failed.join(","),
            failed.join(",")
        );
    }
}

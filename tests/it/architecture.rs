//! The architecture's rules, executable: the domain stays pure (no I/O or runtime crate, no
//! clock, no floats); the product library holds no tool code (the benchmark and the fault
//! harness are binaries under `src/bin/`); only the `capture-worker` binary knows its command
//! line.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Words that mean the domain reached for I/O, a runtime, the clock or floating point.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "sqlx",
    "lapin",
    "reqwest",
    "axum",
    "hyper",
    "tracing",
    "opentelemetry",
    "metrics",
    "std::fs",
    "std::net",
    "std::io",
    "std::process",
    "std::env",
    "std::thread",
    "SystemTime",
    "Instant",
    "Utc::now",
    "Local::now",
    "::now(",
    "rand::",
    "uuid::Uuid::new",
    "f32",
    "f64",
    "crate::config",
    "crate::storage",
    "crate::queue",
    "crate::provider",
    "crate::app",
];

fn forbidden_in(text: &str) -> Vec<(usize, &'static str)> {
    let mut hits = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for word in FORBIDDEN {
            let found = code.match_indices(word).any(|(i, _)| {
                // Whole identifiers only: `f64` but not `buf64`.
                let before = code[..i].chars().next_back();
                let after = code[i + word.len()..].chars().next();
                let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !ident(before) && !ident(after) || word.contains("::") || word.ends_with('(')
            });
            if found {
                hits.push((n + 1, *word));
            }
        }
    }
    hits
}

#[test]
fn domain_imports_no_io_runtime_clock_or_float() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() >= 5,
        "expected the domain sources under {root:?}"
    );
    let mut violations = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, word) in forbidden_in(&text) {
            violations.push(format!("{}:{line}: {word}", file.display()));
        }
    }
    assert!(
        violations.is_empty(),
        "domain must stay pure:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_guard_catches_what_it_is_meant_to_catch() {
    assert!(!forbidden_in("use tokio::time;").is_empty());
    assert!(!forbidden_in("let x: f64 = 1.0;").is_empty());
    assert!(!forbidden_in("let t = Utc::now();").is_empty());
    assert!(!forbidden_in("use std::fs::File;").is_empty());
    assert!(forbidden_in("let buf64 = 1; // tokio in a comment").is_empty());
}

/// Every Rust file under `src/`, as its path from the crate root (`src/app/mod.rs`) and text.
fn sources() -> Vec<(String, String)> {
    let crate_root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&crate_root.join("src"), &mut files);
    let mut out: Vec<(String, String)> = files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(crate_root).unwrap();
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            (rel, std::fs::read_to_string(&f).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// Whether `word` occurs in `code` as a whole path segment: `bench::` but not `workbench::`.
fn mentions(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(i, _)| {
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        let before = code[..i].chars().next_back();
        let after = code[i + word.len()..].chars().next();
        (!ident(before) || word.starts_with(|c: char| !c.is_alphanumeric()))
            && (!ident(after) || word.ends_with(|c: char| !c.is_alphanumeric()))
    })
}

/// The lines of `text` that mention any of `words` outside comments, as `line: word`.
fn mentions_in(text: &str, words: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for word in words {
            if mentions(code, word) {
                hits.push(format!("{}: {word}", n + 1));
            }
        }
    }
    hits
}

/// The tools' modules, by every name the library could reach them with.
const TOOL_MODULES: &[&str] = &[
    "mod bench",
    "bench::",
    "::bench",
    "mod fault_harness",
    "fault_harness::",
    "::fault_harness",
    "mod harness",
    "harness::",
    "::harness",
];

/// Whether a file is one of the tools (`src/bin/<tool>/…`), which may use the library's
/// public API but are no part of it.
fn is_tool(path: &str) -> bool {
    path.starts_with("src/bin/")
}

#[test]
fn the_product_library_holds_no_tool_code() {
    let mut violations = Vec::new();
    let mut library_files = 0;
    for (path, text) in sources() {
        if is_tool(&path) {
            continue;
        }
        library_files += 1;
        let segments: Vec<&str> = path.trim_end_matches(".rs").split('/').collect();
        if segments
            .iter()
            .any(|s| ["bench", "fault-harness", "fault_harness", "harness"].contains(s))
        {
            violations.push(format!("{path}: a tool's module in the library"));
        }
        for hit in mentions_in(&text, TOOL_MODULES) {
            violations.push(format!("{path}:{hit}"));
        }
    }
    assert!(library_files >= 50, "expected the library's sources");
    assert!(
        violations.is_empty(),
        "the benchmark and the fault harness are binaries under src/bin/, not modules of the \
         library that `run` needs; move this code there (using the library's public API):\n{}",
        violations.join("\n")
    );
}

/// How code reaches the `capture-worker` command line: from inside the library, or from a
/// tool through the library's public API.
fn cli_mentions(path: &str, text: &str) -> Vec<String> {
    if is_tool(path) {
        mentions_in(text, &["capture_worker::cli"])
    } else {
        mentions_in(text, &["crate::cli", "super::cli", "capture_worker::cli"])
    }
}

#[test]
fn only_the_binary_knows_the_command_line() {
    let mut violations = Vec::new();
    for (path, text) in sources() {
        if path == "src/main.rs" || path == "src/cli.rs" {
            continue;
        }
        violations.extend(
            cli_mentions(&path, &text)
                .into_iter()
                .map(|hit| format!("{path}:{hit}")),
        );
    }
    assert!(
        violations.is_empty(),
        "only src/main.rs and src/cli.rs use the command line's (clap) types; give the use case \
         its own request type and map clap to it in cli.rs:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_layout_guards_catch_what_they_are_meant_to_catch() {
    assert!(!mentions_in("pub mod bench;", TOOL_MODULES).is_empty());
    assert!(!mentions_in("use crate::app::bench::run;", TOOL_MODULES).is_empty());
    assert!(!mentions_in("bench::run(settings, options)", TOOL_MODULES).is_empty());
    assert!(!mentions_in("mod fault_harness;", TOOL_MODULES).is_empty());
    assert!(mentions_in("let workbench = 1; // mod bench", TOOL_MODULES).is_empty());
    assert!(mentions_in("/// the benchmark and the fault harness", TOOL_MODULES).is_empty());

    assert!(!cli_mentions("src/app/commands.rs", "use crate::cli::OutputFormat;").is_empty());
    assert!(!cli_mentions("src/app/x.rs", "f(crate::cli::Units::Major)").is_empty());
    assert!(!cli_mentions("src/bin/bench/main.rs", "use capture_worker::cli::Cli;").is_empty());
    // A tool's own `cli` module is its own business.
    assert!(cli_mentions("src/bin/bench/main.rs", "use crate::cli::Args;").is_empty());
    assert!(cli_mentions("src/app/x.rs", "use crate::client; // crate::cli").is_empty());
}

//! The domain stays pure: no I/O or runtime crate, no clock, no floats.

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

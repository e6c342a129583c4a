//! The architecture's rules, executable: the domain stays pure (no I/O or runtime crate, no
//! clock, no floats); the product library holds no tool code (the benchmark and the fault
//! harness are binaries under `src/bin/`); only the `capture-worker` binary knows its command
//! line; an adapter imports neither another adapter, nor the use cases, nor the sandbox provider,
//! nor the settings; the modules directly under `src/app` name each other in no circle (a
//! folder such as `src/app/execute/` is one module); outside `src/storage` (and the tools) no
//! code names `sqlx` or holds a SQL statement.

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

/// Which adapter a library file belongs to: each provider's folder (`provider/stripe`),
/// `storage` or `queue`. The provider boundary itself (`src/provider/*.rs`) is none.
fn adapter_of(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["src", "provider", name, _, ..] => Some(format!("provider/{name}")),
        ["src", unit @ ("storage" | "queue"), ..] => Some((*unit).to_string()),
        _ => None,
    }
}

/// `use` groups written out one path each, so that `crate::{app::X, provider::{http, stripe}}`
/// reads as `crate::app::X, crate::provider::http, crate::provider::stripe`. Each group keeps
/// its line breaks (after its paths), so line numbers stay those of the file.
fn flatten_groups(text: &str) -> String {
    fn matching_brace(s: &str, open: usize) -> Option<usize> {
        let mut depth = 0;
        for (i, c) in s[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 1 => return Some(open + i),
                '}' => depth -= 1,
                _ => {}
            }
        }
        None
    }
    fn paths(tree: &str) -> Vec<String> {
        let tree = tree.trim();
        let Some(open) = tree.find("::{") else {
            return vec![tree.to_string()];
        };
        let Some(close) = matching_brace(tree, open + 2) else {
            return vec![tree.to_string()];
        };
        let (prefix, inner) = (&tree[..open], &tree[open + 3..close]);
        let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(&inner[start..]);
        items
            .into_iter()
            .filter(|item| !item.trim().is_empty())
            .flat_map(paths)
            .map(|p| match p.as_str() {
                "self" => prefix.to_string(),
                _ => format!("{prefix}::{p}"),
            })
            .collect()
    }
    let mut out = text.to_string();
    while let Some(open) = out.find("::{") {
        let start = out[..open]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |i| i + 1);
        let Some(close) = matching_brace(&out, open + 2) else {
            break;
        };
        let group = &out[start..=close];
        let breaks = "\n".repeat(group.matches('\n').count());
        let flat = format!("{}{breaks}", paths(group).join(", "));
        out.replace_range(start..=close, &flat);
    }
    out
}

/// What `adapter` may not name: any other adapter, the use cases, the sandbox provider, the
/// settings (`crate::secret` has the `Secret` adapters need).
fn forbidden_for(adapter: &str, adapters: &[String]) -> Vec<String> {
    let mut words = Vec::new();
    for other in adapters.iter().filter(|other| *other != adapter) {
        match other.strip_prefix("provider/") {
            Some(name) => words.extend([format!("provider::{name}"), format!("super::{name}")]),
            None => words.extend([format!("crate::{other}"), format!("super::{other}")]),
        }
    }
    for module in ["app", "sandbox", "config"] {
        words.extend([format!("crate::{module}"), format!("super::{module}")]);
    }
    words
}

/// Where an adapter names what it may not, as `line: word`.
fn adapter_violations(adapter: &str, text: &str, adapters: &[String]) -> Vec<String> {
    let words = forbidden_for(adapter, adapters);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    mentions_in(&flatten_groups(text), &words)
}

/// Imports an adapter still needs from the list above, each with its reason. Only shrinks: an
/// entry that no longer matches must leave (the test says so).
const ADAPTER_EXCEPTIONS: &[(&str, &str, &str)] = &[(
    "src/storage/mod.rs",
    "crate::config",
    "the pool is built from `DatabaseSettings` (URL, pool size, timeouts, TLS), which the \
     settings own",
)];

#[test]
fn adapters_import_no_other_adapter_app_sandbox_or_settings() {
    let sources = sources();
    let mut adapters: Vec<String> = sources
        .iter()
        .filter_map(|(path, _)| adapter_of(path))
        .collect();
    adapters.dedup();
    assert!(
        adapters.len() >= 9,
        "expected the provider adapters, storage and queue: {adapters:?}"
    );
    let mut violations = Vec::new();
    let mut used_exceptions = Vec::new();
    for (path, text) in &sources {
        let Some(adapter) = adapter_of(path) else {
            continue;
        };
        for hit in adapter_violations(&adapter, text, &adapters) {
            let word = hit.split(": ").nth(1).unwrap_or("");
            match ADAPTER_EXCEPTIONS
                .iter()
                .find(|(file, allowed, _)| file == path && *allowed == word)
            {
                Some(exception) => used_exceptions.push(*exception),
                None => violations.push(format!("{path}:{hit}")),
            }
        }
    }
    let unused: Vec<String> = ADAPTER_EXCEPTIONS
        .iter()
        .filter(|exception| !used_exceptions.contains(exception))
        .map(|(file, word, _)| format!("{file}: {word}"))
        .collect();
    assert!(
        violations.is_empty(),
        "an adapter (src/provider/<name>/, src/storage, src/queue) imports neither another \
         adapter, nor `app`, nor the sandbox provider, nor `config`; take shared provider code \
         from `provider::http`, a credential from `crate::secret`, and let `app` wire the rest:\n{}",
        violations.join("\n")
    );
    assert!(
        unused.is_empty(),
        "no longer imported: remove it from ADAPTER_EXCEPTIONS:\n{}",
        unused.join("\n")
    );
}

#[test]
fn the_adapter_guard_catches_what_it_is_meant_to_catch() {
    let adapters: Vec<String> = ["provider/stripe", "provider/adyen", "storage", "queue"]
        .map(String::from)
        .to_vec();
    let stripe = |text: &str| adapter_violations("provider/stripe", text, &adapters);
    let queue = |text: &str| adapter_violations("queue", text, &adapters);

    assert!(!stripe("use crate::provider::adyen::wire::Amount;").is_empty());
    assert!(!stripe("use super::super::adyen::wire;").is_empty());
    assert!(!stripe("use super::adyen;").is_empty());
    assert!(!stripe("use crate::storage::Store;").is_empty());
    assert!(!stripe("use crate::app::intake;").is_empty());
    assert!(!stripe("use crate::sandbox::Sandbox;").is_empty());
    assert!(!stripe("use crate::config::Secret;").is_empty());
    assert!(!queue("use crate::provider::stripe::Stripe;").is_empty());
    assert!(!queue("let s = super::storage::Store::connect(url);").is_empty());
    // Groups, however nested or broken over lines, are read one path at a time.
    assert!(!stripe("use crate::{app::X, domain::Money};").is_empty());
    assert_eq!(
        stripe(
            "use crate::domain::Money;\nuse crate::{\n    domain::Money,\n    provider::{http, adyen},\n};"
        ),
        vec!["2: provider::adyen"]
    );

    assert!(stripe("use crate::provider::http::{self, Api};").is_empty());
    assert!(stripe("use crate::provider::{CaptureRequest, Outcome};").is_empty());
    assert!(stripe("use super::wire::{PaymentIntent, ApiError};").is_empty());
    assert!(stripe("use crate::secret::Secret;").is_empty());
    assert!(stripe("use crate::domain::{Currency, Money};").is_empty());
    assert!(stripe("//! Never imports crate::app or crate::sandbox.").is_empty());
    assert!(queue("use super::{wire, topology};").is_empty());
    assert_eq!(
        adapter_of("src/provider/stripe/wire.rs").as_deref(),
        Some("provider/stripe")
    );
    assert_eq!(
        adapter_of("src/storage/ledger.rs").as_deref(),
        Some("storage")
    );
    assert_eq!(adapter_of("src/provider/http.rs"), None);
    assert_eq!(adapter_of("src/sandbox/adyen.rs"), None);
}

/// The top-level module of `src/app` a file belongs to (`src/app/intake.rs` and
/// `src/app/operator/orders.rs` are `intake` and `operator`), with its module path from `app`
/// down (`["operator", "orders"]`); `None` outside `src/app` and for `src/app/mod.rs` itself.
fn app_module_of(path: &str) -> Option<(String, Vec<String>)> {
    let rest = path.strip_prefix("src/app/")?.strip_suffix(".rs")?;
    let mut segments: Vec<String> = rest.split('/').map(String::from).collect();
    if segments.last().is_some_and(|s| s == "mod") {
        segments.pop();
    }
    Some((segments.first()?.clone(), segments))
}

/// The top-level app modules a file of `src/app` names, as `(line, module)`: through
/// `crate::app::x`, or through as many `super::` as lead from the file back to `app`.
fn app_references(path: &str, text: &str, modules: &[String]) -> Vec<(usize, String)> {
    let Some((_, module_path)) = app_module_of(path) else {
        return Vec::new();
    };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut refs = Vec::new();
    for (n, line) in flatten_groups(text).lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (i, _) in code
            .match_indices("crate::app::")
            .chain(code.match_indices("super::"))
        {
            if code[..i].ends_with(|c: char| ident(c) || c == ':') {
                continue;
            }
            let mut rest = &code[i..];
            let mut ups = None;
            if let Some(after) = rest.strip_prefix("crate::app::") {
                rest = after;
            } else {
                let mut k = 0;
                while let Some(after) = rest.strip_prefix("super::") {
                    rest = after;
                    k += 1;
                }
                ups = Some(k);
            }
            if ups.is_some_and(|k| k != module_path.len()) {
                continue;
            }
            let name: String = rest.chars().take_while(|&c| ident(c)).collect();
            if modules.contains(&name) {
                refs.push((n + 1, name));
            }
        }
    }
    refs
}

/// One circle in the graph of `from → to` edges, as the modules along it (the first again at the
/// end), or `None`.
fn find_circle(edges: &[(String, String)]) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &[(String, String)],
        path: &mut Vec<String>,
        done: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.iter().any(|d| d == node) {
            return None;
        }
        path.push(node.to_string());
        for (_, to) in edges.iter().filter(|(from, _)| from == node) {
            if let Some(circle) = visit(to, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.push(node.to_string());
        None
    }
    let mut done = Vec::new();
    edges
        .iter()
        .find_map(|(from, _)| visit(from, edges, &mut Vec::new(), &mut done))
}

/// The edges between top-level app modules in `sources`, each with where it is written
/// (`path:line`).
fn app_edges(sources: &[(String, String)]) -> Vec<(String, String, String)> {
    let mut modules: Vec<String> = sources
        .iter()
        .filter_map(|(path, _)| app_module_of(path).map(|(module, _)| module))
        .collect();
    modules.sort();
    modules.dedup();
    let mut edges = Vec::new();
    for (path, text) in sources {
        let Some((from, _)) = app_module_of(path) else {
            continue;
        };
        for (line, to) in app_references(path, text, &modules) {
            if to != from {
                edges.push((from.clone(), to, format!("{path}:{line}")));
            }
        }
    }
    edges
}

/// A circle among the top-level app modules of `sources`, each step with where it is written.
fn app_circle(sources: &[(String, String)]) -> Option<Vec<String>> {
    let edges = app_edges(sources);
    let pairs: Vec<(String, String)> = edges
        .iter()
        .map(|(from, to, _)| (from.clone(), to.clone()))
        .collect();
    let circle = find_circle(&pairs)?;
    Some(
        circle
            .windows(2)
            .map(|step| {
                let (from, to) = (&step[0], &step[1]);
                let at = edges
                    .iter()
                    .find(|(f, t, _)| f == from && t == to)
                    .map_or("", |(_, _, at)| at.as_str());
                format!("{from} → {to} ({at})")
            })
            .collect(),
    )
}

#[test]
fn no_circles_among_app_modules() {
    let sources = sources();
    let edges = app_edges(&sources);
    assert!(
        edges.len() >= 10,
        "expected the use cases to name each other: {edges:?}"
    );
    let circle = app_circle(&sources);
    assert!(
        circle.is_none(),
        "the modules directly under src/app name each other in a circle; move what both need \
         to the domain (a pure notion) or to a small module they share, or hand work over \
         through a handle owned by the lower one:\n{}",
        circle.unwrap_or_default().join("\n")
    );
}

#[test]
fn the_circle_guard_catches_what_it_is_meant_to_catch() {
    let files = |files: &[(&str, &str)]| -> Vec<(String, String)> {
        files
            .iter()
            .map(|(path, text)| (path.to_string(), text.to_string()))
            .collect()
    };
    // The circle intake → execute → providers → intake, as it once was.
    let circle = app_circle(&files(&[
        (
            "src/app/intake.rs",
            "claimer: Option<super::execute::Executor>,",
        ),
        ("src/app/execute.rs", "use super::providers::Providers;"),
        (
            "src/app/providers.rs",
            "use super::intake::CapabilityLookup;",
        ),
        (
            "src/app/operator/orders.rs",
            "use super::super::intake::CapabilityLookup;",
        ),
    ]));
    assert_eq!(
        circle,
        Some(vec![
            "intake → execute (src/app/intake.rs:1)".to_string(),
            "execute → providers (src/app/execute.rs:1)".to_string(),
            "providers → intake (src/app/providers.rs:1)".to_string(),
        ])
    );
    // Reached from a folder, through `crate::app`, or inside a group.
    assert!(
        app_circle(&files(&[
            ("src/app/operator/orders.rs", "use super::super::intake::X;"),
            ("src/app/intake.rs", "use crate::app::operator::Y;"),
        ]))
        .is_some()
    );
    assert!(
        app_circle(&files(&[
            (
                "src/app/operator/mod.rs",
                "use super::{execute, intake::X};"
            ),
            ("src/app/intake.rs", "use super::operator;"),
            ("src/app/execute.rs", ""),
        ]))
        .is_some()
    );

    // Folders are one module each: execute/ and intake/ name each other from their files.
    assert_eq!(
        app_circle(&files(&[
            (
                "src/app/intake/batch.rs",
                "pub fn hand(e: &super::super::execute::Executor) {}"
            ),
            ("src/app/intake/mod.rs", "use super::retry;"),
            (
                "src/app/execute/attempt.rs",
                "use super::{Executor, Step}; use super::super::intake::Intake;"
            ),
            ("src/app/execute/mod.rs", "mod attempt; use attempt::X;"),
        ])),
        Some(vec![
            "intake → execute (src/app/intake/batch.rs:1)".to_string(),
            "execute → intake (src/app/execute/attempt.rs:1)".to_string(),
        ])
    );

    // A child module's `super::` is its folder, not `app`; comments and `app` itself are none.
    assert_eq!(
        app_circle(&files(&[
            (
                "src/app/operator/orders.rs",
                "use super::intake::X; use super::super::retry;"
            ),
            (
                "src/app/intake.rs",
                "use super::operator::Y; // super::retry"
            ),
            (
                "src/app/retry.rs",
                "use super::Application; use crate::domain::intake;"
            ),
            (
                "src/app/mod.rs",
                "use intake::Intake; use retry::RetryPolicy;"
            ),
        ])),
        None
    );
    assert_eq!(
        app_module_of("src/app/operator/mod.rs"),
        Some(("operator".to_string(), vec!["operator".to_string()]))
    );
    assert_eq!(app_module_of("src/app/mod.rs"), None);
    assert_eq!(app_module_of("src/storage/mod.rs"), None);
}

/// The string literals of Rust source, each with the line it starts on, and the code with
/// comments and literals blanked out (line breaks kept). Knows line and block comments, plain,
/// byte and raw strings, and char literals (so `'"'` opens no string and `'a` is a lifetime).
fn lex(text: &str) -> (Vec<(usize, String)>, String) {
    let chars: Vec<char> = text.chars().collect();
    let (mut strings, mut code) = (Vec::new(), String::new());
    let (mut i, mut line) = (0, 1);
    let blank = |code: &mut String, c: char| code.push(if c == '\n' { '\n' } else { ' ' });
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    blank(&mut code, chars[i]);
                    i += 1;
                }
            }
            continue;
        }
        // A raw string: r"…", r#"…"#, br"…".
        let ident_before = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        let raw_at = if c == 'r' && !ident_before {
            Some(i + 1)
        } else if c == 'b' && next == Some('r') && !ident_before {
            Some(i + 2)
        } else {
            None
        };
        if let Some(mut j) = raw_at {
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) == Some(&'"') {
                let (start_line, mut content) = (line, String::new());
                j += 1;
                while j < chars.len() {
                    if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    if chars[j] == '\n' {
                        line += 1;
                    }
                    content.push(chars[j]);
                    blank(&mut code, chars[j]);
                    j += 1;
                }
                strings.push((start_line, content));
                i = j;
                continue;
            }
        }
        if c == '"' {
            let (start_line, mut content) = (line, String::new());
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    content.push(chars[i]);
                    i += 1;
                }
                if let Some(&ch) = chars.get(i) {
                    if ch == '\n' {
                        line += 1;
                    }
                    content.push(ch);
                    blank(&mut code, ch);
                }
                i += 1;
            }
            i += 1;
            strings.push((start_line, content));
            continue;
        }
        if c == '\'' {
            // '\n', '\'', '"': a char literal; 'a (no closing quote after one char): a lifetime.
            let len = if next == Some('\\') {
                (i + 2..chars.len().min(i + 12))
                    .find(|&k| chars[k] == '\'')
                    .map(|k| k + 1 - i)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(3)
            } else {
                None
            };
            if let Some(len) = len {
                i += len;
                continue;
            }
        }
        if c == '\n' {
            line += 1;
        }
        code.push(c);
        i += 1;
    }
    (strings, code)
}

/// Whether a string literal is a SQL statement: it starts with `select`, `insert`, `update`,
/// `delete` or `with` (any case) and has the clause that statement needs (`from` — or a call or
/// parameter right after `select` —, `into`, `set`, `as (`), so that a message such as "update
/// the settings" or "select a provider" is not one.
fn is_sql(literal: &str) -> bool {
    let text = literal.trim_start().to_lowercase();
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some(first) = words.first() else {
        return false;
    };
    let has = |word: &str| words.iter().skip(1).any(|w| *w == word);
    match *first {
        "select" => has("from") || words.get(1).is_some_and(|w| w.contains(['(', '$'])),
        "insert" => has("into"),
        "update" => has("set"),
        "delete" => has("from"),
        "with" => text.contains(" as (") || text.contains(" as("),
        _ => false,
    }
}

/// Where the code opens a transaction or takes a connection from the pool itself
/// (`….pool().begin()`, `….pool().acquire()`): the ledger's unit of work is `Store::begin()`.
fn own_transactions_in(code: &str) -> Vec<String> {
    code.match_indices("pool()")
        .filter_map(|(i, _)| {
            let rest = code[i + "pool()".len()..].trim_start();
            [".begin()", ".acquire()"]
                .into_iter()
                .find(|call| rest.starts_with(call))
                .map(|call| {
                    let line = code[..i].matches('\n').count() + 1;
                    format!("{line}: pool(){call} (use Store::begin)")
                })
        })
        .collect()
}

/// Where a source names `sqlx`, holds a SQL statement or opens its own transaction, as
/// `line: what`.
fn persistence_in(text: &str) -> Vec<String> {
    let (strings, code) = lex(text);
    let mut hits: Vec<String> = mentions_in(&code, &["sqlx"]);
    hits.extend(own_transactions_in(&code));
    hits.extend(strings.iter().filter(|(_, s)| is_sql(s)).map(|(line, s)| {
        let start: String = s.trim_start().chars().take(40).collect();
        format!("{line}: SQL {:?}", start.replace('\n', " "))
    }));
    hits
}

/// The tools, by name: they set up and inspect their own databases.
const PERSISTENCE_TOOLS: &[&str] = &["src/bin/bench/", "src/bin/fault-harness/"];

#[test]
fn no_sqlx_and_no_sql_outside_storage() {
    let mut violations = Vec::new();
    let mut checked = 0;
    for (path, text) in sources() {
        if path.starts_with("src/storage/") || PERSISTENCE_TOOLS.iter().any(|t| path.starts_with(t))
        {
            continue;
        }
        checked += 1;
        violations.extend(
            persistence_in(&text)
                .into_iter()
                .map(|hit| format!("{path}:{hit}")),
        );
    }
    assert!(checked >= 50, "expected the product's sources");
    assert!(
        violations.is_empty(),
        "only src/storage names sqlx or writes SQL (it owns every statement); add a function to \
         the storage module that fits (captures, ledger, operator, …) or an operation of the \
         ledger transaction (`Store::begin()`), and call that:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_persistence_guard_catches_what_it_is_meant_to_catch() {
    assert!(!persistence_in("use sqlx::PgPool;").is_empty());
    assert!(!persistence_in("let n: i64 = sqlx::query_scalar(q)").is_empty());
    assert!(!persistence_in("f(\"select count(*) from captures\")").is_empty());
    assert!(!persistence_in("f(\"\n    SELECT order_id\n    FROM orders\")").is_empty());
    assert!(!persistence_in("f(\"insert into orders (a) values ($1)\")").is_empty());
    assert!(!persistence_in("f(\"update captures set status = $1\")").is_empty());
    assert!(!persistence_in("f(\"delete from inbox_messages\")").is_empty());
    assert!(!persistence_in("f(\"with b as (select 1) select * from b\")").is_empty());
    assert_eq!(
        persistence_in(
            "let a = 1;\nlet mut tx = self\n    .store\n    .pool()\n    .begin()\n    .await?;"
        ),
        vec!["4: pool().begin() (use Store::begin)"]
    );
    assert!(!persistence_in("let c = store.pool().acquire().await?;").is_empty());
    assert!(persistence_in("let tx = self.store.begin(CTX).await?; f(store.pool())").is_empty());
    assert!(!persistence_in("f(r#\"select \"x\" from t\"#)").is_empty());
    assert_eq!(
        persistence_in("let a = '\"';\nlet b = \"delete from t\";"),
        vec!["2: SQL \"delete from t\""]
    );

    // Comments, words in messages and the like are none.
    assert!(persistence_in("//! PostgreSQL via sqlx").is_empty());
    assert!(persistence_in("/* sqlx::query(\"select 1 from t\") */ let x = 1;").is_empty());
    assert!(persistence_in("bail!(\"update the settings and try again\")").is_empty());
    assert!(persistence_in("bail!(\"with the sandbox, run `demo`\")").is_empty());
    assert!(persistence_in("let s = \"delete the file by hand\";").is_empty());
    assert!(persistence_in("let s = \"select a provider\";").is_empty());
    assert!(!persistence_in("f(\"select pg_advisory_lock($1)\")").is_empty());
    assert!(persistence_in("let url = \"http://x//y\"; fn f<'a>(x: &'a str) {}").is_empty());
    assert!(persistence_in("let sqlx_like = 1; // sqlx::query").is_empty());
}

//! The Python tools some tests drive (pika, oteltest), pinned in `tests/python-requirements.txt`
//! and installed on first use into a virtual environment under the cargo target directory
//! (`target/tmp/python-tools`), so `cargo test` needs nothing but `python3` with its `venv`
//! module and a reachable package index (or `PIP_FIND_LINKS` / `PIP_INDEX_URL`).
//!
//! The environment is built once: threads of this binary share one result, and test processes
//! running at the same time take an exclusive lock on a file beside it, so only one builds it
//! and the others then find it ready. An environment whose packages differ from the pins is
//! rebuilt. When it cannot be built, the tests fail with the commands that build it by hand.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Checks that every `name==version` line of a requirements file is what is installed.
const CHECK_PY: &str = r##"
import sys, importlib.metadata as m
bad = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, want = (s.strip() for s in line.partition("=="))
    try:
        have = m.version(name)
    except m.PackageNotFoundError:
        have = "missing"
    if have != want:
        bad.append(f"{name}: {have}, pinned {want}")
if bad:
    sys.exit("; ".join(bad))
"##;

/// The pinned requirements.
pub fn requirements() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python-requirements.txt")
}

/// The Python interpreter of the test tools' environment, built on first use. Panics with the
/// commands to run by hand when it cannot be built.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-tools");
    match PYTHON.get_or_init(|| provision(&venv, &requirements(), &[])) {
        Ok(python) => python,
        Err(e) => panic!("{e}"),
    }
}

/// Builds (or finds ready) the environment `venv` with `requirements`, under a lock file beside
/// it; `env` is set in pip's environment (an empty value removes the variable). Returns its interpreter.
pub fn provision(
    venv: &Path,
    requirements: &Path,
    env: &[(&str, &str)],
) -> Result<PathBuf, String> {
    let python = venv.join("bin/python");
    let lock_path = venv.with_extension("lock");
    if let Some(parent) = venv.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    // Released when `lock` is dropped (or the process exits).
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;

    if python.exists() && run(&python, ["-c", CHECK_PY], requirements, env).is_ok() {
        return Ok(python);
    }
    let by_hand = format!(
        "Build it by hand where a package index is reachable (or point PIP_FIND_LINKS at a \
         directory of wheels, with PIP_NO_INDEX=1), then run the tests again:\n  \
         rm -rf {venv} && python3 -m venv {venv} && {python} -m pip install -r {req}",
        venv = venv.display(),
        python = python.display(),
        req = requirements.display(),
    );
    let fail = |step: &str, output: String| {
        format!(
            "the Python test tools ({req}) could not be installed into {venv}: {step} failed:\n\
             {output}\n{by_hand}",
            req = requirements.display(),
            venv = venv.display(),
        )
    };
    if venv.exists() {
        std::fs::remove_dir_all(venv)
            .map_err(|e| fail("removing the outdated environment", e.to_string()))?;
    }
    run(Path::new("python3"), ["-m", "venv"], venv.as_os_str(), env).map_err(|out| {
        fail(
            "`python3 -m venv` (Debian and Ubuntu: apt-get install python3-venv)",
            out,
        )
    })?;
    run(
        &python,
        [
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--retries",
            "1",
            "-r",
        ],
        requirements,
        env,
    )
    .map_err(|out| fail("`pip install`", out))?;
    run(&python, ["-c", CHECK_PY], requirements, env)
        .map_err(|out| fail("checking the installed versions", out))?;
    Ok(python)
}

/// Runs `program args last` with `env` set (an empty value removes the variable); its output
/// on failure.
fn run<'a>(
    program: &Path,
    args: impl IntoIterator<Item = &'a str>,
    last: impl AsRef<OsStr>,
    env: &[(&str, &str)],
) -> Result<(), String> {
    let mut command = Command::new(program);
    command.args(args).arg(last);
    for (key, value) in env {
        if value.is_empty() {
            command.env_remove(key);
        } else {
            command.env(key, value);
        }
    }
    let output = command
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Without a package index the tools cannot be installed: the failure names the environment,
/// what failed and the exact commands that build it by hand. Never a silent skip.
#[test]
fn without_a_package_index_the_failure_says_how_to_install_the_tools() {
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    // A closed port on this machine stands for an unreachable index.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let index = format!("http://127.0.0.1:{port}/simple");
    let err = provision(
        &venv,
        &requirements(),
        &[
            ("PIP_INDEX_URL", &index),
            ("PIP_CONFIG_FILE", "/dev/null"),
            ("PIP_FIND_LINKS", ""),
            ("PIP_EXTRA_INDEX_URL", ""),
            ("PIP_NO_INDEX", ""),
        ],
    )
    .unwrap_err();
    assert!(err.contains("`pip install` failed"), "{err}");
    assert!(
        err.contains(&format!(
            "python3 -m venv {v} && {v}/bin/python -m pip install -r {r}",
            v = venv.display(),
            r = requirements().display()
        )),
        "{err}"
    );
}

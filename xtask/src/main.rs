//! Project tooling, run as `cargo xtask <command>`.
//!
//! xtask depends on nothing but std so it compiles in seconds on a fresh machine,
//! before `protoc` (needed by Lance) is installed: it installs it.
//!
//! Commands:
//! - `setup`: install what a fresh Debian machine lacks (`scripts/setup.sh`);
//! - `test`: setup, then every test of the workspace, then the Python package's
//!   pytest suite against Pulsing (the package staged with the debug extension), with
//!   a local S3 server started for the `on_s3` tests unless `PERSISTING_TEST_S3`
//!   names one;
//! - `ci`: `.ci/run` (setup, `cargo fmt --check`, clippy with `-D warnings`, the S3
//!   server, `test`, short fixed `crash-fuzz` runs);
//! - `demo [ARGS]`: build, then `persisting demo ARGS` (the README's main job);
//! - `crash-fuzz [ARGS]`: build, then the crash-recovery fuzzer (`persisting-fuzz`;
//!   its `s3` mode with a local S3 server started for it unless `PERSISTING_TEST_S3`
//!   names one);
//! - `bench [--rows N] [--python-only]`: every comparison benchmark in release (the
//!   Python package's through a release wheel), one table of ratios, written to
//!   `docs/benchmarks.md` and `docs/benchmarks.json` (`--python-only`: the Python
//!   rows alone, to `docs/benchmarks-python.md` and `.json`);
//! - `wheel`: the Python package's release wheel, installed into the venv.
//!
//! Release builds are one cargo invocation for the benchmarks and the wheel
//! (`release.rs`), so they share one build of Lance.
//!
//! Debug builds are made with `--workspace --all-targets`, the set the tests build, so
//! the demo, the fuzzer and the tests share one build of Lance.
//!
//! Cargo commands run by xtask use `CARGO_TARGET_DIR` when it is set and
//! `$HOME/.cache/persisting/target` otherwise, so builds survive fresh clones.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod bench;
mod release;
mod s3;

/// The workspace this xtask runs for. Cargo sets `CARGO_MANIFEST_DIR` when it runs
/// the binary; the compile-time value is only a fallback, because one shared target
/// directory serves every checkout and a binary built in one must not act on another.
fn workspace_root() -> PathBuf {
    let manifest = env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.parent().unwrap_or(&manifest).to_path_buf()
}

fn target_dir() -> PathBuf {
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache/persisting/target")
}

/// A command for the workspace root with the environment a shell would give it:
/// `cargo run` (which starts xtask) adds package variables and library paths that
/// build scripts may watch, and a build started from here would otherwise not reuse
/// the artifacts of the same build started from a shell.
fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir())
        .envs(s3::vars().iter().map(|(k, v)| (k, v)));
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        let injected = key.starts_with("CARGO_PKG_")
            || matches!(
                key.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "OUT_DIR"
            );
        if injected {
            cmd.env_remove(key.as_ref());
        }
    }
    if let Some(paths) = env::var_os("LD_LIBRARY_PATH") {
        let kept: Vec<PathBuf> = env::split_paths(&paths)
            .filter(|p| {
                let s = p.to_string_lossy();
                !s.contains("/target/")
                    && !s.contains("/.rustup/toolchains/")
                    && !p.starts_with(target_dir())
            })
            .collect();
        match env::join_paths(&kept) {
            Ok(joined) if !kept.is_empty() => cmd.env("LD_LIBRARY_PATH", joined),
            _ => cmd.env_remove("LD_LIBRARY_PATH"),
        };
    }
    cmd
}

/// Runs a command in the workspace root, failing with its name when it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("xtask: running {program} {}", args.join(" "));
    let status = command(program)
        .args(args)
        .status()
        .map_err(|e| format!("could not start {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {} failed with {status}", args.join(" ")))
    }
}

fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run(&cargo, args)
}

fn setup() -> Result<(), String> {
    run("bash", &["scripts/setup.sh"])
}

fn test() -> Result<(), String> {
    setup()?;
    // the S3 tests run against a local server, started here unless one is configured
    // (PERSISTING_TEST_S3) and stopped when the tests end
    let _server = s3::start()?;
    cargo(&["test", "--workspace", "--all-targets"])?;
    cargo(&["test", "--workspace", "--doc"])?;
    python_tests()
}

/// The Python virtual environment `scripts/setup.sh` makes.
pub(crate) fn venv() -> PathBuf {
    if let Some(dir) = env::var_os("PERSISTING_VENV").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache/persisting/venv")
}

/// Copies the files of directory `from` into `to` (made if missing), recursively.
fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    let failed =
        |e: std::io::Error| format!("could not copy {} to {}: {e}", from.display(), to.display());
    fs::create_dir_all(to).map_err(failed)?;
    for entry in fs::read_dir(from).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        let path = entry.path();
        if entry.file_name() == "__pycache__" {
            continue;
        }
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()))?;
        } else {
            fs::copy(&path, to.join(entry.file_name())).map_err(failed)?;
        }
    }
    Ok(())
}

/// The Python package with the debug build of its extension, laid out as an
/// installed package at `{target}/python-debug/persisting` (what `maturin develop`
/// installs, without rebuilding: the extension is the one `--workspace` built, so
/// Lance is not built again for another feature set). Returns the directory to put on
/// `PYTHONPATH`.
fn stage_python_package() -> Result<PathBuf, String> {
    cargo(&["build", "--workspace", "--all-targets"])?;
    let stage = target_dir().join("python-debug");
    let package = stage.join("persisting");
    if package.exists() {
        fs::remove_dir_all(&package)
            .map_err(|e| format!("could not clear {}: {e}", package.display()))?;
    }
    copy_dir(
        &workspace_root().join("crates/python/python/persisting"),
        &package,
    )?;
    let built = target_dir().join("debug/lib_native.so");
    fs::copy(&built, package.join("_native.abi3.so"))
        .map_err(|e| format!("could not copy {}: {e}", built.display()))?;
    Ok(stage)
}

/// The Python package's pytest suite, against the real Pulsing in the venv.
fn python_tests() -> Result<(), String> {
    let stage = stage_python_package()?;
    let python = venv().join("bin/python");
    eprintln!(
        "xtask: running pytest (crates/python/tests) with {}",
        python.display()
    );
    let status = command(&python.to_string_lossy())
        .current_dir(workspace_root().join("crates/python"))
        .env("PYTHONPATH", &stage)
        .env("PERSISTING_CLI", target_dir().join("debug/persisting"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .status()
        .map_err(|e| format!("could not start {}: {e}", python.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the Python tests failed with {status}"))
    }
}

/// Builds what the tests build (same features, so nothing is built twice) and returns
/// the path of a binary of the workspace.
fn debug_binary(name: &str) -> Result<PathBuf, String> {
    setup()?;
    cargo(&["build", "--workspace", "--all-targets"])?;
    let path = target_dir().join("debug").join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} was not built", path.display()))
    }
}

fn run_binary(name: &str, args: &[String]) -> Result<(), String> {
    let path = debug_binary(name)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&path.to_string_lossy(), &args)
}

/// The crash fuzzer; its `s3` mode gets a server started for it unless one is
/// configured.
fn crash_fuzz(args: &[String]) -> Result<(), String> {
    let _server = if args.first().is_some_and(|m| m == "s3") {
        s3::start()?
    } else {
        None
    };
    run_binary("persisting-fuzz", args)
}

const USAGE: &str = "usage: cargo xtask <command>

commands:
  setup   install what a fresh Debian machine lacks (protoc, test tools)
  test    setup, then every test of the workspace and the Python package's suite
          (a local S3 server started for them unless PERSISTING_TEST_S3 is set)
  ci      .ci/run: setup, format check, clippy -D warnings, test, short crash-fuzz runs
  demo [--dir D] [--records N]
          the end-to-end demo: write a topic (WAL, zstd), reopen, read back, verify
  crash-fuzz [kill|object-store|s3|power|corrupt|all] [--iterations N] [--seed S] [--from S] [--kills K]
          crash-recovery fuzzing of the whole stack (default: all modes but s3, 10
          iterations; s3 starts a local S3 server unless PERSISTING_TEST_S3 is set)
  bench [--rows N] [--python-only]
          release benchmarks vs their baselines; writes docs/benchmarks.md and .json
          (--python-only: the Python package's, to docs/benchmarks-python.md)
  wheel   the Python package's release wheel, from the release build the benchmarks
          use (one build of Lance for both; ~50 min cold on 2 cores), into
          {target}/wheels and installed into the venv";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("test") => test(),
        Some("ci") => run("bash", &[".ci/run"]),
        Some("demo") => {
            let mut a = vec!["demo".to_owned()];
            a.extend(args[1..].iter().cloned());
            run_binary("persisting", &a)
        }
        Some("crash-fuzz") => crash_fuzz(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("wheel") => setup()
            .and_then(|()| release::build())
            .and_then(|r| release::wheel(&r).map(drop)),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

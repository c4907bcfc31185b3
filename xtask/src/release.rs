//! One release build for the benchmarks and the Python wheel.
//!
//! `cargo bench -p X` and `maturin build --release` each resolve features for their
//! own package, and the two sets differ: the second built every Lance crate again
//! (over 20 minutes on 2 cores). Here one cargo invocation builds the libraries and
//! benchmark targets of every package the benchmarks and the wheel need, so their
//! features are resolved once and Lance is compiled once per profile; the benchmark
//! binaries are then run directly, and the wheel is the Python package staged with the
//! extension of that same build (as the debug package of the tests is).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use crate::{command, target_dir, venv, workspace_root};

/// The packages of the release build: those with benchmark targets, and the Python
/// extension.
const PACKAGES: [&str; 5] = [
    "persisting-codec",
    "persisting-compress",
    "persisting-wal",
    "persisting-bench",
    "persisting-python",
];

/// What the release build made.
pub(crate) struct Release {
    /// Benchmark binaries: (target name, package directory, executable).
    pub(crate) benches: Vec<(String, PathBuf, PathBuf)>,
    /// The Python extension (`lib_native.so`).
    pub(crate) native: PathBuf,
}

/// The value of the JSON string field `key` in `line` (cargo's messages: no escapes
/// in the paths and names read here).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// Builds the release set (see the module docs) and returns its benchmark binaries
/// and extension.
pub(crate) fn build() -> Result<Release, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut args = vec![
        "build",
        "--release",
        "--lib",
        "--benches",
        "--message-format=json-render-diagnostics",
    ];
    for p in PACKAGES {
        args.extend(["-p", p]);
    }
    eprintln!("xtask: running cargo {}", args.join(" "));
    let started = Instant::now();
    let mut child = command(&cargo)
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    let stdout = child.stdout.take().ok_or("cargo has no stdout")?;
    let mut benches = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if !line.contains("\"reason\":\"compiler-artifact\"")
            || !line.contains("\"kind\":[\"bench\"]")
        {
            continue;
        }
        let (Some(exe), Some(name), Some(manifest)) = (
            field(&line, "executable"),
            field(&line, "name"),
            field(&line, "manifest_path"),
        ) else {
            continue;
        };
        let dir = Path::new(manifest).parent().unwrap_or(Path::new("."));
        benches.push((name.to_owned(), dir.to_path_buf(), PathBuf::from(exe)));
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("cargo {} failed with {status}", args.join(" ")));
    }
    eprintln!(
        "xtask: release build ready in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let native = target_dir().join("release/lib_native.so");
    if !native.exists() {
        return Err(format!("{} was not built", native.display()));
    }
    Ok(Release { benches, native })
}

/// Builds a wheel of the Python package with the extension of `release`, writes it to
/// `{target}/wheels` and installs it into the venv of `scripts/setup.sh`. Returns the
/// wheel.
pub(crate) fn wheel(release: &Release) -> Result<PathBuf, String> {
    let stage = target_dir().join("python-release");
    let package = stage.join("persisting");
    if package.exists() {
        std::fs::remove_dir_all(&package)
            .map_err(|e| format!("could not clear {}: {e}", package.display()))?;
    }
    crate::copy_dir(
        &workspace_root().join("crates/python/python/persisting"),
        &package,
    )?;
    std::fs::copy(&release.native, package.join("_native.abi3.so"))
        .map_err(|e| format!("could not copy {}: {e}", release.native.display()))?;
    let out = target_dir().join("wheels");
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let python = venv().join("bin/python").to_string_lossy().into_owned();
    let made = command(&python)
        .arg("-c")
        .arg(WHEEL_PY)
        .arg(&stage)
        .arg(&out)
        .arg(env!("CARGO_PKG_VERSION"))
        .output()
        .map_err(|e| format!("could not start {python}: {e}"))?;
    if !made.status.success() {
        return Err(format!(
            "writing the wheel failed: {}",
            String::from_utf8_lossy(&made.stderr)
        ));
    }
    let wheel = PathBuf::from(String::from_utf8_lossy(&made.stdout).trim());
    let status = command(&python)
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(["--force-reinstall", "--no-deps"])
        .arg(&wheel)
        .status()
        .map_err(|e| format!("could not start {python}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "pip install {} failed with {status}",
            wheel.display()
        ));
    }
    eprintln!(
        "xtask: installed {} into {}",
        wheel.display(),
        venv().display()
    );
    Ok(wheel)
}

/// Writes a wheel (a zip with the package, `METADATA`, `WHEEL` and `RECORD`) of the
/// staged package in `argv[1]` to the directory `argv[2]`, version `argv[3]`; prints
/// its path. The tag is abi3 for CPython 3.10 and later on this platform.
const WHEEL_PY: &str = r#"
import base64, hashlib, os, sys, sysconfig, zipfile
stage, out, version = sys.argv[1:4]
dist = f"persisting_rs-{version}.dist-info"
tag = "cp310-abi3-" + sysconfig.get_platform().replace("-", "_").replace(".", "_")
path = os.path.join(out, f"persisting_rs-{version}-{tag}.whl")
files = []
for root, dirs, names in os.walk(os.path.join(stage, "persisting")):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
    for name in sorted(names):
        full = os.path.join(root, name)
        with open(full, "rb") as f:
            files.append((os.path.relpath(full, stage), f.read()))
files.append((f"{dist}/METADATA", (
    "Metadata-Version: 2.1\nName: persisting-rs\n"
    f"Version: {version}\nRequires-Python: >=3.10\n").encode()))
files.append((f"{dist}/WHEEL", (
    "Wheel-Version: 1.0\nGenerator: cargo-xtask\nRoot-Is-Purelib: false\n"
    f"Tag: {tag}\n").encode()))
def digest(data):
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
record = "".join(f"{n},sha256={digest(d)},{len(d)}\n" for n, d in files)
record += f"{dist}/RECORD,,\n"
with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
    for name, data in files:
        z.writestr(name, data)
    z.writestr(f"{dist}/RECORD", record)
print(path)
"#;

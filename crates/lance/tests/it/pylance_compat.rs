//! The dataset is a plain Lance dataset: pylance (the Python `lance` package, same
//! major version) reads the same records. Skipped, with a message, only where the
//! set-up script has not installed pylance.

use std::path::PathBuf;
use std::process::Command;

use persisting_codec::{Value, record};

use crate::{open, rt};

/// The Python interpreter of the set-up script's virtual environment.
pub fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("PERSISTING_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let venv = std::env::var_os("PERSISTING_VENV")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME")
                        .map(|h| PathBuf::from(h).join(".cache/persisting/venv"))
                })?;
            Some(venv.join("bin/python"))
        })?;
    let ok = Command::new(&candidate)
        .args(["-c", "import lance"])
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(candidate)
}

#[test]
fn pylance_reads_what_rust_wrote() {
    let Some(python) = python() else {
        eprintln!(
            "SKIPPED pylance_reads_what_rust_wrote: pylance is not installed (run scripts/setup.sh)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let mut b = open(dir.path()).await;
        b.put_batch(vec![
            record! {"id" => "a", "n" => 1, "score" => 0.5, "ok" => true, "vec" => vec![0.25f64, -1.0]},
            record! {"id" => "b", "n" => 2, "score" => 1.5, "ok" => false, "vec" => vec![1.0f64, 2.0]},
        ])
        .unwrap();
        b.flush().await.unwrap();
        // evolve: a new column, a widened one, a struct column
        b.put_batch(vec![record! {"id" => "c", "n" => 3.5, "score" => 2.5, "ok" => true, "vec" => vec![3.0f64], "tag" => "new", "meta" => Value::Map(record! {"user" => "ann", "geo" => Value::Map(record! {"lat" => 1.5})})}])
            .unwrap();
        b.flush().await.unwrap();
    });
    let script = r#"
import json, sys
import lance
ds = lance.dataset(sys.argv[1])
rows = ds.to_table(columns=["id", "n", "score", "ok", "vec", "tag", "meta"]).to_pylist()
print(json.dumps({"count": ds.count_rows(), "rows": rows}))
"#;
    let out = Command::new(&python)
        .args([
            "-c",
            script,
            dir.path().join("data.lance").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pylance failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = serde_json::json!({
        "count": 3,
        "rows": [
            {"id": "a", "n": 1.0, "score": 0.5, "ok": true, "vec": [0.25, -1.0], "tag": null, "meta": null},
            {"id": "b", "n": 2.0, "score": 1.5, "ok": false, "vec": [1.0, 2.0], "tag": null, "meta": null},
            {"id": "c", "n": 3.5, "score": 2.5, "ok": true, "vec": [3.0], "tag": "new", "meta": {"user": "ann", "geo": {"lat": 1.5}}},
        ]
    });
    assert_eq!(got, expected);
}

//! The local S3-compatible server of the tests (`cargo xtask test`), the `s3`
//! crash-fuzz mode and the s3 benchmark rows: `scripts/s3-server.sh` (SeaweedFS on
//! 127.0.0.1, installed by the set-up script). When `PERSISTING_TEST_S3` is already
//! set, that server is used and none is started.

use std::env;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::{command, run};

/// The variables the started server's commands get (`PERSISTING_TEST_S3`, `AWS_*`),
/// added by [`crate::command`] to every command xtask runs.
static VARS: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// The variables of the server this xtask started, if it did.
pub(crate) fn vars() -> &'static [(String, String)] {
    VARS.get().map_or(&[], Vec::as_slice)
}

/// A server this xtask started; stopped (by its PID) and its directory removed when
/// dropped.
pub(crate) struct Server {
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let dir = self.dir.to_string_lossy().into_owned();
        if let Err(e) = run("bash", &["scripts/s3-server.sh", "stop", &dir]) {
            eprintln!("xtask: {e}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the server unless one is configured already; `None` when it was.
pub(crate) fn start() -> Result<Option<Server>, String> {
    if env::var_os("PERSISTING_TEST_S3").is_some() {
        return Ok(None);
    }
    let dir = env::temp_dir().join(format!("persisting-s3-{}", std::process::id()));
    let shown = dir.to_string_lossy().into_owned();
    eprintln!("xtask: starting the S3 server (scripts/s3-server.sh start {shown})");
    let out = command("bash")
        .args(["scripts/s3-server.sh", "start", &shown])
        .output()
        .map_err(|e| format!("could not start scripts/s3-server.sh: {e}"))?;
    let server = Server { dir };
    if !out.status.success() {
        return Err(format!(
            "scripts/s3-server.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let vars = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    VARS.set(vars)
        .map_err(|_| "the S3 server was started twice".to_owned())?;
    Ok(Some(server))
}

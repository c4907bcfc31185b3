//! The `persisting` command, run as a process on real directories.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod commands;
mod consumer_groups;
mod lifetime;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `persisting ARGS` with `stdin`.
pub fn persisting(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_persisting"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Starts `persisting ARGS` as a live process, its stdin open for the test to write
/// (stdout dropped, stderr kept for `wait_with_output`).
pub fn live(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_persisting"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A bucket URI of its own on the S3 server of the tests (`PERSISTING_TEST_S3`,
/// started by scripts/s3-server.sh), or `None`, saying the test skipped.
pub fn s3_bucket_uri(name: &str) -> Option<String> {
    let Ok(root) = std::env::var("PERSISTING_TEST_S3") else {
        eprintln!("skipped: PERSISTING_TEST_S3 is not set (scripts/s3-server.sh)");
        return None;
    };
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    Some(format!(
        "{}/{name}-{}-{ms}/bucket_0",
        root.trim_end_matches('/'),
        std::process::id()
    ))
}

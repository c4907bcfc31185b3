//! The `persisting` command, run as a process on real directories.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod commands;
mod consumer_groups;

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

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

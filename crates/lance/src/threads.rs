//! Where work runs: the cores the process may use, and blocking file work moved off
//! the async threads. Every layer of the crate uses these; they use nothing of it
//! but its error type.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// The cores this process may run on, asked of the system once (on Linux that reads
/// the cgroup quota files): conversions and flushes split their work by it.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Runs blocking file work off the async threads; a failure of the task itself (a
/// panic) is an I/O error of `op` on the dataset at `uri`.
pub(crate) async fn blocking<T: Send + 'static>(
    op: &'static str,
    uri: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Io {
        op,
        path: PathBuf::from(uri),
        source: std::io::Error::other(e),
    })
}

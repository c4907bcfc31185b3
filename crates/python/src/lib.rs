//! The native half of the Python package `persisting` (`persisting._native`).
//!
//! The Python classes in `persisting/queue.py` (`LanceBackend`, `PersistingBackend`)
//! are thin: each holds one [`bucket::Bucket`], which owns a facade
//! [`persisting::PersistingBackend`] and turns its futures into asyncio awaitables.
//!
//! Invariants:
//! - no Rust work runs on the event loop's thread with the GIL held beyond converting
//!   Python objects to records (which needs the GIL) and back: storage work runs on the
//!   extension's tokio runtime, and blocking calls (open, the sync `close`) release the
//!   GIL;
//! - a write (`put_batch`, `flush`, `compact`, `close`) runs to its end on the runtime
//!   even if the awaiting Python task is cancelled, so a cancelled await never leaves a
//!   batch half-written; reads and waits are dropped when their awaitable is
//!   cancelled, so a cancelled stream leaves nothing running;
//! - a batch is converted whole before any of it is stored: a value that cannot be
//!   stored raises (naming the record and field) and stores nothing.

// the futures of a compaction and a close nest deeply (Lance under the facade)
#![recursion_limit = "256"]

mod bridge;
mod bucket;
mod convert;
mod errors;
mod groups;
mod logging;
mod metrics;
mod options;

use pyo3::prelude::*;

/// The extension module `persisting._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::install();
    m.add_class::<bucket::Bucket>()?;
    m.add_class::<groups::Groups>()?;
    m.add("KNOWN_OPTIONS", persisting::KNOWN_OPTIONS.to_vec())?;
    let defaults = persisting::PersistingOptions::default().to_map();
    m.add(
        "DEFAULT_OPTIONS_JSON",
        serde_json::Value::Object(defaults).to_string(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(convert::round_trip, m)?)?;
    m.add_function(wrap_pyfunction!(bridge::close_gate, m)?)?;
    m.add_function(wrap_pyfunction!(location, m)?)?;
    Ok(())
}

/// Where `path` puts a bucket, as the storage layer decides it: `("local", path)` for
/// a local directory (a path, or a `file://` URI's path) or `("remote", uri)` for an
/// object store. The package keys its open backends by it, so two spellings of one
/// directory are one key. A URI that does not parse is a `ValueError` naming it.
#[pyfunction]
fn location(path: &str) -> PyResult<(&'static str, String)> {
    use persisting::lance::Location;
    match Location::of(path) {
        Ok(Location::Local(dir)) => Ok(("local", dir.to_string_lossy().into_owned())),
        Ok(Location::Remote(uri)) => Ok(("remote", uri.to_string())),
        Err(e) => Err(pyo3::exceptions::PyValueError::new_err(e.to_string())),
    }
}

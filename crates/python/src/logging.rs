//! The library's diagnostics in Python: the `log` records of the Rust crates'
//! own targets (`persisting…`; an option ignored, a metrics endpoint that stopped)
//! go to the `logging` logger `persisting` at the matching level, where Python's
//! logging configuration decides what is shown (warnings and errors reach stderr by
//! default).

use log::{Level, LevelFilter, Log, Metadata, Record};
use pyo3::prelude::*;

struct ToPython;

impl Log for ToPython {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        persisting::is_diagnostic(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => 40,
            Level::Warn => 30,
            Level::Info => 20,
            Level::Debug => 10,
            Level::Trace => 5,
        };
        let message = record.args().to_string();
        // through the bridge's gate, as every runtime thread takes the GIL: a
        // diagnostic that comes while the interpreter exits is dropped
        crate::bridge::with_python(|py| {
            let _dropped = py
                .import("logging")
                .and_then(|logging| logging.call_method1("getLogger", ("persisting",)))
                .and_then(|logger| logger.call_method1("log", (level, message)));
        });
    }

    fn flush(&self) {}
}

static TO_PYTHON: ToPython = ToPython;

/// Installs the route (once per process; a logger installed first is kept).
pub(crate) fn install() {
    if log::set_logger(&TO_PYTHON).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
}

//! Where the library's own diagnostics go. The library reports through the `log`
//! facade (target `persisting::…`, e.g. an option it ignores, a metrics endpoint that
//! stopped) and prints nothing itself: an application routes them where it wants
//! (the Python package to `logging`'s `persisting` logger), and the binaries of this
//! workspace call [`log_to_stderr`].

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Whether a `log` record is one of the library's diagnostics: a target of its
/// crates (`persisting…`) at `Info` or above. Other crates' records (Lance's,
/// DataFusion's) are left to the application. Every route of this workspace
/// ([`log_to_stderr`], the Python package's) shows these and only these.
pub fn is_diagnostic(metadata: &Metadata<'_>) -> bool {
    metadata.level() <= Level::Info && metadata.target().starts_with("persisting")
}

/// Prints the library's diagnostics ([`is_diagnostic`]) to standard error as
/// `persisting: {message}`.
struct Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        is_diagnostic(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("persisting: {}", record.args());
        }
    }

    fn flush(&self) {}
}

static STDERR: Stderr = Stderr;

/// Routes the library's diagnostics to standard error (for binaries). Does nothing
/// when the process has a logger already.
pub fn log_to_stderr() {
    if log::set_logger(&STDERR).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_librarys_records_at_info_and_above() {
        let at = |level, target| Metadata::builder().level(level).target(target).build();
        assert!(is_diagnostic(&at(Level::Warn, "persisting::options")));
        assert!(is_diagnostic(&at(Level::Info, "persisting_lance::store")));
        assert!(!is_diagnostic(&at(Level::Debug, "persisting::options")));
        assert!(!is_diagnostic(&at(
            Level::Warn,
            "datafusion::physical_plan"
        )));
    }
}

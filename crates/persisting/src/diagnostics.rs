//! Where the library's own diagnostics go. The library reports through the `log`
//! facade (target `persisting::…`, e.g. an option it ignores, a metrics endpoint that
//! stopped) and prints nothing itself: an application routes them where it wants
//! (the Python package to `logging`'s `persisting` logger), and the binaries of this
//! workspace call [`log_to_stderr`].

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Prints the records of this crate's targets (`persisting…`) at `Info` and above to
/// standard error as `persisting: {message}`; other crates' records are left out.
struct Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= Level::Info && metadata.target().starts_with("persisting")
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
    fn only_this_crates_records_at_info_and_above() {
        let at = |level, target| Metadata::builder().level(level).target(target).build();
        assert!(Stderr.enabled(&at(Level::Warn, "persisting::options")));
        assert!(Stderr.enabled(&at(Level::Info, "persisting_lance::store")));
        assert!(!Stderr.enabled(&at(Level::Debug, "persisting::options")));
        assert!(!Stderr.enabled(&at(Level::Warn, "datafusion::physical_plan")));
    }
}

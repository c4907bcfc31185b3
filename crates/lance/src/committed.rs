//! What a bucket has committed: the dataset version the handle reads and commits on,
//! its log start and its end. The one place these change.
//!
//! Invariants (checked by `debug_assert!` at every change where Lance's manifest
//! knows its row counts):
//! - offsets are dense: the dataset holds exactly offsets `log_start..persisted`,
//!   so `persisted - log_start` is its row count;
//! - neither moves back: a commit appends (`persisted` grows by its records), a trim
//!   moves `log_start` forward, and any other new version (a compaction, a schema
//!   or config change) keeps both;
//! - `persisted` covers durable records only: a version that adds records is taken
//!   here after its files were fsynced (the commit task syncs before it returns; a
//!   reconcile syncs before it adopts), because an owner checkpoints its WAL to
//!   `persisted` (the facade's flush owner does, whenever it sees it move).

use std::sync::Arc;

use lance::Dataset;

/// The committed state of a bucket (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Committed {
    /// The dataset as of the last commit applied (`None` before the first).
    dataset: Option<Arc<Dataset>>,
    /// The dataset's first offset (see `retention`).
    log_start: u64,
    /// One past the dataset's last offset.
    persisted: u64,
}

impl Committed {
    /// The dataset version this handle reads and commits on.
    pub(crate) fn dataset(&self) -> Option<&Arc<Dataset>> {
        self.dataset.as_ref()
    }

    /// The first offset the dataset holds.
    pub(crate) fn log_start(&self) -> u64 {
        self.log_start
    }

    /// One past the last offset the dataset holds.
    pub(crate) fn persisted(&self) -> u64 {
        self.persisted
    }

    /// A version found rather than made by this handle (at open, or the outcome of a
    /// commit whose reply was lost): its log start and its end as counted.
    pub(crate) fn adopt(&mut self, ds: Dataset, log_start: u64, end: u64) {
        debug_assert!(log_start <= end, "log start {log_start} past the end {end}");
        self.set(ds, log_start, end);
    }

    /// A commit that appended `records` records.
    pub(crate) fn appended(&mut self, ds: Dataset, records: u64) {
        self.set(ds, self.log_start, self.persisted + records);
    }

    /// A version holding the same records (a compaction, a schema or config change).
    pub(crate) fn rewritten(&mut self, ds: Dataset) {
        self.set(ds, self.log_start, self.persisted);
    }

    /// A trim: the records below `log_start` are gone.
    pub(crate) fn trimmed(&mut self, ds: Dataset, log_start: u64) {
        debug_assert!(
            (self.log_start..=self.persisted).contains(&log_start),
            "a trim to {log_start} outside {}..={}",
            self.log_start,
            self.persisted
        );
        self.set(ds, log_start, self.persisted);
    }

    fn set(&mut self, ds: Dataset, log_start: u64, persisted: u64) {
        debug_assert!(
            rows(&ds).is_none_or(|rows| rows == persisted - log_start),
            "offsets {log_start}..{persisted} in a version of {:?} rows",
            rows(&ds)
        );
        self.dataset = Some(Arc::new(ds));
        self.log_start = log_start;
        self.persisted = persisted;
    }
}

/// The rows of a version, as its manifest counts them (`None`: a fragment written
/// without its count).
fn rows(ds: &Dataset) -> Option<u64> {
    ds.manifest()
        .fragments
        .iter()
        .map(|f| f.num_rows().map(|r| r as u64))
        .sum()
}

//! What a bucket's reads keep between calls (part of the bucket's state; the reads
//! themselves are in `read/mod.rs`).

use std::sync::Arc;

use lance::Dataset;

use crate::read::fragments::FragmentReaders;
use crate::read::scan::ReadAhead;

/// What a bucket's reads keep between calls: the scan the last sequential read left
/// (continued by a read starting where it ended; used by one reader at a time, others
/// read on their own) and the fragment readers of small reads.
#[derive(Debug)]
pub(crate) struct Reads {
    pub(crate) readahead: tokio::sync::Mutex<ReadAhead>,
    pub(crate) readers: Arc<FragmentReaders>,
}

impl Reads {
    /// Nothing kept yet; `local`: whether the dataset is on the local file system.
    pub(crate) fn new(local: bool) -> Self {
        Self {
            readahead: tokio::sync::Mutex::new(ReadAhead::None),
            readers: Arc::new(FragmentReaders::new(local)),
        }
    }

    /// Closes the fragment readers of fragments `ds` no longer has (after a
    /// compaction).
    pub(crate) fn retain_live(&self, ds: &Dataset) {
        self.readers.retain_live(ds);
    }
}

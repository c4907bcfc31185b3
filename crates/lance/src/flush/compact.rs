//! Compaction: small fragments merged (row order, and so every offset, kept), old
//! dataset versions removed after the retention, the result fsynced and sealed.

use std::sync::Arc;

use lance::dataset::optimize::{CompactionOptions, compact_files};

use crate::bucket::LanceBucket;
use crate::error::{Error, Result};
use crate::read::files::fragment_files;
use crate::store::Seal;

impl LanceBucket {
    /// Compacts when more small fragments than `compact_fragments_max` have piled up;
    /// returns whether it did.
    pub(crate) async fn compact_if_due(&mut self) -> Result<bool> {
        let due = self.opts.compact_fragments_max > 0
            && self.small_fragments() > self.opts.compact_fragments_max;
        if due {
            self.compact().await?;
        }
        Ok(due)
    }

    /// Fragments with fewer rows than this are small: automatic compaction merges them.
    pub(crate) fn small_rows(&self) -> usize {
        (self.opts.target_rows_per_fragment / 32).max(1)
    }

    /// Tasks a commit of `rows` records writes its data files with: one per core, each
    /// writing a fragment that is not small (automatic compaction leaves it alone).
    pub(crate) fn write_parts(&self, rows: usize) -> usize {
        (rows / self.small_rows()).clamp(1, crate::threads::cores())
    }

    pub(crate) fn small_fragments(&self) -> usize {
        let small = self.small_rows();
        self.committed.dataset().map_or(0, |ds| {
            ds.manifest()
                .fragments
                .iter()
                .filter(|f| f.num_rows().is_some_and(|r| r < small))
                .count()
        })
    }

    pub(crate) fn fragments(&self) -> usize {
        self.committed
            .dataset()
            .map_or(0, |ds| ds.manifest().fragments.len())
    }

    /// Merges small fragments (row order, and so every offset, is kept), fsyncs the
    /// result, then removes dataset versions older than the retention (see
    /// `retention::clean_up_versions`).
    pub async fn compact(&mut self) -> Result<()> {
        // the dataset this handle knows must be the latest
        self.catch_up().await?;
        self.ensure_writer().await?;
        let Some(ds) = self.committed.dataset().map(Arc::as_ref) else {
            return Ok(());
        };
        let mut ds = ds.clone();
        // compaction reads the small fragments: check their files first
        let target = self.opts.target_rows_per_fragment;
        let candidates = fragment_files(&ds, |rows| rows < target as u64, 0..u64::MAX);
        self.verify_names(candidates, 0).await?;
        let options = CompactionOptions {
            target_rows_per_fragment: self.opts.target_rows_per_fragment,
            ..CompactionOptions::default()
        };
        Box::pin(compact_files(&mut ds, options, None))
            .await
            .map_err(Error::lance("compact", &self.uri))?;
        self.reads.retain_live(&ds);
        self.storage.versions.seen(ds.manifest().version);
        self.committed.rewritten(ds);
        self.commits.compactions += 1;
        self.sync_files(Seal::NewFiles).await?;
        // the versions before it, and the files only they need (seals pruned)
        self.clean_up_versions().await?;
        Ok(())
    }
}

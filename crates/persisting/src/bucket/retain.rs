//! A bucket's data lifetime: trims (by hand or by the retention policies, after
//! flushes), and snapshots that pin a committed version for reads.
//!
//! Invariants:
//! - a trim removes committed records only, whole fragments from the front, and never
//!   moves an offset (see `persisting_lance`'s `retention`); the WAL is not touched
//!   (it holds records at or above Lance's count only);
//! - the policies never remove a record a consumer group has not committed past,
//!   unless `retention_ignores_groups`;
//! - a snapshot pins every acknowledged record: it flushes first.

use std::time::{Duration, Instant};

use persisting_codec::Record;
use persisting_lance::{LanceBucket, Snapshot, SnapshotReader, TrimReport};

use super::PersistingBackend;
use crate::backend::StorageBackend;
use crate::error::Result;

/// When the flush owner last looked at the retention policies.
#[derive(Debug, Default)]
pub(super) struct RetentionLooks {
    /// Lance's persisted count then.
    persisted: Option<u64>,
    /// The time then.
    at: Option<Instant>,
}

impl RetentionLooks {
    /// How often an age policy is looked at without new commits: a tenth of the age,
    /// from 1 s to 60 s (each look asks the store for each fragment's files).
    pub(super) fn age_every(age: Duration) -> Duration {
        (age / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// When the owner must look again without being woken (an age policy), if ever.
    pub(super) fn next(&self, age: Option<Duration>) -> Option<Instant> {
        let age = age?;
        Some(
            self.at
                .map_or_else(Instant::now, |t| t + Self::age_every(age)),
        )
    }

    /// Whether the flush owner should look at the retention policies now: one is set,
    /// no commit runs, and records were committed since the last look (or, with an
    /// age policy, [`RetentionLooks::age_every`] has passed). A look is counted when
    /// it is due.
    pub(super) fn due(&mut self, lance: &LanceBucket) -> bool {
        let policy = &lance.options().retention;
        let persisted = lance.persisted_count();
        let aged = policy
            .age
            .is_some_and(|age| self.next(Some(age)).is_none_or(|at| at <= Instant::now()));
        let due = policy.is_set()
            && !lance.flush_running()
            && (self.persisted != Some(persisted) || aged);
        if due {
            self.persisted = Some(persisted);
            self.at = Some(Instant::now());
        }
        due
    }
}

impl PersistingBackend {
    /// Removes the records below `before` (acknowledged ones are flushed first), by
    /// whole Lance fragments: a fragment holding `before` stays, so at least what was
    /// asked is kept. Offsets of the records left never change; reads below the new
    /// log start fail naming it. Consumer groups do not hold back an explicit trim.
    /// A `before` past the acknowledged records is refused, removing nothing.
    pub async fn trim(&self, before: u64) -> Result<TrimReport> {
        self.check_open()?;
        let end = self.total_count();
        if before > end {
            return Err(persisting_lance::Error::TrimPastEnd {
                dataset: self.inner.storage_path.display().to_string(),
                requested: before,
                end,
            }
            .into());
        }
        let persisted = self.inner.lance.read().await.persisted_count();
        if before > persisted {
            self.flush_through(Some(before)).await?;
        }
        let mut lance = self.inner.lance.write().await;
        let report = Box::pin(lance.trim(before)).await?;
        // it applied a commit that was running, if one was: the WAL follows
        self.applied(&lance, &persisting_lance::FlushReport::default())
            .await?;
        self.retained(&report);
        Ok(report)
    }

    /// Trims by the retention policies (the flush owner's step after flushes, when
    /// [`RetentionLooks::due`]), holding back for consumer groups.
    pub(super) async fn apply_retention(&self, lance: &mut LanceBucket) -> Result<()> {
        let keep_from = if lance.options().retention.ignores_groups {
            None
        } else {
            self.inner
                .groups
                .list()
                .await?
                .iter()
                .map(|g| g.offset)
                .min()
        };
        if let Some(report) = Box::pin(lance.apply_retention(keep_from)).await? {
            self.retained(&report);
        }
        Ok(())
    }

    fn retained(&self, report: &TrimReport) {
        if report.records > 0
            && let Some(m) = &self.inner.metrics
        {
            m.trimmed(report.records, report.log_start);
        }
    }

    /// The first offset the bucket holds (0 until a trim).
    pub async fn log_start(&self) -> u64 {
        self.inner.lance.read().await.log_start()
    }

    /// Pins the bucket as it is under `name`, every acknowledged record in it (they
    /// are flushed first): [`PersistingBackend::get_snapshot`] reads it as it was,
    /// whatever is trimmed or compacted later, and pylance opens it as
    /// `lance.dataset(uri, version=name)`.
    pub async fn snapshot(&self, name: &str) -> Result<Snapshot> {
        self.check_open()?;
        persisting_lance::validate_snapshot(name)?;
        self.flush_through(None).await?;
        let mut lance = self.inner.lance.write().await;
        let snapshot = Box::pin(lance.snapshot(name)).await?;
        self.applied(&lance, &persisting_lance::FlushReport::default())
            .await?;
        Ok(snapshot)
    }

    /// The bucket's snapshots, by name.
    pub async fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let lance = self.inner.lance.read().await;
        Ok(lance.snapshots().await?)
    }

    /// Deletes the snapshot `name`; what only it kept is removed by the version
    /// cleanup this runs (of versions older than `version_retention`).
    pub async fn delete_snapshot(&self, name: &str) -> Result<()> {
        self.check_open()?;
        let mut lance = self.inner.lance.write().await;
        Box::pin(lance.delete_snapshot(name)).await?;
        self.applied(&lance, &persisting_lance::FlushReport::default())
            .await
    }

    /// Opens the snapshot `name` for reading (see [`SnapshotReader`]).
    pub async fn open_snapshot(&self, name: &str) -> Result<SnapshotReader> {
        let opts = self.inner.lance.read().await.options().clone();
        Ok(LanceBucket::open_snapshot(&self.inner.storage_path, opts, name).await?)
    }

    /// Records `[offset, offset + limit)` of the snapshot `name` (all of them from
    /// `offset` without a limit).
    pub async fn get_snapshot(
        &self,
        name: &str,
        offset: u64,
        limit: Option<usize>,
    ) -> Result<Vec<Record>> {
        let reader = self.open_snapshot(name).await?;
        Ok(reader.read(offset, limit.unwrap_or(usize::MAX)).await?)
    }
}

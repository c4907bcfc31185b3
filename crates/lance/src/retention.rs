//! Retention and snapshots: a bucket's log start, trims, and named versions.
//!
//! A trim removes whole fragments from the front of the dataset. Offsets never move:
//! a record's offset is the bucket's **log start** plus its position in the dataset.
//! The log start is kept in the dataset's config, so every version carries its own
//! (a snapshot of an old version reads with the log start it had):
//! `persisting.log_start = "L@E"` and `persisting.log_start_before = "P"` say that
//! versions from `E` on start at offset `L`, and earlier ones at `P`.
//!
//! A trim is two commits: first the config (`E` = the next version), then the delete
//! of the fragments below `L`, which lands as version `E`. Invariants:
//! - the writer commits nothing between the two: a trim whose delete has not landed
//!   (the latest version is below `E`: a crash, a failed request) is **pending**, and
//!   the writer's next step finishes it before any other commit (`finish_trim`);
//!   until then every reader computes `P`, which is right for the fragments it sees;
//! - a pending trim's fragments are exactly the prefix holding `L - P` rows, checked
//!   before they are deleted; a record or a log start that does not agree is an
//!   error ([`Error::LogStartDamaged`]), never a guess;
//! - reads below the log start fail with [`Error::BelowLogStart`], naming it.
//!
//! Snapshots are Lance tags: a name pins a version, which version cleanup keeps (and
//! with it every file the version needs) until the snapshot is deleted; pylance opens
//! it as `lance.dataset(uri, version=name)`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lance::Dataset;
use lance::dataset::CommitBuilder;
use lance::dataset::transaction::{Operation, TransactionBuilder};
use object_store::ObjectStoreExt;

use crate::bucket::LanceBucket;
use crate::error::{Error, Result};
use crate::log_start::{LOG_START_BEFORE_KEY, LOG_START_KEY, log_start_of};
use crate::options::LanceOptions;
use crate::store::Seal;
use crate::threads::blocking;

/// The longest snapshot name.
pub const SNAPSHOT_NAME_BYTES_MAX: usize = 128;

/// What a trim did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrimReport {
    /// The log start after the trim: the first offset the bucket holds.
    pub log_start: u64,
    /// Records removed.
    pub records: u64,
    /// Fragments removed.
    pub fragments: usize,
    /// Files removed by the version cleanup that followed (old versions' files no
    /// retained version needs).
    pub files_removed: u64,
    /// Bytes those files held.
    pub bytes_removed: u64,
    /// Wall time.
    pub duration: Duration,
}

/// A named, pinned version of a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Its name.
    pub name: String,
    /// The dataset version it pins.
    pub version: u64,
    /// The first offset it holds.
    pub log_start: u64,
    /// One past the last offset it holds.
    pub end_offset: u64,
    /// When it was taken.
    pub created_at: Option<SystemTime>,
}

impl Snapshot {
    /// [`Snapshot::created_at`] in seconds since the Unix epoch.
    pub fn created_unix_seconds(&self) -> Option<f64> {
        self.created_at
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
    }
}

/// Checks a snapshot name: 1 to [`SNAPSHOT_NAME_BYTES_MAX`] bytes of ASCII letters,
/// digits, `.`, `-` and `_`, not starting or ending with `.`, not ending in
/// `.lock` (a name is a file name in the dataset, on disk and on object stores).
pub fn validate_snapshot(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::InvalidSnapshot {
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > SNAPSHOT_NAME_BYTES_MAX {
        return bad("it is longer than 128 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    {
        return bad("only ASCII letters, digits, '.', '-' and '_' are allowed");
    }
    if name.starts_with('.') || name.ends_with('.') || name.ends_with(".lock") {
        return bad("it may not start or end with '.', nor end with '.lock'");
    }
    Ok(())
}

/// The ids and row count of the fragments at the front of `ds` holding positions
/// below `rows` (whole fragments only: one straddling it stays).
fn front_fragments(ds: &Dataset, rows: u64) -> (Vec<u64>, u64) {
    let mut ids = Vec::new();
    let mut at = 0u64;
    for frag in ds.manifest().fragments.iter() {
        let Some(n) = frag.num_rows().map(|n| n as u64) else {
            break;
        };
        if at + n > rows {
            break;
        }
        ids.push(frag.id);
        at += n;
    }
    (ids, at)
}

impl LanceBucket {
    /// The first offset the bucket holds (0 until a trim removes records).
    pub fn log_start(&self) -> u64 {
        self.committed.log_start()
    }

    /// An error when `offset` is below the log start.
    pub(crate) fn check_log_start(&self, offset: u64) -> Result<()> {
        if offset < self.committed.log_start() {
            return Err(Error::BelowLogStart {
                dataset: self.uri.clone(),
                offset,
                log_start: self.committed.log_start(),
            });
        }
        Ok(())
    }

    /// Removes the records below `before`, by whole fragments (a fragment holding
    /// `before` stays whole), makes the new log start durable, then removes the files
    /// no retained version needs (versions younger than `version_retention` and
    /// snapshots keep theirs). Offsets of the records left never change. A trim at or
    /// below the log start removes nothing; one past the dataset's records is
    /// refused ([`Error::TrimPastEnd`]). Atomic under a crash: the log start found
    /// after it is the old one or the new one, with the records that go with it.
    pub async fn trim(&mut self, before: u64) -> Result<TrimReport> {
        let started = Instant::now();
        self.catch_up().await?;
        if before > self.committed.persisted() {
            return Err(Error::TrimPastEnd {
                dataset: self.uri.clone(),
                requested: before,
                end: self.committed.persisted(),
            });
        }
        let old_start = self.committed.log_start();
        // the dataset and its whole fragments below `before`, if there are any
        let front = self
            .committed
            .dataset()
            .cloned()
            .filter(|_| before > old_start)
            .map(|ds| {
                let front = front_fragments(&ds, before - old_start);
                (ds, front)
            })
            .filter(|(_, (ids, _))| !ids.is_empty());
        let Some((ds, (ids, rows))) = front else {
            return Ok(TrimReport {
                log_start: old_start,
                duration: started.elapsed(),
                ..TrimReport::default()
            });
        };
        self.ensure_writer().await?;
        let new_start = old_start + rows;
        let mut ds = Dataset::clone(&ds);
        // from here until the delete lands, a failure leaves the trim pending: the
        // next step of this writer (or the next writer) finishes it first
        self.commits.outcome_unknown = true;
        let from_version = ds.manifest().version + 2;
        ds.update_config([
            (
                LOG_START_KEY,
                format!("{new_start}@{from_version}").as_str(),
            ),
            (LOG_START_BEFORE_KEY, old_start.to_string().as_str()),
        ])
        .await
        .map_err(Error::lance("record the new log start of", &self.uri))?;
        self.storage.versions.seen(ds.manifest().version);
        self.committed.rewritten(ds);
        let fragments = ids.len();
        self.finish_trim().await?;
        self.commits.outcome_unknown = false;
        let (files_removed, bytes_removed) = self.clean_up_versions().await?;
        Ok(TrimReport {
            log_start: self.committed.log_start(),
            records: rows,
            fragments,
            files_removed,
            bytes_removed,
            duration: started.elapsed(),
        })
    }

    /// Finishes a trim whose log start is recorded and whose delete has not landed
    /// (see the module's invariants); nothing to do otherwise. The writer's first
    /// step before any commit.
    pub(crate) async fn finish_trim(&mut self) -> Result<()> {
        let Some(ds) = self.committed.dataset().cloned() else {
            return Ok(());
        };
        let (start, pending) = log_start_of(&ds)?;
        let Some((to, from_version)) = pending else {
            return Ok(());
        };
        let version = ds.manifest().version;
        let damaged = |reason: String| Error::LogStartDamaged {
            dataset: self.uri.clone(),
            reason,
        };
        if version + 1 != from_version {
            return Err(damaged(format!(
                "a trim to offset {to} was to land as version {from_version}, and the dataset is at version {version}"
            )));
        }
        let (ids, rows) = front_fragments(&ds, to - start);
        if start + rows != to {
            return Err(damaged(format!(
                "a trim to offset {to} from {start} does not end at a fragment's end (the fragments end at {})",
                start + rows
            )));
        }
        self.ensure_writer().await?;
        let transaction = TransactionBuilder::new(
            version,
            Operation::Delete {
                updated_fragments: Vec::new(),
                deleted_fragment_ids: ids,
                predicate: format!("persisting: offsets below {to}"),
            },
        )
        .build();
        let trimmed = CommitBuilder::new(Arc::clone(&ds))
            .execute(transaction)
            .await
            .map_err(Error::lance("remove the trimmed fragments of", &self.uri))?;
        self.storage.versions.seen(trimmed.manifest().version);
        self.reads.retain_live(&trimmed);
        self.committed.trimmed(trimmed, to);
        self.sync_files(Seal::Nothing).await?;
        Ok(())
    }

    /// Removes dataset versions older than `version_retention` (never a snapshot's,
    /// nor the latest) and the files only they needed; returns the files and bytes
    /// removed.
    pub(crate) async fn clean_up_versions(&mut self) -> Result<(u64, u64)> {
        let Some(ds) = self.committed.dataset().cloned() else {
            return Ok((0, 0));
        };
        let retention = chrono::Duration::from_std(self.opts.version_retention)
            .unwrap_or(chrono::Duration::MAX);
        let removed = ds
            .cleanup_old_versions(retention, Some(false), Some(false))
            .await
            .map_err(Error::lance("clean up old versions of", &self.uri))?;
        if let Some(seals) = self.seals() {
            blocking("rewrite the seals of", &self.uri, move || seals.prune()).await??;
        }
        let files = removed.data_files_removed
            + removed.transaction_files_removed
            + removed.deletion_files_removed
            + removed.index_files_removed
            + removed.old_versions;
        Ok((files, removed.bytes_removed))
    }

    /// The offset retention may trim before, by the policies of
    /// `options.retention`, never past `keep_from` (the lowest offset a consumer group
    /// has not committed past) unless the policy ignores groups. At most the log
    /// start when no policy is set.
    pub async fn retention_cut(&self, keep_from: Option<u64>) -> Result<u64> {
        let policy = &self.opts.retention;
        let Some(ds) = self
            .committed
            .dataset()
            .cloned()
            .filter(|_| policy.is_set())
        else {
            return Ok(self.committed.log_start());
        };
        let mut cut = self.committed.log_start();
        if let Some(keep) = policy.records {
            cut = cut.max(self.committed.persisted().saturating_sub(keep));
        }
        if policy.bytes.is_some() || policy.age.is_some() {
            let fragments = self.fragment_files_meta(&ds).await?;
            if let Some(max) = policy.bytes {
                let mut total: u64 = fragments.iter().map(|f| f.bytes).sum();
                let mut at = self.committed.log_start();
                // the newest fragment always stays
                for f in fragments.iter().take(fragments.len().saturating_sub(1)) {
                    if total <= max {
                        break;
                    }
                    total -= f.bytes;
                    at += f.rows;
                }
                cut = cut.max(at);
            }
            if let Some(age) = policy.age {
                let now = SystemTime::now();
                let mut at = self.committed.log_start();
                for f in &fragments {
                    let old = f
                        .written
                        .is_some_and(|w| now.duration_since(w).is_ok_and(|d| d > age));
                    if !old {
                        break;
                    }
                    at += f.rows;
                }
                cut = cut.max(at);
            }
        }
        if !policy.ignores_groups
            && let Some(keep) = keep_from
        {
            cut = cut.min(keep.max(self.committed.log_start()));
        }
        Ok(cut.min(self.committed.persisted()))
    }

    /// Trims by the retention policies (see [`LanceBucket::retention_cut`]); `None`
    /// when nothing was due.
    pub async fn apply_retention(&mut self, keep_from: Option<u64>) -> Result<Option<TrimReport>> {
        let cut = self.retention_cut(keep_from).await?;
        if cut <= self.committed.log_start() {
            return Ok(None);
        }
        let report = self.trim(cut).await?;
        Ok((report.records > 0).then_some(report))
    }

    /// Each fragment's rows, data file bytes and the time its newest data file was
    /// written, front to back.
    async fn fragment_files_meta(&self, ds: &Dataset) -> Result<Vec<FragmentMeta>> {
        let store = ds
            .object_store(None)
            .await
            .map_err(Error::lance("reach", &self.uri))?;
        let data = ds.data_dir();
        let mut out = Vec::new();
        for frag in ds.manifest().fragments.iter() {
            let rows = frag.num_rows().map_or(0, |n| n as u64);
            let (mut bytes, mut written) = (0u64, None::<SystemTime>);
            for file in &frag.files {
                let meta = store
                    .inner
                    .head(&data.clone().join(file.path.as_str()))
                    .await
                    .map_err(Error::store("read the size of a data file of", &self.uri))?;
                bytes += meta.size;
                let at = SystemTime::from(meta.last_modified);
                written = Some(written.map_or(at, |w: SystemTime| w.max(at)));
            }
            out.push(FragmentMeta {
                rows,
                bytes,
                written,
            });
        }
        Ok(out)
    }

    /// Pins the latest committed version under `name` (after applying a flush that
    /// ended): reads of the snapshot see the bucket as it is now, whatever is
    /// trimmed or compacted later. Records still buffered are not in it.
    pub async fn snapshot(&mut self, name: &str) -> Result<Snapshot> {
        validate_snapshot(name)?;
        self.catch_up().await?;
        self.ensure_writer().await?;
        let Some(ds) = self.committed.dataset().cloned() else {
            return Err(Error::NothingToSnapshot {
                dataset: self.uri.clone(),
                name: name.to_owned(),
            });
        };
        let version = ds.manifest().version;
        match ds.tags().create(name, version).await {
            Ok(()) => {}
            Err(lance::Error::RefConflict { .. }) => {
                let version = ds.tags().get_version(name).await.unwrap_or(0);
                return Err(Error::SnapshotExists {
                    dataset: self.uri.clone(),
                    name: name.to_owned(),
                    version,
                });
            }
            Err(e) => return Err(Error::lance("take a snapshot of", &self.uri)(e)),
        }
        self.sync_files(Seal::Nothing).await?;
        self.snapshot_of(&ds, name, Some(SystemTime::now()))
    }

    fn snapshot_of(
        &self,
        ds: &Dataset,
        name: &str,
        created_at: Option<SystemTime>,
    ) -> Result<Snapshot> {
        let (log_start, _) = log_start_of(ds)?;
        let rows: u64 = ds
            .manifest()
            .fragments
            .iter()
            .map(|f| f.num_rows().map_or(0, |n| n as u64))
            .sum();
        Ok(Snapshot {
            name: name.to_owned(),
            version: ds.manifest().version,
            log_start,
            end_offset: log_start + rows,
            created_at,
        })
    }

    /// The bucket's snapshots, by name.
    pub async fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let Some(ds) = self.committed.dataset().cloned() else {
            return Ok(Vec::new());
        };
        let tags = ds
            .tags()
            .list()
            .await
            .map_err(Error::lance("list the snapshots of", &self.uri))?;
        let mut out = Vec::with_capacity(tags.len());
        for (name, tag) in tags {
            let at = ds
                .checkout_version(tag.version)
                .await
                .map_err(Error::lance("open a snapshot of", &self.uri))?;
            out.push(self.snapshot_of(&at, &name, tag.created_at.map(SystemTime::from))?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes the snapshot `name` ([`Error::SnapshotNotFound`] if there is none);
    /// the files only it needed go with the next version cleanup (a trim's or a
    /// compaction's), which this call runs now.
    pub async fn delete_snapshot(&mut self, name: &str) -> Result<(u64, u64)> {
        validate_snapshot(name)?;
        self.catch_up().await?;
        self.ensure_writer().await?;
        let Some(ds) = self.committed.dataset().cloned() else {
            return Err(self.no_snapshot(name));
        };
        match ds.tags().delete(name).await {
            Ok(()) => {}
            Err(lance::Error::RefNotFound { .. } | lance::Error::NotFound { .. }) => {
                return Err(self.no_snapshot(name));
            }
            Err(e) => return Err(Error::lance("delete a snapshot of", &self.uri)(e)),
        }
        if self.storage.local.is_some() {
            // the name's removal must survive a power loss too
            let tags = Path::new(&self.uri).join("_refs").join("tags");
            blocking("fsync the snapshots of", &self.uri, move || {
                std::fs::File::open(&tags).and_then(|d| d.sync_all())
            })
            .await?
            .map_err(Error::io("fsync", Path::new(&self.uri)))?;
        }
        self.clean_up_versions().await
    }

    fn no_snapshot(&self, name: &str) -> Error {
        Error::SnapshotNotFound {
            dataset: self.uri.clone(),
            name: name.to_owned(),
        }
    }

    /// Opens the snapshot `name` of the bucket under `storage_path` for reading: a
    /// handle whose records are the snapshot's (offsets as they were), which writes
    /// nothing.
    pub async fn open_snapshot(
        storage_path: impl AsRef<Path>,
        opts: LanceOptions,
        name: &str,
    ) -> Result<SnapshotReader> {
        validate_snapshot(name)?;
        let bucket = Box::pin(Self::open_at(storage_path, opts, Some(name))).await?;
        Ok(SnapshotReader { bucket })
    }
}

struct FragmentMeta {
    rows: u64,
    bytes: u64,
    written: Option<SystemTime>,
}

/// A snapshot of a bucket, open for reading (see [`LanceBucket::open_snapshot`]).
#[derive(Debug)]
pub struct SnapshotReader {
    bucket: LanceBucket,
}

impl SnapshotReader {
    /// Records `[offset, offset + limit)` of the snapshot, clipped to what it holds
    /// (see [`LanceBucket::read`]).
    pub async fn read(&self, offset: u64, limit: usize) -> Result<Vec<persisting_codec::Record>> {
        self.bucket.read(offset, limit).await
    }

    /// The snapshot's records as Arrow batches (see [`LanceBucket::read_arrow`]).
    pub async fn read_arrow(
        &self,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<arrow::record_batch::RecordBatch>> {
        self.bucket.read_arrow(offset, limit).await
    }

    /// The first offset the snapshot holds.
    pub fn log_start(&self) -> u64 {
        self.bucket.log_start()
    }

    /// One past the last offset the snapshot holds.
    pub fn end_offset(&self) -> u64 {
        self.bucket.total_count()
    }

    /// The dataset version it reads.
    pub fn version(&self) -> u64 {
        self.bucket.stats().version
    }
}

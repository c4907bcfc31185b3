//! [`PersistingBackend`] and [`LanceBackend`]: a Lance bucket, optionally behind a WAL.
//!
//! The bucket is split by role: `open` (lock, lease, recovery), `put` (the write path
//! and its bound), `flush` (the one owner of commits: it starts them, learns their
//! outcome, checkpoints the WAL, paces and retries them).
//!
//! Invariants:
//! - a record's offset is its WAL LSN: the WAL and the Lance buffer are appended in the
//!   same order under one lock, and the WAL never runs ahead of or behind Lance's count;
//! - `put` writes the WAL first; with `wal_sync_interval = 0` it returns only once the
//!   WAL is fsynced, waiting outside the lock (`Wal::durable`: a future, no thread
//!   per waiting put) so concurrent puts share one fsync;
//! - readers see a record only once it is acknowledged (the visible count);
//! - the WAL is checkpointed only to what Lance holds durably, and at open the WAL
//!   entries at or above Lance's count are replayed with their offsets, so a crash
//!   anywhere loses no acknowledged record and duplicates none;
//! - no caller waits for a running commit while holding the bucket: puts, reads and
//!   stats go on while a store is slow or away; what is not committed yet is bounded
//!   (`max_unflushed_bytes`, `max_wal_size`), and a put finding no room within
//!   `put_timeout` is refused whole.

mod flush;
mod open;
mod put;
mod retain;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock as SyncRwLock};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use persisting_codec::Record;
use persisting_compress::Compressor;
use persisting_lance::LanceBucket;
use persisting_wal::Wal;
use tokio::sync::{RwLock, watch};

use crate::backend::{BackendStats, StorageBackend};
use crate::error::{BucketError, Result};
use crate::groups::BucketGroups;
use crate::metrics::BucketMetrics;
use crate::options::PersistingOptions;
use flush::Flusher;
use put::Ledger;

/// How long `stats` waits for the bucket (a flush starting or applying a commit holds
/// it for a moment) before it answers from the last look.
const STATS_WAIT: Duration = Duration::from_millis(100);

struct Inner {
    bucket_id: u64,
    storage_path: PathBuf,
    opts: PersistingOptions,
    lance: RwLock<LanceBucket>,
    wal: Option<Arc<Wal>>,
    /// Puts wait for their WAL entries to be durable (`wal_sync_interval = 0`).
    wait_durable: bool,
    compressor: Mutex<Compressor>,
    /// Acknowledged records: what readers may see.
    visible: AtomicU64,
    /// Publishes `visible` to blocked streams; dropped on close, which ends them.
    notify: SyncRwLock<Option<watch::Sender<u64>>>,
    closed: AtomicBool,
    metrics: Option<BucketMetrics>,
    /// The bucket's consumer groups, beside its data.
    groups: persisting_lance::Groups,
    /// The owner of the bucket's flushes: its wake-ups, failures, applied commits.
    flusher: Flusher,
    /// The encoded bytes of the records not committed yet (changed under the
    /// bucket's write lock only).
    ledger: Mutex<Ledger>,
    /// The Lance layer's figures at the last look, for stats that cannot wait for the
    /// bucket.
    last_stats: Mutex<Option<persisting_lance::LanceStats>>,
    /// The bucket's lock file, held until `close` (or the last clone's drop).
    lock: Mutex<Option<std::fs::File>>,
    /// Users' handles alive. At 0 the flush owner ends, and an open of the bucket in
    /// this process waits for it to let go of the lock (see `open::wait_for_release`)
    /// rather than report the bucket in use.
    users: AtomicUsize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // the flush owner holds the bucket only while it works: told, it finds the
        // bucket gone and ends
        self.flusher.stop();
    }
}

/// Runs `f`, which does `op`, on a blocking thread.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BucketError::TaskLost {
            op,
            reason: e.to_string(),
        })?
}

/// The enhanced backend: WAL, compression, metrics over a Lance bucket.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use persisting::{PersistingBackend, PersistingOptions, StorageBackend};
/// use persisting_codec::record;
/// use std::time::Duration;
///
/// let dir = tempfile::tempdir().unwrap();
/// let opts = PersistingOptions {
///     enable_wal: true,
///     wal_sync_interval: Duration::ZERO, // fsync before put returns
///     ..PersistingOptions::default()
/// };
/// let backend = PersistingBackend::open(0, dir.path(), opts.clone()).await.unwrap();
/// backend.put(record! {"id" => "1", "value" => 42}).await.unwrap();
/// drop(backend); // no flush: the record is only in the WAL
/// let backend = PersistingBackend::open(0, dir.path(), opts).await.unwrap();
/// assert_eq!(backend.get(0, None).await.unwrap(), vec![record! {"id" => "1", "value" => 42}]);
/// # });
/// ```
pub struct PersistingBackend {
    inner: Arc<Inner>,
    /// Whether this is a user's handle (counted in `Inner::users`), not the flush
    /// owner's.
    user: bool,
}

impl PersistingBackend {
    /// A handle of a user of the bucket (counted: see `Inner::users`).
    fn user(inner: Arc<Inner>) -> Self {
        inner.users.fetch_add(1, Ordering::AcqRel);
        Self { inner, user: true }
    }
}

impl Clone for PersistingBackend {
    fn clone(&self) -> Self {
        Self::user(Arc::clone(&self.inner))
    }
}

impl Drop for PersistingBackend {
    fn drop(&mut self) {
        if self.user && self.inner.users.fetch_sub(1, Ordering::AcqRel) == 1 {
            // the last user is gone: the flush owner ends after its step
            self.inner.flusher.stop();
        }
    }
}

impl std::fmt::Debug for PersistingBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistingBackend")
            .field("bucket_id", &self.inner.bucket_id)
            .field("storage_path", &self.inner.storage_path)
            .finish()
    }
}

impl PersistingBackend {
    /// The options in force.
    pub fn options(&self) -> &PersistingOptions {
        &self.inner.opts
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BucketError::Closed {
                bucket_id: self.inner.bucket_id,
            }
            .into());
        }
        Ok(())
    }

    fn publish(&self, count: u64) {
        self.inner.visible.fetch_max(count, Ordering::AcqRel);
        let notify = self
            .inner
            .notify
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = notify.as_ref() {
            tx.send_if_modified(|v| {
                let grew = count > *v;
                *v = (*v).max(count);
                grew
            });
        }
    }

    /// Flushes, then merges small Lance fragments and removes old dataset versions
    /// (every offset is kept). Puts and reads wait while it runs.
    pub async fn compact(&self) -> Result<()> {
        self.check_open()?;
        self.flush_through(None).await?;
        let mut lance = self.inner.lance.write().await;
        // boxed: the compaction future is deep enough to push callers over the
        // compiler's default recursion limit
        Box::pin(lance.compact()).await?;
        // it applied a commit that was running, if one was: the WAL follows
        self.applied(&lance, &persisting_lance::FlushReport::default())
            .await
    }

    /// Records `[offset, offset + limit)` of the acknowledged ones as Arrow record
    /// batches, checked row by row like [`StorageBackend::get`] but without building
    /// records: the fast way to consume a bucket in order. See
    /// [`persisting_lance::LanceBucket::read_arrow`] for what a column view leaves out
    /// (explicit nulls read as absent, field order is column order).
    pub async fn get_arrow(
        &self,
        offset: u64,
        limit: Option<usize>,
    ) -> Result<Vec<persisting_lance::RecordBatch>> {
        let Some(limit) = self.acknowledged(offset, limit) else {
            return Ok(Vec::new());
        };
        let lance = self.inner.lance.read().await;
        Ok(lance.read_arrow(offset, limit).await?)
    }

    /// Records `[offset, offset + limit)` of the acknowledged ones, checked like
    /// [`StorageBackend::get`]'s but handed over unbuilt (see
    /// [`persisting_lance::LanceBucket::read_rows`]): for a caller that builds objects
    /// of its own from the values. Walking them yields exactly what `get` returns.
    pub async fn get_rows(
        &self,
        offset: u64,
        limit: Option<usize>,
    ) -> Result<persisting_lance::Rows> {
        let Some(limit) = self.acknowledged(offset, limit) else {
            return Ok(persisting_lance::Rows::default());
        };
        let lance = self.inner.lance.read().await;
        Ok(lance.read_rows(offset, limit).await?)
    }

    /// `limit` clipped to the acknowledged records from `offset`; `None` when there
    /// are none.
    fn acknowledged(&self, offset: u64, limit: Option<usize>) -> Option<usize> {
        let visible = self.inner.visible.load(Ordering::Acquire);
        (offset < visible).then(|| {
            limit
                .unwrap_or(usize::MAX)
                .min(usize::try_from(visible - offset).unwrap_or(usize::MAX))
        })
    }

    /// Checks every sealed Lance data file of the bucket against its seal now (each is
    /// otherwise checked before its first read). Returns the number of data files and
    /// how many carry no seal. A damaged file is `StorageError` naming it.
    pub async fn verify_files(&self) -> Result<persisting_lance::FileCheck> {
        self.check_open()?;
        let lance = self.inner.lance.read().await;
        Ok(lance.verify_files().await?)
    }

    /// Makes the acknowledged records below `offset` durable: fsyncs the WAL up to
    /// them, or without a WAL flushes them to Lance. What a consumer group commit
    /// asks first, so that no crash leaves a group past the bucket's records.
    async fn make_durable(&self, offset: u64) -> Result<()> {
        if let Some(wal) = &self.inner.wal {
            if offset > wal.durable_lsn() {
                wal.durable(offset).await?;
            }
            return Ok(());
        }
        let persisted = self.inner.lance.read().await.persisted_count();
        if offset > persisted {
            self.flush_through(Some(offset)).await?;
        }
        Ok(())
    }
}

impl StorageBackend for PersistingBackend {
    fn put_batch(&self, records: Vec<Record>) -> BoxFuture<'_, Result<()>> {
        self.put_records(records).boxed()
    }

    fn get(&self, offset: u64, limit: Option<usize>) -> BoxFuture<'_, Result<Vec<Record>>> {
        async move {
            let Some(limit) = self.acknowledged(offset, limit) else {
                return Ok(Vec::new());
            };
            let lance = self.inner.lance.read().await;
            Ok(lance.read(offset, limit).await?)
        }
        .boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            self.check_open()?;
            self.flush_through(None).await
        }
        .boxed()
    }

    fn stats(&self) -> BoxFuture<'_, Result<BackendStats>> {
        async move {
            // a flush holds the bucket while it commits, and a store that does not
            // answer holds the flush: stats answer from the last look rather than wait
            let looked = tokio::time::timeout(STATS_WAIT, self.inner.lance.read()).await;
            let mut last = self
                .inner
                .last_stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (ls, stale) = match looked {
                Ok(lance) => {
                    let now = lance.stats();
                    *last = Some(now.clone());
                    (now, false)
                }
                Err(_) => (last.clone().unwrap_or_default(), true),
            };
            drop(last);
            let failing = self.inner.flusher.failing();
            let unflushed_bytes = self.unflushed_bytes();
            let ws = self.inner.wal.as_ref().map(|w| w.stats());
            Ok(BackendStats {
                bucket_id: self.inner.bucket_id,
                total_count: self.total_count(),
                buffer_count: ls.buffered_count,
                persisted_count: ls.persisted_count,
                log_start_offset: ls.log_start,
                storage_path: self.inner.storage_path.display().to_string(),
                wal_enabled: ws.is_some(),
                wal_size_bytes: ws.map(|w| w.total_bytes),
                wal_segments: ws.map(|w| w.segments),
                fsync_count: ws.map(|w| w.fsyncs),
                wal_sync_interval: ws.map(|_| self.inner.opts.wal_sync_interval.as_secs_f64()),
                compression: self.inner.opts.compression.name().to_owned(),
                column_compression: ls.column_compression,
                flush_count: ls.flushes,
                last_flush_duration_seconds: ls.last_flush.map(|d: Duration| d.as_secs_f64()),
                unflushed_bytes,
                flush_failing_seconds: failing.as_ref().map(|(_, t)| t.as_secs_f64()),
                last_flush_error: failing.map(|(e, _)| e),
                stale,
            })
        }
        .boxed()
    }

    fn total_count(&self) -> u64 {
        self.inner.visible.load(Ordering::Acquire)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        let notify = self
            .inner
            .notify
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match notify.as_ref() {
            Some(tx) => tx.subscribe(),
            // closed: a receiver whose sender is gone ends any wait at once
            None => watch::channel(self.total_count()).1,
        }
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            if self.inner.closed.swap(true, Ordering::AcqRel) {
                return Ok(());
            }
            let mut result = self.flush_through(None).await;
            if result.is_ok() {
                // everything acknowledged is in the dataset: the next writer of a
                // remote bucket need not wait out this one's lease (after a failed
                // flush the WAL here holds records no other writer has, so the lease
                // is left to hold until its term)
                result = self
                    .inner
                    .lance
                    .read()
                    .await
                    .release_writer()
                    .await
                    .map_err(Into::into);
            }
            // dropping the sender ends every blocked stream
            self.inner
                .notify
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            // every write is refused from here on: another handle may take the bucket
            // now, while clones of this one live on
            self.inner
                .lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            // the flush owner finds the bucket closed and ends
            self.inner.flusher.stop();
            result
        }
        .boxed()
    }

    fn read_batch_size(&self) -> usize {
        self.inner.opts.batch_size
    }

    fn stored(&self) -> Result<&PersistingBackend> {
        Ok(self)
    }

    fn consumer_groups(&self) -> Result<BucketGroups> {
        let backend = self.clone();
        let end: crate::groups::LiveEnd = Arc::new(move |offset| {
            let b = backend.clone();
            async move {
                let end = b.total_count();
                if offset <= end {
                    b.make_durable(offset).await?;
                }
                Ok(end)
            }
            .boxed()
        });
        let groups = BucketGroups::live(self.inner.groups.clone(), end);
        Ok(match self.inner.opts.enable_metrics {
            true => groups.with_metrics(&self.inner.opts.metrics_topic, self.inner.bucket_id),
            false => groups,
        })
    }
}

/// The seed's `LanceBackend`: a Lance bucket with a buffer, no WAL (records are durable
/// after the next flush).
#[derive(Clone, Debug)]
pub struct LanceBackend {
    inner: PersistingBackend,
}

impl LanceBackend {
    /// Opens the bucket under `storage_path` with `batch_size` (records per streamed
    /// read) and `flush_threshold` (buffered records that trigger a flush).
    pub async fn open(
        bucket_id: u64,
        storage_path: impl AsRef<Path>,
        batch_size: usize,
        flush_threshold: usize,
    ) -> Result<Self> {
        let opts = PersistingOptions {
            batch_size,
            flush_threshold,
            ..PersistingOptions::default()
        };
        Self::open_with(bucket_id, storage_path, opts).await
    }

    /// [`LanceBackend::open`] with every option but the WAL's (`enable_wal` is taken
    /// as false): a data URI and its `storage_options`, `wal_dir` for the lock file.
    pub async fn open_with(
        bucket_id: u64,
        storage_path: impl AsRef<Path>,
        opts: PersistingOptions,
    ) -> Result<Self> {
        let opts = PersistingOptions {
            enable_wal: false,
            ..opts
        };
        Ok(Self {
            inner: PersistingBackend::open(bucket_id, storage_path, opts).await?,
        })
    }

    /// See [`PersistingBackend::get_arrow`].
    pub async fn get_arrow(
        &self,
        offset: u64,
        limit: Option<usize>,
    ) -> Result<Vec<persisting_lance::RecordBatch>> {
        self.inner.get_arrow(offset, limit).await
    }
}

impl StorageBackend for LanceBackend {
    fn put_batch(&self, records: Vec<Record>) -> BoxFuture<'_, Result<()>> {
        self.inner.put_batch(records)
    }
    fn get(&self, offset: u64, limit: Option<usize>) -> BoxFuture<'_, Result<Vec<Record>>> {
        self.inner.get(offset, limit)
    }
    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        self.inner.flush()
    }
    fn stats(&self) -> BoxFuture<'_, Result<BackendStats>> {
        self.inner.stats()
    }
    fn total_count(&self) -> u64 {
        self.inner.total_count()
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.subscribe()
    }
    fn close(&self) -> BoxFuture<'_, Result<()>> {
        self.inner.close()
    }
    fn read_batch_size(&self) -> usize {
        self.inner.read_batch_size()
    }
    fn consumer_groups(&self) -> Result<BucketGroups> {
        self.inner.consumer_groups()
    }
    fn stored(&self) -> Result<&PersistingBackend> {
        Ok(&self.inner)
    }
}

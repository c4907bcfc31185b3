//! [`PersistingBackend`] and [`LanceBackend`]: a Lance bucket, optionally behind a WAL.
//!
//! Invariants:
//! - a record's offset is its WAL LSN: the WAL and the Lance buffer are appended in the
//!   same order under one lock, and the WAL never runs ahead of or behind Lance's count;
//! - `put` writes the WAL first; with `wal_sync_interval = 0` it returns only once the
//!   WAL is fsynced, waiting outside the lock (`Wal::durable`: a future, no thread
//!   per waiting put) so concurrent puts share one fsync;
//! - readers see a record only once it is acknowledged (the visible count);
//! - `flush` checkpoints the WAL only after the Lance commit is durable, and at open
//!   the WAL entries at or above Lance's count are replayed with their offsets, so a
//!   crash anywhere loses no acknowledged record and duplicates none.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock as SyncRwLock};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use persisting_codec::{Record, decode_record, encode_record};
use persisting_compress::{Codec, Compressor, UNCOMPRESSED_BYTES_MAX_DEFAULT, decompress};
use persisting_lance::{
    ColumnCompression, Disk, FlushReport, LanceBucket, LanceOptions, LogSize, RealDisk,
};
use persisting_wal::{Fs, RealFs, SyncPolicy, Wal, WalOptions};
use tokio::sync::{RwLock, watch};

use crate::backend::{BackendStats, StorageBackend};
use crate::error::{BucketError, Result, StorageError};
use crate::groups::BucketGroups;
use crate::metrics::BucketMetrics;
use crate::options::PersistingOptions;

/// Directory of the WAL inside a bucket's storage path.
pub const WAL_DIR: &str = "wal";

/// Lock file inside a bucket's storage path, held by the one handle that writes it.
pub const LOCK_FILE: &str = "LOCK";

/// How long `stats` waits for a running flush before it answers from the last look.
const STATS_WAIT: Duration = Duration::from_millis(100);

/// Attempts, 20 ms apart, to take a bucket's lock before reporting it held.
const LOCK_RETRIES: u32 = 25;

/// The bucket's local directory, holding its lock file and WAL: `wal_dir` if set,
/// else the storage path. Data at a URI (`s3://…`) has no local directory of its own:
/// `wal_dir` is required then.
fn local_dir(storage_path: &Path, opts: &PersistingOptions) -> Result<PathBuf> {
    if let Some(dir) = &opts.wal_dir {
        return Ok(dir.clone());
    }
    let path = storage_path.to_string_lossy();
    if persisting_lance::is_remote(&path) {
        return Err(StorageError::invalid(
            "wal_dir",
            "(unset)",
            format!(
                "is required when the data is at a URI ({path}): the WAL and the lock file need a local directory"
            ),
        ));
    }
    Ok(storage_path.to_path_buf())
}

/// The file in a bucket's local directory naming its writer for the lease of data
/// at a URI.
pub const WRITER_FILE: &str = "WRITER";

/// For data at a URI: the name this bucket's writer holds the lease under, kept in
/// `{local_dir}/WRITER` (created at the first open). The same local directory (the
/// same WAL, under the lock this handle holds) is the same writer: restarted, it
/// takes its lease back at once instead of waiting for it to expire.
fn writer_id(storage_path: &Path, local_dir: &Path) -> Result<Option<String>> {
    if !persisting_lance::is_remote(&storage_path.to_string_lossy()) {
        return Ok(None);
    }
    let path = local_dir.join(WRITER_FILE);
    let failed = |e: std::io::Error| BucketError::Lock {
        path: local_dir.to_path_buf(),
        source: std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
    };
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(Some(id.trim().to_owned())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e).into()),
    }
    let id = persisting_lance::writer_name();
    let tmp = local_dir.join(format!("{WRITER_FILE}.tmp"));
    std::fs::write(&tmp, format!("{id}\n")).map_err(failed)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(failed)?;
    std::fs::rename(&tmp, &path).map_err(failed)?;
    std::fs::File::open(local_dir)
        .and_then(|d| d.sync_all())
        .map_err(failed)?;
    Ok(Some(id))
}

/// Takes the bucket's exclusive lock (released when the file is closed, also when the
/// process dies), so two writers never interleave a bucket's offsets or WAL.
fn lock_bucket(storage_path: &Path) -> Result<std::fs::File> {
    let failed = |source| BucketError::Lock {
        path: storage_path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(storage_path).map_err(failed)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(storage_path.join(LOCK_FILE))
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(BucketError::Locked {
            path: storage_path.to_path_buf(),
        }
        .into()),
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e).into()),
    }
}

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
    /// While flushes fail: the last error, and when the failures began.
    flush_error: Mutex<Option<(String, std::time::Instant)>>,
    /// The Lance layer's figures at the last look, for stats that cannot wait for a
    /// running flush.
    last_stats: Mutex<Option<persisting_lance::LanceStats>>,
    /// The bucket's lock file, held until `close` (or the last clone's drop).
    lock: Mutex<Option<std::fs::File>>,
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
#[derive(Clone)]
pub struct PersistingBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PersistingBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistingBackend")
            .field("bucket_id", &self.inner.bucket_id)
            .field("storage_path", &self.inner.storage_path)
            .finish()
    }
}

fn column_compression(codec: Codec) -> ColumnCompression {
    match codec {
        Codec::Zstd { level } => ColumnCompression::Zstd(Some(level)),
        Codec::Lz4 => ColumnCompression::Lz4,
        Codec::None | Codec::Snappy => ColumnCompression::Default,
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

impl PersistingBackend {
    /// Opens (and recovers) the bucket stored under `storage_path`.
    pub async fn open(
        bucket_id: u64,
        storage_path: impl AsRef<Path>,
        opts: PersistingOptions,
    ) -> Result<Self> {
        Self::open_with_wal_fs(bucket_id, storage_path, opts, Arc::new(RealFs)).await
    }

    /// Opens the bucket with its WAL on any [`Fs`] (the WAL crate's simulated file
    /// system in tests; Lance stays on the real disk).
    pub async fn open_with_wal_fs(
        bucket_id: u64,
        storage_path: impl AsRef<Path>,
        opts: PersistingOptions,
        wal_fs: Arc<dyn Fs>,
    ) -> Result<Self> {
        let open = Self::open_with_disks(bucket_id, storage_path, opts, wal_fs, Arc::new(RealDisk));
        Box::pin(open).await
    }

    /// Opens the bucket with its WAL on `wal_fs` and its Lance files on `lance_disk`:
    /// with the simulated ones ([`crate::wal::SimFs`], [`crate::lance::SimDisk`]) a
    /// test cuts the power of the whole bucket.
    pub async fn open_with_disks(
        bucket_id: u64,
        storage_path: impl AsRef<Path>,
        opts: PersistingOptions,
        wal_fs: Arc<dyn Fs>,
        lance_disk: Arc<dyn Disk>,
    ) -> Result<Self> {
        if opts.batch_size == 0 {
            return Err(StorageError::invalid("batch_size", 0, "must be at least 1"));
        }
        if opts.flush_threshold == 0 {
            return Err(StorageError::invalid(
                "flush_threshold",
                0,
                "must be at least 1",
            ));
        }
        let storage_path = storage_path.as_ref().to_path_buf();
        let local_dir = local_dir(&storage_path, &opts)?;
        // a lock can be held for a moment by a handle being dropped elsewhere, or by a
        // process being spawned (it shares the descriptor until it execs): retry
        // briefly before reporting the bucket as in use
        let mut tries = 0;
        let lock = loop {
            match lock_bucket(&local_dir) {
                Err(StorageError::Bucket(BucketError::Locked { .. })) if tries < LOCK_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => break other?,
            }
        };
        let lance_opts = LanceOptions {
            // the bucket's one flush policy (LanceBucket::flush_due) decides, asked
            // here after each put
            flush_threshold: opts.flush_threshold,
            column_compression: column_compression(opts.compression),
            target_rows_per_fragment: opts.target_rows_per_fragment,
            storage_options: opts.storage_options.clone().into_iter().collect(),
            lease_term: opts.lease_term,
            writer_id: writer_id(&storage_path, &local_dir)?,
            flush_interval: opts.flush_interval,
            ..LanceOptions::default()
        };
        // a flush commit left running by a dropped handle lands before this open counts
        // the rows (LanceBucket::open waits for it): the WAL is replayed after it
        let groups = persisting_lance::Groups::open_on(
            &storage_path,
            &lance_opts.storage_options,
            Arc::clone(&lance_disk),
        )
        .await?;
        let mut lance =
            Box::pin(LanceBucket::open_on(&storage_path, lance_opts, lance_disk)).await?;
        // data at a URI: the writer's lease, before anything is replayed or written
        lance.ensure_writer().await?;
        let wal = if opts.enable_wal {
            Some(Arc::new(
                open_wal(bucket_id, &local_dir, &opts, &mut lance, wal_fs).await?,
            ))
        } else {
            None
        };
        let wait_durable = wal
            .as_ref()
            .is_some_and(|w| w.options().sync == SyncPolicy::Always);
        let compressor = Compressor::new(opts.compression)?;
        let count = lance.total_count();
        let metrics = opts
            .enable_metrics
            .then(|| BucketMetrics::new(&opts.metrics_topic, bucket_id));
        if let Some(m) = &metrics {
            m.put(
                0,
                lance.buffered_count(),
                wal.as_ref().map(|w| w.stats().total_bytes),
            );
        }
        let (notify, _) = watch::channel(count);
        let interval = opts.flush_interval;
        let backend = Self {
            inner: Arc::new(Inner {
                bucket_id,
                storage_path,
                opts,
                lance: RwLock::new(lance),
                wal,
                wait_durable,
                compressor: Mutex::new(compressor),
                visible: AtomicU64::new(count),
                notify: SyncRwLock::new(Some(notify)),
                closed: AtomicBool::new(false),
                metrics,
                groups,
                flush_error: Mutex::new(None),
                last_stats: Mutex::new(None),
                lock: Mutex::new(Some(lock)),
            }),
        };
        if let Some(interval) = interval {
            backend.pace_flushes(interval);
        }
        Ok(backend)
    }

    /// With `flush_interval`: a task that, a few times per interval, applies a
    /// background flush that has ended and starts the flush that has come due, so
    /// records that wait reach the dataset without a later put. It ends with the
    /// handle (it holds it only while it looks).
    fn pace_flushes(&self, interval: Duration) {
        let handle = Arc::downgrade(&self.inner);
        let tick = (interval / 4).max(Duration::from_millis(10));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(inner) = handle.upgrade() else {
                    return;
                };
                let backend = PersistingBackend { inner };
                if backend.check_open().is_err() {
                    return;
                }
                // a failure leaves the flush due: the next tick or put retries it
                let _retried = backend.paced_flush().await;
            }
        });
    }

    /// One look of [`Self::pace_flushes`].
    async fn paced_flush(&self) -> Result<()> {
        let mut lance = self.inner.lance.write().await;
        if let Some(report) = self.noted(lance.finished_flush().await.transpose())? {
            self.flushed(&lance, report).await?;
        }
        if lance.flush_due(self.log_size(self.wal_bytes()))
            && let Some(report) = self.noted(lance.start_flush().await)?
        {
            self.flushed(&lance, report).await?;
        }
        Ok(())
    }

    /// Passes a flush's outcome on, keeping a failure for stats (the first failure
    /// of a run of them gives the time they began).
    fn noted<T>(&self, outcome: persisting_lance::Result<T>) -> Result<T> {
        if let Err(e) = &outcome {
            let mut failing = self
                .inner
                .flush_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let since = failing
                .as_ref()
                .map_or_else(std::time::Instant::now, |(_, since)| *since);
            *failing = Some((e.to_string(), since));
        }
        Ok(outcome?)
    }

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

    /// A put, top to bottom: encode → lock → admit → WAL append → buffer → unlock →
    /// wait durable → publish → maybe flush. Nothing of a refused batch is logged or
    /// buffered, so a retry duplicates nothing.
    async fn put_records(&self, records: Vec<Record>) -> Result<()> {
        self.check_open()?;
        if records.is_empty() {
            return Ok(());
        }
        let count = records.len() as u64;
        let payloads = self.encode(&records)?;
        let mut lance = self.inner.lance.write().await;
        // nothing is acknowledged once another writer took the bucket over
        lance.ensure_writer().await?;
        self.catch_up(&mut lance).await?;
        let admitted = lance.admit(records)?;
        let logged = self.log(&payloads, admitted.offsets().start)?;
        let offsets = lance.buffer(admitted)?;
        let buffered = lance.buffered_count();
        let wal_bytes = self.wal_bytes();
        let flush_due = lance.flush_due(self.log_size(wal_bytes));
        drop(lance);
        if let (Some(end), Some(wal)) = (logged, &self.inner.wal) {
            // concurrent puts share one fsync: the WAL's sync thread syncs for every
            // waiting task at once
            wal.durable(end).await?;
        }
        self.publish(offsets.end);
        if let Some(m) = &self.inner.metrics {
            m.put(count, buffered, wal_bytes);
        }
        if flush_due {
            // the batch is acknowledged, whatever this flush does: a failure leaves the
            // flush due, and the next put makes it before taking anything. The flush
            // commits in the background; the put that finds it ended (or the next
            // one due) checkpoints the WAL to it.
            let _retried_by_the_next_put = self.start_flush().await;
        }
        Ok(())
    }

    /// The WAL payloads of `records` (none without a WAL).
    fn encode(&self, records: &[Record]) -> Result<Vec<Vec<u8>>> {
        if self.inner.wal.is_none() {
            return Ok(Vec::new());
        }
        let mut c = self
            .inner
            .compressor
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(records
            .iter()
            .map(|r| c.compress(&encode_record(r)))
            .collect::<std::result::Result<Vec<_>, _>>()?)
    }

    /// Before a put (the bucket locked): applies a background flush that has ended
    /// (the WAL lets go of what it made durable) and makes a flush an earlier put left
    /// due (its flush failed) first, so that an error of it refuses this batch whole.
    async fn catch_up(&self, lance: &mut LanceBucket) -> Result<()> {
        if let Some(Ok(report)) = lance.finished_flush().await {
            self.flushed(lance, report).await?;
        }
        if lance.flush_due(self.log_size(self.wal_bytes())) {
            self.flush_locked(lance).await?;
        }
        Ok(())
    }

    /// Appends the payloads of a batch the bucket admitted at `start` to the WAL
    /// (without waiting for its fsync). Returns the offset the put must wait to be
    /// durable up to (under `wal_sync_interval = 0`), if any.
    fn log(&self, payloads: &[Vec<u8>], start: u64) -> Result<Option<u64>> {
        let Some(wal) = &self.inner.wal else {
            return Ok(None);
        };
        let range = wal.append_batch_deferred(payloads)?;
        if range.start != start {
            return Err(BucketError::OffsetMismatch {
                bucket_id: self.inner.bucket_id,
                wal_at: range.start,
                bucket_at: start,
            }
            .into());
        }
        Ok(self.inner.wait_durable.then_some(range.end))
    }

    /// Flushes, then merges small Lance fragments and removes old dataset versions
    /// (every offset is kept). Puts and reads wait while it runs.
    pub async fn compact(&self) -> Result<()> {
        self.check_open()?;
        self.flush_now().await?;
        let mut lance = self.inner.lance.write().await;
        // boxed: the compaction future is deep enough to push callers over the
        // compiler's default recursion limit
        Ok(Box::pin(lance.compact()).await?)
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

    /// The WAL's size against `max_wal_size`, for the bucket's flush policy.
    fn log_size(&self, wal_bytes: Option<u64>) -> Option<LogSize> {
        wal_bytes.map(|bytes| LogSize {
            bytes,
            bytes_max: self.inner.opts.max_wal_size,
        })
    }

    /// The WAL's size on disk, if there is a WAL.
    fn wal_bytes(&self) -> Option<u64> {
        self.inner.wal.as_ref().map(|w| w.stats().total_bytes)
    }

    /// Starts a background flush of the bucket, first applying the one running (its
    /// records durable: the WAL is checkpointed to it).
    async fn start_flush(&self) -> Result<()> {
        let mut lance = self.inner.lance.write().await;
        if let Some(report) = self.noted(lance.start_flush().await)? {
            self.flushed(&lance, report).await?;
        }
        Ok(())
    }

    async fn flush_now(&self) -> Result<()> {
        let mut lance = self.inner.lance.write().await;
        self.flush_locked(&mut lance).await
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
            self.flush_now().await?;
        }
        Ok(())
    }

    /// Flushes the bucket (its lock held by the caller), then checkpoints the WAL to
    /// what Lance holds durably.
    async fn flush_locked(&self, lance: &mut LanceBucket) -> Result<()> {
        let report = self.noted(lance.flush().await)?;
        self.flushed(lance, report).await
    }

    /// After a flush made `report.persisted_count` records durable in Lance:
    /// checkpoints the WAL to them, publishes them, records the flush's metrics.
    async fn flushed(&self, lance: &LanceBucket, report: FlushReport) -> Result<()> {
        self.inner
            .flush_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(wal) = self.inner.wal.clone() {
            let persisted = report.persisted_count;
            blocking("checkpoint the WAL", move || Ok(wal.checkpoint(persisted)?)).await?;
        }
        self.publish(report.persisted_count);
        if let Some(m) = &self.inner.metrics
            && report.records > 0
        {
            let wal_bytes = self.wal_bytes();
            m.flushed(report.duration, lance.buffered_count(), wal_bytes);
        }
        Ok(())
    }
}

/// Opens the WAL of a bucket and replays what Lance lacks into the bucket's buffer.
async fn open_wal(
    bucket_id: u64,
    local_dir: &Path,
    opts: &PersistingOptions,
    lance: &mut LanceBucket,
    fs: Arc<dyn Fs>,
) -> Result<Wal> {
    let persisted = lance.persisted_count();
    let dir = local_dir.join(WAL_DIR);
    let sync = if opts.wal_sync_interval.is_zero() {
        SyncPolicy::Always
    } else {
        SyncPolicy::Interval(opts.wal_sync_interval)
    };
    let wal_opts = WalOptions {
        sync,
        start_lsn: persisted,
        segment_bytes_max: (opts.max_wal_size / 4).clamp(4096, 64 << 20),
        on_fsync: opts
            .enable_metrics
            .then(|| BucketMetrics::fsync_observer(&opts.metrics_topic, bucket_id)),
        ..WalOptions::default()
    };
    let wal_dir = dir.clone();
    let (wal, entries) = blocking("open and replay the WAL", move || {
        let (wal, _report) = Wal::open_with(fs, &wal_dir, wal_opts)?;
        if wal.next_lsn() < persisted {
            // Lance holds records whose WAL entries were lost unsynced: nothing to replay
            wal.checkpoint(persisted)?;
        }
        if wal.first_lsn() > persisted {
            return Err(BucketError::WalGap {
                wal_dir,
                persisted,
                wal_first: wal.first_lsn(),
            }
            .into());
        }
        let mut entries = Vec::new();
        for entry in wal.read_from(persisted)? {
            entries.push(entry?.payload);
        }
        Ok((wal, entries))
    })
    .await?;
    let mut records = Vec::with_capacity(entries.len());
    for frame in entries {
        let bytes = decompress(&frame, UNCOMPRESSED_BYTES_MAX_DEFAULT)?;
        records.push(decode_record(&bytes)?);
    }
    lance.put_batch(records)?;
    Ok(wal)
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
            self.flush_now().await
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
            let failing = self
                .inner
                .flush_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let ws = self.inner.wal.as_ref().map(|w| w.stats());
            Ok(BackendStats {
                bucket_id: self.inner.bucket_id,
                total_count: self.total_count(),
                buffer_count: ls.buffered_count,
                persisted_count: ls.persisted_count,
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
                flush_failing_seconds: failing.as_ref().map(|(_, t)| t.elapsed().as_secs_f64()),
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
            let result = self.flush_now().await;
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
            result
        }
        .boxed()
    }

    fn read_batch_size(&self) -> usize {
        self.inner.opts.batch_size
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
}

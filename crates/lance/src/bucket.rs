//! [`LanceBucket`]: one bucket's records, buffered in memory and appended to a Lance
//! dataset at `{storage_path}/data.lance`.
//!
//! Invariants:
//! - offsets are dense: the dataset holds offsets `0..persisted_count`, the buffer the
//!   next ones; a record's offset is its row position and never changes (appends and
//!   compaction keep row order);
//! - a batch is admitted whole or not at all: its schema is checked before any of it is
//!   buffered;
//! - a flush is one append commit (plus the schema commits it needs first); the buffer
//!   is released only once the commit and every file it wrote are fsynced, so a failed
//!   flush keeps every record and can be retried;
//! - at most one data commit runs at a time; the records it commits stay in the buffer
//!   (and are read from it) until its outcome is applied, and only the buffer's
//!   records after them may change meanwhile (appended);
//! - every data file this handle writes is sealed (size and CRC-32 in
//!   `data.lance.sums`) before the flush is reported durable, and Lance reads no
//!   sealed file this handle has not checked against its seal (see `sums`);
//! - the dataset is never rewritten: new fields are added as all-null columns, and an
//!   int column that receives a float is rewritten alone, as float64.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use arrow::record_batch::{RecordBatch, RecordBatchIterator};
use futures::TryStreamExt;
use lance::Dataset;
use lance::dataset::builder::DatasetBuilder;
use lance::dataset::optimize::{CompactionOptions, compact_files};
use lance::dataset::{BatchUDF, ColumnAlteration, NewColumnTransform, WriteMode, WriteParams};
use lance_io::object_store::{ObjectStoreParams, WrappingObjectStore};
use persisting_codec::Record;

use crate::convert::{from_batch, record_columns, to_batch, to_batches, verify_rows};
use crate::error::{Error, Result};
use crate::point::FragmentReaders;
use crate::schema::{
    CHECKSUM_COLUMN, ColType, FieldState, LAYOUT_COLUMN, REGISTRY_KEY, SchemaState, arrow_field,
    cast_to, col_type, is_internal_column, materialized, missing_children, needs_rewrite,
};
use crate::store::object::DurableStores;
use crate::store::seals::FileSums;
use crate::store::synced::SyncedFiles;
use crate::store::{self, Disk};

/// Name of the dataset directory inside a bucket's storage path.
pub const DATASET_DIR: &str = "data.lance";
const WIDEN_PREFIX: &str = "_persisting_widen:";

/// Compression Lance applies to the data columns (set at creation and for each column
/// added later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColumnCompression {
    /// Lance's default encodings.
    #[default]
    Default,
    /// zstd, at a level (Lance's default level when `None`).
    Zstd(Option<i32>),
    /// lz4.
    Lz4,
}

impl FromStr for ColumnCompression {
    type Err = Error;
    /// `none`, `zstd`, `zstd:<level>`, `lz4`. `snappy` is refused: Lance offers no
    /// snappy column compression (Persisting applies snappy to the WAL only).
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let invalid = |reason: &str| Error::InvalidOption {
            name: "compression",
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        match lower.as_str() {
            "" | "none" => Ok(Self::Default),
            "zstd" => Ok(Self::Zstd(None)),
            "lz4" => Ok(Self::Lz4),
            "snappy" => Err(invalid(
                "Lance has no snappy column compression; snappy applies to the WAL only",
            )),
            other => match other.strip_prefix("zstd:").map(str::parse::<i32>) {
                Some(Ok(level)) if (1..=22).contains(&level) => Ok(Self::Zstd(Some(level))),
                _ => Err(invalid("valid values are none, zstd, zstd:<1..=22>, lz4")),
            },
        }
    }
}

impl std::fmt::Display for ColumnCompression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("none"),
            Self::Zstd(None) => f.write_str("zstd"),
            Self::Zstd(Some(l)) => write!(f, "zstd:{l}"),
            Self::Lz4 => f.write_str("lz4"),
        }
    }
}

/// Options of a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanceOptions {
    /// [`LanceBucket::append`] starts a flush (in the background) once this many
    /// records are buffered (default 1000; 0 never flushes automatically).
    pub flush_threshold: usize,
    /// Column compression (default: Lance's own encodings).
    pub column_compression: ColumnCompression,
    /// A flush that leaves more small fragments than this compacts them (default 64;
    /// 0 disables automatic compaction). A fragment is small below
    /// `target_rows_per_fragment / 32` rows: flushes of that size or more make
    /// fragments reads do not suffer from, and are not rewritten on their own (a flush
    /// of at least twice that is written in parts of that size or more at once, one
    /// per core, each its own fragment).
    pub compact_fragments_max: usize,
    /// Rows per fragment that compaction aims for (default 1,048,576).
    pub target_rows_per_fragment: usize,
    /// Dataset versions older than this are removed after a compaction (default 10
    /// minutes). Readers pinned to a removed version fail, so keep it above the
    /// longest read.
    pub version_retention: Duration,
}

impl Default for LanceOptions {
    fn default() -> Self {
        Self {
            flush_threshold: 1000,
            column_compression: ColumnCompression::Default,
            compact_fragments_max: 64,
            target_rows_per_fragment: 1 << 20,
            version_retention: Duration::from_secs(600),
        }
    }
}

impl LanceOptions {
    /// Checks every option, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.target_rows_per_fragment == 0 {
            return Err(Error::InvalidOption {
                name: "target_rows_per_fragment",
                value: "0".to_owned(),
                reason: "must be at least 1".to_owned(),
            });
        }
        if chrono::Duration::from_std(self.version_retention).is_err() {
            return Err(Error::InvalidOption {
                name: "version_retention",
                value: format!("{:?}", self.version_retention),
                reason: "is too long".to_owned(),
            });
        }
        Ok(())
    }
}

/// What [`LanceBucket::verify_files`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileCheck {
    /// Data files of the dataset.
    pub files: usize,
    /// Of those, files without a seal (read unverified, rows still checked).
    pub unsealed: usize,
}

/// What a flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Records appended by this flush.
    pub records: usize,
    /// Records in the dataset after it: the next offset, and one past the last offset
    /// made durable.
    pub persisted_count: u64,
    /// Files fsynced to make the commit durable.
    pub files_synced: usize,
    /// Whether the flush compacted fragments afterwards.
    pub compacted: bool,
    /// Wall time of the flush.
    pub duration: Duration,
}

/// Sizes and counters of a bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LanceStats {
    /// Records in the dataset.
    pub persisted_count: u64,
    /// Records in the buffer.
    pub buffered_count: u64,
    /// Buffered records a flush started by [`LanceBucket::append`] is committing
    /// (0 when none runs; they stay buffered until it is applied).
    pub flushing_count: u64,
    /// Fragments of the dataset.
    pub fragments: usize,
    /// Dataset version.
    pub version: u64,
    /// Flushes since open.
    pub flushes: u64,
    /// Compactions since open.
    pub compactions: u64,
    /// Duration of the last flush.
    pub last_flush: Option<Duration>,
    /// Column compression in force.
    pub column_compression: String,
    /// The dataset's URI.
    pub dataset_uri: String,
}

/// One bucket: a Lance dataset plus a buffer of records not yet in it.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use persisting_codec::record;
/// use persisting_lance::{LanceBucket, LanceOptions};
///
/// let dir = tempfile::tempdir().unwrap();
/// let mut bucket = LanceBucket::open(dir.path(), LanceOptions::default()).await.unwrap();
/// bucket.append(vec![record! {"id" => "1", "value" => 42}]).await.unwrap();
/// let report = bucket.flush().await.unwrap();
/// assert_eq!(report.persisted_count, 1);
/// let again = LanceBucket::open(dir.path(), LanceOptions::default()).await.unwrap();
/// assert_eq!(again.read(0, 10).await.unwrap(), vec![record! {"id" => "1", "value" => 42}]);
/// # });
/// ```
#[derive(Debug)]
pub struct LanceBucket {
    root: PathBuf,
    uri: String,
    opts: LanceOptions,
    dataset: Option<Arc<Dataset>>,
    schema: SchemaState,
    buffer: Vec<Record>,
    persisted: u64,
    /// Local datasets: the files known durable, and the object stores Lance writes
    /// through (making each commit durable before it returns).
    synced: Option<Arc<SyncedFiles>>,
    stores: Option<DurableStores>,
    sums: Option<Arc<FileSums>>,
    /// The data commit of a flush, on a task of its own: a caller who stops waiting
    /// (a timeout, a cancelled task) cannot leave it half known. The next flush waits
    /// for it and applies its outcome.
    commit: Option<PendingCommit>,
    /// Arrow batches of buffered records built while a commit runs (see
    /// [`Converted`]).
    converted: Option<Converted>,
    /// Records of the last commit a background flush applied, kept only while the
    /// next commit runs: the writer frees them when it waits for that commit (time it
    /// would spend idle), or hands them to a blocking thread when it did not wait.
    /// Empty whenever no commit runs, so an idle bucket holds no freed records.
    released: Vec<Record>,
    /// A flush stopped part way or failed after Lance may have committed (schema
    /// changes, or records): the next flush reloads the dataset and counts what landed.
    unsure: bool,
    flushes: u64,
    compactions: u64,
    last_flush: Option<Duration>,
    readahead: tokio::sync::Mutex<ReadAhead>,
    /// Fragment readers kept open for small reads.
    readers: Arc<FragmentReaders>,
    /// This dataset's entry in the process's running commits (see `running_commits`).
    running: Arc<tokio::sync::RwLock<()>>,
}

/// Whether a local dataset directory holds a committed version. A first commit
/// interrupted by a crash leaves data files and no manifest: nothing of it was ever
/// visible, and the bucket starts empty (with a WAL, its records are still there, as
/// the WAL was not checkpointed).
fn has_manifest(uri: &str) -> bool {
    std::fs::read_dir(Path::new(uri).join("_versions")).is_ok_and(|mut entries| {
        entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".manifest")))
    })
}

fn is_remote(path: &str) -> bool {
    path.contains("://") && !path.starts_with("file://")
}

impl LanceBucket {
    /// Opens the bucket stored under `storage_path` (the dataset is created by the first
    /// flush). A dataset written by another tool (pylance, the Python Persisting
    /// package) opens too: its columns are read in their order, nulls as absent fields.
    pub async fn open(storage_path: impl AsRef<Path>, opts: LanceOptions) -> Result<Self> {
        Box::pin(Self::open_on(storage_path, opts, store::real())).await
    }

    /// [`LanceBucket::open`] with every file operation on `disk` (a [`crate::SimDisk`]
    /// in tests of power losses).
    pub async fn open_on(
        storage_path: impl AsRef<Path>,
        opts: LanceOptions,
        disk: Arc<dyn Disk>,
    ) -> Result<Self> {
        opts.validate()?;
        let root = storage_path.as_ref().to_path_buf();
        let root_str = root.to_str().ok_or_else(|| Error::InvalidOption {
            name: "storage_path",
            value: root.display().to_string(),
            reason: "must be valid UTF-8".to_owned(),
        })?;
        let uri = format!("{}/{DATASET_DIR}", root_str.trim_end_matches('/'));
        let remote = is_remote(&uri);
        // the absolute path Lance's local store writes to (it names objects so)
        let local = store::absolute(Path::new(&uri));
        let synced =
            (!remote).then(|| Arc::new(SyncedFiles::new(local.clone(), Arc::clone(&disk))));
        let stores = synced
            .as_ref()
            .map(|synced| DurableStores::new(Arc::clone(&disk), local.clone(), Arc::clone(synced)));
        let sums = match synced {
            Some(_) => Some(Arc::new(FileSums::load(
                &root,
                Path::new(&uri),
                Arc::clone(&disk),
            )?)),
            None => None,
        };
        let running = running_commits(&uri);
        let mut bucket = Self {
            root,
            uri,
            opts,
            dataset: None,
            schema: SchemaState::default(),
            buffer: Vec::new(),
            converted: None,
            released: Vec::new(),
            persisted: 0,
            synced,
            stores,
            sums,
            commit: None,
            unsure: false,
            flushes: 0,
            compactions: 0,
            last_flush: None,
            readahead: tokio::sync::Mutex::new(ReadAhead::None),
            readers: Arc::new(FragmentReaders::new(!remote)),
            running,
        };
        // commits of an earlier handle of this dataset still running land first
        drop(bucket.running.write().await);
        let exists = if bucket.synced.is_some() {
            Path::new(&bucket.uri).exists()
        } else {
            true
        };
        if exists {
            match bucket.open_dataset().await {
                Ok(ds) => {
                    bucket.adopt(ds).await?;
                    // a crash may have left the last commit's files unsynced (they are
                    // not sealed: only files this handle wrote are)
                    bucket.sync_files(false).await?;
                }
                Err(lance::Error::DatasetNotFound { .. })
                    if bucket.synced.is_none() || !has_manifest(&bucket.uri) => {}
                Err(e) => return Err(Error::lance("open", &bucket.uri)(e)),
            }
        }
        Ok(bucket)
    }

    /// Takes a dataset as the current state: schema registry, row count, and the repair
    /// of an interrupted int-to-float rewrite.
    async fn adopt(&mut self, mut ds: Dataset) -> Result<()> {
        self.finish_interrupted_widening(&mut ds).await?;
        let arrow = ArrowSchema::from(ds.schema());
        let registry: Vec<String> = arrow
            .metadata()
            .get(REGISTRY_KEY)
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        let mut state = SchemaState::default();
        let names = registry
            .iter()
            .cloned()
            .chain(arrow.fields().iter().map(|f| f.name().clone()));
        for name in names {
            if is_internal_column(&name) || state.position(&name).is_some() {
                continue;
            }
            let field = arrow.field_with_name(&name).ok();
            state.push(FieldState {
                ty: field.map(col_type),
                name,
            });
        }
        self.persisted = ds
            .count_rows(None)
            .await
            .map_err(Error::lance("count the rows of", &self.uri))? as u64;
        self.schema = state;
        self.dataset = Some(Arc::new(ds));
        Ok(())
    }

    async fn finish_interrupted_widening(&self, ds: &mut Dataset) -> Result<()> {
        let arrow = ArrowSchema::from(ds.schema());
        let tmps: Vec<String> = arrow
            .fields()
            .iter()
            .filter_map(|f| f.name().strip_prefix(WIDEN_PREFIX).map(str::to_owned))
            .collect();
        for name in tmps {
            let tmp = format!("{WIDEN_PREFIX}{name}");
            if arrow.field_with_name(&name).is_ok() {
                // the rewrite had not replaced the old column yet: start over later
                ds.drop_columns(&[tmp.as_str()])
                    .await
                    .map_err(Error::lance("drop an unfinished column of", &self.uri))?;
            } else {
                ds.alter_columns(&[ColumnAlteration::new(tmp).rename(name)])
                    .await
                    .map_err(Error::lance("rename a rewritten column of", &self.uri))?;
            }
        }
        Ok(())
    }

    /// The storage path.
    pub fn storage_path(&self) -> &Path {
        &self.root
    }

    /// The dataset's URI (`{storage_path}/data.lance`).
    pub fn dataset_uri(&self) -> &str {
        &self.uri
    }

    /// Records in the dataset: offsets `0..persisted_count()` are there.
    pub fn persisted_count(&self) -> u64 {
        self.persisted
    }

    /// Records in the buffer.
    pub fn buffered_count(&self) -> u64 {
        self.buffer.len() as u64
    }

    /// All records: the next offset.
    pub fn total_count(&self) -> u64 {
        self.persisted + self.buffer.len() as u64
    }

    /// The options in force.
    pub fn options(&self) -> &LanceOptions {
        &self.opts
    }

    /// Buffers a batch without flushing; returns the offsets it took. The whole batch
    /// is refused, and nothing buffered, if any value conflicts with its column.
    pub fn put_batch(&mut self, records: Vec<Record>) -> Result<Range<u64>> {
        self.put_batch_then(records, |_| Ok::<_, Error>(()))
            .map(|(range, ())| range)
    }

    /// Buffers a batch like [`LanceBucket::put_batch`], running `log` (given the
    /// batch's first offset) after the schema check and before buffering: an owner
    /// logs the batch elsewhere first (a WAL). If the check or `log` fails, nothing is
    /// buffered and the schema is unchanged.
    pub fn put_batch_then<T, E: From<Error>>(
        &mut self,
        records: Vec<Record>,
        log: impl FnOnce(u64) -> std::result::Result<T, E>,
    ) -> std::result::Result<(Range<u64>, T), E> {
        let schema = self.schema.admitted(&records)?;
        let start = self.total_count();
        let logged = log(start)?;
        self.schema = schema;
        self.buffer.extend(records);
        if self.commit.is_some() {
            // build the next commit's batches while this one runs
            self.convert_ahead();
        }
        Ok((start..self.total_count(), logged))
    }

    /// Buffers a batch (see [`LanceBucket::put_batch`]) and, once `flush_threshold`
    /// records not yet being committed are buffered, starts a flush of them that runs
    /// on in the background while the caller goes on (at most one runs; a flush that
    /// comes due while one runs waits for it first). `Ok` means the batch is buffered;
    /// an error means nothing of it is, so a caller may retry the batch without
    /// duplicating it. A background flush that fails keeps its records buffered and
    /// stays due: the next append makes it before buffering anything (its failure
    /// refuses that append's batch, so a bucket that cannot flush stops growing);
    /// [`LanceBucket::flush`] waits for a running flush and reports its failure.
    /// Buffered records are read back from memory until their flush is applied, so a
    /// reader sees each record once whichever side holds it.
    pub async fn append(&mut self, records: Vec<Record>) -> Result<Range<u64>> {
        let threshold = self.opts.flush_threshold;
        let due = |b: &Self| threshold > 0 && b.unflushed() >= threshold;
        // a failure leaves the flush's records due: made below, or by the next flush
        let _applied = self.finished_flush().await;
        if due(self) {
            self.flush().await?;
        }
        let range = self.put_batch(records)?;
        if due(self) {
            // the batch is buffered, whatever this flush does: a failure leaves the
            // flush due, for the next append or flush to make or report
            let _retried_by_the_next_append = self.start_flush().await;
        }
        Ok(range)
    }

    /// Converts the buffered records after those the running commit holds and after
    /// those already converted, once there are enough of them, for the next commit
    /// (which uses them if the dataset schema and the field registry are still the
    /// ones they were built for, and builds its batches anew otherwise). Batches built
    /// for another field registry are dropped here; the dataset, and so its schema,
    /// stays as it is while the commit runs, and the next commit checks it anyway.
    fn convert_ahead(&mut self) {
        let Some(ds) = self.dataset.as_deref() else {
            return;
        };
        let held = self.flushing();
        let converted = match &mut self.converted {
            Some(c) if c.state == self.schema => c,
            slot => slot.insert(Converted {
                batches: Vec::new(),
                rows: 0,
                schema: Arc::new(ArrowSchema::from(ds.schema())),
                state: self.schema.clone(),
            }),
        };
        let from = held + converted.rows;
        if self.buffer.len() - from < CONVERT_AHEAD_ROWS_MIN {
            return;
        }
        match to_batches(&converted.schema, &self.schema, &self.buffer[from..]) {
            Ok(batches) => {
                converted.batches.extend(batches);
                converted.rows = self.buffer.len() - held;
            }
            // the commit that takes these records converts them and reports it
            Err(_) => self.converted = None,
        }
    }

    /// Buffered records the running flush, if any, is committing.
    fn flushing(&self) -> usize {
        self.commit.as_ref().map_or(0, |c| c.records)
    }

    /// Buffered records that no running flush is committing.
    fn unflushed(&self) -> usize {
        self.buffer.len() - self.flushing()
    }

    /// Buffered records that no running flush is committing: what the next flush
    /// takes.
    pub fn unflushed_count(&self) -> u64 {
        self.unflushed() as u64
    }

    /// Starts a flush of the buffer that commits in the background, as
    /// [`LanceBucket::append`] does at `flush_threshold`, for an owner that buffers
    /// with [`LanceBucket::put_batch_then`]. A flush still running is waited for and
    /// applied first (compacting after it when due): its report is returned, the
    /// owner's cue that those records are durable in Lance (a WAL can be checkpointed
    /// to its `persisted_count`). An error is that flush's, or this one's start: the
    /// records stay buffered and due either way.
    pub async fn start_flush(&mut self) -> Result<Option<FlushReport>> {
        let result = self.settle_then_start().await;
        if self.commit.is_none() {
            // no commit runs to be waited for: nothing stays unfreed
            self.free_released();
        }
        result
    }

    /// [`Self::start_flush`], keeping the records the settled commit made durable to
    /// free while the one it starts is waited for.
    async fn settle_then_start(&mut self) -> Result<Option<FlushReport>> {
        let earlier = Box::pin(self.catch_up_keeping(true)).await?;
        let compacted = Box::pin(self.compact_if_due()).await?;
        let report = earlier.map(|settled| self.report(settled, compacted));
        Box::pin(self.start_commit()).await?;
        Ok(report)
    }

    /// Applies a background flush that has ended, if one has: its report, or its
    /// failure (its records then stay buffered and due). Never waits.
    pub async fn finished_flush(&mut self) -> Option<Result<FlushReport>> {
        if !self.commit.as_ref().is_some_and(|c| c.handle.is_finished()) {
            return None;
        }
        Some(
            self.settle_commit()
                .await
                .map(|settled| self.report(settled.unwrap_or_default(), false)),
        )
    }

    fn report(&self, settled: Settled, compacted: bool) -> FlushReport {
        FlushReport {
            records: settled.records,
            persisted_count: self.persisted,
            files_synced: settled.files_synced,
            compacted,
            duration: settled.duration,
        }
    }

    /// Appends the buffer to the dataset as one commit and makes it durable (first
    /// waiting for a flush [`LanceBucket::append`] left running, whose failure is
    /// reported here). On error the buffer is kept whole and the flush can be
    /// retried. Cancel-safe: if the future is dropped part way, the commit finishes on
    /// its own task and the next flush takes its outcome (records committed then are
    /// never appended twice).
    pub async fn flush(&mut self) -> Result<FlushReport> {
        let start = Instant::now();
        // (the steps are boxed: their futures, Lance's schema and commit futures
        // within, are deep enough to push callers over the default recursion limit)
        let earlier = Box::pin(self.catch_up()).await?.unwrap_or_default();
        let (mut records, mut files_synced) = (earlier.records, earlier.files_synced);
        let committed = Box::pin(self.start_commit()).await?;
        if committed {
            let now = self.settle_commit().await?.unwrap_or_default();
            records += now.records;
            files_synced += now.files_synced;
        }
        let compacted = records > 0 && Box::pin(self.compact_if_due()).await?;
        let duration = start.elapsed();
        if committed {
            self.last_flush = Some(duration);
        }
        let settled = Settled {
            records,
            files_synced,
            duration,
        };
        Ok(self.report(settled, compacted))
    }

    /// Compacts when more small fragments than `compact_fragments_max` have piled up;
    /// returns whether it did.
    async fn compact_if_due(&mut self) -> Result<bool> {
        let due = self.opts.compact_fragments_max > 0
            && self.small_fragments() > self.opts.compact_fragments_max;
        if due {
            self.compact().await?;
        }
        Ok(due)
    }

    /// Starts the commit of the whole buffer (after the schema commits it needs) on
    /// its own task; [`Self::settle_commit`] applies it. Returns false when there is
    /// nothing to commit. The handle must be caught up (no commit running, nothing
    /// unsure).
    async fn start_commit(&mut self) -> Result<bool> {
        if self.buffer.is_empty() {
            return Ok(false);
        }
        // a handle opened on this dataset in this process waits until this flush's
        // commits end (they outlive this future, and this handle)
        let running = self.running.clone().read_owned().await;
        // from here until the commit is applied, an interruption leaves Lance's state
        // unknown to this handle
        self.unsure = true;
        let mut base = None;
        for attempt in 0..2 {
            let Some(ds) = self.dataset.as_deref() else {
                break;
            };
            let mut ds = ds.clone();
            let evolved = self.evolve(&mut ds).await;
            // schema commits that succeeded are part of the dataset now, whatever
            // happens next: keep the handle that has them
            self.dataset = Some(Arc::new(ds.clone()));
            match evolved {
                // a schema commit of a cancelled flush landed after this handle last
                // looked (its file operations outlive the cancelled future): look again
                Err(Error::Lance { source, .. }) if attempt == 0 && is_conflict(&source) => {
                    self.reconcile().await?;
                    self.unsure = true;
                    if self.buffer.is_empty() {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e),
                Ok(()) => {
                    base = Some(ds);
                    break;
                }
            }
        }
        let schema = match &base {
            Some(ds) => Arc::new(ArrowSchema::from(ds.schema())),
            None => self.create_schema(),
        };
        let (mut batch, from) = match self.converted.take() {
            Some(c) if c.schema == schema && c.state == self.schema => (c.batches, c.rows),
            _ => (Vec::new(), 0),
        };
        if from < self.buffer.len() {
            batch.extend(to_batches(&schema, &self.schema, &self.buffer[from..])?);
        }
        let records = self.buffer.len();
        let uri = self.uri.clone();
        let mode = if base.is_some() {
            WriteMode::Append
        } else {
            WriteMode::Create
        };
        let params = self.write_params(mode);
        let synced = self.synced.clone();
        let sums = self.sums.clone();
        let parts = self.write_parts(records);
        let handle = tokio::spawn(async move {
            let _running = running;
            let committed = match base {
                Some(ds) => append_in_parts(ds, batch, params, parts)
                    .await
                    .map_err(Error::lance("append to", &uri)),
                None => Dataset::write(reader(batch), uri.as_str(), Some(params))
                    .await
                    .map_err(Error::lance("create", &uri)),
            };
            match committed {
                Ok(ds) => sync_files(synced, sums, &uri)
                    .await
                    .map(|files| (ds, files)),
                Err(e) => Err(e),
            }
        });
        self.commit = Some(PendingCommit {
            records,
            handle,
            started: Instant::now(),
        });
        Ok(true)
    }

    /// Waits for the running data commit, if any, and applies its outcome: on success
    /// the buffer's flushed prefix is released (records and files synced are
    /// returned); on failure the buffer stays whole and the next flush first finds out
    /// what Lance kept. Cancel-safe: the commit stays here until it is applied.
    async fn settle_commit(&mut self) -> Result<Option<Settled>> {
        self.settle_commit_keeping(false).await
    }

    /// [`Self::settle_commit`]; `keep`: the caller starts the next commit at once, and
    /// the records this one made durable are kept to be freed while that one is
    /// waited for (see `released`).
    async fn settle_commit_keeping(&mut self, keep: bool) -> Result<Option<Settled>> {
        let Some(pending) = self.commit.as_mut() else {
            return Ok(None);
        };
        if !pending.handle.is_finished() {
            // this thread would only wait: it frees the last commit's records
            // meanwhile, rather than a thread competing with the commit for a core
            self.released = Vec::new();
        }
        let joined = (&mut pending.handle).await;
        let records = pending.records;
        let duration = pending.started.elapsed();
        self.commit = None;
        // whatever the outcome, the records kept for this wait are not kept past it
        self.free_released();
        let result = match joined {
            Ok(outcome) => outcome,
            Err(e) => {
                // batches built ahead started after this commit's records
                self.converted = None;
                // the task is gone, and with it what it knew of synced files: start
                // over (the next sync fsyncs every file once)
                if let Some(synced) = &self.synced {
                    synced.forget();
                }
                self.unsure = true;
                return Err(Error::Io {
                    op: "commit a flush to",
                    path: PathBuf::from(&self.uri),
                    source: std::io::Error::other(e.to_string()),
                });
            }
        };
        match result {
            Ok((ds, files_synced)) => {
                // durable: only now is the buffer released
                self.dataset = Some(Arc::new(ds));
                self.persisted += records as u64;
                let rest = self.buffer.split_off(records);
                let flushed = std::mem::replace(&mut self.buffer, rest);
                // freeing them is the writer's longest step after conversion: done
                // while it next waits for a commit, or off its thread
                if keep {
                    self.released = flushed;
                } else {
                    tokio::task::spawn_blocking(move || drop(flushed));
                }
                self.flushes += 1;
                self.unsure = false;
                self.last_flush = Some(duration);
                Ok(Some(Settled {
                    records,
                    files_synced,
                    duration,
                }))
            }
            Err(e) => {
                // batches built ahead started after this commit's records
                self.converted = None;
                self.unsure = true;
                Err(e)
            }
        }
    }

    /// Hands the records kept in `released`, if any, to a blocking thread to free.
    fn free_released(&mut self) {
        let records = std::mem::take(&mut self.released);
        if !records.is_empty() {
            tokio::task::spawn_blocking(move || drop(records));
        }
    }

    /// Brings this handle up to date with what its own earlier flushes did: applies a
    /// commit a cancelled flush left running, then, if a flush stopped part way or
    /// failed, counts what landed (see `reconcile`). Returns what the running commit
    /// made durable.
    async fn catch_up(&mut self) -> Result<Option<Settled>> {
        self.catch_up_keeping(false).await
    }

    /// [`Self::catch_up`]; `keep` as for [`Self::settle_commit_keeping`].
    async fn catch_up_keeping(&mut self, keep: bool) -> Result<Option<Settled>> {
        let earlier = self.settle_commit_keeping(keep).await?;
        if self.unsure {
            self.reconcile().await?;
        }
        Ok(earlier)
    }

    /// After a flush that stopped part way or failed: reloads the latest dataset and
    /// takes the records a commit of this handle made there off the buffer, once
    /// their files are fsynced and sealed.
    async fn reconcile(&mut self) -> Result<()> {
        let latest = match self.open_dataset().await {
            Ok(ds) => ds,
            Err(lance::Error::DatasetNotFound { .. }) if !has_manifest(&self.uri) => {
                self.unsure = false;
                return Ok(());
            }
            Err(e) => return Err(Error::lance("reload", &self.uri)(e)),
        };
        let rows = latest
            .count_rows(None)
            .await
            .map_err(Error::lance("count the rows of", &self.uri))? as u64;
        let buffered = self.buffer.len() as u64;
        if rows < self.persisted || rows > self.persisted + buffered {
            return Err(Error::Io {
                op: "reconcile a flush with",
                path: PathBuf::from(&self.uri),
                source: std::io::Error::other(format!(
                    "the dataset holds {rows} rows; this handle has {} persisted and {buffered} \
                     buffered: another writer changed it",
                    self.persisted
                )),
            });
        }
        self.dataset = Some(Arc::new(latest));
        self.sync_files(true).await?;
        let landed = (rows - self.persisted) as usize;
        self.buffer.drain(..landed);
        self.converted = None;
        self.persisted = rows;
        if landed > 0 {
            self.flushes += 1;
        }
        self.unsure = false;
        Ok(())
    }

    fn write_params(&self, mode: WriteMode) -> WriteParams {
        WriteParams {
            mode,
            store_params: Some(self.store_params()),
            ..WriteParams::default()
        }
    }

    /// The object-store parameters of this dataset: a local one is written through
    /// [`DurableStores`].
    fn store_params(&self) -> ObjectStoreParams {
        ObjectStoreParams {
            object_store_wrapper: self
                .stores
                .clone()
                .map(|s| Arc::new(s) as Arc<dyn WrappingObjectStore>),
            ..ObjectStoreParams::default()
        }
    }

    /// Opens the latest version of the dataset, written through this bucket's stores.
    /// (Boxed: the builder's future is deep enough to push the crates awaiting a
    /// bucket's futures over the compiler's default recursion limit.)
    async fn open_dataset(&self) -> lance::Result<Dataset> {
        let load = DatasetBuilder::from_uri(&self.uri)
            .with_store_params(self.store_params())
            .load();
        Box::pin(load).await
    }

    fn field_for(&self, name: &str, ty: &ColType) -> Field {
        let mut meta = std::collections::HashMap::new();
        match self.opts.column_compression {
            ColumnCompression::Default => {}
            ColumnCompression::Zstd(level) => {
                meta.insert("lance-encoding:compression".to_owned(), "zstd".to_owned());
                if let Some(level) = level {
                    meta.insert(
                        "lance-encoding:compression-level".to_owned(),
                        level.to_string(),
                    );
                }
            }
            ColumnCompression::Lz4 => {
                meta.insert("lance-encoding:compression".to_owned(), "lz4".to_owned());
            }
        }
        arrow_field(name, ty, &meta)
    }

    /// The columns of the admitted schema's record fields, in field order.
    fn record_fields(&self) -> Vec<Field> {
        self.schema
            .fields
            .iter()
            .filter_map(|f| {
                let ty = f.ty.as_ref().filter(|t| materialized(t))?;
                Some(self.field_for(&f.name, ty))
            })
            .collect()
    }

    /// The schema a new dataset is created with: the record fields, then this crate's
    /// own columns, and the field registry.
    fn create_schema(&self) -> Arc<ArrowSchema> {
        let mut fields = self.record_fields();
        fields.push(Field::new(LAYOUT_COLUMN, DataType::Binary, true));
        fields.push(Field::new(CHECKSUM_COLUMN, DataType::UInt32, true));
        self.with_registry(fields)
    }

    /// A schema of `fields` carrying the field registry.
    fn with_registry(&self, fields: Vec<Field>) -> Arc<ArrowSchema> {
        let meta = [(REGISTRY_KEY.to_owned(), self.schema.registry_json())].into();
        Arc::new(ArrowSchema::new_with_metadata(fields, meta))
    }

    /// Brings the dataset's columns up to the admitted schema: widenings, new columns,
    /// new struct children, the layout column, the registry. Each step is its own
    /// commit, and what is to do is found by comparing the admitted schema with the
    /// dataset's, so a failed flush resumes where it stopped.
    async fn evolve(&mut self, ds: &mut Dataset) -> Result<()> {
        // a rewrite a failed flush left half done is finished (or undone) first
        self.finish_interrupted_widening(ds).await?;
        let mut new_fields = Vec::new();
        // a rewrite below replaces only its own column: the others stand as they are
        let before = ArrowSchema::from(ds.schema());
        for f in &self.schema.fields {
            let Some(ty) = f.ty.as_ref().filter(|t| materialized(t)) else {
                continue;
            };
            if matches!(ty, ColType::Foreign(_)) {
                continue;
            }
            let want = self.field_for(&f.name, ty);
            match before.field_with_name(&f.name).ok() {
                None => new_fields.push(want),
                Some(have) if needs_rewrite(have.data_type(), want.data_type()) => {
                    self.rewrite(ds, want).await?;
                }
                Some(have) => new_fields.extend(missing_children(have, &want)),
            }
        }
        let arrow = ArrowSchema::from(ds.schema());
        if arrow.field_with_name(LAYOUT_COLUMN).is_err() {
            new_fields.push(Field::new(LAYOUT_COLUMN, DataType::Binary, true));
        }
        if arrow.field_with_name(CHECKSUM_COLUMN).is_err() {
            // rows already in the dataset get no checksum (null: not verified)
            new_fields.push(Field::new(CHECKSUM_COLUMN, DataType::UInt32, true));
        }
        if !new_fields.is_empty() {
            ds.add_columns(
                NewColumnTransform::AllNulls(Arc::new(ArrowSchema::new(new_fields))),
                None,
                None,
            )
            .await
            .map_err(Error::lance("add columns to", &self.uri))?;
        }
        let registry = self.schema.registry_json();
        if arrow.metadata().get(REGISTRY_KEY) != Some(&registry) {
            ds.update_schema_metadata([(REGISTRY_KEY, registry.as_str())])
                .await
                .map_err(Error::lance("record the field order of", &self.uri))?;
        }
        Ok(())
    }

    /// Rewrites one column as the type of `want` (int64 leaves become float64) through
    /// Lance's column operations: a new column computed from the old one, the old one
    /// dropped, the new one renamed. An interruption between these commits is finished
    /// at the next open.
    async fn rewrite(&self, ds: &mut Dataset, want: Field) -> Result<()> {
        // the rewrite reads the column from every fragment: check their files first
        self.verify_names(fragment_files(ds, |_| true, 0..u64::MAX), 0)
            .await?;
        let name = want.name().clone();
        let tmp = format!("{WIDEN_PREFIX}{name}");
        let field = want.with_name(tmp.clone());
        let target = field.data_type().clone();
        let out = Arc::new(ArrowSchema::new(vec![field]));
        let out_schema = out.clone();
        let mapper = move |batch: &RecordBatch| -> lance::Result<RecordBatch> {
            let cast = cast_to(batch.column(0), &target)?;
            Ok(RecordBatch::try_new(out_schema.clone(), vec![cast])?)
        };
        ds.add_columns(
            NewColumnTransform::BatchUDF(BatchUDF {
                mapper: Box::new(mapper),
                output_schema: out,
                result_checkpoint: None,
            }),
            Some(vec![name.clone()]),
            None,
        )
        .await
        .map_err(Error::lance(
            "add the widened copy of a column to",
            &self.uri,
        ))?;
        ds.drop_columns(&[name.as_str()])
            .await
            .map_err(Error::lance(
                "drop a column before its rewrite of",
                &self.uri,
            ))?;
        ds.alter_columns(&[ColumnAlteration::new(tmp).rename(name)])
            .await
            .map_err(Error::lance("rename a rewritten column of", &self.uri))?;
        Ok(())
    }

    /// fsyncs the files of the dataset not fsynced yet and, with `seal`, seals the
    /// new data files among them (files this handle wrote). Returns how many files
    /// were fsynced.
    async fn sync_files(&mut self, seal: bool) -> Result<usize> {
        let sums = self.sums.clone().filter(|_| seal);
        sync_files(self.synced.clone(), sums, &self.uri).await
    }

    /// Fragments with fewer rows than this are small: automatic compaction merges them.
    fn small_rows(&self) -> usize {
        (self.opts.target_rows_per_fragment / 32).max(1)
    }

    /// Tasks a commit of `rows` records writes its data files with: one per core, each
    /// writing a fragment that is not small (automatic compaction leaves it alone).
    fn write_parts(&self, rows: usize) -> usize {
        (rows / self.small_rows()).clamp(1, crate::cores())
    }

    fn small_fragments(&self) -> usize {
        let small = self.small_rows();
        self.dataset.as_ref().map_or(0, |ds| {
            ds.manifest()
                .fragments
                .iter()
                .filter(|f| f.num_rows().is_some_and(|r| r < small))
                .count()
        })
    }

    fn fragments(&self) -> usize {
        self.dataset
            .as_ref()
            .map_or(0, |ds| ds.manifest().fragments.len())
    }

    /// Merges small fragments (row order, and so every offset, is kept), then removes
    /// dataset versions older than the retention, and fsyncs the result.
    pub async fn compact(&mut self) -> Result<()> {
        // the dataset this handle knows must be the latest
        self.catch_up().await?;
        let Some(ds) = self.dataset.as_deref() else {
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
        let retention = chrono::Duration::from_std(self.opts.version_retention)
            .unwrap_or(chrono::Duration::MAX);
        ds.cleanup_old_versions(retention, Some(false), Some(false))
            .await
            .map_err(Error::lance("clean up old versions of", &self.uri))?;
        self.readers.retain_live(&ds);
        self.dataset = Some(Arc::new(ds));
        self.compactions += 1;
        self.sync_files(true).await?;
        if let Some(sums) = self.sums.clone() {
            blocking("rewrite the sums of", &self.uri, move || sums.prune()).await??;
        }
        Ok(())
    }

    /// Records `[offset, offset + limit)`, clipped to what exists, from the dataset and
    /// then the buffer. The dataset part is located from fragment row counts, so the
    /// cost does not grow with the offset.
    ///
    /// Reading pattern: a read that starts where the previous one ended continues one
    /// scan of the dataset, kept between calls, which decodes a few batches ahead of
    /// the reader on a task of its own; a small read elsewhere reads its rows through
    /// the covering fragments' readers, kept open between reads; a larger one starts
    /// such a scan at its offset.
    ///
    /// Strings read from the dataset's string columns are ranges of shared text
    /// blocks (up to [`TEXT_BLOCK_ROWS`](crate::TEXT_BLOCK_ROWS) rows of one column,
    /// at most [`TEXT_BLOCK_BYTES`](crate::TEXT_BLOCK_BYTES) unless one row is longer),
    /// allocated once per block: a record kept after the others are dropped keeps its
    /// blocks alive ([`persisting_codec::Str::detach`] copies a string out).
    pub async fn read(&self, offset: u64, limit: usize) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        self.fill(offset, limit, &mut out, false).await?;
        Ok(out)
    }

    /// [`LanceBucket::read`] into `out`, whose records are replaced, reusing the memory
    /// they hold (field lists, and strings, copied into the records' own buffers
    /// rather than shared as `read` shares them): consuming a range in reads of the
    /// same size through one `Vec` allocates almost nothing once the `Vec` has grown,
    /// where `read` allocates every record and the caller frees them. `out` ends
    /// holding exactly the records read (it is truncated); on an error it is left
    /// empty.
    pub async fn read_into(&self, offset: u64, limit: usize, out: &mut Vec<Record>) -> Result<()> {
        let result = self.fill(offset, limit, out, true).await;
        if result.is_err() {
            out.clear();
        }
        result
    }

    /// Reads into `out` (see [`from_batch`] for `refill`).
    async fn fill(
        &self,
        offset: u64,
        limit: usize,
        out: &mut Vec<Record>,
        refill: bool,
    ) -> Result<()> {
        let end = offset.saturating_add(limit as u64).min(self.total_count());
        let mut filled = 0;
        if offset < end {
            out.reserve(((end - offset) as usize).saturating_sub(out.len()));
            let names: Arc<[String]> = self.schema.names().into();
            // the rows are decoded on a task of their own and turned into records here,
            // on the thread that will most likely free them: the allocator frees a
            // block fastest on the thread that allocated it
            let batches = self
                .read_persisted(
                    offset,
                    end,
                    Arc::clone(&names),
                    false,
                    !refill,
                    Vec::new(),
                    |batches: &mut Vec<(RecordBatch, u64, bool)>, batch, at, _, checked| {
                        batches.push((batch.clone(), at, checked));
                        Ok(())
                    },
                )
                .await?;
            for (batch, at, checked) in batches {
                // each record is checked as it is built, unless the scan checked its
                // row in place already; a panic on damaged arrays is an error of this
                // read, as it is while Lance decodes them
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    from_batch(
                        &batch,
                        &names,
                        at,
                        &self.uri,
                        out,
                        &mut filled,
                        refill,
                        checked,
                    )
                }))
                .map_err(|panic| Error::panicked(&self.uri, at, panic.as_ref()))??;
            }
            for i in offset.max(self.persisted)..end {
                let record = &self.buffer[(i - self.persisted) as usize];
                match out.get_mut(filled) {
                    Some(slot) => slot.clone_from(record),
                    None => out.push(record.clone()),
                }
                filled += 1;
            }
        }
        out.truncate(filled);
        Ok(())
    }

    /// Records `[offset, offset + limit)`, clipped to what exists, as Arrow record
    /// batches: the columnar, copy-free way to consume a range in order. Every row is
    /// checked against its checksum, as [`LanceBucket::read`] does; batches hold the
    /// record fields in field order (not this crate's own columns), each with its own
    /// schema (a later batch may have columns an earlier one lacks). A column view
    /// cannot tell an explicit null from an absent field, nor keep a record's own
    /// field order: [`LanceBucket::read`] returns records exactly.
    pub async fn read_arrow(&self, offset: u64, limit: usize) -> Result<Vec<RecordBatch>> {
        let end = offset.saturating_add(limit as u64).min(self.total_count());
        if offset >= end {
            return Ok(Vec::new());
        }
        let names: Arc<[String]> = self.schema.names().into();
        let order = Arc::clone(&names);
        let mut out = self
            // rows checked in place before the sink sees them
            .read_persisted(
                offset,
                end,
                order,
                true,
                false,
                Vec::new(),
                move |batches, batch, _, _, _| {
                    batches.push(record_columns(batch, &names)?);
                    Ok(())
                },
            )
            .await?;
        let from = offset.max(self.persisted);
        if from < end {
            let records =
                &self.buffer[(from - self.persisted) as usize..(end - self.persisted) as usize];
            // the record fields only: no layout encoding or checksums to build
            let schema = self.with_registry(self.record_fields());
            out.push(to_batch(&schema, &self.schema, records)?);
        }
        Ok(out)
    }

    /// Feeds the dataset's rows `[offset, end.min(persisted))` to `sink` batch by
    /// batch (with each batch's first offset), after checking their data files. Lance's
    /// decoders assert on damaged pages (a panic, not an error): a panic while reading
    /// becomes an error of this read. `order` is the field registry;
    /// `check_rows`: every row is checked against its checksum before `sink` sees it;
    /// otherwise `sink` is told, for each batch, whether its rows were checked, and
    /// checks them when they were not. `check_ahead`: a scan started by this read
    /// checks rows on its own task, ahead of the reader (worth it when the reader
    /// has more to do per row than the scan task: `read` building records, not
    /// `read_into` refilling them).
    #[allow(clippy::too_many_arguments)]
    async fn read_persisted<T, S>(
        &self,
        offset: u64,
        end: u64,
        order: Arc<[String]>,
        check_rows: bool,
        check_ahead: bool,
        mut out: T,
        mut sink: S,
    ) -> Result<T>
    where
        T: Send + 'static,
        S: FnMut(&mut T, &RecordBatch, u64, &str, bool) -> Result<()> + Send + 'static,
    {
        let Some(ds) = self.dataset.clone().filter(|_| offset < self.persisted) else {
            return Ok(out);
        };
        let n = end.min(self.persisted) - offset;
        let files = fragment_files(&ds, |_| true, offset..offset + n);
        self.verify_names(files, offset).await?;
        // one reader at a time uses the read-ahead; others read on their own
        let mut slot = self.readahead.try_lock().ok();
        let state = slot
            .as_mut()
            .map_or(ReadAhead::None, |s| std::mem::take(&mut **s));
        let source = Source {
            ds,
            persisted: self.persisted,
            order,
            sums: self.sums.clone(),
            check_rows,
            check_ahead,
            readers: Arc::clone(&self.readers),
        };
        let read = async move {
            let state = read_dataset(source, offset, n, state, |batch, at, uri, checked| {
                sink(&mut out, batch, at, uri, checked)
            })
            .await?;
            Ok::<_, Error>((out, state))
        };
        // polled here, not on a task of its own: a small read is mostly hand-offs
        // between threads already (Lance's I/O), one more costs ~10%
        match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(read)).await {
            Ok(result) => {
                let (out, state) = result?;
                if let Some(slot) = slot.as_mut() {
                    **slot = state;
                }
                Ok(out)
            }
            Err(panic) => Err(Error::panicked(&self.uri, offset, panic.as_ref())),
        }
    }

    /// Checks the sealed data files among `names` not checked yet by this handle, off
    /// the async threads (and without leaving them at all once every file of `names`
    /// is checked: the steady state of reads).
    async fn verify_names(&self, names: Vec<String>, offset: u64) -> Result<()> {
        check_files(self.sums.clone(), names, offset, &self.uri).await
    }

    /// Checks every sealed data file of the dataset against its seal now, rather than
    /// before its first read (each file is read whole once per handle). Returns how
    /// many data files the dataset has and how many of them carry no seal (written by
    /// another tool, or by a flush a crash cut between its commit and its seal).
    pub async fn verify_files(&self) -> Result<FileCheck> {
        let Some(ds) = self.dataset.clone() else {
            return Ok(FileCheck::default());
        };
        let names = fragment_files(&ds, |_| true, 0..u64::MAX);
        let unsealed = self.sums.as_ref().map_or(names.len(), |s| {
            names.iter().filter(|n| !s.is_sealed(n)).count()
        });
        let files = names.len();
        self.verify_names(names, 0).await?;
        Ok(FileCheck { files, unsealed })
    }

    /// Sees commits made since open by another process (for a reader; a bucket has a
    /// single writer). Buffered records of this handle are kept.
    pub async fn refresh(&mut self) -> Result<()> {
        self.settle_commit().await?;
        match self.open_dataset().await {
            Ok(ds) => {
                let buffer = std::mem::take(&mut self.buffer);
                if let Some(sums) = &self.sums {
                    // the writer has sealed the files of its later commits (files
                    // already checked stay checked: a file's seal never changes)
                    sums.reload()?;
                }
                self.adopt(ds).await?;
                self.converted = None;
                self.schema.admit(&buffer)?;
                self.buffer = buffer;
                Ok(())
            }
            Err(lance::Error::DatasetNotFound { .. }) => Ok(()),
            Err(e) => Err(Error::lance("open", &self.uri)(e)),
        }
    }

    /// Sizes and counters.
    pub fn stats(&self) -> LanceStats {
        LanceStats {
            persisted_count: self.persisted,
            buffered_count: self.buffered_count(),
            flushing_count: self.flushing() as u64,
            fragments: self.fragments(),
            version: self.dataset.as_ref().map_or(0, |ds| ds.manifest().version),
            flushes: self.flushes,
            compactions: self.compactions,
            last_flush: self.last_flush,
            column_compression: self.opts.column_compression.to_string(),
            dataset_uri: self.uri.clone(),
        }
    }
}

/// A commit refused because another one landed first: for a bucket's only writer,
/// one its own cancelled flush left running.
fn is_conflict(e: &lance::Error) -> bool {
    matches!(
        e,
        lance::Error::CommitConflict { .. }
            | lance::Error::RetryableCommitConflict { .. }
            | lance::Error::IncompatibleTransaction { .. }
    )
}

/// Data commits running in this process, per dataset: a commit outlives the flush
/// that started it, and its handle if that is dropped; a handle opened meanwhile on
/// the same dataset must not count the rows without it, so `open` waits for every
/// running commit of its dataset (commits hold the lock shared, `open` takes it
/// exclusively for a moment).
fn running_commits(uri: &str) -> Arc<tokio::sync::RwLock<()>> {
    type Running = std::collections::HashMap<String, std::sync::Weak<tokio::sync::RwLock<()>>>;
    static RUNNING: std::sync::LazyLock<std::sync::Mutex<Running>> =
        std::sync::LazyLock::new(Default::default);
    let key = std::path::absolute(uri)
        .map_or_else(|_| uri.to_owned(), |p| p.to_string_lossy().into_owned());
    let mut map = RUNNING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(lock) = map.get(&key).and_then(std::sync::Weak::upgrade) {
        return lock;
    }
    map.retain(|_, w| w.strong_count() > 0);
    let lock = Arc::new(tokio::sync::RwLock::new(()));
    map.insert(key, Arc::downgrade(&lock));
    lock
}

/// Fewest records [`LanceBucket::convert_ahead`] converts at once (fewer wait for
/// more: each conversion has a fixed cost, and each batch is one more for Lance).
const CONVERT_AHEAD_ROWS_MIN: usize = 4096;

/// Arrow batches of the first `rows` buffered records after those a running commit
/// holds, built for the dataset schema `schema` and the field registry `state`.
#[derive(Debug)]
struct Converted {
    batches: Vec<RecordBatch>,
    rows: usize,
    schema: Arc<ArrowSchema>,
    state: SchemaState,
}

/// A flush's data commit running on its own task: the records it takes from the
/// front of the buffer, and the task's outcome (the committed dataset and the number
/// of files it fsynced).
#[derive(Debug)]
struct PendingCommit {
    records: usize,
    /// When the commit's task was started.
    started: Instant,
    handle: tokio::task::JoinHandle<CommitOutcome>,
}

/// What an applied commit made durable: its records, the files it fsynced, and how
/// long it ran.
#[derive(Debug, Default, Clone, Copy)]
struct Settled {
    records: usize,
    files_synced: usize,
    duration: Duration,
}

/// What a commit task returns: the committed dataset and the number of files it
/// fsynced.
type CommitOutcome = Result<(Dataset, usize)>;

/// fsyncs the files of a local dataset not fsynced yet (`synced` tracks them;
/// `None`: a remote dataset, nothing to do) and seals the new data files among them
/// into `sums`. Returns how many files were made durable since the last call.
async fn sync_files(
    synced: Option<Arc<SyncedFiles>>,
    sums: Option<Arc<FileSums>>,
    uri: &str,
) -> Result<usize> {
    let Some(synced) = synced else {
        return Ok(0);
    };
    let tracker = Arc::clone(&synced);
    let done = blocking("fsync the files of", uri, move || {
        tracker.sync_new()?;
        let fresh = tracker.take_fresh();
        if let Some(sums) = sums {
            sums.seal_new(&fresh)?;
        }
        Ok(fresh.len())
    })
    .await;
    if done.is_err() {
        // what the task knew of synced files is gone with it: start over
        synced.forget();
    }
    done?
}

/// Runs blocking file work off the async threads; a failure of the task itself (a
/// panic) is an I/O error of `op` on the dataset at `uri`.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    uri: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Io {
        op,
        path: PathBuf::from(uri),
        source: std::io::Error::other(e.to_string()),
    })
}

/// The data file names (in `data/`) of the fragments holding offsets in `range` whose
/// row count passes `keep`.
fn fragment_files(ds: &Dataset, keep: impl Fn(u64) -> bool, range: Range<u64>) -> Vec<String> {
    let mut names = Vec::new();
    let mut at = 0u64;
    for frag in ds.manifest().fragments.iter() {
        if at >= range.end {
            break;
        }
        let rows = frag.num_rows().map_or(u64::MAX, |r| r as u64);
        let next = at.saturating_add(rows);
        if next > range.start && keep(rows) {
            for file in &frag.files {
                let name = file.path.rsplit('/').next().unwrap_or(&file.path);
                names.push(name.to_owned());
            }
        }
        at = next;
    }
    names
}

/// Appends `batches` to `ds` as one commit whose data files are written by `parts`
/// tasks at once, each taking a run of consecutive rows (Lance writes one stream's
/// files one after another, on about one core): the fragments are committed in row
/// order, so offsets are as one writer would have made them. A part that fails fails
/// the append, after every part has ended; the files the others wrote are in no
/// version (Lance's cleanup removes such files).
async fn append_in_parts(
    mut ds: Dataset,
    batches: Vec<RecordBatch>,
    params: WriteParams,
    parts: usize,
) -> lance::Result<Dataset> {
    use lance::dataset::transaction::{Operation, TransactionBuilder};
    use lance::dataset::{CommitBuilder, InsertBuilder};
    if parts <= 1 {
        ds.append(reader(batches), Some(params)).await?;
        return Ok(ds);
    }
    let base = Arc::new(ds);
    let tasks: Vec<_> = split_rows(batches, parts)
        .into_iter()
        .map(|part| {
            let (base, params) = (Arc::clone(&base), params.clone());
            tokio::spawn(async move {
                InsertBuilder::new(base)
                    .with_params(&params)
                    .execute_uncommitted(part)
                    .await
            })
        })
        .collect();
    let mut fragments = Vec::new();
    let mut failure = None;
    for task in tasks {
        let written = task.await.unwrap_or_else(|e| {
            Err(lance::Error::io(format!(
                "a part of the append stopped: {e}"
            )))
        });
        match written.map(|t| t.operation) {
            Ok(Operation::Append { fragments: f }) => fragments.extend(f),
            Ok(_) => {
                failure.get_or_insert(lance::Error::internal(
                    "a part of the append made another kind of transaction",
                ));
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let transaction =
        TransactionBuilder::new(base.manifest.version, Operation::Append { fragments }).build();
    CommitBuilder::new(base).execute(transaction).await
}

/// `batches` cut into `parts` runs of consecutive rows, as even as the rows allow
/// (a batch is sliced where a run ends inside it); none empty.
fn split_rows(batches: Vec<RecordBatch>, parts: usize) -> Vec<Vec<RecordBatch>> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let parts = parts.clamp(1, total.max(1));
    let mut out: Vec<Vec<RecordBatch>> = vec![Vec::new(); parts];
    // run `k` takes rows [k * total / parts, (k + 1) * total / parts)
    let end = |k: usize| (k + 1) * total / parts;
    let (mut at, mut k) = (0, 0); // rows placed so far, the run taking row `at`
    for batch in batches {
        let mut from = 0;
        while from < batch.num_rows() {
            while end(k) <= at {
                k += 1;
            }
            let take = (end(k) - at).min(batch.num_rows() - from);
            out[k].push(batch.slice(from, take));
            from += take;
            at += take;
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

fn reader(
    batches: Vec<RecordBatch>,
) -> RecordBatchIterator<
    std::vec::IntoIter<std::result::Result<RecordBatch, arrow::error::ArrowError>>,
> {
    let schema = batches[0].schema();
    RecordBatchIterator::new(
        batches.into_iter().map(Ok).collect::<Vec<_>>().into_iter(),
        schema,
    )
}

/// Checks the sealed data files among `names` not checked yet (by this handle's
/// `sums`), off the async threads, and without leaving them at all once every file of
/// `names` is checked: the steady state of reads.
async fn check_files(
    sums: Option<Arc<FileSums>>,
    names: Vec<String>,
    offset: u64,
    uri: &str,
) -> Result<()> {
    let Some(sums) = sums else {
        return Ok(());
    };
    let unchecked = sums.unchecked(names);
    if unchecked.is_empty() {
        return Ok(());
    }
    blocking("check the data files of", uri, move || {
        sums.verify(unchecked.iter().map(String::as_str), offset)
    })
    .await?
}

/// Reads of at most this many rows not continuing the previous read read their rows
/// through the fragment readers kept open ([`FragmentReaders`]) instead of starting a
/// scan.
const TAKE_MAX: u64 = 1024;
/// Rows a scan plans at a time (and whose data files it checks first): at least this
/// many ...
const WINDOW_MIN: u64 = 1 << 16;
/// ... and at most this many.
const WINDOW_MAX: u64 = 1 << 18;
/// Checked batches a scan holds ready ahead of its reader.
const AHEAD_BATCHES: usize = 4;

/// What the last read left for the next one.
#[derive(Default)]
enum ReadAhead {
    /// Nothing.
    #[default]
    None,
    /// The last read ended at this offset, in this dataset version.
    After { version: u64, next: u64 },
    /// An open scan positioned at `next`.
    Open(Cursor),
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::After { version, next } => write!(f, "After({version}, {next})"),
            Self::Open(c) => write!(f, "Open({}, {}..{})", c.version, c.next, c.end),
        }
    }
}

/// What a read of the dataset needs: the dataset version, its row count, the field
/// registry (to check rows), the file seals (to check files before Lance reads them),
/// and whether rows are checked here (`check_rows`) or by the reader's sink.
struct Source {
    ds: Arc<Dataset>,
    persisted: u64,
    order: Arc<[String]>,
    sums: Option<Arc<FileSums>>,
    check_rows: bool,
    /// A scan started for this read checks each batch's rows on its own task, before
    /// handing the batch over (see [`Cursor`]).
    check_ahead: bool,
    readers: Arc<FragmentReaders>,
}

/// A scan of the dataset kept between reads. A task of its own reads from `next` to
/// the end of the dataset, window after window (each window's data files checked
/// against their seals before Lance reads them), and hands the decoded batches over
/// through a bounded channel, at most [`AHEAD_BATCHES`] ahead. Rows are checked
/// against their checksums either by the reader as it takes a batch (`read_arrow`,
/// `read_into`: decoding and checking so run on two cores at once) or, when the scan
/// was started with `check_ahead` (`read`, whose reader has records to build), by the
/// task before it sends the batch; a batch the task could not check whole is sent
/// unchecked and checked row by row by its reader. Dropping the cursor stops the task.
struct Cursor {
    version: u64,
    /// Offset of the next row the cursor yields.
    next: u64,
    /// One past the last row the scan yields.
    end: u64,
    /// Rows received and not yet returned (starting at `next`), and whether they were
    /// checked.
    pending: Option<(RecordBatch, bool)>,
    /// Offset of the first row of the next batch to receive.
    received: u64,
    /// The field registry, to check rows.
    order: Arc<[String]>,
    /// Batches, and whether the task checked all their rows.
    batches: tokio::sync::mpsc::Receiver<Result<(RecordBatch, bool)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Cursor {
    /// Starts the scan of rows `[offset, source.persisted)`, `window` rows at a time.
    fn open(source: Source, offset: u64, window: u64) -> Self {
        let (tx, batches) = tokio::sync::mpsc::channel(AHEAD_BATCHES);
        let version = source.ds.manifest().version;
        let end = source.persisted;
        let order = Arc::clone(&source.order);
        let task = tokio::spawn(async move {
            let mut at = offset;
            while at < end {
                let rows = window.min(end - at);
                match scan_window(&source, at, rows, &tx).await {
                    Ok(true) => at += rows,
                    // the reader is gone
                    Ok(false) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        Self {
            version,
            next: offset,
            end,
            pending: None,
            received: offset,
            order,
            batches,
            task,
        }
    }

    /// The next batch (starting at `next`), checked if `check`, and whether it was.
    async fn next_batch(&mut self, uri: &str, check: bool) -> Result<(RecordBatch, bool)> {
        if let Some((b, checked)) = self.pending.take() {
            if check && !checked {
                verify_rows(&b, &self.order, self.next, uri)?;
            }
            return Ok((b, checked || check));
        }
        if let Some(b) = self.batches.recv().await {
            let (b, checked) = b?;
            if check && !checked {
                verify_rows(&b, &self.order, self.received, uri)?;
            }
            self.received += b.num_rows() as u64;
            return Ok((b, checked || check));
        }
        // the task ended without an error to send: it panicked (Lance's decoders
        // assert on damaged pages), or the scan came up short
        match (&mut self.task).await {
            Err(e) if e.is_panic() => Err(Error::panicked(uri, self.next, e.into_panic().as_ref())),
            _ => Err(Error::lance("read", uri)(lance::Error::internal(format!(
                "the scan ended at offset {}, before offset {}",
                self.next, self.end
            )))),
        }
    }
}

/// Scans rows `[at, at + rows)` into `tx`; `false` once the reader is gone.
async fn scan_window(
    source: &Source,
    at: u64,
    rows: u64,
    tx: &tokio::sync::mpsc::Sender<Result<(RecordBatch, bool)>>,
) -> Result<bool> {
    let ds = &source.ds;
    let files = fragment_files(ds, |_| true, at..at + rows);
    check_files(source.sums.clone(), files, at, ds.uri()).await?;
    let mut scan = ds.scan();
    scan.scan_in_order(true);
    scan.limit(Some(rows as i64), Some(at as i64))
        .map_err(Error::lance("plan a read of", ds.uri()))?;
    let mut stream = scan
        .try_into_stream()
        .await
        .map_err(Error::lance("read", ds.uri()))?;
    let mut next = at;
    while let Some(batch) = stream
        .try_next()
        .await
        .map_err(Error::lance("read", ds.uri()))?
    {
        // a batch whose check fails (or panics on damaged arrays) goes unchecked: the
        // reader checks the rows it takes, so a read of the intact rows before a
        // damaged one still succeeds and the error names the damaged row's offset
        let checked = source.check_ahead
            && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                verify_rows(&batch, &source.order, next, ds.uri())
            }))
            .is_ok_and(|r| r.is_ok());
        next += batch.num_rows() as u64;
        if tx.send(Ok((batch, checked))).await.is_err() {
            return Ok(false);
        }
    }
    if next != at + rows {
        return Err(Error::lance("read", ds.uri())(lance::Error::internal(
            format!("the scan of {rows} rows from offset {at} ended at offset {next}"),
        )));
    }
    Ok(true)
}

/// Reads `n` rows from `offset` (all below `source.persisted`) into `sink`, using and
/// returning the read-ahead state. With `source.check_rows`, every row is checked
/// against its checksum before `sink` sees it; otherwise `sink` checks them.
async fn read_dataset(
    source: Source,
    offset: u64,
    n: u64,
    state: ReadAhead,
    mut sink: impl FnMut(&RecordBatch, u64, &str, bool) -> Result<()>,
) -> Result<ReadAhead> {
    let ds = Arc::clone(&source.ds);
    let uri = ds.uri();
    let version = ds.manifest().version;
    let end = offset + n;
    let (cursor, sequential) = match state {
        ReadAhead::Open(c) if c.version == version && c.next == offset => (Some(c), true),
        ReadAhead::Open(c) => (None, c.version == version && c.end == offset),
        ReadAhead::After { version: v, next } => (None, v == version && next == offset),
        ReadAhead::None => (None, false),
    };
    if cursor.is_none() && !sequential && n <= TAKE_MAX {
        let check = |batch: &RecordBatch, at: u64| {
            if source.check_rows {
                verify_rows(batch, &source.order, at, uri)?;
            }
            Ok::<_, Error>(())
        };
        if let Some(batches) = source.readers.read(&ds, offset..end).await? {
            let mut fed = offset;
            for (batch, at) in batches {
                check(&batch, at)?;
                sink(&batch, at, uri, source.check_rows)?;
                fed = at + batch.num_rows() as u64;
            }
            if fed != end {
                return Err(Error::Lance {
                    op: "read",
                    path: uri.to_owned(),
                    source: lance::Error::internal(format!(
                        "rows {offset}..{end} were asked of the fragments, {offset}..{fed} came back"
                    )),
                });
            }
            return Ok(ReadAhead::After { version, next: end });
        }
        let rows: Vec<u64> = (offset..end).collect();
        let batch = ds
            .take(&rows, ds.schema().clone())
            .await
            .map_err(Error::lance("read", uri))?;
        if source.check_rows {
            verify_rows(&batch, &source.order, offset, uri)?;
        }
        sink(&batch, offset, uri, source.check_rows)?;
        return Ok(ReadAhead::After { version, next: end });
    }
    // a read elsewhere starts a scan from its offset: if the next read continues it,
    // its rows are (being) read already
    let check = source.check_rows;
    let mut c = cursor.unwrap_or_else(|| {
        let window = n.saturating_mul(8).clamp(WINDOW_MIN, WINDOW_MAX).max(n);
        Cursor::open(source, offset, window)
    });
    let mut at = offset;
    while at < end {
        let (batch, checked) = c.next_batch(uri, check).await?;
        let want = (end - at) as usize;
        let take = batch.num_rows().min(want);
        sink(&batch.slice(0, take), at, uri, checked)?;
        at += take as u64;
        c.next = at;
        if take < batch.num_rows() {
            c.pending = Some((batch.slice(take, batch.num_rows() - take), checked));
        }
    }
    Ok(if c.next < c.end {
        ReadAhead::Open(c)
    } else {
        ReadAhead::After { version, next: end }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use persisting_codec::{Record, Value};

    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
    use arrow::record_batch::RecordBatch;

    use super::{LanceBucket, LanceOptions, split_rows};

    fn records(range: std::ops::Range<i64>) -> Vec<Record> {
        range
            .map(|i| {
                let mut r = Record::new();
                r.insert("n", Value::from(i));
                r
            })
            .collect()
    }

    #[test]
    fn split_rows_cuts_consecutive_even_runs_and_keeps_every_row() {
        use arrow::array::{AsArray, Int64Array};
        let batch = |r: std::ops::Range<i64>| {
            let schema = Arc::new(ArrowSchema::new(vec![Field::new(
                "i",
                DataType::Int64,
                false,
            )]));
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(r))]).unwrap()
        };
        for (sizes, parts) in [
            (vec![10], 2),
            (vec![3, 3, 4], 2),
            (vec![1, 1, 1], 2),
            (vec![7, 0, 9, 2], 3),
            (vec![5], 8),
            (vec![100, 1], 1),
        ] {
            let mut at = 0;
            let batches: Vec<RecordBatch> = sizes
                .iter()
                .map(|&k| {
                    at += k;
                    batch(at - k..at)
                })
                .collect();
            let total = at as usize;
            let runs = split_rows(batches, parts);
            assert_eq!(runs.len(), parts.min(total), "{sizes:?} in {parts}");
            let lens: Vec<usize> = runs
                .iter()
                .map(|r| r.iter().map(RecordBatch::num_rows).sum())
                .collect();
            let (min, max) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
            assert!(max - min <= 1, "{sizes:?} in {parts}: {lens:?}");
            let rows: Vec<i64> = runs
                .iter()
                .flatten()
                .flat_map(|b| {
                    b.column(0)
                        .as_primitive::<arrow::datatypes::Int64Type>()
                        .values()
                        .to_vec()
                })
                .collect();
            assert_eq!(rows, (0..at).collect::<Vec<_>>(), "{sizes:?} in {parts}");
        }
    }

    #[test]
    fn records_a_commit_made_durable_wait_to_be_freed_only_while_a_commit_runs() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let opts = LanceOptions {
                flush_threshold: 0,
                ..LanceOptions::default()
            };
            let mut b = LanceBucket::open(dir.path(), opts).await.unwrap();
            b.put_batch(records(0..10)).unwrap();
            b.start_flush().await.unwrap();
            assert!(b.commit.is_some() && b.released.is_empty());
            // the first commit is applied and the second started: the first's records
            // wait to be freed while the second runs
            b.put_batch(records(10..20)).unwrap();
            b.start_flush().await.unwrap();
            assert!(b.commit.is_some());
            assert_eq!(b.released.len(), 10);
            // nothing left to commit: no commit runs, nothing stays unfreed
            b.start_flush().await.unwrap();
            assert!(b.commit.is_none() && b.released.is_empty());
            // a flush leaves nothing unfreed either
            b.put_batch(records(20..30)).unwrap();
            b.start_flush().await.unwrap();
            b.put_batch(records(30..40)).unwrap();
            b.start_flush().await.unwrap();
            assert_eq!(b.released.len(), 10);
            b.flush().await.unwrap();
            assert!(b.commit.is_none() && b.released.is_empty());
            let back = b.read(0, 100).await.unwrap();
            assert_eq!(back, records(0..40));
            assert_eq!(b.stats().persisted_count, 40);
        });
    }
}

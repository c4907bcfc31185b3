//! [`LanceBucket`]: one bucket's records, buffered in memory and appended to a Lance
//! dataset at `{storage_path}/data.lance`.
//!
//! Invariants:
//! - offsets are dense: the dataset holds offsets `log_start..persisted_count`, the
//!   buffer the next ones; a record's offset is the log start plus its row position
//!   and never changes (appends and compaction keep row order; a trim removes whole
//!   fragments from the front and moves the log start by their rows, see
//!   `retention`);
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
//!   sealed file this handle has not checked against its seal (see `store::seals`);
//! - the dataset is never rewritten: new fields are added as all-null columns, and an
//!   int column that receives a float is rewritten alone, as float64.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::Schema as ArrowSchema;
use lance::Dataset;
use lance::dataset::builder::DatasetBuilder;
use lance::dataset::{WriteMode, WriteParams};
use lance_io::object_store::ObjectStoreParams;
use persisting_codec::Record;

use crate::buffer::Buffer;
use crate::committed::Committed;
use crate::error::{Error, Result};
use crate::flush::commits::Commits;
use crate::location::Location;
use crate::options::LanceOptions;
use crate::read::reads::Reads;
use crate::schema::{FieldState, REGISTRY_KEY, SchemaState, col_type, is_internal_column};
use crate::store::object::StoreCalls;
use crate::store::{self, Disk, Seal, Storage};

/// Name of the dataset directory inside a bucket's storage path.
pub const DATASET_DIR: &str = "data.lance";

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
    /// One past the dataset's last offset (records ever committed).
    pub persisted_count: u64,
    /// The first offset the bucket holds (records below it were trimmed).
    pub log_start: u64,
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
    /// Calls made through Lance's object store since open (for data at a URI, its
    /// requests).
    pub store_calls: StoreCalls,
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
    pub(crate) root: PathBuf,
    pub(crate) uri: String,
    pub(crate) opts: LanceOptions,
    /// The dataset version, its log start and its end (see `committed`).
    pub(crate) committed: Committed,
    /// The field registry: every field seen, in order, with its column type.
    pub(crate) schema: SchemaState,
    /// Offsets from the committed end on, not in the dataset yet.
    pub(crate) buffer: Buffer,
    /// The running commit and what flushes left to do.
    pub(crate) commits: Commits,
    /// What reads keep between calls.
    pub(crate) reads: Reads,
    /// Where the dataset lives: the stores its commits go through, the versions this
    /// handle may commit, a local dataset's files.
    pub(crate) storage: Storage,
    /// When the oldest record no flush holds was buffered (for `flush_interval`).
    pub(crate) unflushed_since: Option<std::time::Instant>,
}

/// A batch checked against a bucket's schema, not buffered yet (see
/// [`LanceBucket::admit`]).
#[derive(Debug)]
#[must_use = "an admitted batch is buffered only by LanceBucket::buffer"]
pub struct Admitted {
    records: Vec<Record>,
    schema: SchemaState,
    start: u64,
}

impl Admitted {
    /// The offsets the batch takes once buffered.
    pub fn offsets(&self) -> Range<u64> {
        self.start..self.start + self.records.len() as u64
    }
}

/// The size of the log an owner keeps in front of a bucket (a WAL), for
/// [`LanceBucket::flush_due`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSize {
    /// Bytes the log holds.
    pub bytes: u64,
    /// Bytes at which a flush is due (so the log can be checkpointed).
    pub bytes_max: u64,
}

impl LanceBucket {
    /// Opens the bucket stored under `storage_path` (the dataset is created by the first
    /// flush). A dataset written by another tool (pylance, the Python Persisting
    /// package) opens too: its columns are read in their order, nulls as absent fields.
    pub async fn open(storage_path: impl AsRef<Path>, opts: LanceOptions) -> Result<Self> {
        Box::pin(Self::open_on(storage_path, opts, store::real())).await
    }

    /// Opens the bucket at its latest version, or at the snapshot `snapshot` (a
    /// handle that must write nothing).
    pub(crate) async fn open_at(
        storage_path: impl AsRef<Path>,
        opts: LanceOptions,
        snapshot: Option<&str>,
    ) -> Result<Self> {
        Box::pin(Self::open_with(storage_path, opts, store::real(), snapshot)).await
    }

    /// [`LanceBucket::open`] with every file operation on `disk` (a [`crate::SimDisk`]
    /// in tests of power losses).
    pub async fn open_on(
        storage_path: impl AsRef<Path>,
        opts: LanceOptions,
        disk: Arc<dyn Disk>,
    ) -> Result<Self> {
        Box::pin(Self::open_with(storage_path, opts, disk, None)).await
    }

    async fn open_with(
        storage_path: impl AsRef<Path>,
        opts: LanceOptions,
        disk: Arc<dyn Disk>,
        snapshot: Option<&str>,
    ) -> Result<Self> {
        opts.validate()?;
        let location = Location::of(storage_path)?;
        let root = location.to_path_buf();
        let root_str = root.to_str().ok_or_else(|| Error::InvalidOption {
            name: "storage_path",
            value: root.display().to_string(),
            reason: "must be valid UTF-8".to_owned(),
        })?;
        let uri = format!("{}/{DATASET_DIR}", root_str.trim_end_matches('/'));
        let remote = location.is_remote();
        let options = opts.storage_options.clone();
        let storage = Storage::open(&root, &uri, remote, Arc::clone(&disk), options)?;
        let mut bucket = Self {
            root,
            opts,
            committed: Committed::default(),
            schema: SchemaState::default(),
            buffer: Buffer::default(),
            commits: Commits::new(&uri),
            reads: Reads::new(!remote),
            storage,
            unflushed_since: None,
            uri,
        };
        // commits of an earlier handle of this dataset still running land first
        bucket.commits.wait_for_running().await;
        if bucket.storage.local.is_some() {
            // a power loss may have torn the last manifest: Lance must not read it
            crate::store::manifests::set_aside_torn(Path::new(&bucket.uri), disk.as_ref())?;
        }
        let exists = if bucket.storage.local.is_some() {
            Path::new(&bucket.uri).exists()
        } else {
            true
        };
        if let Some(name) = snapshot {
            let missing = || Error::SnapshotNotFound {
                dataset: bucket.uri.clone(),
                name: name.to_owned(),
            };
            let latest = match bucket.open_dataset().await {
                Ok(ds) => ds,
                Err(lance::Error::DatasetNotFound { .. }) => return Err(missing()),
                Err(e) => return Err(Error::lance("open", &bucket.uri)(e)),
            };
            let ds = match latest.checkout_version(name).await {
                Ok(ds) => ds,
                Err(lance::Error::RefNotFound { .. } | lance::Error::NotFound { .. }) => {
                    return Err(missing());
                }
                Err(e) => return Err(Error::lance("open a snapshot of", &bucket.uri)(e)),
            };
            bucket.take_state(ds).await?;
            return Ok(bucket);
        }
        if exists {
            match bucket.open_dataset().await {
                Ok(ds) => {
                    bucket.adopt(ds).await?;
                    // a crash may have left the last commit's files unsynced (they are
                    // not sealed: only files this handle wrote are)
                    bucket.sync_files(Seal::Nothing).await?;
                }
                Err(lance::Error::DatasetNotFound { .. })
                    if bucket.storage.local.is_none()
                        || !store::manifests::has_manifest(&bucket.uri) => {}
                Err(e) => return Err(Error::lance("open", &bucket.uri)(e)),
            }
        }
        Ok(bucket)
    }

    /// Takes a dataset as the current state: schema registry, row count, and the repair
    /// of an interrupted int-to-float rewrite.
    pub(crate) async fn adopt(&mut self, mut ds: Dataset) -> Result<()> {
        // the repair below may commit: from the version found
        self.storage.versions.seen(ds.manifest().version);
        self.finish_interrupted_widening(&mut ds).await?;
        self.take_state(ds).await
    }

    /// Takes a dataset as the current state, changing nothing in it: schema
    /// registry, log start and row count.
    pub(crate) async fn take_state(&mut self, ds: Dataset) -> Result<()> {
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
        let (start, _) = crate::log_start::log_start_of(&ds)?;
        let end = start
            + ds.count_rows(None)
                .await
                .map_err(Error::lance("count the rows of", &self.uri))? as u64;
        self.schema = state;
        // and as the repair left it (a repair commit Lance settled itself after a
        // lost reply is known from here only)
        self.storage.versions.seen(ds.manifest().version);
        self.committed.adopt(ds, start, end);
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
        self.committed.persisted()
    }

    /// Records in the buffer.
    pub fn buffered_count(&self) -> u64 {
        self.buffer.len() as u64
    }

    /// All records: the next offset.
    pub fn total_count(&self) -> u64 {
        self.committed.persisted() + self.buffer.len() as u64
    }

    /// The options in force.
    pub fn options(&self) -> &LanceOptions {
        &self.opts
    }

    /// Buffers a batch without flushing; returns the offsets it took. The whole batch
    /// is refused, and nothing buffered, if any value conflicts with its column.
    pub fn put_batch(&mut self, records: Vec<Record>) -> Result<Range<u64>> {
        let admitted = self.admit(records)?;
        self.buffer(admitted)
    }

    /// The first phase of a put: checks a batch against the bucket's schema and
    /// returns it admitted, with the offsets it will take, changing nothing. An owner
    /// logs the admitted batch elsewhere (a WAL) and then buffers it with
    /// [`LanceBucket::buffer`]; dropping it instead leaves the bucket as it was.
    pub fn admit(&self, records: Vec<Record>) -> Result<Admitted> {
        let schema = self.schema.admitted(&records)?;
        let start = self.total_count();
        Ok(Admitted {
            records,
            schema,
            start,
        })
    }

    /// The second phase of a put: buffers a batch [`LanceBucket::admit`] admitted,
    /// which must be the next change of this bucket (an
    /// [`Error::AdmittedOutOfTurn`] otherwise, nothing buffered). Returns its offsets.
    pub fn buffer(&mut self, admitted: Admitted) -> Result<Range<u64>> {
        let at = self.total_count();
        if admitted.start != at {
            return Err(Error::AdmittedOutOfTurn {
                admitted_at: admitted.start,
                bucket_at: at,
            });
        }
        self.schema = admitted.schema;
        if self.unflushed() == 0 {
            self.unflushed_since = Some(std::time::Instant::now());
        }
        self.buffer.extend(admitted.records);
        if let Some(ds) = self
            .committed
            .dataset()
            .map(Arc::as_ref)
            .filter(|_| self.commits.running())
        {
            // build the next commit's batches while this one runs
            let held = self.commits.holding();
            self.buffer.convert_ahead(held, ds, &self.schema);
        }
        Ok(at..self.total_count())
    }

    /// Whether a flush is due: once `flush_threshold` records not being committed are
    /// buffered, once the oldest of them has waited `flush_interval`, or once `logged` (the bytes an owner's log holds for this bucket, with
    /// its limit) reaches its limit. The one flush policy of a bucket: [`append`]
    /// and an owner putting with [`LanceBucket::admit`] both ask it.
    ///
    /// [`append`]: LanceBucket::append
    pub fn flush_due(&self, logged: Option<LogSize>) -> bool {
        let unflushed = self.unflushed();
        let threshold = self.opts.flush_threshold;
        let waited = self.opts.flush_interval.zip(self.unflushed_since);
        unflushed > 0
            && ((threshold > 0 && unflushed >= threshold)
                || logged.is_some_and(|l| l.bytes >= l.bytes_max)
                || waited.is_some_and(|(interval, since)| since.elapsed() >= interval))
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
        // a failure leaves the flush's records due: made below, or by the next flush
        let _applied = self.finished_flush().await;
        if self.flush_due(None) {
            self.flush().await?;
        }
        let range = self.put_batch(records)?;
        if self.flush_due(None) {
            // the batch is buffered, whatever this flush does: a failure leaves the
            // flush due, for the next append or flush to make or report
            let _retried_by_the_next_append = self.start_flush().await;
        }
        Ok(range)
    }

    pub(crate) fn write_params(&self, mode: WriteMode) -> WriteParams {
        WriteParams {
            mode,
            store_params: Some(self.store_params()),
            ..WriteParams::default()
        }
    }

    /// The object-store parameters of this dataset (see [`Storage::params`]).
    pub(crate) fn store_params(&self) -> ObjectStoreParams {
        self.storage.params()
    }

    /// Opens the latest version of the dataset, written through this bucket's stores.
    /// (Boxed: the builder's future is deep enough to push the crates awaiting a
    /// bucket's futures over the compiler's default recursion limit.)
    pub(crate) async fn open_dataset(&self) -> lance::Result<Dataset> {
        let load = DatasetBuilder::from_uri(&self.uri)
            .with_store_params(self.store_params())
            .load();
        Box::pin(load).await
    }

    /// Makes sure this handle may write a remote dataset: takes the bucket's writer
    /// lease the first time ([`Error::LeaseHeld`] if another writer holds it), and
    /// renews it once half of its term has passed, on a task of its own while it
    /// holds, before answering once it expired ([`Error::LeaseSuspended`] while the
    /// store does not answer; [`Error::LeaseLost`], for good, once another writer
    /// took it over). Every commit asks first; an owner that
    /// acknowledges writes (the facade) asks before each. Nothing to do for a local
    /// dataset, whose owner holds a file lock.
    pub async fn ensure_writer(&self) -> Result<()> {
        if self.storage.local.is_some() {
            return Ok(());
        }
        let params = self.store_params();
        let term = self.opts.lease_term;
        let holder = self.opts.writer_id.clone();
        let root = self.root.to_string_lossy().into_owned();
        let lease = self
            .storage
            .lease
            .get_or_try_init(|| crate::store::lease::Lease::acquire(&root, &params, term, holder))
            .await?;
        lease.ensure(&self.storage.lease).await
    }

    /// Gives up the writer lease of a remote dataset, so that the next writer takes
    /// the bucket at once rather than after the lease's term; call it once the last
    /// flush has landed (the facade's `close` does). This handle commits nothing
    /// afterwards ([`Error::LeaseLost`]). Nothing to do for a local dataset, or for a
    /// handle that never wrote.
    pub async fn release_writer(&self) -> Result<()> {
        match self.storage.lease.get() {
            Some(lease) => lease.release().await,
            None => Ok(()),
        }
    }

    /// Sees commits made since open by another process (for a reader; a bucket has a
    /// single writer). Buffered records of this handle are kept.
    pub async fn refresh(&mut self) -> Result<()> {
        self.settle_commit().await?;
        match self.open_dataset().await {
            Ok(ds) => {
                if let Some(local) = &self.storage.local {
                    // the writer has sealed the files of its later commits (files
                    // already checked stay checked: a file's seal never changes)
                    local.seals.reload()?;
                }
                self.adopt(ds).await?;
                self.buffer.forget_converted();
                // the buffered records' fields join the registry read from the dataset
                let buffered = self.buffer.slice(0..self.buffer.len());
                self.schema.admit(buffered)?;
                Ok(())
            }
            Err(lance::Error::DatasetNotFound { .. }) => Ok(()),
            Err(e) => Err(Error::lance("open", &self.uri)(e)),
        }
    }

    /// Buffered records the running flush, if any, is committing.
    pub(crate) fn flushing(&self) -> usize {
        self.commits.holding()
    }

    /// Buffered records that no running flush is committing.
    pub(crate) fn unflushed(&self) -> usize {
        self.buffer.len() - self.flushing()
    }

    /// Buffered records that no running flush is committing: what the next flush
    /// takes.
    pub fn unflushed_count(&self) -> u64 {
        self.unflushed() as u64
    }

    /// Sizes and counters.
    pub fn stats(&self) -> LanceStats {
        LanceStats {
            persisted_count: self.committed.persisted(),
            log_start: self.committed.log_start(),
            buffered_count: self.buffered_count(),
            flushing_count: self.flushing() as u64,
            fragments: self.fragments(),
            version: self
                .committed
                .dataset()
                .map_or(0, |ds| ds.manifest().version),
            flushes: self.commits.flushes,
            compactions: self.commits.compactions,
            last_flush: self.commits.last_flush,
            column_compression: self.opts.column_compression.to_string(),
            dataset_uri: self.uri.clone(),
            store_calls: self.storage.stores.calls(),
        }
    }
}

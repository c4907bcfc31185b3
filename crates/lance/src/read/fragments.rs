//! Small reads ("point reads") of a dataset's rows through fragment readers kept open,
//! run on one thread from start to end.
//!
//! Why: a read of 100 rows through Lance on the caller's multi-threaded runtime is
//! mostly hand-offs between threads, each a wake-up (an inter-processor interrupt and
//! a halted vCPU's wake on a VM, ~65 us here): Lance's I/O scheduler task, a
//! blocking-pool thread per byte range read (`pread` through `spawn_blocking`), and its
//! decode tasks, which wake idle workers: ~33 context switches per read. Here a local
//! dataset's read runs on one thread with a single-threaded runtime of its own, with
//! Lance's lite I/O scheduler (no task of its own) over [`InlineFiles`], which reads
//! byte ranges by `pread` on that same thread:
//! - on a multi-threaded Tokio runtime (a worker or the `block_on` thread), on the
//!   calling thread, inside `block_in_place` (the runtime hands the worker's other
//!   tasks to another thread meanwhile): no hand-off at all;
//! - elsewhere (a current-thread runtime, another executor), on one of the process's
//!   reader threads: two hand-offs (the request, the answer).
//!
//! Measured on a 2-core VM, 100 rows at random offsets of 10^6 rows
//! (`PERSISTING_BENCH_ONLY=random`): 0.58 ms on the caller's runtime before, ~0.40 ms
//! on a reader thread, ~0.25 ms in place (from a worker task or the `block_on` thread).
//! The cost: a cold page blocks the reading thread for the disk's time, and one read's
//! byte ranges are read one after another.
//!
//! Invariants:
//! - a fragment reader is used only for the fragment it was opened for, as the dataset
//!   describes it now (same data files, same deletions), and with the dataset's current
//!   schema as its projection; anything else opens a new one. Fragments are immutable
//!   apart from column rewrites (which change their data files), and a compaction gives
//!   new fragments new ids, so a stale reader is never used;
//! - a read of a local dataset polls Lance's futures on one thread only, whose runtime
//!   runs the decode tasks Lance spawns; the lite scheduler keeps no task between
//!   reads, so a reader opened on one thread may read on another;
//! - [`InlineFiles`] only reads: every write, listing or delete goes to the local file
//!   system store it wraps. It reads files Lance names by path, never writes them, and
//!   is used only for local datasets (remote ones read on the caller's runtime through
//!   Lance's own store);
//! - a panic while Lance decodes (it asserts on damaged pages) becomes an error of the
//!   read, in place as on a reader thread;
//! - the file handles every bucket's [`InlineFiles`] keeps open count against one
//!   process-wide budget (a quarter of the process's open-file limit): past it, a file
//!   is opened for the read and closed after it, so many buckets with many fragments
//!   never exhaust the process's descriptors, whatever their number.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::future::Future;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, OnceLock, PoisonError};

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::FutureExt;
use futures::stream::{BoxStream, StreamExt};
use lance::Dataset;
use lance::dataset::fragment::{FileFragment, FragReadConfig, FragmentReader};
use lance::table::format::Fragment;
use lance_io::object_store::ObjectStore as LanceStore;
use lance_io::scheduler::{ScanScheduler, SchedulerConfig};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

use crate::error::{Error, Result};

/// Files at most this large are read whole by one reader-thread `pread` when Lance
/// asks for all of a file (ranged reads are always served there).
const WHOLE_FILE_MAX: u64 = 8 << 20;
/// Open file handles [`InlineFiles`] keeps; past it, it closes them all and reopens
/// the ones read next (data files are immutable, so reopening reads the same bytes).
const OPEN_FILES_MAX: usize = 1024;
/// Kept handles allowed in all when the process's open-file limit cannot be read.
const KEPT_FILES_FALLBACK: usize = 256;
/// Reader threads started at most (fewer on machines with fewer cores).
const THREADS_MAX: usize = 4;

/// The open fragment readers of one bucket, and how it reads them.
#[derive(Debug)]
pub(crate) struct FragmentReaders {
    open: Mutex<HashMap<u64, Arc<OpenFragment>>>,
    /// A local dataset's byte-range scheduler and reader thread; `None` for a remote
    /// dataset.
    local: Option<Local>,
}

#[derive(Debug)]
struct Local {
    files: Arc<InlineFiles>,
    scheduler: Arc<ScanScheduler>,
    /// Chosen at the first read that needs one (none if no thread can start: the
    /// read then runs on the caller's runtime, preads included).
    thread: OnceLock<Option<ReaderThread>>,
}

#[derive(Debug)]
struct OpenFragment {
    fragment: Fragment,
    schema: lance::datatypes::Schema,
    reader: FragmentReader,
}

/// Row batches of a read, each with the offset of its first row.
pub(crate) type Batches = Vec<(RecordBatch, u64)>;

impl FragmentReaders {
    /// Readers of a dataset; `local`: whether it is on the local file system.
    pub(crate) fn new(local: bool) -> Self {
        let local = local
            .then(|| {
                let files = Arc::new(InlineFiles::default());
                let scheduler = scheduler(Arc::clone(&files))?;
                Some(Local {
                    files,
                    scheduler,
                    thread: OnceLock::new(),
                })
            })
            .flatten();
        Self {
            open: Mutex::default(),
            local,
        }
    }

    /// Rows `range` of `ds`, read through the readers of the fragments holding them
    /// (for a local dataset: in place on a multi-threaded runtime, else on a reader
    /// thread). `None` when a fragment does not know its row count (a legacy dataset):
    /// the caller reads the rows another way.
    pub(crate) async fn read(
        self: &Arc<Self>,
        ds: &Arc<Dataset>,
        range: Range<u64>,
    ) -> Result<Option<Batches>> {
        let Some(local) = &self.local else {
            return self.read_here(ds, range).await;
        };
        let offset = range.start;
        if on_multi_thread_runtime() {
            return in_place(ds.uri(), offset, self.read_here(ds, range));
        }
        let Some(thread) = local.thread.get_or_init(ReaderThread::pick) else {
            return self.read_here(ds, range).await;
        };
        let me = Arc::clone(self);
        let theirs = Arc::clone(ds);
        let read = async move { me.read_here(&theirs, range).await };
        thread.call(ds.uri(), offset, read).await
    }

    /// [`FragmentReaders::read`] on the current thread.
    async fn read_here(&self, ds: &Dataset, range: Range<u64>) -> Result<Option<Batches>> {
        let uri = ds.uri();
        let mut at = 0u64;
        let mut parts = Vec::new();
        for frag in ds.manifest().fragments.iter() {
            if at >= range.end {
                break;
            }
            let Some(rows) = frag.num_rows().map(|r| r as u64) else {
                return Ok(None);
            };
            let next = at + rows;
            if next > range.start {
                let from = range.start.max(at);
                let to = range.end.min(next);
                parts.push((frag, from, (from - at) as u32..(to - at) as u32));
            }
            at = next;
        }
        let mut out = Vec::new();
        for (frag, first, rows) in parts {
            let open = self
                .get(ds, frag)
                .await
                .map_err(Error::lance("open a fragment of", uri))?;
            let len = rows.len() as u32;
            let mut batches = open
                .reader
                .read_range(rows, len.max(1))
                .await
                .map_err(Error::lance("read", uri))?;
            let mut next = first;
            while let Some(batch) = batches.next().await {
                let batch = batch.await.map_err(Error::lance("read", uri))?;
                let rows = batch.num_rows() as u64;
                out.push((batch, next));
                next += rows;
            }
        }
        Ok(Some(out))
    }

    /// The open reader of `fragment` (a fragment of `ds`), opening it if needed.
    async fn get(&self, ds: &Dataset, fragment: &Fragment) -> lance::Result<Arc<OpenFragment>> {
        let found = self.lock().get(&fragment.id).cloned();
        if let Some(open) = found.filter(|o| o.fragment == *fragment && o.schema == *ds.schema()) {
            return Ok(open);
        }
        let config = FragReadConfig {
            scan_scheduler: self.local.as_ref().map(|l| Arc::clone(&l.scheduler)),
            ..FragReadConfig::default()
        };
        let reader = FileFragment::new(Arc::new(ds.clone()), fragment.clone())
            .open(ds.schema(), config)
            .await?;
        let open = Arc::new(OpenFragment {
            fragment: fragment.clone(),
            schema: ds.schema().clone(),
            reader,
        });
        self.retain_live(ds);
        let mut map = self.lock();
        map.insert(fragment.id, Arc::clone(&open));
        Ok(open)
    }

    /// Closes the readers of fragments `ds` no longer has (a compaction replaced
    /// them), and their data files, which a clean-up may delete: an open handle would
    /// keep a deleted file's space in use.
    pub(crate) fn retain_live(&self, ds: &Dataset) {
        let fragments = &ds.manifest().fragments;
        let live: HashSet<u64> = fragments.iter().map(|f| f.id).collect();
        self.lock().retain(|id, _| live.contains(id));
        if let Some(local) = &self.local {
            let names: HashSet<&str> = fragments
                .iter()
                .flat_map(|f| f.files.iter().map(|d| d.path.as_str()))
                .collect();
            local
                .files
                .keep(|path| path.filename().is_some_and(|n| names.contains(n)));
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<OpenFragment>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether the caller runs on a multi-threaded Tokio runtime, where
/// `block_in_place` is allowed.
fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Runs `read` to completion on the calling thread, on a single-threaded runtime of
/// that thread, with the caller's runtime told this thread blocks meanwhile.
fn in_place<T>(dataset: &str, offset: u64, read: impl Future<Output = Result<T>>) -> Result<T> {
    thread_local! {
        static LOCAL: Option<tokio::runtime::Runtime> =
            tokio::runtime::Builder::new_current_thread().enable_all().build().ok();
    }
    tokio::task::block_in_place(|| {
        LOCAL.with(|rt| {
            let rt = rt.as_ref().ok_or_else(|| Error::Io {
                op: "read",
                path: dataset.into(),
                source: std::io::Error::other("no runtime for the read"),
            })?;
            rt.block_on(std::panic::AssertUnwindSafe(read).catch_unwind())
                .unwrap_or_else(|panic| Err(Error::panicked(dataset, offset, panic.as_ref())))
        })
    })
}

/// A byte-range scheduler over [`InlineFiles`]: the lite scheduler, which polls a read
/// only when its reader polls it (no task of its own). The store is named by Lance's
/// `file-object-store` scheme: local files read through the object-store API (Lance
/// reads a `file` store's files itself, on its blocking pool), 4 KiB blocks as for
/// `file`.
fn scheduler(files: Arc<InlineFiles>) -> Option<Arc<ScanScheduler>> {
    let location = url::Url::parse("file-object-store:///").ok()?;
    let store = LanceStore::new(files, location, Some(4096), None, false, true, 8, 0, None);
    let store = Arc::new(store);
    let config = SchedulerConfig::max_bandwidth(&store).with_lite_scheduler();
    Some(ScanScheduler::new(store, config))
}

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One of the process's reader threads: a thread running a single-threaded Tokio
/// runtime that runs the reads sent to it, each as a task of its own.
#[derive(Debug, Clone)]
struct ReaderThread(tokio::sync::mpsc::UnboundedSender<Job>);

impl ReaderThread {
    /// A reader thread, in turn (threads start on first use); `None` if none can start.
    fn pick() -> Option<Self> {
        static THREADS: OnceLock<Vec<ReaderThread>> = OnceLock::new();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let threads = THREADS.get_or_init(|| {
            let n = crate::threads::cores().min(THREADS_MAX);
            (0..n).filter_map(Self::start).collect()
        });
        if threads.is_empty() {
            return None;
        }
        Some(threads[NEXT.fetch_add(1, Ordering::Relaxed) % threads.len()].clone())
    }

    fn start(i: usize) -> Option<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name(format!("persisting-read-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    while let Some(job) = rx.recv().await {
                        tokio::spawn(job);
                    }
                });
            })
            .ok()?;
        Some(Self(tx))
    }

    /// Runs `read` (a read of `dataset` from `offset`) on this thread and returns
    /// what it returns; a panic while it runs becomes [`Error::Panicked`]. Dropping
    /// the returned future does not stop `read`, whose result is then dropped.
    async fn call<T: Send + 'static>(
        &self,
        dataset: &str,
        offset: u64,
        read: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let uri = dataset.to_owned();
        let job = async move {
            let result = std::panic::AssertUnwindSafe(read)
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(Error::panicked(&uri, offset, panic.as_ref())));
            // the caller may have stopped waiting
            let _ = tx.send(result);
        };
        // the threads never stop (their senders live in a static): a job sent runs
        let _ = self.0.send(Box::pin(job));
        rx.await.unwrap_or_else(|_| {
            Err(Error::Io {
                op: "read",
                path: dataset.into(),
                source: std::io::Error::other("the reader thread stopped"),
            })
        })
    }
}

/// How many file handles may be kept open by all [`InlineFiles`] together, and how
/// many are.
#[derive(Debug)]
struct FileBudget {
    max: usize,
    kept: AtomicUsize,
}

impl FileBudget {
    fn new(max: usize) -> Self {
        Self {
            max,
            kept: AtomicUsize::new(0),
        }
    }

    /// Takes one handle's place if one is free.
    fn take(&self) -> bool {
        self.kept
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |k| {
                (k < self.max).then_some(k + 1)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.kept.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The budget of the whole process: a quarter of its open-file limit (the rest is
/// the WAL's, Lance's writes' and the application's), at least 16.
static PROCESS_FILES: LazyLock<Arc<FileBudget>> = LazyLock::new(|| {
    let max = open_files_limit().map_or(KEPT_FILES_FALLBACK, |limit| limit / 4);
    Arc::new(FileBudget::new(max.max(16)))
});

/// The soft limit on open files of this process (Linux; `None` elsewhere or when
/// unlimited).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.strip_prefix("Max open files")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The local file system, with reads served on the calling thread by `pread` from
/// files kept open (data files are immutable), not on a blocking-pool thread: for the
/// reader threads, whose whole point is not to hand work to other threads. Everything
/// else is the wrapped [`LocalFileSystem`]'s. Handles are kept while the process-wide
/// budget allows; a file read past it is closed after the read.
#[derive(Debug)]
struct InlineFiles {
    fs: LocalFileSystem,
    open: Mutex<HashMap<StorePath, Arc<OpenFile>>>,
    budget: Arc<FileBudget>,
}

impl Default for InlineFiles {
    fn default() -> Self {
        Self::with_budget(Arc::clone(&PROCESS_FILES))
    }
}

impl Drop for InlineFiles {
    fn drop(&mut self) {
        let kept = self
            .open
            .get_mut()
            .map_or_else(|e| e.into_inner().len(), |m| m.len());
        self.budget.give_back(kept);
    }
}

#[derive(Debug)]
struct OpenFile {
    file: File,
    meta: ObjectMeta,
}

impl std::fmt::Display for InlineFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InlineFiles({})", self.fs)
    }
}

impl InlineFiles {
    fn with_budget(budget: Arc<FileBudget>) -> Self {
        Self {
            fs: LocalFileSystem::default(),
            open: Mutex::default(),
            budget,
        }
    }

    fn file(&self, location: &StorePath) -> object_store::Result<Arc<OpenFile>> {
        if let Some(open) = self.lock().get(location) {
            return Ok(Arc::clone(open));
        }
        let path = self.fs.path_to_filesystem(location)?;
        let io_error = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::NotFound => object_store::Error::NotFound {
                path: path.display().to_string(),
                source: source.into(),
            },
            _ => object_store::Error::Generic {
                store: "InlineFiles",
                source: format!("{}: {source}", path.display()).into(),
            },
        };
        let file = File::open(&path).map_err(io_error)?;
        let stat = file.metadata().map_err(io_error)?;
        let meta = ObjectMeta {
            location: location.clone(),
            last_modified: stat
                .modified()
                .map(chrono::DateTime::<chrono::Utc>::from)
                .unwrap_or_default(),
            size: stat.len(),
            e_tag: None,
            version: None,
        };
        let open = Arc::new(OpenFile { file, meta });
        let mut map = self.lock();
        if let Some(kept) = map.get(location) {
            // another read opened it meanwhile: keep one handle
            return Ok(Arc::clone(kept));
        }
        if map.len() >= OPEN_FILES_MAX {
            self.budget.give_back(map.len());
            map.clear();
        }
        if self.budget.take() {
            map.insert(location.clone(), Arc::clone(&open));
        }
        Ok(open)
    }

    /// Closes the files whose path `keep` refuses.
    fn keep(&self, keep: impl Fn(&StorePath) -> bool) {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|path, _| keep(path));
        self.budget.give_back(before - map.len());
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<StorePath, Arc<OpenFile>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for InlineFiles {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.fs.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.fs.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &StorePath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let plain = options.if_match.is_none()
            && options.if_none_match.is_none()
            && options.if_modified_since.is_none()
            && options.if_unmodified_since.is_none()
            && options.version.is_none()
            && !options.head;
        if !plain {
            return self.fs.get_opts(location, options).await;
        }
        let open = self.file(location)?;
        let size = open.meta.size;
        let range = match &options.range {
            Some(r) => r.as_range(size).map_err(|e| object_store::Error::Generic {
                store: "InlineFiles",
                source: format!("{location}: {e}").into(),
            })?,
            None if size <= WHOLE_FILE_MAX => 0..size,
            None => return self.fs.get_opts(location, options).await,
        };
        let mut buf = vec![0; (range.end - range.start) as usize];
        open.file
            .read_exact_at(&mut buf, range.start)
            .map_err(|source| object_store::Error::Generic {
                store: "InlineFiles",
                source: format!("{location} bytes {range:?}: {source}").into(),
            })?;
        let bytes = Bytes::from(buf);
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async { Ok(bytes) }).boxed()),
            meta: open.meta.clone(),
            range,
            attributes: Default::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<StorePath>>,
    ) -> BoxStream<'static, object_store::Result<StorePath>> {
        self.fs.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&StorePath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.fs.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&StorePath>,
    ) -> object_store::Result<ListResult> {
        self.fs.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.fs.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.fs.rename_opts(from, to, options).await
    }

    fn list_with_offset(
        &self,
        prefix: Option<&StorePath>,
        offset: &StorePath,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.fs.list_with_offset(prefix, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_read_runs_on_a_reader_thread_and_its_panic_is_an_error_of_the_read() {
        rt().block_on(async {
            let thread = ReaderThread::pick().unwrap();
            let name = thread
                .call("ds", 0, async {
                    Ok(std::thread::current().name().map(str::to_owned))
                })
                .await
                .unwrap()
                .unwrap();
            assert!(name.starts_with("persisting-read-"), "{name}");
            let err = thread
                .call::<()>("ds", 7, async { panic!("decoder assertion") })
                .await
                .unwrap_err();
            match err {
                Error::Panicked {
                    dataset,
                    offset,
                    message,
                } => {
                    assert_eq!((dataset.as_str(), offset), ("ds", 7));
                    assert_eq!(message, "decoder assertion");
                }
                other => panic!("expected a panic error, got {other}"),
            }
            // the thread goes on serving reads
            assert_eq!(thread.call("ds", 0, async { Ok(5) }).await.unwrap(), 5);
        });
    }

    #[test]
    fn a_read_in_place_runs_on_the_calling_thread_and_its_panic_is_an_error_of_the_read() {
        rt().block_on(async {
            assert!(on_multi_thread_runtime());
            let caller = std::thread::current().id();
            let ran_on = in_place("ds", 0, async { Ok(std::thread::current().id()) }).unwrap();
            assert_eq!(ran_on, caller);
            // from a task on a worker thread too
            let (caller, ran_on) = tokio::spawn(async {
                let caller = std::thread::current().id();
                (
                    caller,
                    in_place("ds", 0, async { Ok(std::thread::current().id()) }),
                )
            })
            .await
            .unwrap();
            assert_eq!(ran_on.unwrap(), caller);
            match in_place::<()>("ds", 9, async { panic!("decoder assertion") }) {
                Err(Error::Panicked {
                    offset: 9, message, ..
                }) => {
                    assert_eq!(message, "decoder assertion");
                }
                other => panic!("expected a panic error, got {other:?}"),
            }
        });
        let ct = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(!ct.block_on(async { on_multi_thread_runtime() }));
    }

    impl FileBudget {
        fn kept(&self) -> usize {
            self.kept.load(Ordering::Acquire)
        }
    }

    #[test]
    fn kept_file_handles_stay_within_the_budget_all_buckets_share() {
        rt().block_on(async {
            use object_store::ObjectStoreExt;
            let dir = tempfile::tempdir().unwrap();
            let paths: Vec<StorePath> = (0..4u8)
                .map(|i| {
                    let p = dir.path().join(format!("f{i}"));
                    std::fs::write(&p, vec![i; 100]).unwrap();
                    StorePath::from_filesystem_path(p).unwrap()
                })
                .collect();
            let budget = Arc::new(FileBudget::new(3));
            let a = InlineFiles::with_budget(Arc::clone(&budget));
            let b = InlineFiles::with_budget(Arc::clone(&budget));
            for p in &paths[..2] {
                a.get_range(p, 0..10).await.unwrap();
                a.get_range(p, 10..20).await.unwrap(); // kept: no second handle
            }
            assert_eq!((a.lock().len(), budget.kept()), (2, 2));
            // the other bucket gets the last place, then reads without keeping
            for (i, p) in paths[2..].iter().enumerate() {
                let got = b.get_range(p, 0..10).await.unwrap();
                assert_eq!(&got[..], &[i as u8 + 2; 10]);
            }
            assert_eq!((b.lock().len(), budget.kept()), (1, 3));
            // closing handles frees their places
            a.keep(|p| *p == paths[0]);
            assert_eq!(budget.kept(), 2);
            b.get_range(&paths[3], 0..10).await.unwrap();
            assert_eq!((b.lock().len(), budget.kept()), (2, 3));
            drop(b);
            assert_eq!(budget.kept(), 1);
            drop(a);
            assert_eq!(budget.kept(), 0);
        });
        assert!(PROCESS_FILES.max >= 16);
    }

    #[test]
    fn inline_files_read_ranges_and_whole_files_and_name_what_is_missing() {
        rt().block_on(async {
            use object_store::ObjectStoreExt;
            let dir = tempfile::tempdir().unwrap();
            let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
            std::fs::write(dir.path().join("f"), &data).unwrap();
            let files = InlineFiles::default();
            let path = StorePath::from_filesystem_path(dir.path().join("f")).unwrap();
            let got = files.get_range(&path, 100..4200).await.unwrap();
            assert_eq!(&got[..], &data[100..4200]);
            let whole = files.get(&path).await.unwrap();
            assert_eq!(whole.meta.size, 10_000);
            assert_eq!(&whole.bytes().await.unwrap()[..], &data[..]);
            // a range past the end is clipped, one starting past it is refused
            assert_eq!(
                files.get_range(&path, 9_990..20_000).await.unwrap().len(),
                10
            );
            assert!(files.get_range(&path, 20_000..20_010).await.is_err());
            let missing = StorePath::from_filesystem_path(dir.path())
                .unwrap()
                .join("none");
            match files.get_range(&missing, 0..10).await {
                Err(object_store::Error::NotFound { path, .. }) => assert!(path.ends_with("none")),
                other => panic!("expected not found, got {other:?}"),
            }
        });
    }
}

//! The log itself: appends with group commit, rotation, checkpoint and sync.
//!
//! Invariants:
//! - LSNs are dense: each append takes the next ones, under one lock, and its frame
//!   goes to the file after every frame with lower LSNs;
//! - every frame is checksummed before it is written, and is written with one write;
//! - `durable_lsn` only grows, and only after an fsync that covered every LSN below it;
//!   an append under [`SyncPolicy::Always`] returns only once its LSNs are below it;
//! - under [`SyncPolicy::Always`], appenders only queue their frames: the first waiter
//!   that finds no sync running (the leader) writes every queued frame with one write
//!   and one fsync, outside the lock (group commit with a leader, no fixed delay);
//!   a leader wakes two of the followers its sync covered and leaves the rest to the
//!   first of them to run, so its next write and fsync start at once;
//!   under the other policies each append writes its frame before returning, so a
//!   process crash loses nothing;
//! - segments are preallocated (zeros written) in steps, under every policy, so an
//!   fsync rarely has a file size to persist and frames overwrite cached pages;
//!   the zeros after the last frame are the segment's clean end;
//! - a new segment starts under a pending name; the closer fsyncs the segment before
//!   it, then the new one, and only then gives it its final name. So every segment but
//!   the last final one is durable, only that one can hold a torn tail, and a pending
//!   segment (whose predecessor may be torn) holds nothing acknowledged as durable.
//!   Writers never wait for a segment to be closed; durability waits do;
//! - a failed fsync poisons the log, and so does a failed write that cannot be undone:
//!   every later call fails until the log is reopened.

mod append;
mod checkpoint;
mod interval;
mod rotate;
mod sync;
pub(crate) mod tasks;

use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{JoinHandle, Thread};

use self::rotate::CloseJob;
use self::sync::poisoned;
use self::tasks::{AppendDurable, Tasks, WaitDurable};
use crate::error::{Error, Result};
use crate::fs::{Fs, FsFile, RealFs};
use crate::options::{SegmentClose, SyncPolicy, WalOptions};
use crate::reader::WalReader;
use crate::recovery::{RecoveryReport, SegmentMeta, recover};

/// Largest step in which a segment file is extended ahead of its frames.
pub const PREALLOCATE_BYTES_MAX: u64 = 1 << 20;

/// Counters and sizes of an open log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WalStats {
    /// Oldest LSN still held.
    pub first_lsn: u64,
    /// LSN the next append will get.
    pub next_lsn: u64,
    /// Every LSN below this one is durable (or obsolete).
    pub durable_lsn: u64,
    /// Segment files.
    pub segments: usize,
    /// Bytes of frames and headers in all segments (preallocated space not counted).
    pub total_bytes: u64,
    /// fsyncs of segment data done since open.
    pub fsyncs: u64,
    /// Entries appended since open.
    pub entries_appended: u64,
    /// True once a failure has poisoned the log.
    pub poisoned: bool,
}

struct State {
    /// Every segment, oldest first; the last is the active one. Its `bytes` counts
    /// queued frames too.
    segments: Vec<SegmentMeta>,
    active: Arc<dyn FsFile>,
    /// Bytes of the active file written (queued frames start here).
    written: u64,
    /// LSN after the last frame written to the active file.
    written_lsn: u64,
    /// Length of the active file, preallocation included.
    allocated: u64,
    /// Frames queued for the group-commit leader (only under `Always`).
    queued: Vec<u8>,
    next_lsn: u64,
    synced_lsn: u64,
    syncing: bool,
    closed: bool,
    scratch: Vec<u8>,
    fsyncs: u64,
    entries_appended: u64,
    /// Segments waiting for the closer, oldest first.
    closing: VecDeque<CloseJob>,
    /// Threads parked until their LSN is durable, with that LSN.
    waiters: Vec<(u64, Thread)>,
}

pub(crate) struct Shared {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    opts: WalOptions,
    state: Mutex<State>,
    /// Signalled when a sync or a segment close finishes (group-commit followers and
    /// durability waiters wait on it).
    synced: Condvar,
    /// Signalled to wake the interval flusher (on close).
    tick: Condvar,
    /// Signalled when the closer has work (or on close).
    closer: Condvar,
    /// Mirror of `State::synced_lsn`, read by parked waiters without the lock.
    durable: AtomicU64,
    /// Set once the log is poisoned, read by parked waiters without the lock.
    failed: AtomicBool,
    /// Why the log was poisoned: set once, under the state's lock, by `poison`, and
    /// readable without it (a waiting task's poll never takes the state's lock: a
    /// waker may poll while it is held).
    poison_cause: OnceLock<String>,
    /// Threads a finished sync covers that its leader left for the first of them to
    /// wake (see [`Unpark::hand_over`]): every waiter drains it as it leaves its park.
    backlog: Mutex<Vec<Thread>>,
    /// Tasks waiting for an LSN to be durable (see the `tasks` module).
    pub(crate) tasks: Mutex<Tasks>,
    /// Highest LSN a task waits for: the sync thread syncs while `durable` is below.
    pub(crate) wanted: AtomicU64,
    /// Set while the sync thread parks (or is about to): a task unparks it only then.
    pub(crate) syncer_idle: AtomicBool,
    /// Set when the log shuts down: waiting tasks fail, the sync thread stops.
    pub(crate) shut: AtomicBool,
    /// While the sync thread gathers: woken tasks it still waits for (each new wait
    /// counts one down, under the tasks' lock).
    pub(crate) gather_needed: AtomicUsize,
    /// The sync thread for waiting tasks, started by the first task that needs it.
    syncer: Mutex<Option<JoinHandle<()>>>,
    syncer_thread: OnceLock<Thread>,
}

/// A write-ahead log in one directory. `Send + Sync`: share it with an `Arc`.
///
/// ```
/// use persisting_wal::{Wal, WalOptions};
/// let dir = tempfile::tempdir().unwrap();
/// let (wal, _report) = Wal::open(dir.path(), WalOptions::default()).unwrap();
/// assert_eq!(wal.append(b"first").unwrap(), 0);
/// assert_eq!(wal.append_batch(&[&b"a"[..], b"b"]).unwrap(), 1..3);
/// drop(wal);
/// let (wal, report) = Wal::open(dir.path(), WalOptions::default()).unwrap();
/// assert_eq!(report.entries, 3);
/// let entries: Vec<_> = wal.read_from(1).unwrap().map(|e| e.unwrap().payload).collect();
/// assert_eq!(entries, [b"a".to_vec(), b"b".to_vec()]);
/// ```
pub struct Wal {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    closer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Wal {
    /// Opens (recovering) or creates the log in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<(Wal, RecoveryReport)> {
        Self::open_with(Arc::new(RealFs), dir, opts)
    }

    /// Opens the log through any [`Fs`] (the simulated one in crash tests).
    pub fn open_with(
        fs: Arc<dyn Fs>,
        dir: impl AsRef<Path>,
        opts: WalOptions,
    ) -> Result<(Wal, RecoveryReport)> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let recovered = recover(fs.as_ref(), &dir, &opts)?;
        let written = recovered.segments.last().map_or(0, |s| s.bytes);
        let allocated = recovered
            .active
            .len()
            .map_err(|e| Error::io("stat", &dir, e))?;
        let state = State {
            segments: recovered.segments,
            active: recovered.active,
            written,
            written_lsn: recovered.next_lsn,
            allocated,
            queued: Vec::new(),
            next_lsn: recovered.next_lsn,
            synced_lsn: recovered.next_lsn,
            syncing: false,
            closed: false,
            scratch: Vec::new(),
            fsyncs: 0,
            entries_appended: 0,
            closing: VecDeque::new(),
            waiters: Vec::new(),
        };
        let durable = AtomicU64::new(state.synced_lsn);
        let shared = Arc::new(Shared {
            fs,
            dir,
            opts,
            state: Mutex::new(state),
            synced: Condvar::new(),
            tick: Condvar::new(),
            closer: Condvar::new(),
            durable,
            failed: AtomicBool::new(false),
            poison_cause: OnceLock::new(),
            backlog: Mutex::new(Vec::new()),
            tasks: Mutex::new(Tasks::default()),
            wanted: AtomicU64::new(0),
            syncer_idle: AtomicBool::new(false),
            shut: AtomicBool::new(false),
            gather_needed: AtomicUsize::new(0),
            syncer: Mutex::new(None),
            syncer_thread: OnceLock::new(),
        });
        let spawn = |name: &str, f: fn(&Shared)| {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || f(&s))
                .map_err(|e| Error::io("start a background thread for", &shared.dir, e))
        };
        let closer = match shared.opts.segment_close {
            SegmentClose::Background => Some(spawn("wal-closer", Shared::close_segments)?),
            SegmentClose::Inline => None,
        };
        let flusher = match shared.opts.sync {
            SyncPolicy::Interval(_) => Some(spawn("wal-flusher", Shared::flush_every)?),
            _ => None,
        };
        Ok((
            Wal {
                shared,
                flusher,
                closer,
            },
            recovered.report,
        ))
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &WalOptions {
        &self.shared.opts
    }

    /// Appends one entry; returns its LSN. Durable on return under
    /// [`SyncPolicy::Always`].
    pub fn append(&self, payload: &[u8]) -> Result<u64> {
        self.append_batch(&[payload]).map(|r| r.start)
    }

    /// Appends a batch as one atomic frame: after a crash all of it is recovered or
    /// none. Returns the LSNs it took. Nothing is written if any entry is too large.
    pub fn append_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<Range<u64>> {
        self.shared.append(payloads, true)
    }

    /// Appends a batch like [`Wal::append_batch`] but returns without waiting for
    /// durability, even under [`SyncPolicy::Always`]: the caller orders its own work by
    /// the LSNs, releases its locks, then calls [`Wal::wait_durable`]. Concurrent
    /// callers then share one fsync instead of queueing behind each other's.
    pub fn append_batch_deferred<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<Range<u64>> {
        self.shared.append(payloads, false)
    }

    /// Returns once every LSN below `lsn` is durable (group commit: see the module
    /// documentation). Entries not yet written are written first.
    pub fn wait_durable(&self, lsn: u64) -> Result<()> {
        let st = lock(&self.shared.state);
        self.shared.wait_durable(st, lsn)
    }

    /// A future that resolves once every LSN below `lsn` is durable, syncing as needed
    /// (under any policy), without holding a thread while it waits: the way for tasks
    /// of an async runtime to wait for durability. Concurrent waits share one fsync, as
    /// [`Wal::wait_durable`]'s group commit does; a thread of the log's own syncs for
    /// them. Fails with [`Error::LsnOutOfRange`] for an LSN past the end of the log,
    /// with the cause when the log is poisoned, with [`Error::Closed`] when the log
    /// shuts down before `lsn` is durable.
    pub fn durable(&self, lsn: u64) -> WaitDurable {
        let st = lock(&self.shared.state);
        let refused = (lsn > st.next_lsn).then(|| Error::LsnOutOfRange {
            requested: lsn,
            first: st.segments.first().map_or(st.next_lsn, |s| s.first_lsn),
            next: st.next_lsn,
        });
        drop(st);
        WaitDurable::new(self.shared.clone(), lsn, refused)
    }

    /// Appends a batch as [`Wal::append_batch`] does (one atomic frame) and returns a
    /// future of its LSNs that resolves when `append_batch` would return: once they are
    /// durable under [`SyncPolicy::Always`] (see [`Wal::durable`]: the waiting task
    /// holds no thread), at once under the other policies (the frame is written when
    /// this returns). The entries are appended whether or not the future is awaited;
    /// it is `Send + 'static`.
    pub fn append_batch_async<P: AsRef<[u8]>>(&self, payloads: &[P]) -> AppendDurable {
        if !matches!(self.shared.opts.sync, SyncPolicy::Always) {
            return AppendDurable::new(self.shared.append(payloads, true), None);
        }
        match self.shared.append(payloads, false) {
            Ok(range) => {
                let wait = WaitDurable::new(self.shared.clone(), range.end, None);
                AppendDurable::new(Ok(range), Some(wait))
            }
            Err(e) => AppendDurable::new(Err(e), None),
        }
    }

    /// [`Wal::append_batch_async`] of one entry; resolves to its LSN.
    pub fn append_async(
        &self,
        payload: &[u8],
    ) -> impl std::future::Future<Output = Result<u64>> + Send + 'static + use<> {
        let append = self.append_batch_async(&[payload]);
        async move { append.await.map(|r| r.start) }
    }

    /// Makes every entry appended so far durable.
    pub fn sync(&self) -> Result<()> {
        self.shared.sync_all()
    }

    /// Declares entries below `lsn` no longer needed: every segment wholly below it is
    /// deleted. When `lsn` is at or past the end of the log, a fresh segment starting
    /// at `lsn` replaces all others, so LSNs continue from `lsn` even after a restart.
    pub fn checkpoint(&self, lsn: u64) -> Result<()> {
        self.shared.checkpoint(lsn)
    }

    /// Iterates the entries from `lsn` to the last one written to the file now.
    pub fn read_from(&self, lsn: u64) -> Result<WalReader> {
        let st = lock(&self.shared.state);
        let first = st.segments.first().map_or(st.next_lsn, |s| s.first_lsn);
        if lsn < first || lsn > st.next_lsn {
            return Err(Error::LsnOutOfRange {
                requested: lsn,
                first,
                next: st.next_lsn,
            });
        }
        let mut segments = st.segments.clone();
        if let Some(active) = segments.last_mut() {
            active.bytes = st.written;
        }
        Ok(WalReader::new(
            self.shared.fs.clone(),
            self.shared.dir.clone(),
            segments,
            lsn,
            st.written_lsn,
            self.shared.opts.frame_bytes_max,
        ))
    }

    /// LSN the next append will get.
    pub fn next_lsn(&self) -> u64 {
        lock(&self.shared.state).next_lsn
    }

    /// Every LSN below this one is durable.
    pub fn durable_lsn(&self) -> u64 {
        lock(&self.shared.state).synced_lsn
    }

    /// Oldest LSN the log holds.
    pub fn first_lsn(&self) -> u64 {
        let st = lock(&self.shared.state);
        st.segments.first().map_or(st.next_lsn, |s| s.first_lsn)
    }

    /// Sizes and counters.
    pub fn stats(&self) -> WalStats {
        let st = lock(&self.shared.state);
        WalStats {
            first_lsn: st.segments.first().map_or(st.next_lsn, |s| s.first_lsn),
            next_lsn: st.next_lsn,
            durable_lsn: st.synced_lsn,
            segments: st.segments.len(),
            total_bytes: st.segments.iter().map(|s| s.bytes).sum(),
            fsyncs: st.fsyncs,
            entries_appended: st.entries_appended,
            poisoned: self.shared.poison_cause.get().is_some(),
        }
    }

    /// Syncs and closes the log, reporting a failure of that last sync.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let result = {
            let st = lock(&self.shared.state);
            if st.closed {
                Ok(())
            } else if let Some(cause) = self.shared.poison_cause.get() {
                Err(poisoned(cause))
            } else {
                let target = st.next_lsn;
                self.shared
                    .wait_durable(st, target)
                    .and_then(|()| self.shared.trim_active())
            }
        };
        lock(&self.shared.state).closed = true;
        // waiting tasks fail from now on (those whose entries the sync above made
        // durable resolve Ok), and the sync thread stops
        self.shared.shut.store(true, Ordering::SeqCst);
        self.shared.wake_all_tasks();
        let syncer = self
            .shared
            .syncer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = syncer {
            handle.thread().unpark();
            let _ = handle.join();
        }
        self.shared.tick.notify_all();
        self.shared.synced.notify_all();
        self.shared.closer.notify_all();
        for handle in [self.flusher.take(), self.closer.take()]
            .into_iter()
            .flatten()
        {
            let _ = handle.join();
        }
        result
    }
}

impl Drop for Wal {
    /// Closes the log, syncing what was written (errors are ignored: call
    /// [`Wal::close`] to see them).
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

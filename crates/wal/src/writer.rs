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

use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::Waker;
use std::thread::{JoinHandle, Thread};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::frame;
use crate::fs::{Fs, FsFile, RealFs};
use crate::options::{SegmentClose, SyncPolicy, WalOptions};
use crate::reader::WalReader;
use crate::recovery::{RecoveryReport, SegmentMeta, recover};
use crate::segment::{
    FLAG_CHECKPOINT_BASE, SEGMENT_HEADER_BYTES, SegmentHeader, create_segment, pending_name,
    segment_name,
};
use crate::waiting::{AppendDurable, Tasks, WaitDurable, lock_tasks, sync_for_tasks};

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

/// A closed segment to trim and fsync, and the pending segment after it to rename
/// once it is durable.
#[derive(Clone)]
struct CloseJob {
    old: Arc<dyn FsFile>,
    old_first: u64,
    old_bytes: u64,
    new: Arc<dyn FsFile>,
    new_first: u64,
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
    /// Tasks waiting for an LSN to be durable (see the `waiting` module).
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

/// Writes zeros over `range` of `file`, a bounded buffer at a time (a frame to undo
/// can be as large as `frame_bytes_max`).
fn write_zeros(file: &dyn FsFile, range: Range<u64>) -> std::io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut at = range.start;
    while at < range.end {
        let n = (range.end - at).min(ZEROS.len() as u64);
        file.write_at(&ZEROS[..n as usize], at)?;
        at += n;
    }
    Ok(())
}

/// Threads to wake, and tasks, woken when this is run or dropped (after the lock is
/// released).
struct Unpark(Vec<std::thread::Thread>, Vec<Waker>);

impl Unpark {
    fn run(&mut self) {
        self.0.drain(..).for_each(|t| t.unpark());
        self.1.drain(..).for_each(Waker::wake);
    }

    /// Wakes the first two threads and leaves the others in `backlog` for them: a
    /// leader about to fsync again does not spend the time of a wake-up per
    /// follower (and the followers' CPU) before it starts, and the first woken
    /// thread wakes the rest while the fsync runs.
    fn hand_over(&mut self, backlog: &Mutex<Vec<Thread>>) {
        if self.0.len() > 2 {
            let rest = self.0.split_off(2);
            backlog
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(rest);
        }
        self.run();
    }
}

/// Wakes every thread left in `backlog` by [`Unpark::hand_over`].
fn drain_backlog(backlog: &Mutex<Vec<Thread>>) {
    let threads = std::mem::take(&mut *backlog.lock().unwrap_or_else(PoisonError::into_inner));
    threads.into_iter().for_each(|t| t.unpark());
}

impl Drop for Unpark {
    fn drop(&mut self) {
        self.run();
    }
}

fn poisoned(cause: &str) -> Error {
    Error::Poisoned {
        cause: cause.to_owned(),
    }
}

impl Shared {
    /// Every LSN below this one is durable (read without the lock).
    pub(crate) fn durable_lsn_now(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }

    /// True once the log is poisoned (read without the lock).
    pub(crate) fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// The error every call of a poisoned log returns.
    pub(crate) fn poison_error(&self) -> Error {
        match self.poison_cause.get() {
            Some(cause) => poisoned(cause),
            None => Error::Closed,
        }
    }

    /// Makes every entry appended so far durable ([`Wal::sync`], and the sync
    /// thread's sync).
    pub(crate) fn sync_all(&self) -> Result<()> {
        let st = self.writable()?;
        let target = st.next_lsn;
        self.wait_durable(st, target)
    }

    /// Wakes every waiting task (on poison and shutdown: each then finds why).
    fn wake_all_tasks(&self) {
        let mut woken = Vec::new();
        lock_tasks(&self.tasks).take_covered(None, &mut woken);
        woken.into_iter().for_each(Waker::wake);
    }

    /// Asks the sync thread for a sync covering every LSN below `lsn` (starting the
    /// thread the first time).
    pub(crate) fn want_durable(self: &Arc<Self>, lsn: u64) -> Result<()> {
        self.wanted.fetch_max(lsn, Ordering::SeqCst);
        if let Some(thread) = self.syncer_thread.get() {
            if self.syncer_idle.load(Ordering::SeqCst) {
                thread.unpark();
            }
            return Ok(());
        }
        let mut slot = self.syncer.lock().unwrap_or_else(PoisonError::into_inner);
        if self.shut.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        if slot.is_none() {
            let shared = Arc::clone(self);
            let handle = std::thread::Builder::new()
                .name("wal-syncer".to_owned())
                .spawn(move || sync_for_tasks(&shared))
                .map_err(|e| Error::io("start a sync thread for", &self.dir, e))?;
            let _ = self.syncer_thread.set(handle.thread().clone());
            *slot = Some(handle);
        }
        Ok(())
    }

    fn writable(&self) -> Result<MutexGuard<'_, State>> {
        let st = lock(&self.state);
        if let Some(cause) = self.poison_cause.get() {
            return Err(poisoned(cause));
        }
        if st.closed {
            return Err(Error::Closed);
        }
        Ok(st)
    }

    fn active_path(&self, st: &State) -> PathBuf {
        match st.segments.last() {
            Some(s) if s.pending => self.dir.join(pending_name(s.first_lsn)),
            Some(s) => self.dir.join(segment_name(s.first_lsn)),
            None => self.dir.clone(),
        }
    }

    fn poison(&self, st: &mut State, cause: String) -> Error {
        let _ = self.poison_cause.set(cause.clone());
        self.failed.store(true, Ordering::SeqCst);
        for (_, thread) in st.waiters.drain(..) {
            thread.unpark();
        }
        self.wake_all_tasks();
        self.synced.notify_all();
        self.closer.notify_all();
        Error::Poisoned { cause }
    }

    /// Publishes a new durable LSN: wakes every parked waiter it covers, and one
    /// other waiter to lead the next group commit when nothing is in the way.
    fn advance_durable(&self, st: &mut State, lsn: u64) {
        let mut wake = Unpark(Vec::new(), Vec::new());
        self.advance_durable_deferred(st, lsn, &mut wake);
    }

    /// [`Self::advance_durable`], leaving the wake-ups to `wake`, which the caller
    /// runs once it has released the lock: the woken threads then do not pile up on
    /// a lock still held while the others are woken.
    fn advance_durable_deferred(&self, st: &mut State, lsn: u64, wake: &mut Unpark) {
        st.synced_lsn = st.synced_lsn.max(lsn);
        let synced = st.synced_lsn;
        self.durable.store(synced, Ordering::SeqCst);
        lock_tasks(&self.tasks).take_covered(Some(synced), &mut wake.1);
        let mut lead = !st.syncing && st.closing.is_empty();
        st.waiters.retain(|(target, thread)| {
            if *target <= synced || std::mem::take(&mut lead) {
                wake.0.push(thread.clone());
                false
            } else {
                true
            }
        });
        self.synced.notify_all();
    }

    /// Cuts the active segment's preallocated space off (on close), durably.
    fn trim_active(&self) -> Result<()> {
        let mut st = lock(&self.state);
        if st.allocated > st.written {
            let path = self.active_path(&st);
            let written = st.written;
            st.active
                .set_len(written)
                .and_then(|()| st.active.sync_data())
                .map_err(|e| Error::io("trim", path, e))?;
            st.allocated = written;
        }
        Ok(())
    }

    /// Extends the active file so `end` fits, a preallocation step at a time.
    fn ensure_allocated(&self, st: &mut State, end: u64) -> std::io::Result<()> {
        if end <= st.allocated {
            return Ok(());
        }
        // Zeros are written, not a hole left by `set_len`: writing into a hole makes
        // each commit's fdatasync also commit the file system's journal (block
        // allocation). Written zeros are allocated once per step, with the next
        // fdatasync, and later commits in the step flush their data only. Under every
        // policy, frames then overwrite pages already in the page cache: one aligned
        // 1 MiB write of zeros plus overwrites costs less than extending the file
        // frame by frame, whose writes end mid-page (measured: 1.6-1.7x the MB/s of
        // 16 KiB frames). Recovery reads the zeros as the end of the log, as it reads
        // a hole.
        let step = PREALLOCATE_BYTES_MAX.min(self.opts.segment_bytes_max);
        let target = end.div_ceil(step) * step;
        write_zeros(&*st.active, st.allocated.max(st.written)..target)?;
        st.allocated = target;
        Ok(())
    }

    fn append<P: AsRef<[u8]>>(&self, payloads: &[P], wait: bool) -> Result<Range<u64>> {
        let max = self.opts.entry_bytes_max;
        if let Some(p) = payloads.iter().find(|p| p.as_ref().len() as u64 > max) {
            return Err(Error::EntryTooLarge {
                len: p.as_ref().len() as u64,
                max,
            });
        }
        let frame_len = frame::frame_bytes(payloads);
        if frame_len > self.opts.frame_bytes_max {
            return Err(Error::BatchTooLarge {
                entries: payloads.len(),
                bytes: frame_len,
                max: self.opts.frame_bytes_max,
            });
        }
        let mut st = self.writable()?;
        if payloads.is_empty() {
            return Ok(st.next_lsn..st.next_lsn);
        }
        let active_bytes = st.segments.last().map_or(0, |s| s.bytes);
        if active_bytes > SEGMENT_HEADER_BYTES as u64
            && active_bytes + frame_len > self.opts.segment_bytes_max
        {
            st = self.write_queued(st)?;
            self.rotate(&mut st)?;
        }
        let first = st.next_lsn;
        let count = payloads.len() as u64;
        if self.opts.sync == SyncPolicy::Always {
            // queue the frame; the group-commit leader writes it
            frame::encode(first, payloads, &mut st.queued);
        } else {
            self.write_frame(&mut st, first, payloads, frame_len)?;
        }
        if let Some(last) = st.segments.last_mut() {
            last.bytes += frame_len;
        }
        st.next_lsn += count;
        st.entries_appended += count;
        let range = first..st.next_lsn;
        if wait && self.opts.sync == SyncPolicy::Always {
            self.wait_durable(st, range.end)?;
        }
        Ok(range)
    }

    /// Writes one frame at the end of the active segment (policies other than
    /// `Always`). A failed write is zeroed back out and takes no LSN; if even that
    /// fails, the log is poisoned.
    fn write_frame<P: AsRef<[u8]>>(
        &self,
        st: &mut State,
        first: u64,
        payloads: &[P],
        frame_len: u64,
    ) -> Result<()> {
        let mut buf = std::mem::take(&mut st.scratch);
        buf.clear();
        frame::encode(first, payloads, &mut buf);
        let at = st.written;
        let result = self
            .ensure_allocated(st, at + frame_len)
            .and_then(|()| st.active.write_at(&buf, at));
        st.scratch = buf;
        if let Err(e) = result {
            let path = self.active_path(st);
            if let Err(undo) = write_zeros(&*st.active, at..at + frame_len) {
                let cause = format!(
                    "a failed write to {} ({e}) could not be undone ({undo})",
                    path.display()
                );
                return Err(self.poison(st, cause));
            }
            return Err(Error::io("append to", path, e));
        }
        st.written = at + frame_len;
        st.written_lsn = first + payloads.len() as u64;
        Ok(())
    }

    /// Writes the frames queued for group commit, waiting for a running leader
    /// first so frames stay in LSN order.
    fn write_queued<'a>(&'a self, mut st: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>> {
        while st.syncing {
            st = self.synced.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        if let Some(cause) = self.poison_cause.get() {
            return Err(poisoned(cause));
        }
        if st.queued.is_empty() {
            return Ok(st);
        }
        let buf = std::mem::take(&mut st.queued);
        let at = st.written;
        let result = self
            .ensure_allocated(&mut st, at + buf.len() as u64)
            .and_then(|()| st.active.write_at(&buf, at));
        if let Err(e) = result {
            let cause = format!("write to {} failed: {e}", self.active_path(&st).display());
            return Err(self.poison(&mut st, cause));
        }
        st.written = at + buf.len() as u64;
        st.written_lsn = st.next_lsn;
        st.queued = buf;
        st.queued.clear();
        Ok(st)
    }

    /// Group commit: returns once every LSN below `target` is durable. The first
    /// waiter that finds no sync running becomes the leader: it writes every queued
    /// frame and fsyncs, outside the lock. The others park (no lock held, no
    /// thundering herd) until a leader's sync covers them, or until woken to lead.
    fn wait_durable<'a>(&'a self, st: MutexGuard<'a, State>, target: u64) -> Result<()> {
        // threads a finished sync covers, woken once the lock is released (declared
        // before the guard, so it runs after the guard is dropped on return)
        let mut wake = Unpark(Vec::new(), Vec::new());
        let mut st = st;
        // A leader whose own entries are durable commits the frames queued meanwhile
        // once more before returning: the next group starts without waiting for a
        // parked thread to be scheduled.
        let mut extra_rounds = 1;
        loop {
            if let Some(cause) = self.poison_cause.get() {
                return Err(poisoned(cause));
            }
            if st.synced_lsn >= target {
                let lead_again = extra_rounds > 0
                    && !st.queued.is_empty()
                    && !st.syncing
                    && st.closing.is_empty();
                if !lead_again {
                    return Ok(());
                }
                extra_rounds -= 1;
            }
            // the active segment's LSNs are durable only once every segment before it
            // is, and it has its final name: the closer's work comes first
            if st.syncing || !st.closing.is_empty() {
                st.waiters.push((target, std::thread::current()));
                drop(st);
                wake.run();
                // A woken thread wakes the threads a leader left behind (see
                // `Unpark::hand_over`), on every way out: before the first look
                // (woken before it parked) and after each park.
                drain_backlog(&self.backlog);
                loop {
                    if self.durable.load(Ordering::SeqCst) >= target {
                        return Ok(());
                    }
                    if self.failed.load(Ordering::Acquire) {
                        break;
                    }
                    std::thread::park();
                    drain_backlog(&self.backlog);
                    // woken to lead, or spuriously: look again under the lock
                    if self.durable.load(Ordering::SeqCst) < target {
                        break;
                    }
                }
                st = lock(&self.state);
                let me = std::thread::current().id();
                st.waiters.retain(|(_, t)| t.id() != me);
                continue;
            }
            st.syncing = true;
            let buf = std::mem::take(&mut st.queued);
            let at = st.written;
            let upto = st.next_lsn;
            let file = st.active.clone();
            if let Err(e) = self.ensure_allocated(&mut st, at + buf.len() as u64) {
                st.syncing = false;
                let cause = format!("extending {} failed: {e}", self.active_path(&st).display());
                return Err(self.poison(&mut st, cause));
            }
            drop(st);
            wake.hand_over(&self.backlog);
            let started = Instant::now();
            let result = if buf.is_empty() {
                Ok(())
            } else {
                file.write_at(&buf, at)
            }
            .and_then(|()| file.sync_data());
            if let (Ok(()), Some(observer)) = (&result, &self.opts.on_fsync) {
                (observer.0)(started.elapsed());
            }
            st = lock(&self.state);
            st.syncing = false;
            match result {
                Ok(()) => {
                    // Under policies other than `Always` frames are written at append
                    // time, also while this sync ran: `written` is theirs to advance,
                    // and moving it back here would let the next frame overwrite them.
                    if !buf.is_empty() {
                        st.written = at + buf.len() as u64;
                        st.written_lsn = upto;
                    }
                    st.fsyncs += 1;
                    if st.queued.is_empty() {
                        st.queued = buf;
                        st.queued.clear();
                    }
                    self.advance_durable_deferred(&mut st, upto, &mut wake);
                }
                Err(e) => {
                    let cause = format!(
                        "write or fsync of {} failed: {e}",
                        self.active_path(&st).display()
                    );
                    return Err(self.poison(&mut st, cause));
                }
            }
        }
    }

    /// Starts a new segment after the active one (whose frames are all written). It is
    /// created under its pending name; closing the old one renames it.
    fn rotate(&self, st: &mut State) -> Result<()> {
        let first = st.next_lsn;
        let path = self.dir.join(pending_name(first));
        let header = SegmentHeader {
            first_lsn: first,
            flags: 0,
        };
        let file = self
            .fs
            .create(&path)
            .and_then(|f| f.write_at(&header.encode(), 0).map(|()| f))
            .map_err(|e| {
                let _ = self.fs.remove(&path);
                Error::io("create", &path, e)
            })?;
        let old_first = st.segments.last().map_or(first, |s| s.first_lsn);
        st.closing.push_back(CloseJob {
            old: std::mem::replace(&mut st.active, file.clone()),
            old_first,
            old_bytes: st.written,
            new: file,
            new_first: first,
        });
        st.written = SEGMENT_HEADER_BYTES as u64;
        st.allocated = SEGMENT_HEADER_BYTES as u64;
        st.segments.push(SegmentMeta {
            first_lsn: first,
            bytes: SEGMENT_HEADER_BYTES as u64,
            pending: true,
        });
        if self.opts.segment_close == SegmentClose::Inline {
            while let Some(job) = st.closing.front().cloned() {
                if let Err(cause) = self.close_job(&job) {
                    return Err(self.poison(st, cause));
                }
                self.finish_job(st, &job);
            }
        } else {
            self.closer.notify_all();
        }
        Ok(())
    }

    /// Waits until the closer has no work left (or the log is poisoned).
    fn drain_closing<'a>(&'a self, mut st: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>> {
        while !st.closing.is_empty() {
            if let Some(cause) = self.poison_cause.get() {
                return Err(poisoned(cause));
            }
            st = self.synced.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        Ok(st)
    }

    /// The closer thread: closes segments in order (see [`Shared::close_job`]).
    fn close_segments(&self) {
        let mut st = lock(&self.state);
        loop {
            if self.poison_cause.get().is_some() {
                return;
            }
            let Some(job) = st.closing.front().cloned() else {
                if st.closed {
                    return;
                }
                st = self.closer.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            drop(st);
            let result = self.close_job(&job);
            st = lock(&self.state);
            if let Err(cause) = result {
                self.poison(&mut st, cause);
                return;
            }
            self.finish_job(&mut st, &job);
        }
    }

    /// Trims the closed segment's preallocation and fsyncs it, fsyncs the pending
    /// segment after it, gives that one its final name, fsyncs the directory.
    fn close_job(&self, job: &CloseJob) -> std::result::Result<(), String> {
        let old_path = self.dir.join(segment_name(job.old_first));
        let pending = self.dir.join(pending_name(job.new_first));
        let done = self.dir.join(segment_name(job.new_first));
        job.old
            .set_len(job.old_bytes)
            .and_then(|()| job.old.sync_data())
            .map_err(|e| format!("closing {} failed: {e}", old_path.display()))?;
        job.new
            .sync_data()
            .map_err(|e| format!("fsync of {} failed: {e}", pending.display()))?;
        self.fs
            .rename(&pending, &done)
            .map_err(|e| format!("renaming {} failed: {e}", pending.display()))?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| format!("fsync of directory {} failed: {e}", self.dir.display()))
    }

    fn finish_job(&self, st: &mut State, job: &CloseJob) {
        st.closing.pop_front();
        st.fsyncs += 2;
        if let Some(meta) = st
            .segments
            .iter_mut()
            .find(|m| m.first_lsn == job.new_first)
        {
            meta.pending = false;
        }
        self.advance_durable(st, job.new_first);
    }

    fn checkpoint(&self, lsn: u64) -> Result<()> {
        let st = self.writable()?;
        let st = self.write_queued(st)?;
        let mut st = self.drain_closing(st)?;
        let active_has_entries = st
            .segments
            .last()
            .is_some_and(|s| s.bytes > SEGMENT_HEADER_BYTES as u64);
        if lsn > st.next_lsn || (lsn == st.next_lsn && active_has_entries) {
            // every older segment is obsolete: the new one starts the log on its own
            let header = SegmentHeader {
                first_lsn: lsn,
                flags: FLAG_CHECKPOINT_BASE,
            };
            st.active = create_segment(self.fs.as_ref(), &self.dir, header)?;
            st.segments.push(SegmentMeta {
                first_lsn: lsn,
                bytes: SEGMENT_HEADER_BYTES as u64,
                pending: false,
            });
            st.written = SEGMENT_HEADER_BYTES as u64;
            st.allocated = SEGMENT_HEADER_BYTES as u64;
            st.next_lsn = lsn;
            st.written_lsn = lsn;
            self.advance_durable(&mut st, lsn);
        }
        let mut removed = false;
        while st.segments.len() > 1 && st.segments[1].first_lsn <= lsn {
            let path = self.dir.join(segment_name(st.segments[0].first_lsn));
            self.fs
                .remove(&path)
                .map_err(|e| Error::io("remove checkpointed segment", &path, e))?;
            st.segments.remove(0);
            removed = true;
        }
        if removed {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("fsync directory", &self.dir, e))?;
        }
        Ok(())
    }

    fn flush_every(&self) {
        let SyncPolicy::Interval(every) = self.opts.sync else {
            return;
        };
        let mut st = lock(&self.state);
        loop {
            if st.closed {
                return;
            }
            st = self
                .tick
                .wait_timeout(st, every)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if st.closed || self.poison_cause.get().is_some() {
                return;
            }
            if st.synced_lsn < st.next_lsn && !st.syncing {
                let target = st.next_lsn;
                // a failure poisons the log; writers see it on their next call
                let _ = self.wait_durable(st, target);
                st = lock(&self.state);
            }
        }
    }
}

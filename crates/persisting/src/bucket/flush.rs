//! The one owner of a bucket's flushes: a task per bucket that starts commits when
//! the policy says so, learns their outcome, checkpoints the WAL, frees room for
//! waiting puts, paces flushes by `flush_interval` and retries failed ones with a
//! backoff. `flush()` (and `close`, `compact`, a group commit without a WAL) drive
//! the same step themselves, so its error reaches them.
//!
//! Invariants:
//! - nothing waits for a running commit while holding the bucket: the commit runs on
//!   its own task, its end is signalled (`LanceBucket::flush_ends`), and only then is
//!   the bucket taken to apply it; puts, reads and stats go on meanwhile;
//! - the WAL is checkpointed to Lance's persisted count, never past it, and only
//!   after the commit that made it durable was applied;
//! - a commit takes every record buffered when it starts: while one runs, puts buffer
//!   on, and the next takes them all (commits grow with the load; their size is
//!   bounded by `max_unflushed_bytes`);
//! - one error policy: a failed flush keeps its records buffered (and in the WAL),
//!   stats show the error and since when, the owner retries after a backoff (100 ms
//!   doubling to 5 s) until one goes through, and a `flush()` reports its own
//!   attempt's error.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use persisting_lance::{FlushReport, LanceBucket, LogSize};
use tokio::sync::{Notify, watch};

use super::retain::RetentionLooks;
use super::{PersistingBackend, blocking};
use crate::error::Result;

/// The first wait before a failed flush is retried; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);

/// The longest wait between retries of a failing flush.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How a failure of the retention step starts, in stats.
const RETENTION_FAILED: &str = "retention: ";

/// A flush is due once this share of `max_unflushed_bytes` waits (so that puts find
/// room again before they reach the bound).
const BYTES_DUE_SHARE: u64 = 2;

/// What the flush owner shares with the bucket's handles.
pub(super) struct Flusher {
    /// Wakes the owner task: a put made a flush due or waits for room; the bucket
    /// closed or dropped.
    wake: Arc<Notify>,
    /// While flushes fail: the last error, and when the failures began.
    failing: Mutex<Option<(String, Instant)>>,
    /// Counts the commits applied (each may free room): puts waiting for room watch it.
    applied: watch::Sender<u64>,
    /// The persisted count the WAL was last checkpointed to.
    checkpointed: AtomicU64,
    /// Lance's persisted count at the last [`PersistingBackend::applied`]: a commit the
    /// Lance layer applied on its own (a trim or a snapshot catching up first) is
    /// applied here by the owner's next step.
    applied_to: AtomicU64,
    /// `flush()` calls driving flushes themselves: the owner leaves the outcomes of
    /// commits to them meanwhile, so that each learns its own attempt's error.
    driven: AtomicUsize,
    /// Puts waiting for room: while any waits, the owner flushes everything buffered,
    /// due or not (a bound may be reached before the policy's thresholds).
    waiting: AtomicUsize,
}

/// Which flush a step starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The one the policy makes due (threshold, interval, WAL size, bytes waiting).
    Due,
    /// One of everything buffered (`flush()`, and retries after a failure).
    All,
}

impl Flusher {
    /// The owner's shared state for a bucket opened with `persisted` records in Lance.
    pub(super) fn new(persisted: u64) -> Self {
        Self {
            wake: Arc::new(Notify::new()),
            failing: Mutex::new(None),
            applied: watch::Sender::new(0),
            checkpointed: AtomicU64::new(persisted),
            applied_to: AtomicU64::new(persisted),
            driven: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Wakes the owner (a put made a flush due).
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Counts a put waiting for room until the guard drops, and wakes the owner.
    pub(super) fn wait_for_room(&self) -> impl Drop + '_ {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.wake();
        scopeguard(|| {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        })
    }

    /// Tells the owner to look again: the bucket is closed or gone.
    pub(super) fn stop(&self) {
        self.wake.notify_one();
    }

    /// A receiver told each time a commit is applied (room may have been freed).
    pub(super) fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// While flushes fail: the last error and how long they have failed.
    pub(super) fn failing(&self) -> Option<(String, Duration)> {
        self.failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(e, since)| (e.clone(), since.elapsed()))
    }

    /// Keeps a failure for stats (the first of a run of them gives the time they
    /// began) and passes the outcome on.
    fn noted<T>(&self, outcome: persisting_lance::Result<T>) -> Result<T> {
        if let Err(e) = &outcome {
            self.note_failure(&e.to_string());
        }
        Ok(outcome?)
    }

    /// Forgets the failure kept for stats if it is one whose message starts with
    /// `prefix` (a step that failed before has gone through).
    fn clear_failure(&self, prefix: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if failing.as_ref().is_some_and(|(e, _)| e.starts_with(prefix)) {
            *failing = None;
        }
    }

    /// Keeps a failure of the owner's work for stats.
    fn note_failure(&self, error: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        let since = failing.as_ref().map_or_else(Instant::now, |(_, t)| *t);
        *failing = Some((error.to_owned(), since));
    }
}

/// The owner's wait between failed attempts.
#[derive(Debug, Default)]
struct Backoff {
    /// The next retry, and the wait before it, while flushes fail.
    next: Option<(Instant, Duration)>,
}

impl Backoff {
    fn failed(&mut self) {
        let wait = self
            .next
            .map_or(RETRY_FIRST, |(_, w)| (w * 2).min(RETRY_MAX));
        self.next = Some((Instant::now() + wait, wait));
    }

    fn succeeded(&mut self) {
        self.next = None;
    }

    fn retry_at(&self) -> Option<Instant> {
        self.next.map(|(at, _)| at)
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl PersistingBackend {
    /// Starts the bucket's flush owner: a task that wakes when a put makes a flush
    /// due or waits for room, when a commit ends (`ends`), at a quarter of
    /// `flush_interval` while records wait, and at each retry of a failing flush.
    /// It holds the bucket only while it works, and ends with the bucket or its close.
    pub(super) fn own_flushes(&self, mut ends: watch::Receiver<u64>) {
        let handle = Arc::downgrade(&self.inner);
        let wake = Arc::clone(&self.inner.flusher.wake);
        let tick = self
            .inner
            .opts
            .flush_interval
            .map(|i| (i / 4).max(Duration::from_millis(10)));
        let age = self.inner.opts.retention_age;
        tokio::spawn(async move {
            let mut backoff = Backoff::default();
            let mut looks = RetentionLooks::default();
            loop {
                let next = backoff
                    .retry_at()
                    .or_else(|| tick.map(|t| Instant::now() + t));
                let next = match (next, looks.next(age)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                tokio::select! {
                    () = wake.notified() => {}
                    ended = ends.changed() => if ended.is_err() { return },
                    () = sleep_until(next) => {}
                }
                // one turn of work: a step, once no flush() drives the flushes
                loop {
                    // a failing store is retried at the backoff's pace, not at every put
                    if let Some(at) = backoff.retry_at() {
                        tokio::time::sleep_until(at.into()).await;
                    }
                    let Some(inner) = handle.upgrade() else {
                        return;
                    };
                    if inner.users.load(Ordering::Acquire) == 0 {
                        // every user's handle is gone (dropped without close): what
                        // waits is in the WAL, or was never promised durable
                        return;
                    }
                    let backend = PersistingBackend { inner, user: false };
                    if backend.check_open().is_err() {
                        return;
                    }
                    let flusher = &backend.inner.flusher;
                    if flusher.driven.load(Ordering::Acquire) > 0 {
                        // a flush() learns the outcomes itself, and wakes this task
                        // when it returns
                        drop(backend);
                        wake.notified().await;
                        continue;
                    }
                    // after a failure (this task's, or one a flush() saw), everything
                    // buffered is retried; and flushed while puts wait for room
                    let everything = backoff.retry_at().is_some()
                        || flusher.failing().is_some()
                        || flusher.waiting.load(Ordering::Acquire) > 0;
                    let start = match everything {
                        true => Start::All,
                        false => Start::Due,
                    };
                    let mut lance = backend.inner.lance.write().await;
                    match backend.flush_step(&mut lance, start).await {
                        Ok(()) => backoff.succeeded(),
                        Err(_) => backoff.failed(),
                    }
                    // retention after flushes (and a failing store is left alone)
                    if backoff.retry_at().is_none() && looks.due(&lance) {
                        match backend.apply_retention(&mut lance).await {
                            Ok(()) => flusher.clear_failure(RETENTION_FAILED),
                            Err(e) => flusher.note_failure(&format!("{RETENTION_FAILED}{e}")),
                        }
                    }
                    break;
                }
            }
        });
    }

    /// Makes every record buffered now (or, with `through`, those below it) durable in
    /// Lance and checkpoints the WAL to them. Waits for running commits without
    /// holding the bucket; the first failure of an attempt it made or applied is
    /// returned (the records stay buffered, and the owner retries).
    pub(super) async fn flush_through(&self, through: Option<u64>) -> Result<()> {
        let flusher = &self.inner.flusher;
        flusher.driven.fetch_add(1, Ordering::AcqRel);
        let _driven = scopeguard(|| {
            flusher.driven.fetch_sub(1, Ordering::AcqRel);
            // the owner may have left an outcome to this call
            flusher.wake();
        });
        let mut target = through;
        loop {
            let mut lance = self.inner.lance.write().await;
            let target = *target.get_or_insert_with(|| lance.total_count());
            self.flush_step(&mut lance, Start::All).await?;
            if lance.persisted_count() >= target {
                return Ok(());
            }
            // subscribed before looking, so that an end in between is seen
            let mut ends = lance.flush_ends();
            let running = lance.flush_running();
            drop(lance);
            if running {
                // an Err: the bucket is gone, and the next look says so
                let _ = ends.changed().await;
            } else {
                tokio::task::yield_now().await;
            }
        }
    }

    /// One step of the owner's work, the bucket held: applies a commit that has ended
    /// (an error is its failure), then starts the flush `start` asks for when none
    /// runs. Never waits for a running commit.
    async fn flush_step(&self, lance: &mut LanceBucket, start: Start) -> Result<()> {
        let flusher = &self.inner.flusher;
        if let Some(outcome) = lance.finished_flush().await {
            let report = flusher.noted(outcome)?;
            self.applied(lance, &report).await?;
        } else if lance.persisted_count() > flusher.applied_to.load(Ordering::Acquire) {
            // a commit the Lance layer applied itself (a trim or a snapshot catching up
            // first): its WAL checkpoint and freed room, which a waiting put needs
            self.applied(lance, &FlushReport::default()).await?;
        }
        let wanted = match start {
            Start::All => lance.unflushed_count() > 0,
            Start::Due => self.flush_due(lance, self.wal_bytes()),
        };
        if wanted && !lance.flush_running() {
            // (no commit runs: this starts one without waiting)
            if let Some(report) = flusher.noted(lance.start_flush().await)? {
                self.applied(lance, &report).await?;
            }
        }
        Ok(())
    }

    /// Whether the policy makes a flush due: Lance's (threshold, interval, WAL size),
    /// or half of `max_unflushed_bytes` waiting.
    /// `wal_bytes`: the WAL's size now ([`Self::wal_bytes`]).
    pub(super) fn flush_due(&self, lance: &LanceBucket, wal_bytes: Option<u64>) -> bool {
        let bytes = self.unflushed_bytes();
        lance.flush_due(self.log_size(wal_bytes))
            || (bytes >= self.inner.opts.max_unflushed_bytes / BYTES_DUE_SHARE
                && lance.unflushed_count() > 0)
    }

    /// After a commit made `report.persisted_count` records durable in Lance (or after
    /// anything else moved it, such as a compaction's catch-up): checkpoints the WAL
    /// to them, frees their bytes, publishes them, records the flush's metrics.
    pub(super) async fn applied(&self, lance: &LanceBucket, report: &FlushReport) -> Result<()> {
        let flusher = &self.inner.flusher;
        flusher
            .failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let persisted = lance.persisted_count();
        if let Some(wal) = self.inner.wal.clone()
            && persisted > flusher.checkpointed.load(Ordering::Acquire)
        {
            blocking("checkpoint the WAL", move || Ok(wal.checkpoint(persisted)?)).await?;
            flusher.checkpointed.fetch_max(persisted, Ordering::AcqRel);
        }
        self.inner
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(persisted);
        self.publish(persisted);
        flusher.applied_to.fetch_max(persisted, Ordering::AcqRel);
        if let Some(m) = &self.inner.metrics
            && report.records > 0
        {
            m.flushed(report.duration, lance.buffered_count(), self.wal_bytes());
        }
        flusher.applied.send_modify(|n| *n += 1);
        Ok(())
    }

    /// The WAL's size against `max_wal_size`, for the bucket's flush policy.
    pub(super) fn log_size(&self, wal_bytes: Option<u64>) -> Option<LogSize> {
        wal_bytes.map(|bytes| LogSize {
            bytes,
            bytes_max: self.inner.opts.max_wal_size,
        })
    }

    /// The WAL's size on disk, if there is a WAL.
    pub(super) fn wal_bytes(&self) -> Option<u64> {
        self.inner.wal.as_ref().map(|w| w.stats().total_bytes)
    }
}

/// Runs `f` when dropped (also when the future holding it is cancelled).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

//! The commits of a bucket's flushes: the one running on a task of its own, what its
//! outcome leaves to do, the process's register of running commits per dataset, and
//! the counters of flushes and compactions. Nothing here knows the bucket: the flush
//! code (`flush/mod.rs`) drives it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lance::Dataset;
use persisting_codec::Record;
use tokio::task::JoinHandle;

use crate::error::Result;

/// A commit refused because another one landed first: for a bucket's only writer,
/// one its own cancelled flush left running.
pub(crate) fn is_conflict(e: &lance::Error) -> bool {
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
pub(crate) fn running_commits(uri: &str) -> Arc<tokio::sync::RwLock<()>> {
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

/// Who frees the records a settled commit made durable (freeing them is the writer's
/// longest step after conversion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freed {
    /// A blocking thread, now.
    OffThread,
    /// The writer, the next time it waits for a commit: the caller starts the next
    /// commit at once (see `released`).
    WhileNextCommitRuns,
}

/// The commits of a bucket's flushes: the one running (at most one), what its
/// outcome left to do, and counters.
///
/// Invariants: the records of the last applied commit (`released`) are kept only
/// while the next one runs, so an idle bucket holds no freed records; the running
/// commit holds the process's entry for its dataset (see [`running_commits`]) until
/// its task ends, whether or not a handle waits for it.
#[derive(Debug)]
pub(crate) struct Commits {
    /// The data commit of a flush, on a task of its own: a caller who stops waiting
    /// (a timeout, a cancelled task) cannot leave it half known. The next flush waits
    /// for it and applies its outcome.
    pending: Option<PendingCommit>,
    /// Records of the last commit a background flush applied, kept only while the
    /// next commit runs: the writer frees them when it waits for that commit (time it
    /// would spend idle), or hands them to a blocking thread when it did not wait.
    released: Vec<Record>,
    /// This dataset's entry in the process's running commits.
    running: Arc<tokio::sync::RwLock<()>>,
    /// Counts the commit tasks that have ended (each sends as its last act, also when
    /// it panics or is aborted): an owner waits on it without holding the bucket.
    ended: Arc<tokio::sync::watch::Sender<u64>>,
    /// Commit tasks started by this handle.
    starts: u64,
    /// A flush stopped part way or failed after Lance may have committed (schema
    /// changes, or records): the next flush reloads the dataset and counts what landed.
    pub(crate) outcome_unknown: bool,
    /// Flushes since open.
    pub(crate) flushes: u64,
    /// Compactions since open.
    pub(crate) compactions: u64,
    /// Duration of the last flush.
    pub(crate) last_flush: Option<Duration>,
}

impl Commits {
    /// The commits of the dataset at `uri` (none running).
    pub(crate) fn new(uri: &str) -> Self {
        Self {
            pending: None,
            released: Vec::new(),
            running: running_commits(uri),
            ended: Arc::new(tokio::sync::watch::Sender::new(0)),
            starts: 0,
            outcome_unknown: false,
            flushes: 0,
            compactions: 0,
            last_flush: None,
        }
    }

    /// Waits until every commit of this dataset started in this process (by an
    /// earlier handle too) has ended.
    pub(crate) async fn wait_for_running(&self) {
        drop(self.running.write().await);
    }

    /// Enters a commit: a handle opened on this dataset in this process meanwhile
    /// waits until the guard drops (with the commit's task).
    pub(crate) async fn enter(&self) -> tokio::sync::OwnedRwLockReadGuard<()> {
        Arc::clone(&self.running).read_owned().await
    }

    /// A receiver told each time a commit task ends (the count of ended tasks).
    pub(crate) fn ends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ended.subscribe()
    }

    /// What a commit task keeps to say that it ended.
    pub(crate) fn end_signal(&self) -> EndSignal {
        EndSignal(Arc::clone(&self.ended))
    }

    /// Whether a commit runs (or has ended and is not applied yet).
    pub(crate) fn running(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether a commit has ended and waits to be applied: its task is finished, or
    /// has sent its end (the send comes a moment before the task is marked finished;
    /// joining it then waits no longer than that moment).
    pub(crate) fn finished(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|c| c.handle.is_finished() || *self.ended.borrow() >= c.seq)
    }

    /// Buffered records the running commit, if any, holds (the front of the buffer).
    pub(crate) fn holding(&self) -> usize {
        self.pending.as_ref().map_or(0, |c| c.records)
    }

    /// Records a commit of the first `records` buffered records started on `handle`.
    pub(crate) fn started(&mut self, records: usize, handle: JoinHandle<CommitOutcome>) {
        debug_assert!(self.pending.is_none(), "one commit at a time");
        self.starts += 1;
        self.pending = Some(PendingCommit {
            seq: self.starts,
            records,
            handle,
            started: Instant::now(),
        });
    }

    /// Waits for the running commit, if any, and takes it. Cancel-safe: dropped while
    /// waiting, the commit stays here. Frees the records kept from the commit before.
    pub(crate) async fn join(&mut self) -> Option<Joined> {
        let pending = self.pending.as_mut()?;
        if !pending.handle.is_finished() {
            // this thread would only wait: it frees the last commit's records
            // meanwhile, rather than a thread competing with the commit for a core
            self.released = Vec::new();
        }
        let outcome = (&mut pending.handle).await;
        let pending = self.pending.take()?;
        // whatever the outcome, the records kept for this wait are not kept past it
        self.free_released();
        Some(Joined {
            records: pending.records,
            duration: pending.started.elapsed(),
            outcome,
        })
    }

    /// Counts a commit applied durable, which took `duration`, and frees its records
    /// (`flushed`) as `freed` says.
    pub(crate) fn applied(&mut self, flushed: Vec<Record>, freed: Freed, duration: Duration) {
        // freeing them is the writer's longest step after conversion: done while it
        // next waits for a commit, or off its thread
        match freed {
            Freed::WhileNextCommitRuns => self.released = flushed,
            Freed::OffThread => drop(tokio::task::spawn_blocking(move || drop(flushed))),
        }
        self.flushes += 1;
        self.outcome_unknown = false;
        self.last_flush = Some(duration);
    }

    /// Hands the records kept in `released`, if any, to a blocking thread to free.
    pub(crate) fn free_released(&mut self) {
        let records = std::mem::take(&mut self.released);
        if !records.is_empty() {
            tokio::task::spawn_blocking(move || drop(records));
        }
    }

    #[cfg(test)]
    pub(crate) fn released(&self) -> usize {
        self.released.len()
    }
}

/// Held by a commit's task: its drop (the task's end, however it ends) tells the
/// receivers of [`Commits::ends`].
pub(crate) struct EndSignal(Arc<tokio::sync::watch::Sender<u64>>);

impl Drop for EndSignal {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n += 1);
    }
}

/// A commit taken by [`Commits::join`]: the records it held, how long it ran, and
/// its task's outcome.
pub(crate) struct Joined {
    pub(crate) records: usize,
    pub(crate) duration: Duration,
    pub(crate) outcome: std::result::Result<CommitOutcome, tokio::task::JoinError>,
}

/// A flush's data commit running on its own task: the records it takes from the
/// front of the buffer, and the task's outcome (the committed dataset and the number
/// of files it fsynced).
#[derive(Debug)]
struct PendingCommit {
    /// Its place among the commits this handle started (1 for the first): it has
    /// ended once `Commits::ended` counts that many.
    seq: u64,
    records: usize,
    /// When the commit's task was started.
    started: Instant,
    handle: JoinHandle<CommitOutcome>,
}

/// What an applied commit made durable: its records, the files it fsynced, and how
/// long it ran.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Settled {
    pub(crate) records: usize,
    pub(crate) files_synced: usize,
    pub(crate) duration: Duration,
}

/// What a commit task returns: the committed dataset and the number of files it
/// fsynced.
pub(crate) type CommitOutcome = Result<(Dataset, usize)>;

//! Flushing the buffer into the dataset: one data commit at a time, on a task of its
//! own (`start_commit`), applied by the next flush or append (`settle_commit`);
//! after a flush that stopped part way, `reconcile` counts what landed. [`Commits`]
//! owns the running commit and what its outcome leaves to do.
//!
//! Invariants:
//! - at most one data commit runs; the records it commits stay buffered (and are
//!   read from the buffer) until its outcome is applied, so a cancelled or failed
//!   flush loses nothing and a retried one appends nothing twice;
//! - a flush is reported durable only once its commit, every file it wrote and
//!   their seals are fsynced (see `store`);
//! - while `outcome_unknown`, the next flush first reloads the dataset and takes the records
//!   a commit of this handle landed off the buffer.

mod compact;
pub(crate) mod parts;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::Schema as ArrowSchema;
use lance::Dataset;
use lance::dataset::WriteMode;

use persisting_codec::Record;
use tokio::task::JoinHandle;

use crate::bucket::{FlushReport, LanceBucket, has_manifest};
use crate::error::{Error, Result};
use crate::flush::parts::{append_in_parts, reader};
use crate::store::LocalFiles;

impl LanceBucket {
    /// Starts a flush of the buffer that commits in the background, as
    /// [`LanceBucket::append`] does at `flush_threshold`, for an owner that buffers
    /// with [`LanceBucket::admit`] and [`LanceBucket::buffer`]. A flush still running is waited for and
    /// applied first (compacting after it when due): its report is returned, the
    /// owner's cue that those records are durable in Lance (a WAL can be checkpointed
    /// to its `persisted_count`). An error is that flush's, or this one's start: the
    /// records stay buffered and due either way.
    pub async fn start_flush(&mut self) -> Result<Option<FlushReport>> {
        let result = self.settle_then_start().await;
        if !self.commits.running() {
            // no commit runs to be waited for: nothing stays unfreed
            self.commits.free_released();
        }
        result
    }

    /// [`Self::start_flush`], keeping the records the settled commit made durable to
    /// free while the one it starts is waited for.
    pub(crate) async fn settle_then_start(&mut self) -> Result<Option<FlushReport>> {
        let earlier = Box::pin(self.catch_up_then(Freed::WhileNextCommitRuns)).await?;
        let compacted = Box::pin(self.compact_if_due()).await?;
        let report = earlier.map(|settled| self.report(settled, compacted));
        Box::pin(self.start_commit()).await?;
        Ok(report)
    }

    /// Applies a background flush that has ended, if one has: its report, or its
    /// failure (its records then stay buffered and due). Never waits.
    pub async fn finished_flush(&mut self) -> Option<Result<FlushReport>> {
        if !self.commits.finished() {
            return None;
        }
        Some(
            self.settle_commit()
                .await
                .map(|settled| self.report(settled.unwrap_or_default(), false)),
        )
    }

    /// Whether a background flush's commit runs (or has ended and waits to be applied
    /// by [`Self::finished_flush`]).
    pub fn flush_running(&self) -> bool {
        self.commits.running()
    }

    /// A receiver told each time a background flush's commit ends, however it ends:
    /// an owner waits on it without holding the bucket, then applies the outcome with
    /// [`Self::finished_flush`]. Subscribe before checking [`Self::flush_running`], so
    /// that an end in between is not missed.
    pub fn flush_ends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.ends()
    }

    pub(crate) fn report(&self, settled: Settled, compacted: bool) -> FlushReport {
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
            self.commits.last_flush = Some(duration);
        }
        let settled = Settled {
            records,
            files_synced,
            duration,
        };
        Ok(self.report(settled, compacted))
    }

    /// Starts the commit of the whole buffer (after the schema commits it needs) on
    /// its own task; [`Self::settle_commit`] applies it. Returns false when there is
    /// nothing to commit. The handle must be caught up (no commit running, nothing
    /// outcome_unknown).
    pub(crate) async fn start_commit(&mut self) -> Result<bool> {
        if self.buffer.is_empty() {
            return Ok(false);
        }
        self.ensure_writer().await?;
        // a handle opened on this dataset in this process waits until this flush's
        // commits end (they outlive this future, and this handle)
        let running = self.commits.enter().await;
        // from here until the commit is applied, an interruption leaves Lance's state
        // unknown to this handle
        self.commits.outcome_unknown = true;
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
                    self.commits.outcome_unknown = true;
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
        let batch = self.buffer.take_batches(&schema, &self.schema)?;
        let records = self.buffer.len();
        let uri = self.uri.clone();
        let mode = if base.is_some() {
            WriteMode::Append
        } else {
            WriteMode::Create
        };
        let params = self.write_params(mode);
        let local = self.storage.local.clone();
        let parts = self.write_parts(records);
        let ended = self.commits.end_signal();
        let handle = tokio::spawn(async move {
            // dropped last (locals drop in reverse order), whatever ends the task
            let _ended = ended;
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
                Ok(ds) => sync_files(local.as_ref(), Seal::NewFiles, &uri)
                    .await
                    .map(|files| (ds, files)),
                Err(e) => Err(e),
            }
        });
        self.commits.started(records, handle);
        // every buffered record is in this commit now
        self.unflushed_since = None;
        Ok(true)
    }

    /// Waits for the running data commit, if any, and applies its outcome: on success
    /// the buffer's flushed prefix is released (records and files synced are
    /// returned); on failure the buffer stays whole and the next flush first finds out
    /// what Lance kept. Cancel-safe: the commit stays here until it is applied.
    pub(crate) async fn settle_commit(&mut self) -> Result<Option<Settled>> {
        self.settle_commit_then(Freed::OffThread).await
    }

    /// [`Self::settle_commit`], freeing the records the commit made durable as `freed`
    /// says.
    pub(crate) async fn settle_commit_then(&mut self, freed: Freed) -> Result<Option<Settled>> {
        let Some(joined) = self.commits.join().await else {
            return Ok(None);
        };
        let (records, duration) = (joined.records, joined.duration);
        let result = match joined.outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                // batches built ahead started after this commit's records
                self.buffer.forget_converted();
                // the task is gone, and with it what it knew of synced files: start
                // over (the next sync fsyncs every file once)
                if let Some(local) = &self.storage.local {
                    local.synced.forget();
                }
                self.commits.outcome_unknown = true;
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
                self.storage.versions.seen(ds.manifest().version);
                self.dataset = Some(Arc::new(ds));
                self.persisted += records as u64;
                let flushed = self.buffer.release_front(records);
                self.commits.applied(flushed, freed, duration);
                Ok(Some(Settled {
                    records,
                    files_synced,
                    duration,
                }))
            }
            Err(e) => {
                // batches built ahead started after this commit's records
                self.buffer.forget_converted();
                self.commits.outcome_unknown = true;
                // its records are unflushed again (their wait counted from now)
                self.unflushed_since
                    .get_or_insert_with(std::time::Instant::now);
                Err(e)
            }
        }
    }

    /// Brings this handle up to date with what its own earlier flushes did: applies a
    /// commit a cancelled flush left running, then, if a flush stopped part way or
    /// failed, counts what landed (see `reconcile`). Returns what the running commit
    /// made durable.
    pub(crate) async fn catch_up(&mut self) -> Result<Option<Settled>> {
        self.catch_up_then(Freed::OffThread).await
    }

    /// [`Self::catch_up`], freeing the settled commit's records as `freed` says.
    pub(crate) async fn catch_up_then(&mut self, freed: Freed) -> Result<Option<Settled>> {
        let earlier = self.settle_commit_then(freed).await?;
        if self.commits.outcome_unknown {
            self.reconcile().await?;
        }
        // a trim that stopped between its two commits lands before anything else
        Box::pin(self.finish_trim()).await?;
        Ok(earlier)
    }

    /// After a flush that stopped part way or failed: reloads the latest dataset and
    /// takes the records a commit of this handle made there off the buffer, once
    /// their files are fsynced and sealed.
    pub(crate) async fn reconcile(&mut self) -> Result<()> {
        let latest = match self.open_dataset().await {
            Ok(ds) => ds,
            Err(lance::Error::DatasetNotFound { .. }) if !has_manifest(&self.uri) => {
                self.commits.outcome_unknown = false;
                return Ok(());
            }
            Err(e) => return Err(Error::lance("reload", &self.uri)(e)),
        };
        let version = latest.manifest().version;
        if self.storage.versions.foreign(version) || !self.is_own_unsure(&latest, version).await? {
            return Err(Error::CommittedByAnotherWriter {
                dataset: self.uri.clone(),
                version,
                expected: self.storage.versions.next(),
            });
        }
        let (start, _) = crate::retention::log_start_of(&latest)?;
        let rows = start
            + latest
                .count_rows(None)
                .await
                .map_err(Error::lance("count the rows of", &self.uri))? as u64;
        let buffered = self.buffer.len() as u64;
        if rows < self.persisted || rows > self.persisted + buffered {
            return Err(Error::ChangedByAnotherWriter {
                dataset: self.uri.clone(),
                rows,
                persisted: self.persisted,
                buffered,
            });
        }
        self.storage.versions.seen(version);
        self.reads.retain_live(&latest);
        self.dataset = Some(Arc::new(latest));
        self.log_start = start;
        self.sync_files(Seal::NewFiles).await?;
        let landed = (rows - self.persisted) as usize;
        self.buffer.drop_landed(landed);
        self.persisted = rows;
        if landed > 0 {
            self.commits.flushes += 1;
        }
        self.commits.outcome_unknown = false;
        Ok(())
    }

    /// Whether the manifest at `version` of `latest` is the one this handle put there
    /// without a clear answer, read back and compared (true when no such put is
    /// pending there): the put may never have reached the store, and another writer
    /// taken the version since (its lease lost track of, a clock far off). Accepting
    /// that manifest as this handle's would take its rows for this handle's buffered
    /// records and drop them.
    async fn is_own_unsure(&self, latest: &Dataset, version: u64) -> Result<bool> {
        use object_store::ObjectStoreExt;
        let Some(sent) = self.storage.versions.sent_at(version) else {
            return Ok(true);
        };
        let store = latest
            .object_store(None)
            .await
            .map_err(Error::lance("reach", &self.uri))?;
        let read = Error::store("read back the manifest of", &self.uri);
        let bytes = store
            .inner
            .get(&sent.location)
            .await
            .map_err(&read)?
            .bytes()
            .await
            .map_err(&read)?;
        Ok(sent.matches(&bytes))
    }

    /// fsyncs the files of the dataset not fsynced yet, sealing the new data files
    /// among them as `seal` says. Returns how many files were fsynced.
    pub(crate) async fn sync_files(&mut self, seal: Seal) -> Result<usize> {
        sync_files(self.storage.local.as_ref(), seal, &self.uri).await
    }
}

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

/// Whether a sync seals the new data files it fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seal {
    /// Seals them: this handle wrote them (a commit, a compaction, a reconcile
    /// taking its own landed commit).
    NewFiles,
    /// Leaves them unsealed: found at open, written by a handle a crash cut before
    /// its seal (read unverified, rows still checked).
    Nothing,
}

/// fsyncs the files of a local dataset not fsynced yet (`local` tracks them; `None`:
/// a remote dataset, nothing to do) and, as `seal` says, seals the new data files
/// among them. Returns how many files were made durable since the last call.
pub(crate) async fn sync_files(local: Option<&LocalFiles>, seal: Seal, uri: &str) -> Result<usize> {
    let Some(local) = local else {
        return Ok(0);
    };
    let tracker = Arc::clone(&local.synced);
    let seals = (seal == Seal::NewFiles).then(|| Arc::clone(&local.seals));
    let done = blocking("fsync the files of", uri, move || {
        tracker.sync_new()?;
        let fresh = tracker.take_fresh();
        if let Some(seals) = seals {
            seals.seal_new(&fresh)?;
        }
        Ok(fresh.len())
    })
    .await;
    if done.is_err() {
        // what the task knew of synced files is gone with it: start over
        local.synced.forget();
    }
    done?
}

/// Runs blocking file work off the async threads; a failure of the task itself (a
/// panic) is an I/O error of `op` on the dataset at `uri`.
pub(crate) async fn blocking<T: Send + 'static>(
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use persisting_codec::{Record, Value};

    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
    use arrow::record_batch::RecordBatch;

    use super::parts::split_rows;
    use crate::{LanceBucket, LanceOptions};

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
            assert!(b.commits.running() && b.commits.released() == 0);
            // the first commit is applied and the second started: the first's records
            // wait to be freed while the second runs
            b.put_batch(records(10..20)).unwrap();
            b.start_flush().await.unwrap();
            assert!(b.commits.running());
            assert_eq!(b.commits.released(), 10);
            // nothing left to commit: no commit runs, nothing stays unfreed
            b.start_flush().await.unwrap();
            assert!(!b.commits.running() && b.commits.released() == 0);
            // a flush leaves nothing unfreed either
            b.put_batch(records(20..30)).unwrap();
            b.start_flush().await.unwrap();
            b.put_batch(records(30..40)).unwrap();
            b.start_flush().await.unwrap();
            assert_eq!(b.commits.released(), 10);
            b.flush().await.unwrap();
            assert!(!b.commits.running() && b.commits.released() == 0);
            let back = b.read(0, 100).await.unwrap();
            assert_eq!(back, records(0..40));
            assert_eq!(b.stats().persisted_count, 40);
        });
    }
}

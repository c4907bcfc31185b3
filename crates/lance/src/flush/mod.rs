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

pub(crate) mod commits;
mod compact;
pub(crate) mod parts;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::Schema as ArrowSchema;
use lance::Dataset;
use lance::dataset::WriteMode;

use crate::bucket::{FlushReport, LanceBucket};
use crate::error::{Error, Result};
use crate::flush::commits::{Freed, Settled, is_conflict};
use crate::flush::parts::{append_in_parts, reader};
use crate::store::{Seal, sync_files};

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
            persisted_count: self.committed.persisted(),
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
            let Some(ds) = self.committed.dataset().map(Arc::as_ref) else {
                break;
            };
            let mut ds = ds.clone();
            let evolved = self.evolve(&mut ds).await;
            // schema commits that succeeded are part of the dataset now, whatever
            // happens next: keep the handle that has them
            self.committed.rewritten(ds.clone());
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
                    source: std::io::Error::other(e),
                });
            }
        };
        match result {
            Ok((ds, files_synced)) => {
                // durable: only now is the buffer released
                self.storage.versions.seen(ds.manifest().version);
                self.committed.appended(ds, records as u64);
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
            Err(lance::Error::DatasetNotFound { .. })
                if !crate::store::manifests::has_manifest(&self.uri) =>
            {
                self.commits.outcome_unknown = false;
                return Ok(());
            }
            Err(e) => return Err(Error::lance("reload", &self.uri)(e)),
        };
        let version = latest.manifest().version;
        if self.storage.versions.foreign(version)
            || !self.is_own_unknown_commit(&latest, version).await?
        {
            return Err(Error::CommittedByAnotherWriter {
                dataset: self.uri.clone(),
                version,
                expected: self.storage.versions.next(),
            });
        }
        let (start, _) = crate::log_start::log_start_of(&latest)?;
        let rows = start
            + latest
                .count_rows(None)
                .await
                .map_err(Error::lance("count the rows of", &self.uri))? as u64;
        let buffered = self.buffer.len() as u64;
        if rows < self.committed.persisted() || rows > self.committed.persisted() + buffered {
            return Err(Error::ChangedByAnotherWriter {
                dataset: self.uri.clone(),
                rows,
                persisted: self.committed.persisted(),
                buffered,
            });
        }
        self.storage.versions.seen(version);
        self.reads.retain_live(&latest);
        // the landed records count as persisted only once their files are durable:
        // the facade checkpoints its WAL to the persisted count
        self.sync_files(Seal::NewFiles).await?;
        let landed = (rows - self.committed.persisted()) as usize;
        // and they leave the buffer with the version that holds them
        self.committed.adopt(latest, start, rows);
        self.buffer.drop_landed(landed);
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
    async fn is_own_unknown_commit(&self, latest: &Dataset, version: u64) -> Result<bool> {
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

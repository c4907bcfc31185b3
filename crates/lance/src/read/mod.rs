//! Reads of a bucket: the dataset part through `scan` (a scan kept between reads)
//! or `fragments` (fragment readers kept open for small reads), then the buffer.
//!
//! Invariants: Lance reads no sealed data file this handle has not checked against
//! its seal; every row read from the dataset is checked against its row checksum
//! before it is returned; a panic of Lance's decoders is an error of the read.

pub(crate) mod files;
pub(crate) mod fragments;
pub(crate) mod reads;
pub(crate) mod rows;
pub(crate) mod scan;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use persisting_codec::Record;

use crate::bucket::{FileCheck, LanceBucket};
use crate::convert::{IntoRecords, Strings, from_batch, record_columns, to_batch};
use crate::error::{Error, Result};
use crate::read::files::{check_files, fragment_files};
use crate::read::scan::{ReadAhead, RowChecks, Source, read_dataset};
use crate::store::seals::Seals;

impl LanceBucket {
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
        self.fill(offset, limit, &mut out, Strings::Shared).await?;
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
        let result = self.fill(offset, limit, out, Strings::Copied).await;
        if result.is_err() {
            out.clear();
        }
        result
    }

    /// Reads into `out`, its strings as `strings` says.
    pub(crate) async fn fill(
        &self,
        offset: u64,
        limit: usize,
        out: &mut Vec<Record>,
        strings: Strings,
    ) -> Result<()> {
        self.check_log_start(offset)?;
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
                    // the scan checks ahead while this reader is behind; the reader
                    // checks the batches it had to wait for
                    RowChecks::AheadThenSink,
                    Vec::new(),
                    |batches: &mut Vec<(RecordBatch, u64, bool)>, batch, at, _, checked| {
                        batches.push((batch.clone(), at, checked));
                        Ok(())
                    },
                )
                .await?;
            let how = IntoRecords {
                order: &names,
                dataset: &self.uri,
                strings,
            };
            for (batch, at, checked) in batches {
                // each record is checked as it is built, unless the scan checked its
                // row in place already; a panic on damaged arrays is an error of this
                // read, as it is while Lance decodes them
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    from_batch(how, &batch, at, checked, out, &mut filled)
                }))
                .map_err(|panic| Error::panicked(&self.uri, at, panic.as_ref()))??;
            }
            for record in self.buffered(offset, end) {
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
        self.check_log_start(offset)?;
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
                RowChecks::Here,
                Vec::new(),
                move |batches, batch, _, _, _| {
                    batches.push(record_columns(batch, &names)?);
                    Ok(())
                },
            )
            .await?;
        let records = self.buffered(offset, end);
        if !records.is_empty() {
            // the record fields only: no layout encoding or checksums to build
            let schema = self.with_registry(self.record_fields());
            out.push(to_batch(&schema, &self.schema, records)?);
        }
        Ok(out)
    }

    /// The buffered records among offsets `[offset, end)` (`end` at most the total
    /// count): the part of a read past the dataset.
    pub(crate) fn buffered(&self, offset: u64, end: u64) -> &[Record] {
        let persisted = self.committed.persisted();
        let from = offset.max(persisted);
        if from >= end {
            return &[];
        }
        self.buffer
            .slice((from - persisted) as usize..(end - persisted) as usize)
    }

    /// Feeds the dataset's rows `[offset, end.min(persisted))` to `sink` batch by
    /// batch (with each batch's first offset), after checking their data files. Lance's
    /// decoders assert on damaged pages (a panic, not an error): a panic while reading
    /// becomes an error of this read. `order` is the field registry; `checks` says
    /// who checks rows against their checksums: `sink` is told, for each batch,
    /// whether its rows were checked, and checks them when they were not.
    pub(crate) async fn read_persisted<T, S>(
        &self,
        offset: u64,
        end: u64,
        order: Arc<[String]>,
        checks: RowChecks,
        mut out: T,
        mut sink: S,
    ) -> Result<T>
    where
        T: Send + 'static,
        S: FnMut(&mut T, &RecordBatch, u64, &str, bool) -> Result<()> + Send + 'static,
    {
        let Some(ds) = self
            .committed
            .dataset()
            .cloned()
            .filter(|_| offset < self.committed.persisted())
        else {
            return Ok(out);
        };
        self.check_log_start(offset)?;
        let n = end.min(self.committed.persisted()) - offset;
        let position = offset - self.committed.log_start();
        let files = fragment_files(&ds, |_| true, position..position + n);
        self.verify_names(files, offset).await?;
        // one reader at a time uses the read-ahead; others read on their own
        let mut slot = self.reads.readahead.try_lock().ok();
        let state = slot
            .as_mut()
            .map_or(ReadAhead::None, |s| std::mem::take(&mut **s));
        let source = Source {
            ds,
            base: self.committed.log_start(),
            persisted: self.committed.persisted(),
            order,
            seals: self.seals(),
            checks,
            readers: Arc::clone(&self.reads.readers),
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

    /// The seals of a local dataset's data files.
    pub(crate) fn seals(&self) -> Option<Arc<Seals>> {
        self.storage.local.as_ref().map(|l| Arc::clone(&l.seals))
    }

    /// Checks the sealed data files among `names` not checked yet by this handle, off
    /// the async threads (and without leaving them at all once every file of `names`
    /// is checked: the steady state of reads).
    pub(crate) async fn verify_names(&self, names: Vec<String>, offset: u64) -> Result<()> {
        check_files(self.seals(), names, offset, &self.uri).await
    }

    /// Checks every sealed data file of the dataset against its seal now, rather than
    /// before its first read (each file is read whole once per handle). Returns how
    /// many data files the dataset has and how many of them carry no seal (written by
    /// another tool, or by a flush a crash cut between its commit and its seal).
    pub async fn verify_files(&self) -> Result<FileCheck> {
        let Some(ds) = self.committed.dataset().cloned() else {
            return Ok(FileCheck::default());
        };
        let names = fragment_files(&ds, |_| true, 0..u64::MAX);
        let unsealed = self.seals().map_or(names.len(), |s| {
            names.iter().filter(|n| !s.is_sealed(n)).count()
        });
        let files = names.len();
        self.verify_names(names, 0).await?;
        Ok(FileCheck { files, unsealed })
    }
}

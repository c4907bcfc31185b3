//! Reads of a bucket: the dataset part through `scan` (a scan kept between reads)
//! or `fragments` (fragment readers kept open for small reads), then the buffer.
//!
//! Invariants: Lance reads no sealed data file this handle has not checked against
//! its seal; every row read from the dataset is checked against its row checksum
//! before it is returned; a panic of Lance's decoders is an error of the read.

pub(crate) mod fragments;
pub(crate) mod scan;

use std::ops::Range;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use lance::Dataset;
use persisting_codec::Record;

use crate::bucket::{FileCheck, LanceBucket};
use crate::convert::{from_batch, record_columns, to_batch};
use crate::error::{Error, Result};
use crate::flush::blocking;
use crate::read::fragments::FragmentReaders;
use crate::read::scan::{ReadAhead, Source, read_dataset};
use crate::store::seals::Seals;

/// What a bucket's reads keep between calls: the scan the last sequential read left
/// (continued by a read starting where it ended; used by one reader at a time, others
/// read on their own) and the fragment readers of small reads.
#[derive(Debug)]
pub(crate) struct Reads {
    readahead: tokio::sync::Mutex<ReadAhead>,
    readers: Arc<FragmentReaders>,
}

impl Reads {
    /// Nothing kept yet; `local`: whether the dataset is on the local file system.
    pub(crate) fn new(local: bool) -> Self {
        Self {
            readahead: tokio::sync::Mutex::new(ReadAhead::None),
            readers: Arc::new(FragmentReaders::new(local)),
        }
    }

    /// Closes the fragment readers of fragments `ds` no longer has (after a
    /// compaction).
    pub(crate) fn retain_live(&self, ds: &Dataset) {
        self.readers.retain_live(ds);
    }
}

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
    pub(crate) async fn fill(
        &self,
        offset: u64,
        limit: usize,
        out: &mut Vec<Record>,
        refill: bool,
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
            let records = self
                .buffer
                .slice((from - self.persisted) as usize..(end - self.persisted) as usize);
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
    pub(crate) async fn read_persisted<T, S>(
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
        self.check_log_start(offset)?;
        let n = end.min(self.persisted) - offset;
        let position = offset - self.log_start;
        let files = fragment_files(&ds, |_| true, position..position + n);
        self.verify_names(files, offset).await?;
        // one reader at a time uses the read-ahead; others read on their own
        let mut slot = self.reads.readahead.try_lock().ok();
        let state = slot
            .as_mut()
            .map_or(ReadAhead::None, |s| std::mem::take(&mut **s));
        let source = Source {
            ds,
            base: self.log_start,
            persisted: self.persisted,
            order,
            sums: self.seals(),
            check_rows,
            check_ahead,
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
        let Some(ds) = self.dataset.clone() else {
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

/// The data file names (in `data/`) of the fragments holding positions in `range` whose
/// row count passes `keep`.
pub(crate) fn fragment_files(
    ds: &Dataset,
    keep: impl Fn(u64) -> bool,
    range: Range<u64>,
) -> Vec<String> {
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

/// Checks the sealed data files among `names` not checked yet (by this handle's
/// `sums`), off the async threads, and without leaving them at all once every file of
/// `names` is checked: the steady state of reads.
pub(crate) async fn check_files(
    sums: Option<Arc<Seals>>,
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

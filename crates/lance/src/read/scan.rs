//! The read-ahead scan: a read that continues where the last one ended continues
//! one scan of the dataset, kept between calls, decoding a few batches ahead of the
//! reader on a task of its own; a small read elsewhere reads through the fragment
//! readers; a larger one starts a scan at its offset.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use lance::Dataset;

use crate::convert::verify_rows;
use crate::error::{Error, Result};
use crate::read::files::{check_files, fragment_files};
use crate::read::fragments::FragmentReaders;
use crate::store::seals::Seals;

/// Reads of at most this many rows not continuing the previous read read their rows
/// through the fragment readers kept open ([`FragmentReaders`]) instead of starting a
/// scan.
pub(crate) const TAKE_MAX: u64 = 1024;

/// Rows a scan plans at a time (and whose data files it checks first): at least this
/// many ...
pub(crate) const WINDOW_MIN: u64 = 1 << 16;

/// ... and at most this many for its first window ...
pub(crate) const WINDOW_START_MAX: u64 = 1 << 18;

/// ... after which each window is twice the one before, up to this many rows.
pub(crate) const WINDOW_MAX: u64 = 1 << 22;

/// Checked batches a scan holds ready ahead of its reader.
pub(crate) const AHEAD_BATCHES: usize = 4;

/// What the last read left for the next one.
#[derive(Default)]
pub(crate) enum ReadAhead {
    /// Nothing.
    #[default]
    None,
    /// The last read ended at this offset, in this dataset version.
    After { version: u64, next: u64 },
    /// An open scan positioned at `next`.
    Open(Cursor),
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::After { version, next } => write!(f, "After({version}, {next})"),
            Self::Open(c) => write!(f, "Open({}, {}..{})", c.version, c.next, c.end),
        }
    }
}

/// Who checks the rows a read takes from the dataset against their checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowChecks {
    /// The read, before its sink sees them (`read_arrow`).
    Here,
    /// A scan started for this read checks a batch on its own task before handing it
    /// over while the reader has batches waiting (see [`Cursor`]); a batch the reader
    /// waits for, or one the scan could not check whole, goes to the sink unchecked
    /// (`read`, `read_into`, `read_rows`: the checks go to whichever side has time).
    AheadThenSink,
}

/// What a read of the dataset needs: the dataset version, its row count, the field
/// registry (to check rows), the file seals (to check files before Lance reads them),
/// and who checks rows against their checksums ([`RowChecks`]).
pub(crate) struct Source {
    pub(crate) ds: Arc<Dataset>,
    /// The offset of the dataset's first row (its log start): a row's offset is
    /// `base` plus its position in the dataset.
    pub(crate) base: u64,
    /// One past the dataset's last offset.
    pub(crate) persisted: u64,
    pub(crate) order: Arc<[String]>,
    pub(crate) seals: Option<Arc<Seals>>,
    pub(crate) checks: RowChecks,
    pub(crate) readers: Arc<FragmentReaders>,
}

/// A scan of the dataset kept between reads. A task of its own reads from `next` to
/// the end of the dataset, window after window, each twice the one before up to
/// [`WINDOW_MAX`] (each window's data files checked against their seals before Lance
/// reads them; each window is a Lance scan of its own, whose start is a gap in the
/// decoding ahead, so a long read starts few of them), and hands the decoded batches over
/// through a bounded channel, at most [`AHEAD_BATCHES`] ahead. Rows are checked
/// against their checksums either by the reader as it takes a batch (`read_arrow`:
/// decoding and checking so run on two cores at once) or, when the scan was started
/// with [`RowChecks::AheadThenSink`] (`read`, `read_into`, `read_rows`), by the task
/// before it sends the batch while the reader has batches waiting, and by the reader
/// for a batch it waited for: the checks go to whichever side is ahead. A batch the
/// task could not check whole is sent unchecked and checked row by row by its reader.
/// Dropping the cursor stops the task.
pub(crate) struct Cursor {
    pub(crate) version: u64,
    /// Offset of the next row the cursor yields.
    pub(crate) next: u64,
    /// One past the last row the scan yields.
    pub(crate) end: u64,
    /// Rows received and not yet returned (starting at `next`), and whether they were
    /// checked.
    pub(crate) pending: Option<(RecordBatch, bool)>,
    /// Offset of the first row of the next batch to receive.
    pub(crate) received: u64,
    /// The field registry, to check rows.
    pub(crate) order: Arc<[String]>,
    /// Batches, and whether the task checked all their rows.
    pub(crate) batches: tokio::sync::mpsc::Receiver<Result<(RecordBatch, bool)>>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Cursor {
    /// Starts the scan of rows `[offset, source.persisted)`, `window` rows at a time.
    fn open(source: Source, offset: u64, window: u64) -> Self {
        let (tx, batches) = tokio::sync::mpsc::channel(AHEAD_BATCHES);
        let version = source.ds.manifest().version;
        let end = source.persisted;
        let order = Arc::clone(&source.order);
        let task = tokio::spawn(async move {
            let mut at = offset;
            let mut window = window;
            while at < end {
                let rows = window.min(end - at);
                match scan_window(&source, at, rows, &tx).await {
                    Ok(true) => {
                        at += rows;
                        window = window.saturating_mul(2).min(WINDOW_MAX);
                    }
                    // the reader is gone
                    Ok(false) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        Self {
            version,
            next: offset,
            end,
            pending: None,
            received: offset,
            order,
            batches,
            task,
        }
    }

    /// The next batch (starting at `next`), checked if `check`, and whether it was.
    async fn next_batch(&mut self, uri: &str, check: bool) -> Result<(RecordBatch, bool)> {
        if let Some((b, checked)) = self.pending.take() {
            if check && !checked {
                verify_rows(&b, &self.order, self.next, uri)?;
            }
            return Ok((b, checked || check));
        }
        if let Some(b) = self.batches.recv().await {
            let (b, checked) = b?;
            if check && !checked {
                verify_rows(&b, &self.order, self.received, uri)?;
            }
            self.received += b.num_rows() as u64;
            return Ok((b, checked || check));
        }
        // the task ended without an error to send: it panicked (Lance's decoders
        // assert on damaged pages), or the scan came up short
        match (&mut self.task).await {
            Err(e) if e.is_panic() => Err(Error::panicked(uri, self.next, e.into_panic().as_ref())),
            _ => Err(Error::lance("read", uri)(lance::Error::internal(format!(
                "the scan ended at offset {}, before offset {}",
                self.next, self.end
            )))),
        }
    }
}

/// Scans rows `[at, at + rows)` into `tx`; `false` once the reader is gone.
pub(crate) async fn scan_window(
    source: &Source,
    at: u64,
    rows: u64,
    tx: &tokio::sync::mpsc::Sender<Result<(RecordBatch, bool)>>,
) -> Result<bool> {
    let ds = &source.ds;
    let position = at - source.base;
    let files = fragment_files(ds, |_| true, position..position + rows);
    check_files(source.seals.clone(), files, at, ds.uri()).await?;
    let mut scan = ds.scan();
    scan.scan_in_order(true);
    scan.limit(Some(rows as i64), Some(position as i64))
        .map_err(Error::lance("plan a read of", ds.uri()))?;
    let mut stream = scan
        .try_into_stream()
        .await
        .map_err(Error::lance("read", ds.uri()))?;
    let mut next = at;
    while let Some(batch) = stream
        .try_next()
        .await
        .map_err(Error::lance("read", ds.uri()))?
    {
        // a batch whose check fails (or panics on damaged arrays) goes unchecked: the
        // reader checks the rows it takes, so a read of the intact rows before a
        // damaged one still succeeds and the error names the damaged row's offset
        //
        // it checks ahead while the reader has a batch waiting (the reader is the busier
        // side); when the reader waits for this batch, it goes over unchecked at once
        // and the reader checks it: the checks go to whichever side has time
        let reader_busy = tx.capacity() < tx.max_capacity();
        let checked = source.checks == RowChecks::AheadThenSink
            && reader_busy
            && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                verify_rows(&batch, &source.order, next, ds.uri())
            }))
            .is_ok_and(|r| r.is_ok());
        next += batch.num_rows() as u64;
        if tx.send(Ok((batch, checked))).await.is_err() {
            return Ok(false);
        }
    }
    if next != at + rows {
        return Err(Error::lance("read", ds.uri())(lance::Error::internal(
            format!("the scan of {rows} rows from offset {at} ended at offset {next}"),
        )));
    }
    Ok(true)
}

/// Reads `n` rows from `offset` (all below `source.persisted`) into `sink`, using and
/// returning the read-ahead state. With [`RowChecks::Here`], every row is checked
/// against its checksum before `sink` sees it; otherwise `sink` checks them.
pub(crate) async fn read_dataset(
    source: Source,
    offset: u64,
    n: u64,
    state: ReadAhead,
    mut sink: impl FnMut(&RecordBatch, u64, &str, bool) -> Result<()>,
) -> Result<ReadAhead> {
    let ds = Arc::clone(&source.ds);
    let uri = ds.uri();
    let version = ds.manifest().version;
    let end = offset + n;
    let (cursor, sequential) = match state {
        ReadAhead::Open(c) if c.version == version && c.next == offset => (Some(c), true),
        ReadAhead::Open(c) => (None, c.version == version && c.end == offset),
        ReadAhead::After { version: v, next } => (None, v == version && next == offset),
        ReadAhead::None => (None, false),
    };
    if cursor.is_none() && !sequential && n <= TAKE_MAX {
        let check = |batch: &RecordBatch, at: u64| {
            if source.checks == RowChecks::Here {
                verify_rows(batch, &source.order, at, uri)?;
            }
            Ok::<_, Error>(())
        };
        let base = source.base;
        if let Some(batches) = source.readers.read(&ds, offset - base..end - base).await? {
            let mut fed = offset;
            for (batch, position) in batches {
                let at = position + base;
                check(&batch, at)?;
                sink(&batch, at, uri, source.checks == RowChecks::Here)?;
                fed = at + batch.num_rows() as u64;
            }
            if fed != end {
                return Err(Error::Lance {
                    op: "read",
                    path: uri.to_owned(),
                    source: lance::Error::internal(format!(
                        "rows {offset}..{end} were asked of the fragments, {offset}..{fed} came back"
                    )),
                });
            }
            return Ok(ReadAhead::After { version, next: end });
        }
        let rows: Vec<u64> = (offset - base..end - base).collect();
        let batch = ds
            .take(&rows, ds.schema().clone())
            .await
            .map_err(Error::lance("read", uri))?;
        if source.checks == RowChecks::Here {
            verify_rows(&batch, &source.order, offset, uri)?;
        }
        sink(&batch, offset, uri, source.checks == RowChecks::Here)?;
        return Ok(ReadAhead::After { version, next: end });
    }
    // a read elsewhere starts a scan from its offset: if the next read continues it,
    // its rows are (being) read already
    let check = source.checks == RowChecks::Here;
    let mut c = cursor.unwrap_or_else(|| {
        let window = n
            .saturating_mul(8)
            .clamp(WINDOW_MIN, WINDOW_START_MAX)
            .max(n);
        Cursor::open(source, offset, window)
    });
    let mut at = offset;
    while at < end {
        let (batch, checked) = c.next_batch(uri, check).await?;
        let want = (end - at) as usize;
        let take = batch.num_rows().min(want);
        sink(&batch.slice(0, take), at, uri, checked)?;
        at += take as u64;
        c.next = at;
        if take < batch.num_rows() {
            c.pending = Some((batch.slice(take, batch.num_rows() - take), checked));
        }
    }
    Ok(if c.next < c.end {
        ReadAhead::Open(c)
    } else {
        ReadAhead::After { version, next: end }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LanceBucket, LanceOptions};
    use arrow::array::AsArray;
    use persisting_codec::record;

    /// A cursor whose first window is a few rows reads on through windows that double
    /// (5, 10, 20, ... rows, each starting a scan of its own, across fragments of 37
    /// rows): every row once, in order, checked.
    #[test]
    fn a_cursor_reads_every_row_once_across_doubling_windows() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut b = LanceBucket::open(
                dir.path(),
                LanceOptions {
                    flush_threshold: 37,
                    compact_fragments_max: 0,
                    ..LanceOptions::default()
                },
            )
            .await
            .unwrap();
            let all: Vec<_> = (0..700i64).map(|i| record! {"id" => i}).collect();
            for chunk in all.chunks(37) {
                b.append(chunk.to_vec()).await.unwrap();
            }
            let ds = b.committed.dataset().cloned().unwrap();
            assert!(ds.get_fragments().len() > 10, "many fragments");
            for (from, window) in [(0u64, 5u64), (3, 1), (411, 7)] {
                let source = Source {
                    ds: Arc::clone(&ds),
                    base: b.committed.log_start(),
                    persisted: b.committed.persisted(),
                    order: b.schema.names().into(),
                    seals: b.seals(),
                    checks: RowChecks::AheadThenSink,
                    readers: Arc::clone(&b.reads.readers),
                };
                let mut cursor = Cursor::open(source, from, window);
                let mut next = from;
                let end = cursor.end;
                assert!(end > 600, "{end} rows in the dataset");
                while next < end {
                    let (batch, checked) = cursor.next_batch(&b.uri, true).await.unwrap();
                    assert!(checked);
                    let ids = batch
                        .column_by_name("id")
                        .unwrap()
                        .as_primitive::<arrow::datatypes::Int64Type>();
                    for id in ids.iter() {
                        assert_eq!(id, Some(next as i64), "from {from}, window {window}");
                        next += 1;
                    }
                    cursor.next = next;
                }
                assert_eq!(next, end);
            }
        });
    }
}

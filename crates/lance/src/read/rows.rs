//! Reads handed over as checked Arrow batches, walked row by row by the caller: for a
//! consumer that builds its own objects from the values (the Python package builds
//! dicts), so no [`Record`] is built on the way and none is freed.
//!
//! Invariants: every row of a [`Rows`] was checked against its checksum before the
//! read returned it; walking a row yields exactly the record [`LanceBucket::read`]
//! returns for it (the same fields, in the same order, explicit nulls kept), because
//! the walk reads the rows the way `read` builds them: a row kept whole in the layout
//! column is that record, any other row is its present fields in field order.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use persisting_codec::Record;

use crate::bucket::LanceBucket;
use crate::convert::{Cell, Columns, verify_rows};
use crate::error::{Error, Result};
use crate::read::scan::RowChecks;

/// Records `[offset, offset + n)` of a bucket, checked, not yet built: the dataset's
/// batches, then the buffer's records. Walk them with [`Rows::for_each`].
#[derive(Debug, Default)]
pub struct Rows {
    parts: Vec<Part>,
    /// the field registry when read: the order a row's fields are walked in
    order: Arc<[String]>,
}

#[derive(Debug)]
enum Part {
    /// Checked rows of the dataset; the offset of the first.
    Batch(RecordBatch, u64),
    /// Records built already (the buffer's, or a snapshot's).
    Records(Vec<Record>),
}

/// One row of a [`Rows`].
#[derive(Debug)]
pub enum Row<'a> {
    /// A record built already, or decoded whole from the layout column.
    Record(&'a Record),
    /// A row of the dataset's columns: its present fields in field order.
    Fields(Fields<'a>),
}

/// The fields of one dataset row, read in place from the columns.
pub struct Fields<'a> {
    cols: &'a Columns<'a>,
    row: usize,
    offset: u64,
}

impl std::fmt::Debug for Fields<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fields(row at offset {})", self.offset)
    }
}

impl Fields<'_> {
    /// Calls `f` with the name and value of each present field, in field order. A
    /// name is one shared allocation for every row of a batch (compare by pointer).
    pub fn for_each<E: From<Error>>(
        &self,
        mut f: impl FnMut(&Arc<str>, Cell<'_>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        for (i, name) in self.cols.names.names().iter().enumerate() {
            if let Some(cell) = self.cols.cell(i, self.row, self.offset)? {
                f(name, cell)?;
            }
        }
        Ok(())
    }

    /// How many fields the row's columns could hold (an upper bound of its fields).
    pub fn columns(&self) -> usize {
        self.cols.names.names().len()
    }
}

impl Rows {
    /// Records built already, as rows.
    pub fn from_records(records: Vec<Record>) -> Self {
        Self {
            parts: vec![Part::Records(records)],
            order: Arc::from(Vec::new()),
        }
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Batch(b, _) => b.num_rows(),
                Part::Records(r) => r.len(),
            })
            .sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with each row in offset order. A row of a damaged layout value is an
    /// error of the walk (its checksum was checked, so this takes a value that hashes
    /// right yet does not decode).
    pub fn for_each<E: From<Error>>(
        &self,
        mut f: impl FnMut(Row<'_>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        for part in &self.parts {
            match part {
                Part::Batch(batch, first) => {
                    let cols = Columns::of(batch, &self.order)?;
                    for row in 0..batch.num_rows() {
                        let offset = first + row as u64;
                        match cols.layout_record(row, offset)? {
                            Some(record) => f(Row::Record(&record))?,
                            None => f(Row::Fields(Fields {
                                cols: &cols,
                                row,
                                offset,
                            }))?,
                        }
                    }
                }
                Part::Records(records) => {
                    for record in records {
                        f(Row::Record(record))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The rows as records (what [`LanceBucket::read`] returns for them).
    pub fn into_records(self) -> Result<Vec<Record>> {
        let mut out = Vec::with_capacity(self.len());
        self.for_each(|row| {
            out.push(match row {
                Row::Record(r) => r.clone(),
                Row::Fields(fields) => {
                    let mut r = Record::with_capacity(fields.columns());
                    fields.for_each(|name, cell| {
                        r.insert(Arc::clone(name), cell.into_value());
                        Ok::<_, Error>(())
                    })?;
                    r
                }
            });
            Ok::<_, Error>(())
        })?;
        Ok(out)
    }
}

impl LanceBucket {
    /// Records `[offset, offset + limit)`, clipped to what exists, checked as
    /// [`LanceBucket::read`] checks them but handed over unbuilt: the dataset's
    /// batches and the buffer's records, walked with [`Rows::for_each`]. For a caller
    /// that turns the values into objects of its own, this skips building and freeing
    /// a [`Record`] per row.
    pub async fn read_rows(&self, offset: u64, limit: usize) -> Result<Rows> {
        self.check_log_start(offset)?;
        let end = offset.saturating_add(limit as u64).min(self.total_count());
        let order: Arc<[String]> = self.schema.names().into();
        let mut rows = Rows {
            parts: Vec::new(),
            order: Arc::clone(&order),
        };
        if offset >= end {
            return Ok(rows);
        }
        let check = Arc::clone(&order);
        // the scan checks batches on its own task while it decodes ahead; a batch it
        // could not check whole is checked here, before the read returns it
        rows.parts = self
            .read_persisted(
                offset,
                end,
                order,
                RowChecks::AheadThenSink,
                Vec::new(),
                move |parts: &mut Vec<Part>, batch, at, uri, checked| {
                    if !checked {
                        verify_rows(batch, &check, at, uri)?;
                    }
                    parts.push(Part::Batch(batch.clone(), at));
                    Ok(())
                },
            )
            .await?;
        let buffered = self.buffered(offset, end);
        if !buffered.is_empty() {
            rows.parts.push(Part::Records(buffered.to_vec()));
        }
        Ok(rows)
    }
}

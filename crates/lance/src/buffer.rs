//! The buffer of records not yet in the dataset, and the conversion ahead of a
//! commit: while one commit runs, the records buffered after it are converted to
//! Arrow for the next one.
//!
//! Invariant: only the records after those the running commit holds change while it
//! runs (appended); batches converted ahead are used only if the dataset schema and
//! field registry are still those they were built for.

use std::sync::Arc;

use arrow::datatypes::Schema as ArrowSchema;
use arrow::record_batch::RecordBatch;

use crate::bucket::LanceBucket;
use crate::convert::to_batches;
use crate::schema::SchemaState;

impl LanceBucket {
    /// Converts the buffered records after those the running commit holds and after
    /// those already converted, once there are enough of them, for the next commit
    /// (which uses them if the dataset schema and the field registry are still the
    /// ones they were built for, and builds its batches anew otherwise). Batches built
    /// for another field registry are dropped here; the dataset, and so its schema,
    /// stays as it is while the commit runs, and the next commit checks it anyway.
    pub(crate) fn convert_ahead(&mut self) {
        let Some(ds) = self.dataset.as_deref() else {
            return;
        };
        let held = self.flushing();
        let converted = match &mut self.converted {
            Some(c) if c.state == self.schema => c,
            slot => slot.insert(Converted {
                batches: Vec::new(),
                rows: 0,
                schema: Arc::new(ArrowSchema::from(ds.schema())),
                state: self.schema.clone(),
            }),
        };
        let from = held + converted.rows;
        if self.buffer.len() - from < CONVERT_AHEAD_ROWS_MIN {
            return;
        }
        match to_batches(&converted.schema, &self.schema, &self.buffer[from..]) {
            Ok(batches) => {
                converted.batches.extend(batches);
                converted.rows = self.buffer.len() - held;
            }
            // the commit that takes these records converts them and reports it
            Err(_) => self.converted = None,
        }
    }

    /// Buffered records the running flush, if any, is committing.
    pub(crate) fn flushing(&self) -> usize {
        self.commit.as_ref().map_or(0, |c| c.records)
    }

    /// Buffered records that no running flush is committing.
    pub(crate) fn unflushed(&self) -> usize {
        self.buffer.len() - self.flushing()
    }

    /// Buffered records that no running flush is committing: what the next flush
    /// takes.
    pub fn unflushed_count(&self) -> u64 {
        self.unflushed() as u64
    }
}

/// Fewest records [`LanceBucket::convert_ahead`] converts at once (fewer wait for
/// more: each conversion has a fixed cost, and each batch is one more for Lance).
pub(crate) const CONVERT_AHEAD_ROWS_MIN: usize = 4096;

/// Arrow batches of the first `rows` buffered records after those a running commit
/// holds, built for the dataset schema `schema` and the field registry `state`.
#[derive(Debug)]
pub(crate) struct Converted {
    pub(crate) batches: Vec<RecordBatch>,
    pub(crate) rows: usize,
    pub(crate) schema: Arc<ArrowSchema>,
    pub(crate) state: SchemaState,
}

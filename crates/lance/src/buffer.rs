//! [`Buffer`]: the records of a bucket not yet in the dataset, and the Arrow batches
//! converted ahead for the next commit while one runs.
//!
//! Invariants: the buffer holds the offsets right after the dataset's, in order; only
//! its front leaves it (released once a commit holding it is durable, or dropped once
//! a reconcile found it landed), and only its back grows (appended), so the records a
//! running commit holds (the first `held`) never change under it. Batches converted
//! ahead cover the records right after `held`, and are used only if the dataset
//! schema and field registry are still those they were built for.

use std::ops::{Index, Range};
use std::sync::Arc;

use arrow::datatypes::Schema as ArrowSchema;
use arrow::record_batch::RecordBatch;
use lance::Dataset;
use persisting_codec::Record;

use crate::convert::to_batches;
use crate::error::Result;
use crate::schema::SchemaState;

/// Records not yet in the dataset, oldest first (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    records: Vec<Record>,
    converted: Option<Converted>,
}

impl Buffer {
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Appends admitted records at the back.
    pub(crate) fn extend(&mut self, records: Vec<Record>) {
        self.records.extend(records);
    }

    /// The buffered records at positions `range`.
    pub(crate) fn slice(&self, range: Range<usize>) -> &[Record] {
        &self.records[range]
    }

    /// Takes the first `n` records off (a commit holding them is durable) and returns
    /// them; batches converted ahead stay (they start after them).
    pub(crate) fn release_front(&mut self, n: usize) -> Vec<Record> {
        let rest = self.records.split_off(n);
        std::mem::replace(&mut self.records, rest)
    }

    /// Drops the first `n` records (found in the dataset by a reconcile), and the
    /// batches converted ahead, which started after a commit that is gone.
    pub(crate) fn drop_landed(&mut self, n: usize) {
        self.records.drain(..n);
        self.converted = None;
    }

    /// Drops the batches converted ahead (the commit they followed failed, or the
    /// dataset changed under them).
    pub(crate) fn forget_converted(&mut self) {
        self.converted = None;
    }

    /// Converts the records after the first `held` (those the running commit holds)
    /// and after those already converted, once there are enough of them, for the next
    /// commit against `dataset` (the current dataset) and `state` (the field
    /// registry). Batches built for another field registry are dropped here; the
    /// dataset, and so its schema, stays as it is while the commit runs, and the next
    /// commit checks it anyway (see [`Buffer::take_batches`]).
    pub(crate) fn convert_ahead(&mut self, held: usize, dataset: &Dataset, state: &SchemaState) {
        let converted = match &mut self.converted {
            Some(c) if c.state == *state => c,
            slot => slot.insert(Converted {
                batches: Vec::new(),
                rows: 0,
                schema: Arc::new(ArrowSchema::from(dataset.schema())),
                state: state.clone(),
            }),
        };
        let from = held + converted.rows;
        if self.records.len() - from < CONVERT_AHEAD_ROWS_MIN {
            return;
        }
        match to_batches(&converted.schema, state, &self.records[from..]) {
            Ok(batches) => {
                converted.batches.extend(batches);
                converted.rows = self.records.len() - held;
            }
            // the commit that takes these records converts them and reports it
            Err(_) => self.converted = None,
        }
    }

    /// Every buffered record as Arrow batches of `schema` (the commit's) and `state`:
    /// those converted ahead for the same schema and registry, and the rest built now.
    pub(crate) fn take_batches(
        &mut self,
        schema: &Arc<ArrowSchema>,
        state: &SchemaState,
    ) -> Result<Vec<RecordBatch>> {
        let (mut batches, from) = match self.converted.take() {
            Some(c) if c.schema == *schema && c.state == *state => (c.batches, c.rows),
            _ => (Vec::new(), 0),
        };
        if from < self.records.len() {
            batches.extend(to_batches(schema, state, &self.records[from..])?);
        }
        Ok(batches)
    }
}

impl Index<usize> for Buffer {
    type Output = Record;

    fn index(&self, i: usize) -> &Record {
        &self.records[i]
    }
}

/// Fewest records [`Buffer::convert_ahead`] converts at once (fewer wait for more:
/// each conversion has a fixed cost, and each batch is one more for Lance).
pub(crate) const CONVERT_AHEAD_ROWS_MIN: usize = 4096;

/// Arrow batches of the first `rows` buffered records after those a running commit
/// holds, built for the dataset schema `schema` and the field registry `state`.
#[derive(Debug)]
struct Converted {
    batches: Vec<RecordBatch>,
    rows: usize,
    schema: Arc<ArrowSchema>,
    state: SchemaState,
}

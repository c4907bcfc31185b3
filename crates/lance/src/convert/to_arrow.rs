//! Records to Arrow record batches with the dataset's columns, in its order.

use std::sync::Arc;

use arrow::array::StructArray;
use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder,
    ListBuilder, StringBuilder, UInt32Builder,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use arrow::record_batch::RecordBatch;
use persisting_codec::{Record, Value, encode_record, encode_value};

use super::checksum::{f64_of, row_checksum};
use crate::error::{Error, Result};
use crate::schema::{CHECKSUM_COLUMN, ColType, LAYOUT_COLUMN, Scalar, SchemaState, col_type};

/// Builds the batch of `records` for a dataset whose columns are `schema`.
///
/// One pass over the records, each taken whole (checksum, layout, values into their
/// columns) while its memory is in cache: a flush's records were allocated long
/// before it and are scattered over the heap, and a pass per column over them cost
/// about twice as much. Lists and structs are gathered and built per column after.
pub(crate) fn to_batch(
    schema: &Arc<ArrowSchema>,
    state: &SchemaState,
    records: &[Record],
) -> Result<RecordBatch> {
    let n = records.len();
    // each record's values, placed in their columns in one pass over its fields
    let column_of: Vec<Option<usize>> = state
        .fields
        .iter()
        .map(|f| schema.index_of(&f.name).ok())
        .collect();
    // canonical means: the typed columns of this batch reproduce the record
    let types: Vec<Option<ColType>> = column_of
        .iter()
        .map(|c| c.map(|c| col_type(schema.field(c))))
        .collect();
    let mut sinks: Vec<Sink<'_>> = schema
        .fields()
        .iter()
        .map(|f| Sink::for_field(f, n))
        .collect();
    let layout_at = sinks.iter().position(|s| matches!(s, Sink::Layout(_)));
    let checksum_at = sinks.iter().position(|s| matches!(s, Sink::Checksum(_)));
    for (row, r) in records.iter().enumerate() {
        let canonical = state.place_fields(&types, r, |pos, value| {
            if let Some(c) = column_of[pos].filter(|_| !value.is_null()) {
                sinks[c].put(row, value);
            }
        });
        if let Some(Sink::Layout(b)) = layout_at.map(|i| &mut sinks[i]) {
            if canonical {
                b.append_null();
            } else {
                b.append_value(encode_record(r));
            }
        }
        if let Some(Sink::Checksum(b)) = checksum_at.map(|i| &mut sinks[i]) {
            b.append_value(row_checksum(r));
        }
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, sink) in schema.fields().iter().zip(sinks) {
        columns.push(sink.finish(field, n)?);
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(Error::arrow("build a record batch"))
}

/// Records per part below which [`to_batches`] does not split.
pub(crate) const PART_ROWS_MIN: usize = 16 << 10;

/// [`to_batch`] of consecutive parts of `records`, built at once on scoped threads
/// (as many as the machine has cores, each part at least [`PART_ROWS_MIN`] rows): a
/// flush's conversion uses the cores the caller leaves idle. Appended in order, the
/// batches hold the records in order.
pub(crate) fn to_batches(
    schema: &Arc<ArrowSchema>,
    state: &SchemaState,
    records: &[Record],
) -> Result<Vec<RecordBatch>> {
    let parts = crate::threads::cores()
        .min(records.len() / PART_ROWS_MIN)
        .max(1);
    if parts == 1 {
        return Ok(vec![to_batch(schema, state, records)?]);
    }
    let chunks: Vec<&[Record]> = records.chunks(records.len().div_ceil(parts)).collect();
    std::thread::scope(|s| {
        let others: Vec<_> = chunks[1..]
            .iter()
            .map(|chunk| s.spawn(move || to_batch(schema, state, chunk)))
            .collect();
        let mut batches = vec![to_batch(schema, state, chunks[0])];
        for other in others {
            batches.push(
                other
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        batches.into_iter().collect()
    })
}

/// Where [`to_batch`] puts one column's values as it walks the records: a builder for
/// the scalar types (null-padded up to the row it is given), the gathered values for
/// lists and structs.
pub(crate) enum Sink<'a> {
    Layout(BinaryBuilder),
    Checksum(UInt32Builder),
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Str(StringBuilder),
    Bytes(BinaryBuilder),
    Encoded(BinaryBuilder),
    Gathered(Vec<Option<&'a Value>>),
}

impl<'a> Sink<'a> {
    pub(crate) fn for_field(field: &Field, n: usize) -> Self {
        match field.name().as_str() {
            LAYOUT_COLUMN => return Sink::Layout(BinaryBuilder::with_capacity(n, 0)),
            CHECKSUM_COLUMN => return Sink::Checksum(UInt32Builder::with_capacity(n)),
            _ => {}
        }
        match col_type(field) {
            ColType::Bool => Sink::Bool(BooleanBuilder::with_capacity(n)),
            ColType::Int => Sink::Int(Int64Builder::with_capacity(n)),
            ColType::Float => Sink::Float(Float64Builder::with_capacity(n)),
            ColType::Str => Sink::Str(StringBuilder::with_capacity(n, n * 16)),
            ColType::Bytes | ColType::Foreign(_) => {
                Sink::Bytes(BinaryBuilder::with_capacity(n, n * 16))
            }
            ColType::Encoded => Sink::Encoded(BinaryBuilder::with_capacity(n, n * 16)),
            ColType::List(_) | ColType::Struct(_) => Sink::Gathered(Vec::with_capacity(n)),
        }
    }

    /// Nulls up to `len` rows, for the rows that had no value.
    pub(crate) fn pad_to(&mut self, len: usize) {
        macro_rules! pad {
            ($b:expr) => {{
                let have = ArrayBuilder::len($b);
                if have < len {
                    $b.append_nulls(len - have);
                }
            }};
        }
        match self {
            Sink::Layout(b) | Sink::Bytes(b) | Sink::Encoded(b) => pad!(b),
            Sink::Checksum(b) => pad!(b),
            Sink::Bool(b) => pad!(b),
            Sink::Int(b) => pad!(b),
            Sink::Float(b) => pad!(b),
            Sink::Str(b) => pad!(b),
            Sink::Gathered(v) => v.resize(len, None),
        }
    }

    /// Puts `value` (not null) at `row`. Converted as `build_column` converts (a value
    /// of another type: null).
    pub(crate) fn put(&mut self, row: usize, value: &'a Value) {
        self.pad_to(row);
        match self {
            Sink::Bool(b) => b.append_option(value.as_bool()),
            Sink::Int(b) => b.append_option(value.as_i64()),
            Sink::Float(b) => b.append_option(f64_of(value)),
            Sink::Str(b) => b.append_option(value.as_str()),
            Sink::Bytes(b) => b.append_option(value.as_bytes()),
            Sink::Encoded(b) => b.append_value(encode_value(value)),
            Sink::Gathered(v) => v.push(Some(value)),
            // not record fields: filled per row by `to_batch`
            Sink::Layout(_) | Sink::Checksum(_) => {}
        }
    }

    /// The column of `n` rows (nulls after the last value put).
    pub(crate) fn finish(mut self, field: &Field, n: usize) -> Result<ArrayRef> {
        self.pad_to(n);
        Ok(match self {
            Sink::Layout(mut b) | Sink::Bytes(mut b) | Sink::Encoded(mut b) => Arc::new(b.finish()),
            Sink::Checksum(mut b) => Arc::new(b.finish()),
            Sink::Bool(mut b) => Arc::new(b.finish()),
            Sink::Int(mut b) => Arc::new(b.finish()),
            Sink::Float(mut b) => Arc::new(b.finish()),
            Sink::Str(mut b) => Arc::new(b.finish()),
            Sink::Gathered(v) => build_column(field, v.into_iter(), n)?,
        })
    }
}

pub(crate) fn build_column<'a>(
    field: &Field,
    values: impl Iterator<Item = Option<&'a Value>>,
    n: usize,
) -> Result<ArrayRef> {
    Ok(match &col_type(field) {
        ColType::Bool => {
            let mut b = BooleanBuilder::with_capacity(n);
            values.for_each(|v| b.append_option(v.and_then(Value::as_bool)));
            Arc::new(b.finish())
        }
        ColType::Int => {
            let mut b = Int64Builder::with_capacity(n);
            values.for_each(|v| b.append_option(v.and_then(Value::as_i64)));
            Arc::new(b.finish())
        }
        ColType::Float => {
            let mut b = Float64Builder::with_capacity(n);
            values.for_each(|v| b.append_option(v.and_then(f64_of)));
            Arc::new(b.finish())
        }
        ColType::Str => {
            let mut b = StringBuilder::with_capacity(n, n * 16);
            values.for_each(|v| b.append_option(v.and_then(Value::as_str)));
            Arc::new(b.finish())
        }
        ColType::Bytes | ColType::Foreign(_) => {
            let mut b = BinaryBuilder::with_capacity(n, n * 16);
            values.for_each(|v| b.append_option(v.and_then(Value::as_bytes)));
            Arc::new(b.finish())
        }
        ColType::Encoded => {
            let mut b = BinaryBuilder::with_capacity(n, n * 16);
            values.for_each(|v| b.append_option(v.map(encode_value)));
            Arc::new(b.finish())
        }
        ColType::List(s) => {
            macro_rules! list {
                ($inner:expr, $get:expr) => {{
                    let mut b = ListBuilder::new($inner);
                    for v in values {
                        match v.and_then(Value::as_list) {
                            Some(items) => {
                                for item in items {
                                    b.values().append_option($get(item));
                                }
                                b.append(true);
                            }
                            None => b.append(false),
                        }
                    }
                    Arc::new(b.finish())
                }};
            }
            match s {
                Scalar::Bool => list!(BooleanBuilder::new(), Value::as_bool),
                Scalar::Int => list!(Int64Builder::new(), Value::as_i64),
                Scalar::Float => list!(Float64Builder::new(), f64_of),
                Scalar::Str => list!(StringBuilder::new(), Value::as_str),
            }
        }
        ColType::Struct(_) => {
            let DataType::Struct(children) = field.data_type() else {
                unreachable!("col_type gives Struct for struct fields only")
            };
            let maps: Vec<Option<&Record>> = values.map(|v| v.and_then(Value::as_map)).collect();
            let arrays = children
                .iter()
                .map(|child| {
                    let name = child.name().as_str();
                    // collected: one iterator type for every depth of nesting
                    let values: Vec<Option<&Value>> = maps
                        .iter()
                        .map(|m| m.and_then(|m| m.get(name)).filter(|v| !v.is_null()))
                        .collect();
                    build_column(child, values.into_iter(), n)
                })
                .collect::<Result<Vec<_>>>()?;
            let valid = NullBuffer::from_iter(maps.iter().map(Option::is_some));
            Arc::new(
                StructArray::try_new(children.clone(), arrays, Some(valid))
                    .map_err(Error::arrow("build a struct column"))?,
            )
        }
    })
}

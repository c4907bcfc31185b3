//! Records to Arrow record batches and back.
//!
//! Invariants: a batch built here has exactly the dataset's columns, in the dataset's
//! order; a row whose typed columns cannot reproduce its record exactly carries the
//! record's codec encoding in the layout column, and reading prefers that encoding, so
//! every record reads back equal to the one written (up to int-to-float widening).
//! Every row written here carries a checksum of its record ([`row_checksum`]); a row
//! read back whose values do not match it is refused, never returned.

use std::sync::Arc;

use arrow::array::StructArray;
use arrow::array::{
    Array, ArrayBuilder, ArrayRef, BinaryBuilder, BooleanArray, BooleanBuilder, Float64Builder,
    Int64Builder, ListBuilder, StringBuilder, UInt32Builder,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use arrow::record_batch::RecordBatch;
use persisting_codec::{
    DistinctNames, Record, Str, Value, decode_record, decode_value, encode_record, encode_value,
};

use crate::error::{Error, Result};
use crate::schema::{
    CHECKSUM_COLUMN, ColType, LAYOUT_COLUMN, Scalar, SchemaState, col_type, is_internal_column,
};

thread_local! {
    // the walk is written to a buffer and hashed once: one CRC call per row instead
    // of one per field part
    static WALK: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The checksum of a record as stored in [`CHECKSUM_COLUMN`]: CRC-32 (crc32fast)
/// over a canonical walk of the fields in order, where every number is
/// hashed as its `f64` bits so that the int-to-float widening of a column keeps the
/// checksums of the rows written before it valid. (Integers above 2^53 that differ only
/// in bits an `f64` cannot hold hash alike: damage confined to those bits is missed.)
pub fn row_checksum(record: &Record) -> u32 {
    WALK.with(|walk| {
        let mut buf = walk.borrow_mut();
        buf.clear();
        for (name, value) in record.iter() {
            walk_name(&mut buf, name);
            walk_value(&mut buf, value);
        }
        let sum = crc32fast::hash(&buf);
        if buf.capacity() > 1 << 20 {
            *buf = Vec::new(); // do not keep a huge record's buffer
        }
        sum
    })
}

// The pieces of the checksum walk, shared by `walk_value` and by the in-place walk of
// `Columns::verify_in_place`, which must write the same bytes.

/// A field name: its length (u32 LE), then its bytes.
fn walk_name(buf: &mut Vec<u8>, name: &str) {
    buf.extend_from_slice(&(name.len() as u32).to_le_bytes());
    buf.extend_from_slice(name.as_bytes());
}

/// A number, int or float alike: tag 2, then its `f64` bits (LE).
fn walk_number(buf: &mut Vec<u8>, f: f64) {
    buf.push(2);
    buf.extend_from_slice(&f.to_bits().to_le_bytes());
}

/// A bool: tag 1, then 0 or 1.
fn walk_bool(buf: &mut Vec<u8>, b: bool) {
    buf.extend_from_slice(&[1, u8::from(b)]);
}

/// Bytes of a string (tag 3) or a byte value (tag 4): tag, length (u64 LE), bytes.
fn walk_bytes(buf: &mut Vec<u8>, tag: u8, b: &[u8]) {
    buf.push(tag);
    buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
    buf.extend_from_slice(b);
}

fn walk_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => buf.push(0),
        Value::Bool(b) => walk_bool(buf, *b),
        Value::Int(i) => walk_number(buf, *i as f64),
        Value::Float(f) => walk_number(buf, *f),
        Value::String(s) => walk_bytes(buf, 3, s.as_bytes()),
        Value::Bytes(b) => walk_bytes(buf, 4, b),
        Value::List(items) => {
            buf.push(5);
            buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|i| walk_value(buf, i));
        }
        Value::Map(m) => {
            buf.push(6);
            buf.extend_from_slice(&(m.len() as u64).to_le_bytes());
            for (k, v) in m.iter() {
                walk_bytes(buf, 3, k.as_bytes());
                walk_value(buf, v);
            }
        }
    }
}

fn f64_of(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        _ => None,
    }
}

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
const PART_ROWS_MIN: usize = 16 << 10;

/// [`to_batch`] of consecutive parts of `records`, built at once on scoped threads
/// (as many as the machine has cores, each part at least [`PART_ROWS_MIN`] rows): a
/// flush's conversion uses the cores the caller leaves idle. Appended in order, the
/// batches hold the records in order.
pub(crate) fn to_batches(
    schema: &Arc<ArrowSchema>,
    state: &SchemaState,
    records: &[Record],
) -> Result<Vec<RecordBatch>> {
    let parts = crate::cores().min(records.len() / PART_ROWS_MIN).max(1);
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
enum Sink<'a> {
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
    fn for_field(field: &Field, n: usize) -> Self {
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
    fn pad_to(&mut self, len: usize) {
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
    fn put(&mut self, row: usize, value: &'a Value) {
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
    fn finish(mut self, field: &Field, n: usize) -> Result<ArrayRef> {
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

fn build_column<'a>(
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

/// The columns of a batch read from the dataset, prepared once per batch: record
/// fields in registry order (then any column the registry does not name), the layout
/// column and the row checksums.
struct Columns<'a> {
    /// the record fields' types and columns, in field order
    fields: Vec<(ColType, &'a ArrayRef)>,
    /// their names, one shared allocation each: the records of the batch point at it
    names: DistinctNames,
    typed: Vec<Typed<'a>>,
    layout: Option<&'a ArrayRef>,
    checksums: Option<&'a arrow::array::UInt32Array>,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch, order: &[String]) -> Result<Self> {
        use arrow::array::AsArray;
        let schema = batch.schema_ref();
        let checksums = schema.index_of(CHECKSUM_COLUMN).ok().and_then(|i| {
            batch
                .column(i)
                .as_primitive_opt::<arrow::datatypes::UInt32Type>()
        });
        let layout = schema.index_of(LAYOUT_COLUMN).ok().map(|i| batch.column(i));
        let mut names: Vec<Arc<str>> = Vec::new();
        let mut fields: Vec<(ColType, &ArrayRef)> = Vec::new();
        let mut push = |name: &str| {
            if let Ok(i) = schema.index_of(name)
                && !is_internal_column(name)
                && !names.iter().any(|n| &**n == name)
            {
                names.push(Arc::from(name));
                fields.push((col_type(schema.field(i)), batch.column(i)));
            }
        };
        order.iter().for_each(|n| push(n));
        schema.fields().iter().for_each(|f| push(f.name()));
        if let Some((name, (ColType::Foreign(t), _))) = names
            .iter()
            .zip(&fields)
            .find(|(_, (ty, _))| matches!(ty, ColType::Foreign(_)))
        {
            return Err(Error::UnsupportedColumn {
                column: name.to_string(),
                data_type: t.clone(),
            });
        }
        let typed = fields.iter().map(|(ty, col)| Typed::of(ty, col)).collect();
        // `push` keeps the names distinct, so this does not fail
        let names = DistinctNames::new(names).map_err(|source| Error::Corrupt {
            column: String::new(),
            offset: 0,
            source,
        })?;
        Ok(Self {
            fields,
            names,
            typed,
            layout: layout.filter(|l| l.null_count() < l.len()),
            checksums,
        })
    }

    /// Writes the value of field `i` in row `row` into `slot`; `false` when the row
    /// lacks the field. Strings of the common string columns are ranges of the text
    /// blocks shared by the rows near them when there are `blocks` (see
    /// [`TextBlocks`]); without, they are copied into the slot's own string buffer,
    /// reused when it has one.
    fn fill(
        &self,
        i: usize,
        row: usize,
        offset: u64,
        slot: &mut Value,
        blocks: Option<&mut TextBlocks>,
    ) -> Result<bool> {
        match &self.typed[i] {
            Typed::Str(a) => {
                if !a.is_valid(row) {
                    return Ok(false);
                }
                if let Some(blocks) = blocks {
                    *slot = Value::String(blocks.text(i, a, row));
                } else if let Value::String(s) = slot
                    && let Some(buf) = s.owned_mut()
                {
                    buf.clear();
                    buf.push_str(a.value(row));
                } else {
                    *slot = Value::String(Str::from(a.value(row)));
                }
                Ok(true)
            }
            _ => Ok(match self.value(i, row, offset)? {
                Some(v) => {
                    *slot = v;
                    true
                }
                None => false,
            }),
        }
    }

    /// The record of row `row` when it is kept whole in the layout column.
    fn layout_record(&self, row: usize, offset: u64) -> Result<Option<Record>> {
        let Some(layout) = self.layout.filter(|l| l.is_valid(row)) else {
            return Ok(None);
        };
        decode_record(binary_at(layout, row))
            .map(Some)
            .map_err(|source| Error::Corrupt {
                column: LAYOUT_COLUMN.to_owned(),
                offset,
                source,
            })
    }

    /// The value of field `i` in row `row`; `None` when the row lacks it.
    fn value(&self, i: usize, row: usize, offset: u64) -> Result<Option<Value>> {
        let (ty, col) = &self.fields[i];
        Ok(match &self.typed[i] {
            Typed::Int(a) => a.is_valid(row).then(|| Value::Int(a.value(row))),
            Typed::Float(a) => a.is_valid(row).then(|| Value::Float(a.value(row))),
            Typed::Str(a) => a.is_valid(row).then(|| Value::String(a.value(row).into())),
            Typed::Bool(a) => a.is_valid(row).then(|| Value::Bool(a.value(row))),
            Typed::Other => value_at(ty, col, row).map_err(|source| Error::Corrupt {
                column: self.names.names()[i].to_string(),
                offset,
                source,
            })?,
        })
    }

    /// The stored checksum of row `row`, if it has one.
    fn checksum(&self, row: usize) -> Option<u32> {
        self.checksums
            .filter(|c| c.is_valid(row))
            .map(|c| c.value(row))
    }

    /// Checks row `row` against its stored checksum without building its record
    /// (scalar columns are walked in place; other values are built, then walked).
    /// `prefixes[i]` is field `i`'s name as the walk writes it; `buf` is scratch.
    fn verify_in_place(
        &self,
        row: usize,
        offset: u64,
        dataset: &str,
        prefixes: &[Vec<u8>],
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let Some(expected) = self.checksum(row) else {
            return Ok(());
        };
        let found = match self.layout_record(row, offset)? {
            Some(record) => row_checksum(&record),
            None => {
                buf.clear();
                for (i, prefix) in prefixes.iter().enumerate() {
                    match &self.typed[i] {
                        Typed::Int(a) if a.is_valid(row) => {
                            buf.extend_from_slice(prefix);
                            walk_number(buf, a.value(row) as f64);
                        }
                        Typed::Float(a) if a.is_valid(row) => {
                            buf.extend_from_slice(prefix);
                            walk_number(buf, a.value(row));
                        }
                        Typed::Str(a) if a.is_valid(row) => {
                            buf.extend_from_slice(prefix);
                            walk_bytes(buf, 3, a.value(row).as_bytes());
                        }
                        Typed::Bool(a) if a.is_valid(row) => {
                            buf.extend_from_slice(prefix);
                            walk_bool(buf, a.value(row));
                        }
                        Typed::Int(_) | Typed::Float(_) | Typed::Str(_) | Typed::Bool(_) => {}
                        Typed::Other => {
                            if let Some(v) = self.value(i, row, offset)? {
                                buf.extend_from_slice(prefix);
                                walk_value(buf, &v);
                            }
                        }
                    }
                }
                crc32fast::hash(buf)
            }
        };
        check_sum(dataset, offset, expected, found)
    }
}

/// Rows of text a block holds at most (see [`TextBlocks`]).
pub const TEXT_BLOCK_ROWS: usize = 64;
/// Bytes of text a block holds at most, unless one row's text alone is longer.
pub const TEXT_BLOCK_BYTES: usize = 16 << 10;

/// The text of a batch's string columns, copied out of the batch in blocks: each
/// block holds the text of up to [`TEXT_BLOCK_ROWS`] consecutive rows of one column
/// (at most [`TEXT_BLOCK_BYTES`], or one row's text when that is longer), in one
/// shared `String`, and the strings of those rows are ranges of it ([`Str::in_block`]).
/// Reading so allocates once per block instead of once per string, and a record kept
/// on its own keeps at most its blocks alive, never the batch.
struct TextBlocks {
    blocks: Vec<Option<TextBlock>>,
}

struct TextBlock {
    rows: std::ops::Range<usize>,
    /// Offset in the column's value data where the block's text starts.
    base: usize,
    text: Arc<String>,
}

impl TextBlocks {
    fn new(columns: usize) -> Self {
        Self {
            blocks: (0..columns).map(|_| None).collect(),
        }
    }

    /// The text of row `row` (not null) of string column `i`, `a`.
    fn text(&mut self, i: usize, a: &arrow::array::StringArray, row: usize) -> Str {
        let offsets = a.value_offsets();
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        let slot = &mut self.blocks[i];
        if !slot.as_ref().is_some_and(|b| b.rows.contains(&row)) {
            *slot = TextBlock::starting_at(a, row);
        }
        slot.as_ref()
            .and_then(|b| {
                Str::in_block(
                    &b.text,
                    start.checked_sub(b.base)?..end.checked_sub(b.base)?,
                )
            })
            // a block that could not be made: the row's text on its own
            .unwrap_or_else(|| Str::from(a.value(row)))
    }
}

impl TextBlock {
    /// The block of rows from `row` on; `None` when their text is not one valid
    /// string (text of null rows may be anything), so rows are copied one by one.
    fn starting_at(a: &arrow::array::StringArray, row: usize) -> Option<Self> {
        let offsets = a.value_offsets();
        let base = offsets[row] as usize;
        let last = (row + TEXT_BLOCK_ROWS).min(a.len());
        let mut end_row = row + 1;
        while end_row < last
            && (offsets[end_row + 1] as usize).saturating_sub(base) <= TEXT_BLOCK_BYTES
        {
            end_row += 1;
        }
        let bytes = a.value_data().get(base..offsets[end_row] as usize)?;
        let text = std::str::from_utf8(bytes).ok()?;
        Some(Self {
            rows: row..end_row,
            base,
            text: Arc::new(text.to_owned()),
        })
    }
}

/// A row whose checksum does not match is an error naming the dataset and offset.
fn check_sum(dataset: &str, offset: u64, expected: u32, found: u32) -> Result<()> {
    if expected != found {
        return Err(Error::ChecksumMismatch {
            dataset: dataset.to_owned(),
            offset,
            expected,
            found,
        });
    }
    Ok(())
}

/// Writes the records of `batch` into `out[*filled..]`, each checked against its
/// checksum, reusing what those records hold (see [`DistinctNames::refill`]); records
/// are pushed when `out` runs out of them. Advances `*filled` past each record
/// written. `order` is the field registry (the order fields are put back in);
/// `first_offset` is the offset of the batch's first row. `refill`: strings are
/// copied into the string buffers `out`'s records hold (reused from read to read);
/// otherwise they share text blocks ([`TextBlocks`]), allocated once per block.
/// `checked`: the batch's rows were checked in place ([`verify_rows`]) already.
#[allow(clippy::too_many_arguments)]
pub(crate) fn from_batch(
    batch: &RecordBatch,
    order: &[String],
    first_offset: u64,
    dataset: &str,
    out: &mut Vec<Record>,
    filled: &mut usize,
    refill: bool,
    checked: bool,
) -> Result<()> {
    let cols = Columns::of(batch, order)?;
    // refilled records get their strings copied into their own buffers
    let mut blocks = (!refill).then(|| TextBlocks::new(cols.typed.len()));
    for row in 0..batch.num_rows() {
        let offset = first_offset + row as u64;
        if *filled == out.len() {
            out.push(Record::new());
        }
        let record = &mut out[*filled];
        match cols.layout_record(row, offset)? {
            Some(decoded) => *record = decoded,
            None => cols.names.refill(record, |i, slot| {
                cols.fill(i, row, offset, slot, blocks.as_mut())
            })?,
        }
        if let Some(expected) = cols.checksum(row).filter(|_| !checked) {
            check_sum(dataset, offset, expected, row_checksum(record))?;
        }
        *filled += 1;
    }
    Ok(())
}

/// Checks every row of `batch` (a dataset batch whose first row is `first_offset`)
/// against its checksum, reading the scalar columns in place (others are built, then
/// walked; layout rows are decoded). Rows without a checksum (written by another
/// tool) pass.
pub(crate) fn verify_rows(
    batch: &RecordBatch,
    order: &[String],
    first_offset: u64,
    dataset: &str,
) -> Result<()> {
    let cols = Columns::of(batch, order)?;
    if cols.checksums.is_some() {
        let prefixes: Vec<Vec<u8>> = cols
            .names
            .names()
            .iter()
            .map(|name| {
                let mut p = Vec::new();
                walk_name(&mut p, name);
                p
            })
            .collect();
        let mut buf = Vec::new();
        for row in 0..batch.num_rows() {
            let offset = first_offset + row as u64;
            cols.verify_in_place(row, offset, dataset, &prefixes, &mut buf)?;
        }
    }
    Ok(())
}

/// The record fields of a dataset batch (verified by [`verify_rows`]), in field order,
/// without this crate's own columns.
pub(crate) fn record_columns(batch: &RecordBatch, order: &[String]) -> Result<RecordBatch> {
    let cols = Columns::of(batch, order)?;
    let schema = batch.schema_ref();
    let indices: Vec<usize> = cols
        .names
        .names()
        .iter()
        .filter_map(|name| schema.index_of(name).ok())
        .collect();
    batch
        .project(&indices)
        .map_err(Error::arrow("project a record batch"))
}

/// A column downcast once per batch for the common scalar types, so that rows are
/// read without a type dispatch per value.
enum Typed<'a> {
    Int(&'a arrow::array::Int64Array),
    Float(&'a arrow::array::Float64Array),
    Str(&'a arrow::array::StringArray),
    Bool(&'a BooleanArray),
    Other,
}

impl<'a> Typed<'a> {
    fn of(ty: &ColType, col: &'a ArrayRef) -> Self {
        use arrow::array::AsArray;
        use arrow::datatypes as t;
        match (ty, col.data_type()) {
            (ColType::Int, DataType::Int64) => Self::Int(col.as_primitive::<t::Int64Type>()),
            (ColType::Float, DataType::Float64) => {
                Self::Float(col.as_primitive::<t::Float64Type>())
            }
            (ColType::Str, DataType::Utf8) => Self::Str(col.as_string::<i32>()),
            (ColType::Bool, DataType::Boolean) => Self::Bool(col.as_boolean()),
            _ => Self::Other,
        }
    }
}

fn binary_at(col: &ArrayRef, row: usize) -> &[u8] {
    use arrow::array::AsArray;
    match col.data_type() {
        DataType::LargeBinary => col.as_binary::<i64>().value(row),
        _ => col.as_binary::<i32>().value(row),
    }
}

fn scalar_at(col: &ArrayRef, row: usize) -> Value {
    use arrow::array::AsArray;
    use arrow::datatypes as t;
    if !col.is_valid(row) {
        return Value::Null;
    }
    match col.data_type() {
        DataType::Boolean => {
            let b: &BooleanArray = col.as_boolean();
            Value::Bool(b.value(row))
        }
        DataType::Int8 => Value::Int(i64::from(col.as_primitive::<t::Int8Type>().value(row))),
        DataType::Int16 => Value::Int(i64::from(col.as_primitive::<t::Int16Type>().value(row))),
        DataType::Int32 => Value::Int(i64::from(col.as_primitive::<t::Int32Type>().value(row))),
        DataType::Int64 => Value::Int(col.as_primitive::<t::Int64Type>().value(row)),
        DataType::UInt8 => Value::Int(i64::from(col.as_primitive::<t::UInt8Type>().value(row))),
        DataType::UInt16 => Value::Int(i64::from(col.as_primitive::<t::UInt16Type>().value(row))),
        DataType::UInt32 => Value::Int(i64::from(col.as_primitive::<t::UInt32Type>().value(row))),
        DataType::Float16 => {
            Value::Float(f64::from(col.as_primitive::<t::Float16Type>().value(row)))
        }
        DataType::Float32 => {
            Value::Float(f64::from(col.as_primitive::<t::Float32Type>().value(row)))
        }
        DataType::Float64 => Value::Float(col.as_primitive::<t::Float64Type>().value(row)),
        DataType::Utf8 => Value::String(col.as_string::<i32>().value(row).into()),
        DataType::LargeUtf8 => Value::String(col.as_string::<i64>().value(row).into()),
        _ => Value::Null,
    }
}

/// The value of row `row` of a column of type `ty`; `None` when the row is null (a
/// struct row whose children are all null included).
fn value_at(
    ty: &ColType,
    col: &ArrayRef,
    row: usize,
) -> Result<Option<Value>, persisting_codec::Error> {
    use arrow::array::AsArray;
    if !col.is_valid(row) {
        return Ok(None);
    }
    Ok(Some(match ty {
        ColType::Encoded => decode_value(binary_at(col, row))?,
        ColType::Bytes => Value::Bytes(binary_at(col, row).to_vec()),
        ColType::List(_) => {
            let items: ArrayRef = match col.data_type() {
                DataType::LargeList(_) => col.as_list::<i64>().value(row),
                DataType::FixedSizeList(_, _) => col.as_fixed_size_list().value(row),
                _ => col.as_list::<i32>().value(row),
            };
            Value::List((0..items.len()).map(|i| scalar_at(&items, i)).collect())
        }
        ColType::Struct(children) => {
            let s = col.as_struct();
            let mut map = Record::with_capacity(children.len());
            for (child, array) in children.iter().zip(s.columns()) {
                let Some(ty) = &child.ty else { continue };
                if let Some(v) = value_at(ty, array, row)? {
                    map.insert(child.name.as_str(), v);
                }
            }
            if map.is_empty() {
                return Ok(None);
            }
            Value::Map(map)
        }
        _ => scalar_at(col, row),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    /// Reads every row of `a` through one `TextBlocks`, checking each text against
    /// the array and each block against its bounds; returns the distinct blocks.
    fn read_all(a: &StringArray) -> Vec<Arc<String>> {
        let mut blocks = TextBlocks::new(1);
        let mut seen: Vec<Arc<String>> = Vec::new();
        for row in 0..a.len() {
            if !a.is_valid(row) {
                continue;
            }
            let text = blocks.text(0, a, row);
            assert_eq!(&*text, a.value(row), "row {row}");
            assert!(text.is_shared(), "row {row}");
            let block = blocks.blocks[0].as_ref().unwrap();
            assert!(block.rows.contains(&row));
            assert!(block.rows.len() <= TEXT_BLOCK_ROWS);
            assert!(block.rows.len() == 1 || block.text.len() <= TEXT_BLOCK_BYTES);
            if !seen.iter().any(|b| Arc::ptr_eq(b, &block.text)) {
                seen.push(Arc::clone(&block.text));
            }
        }
        seen
    }

    #[test]
    fn text_blocks_give_every_row_its_text_and_stay_within_their_bounds() {
        let rows: Vec<Option<String>> = (0..300)
            .map(|i| match i % 7 {
                0 => None,
                1 => Some(String::new()),
                2 => Some(format!("é{i}ü")),
                // longer than a block on its own
                3 if i % 50 == 3 => Some("x".repeat(TEXT_BLOCK_BYTES + i)),
                _ => Some(format!("row {i} ").repeat(i % 40)),
            })
            .collect();
        let a = StringArray::from(rows);
        let blocks = read_all(&a);
        assert!(blocks.len() < a.len() / 4, "{} blocks", blocks.len());
        // an array sliced from the middle: offsets do not start at zero
        let sliced = a.slice(101, 150);
        read_all(sliced.as_any().downcast_ref().unwrap());
    }

    #[test]
    fn copied_text_reuses_the_slot_and_shares_nothing() {
        let a = StringArray::from(vec!["first", "second"]);
        let names = DistinctNames::new(vec![Arc::from("s")]).unwrap();
        let schema = Arc::new(ArrowSchema::new(vec![Field::new(
            "s",
            DataType::Utf8,
            true,
        )]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(a)]).unwrap();
        let cols = Columns::of(&batch, &["s".to_owned()]).unwrap();
        let mut record = Record::new();
        names
            .refill(&mut record, |i, slot| cols.fill(i, 0, 0, slot, None))
            .unwrap();
        let before = record["s"].as_str().unwrap().as_ptr();
        names
            .refill(&mut record, |i, slot| cols.fill(i, 1, 1, slot, None))
            .unwrap();
        assert_eq!(record["s"], Value::from("second"));
        assert!(matches!(&record["s"], Value::String(s) if !s.is_shared()));
        assert_eq!(record["s"].as_str().unwrap().as_ptr(), before);
        let mut share = TextBlocks::new(1);
        names
            .refill(&mut record, |i, slot| {
                cols.fill(i, 0, 0, slot, Some(&mut share))
            })
            .unwrap();
        assert!(matches!(&record["s"], Value::String(s) if s.is_shared() && *s == "first"));
    }
}

//! Arrow record batches back to records, every row checked against its checksum.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use persisting_codec::{DistinctNames, Record, Str, Value, decode_record, decode_value};

use super::checksum::{row_checksum, walk_bool, walk_bytes, walk_name, walk_number, walk_value};
use super::text::TextBlocks;
use crate::error::{Error, Result};
use crate::schema::{CHECKSUM_COLUMN, ColType, LAYOUT_COLUMN, col_type, is_internal_column};

/// The columns of a batch read from the dataset, prepared once per batch: record
/// fields in registry order (then any column the registry does not name), the layout
/// column and the row checksums.
pub(crate) struct Columns<'a> {
    /// the record fields' types and columns, in field order
    fields: Vec<(ColType, &'a ArrayRef)>,
    /// their names, one shared allocation each: the records of the batch point at it
    pub(crate) names: DistinctNames,
    typed: Vec<Typed<'a>>,
    layout: Option<&'a ArrayRef>,
    checksums: Option<&'a arrow::array::UInt32Array>,
}

impl<'a> Columns<'a> {
    pub(crate) fn of(batch: &'a RecordBatch, order: &[String]) -> Result<Self> {
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
    pub(crate) fn fill(
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
    pub(crate) fn layout_record(&self, row: usize, offset: u64) -> Result<Option<Record>> {
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
    pub(crate) fn value(&self, i: usize, row: usize, offset: u64) -> Result<Option<Value>> {
        Ok(self.cell(i, row, offset)?.map(Cell::into_value))
    }

    /// The value of field `i` in row `row` as it is read, a string borrowed from the
    /// batch; `None` when the row lacks it.
    pub(crate) fn cell(&self, i: usize, row: usize, offset: u64) -> Result<Option<Cell<'a>>> {
        let (ty, col) = &self.fields[i];
        Ok(match &self.typed[i] {
            Typed::Int(a) => a.is_valid(row).then(|| Cell::Int(a.value(row))),
            Typed::Float(a) => a.is_valid(row).then(|| Cell::Float(a.value(row))),
            Typed::Str(a) => a.is_valid(row).then(|| Cell::Str(a.value(row))),
            Typed::Bool(a) => a.is_valid(row).then(|| Cell::Bool(a.value(row))),
            Typed::Other => value_at(ty, col, row)
                .map_err(|source| Error::Corrupt {
                    column: self.names.names()[i].to_string(),
                    offset,
                    source,
                })?
                .map(Cell::Value),
        })
    }

    /// The stored checksum of row `row`, if it has one.
    pub(crate) fn checksum(&self, row: usize) -> Option<u32> {
        self.checksums
            .filter(|c| c.is_valid(row))
            .map(|c| c.value(row))
    }

    /// Checks row `row` against its stored checksum without building its record
    /// (scalar columns are walked in place; other values are built, then walked).
    /// `prefixes[i]` is field `i`'s name as the walk writes it; `buf` is scratch.
    pub(crate) fn verify_in_place(
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

/// A row whose checksum does not match is an error naming the dataset and offset.
pub(crate) fn check_sum(dataset: &str, offset: u64, expected: u32, found: u32) -> Result<()> {
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

/// Where the strings of records built from a batch live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strings {
    /// Ranges of text blocks shared by nearby rows ([`TextBlocks`]), allocated once
    /// per block (`read`).
    Shared,
    /// Copied into the string buffers the records being refilled hold, reused from
    /// read to read (`read_into`).
    Copied,
}

/// What every batch of one read into records shares: the field registry (the order
/// fields are put back in), the dataset (named in errors) and where strings go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IntoRecords<'a> {
    pub(crate) order: &'a [String],
    pub(crate) dataset: &'a str,
    pub(crate) strings: Strings,
}

/// Writes the records of `batch` into `out[*filled..]`, each checked against its
/// checksum, reusing what those records hold (see [`DistinctNames::refill`]); records
/// are pushed when `out` runs out of them. Advances `*filled` past each record
/// written. `first_offset` is the offset of the batch's first row; `checked`: the
/// batch's rows were checked in place ([`verify_rows`]) already.
pub(crate) fn from_batch(
    how: IntoRecords<'_>,
    batch: &RecordBatch,
    first_offset: u64,
    checked: bool,
    out: &mut Vec<Record>,
    filled: &mut usize,
) -> Result<()> {
    let IntoRecords {
        order,
        dataset,
        strings,
    } = how;
    let cols = Columns::of(batch, order)?;
    let mut blocks = (strings == Strings::Shared).then(|| TextBlocks::new(cols.typed.len()));
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

/// One field's value as a row is read: the common scalar types straight from their
/// columns (a string borrowed from the batch), anything else built.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// An int column's value.
    Int(i64),
    /// A float column's value.
    Float(f64),
    /// A bool column's value.
    Bool(bool),
    /// A string column's value, borrowed from the batch.
    Str(&'a str),
    /// Any other value (lists, maps, bytes, encoded values), built.
    Value(Value),
}

impl Cell<'_> {
    /// This cell as a record value.
    pub fn into_value(self) -> Value {
        match self {
            Cell::Int(i) => Value::Int(i),
            Cell::Float(f) => Value::Float(f),
            Cell::Bool(b) => Value::Bool(b),
            Cell::Str(s) => Value::String(s.into()),
            Cell::Value(v) => v,
        }
    }
}

/// A column downcast once per batch for the common scalar types, so that rows are
/// read without a type dispatch per value.
pub(crate) enum Typed<'a> {
    Int(&'a arrow::array::Int64Array),
    Float(&'a arrow::array::Float64Array),
    Str(&'a arrow::array::StringArray),
    Bool(&'a BooleanArray),
    Other,
}

impl<'a> Typed<'a> {
    pub(crate) fn of(ty: &ColType, col: &'a ArrayRef) -> Self {
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

pub(crate) fn binary_at(col: &ArrayRef, row: usize) -> &[u8] {
    use arrow::array::AsArray;
    match col.data_type() {
        DataType::LargeBinary => col.as_binary::<i64>().value(row),
        _ => col.as_binary::<i32>().value(row),
    }
}

pub(crate) fn scalar_at(col: &ArrayRef, row: usize) -> Value {
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
pub(crate) fn value_at(
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

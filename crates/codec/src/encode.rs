//! Binary encoding of records and batches (format version 1, `docs/record-format.md`).
//!
//! Invariants:
//! - encoding is deterministic: equal records (in the sense of [`crate::Record`]'s
//!   equality) give identical bytes, so encoded records can be compared and hashed;
//! - a non-empty list whose elements are all floats is written packed (tag `0x09`),
//!   all integers packed too (tag `0x0A`); every other list is generic (tag `0x07`);
//! - encoding never fails: every [`crate::Value`] has a representation.

use crate::value::{Record, Value};

/// Leading byte of one encoded record (format version 1).
pub const RECORD_FORMAT_V1: u8 = 0x01;
/// Leading byte of an encoded batch of records (format version 1).
pub const BATCH_FORMAT_V1: u8 = 0x81;
/// Leading byte of one encoded standalone value (format version 1).
pub const VALUE_FORMAT_V1: u8 = 0x02;

pub(crate) const TAG_NULL: u8 = 0x00;
pub(crate) const TAG_FALSE: u8 = 0x01;
pub(crate) const TAG_TRUE: u8 = 0x02;
pub(crate) const TAG_INT: u8 = 0x03;
pub(crate) const TAG_FLOAT: u8 = 0x04;
pub(crate) const TAG_STRING: u8 = 0x05;
pub(crate) const TAG_BYTES: u8 = 0x06;
pub(crate) const TAG_LIST: u8 = 0x07;
pub(crate) const TAG_MAP: u8 = 0x08;
pub(crate) const TAG_FLOAT_LIST: u8 = 0x09;
pub(crate) const TAG_INT_LIST: u8 = 0x0A;

/// Appends the encoding of `record` (format byte included) to `out`.
pub fn encode_record_into(record: &Record, out: &mut Vec<u8>) {
    out.push(RECORD_FORMAT_V1);
    write_body(record, out);
}

/// The encoding of `record` (format byte included).
///
/// ```
/// use persisting_codec::{record, encode_record, decode_record};
/// let r = record! { "id" => "7", "score" => 0.5 };
/// let bytes = encode_record(&r);
/// assert_eq!(decode_record(&bytes).unwrap(), r);
/// ```
pub fn encode_record(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_record_into(record, &mut out);
    out
}

/// The length of [`encode_record`]'s output for `record`, computed without encoding
/// it: the measure of a record's size wherever one is bounded (the bytes a bucket
/// holds uncommitted).
///
/// ```
/// use persisting_codec::{record, encode_record, encoded_len};
/// let r = record! { "id" => "7", "tags" => vec![1i64, 300] };
/// assert_eq!(encoded_len(&r), encode_record(&r).len());
/// ```
pub fn encoded_len(record: &Record) -> usize {
    1 + body_len(record)
}

fn body_len(record: &Record) -> usize {
    let fields: usize = record
        .iter()
        .map(|(name, value)| bytes_len(name.len()) + value_len(value))
        .sum();
    varint_len(record.len() as u64) + fields
}

fn value_len(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 1,
        Value::Int(v) => 1 + varint_len(zigzag(*v)),
        Value::Float(_) => 9,
        Value::String(s) => 1 + bytes_len(s.len()),
        Value::Bytes(b) => 1 + bytes_len(b.len()),
        Value::List(items) => {
            let n = 1 + varint_len(items.len() as u64);
            if !items.is_empty() && items.iter().all(|v| matches!(v, Value::Float(_))) {
                n + 8 * items.len()
            } else if !items.is_empty() && items.iter().all(|v| matches!(v, Value::Int(_))) {
                let ints: usize = items
                    .iter()
                    .map(|v| match v {
                        Value::Int(i) => varint_len(zigzag(*i)),
                        _ => 0,
                    })
                    .sum();
                n + ints
            } else {
                n + items.iter().map(value_len).sum::<usize>()
            }
        }
        Value::Map(map) => 1 + body_len(map),
    }
}

fn bytes_len(len: usize) -> usize {
    varint_len(len as u64) + len
}

#[inline]
fn varint_len(v: u64) -> usize {
    // 7 bits per byte; 0 takes one byte
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// The encoding of one standalone value (for a column that stores values the columnar
/// layer cannot type, such as mixed lists).
pub fn encode_value(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.push(VALUE_FORMAT_V1);
    write_value(value, &mut out);
    out
}

/// Appends the encoding of a batch of records to `out`: one format byte, the record
/// count, then each record body prefixed with its length.
pub fn encode_batch_into<'a, I>(records: I, out: &mut Vec<u8>)
where
    I: IntoIterator<Item = &'a Record>,
    I::IntoIter: ExactSizeIterator,
{
    let records = records.into_iter();
    out.push(BATCH_FORMAT_V1);
    write_varint(records.len() as u64, out);
    let mut body = Vec::new();
    for record in records {
        body.clear();
        write_body(record, &mut body);
        write_varint(body.len() as u64, out);
        out.extend_from_slice(&body);
    }
}

/// The encoding of a batch of records.
pub fn encode_batch(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * records.len() + 8);
    encode_batch_into(records, &mut out);
    out
}

fn write_body(record: &Record, out: &mut Vec<u8>) {
    write_varint(record.len() as u64, out);
    for (name, value) in record.iter() {
        write_bytes(name.as_bytes(), out);
        write_value(value, out);
    }
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(TAG_NULL),
        Value::Bool(false) => out.push(TAG_FALSE),
        Value::Bool(true) => out.push(TAG_TRUE),
        Value::Int(v) => {
            out.push(TAG_INT);
            write_varint(zigzag(*v), out);
        }
        Value::Float(v) => {
            out.push(TAG_FLOAT);
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        Value::String(s) => {
            out.push(TAG_STRING);
            write_bytes(s.as_bytes(), out);
        }
        Value::Bytes(b) => {
            out.push(TAG_BYTES);
            write_bytes(b, out);
        }
        Value::List(items) => write_list(items, out),
        Value::Map(map) => {
            out.push(TAG_MAP);
            write_body(map, out);
        }
    }
}

fn write_list(items: &[Value], out: &mut Vec<u8>) {
    if !items.is_empty() && items.iter().all(|v| matches!(v, Value::Float(_))) {
        out.push(TAG_FLOAT_LIST);
        write_varint(items.len() as u64, out);
        out.reserve(items.len() * 8);
        for item in items {
            if let Value::Float(f) = item {
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
        }
    } else if !items.is_empty() && items.iter().all(|v| matches!(v, Value::Int(_))) {
        out.push(TAG_INT_LIST);
        write_varint(items.len() as u64, out);
        for item in items {
            if let Value::Int(i) = item {
                write_varint(zigzag(*i), out);
            }
        }
    } else {
        out.push(TAG_LIST);
        write_varint(items.len() as u64, out);
        for item in items {
            write_value(item, out);
        }
    }
}

fn write_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    write_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// Unsigned LEB128: seven bits per byte, low bits first, high bit set on all but the
/// last byte.
#[inline]
pub(crate) fn write_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_round_trips_extremes() {
        for v in [0, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }

    #[test]
    fn varint_widths() {
        let mut out = Vec::new();
        write_varint(127, &mut out);
        assert_eq!(out, [0x7f]);
        out.clear();
        write_varint(128, &mut out);
        assert_eq!(out, [0x80, 0x01]);
        out.clear();
        write_varint(u64::MAX, &mut out);
        assert_eq!(out.len(), 10);
        assert_eq!(out[9], 0x01);
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::MAX >> 1, u64::MAX] {
            out.clear();
            write_varint(v, &mut out);
            assert_eq!(varint_len(v), out.len(), "{v}");
        }
    }

    #[test]
    fn packed_lists_only_when_homogeneous() {
        let mut out = Vec::new();
        write_list(&[Value::Float(1.0), Value::Float(2.0)], &mut out);
        assert_eq!(out[0], TAG_FLOAT_LIST);
        out.clear();
        write_list(&[Value::Int(1), Value::Float(2.0)], &mut out);
        assert_eq!(out[0], TAG_LIST);
        out.clear();
        write_list(&[], &mut out);
        assert_eq!(out, [TAG_LIST, 0]);
    }
}

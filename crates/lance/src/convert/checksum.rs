//! The row checksum: CRC-32 over a canonical walk of a record, stored per row.

use persisting_codec::{Record, Value};

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
pub(crate) fn walk_name(buf: &mut Vec<u8>, name: &str) {
    buf.extend_from_slice(&(name.len() as u32).to_le_bytes());
    buf.extend_from_slice(name.as_bytes());
}

/// A number, int or float alike: tag 2, then its `f64` bits (LE).
pub(crate) fn walk_number(buf: &mut Vec<u8>, f: f64) {
    buf.push(2);
    buf.extend_from_slice(&f.to_bits().to_le_bytes());
}

/// A bool: tag 1, then 0 or 1.
pub(crate) fn walk_bool(buf: &mut Vec<u8>, b: bool) {
    buf.extend_from_slice(&[1, u8::from(b)]);
}

/// Bytes of a string (tag 3) or a byte value (tag 4): tag, length (u64 LE), bytes.
pub(crate) fn walk_bytes(buf: &mut Vec<u8>, tag: u8, b: &[u8]) {
    buf.push(tag);
    buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
    buf.extend_from_slice(b);
}

pub(crate) fn walk_value(buf: &mut Vec<u8>, v: &Value) {
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

pub(crate) fn f64_of(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        _ => None,
    }
}

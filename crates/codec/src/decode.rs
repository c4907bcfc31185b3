//! Decoding of records and batches from untrusted bytes.
//!
//! Invariants:
//! - decoding never panics and always terminates, whatever the input;
//! - every declared length or count is checked against the bytes that remain and
//!   against [`Limits`] *before* anything is allocated for it, so the memory a decode
//!   uses is bounded by a small multiple of the input's size;
//! - a successful decode consumed the input exactly (no trailing bytes), and every
//!   error names the byte offset where it was detected.

use crate::encode::{
    BATCH_FORMAT_V1, RECORD_FORMAT_V1, TAG_BYTES, TAG_FALSE, TAG_FLOAT, TAG_FLOAT_LIST, TAG_INT,
    TAG_INT_LIST, TAG_LIST, TAG_MAP, TAG_NULL, TAG_STRING, TAG_TRUE, VALUE_FORMAT_V1, unzigzag,
};
use crate::error::{Error, Result};
use crate::value::{Record, Value};

/// Upper bounds a decoder enforces on untrusted input. Every limit is checked before
/// the memory it guards is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest input accepted, in bytes (default 64 MiB).
    pub input_bytes_max: u64,
    /// Deepest nesting of lists and maps; the record itself is depth 1 (default 64).
    pub nesting_depth_max: u32,
    /// Longest string, byte string or field name, in bytes (default 16 MiB).
    pub string_bytes_max: u64,
    /// Most elements in one list or fields in one map or record (default 1,048,576).
    pub collection_len_max: u64,
    /// Most records in one batch (default 1,048,576).
    pub batch_records_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            input_bytes_max: 64 << 20,
            nesting_depth_max: 64,
            string_bytes_max: 16 << 20,
            collection_len_max: 1 << 20,
            batch_records_max: 1 << 20,
        }
    }
}

/// Decodes one record encoded by [`crate::encode_record`], with default [`Limits`].
pub fn decode_record(bytes: &[u8]) -> Result<Record> {
    decode_record_with(bytes, &Limits::default())
}

/// Decodes one record with explicit limits.
pub fn decode_record_with(bytes: &[u8], limits: &Limits) -> Result<Record> {
    let mut cur = Cursor::new(bytes, limits)?;
    cur.expect_format(RECORD_FORMAT_V1)?;
    let record = cur.body(1)?;
    cur.finish()?;
    Ok(record)
}

/// Decodes one value encoded by [`crate::encode_value`], with default [`Limits`].
pub fn decode_value(bytes: &[u8]) -> Result<Value> {
    let limits = Limits::default();
    let mut cur = Cursor::new(bytes, &limits)?;
    cur.expect_format(VALUE_FORMAT_V1)?;
    let value = cur.value(1)?;
    cur.finish()?;
    Ok(value)
}

/// Decodes a batch encoded by [`crate::encode_batch`], with default [`Limits`].
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Record>> {
    decode_batch_with(bytes, &Limits::default())
}

/// Decodes a batch with explicit limits.
pub fn decode_batch_with(bytes: &[u8], limits: &Limits) -> Result<Vec<Record>> {
    let mut cur = Cursor::new(bytes, limits)?;
    cur.expect_format(BATCH_FORMAT_V1)?;
    let at = cur.pos;
    let count = cur.varint()?;
    cur.check_limit(at, "batch_records_max", limits.batch_records_max, count)?;
    // Every record takes at least two bytes (its length and its field count).
    cur.check_remaining(at, count.saturating_mul(2))?;
    let mut records = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let at = cur.pos;
        let len = cur.varint()?;
        cur.check_remaining(at, len)?;
        let start = cur.pos;
        let record = cur.body(1)?;
        let actual = (cur.pos - start) as u64;
        if actual != len {
            return Err(Error::LengthMismatch {
                offset: at,
                declared: len,
                actual,
            });
        }
        records.push(record);
    }
    cur.finish()?;
    Ok(records)
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: &'a Limits,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], limits: &'a Limits) -> Result<Self> {
        let len = buf.len() as u64;
        if len > limits.input_bytes_max {
            return Err(Error::LimitExceeded {
                offset: 0,
                limit: "input_bytes_max",
                max: limits.input_bytes_max,
                found: len,
            });
        }
        Ok(Self {
            buf,
            pos: 0,
            limits,
        })
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn check_remaining(&self, at: usize, needed: u64) -> Result<()> {
        let remaining = self.remaining() as u64;
        if needed > remaining {
            return Err(Error::UnexpectedEnd {
                offset: at,
                needed: needed - remaining,
            });
        }
        Ok(())
    }

    fn check_limit(&self, at: usize, limit: &'static str, max: u64, found: u64) -> Result<()> {
        if found > max {
            return Err(Error::LimitExceeded {
                offset: at,
                limit,
                max,
                found,
            });
        }
        Ok(())
    }

    fn finish(&self) -> Result<()> {
        if self.pos != self.buf.len() {
            return Err(Error::TrailingBytes {
                offset: self.pos,
                count: self.remaining(),
            });
        }
        Ok(())
    }

    fn expect_format(&mut self, expected: u8) -> Result<()> {
        let found = self.byte()?;
        if found != expected {
            return Err(Error::UnknownFormat {
                offset: 0,
                expected,
                found,
            });
        }
        Ok(())
    }

    #[inline]
    fn byte(&mut self) -> Result<u8> {
        match self.buf.get(self.pos) {
            Some(b) => {
                self.pos += 1;
                Ok(*b)
            }
            None => Err(Error::UnexpectedEnd {
                offset: self.pos,
                needed: 1,
            }),
        }
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|end| *end <= self.buf.len());
        match end {
            Some(end) => {
                let slice = &self.buf[self.pos..end];
                self.pos = end;
                Ok(slice)
            }
            None => Err(Error::UnexpectedEnd {
                offset: self.pos,
                needed: (n - self.remaining()) as u64,
            }),
        }
    }

    #[inline]
    fn varint(&mut self) -> Result<u64> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?;
            if i == 9 && b > 1 {
                return Err(Error::BadVarint { offset: start });
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(Error::BadVarint { offset: start })
    }

    fn f64(&mut self) -> Result<f64> {
        let raw = self.take(8)?;
        let mut bits = [0u8; 8];
        bits.copy_from_slice(raw);
        Ok(f64::from_bits(u64::from_le_bytes(bits)))
    }

    /// Reads a length-prefixed byte run, checking the string limit and the remaining
    /// input before touching it.
    fn sized(&mut self) -> Result<&'a [u8]> {
        let at = self.pos;
        let len = self.varint()?;
        self.check_limit(at, "string_bytes_max", self.limits.string_bytes_max, len)?;
        self.check_remaining(self.pos, len)?;
        self.take(len as usize)
    }

    fn string(&mut self) -> Result<String> {
        let raw = self.sized()?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(Error::InvalidUtf8 {
                offset: self.pos - raw.len(),
            }),
        }
    }

    /// A collection count, checked against the limit and against the input left
    /// (each element takes at least `min_element_bytes`).
    fn count(&mut self, min_element_bytes: u64) -> Result<u64> {
        let at = self.pos;
        let count = self.varint()?;
        self.check_limit(
            at,
            "collection_len_max",
            self.limits.collection_len_max,
            count,
        )?;
        self.check_remaining(at, count.saturating_mul(min_element_bytes))?;
        Ok(count)
    }

    fn enter(&self, depth: u32) -> Result<()> {
        self.check_limit(
            self.pos,
            "nesting_depth_max",
            u64::from(self.limits.nesting_depth_max),
            u64::from(depth),
        )
    }

    fn body(&mut self, depth: u32) -> Result<Record> {
        self.enter(depth)?;
        // A field takes at least two bytes: an empty name and a tag.
        let count = self.count(2)?;
        let mut record = Record::with_capacity(count as usize);
        for _ in 0..count {
            let name = self.string()?;
            if record.contains_key(&name) {
                return Err(Error::DuplicateField {
                    offset: self.pos,
                    name,
                });
            }
            let value = self.value(depth)?;
            record.push_unchecked(name, value);
        }
        Ok(record)
    }

    fn value(&mut self, depth: u32) -> Result<Value> {
        let at = self.pos;
        let tag = self.byte()?;
        Ok(match tag {
            TAG_NULL => Value::Null,
            TAG_FALSE => Value::Bool(false),
            TAG_TRUE => Value::Bool(true),
            TAG_INT => Value::Int(unzigzag(self.varint()?)),
            TAG_FLOAT => Value::Float(self.f64()?),
            TAG_STRING => Value::String(self.string()?.into()),
            TAG_BYTES => Value::Bytes(self.sized()?.to_vec()),
            TAG_LIST => {
                self.enter(depth + 1)?;
                let count = self.count(1)?;
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Value::List(items)
            }
            TAG_FLOAT_LIST => {
                self.enter(depth + 1)?;
                let count = self.count(8)?;
                let raw = self.take(count as usize * 8)?;
                Value::List(
                    raw.chunks_exact(8)
                        .map(|c| {
                            let mut bits = [0u8; 8];
                            bits.copy_from_slice(c);
                            Value::Float(f64::from_bits(u64::from_le_bytes(bits)))
                        })
                        .collect(),
                )
            }
            TAG_INT_LIST => {
                self.enter(depth + 1)?;
                let count = self.count(1)?;
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(Value::Int(unzigzag(self.varint()?)));
                }
                Value::List(items)
            }
            TAG_MAP => Value::Map(self.body(depth + 1)?),
            tag => return Err(Error::UnknownTag { offset: at, tag }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode_batch, encode_record, record};

    #[test]
    fn rejects_wrong_format_byte() {
        let err = decode_record(&[0x02, 0x00]).unwrap_err();
        assert!(
            matches!(err, Error::UnknownFormat { found: 0x02, .. }),
            "{err}"
        );
        let err = decode_batch(&encode_record(&record! {"a" => 1})).unwrap_err();
        assert!(matches!(err, Error::UnknownFormat { .. }), "{err}");
    }

    #[test]
    fn standalone_values_round_trip() {
        for v in [
            Value::Null,
            Value::List(vec![Value::Int(1), Value::String("x".into())]),
            Value::Map(record! {"a" => 1}),
        ] {
            assert_eq!(decode_value(&crate::encode_value(&v)).unwrap(), v);
        }
        assert!(decode_value(&encode_record(&record! {"a" => 1})).is_err());
    }

    #[test]
    fn rejects_trailing_bytes_with_offset() {
        let mut bytes = encode_record(&record! {"a" => 1});
        let len = bytes.len();
        bytes.push(0);
        assert_eq!(
            decode_record(&bytes).unwrap_err(),
            Error::TrailingBytes {
                offset: len,
                count: 1
            }
        );
    }

    #[test]
    fn huge_declared_count_fails_before_allocating() {
        // record with a declared field count of 2^62 and nothing after it
        let mut bytes = vec![RECORD_FORMAT_V1];
        crate::encode::write_varint(1 << 62, &mut bytes);
        let limits = Limits {
            collection_len_max: u64::MAX,
            ..Limits::default()
        };
        let err = decode_record_with(&bytes, &limits).unwrap_err();
        assert!(matches!(err, Error::UnexpectedEnd { .. }), "{err}");
        let err = decode_record(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                Error::LimitExceeded {
                    limit: "collection_len_max",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn duplicate_field_is_an_error() {
        // {"a": null, "a": null}
        let bytes = [RECORD_FORMAT_V1, 2, 1, b'a', TAG_NULL, 1, b'a', TAG_NULL];
        let err = decode_record(&bytes).unwrap_err();
        assert!(
            matches!(err, Error::DuplicateField { ref name, .. } if name == "a"),
            "{err}"
        );
    }

    #[test]
    fn invalid_utf8_names_its_offset() {
        let bytes = [RECORD_FORMAT_V1, 1, 1, b'a', TAG_STRING, 2, 0xff, 0xfe];
        assert_eq!(
            decode_record(&bytes).unwrap_err(),
            Error::InvalidUtf8 { offset: 6 }
        );
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let mut bytes = vec![RECORD_FORMAT_V1, 1, 1, b'a', TAG_INT];
        bytes.extend_from_slice(&[0xff; 9]);
        bytes.push(0x02);
        assert_eq!(
            decode_record(&bytes).unwrap_err(),
            Error::BadVarint { offset: 5 }
        );
    }

    #[test]
    fn batch_length_prefix_must_match() {
        let mut bytes = encode_batch(&[record! {"a" => 1}]);
        // batch: format, count=1, len, body...; claim one byte more and append one
        bytes[2] += 1;
        bytes.push(0);
        let err = decode_batch(&bytes).unwrap_err();
        assert!(matches!(err, Error::LengthMismatch { .. }), "{err}");
    }

    #[test]
    fn depth_limit_counts_record_as_one() {
        let limits = Limits {
            nesting_depth_max: 2,
            ..Limits::default()
        };
        let ok = record! {"a" => vec![1i64, 2]};
        assert!(decode_record_with(&encode_record(&ok), &limits).is_ok());
        let deep = record! {"a" => vec![Value::List(vec![])]};
        let err = decode_record_with(&encode_record(&deep), &limits).unwrap_err();
        assert!(
            matches!(
                err,
                Error::LimitExceeded {
                    limit: "nesting_depth_max",
                    ..
                }
            ),
            "{err}"
        );
    }
}

//! Record model and binary record codec of Persisting.
//!
//! A queue record is a [`Record`]: an ordered map of field name to [`Value`] (null,
//! bool, i64, f64, string, bytes, list, nested map). This crate defines that model, its
//! conversions to and from JSON and serde types, and a compact, versioned,
//! deterministic binary encoding (specified byte by byte in `docs/record-format.md`).
//!
//! ```
//! use persisting_codec::{record, decode_batch, encode_batch, Value};
//!
//! let batch = vec![
//!     record! { "id" => "1", "value" => 42, "embedding" => vec![0.25f64, -1.5] },
//!     record! { "id" => "2", "value" => Value::Null, "raw" => vec![0u8, 159] },
//! ];
//! let bytes = encode_batch(&batch);
//! assert_eq!(decode_batch(&bytes).unwrap(), batch);
//! ```
//!
//! Guarantees:
//! - `decode(encode(x)) == x` for every record, NaN payloads and `-0.0` included
//!   (equality compares floats by bits);
//! - decoding untrusted bytes never panics, never loops and never allocates more than
//!   the [`Limits`] and the input size allow; errors carry the byte offset.
#![deny(missing_docs)]

mod decode;
mod encode;
mod error;
mod json;
mod text;
mod value;

pub use decode::{
    Limits, decode_batch, decode_batch_with, decode_record, decode_record_with, decode_value,
};
pub use encode::{
    BATCH_FORMAT_V1, RECORD_FORMAT_V1, VALUE_FORMAT_V1, encode_batch, encode_batch_into,
    encode_record, encode_record_into, encode_value, encoded_len,
};
pub use error::{Error, Result};
pub use text::Str;
pub use value::{DistinctNames, INTERNED_NAME_BYTES_MAX, INTERNED_NAMES, IntoName, Record, Value};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

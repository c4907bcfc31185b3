//! Errors of the record codec.
//!
//! Every decoding error names the byte offset (from the start of the input) where the
//! problem was found, so a corrupt file can be inspected with a hex dump.

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while encoding, decoding or converting a record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ended before a complete value was read.
    #[error("input ends at byte {offset}, but {needed} more byte(s) were expected")]
    UnexpectedEnd {
        /// Offset where more bytes were needed.
        offset: usize,
        /// How many more bytes were needed, at least.
        needed: u64,
    },
    /// The leading format byte is not a version this build understands.
    #[error("unknown record format byte {found:#04x} at byte {offset} (expected {expected:#04x})")]
    UnknownFormat {
        /// Offset of the format byte.
        offset: usize,
        /// The byte that was expected.
        expected: u8,
        /// The byte found.
        found: u8,
    },
    /// A value tag that is not defined by the format.
    #[error("unknown value tag {tag:#04x} at byte {offset}")]
    UnknownTag {
        /// Offset of the tag.
        offset: usize,
        /// The tag found.
        tag: u8,
    },
    /// A variable-length integer longer than 10 bytes or overflowing 64 bits.
    #[error("malformed variable-length integer at byte {offset}")]
    BadVarint {
        /// Offset where the varint starts.
        offset: usize,
    },
    /// A string or field name that is not valid UTF-8.
    #[error("invalid UTF-8 in the string at byte {offset}")]
    InvalidUtf8 {
        /// Offset where the string's bytes start.
        offset: usize,
    },
    /// The same field name twice in one map.
    #[error("field {name:?} appears twice in the map ending at byte {offset}")]
    DuplicateField {
        /// Offset just after the duplicate field name.
        offset: usize,
        /// The repeated name.
        name: String,
    },
    /// A declared size exceeds a configured decoding limit.
    #[error("{limit} is {max}, but the value at byte {offset} declares {found}")]
    LimitExceeded {
        /// Offset of the offending declaration.
        offset: usize,
        /// Name of the limit (a field of [`crate::Limits`]).
        limit: &'static str,
        /// The limit's value.
        max: u64,
        /// The declared size.
        found: u64,
    },
    /// Bytes left over after a complete record or batch.
    #[error("{count} unexpected byte(s) after the end of the data at byte {offset}")]
    TrailingBytes {
        /// Offset where the extra bytes start.
        offset: usize,
        /// How many extra bytes there are.
        count: usize,
    },
    /// A record-length prefix in a batch that disagrees with the record it frames.
    #[error(
        "the record at byte {offset} declares {declared} bytes but its content is {actual} bytes"
    )]
    LengthMismatch {
        /// Offset of the record.
        offset: usize,
        /// Declared length.
        declared: u64,
        /// Length actually taken by the record.
        actual: u64,
    },
    /// A value that has no faithful representation in the target type (JSON or serde).
    #[error("value at {path} cannot be represented: {reason}")]
    NotRepresentable {
        /// Path of the value, like `$.embedding[3]`.
        path: String,
        /// Why it cannot be represented.
        reason: String,
    },
    /// A JSON document whose top level is not an object, where a record was expected.
    #[error("a record must be a JSON object, found {found}")]
    NotAnObject {
        /// The kind of JSON value found.
        found: &'static str,
    },
    /// A serde (de)serialization error while converting between a Rust type and a record.
    #[error("serde conversion failed: {0}")]
    Serde(String),
}

//! Errors of the compression layer.

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while choosing a codec, compressing or decompressing a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A codec name that is not one of the supported ones.
    #[error(
        "unknown compression {name:?}; valid names are: none, zstd, zstd:<level 1..=22>, lz4, snappy"
    )]
    UnknownCodec {
        /// The name given.
        name: String,
    },
    /// A zstd level outside the supported range.
    #[error("zstd level {level} is out of range; use 1..=22")]
    InvalidLevel {
        /// The level given.
        level: i32,
    },
    /// Input too large for a frame (the length field is 32 bits).
    #[error("cannot compress {len} bytes in one frame; the most is {max}")]
    InputTooLarge {
        /// Input length.
        len: usize,
        /// Largest frame content.
        max: u64,
    },
    /// A frame shorter than its 5-byte header.
    #[error("frame is {len} bytes, shorter than the 5-byte frame header")]
    Truncated {
        /// Length of the frame given.
        len: usize,
    },
    /// A codec tag this build does not know.
    #[error("unknown codec tag {tag:#04x} in frame header")]
    UnknownTag {
        /// The tag found.
        tag: u8,
    },
    /// The declared uncompressed size is above the caller's limit.
    #[error("frame declares {declared} uncompressed bytes, above the limit of {max}")]
    TooLarge {
        /// Declared uncompressed length.
        declared: u64,
        /// The limit.
        max: u64,
    },
    /// Decompression produced a different length than the frame declares.
    #[error("{codec} frame declares {declared} uncompressed bytes but holds {produced}")]
    LengthMismatch {
        /// Codec of the frame.
        codec: &'static str,
        /// Declared uncompressed length.
        declared: u64,
        /// Length produced (or announced by the codec's own header).
        produced: u64,
    },
    /// The codec rejected the payload.
    #[error("{codec} payload is corrupt: {reason}")]
    Corrupt {
        /// Codec of the frame.
        codec: &'static str,
        /// The codec's own message.
        reason: String,
    },
}

//! Compression layer of Persisting: zstd, lz4 and snappy behind one [`Codec`] choice,
//! in self-describing frames.
//!
//! A frame is `[codec tag: u8][uncompressed length: u32 LE][payload]`
//! (`docs/compression-format.md`), so whoever reads it needs nothing but the bytes.
//!
//! ```
//! use persisting_compress::{Codec, Compressor, decompress};
//!
//! let codec: Codec = "lz4".parse().unwrap();
//! let mut compressor = Compressor::new(codec).unwrap();
//! let frame = compressor.compress(b"hello hello hello hello").unwrap();
//! assert_eq!(decompress(&frame, 1024).unwrap(), b"hello hello hello hello");
//! ```
//!
//! Guarantees: decompression never allocates more than the caller's limit, checks the
//! produced length against the declared one, and never panics on corrupt input.
#![deny(missing_docs)]

mod codec;
mod error;
mod frame;

pub use codec::{Codec, ZSTD_LEVEL_DEFAULT};
pub use error::{Error, Result};
pub use frame::{
    Compressor, FRAME_CONTENT_BYTES_MAX, FRAME_HEADER_BYTES, UNCOMPRESSED_BYTES_MAX_DEFAULT,
    compress, decompress, frame_info,
};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

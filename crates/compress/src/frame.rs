//! Compression frames: `[codec tag: u8][uncompressed length: u32 LE][payload]`.
//!
//! Invariants:
//! - a frame describes itself: a reader needs no outside knowledge to decode it;
//! - decompression checks the declared length against the caller's limit *before*
//!   allocating (no decompression bombs), and checks that the codec produced exactly
//!   the declared length;
//! - no input makes decompression panic.

use crate::codec::Codec;
use crate::error::{Error, Result};

/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 5;
/// Largest content a frame can declare (the length field is a `u32`).
pub const FRAME_CONTENT_BYTES_MAX: u64 = u32::MAX as u64;
/// Default limit on a frame's declared uncompressed size: 64 MiB.
pub const UNCOMPRESSED_BYTES_MAX_DEFAULT: u64 = 64 << 20;

/// Compresses into frames, reusing codec state (a zstd context) across calls.
pub struct Compressor {
    codec: Codec,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    snappy: snap::raw::Encoder,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("codec", &self.codec)
            .finish()
    }
}

impl Compressor {
    /// A compressor for `codec`.
    pub fn new(codec: Codec) -> Result<Self> {
        let zstd = match codec {
            Codec::Zstd { level } => {
                Some(
                    zstd::bulk::Compressor::new(level).map_err(|e| Error::Corrupt {
                        codec: "zstd",
                        reason: e.to_string(),
                    })?,
                )
            }
            _ => None,
        };
        Ok(Self {
            codec,
            zstd,
            snappy: snap::raw::Encoder::new(),
            scratch: Vec::new(),
        })
    }

    /// The codec this compressor writes.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Appends one frame holding `data` to `out`.
    pub fn compress_into(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if data.len() as u64 > FRAME_CONTENT_BYTES_MAX {
            return Err(Error::InputTooLarge {
                len: data.len(),
                max: FRAME_CONTENT_BYTES_MAX,
            });
        }
        out.push(self.codec.tag());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        let fail = |codec: &'static str, e: &dyn std::fmt::Display| Error::Corrupt {
            codec,
            reason: e.to_string(),
        };
        match (self.codec, self.zstd.as_mut()) {
            (Codec::None, _) => out.extend_from_slice(data),
            (Codec::Zstd { .. }, Some(z)) => {
                self.scratch.clear();
                self.scratch
                    .reserve(zstd::zstd_safe::compress_bound(data.len()));
                z.compress_to_buffer(data, &mut self.scratch)
                    .map_err(|e| fail("zstd", &e))?;
                out.extend_from_slice(&self.scratch);
            }
            (Codec::Zstd { .. }, None) => {
                return Err(Error::Corrupt {
                    codec: "zstd",
                    reason: "compressor was built without a zstd context".to_owned(),
                });
            }
            (Codec::Lz4, _) => {
                let start = out.len();
                out.resize(
                    start + lz4_flex::block::get_maximum_output_size(data.len()),
                    0,
                );
                let n = lz4_flex::block::compress_into(data, &mut out[start..])
                    .map_err(|e| fail("lz4", &e))?;
                out.truncate(start + n);
            }
            (Codec::Snappy, _) => {
                let start = out.len();
                out.resize(start + snap::raw::max_compress_len(data.len()), 0);
                let n = self
                    .snappy
                    .compress(data, &mut out[start..])
                    .map_err(|e| fail("snappy", &e))?;
                out.truncate(start + n);
            }
        }
        Ok(())
    }

    /// One frame holding `data`.
    pub fn compress(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(data.len() / 2 + FRAME_HEADER_BYTES + 16);
        self.compress_into(data, &mut out)?;
        Ok(out)
    }
}

/// Compresses `data` into one frame (convenience; reuse a [`Compressor`] in loops).
///
/// ```
/// use persisting_compress::{compress, decompress, Codec};
/// let data = b"record record record record record".repeat(10);
/// let frame = compress(Codec::ZSTD, &data).unwrap();
/// assert!(frame.len() < data.len());
/// assert_eq!(decompress(&frame, 1 << 20).unwrap(), data);
/// ```
pub fn compress(codec: Codec, data: &[u8]) -> Result<Vec<u8>> {
    Compressor::new(codec)?.compress(data)
}

/// The codec and declared uncompressed length of a frame, without decompressing it.
pub fn frame_info(frame: &[u8]) -> Result<(Codec, u64)> {
    if frame.len() < FRAME_HEADER_BYTES {
        return Err(Error::Truncated { len: frame.len() });
    }
    let codec = match frame[0] {
        0 => Codec::None,
        1 => Codec::ZSTD,
        2 => Codec::Lz4,
        3 => Codec::Snappy,
        tag => return Err(Error::UnknownTag { tag }),
    };
    let declared = u32::from_le_bytes([frame[1], frame[2], frame[3], frame[4]]);
    Ok((codec, u64::from(declared)))
}

/// Decompresses one frame, refusing frames that declare more than
/// `uncompressed_bytes_max` bytes.
pub fn decompress(frame: &[u8], uncompressed_bytes_max: u64) -> Result<Vec<u8>> {
    let (codec, declared) = frame_info(frame)?;
    if declared > uncompressed_bytes_max {
        return Err(Error::TooLarge {
            declared,
            max: uncompressed_bytes_max,
        });
    }
    let payload = &frame[FRAME_HEADER_BYTES..];
    let len = declared as usize;
    let mismatch = |produced: usize| Error::LengthMismatch {
        codec: codec.name(),
        declared,
        produced: produced as u64,
    };
    let corrupt = |e: &dyn std::fmt::Display| Error::Corrupt {
        codec: codec.name(),
        reason: e.to_string(),
    };
    match codec {
        Codec::None => {
            if payload.len() != len {
                return Err(mismatch(payload.len()));
            }
            Ok(payload.to_vec())
        }
        Codec::Zstd { .. } => {
            // zstd's own header announces the content size: check it before decoding.
            if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(payload)
                && size != declared
            {
                return Err(mismatch(size as usize));
            }
            let mut out = Vec::with_capacity(len);
            let mut d = zstd::bulk::Decompressor::new().map_err(|e| corrupt(&e))?;
            let n = d
                .decompress_to_buffer(payload, &mut out)
                .map_err(|e| corrupt(&e))?;
            if n != len {
                return Err(mismatch(n));
            }
            Ok(out)
        }
        Codec::Lz4 => {
            let mut out = vec![0u8; len];
            let n = lz4_flex::block::decompress_into(payload, &mut out).map_err(|e| corrupt(&e))?;
            if n != len {
                return Err(mismatch(n));
            }
            Ok(out)
        }
        Codec::Snappy => {
            let announced = snap::raw::decompress_len(payload).map_err(|e| corrupt(&e))?;
            if announced != len {
                return Err(mismatch(announced));
            }
            let mut out = vec![0u8; len];
            let n = snap::raw::Decoder::new()
                .decompress(payload, &mut out)
                .map_err(|e| corrupt(&e))?;
            if n != len {
                return Err(mismatch(n));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Codec; 4] = [Codec::None, Codec::ZSTD, Codec::Lz4, Codec::Snappy];

    #[test]
    fn every_codec_round_trips_empty_and_text() {
        for codec in ALL {
            for data in [&b""[..], b"a", &b"abcabcabc".repeat(100)] {
                let frame = compress(codec, data).unwrap();
                assert_eq!(frame[0], codec.tag());
                assert_eq!(decompress(&frame, 1 << 20).unwrap(), data, "{codec}");
            }
        }
    }

    #[test]
    fn declared_size_over_limit_is_refused_before_allocating() {
        let mut frame = compress(Codec::Lz4, b"hello").unwrap();
        frame[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decompress(&frame, 1 << 20).unwrap_err(),
            Error::TooLarge {
                declared: u64::from(u32::MAX),
                max: 1 << 20
            }
        );
    }

    #[test]
    fn declared_size_must_match_content() {
        for codec in ALL {
            let mut frame = compress(codec, &b"xyz".repeat(50)).unwrap();
            frame[1..5].copy_from_slice(&149u32.to_le_bytes());
            let err = decompress(&frame, 1 << 20).unwrap_err();
            assert!(
                matches!(err, Error::LengthMismatch { .. } | Error::Corrupt { .. }),
                "{codec}: {err}"
            );
        }
    }

    #[test]
    fn short_and_unknown_frames() {
        assert_eq!(
            decompress(&[1, 0], 10).unwrap_err(),
            Error::Truncated { len: 2 }
        );
        assert_eq!(
            decompress(&[9, 0, 0, 0, 0], 10).unwrap_err(),
            Error::UnknownTag { tag: 9 }
        );
    }
}

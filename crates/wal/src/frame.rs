//! Frames: the unit of atomic append. One frame holds one entry or one whole batch.
//!
//! ```text
//! offset  size  field
//! 0       4     crc32 (IEEE) of bytes 4 .. 20 + body_len
//! 4       4     body_len, u32 LE
//! 8       8     first_lsn, u64 LE
//! 16      4     entry_count, u32 LE (>= 1)
//! 20      ...   body: entry_count x (payload_len u32 LE, payload)
//! ```
//!
//! Invariants: the checksum covers the LSN, the lengths and every payload byte, so no
//! entry is returned unless all of its frame checks out; a frame is written with one
//! append, so after a crash it is either whole or detectably torn.

use crate::error::Corruption;

/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 20;
/// Bytes of the length prefix of each entry in a frame body.
pub const ENTRY_HEADER_BYTES: usize = 4;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub crc: u32,
    pub body_len: u32,
    pub first_lsn: u64,
    pub count: u32,
}

impl FrameHeader {
    pub(crate) fn parse(b: &[u8; FRAME_HEADER_BYTES]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&b[8..16]);
        Self {
            crc: u32_at(0),
            body_len: u32_at(4),
            first_lsn: u64::from_le_bytes(lsn),
            count: u32_at(16),
        }
    }

    /// Checks what can be checked before reading the body.
    pub(crate) fn check(&self, frame_bytes_max: u64) -> Result<(), Corruption> {
        if self.count == 0 {
            return Err(Corruption::BadFrame("entry count is 0".to_owned()));
        }
        if u64::from(self.body_len) + FRAME_HEADER_BYTES as u64 > frame_bytes_max {
            return Err(Corruption::BadFrame(format!(
                "body of {} bytes exceeds frame_bytes_max ({frame_bytes_max})",
                self.body_len
            )));
        }
        if u64::from(self.count) * ENTRY_HEADER_BYTES as u64 > u64::from(self.body_len) {
            return Err(Corruption::BadFrame(format!(
                "{} entries cannot fit in a {}-byte body",
                self.count, self.body_len
            )));
        }
        Ok(())
    }

    /// Checks the checksum, then that the body splits exactly into its entries.
    pub(crate) fn verify(
        &self,
        header: &[u8; FRAME_HEADER_BYTES],
        body: &[u8],
    ) -> Result<(), Corruption> {
        let found = checksum(header, body);
        if found != self.crc {
            return Err(Corruption::ChecksumMismatch {
                expected: self.crc,
                found,
            });
        }
        let mut n = 0;
        let mut rest = body;
        while !rest.is_empty() {
            let (len, tail) = split_entry(rest).ok_or_else(|| {
                Corruption::BadFrame("an entry runs past the end of the body".to_owned())
            })?;
            rest = &tail[len..];
            n += 1;
        }
        if n != self.count {
            return Err(Corruption::BadFrame(format!(
                "body holds {n} entries, header says {}",
                self.count
            )));
        }
        Ok(())
    }
}

fn split_entry(rest: &[u8]) -> Option<(usize, &[u8])> {
    let len_bytes: [u8; 4] = rest.get(..ENTRY_HEADER_BYTES)?.try_into().ok()?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let tail = &rest[ENTRY_HEADER_BYTES..];
    (len <= tail.len()).then_some((len, tail))
}

/// The entries of a verified frame body, in order.
pub(crate) fn entries(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = body;
    std::iter::from_fn(move || {
        let (len, tail) = split_entry(rest)?;
        rest = &tail[len..];
        Some(&tail[..len])
    })
}

fn checksum(header: &[u8; FRAME_HEADER_BYTES], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header[4..]);
    h.update(body);
    h.finalize()
}

/// Bytes a frame of these payloads takes.
pub(crate) fn frame_bytes<P: AsRef<[u8]>>(payloads: &[P]) -> u64 {
    FRAME_HEADER_BYTES as u64
        + payloads
            .iter()
            .map(|p| ENTRY_HEADER_BYTES as u64 + p.as_ref().len() as u64)
            .sum::<u64>()
}

/// Appends one frame to `out`. The caller has checked every length against the limits
/// (each payload and the body fit in a `u32`).
pub(crate) fn encode<P: AsRef<[u8]>>(first_lsn: u64, payloads: &[P], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    for p in payloads {
        let p = p.as_ref();
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
    }
    let body_len = (out.len() - start - FRAME_HEADER_BYTES) as u32;
    let header = &mut out[start..start + FRAME_HEADER_BYTES];
    header[4..8].copy_from_slice(&body_len.to_le_bytes());
    header[8..16].copy_from_slice(&first_lsn.to_le_bytes());
    header[16..20].copy_from_slice(&(payloads.len() as u32).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[start + 4..]);
    let crc = h.finalize();
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(frame: &[u8]) -> ([u8; FRAME_HEADER_BYTES], &[u8]) {
        let mut h = [0u8; FRAME_HEADER_BYTES];
        h.copy_from_slice(&frame[..FRAME_HEADER_BYTES]);
        (h, &frame[FRAME_HEADER_BYTES..])
    }

    #[test]
    fn encode_then_verify() {
        let mut out = Vec::new();
        encode(7, &[&b"ab"[..], b"", b"cde"], &mut out);
        assert_eq!(out.len() as u64, frame_bytes(&[&b"ab"[..], b"", b"cde"]));
        let (h, body) = split(&out);
        let header = FrameHeader::parse(&h);
        assert_eq!((header.first_lsn, header.count), (7, 3));
        header.check(1 << 20).unwrap();
        header.verify(&h, body).unwrap();
        assert_eq!(entries(body).collect::<Vec<_>>(), [&b"ab"[..], b"", b"cde"]);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut out = Vec::new();
        encode(42, &[&b"payload"[..]], &mut out);
        for bit in 0..out.len() * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let (h, body) = split(&bad);
            let header = FrameHeader::parse(&h);
            let ok = header.check(1 << 20).is_ok()
                && body.len() == header.body_len as usize
                && header.verify(&h, body).is_ok();
            assert!(!ok, "flip of bit {bit} went unnoticed");
        }
    }
}

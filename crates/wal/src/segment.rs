//! Segment files: naming, the header, and sequential frame scanning.
//!
//! A segment is named by its first LSN, zero-padded to 20 digits
//! (`00000000000000001000.wal`), and starts with a 32-byte header:
//!
//! ```text
//! offset  size  field
//! 0       8     magic "PSTWAL\r\n"
//! 8       2     format version, u16 LE (1)
//! 10      2     flags, u16 LE (bit 0: CHECKPOINT_BASE, every older segment is obsolete)
//! 12      4     reserved, zero
//! 16      8     first_lsn, u64 LE (equals the name)
//! 24      4     crc32 of bytes 0..24
//! 28      4     reserved, zero
//! ```
//!
//! Invariants: a file with a final segment name always has a complete, durable header
//! (it is written under a temporary name, fsynced, then renamed, and the directory
//! fsynced); the header's LSN equals the name's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Corruption, Error, Result};
use crate::frame::{FRAME_HEADER_BYTES, FrameHeader};
use crate::fs::{Fs, FsFile};

/// Bytes of a segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Magic bytes opening every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"PSTWAL\r\n";
/// Segment format version written by this build.
pub const SEGMENT_VERSION: u16 = 1;
/// Header flag: every segment older than this one is obsolete.
pub const FLAG_CHECKPOINT_BASE: u16 = 1;
/// File name suffix of segments.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// File name suffix of a segment being created.
pub const TEMP_SUFFIX: &str = ".wal.tmp";
/// File name suffix of a segment whose predecessor is not yet known to be durable.
/// It becomes a segment (renamed to its final name) once the predecessor is fsynced.
pub const PENDING_SUFFIX: &str = ".wal.pending";
/// File name suffix given to segments set aside by salvage recovery.
pub const QUARANTINE_SUFFIX: &str = ".wal.corrupt";

/// The file name of the segment starting at `first_lsn`.
pub fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

/// The first LSN of a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The name a segment has while its predecessor is not yet durable.
pub fn pending_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{PENDING_SUFFIX}")
}

/// The first LSN of a pending segment's file name, if it is one.
pub fn parse_pending_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(PENDING_SUFFIX)?;
    parse_segment_name(&format!("{stem}{SEGMENT_SUFFIX}"))
}

/// A parsed segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// LSN of the first entry the segment holds (or would hold).
    pub first_lsn: u64,
    /// Header flags.
    pub flags: u16,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.first_lsn.to_le_bytes());
        let crc = crc32fast::hash(&b[..24]);
        b[24..28].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> std::result::Result<Self, Corruption> {
        let bad = |s: String| Corruption::BadHeader(s);
        if b.len() < SEGMENT_HEADER_BYTES {
            return Err(bad(format!(
                "only {} of {SEGMENT_HEADER_BYTES} header bytes",
                b.len()
            )));
        }
        if b[..8] != SEGMENT_MAGIC {
            return Err(bad(format!("magic is {:02x?}, not a WAL segment", &b[..8])));
        }
        let stored = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
        let found = crc32fast::hash(&b[..24]);
        if stored != found {
            return Err(bad(format!(
                "header checksum mismatch (stored {stored:#010x}, computed {found:#010x})"
            )));
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != SEGMENT_VERSION {
            return Err(bad(format!(
                "format version {version}; this build reads version {SEGMENT_VERSION}"
            )));
        }
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&b[16..24]);
        Ok(Self {
            first_lsn: u64::from_le_bytes(lsn),
            flags: u16::from_le_bytes([b[10], b[11]]),
        })
    }
}

/// Creates a segment durably: header written under a temporary name, fsynced, renamed
/// to its final name, directory fsynced. Returns the open file.
pub(crate) fn create_segment(
    fs: &dyn Fs,
    dir: &Path,
    header: SegmentHeader,
) -> Result<Arc<dyn FsFile>> {
    let name = segment_name(header.first_lsn);
    let tmp = dir.join(format!("{}{TEMP_SUFFIX}", &name[..20]));
    let path = dir.join(&name);
    let file = fs.create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    let result = file
        .write_at(&header.encode(), 0)
        .map_err(|e| Error::io("write the header of", &tmp, e))
        .and_then(|()| file.sync_data().map_err(|e| Error::io("fsync", &tmp, e)))
        .and_then(|()| {
            fs.rename(&tmp, &path)
                .map_err(|e| Error::io("rename", &tmp, e))
        });
    if let Err(e) = result {
        let _ = fs.remove(&tmp);
        return Err(e);
    }
    fs.sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))?;
    Ok(file)
}

/// One frame read from a segment.
#[derive(Debug)]
pub(crate) struct ScannedFrame {
    pub header: FrameHeader,
    /// Offset of the frame in the file.
    pub offset: u64,
}

/// Reads the frames of one segment in order, verifying each.
#[derive(Debug)]
pub(crate) struct SegmentScanner {
    pub path: PathBuf,
    pub file: Arc<dyn FsFile>,
    pub header: SegmentHeader,
    /// Offset of the next frame.
    pub pos: u64,
    /// Length of the file when the scan began (or the end the reader must stop at).
    pub end: u64,
    frame_bytes_max: u64,
    /// Body of the last frame read.
    pub body: Vec<u8>,
}

impl SegmentScanner {
    /// Opens a segment and checks its header against its name.
    pub(crate) fn open(fs: &dyn Fs, path: &Path, frame_bytes_max: u64) -> Result<Self> {
        let file = fs.open(path).map_err(|e| Error::io("open", path, e))?;
        let end = file.len().map_err(|e| Error::io("stat", path, e))?;
        let mut buf = [0u8; SEGMENT_HEADER_BYTES];
        let n = file
            .read_at(&mut buf, 0)
            .map_err(|e| Error::io("read", path, e))?;
        let corrupted = |detail| Error::Corrupted {
            segment: path.to_path_buf(),
            offset: 0,
            detail,
        };
        let header = SegmentHeader::decode(&buf[..n]).map_err(corrupted)?;
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| parse_segment_name(n).or_else(|| parse_pending_name(n)));
        if named != Some(header.first_lsn) {
            return Err(corrupted(Corruption::BadHeader(format!(
                "header says first LSN {} but the file name says {named:?}",
                header.first_lsn
            ))));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            header,
            pos: SEGMENT_HEADER_BYTES as u64,
            end,
            frame_bytes_max,
            body: Vec::new(),
        })
    }

    /// The next frame, `Ok(None)` at the end, or the corruption found at `self.pos`
    /// (which is left pointing at the bad frame).
    pub(crate) fn next_frame(&mut self) -> std::result::Result<Option<ScannedFrame>, ScanError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let available = self.end - self.pos;
        let mut hb = [0u8; FRAME_HEADER_BYTES];
        if available < FRAME_HEADER_BYTES as u64 {
            return Err(ScanError::Corrupt(Corruption::Truncated {
                needed: FRAME_HEADER_BYTES as u64,
                available,
            }));
        }
        self.read_exact(&mut hb, self.pos)?;
        let header = FrameHeader::parse(&hb);
        header
            .check(self.frame_bytes_max)
            .map_err(ScanError::Corrupt)?;
        let needed = FRAME_HEADER_BYTES as u64 + u64::from(header.body_len);
        if needed > available {
            return Err(ScanError::Corrupt(Corruption::Truncated {
                needed,
                available,
            }));
        }
        let mut body = std::mem::take(&mut self.body);
        body.resize(header.body_len as usize, 0);
        let read = self.read_exact(&mut body, self.pos + FRAME_HEADER_BYTES as u64);
        self.body = body;
        read?;
        header.verify(&hb, &self.body).map_err(ScanError::Corrupt)?;
        let frame = ScannedFrame {
            header,
            offset: self.pos,
        };
        self.pos += needed;
        Ok(Some(frame))
    }

    fn read_exact(&self, buf: &mut [u8], offset: u64) -> std::result::Result<(), ScanError> {
        let n = self
            .file
            .read_at(buf, offset)
            .map_err(|e| ScanError::Io(Error::io("read", &self.path, e)))?;
        if n < buf.len() {
            return Err(ScanError::Corrupt(Corruption::Truncated {
                needed: buf.len() as u64,
                available: n as u64,
            }));
        }
        Ok(())
    }

    /// True when every byte from `from` to the end of the file is zero: the
    /// preallocated, never written end of a segment.
    pub(crate) fn is_zero_from(&self, from: u64) -> Result<bool> {
        let mut buf = vec![0u8; 64 << 10];
        let mut at = from;
        while at < self.end {
            let want = ((self.end - at) as usize).min(buf.len());
            let n = self
                .file
                .read_at(&mut buf[..want], at)
                .map_err(|e| Error::io("read", &self.path, e))?;
            if n == 0 {
                break;
            }
            if buf[..n].iter().any(|b| *b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
        Ok(true)
    }

    /// Looks for a valid frame anywhere after `from` whose LSN is at least
    /// `lsn_min`: the proof that bad bytes at `from` are not a torn tail. Candidate
    /// positions are filtered on the header fields before any checksum is computed.
    pub(crate) fn find_valid_frame_after(&self, from: u64, lsn_min: u64) -> Result<Option<u64>> {
        let len = self.end.saturating_sub(from) as usize;
        let mut rest = vec![0u8; len];
        let n = self
            .file
            .read_at(&mut rest, from)
            .map_err(|e| Error::io("read", &self.path, e))?;
        rest.truncate(n);
        // An LSN can advance by at most one per 4 bytes (an empty entry's length).
        let lsn_max = lsn_min.saturating_add(n as u64 / 4 + 1);
        for start in 1..n.saturating_sub(FRAME_HEADER_BYTES - 1) {
            let mut hb = [0u8; FRAME_HEADER_BYTES];
            hb.copy_from_slice(&rest[start..start + FRAME_HEADER_BYTES]);
            let h = FrameHeader::parse(&hb);
            if h.first_lsn < lsn_min
                || h.first_lsn > lsn_max
                || h.check(self.frame_bytes_max).is_err()
            {
                continue;
            }
            let body_end = start + FRAME_HEADER_BYTES + h.body_len as usize;
            if body_end > n {
                continue;
            }
            if h.verify(&hb, &rest[start + FRAME_HEADER_BYTES..body_end])
                .is_ok()
            {
                return Ok(Some(from + start as u64));
            }
        }
        Ok(None)
    }
}

/// Why a scan stopped.
#[derive(Debug)]
pub(crate) enum ScanError {
    /// Bad bytes at the scanner's position.
    Corrupt(Corruption),
    /// The file could not be read.
    Io(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_look_alikes() {
        assert_eq!(segment_name(1000), "00000000000000001000.wal");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "1000.wal",
            "0000000000000000100a.wal",
            "00000000000000001000.wal.tmp",
            "x",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
            assert_eq!(parse_pending_name(bad), None, "{bad}");
        }
        assert_eq!(parse_pending_name(&pending_name(42)), Some(42));
        assert_eq!(parse_segment_name(&pending_name(42)), None);
    }

    #[test]
    fn header_round_trips_and_detects_damage() {
        let h = SegmentHeader {
            first_lsn: 77,
            flags: FLAG_CHECKPOINT_BASE,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
        for i in 0..28 {
            let mut bad = b;
            bad[i] ^= 0x10;
            assert!(SegmentHeader::decode(&bad).is_err(), "byte {i}");
        }
        assert!(SegmentHeader::decode(&b[..31]).is_err());
    }
}

//! Read-only inspection of a WAL directory: what `persisting wal inspect` and
//! `persisting wal verify` print.
//!
//! Invariants: nothing is written, renamed or deleted (unlike recovery at open, which
//! repairs a torn tail); every frame is verified by its checksum; the LSN chain between
//! segments is checked for gaps. The verdict matches what a strict open would do: a
//! damaged frame with nothing valid after it in the last segment is a torn tail (open
//! would cut it), anything else is corruption.

use std::path::{Path, PathBuf};

use crate::error::{Corruption, Error, Result};
use crate::fs::{Fs, RealFs};
use crate::segment::{
    FLAG_CHECKPOINT_BASE, ScanError, SegmentHeader, SegmentScanner, parse_pending_name,
    parse_segment_name,
};

/// The state of one segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentStatus {
    /// Every frame verified; the file may end in preallocated zeros.
    Ok,
    /// A bad frame at `offset` with nothing valid after it, in the last segment: a
    /// crash during a write; opening the WAL cuts it off.
    TornTail {
        /// Where the torn frame starts.
        offset: u64,
        /// What is wrong with it.
        detail: Corruption,
    },
    /// Damage that opening the WAL in strict mode refuses.
    Corrupted {
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        detail: Corruption,
    },
}

/// One segment as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The file.
    pub path: PathBuf,
    /// Still under its pending name (its predecessor was not yet durable).
    pub pending: bool,
    /// The header, when it could be read.
    pub header: Option<SegmentHeader>,
    /// First LSN (from the header, else from the name).
    pub first_lsn: u64,
    /// LSN after the last valid entry.
    pub next_lsn: u64,
    /// Valid frames.
    pub frames: u64,
    /// File length.
    pub file_bytes: u64,
    /// Bytes up to the end of the last valid frame.
    pub valid_bytes: u64,
    /// Verdict.
    pub status: SegmentStatus,
}

impl SegmentInfo {
    /// Entries held (valid ones).
    pub fn entries(&self) -> u64 {
        self.next_lsn - self.first_lsn
    }

    /// Whether the segment starts a log whose earlier segments were checkpointed away.
    pub fn checkpoint_base(&self) -> bool {
        self.header
            .is_some_and(|h| h.flags & FLAG_CHECKPOINT_BASE != 0)
    }
}

/// What [`inspect`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inspection {
    /// Segments in LSN order.
    pub segments: Vec<SegmentInfo>,
}

impl Inspection {
    /// The first corruption (file, offset, detail) that a strict open would refuse.
    pub fn first_corruption(&self) -> Option<(&Path, u64, &Corruption)> {
        self.segments.iter().find_map(|s| match &s.status {
            SegmentStatus::Corrupted { offset, detail } => {
                Some((s.path.as_path(), *offset, detail))
            }
            _ => None,
        })
    }

    /// Entries held in all segments.
    pub fn entries(&self) -> u64 {
        self.segments.iter().map(SegmentInfo::entries).sum()
    }

    /// Bytes of all segment files.
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.file_bytes).sum()
    }
}

/// Inspects the WAL in `dir` on the real file system, read-only.
pub fn inspect(dir: &Path) -> Result<Inspection> {
    inspect_with(&RealFs, dir, u64::from(u32::MAX))
}

/// Inspects the WAL in `dir` through `fs`, read-only, refusing frames over
/// `frame_bytes_max`.
pub fn inspect_with(fs: &dyn Fs, dir: &Path, frame_bytes_max: u64) -> Result<Inspection> {
    let names = fs.list(dir).map_err(|e| Error::io("list", dir, e))?;
    let mut files: Vec<(u64, bool, PathBuf)> = names
        .iter()
        .filter_map(|n| {
            parse_segment_name(n)
                .map(|lsn| (lsn, false))
                .or_else(|| parse_pending_name(n).map(|lsn| (lsn, true)))
                .map(|(lsn, pending)| (lsn, pending, dir.join(n)))
        })
        .collect();
    files.sort();
    let last = files.len().saturating_sub(1);
    let mut segments = Vec::with_capacity(files.len());
    let mut expected_lsn: Option<u64> = None;
    for (i, (named_lsn, pending, path)) in files.into_iter().enumerate() {
        let mut info = scan_segment(fs, &path, named_lsn, pending, frame_bytes_max, i == last)?;
        if let Some(expected) = expected_lsn
            && info.first_lsn != expected
            && !info.checkpoint_base()
            && info.status == SegmentStatus::Ok
        {
            let detail = if info.first_lsn > expected {
                Corruption::MissingLsns {
                    expected,
                    found: info.first_lsn,
                }
            } else {
                Corruption::LsnMismatch {
                    expected,
                    found: info.first_lsn,
                }
            };
            info.status = SegmentStatus::Corrupted { offset: 0, detail };
        }
        expected_lsn = Some(info.next_lsn);
        segments.push(info);
    }
    Ok(Inspection { segments })
}

fn scan_segment(
    fs: &dyn Fs,
    path: &Path,
    named_lsn: u64,
    pending: bool,
    frame_bytes_max: u64,
    is_last: bool,
) -> Result<SegmentInfo> {
    let file_bytes = fs
        .open(path)
        .and_then(|f| f.len())
        .map_err(|e| Error::io("stat", path, e))?;
    let mut info = SegmentInfo {
        path: path.to_path_buf(),
        pending,
        header: None,
        first_lsn: named_lsn,
        next_lsn: named_lsn,
        frames: 0,
        file_bytes,
        valid_bytes: 0,
        status: SegmentStatus::Ok,
    };
    let mut scanner = match SegmentScanner::open(fs, path, frame_bytes_max) {
        Ok(s) => s,
        Err(Error::Corrupted { offset, detail, .. }) => {
            info.status = SegmentStatus::Corrupted { offset, detail };
            return Ok(info);
        }
        Err(e) => return Err(e),
    };
    info.header = Some(scanner.header);
    info.first_lsn = scanner.header.first_lsn;
    info.next_lsn = info.first_lsn;
    info.valid_bytes = scanner.pos;
    loop {
        match scanner.next_frame() {
            Ok(None) => break,
            Ok(Some(frame)) => {
                if frame.header.first_lsn != info.next_lsn {
                    info.status = SegmentStatus::Corrupted {
                        offset: frame.offset,
                        detail: Corruption::LsnMismatch {
                            expected: info.next_lsn,
                            found: frame.header.first_lsn,
                        },
                    };
                    break;
                }
                info.next_lsn += u64::from(frame.header.count);
                info.frames += 1;
                info.valid_bytes = scanner.pos;
            }
            Err(ScanError::Io(e)) => return Err(e),
            Err(ScanError::Corrupt(detail)) => {
                let at = scanner.pos;
                if scanner.is_zero_from(at)? {
                    // preallocated space that was never written
                    break;
                }
                let later = scanner.find_valid_frame_after(at + 1, info.next_lsn)?;
                info.status = if is_last && later.is_none() {
                    SegmentStatus::TornTail { offset: at, detail }
                } else {
                    SegmentStatus::Corrupted { offset: at, detail }
                };
                break;
            }
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SyncPolicy, Wal, WalOptions};

    #[test]
    fn reports_entries_and_finds_a_flipped_bit_without_repairing() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            sync: SyncPolicy::Always,
            segment_bytes_max: 4096,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(dir.path(), opts).unwrap();
        for i in 0..100u32 {
            wal.append(&i.to_le_bytes().repeat(20)).unwrap();
        }
        wal.close().unwrap();
        let clean = inspect(dir.path()).unwrap();
        assert!(clean.segments.len() > 1);
        assert_eq!(clean.entries(), 100);
        assert!(clean.first_corruption().is_none());

        let victim = clean.segments[0].path.clone();
        let mut bytes = std::fs::read(&victim).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x10;
        std::fs::write(&victim, &bytes).unwrap();
        let damaged = inspect(dir.path()).unwrap();
        let (path, offset, _) = damaged.first_corruption().unwrap();
        assert_eq!(path, victim.as_path());
        assert!(offset <= at as u64);
        // read-only: the file is as it was
        assert_eq!(std::fs::read(&victim).unwrap(), bytes);
    }

    #[test]
    fn a_torn_last_frame_is_a_torn_tail_not_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        for i in 0..10u32 {
            wal.append(&i.to_le_bytes()).unwrap();
        }
        wal.close().unwrap();
        let seg = inspect(dir.path()).unwrap().segments[0].path.clone();
        let len = std::fs::metadata(&seg).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
        let found = inspect(dir.path()).unwrap();
        assert!(found.first_corruption().is_none());
        assert!(matches!(
            found.segments[0].status,
            SegmentStatus::TornTail { .. }
        ));
        assert_eq!(found.entries(), 9);
    }
}

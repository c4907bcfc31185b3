//! Reading the log in LSN order with bounded memory: one frame at a time, each
//! verified by its checksum again as it is read.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Corruption, Error, Result};
use crate::frame;
use crate::fs::Fs;
use crate::recovery::SegmentMeta;
use crate::segment::{ScanError, SegmentScanner, pending_name, segment_name};

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its LSN.
    pub lsn: u64,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Iterator over entries from an LSN to the end of the log as it was when the reader
/// was made. Memory is bounded by the largest frame.
#[derive(Debug)]
pub struct WalReader {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    segments: VecDeque<SegmentMeta>,
    scanner: Option<SegmentScanner>,
    pending: VecDeque<Entry>,
    next: u64,
    end: u64,
    frame_bytes_max: u64,
    failed: bool,
}

impl WalReader {
    pub(crate) fn new(
        fs: Arc<dyn Fs>,
        dir: PathBuf,
        segments: Vec<SegmentMeta>,
        from: u64,
        end: u64,
        frame_bytes_max: u64,
    ) -> Self {
        // skip segments that end before `from`
        let mut segments: VecDeque<_> = segments.into();
        while segments.len() > 1 && segments[1].first_lsn <= from {
            segments.pop_front();
        }
        Self {
            fs,
            dir,
            segments,
            scanner: None,
            pending: VecDeque::new(),
            next: from,
            end,
            frame_bytes_max,
            failed: false,
        }
    }

    fn fill(&mut self) -> Result<()> {
        while self.pending.is_empty() && self.next < self.end {
            if self.scanner.is_none() {
                let Some(meta) = self.segments.pop_front() else {
                    return Err(Error::Corrupted {
                        segment: PathBuf::new(),
                        offset: 0,
                        detail: Corruption::MissingLsns {
                            expected: self.next,
                            found: self.end,
                        },
                    });
                };
                let mut sc = open_segment(self.fs.as_ref(), &self.dir, meta, self.frame_bytes_max)?;
                sc.end = meta.bytes;
                self.scanner = Some(sc);
            }
            let Some(sc) = self.scanner.as_mut() else {
                continue;
            };
            match sc.next_frame() {
                Ok(Some(f)) => {
                    let first = f.header.first_lsn;
                    for (i, payload) in frame::entries(&sc.body).enumerate() {
                        let lsn = first + i as u64;
                        if lsn >= self.next && lsn < self.end {
                            self.pending.push_back(Entry {
                                lsn,
                                payload: payload.to_vec(),
                            });
                        }
                    }
                    if let Some(e) = self.pending.front()
                        && e.lsn != self.next
                    {
                        return Err(Error::Corrupted {
                            segment: sc.path.clone(),
                            offset: f.offset,
                            detail: Corruption::LsnMismatch {
                                expected: self.next,
                                found: e.lsn,
                            },
                        });
                    }
                }
                Ok(None) => self.scanner = None,
                Err(ScanError::Io(e)) => return Err(e),
                Err(ScanError::Corrupt(detail)) => {
                    return Err(Error::Corrupted {
                        segment: sc.path.clone(),
                        offset: sc.pos,
                        detail,
                    });
                }
            }
        }
        Ok(())
    }
}

impl Iterator for WalReader {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        if self.failed {
            return None;
        }
        if let Err(e) = self.fill() {
            self.failed = true;
            return Some(Err(e));
        }
        let entry = self.pending.pop_front()?;
        self.next = entry.lsn + 1;
        Some(Ok(entry))
    }
}

/// Opens a segment by the name it had when the reader was made, or by the other name
/// if the closer renamed it since.
fn open_segment(
    fs: &dyn Fs,
    dir: &Path,
    meta: SegmentMeta,
    frame_bytes_max: u64,
) -> Result<SegmentScanner> {
    let names = [segment_name(meta.first_lsn), pending_name(meta.first_lsn)];
    let order = if meta.pending { [1, 0] } else { [0, 1] };
    let first = SegmentScanner::open(fs, &dir.join(&names[order[0]]), frame_bytes_max);
    match first {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            SegmentScanner::open(fs, &dir.join(&names[order[1]]), frame_bytes_max)
        }
        other => other,
    }
}

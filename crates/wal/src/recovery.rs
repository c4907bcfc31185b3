//! Recovery at open: find the segments, verify every frame, repair a torn tail, and
//! refuse (or, in salvage mode, set aside) anything else that is damaged.
//!
//! Invariants after a successful recovery:
//! - the segments hold a dense LSN range `first_lsn .. next_lsn`, every frame of it
//!   verified by its checksum;
//! - the last segment ends exactly after its last valid frame (a torn tail was cut off
//!   and the cut fsynced);
//! - no data was deleted except temporary files of unfinished segment creation, segments
//!   made obsolete by a checkpoint (older than a `CHECKPOINT_BASE` segment), and a torn
//!   tail; salvage mode renames what it drops to `*.wal.corrupt` instead of deleting.
//!
//! A torn tail is a bad frame in the last segment with no valid frame after it. A bad
//! frame followed by a valid one is corruption, whatever the segment.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Corruption, Error, Result};
use crate::fs::{Fs, FsFile};
use crate::options::{RecoveryMode, WalOptions};
use crate::segment::{
    FLAG_CHECKPOINT_BASE, QUARANTINE_SUFFIX, SEGMENT_HEADER_BYTES, ScanError, SegmentHeader,
    SegmentScanner, TEMP_SUFFIX, create_segment, parse_pending_name, parse_segment_name,
    pending_name, segment_name,
};

/// A torn tail cut off by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment that was cut.
    pub segment: PathBuf,
    /// Where it was cut (the start of the torn frame).
    pub offset: u64,
    /// Bytes removed.
    pub bytes_dropped: u64,
    /// Why the frame was bad.
    pub detail: Corruption,
}

/// What salvage recovery set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvaged {
    /// The segment holding the first damage.
    pub segment: PathBuf,
    /// Offset of the first damage in it.
    pub offset: u64,
    /// The damage.
    pub detail: Corruption,
    /// Bytes cut from the damaged segment (kept in a `*.wal.corrupt` copy).
    pub bytes_dropped: u64,
    /// Files renamed to `*.wal.corrupt`.
    pub quarantined: Vec<PathBuf>,
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments in the log after recovery.
    pub segments: usize,
    /// Entries in the log after recovery.
    pub entries: u64,
    /// The torn tail that was cut off, if any.
    pub torn_tail: Option<TornTail>,
    /// What salvage mode set aside, if anything.
    pub salvaged: Option<Salvaged>,
    /// Segments removed because a later checkpoint made them obsolete.
    pub obsolete_segments_removed: usize,
    /// Leftover temporary files of an interrupted segment creation, removed.
    pub temp_files_removed: usize,
    /// Pending segments (written while their predecessor was not yet durable) that
    /// continued a complete predecessor and were adopted into the log.
    pub pending_adopted: usize,
    /// Pending segments discarded because their predecessor was torn: nothing in
    /// them had been acknowledged as durable.
    pub pending_discarded: usize,
}

/// A segment of the log as the writer tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    pub first_lsn: u64,
    /// Bytes of the file holding valid data (header included).
    pub bytes: u64,
    /// True while the segment still has its pending name.
    pub pending: bool,
}

pub(crate) struct Recovered {
    pub segments: Vec<SegmentMeta>,
    pub active: Arc<dyn FsFile>,
    pub next_lsn: u64,
    pub report: RecoveryReport,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(op, path, e)
}

pub(crate) fn recover(fs: &dyn Fs, dir: &Path, opts: &WalOptions) -> Result<Recovered> {
    fs.create_dir_all(dir)
        .map_err(io("create directory", dir))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs.sync_dir(parent).map_err(io("fsync directory", parent))?;
    }
    let mut report = RecoveryReport::default();
    let mut lsns = Vec::new();
    let mut pendings = Vec::new();
    for name in fs.list(dir).map_err(io("list", dir))? {
        if let Some(lsn) = parse_pending_name(&name) {
            pendings.push(lsn);
        } else if name.ends_with(TEMP_SUFFIX) {
            let path = dir.join(&name);
            fs.remove(&path).map_err(io("remove", &path))?;
            report.temp_files_removed += 1;
        } else if let Some(lsn) = parse_segment_name(&name) {
            lsns.push(lsn);
        }
    }
    lsns.sort_unstable();
    pendings.sort_unstable();
    let path_of = |lsn: u64| dir.join(segment_name(lsn));
    let pending_path_of = |lsn: u64| dir.join(pending_name(lsn));

    // Phase 1: headers. Segments before the newest checkpoint base are obsolete.
    let mut scanners: Vec<Result<SegmentScanner>> = lsns
        .iter()
        .map(|lsn| SegmentScanner::open(fs, &path_of(*lsn), opts.frame_bytes_max))
        .collect();
    let base = scanners.iter().rposition(|s| {
        s.as_ref()
            .is_ok_and(|s| s.header.flags & FLAG_CHECKPOINT_BASE != 0)
    });
    if let Some(base) = base.filter(|b| *b > 0) {
        for lsn in &lsns[..base] {
            let path = path_of(*lsn);
            fs.remove(&path)
                .map_err(io("remove obsolete segment", &path))?;
            report.obsolete_segments_removed += 1;
        }
        scanners.drain(..base);
        lsns.drain(..base);
        let base_lsn = lsns[0];
        for lsn in pendings.iter().filter(|l| **l < base_lsn) {
            let path = pending_path_of(*lsn);
            fs.remove(&path)
                .map_err(io("remove obsolete segment", &path))?;
            report.obsolete_segments_removed += 1;
        }
        pendings.retain(|l| *l >= base_lsn);
    }
    if report.obsolete_segments_removed + report.temp_files_removed > 0 {
        fs.sync_dir(dir).map_err(io("fsync directory", dir))?;
    }

    // Phase 2: frames.
    let mut segments: Vec<SegmentMeta> = Vec::new();
    let mut active: Option<Arc<dyn FsFile>> = None;
    let mut expected: Option<u64> = None;
    let count = scanners.len();
    let mut damage: Option<Damage> = None;
    'segments: for (i, scanner) in scanners.into_iter().enumerate() {
        let mut sc = match scanner {
            Ok(sc) => sc,
            Err(Error::Corrupted {
                segment,
                offset,
                detail,
            }) => {
                let next = expected.unwrap_or(lsns[i]);
                damage = Some(Damage {
                    seg: i,
                    path: segment,
                    offset,
                    detail,
                    next,
                });
                break;
            }
            Err(e) => return Err(e),
        };
        let first = sc.header.first_lsn;
        let mut next = *expected.get_or_insert(first);
        if first != next {
            let detail = if first > next {
                Corruption::MissingLsns {
                    expected: next,
                    found: first,
                }
            } else {
                Corruption::BadHeader(format!(
                    "segment starts at LSN {first}, inside the previous segment (which ends at {next})"
                ))
            };
            damage = Some(Damage {
                seg: i,
                path: sc.path.clone(),
                offset: 0,
                detail,
                next,
            });
            break;
        }
        loop {
            let detail = match sc.next_frame() {
                Ok(Some(frame)) if frame.header.first_lsn == next => {
                    next += u64::from(frame.header.count);
                    continue;
                }
                Ok(Some(frame)) => {
                    // a valid frame out of sequence: rewind to it and report it
                    sc.pos = frame.offset;
                    Corruption::LsnMismatch {
                        expected: next,
                        found: frame.header.first_lsn,
                    }
                }
                Ok(None) => break,
                Err(ScanError::Io(e)) => return Err(e),
                Err(ScanError::Corrupt(detail)) => detail,
            };
            let at = sc.pos;
            if !matches!(detail, Corruption::LsnMismatch { .. }) && sc.is_zero_from(at)? {
                // the preallocated, never written end of the segment
                sc.end = at;
                break;
            }
            let is_last = i + 1 == count;
            let follower = match detail {
                Corruption::LsnMismatch { .. } => Some(at),
                _ => sc.find_valid_frame_after(at, next)?,
            };
            let detail = match follower {
                None if is_last => {
                    let bytes_dropped = sc.end - at;
                    sc.file
                        .set_len(at)
                        .map_err(io("truncate torn tail of", &sc.path))?;
                    sc.file.sync_data().map_err(io("fsync", &sc.path))?;
                    report.torn_tail = Some(TornTail {
                        segment: sc.path.clone(),
                        offset: at,
                        bytes_dropped,
                        detail,
                    });
                    sc.end = at;
                    break;
                }
                None => detail,
                Some(next_valid) if next_valid == at => detail,
                Some(next_valid) => Corruption::CorruptBeforeValid {
                    next_valid,
                    first: Box::new(detail),
                },
            };
            segments.push(SegmentMeta {
                first_lsn: first,
                bytes: at,
                pending: false,
            });
            active = Some(sc.file.clone());
            damage = Some(Damage {
                seg: i,
                path: sc.path.clone(),
                offset: at,
                detail,
                next,
            });
            break 'segments;
        }
        segments.push(SegmentMeta {
            first_lsn: first,
            bytes: sc.end,
            pending: false,
        });
        active = Some(sc.file.clone());
        expected = Some(next);
    }

    // Phase 3: pending segments continue the log only if the last segment is whole.
    if damage.is_none() && !pendings.is_empty() {
        let mut adopt = report.torn_tail.is_none() && !segments.is_empty();
        for lsn in std::mem::take(&mut pendings) {
            let path = pending_path_of(lsn);
            let next = expected.unwrap_or(lsn);
            let scanner = if adopt && lsn == next {
                match SegmentScanner::open(fs, &path, opts.frame_bytes_max) {
                    Ok(sc) => Some(sc),
                    Err(Error::Corrupted { .. }) => None,
                    Err(e) => return Err(e),
                }
            } else {
                None
            };
            let Some(mut sc) = scanner else {
                fs.remove(&path)
                    .map_err(io("remove pending segment", &path))?;
                report.pending_discarded += 1;
                adopt = false;
                continue;
            };
            let mut next = next;
            loop {
                let (cut, detail) = match sc.next_frame() {
                    Ok(Some(f)) if f.header.first_lsn == next => {
                        next += u64::from(f.header.count);
                        continue;
                    }
                    Ok(None) => break,
                    Err(ScanError::Io(e)) => return Err(e),
                    Ok(Some(f)) => (
                        f.offset,
                        Corruption::LsnMismatch {
                            expected: next,
                            found: f.header.first_lsn,
                        },
                    ),
                    Err(ScanError::Corrupt(detail)) => (sc.pos, detail),
                };
                if !matches!(detail, Corruption::LsnMismatch { .. }) && sc.is_zero_from(cut)? {
                    sc.end = cut;
                    break;
                }
                // nothing in a pending segment was acknowledged as durable: damage in
                // it is a torn tail, and the log ends there
                sc.file
                    .set_len(cut)
                    .map_err(io("truncate torn tail of", &path))?;
                report.torn_tail = Some(TornTail {
                    segment: path_of(lsn),
                    offset: cut,
                    bytes_dropped: sc.end - cut,
                    detail,
                });
                sc.end = cut;
                adopt = false;
                break;
            }
            let final_path = path_of(lsn);
            sc.file.sync_data().map_err(io("fsync", &path))?;
            fs.rename(&path, &final_path)
                .map_err(io("adopt pending segment", &path))?;
            fs.sync_dir(dir).map_err(io("fsync directory", dir))?;
            report.pending_adopted += 1;
            segments.push(SegmentMeta {
                first_lsn: lsn,
                bytes: sc.end,
                pending: false,
            });
            active = Some(sc.file.clone());
            expected = Some(next);
        }
    }

    let mut next_lsn = expected.unwrap_or(opts.start_lsn);
    if let Some(d) = damage {
        if opts.recovery == RecoveryMode::Strict {
            return Err(Error::Corrupted {
                segment: d.path,
                offset: d.offset,
                detail: d.detail,
            });
        }
        // Salvage: keep the valid prefix, set everything after the damage aside.
        let mut quarantined = Vec::new();
        let mut bytes_dropped = 0;
        let damaged_segment_kept = segments.len() == d.seg + 1;
        if damaged_segment_kept {
            // keep a copy of the whole damaged segment, then cut it at the damage
            let keep = segments[d.seg].bytes;
            let src = fs.open(&d.path).map_err(io("open", &d.path))?;
            let len = src.len().map_err(io("stat", &d.path))?;
            let mut content = vec![0u8; len as usize];
            let n = src.read_at(&mut content, 0).map_err(io("read", &d.path))?;
            let copy = quarantine_path(&d.path);
            let dst = fs.create(&copy).map_err(io("create", &copy))?;
            dst.write_at(&content[..n], 0).map_err(io("write", &copy))?;
            dst.sync_data().map_err(io("fsync", &copy))?;
            src.set_len(keep).map_err(io("truncate", &d.path))?;
            src.sync_data().map_err(io("fsync", &d.path))?;
            bytes_dropped += len - keep;
            quarantined.push(copy);
        }
        let first_aside = if damaged_segment_kept {
            d.seg + 1
        } else {
            d.seg
        };
        let aside = lsns[first_aside..].iter().map(|l| path_of(*l));
        for path in aside.chain(pendings.iter().map(|l| pending_path_of(*l))) {
            let to = quarantine_path(&path);
            bytes_dropped += fs.open(&path).and_then(|f| f.len()).unwrap_or(0);
            fs.rename(&path, &to).map_err(io("set aside", &path))?;
            quarantined.push(to);
        }
        fs.sync_dir(dir).map_err(io("fsync directory", dir))?;
        if !damaged_segment_kept {
            active = match segments.last() {
                Some(last) => {
                    let path = path_of(last.first_lsn);
                    Some(fs.open(&path).map_err(io("open", &path))?)
                }
                None => None,
            };
        }
        next_lsn = d.next;
        report.salvaged = Some(Salvaged {
            segment: d.path,
            offset: d.offset,
            detail: d.detail,
            bytes_dropped,
            quarantined,
        });
    }

    let active = match active {
        Some(a) => a,
        None => {
            let header = SegmentHeader {
                first_lsn: next_lsn,
                flags: FLAG_CHECKPOINT_BASE,
            };
            let file = create_segment(fs, dir, header)?;
            segments = vec![SegmentMeta {
                first_lsn: next_lsn,
                bytes: SEGMENT_HEADER_BYTES as u64,
                pending: false,
            }];
            file
        }
    };
    report.segments = segments.len();
    report.entries = next_lsn - segments.first().map_or(next_lsn, |s| s.first_lsn);
    Ok(Recovered {
        segments,
        active,
        next_lsn,
        report,
    })
}

fn quarantine_path(segment: &Path) -> PathBuf {
    segment.with_extension(&QUARANTINE_SUFFIX[1..])
}

struct Damage {
    seg: usize,
    path: PathBuf,
    offset: u64,
    detail: Corruption,
    /// LSN after the valid prefix that ends at the damage.
    next: u64,
}

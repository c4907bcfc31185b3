//! Damage on real files: torn tails at every byte, bit flips in every frame field,
//! zeroed sectors, missing segments, damaged headers, salvage mode.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use persisting_wal::{
    Corruption, Error, FRAME_HEADER_BYTES, RecoveryMode, SEGMENT_HEADER_BYTES, Wal, WalOptions,
    segment_name,
};

const PAYLOAD: usize = 100;
const FRAME: u64 = (FRAME_HEADER_BYTES + 4 + PAYLOAD) as u64;

fn frame_at(k: u64) -> u64 {
    SEGMENT_HEADER_BYTES as u64 + k * FRAME
}

/// A log of `n` entries of 100 bytes in one segment; returns the segment path.
fn log_of(dir: &Path, n: u64) -> PathBuf {
    let (wal, _) = Wal::open(dir, WalOptions::default()).unwrap();
    for i in 0..n {
        wal.append(&[i as u8; PAYLOAD]).unwrap();
    }
    wal.close().unwrap();
    dir.join(segment_name(0))
}

fn entries(wal: &Wal) -> Vec<Vec<u8>> {
    wal.read_from(wal.first_lsn())
        .unwrap()
        .map(|e| e.unwrap().payload)
        .collect()
}

fn patch(path: &Path, at: u64, f: impl Fn(&mut u8)) {
    let mut data = std::fs::read(path).unwrap();
    f(&mut data[at as usize]);
    std::fs::write(path, data).unwrap();
}

#[test]
fn torn_tail_cut_at_every_byte_of_the_last_frame_recovers_the_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let master = tmp.path().join("master");
    let seg = log_of(&master, 5);
    let full = std::fs::read(&seg).unwrap();
    for cut in frame_at(4)..frame_at(5) {
        let dir = tmp.path().join(format!("cut{cut}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(segment_name(0)), &full[..cut as usize]).unwrap();
        let (wal, report) = Wal::open(&dir, WalOptions::default()).unwrap();
        assert_eq!(wal.next_lsn(), 4, "cut at {cut}");
        assert_eq!(
            report.torn_tail.is_some(),
            cut > frame_at(4),
            "cut at {cut}"
        );
        assert_eq!(entries(&wal).len(), 4);
        // the log goes on from there, and the repair is durable
        assert_eq!(wal.append(b"after").unwrap(), 4);
        drop(wal);
        let (wal, report) = Wal::open(&dir, WalOptions::default()).unwrap();
        assert!(report.torn_tail.is_none());
        assert_eq!(entries(&wal).last().unwrap(), b"after");
    }
}

#[test]
fn zeros_after_the_last_frame_are_a_clean_end_and_a_zeroed_frame_is_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = log_of(tmp.path(), 5);
    // preallocated space (or an extension that never reached the disk): zeros
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    drop(f);
    let (wal, report) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
    assert_eq!(wal.next_lsn(), 5);
    assert!(report.torn_tail.is_none(), "{report:?}");
    assert_eq!(entries(&wal).len(), 5);
    drop(wal);
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        frame_at(5),
        "closing trims"
    );
    // the last frame's second half zeroed (a torn sector)
    let mut data = std::fs::read(&seg).unwrap();
    let mid = (frame_at(4) + FRAME / 2) as usize;
    data[mid..].iter_mut().for_each(|b| *b = 0);
    std::fs::write(&seg, data).unwrap();
    let (wal, report) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
    assert_eq!(wal.next_lsn(), 4);
    assert_eq!(report.torn_tail.unwrap().offset, frame_at(4));
}

#[test]
fn a_flip_in_any_field_of_an_inner_frame_is_corruption_naming_file_and_offset() {
    // fields of frame 2: crc, body_len, lsn, count, entry length, payload
    let fields = [0u64, 4, 8, 16, 20, 24, 60, FRAME - 1];
    for field in fields {
        for bit in [0u8, 7] {
            let tmp = tempfile::tempdir().unwrap();
            let seg = log_of(tmp.path(), 5);
            let at = frame_at(2) + field;
            patch(&seg, at, |b| *b ^= 1 << bit);
            let err = Wal::open(tmp.path(), WalOptions::default()).unwrap_err();
            match &err {
                Error::Corrupted {
                    segment, offset, ..
                } => {
                    assert_eq!(segment, &seg, "field {field}");
                    assert_eq!(*offset, frame_at(2), "field {field}: {err}");
                }
                other => panic!("field {field}: expected corruption, got {other}"),
            }
            let msg = err.to_string();
            assert!(
                msg.contains(&seg.display().to_string()) && msg.contains("byte"),
                "{msg}"
            );
        }
    }
}

#[test]
fn checksum_mismatch_reports_expected_and_found() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = log_of(tmp.path(), 3);
    patch(&seg, frame_at(0) + 30, |b| *b ^= 0xff);
    let err = Wal::open(tmp.path(), WalOptions::default()).unwrap_err();
    let Error::Corrupted {
        detail: Corruption::CorruptBeforeValid { first, .. },
        ..
    } = &err
    else {
        panic!("{err}");
    };
    let Corruption::ChecksumMismatch { expected, found } = **first else {
        panic!("{err}")
    };
    assert_ne!(expected, found);
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{expected:#010x}")) && msg.contains(&format!("{found:#010x}")),
        "{msg}"
    );
}

#[test]
fn a_zeroed_sector_before_valid_frames_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = log_of(tmp.path(), 20);
    let mut data = std::fs::read(&seg).unwrap();
    data[512..1024].iter_mut().for_each(|b| *b = 0);
    std::fs::write(&seg, data).unwrap();
    let err = Wal::open(tmp.path(), WalOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err}");
}

fn multi_segment_log(dir: &Path) -> Vec<PathBuf> {
    let opts = WalOptions {
        segment_bytes_max: 4096,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir, opts).unwrap();
    for i in 0..200u32 {
        wal.append(&[i as u8; PAYLOAD]).unwrap();
    }
    drop(wal);
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    segs
}

#[test]
fn a_missing_segment_is_corruption_not_a_silent_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let segs = multi_segment_log(tmp.path());
    assert!(segs.len() >= 4);
    std::fs::remove_file(&segs[1]).unwrap();
    let err = Wal::open(tmp.path(), WalOptions::default()).unwrap_err();
    match err {
        Error::Corrupted {
            segment,
            detail: Corruption::MissingLsns { expected, found },
            ..
        } => {
            assert_eq!(segment, segs[2]);
            assert!(expected < found);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_damaged_inner_segment_fails_strict_and_salvage_keeps_the_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let segs = multi_segment_log(tmp.path());
    // damage the last frame of segment 1: not the tail of the log
    let len = std::fs::metadata(&segs[1]).unwrap().len();
    patch(&segs[1], len - 5, |b| *b ^= 1);
    let err = Wal::open(tmp.path(), WalOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::Corrupted { ref segment, .. } if *segment == segs[1]),
        "{err}"
    );

    let opts = WalOptions {
        recovery: RecoveryMode::Salvage,
        ..WalOptions::default()
    };
    let (wal, report) = Wal::open(tmp.path(), opts).unwrap();
    let salvaged = report.salvaged.expect("salvage report");
    assert_eq!(salvaged.segment, segs[1]);
    assert!(salvaged.quarantined.len() >= segs.len() - 1, "{salvaged:?}");
    for q in &salvaged.quarantined {
        assert!(q.exists(), "{} kept aside", q.display());
    }
    let got = entries(&wal);
    assert!(!got.is_empty());
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, p)| p == &vec![i as u8; PAYLOAD])
    );
    let next = wal.next_lsn();
    assert_eq!(wal.append(b"goes on").unwrap(), next);
    drop(wal);
    // and it opens strictly afterwards
    let (wal, _) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
    assert_eq!(wal.next_lsn(), next + 1);
}

#[test]
fn damaged_segment_header_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = log_of(tmp.path(), 2);
    patch(&seg, 3, |b| *b ^= 0x20);
    let err = Wal::open(tmp.path(), WalOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Corrupted {
                offset: 0,
                detail: Corruption::BadHeader(_),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn garbage_segment_files_never_panic() {
    let mut rng = persisting_wal::SimRng::new(7);
    for round in 0..200 {
        let tmp = tempfile::tempdir().unwrap();
        let seg = log_of(tmp.path(), 3);
        let mut data = std::fs::read(&seg).unwrap();
        let flips = 1 + rng.below(8);
        for _ in 0..flips {
            let i = rng.below(data.len() as u64) as usize;
            data[i] = rng.next_u64() as u8;
        }
        if round % 3 == 0 {
            data.truncate(rng.below(data.len() as u64) as usize);
        }
        std::fs::write(&seg, &data).unwrap();
        for mode in [RecoveryMode::Strict, RecoveryMode::Salvage] {
            let opts = WalOptions {
                recovery: mode,
                ..WalOptions::default()
            };
            if let Ok((wal, _)) = Wal::open(tmp.path(), opts) {
                // whatever was recovered reads back intact
                for (i, p) in entries(&wal).iter().enumerate() {
                    assert_eq!(p, &vec![i as u8; PAYLOAD], "round {round}");
                }
            }
        }
    }
}

/// A segment still under its pending name continues the log only when the segment
/// before it is whole; after a torn predecessor it held nothing acknowledged.
#[test]
fn pending_segments_are_adopted_after_a_whole_predecessor_and_dropped_after_a_torn_one() {
    for torn in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let segs = multi_segment_log(tmp.path());
        let last = segs.last().unwrap();
        let name = last.file_name().unwrap().to_str().unwrap().to_owned();
        let lsn = persisting_wal::parse_segment_name(&name).unwrap();
        std::fs::rename(last, tmp.path().join(persisting_wal::pending_name(lsn))).unwrap();
        let before = &segs[segs.len() - 2];
        if torn {
            let len = std::fs::metadata(before).unwrap().len();
            OpenOptions::new()
                .write(true)
                .open(before)
                .unwrap()
                .set_len(len - 7)
                .unwrap();
        }
        let (wal, report) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        if torn {
            assert_eq!((report.pending_adopted, report.pending_discarded), (0, 1));
            assert!(report.torn_tail.is_some());
            assert_eq!(wal.next_lsn(), lsn - 1);
        } else {
            assert_eq!((report.pending_adopted, report.pending_discarded), (1, 0));
            assert_eq!(wal.next_lsn(), 200);
            assert!(last.exists(), "adopted segment has its final name again");
        }
        let got = entries(&wal);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, p)| p == &vec![i as u8; PAYLOAD])
        );
    }
}

//! Golden segment files of format version 1 (`testdata/wal-v1/`): they must always
//! open and read back the same entries, and this build must write the same bytes.
//! Never regenerate them.

use std::path::{Path, PathBuf};

use persisting_wal::{Wal, WalOptions};

fn golden_dir() -> PathBuf {
    // at run time: a test binary of the shared target directory may have been built
    // in another checkout
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.join("testdata/wal-v1")
}

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes_max: 4096,
        ..WalOptions::default()
    }
}

/// The operations that made the golden log.
pub fn write_golden_log(dir: &Path) {
    let (wal, _) = Wal::open(dir, opts()).unwrap();
    wal.append(b"first entry").unwrap();
    wal.append_batch(&[&b"batch a"[..], b"", "バッチ".as_bytes()])
        .unwrap();
    for i in 0..60u32 {
        wal.append(&[i as u8; 100]).unwrap();
    }
    wal.checkpoint(10).unwrap();
    wal.close().unwrap();
}

fn expected() -> Vec<(u64, Vec<u8>)> {
    let mut all = vec![
        (0, b"first entry".to_vec()),
        (1, b"batch a".to_vec()),
        (2, Vec::new()),
        (3, "バッチ".as_bytes().to_vec()),
    ];
    all.extend((0..60u32).map(|i| (4 + u64::from(i), vec![i as u8; 100])));
    all
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn golden_v1_log_opens_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&golden_dir(), tmp.path());
    let (wal, report) = Wal::open(tmp.path(), opts()).unwrap();
    assert!(report.torn_tail.is_none() && report.salvaged.is_none());
    assert_eq!(wal.next_lsn(), 64);
    let first = wal.first_lsn();
    assert!(first <= 10);
    let got: Vec<(u64, Vec<u8>)> = wal
        .read_from(first)
        .unwrap()
        .map(|e| e.map(|e| (e.lsn, e.payload)).unwrap())
        .collect();
    assert_eq!(got, expected()[first as usize..]);
}

#[test]
fn this_build_writes_the_golden_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    write_golden_log(tmp.path());
    let mut names: Vec<_> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    let mut ours: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    ours.sort();
    assert_eq!(names, ours);
    for name in names {
        let golden = std::fs::read(golden_dir().join(&name)).unwrap();
        let written = std::fs::read(tmp.path().join(&name)).unwrap();
        assert!(golden == written, "{name:?} differs from the golden file");
    }
}

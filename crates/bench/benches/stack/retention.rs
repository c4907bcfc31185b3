//! The retention rows: random reads after trimming half of a big bucket against the
//! same reads of an untrimmed copy (the log start must cost reads nothing), and a trim
//! of half of the bucket against one flush of 10^5 records.

use std::path::Path;
use std::time::{Duration, Instant};

use persisting::lance::{LanceBucket, LanceOptions};

use super::{INGEST_FLUSH, READS, ingest_ours, median, offsets, record, row, settle};

/// Rounds of the trimmed/untrimmed read comparison, alternated.
const ROUNDS: usize = 10;

/// Mean seconds of `read(offset, 100)` at random offsets of `span` (offsets from
/// `from`).
async fn reads(b: &LanceBucket, from: u64, span: u64, seed: u64) -> f64 {
    let t = Instant::now();
    for o in offsets(span, READS, seed) {
        assert_eq!(b.read(from + o, 100).await.unwrap().len(), 100);
    }
    t.elapsed().as_secs_f64() / READS as f64
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                dir_bytes(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

pub(super) async fn retention_rows(root: &Path, n: u64) {
    let opts = || LanceOptions {
        version_retention: Duration::ZERO,
        ..LanceOptions::default()
    };
    let kept = root.join("untrimmed");
    ingest_ours(&kept, n).await;
    let cut = root.join("trimmed");
    copy_dir(&kept, &cut);
    settle();

    // a trim of the first half (whole fragments, files removed at once) against one
    // flush of 10^5 records into a bucket of the same size
    let mut t = LanceBucket::open(&cut, opts()).await.unwrap();
    let fragments = t.stats().fragments;
    let bytes = dir_bytes(&cut.join("data.lance"));
    let started = Instant::now();
    let report = t.trim(n / 2).await.unwrap();
    let trim = started.elapsed().as_secs_f64();
    let freed = bytes - dir_bytes(&cut.join("data.lance"));
    println!(
        "trim of {} records ({} of {fragments} fragments) to log start {}: {:.3} s, {:.0} MiB freed",
        report.records,
        report.fragments,
        report.log_start,
        trim,
        freed as f64 / (1u64 << 20) as f64
    );
    let mut flushed = LanceBucket::open(
        &kept,
        LanceOptions {
            flush_threshold: 0,
            ..opts()
        },
    )
    .await
    .unwrap();
    let start = flushed.total_count();
    flushed
        .put_batch((start..start + INGEST_FLUSH).map(record).collect())
        .unwrap();
    let started = Instant::now();
    flushed.flush().await.unwrap();
    let flush = started.elapsed().as_secs_f64();
    drop(flushed);
    row(
        "retention",
        &format!(
            "trim of half of {n} records ({fragments} fragments, files removed) vs a flush of 10^5 (s)"
        ),
        trim,
        flush,
        "s",
        flush / trim,
        "1.0x: a trim is not slower than a flush",
    );
    drop(t);

    // random reads of the kept half: trimmed (log start n/2) and untrimmed, alternated
    settle();
    let trimmed = LanceBucket::open(&cut, LanceOptions::default())
        .await
        .unwrap();
    let untrimmed = LanceBucket::open(&kept, LanceOptions::default())
        .await
        .unwrap();
    trimmed.verify_files().await.unwrap();
    untrimmed.verify_files().await.unwrap();
    let half = n / 2;
    // a warm-up pass each (other offsets than the timed ones)
    reads(&trimmed, half, half, 99).await;
    reads(&untrimmed, half, half, 99).await;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // the same offsets for both, which goes first alternating
        let seed = 7 + round as u64;
        if round % 2 == 0 {
            ours.push(reads(&trimmed, half, half, seed).await);
            base.push(reads(&untrimmed, half, half, seed).await);
        } else {
            base.push(reads(&untrimmed, half, half, seed).await);
            ours.push(reads(&trimmed, half, half, seed).await);
        }
    }
    println!(
        "random reads of the kept half, ms per read: trimmed {:?}, untrimmed {:?}",
        ours.iter()
            .map(|s| (s * 1e5).round() / 1e2)
            .collect::<Vec<_>>(),
        base.iter()
            .map(|s| (s * 1e5).round() / 1e2)
            .collect::<Vec<_>>()
    );
    let (ours, base) = (median(ours), median(base));
    row(
        "retention",
        &format!(
            "random read(offset, 100) of the kept half after trimming half of {n} vs untrimmed (ms)"
        ),
        ours * 1e3,
        base * 1e3,
        "ms",
        base / ours,
        "0.95x",
    );
}

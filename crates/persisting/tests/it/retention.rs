//! A bucket's data lifetime through the facade: the retention policies run after
//! flushes, hold back for consumer groups, keep every offset; explicit trims and
//! snapshots; on local disk, on Lance's in-memory store and, with
//! `PERSISTING_TEST_S3`, on S3.

use std::time::{Duration, Instant};

use persisting::{PersistingBackend, PersistingOptions, StorageBackend, StorageError, record};
use persisting_codec::{Record, Value};

use crate::object_store::uris;
use crate::rt;

/// Where each test runs: a local directory, then each object store (data there, WAL
/// in `local`).
fn places(name: &str, local: &std::path::Path) -> Vec<(String, Option<std::path::PathBuf>)> {
    let mut out = vec![(local.join("bucket").display().to_string(), None)];
    for uri in uris(name) {
        out.push((uri, Some(local.join(format!("wal-{}", out.len())))));
    }
    out
}

fn opts(wal_dir: Option<std::path::PathBuf>) -> PersistingOptions {
    PersistingOptions {
        enable_wal: true,
        wal_sync_interval: Duration::ZERO,
        wal_dir,
        flush_threshold: 100_000,
        version_retention: Duration::ZERO,
        ..PersistingOptions::default()
    }
}

/// `flushes` flushes of 100 records each (one Lance fragment each).
async fn fill(b: &PersistingBackend, from: i64, flushes: i64) {
    for k in 0..flushes {
        let start = from + k * 100;
        b.put_batch((start..start + 100).map(|i| record! {"id" => i}).collect())
            .await
            .unwrap();
        b.flush().await.unwrap();
    }
}

fn ids(records: &[Record]) -> Vec<i64> {
    records
        .iter()
        .map(|r| match &r["id"] {
            Value::Int(i) => *i,
            v => panic!("{v:?}"),
        })
        .collect()
}

/// Waits until the bucket's log start reaches `want` (the flush owner trims after
/// flushes), failing after 20 s with what it is.
async fn log_start_reaches(b: &PersistingBackend, want: u64) -> u64 {
    let started = Instant::now();
    loop {
        let at = b.stats().await.unwrap().log_start_offset;
        if at >= want || started.elapsed() > Duration::from_secs(20) {
            return at;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn retention_by_records_runs_after_flushes_and_no_offset_moves() {
    rt().block_on(async {
        let local = tempfile::tempdir().unwrap();
        for (data, wal_dir) in places("records", local.path()) {
            let o = PersistingOptions {
                retention_records: Some(250),
                ..opts(wal_dir)
            };
            let b = PersistingBackend::open(0, &data, o.clone()).await.unwrap();
            fill(&b, 0, 6).await;
            // 350 falls in the fourth fragment, which stays whole
            assert_eq!(log_start_reaches(&b, 300).await, 300, "{data}");
            assert_eq!(b.total_count(), 600, "the end offset does not move");
            assert_eq!(ids(&b.get(300, Some(2)).await.unwrap()), vec![300, 301]);
            let err = b.get(10, Some(5)).await.unwrap_err();
            assert!(
                matches!(
                    &err,
                    StorageError::Lance(persisting_lance::Error::BelowLogStart {
                        offset: 10,
                        log_start: 300,
                        ..
                    })
                ),
                "{err}"
            );
            assert!(err.to_string().contains("read from offset 300"), "{err}");
            b.close().await.unwrap();
            drop(b);
            let b = PersistingBackend::open(0, &data, o).await.unwrap();
            let stats = b.stats().await.unwrap();
            assert_eq!(
                (stats.log_start_offset, stats.total_count),
                (300, 600),
                "{data}"
            );
            assert_eq!(
                ids(&b.get(590, None).await.unwrap()),
                (590..600).collect::<Vec<_>>()
            );
            b.close().await.unwrap();
        }
    });
}

#[test]
fn retention_never_removes_what_a_consumer_group_has_not_read_unless_told_to() {
    rt().block_on(async {
        let local = tempfile::tempdir().unwrap();
        for (data, wal_dir) in places("groups", local.path()) {
            let o = PersistingOptions {
                retention_records: Some(100),
                ..opts(wal_dir.clone())
            };
            let b = PersistingBackend::open(0, &data, o).await.unwrap();
            fill(&b, 0, 2).await;
            b.commit_offset("slow", 150).await.unwrap();
            fill(&b, 200, 4).await;
            assert_eq!(
                log_start_reaches(&b, 100).await,
                100,
                "the group holds the cut at 150"
            );
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert_eq!(b.stats().await.unwrap().log_start_offset, 100);
            b.commit_offset("slow", 600).await.unwrap();
            fill(&b, 600, 1).await;
            assert_eq!(log_start_reaches(&b, 600).await, 600, "{data}");
            b.close().await.unwrap();
            drop(b);
            // ignoring groups: a group at 0 holds nothing back
            let data = format!("{data}-ignoring");
            let wal_dir = wal_dir.map(|w| w.with_extension("ignoring"));
            let o = PersistingOptions {
                retention_records: Some(100),
                retention_ignores_groups: true,
                ..opts(wal_dir)
            };
            let b = PersistingBackend::open(0, &data, o).await.unwrap();
            b.put(record! {"id" => 0}).await.unwrap();
            b.commit_offset("slow", 0).await.unwrap();
            fill(&b, 1, 3).await;
            assert!(log_start_reaches(&b, 200).await >= 200, "{data}");
            b.close().await.unwrap();
        }
    });
}

#[test]
fn a_snapshot_keeps_the_records_a_trim_removes_until_it_is_deleted() {
    rt().block_on(async {
        let local = tempfile::tempdir().unwrap();
        for (data, wal_dir) in places("snapshots", local.path()) {
            let b = PersistingBackend::open(0, &data, opts(wal_dir))
                .await
                .unwrap();
            fill(&b, 0, 3).await;
            // acknowledged, not flushed: the snapshot flushes first
            b.put(record! {"id" => 300}).await.unwrap();
            let snap = b.snapshot("training-run-7").await.unwrap();
            assert_eq!((snap.log_start, snap.end_offset), (0, 301), "{data}");
            fill(&b, 301, 2).await;
            let report = b.trim(250).await.unwrap();
            assert_eq!(report.log_start, 200);
            assert!(b.get(0, Some(1)).await.is_err());
            let back = b.get_snapshot("training-run-7", 0, None).await.unwrap();
            assert_eq!(ids(&back), (0..301).collect::<Vec<_>>(), "{data}");
            assert_eq!(
                ids(&b
                    .get_snapshot("training-run-7", 299, Some(10))
                    .await
                    .unwrap()),
                vec![299, 300]
            );
            let listed = b.snapshots().await.unwrap();
            assert_eq!(listed.len(), 1);
            assert_eq!(listed[0].name, "training-run-7");
            let err = b.get_snapshot("nope", 0, None).await.unwrap_err();
            assert!(
                err.to_string().contains("no snapshot named \"nope\""),
                "{err}"
            );
            let err = b.snapshot("../x").await.unwrap_err();
            assert!(err.to_string().contains("invalid snapshot name"), "{err}");
            let err = b.trim(10_000).await.unwrap_err();
            assert!(err.to_string().contains("10000"), "{err}");
            b.delete_snapshot("training-run-7").await.unwrap();
            assert!(b.snapshots().await.unwrap().is_empty());
            assert!(b.get_snapshot("training-run-7", 0, None).await.is_err());
            assert_eq!(
                ids(&b.get(200, None).await.unwrap()),
                (200..501).collect::<Vec<_>>()
            );
            b.close().await.unwrap();
        }
    });
}

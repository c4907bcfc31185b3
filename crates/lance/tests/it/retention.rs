//! Retention and snapshots: trims remove whole fragments from the front behind a
//! durable log start, offsets never move, reads below the log start name it, a trim
//! cut short by a crash or a power loss lands whole or not at all, and snapshots read
//! the bucket as it was.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use persisting_codec::{Record, Value, record};
use persisting_lance::{
    Error, LOG_START_BEFORE_KEY, LOG_START_KEY, LanceBucket, LanceOptions, Retention, SimCrash,
    SimDisk,
};

use crate::rt;

fn batch(from: i64, n: i64) -> Vec<Record> {
    (from..from + n)
        .map(|i| record! {"id" => i, "name" => format!("record {i}")})
        .collect()
}

fn opts() -> LanceOptions {
    LanceOptions {
        flush_threshold: 0,
        compact_fragments_max: 0,
        version_retention: Duration::ZERO,
        ..LanceOptions::default()
    }
}

/// `flushes` flushes of 100 records each: one fragment each.
async fn filled(dir: &Path, opts: LanceOptions, flushes: i64) -> LanceBucket {
    let mut b = LanceBucket::open(dir, opts).await.unwrap();
    for k in 0..flushes {
        b.put_batch(batch(k * 100, 100)).unwrap();
        b.flush().await.unwrap();
    }
    b
}

fn ids(records: &[Record]) -> Vec<i64> {
    records
        .iter()
        .map(|r| match &r["id"] {
            Value::Int(i) => *i,
            v => panic!("id {v:?}"),
        })
        .collect()
}

fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[test]
fn a_trim_removes_whole_fragments_and_no_offset_moves() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = filled(dir.path(), opts(), 5).await;
        b.put_batch(batch(500, 10)).unwrap(); // buffered: untouched by a trim
        let data = dir.path().join("data.lance").join("data");
        let before = dir_bytes(&data);
        // 250 falls inside the third fragment, which stays whole
        let report = b.trim(250).await.unwrap();
        assert_eq!(
            (report.log_start, report.records, report.fragments),
            (200, 200, 2)
        );
        assert!(report.files_removed > 0, "{report:?}");
        assert!(dir_bytes(&data) < before, "the trimmed files are gone");
        assert_eq!(b.log_start(), 200);
        assert_eq!(b.total_count(), 510);
        assert_eq!(ids(&b.read(200, 3).await.unwrap()), vec![200, 201, 202]);
        assert_eq!(
            ids(&b.read(495, 10).await.unwrap()),
            (495..505).collect::<Vec<_>>()
        );
        assert_eq!(
            b.read_arrow(200, 600)
                .await
                .unwrap()
                .iter()
                .map(|x| x.num_rows())
                .sum::<usize>(),
            310
        );
        match b.read(199, 10).await {
            Err(Error::BelowLogStart {
                offset: 199,
                log_start: 200,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let message = b.read(0, 1).await.unwrap_err().to_string();
        assert!(message.contains("log start 200"), "{message}");
        // trims at or below the log start remove nothing; past the dataset refused
        assert_eq!(b.trim(150).await.unwrap().records, 0);
        assert!(matches!(
            b.trim(10_000).await,
            Err(Error::TrimPastEnd { end: 500, .. })
        ));
        b.flush().await.unwrap();
        assert_eq!(b.stats().log_start, 200);
        drop(b);
        let again = LanceBucket::open(dir.path(), opts()).await.unwrap();
        assert_eq!((again.log_start(), again.total_count()), (200, 510));
        assert_eq!(ids(&again.read(200, 1).await.unwrap()), vec![200]);
        assert_eq!(ids(&again.read(509, 5).await.unwrap()), vec![509]);
    });
}

#[test]
fn compaction_after_a_trim_keeps_every_offset() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = filled(dir.path(), opts(), 6).await;
        b.trim(300).await.unwrap();
        b.compact().await.unwrap();
        assert_eq!(b.stats().fragments, 1);
        assert_eq!(
            ids(&b.read(300, 300).await.unwrap()),
            (300..600).collect::<Vec<_>>()
        );
        b.trim(450).await.unwrap(); // one fragment now: nothing below 450 goes whole
        assert_eq!(b.log_start(), 300);
        b.trim(600).await.unwrap();
        assert_eq!((b.log_start(), b.total_count()), (600, 600));
        assert!(b.read(600, 10).await.unwrap().is_empty());
        b.put_batch(batch(600, 5)).unwrap();
        b.flush().await.unwrap();
        assert_eq!(
            ids(&b.read(600, 10).await.unwrap()),
            (600..605).collect::<Vec<_>>()
        );
    });
}

/// A trim whose first commit (the log start) landed and whose second (the delete)
/// did not, as a crash between them leaves it: readers compute the old log start,
/// and the writer's next step finishes the trim before anything else.
#[test]
fn a_trim_cut_between_its_commits_is_finished_by_the_next_writer() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        drop(filled(dir.path(), opts(), 4).await);
        let uri = dir.path().join("data.lance");
        let mut ds = lance::Dataset::open(uri.to_str().unwrap()).await.unwrap();
        let next = ds.manifest().version + 2;
        ds.update_config([
            (LOG_START_KEY, format!("200@{next}").as_str()),
            (LOG_START_BEFORE_KEY, "0"),
        ])
        .await
        .unwrap();
        let mut b = LanceBucket::open(dir.path(), opts()).await.unwrap();
        assert_eq!(
            b.log_start(),
            0,
            "the delete has not landed: the old log start"
        );
        assert_eq!(ids(&b.read(0, 2).await.unwrap()), vec![0, 1]);
        b.put_batch(batch(400, 10)).unwrap();
        b.flush().await.unwrap();
        assert_eq!(b.log_start(), 200);
        assert_eq!(ids(&b.read(200, 1).await.unwrap()), vec![200]);
        assert_eq!(
            ids(&b.read(405, 100).await.unwrap()),
            (405..410).collect::<Vec<_>>()
        );
        let again = LanceBucket::open(dir.path(), opts()).await.unwrap();
        assert_eq!((again.log_start(), again.total_count()), (200, 410));
    });
}

#[test]
fn a_damaged_log_start_is_an_error_not_a_guess() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        drop(filled(dir.path(), opts(), 2).await);
        let uri = dir.path().join("data.lance");
        let mut ds = lance::Dataset::open(uri.to_str().unwrap()).await.unwrap();
        ds.update_config([(LOG_START_KEY, "12x"), (LOG_START_BEFORE_KEY, "0")])
            .await
            .unwrap();
        let err = LanceBucket::open(dir.path(), opts()).await.unwrap_err();
        assert!(matches!(err, Error::LogStartDamaged { .. }), "{err}");
    });
}

/// A power loss at any point after a trim: the log start is the old one or the new
/// one, every record at or above it is there at its offset, none below it reads.
#[test]
fn a_trim_survives_every_kind_of_power_loss() {
    rt().block_on(async {
        for mode in [
            SimCrash::DropUnsynced,
            SimCrash::KeepPrefix,
            SimCrash::TearLastWrite,
        ] {
            for seed in 1..3 {
                let dir = tempfile::tempdir().unwrap();
                let disk = SimDisk::new(dir.path());
                let mut b = LanceBucket::open_on(dir.path(), opts(), Arc::new(disk.clone()))
                    .await
                    .unwrap();
                for k in 0..4 {
                    b.put_batch(batch(k * 100, 100)).unwrap();
                    b.flush().await.unwrap();
                }
                let report = b.trim(200).await.unwrap();
                assert_eq!(report.log_start, 200);
                disk.crash(mode, seed).unwrap();
                drop(b);
                disk.power_on();
                let mut b = LanceBucket::open_on(dir.path(), opts(), Arc::new(disk.clone()))
                    .await
                    .unwrap();
                assert_eq!(b.log_start(), 200, "{mode:?} {seed}: the trim was durable");
                assert_eq!(b.total_count(), 400);
                assert_eq!(
                    ids(&b.read(200, 200).await.unwrap()),
                    (200..400).collect::<Vec<_>>()
                );
                assert!(b.read(0, 1).await.is_err());
                b.put_batch(batch(400, 1)).unwrap();
                b.flush().await.unwrap();
                assert_eq!(ids(&b.read(400, 1).await.unwrap()), vec![400]);
            }
        }
    });
}

#[test]
fn retention_policies_cut_at_fragment_ends_and_respect_groups() {
    rt().block_on(async {
        // records: keep at least the last 250 of 600
        let dir = tempfile::tempdir().unwrap();
        let policy = |retention: Retention| LanceOptions {
            retention,
            ..opts()
        };
        let records = Retention {
            records: Some(250),
            ..Retention::default()
        };
        let mut b = filled(dir.path(), policy(records.clone()), 6).await;
        assert_eq!(b.retention_cut(None).await.unwrap(), 350);
        let report = b.apply_retention(None).await.unwrap().unwrap();
        assert_eq!(report.log_start, 300, "the fragment holding 350 stays");
        assert!(
            b.apply_retention(None).await.unwrap().is_none(),
            "nothing more is due"
        );
        // a group that has not committed past 150 holds the cut back
        let dir = tempfile::tempdir().unwrap();
        let mut b = filled(dir.path(), policy(records.clone()), 6).await;
        assert_eq!(b.retention_cut(Some(150)).await.unwrap(), 150);
        assert_eq!(
            b.apply_retention(Some(150))
                .await
                .unwrap()
                .unwrap()
                .log_start,
            100
        );
        let ignoring = Retention {
            ignores_groups: true,
            ..records
        };
        let dir = tempfile::tempdir().unwrap();
        let mut b = filled(dir.path(), policy(ignoring), 6).await;
        assert_eq!(
            b.apply_retention(Some(0)).await.unwrap().unwrap().log_start,
            300
        );

        // bytes: about two fragments' worth keeps the last two
        let dir = tempfile::tempdir().unwrap();
        let mut b = filled(dir.path(), opts(), 6).await;
        let one = dir_bytes(&dir.path().join("data.lance").join("data")) / 6;
        drop(b);
        let bytes = Retention {
            bytes: Some(one * 2 + one / 2),
            ..Retention::default()
        };
        b = LanceBucket::open(dir.path(), policy(bytes)).await.unwrap();
        assert_eq!(
            b.apply_retention(None).await.unwrap().unwrap().log_start,
            400
        );
        let tiny = Retention {
            bytes: Some(1),
            ..Retention::default()
        };
        let mut b = LanceBucket::open(dir.path(), policy(tiny)).await.unwrap();
        b.apply_retention(None).await.unwrap();
        assert_eq!(b.log_start(), 500, "the newest fragment always stays");

        // age: fragments written before the cut-off go, newer ones stay
        let dir = tempfile::tempdir().unwrap();
        let age = Retention {
            age: Some(Duration::from_millis(1500)),
            ..Retention::default()
        };
        let mut b = filled(dir.path(), policy(age), 3).await;
        std::thread::sleep(Duration::from_millis(2100));
        b.put_batch(batch(300, 100)).unwrap();
        b.flush().await.unwrap();
        assert_eq!(
            b.apply_retention(None).await.unwrap().unwrap().log_start,
            300
        );
        assert_eq!(ids(&b.read(300, 1).await.unwrap()), vec![300]);
    });
}

#[test]
fn a_snapshot_reads_the_bucket_as_it_was_until_it_is_deleted() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = filled(dir.path(), opts(), 0).await;
        assert!(matches!(
            b.snapshot("run-1").await,
            Err(Error::NothingToSnapshot { .. })
        ));
        let mut b = filled(dir.path(), opts(), 4).await;
        let snap = b.snapshot("run-1").await.unwrap();
        assert_eq!((snap.log_start, snap.end_offset), (0, 400));
        assert!(matches!(
            b.snapshot("run-1").await,
            Err(Error::SnapshotExists { .. })
        ));
        for bad in ["", ".x", "a/b", "x.lock", "é"] {
            assert!(
                matches!(b.snapshot(bad).await, Err(Error::InvalidSnapshot { .. })),
                "{bad:?}"
            );
        }
        b.put_batch(batch(400, 100)).unwrap();
        b.flush().await.unwrap();
        let data = dir.path().join("data.lance").join("data");
        b.trim(300).await.unwrap();
        b.compact().await.unwrap();
        let pinned = dir_bytes(&data);
        let reader = LanceBucket::open_snapshot(dir.path(), opts(), "run-1")
            .await
            .unwrap();
        assert_eq!((reader.log_start(), reader.end_offset()), (0, 400));
        assert_eq!(
            ids(&reader.read(0, 1000).await.unwrap()),
            (0..400).collect::<Vec<_>>()
        );
        assert!(
            b.read(0, 1).await.is_err(),
            "the bucket itself starts at 300"
        );
        let list = b.snapshots().await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].name.as_str(), list[0].end_offset), ("run-1", 400));
        assert!(list[0].created_at.is_some());
        drop(reader);
        b.delete_snapshot("run-1").await.unwrap();
        assert!(
            dir_bytes(&data) < pinned,
            "the files only the snapshot needed are gone"
        );
        assert!(b.snapshots().await.unwrap().is_empty());
        assert!(matches!(
            b.delete_snapshot("run-1").await,
            Err(Error::SnapshotNotFound { .. })
        ));
        assert!(matches!(
            LanceBucket::open_snapshot(dir.path(), opts(), "run-1").await,
            Err(Error::SnapshotNotFound { .. })
        ));
        assert_eq!(
            ids(&b.read(300, 300).await.unwrap()),
            (300..500).collect::<Vec<_>>()
        );
    });
}

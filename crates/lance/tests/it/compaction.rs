//! Compaction merges fragments without changing any offset.

use persisting_codec::record;
use persisting_lance::{LanceBucket, LanceOptions};

use crate::rt;

#[test]
fn compaction_keeps_every_offset() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = LanceOptions {
            compact_fragments_max: 0,
            ..LanceOptions::default()
        };
        let mut b = LanceBucket::open(dir.path(), opts).await.unwrap();
        let rec = |i: i64| record! {"i" => i, "s" => format!("row {i}")};
        for chunk in 0..12 {
            b.put_batch((chunk * 7..chunk * 7 + 7).map(rec).collect())
                .unwrap();
            b.flush().await.unwrap();
        }
        assert_eq!(b.stats().fragments, 12);
        let before = b.read(0, 1000).await.unwrap();
        b.compact().await.unwrap();
        assert_eq!(b.stats().fragments, 1);
        assert_eq!(b.read(0, 1000).await.unwrap(), before);
        assert_eq!(
            b.read(40, 3).await.unwrap(),
            (40..43).map(rec).collect::<Vec<_>>()
        );
        drop(b);
        let b = LanceBucket::open(dir.path(), LanceOptions::default())
            .await
            .unwrap();
        assert_eq!(b.read(0, 1000).await.unwrap(), before);
    });
}

#[test]
fn flushes_past_the_fragment_limit_compact_automatically() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = LanceOptions {
            compact_fragments_max: 4,
            ..LanceOptions::default()
        };
        let mut b = LanceBucket::open(dir.path(), opts).await.unwrap();
        let mut compacted = 0;
        for i in 0..9i64 {
            b.put_batch(vec![record! {"i" => i}]).unwrap();
            compacted += usize::from(b.flush().await.unwrap().compacted);
        }
        assert!(compacted >= 1);
        assert!(b.stats().fragments <= 5);
        let got = ints(&b).await;
        assert_eq!(got, (0..9).collect::<Vec<_>>());
    });
}

#[test]
fn fragments_of_a_thirty_second_of_the_target_or_more_are_not_compacted_on_their_own() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = LanceOptions {
            compact_fragments_max: 2,
            target_rows_per_fragment: 320, // small below 10 rows
            ..LanceOptions::default()
        };
        let mut b = LanceBucket::open(dir.path(), opts).await.unwrap();
        for i in 0..5i64 {
            b.put_batch((0..10).map(|j| record! {"i" => i * 10 + j}).collect())
                .unwrap();
            assert!(!b.flush().await.unwrap().compacted, "flush {i}");
        }
        assert_eq!(b.stats().fragments, 5);
        // three small ones pass the limit of 2
        let mut compacted = false;
        for i in 50..53i64 {
            b.put_batch(vec![record! {"i" => i}]).unwrap();
            compacted |= b.flush().await.unwrap().compacted;
        }
        assert!(compacted);
        let got = ints(&b).await;
        assert_eq!(got, (0..53).collect::<Vec<_>>());
    });
}

/// The `i` field of every record (at most 100).
async fn ints(b: &LanceBucket) -> Vec<i64> {
    b.read(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r["i"].as_i64().unwrap())
        .collect()
}

/// Data files of `dir` this process still holds open although they are deleted.
fn deleted_files_held_open(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| {
            target.starts_with(&*dir.to_string_lossy()) && target.ends_with("(deleted)")
        })
        .collect()
}

#[test]
fn small_reads_hold_no_data_file_a_clean_up_deleted() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = LanceOptions {
            compact_fragments_max: 0,
            version_retention: std::time::Duration::ZERO,
            ..LanceOptions::default()
        };
        let mut b = LanceBucket::open(dir.path(), opts).await.unwrap();
        let rec = |i: i64| record! {"i" => i, "s" => format!("row {i}")};
        for chunk in 0..6 {
            b.put_batch((chunk * 5..chunk * 5 + 5).map(rec).collect())
                .unwrap();
            b.flush().await.unwrap();
        }
        // a small read in each fragment opens its reader and data file
        for chunk in 0..6 {
            let at = chunk * 5 + 1;
            assert_eq!(
                b.read(at as u64, 2).await.unwrap(),
                vec![rec(at), rec(at + 1)]
            );
        }
        let files_before: Vec<_> = std::fs::read_dir(dir.path().join("data.lance/data"))
            .unwrap()
            .collect();
        b.compact().await.unwrap();
        let files_after: Vec<_> = std::fs::read_dir(dir.path().join("data.lance/data"))
            .unwrap()
            .collect();
        // the clean-up deleted the compacted fragments' files ...
        assert!(
            files_after.len() < files_before.len(),
            "{files_before:?} -> {files_after:?}"
        );
        // ... and no reader keeps one open
        assert_eq!(deleted_files_held_open(dir.path()), Vec::<String>::new());
        assert_eq!(
            b.read(7, 3).await.unwrap(),
            (7..10).map(rec).collect::<Vec<_>>()
        );
    });
}

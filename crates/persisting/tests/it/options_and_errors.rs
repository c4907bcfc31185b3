//! Bad options and schema conflicts give clear errors and change nothing.

use std::time::Duration;

use persisting::{
    BucketError, OptionsError, PersistingBackend, PersistingOptions, StorageBackend, StorageError,
    record,
};

use crate::rt;

#[test]
fn bad_option_values_name_the_option() {
    for (json, name) in [
        (serde_json::json!({"compression": "gzip"}), "compression"),
        (serde_json::json!({"batch_size": 0}), "batch_size"),
        (
            serde_json::json!({"wal_sync_interval": -1}),
            "wal_sync_interval",
        ),
        (serde_json::json!({"enable_wal": "maybe"}), "enable_wal"),
        (serde_json::json!({"max_wal_size": 10}), "max_wal_size"),
        (
            serde_json::json!({"target_rows_per_fragment": 8}),
            "target_rows_per_fragment",
        ),
    ] {
        let err = PersistingOptions::from_map(json.as_object().unwrap()).unwrap_err();
        match &err {
            StorageError::Options(OptionsError::Invalid { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{name}: {other}"),
        }
        assert!(err.to_string().contains(name), "{err}");
    }
    let (opts, ignored) = PersistingOptions::from_pairs([
        "enable_wal=true",
        "compression=ZSTD",
        "target_rows_per_fragment=320",
        "shiny=1",
    ])
    .unwrap();
    assert!(opts.enable_wal);
    assert_eq!(opts.target_rows_per_fragment, 320);
    assert_eq!(opts.compression.name(), "zstd");
    assert_eq!(ignored, ["shiny"]);
}

#[test]
fn a_schema_conflict_refuses_the_batch_and_leaves_wal_and_buffer_unchanged() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = PersistingOptions {
            enable_wal: true,
            wal_sync_interval: Duration::ZERO,
            ..PersistingOptions::default()
        };
        let b = PersistingBackend::open(0, dir.path(), opts.clone())
            .await
            .unwrap();
        b.put(record! {"id" => "1", "v" => 1}).await.unwrap();
        let before = b.stats().await.unwrap();
        let err = b
            .put_batch(vec![
                record! {"id" => "2", "v" => 2},
                record! {"id" => 3, "v" => 3},
            ])
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("\"id\"") && err.to_string().contains("utf8"),
            "{err}"
        );
        let after = b.stats().await.unwrap();
        assert_eq!(after.total_count, 1);
        assert_eq!(
            after.wal_size_bytes, before.wal_size_bytes,
            "nothing reached the WAL"
        );
        drop(b);
        let b = PersistingBackend::open(0, dir.path(), opts).await.unwrap();
        assert_eq!(
            b.get(0, None).await.unwrap(),
            vec![record! {"id" => "1", "v" => 1}]
        );
    });
}

/// A put that finds a flush due makes it first: if the flush fails, the put is refused
/// whole (not logged, not buffered), so retrying it cannot duplicate the records. (A
/// put that starts a flush does not wait for it: it commits in the background.)
#[test]
fn a_put_whose_flush_fails_is_refused_whole_and_a_retry_duplicates_nothing() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = PersistingOptions {
            enable_wal: true,
            wal_sync_interval: Duration::ZERO,
            flush_threshold: 3,
            ..PersistingOptions::default()
        };
        let b = PersistingBackend::open(0, dir.path(), opts.clone())
            .await
            .unwrap();
        b.put_batch(vec![record! {"i" => 0}, record! {"i" => 1}])
            .await
            .unwrap();
        // the dataset's place is taken by a file: every flush fails
        let blocker = dir.path().join("data.lance");
        std::fs::write(&blocker, b"not a dataset").unwrap();
        // acknowledged, then its flush fails: the put still succeeds (it is durable)
        b.put(record! {"i" => 2}).await.unwrap();
        // that flush commits in the background: flush waits for it, reports its failure
        let err = b.flush().await.unwrap_err();
        assert!(err.to_string().contains("data.lance"), "{err}");
        let before = b.stats().await.unwrap();
        assert_eq!((before.total_count, before.persisted_count), (3, 0));
        // the next put makes the due flush first: its failure refuses the put whole
        let err = b.put(record! {"i" => 3}).await.unwrap_err();
        assert!(err.to_string().contains("data.lance"), "{err}");
        let after = b.stats().await.unwrap();
        assert_eq!(after.total_count, 3, "the refused put is not buffered");
        assert_eq!(after.wal_size_bytes, before.wal_size_bytes, "nor logged");
        std::fs::remove_file(&blocker).unwrap();
        b.put(record! {"i" => 3}).await.unwrap();
        let all: Vec<_> = (0..4).map(|i| record! {"i" => i}).collect();
        assert_eq!(b.get(0, None).await.unwrap(), all);
        drop(b);
        let b = PersistingBackend::open(0, dir.path(), opts).await.unwrap();
        assert_eq!(b.get(0, None).await.unwrap(), all);
    });
}

#[test]
fn a_bucket_has_one_writer_at_a_time() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = PersistingOptions {
            enable_wal: true,
            ..PersistingOptions::default()
        };
        let first = PersistingBackend::open(0, dir.path(), opts.clone())
            .await
            .unwrap();
        first.put(record! {"id" => "1"}).await.unwrap();
        let err = PersistingBackend::open(0, dir.path(), opts.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::Bucket(BucketError::Locked { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("LOCK"), "{err}");
        // released with the handle
        drop(first);
        let again = PersistingBackend::open(0, dir.path(), opts).await.unwrap();
        assert_eq!(again.total_count(), 1);
    });
}

/// `close` releases the bucket's lock although clones of the handle live on (they
/// refuse every write from then on).
#[test]
fn close_releases_the_lock_while_clones_live_on() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = PersistingOptions {
            enable_wal: true,
            ..PersistingOptions::default()
        };
        let first = PersistingBackend::open(0, dir.path(), opts.clone())
            .await
            .unwrap();
        let clone = first.clone();
        first.put(record! {"id" => "1"}).await.unwrap();
        first.close().await.unwrap();
        let again = PersistingBackend::open(0, dir.path(), opts).await.unwrap();
        assert_eq!(again.total_count(), 1);
        let err = clone.put(record! {"id" => "2"}).await.unwrap_err();
        assert!(
            matches!(err, StorageError::Bucket(BucketError::Closed { .. })),
            "{err}"
        );
        again.put(record! {"id" => "2"}).await.unwrap();
        assert_eq!(again.get(0, None).await.unwrap().len(), 2);
    });
}

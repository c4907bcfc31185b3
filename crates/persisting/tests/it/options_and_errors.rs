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
            serde_json::json!({"max_unflushed_bytes": 100}),
            "max_unflushed_bytes",
        ),
        (serde_json::json!({"put_timeout": -1}), "put_timeout"),
        (
            serde_json::json!({"target_rows_per_fragment": 8}),
            "target_rows_per_fragment",
        ),
    ] {
        let err = PersistingOptions::from_map(json.as_object().unwrap()).unwrap_err();
        // refused by the facade's parse or by the Lance layer's bounds, both named
        match &err {
            StorageError::Options(OptionsError::Invalid { name: n, .. }) => assert_eq!(n, name),
            StorageError::Lance(persisting::lance::Error::InvalidOption { name: n, .. }) => {
                assert_eq!(*n, name)
            }
            other => panic!("{name}: {other}"),
        }
        assert!(err.is_invalid_option(), "{err}");
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

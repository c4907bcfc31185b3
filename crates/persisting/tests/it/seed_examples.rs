//! The seed's usage examples: basic use, WAL use, streaming.

use std::time::Duration;

use futures::StreamExt;
use persisting::{LanceBackend, PersistingBackend, PersistingOptions, StorageBackend, record};

use crate::rt;

#[test]
fn basic_use_put_flush_get() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let writer = LanceBackend::open(0, dir.path(), 100, 1000).await.unwrap();
        writer
            .put(record! {"id" => "1", "value" => 42})
            .await
            .unwrap();
        writer.flush().await.unwrap();
        let stats = writer.stats().await.unwrap();
        assert_eq!(
            (stats.total_count, stats.persisted_count, stats.buffer_count),
            (1, 1, 0)
        );
        let json = serde_json::to_value(&stats).unwrap();
        for key in [
            "bucket_id",
            "total_count",
            "buffer_count",
            "persisted_count",
            "storage_path",
        ] {
            assert!(json.get(key).is_some(), "stats lack {key}");
        }
        drop(writer);
        let reader = LanceBackend::open(0, dir.path(), 100, 1000).await.unwrap();
        assert_eq!(
            reader.get(0, Some(10)).await.unwrap(),
            vec![record! {"id" => "1", "value" => 42}]
        );
        assert_eq!(reader.total_count(), 1);
    });
}

#[test]
fn wal_use_with_sync_interval() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (opts, ignored) = PersistingOptions::from_map(
            serde_json::json!({"enable_wal": true, "wal_sync_interval": 0.1})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert!(ignored.is_empty());
        let writer = PersistingBackend::open(0, dir.path(), opts.clone())
            .await
            .unwrap();
        for i in 0..10 {
            writer
                .put(record! {"id" => i.to_string(), "value" => i})
                .await
                .unwrap();
        }
        let stats = writer.stats().await.unwrap();
        assert!(stats.wal_enabled && stats.wal_size_bytes.unwrap() > 0);
        assert_eq!(stats.wal_sync_interval, Some(0.1));
        drop(writer); // no flush: the WAL holds them
        let reader = PersistingBackend::open(0, dir.path(), opts).await.unwrap();
        let got = reader.get(0, None).await.unwrap();
        assert_eq!(got.len(), 10);
        assert_eq!(got[9], record! {"id" => "9", "value" => 9});
        // flushing empties the WAL
        reader.flush().await.unwrap();
        let stats = reader.stats().await.unwrap();
        assert_eq!((stats.persisted_count, stats.buffer_count), (10, 0));
        assert_eq!(stats.wal_segments, Some(1));
    });
}

#[test]
fn streaming_non_blocking_and_blocking() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let backend = LanceBackend::open(0, dir.path(), 3, 5).await.unwrap();
        for i in 0..7 {
            backend.put(record! {"i" => i}).await.unwrap();
        }
        // non-blocking: ends when caught up, respects limit, spans Lance and buffer
        let all: Vec<_> = backend
            .get_stream(0, None, false)
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(all.len(), 7);
        let some: Vec<_> = backend
            .get_stream(2, Some(3), false)
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(some, (2..5).map(|i| record! {"i" => i}).collect::<Vec<_>>());

        // blocking: waits for new records without polling
        let b2 = backend.clone();
        let reader = tokio::spawn(async move {
            b2.get_stream(5, Some(4), true)
                .map(|r| r.unwrap())
                .collect::<Vec<_>>()
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !reader.is_finished(),
            "the stream must wait for records 7 and 8"
        );
        backend.put(record! {"i" => 7}).await.unwrap();
        backend.put(record! {"i" => 8}).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, (5..9).map(|i| record! {"i" => i}).collect::<Vec<_>>());

        // a blocked stream ends when the backend closes
        let b3 = backend.clone();
        let waiting = tokio::spawn(async move { b3.get_stream(9, None, true).count().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        backend.close().await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0);
        assert!(backend.put(record! {"i" => 9}).await.is_err());
    });
}

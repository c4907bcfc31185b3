//! A store that is away under a bucket: on local disk (the dataset's place taken, so
//! every flush fails), and at a URI (a TCP relay in front of the S3 server of the tests
//! stops forwarding, as a partitioned or stopped server looks). Puts are acknowledged
//! up to `max_unflushed_bytes`, then wait and fail after `put_timeout` storing
//! nothing; stats and reads of what the bucket holds answer throughout; flushes fail
//! within the request bounds naming the store; once it is back everything commits
//! without a reopen or any call, each acknowledged record once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use persisting::outage::{Outage, Relay};
use persisting::{
    BucketError, PersistingBackend, PersistingOptions, Record, StorageBackend, StorageError, record,
};

use crate::rt;

/// On S3, a store that hangs (answers nothing) or refuses connections during a
/// steady ingest.
#[test]
fn on_s3_a_store_away_bounds_the_puts_leaves_stats_and_reads_answering_and_commits_when_it_is_back()
{
    let Ok(root) = std::env::var("PERSISTING_TEST_S3") else {
        eprintln!("skipped: PERSISTING_TEST_S3 is not set (scripts/s3-server.sh)");
        return;
    };
    let endpoint = std::env::var("AWS_ENDPOINT").expect("AWS_ENDPOINT names the S3 server");
    let upstream: SocketAddr = endpoint.trim_start_matches("http://").parse().unwrap();
    for outage in [Outage::Hang, Outage::Refuse] {
        ride_out(&root, upstream, outage);
    }
}

fn ride_out(root: &str, upstream: SocketAddr, outage: Outage) {
    rt().block_on(async {
        let relay = Relay::start(upstream).unwrap();
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let uri = format!(
            "{}/outage-{outage:?}-{}-{ms}/bucket_0",
            root.trim_end_matches('/'),
            std::process::id()
        );
        let wal = tempfile::tempdir().unwrap();
        let storage_options = [
            ("aws_endpoint", relay.endpoint()),
            ("timeout", "1s".to_owned()),
            ("client_max_retries", "1".to_owned()),
            ("client_retry_timeout", "2".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let opts = PersistingOptions {
            enable_wal: true,
            wal_sync_interval: Duration::ZERO,
            wal_dir: Some(wal.path().to_path_buf()),
            flush_threshold: 10,
            max_unflushed_bytes: 4096,
            put_timeout: Duration::from_millis(500),
            storage_options,
            ..PersistingOptions::default()
        };
        let b = PersistingBackend::open(0, &uri, opts).await.unwrap();
        b.put_batch(batch(0)).await.unwrap();
        b.flush().await.unwrap();
        assert!(b.stats().await.unwrap().last_flush_error.is_none());

        relay.set(outage);
        // acknowledged into the WAL up to the bound, then refused whole
        let (acked, err) = put_until_refused(&b, 5).await;
        assert!(acked > 10, "puts go on while the store hangs: {acked}");
        assert!(
            matches!(err, StorageError::Bucket(BucketError::StoreUnavailable(_))),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&uri) && text.contains("max_unflushed_bytes"),
            "{text}"
        );
        // stats and reads of what the bucket holds answer at once
        let asked = Instant::now();
        let stats = tokio::time::timeout(Duration::from_secs(2), b.stats())
            .await
            .expect("stats answer while the store hangs")
            .unwrap();
        assert!(asked.elapsed() < Duration::from_secs(1));
        assert_eq!(
            (stats.total_count, b.total_count()),
            (acked as u64, acked as u64)
        );
        let asked = Instant::now();
        let waiting: Vec<Record> = (5..acked).step_by(5).flat_map(batch).collect();
        assert_eq!(b.get(5, None).await.unwrap(), waiting);
        assert!(asked.elapsed() < Duration::from_secs(1));
        // a flush fails within the request bounds, naming the store
        let started = Instant::now();
        let err = b.flush().await.unwrap_err().to_string();
        assert!(err.contains(&uri), "{err}");
        assert!(started.elapsed() < Duration::from_secs(30));
        let stats = b.stats().await.unwrap();
        let failing = stats.last_flush_error.clone().unwrap();
        assert!(failing.contains(&uri), "{failing}");
        assert!(stats.flush_failing_seconds.unwrap() >= 0.0);
        let json = serde_json::to_value(&stats).unwrap();
        assert!(json["last_flush_error"].is_string(), "{json}");

        // the store is back: everything commits, no reopen, no call
        relay.set(Outage::None);
        until_persisted(&b, acked as u64).await;
        let stats = b.stats().await.unwrap();
        assert!(!stats.stale && stats.unflushed_bytes == 0, "{stats:?}");
        let all: Vec<Record> = (0..acked).step_by(5).flat_map(batch).collect();
        assert_eq!(b.get(0, None).await.unwrap(), all);
        b.put_batch(batch(acked)).await.unwrap();
        b.close().await.unwrap();
    });
}

/// Five records of about 110 encoded bytes each, from `from`.
fn batch(from: i64) -> Vec<Record> {
    (from..from + 5)
        .map(|i| record! {"i" => i, "pad" => "x".repeat(100)})
        .collect()
}

/// Puts batches from `next` until one is refused: returns the next record's index
/// then (what was acknowledged) and the refusal.
async fn put_until_refused(b: &PersistingBackend, mut next: i64) -> (i64, StorageError) {
    loop {
        match b.put_batch(batch(next)).await {
            Ok(()) => next += 5,
            Err(e) => return (next, e),
        }
        assert!(next < 10_000, "the bound never stopped the puts");
    }
}

/// Waits (up to 30 s) until the bucket holds `count` records in Lance.
async fn until_persisted(b: &PersistingBackend, count: u64) {
    let started = Instant::now();
    loop {
        let stats = b.stats().await.unwrap();
        if stats.persisted_count == count && stats.last_flush_error.is_none() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not recovered by itself: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// On local disk, with and without a WAL: flushes that fail do not stop the puts
/// until the bound; at the bound a put waits `put_timeout` and is refused whole with
/// an error naming the bound, the store and its last error; the flush owner retries
/// by itself, and once the store is back the waiting records commit, in order, once.
#[test]
fn a_store_away_bounds_the_puts_and_the_bucket_recovers_by_itself() {
    for enable_wal in [true, false] {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let opts = PersistingOptions {
                enable_wal,
                wal_sync_interval: Duration::ZERO,
                flush_threshold: 10,
                max_unflushed_bytes: 4096,
                put_timeout: Duration::from_millis(300),
                ..PersistingOptions::default()
            };
            let b = PersistingBackend::open(0, dir.path(), opts.clone())
                .await
                .unwrap();
            b.put_batch(batch(0)).await.unwrap();
            b.flush().await.unwrap();
            // the place of the dataset's transaction files is taken by a file: every
            // commit fails (its data files written, its manifest never), while what
            // was committed stays readable
            let txns = dir.path().join("data.lance/_transactions");
            let aside = dir.path().join("_transactions.aside");
            std::fs::rename(&txns, &aside).unwrap();
            std::fs::write(&txns, b"not a directory").unwrap();

            let (acked, err) = put_until_refused(&b, 5).await;
            assert!(acked > 10, "puts go on while flushes fail: {acked}");
            let StorageError::Bucket(BucketError::StoreUnavailable(no_room)) = &err else {
                panic!("{err}");
            };
            assert_eq!(no_room.bound, "max_unflushed_bytes");
            assert!(no_room.held_bytes <= 4096, "{no_room:?}");
            assert!(no_room.waited >= Duration::from_millis(300), "{no_room:?}");
            assert!(no_room.last_error.is_some(), "{no_room:?}");
            let text = err.to_string();
            for part in ["max_unflushed_bytes = 4096", "File exists", "failed for"] {
                assert!(text.contains(part), "{part}: {text}");
            }
            // nothing of the refused batch is stored
            let stats = b.stats().await.unwrap();
            assert_eq!(stats.total_count, acked as u64);
            assert_eq!(b.total_count(), acked as u64);
            assert!(stats.last_flush_error.is_some(), "{stats:?}");
            assert!(stats.unflushed_bytes <= 4096, "{stats:?}");
            // what the bucket holds is read while its store is away
            let all: Vec<Record> = (0..acked).step_by(5).flat_map(batch).collect();
            let started = Instant::now();
            assert_eq!(b.get(0, None).await.unwrap(), all);
            assert!(started.elapsed() < Duration::from_secs(2));

            // the store is back: no call, the owner's retries commit everything
            std::fs::remove_file(&txns).unwrap();
            std::fs::rename(&aside, &txns).unwrap();
            until_persisted(&b, acked as u64).await;
            assert_eq!(b.stats().await.unwrap().unflushed_bytes, 0);
            // and puts go on
            b.put_batch(batch(acked)).await.unwrap();
            b.close().await.unwrap();
            let b = PersistingBackend::open(0, dir.path(), opts).await.unwrap();
            let all: Vec<Record> = (0..acked + 5).step_by(5).flat_map(batch).collect();
            assert_eq!(b.get(0, None).await.unwrap(), all, "wal: {enable_wal}");
        });
    }
}

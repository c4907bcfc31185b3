//! A store that hangs under a bucket at a URI (a TCP relay in front of the S3 server
//! of the tests stops forwarding, as a partitioned or stopped server looks): stats
//! answer while a flush is held, the flush fails within the request bounds with the
//! URI named, stats show the failure and since when, and once the store answers
//! everything commits without a reopen.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use persisting::{PersistingBackend, PersistingOptions, StorageBackend, record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::rt;

/// A TCP relay to `upstream` that, while `hang` is set, forwards nothing more on any
/// connection (it keeps them open, answering nothing).
async fn relay(upstream: SocketAddr, hang: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let hang = Arc::clone(&hang);
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = pump(&mut cr, &mut sw, &hang);
                let down = pump(&mut sr, &mut cw, &hang);
                let _ = tokio::join!(up, down);
            });
        }
    });
    addr
}

/// Copies `from` to `to` chunk by chunk, holding each chunk while `hang` is set.
async fn pump(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    hang: &AtomicBool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while hang.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[test]
fn on_s3_a_hung_store_leaves_stats_answering_and_commits_when_it_is_back() {
    let Ok(root) = std::env::var("PERSISTING_TEST_S3") else {
        eprintln!("skipped: PERSISTING_TEST_S3 is not set (scripts/s3-server.sh)");
        return;
    };
    let endpoint = std::env::var("AWS_ENDPOINT").expect("AWS_ENDPOINT names the S3 server");
    let upstream: SocketAddr = endpoint.trim_start_matches("http://").parse().unwrap();
    rt().block_on(async {
        let hang = Arc::new(AtomicBool::new(false));
        let addr = relay(upstream, Arc::clone(&hang)).await;
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let uri = format!(
            "{}/outage-{}-{ms}/bucket_0",
            root.trim_end_matches('/'),
            std::process::id()
        );
        let wal = tempfile::tempdir().unwrap();
        let storage_options = [
            ("aws_endpoint", format!("http://{addr}")),
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
            flush_threshold: 1_000_000,
            storage_options,
            ..PersistingOptions::default()
        };
        let b = PersistingBackend::open(0, &uri, opts).await.unwrap();
        let batch = |from: i64| (from..from + 10).map(|i| record! {"id" => i}).collect();
        b.put_batch(batch(0)).await.unwrap();
        b.flush().await.unwrap();
        assert!(b.stats().await.unwrap().last_flush_error.is_none());

        hang.store(true, Ordering::SeqCst);
        b.put_batch(batch(10)).await.unwrap(); // into the WAL: no request
        let flushing = tokio::spawn({
            let b = b.clone();
            async move {
                let started = Instant::now();
                (b.flush().await, started.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // the flush holds the bucket; stats answer at once, from the last look
        let asked = Instant::now();
        let stats = tokio::time::timeout(Duration::from_secs(2), b.stats())
            .await
            .expect("stats answer while a flush is held")
            .unwrap();
        assert!(asked.elapsed() < Duration::from_secs(1));
        assert!(stats.stale, "{stats:?}");
        assert_eq!((stats.total_count, b.total_count()), (20, 20));
        let (outcome, took) = flushing.await.unwrap();
        let err = outcome.unwrap_err().to_string();
        assert!(err.contains(&uri), "{err}");
        assert!(took < Duration::from_secs(30), "{took:?}");
        let stats = b.stats().await.unwrap();
        let failing = stats.last_flush_error.clone().unwrap();
        assert!(failing.contains(&uri), "{failing}");
        assert!(stats.flush_failing_seconds.unwrap() >= 0.0);
        let json = serde_json::to_value(&stats).unwrap();
        assert!(json["last_flush_error"].is_string(), "{json}");

        // the store is back: everything commits, no reopen
        hang.store(false, Ordering::SeqCst);
        b.flush().await.unwrap();
        let stats = b.stats().await.unwrap();
        assert!(
            stats.last_flush_error.is_none() && !stats.stale,
            "{stats:?}"
        );
        assert_eq!(stats.persisted_count, 20);
        let got = b.get(0, None).await.unwrap();
        assert_eq!(
            got,
            (0..20).map(|i| record! {"id" => i}).collect::<Vec<_>>()
        );
    });
}

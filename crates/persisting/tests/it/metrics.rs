//! Metrics: a bucket with `enable_metrics` records through the `metrics` facade, and the
//! Prometheus endpoint serves them over real HTTP in a format promtool accepts.
//!
//! The recorder is process-wide, so this module holds the binary's only endpoint.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use persisting::{PersistingBackend, PersistingOptions, StorageBackend, record, serve_metrics};

use crate::rt;

fn scrape(addr: std::net::SocketAddr) -> String {
    let mut last_error = None;
    // the exporter binds its listener on its own thread: give it a moment
    for _ in 0..50 {
        match TcpStream::connect(addr) {
            Ok(mut s) => {
                s.write_all(
                    b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                )
                .unwrap();
                let mut response = String::new();
                s.read_to_string(&mut response).unwrap();
                assert!(
                    response.starts_with("HTTP/1.1 200"),
                    "scrape failed: {response}"
                );
                let body = response.split_once("\r\n\r\n").unwrap().1;
                return body.to_owned();
            }
            Err(e) => last_error = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("could not connect to {addr}: {last_error:?}");
}

/// The value of the sample `name{labels}` (labels in exposition order).
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
}

fn promtool_check(text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("SKIPPED: promtool is not installed (scripts/setup.sh installs it)");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics rejected the exposition:\n{report}\n{text}"
    );
}

#[test]
fn endpoint_serves_bucket_metrics_over_http() {
    rt().block_on(async {
        let endpoint = serve_metrics("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(
            serve_metrics(endpoint.addr()).is_err(),
            "a second endpoint on the same address must be refused"
        );
        let dir = tempfile::tempdir().unwrap();
        let opts = PersistingOptions {
            enable_wal: true,
            enable_metrics: true,
            wal_sync_interval: Duration::ZERO,
            metrics_topic: "orders".to_owned(),
            ..PersistingOptions::default()
        };
        let b = PersistingBackend::open(7, dir.path(), opts).await.unwrap();
        for i in 0..5 {
            b.put(record! {"id" => i.to_string(), "n" => i})
                .await
                .unwrap();
        }
        // refused: the whole batch is not counted
        assert!(
            b.put_batch(vec![record! {"id" => "x", "n" => "text"}])
                .await
                .is_err()
        );
        let before_flush = scrape(endpoint.addr());
        let labels = r#"topic="orders",bucket="7""#;
        assert_eq!(
            sample(&before_flush, "persisting_records_total", labels),
            Some(5.0)
        );
        assert_eq!(
            sample(&before_flush, "persisting_buffer_size", labels),
            Some(5.0)
        );
        let wal_bytes = sample(&before_flush, "persisting_wal_size_bytes", labels).unwrap();
        assert!(wal_bytes > 0.0, "{before_flush}");
        let fsyncs = sample(&before_flush, "persisting_wal_fsyncs_total", labels).unwrap();
        assert!(
            (1.0..=5.0).contains(&fsyncs),
            "5 sequential durable puts, {fsyncs} fsyncs"
        );
        let fsync_latencies = sample(
            &before_flush,
            "persisting_wal_fsync_duration_seconds_count",
            labels,
        );
        assert_eq!(fsync_latencies, Some(fsyncs));

        b.flush().await.unwrap();
        let after = scrape(endpoint.addr());
        assert_eq!(sample(&after, "persisting_buffer_size", labels), Some(0.0));
        assert_eq!(
            sample(&after, "persisting_flushes_total", labels),
            Some(1.0)
        );
        assert_eq!(
            sample(&after, "persisting_flush_duration_seconds_count", labels),
            Some(1.0)
        );
        let inf = format!(r#"{labels},le="+Inf""#);
        assert_eq!(
            sample(&after, "persisting_flush_duration_seconds_bucket", &inf),
            Some(1.0),
            "durations are histograms with buckets:\n{after}"
        );
        assert!(sample(&after, "persisting_wal_size_bytes", labels).unwrap() < wal_bytes);
        assert!(endpoint.render().contains("persisting_records_total"));

        // consumer groups: lag and commits, labelled by group
        b.commit_offset("etl", 2).await.unwrap();
        b.commit_offset("etl", 4).await.unwrap();
        b.list_groups().await.unwrap();
        let after = scrape(endpoint.addr());
        let group = format!(r#"{labels},group="etl""#);
        assert_eq!(
            sample(&after, "persisting_consumer_lag", &group),
            Some(1.0),
            "{after}"
        );
        assert_eq!(
            sample(&after, "persisting_group_commits_total", &group),
            Some(2.0)
        );
        promtool_check(&after);

        // a bucket without enable_metrics records nothing
        let quiet_dir = tempfile::tempdir().unwrap();
        let quiet = PersistingBackend::open(
            8,
            quiet_dir.path(),
            PersistingOptions {
                metrics_topic: "quiet".to_owned(),
                ..PersistingOptions::default()
            },
        )
        .await
        .unwrap();
        quiet.put(record! {"id" => "q"}).await.unwrap();
        assert!(!scrape(endpoint.addr()).contains("quiet"));
    });
}

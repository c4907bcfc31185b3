//! Data at an object-store URI with the WAL on local disk. Each test runs on Lance's
//! process-wide in-memory store (`shared-memory://`: the code a bucket on S3 runs,
//! without a server) and, when `PERSISTING_TEST_S3` names a bucket URI of a real
//! S3-compatible server (`scripts/s3-server.sh` starts one; CI does), there too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use persisting::{
    Assignment, OptionsError, PersistingBackend, PersistingOptions, QueueOptions, QueueSystem,
    StorageBackend, StorageError, WAL_DIR, WRITER_FILE, record,
};

use crate::rt;

/// A URI no other test uses on each store a test runs on: the in-memory store (which
/// lives as long as the process) and the S3 server if one is configured (which
/// outlives it, hence the time in the name).
pub(crate) fn uris(name: &str) -> Vec<String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let run = format!("facade-{}-{ms}-{n}/{name}", std::process::id());
    let mut uris = vec![format!("shared-memory://{run}")];
    match std::env::var("PERSISTING_TEST_S3") {
        Ok(root) => uris.push(format!("{}/{run}", root.trim_end_matches('/'))),
        Err(_) => eprintln!("not on S3: PERSISTING_TEST_S3 is not set (scripts/s3-server.sh)"),
    }
    uris
}

fn uri(name: &str) -> String {
    uris(name).swap_remove(0)
}

fn wal_opts(wal_dir: &std::path::Path) -> PersistingOptions {
    PersistingOptions {
        enable_wal: true,
        wal_sync_interval: Duration::ZERO,
        wal_dir: Some(wal_dir.to_path_buf()),
        ..PersistingOptions::default()
    }
}

#[test]
fn data_at_a_uri_needs_a_local_wal_dir_and_the_error_names_it() {
    rt().block_on(async {
        let opts = PersistingOptions {
            enable_wal: true,
            ..PersistingOptions::default()
        };
        let err = PersistingBackend::open(0, uri("b"), opts).await.unwrap_err();
        assert!(
            matches!(&err, StorageError::Options(OptionsError::Invalid { name, .. }) if name == "wal_dir"),
            "{err}"
        );
        assert!(err.to_string().contains("shared-memory://"), "{err}");
    });
}

#[test]
fn acknowledged_records_survive_a_restart_from_the_local_wal_and_flush_to_the_uri() {
    rt().block_on(async {
        for data in uris("bucket") {
            let local = tempfile::tempdir().unwrap();
            let b = PersistingBackend::open(7, &data, wal_opts(local.path()))
                .await
                .unwrap();
            for i in 0..30 {
                b.put(record! {"n" => i}).await.unwrap();
            }
            b.flush().await.unwrap();
            for i in 30..45 {
                b.put(record! {"n" => i}).await.unwrap();
            }
            // the lock and the WAL are in the local directory, nothing local beside them
            assert!(local.path().join("LOCK").is_file());
            assert!(local.path().join(WAL_DIR).is_dir());
            // the writer's name for the lease: the same directory, the same writer, which
            // takes its lease back at once when it reopens
            assert!(local.path().join(WRITER_FILE).is_file());
            drop(b);
            // 0..30 come from the object store, 30..45 from the WAL
            let b = PersistingBackend::open(7, &data, wal_opts(local.path()))
                .await
                .unwrap();
            let stats = b.stats().await.unwrap();
            assert_eq!((stats.persisted_count, stats.buffer_count), (30, 15));
            let got = b.get(0, Some(100)).await.unwrap();
            let want: Vec<_> = (0..45).map(|i| record! {"n" => i}).collect();
            assert_eq!(got, want);
            b.flush().await.unwrap();
            drop(b);
            let b = PersistingBackend::open(7, &data, wal_opts(local.path()))
                .await
                .unwrap();
            assert_eq!(b.stats().await.unwrap().persisted_count, 45);
            assert_eq!(b.get(40, Some(10)).await.unwrap(), want[40..].to_vec());
        }
    });
}

#[test]
fn a_queue_at_a_uri_keeps_each_buckets_wal_at_the_same_relative_path() {
    rt().block_on(async {
        for root in uris("queues") {
            let local = tempfile::tempdir().unwrap();
            let mut backend_options = serde_json::Map::new();
            backend_options.insert("enable_wal".into(), "true".into());
            backend_options.insert("wal_sync_interval".into(), "0".into());
            backend_options.insert(
                "wal_dir".into(),
                local.path().to_string_lossy().into_owned().into(),
            );
            let opts = QueueOptions {
                backend: "persisting".to_owned(),
                num_buckets: 2,
                backend_options,
                ..QueueOptions::new(&root)
            };
            let system = QueueSystem::new();
            let writer = system.write_queue("events", opts.clone()).await.unwrap();
            let records: Vec<_> = (0..20)
                .map(|i| record! {"id" => i.to_string(), "v" => i})
                .collect();
            writer.put_batch(records.clone()).await.unwrap();
            writer.flush().await.unwrap();
            for b in 0..2 {
                let dir = local.path().join("events").join(format!("bucket_{b}"));
                assert!(dir.join(WAL_DIR).is_dir(), "{}", dir.display());
            }
            let mut all = system
                .read_queue("events", opts, Assignment::All)
                .await
                .unwrap();
            let mut got = all.get(None).await.unwrap();
            got.sort_by_key(|r| r["v"].as_i64());
            assert_eq!(got, records);
        }
    });
}

#[test]
fn storage_options_are_read_from_the_option_map_in_both_spellings() {
    let (opts, ignored) = PersistingOptions::from_pairs([
        "wal_dir=/var/lib/q",
        "storage_options.aws_region=us-east-1",
        "storage_options.aws_allow_http=true",
    ])
    .unwrap();
    assert!(ignored.is_empty());
    assert_eq!(
        opts.wal_dir.as_deref(),
        Some(std::path::Path::new("/var/lib/q"))
    );
    assert_eq!(opts.storage_options["aws_region"], "us-east-1");
    let map = serde_json::json!({"storage_options": {"aws_endpoint": "http://127.0.0.1:8333"}});
    let (opts, _) = PersistingOptions::from_map(map.as_object().unwrap()).unwrap();
    assert_eq!(
        opts.storage_options["aws_endpoint"],
        "http://127.0.0.1:8333"
    );
    let bad = serde_json::json!({"storage_options": "x"});
    let err = PersistingOptions::from_map(bad.as_object().unwrap()).unwrap_err();
    assert!(err.to_string().contains("storage_options"), "{err}");
}

/// Fails the manifest put of one version before it is sent.
#[derive(Debug)]
struct FailBeforeSent(std::sync::atomic::AtomicU64);

impl persisting::lance::Disk for FailBeforeSent {
    fn sync_file(&self, _: &std::path::Path) -> std::io::Result<()> {
        unreachable!("a remote dataset fsyncs nothing")
    }

    fn sync_dir(&self, _: &std::path::Path) -> std::io::Result<()> {
        unreachable!("a remote dataset fsyncs nothing")
    }

    fn write_from(&self, _: &std::path::Path, _: u64, _: &[u8]) -> std::io::Result<()> {
        unreachable!("a remote dataset writes no local file")
    }

    fn write_at(&self, _: &std::path::Path, _: u64, _: &[u8]) -> std::io::Result<()> {
        unreachable!("a remote dataset writes no local file")
    }

    fn rename(&self, _: &std::path::Path, _: &std::path::Path) -> std::io::Result<()> {
        unreachable!("a remote dataset renames no local file")
    }

    fn manifest_fault(&self, version: u64) -> Option<persisting::lance::ManifestFault> {
        let hit = self
            .0
            .compare_exchange(version, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        hit.then_some(persisting::lance::ManifestFault::BeforeSent)
    }
}

#[test]
fn a_failed_remote_commit_keeps_the_wal_and_the_next_flush_appends_once() {
    rt().block_on(async {
        for data in uris("bucket") {
            let local = tempfile::tempdir().unwrap();
            let disk = std::sync::Arc::new(FailBeforeSent(AtomicU64::new(2)));
            let b = PersistingBackend::open_with_disks(
                1,
                &data,
                wal_opts(local.path()),
                std::sync::Arc::new(persisting::wal::RealFs),
                disk,
            )
            .await
            .unwrap();
            let want: Vec<_> = (0..30).map(|i| record! {"n" => i}).collect();
            for r in &want[..10] {
                b.put(r.clone()).await.unwrap();
            }
            b.flush().await.unwrap();
            for r in &want[10..20] {
                b.put(r.clone()).await.unwrap();
            }
            let err = b.flush().await.unwrap_err();
            assert!(err.to_string().contains("injected"), "{err}");
            // acknowledged, in the WAL and the buffer: still read, and flushed next time
            assert_eq!(b.get(0, Some(100)).await.unwrap(), want[..20].to_vec());
            b.flush().await.unwrap();
            for r in &want[20..] {
                b.put(r.clone()).await.unwrap();
            }
            drop(b);
            let b = PersistingBackend::open(1, &data, wal_opts(local.path()))
                .await
                .unwrap();
            let stats = b.stats().await.unwrap();
            assert_eq!((stats.persisted_count, stats.buffer_count), (20, 10));
            assert_eq!(b.get(0, Some(100)).await.unwrap(), want);
        }
    });
}

/// A backend of the bucket at `data` on one machine of several: `local` is that
/// machine's own directory (WAL, lock, writer name), so no file lock lies between them.
async fn on_machine(data: &str, local: &std::path::Path) -> persisting::Result<PersistingBackend> {
    PersistingBackend::open(0, data, wal_opts(local)).await
}

#[test]
fn a_second_writer_at_the_same_uri_is_refused_at_open_naming_the_holder() {
    rt().block_on(async {
        for data in uris("bucket") {
            let (here, there) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let first = on_machine(&data, here.path()).await.unwrap();
            first.put(record! {"n" => 1}).await.unwrap();
            // another machine: its own local directory, so no file lock between them
            let err = on_machine(&data, there.path()).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    StorageError::Lance(persisting::lance::Error::LeaseHeld { .. })
                ),
                "{err}"
            );
            assert!(err.to_string().contains("_lease"), "{err}");
            first.put(record! {"n" => 2}).await.unwrap();
            assert_eq!(first.get(0, None).await.unwrap().len(), 2);
        }
    });
}

#[test]
fn a_closed_writer_lets_another_machine_take_the_bucket_at_once() {
    rt().block_on(async {
        for data in uris("bucket") {
            let (here, there) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let first = on_machine(&data, here.path()).await.unwrap();
            first.put(record! {"n" => 1}).await.unwrap();
            first.close().await.unwrap();
            // another machine, within the closed writer's 30 s term: close released
            // the lease, so it is not refused
            let second = on_machine(&data, there.path()).await.unwrap();
            second.put(record! {"n" => 2}).await.unwrap();
            second.flush().await.unwrap();
            let got = second.get(0, None).await.unwrap();
            assert_eq!(got, vec![record! {"n" => 1}, record! {"n" => 2}]);
            second.close().await.unwrap();
        }
    });
}

#[test]
fn with_a_flush_interval_waiting_records_reach_the_uri_without_another_put() {
    rt().block_on(async {
        for data in uris("paced") {
            let local = tempfile::tempdir().unwrap();
            let opts = PersistingOptions {
                flush_threshold: 1_000_000,
                flush_interval: Some(Duration::from_millis(100)),
                ..wal_opts(local.path())
            };
            let b = PersistingBackend::open(0, &data, opts).await.unwrap();
            for i in 0..5 {
                b.put(record! {"n" => i}).await.unwrap();
            }
            let mut persisted = 0;
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                persisted = b.stats().await.unwrap().persisted_count;
                if persisted == 5 {
                    break;
                }
            }
            assert_eq!(persisted, 5, "flushed by the timer, not by a put");
            // a reader elsewhere sees them in the dataset
            let reader = persisting::lance::LanceBucket::open(&data, Default::default())
                .await
                .unwrap();
            assert_eq!(reader.persisted_count(), 5);
        }
    });
}

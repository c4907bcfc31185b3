//! The queue around the backends: registry, bucketing, readers, topic validation.

use std::time::Duration;

use futures::StreamExt;
use persisting::{
    Assignment, OptionsError, QueueError, QueueOptions, QueueSystem, StorageError, python_str,
    record,
};

use crate::rt;

fn lance_opts(dir: &std::path::Path) -> QueueOptions {
    QueueOptions {
        backend: "lance".to_owned(),
        ..QueueOptions::new(dir)
    }
}

#[test]
fn registry_lists_builtins_and_names_them_on_a_miss() {
    let system = QueueSystem::new();
    assert_eq!(
        system.registry().list_backends(),
        ["lance", "memory", "persisting"]
    );
    let err = system.registry().get("kafka").err().unwrap();
    assert!(matches!(
        err,
        StorageError::Options(OptionsError::UnknownBackend { .. })
    ));
    assert!(
        err.to_string().contains("lance, memory, persisting"),
        "{err}"
    );
}

#[test]
fn records_land_in_their_md5_bucket_and_readers_see_them_all() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let system = QueueSystem::new();
        let writer = system
            .write_queue("example", lance_opts(dir.path()))
            .await
            .unwrap();
        writer
            .put_batch(
                (0..40)
                    .map(|i| record! {"id" => i.to_string(), "value" => i})
                    .collect(),
            )
            .await
            .unwrap();
        writer.flush().await.unwrap();
        for b in 0..4u32 {
            assert!(
                dir.path()
                    .join("example")
                    .join(format!("bucket_{b}"))
                    .join("data.lance")
                    .exists()
            );
        }
        // a fresh system reads what is on disk (once the first one let go of it)
        drop(writer);
        drop(system);
        let system = QueueSystem::new();
        let mut all = system
            .read_queue("example", lance_opts(dir.path()), Assignment::All)
            .await
            .unwrap();
        let got = all.get(None).await.unwrap();
        assert_eq!(got.len(), 40);
        assert!(
            all.get(Some(10)).await.unwrap().is_empty(),
            "offsets advanced"
        );
        for b in 0..4u32 {
            let mut one = system
                .read_queue(
                    "example",
                    lance_opts(dir.path()),
                    Assignment::Buckets(vec![b]),
                )
                .await
                .unwrap();
            for r in one.get(None).await.unwrap() {
                let id = python_str(&r["id"]);
                let v: u128 = u128::from_str_radix(&md5_hex(&id), 16).unwrap();
                assert_eq!((v % 4) as u32, b, "record {id} in bucket {b}");
            }
        }
        let mut shares = 0;
        for rank in 0..2 {
            let mut r = system
                .read_queue(
                    "example",
                    lance_opts(dir.path()),
                    Assignment::Rank {
                        rank,
                        world_size: 2,
                    },
                )
                .await
                .unwrap();
            assert_eq!(
                r.offsets().keys().copied().collect::<Vec<_>>(),
                if rank == 0 { vec![0, 2] } else { vec![1, 3] }
            );
            shares += r.get(None).await.unwrap().len();
        }
        assert_eq!(shares, 40);
    });
}

fn md5_hex(s: &str) -> String {
    // computed independently of the crate's bucketing, through python's hashlib when
    // available, else through the crate (the RFC test vectors cover it in unit tests)
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.md5(sys.argv[1].encode()).hexdigest())",
            s,
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap().trim().to_owned(),
        _ => panic!("python3 is needed to check bucketing against hashlib"),
    }
}

#[test]
fn bad_topics_and_records_without_the_bucket_column_are_refused() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let system = QueueSystem::new();
        for topic in ["", "..", "../escape", "a/b", "a\\b", "."] {
            let err = system
                .write_queue(topic, lance_opts(dir.path()))
                .await
                .unwrap_err();
            assert!(
                matches!(err, StorageError::Queue(QueueError::InvalidTopic { .. })),
                "{topic:?}: {err}"
            );
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing created"
        );
        let writer = system
            .write_queue("t", QueueOptions::new(dir.path()))
            .await
            .unwrap();
        let err = writer
            .put_batch(vec![record! {"id" => "1"}, record! {"name" => "no id"}])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("\"id\""), "{err}");
        let total: u64 = writer.buckets().iter().map(|b| b.total_count()).sum();
        assert_eq!(total, 0, "the batch is refused whole");
    });
}

#[test]
fn a_blocked_reader_sees_a_put_of_the_same_process_at_once() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let system = QueueSystem::new();
        let writer = system
            .write_queue("live", QueueOptions::new(dir.path()))
            .await
            .unwrap();
        let reader = system
            .read_queue("live", QueueOptions::new(dir.path()), Assignment::All)
            .await
            .unwrap();
        let waiting = tokio::spawn(async move {
            reader
                .get_stream(Some(3), true)
                .map(|r| r.unwrap())
                .collect::<Vec<_>>()
                .await
        });
        for i in 0..3 {
            writer.put(record! {"id" => format!("k{i}")}).await.unwrap();
        }
        let got = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 3);
    });
}

/// Pulsing's two layouts: a queue given a `storage_path` keeps its buckets directly in
/// it; one without keeps them under `{base}/{topic}`. A reader opens the same buckets
/// again.
#[test]
fn buckets_live_where_pulsing_puts_them() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("queues");
        let opts = QueueOptions {
            backend: "lance".to_owned(),
            ..QueueOptions::at(&own)
        };
        assert_eq!(opts.topic_dir("example").unwrap(), own);
        assert_eq!(
            QueueOptions::new(dir.path()).topic_dir("example").unwrap(),
            dir.path().join("example")
        );
        assert!(QueueOptions::at(&own).topic_dir("../escape").is_err());
        let system = QueueSystem::new();
        let writer = system.write_queue("example", opts.clone()).await.unwrap();
        writer
            .put_batch((0..12).map(|i| record! {"id" => i.to_string()}).collect())
            .await
            .unwrap();
        writer.flush().await.unwrap();
        for b in 0..4u32 {
            assert!(own.join(format!("bucket_{b}")).join("data.lance").exists());
        }
        assert!(!own.join("example").exists());
        drop(writer);
        drop(system);
        let mut reader = QueueSystem::new()
            .read_queue("example", opts, Assignment::All)
            .await
            .unwrap();
        assert_eq!(reader.get(None).await.unwrap().len(), 12);
    });
}

//! Consumer groups through the facade: the backends' methods, the queue's readers in
//! a group resuming where they committed, the durability a commit asks of the records
//! below it, and a handle without the writer.

use std::time::Duration;

use persisting::{
    Assignment, BucketGroups, LanceBackend, MemoryBackend, PersistingBackend, PersistingOptions,
    QueueOptions, QueueSystem, StorageBackend, StorageError, record,
};

use crate::rt;

fn wal_options() -> PersistingOptions {
    PersistingOptions {
        enable_wal: true,
        wal_sync_interval: Duration::from_secs(3600),
        ..PersistingOptions::default()
    }
}

#[test]
fn backends_commit_seek_delete_and_list_against_their_acknowledged_records() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let b = PersistingBackend::open(0, dir.path(), wal_options())
            .await
            .unwrap();
        let batch = (0..10).map(|i| record! {"id" => i}).collect();
        b.put_batch(batch).await.unwrap();
        assert_eq!(b.committed_offset("etl").await.unwrap(), None);
        assert_eq!(b.commit_offset("etl", 4).await.unwrap().offset, 4);
        let e = b.commit_offset("etl", 11).await.unwrap_err();
        assert!(e.to_string().contains("offset 11 refused"), "{e}");
        let e = b.commit_offset("etl", 3).await.unwrap_err();
        assert!(e.to_string().contains("committed offset 4"), "{e}");
        b.commit_offset("etl", 10).await.unwrap();
        b.commit_offset("audit", 0).await.unwrap();
        let listed = b.list_groups().await.unwrap();
        let rows: Vec<_> = listed
            .iter()
            .map(|l| (l.group.as_str(), l.committed, l.end, l.lag))
            .collect();
        assert_eq!(rows, vec![("audit", 0, 10, 10), ("etl", 10, 10, 0)]);
        b.seek_group("etl", 2).await.unwrap();
        assert_eq!(b.committed_offset("etl").await.unwrap().unwrap().offset, 2);
        assert!(b.delete_group("audit").await.unwrap());
        assert_eq!(b.list_groups().await.unwrap().len(), 1);
        let e = b.commit_offset("a/b", 1).await.unwrap_err();
        assert!(e.to_string().contains("invalid consumer group name"), "{e}");
    });
}

#[test]
fn the_memory_backend_says_it_has_no_consumer_groups() {
    rt().block_on(async {
        let m = MemoryBackend::new(0);
        let e = m.commit_offset("g", 0).await.unwrap_err();
        assert!(
            e.to_string().contains("does not support consumer groups"),
            "{e}"
        );
    });
}

/// A commit past records only in the WAL (fsynced hourly) fsyncs the WAL first, and
/// without a WAL flushes the buffer: a crash never leaves a group past the records.
#[test]
fn a_commit_makes_the_records_below_it_durable_first() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let b = PersistingBackend::open(0, dir.path(), wal_options())
            .await
            .unwrap();
        b.put_batch((0..5).map(|i| record! {"id" => i}).collect())
            .await
            .unwrap();
        let fsyncs = b.stats().await.unwrap().fsync_count.unwrap();
        b.commit_offset("g", 5).await.unwrap();
        assert!(b.stats().await.unwrap().fsync_count.unwrap() > fsyncs);

        let lance_dir = tempfile::tempdir().unwrap();
        let l = LanceBackend::open(0, lance_dir.path(), 100, 1000)
            .await
            .unwrap();
        l.put_batch((0..5).map(|i| record! {"id" => i}).collect())
            .await
            .unwrap();
        assert_eq!(l.stats().await.unwrap().persisted_count, 0);
        l.commit_offset("g", 3).await.unwrap();
        assert_eq!(l.stats().await.unwrap().persisted_count, 5);
        drop(l); // no close, no flush: what a crash leaves
        let l = LanceBackend::open(0, lance_dir.path(), 100, 1000)
            .await
            .unwrap();
        assert_eq!(l.total_count(), 5);
        assert_eq!(l.committed_offset("g").await.unwrap().unwrap().offset, 3);
    });
}

/// Readers of one group split the buckets by rank; each resumes where it committed,
/// after a restart (a new queue system over the same directory).
#[test]
fn readers_in_a_group_resume_where_they_committed() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || QueueOptions {
        backend: "persisting".into(),
        num_buckets: 4,
        backend_options: serde_json::json!({"enable_wal": true, "wal_sync_interval": 0})
            .as_object()
            .unwrap()
            .clone(),
        ..QueueOptions::at(dir.path())
    };
    let rank = |rank| Assignment::Rank {
        rank,
        world_size: 2,
    };
    rt().block_on(async {
        let system = QueueSystem::new();
        let w = system.write_queue("t", opts()).await.unwrap();
        let records: Vec<_> = (0..200)
            .map(|i| record! {"id" => i.to_string(), "n" => i})
            .collect();
        w.put_batch(records).await.unwrap();
        let mut seen = Vec::new();
        for r in 0..2 {
            let mut reader = system
                .read_queue_in_group("t", opts(), rank(r), "train")
                .await
                .unwrap();
            assert_eq!(reader.group(), Some("train"));
            let got = reader.get(Some(30)).await.unwrap();
            assert_eq!(got.len(), 30);
            reader.commit().await.unwrap();
            seen.extend(got);
            // read past the commit, then "crash": these are read again
            reader.get(Some(5)).await.unwrap();
        }
        // a reader without a group cannot commit
        let mut plain = system
            .read_queue("t", opts(), Assignment::All)
            .await
            .unwrap();
        assert!(matches!(
            plain.commit().await.unwrap_err(),
            StorageError::Queue(persisting::QueueError::NoGroup)
        ));
        w.flush().await.unwrap();
        drop((w, plain, system));

        let system = QueueSystem::new();
        for r in 0..2 {
            let mut reader = system
                .read_queue_in_group("t", opts(), rank(r), "train")
                .await
                .unwrap();
            let rest = reader.get(None).await.unwrap();
            reader.commit().await.unwrap();
            seen.extend(rest);
            let lags: Vec<u64> = {
                let w = system.write_queue("t", opts()).await.unwrap();
                let mut lags = Vec::new();
                for b in w.buckets() {
                    for l in b.list_groups().await.unwrap() {
                        if reader
                            .offsets()
                            .contains_key(&(b.stats().await.unwrap().bucket_id as u32))
                        {
                            lags.push(l.lag);
                        }
                    }
                }
                lags
            };
            assert!(lags.iter().all(|l| *l == 0), "{lags:?}");
        }
        let mut ns: Vec<i64> = seen.iter().map(|r| r["n"].as_i64().unwrap()).collect();
        ns.sort_unstable();
        assert_eq!(ns, (0..200).collect::<Vec<_>>(), "every record once");
    });
}

/// Two readers of one group on the same buckets: the second commit made from a stale
/// read is refused, naming the offset it lost to.
#[test]
fn a_reader_committing_from_a_stale_view_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = QueueOptions {
        backend: "lance".into(),
        num_buckets: 1,
        ..QueueOptions::at(dir.path())
    };
    rt().block_on(async {
        let system = QueueSystem::new();
        let w = system.write_queue("t", opts.clone()).await.unwrap();
        w.put_batch((0..20).map(|i| record! {"id" => i}).collect())
            .await
            .unwrap();
        let mut a = system
            .read_queue_in_group("t", opts.clone(), Assignment::All, "g")
            .await
            .unwrap();
        let mut b = system
            .read_queue_in_group("t", opts.clone(), Assignment::All, "g")
            .await
            .unwrap();
        a.get(Some(10)).await.unwrap();
        b.get(Some(5)).await.unwrap();
        a.commit().await.unwrap();
        let e = b.commit().await.unwrap_err().to_string();
        assert!(e.contains("moved it to offset 10"), "{e}");
    });
}

/// A handle without the writer (another process's view) checks commits against what
/// the storage holds: Lance's rows and the WAL's entries.
#[test]
fn a_handle_without_the_writer_commits_within_the_stored_records() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let b = PersistingBackend::open(0, dir.path(), wal_options())
            .await
            .unwrap();
        b.put_batch((0..8).map(|i| record! {"id" => i}).collect())
            .await
            .unwrap();
        b.flush().await.unwrap();
        b.put_batch((8..12).map(|i| record! {"id" => i}).collect())
            .await
            .unwrap(); // WAL only
        let g = BucketGroups::open(dir.path(), None, &Default::default())
            .await
            .unwrap();
        g.commit("other", 12).await.unwrap();
        let e = g.commit("other", 13).await.unwrap_err();
        assert!(e.to_string().contains("its end is 12"), "{e}");
        // the writer sees the commit, and the lag
        let lag = b.list_groups().await.unwrap();
        assert_eq!((lag[0].committed, lag[0].lag), (12, 0));
        b.put(record! {"id" => 12}).await.unwrap();
        assert_eq!(g.list().await.unwrap()[0].lag, 1);
    });
}

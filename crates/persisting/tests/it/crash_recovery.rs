//! Recovery: WAL replay, a crash between the Lance commit and the WAL checkpoint, the
//! durability contract per `wal_sync_interval` under a simulated power loss of the
//! WAL (the WAL crate's simulated file layer), and a flush whose Lance fsyncs fail.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use persisting::lance::{SimCrash, SimDisk, SyncKind};
use persisting::wal::{CrashMode, SimFs};
use persisting::{PersistingBackend, PersistingOptions, StorageBackend, WAL_DIR, record};

use crate::rt;

fn wal_opts(interval: Duration) -> PersistingOptions {
    PersistingOptions {
        enable_wal: true,
        wal_sync_interval: interval,
        ..PersistingOptions::default()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn crash_between_lance_commit_and_wal_checkpoint_neither_loses_nor_duplicates() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let saved = tempfile::tempdir().unwrap();
        let opts = wal_opts(Duration::ZERO);
        let b = PersistingBackend::open(3, dir.path(), opts.clone())
            .await
            .unwrap();
        for i in 0..20 {
            b.put(record! {"n" => i}).await.unwrap();
        }
        // the WAL as it is when the Lance commit lands, before the checkpoint
        copy_dir(&dir.path().join(WAL_DIR), saved.path());
        b.flush().await.unwrap();
        drop(b);
        // the crash: Lance holds 0..20, and so does the WAL, unchecked-pointed
        std::fs::remove_dir_all(dir.path().join(WAL_DIR)).unwrap();
        copy_dir(saved.path(), &dir.path().join(WAL_DIR));
        let b = PersistingBackend::open(3, dir.path(), opts.clone())
            .await
            .unwrap();
        let stats = b.stats().await.unwrap();
        assert_eq!(
            (stats.persisted_count, stats.buffer_count),
            (20, 0),
            "nothing replayed twice"
        );
        for i in 20..25 {
            b.put(record! {"n" => i}).await.unwrap();
        }
        drop(b);
        let b = PersistingBackend::open(3, dir.path(), opts).await.unwrap();
        let got: Vec<i64> = b
            .get(0, None)
            .await
            .unwrap()
            .iter()
            .map(|r| r["n"].as_i64().unwrap())
            .collect();
        assert_eq!(got, (0..25).collect::<Vec<_>>());
    });
}

#[test]
fn records_in_the_wal_beyond_lance_are_replayed_with_their_offsets() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = wal_opts(Duration::ZERO);
        let b = PersistingBackend::open(0, dir.path(), opts.clone())
            .await
            .unwrap();
        for i in 0..8 {
            b.put(record! {"n" => i}).await.unwrap();
        }
        b.flush().await.unwrap();
        for i in 8..13 {
            b.put(record! {"n" => i}).await.unwrap();
        }
        drop(b);
        let b = PersistingBackend::open(0, dir.path(), opts).await.unwrap();
        let stats = b.stats().await.unwrap();
        assert_eq!((stats.persisted_count, stats.buffer_count), (8, 5));
        let got: Vec<i64> = b
            .get(6, None)
            .await
            .unwrap()
            .iter()
            .map(|r| r["n"].as_i64().unwrap())
            .collect();
        assert_eq!(got, (6..13).collect::<Vec<_>>());
    });
}

fn sim_backend(sim: &SimFs, dir: &Path, interval: Duration) -> PersistingBackend {
    rt().block_on(PersistingBackend::open_with_wal_fs(
        0,
        dir,
        wal_opts(interval),
        Arc::new(sim.clone()),
    ))
    .unwrap()
}

#[test]
fn acknowledged_records_survive_a_power_loss_under_interval_zero() {
    for mode in [
        CrashMode::DropUnsynced,
        CrashMode::TearLastWrite,
        CrashMode::Random,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let sim = SimFs::new();
        let b = sim_backend(&sim, dir.path(), Duration::ZERO);
        rt().block_on(async {
            for i in 0..30 {
                b.put(record! {"n" => i}).await.unwrap();
            }
            b.put_batch((30..40).map(|i| record! {"n" => i}).collect())
                .await
                .unwrap();
        });
        sim.crash(mode, 7);
        drop(b);
        let b = sim_backend(&sim, dir.path(), Duration::ZERO);
        let got = rt().block_on(b.get(0, None)).unwrap();
        assert_eq!(
            got.len(),
            40,
            "{mode:?}: every acknowledged record survives"
        );
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, r)| r["n"].as_i64() == Some(i as i64))
        );
    }
}

#[test]
fn an_interval_loses_at_most_a_suffix_never_a_middle() {
    for seed in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let sim = SimFs::new();
        // an interval long enough that only the explicit flush below syncs
        let b = sim_backend(&sim, dir.path(), Duration::from_secs(3600));
        rt().block_on(async {
            for i in 0..10 {
                b.put(record! {"n" => i}).await.unwrap();
            }
            b.flush().await.unwrap(); // 0..10 durable in Lance
            for i in 10..40 {
                b.put(record! {"n" => i}).await.unwrap();
            }
        });
        sim.crash(CrashMode::KeepPrefix, seed);
        drop(b);
        let b = sim_backend(&sim, dir.path(), Duration::from_secs(3600));
        let got = rt().block_on(b.get(0, None)).unwrap();
        assert!(got.len() >= 10, "flushed records survive");
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, r)| r["n"].as_i64() == Some(i as i64)),
            "a prefix, in order"
        );
        // and the backend takes new writes at the right offset
        rt().block_on(b.put(record! {"n" => got.len() as i64}))
            .unwrap();
        assert_eq!(b.total_count(), got.len() as u64 + 1);
    }
}

#[test]
fn a_failed_fsync_fails_the_waiting_put_and_every_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFs::new();
    let b = sim_backend(&sim, dir.path(), Duration::ZERO);
    rt().block_on(async {
        b.put(record! {"n" => 0}).await.unwrap();
        sim.fail_next_sync();
        let err = b.put(record! {"n" => 1}).await.unwrap_err();
        assert!(err.to_string().contains("fsync"), "{err}");
        // the WAL is poisoned: nothing more is acknowledged
        assert!(b.put(record! {"n" => 2}).await.is_err());
        assert_eq!(
            b.total_count(),
            1,
            "only the acknowledged record is visible"
        );
    });
    drop(b);
    // reopened, the log holds the acknowledged record (and perhaps the unacknowledged
    // one, which was written): never less
    let b = sim_backend(&sim, dir.path(), Duration::ZERO);
    let got = rt().block_on(b.get(0, None)).unwrap();
    assert!(!got.is_empty() && got[0] == record! {"n" => 0}, "{got:?}");
}

#[test]
fn many_concurrent_durable_puts_share_fsyncs_and_all_survive_a_power_loss() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFs::new();
    let b = Arc::new(sim_backend(&sim, dir.path(), Duration::ZERO));
    let syncs_before = sim.sync_count();
    rt().block_on(async {
        let tasks: Vec<_> = (0..32i64)
            .map(|t| {
                let b = b.clone();
                tokio::spawn(async move {
                    for i in 0..20 {
                        b.put(record! {"t" => t, "i" => i}).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let syncs = sim.sync_count() - syncs_before;
    assert!(syncs < 640, "{syncs} fsyncs for 640 puts: group commit");
    sim.crash(CrashMode::DropUnsynced, 1);
    drop(b);
    let b = sim_backend(&sim, dir.path(), Duration::ZERO);
    let got = rt().block_on(b.get(0, None)).unwrap();
    assert_eq!(got.len(), 640);
    for t in 0..32i64 {
        let mine: Vec<i64> = got
            .iter()
            .filter(|r| r["t"].as_i64() == Some(t))
            .map(|r| r["i"].as_i64().unwrap())
            .collect();
        assert_eq!(mine, (0..20).collect::<Vec<_>>(), "task {t}, in order");
    }
}

/// A flush cut by the caller's timeout, then the handle dropped and the bucket
/// reopened at once: the cut commit may still be landing. The reopen waits for the
/// bucket's lock, which that commit holds, so WAL replay never runs under it: every
/// record comes back exactly once.
#[test]
fn a_reopen_right_after_a_cancelled_flush_neither_duplicates_nor_loses() {
    rt().block_on(async {
        for step in 0..12u64 {
            let dir = tempfile::tempdir().unwrap();
            let opts = wal_opts(Duration::ZERO);
            let records: Vec<_> = (0..300i64)
                .map(|i| record! {"id" => format!("r{i}"), "n" => i})
                .collect();
            let b = PersistingBackend::open(0, dir.path(), opts.clone())
                .await
                .unwrap();
            b.put_batch(records.clone()).await.unwrap();
            let cut = Duration::from_micros(step * step * 150);
            let _ = tokio::time::timeout(cut, b.flush()).await;
            drop(b);
            let b = PersistingBackend::open(0, dir.path(), opts.clone())
                .await
                .unwrap();
            assert_eq!(b.get(0, None).await.unwrap(), records, "step {step}");
            b.close().await.unwrap();
            drop(b);
            let b = PersistingBackend::open(0, dir.path(), opts).await.unwrap();
            assert_eq!(
                b.get(0, None).await.unwrap(),
                records,
                "step {step}, closed"
            );
            b.close().await.unwrap();
        }
    });
}

/// A flush whose Lance fsyncs fail (of its data files, of the manifest directory, or
/// of the seals, which come after the commit) does not count its records persisted:
/// the WAL is not checkpointed past them, and a power loss of both disks right then
/// loses none of them. Once fsyncs work again, the next flush makes them durable.
#[test]
fn a_flush_whose_fsyncs_fail_keeps_the_wal_and_a_power_loss_loses_nothing() {
    for kind in [SyncKind::DataFiles, SyncKind::ManifestDir, SyncKind::Seals] {
        let dir = tempfile::tempdir().unwrap();
        let sim = SimFs::new();
        let disk = SimDisk::new(dir.path());
        let open = || {
            PersistingBackend::open_with_disks(
                0,
                dir.path(),
                wal_opts(Duration::ZERO),
                Arc::new(sim.clone()),
                Arc::new(disk.clone()),
            )
        };
        rt().block_on(async {
            let b = open().await.unwrap();
            b.put_batch((0..100).map(|i| record! {"n" => i}).collect())
                .await
                .unwrap();
            b.flush().await.unwrap();
            disk.fail_syncs(Some(kind));
            b.put_batch((100..150).map(|i| record! {"n" => i}).collect())
                .await
                .unwrap();
            let e = b.flush().await.unwrap_err();
            assert!(
                e.to_string().contains("simulated fsync failure"),
                "{kind:?}: {e}"
            );
            // a retry reconciles and fails the same way
            assert!(b.flush().await.is_err(), "{kind:?}");
            let stats = b.stats().await.unwrap();
            assert_eq!(stats.persisted_count, 100, "{kind:?}");
            assert_eq!(stats.total_count, 150, "{kind:?}");
            // both disks lose power now: what was acknowledged is in the WAL
            disk.crash(SimCrash::DropUnsynced, 3).unwrap();
            sim.crash(CrashMode::DropUnsynced, 3);
            drop(b);
            disk.power_on();
            disk.fail_syncs(None);
            let b = open().await.unwrap();
            let got = b.get(0, None).await.unwrap();
            assert_eq!(
                got.len(),
                150,
                "{kind:?}: every acknowledged record survives"
            );
            assert!(
                got.iter()
                    .enumerate()
                    .all(|(i, r)| r["n"].as_i64() == Some(i as i64)),
                "{kind:?}"
            );
            b.flush().await.unwrap();
            assert_eq!(b.stats().await.unwrap().persisted_count, 150, "{kind:?}");
            b.close().await.unwrap();
        });
    }
}

//! Simulated power losses of a whole bucket's files ([`SimDisk`]): what a flush made
//! durable survives each way a power loss can treat unsynced data, leaving out
//! one of the fsyncs a flush depends on is caught, and records whose fsync failed are
//! not counted persisted (the count a WAL is checkpointed to).

use std::sync::Arc;

use persisting_codec::{Record, record};
use persisting_lance::{LanceBucket, LanceOptions, SimCrash, SimDisk, SyncKind};

use crate::rt;

fn batch(from: i64, n: i64) -> Vec<Record> {
    (from..from + n)
        .map(|i| record! {"id" => i, "name" => format!("record {i}"), "score" => i as f64 / 2.0})
        .collect()
}

const MODES: [SimCrash; 3] = [
    SimCrash::DropUnsynced,
    SimCrash::KeepPrefix,
    SimCrash::TearLastWrite,
];

/// Writes three flushed batches and a fourth left buffered on `disk`, then cuts the
/// power. Returns the records flushed.
async fn flush_then_crash(
    dir: &std::path::Path,
    disk: &SimDisk,
    mode: SimCrash,
    seed: u64,
) -> Vec<Record> {
    let opts = LanceOptions {
        flush_threshold: 0,
        ..LanceOptions::default()
    };
    let mut bucket = LanceBucket::open_on(dir, opts, Arc::new(disk.clone()))
        .await
        .unwrap();
    let mut flushed = Vec::new();
    for k in 0..3 {
        let records = batch(k * 100, 100);
        bucket.put_batch(records.clone()).unwrap();
        bucket.flush().await.unwrap();
        flushed.extend(records);
    }
    bucket.put_batch(batch(300, 50)).unwrap();
    disk.crash(mode, seed).unwrap();
    drop(bucket);
    disk.power_on();
    flushed
}

#[test]
fn what_a_flush_made_durable_survives_every_kind_of_power_loss() {
    rt().block_on(async {
        for mode in MODES {
            for seed in 1..4 {
                let dir = tempfile::tempdir().unwrap();
                let disk = SimDisk::new(dir.path());
                let flushed = flush_then_crash(dir.path(), &disk, mode, seed).await;
                let bucket =
                    LanceBucket::open_on(dir.path(), LanceOptions::default(), Arc::new(disk))
                        .await
                        .unwrap();
                assert_eq!(bucket.persisted_count(), 300, "{mode:?} seed {seed}");
                assert_eq!(
                    bucket.read(0, 1000).await.unwrap(),
                    flushed,
                    "{mode:?} seed {seed}"
                );
                let check = bucket.verify_files().await.unwrap();
                assert_eq!(check.unsealed, 0, "{mode:?} seed {seed}: {check:?}");
            }
        }
    });
}

#[test]
fn a_power_loss_during_the_first_flush_leaves_an_empty_bucket_that_opens() {
    rt().block_on(async {
        for mode in MODES {
            let dir = tempfile::tempdir().unwrap();
            let disk = SimDisk::new(dir.path());
            let mut bucket =
                LanceBucket::open_on(dir.path(), LanceOptions::default(), Arc::new(disk.clone()))
                    .await
                    .unwrap();
            bucket.put_batch(batch(0, 10)).unwrap();
            disk.crash(mode, 7).unwrap();
            // the power is off: the flush fails, nothing is reported durable
            assert!(bucket.flush().await.is_err());
            drop(bucket);
            disk.power_on();
            let again = LanceBucket::open(dir.path(), LanceOptions::default())
                .await
                .unwrap();
            assert_eq!(again.persisted_count(), 0);
        }
    });
}

/// The outcome of a flushed bucket whose `skipped` fsyncs never happened, after a
/// power loss dropping everything unsynced: whether the flushed records all came back
/// intact, in sealed files.
async fn survives_without(skipped: SyncKind) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(dir.path());
    disk.skip_syncs(Some(skipped));
    let flushed = flush_then_crash(dir.path(), &disk, SimCrash::DropUnsynced, 1).await;
    disk.skip_syncs(None);
    let Ok(bucket) = LanceBucket::open(dir.path(), LanceOptions::default()).await else {
        return false;
    };
    let read = bucket.read(0, 1000).await;
    let sealed = bucket.verify_files().await.is_ok_and(|c| c.unsealed == 0);
    read.is_ok_and(|r| r == flushed) && sealed
}

#[test]
fn leaving_out_an_fsync_a_flush_needs_is_caught_by_the_simulation() {
    rt().block_on(async {
        for skipped in [SyncKind::DataFiles, SyncKind::ManifestDir, SyncKind::Seals] {
            assert!(!survives_without(skipped).await, "without {skipped:?}");
        }
    });
}

#[test]
fn records_a_commit_landed_count_as_persisted_only_once_an_fsync_of_them_succeeds() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let disk = SimDisk::new(dir.path());
        let opts = LanceOptions {
            flush_threshold: 0,
            ..LanceOptions::default()
        };
        let mut bucket = LanceBucket::open_on(dir.path(), opts, Arc::new(disk.clone()))
            .await
            .unwrap();
        bucket.put_batch(batch(0, 100)).unwrap();
        bucket.flush().await.unwrap();
        // the seals are fsynced after the commit: it lands, and is not durable
        disk.fail_syncs(Some(SyncKind::Seals));
        bucket.put_batch(batch(100, 50)).unwrap();
        let e = bucket.flush().await.unwrap_err();
        assert!(e.to_string().contains("simulated fsync failure"), "{e}");
        assert_eq!(bucket.persisted_count(), 100);
        // the next flush reconciles: it finds the commit, and cannot make it durable
        let e = bucket.flush().await.unwrap_err();
        assert!(e.to_string().contains("simulated fsync failure"), "{e}");
        assert_eq!(bucket.persisted_count(), 100);
        assert_eq!(bucket.total_count(), 150);
        assert_eq!(bucket.read(0, 1000).await.unwrap(), batch(0, 150));
        disk.fail_syncs(None);
        bucket.flush().await.unwrap();
        assert_eq!(bucket.persisted_count(), 150);
        // and its files are sealed: a flush whose seal failed seals them later
        assert_eq!(bucket.verify_files().await.unwrap().unsealed, 0);
        // what it counts persisted now survives a power loss
        disk.crash(SimCrash::DropUnsynced, 1).unwrap();
        drop(bucket);
        disk.power_on();
        let again = LanceBucket::open(dir.path(), LanceOptions::default())
            .await
            .unwrap();
        assert_eq!(again.persisted_count(), 150);
        assert_eq!(again.read(0, 1000).await.unwrap(), batch(0, 150));
    });
}

#[test]
fn a_torn_newest_manifest_is_set_aside_and_the_bucket_opens_at_the_commit_before() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = LanceOptions {
            flush_threshold: 0,
            ..LanceOptions::default()
        };
        let mut bucket = LanceBucket::open(dir.path(), opts.clone()).await.unwrap();
        bucket.put_batch(batch(0, 10)).unwrap();
        bucket.flush().await.unwrap();
        bucket.put_batch(batch(10, 10)).unwrap();
        bucket.flush().await.unwrap();
        drop(bucket);
        // the newest manifest (smallest name in Lance's naming) loses its last bytes,
        // as a power loss before its fsync can leave it
        let versions = dir.path().join("data.lance/_versions");
        let mut names: Vec<_> = std::fs::read_dir(&versions)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "manifest"))
            .collect();
        names.sort();
        let newest = &names[0];
        let len = std::fs::metadata(newest).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(newest)
            .unwrap()
            .set_len(len - 7)
            .unwrap();
        let again = LanceBucket::open(dir.path(), opts).await.unwrap();
        assert_eq!(again.persisted_count(), 10);
        assert_eq!(again.read(0, 100).await.unwrap(), batch(0, 10));
        let mut aside = newest.clone().into_os_string();
        aside.push(".torn");
        assert!(std::path::Path::new(&aside).exists());
    });
}

/// The real disk, recording every fsync in order.
#[derive(Debug, Default)]
struct RecordingDisk {
    syncs: std::sync::Mutex<Vec<std::path::PathBuf>>,
}

impl persisting_lance::Disk for RecordingDisk {
    fn sync_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        self.syncs.lock().unwrap().push(path.to_path_buf());
        persisting_lance::RealDisk.sync_file(path)
    }

    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.syncs.lock().unwrap().push(dir.to_path_buf());
        persisting_lance::RealDisk.sync_dir(dir)
    }

    fn write_from(&self, path: &std::path::Path, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        persisting_lance::RealDisk.write_from(path, offset, bytes)
    }

    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        persisting_lance::RealDisk.rename(from, to)
    }

    fn write_at(&self, path: &std::path::Path, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        persisting_lance::RealDisk.write_at(path, offset, bytes)
    }
}

#[test]
fn a_flush_fsyncs_its_files_before_the_manifest_names_them_and_each_only_once() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(RecordingDisk::default());
        let opts = LanceOptions {
            flush_threshold: 0,
            ..LanceOptions::default()
        };
        let mut bucket = LanceBucket::open_on(dir.path(), opts, disk.clone())
            .await
            .unwrap();
        bucket.put_batch(batch(0, 100)).unwrap();
        bucket.flush().await.unwrap();
        disk.syncs.lock().unwrap().clear();
        // a second flush: an append commit to an existing dataset
        bucket.put_batch(batch(100, 100)).unwrap();
        bucket.flush().await.unwrap();
        let syncs = disk.syncs.lock().unwrap().clone();
        let name = |p: &std::path::PathBuf| p.to_string_lossy().into_owned();
        let position = |pred: &dyn Fn(&str) -> bool| syncs.iter().position(|p| pred(&name(p)));
        let manifest = position(&|p| p.ends_with(".manifest")).expect("the manifest is fsynced");
        let data = position(&|p| p.contains("/data/") && p.ends_with(".lance"))
            .expect("the new data file is fsynced");
        let seals = position(&|p| p.ends_with(persisting_lance::SUMS_FILE))
            .expect("the seals file is fsynced");
        assert!(
            data < manifest,
            "data file after the manifest naming it: {syncs:?}"
        );
        assert!(
            manifest < seals,
            "seal before the commit it seals: {syncs:?}"
        );
        let mut seen = std::collections::HashSet::new();
        for p in &syncs {
            // the seals file is appended and fsynced once per flush too
            assert!(
                seen.insert(p),
                "{} fsynced twice in one flush: {syncs:?}",
                p.display()
            );
        }
        assert_eq!(bucket.read(0, 1000).await.unwrap(), batch(0, 200));
    });
}

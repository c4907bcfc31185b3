//! The remote code path (no local files, no fsync, commits through the version
//! check) on Lance's process-wide in-memory object store, `shared-memory://`: the
//! same code a dataset on S3 runs, without a server.

use std::sync::atomic::{AtomicU64, Ordering};

use persisting_codec::{Record, record};
use persisting_lance::{Error, LanceBucket, LanceOptions};

use crate::rt;

/// A bucket URI no other test uses (the in-memory store lives as long as the
/// process).
fn uri() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    format!(
        "shared-memory://remote-test-{}-{n}/queue/bucket_0",
        std::process::id()
    )
}

fn options() -> LanceOptions {
    LanceOptions {
        flush_threshold: 0,
        ..LanceOptions::default()
    }
}

fn batch(from: i64, n: i64) -> Vec<Record> {
    (from..from + n)
        .map(|i| record! {"id" => i, "name" => format!("record {i}")})
        .collect()
}

#[test]
fn records_round_trip_and_survive_a_reopen() {
    rt().block_on(async {
        let uri = uri();
        let mut b = LanceBucket::open(&uri, options()).await.unwrap();
        assert_eq!(b.total_count(), 0);
        b.put_batch(batch(0, 100)).unwrap();
        let report = b.flush().await.unwrap();
        assert_eq!((report.records, report.files_synced), (100, 0));
        b.put_batch(batch(100, 50)).unwrap();
        b.flush().await.unwrap();
        assert!(b.dataset_uri().starts_with("shared-memory://"));
        drop(b);
        let b = LanceBucket::open(&uri, options()).await.unwrap();
        assert_eq!(b.persisted_count(), 150);
        assert_eq!(b.read(0, 1000).await.unwrap(), batch(0, 150));
        assert_eq!(b.read(120, 5).await.unwrap(), batch(120, 5));
        // nothing to check against seals: a remote dataset has none
        let check = b.verify_files().await.unwrap();
        assert_eq!(check.files, check.unsealed);
    });
}

#[test]
fn schema_evolution_and_compaction_work_remotely() {
    rt().block_on(async {
        let uri = uri();
        let opts = LanceOptions {
            compact_fragments_max: 3,
            target_rows_per_fragment: 320,
            ..options()
        };
        let mut b = LanceBucket::open(&uri, opts.clone()).await.unwrap();
        let mut all = Vec::new();
        for k in 0..6 {
            let mut records = vec![record! {"id" => k, "v" => k}];
            if k == 3 {
                // a new field, and an int column receiving a float
                records = vec![record! {"id" => k, "v" => 2.5, "extra" => "x"}];
            }
            b.put_batch(records.clone()).unwrap();
            b.flush().await.unwrap();
            all.extend(records);
        }
        assert!(b.stats().compactions > 0, "{:?}", b.stats());
        drop(b);
        let b = LanceBucket::open(&uri, opts).await.unwrap();
        let back = b.read(0, 100).await.unwrap();
        assert_eq!(back.len(), 6);
        assert_eq!(back[3], record! {"id" => 3, "v" => 2.5, "extra" => "x"});
        assert_eq!(back[5]["v"], persisting_codec::Value::from(5.0));
    });
}

#[test]
fn a_second_writer_on_the_same_dataset_is_refused_and_writes_nothing() {
    rt().block_on(async {
        let uri = uri();
        let mut first = LanceBucket::open(&uri, options()).await.unwrap();
        first.put_batch(batch(0, 10)).unwrap();
        first.flush().await.unwrap();
        // a second writer opens the same dataset (another machine: no lock between them)
        let mut second = LanceBucket::open(&uri, options()).await.unwrap();
        first.put_batch(batch(10, 10)).unwrap();
        first.flush().await.unwrap();
        second.put_batch(batch(1000, 5)).unwrap();
        // Lance would rebase the second writer's append onto the first's commit; the
        // version check refuses it instead
        let err = second.flush().await.unwrap_err();
        assert!(err.to_string().contains("another writer"), "{err}");
        // and it stays refused: it never writes after another writer's commit
        let err = second.flush().await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::CommittedByAnotherWriter {
                    version: 2,
                    expected: 2,
                    ..
                }
            ),
            "{err}"
        );
        first.put_batch(batch(20, 10)).unwrap();
        first.flush().await.unwrap();
        let fresh = LanceBucket::open(&uri, options()).await.unwrap();
        assert_eq!(fresh.read(0, 1000).await.unwrap(), batch(0, 30));
    });
}

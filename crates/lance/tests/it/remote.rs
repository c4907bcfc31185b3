//! The remote code path (no local files, no fsync, commits through the version
//! check, the writer lease) on two object stores: Lance's process-wide in-memory
//! store, `shared-memory://` (always: the same code a dataset on S3 runs, without a
//! server), and a real S3-compatible server (`on_s3`, when `PERSISTING_TEST_S3` names
//! a bucket URI such as `s3://persisting`; `scripts/s3-server.sh` starts one and
//! prints the variables, the endpoint and credentials as Lance reads them from
//! `AWS_*`). CI runs both.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use persisting_codec::{Record, record};
use persisting_lance::{Disk, Error, LanceBucket, LanceOptions, ManifestFault};

use crate::rt;

/// The object store a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Store {
    Memory,
    S3,
}

impl Store {
    /// A bucket URI no other test uses (the in-memory store lives as long as the
    /// process; the S3 server outlives it, hence the time in the name).
    pub fn uri(self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let run = format!("{}-{}-{n}", std::process::id(), run_start_ms());
        match self {
            Store::Memory => format!("shared-memory://remote-test-{run}/queue/bucket_0"),
            Store::S3 => format!("{}/lance-it-{run}/queue/bucket_0", s3_root().unwrap()),
        }
    }
}

/// The S3 bucket URI of the server the `on_s3` tests use, if one is configured.
pub fn s3_root() -> Option<String> {
    std::env::var("PERSISTING_TEST_S3")
        .ok()
        .map(|root| root.trim_end_matches('/').to_owned())
}

/// Whether the S3 server is configured; says the test skipped when not.
pub fn s3_configured() -> bool {
    let configured = s3_root().is_some();
    if !configured {
        eprintln!("skipped: PERSISTING_TEST_S3 is not set (scripts/s3-server.sh)");
    }
    configured
}

fn run_start_ms() -> u128 {
    static START: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    })
}

/// Each named test body, once on every store: `on_memory::NAME` and `on_s3::NAME`
/// (which says it skipped when no server is configured).
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod on_memory {
            $(#[test]
            fn $name() {
                super::$name(super::Store::Memory)
            })*
        }
        mod on_s3 {
            $(#[test]
            fn $name() {
                if super::s3_configured() {
                    super::$name(super::Store::S3)
                }
            })*
        }
    };
}

on_every_store!(
    records_round_trip_and_survive_a_reopen,
    schema_evolution_and_compaction_work_remotely,
    a_second_writer_is_refused_by_the_lease_and_names_the_holder,
    a_writer_that_keeps_writing_keeps_its_lease_past_its_term,
    a_released_lease_is_taken_at_once_and_its_writer_commits_nothing_more,
    a_stale_writer_whose_lease_was_taken_over_cannot_commit,
    without_its_lease_a_second_writer_is_still_refused_at_commit_by_the_version_check,
    a_commit_whose_put_fails_before_it_is_sent_or_loses_its_reply_loses_and_duplicates_nothing,
    a_flush_to_a_uri_costs_the_same_few_requests_whatever_its_size,
);

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

fn records_round_trip_and_survive_a_reopen(store: Store) {
    rt().block_on(async {
        let uri = store.uri();
        let mut b = LanceBucket::open(&uri, options()).await.unwrap();
        assert_eq!(b.total_count(), 0);
        b.put_batch(batch(0, 100)).unwrap();
        let report = b.flush().await.unwrap();
        assert_eq!((report.records, report.files_synced), (100, 0));
        b.put_batch(batch(100, 50)).unwrap();
        b.flush().await.unwrap();
        let scheme = uri.split("://").next().unwrap();
        assert!(b.dataset_uri().starts_with(scheme), "{}", b.dataset_uri());
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

fn schema_evolution_and_compaction_work_remotely(store: Store) {
    rt().block_on(async {
        let uri = store.uri();
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

/// The lease objects of the bucket at `uri`, removed behind the holder's back.
async fn remove_lease(uri: &str) {
    use object_store::ObjectStoreExt;
    let (store, leases) = lease_objects(uri).await;
    assert!(!leases.is_empty());
    for meta in leases {
        store.delete(&meta.location).await.unwrap();
    }
}

/// The store of the bucket at `uri` and the lease objects in it.
async fn lease_objects(
    uri: &str,
) -> (
    Arc<dyn object_store::ObjectStore>,
    Vec<object_store::ObjectMeta>,
) {
    use futures::TryStreamExt;
    let (store, base) = lance_io::object_store::ObjectStore::from_uri(uri)
        .await
        .unwrap();
    let dir = base.clone().join(persisting_lance::LEASE_DIR);
    let leases = store.inner.list(Some(&dir)).try_collect().await.unwrap();
    (Arc::clone(&store.inner), leases)
}

fn lease_options(term_ms: u64) -> LanceOptions {
    LanceOptions {
        lease_term: std::time::Duration::from_millis(term_ms),
        ..options()
    }
}

fn a_second_writer_is_refused_by_the_lease_and_names_the_holder(store: Store) {
    rt().block_on(async {
        let uri = store.uri();
        let mut first = LanceBucket::open(&uri, options()).await.unwrap();
        first.put_batch(batch(0, 10)).unwrap();
        first.flush().await.unwrap();
        let mut second = LanceBucket::open(&uri, options()).await.unwrap();
        second.put_batch(batch(1000, 5)).unwrap();
        let err = second.flush().await.unwrap_err();
        let Error::LeaseHeld { holder, .. } = &err else {
            panic!("{err}")
        };
        assert!(holder.contains(&std::process::id().to_string()), "{err}");
        // readers take no lease: a third handle reads what the writer flushed
        let reader = LanceBucket::open(&uri, options()).await.unwrap();
        assert_eq!(reader.read(0, 100).await.unwrap(), batch(0, 10));
    });
}

fn a_writer_that_keeps_writing_keeps_its_lease_past_its_term(store: Store) {
    rt().block_on(async {
        let uri = store.uri();
        let term_ms = 2000;
        let term = std::time::Duration::from_millis(term_ms);
        let start = std::time::SystemTime::now();
        let mut first = LanceBucket::open(&uri, lease_options(term_ms))
            .await
            .unwrap();
        let second = LanceBucket::open(&uri, lease_options(term_ms))
            .await
            .unwrap();
        // writes every 150 ms until more than a term has passed and the lease in the
        // store was renewed lately (its expiry at least half a term ahead): how long
        // a renewal takes on a loaded store decides how many writes that is, not
        // whether the test passes
        let mut k = 0;
        let renewed = loop {
            first.put_batch(batch(k * 10, 10)).unwrap();
            first.flush().await.unwrap();
            k += 1;
            let (number, expires) = newest_lease(&uri).await;
            let now = std::time::SystemTime::now();
            if now.duration_since(start).unwrap() > term * 5 / 4 && expires > now + term / 2 {
                break number;
            }
            assert!(
                now.duration_since(start).unwrap() < term * 20,
                "no renewal in {k} writes: the newest lease is number {number}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        };
        assert!(
            renewed > 1,
            "the lease was never renewed (number {renewed})"
        );
        let err = second.ensure_writer().await.unwrap_err();
        assert!(matches!(err, Error::LeaseHeld { .. }), "{err}");
        assert_eq!(first.read(0, 10_000).await.unwrap().len(), k as usize * 10);
    });
}

/// The number and expiry of the newest lease object of the bucket at `uri`.
async fn newest_lease(uri: &str) -> (u64, std::time::SystemTime) {
    use object_store::ObjectStoreExt;
    let (store, leases) = lease_objects(uri).await;
    let newest = leases
        .iter()
        .max_by_key(|meta| meta.location.filename().map(str::to_owned))
        .expect("a lease object");
    let number = newest.location.filename().unwrap().parse().unwrap();
    let bytes = store
        .get(&newest.location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let content: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let ms = content["expires_unix_ms"].as_u64().unwrap();
    (
        number,
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
    )
}

fn a_released_lease_is_taken_at_once_and_its_writer_commits_nothing_more(store: Store) {
    rt().block_on(async {
        let uri = store.uri();
        // a term of a minute: only the release lets a second writer in during the test
        let mut first = LanceBucket::open(&uri, lease_options(60_000))
            .await
            .unwrap();
        first.put_batch(batch(0, 10)).unwrap();
        first.flush().await.unwrap();
        let mut second = LanceBucket::open(&uri, lease_options(60_000))
            .await
            .unwrap();
        let err = second.ensure_writer().await.unwrap_err();
        assert!(matches!(err, Error::LeaseHeld { .. }), "{err}");
        first.release_writer().await.unwrap();
        first.release_writer().await.unwrap(); // once is enough; again is nothing
        second.ensure_writer().await.unwrap();
        second.put_batch(batch(10, 10)).unwrap();
        second.flush().await.unwrap();
        first.put_batch(batch(1000, 5)).unwrap();
        let err = first.flush().await.unwrap_err();
        assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
        assert!(err.to_string().contains("released"), "{err}");
        let fresh = LanceBucket::open(&uri, options()).await.unwrap();
        assert_eq!(fresh.read(0, 100).await.unwrap(), batch(0, 20));
    });
}

fn a_stale_writer_whose_lease_was_taken_over_cannot_commit(store: Store) {
    rt().block_on(async {
        let uri = store.uri();
        let mut first = LanceBucket::open(&uri, lease_options(100)).await.unwrap();
        first.put_batch(batch(0, 10)).unwrap();
        first.flush().await.unwrap();
        // the first writer stalls past its lease's expiry; a second takes over
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let mut second = LanceBucket::open(&uri, lease_options(100)).await.unwrap();
        second.put_batch(batch(10, 10)).unwrap();
        second.flush().await.unwrap();
        first.put_batch(batch(1000, 5)).unwrap();
        let err = first.flush().await.unwrap_err();
        assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
        // lost for good, even once the new holder's term has passed
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let err = first.ensure_writer().await.unwrap_err();
        assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
        let fresh = LanceBucket::open(&uri, options()).await.unwrap();
        assert_eq!(fresh.read(0, 100).await.unwrap(), batch(0, 20));
    });
}

fn without_its_lease_a_second_writer_is_still_refused_at_commit_by_the_version_check(store: Store) {
    rt().block_on(async {
        let uri = store.uri();
        let mut first = LanceBucket::open(&uri, options()).await.unwrap();
        first.put_batch(batch(0, 10)).unwrap();
        first.flush().await.unwrap();
        // the first writer's lease vanishes behind its back (a clock far off, a
        // bucket cleaned by hand): a second writer takes a lease and commits, while
        // the first still believes its own lease good
        remove_lease(&uri).await;
        let mut second = LanceBucket::open(&uri, options()).await.unwrap();
        second.put_batch(batch(10, 10)).unwrap();
        second.flush().await.unwrap();
        first.put_batch(batch(1000, 5)).unwrap();
        // Lance would rebase the first writer's append onto the second's commit;
        // the version check refuses it instead
        let err = first.flush().await.unwrap_err();
        assert!(err.to_string().contains("another writer"), "{err}");
        // and it stays refused: it never writes after another writer's commit
        let err = first.flush().await.unwrap_err();
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
        let fresh = LanceBucket::open(&uri, options()).await.unwrap();
        assert_eq!(fresh.read(0, 100).await.unwrap(), batch(0, 20));
    });
}

/// Injects one fault into the manifest put of chosen versions (a remote dataset has
/// no files of this disk to sync or write).
#[derive(Debug, Default)]
struct Faults(Mutex<HashMap<u64, ManifestFault>>);

impl Disk for Faults {
    fn sync_file(&self, path: &Path) -> std::io::Result<()> {
        panic!("a remote dataset fsyncs nothing ({})", path.display())
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        panic!("a remote dataset fsyncs nothing ({})", dir.display())
    }

    fn write_from(&self, path: &Path, _offset: u64, _bytes: &[u8]) -> std::io::Result<()> {
        panic!("a remote dataset writes no local file ({})", path.display())
    }

    fn write_at(&self, path: &Path, _offset: u64, _bytes: &[u8]) -> std::io::Result<()> {
        panic!("a remote dataset writes no local file ({})", path.display())
    }

    fn rename(&self, from: &Path, _to: &Path) -> std::io::Result<()> {
        panic!(
            "a remote dataset renames no local file ({})",
            from.display()
        )
    }

    fn manifest_fault(&self, version: u64) -> Option<ManifestFault> {
        self.0.lock().unwrap().remove(&version)
    }
}

fn a_commit_whose_put_fails_before_it_is_sent_or_loses_its_reply_loses_and_duplicates_nothing(
    store: Store,
) {
    rt().block_on(async {
        for fault in [ManifestFault::BeforeSent, ManifestFault::ReplyLost] {
            // version 1 creates the dataset, later ones append
            for version in [1, 2, 3] {
                let uri = store.uri();
                let faults = Arc::new(Faults::default());
                faults.0.lock().unwrap().insert(version, fault);
                let mut b = LanceBucket::open_on(&uri, options(), faults.clone())
                    .await
                    .unwrap();
                let mut failed = 0;
                for k in 0..4 {
                    b.put_batch(batch(k * 10, 10)).unwrap();
                    if let Err(e) = b.flush().await {
                        assert!(e.to_string().contains("injected"), "{e}");
                        failed += 1;
                        // the retry finds out what landed: appended once, either way
                        b.flush().await.unwrap();
                    }
                    assert_eq!(
                        b.persisted_count(),
                        (k as u64 + 1) * 10,
                        "{fault:?} at v{version}"
                    );
                }
                // a lost reply Lance settles itself: it reads the manifest back and
                // finds its own transaction there (the commit then succeeds)
                let expected = match fault {
                    ManifestFault::BeforeSent => 1,
                    ManifestFault::ReplyLost => 0,
                };
                assert_eq!(failed, expected, "{fault:?} at v{version}");
                assert!(faults.0.lock().unwrap().is_empty());
                assert_eq!(b.read(0, 100).await.unwrap(), batch(0, 40));
                drop(b);
                let fresh = LanceBucket::open(&uri, options()).await.unwrap();
                assert_eq!(
                    fresh.read(0, 100).await.unwrap(),
                    batch(0, 40),
                    "{fault:?} at v{version}: dense, each record once"
                );
            }
        }
    });
}

fn a_flush_to_a_uri_costs_the_same_few_requests_whatever_its_size(store: Store) {
    rt().block_on(async {
        let uri = store.uri();
        let mut b = LanceBucket::open(&uri, options()).await.unwrap();
        // the first flush creates the dataset (and takes the lease)
        b.put_batch(batch(0, 10)).unwrap();
        b.flush().await.unwrap();
        let mut per_flush = Vec::new();
        let mut at = 10;
        for n in [10, 1000, 20_000] {
            let before = b.stats().store_calls;
            b.put_batch(batch(at, n)).unwrap();
            b.flush().await.unwrap();
            at += n;
            let after = b.stats().store_calls;
            per_flush.push((
                after.puts - before.puts,
                after.gets - before.gets,
                after.lists - before.lists,
                after.deletes - before.deletes,
            ));
        }
        eprintln!("store calls per flush (puts, gets, lists, deletes) for 10, 1000, 20000 records: {per_flush:?}");
        // a flush is a data file, a transaction file and a manifest, whatever it holds
        assert!(per_flush.iter().all(|c| c.0 == per_flush[0].0), "{per_flush:?}");
        assert!(per_flush[0].0 <= 4, "{per_flush:?}");
        assert_eq!(b.read(0, 100_000).await.unwrap().len(), at as usize);
    });
}

#[test]
fn a_flush_comes_due_once_the_oldest_unflushed_record_has_waited_the_interval() {
    rt().block_on(async {
        let opts = LanceOptions {
            flush_interval: Some(std::time::Duration::from_millis(100)),
            ..options()
        };
        let mut b = LanceBucket::open(&Store::Memory.uri(), opts).await.unwrap();
        assert!(!b.flush_due(None), "nothing buffered");
        b.put_batch(batch(0, 5)).unwrap();
        assert!(!b.flush_due(None), "just buffered");
        tokio::time::sleep(std::time::Duration::from_millis(120)).await;
        b.put_batch(batch(5, 5)).unwrap();
        assert!(
            b.flush_due(None),
            "the first record has waited the interval"
        );
        b.flush().await.unwrap();
        assert!(!b.flush_due(None), "flushed");
        b.put_batch(batch(10, 5)).unwrap();
        assert!(
            !b.flush_due(None),
            "the wait starts again with the next record"
        );
    });
}

#[test]
fn a_version_another_writer_took_after_an_unanswered_put_is_not_taken_for_this_writers() {
    rt().block_on(async {
        let uri = Store::Memory.uri();
        let faults = Arc::new(Faults::default());
        let mut first = LanceBucket::open_on(&uri, options(), faults.clone())
            .await
            .unwrap();
        first.put_batch(batch(0, 10)).unwrap();
        first.flush().await.unwrap();
        // the first writer's put of version 2 never reaches the store, and it cannot
        // tell: the version stays possibly its own
        faults
            .0
            .lock()
            .unwrap()
            .insert(2, ManifestFault::BeforeSent);
        first.put_batch(batch(10, 10)).unwrap();
        first.flush().await.unwrap_err();
        // meanwhile a second writer (the first one's lease gone behind its back)
        // commits version 2, with fewer rows than the first has buffered
        remove_lease(&uri).await;
        let mut second = LanceBucket::open(&uri, options()).await.unwrap();
        second.put_batch(batch(1000, 4)).unwrap();
        second.flush().await.unwrap();
        // the first writer finds version 2 is not the manifest it sent: it refuses,
        // rather than take those 4 rows for 4 of its own records and drop them
        let err = first.flush().await.unwrap_err();
        assert!(
            matches!(err, Error::CommittedByAnotherWriter { version: 2, .. }),
            "{err}"
        );
        assert_eq!(first.stats().buffered_count, 10, "nothing dropped");
        assert_eq!(first.persisted_count(), 10);
    });
}

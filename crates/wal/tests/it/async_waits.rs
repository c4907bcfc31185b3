//! Durability waits as futures: tasks of an async runtime appending under `Always`
//! share fsyncs, resolve only once durable, and fail when the log does.

use std::collections::BTreeMap;
use std::sync::Arc;

use persisting_wal::{CrashMode, Error, SyncPolicy, Wal, WalOptions};

use crate::{real, sim};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

fn always() -> WalOptions {
    WalOptions {
        sync: SyncPolicy::Always,
        ..WalOptions::default()
    }
}

/// `tasks` tasks append `each` entries each with `append_async`; returns what each
/// acknowledged, by LSN.
fn append_from_tasks(wal: &Arc<Wal>, tasks: usize, each: usize) -> BTreeMap<u64, Vec<u8>> {
    runtime().block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let wal = wal.clone();
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for i in 0..each {
                        let payload = format!("task {t} entry {i}").into_bytes();
                        let lsn = wal.append_async(&payload).await.unwrap();
                        acked.push((lsn, payload));
                    }
                    acked
                })
            })
            .collect();
        let mut acked = BTreeMap::new();
        for h in handles {
            for (lsn, payload) in h.await.unwrap() {
                assert!(
                    acked.insert(lsn, payload).is_none(),
                    "LSN {lsn} given twice"
                );
            }
        }
        acked
    })
}

#[test]
fn what_tasks_were_acknowledged_survives_a_crash() {
    let p = sim();
    let s = p.sim.clone().unwrap();
    let (wal, _) = Wal::open_with(p.fs.clone(), &p.dir, always()).unwrap();
    let wal = Arc::new(wal);
    let acked = append_from_tasks(&wal, 32, 10);
    assert_eq!(acked.len(), 320);
    assert_eq!(
        acked.keys().copied().collect::<Vec<_>>(),
        (0..320).collect::<Vec<_>>()
    );
    // nothing unsynced survives: what the tasks were told is durable must be
    s.crash(CrashMode::DropUnsynced, 3);
    drop(wal);
    let (wal, _) = Wal::open_with(p.fs.clone(), &p.dir, always()).unwrap();
    let got: BTreeMap<u64, Vec<u8>> = wal
        .read_from(0)
        .unwrap()
        .map(|e| e.map(|e| (e.lsn, e.payload)).unwrap())
        .collect();
    assert_eq!(got, acked);
}

#[test]
fn concurrent_tasks_share_fsyncs() {
    let p = real();
    let (wal, _) = Wal::open_with(p.fs.clone(), &p.dir, always()).unwrap();
    let wal = Arc::new(wal);
    let acked = append_from_tasks(&wal, 64, 8);
    let st = wal.stats();
    assert_eq!((acked.len(), st.entries_appended), (512, 512));
    // one fsync per entry would be 512; group commit covers many tasks per fsync
    assert!(st.fsyncs * 4 <= 512, "{} fsyncs for 512 entries", st.fsyncs);
    assert_eq!(st.durable_lsn, 512);
}

#[test]
fn a_wait_syncs_under_any_policy() {
    let p = sim();
    let s = p.sim.clone().unwrap();
    let os = WalOptions {
        sync: SyncPolicy::Os,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open_with(p.fs.clone(), &p.dir, os.clone()).unwrap();
    // under `Os` the append returns once written, not durable
    let lsns = runtime()
        .block_on(wal.append_batch_async(&[&b"a"[..], b"b", b"c"]))
        .unwrap();
    assert_eq!(lsns, 0..3);
    assert_eq!(wal.durable_lsn(), 0);
    let syncs = s.sync_count();
    runtime().block_on(wal.durable(3)).unwrap();
    assert!(s.sync_count() > syncs);
    assert_eq!(wal.durable_lsn(), 3);
    s.crash(CrashMode::DropUnsynced, 5);
    drop(wal);
    let (wal, _) = Wal::open_with(p.fs.clone(), &p.dir, os).unwrap();
    assert_eq!(wal.next_lsn(), 3);
}

#[test]
fn a_wait_past_the_end_of_the_log_is_refused() {
    let p = sim();
    let (wal, _) = Wal::open_with(p.fs.clone(), &p.dir, always()).unwrap();
    wal.append(b"one").unwrap();
    let rt = runtime();
    let err = rt.block_on(wal.durable(2)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LsnOutOfRange {
                requested: 2,
                next: 1,
                ..
            }
        ),
        "{err}"
    );
    rt.block_on(wal.durable(1)).unwrap();
    rt.block_on(wal.durable(0)).unwrap();
}

#[test]
fn a_failed_fsync_fails_the_waiting_tasks_and_every_later_wait() {
    let p = sim();
    let s = p.sim.clone().unwrap();
    let (wal, _) = Wal::open_with(p.fs.clone(), &p.dir, always()).unwrap();
    let rt = runtime();
    rt.block_on(wal.append_async(b"acknowledged")).unwrap();
    s.fail_next_sync();
    let err = rt.block_on(wal.append_async(b"lost")).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("fsync"), "{err}");
    let err = rt.block_on(wal.durable(2)).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(matches!(
        rt.block_on(wal.append_async(b"x")),
        Err(Error::Poisoned { .. })
    ));
}

#[test]
fn a_wait_pending_when_the_log_closes_resolves_with_the_closing_sync() {
    let p = sim();
    let os = WalOptions {
        sync: SyncPolicy::Os,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open_with(p.fs.clone(), &p.dir, os).unwrap();
    wal.append(b"written, not synced").unwrap();
    let wait = wal.durable(1);
    // the wait is made before the log goes away; the close syncs what was written
    wal.close().unwrap();
    runtime().block_on(wait).unwrap();
}

//! Injected faults: a failed fsync poisons the log; a failed write (ENOSPC) returns an
//! error and leaves the log recoverable up to the last acknowledged entry.

use persisting_wal::{CrashMode, Error, SyncPolicy, Wal, WalOptions};

use crate::sim;

#[test]
fn failed_fsync_poisons_until_reopened() {
    let p = sim();
    let s = p.sim.clone().unwrap();
    let (wal, _) = Wal::open_with(p.fs.clone(), &p.dir, WalOptions::default()).unwrap();
    wal.append(b"acknowledged").unwrap();
    s.fail_next_sync();
    let err = wal.append(b"never acknowledged").unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("fsync"), "{err}");
    // every later call fails too, even though the next fsync would succeed
    assert!(matches!(wal.append(b"x"), Err(Error::Poisoned { .. })));
    assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
    assert!(wal.stats().poisoned);
    s.crash(CrashMode::DropUnsynced, 1);
    drop(wal);
    let (wal, _) = Wal::open_with(p.fs.clone(), &p.dir, WalOptions::default()).unwrap();
    let got: Vec<_> = wal
        .read_from(0)
        .unwrap()
        .map(|e| e.unwrap().payload)
        .collect();
    assert_eq!(got[0], b"acknowledged");
    assert!(got.len() <= 2);
    wal.append(b"works again").unwrap();
}

#[test]
fn enospc_under_always_poisons_and_loses_nothing_acknowledged() {
    let p = sim();
    let s = p.sim.clone().unwrap();
    let (wal, _) = Wal::open_with(p.fs.clone(), &p.dir, WalOptions::default()).unwrap();
    wal.append(b"one").unwrap();
    s.set_write_budget(Some(10));
    let err = wal.append(&[7u8; 100]).unwrap_err();
    assert!(err.to_string().contains("no space left"), "{err}");
    assert!(matches!(wal.append(b"x"), Err(Error::Poisoned { .. })));
    s.set_write_budget(None);
    s.crash(CrashMode::KeepPrefix, 9);
    drop(wal);
    let (wal, _) = Wal::open_with(p.fs.clone(), &p.dir, WalOptions::default()).unwrap();
    let got: Vec<_> = wal
        .read_from(0)
        .unwrap()
        .map(|e| e.unwrap().payload)
        .collect();
    assert_eq!(got, [b"one".to_vec()]);
}

#[test]
fn enospc_mid_frame_is_undone_and_the_log_goes_on() {
    for sync in [
        SyncPolicy::Os,
        SyncPolicy::Interval(std::time::Duration::from_secs(3600)),
    ] {
        let p = sim();
        let s = p.sim.clone().unwrap();
        let opts = WalOptions {
            sync,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open_with(p.fs.clone(), &p.dir, opts.clone()).unwrap();
        wal.append(b"one").unwrap();
        s.set_write_budget(Some(10));
        let err = wal.append(&[7u8; 100]).unwrap_err();
        assert!(err.to_string().contains("no space left"), "{err}");
        assert_eq!(wal.next_lsn(), 1, "a failed append takes no LSN");
        s.set_write_budget(None);
        assert_eq!(wal.append(b"two").unwrap(), 1);
        wal.sync().unwrap();
        s.crash(CrashMode::DropUnsynced, 2);
        drop(wal);
        let (wal, report) = Wal::open_with(p.fs.clone(), &p.dir, opts).unwrap();
        assert!(report.torn_tail.is_none(), "{report:?}");
        let got: Vec<_> = wal
            .read_from(0)
            .unwrap()
            .map(|e| e.unwrap().payload)
            .collect();
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    }
}

#[test]
fn failed_rotation_poisons_and_loses_nothing_acknowledged() {
    let p = sim();
    let s = p.sim.clone().unwrap();
    let opts = WalOptions {
        segment_bytes_max: 4096,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open_with(p.fs.clone(), &p.dir, opts.clone()).unwrap();
    let mut acked = 0;
    s.set_write_budget(Some(6000));
    for _ in 0..100 {
        match wal.append(&[1u8; 200]) {
            Ok(_) => acked += 1,
            Err(_) => break,
        }
    }
    assert!(acked > 0 && acked < 100);
    s.crash(CrashMode::DropUnsynced, 3);
    drop(wal);
    let (wal, _) = Wal::open_with(p.fs.clone(), &p.dir, opts).unwrap();
    assert!(wal.next_lsn() >= acked);
}

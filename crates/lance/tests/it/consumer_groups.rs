//! Consumer group offsets ([`Groups`]): commits, seeks, deletes and listings on a
//! local disk, on Lance's in-memory object store and on the S3 server; refusals; two
//! committers racing; damage; power loss on the simulated disk.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use persisting_lance::{COMPACT_AT, Error, GROUPS_DIR, Groups, SimCrash, SimDisk};

use crate::remote::{Store, s3_configured};
use crate::rt;

/// Where a test's groups live.
#[derive(Debug, Clone, Copy)]
enum At {
    Local,
    Remote(Store),
}

/// The bucket a test's groups belong to: `dir`, or a new URI on the store.
fn location(at: At, dir: &Path) -> String {
    match at {
        At::Local => dir.to_string_lossy().into_owned(),
        At::Remote(store) => store.uri(),
    }
}

/// A handle of the groups at `location` (each its own open file or store client).
async fn handle(location: &str) -> Groups {
    Groups::open(location, &HashMap::new()).await.unwrap()
}

async fn open(at: At, dir: &Path) -> Groups {
    handle(&location(at, dir)).await
}

macro_rules! everywhere {
    ($($name:ident),* $(,)?) => {
        mod on_local_disk {
            $(#[test]
            fn $name() {
                super::$name(super::At::Local)
            })*
        }
        mod on_memory {
            $(#[test]
            fn $name() {
                super::$name(super::At::Remote(crate::remote::Store::Memory))
            })*
        }
        mod on_s3 {
            $(#[test]
            fn $name() {
                if super::s3_configured() {
                    super::$name(super::At::Remote(crate::remote::Store::S3))
                }
            })*
        }
    };
}

everywhere!(
    commit_seek_delete_and_list,
    refusals_name_the_group_and_both_offsets_and_write_nothing,
    two_committers_racing_lose_no_commit,
    a_second_handle_sees_every_commit,
);

fn commit_seek_delete_and_list(at: At) {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let g = open(at, dir.path()).await;
        assert_eq!(g.committed("etl").await.unwrap(), None);
        assert!(g.list().await.unwrap().is_empty());
        let c = g.commit("etl", 10, 100).await.unwrap();
        assert_eq!((c.offset, c.generation), (10, 1));
        let c = g.commit("etl", 10, 100).await.unwrap(); // the same offset again: fine
        assert_eq!((c.offset, c.generation), (10, 2));
        g.commit("etl", 100, 100).await.unwrap(); // up to the end itself
        g.commit("trainer", 3, 100).await.unwrap();
        let listed: Vec<_> = g
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.group, c.offset))
            .collect();
        assert_eq!(listed, vec![("etl".into(), 100), ("trainer".into(), 3)]);
        let back = g.seek("etl", 5, 100).await.unwrap();
        assert_eq!(back.offset, 5);
        assert_eq!(g.committed("etl").await.unwrap(), Some(back));
        assert!(g.delete("etl").await.unwrap());
        assert!(!g.delete("etl").await.unwrap());
        assert_eq!(g.committed("etl").await.unwrap(), None);
        assert_eq!(g.list().await.unwrap().len(), 1);
        // a deleted group starts again
        assert_eq!(g.commit("etl", 1, 100).await.unwrap().generation, 1);
    });
}

fn refusals_name_the_group_and_both_offsets_and_write_nothing(at: At) {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let g = open(at, dir.path()).await;
        let seen = g.commit("etl", 50, 100).await.unwrap();
        let e = g.commit("etl", 40, 100).await.unwrap_err();
        assert!(matches!(
            e,
            Error::GroupBackwards {
                committed: 50,
                requested: 40,
                ..
            }
        ));
        let text = e.to_string();
        assert!(
            text.contains("\"etl\"") && text.contains("50") && text.contains("40"),
            "{text}"
        );
        let e = g.commit("etl", 101, 100).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::GroupPastEnd {
                    end: 100,
                    requested: 101,
                    ..
                }
            ),
            "{e}"
        );
        let e = g.seek("etl", 101, 100).await.unwrap_err();
        assert!(matches!(e, Error::GroupPastEnd { .. }), "{e}");
        // a commit made from a stale read
        g.commit("etl", 60, 100).await.unwrap();
        let e = g
            .commit_from("etl", Some(&seen), 70, 100)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::GroupConflict {
                    seen: Some(50),
                    found: Some(60),
                    requested: 70,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("moved it to offset 60"), "{e}");
        let e = g.commit_from("new", Some(&seen), 1, 100).await.unwrap_err();
        assert!(matches!(e, Error::GroupConflict { found: None, .. }), "{e}");
        for bad in ["", "..", "a/b", "x.tmp"] {
            let e = g.commit(bad, 1, 100).await.unwrap_err();
            assert!(matches!(e, Error::InvalidGroup { .. }), "{bad:?}: {e}");
        }
        // nothing of a refusal was written
        let now = g.committed("etl").await.unwrap().unwrap();
        assert_eq!((now.offset, now.generation), (60, 2));
        assert_eq!(g.committed("new").await.unwrap(), None);
    });
}

/// Two committers of one group, each with its own handle (two open files, so two
/// `flock`s; or two clients of the store), each adding 1 to the committed offset
/// from what it read, retrying when refused as stale: every increment lands once.
fn two_committers_racing_lose_no_commit(at: At) {
    let dir = tempfile::tempdir().unwrap();
    let per_committer = match at {
        At::Remote(Store::S3) => 15,
        _ => 40,
    };
    let remote = matches!(at, At::Remote(_));
    let at = location(at, dir.path());
    rt().block_on(async {
        let uri_groups = handle(&at).await;
        let mut tasks = Vec::new();
        // two handles (two open files, two store clients), and a third task sharing
        // the first's handle
        let shared = handle(&at).await;
        for k in 0..3 {
            let g = match k {
                0 | 2 => shared.clone(),
                _ => handle(&at).await,
            };
            tasks.push(tokio::spawn(async move {
                let mut refused = 0;
                for _ in 0..per_committer {
                    loop {
                        let seen = g.committed("g").await.unwrap();
                        let next = seen.as_ref().map_or(0, |s| s.offset) + 1;
                        match g.commit_from("g", seen.as_ref(), next, u64::MAX).await {
                            Ok(_) => break,
                            Err(Error::GroupConflict { .. }) => refused += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                refused
            }));
        }
        let mut refused = 0;
        for t in tasks {
            refused += t.await.unwrap();
        }
        let last = uri_groups.committed("g").await.unwrap().unwrap();
        // every change is one increment, and none that returned Ok is lost
        assert_eq!(last.generation, last.offset);
        assert!(last.offset >= 3 * per_committer, "{last:?}");
        if remote {
            // on a store, a committer held up while others made the kept number of
            // changes cannot tell its landed put from a stale one: it is refused
            // (and retried here), never believed wrongly
            assert!(
                last.offset <= 3 * per_committer + refused,
                "{last:?}, {refused} refused"
            );
        } else {
            assert_eq!(last.offset, 3 * per_committer);
        }
    });
}

fn a_second_handle_sees_every_commit(at: At) {
    let dir = tempfile::tempdir().unwrap();
    let at = location(at, dir.path());
    rt().block_on(async {
        let a = handle(&at).await;
        let b = handle(&at).await;
        for i in 1..=20u64 {
            a.commit("g", i, 100).await.unwrap();
            assert_eq!(b.committed("g").await.unwrap().unwrap().offset, i);
        }
        b.commit("g", 30, 100).await.unwrap();
        assert!(matches!(
            a.commit("g", 25, 100).await.unwrap_err(),
            Error::GroupBackwards { committed: 30, .. }
        ));
    });
}

#[test]
fn a_group_file_is_rewritten_once_it_holds_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let g = open(At::Local, dir.path()).await;
        for i in 0..(3 * COMPACT_AT as u64) {
            g.commit("g", i, u64::MAX).await.unwrap();
        }
        let file = dir.path().join(GROUPS_DIR).join("g.offsets");
        let len = std::fs::metadata(&file).unwrap().len();
        assert!(len <= 40 * COMPACT_AT as u64, "{len} bytes");
        let last = g.committed("g").await.unwrap().unwrap();
        assert_eq!(
            (last.offset, last.generation),
            (3 * COMPACT_AT as u64 - 1, 3 * COMPACT_AT as u64)
        );
        assert!(!dir.path().join(GROUPS_DIR).join("g.offsets.tmp").exists());
    });
}

#[test]
fn a_damaged_group_file_is_an_error_naming_it_never_an_offset() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let g = open(At::Local, dir.path()).await;
        for i in [10, 20, 30] {
            g.commit("g", i, 100).await.unwrap();
        }
        let file = dir.path().join(GROUPS_DIR).join("g.offsets");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[16] ^= 0x01; // the first record's offset
        std::fs::write(&file, &bytes).unwrap();
        let e = g.committed("g").await.unwrap_err();
        assert!(matches!(e, Error::GroupDamaged { .. }), "{e}");
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        // a commit refuses too, and writes nothing
        assert!(g.commit("g", 40, 100).await.is_err());
        assert_eq!(std::fs::read(&file).unwrap(), bytes);
        // listing names it as well
        assert!(g.list().await.is_err());
        // deleting is how a damaged group is dropped
        assert!(g.delete("g").await.unwrap());
        assert_eq!(g.committed("g").await.unwrap(), None);
    });
}

#[test]
fn a_torn_last_record_is_the_commit_that_was_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let g = open(At::Local, dir.path()).await;
        g.commit("g", 10, 100).await.unwrap();
        g.commit("g", 20, 100).await.unwrap();
        let file = dir.path().join(GROUPS_DIR).join("g.offsets");
        // a third commit cut short by a crash: part of a record where it goes
        let mut bytes = std::fs::read(&file).unwrap();
        let size = bytes.len();
        bytes.copy_within(40..65, 80);
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(g.committed("g").await.unwrap().unwrap().offset, 20);
        // the next commit replaces the torn one, in place
        g.commit("g", 30, 100).await.unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().len() as usize, size);
        assert_eq!(g.committed("g").await.unwrap().unwrap().offset, 30);
        // a crash that cut the file short (its zeros gone): the next commit restores them
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..130]).unwrap();
        assert_eq!(g.committed("g").await.unwrap().unwrap().offset, 30);
        g.commit("g", 40, 100).await.unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().len() as usize, size);
        assert_eq!(g.committed("g").await.unwrap().unwrap().offset, 40);
    });
}

/// Commits on the simulated disk, then a power loss of each kind: every commit that
/// returned is there after it, and nothing later than the last one.
#[test]
fn a_power_loss_keeps_every_acknowledged_commit() {
    for seed in 0..24u64 {
        let dir = tempfile::tempdir().unwrap();
        let disk = SimDisk::new(dir.path());
        let mode = [
            SimCrash::DropUnsynced,
            SimCrash::KeepPrefix,
            SimCrash::TearLastWrite,
        ][(seed % 3) as usize];
        let commits = 1 + seed * 7 % (2 * COMPACT_AT as u64);
        rt().block_on(async {
            let g = Groups::open_on(dir.path(), &HashMap::new(), Arc::new(disk.clone()))
                .await
                .unwrap();
            for i in 1..=commits {
                g.commit("g", i, u64::MAX).await.unwrap();
            }
            g.commit("other", 5, u64::MAX).await.unwrap();
        });
        disk.crash(mode, seed).unwrap();
        disk.power_on();
        rt().block_on(async {
            let g = Groups::open(dir.path(), &HashMap::new()).await.unwrap();
            let got = g.committed("g").await.unwrap().map(|c| c.offset);
            assert_eq!(got, Some(commits), "seed {seed}, {mode:?}");
            assert_eq!(g.committed("other").await.unwrap().unwrap().offset, 5);
        });
    }
}

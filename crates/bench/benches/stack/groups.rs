//! The consumer group rows: commits of a group against the WAL's append and the raw
//! system calls of a commit, and drains with commits.

use super::*;

/// Commits/s of one consumer group, one committer after another, for `secs`: each a
/// durable (fsynced) write of the group's file.
pub(crate) async fn group_commits(dir: &Path, secs: f64) -> f64 {
    let g = persisting::lance::Groups::open(dir, &Default::default())
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        n += 1;
        g.commit("bench", n, u64::MAX).await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Appends/s of one writer to the WAL alone, `Always` (fsync before each returns),
/// for `secs`: a payload the size of a group record.
pub(crate) fn wal_1(dir: &Path, secs: f64) -> f64 {
    let wal = wal_always(dir);
    let payload = [7u8; 40];
    let start = std::time::Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        wal.append(&payload).unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Ops/s of the system calls a cross-process group commit cannot do without, on one
/// descriptor kept open, for `secs`: `flock`, `fstat` and `stat` (is the file still the
/// group's), `pread` of the 5 KB file, `pwrite` of 40 bytes into it, `fdatasync`,
/// unlock. With `bare`, only the `pwrite` and `fdatasync` (a WAL append's bound).
pub(crate) fn raw_commits(dir: &Path, secs: f64, bare: bool) -> f64 {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let path = dir.join(if bare { "bare" } else { "locked" });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, vec![0u8; 5120]).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.sync_all().unwrap();
    let mut buf = vec![0u8; 5120];
    let start = std::time::Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        if !bare {
            file.lock().unwrap();
            let same = file.metadata().unwrap().ino() == std::fs::metadata(&path).unwrap().ino();
            assert!(same);
            file.read_at(&mut buf, 0).unwrap();
        }
        file.write_all_at(&[7u8; 40], (n % 128) * 40).unwrap();
        file.sync_data().unwrap();
        if !bare {
            file.unlock().unwrap();
        }
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Records/s of a consumer draining `b` in reads of `read` records, committing its
/// group after each read when `commit`.
pub(crate) async fn drain(b: &PersistingBackend, read: usize, commit: Option<&str>) -> f64 {
    let start = std::time::Instant::now();
    let mut offset = 0u64;
    loop {
        let got = b.get(offset, Some(read)).await.unwrap();
        if got.is_empty() {
            break;
        }
        offset += got.len() as u64;
        if let Some(group) = commit {
            b.commit_offset(group, offset).await.unwrap();
        }
    }
    offset as f64 / start.elapsed().as_secs_f64()
}

/// The consumer group rows: commit cost against the WAL's own durable append, and a
/// drain with a commit after each read against the same drain without.
pub(crate) async fn groups_rows(root: &Path) {
    let secs = 3.0;
    let (mut commits, mut appends) = (0.0f64, 0.0f64);
    for round in 0..2 {
        settle();
        commits = commits.max(group_commits(&root.join(format!("groups-{round}")), secs).await);
        settle();
        let d = root.join(format!("wal1-{round}"));
        appends = appends.max(
            tokio::task::spawn_blocking(move || wal_1(&d, secs))
                .await
                .unwrap(),
        );
    }
    row(
        "groups",
        "commits of one group (fdatasynced) vs the WAL's 1-writer Always append, same disk",
        commits,
        appends,
        "ops/s",
        commits / appends,
        ">=0.8",
    );
    // the bound of a cross-process commit here: its system calls alone, against a
    // bare pwrite + fdatasync (alternated, best of two each)
    let (mut locked, mut bare) = (0.0f64, 0.0f64);
    for round in 0..2 {
        let d = root.join(format!("raw-{round}"));
        settle();
        locked = locked.max(raw_commits(&d, secs, false));
        settle();
        bare = bare.max(raw_commits(&d, secs, true));
    }
    row(
        "groups",
        "bound: flock + stat + pread + pwrite + fdatasync vs pwrite + fdatasync (raw system calls, one descriptor)",
        locked,
        bare,
        "ops/s",
        locked / bare,
        "-",
    );
    row(
        "groups",
        "commits of one group vs that bound (the raw system calls of a commit)",
        commits,
        locked,
        "ops/s",
        commits / locked,
        "-",
    );

    let n = rows_big().min(1_000_000);
    let dir = root.join("drain");
    let opts = PersistingOptions {
        flush_threshold: 100_000_000,
        ..PersistingOptions::default()
    };
    let b = PersistingBackend::open(0, &dir, opts).await.unwrap();
    for start in (0..n).step_by(10_000) {
        let batch = (start..(start + 10_000).min(n)).map(record).collect();
        b.put_batch(batch).await.unwrap();
        if (start / 10_000) % 10 == 9 {
            b.flush().await.unwrap();
        }
    }
    b.flush().await.unwrap();
    let (mut with, mut without) = (0.0f64, 0.0f64);
    for round in 0..2 {
        without = without.max(drain(&b, 10_000, None).await);
        with = with.max(drain(&b, 10_000, Some(&format!("drain-{round}"))).await);
    }
    row(
        "groups",
        &format!("drain {n} records, reads of 10^4 + a commit each vs the same reads alone"),
        with,
        without,
        "records/s",
        with / without,
        ">=0.9",
    );
    b.close().await.unwrap();
}

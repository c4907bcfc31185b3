//! The WAL against the physical baselines and against okaywal, in one process, on the
//! same disk, printing ratios:
//!
//! - `Os` policy, 16 KiB payloads vs a raw sequential `write` loop (MB/s);
//! - `Always`, 1 writer, 200-byte payloads vs a raw `write` + `fdatasync` loop;
//! - `Always`, 64 writers vs its own 1-writer entries/s (group commit), as 64 threads
//!   calling `append` and as 64 tasks of a Tokio runtime awaiting `append_async`
//!   (writers that hold no thread while they wait);
//! - okaywal (commit = durable) at 1 and 64 writers, same payloads.
//!
//! Runs alternate in 5 rounds; each figure is the median of its rounds.
//!
//! `cargo bench -p persisting-wal --bench compare`. `PERSISTING_BENCH_SECS` sets each
//! timed run's length (default 3), `PERSISTING_BENCH_DIR` the directory (default: the
//! target directory's disk). `PERSISTING_BENCH_WRITERS=N` runs only the `Always` run
//! of N writers, once (for profiling and A/B runs of two builds);
//! `PERSISTING_BENCH_TASKS=N` the same for N writer tasks, `PERSISTING_BENCH_OKAYWAL=N`
//! for okaywal with N writers.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use persisting_wal::{SyncPolicy, Wal, WalOptions};

fn secs() -> Duration {
    let s = std::env::var("PERSISTING_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(s)
}

fn scratch() -> tempfile::TempDir {
    let base: PathBuf = std::env::var_os("PERSISTING_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// Flushes dirty pages of earlier runs so they do not slow the next one.
fn settle() {
    let _ = std::process::Command::new("sync").status();
}

/// Runs `op` on `threads` threads for the configured time; returns operations/s.
fn run_threads(threads: usize, op: impl Fn(u64) + Sync) -> f64 {
    let stop = AtomicBool::new(false);
    let count = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (stop, count, op) = (&stop, &count, &op);
            s.spawn(move || {
                let mut i = t as u64;
                while !stop.load(Ordering::Relaxed) {
                    op(i);
                    i += threads as u64;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(secs());
        stop.store(true, Ordering::Relaxed);
    });
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

const STREAM_BYTES: usize = 256 << 20;
const BIG: usize = 16 << 10;
const SMALL: usize = 200;
/// Rounds of alternated runs; each measurement is the median of its rounds.
const ROUNDS: usize = 5;

fn raw_write_mb_s(dir: &Path) -> f64 {
    let buf = vec![0xabu8; BIG];
    let mut f = File::create(dir.join("raw.bin")).unwrap();
    let start = Instant::now();
    for _ in 0..STREAM_BYTES / BIG {
        f.write_all(&buf).unwrap();
    }
    STREAM_BYTES as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn wal_os_mb_s(dir: &Path) -> f64 {
    let buf = vec![0xabu8; BIG];
    let opts = WalOptions {
        sync: SyncPolicy::Os,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir.join("wal"), opts).unwrap();
    let start = Instant::now();
    for _ in 0..STREAM_BYTES / BIG {
        wal.append(&buf).unwrap();
    }
    let mb_s = STREAM_BYTES as f64 / start.elapsed().as_secs_f64() / 1e6;
    drop(wal);
    mb_s
}

fn raw_fdatasync_per_s(dir: &Path) -> f64 {
    let buf = [7u8; SMALL];
    let f = std::sync::Mutex::new(File::create(dir.join("raw-sync.bin")).unwrap());
    run_threads(1, |_| {
        let mut f = f.lock().unwrap();
        f.write_all(&buf).unwrap();
        f.sync_data().unwrap();
    })
}

/// An `Always` log in `dir`, and the total time its fsyncs took so far (ns).
fn always_log(dir: PathBuf) -> (Wal, Arc<AtomicU64>) {
    let fsync_ns = Arc::new(AtomicU64::new(0));
    let sum = fsync_ns.clone();
    let opts = WalOptions {
        sync: SyncPolicy::Always,
        on_fsync: Some(persisting_wal::FsyncObserver::new(move |d| {
            sum.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
        })),
        ..WalOptions::default()
    };
    (Wal::open(dir, opts).unwrap().0, fsync_ns)
}

/// Prints how `wal`'s entries and fsyncs went in a run of `secs` that kept `cores`.
fn print_run(who: &str, wal: &Wal, fsync_ns: &AtomicU64, cores: f64) {
    let st = wal.stats();
    println!(
        "  {who}: {} entries, {} fsyncs, {:.1} entries per fsync, {:.0} us per write+fsync, {cores:.2} cores busy",
        st.entries_appended,
        st.fsyncs,
        st.entries_appended as f64 / st.fsyncs.max(1) as f64,
        fsync_ns.load(Ordering::Relaxed) as f64 / 1e3 / st.fsyncs.max(1) as f64
    );
}

fn wal_always_per_s(dir: &Path, threads: usize) -> f64 {
    let (wal, fsync_ns) = always_log(dir.join(format!("wal-{threads}")));
    let buf = [7u8; SMALL];
    let c0 = cpu();
    let rate = run_threads(threads, |_| {
        wal.append(&buf).unwrap();
    });
    let cores = (cpu() - c0) / secs().as_secs_f64();
    print_run(&format!("{threads} writer(s)"), &wal, &fsync_ns, cores);
    rate
}

/// `Always` entries/s of `tasks` concurrent tasks appending with `append_async` on a
/// multi-threaded Tokio runtime of one worker thread per core: writers that wait for
/// durability without holding a thread each.
fn wal_tasks_per_s(dir: &Path, tasks: usize) -> f64 {
    let (wal, fsync_ns) = always_log(dir.join(format!("wal-tasks-{tasks}")));
    let wal = Arc::new(wal);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let c0 = cpu();
    let start = Instant::now();
    rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (wal, stop, count) = (wal.clone(), stop.clone(), count.clone());
                tokio::spawn(async move {
                    let buf = [7u8; SMALL];
                    while !stop.load(Ordering::Relaxed) {
                        wal.append_async(&buf).await.unwrap();
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        tokio::time::sleep(secs()).await;
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.await.unwrap();
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let cores = (cpu() - c0) / elapsed;
    print_run(&format!("{tasks} task(s)"), &wal, &fsync_ns, cores);
    count.load(Ordering::Relaxed) as f64 / elapsed
}

/// One measurement: entries/s in a directory with a number of writers or tasks.
type Measure = fn(&Path, usize) -> f64;

/// CPU seconds this process has used (user + system; Linux).
fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn okaywal_per_s(dir: &Path, threads: usize) -> f64 {
    let log =
        okaywal::WriteAheadLog::recover(dir.join(format!("okaywal-{threads}")), okaywal::LogVoid)
            .unwrap();
    let buf = [7u8; SMALL];
    let rate = run_threads(threads, |_| {
        let mut entry = log.begin_entry().unwrap();
        entry.write_chunk(&buf).unwrap();
        entry.commit().unwrap();
    });
    log.shutdown().unwrap();
    rate
}

/// The median of the rounds' figures of one measurement.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --all-targets` smoke run: nothing to time
    }
    let tmp = scratch();
    let dir = tmp.path();
    // one measurement only, for profiling and A/B runs of two builds
    let single: [(&str, Measure); 3] = [
        ("PERSISTING_BENCH_WRITERS", wal_always_per_s),
        ("PERSISTING_BENCH_OKAYWAL", okaywal_per_s),
        ("PERSISTING_BENCH_TASKS", wal_tasks_per_s),
    ];
    for (var, measure) in single {
        if let Ok(n) = std::env::var(var) {
            let n: usize = n
                .parse()
                .map_err(|e| format!("{var} takes a number of writers or tasks: {e}"))
                .unwrap();
            println!("entries/s: {:.0}", measure(dir, n));
            return;
        }
    }
    println!(
        "WAL comparison, {} s per timed run, in {}",
        secs().as_secs_f64(),
        dir.display()
    );

    // Write and fsync speed on this disk drift by up to 2x within a minute: the runs
    // alternate, in rounds, and each measurement is the median of its rounds (the
    // same rule for ours and for the baselines; every round is printed).
    let (mut raw_mb, mut wal_mb) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        settle();
        let d = tempfile::tempdir_in(dir).unwrap();
        raw_mb.push(raw_write_mb_s(d.path()));
        settle();
        wal_mb.push(wal_os_mb_s(d.path()));
    }
    println!("Os MB/s by round: raw {raw_mb:.0?}, ours {wal_mb:.0?}");
    let (raw_mb, wal_mb) = (median(raw_mb), median(wal_mb));
    let mut rounds: Vec<[f64; 6]> = Vec::new();
    for round in 0..ROUNDS {
        settle();
        let d = tempfile::tempdir_in(dir).unwrap();
        let d = d.path();
        println!("round {}", round + 1);
        let r = [
            raw_fdatasync_per_s(d),
            wal_always_per_s(d, 1),
            okaywal_per_s(d, 1),
            wal_always_per_s(d, 64),
            okaywal_per_s(d, 64),
            wal_tasks_per_s(d, 64),
        ];
        println!(
            "  entries/s: raw fdatasync {:.0}, ours 1w {:.0}, okaywal 1w {:.0}, ours 64w {:.0}, okaywal 64w {:.0}, ours 64 tasks {:.0}",
            r[0], r[1], r[2], r[3], r[4], r[5]
        );
        rounds.push(r);
    }
    let of = |i: usize| median(rounds.iter().map(|r| r[i]).collect());
    let (raw_sync, wal_1, okay_1, wal_64, okay_64) = (of(0), of(1), of(2), of(3), of(4));
    let tasks_64 = of(5);

    println!();
    println!("| measurement | persisting-wal | baseline | ratio | floor |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| Os, 16 KiB, MB/s vs raw write loop | {wal_mb:.0} | {raw_mb:.0} | {:.2}x | 0.7x |",
        wal_mb / raw_mb
    );
    println!(
        "| Always, 1 writer, 200 B, entries/s vs raw write+fdatasync | {wal_1:.0} | {raw_sync:.0} | {:.2}x | 0.8x |",
        wal_1 / raw_sync
    );
    println!(
        "| Always, 64 writer tasks (append_async) vs own 1 writer, entries/s | {tasks_64:.0} | {wal_1:.0} | {:.1}x | 20x |",
        tasks_64 / wal_1
    );
    println!(
        "| Always, 64 writer threads (append) vs own 1 writer, entries/s | {wal_64:.0} | {wal_1:.0} | {:.1}x | - |",
        wal_64 / wal_1
    );
    println!(
        "| vs okaywal, 1 writer, entries/s | {wal_1:.0} | {okay_1:.0} | {:.2}x | >1x |",
        wal_1 / okay_1
    );
    println!(
        "| vs okaywal, 64 writers, entries/s | {wal_64:.0} | {okay_64:.0} | {:.2}x | >1x |",
        wal_64 / okay_64
    );
    // rows for `cargo xtask bench`
    let row = |m: &str, ours: f64, base: f64, unit: &str, floor: &str| {
        println!(
            "BENCH-ROW|wal|{m}|{ours}|{base}|{unit}|{}|{floor}",
            ours / base
        );
    };
    row(
        "Os, 16 KiB payloads vs raw write loop",
        wal_mb,
        raw_mb,
        "MB/s",
        ">=0.7",
    );
    row(
        "Always, 1 writer, 200 B vs raw write+fdatasync",
        wal_1,
        raw_sync,
        "entries/s",
        ">=0.8",
    );
    row(
        "Always, 64 writer tasks (append_async) vs own 1 writer (append)",
        tasks_64,
        wal_1,
        "entries/s",
        ">=20",
    );
    row(
        "Always, 64 writer threads (append) vs own 1 writer",
        wal_64,
        wal_1,
        "entries/s",
        "-",
    );
    row(
        "Always, 1 writer vs okaywal",
        wal_1,
        okay_1,
        "entries/s",
        ">=1",
    );
    row(
        "Always, 64 writers vs okaywal",
        wal_64,
        okay_64,
        "entries/s",
        ">=1",
    );
}

//! The whole-stack benchmark: Lance ingest and reads against raw Lance and pylance,
//! the facade against the WAL alone and the Lance layer, and put-to-reader latency.
//!
//! Run with `cargo xtask bench` (all benchmarks, one table) or
//! `cargo bench -p persisting-bench --bench stack`. `PERSISTING_BENCH_ROWS` sets the
//! big dataset's size (default 10^7); `PERSISTING_BENCH_DIR` where data goes (default
//! the temporary directory); the pylance rows need the venv of `scripts/setup.sh`.
//! Every ratio's two sides run in this process (or, for pylance, in a child process
//! started by it) on the same disk.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::{RecordBatch, RecordBatchIterator};
use futures::{StreamExt, TryStreamExt};
use lance::Dataset;
use lance::dataset::{WriteMode, WriteParams};
use persisting::lance::{Cell, LanceBucket, LanceOptions, Row};
use persisting::outage::{Outage, Relay};
use persisting::wal::{SyncPolicy, Wal, WalOptions};
use persisting::{
    LanceBackend, PersistingBackend, PersistingOptions, Record, StorageBackend, Value, codec,
};
use persisting_bench::{row_bench, text_of};

mod facade;
mod groups;
mod lance_layer;
mod on_s3;
mod outage;
mod retention;

use facade::*;
use groups::*;
use lance_layer::*;
use on_s3::*;
use outage::*;

const BATCH: u64 = 10_000;
/// Records per automatic flush (one Lance commit) in the ingest runs, and rows per
/// raw append: the same commit size on both sides.
const INGEST_FLUSH: u64 = 100_000;
const SMALL: u64 = 100_000;
const READS: usize = 300;

fn rows_big() -> u64 {
    std::env::var("PERSISTING_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

fn scratch() -> tempfile::TempDir {
    let base = std::env::var_os("PERSISTING_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// The realistic record: id, user, int, float, 100-byte text.
fn record(i: u64) -> Record {
    let mut r = Record::with_capacity(5);
    r.insert("id", Value::from(format!("id-{i:012}")));
    r.insert("user", Value::from(format!("user-{}", i % 5003)));
    r.insert("n", Value::from(i as i64));
    r.insert("score", Value::from(i as f64 * 0.25));
    r.insert("text", Value::from(text_of(i)));
    r
}

fn arrow_batch(start: u64, n: u64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("user", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
        Field::new("score", DataType::Float64, true),
        Field::new("text", DataType::Utf8, true),
    ]));
    let r = start..start + n;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            r.clone().map(|i| format!("id-{i:012}")),
        )),
        Arc::new(StringArray::from_iter_values(
            r.clone().map(|i| format!("user-{}", i % 5003)),
        )),
        Arc::new(Int64Array::from_iter_values(r.clone().map(|i| i as i64))),
        Arc::new(Float64Array::from_iter_values(
            r.clone().map(|i| i as f64 * 0.25),
        )),
        Arc::new(StringArray::from_iter_values(r.map(text_of))),
    ];
    RecordBatch::try_new(schema, cols).unwrap()
}

/// Peak resident memory (VmHWM) in MiB, and its reset (Linux).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The pylance side of the comparisons (`stack/pylance.py`), run with `python -c`.
const PYLANCE: &str = include_str!("pylance.py");

/// The virtual environment the set-up script installs pylance into.
fn venv() -> Option<PathBuf> {
    std::env::var_os("PERSISTING_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/persisting/venv"))
        })
}

/// The pylance script (`pylance.py`) run by the set-up script's Python with `args`.
fn pylance_command(args: &[&str]) -> Option<std::process::Command> {
    let mut cmd = std::process::Command::new(venv()?.join("bin/python"));
    cmd.arg("-c").arg(PYLANCE).args(args);
    Some(cmd)
}

fn pylance(args: &[&str]) -> Option<f64> {
    let out = pylance_command(args)?.output();
    match out {
        Ok(o) if o.status.success() => {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            v["value"].as_f64()
        }
        Ok(o) => {
            println!("pylance failed: {}", String::from_utf8_lossy(&o.stderr));
            None
        }
        Err(e) => {
            println!("pylance skipped (run scripts/setup.sh): {e}");
            None
        }
    }
}

/// pylance's `to_table(offset, limit=100)` in a process kept open, timed in rounds
/// the caller interleaves with its own (so both sides see the same machine state).
struct PylanceReads {
    child: std::process::Child,
    answers: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl PylanceReads {
    fn start(uri: &str) -> Option<Self> {
        use std::process::Stdio;
        let mut child = pylance_command(&["reads", uri])?
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| println!("pylance skipped (run scripts/setup.sh): {e}"))
            .ok()?;
        let out = child.stdout.take()?;
        Some(Self {
            child,
            answers: std::io::BufRead::lines(std::io::BufReader::new(out)),
        })
    }

    /// Mean seconds of `k` reads at the offsets [`offsets`] gives for `seed`.
    fn round(&mut self, k: usize, seed: u64) -> Option<f64> {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut()?;
        writeln!(stdin, "{k} {seed}").ok()?;
        let line = self.answers.next()?.ok()?;
        let v: serde_json::Value = serde_json::from_str(&line).ok()?;
        v["value"].as_f64()
    }
}

impl Drop for PylanceReads {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // end of input ends the script
        let _ = self.child.wait();
    }
}

/// The middle value of `v` (the upper one of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU seconds (user + system) this process has used so far (Linux).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // the fields after the command name: utime and stime are the 12th and 13th
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse().ok())
        .collect();
    ticks.iter().sum::<f64>() / 100.0
}

/// Writes back the dirty pages of earlier runs, so they do not slow the next one.
fn settle() {
    let _ = std::process::Command::new("sync").status();
}

fn row(group: &str, m: &str, ours: f64, base: f64, unit: &str, ratio: f64, floor: &str) {
    println!("{group}: {m}: {ours:.1} vs {base:.1} {unit} = {ratio:.2}x (floor {floor})");
    row_bench(group, m, ours, base, unit, ratio, floor);
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --all-targets` smoke run: nothing to time
    }
    let tmp = scratch();
    println!("stack benchmark in {}", tmp.path().display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // `PERSISTING_BENCH_TAIL=N`: only the put-to-reader latency, N times
        if let Some(n) = std::env::var("PERSISTING_BENCH_TAIL")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
        {
            for i in 0..n {
                for on_main in [false, true] {
                    let dir = tmp.path().join(format!("tail-{i}-{on_main}"));
                    let (p99, p50) = tail_p99_us(&dir, 5000, on_main).await;
                    println!(
                        "put-to-reader latency, 8 blocked readers: p50 {p50:.0} us, p99 {p99:.0} us"
                    );
                }
            }
            return;
        }
        // `PERSISTING_BENCH_ONLY=ingest`: only our ingest of PERSISTING_BENCH_ROWS
        // records and the raw one (for profiling)
        if std::env::var("PERSISTING_BENCH_ONLY").as_deref() == Ok("ingest") {
            let n = rows_big();
            settle();
            let streamed = ingest_ours(&tmp.path().join("streamed"), n).await;
            settle();
            let c0 = cpu_secs();
            let t0 = Instant::now();
            let (rate, raw) =
                ingest_paired(&tmp.path().join("ingest"), &tmp.path().join("raw"), n, Raw::Bare)
                    .await;
            println!(
                "ready ingest and raw, alternated: {:.2} cores busy",
                (cpu_secs() - c0) / t0.elapsed().as_secs_f64()
            );
            println!(
                "ingest of {n} records: {rate:.0} records/s, raw {raw:.0}: {:.2}x; building included {streamed:.0} records/s: {:.2}x",
                rate / raw,
                streamed / raw
            );
            settle();
            let (again, durable) = ingest_paired(
                &tmp.path().join("again"),
                &tmp.path().join("raw-durable"),
                n,
                Raw::Durable,
            )
            .await;
            println!(
                "ingest of {n} records: {again:.0} records/s, raw appends fsynced after each {durable:.0}: {:.2}x",
                again / durable
            );
            return;
        }
        // `PERSISTING_BENCH_ONLY=random`: only random reads of PERSISTING_BENCH_ROWS
        // records, 10 rounds, over all rows and over the first PERSISTING_BENCH_SPAN
        // (for profiling)
        if std::env::var("PERSISTING_BENCH_ONLY").as_deref() == Ok("random") {
            let n = rows_big();
            let dir = tmp.path().join("read");
            ingest_ours(&dir, n).await;
            let b = LanceBucket::open(&dir, LanceOptions::default())
                .await
                .unwrap();
            b.verify_files().await.unwrap();
            let part: u64 = std::env::var("PERSISTING_BENCH_SPAN")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(n);
            random_reads_ours(&b, n).await;
            let (in_task, b) = random_reads_in_task(b, n).await;
            println!("random by a runtime task {:.3} ms all", in_task * 1e3);
            for _ in 0..10 {
                println!(
                    "random {:.3} ms all, {:.3} ms within the first {part}",
                    random_reads_ours(&b, n).await * 1e3,
                    random_reads_ours(&b, part).await * 1e3
                );
            }
            if let Some((ours, py)) = random_vs_pylance(&b, &dir.join("data.lance").to_string_lossy(), n).await {
                println!(
                    "random vs pylance, medians: {:.3} vs {:.3} ms: {:.2}x",
                    ours * 1e3,
                    py * 1e3,
                    py / ours
                );
            }
            return;
        }
        // `PERSISTING_BENCH_ONLY=records`: only sequential `read` of PERSISTING_BENCH_ROWS
        // records, three times after a quiet second (for profiling the record path alone)
        if std::env::var("PERSISTING_BENCH_ONLY").as_deref() == Ok("records") {
            let n = rows_big();
            let (_, b) = ingested_for_reads(&tmp.path().join("read"), n).await;
            std::thread::sleep(Duration::from_secs(1));
            for _ in 0..3 {
                let c0 = cpu_secs();
                let t0 = Instant::now();
                let records = sequential_ours(&b, n).await;
                println!(
                    "sequential read {records:.0} rows/s, {:.2} cores",
                    (cpu_secs() - c0) / t0.elapsed().as_secs_f64()
                );
                // the same reads, the time of freeing the records apart
                let (mut reading, mut freeing, mut at) = (Duration::ZERO, Duration::ZERO, 0);
                while at < n {
                    let t = Instant::now();
                    let got = b.read(at, BATCH as usize).await.unwrap();
                    reading += t.elapsed();
                    at += got.len() as u64;
                    let t = Instant::now();
                    drop(got);
                    freeing += t.elapsed();
                }
                println!(
                    "  of which reading {:.0} ns/record, freeing {:.0} ns/record",
                    reading.as_nanos() as f64 / n as f64,
                    freeing.as_nanos() as f64 / n as f64
                );
            }
            return;
        }
        // `PERSISTING_BENCH_ONLY=read`: only the reads of PERSISTING_BENCH_ROWS records,
        // twice (for profiling)
        if std::env::var("PERSISTING_BENCH_ONLY").as_deref() == Ok("read") {
            let n = rows_big();
            let (dir, b) = ingested_for_reads(&tmp.path().join("read"), n).await;
            let ds = Dataset::open(&dir.join("data.lance").to_string_lossy())
                .await
                .unwrap();
            for _ in 0..2 {
                let c0 = cpu_secs();
                let t0 = Instant::now();
                let arrow = sequential_ours_arrow(&b, n).await;
                let c1 = cpu_secs();
                let t1 = Instant::now();
                let scan = sequential_raw(&ds).await;
                println!(
                    "cpu use: read_arrow {:.2} cores, scan {:.2} cores",
                    (c1 - c0) / (t1 - t0).as_secs_f64(),
                    (cpu_secs() - c1) / t1.elapsed().as_secs_f64()
                );
                let records = sequential_ours(&b, n).await;
                let into = sequential_ours_into(&b, n).await;
                let rows = sequential_ours_rows(&b, n).await;
                println!(
                    "sequential read {records:.0}, read_into {into:.0}, read_rows walked {rows:.0} \
                     rows/s: {:.2}x, {:.2}x, {:.2}x scan",
                    records / scan,
                    into / scan,
                    rows / scan
                );
                let ours = random_reads_ours(&b, n).await;
                let take = random_reads_take(&ds, n).await;
                println!(
                    "sequential read_arrow {arrow:.0} vs scan {scan:.0} rows/s: {:.2}x; \
                     random read {:.3} vs take {:.3} ms: {:.2}x",
                    arrow / scan,
                    ours * 1e3,
                    take * 1e3,
                    take / ours
                );
            }
            return;
        }
        // `PERSISTING_BENCH_ONLY=groups`: only the consumer group rows
        if std::env::var("PERSISTING_BENCH_ONLY").as_deref() == Ok("groups") {
            groups_rows(tmp.path()).await;
            return;
        }
        // `PERSISTING_BENCH_ONLY=s3`: only the rows of a bucket on the S3 server
        if std::env::var("PERSISTING_BENCH_ONLY").as_deref() == Ok("s3") {
            s3_rows().await;
            return;
        }
        // `PERSISTING_BENCH_ONLY=retention`: only the trim and log-start rows
        if std::env::var("PERSISTING_BENCH_ONLY").as_deref() == Ok("retention") {
            retention::retention_rows(tmp.path(), rows_big().min(1_000_000)).await;
            return;
        }
        // `PERSISTING_BENCH_ONLY=outage`: only the ingest through a store that hangs
        if std::env::var("PERSISTING_BENCH_ONLY").as_deref() == Ok("outage") {
            outage_rows(tmp.path()).await;
            return;
        }
        // The Lance layer's rows come first: their first ingest measures the peak RSS,
        // which memory the process kept from earlier work (glibc keeps freed memory)
        // would inflate. `PERSISTING_BENCH_ONLY=lance`: only those (for profiling).
        lance_rows(tmp.path()).await;
        if std::env::var("PERSISTING_BENCH_ONLY").as_deref() != Ok("lance") {
            facade_rows(tmp.path()).await;
            groups_rows(tmp.path()).await;
            retention::retention_rows(tmp.path(), rows_big().min(1_000_000)).await;
            s3_rows().await;
            outage_rows(tmp.path()).await;
        }
    });
}

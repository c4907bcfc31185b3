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
use persisting::lance::{LanceBucket, LanceOptions};
use persisting::outage::{Outage, Relay};
use persisting::wal::{SyncPolicy, Wal, WalOptions};
use persisting::{
    LanceBackend, PersistingBackend, PersistingOptions, Record, StorageBackend, Value, codec,
};
use persisting_bench::{row_bench, text_of};

#[path = "stack/retention.rs"]
mod retention;

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

/// A bucket that flushes automatically every 10^5 records, as the ingest rows use.
async fn ingest_bucket(dir: &Path) -> LanceBucket {
    let opts = LanceOptions {
        flush_threshold: INGEST_FLUSH as usize,
        ..LanceOptions::default()
    };
    LanceBucket::open(dir, opts).await.unwrap()
}

/// One flush's worth of records (offsets `0..10^5`), built once; the ingest rows'
/// batches are cloned from it.
struct Pool(Vec<Record>);

impl Pool {
    fn new(n: u64) -> Self {
        Pool((0..INGEST_FLUSH.min(n)).map(record).collect())
    }

    /// The batch of 10^4 (fewer at the end of `n`) that starts at offset `start`.
    fn batch(&self, start: u64, n: u64) -> Vec<Record> {
        let at = (start % INGEST_FLUSH) as usize;
        let len = BATCH.min(n - start) as usize;
        self.0[at..(at + len).min(self.0.len())].to_vec()
    }
}

/// Ingest through persisting-lance: `append` of 10^4 with automatic flushes of 10^5,
/// then a final flush that waits for the last one. An automatic flush runs on in the
/// background while the caller builds and appends the next batches, so the timed loop
/// includes building them (work the raw side, given ready Arrow batches, does not
/// time): each batch is cloned from one flush's worth of records built beforehand, the
/// cheapest way to hand `append` owned records.
async fn ingest_ours(dir: &Path, n: u64) -> f64 {
    ingest_counted(dir, n).await.0
}

/// [`ingest_ours`], with the bucket's statistics at its end (its object-store
/// requests, for a bucket at a URI).
async fn ingest_counted(dir: &Path, n: u64) -> (f64, persisting::lance::LanceStats) {
    let pool = Pool::new(n);
    let mut b = ingest_bucket(dir).await;
    let t = Instant::now();
    let mut cloning = Duration::ZERO;
    for start in (0..n).step_by(BATCH as usize) {
        let c = Instant::now();
        let batch = pool.batch(start, n);
        cloning += c.elapsed();
        b.append(batch).await.unwrap();
    }
    b.flush().await.unwrap();
    let wall = t.elapsed();
    println!(
        "ingest of {n} records: {:.2} s, {:.2} s of it cloning the batches",
        wall.as_secs_f64(),
        cloning.as_secs_f64()
    );
    (n as f64 / wall.as_secs_f64(), b.stats())
}

/// Records per chunk of [`ingest_ready`].
const READY_CHUNK: u64 = 1_000_000;

/// Chunks of [`READY_CHUNK`] records in batches of 10^4, built on demand (untimed by
/// the callers), each batch cloned from one flush's worth of records.
fn ready_chunks(n: u64) -> impl Iterator<Item = Vec<Vec<Record>>> {
    let pool = Pool::new(n);
    (0..n).step_by(READY_CHUNK as usize).map(move |chunk| {
        (chunk..(chunk + READY_CHUNK).min(n))
            .step_by(BATCH as usize)
            .map(|start| pool.batch(start, n))
            .collect()
    })
}

/// Ingest through persisting-lance of records already built, as the raw side's Arrow
/// batches are: a chunk of [`READY_CHUNK`] records is built untimed, then its appends
/// of 10^4 (automatic flushes of 10^5) and a flush that waits for every commit are
/// timed, so no background work runs on in untimed time. Each chunk's closing flush
/// costs a commit without overlap: the figure is a little below the steady rate.
async fn ingest_ready(dir: &Path, n: u64) -> f64 {
    let mut b = ingest_bucket(dir).await;
    let mut spent = Duration::ZERO;
    for batches in ready_chunks(n) {
        spent += append_chunk(&mut b, batches).await;
    }
    n as f64 / spent.as_secs_f64()
}

/// The time to append `batches` and flush (a chunk of [`ingest_ready`]).
async fn append_chunk(b: &mut LanceBucket, batches: Vec<Vec<Record>>) -> Duration {
    let t = Instant::now();
    for batch in batches {
        b.append(batch).await.unwrap();
    }
    b.flush().await.unwrap();
    t.elapsed()
}

/// Ours as [`ingest_ready`] measures it and the raw path as [`ingest_raw`] does, of
/// the same rows (see [`paired_with_raw`]).
async fn ingest_paired(ours_dir: &Path, raw_dir: &Path, n: u64) -> (f64, f64) {
    let mut b = ingest_bucket(ours_dir).await;
    paired_with_raw(raw_dir, n, async |batches| {
        append_chunk(&mut b, batches).await
    })
    .await
}

/// `ours` (the time to store a chunk of batches, made durable) and the raw path as
/// [`ingest_raw`] measures it, of the same rows, alternated chunk by chunk
/// ([`READY_CHUNK`] records ours, then the same rows raw; both datasets grow to `n`):
/// this VM's speed drifts by up to 20% within a minute, and two chunks run back to
/// back see the same drift, where two runs a minute apart do not. Returns (ours, raw)
/// records/s over all chunks, and prints each chunk's ratio.
async fn paired_with_raw(
    raw_dir: &Path,
    n: u64,
    mut ours: impl AsyncFnMut(Vec<Vec<Record>>) -> Duration,
) -> (f64, f64) {
    let (mut mine, mut raw) = (Duration::ZERO, Duration::ZERO);
    let mut ratios = Vec::new();
    for (i, batches) in ready_chunks(n).enumerate() {
        let o = ours(batches).await;
        // our flush hands its last records to a blocking thread to free: let that
        // finish (and write-back settle) before the raw side's clock starts
        pause();
        let start = i as u64 * READY_CHUNK;
        let r = ingest_raw(raw_dir, start..(start + READY_CHUNK).min(n)).await;
        ratios.push(format!("{:.2}", r.as_secs_f64() / o.as_secs_f64()));
        pause();
        mine += o;
        raw += r;
    }
    println!(
        "ingest vs raw by chunk of {READY_CHUNK}: {}",
        ratios.join(" ")
    );
    (n as f64 / mine.as_secs_f64(), n as f64 / raw.as_secs_f64())
}

/// The time to put `batches` through a backend and flush them (a chunk of a paired
/// ingest).
async fn put_chunk(b: &dyn StorageBackend, batches: Vec<Vec<Record>>) -> Duration {
    let t = Instant::now();
    for batch in batches {
        b.put_batch(batch).await.unwrap();
    }
    b.flush().await.unwrap();
    t.elapsed()
}

/// `n` records ingested into `dir`, then the bucket reopened with its files checked
/// (the set-up of the read-only modes).
async fn ingested_for_reads(dir: &Path, n: u64) -> (PathBuf, LanceBucket) {
    ingest_ours(dir, n).await;
    settle();
    let b = LanceBucket::open(dir, LanceOptions::default())
        .await
        .unwrap();
    b.verify_files().await.unwrap();
    (dir.to_path_buf(), b)
}

/// A quiet moment between two timed sides of [`ingest_paired`].
fn pause() {
    settle();
    std::thread::sleep(Duration::from_millis(200));
}

/// The raw path: rows `rows`, already Arrow batches of the same commit size,
/// appended with Lance directly (no fsync, no checksums); returns the time the
/// appends took.
async fn ingest_raw(dir: &Path, rows: Range<u64>) -> Duration {
    let uri = dir.join("raw.lance").to_string_lossy().into_owned();
    let mut spent = Duration::ZERO;
    for start in rows.clone().step_by(INGEST_FLUSH as usize) {
        let batch = arrow_batch(start, INGEST_FLUSH.min(rows.end - start));
        let schema = batch.schema();
        let reader = RecordBatchIterator::new(vec![Ok(batch)], schema);
        let params = WriteParams {
            mode: WriteMode::Append,
            ..WriteParams::default()
        };
        let t = Instant::now();
        Dataset::write(reader, uri.as_str(), Some(params))
            .await
            .unwrap();
        spent += t.elapsed();
    }
    spent
}

fn offsets(n: u64, k: usize, seed: u64) -> Vec<u64> {
    let mut x = seed | 1;
    (0..k)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % (n - 100)
        })
        .collect()
}

/// Offsets of the warm-up pass before timed random reads: other rows than the timed
/// ones, as many reads, so every fragment of the big dataset has most likely been
/// read once (a long-lived reader's steady state; the first pass is reported too).
fn warm_up_offsets(n: u64) -> Vec<u64> {
    offsets(n, READS, WARM_UP_SEED)
}

/// The seed of [`warm_up_offsets`].
const WARM_UP_SEED: u64 = 99;

/// Mean seconds of `read(offset, 100)` at random offsets, first over the warm-up
/// offsets (returned second: a freshly opened bucket), then over the timed ones.
async fn random_reads_ours_cold(b: &LanceBucket, n: u64) -> (f64, f64) {
    let cold = random_reads_seeded(b, n, WARM_UP_SEED).await;
    (random_reads_seeded(b, n, 7).await, cold)
}

/// Mean seconds of `read(offset, 100)` at random offsets, after the warm-up pass.
async fn random_reads_ours(b: &LanceBucket, n: u64) -> f64 {
    random_reads_ours_cold(b, n).await.0
}

/// Mean seconds of `read(offset, 100)` at the offsets [`offsets`] gives for `seed`.
async fn random_reads_seeded(b: &LanceBucket, n: u64, seed: u64) -> f64 {
    let t = Instant::now();
    for o in offsets(n, READS, seed) {
        assert_eq!(b.read(o, 100).await.unwrap().len(), 100);
    }
    t.elapsed().as_secs_f64() / READS as f64
}

/// Rounds of the pylance comparison of random reads.
const PY_ROUNDS: u64 = 7;

/// Random reads of `b` (whose dataset is at `uri`, `n` rows) against pylance's, in
/// [`PY_ROUNDS`] rounds of [`READS`] reads at the same offsets, ours and pylance's
/// alternated (one warm-up round each first): the medians of the mean seconds per
/// read, ours then pylance's. `None` without pylance.
async fn random_vs_pylance(b: &LanceBucket, uri: &str, n: u64) -> Option<(f64, f64)> {
    let mut py = PylanceReads::start(uri)?;
    py.round(READS, WARM_UP_SEED)?;
    random_reads_seeded(b, n, WARM_UP_SEED).await;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut times, mut ratios) = (Vec::new(), Vec::new());
    for round in 0..PY_ROUNDS {
        let seed = 7 + 2 * round;
        let (o, p) = (
            random_reads_seeded(b, n, seed).await,
            py.round(READS, seed)?,
        );
        times.push(format!("{:.3}/{:.3}", o * 1e3, p * 1e3));
        ratios.push(format!("{:.2}", p / o));
        ours.push(o);
        theirs.push(p);
    }
    println!(
        "random reads vs pylance by round (ms ours / pylance): {}; ratios {}",
        times.join(" "),
        ratios.join(" ")
    );
    Some((median(ours), median(theirs)))
}

/// [`random_reads_ours`] by a task of the runtime (on a worker thread) rather than by
/// the `block_on` thread; gives the bucket back.
async fn random_reads_in_task(b: LanceBucket, n: u64) -> (f64, LanceBucket) {
    tokio::spawn(async move { (random_reads_ours(&b, n).await, b) })
        .await
        .unwrap()
}

/// Mean seconds of a raw `take` of 100 rows at the offsets of [`random_reads_ours`],
/// after the same warm-up pass.
async fn random_reads_take(ds: &Dataset, n: u64) -> f64 {
    let schema = ds.schema().clone();
    let mut spent = 0.0;
    for offs in [warm_up_offsets(n), offsets(n, READS, 7)] {
        let t = Instant::now();
        for o in offs {
            let idx: Vec<u64> = (o..o + 100).collect();
            assert_eq!(ds.take(&idx, schema.clone()).await.unwrap().num_rows(), 100);
        }
        spent = t.elapsed().as_secs_f64() / READS as f64;
    }
    spent
}

async fn sequential_ours(b: &LanceBucket, n: u64) -> f64 {
    let t = Instant::now();
    let mut at = 0;
    while at < n {
        let got = b.read(at, BATCH as usize).await.unwrap();
        at += got.len() as u64;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

async fn sequential_ours_into(b: &LanceBucket, n: u64) -> f64 {
    let t = Instant::now();
    let mut at = 0;
    let mut records = Vec::new();
    while at < n {
        b.read_into(at, BATCH as usize, &mut records).await.unwrap();
        at += records.len() as u64;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

async fn sequential_ours_arrow(b: &LanceBucket, n: u64) -> f64 {
    let t = Instant::now();
    let mut at = 0;
    while at < n {
        let got = b.read_arrow(at, BATCH as usize).await.unwrap();
        at += got.iter().map(|b| b.num_rows() as u64).sum::<u64>();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

async fn sequential_raw(ds: &Dataset) -> f64 {
    let t = Instant::now();
    let mut scan = ds.scan();
    scan.scan_in_order(true);
    let mut stream = scan.try_into_stream().await.unwrap();
    let mut rows = 0u64;
    while let Some(b) = stream.try_next().await.unwrap() {
        rows += b.num_rows() as u64;
    }
    rows as f64 / t.elapsed().as_secs_f64()
}

const PYLANCE: &str = r#"
import sys, time, json
import lance, pyarrow as pa
mode = sys.argv[1]
if mode == "ingest":
    path, n = sys.argv[2], int(sys.argv[3])
    spent = 0.0
    for start in range(0, n, 10000):
        r = range(start, min(start + 10000, n))
        text = lambda i: (("record %d " % i) * 20)[:100]
        t = pa.table({
            "id": ["id-%012d" % i for i in r],
            "user": ["user-%d" % (i % 5003) for i in r],
            "n": pa.array(list(r), pa.int64()),
            "score": [i * 0.25 for i in r],
            "text": [text(i) for i in r],
        })
        t0 = time.perf_counter()
        lance.write_dataset(t, path, mode="append")
        spent += time.perf_counter() - t0
    print(json.dumps({"value": n / spent}))
else:
    # rounds of reads driven by the benchmark: a line "k seed" on stdin times k
    # reads at the offsets the benchmark's own xorshift gives for seed
    path = sys.argv[2]
    ds = lance.dataset(path)
    n = ds.count_rows()
    mask = (1 << 64) - 1
    for line in sys.stdin:
        k, seed = map(int, line.split())
        x, offs = seed | 1, []
        for _ in range(k):
            x ^= (x << 13) & mask
            x ^= x >> 7
            x ^= (x << 17) & mask
            offs.append(x % (n - 100))
        t0 = time.perf_counter()
        for o in offs:
            assert ds.to_table(offset=o, limit=100).num_rows == 100
        print(json.dumps({"value": (time.perf_counter() - t0) / k}), flush=True)
"#;

/// The virtual environment the set-up script installs pylance into.
fn venv() -> Option<PathBuf> {
    std::env::var_os("PERSISTING_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/persisting/venv"))
        })
}

/// The [`PYLANCE`] script run by the set-up script's Python with `args`.
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

async fn lance_rows(root: &Path) {
    let n = rows_big();
    // ingest (ours), with its peak memory
    let big = root.join("big");
    settle();
    reset_peak_rss();
    let before = peak_rss_mib();
    let streamed = ingest_ours(&big, n).await;
    let peak = peak_rss_mib();
    println!("ingest of {n} records: peak RSS {peak:.0} MiB (process start {before:.0} MiB)");
    settle();
    let ready_dir = root.join("ready");
    let (ours, raw) = ingest_paired(&ready_dir, &root.join("raw"), n).await;
    let _ = std::fs::remove_dir_all(&ready_dir);
    row(
        "lance",
        &format!(
            "ingest {n} records, put_batch 10^4, flushes of 10^5, vs raw Dataset::append of Arrow batches of 10^5"
        ),
        ours,
        raw,
        "records/s",
        ours / raw,
        ">=0.5",
    );
    row(
        "lance",
        &format!(
            "ingest {n} records as above, building the batches included (cloned), vs raw Dataset::append"
        ),
        streamed,
        raw,
        "records/s",
        streamed / raw,
        "-",
    );
    let py_rows = n.min(1_000_000);
    let py_dir = root.join("py.lance");
    settle();
    if let Some(py) = pylance(&["ingest", &py_dir.to_string_lossy(), &py_rows.to_string()]) {
        row(
            "lance",
            &format!(
                "ingest (flushes of 10^5) vs pylance write_dataset append ({py_rows} records, batches of 10^4)"
            ),
            ours,
            py,
            "records/s",
            ours / py,
            ">=3",
        );
        // the ceiling of any writer through Lance on this machine: the raw append of
        // the same rows, already built, against the same pylance run
        row(
            "lance",
            &format!(
                "raw Dataset::append (batches of 10^5, rows built untimed) vs pylance write_dataset append ({py_rows} records)"
            ),
            raw,
            py,
            "records/s",
            raw / py,
            "-",
        );
    }
    row(
        "lance",
        &format!("peak memory of the {n}-record ingest vs 512 MiB"),
        peak,
        512.0,
        "MiB",
        peak / 512.0,
        "<=1",
    );

    // reads over the big dataset, after the writes above reached the disk (their
    // writeback slowed the reads below 2x in a run without this)
    settle();
    let b = LanceBucket::open(&big, LanceOptions::default())
        .await
        .unwrap();
    let ds = Dataset::open(&big.join("data.lance").to_string_lossy())
        .await
        .unwrap();
    // each data file is checked against its seal before its first read, once per
    // open: done here up front and reported on its own, the reads below are steady
    let t = Instant::now();
    let check = b.verify_files().await.unwrap();
    let verify_secs = t.elapsed().as_secs_f64();
    println!(
        "seal check of {} data files ({} unsealed): {verify_secs:.2} s",
        check.files, check.unsealed
    );
    let (ours_big, ours_cold) = random_reads_ours_cold(&b, n).await;
    let take = random_reads_take(&ds, n).await;
    row(
        "lance",
        &format!("random read(offset, 100) at {n} rows vs raw take (reads/s)"),
        1.0 / ours_big,
        1.0 / take,
        "reads/s",
        take / ours_big,
        ">=0.9",
    );
    let (in_task, b) = random_reads_in_task(b, n).await;
    row(
        "lance",
        &format!(
            "random read(offset, 100) at {n} rows by a runtime task vs by the block_on thread"
        ),
        in_task * 1e3,
        ours_big * 1e3,
        "ms/read",
        in_task / ours_big,
        "-",
    );
    if let Some((ours, py)) =
        random_vs_pylance(&b, &big.join("data.lance").to_string_lossy(), n).await
    {
        row(
            "lance",
            &format!(
                "random read(offset, 100) at {n} rows vs pylance to_table(offset, limit), \
                 medians of {PY_ROUNDS} alternated rounds"
            ),
            1.0 / ours,
            1.0 / py,
            "reads/s",
            py / ours,
            ">=3",
        );
    }
    let small = root.join("small");
    ingest_ours(&small, SMALL).await;
    settle();
    let sb = LanceBucket::open(&small, LanceOptions::default())
        .await
        .unwrap();
    sb.verify_files().await.unwrap();
    let ours_small = random_reads_ours(&sb, SMALL).await;
    row(
        "lance",
        &format!("read latency at {n} rows vs at {SMALL} rows"),
        ours_big * 1e3,
        ours_small * 1e3,
        "ms/read",
        ours_big / ours_small,
        "<=1.5",
    );
    row(
        "lance",
        &format!(
            "read latency at {n} rows, first {READS} reads of a fresh handle (opening fragment readers) vs steady"
        ),
        ours_cold * 1e3,
        ours_big * 1e3,
        "ms/read",
        ours_cold / ours_big,
        "-",
    );
    let seq = sequential_ours(&b, n).await;
    let seq_into = sequential_ours_into(&b, n).await;
    let seq_arrow = sequential_ours_arrow(&b, n).await;
    let scan = sequential_raw(&ds).await;
    row(
        "lance",
        &format!("seal check of all data files once per open vs one raw scan ({n} rows)"),
        verify_secs,
        n as f64 / scan,
        "s",
        verify_secs / (n as f64 / scan),
        "-",
    );
    row(
        "lance",
        &format!("sequential read of {n} records in reads of 10^4 vs raw scan"),
        seq,
        scan,
        "records/s",
        seq / scan,
        ">=0.7",
    );
    row(
        "lance",
        &format!("sequential read_into of {n} records in reads of 10^4 (one Vec) vs raw scan"),
        seq_into,
        scan,
        "records/s",
        seq_into / scan,
        ">=0.7",
    );
    row(
        "lance",
        &format!("sequential read_arrow of {n} records in reads of 10^4 vs raw scan"),
        seq_arrow,
        scan,
        "records/s",
        seq_arrow / scan,
        ">=0.7",
    );

    // compaction: many small fragments, read speed before and after
    let frag = root.join("fragments");
    let mut fb = LanceBucket::open(
        &frag,
        LanceOptions {
            flush_threshold: 100,
            compact_fragments_max: 0, // never on its own: compacted below
            ..LanceOptions::default()
        },
    )
    .await
    .unwrap();
    for start in (0..SMALL / 2).step_by(100) {
        fb.append((start..start + 100).map(record).collect())
            .await
            .unwrap();
    }
    fb.flush().await.unwrap();
    fb.verify_files().await.unwrap();
    let before = random_reads_ours(&fb, SMALL / 2).await;
    fb.compact().await.unwrap();
    fb.verify_files().await.unwrap();
    let after = random_reads_ours(&fb, SMALL / 2).await;
    row(
        "lance",
        "random reads after compacting 500 fragments of 100 rows vs before",
        1.0 / after,
        1.0 / before,
        "reads/s",
        before / after,
        "-",
    );
}

fn durable_record(i: u64) -> Record {
    let mut r = Record::with_capacity(3);
    r.insert("id", Value::from(format!("id-{i:012}")));
    r.insert("n", Value::from(i as i64));
    r.insert("text", Value::from(text_of(i)));
    r
}

/// Entries/s of 64 concurrent durable puts (WAL, interval 0) for `secs`.
async fn facade_64(dir: &Path, secs: f64) -> f64 {
    let opts = PersistingOptions {
        enable_wal: true,
        wal_sync_interval: Duration::ZERO,
        flush_threshold: 100_000_000,
        max_wal_size: 1 << 40,
        ..PersistingOptions::default()
    };
    let b = Arc::new(PersistingBackend::open(0, dir, opts).await.unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..64u64 {
        let (b, stop, count) = (b.clone(), stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w << 32;
            while !stop.load(Ordering::Relaxed) {
                b.put(durable_record(i)).await.unwrap();
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / secs
}

/// A WAL in `dir` that fsyncs before each append returns.
fn wal_always(dir: &Path) -> Wal {
    let opts = WalOptions {
        sync: SyncPolicy::Always,
        ..WalOptions::default()
    };
    Wal::open(dir, opts).unwrap().0
}

/// Entries/s of 64 threads appending the same payloads to the WAL alone.
fn wal_64(dir: &Path, secs: f64) -> f64 {
    let payload = codec::encode_record(&durable_record(1));
    let wal = Arc::new(wal_always(dir));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let (wal, stop, count, p) = (wal.clone(), stop.clone(), count.clone(), payload.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    wal.append(&p).unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|t| t.join().unwrap());
    count.load(Ordering::Relaxed) as f64 / secs
}

/// Records/s of `put_batch` ingest through a backend or the Lance layer.
async fn ingest_backend(b: &dyn StorageBackend, n: u64) -> f64 {
    // records built beforehand, as for the Lance layer (`ingest_ready`): a put's
    // flush commits in the background, which must not run on in untimed time
    let mut spent = Duration::ZERO;
    for batches in ready_chunks(n) {
        spent += put_chunk(b, batches).await;
    }
    n as f64 / spent.as_secs_f64()
}

/// p99 (and p50) of the time from `put` returning to each of 8 blocked readers
/// receiving the record. The puts are made by a task of the runtime, as application
/// code makes them (`on_main`: by the thread blocked in `Runtime::block_on` instead).
async fn tail_p99_us(dir: &Path, puts: u64, on_main: bool) -> (f64, f64) {
    let b = Arc::new(LanceBackend::open(0, dir, 100, 1_000_000).await.unwrap());
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..puts).map(|_| AtomicU64::new(0)).collect());
    let origin = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..8 {
        let b = b.clone();
        readers.push(tokio::spawn(async move {
            let mut received = Vec::with_capacity(puts as usize);
            let mut s = b.get_stream(0, Some(puts as usize), true);
            while let Some(r) = s.next().await {
                r.unwrap();
                received.push(origin.elapsed().as_nanos() as u64);
            }
            received
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let writer = {
        let (b, acked) = (b.clone(), acked.clone());
        async move {
            for i in 0..puts {
                b.put(durable_record(i)).await.unwrap();
                acked[i as usize].store(origin.elapsed().as_nanos() as u64, Ordering::Release);
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    };
    if on_main {
        writer.await;
    } else {
        tokio::spawn(writer).await.unwrap();
    }
    let mut all = Vec::new();
    for r in readers {
        let received = r.await.unwrap();
        // every put has returned by now: received before put returned is no wait
        all.extend(
            received
                .iter()
                .enumerate()
                .map(|(i, &at)| at.saturating_sub(acked[i].load(Ordering::Acquire))),
        );
    }
    all.sort_unstable();
    let p = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)] as f64 / 1e3;
    let over_1ms = all.iter().filter(|&&l| l > 1_000_000).count();
    println!(
        "  latency of {} receipts (puts {}): p90 {:.0} us, p99.9 {:.0} us, max {:.0} us, {over_1ms} over 1 ms",
        all.len(),
        if on_main {
            "on the block_on thread"
        } else {
            "by a runtime task"
        },
        p(0.9),
        p(0.999),
        p(1.0)
    );
    (p(0.99), p(0.5))
}

async fn facade_rows(root: &Path) {
    // latency first, on a settled machine: no writeback of earlier runs' dirty pages,
    // no background work of earlier backends
    settle();
    let (p99, p50) = tail_p99_us(&root.join("tail"), 5000, false).await;
    println!("put-to-reader latency, 8 blocked readers: p50 {p50:.0} us, p99 {p99:.0} us");
    row(
        "facade",
        "put-to-reader p99 with 8 blocked readers vs 1 ms (puts by a runtime task)",
        p99,
        1000.0,
        "us",
        p99 / 1000.0,
        "<=1",
    );
    // the same with the puts made outside the runtime's workers: every put wakes an
    // idle worker thread on another CPU, which a virtual machine can delay
    let (p99, _) = tail_p99_us(&root.join("tail-main"), 5000, true).await;
    row(
        "facade",
        "put-to-reader p99 with 8 blocked readers vs 1 ms (puts by the block_on thread)",
        p99,
        1000.0,
        "us",
        p99 / 1000.0,
        "-",
    );

    let secs = 3.0;
    let facade = facade_64(&root.join("facade64"), secs).await;
    let wal = tokio::task::spawn_blocking({
        let d = root.join("wal64");
        move || wal_64(&d, secs)
    })
    .await
    .unwrap();
    row(
        "facade",
        "PersistingBackend, WAL, interval 0, 64 concurrent puts vs the WAL alone, Always, 64 writers",
        facade,
        wal,
        "entries/s",
        facade / wal,
        ">=0.5",
    );

    let n = rows_big().min(1_000_000);
    // alternated, best of two each: neither side runs only on a machine still
    // writing back the other's data
    let (mut backend, mut layer) = (0.0f64, 0.0f64);
    for round in 0..2 {
        let lb = LanceBackend::open(
            0,
            root.join(format!("lance-backend-{round}")),
            100,
            INGEST_FLUSH as usize,
        )
        .await
        .unwrap();
        settle();
        backend = backend.max(ingest_backend(&lb, n).await);
        settle();
        layer = layer.max(ingest_ready(&root.join(format!("lance-layer-{round}")), n).await);
    }
    row(
        "facade",
        &format!("LanceBackend put_batch ingest vs persisting-lance ({n} records)"),
        backend,
        layer,
        "records/s",
        backend / layer,
        ">=0.9",
    );

    // the facade's flush owner: puts never wait for a commit, and the next commit
    // takes everything buffered meanwhile (commits grow under load)
    let n = rows_big();
    let b = LanceBackend::open(0, root.join("grouped"), 100, INGEST_FLUSH as usize)
        .await
        .unwrap();
    settle();
    let (ours, raw) = paired_with_raw(&root.join("grouped-raw"), n, async |batches| {
        put_chunk(&b, batches).await
    })
    .await;
    let flushes = b.stats().await.unwrap().flush_count;
    println!("facade ingest of {n} records: {flushes} commits");
    row(
        "facade",
        &format!(
            "ingest {n} records through LanceBackend, put_batch 10^4, flush_threshold 10^5 \
             (commits grow under load; {flushes} commits), vs raw Dataset::append of Arrow \
             batches of 10^5"
        ),
        ours,
        raw,
        "records/s",
        ours / raw,
        ">=0.8",
    );
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
                ingest_paired(&tmp.path().join("ingest"), &tmp.path().join("raw"), n).await;
            println!(
                "ready ingest and raw, alternated: {:.2} cores busy",
                (cpu_secs() - c0) / t0.elapsed().as_secs_f64()
            );
            println!(
                "ingest of {n} records: {rate:.0} records/s, raw {raw:.0}: {:.2}x; building included {streamed:.0} records/s: {:.2}x",
                rate / raw,
                streamed / raw
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
                println!(
                    "sequential read {records:.0}, read_into {into:.0} rows/s: {:.2}x, {:.2}x scan",
                    records / scan,
                    into / scan
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

/// How long the store hangs in the middle of [`outage_rows`]' ingest.
const HANG: Duration = Duration::from_secs(20);

/// One ingest of `n` records to `uri` through `relay` (WAL on, flushes of 10^5),
/// with the store hanging for [`HANG`] from the middle when `hang`. Returns the
/// wall time (to a flush of everything), the records acknowledged while the store
/// hung, and the peak RSS (MiB).
async fn ingest_through(
    relay: &Relay,
    uri: &str,
    wal: &Path,
    n: u64,
    hang: bool,
) -> (f64, u64, f64) {
    let opts = PersistingOptions {
        enable_wal: true,
        flush_threshold: INGEST_FLUSH as usize,
        wal_dir: Some(wal.to_path_buf()),
        storage_options: [("aws_endpoint".to_owned(), relay.endpoint())].into(),
        ..PersistingOptions::default()
    };
    let b = PersistingBackend::open(0, uri, opts).await.unwrap();
    let pool = Pool::new(n);
    settle();
    reset_peak_rss();
    let t = Instant::now();
    let mut hung: Option<(Instant, u64)> = None;
    let mut during = 0;
    let mut refused = 0;
    for start in (0..n).step_by(BATCH as usize) {
        if hang && hung.is_none() && start >= n / 2 {
            relay.set(Outage::Hang);
            hung = Some((Instant::now(), start));
        }
        if let Some((since, from)) = hung
            && during == 0
            && since.elapsed() >= HANG
        {
            relay.set(Outage::None);
            during = start - from;
        }
        // a put refused at the bound (`put_timeout` passed before the store took a
        // commit) stored nothing: a producer retries it
        while let Err(e) = b.put_batch(pool.batch(start, n)).await {
            refused += 1;
            println!("put at {start} refused, retried: {e}");
        }
    }
    if let Some((since, from)) = hung
        && during == 0
    {
        // every record was acknowledged within the hang: it ends as it would have
        during = n - from;
        tokio::time::sleep(HANG.saturating_sub(since.elapsed())).await;
        relay.set(Outage::None);
    }
    b.flush().await.unwrap();
    let wall = t.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    b.close().await.unwrap();
    println!("ingest through the relay (hang: {hang}): {refused} puts refused and retried");
    (wall, during, peak)
}

/// An ingest to the S3 server with a store hang of [`HANG`] in the middle vs the same
/// without (both through the same relay): what was acknowledged meanwhile, the time,
/// and the memory.
async fn outage_rows(root: &Path) {
    let (Ok(bucket), Ok(endpoint)) = (
        std::env::var("PERSISTING_TEST_S3"),
        std::env::var("AWS_ENDPOINT"),
    ) else {
        println!("outage rows skipped: PERSISTING_TEST_S3 is not set (scripts/s3-server.sh)");
        return;
    };
    let upstream = endpoint.trim_start_matches("http://").parse().unwrap();
    let relay = Relay::start(upstream).unwrap();
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let n = S3_ROWS.min(rows_big());
    let mut runs = Vec::new();
    for hang in [false, true] {
        let uri = format!(
            "{}/bench-outage-{ms}-{hang}/bucket_0",
            bucket.trim_end_matches('/')
        );
        let wal = root.join(format!("outage-wal-{hang}"));
        runs.push(ingest_through(&relay, &uri, &wal, n, hang).await);
    }
    let ((calm, _, calm_rss), (stormy, during, stormy_rss)) = (runs[0], runs[1]);
    println!(
        "ingest of {n} records to s3://: {calm:.1} s; with a {} s hang from the middle {stormy:.1} s, {during} records acknowledged during the hang; peak RSS {calm_rss:.0} / {stormy_rss:.0} MiB",
        HANG.as_secs()
    );
    row(
        "s3",
        &format!(
            "records acknowledged during a {} s store hang in the middle of a {n}-record ingest (WAL on, default bounds) vs the records put after its start",
            HANG.as_secs()
        ),
        during as f64,
        (n - n / 2) as f64,
        "records",
        during as f64 / (n - n / 2) as f64,
        "-",
    );
    row(
        "s3",
        "wall time of that ingest (to a flush of all) vs the same without the hang",
        stormy,
        calm,
        "s",
        stormy / calm,
        "-",
    );
    row(
        "s3",
        "peak RSS of the ingest with the hang vs without",
        stormy_rss,
        calm_rss,
        "MiB",
        stormy_rss / calm_rss,
        "-",
    );
}

/// Commits/s of one consumer group, one committer after another, for `secs`: each a
/// durable (fsynced) write of the group's file.
async fn group_commits(dir: &Path, secs: f64) -> f64 {
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
fn wal_1(dir: &Path, secs: f64) -> f64 {
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
fn raw_commits(dir: &Path, secs: f64, bare: bool) -> f64 {
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
async fn drain(b: &PersistingBackend, read: usize, commit: Option<&str>) -> f64 {
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
async fn groups_rows(root: &Path) {
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

/// Records of the s3 rows.
const S3_ROWS: u64 = 1_000_000;

/// The rows of a bucket on the S3-compatible server `PERSISTING_TEST_S3` names (its
/// endpoint and credentials in `AWS_*`, which pylance reads too; `cargo xtask bench`
/// starts `scripts/s3-server.sh` for them): ingest and random reads against pylance
/// on the same server, and the requests an ingest costs. Skipped without a server.
async fn s3_rows() {
    let Ok(root) = std::env::var("PERSISTING_TEST_S3") else {
        println!("s3 rows skipped: PERSISTING_TEST_S3 is not set (scripts/s3-server.sh)");
        return;
    };
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let base = format!("{}/bench-{ms}", root.trim_end_matches('/'));
    let ours_uri = format!("{base}/bucket_0");
    let n = S3_ROWS.min(rows_big());
    let (ours, stats) = ingest_counted(Path::new(&ours_uri), n).await;
    let py_uri = format!("{base}/py.lance");
    let Some(py) = pylance(&["ingest", &py_uri, &n.to_string()]) else {
        return;
    };
    row(
        "s3",
        &format!(
            "ingest {n} records to s3:// (put_batch 10^4, flushes of 10^5) vs pylance \
             write_dataset append of batches of 10^4 to the same server"
        ),
        ours,
        py,
        "records/s",
        ours / py,
        ">=1.5",
    );
    let calls = stats.store_calls;
    let requests = calls.puts + calls.gets + calls.lists + calls.deletes;
    let commits = n.div_ceil(INGEST_FLUSH);
    row(
        "s3",
        &format!(
            "requests of the {n}-record ingest (puts {}, gets {}, lists {}, deletes {}) \
             vs its {commits} commits",
            calls.puts, calls.gets, calls.lists, calls.deletes
        ),
        requests as f64,
        commits as f64,
        "requests",
        requests as f64 / commits as f64,
        "-",
    );
    let b = LanceBucket::open(Path::new(&ours_uri), LanceOptions::default())
        .await
        .unwrap();
    assert_eq!(b.persisted_count(), n);
    let before = b.stats().store_calls;
    random_reads_seeded(&b, n, WARM_UP_SEED).await;
    let after = b.stats().store_calls;
    println!(
        "s3: {READS} random reads of 100 rows (first pass of a fresh handle): gets {}, lists {}",
        after.gets - before.gets,
        after.lists - before.lists
    );
    let data = format!("{ours_uri}/data.lance");
    if let Some((ours, py)) = random_vs_pylance(&b, &data, n).await {
        row(
            "s3",
            &format!(
                "random read(offset, 100) at {n} rows on s3:// vs pylance \
                 to_table(offset, limit) there, medians of {PY_ROUNDS} alternated rounds"
            ),
            1.0 / ours,
            1.0 / py,
            "reads/s",
            py / ours,
            ">=2",
        );
    }
    let last = b.stats().store_calls;
    println!(
        "s3: then {} random reads (warm): gets {}, lists {}",
        READS as u64 * (PY_ROUNDS + 1),
        last.gets - after.gets,
        last.lists - after.lists
    );
    // what the layer beneath gives: raw Lance's take, and one range GET of the server
    let ours = random_reads_ours(&b, n).await;
    let ds = Dataset::open(&data).await.unwrap();
    let take = random_reads_take(&ds, n).await;
    row(
        "s3",
        &format!(
            "random read(offset, 100) at {n} rows on s3:// vs raw Dataset::take there (reads/s)"
        ),
        1.0 / ours,
        1.0 / take,
        "reads/s",
        take / ours,
        "-",
    );
    let get = range_get_secs(&ds).await;
    row(
        "s3",
        &format!(
            "random read(offset, 100) at {n} rows on s3:// vs one range GET of 8 KiB of a data file \
             there (latency; a read makes ~6 GETs, issued together)"
        ),
        ours * 1e3,
        get * 1e3,
        "ms",
        ours / get,
        "-",
    );
}

/// Mean seconds of one range GET of 8 KiB at a random place of the dataset's largest
/// data file, through Lance's object store (its S3 client), one after another.
async fn range_get_secs(ds: &Dataset) -> f64 {
    use object_store::ObjectStoreExt;
    let store = ds.object_store(None).await.unwrap();
    let frag = &ds.manifest().fragments[0];
    let path = ds.data_dir().join(frag.files[0].path.as_str());
    let size = store.inner.head(&path).await.unwrap().size;
    let offs = offsets(size.saturating_sub(8192).max(101), READS, 5);
    let t = Instant::now();
    for o in offs {
        store.inner.get_range(&path, o..o + 8192).await.unwrap();
    }
    t.elapsed().as_secs_f64() / READS as f64
}

//! `persisting demo`: the end-to-end job of the README, and the steady workload of
//! `persisting serve-metrics`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use persisting::lance::DATASET_DIR;
use persisting::{Assignment, QueueOptions, QueueSystem, Record, Value, WAL_DIR};

use crate::CliResult;

/// Options of `persisting demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Storage root (default: $XDG_DATA_HOME/persisting/demo, else
    /// ~/.local/share/persisting/demo). The demo's topic in it is replaced.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Records to write.
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,
}

const TOPIC: &str = "events";
const BATCH: usize = 1000;

fn default_dir() -> PathBuf {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    data.join("persisting/demo")
}

/// The demo's record number `i`: the realistic shape of the benchmarks.
pub fn event(i: u64) -> Record {
    let text: String = format!("event {i:>12} ")
        .chars()
        .cycle()
        .take(100)
        .collect();
    let mut r = Record::new();
    r.insert("id", Value::from(format!("evt-{i:010}")));
    r.insert("user", Value::from(format!("user-{}", i % 997)));
    r.insert("n", Value::from(i as i64));
    r.insert("score", Value::from((i % 1000) as f64 / 8.0));
    r.insert("text", Value::from(text));
    r
}

fn index_of(r: &Record) -> Option<u64> {
    r.get("id")?.as_str()?.strip_prefix("evt-")?.parse().ok()
}

fn queue_options(dir: &Path, metrics: bool) -> QueueOptions {
    let mut opts = QueueOptions::new(dir);
    opts.backend = "persisting".to_owned();
    let backend = serde_json::json!({
        "enable_wal": true,
        "compression": "zstd",
        "wal_sync_interval": 1.0,
        "flush_threshold": 20_000,
        "enable_metrics": metrics,
    });
    if let serde_json::Value::Object(map) = backend {
        opts.backend_options = map;
    }
    opts
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return std::fs::metadata(path).map_or(0, |m| m.len());
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

/// Bytes under `topic_dir` in directories named `name`, over all buckets.
fn bytes_named(topic_dir: &Path, name: &str) -> u64 {
    std::fs::read_dir(topic_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| dir_bytes(&e.path().join(name)))
                .sum()
        })
        .unwrap_or(0)
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(&format!(
        "{what:>8} [{{bar:40}}] {{pos}}/{{len}} records, {{per_sec}}, {{elapsed}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// Writes, reopens, reads back, verifies and summarises.
pub async fn run(args: DemoArgs, metrics: bool) -> CliResult {
    if args.records == 0 {
        return Err("--records must be at least 1".to_owned());
    }
    let dir = args.dir.unwrap_or_else(default_dir);
    let topic_dir = dir.join(TOPIC);
    if topic_dir.exists() {
        eprintln!(
            "replacing the previous demo topic at {}",
            topic_dir.display()
        );
        std::fs::remove_dir_all(&topic_dir)
            .map_err(|e| format!("cannot remove {}: {e}", topic_dir.display()))?;
    }
    let e = |e: persisting::StorageError| e.to_string();

    // write through the queue: WAL on, zstd
    let system = QueueSystem::new();
    let writer = system
        .write_queue(TOPIC, queue_options(&dir, metrics))
        .await
        .map_err(e)?;
    let bar = progress(args.records, "write");
    let started = Instant::now();
    let mut i = 0;
    while i < args.records {
        let n = (args.records - i).min(BATCH as u64);
        let batch: Vec<Record> = (i..i + n).map(event).collect();
        writer.put_batch(batch).await.map_err(e)?;
        i += n;
        bar.set_position(i);
    }
    writer.flush().await.map_err(e)?;
    let write_secs = started.elapsed().as_secs_f64();
    bar.finish();
    for b in writer.buckets() {
        b.close().await.map_err(e)?;
    }
    drop(writer);
    drop(system);

    // reopen as a fresh process would, and read everything back
    let system = QueueSystem::new();
    let mut reader = system
        .read_queue(TOPIC, queue_options(&dir, metrics), Assignment::All)
        .await
        .map_err(e)?;
    let bar = progress(args.records, "read");
    let started = Instant::now();
    let mut seen = vec![false; args.records as usize];
    let mut read = 0u64;
    loop {
        let got = reader.get(Some(10_000)).await.map_err(e)?;
        if got.is_empty() {
            break;
        }
        for r in &got {
            let idx =
                index_of(r).ok_or_else(|| format!("read a record that was never written: {r}"))?;
            let slot = seen
                .get_mut(idx as usize)
                .ok_or_else(|| format!("read record {idx}, past the {} written", args.records))?;
            if std::mem::replace(slot, true) {
                return Err(format!("record {idx} was read twice"));
            }
            if *r != event(idx) {
                return Err(format!("record {idx} differs from what was written: {r}"));
            }
        }
        read += got.len() as u64;
        bar.set_position(read);
    }
    let read_secs = started.elapsed().as_secs_f64();
    bar.finish();
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(format!(
            "record {missing} was written but not read back ({read} of {} read)",
            args.records
        ));
    }

    let total = dir_bytes(&topic_dir);
    let wal = bytes_named(&topic_dir, WAL_DIR);
    let lance = bytes_named(&topic_dir, DATASET_DIR);
    let rows = [
        (
            "records",
            format!("{} written, {read} read back, all verified", args.records),
        ),
        (
            "write",
            format!(
                "{:.0} records/s ({write_secs:.2} s, WAL + zstd + Lance flushes)",
                args.records as f64 / write_secs
            ),
        ),
        (
            "read",
            format!(
                "{:.0} records/s ({read_secs:.2} s, after reopening)",
                read as f64 / read_secs
            ),
        ),
        (
            "bytes on disk",
            format!(
                "{total} ({:.1} bytes/record)",
                total as f64 / args.records as f64
            ),
        ),
        ("Lance datasets", format!("{lance} bytes")),
        ("WAL", format!("{wal} bytes (checkpointed after the flush)")),
        ("buckets", format!("{}", reader.offsets().len())),
        ("data", topic_dir.display().to_string()),
    ];
    crate::emit("");
    for (k, v) in rows {
        crate::emit(format!("{k:>15}  {v}"));
    }
    crate::emit(format!(
        "\nnext: persisting stats {} --topic {TOPIC}  |  persisting wal inspect {}/bucket_0",
        dir.display(),
        topic_dir.display()
    ));
    Ok(())
}

/// Writes `rate` records per second into the topic `metrics-demo` under `dir` (metrics
/// on), reading them back as they come, until Ctrl-C or `duration` seconds.
pub async fn steady_workload(dir: Option<PathBuf>, rate: u64, duration: Option<f64>) -> CliResult {
    let dir = dir.unwrap_or_else(default_dir);
    let e = |e: persisting::StorageError| e.to_string();
    let system = QueueSystem::new();
    let opts = queue_options(&dir, true);
    let writer = system
        .write_queue("metrics-demo", opts.clone())
        .await
        .map_err(e)?;
    let mut reader = system
        .read_queue("metrics-demo", opts, Assignment::All)
        .await
        .map_err(e)?;
    let tick = Duration::from_millis(100);
    let per_tick = (rate / 10).max(1);
    let deadline = duration.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut next = writer
        .buckets()
        .iter()
        .map(|b| b.total_count())
        .sum::<u64>();
    let mut interval = tokio::time::interval(tick);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = interval.tick() => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let batch: Vec<Record> = (next..next + per_tick).map(event).collect();
        writer.put_batch(batch).await.map_err(e)?;
        next += per_tick;
        reader.get(None).await.map_err(e)?;
    }
    for b in writer.buckets() {
        b.close().await.map_err(e)?;
    }
    eprintln!(
        "wrote up to record {next}; data in {}",
        dir.join("metrics-demo").display()
    );
    Ok(())
}

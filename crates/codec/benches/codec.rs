//! Encode/decode throughput and size of the binary record codec against serde_json on
//! the same realistic records. Criterion measures each side; the closing table gives
//! the ratios, measured in this same process.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use persisting_codec::{Record, decode_batch, encode_batch, record};

/// Records of the shape queues carry: ids, short strings, numbers, a 128-float
/// embedding and a 1 KiB text.
fn realistic(n: usize) -> Vec<Record> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let words = [
        "alpha", "beta", "gamma", "delta", "queue", "record", "lance", "wal",
    ];
    (0..n)
        .map(|i| {
            let text: String = (0..1024 / 8)
                .map(|_| format!("{:<8}", words[(next() % 8) as usize]))
                .collect();
            let embedding: Vec<f64> = (0..128)
                .map(|_| (next() % 2_000_000) as f64 / 1_000_000.0 - 1.0)
                .collect();
            record! {
                "id" => format!("evt-{i:08}"),
                "user" => format!("user-{}", next() % 10_000),
                "count" => (next() % 100_000) as i64,
                "score" => (next() % 1_000_000) as f64 / 7.0,
                "embedding" => embedding,
                "text" => text,
            }
        })
        .collect()
}

fn to_json(records: &[Record]) -> serde_json::Value {
    serde_json::Value::Array(records.iter().map(|r| r.to_json().unwrap()).collect())
}

fn per_second(mut f: impl FnMut(), budget: Duration) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let records = realistic(256);
    let binary = encode_batch(&records);
    let json = to_json(&records);
    let json_text = serde_json::to_vec(&json).unwrap();

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("codec_256_records");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("binary_encode", |b| {
        b.iter(|| encode_batch(black_box(&records)))
    });
    group.bench_function("binary_decode", |b| {
        b.iter(|| decode_batch(black_box(&binary)).unwrap())
    });
    group.bench_function("serde_json_encode", |b| {
        b.iter(|| serde_json::to_vec(black_box(&json)).unwrap())
    });
    group.bench_function("serde_json_decode", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&json_text)).unwrap())
    });
    group.finish();
    c.final_summary();

    // `cargo test --all-targets` runs benches once as smoke tests, without `--bench`:
    // the timed comparison below runs only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let budget = Duration::from_secs(2);
    let ours = per_second(
        || {
            let bytes = encode_batch(black_box(&records));
            black_box(decode_batch(&bytes).unwrap());
        },
        budget,
    );
    let theirs = per_second(
        || {
            let bytes = serde_json::to_vec(black_box(&json)).unwrap();
            black_box(serde_json::from_slice::<serde_json::Value>(&bytes).unwrap());
        },
        budget,
    );
    let n = records.len() as f64;
    println!();
    println!("| codec (256 realistic records) | encode+decode records/s | bytes/record |");
    println!("|---|---:|---:|");
    println!(
        "| persisting-codec v1 | {:.0} | {:.0} |",
        ours * n,
        binary.len() as f64 / n
    );
    println!(
        "| serde_json | {:.0} | {:.0} |",
        theirs * n,
        json_text.len() as f64 / n
    );
    println!(
        "ratio: throughput {:.2}x serde_json (floor 3x), size {:.2}x serde_json (ceiling 0.8x)",
        ours / theirs,
        binary.len() as f64 / json_text.len() as f64
    );
    // rows for `cargo xtask bench`
    println!(
        "BENCH-ROW|codec|encode+decode vs serde_json|{}|{}|records/s|{}|>=3",
        ours * n,
        theirs * n,
        ours / theirs
    );
    println!(
        "BENCH-ROW|codec|size vs serde_json|{}|{}|bytes/record|{}|<=0.8",
        binary.len() as f64 / n,
        json_text.len() as f64 / n,
        binary.len() as f64 / json_text.len() as f64
    );
}

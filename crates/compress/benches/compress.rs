//! MB/s and ratio of each codec on encoded record batches (the WAL's payloads).
//! Criterion measures each codec; the closing table gives MB/s and ratios measured in
//! this same process.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use persisting_codec::{Record, encode_batch, record};
use persisting_compress::{Codec, Compressor, decompress};

fn batch(n: usize) -> Vec<u8> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let words = [
        "alpha", "beta", "gamma", "delta", "queue", "record", "lance", "wal",
    ];
    let records: Vec<Record> = (0..n)
        .map(|i| {
            let text: String = (0..100 / 6)
                .map(|_| format!("{:<6}", words[(next() % 8) as usize]))
                .collect();
            record! {
                "id" => format!("evt-{i:08}"),
                "user" => format!("user-{}", next() % 1000),
                "count" => (next() % 100_000) as i64,
                "score" => (next() % 1_000_000) as f64 / 8.0,
                "text" => text,
            }
        })
        .collect();
    encode_batch(&records)
}

const CODECS: [Codec; 4] = [Codec::None, Codec::ZSTD, Codec::Lz4, Codec::Snappy];

fn mb_per_s(bytes: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        f();
        n += 1;
    }
    (bytes as f64 * n as f64) / start.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let data = batch(1000);
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("compress_1000_records");
    group.throughput(Throughput::Bytes(data.len() as u64));
    for codec in CODECS {
        let mut comp = Compressor::new(codec).unwrap();
        let frame = comp.compress(&data).unwrap();
        group.bench_function(format!("{}_compress", codec.name()), |b| {
            b.iter(|| comp.compress(black_box(&data)).unwrap())
        });
        group.bench_function(format!("{}_decompress", codec.name()), |b| {
            b.iter(|| decompress(black_box(&frame), 1 << 30).unwrap())
        });
    }
    group.finish();
    c.final_summary();

    // `cargo test --all-targets` runs benches once as smoke tests, without `--bench`:
    // the timed comparison below runs only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!();
    println!("| codec | ratio (compressed/raw) | compress MB/s | decompress MB/s |");
    println!("|---|---:|---:|---:|");
    for codec in CODECS {
        let mut comp = Compressor::new(codec).unwrap();
        let frame = comp.compress(&data).unwrap();
        let enc = mb_per_s(data.len(), || {
            black_box(comp.compress(&data).unwrap());
        });
        let dec = mb_per_s(data.len(), || {
            black_box(decompress(&frame, 1 << 30).unwrap());
        });
        let ratio = frame.len() as f64 / data.len() as f64;
        println!("| {} | {ratio:.3} | {enc:.0} | {dec:.0} |", codec.name());
        // rows for `cargo xtask bench`: MB/s, compressed over raw bytes as the ratio
        println!(
            "BENCH-ROW|compress|{} compress (ratio = compressed/raw size)|{enc}|{dec}|MB/s vs decompress MB/s|{ratio}|-",
            codec.name()
        );
    }
    println!(
        "input: {} bytes of encoded records (1000 records)",
        data.len()
    );
}

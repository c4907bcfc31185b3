//! Criterion benches of WAL appends: `Os` with 16 KiB payloads, `Always` with 200-byte
//! payloads, and batches. The comparison with baselines is `benches/compare.rs`.
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use persisting_wal::{SyncPolicy, Wal, WalOptions};

fn appends(c: &mut Criterion) {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut group = c.benchmark_group("wal_append");

    let opts = WalOptions {
        sync: SyncPolicy::Os,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(tmp.path().join("os"), opts).unwrap();
    let big = vec![1u8; 16 << 10];
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("os_16KiB", |b| b.iter(|| wal.append(&big).unwrap()));
    drop(wal);

    let batch: Vec<Vec<u8>> = (0..100).map(|_| vec![2u8; 200]).collect();
    let opts = WalOptions {
        sync: SyncPolicy::Os,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(tmp.path().join("batch"), opts).unwrap();
    group.throughput(Throughput::Elements(100));
    group.bench_function("os_batch_100x200B", |b| {
        b.iter(|| wal.append_batch(&batch).unwrap())
    });
    drop(wal);

    let (wal, _) = Wal::open(tmp.path().join("always"), WalOptions::default()).unwrap();
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.bench_function("always_200B", |b| {
        b.iter(|| wal.append(&[3u8; 200]).unwrap())
    });
    group.finish();
}

criterion_group!(benches, appends);
criterion_main!(benches);

//! Every way of reading returns the same records: sequential reads that continue one
//! read-ahead scan (across fragments, windows and flushes), small random reads taken
//! by offset, large random reads, reads spanning the dataset and the buffer, and
//! concurrent readers.

use persisting_codec::{Record, record};
use persisting_lance::{LanceBucket, LanceOptions};

use crate::rt;

fn rec(i: u64) -> Record {
    if i.is_multiple_of(5) {
        record! {"id" => i as i64, "s" => format!("r{i}"), "f" => i as f64 / 2.0}
    } else {
        record! {"id" => i as i64, "s" => format!("r{i}")}
    }
}

async fn bucket(dir: &std::path::Path, flush_threshold: usize) -> LanceBucket {
    LanceBucket::open(
        dir,
        LanceOptions {
            flush_threshold,
            compact_fragments_max: 0,
            ..LanceOptions::default()
        },
    )
    .await
    .unwrap()
}

#[test]
fn sequential_random_and_spanning_reads_agree() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = bucket(dir.path(), 37).await;
        let all: Vec<Record> = (0..3000).map(rec).collect();
        for chunk in all[..2980].chunks(50) {
            b.append(chunk.to_vec()).await.unwrap();
        }
        b.put_batch(all[2980..].to_vec()).unwrap();
        assert!(b.buffered_count() > 0, "some records stay in the buffer");
        let total = b.total_count();
        for step in [1usize, 7, 100, 1024, 1025, 2999] {
            let mut at = 0u64;
            let mut got = Vec::new();
            while at < total {
                let part = b.read(at, step).await.unwrap();
                assert!(!part.is_empty());
                at += part.len() as u64;
                got.extend(part);
            }
            assert_eq!(got, all, "sequential reads of {step}");
        }
        let mut x = 12345u64;
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = x % total;
            let n = [1usize, 100, 1500][(x % 3) as usize];
            let end = (off as usize + n).min(all.len());
            assert_eq!(
                b.read(off, n).await.unwrap(),
                all[off as usize..end],
                "read({off}, {n})"
            );
        }
    });
}

#[test]
fn a_sequential_reader_sees_records_flushed_between_its_reads() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = bucket(dir.path(), 0).await;
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for round in 0..20u64 {
            let batch: Vec<Record> = (round * 100..round * 100 + 100).map(rec).collect();
            expected.extend(batch.clone());
            b.append(batch).await.unwrap();
            if round % 3 != 2 {
                b.flush().await.unwrap();
            }
            // read 60 at a time, so reads straddle flushes and the buffer
            loop {
                let part = b.read(got.len() as u64, 60).await.unwrap();
                if part.is_empty() {
                    break;
                }
                got.extend(part);
            }
        }
        assert_eq!(got, expected);
    });
}

#[test]
fn concurrent_readers_each_get_their_own_range() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = bucket(dir.path(), 500).await;
        let all: Vec<Record> = (0..4000).map(rec).collect();
        b.append(all.clone()).await.unwrap();
        b.flush().await.unwrap();
        let b = std::sync::Arc::new(b);
        let readers: Vec<_> = (0..4u64)
            .map(|r| {
                let b = b.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut at = r * 1000;
                    while at < (r + 1) * 1000 {
                        let part = b
                            .read(at, 130.min((r + 1) * 1000 - at) as usize)
                            .await
                            .unwrap();
                        at += part.len() as u64;
                        got.extend(part);
                    }
                    got
                })
            })
            .collect();
        for (r, h) in readers.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), all[r * 1000..(r + 1) * 1000]);
        }
    });
}

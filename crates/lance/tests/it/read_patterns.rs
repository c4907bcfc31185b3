//! Every way of reading returns the same records: sequential reads that continue one
//! read-ahead scan (across fragments, windows and flushes), small random reads taken
//! by offset, large random reads, reads spanning the dataset and the buffer, and
//! concurrent readers.

use persisting_codec::{Record, record};
use persisting_lance::{LanceBucket, LanceOptions};

use crate::rt;

/// The next number of a xorshift sequence (reads at offsets spread over a bucket).
fn xorshift(x: &mut u64) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
}

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
            xorshift(&mut x);
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

/// Records of many shapes: other field orders (kept whole in the layout column),
/// absent fields, explicit nulls, strings of every length, lists, maps, and an int
/// field that later holds floats (widened).
fn varied(i: u64) -> Record {
    let text = "x".repeat((i * 7 % 130) as usize);
    match i % 6 {
        0 => record! {"id" => i as i64, "s" => text, "f" => i as f64 / 4.0},
        1 => record! {"s" => text, "id" => i as i64},
        2 => record! {"id" => i as i64, "s" => persisting_codec::Value::Null},
        3 => record! {"id" => i as i64, "l" => vec![i as i64, 2, 3], "m" => record! {"k" => text}},
        4 => record! {"id" => i as i64},
        _ => record! {"id" => i as i64, "s" => format!("{i}"), "n" => i as i64 * 3},
    }
}

/// A bucket of [`varied`] records over fragments, one widened column and the buffer,
/// and the records it holds.
async fn varied_bucket(dir: &std::path::Path) -> (LanceBucket, Vec<Record>) {
    let mut b = bucket(dir, 0).await;
    let mut all: Vec<Record> = (0..2400).map(varied).collect();
    for (k, chunk) in all.chunks(300).enumerate() {
        b.append(chunk.to_vec()).await.unwrap();
        if k % 3 != 2 {
            b.flush().await.unwrap();
        }
    }
    // a float into the int field "n": the column is widened
    let widened = record! {"id" => 2400i64, "n" => 0.5};
    b.put_batch(vec![widened.clone()]).unwrap();
    b.flush().await.unwrap();
    for r in &mut all {
        if let Some(persisting_codec::Value::Int(n)) = r.get("n").cloned() {
            r.insert("n", n as f64);
        }
    }
    all.push(widened);
    b.put_batch((2401..2450).map(varied).collect()).unwrap();
    all.extend((2401..2450).map(varied));
    assert!(b.buffered_count() > 0, "some records stay in the buffer");
    (b, all)
}

#[test]
fn reads_into_one_vec_return_what_read_returns_whatever_the_vec_held() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (b, all) = varied_bucket(dir.path()).await;
        let total = b.total_count();
        assert_eq!(total, all.len() as u64);

        // the Vec starts with records of no shape the bucket has
        let mut into = vec![record! {"other" => "z".repeat(500), "q" => 1i64}; 3000];
        for step in [1usize, 64, 1000, 2999] {
            let mut at = 0u64;
            while at < total {
                b.read_into(at, step, &mut into).await.unwrap();
                let end = (at as usize + step).min(all.len());
                assert_eq!(into, all[at as usize..end], "read_into({at}, {step})");
                at += into.len() as u64;
            }
        }
        let mut x = 777u64;
        for _ in 0..100 {
            xorshift(&mut x);
            let off = x % (total + 10);
            let n = [0usize, 1, 100, 1500][(x % 4) as usize];
            b.read_into(off, n, &mut into).await.unwrap();
            assert_eq!(into, b.read(off, n).await.unwrap(), "read_into({off}, {n})");
            let end = (off as usize + n).min(all.len());
            assert_eq!(
                into,
                all[(off as usize).min(end)..end],
                "read_into({off}, {n})"
            );
        }
    });
}

/// Rows handed over unbuilt walk to exactly the records `read` returns (field order,
/// explicit nulls, absent fields, nested values, widened ints, layout rows, buffered
/// records), for sequential reads and reads anywhere.
#[test]
fn rows_walk_to_what_read_returns() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (b, all) = varied_bucket(dir.path()).await;
        let total = b.total_count();
        for step in [1usize, 700, 2999] {
            let mut at = 0u64;
            while at < total {
                let rows = b.read_rows(at, step).await.unwrap();
                let end = (at as usize + step).min(all.len());
                assert_eq!(rows.len(), end - at as usize);
                let got = rows.into_records().unwrap();
                assert_eq!(got, all[at as usize..end], "read_rows({at}, {step})");
                at += got.len() as u64;
            }
        }
        let mut x = 4242u64;
        for _ in 0..60 {
            xorshift(&mut x);
            let off = x % (total + 10);
            let n = [0usize, 1, 100, 1500][(x % 4) as usize];
            let got = b.read_rows(off, n).await.unwrap().into_records().unwrap();
            assert_eq!(got, b.read(off, n).await.unwrap(), "read_rows({off}, {n})");
        }
    });
}

/// Reads not continuing one another, each within or across fragments of 50 rows.
const SMALL_READS: [(u64, usize); 5] = [(0, 10), (45, 10), (120, 100), (399, 5), (30, 300)];

async fn check_small_reads(b: &LanceBucket, all: &[Record]) {
    for (off, n) in SMALL_READS {
        let end = (off as usize + n).min(all.len());
        assert_eq!(
            b.read(off, n).await.unwrap(),
            all[off as usize..end],
            "read({off}, {n})"
        );
    }
}

/// Small reads go through fragment readers kept open between reads: after a column is
/// added, a column widened (its data files rewritten) and fragments compacted (new
/// fragments), the same reads see the dataset as it is now.
#[test]
fn small_reads_see_added_widened_and_compacted_columns() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = bucket(dir.path(), 0).await;
        let mut all: Vec<Record> = (0..400)
            .map(|i| record! {"id" => i as i64, "n" => i as i64})
            .collect();
        for chunk in all.chunks(50) {
            b.append(chunk.to_vec()).await.unwrap();
            b.flush().await.unwrap();
        }
        check_small_reads(&b, &all).await;

        // a new field: every fragment's reader must now yield the new column
        let added = record! {"id" => 400i64, "n" => 400i64, "tag" => "new"};
        b.append(vec![added.clone()]).await.unwrap();
        b.flush().await.unwrap();
        all.push(added);
        check_small_reads(&b, &all).await;

        // a float into "n": the column is rewritten, the fragments' files change
        let widened = record! {"id" => 401i64, "n" => 0.5};
        b.append(vec![widened.clone()]).await.unwrap();
        b.flush().await.unwrap();
        for r in &mut all {
            if let Some(persisting_codec::Value::Int(n)) = r.get("n").cloned() {
                r.insert("n", n as f64);
            }
        }
        all.push(widened);
        check_small_reads(&b, &all).await;

        // compaction: new fragments, same offsets
        let before = b.stats().fragments;
        b.compact().await.unwrap();
        assert!(b.stats().fragments < before, "compaction merged fragments");
        check_small_reads(&b, &all).await;
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

/// Small reads run on the caller's thread when it is a thread of a multi-threaded
/// runtime (a worker or the `block_on` thread), and on a reader thread otherwise (a
/// current-thread runtime): every one of these callers gets the same records, from
/// fragments and from the buffer.
#[test]
fn small_reads_agree_whatever_runtime_and_thread_make_them() {
    async fn check(b: &LanceBucket, all: &[Record]) {
        for (off, n) in [(0, 10), (120, 100), (399, 5), (600, 90), (690, 20)] {
            let end = (off as usize + n).min(all.len());
            assert_eq!(
                b.read(off, n).await.unwrap(),
                all[off as usize..end],
                "read({off}, {n})"
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<Record> = (0..710).map(rec).collect();
    let mt = rt();
    let b = mt.block_on(async {
        let mut b = bucket(dir.path(), 128).await;
        for chunk in all[..700].chunks(100) {
            b.append(chunk.to_vec()).await.unwrap();
        }
        b.flush().await.unwrap();
        b.append(all[700..].to_vec()).await.unwrap();
        assert!(b.stats().fragments >= 3, "{:?}", b.stats());
        assert_eq!(b.stats().buffered_count, 10, "{:?}", b.stats());
        check(&b, &all).await;
        b
    });
    let b = std::sync::Arc::new(b);
    let in_task = std::sync::Arc::clone(&b);
    let expected = all.clone();
    mt.block_on(async move {
        tokio::spawn(async move { check(&in_task, &expected).await })
            .await
            .unwrap();
    });
    let ct = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    ct.block_on(check(&b, &all));
}

/// `read` returns the dataset's strings as ranges of shared text blocks, equal to the
/// strings written; a string detached from its block, or a record kept after the
/// others are dropped, still reads the same.
#[test]
fn strings_read_from_the_dataset_share_blocks_and_equal_what_was_written() {
    use persisting_codec::Value;
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = bucket(dir.path(), 10_000).await;
        let all: Vec<Record> = (0..500).map(varied).collect();
        b.append(all.clone()).await.unwrap();
        b.flush().await.unwrap();
        let got = b.read(0, all.len()).await.unwrap();
        assert_eq!(got, all);
        let shared = got
            .iter()
            .filter_map(|r| match r.get("s") {
                Some(Value::String(s)) => Some(s.is_shared()),
                _ => None,
            })
            .collect::<Vec<_>>();
        assert!(shared.len() > 100 && shared.iter().filter(|s| **s).count() > 100);
        let mut kept = got[7].clone();
        drop(got);
        assert_eq!(kept, all[7]);
        if let Some(Value::String(s)) = kept.get_mut("s") {
            s.detach();
            assert!(!s.is_shared());
        }
        assert_eq!(kept, all[7]);
    });
}

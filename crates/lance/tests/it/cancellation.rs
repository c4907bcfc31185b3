//! A flush whose future is dropped part way (a caller's timeout, a cancelled task) may
//! have committed: the next flush must find out, never append the same records twice
//! and never lose one.

use std::time::Duration;

use persisting_codec::{Record, record};
use persisting_lance::{LanceBucket, LanceOptions};

use crate::rt;

/// Options that flush only when asked; `parts`: flushes of 20 records or more write
/// their data files in parts at once (fragments of 10 records are not small).
fn options(parts: bool) -> LanceOptions {
    LanceOptions {
        flush_threshold: 0,
        target_rows_per_fragment: if parts { 320 } else { 1 << 20 },
        ..LanceOptions::default()
    }
}

async fn open(dir: &std::path::Path, parts: bool) -> LanceBucket {
    LanceBucket::open(dir, options(parts)).await.unwrap()
}

#[test]
fn a_flush_cancelled_at_any_point_neither_duplicates_nor_loses_records() {
    cancelled_flushes(false);
}

#[test]
fn a_flush_written_in_parts_cancelled_at_any_point_neither_duplicates_nor_loses_records() {
    cancelled_flushes(true);
}

fn cancelled_flushes(parts: bool) {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path(), parts).await;
        let mut all: Vec<Record> = Vec::new();
        let mut cancelled = 0;
        for step in 0..40u64 {
            let batch: Vec<Record> = (0..50)
                .map(|i| {
                    let n = step * 50 + i;
                    // a new field now and then: the flush also commits schema changes
                    if i == 0 && step % 7 == 3 {
                        record! {"n" => n as i64, format!("f{step}") => "new"}
                    } else {
                        record! {"n" => n as i64}
                    }
                })
                .collect();
            b.put_batch(batch.clone()).unwrap();
            all.extend(batch);
            // cut the flush after a growing delay: sooner or later at every await
            let cut = Duration::from_micros(step * step * 20);
            if tokio::time::timeout(cut, b.flush()).await.is_err() {
                cancelled += 1;
            }
            if step % 5 == 4 {
                b.flush().await.unwrap();
                assert_eq!(b.persisted_count(), all.len() as u64, "step {step}");
            }
            assert_eq!(b.total_count(), all.len() as u64, "step {step}");
            assert_eq!(b.read(0, usize::MAX).await.unwrap(), all, "step {step}");
        }
        assert!(cancelled > 3, "the sweep cut only {cancelled} flushes");
        b.flush().await.unwrap();
        drop(b);
        let b = open(dir.path(), parts).await;
        assert_eq!(b.persisted_count(), all.len() as u64);
        assert_eq!(b.read(0, usize::MAX).await.unwrap(), all);
    });
}

/// A flush cut after its commit started leaves the commit running: a handle opened
/// meanwhile (the first one dropped) must count the rows it lands, or its offsets
/// would be wrong and its first flush would append over them.
#[test]
fn a_handle_opened_after_a_cancelled_flush_waits_for_its_commit() {
    handle_after_cancelled_flush(false);
}

#[test]
fn a_handle_opened_after_a_cancelled_flush_in_parts_waits_for_its_commit() {
    handle_after_cancelled_flush(true);
}

fn handle_after_cancelled_flush(parts: bool) {
    rt().block_on(async {
        let mut running = 0;
        for step in 0..30u64 {
            let dir = tempfile::tempdir().unwrap();
            let mut b = open(dir.path(), parts).await;
            b.put_batch((0..100).map(|i| record! {"n" => i}).collect())
                .unwrap();
            b.flush().await.unwrap();
            b.put_batch((100..200).map(|i| record! {"n" => i}).collect())
                .unwrap();
            let cut = Duration::from_micros(step * step * 10);
            if tokio::time::timeout(cut, b.flush()).await.is_ok() {
                continue;
            }
            drop(b);
            let again = open(dir.path(), parts).await;
            let counted = again.persisted_count();
            // whatever was running has landed by now
            tokio::time::sleep(Duration::from_millis(300)).await;
            let later = open(dir.path(), parts).await;
            assert_eq!(counted, later.persisted_count(), "step {step}");
            if counted == 200 {
                running += 1;
            }
        }
        assert!(running > 0, "no cut flush had started its commit");
    });
}

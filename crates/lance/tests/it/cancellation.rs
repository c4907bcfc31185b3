//! A flush whose future is dropped part way (a caller's timeout, a cancelled task) may
//! have committed: the next flush must find out, never append the same records twice
//! and never lose one.

use std::time::Duration;

use persisting_codec::{Record, record};
use persisting_lance::{LanceBucket, LanceOptions};

use crate::rt;

#[test]
fn a_flush_cancelled_at_any_point_neither_duplicates_nor_loses_records() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = LanceOptions {
            flush_threshold: 0,
            ..LanceOptions::default()
        };
        let mut b = LanceBucket::open(dir.path(), opts.clone()).await.unwrap();
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
        let b = LanceBucket::open(dir.path(), opts).await.unwrap();
        assert_eq!(b.persisted_count(), all.len() as u64);
        assert_eq!(b.read(0, usize::MAX).await.unwrap(), all);
    });
}

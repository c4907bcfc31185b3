//! 8 writers and 8 blocked readers: every reader sees every record once, in offset
//! order.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use persisting::{PersistingBackend, PersistingOptions, StorageBackend, record};

use crate::rt;

#[test]
fn eight_writers_eight_blocked_readers() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = PersistingOptions {
            enable_wal: true,
            wal_sync_interval: Duration::ZERO,
            flush_threshold: 150,
            ..PersistingOptions::default()
        };
        let b = PersistingBackend::open(0, dir.path(), opts).await.unwrap();
        let per_writer = 50usize;
        let total = 8 * per_writer;
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    b.get_stream(0, Some(total), true)
                        .map(|r| r.unwrap())
                        .collect::<Vec<_>>()
                        .await
                })
            })
            .collect();
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let b = b.clone();
                tokio::spawn(async move {
                    for i in 0..per_writer {
                        b.put(record! {"w" => w as i64, "i" => i as i64})
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let stored = b.get(0, None).await.unwrap();
        assert_eq!(stored.len(), total);
        let keys: HashSet<(i64, i64)> = stored
            .iter()
            .map(|r| (r["w"].as_i64().unwrap(), r["i"].as_i64().unwrap()))
            .collect();
        assert_eq!(keys.len(), total, "no record twice, none lost");
        // each writer's records are in its own order
        for w in 0..8 {
            let mine: Vec<i64> = stored
                .iter()
                .filter(|r| r["w"].as_i64() == Some(w))
                .map(|r| r["i"].as_i64().unwrap())
                .collect();
            assert_eq!(mine, (0..per_writer as i64).collect::<Vec<_>>());
        }
        for r in readers {
            let seen = tokio::time::timeout(Duration::from_secs(60), r)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                seen, stored,
                "a blocked reader sees every record once, in order"
            );
        }
    });
}

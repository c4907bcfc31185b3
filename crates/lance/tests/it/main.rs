//! Integration tests of persisting-lance, one module per behaviour. Every test writes
//! a real Lance dataset in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod arrow_reads;
mod cancellation;
mod compaction;
mod consumer_groups;
mod damaged_files;
mod foreign_datasets;
mod power_loss;
mod pylance_compat;
mod read_patterns;
mod remote;
mod retention;
mod retries;
mod round_trip;
mod schema_evolution;

use persisting_lance::{LanceBucket, LanceOptions};

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub async fn open(dir: &std::path::Path) -> LanceBucket {
    LanceBucket::open(dir, LanceOptions::default())
        .await
        .unwrap()
}

/// A bucket that flushes only when asked.
pub async fn open_without_auto_flush(dir: &std::path::Path) -> LanceBucket {
    LanceBucket::open(
        dir,
        LanceOptions {
            flush_threshold: 0,
            ..LanceOptions::default()
        },
    )
    .await
    .unwrap()
}

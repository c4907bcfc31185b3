//! Integration tests of the `persisting` facade, one module per behaviour. Lance
//! datasets and WALs are real files in temporary directories.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod arrow_reads;
mod concurrency;
mod consumer_groups;
mod crash_recovery;
mod metrics;
mod object_store;
mod options_and_errors;
mod queue;
mod retention;
mod seed_examples;
mod store_outage;

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

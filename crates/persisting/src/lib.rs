//! Persisting: durable storage for bucketed record queues.
//!
//! A queue topic is split into buckets; each bucket is an append-only log of records
//! addressed by dense offsets. [`PersistingBackend`] stores a bucket as a Lance dataset
//! with a segmented write-ahead log in front of it, so an acknowledged record survives a
//! crash before it reaches Lance; [`LanceBackend`] is the same without the WAL; and
//! [`MemoryBackend`] keeps records in memory. All implement [`StorageBackend`].
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use futures::StreamExt;
//! use persisting::{LanceBackend, StorageBackend, record};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let backend = LanceBackend::open(0, dir.path(), 100, 1000).await.unwrap();
//! backend.put(record! {"id" => "1", "value" => 42}).await.unwrap();
//! backend.flush().await.unwrap();
//! let records = backend.get(0, Some(10)).await.unwrap();
//! assert_eq!(records[0]["value"].as_i64(), Some(42));
//! let streamed: Vec<_> = backend.get_stream(0, None, false).collect().await;
//! assert_eq!(streamed.len(), 1);
//! # });
//! ```
//!
//! # Durability
//!
//! | backend | `put` returns when | survives a process crash | survives a power loss |
//! |---|---|---|---|
//! | `MemoryBackend` | in memory | no | no |
//! | `LanceBackend`, `PersistingBackend` without WAL | in the buffer | after the next `flush` | after the next `flush` |
//! | `PersistingBackend`, WAL, `wal_sync_interval > 0` | written to the WAL | yes | all but the last interval |
//! | `PersistingBackend`, WAL, `wal_sync_interval = 0` | written and fsynced (group commit) | yes | yes |
//!
//! `flush` makes the buffer a durable Lance commit (its files fsynced) before the WAL is
//! checkpointed.
#![deny(missing_docs)]

mod backend;
mod bucket;
mod bucketing;
mod diagnostics;
mod error;
pub mod groups;
mod layout;
mod memory;
mod metrics;
mod options;
pub mod outage;
mod queue;

pub use backend::{BackendStats, StorageBackend, record_stream};
pub use bucket::{LanceBackend, PersistingBackend};
pub use diagnostics::{is_diagnostic, log_to_stderr};
pub use error::{BucketError, NoRoom, OptionsError, QueueError, Result, StorageError, WALError};
pub use groups::{BucketGroups, GroupLag};
pub use layout::{LOCK_FILE, WAL_DIR, WRITER_FILE};
pub use memory::MemoryBackend;
pub use metrics::{
    DURATION_BUCKETS, MetricsEndpoint, MetricsRecorder, install_metrics_recorder, serve_metrics,
};
pub use options::{KNOWN_OPTIONS, PersistingOptions};
pub use persisting_lance::{GroupOffset, validate_group};
pub use queue::{
    Assignment, BackendFactory, BucketSpec, QueueOptions, QueueReader, QueueSystem, QueueWriter,
    Registry, Topic, bucket_dir_name, bucket_path, python_str, validate_topic,
};

pub use persisting_codec as codec;
pub use persisting_codec::{Record, Str, Value, record};
pub use persisting_compress as compress;
pub use persisting_compress::Codec;
pub use persisting_lance as lance;
pub use persisting_wal as wal;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

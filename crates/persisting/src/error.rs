//! `StorageError`, the error of every storage operation, and `WALError`, the WAL's
//! own error, which converts into it.
//!
//! `StorageError` says which part failed: a layer below (the WAL, Lance, the codec,
//! compression, each error passed on whole), the options given (`OptionsError`), a
//! bucket (`BucketError`), a queue (`QueueError`), or the metrics endpoint. Each
//! broken invariant is a variant of its own, never a string catch-all.

use std::path::PathBuf;

/// The WAL's error (`persisting_wal::Error`): segment, offset, checksums.
pub use persisting_wal::Error as WALError;

/// Result type of this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// What went wrong in a storage operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The write-ahead log failed.
    #[error(transparent)]
    Wal(#[from] WALError),
    /// The Lance layer failed (including schema conflicts).
    #[error(transparent)]
    Lance(#[from] persisting_lance::Error),
    /// A record could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] persisting_codec::Error),
    /// A compression frame could not be written or read.
    #[error(transparent)]
    Compress(#[from] persisting_compress::Error),
    /// The options given were refused (nothing was opened or changed).
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// A bucket refused an operation or found its storage inconsistent.
    #[error(transparent)]
    Bucket(#[from] BucketError),
    /// A queue refused a topic or a record.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The metrics endpoint could not be started.
    #[error("the metrics endpoint could not start on {endpoint}: {reason}")]
    Metrics {
        /// The address asked for (or `in-process`).
        endpoint: String,
        /// Why it could not start.
        reason: String,
    },
}

/// Options refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// An option with a value it cannot take.
    #[error("invalid option {name} = {value}: {reason}")]
    Invalid {
        /// The option's name.
        name: String,
        /// The value given.
        value: String,
        /// What a valid value looks like.
        reason: String,
    },
    /// A backend name that is not registered.
    #[error("no backend named {name:?}; registered backends: {}", available.join(", "))]
    UnknownBackend {
        /// The name asked for.
        name: String,
        /// The registered names.
        available: Vec<String>,
    },
}

/// What a bucket refused or found wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BucketError {
    /// The WAL starts after the last record in Lance: records in between are lost.
    #[error(
        "the WAL in {wal_dir} starts at offset {wal_first}, but Lance holds only offsets below {persisted}: records {persisted}..{wal_first} are missing"
    )]
    WalGap {
        /// The WAL directory.
        wal_dir: PathBuf,
        /// Records in Lance.
        persisted: u64,
        /// First offset the WAL holds.
        wal_first: u64,
    },
    /// The WAL appended a batch at another offset than the bucket admitted it at: the
    /// two disagree on the next offset, and the bucket refuses every later put rather
    /// than write records at the wrong offsets.
    #[error(
        "bucket {bucket_id}: the WAL appended at offset {wal_at} a batch the bucket admitted at {bucket_at}; refusing to go on"
    )]
    OffsetMismatch {
        /// The bucket.
        bucket_id: u64,
        /// Where the WAL appended the batch.
        wal_at: u64,
        /// Where the bucket admitted it.
        bucket_at: u64,
    },
    /// The backend was closed.
    #[error("the backend of bucket {bucket_id} is closed")]
    Closed {
        /// The bucket.
        bucket_id: u64,
    },
    /// Another handle (in this or another process) has the bucket open for writing.
    #[error(
        "the bucket at {path} is open in another handle or process (lock file {path}/LOCK is held)"
    )]
    Locked {
        /// The bucket's storage path.
        path: PathBuf,
    },
    /// The bucket's lock file could not be created or locked.
    #[error("could not lock {path}/LOCK: {source}")]
    Lock {
        /// The bucket's storage path.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A write to a bucket opened for reading only (another process holds its lock).
    #[error("the bucket at {path} is open read-only here (another process writes it)")]
    ReadOnly {
        /// The bucket's storage path.
        path: PathBuf,
    },
    /// An operation this kind of backend does not offer (consumer groups of a
    /// `MemoryBackend`, whose records do not outlive the process).
    #[error("the backend {backend} does not support {operation}")]
    Unsupported {
        /// The backend's type.
        backend: &'static str,
        /// What was asked.
        operation: &'static str,
    },
    /// A put found no room within `put_timeout`: what is not committed yet is at its
    /// bound because the store has not taken the commits that would free it (see
    /// [`NoRoom`]). Nothing of the batch is stored; it may be retried.
    #[error(transparent)]
    StoreUnavailable(Box<NoRoom>),
    /// The blocking task doing `op` ended without an outcome (it panicked or its
    /// runtime shut down): what it did is unknown, and the next open recovers it.
    #[error("the task that was to {op} ended without an outcome: {reason}")]
    TaskLost {
        /// What the task was doing.
        op: &'static str,
        /// How it ended.
        reason: String,
    },
}

/// Why a put found no room ([`BucketError::StoreUnavailable`]): the bound reached
/// (`max_unflushed_bytes`, or the WAL at `max_wal_size`), how long the put waited,
/// and the state of the store.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "bucket {bucket_id}: no room for a batch of {batch_bytes} bytes after waiting {waited:.1?}: {held_bytes} bytes wait to be committed to {uri} ({bound} = {bound_bytes}); {}",
    store_state(.last_error.as_deref(), *.failing_for)
)]
#[non_exhaustive]
pub struct NoRoom {
    /// The bucket.
    pub bucket_id: u64,
    /// Where its data lives (a path, or a URI such as `s3://…`).
    pub uri: String,
    /// Encoded bytes of the refused batch.
    pub batch_bytes: u64,
    /// Bytes held against the bound.
    pub held_bytes: u64,
    /// The bound reached: `max_unflushed_bytes` or `max_wal_size`.
    pub bound: &'static str,
    /// Its value.
    pub bound_bytes: u64,
    /// How long the put waited (`put_timeout`).
    pub waited: std::time::Duration,
    /// The last flush error, while flushes fail.
    pub last_error: Option<String>,
    /// How long flushes have failed.
    pub failing_for: Option<std::time::Duration>,
}

/// The state of a bucket's store, for [`NoRoom`].
fn store_state(last_error: Option<&str>, failing_for: Option<std::time::Duration>) -> String {
    match (last_error, failing_for) {
        (Some(e), Some(d)) => format!("flushes have failed for {:.1} s: {e}", d.as_secs_f64()),
        (Some(e), None) => format!("the last flush failed: {e}"),
        _ => "no flush has failed: the store is slower than the puts".to_owned(),
    }
}

/// What a queue refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// A topic name that is not a single ordinary path component.
    #[error("topic {topic:?} is not a valid name: it {reason}")]
    InvalidTopic {
        /// The topic.
        topic: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A commit asked of a reader opened without a consumer group.
    #[error("this reader has no consumer group to commit for: open it with read_queue_in_group")]
    NoGroup,
    /// A record without the queue's bucket column.
    #[error("the record has no {column:?} field, which picks its bucket")]
    MissingBucketColumn {
        /// The bucket column.
        column: String,
    },
}

impl StorageError {
    /// An [`OptionsError::Invalid`]: option `name` cannot take `value`.
    pub fn invalid(name: &str, value: impl ToString, reason: impl ToString) -> Self {
        OptionsError::Invalid {
            name: name.to_owned(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
        .into()
    }

    /// Whether an option value was refused (here, by the WAL or by the Lance layer).
    pub fn is_invalid_option(&self) -> bool {
        matches!(
            self,
            StorageError::Options(OptionsError::Invalid { .. })
                | StorageError::Wal(WALError::InvalidOption { .. })
                | StorageError::Lance(persisting_lance::Error::InvalidOption { .. })
        )
    }
}

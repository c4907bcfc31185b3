//! `StorageError`, the error of every storage operation, and `WALError`, the WAL's
//! own error, which converts into it.

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
    /// An option with a value it cannot take.
    #[error("invalid option {name} = {value}: {reason}")]
    InvalidOption {
        /// The option's name.
        name: String,
        /// The value given.
        value: String,
        /// What a valid value looks like.
        reason: String,
    },
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
    /// The backend was closed.
    #[error("the backend of bucket {bucket_id} is closed")]
    Closed {
        /// The bucket.
        bucket_id: u64,
    },
    /// A backend name that is not registered.
    #[error("no backend named {name:?}; registered backends: {}", available.join(", "))]
    UnknownBackend {
        /// The name asked for.
        name: String,
        /// The registered names.
        available: Vec<String>,
    },
    /// A topic name that is not a single ordinary path component.
    #[error("topic {topic:?} is not a valid name: it {reason}")]
    InvalidTopic {
        /// The topic.
        topic: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A record without the queue's bucket column.
    #[error("the record has no {column:?} field, which picks its bucket")]
    MissingBucketColumn {
        /// The bucket column.
        column: String,
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
    /// The metrics endpoint could not be started.
    #[error("the metrics endpoint could not start on {0}")]
    Metrics(String),
    /// A background task failed to run to completion.
    #[error("a background task failed: {0}")]
    Task(String),
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
}

impl StorageError {
    pub(crate) fn invalid(name: &str, value: impl ToString, reason: impl ToString) -> Self {
        StorageError::InvalidOption {
            name: name.to_owned(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

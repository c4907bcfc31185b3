//! Records stored as a Lance dataset: one bucket of a Persisting queue.
//!
//! [`LanceBucket`] infers an Arrow schema from records (bool, int64, float64, utf8,
//! binary, lists of scalars, nested maps as structs; mixed lists as codec-encoded
//! values),
//! evolves it at put time (new fields become all-null columns; an int64 field that
//! receives a float is rewritten as float64), buffers records, appends the buffer to
//! `{storage_path}/data.lance` as one commit per flush and fsyncs what the commit wrote
//! (Lance's local store does not), and reads any offset range back across the dataset
//! and the buffer: as records ([`LanceBucket::read`], or [`LanceBucket::read_into`]
//! reusing the records of a caller's `Vec`) or, copy-free, as Arrow record batches
//! ([`LanceBucket::read_arrow`]), all checked row by row.
//!
//! Records read back equal the records written: field order, absent fields and explicit
//! nulls included (rows the typed columns cannot reproduce exactly carry their codec
//! encoding in the `_persisting_record` column). The one allowed change is an integer
//! in a column widened to float64, which reads back as a float.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use persisting_codec::record;
//! use persisting_lance::{LanceBucket, LanceOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut bucket = LanceBucket::open(dir.path(), LanceOptions::default()).await.unwrap();
//! let offsets = bucket.put_batch(vec![
//!     record! {"id" => "a", "score" => 1},
//!     record! {"id" => "b", "score" => 2.5, "tags" => vec!["x", "y"]},
//! ]).unwrap();
//! assert_eq!(offsets, 0..2);
//! bucket.flush().await.unwrap();
//! let back = bucket.read(1, 10).await.unwrap();
//! assert_eq!(back[0]["tags"], persisting_codec::Value::from(vec!["x", "y"]));
//! # });
//! ```
#![deny(missing_docs)]

mod bucket;
mod buffer;
mod committed;
mod convert;
mod error;
mod evolve;
mod flush;
mod groups;
mod location;
mod log_start;
mod options;
mod read;
mod retention;
mod schema;
mod store;
mod threads;

pub use arrow::record_batch::RecordBatch;
pub use bucket::{Admitted, DATASET_DIR, FileCheck, FlushReport, LanceBucket, LanceStats, LogSize};
pub use convert::{Cell, TEXT_BLOCK_BYTES, TEXT_BLOCK_ROWS, row_checksum};
pub use error::{Error, Result};
pub use groups::{
    COMPACT_AT, GROUP_NAME_BYTES_MAX, GROUPS_DIR, GroupOffset, Groups, validate_group,
};
pub use location::Location;
pub use log_start::{LOG_START_BEFORE_KEY, LOG_START_KEY};
pub use options::{
    ColumnCompression, LEASE_TERM_MIN, LanceOptions, Retention, TARGET_ROWS_PER_FRAGMENT_MIN,
};
pub use read::rows::{Fields, Row, Rows};
pub use retention::{
    SNAPSHOT_NAME_BYTES_MAX, Snapshot, SnapshotReader, TrimReport, validate_snapshot,
};
pub use schema::{
    CHECKSUM_COLUMN, ColType, ENCODING_CODEC_V1, ENCODING_KEY, LAYOUT_COLUMN, REGISTRY_KEY, Scalar,
    is_internal_column,
};
pub use store::lease::{LEASE_DIR, RENEW_GAP, writer_name};
pub use store::object::StoreCalls;
pub use store::seals::{SUMS_FILE, sealed_files};
pub use store::{
    Disk, ManifestFault, Op, RealDisk, STORE_TIMEOUTS, SimCrash, SimDisk, SyncKind, list_dirs,
};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

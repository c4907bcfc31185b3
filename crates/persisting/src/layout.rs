//! The names a bucket uses in its local directory (the storage path, or `wal_dir`
//! for data at a URI): its WAL, its writer's lock and, for data at a URI, the name
//! its writer holds the lease under. The on-disk layout is described in
//! `docs/architecture.md`.

/// Directory of the WAL inside a bucket's storage path.
pub const WAL_DIR: &str = "wal";

/// Lock file inside a bucket's storage path, held by the one handle that writes it.
pub const LOCK_FILE: &str = "LOCK";

/// The file in a bucket's local directory naming its writer for the lease of data
/// at a URI.
pub const WRITER_FILE: &str = "WRITER";

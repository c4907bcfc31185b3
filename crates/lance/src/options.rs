//! Options of a bucket, checked when it opens.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// Compression Lance applies to the data columns (set at creation and for each column
/// added later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColumnCompression {
    /// Lance's default encodings.
    #[default]
    Default,
    /// zstd, at a level (Lance's default level when `None`).
    Zstd(Option<i32>),
    /// lz4.
    Lz4,
}

impl FromStr for ColumnCompression {
    type Err = Error;
    /// `none`, `zstd`, `zstd:<level>`, `lz4`. `snappy` is refused: Lance offers no
    /// snappy column compression (Persisting applies snappy to the WAL only).
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let invalid = |reason: &str| Error::InvalidOption {
            name: "compression",
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        match lower.as_str() {
            "" | "none" => Ok(Self::Default),
            "zstd" => Ok(Self::Zstd(None)),
            "lz4" => Ok(Self::Lz4),
            "snappy" => Err(invalid(
                "Lance has no snappy column compression; snappy applies to the WAL only",
            )),
            other => match other.strip_prefix("zstd:").map(str::parse::<i32>) {
                Some(Ok(level)) if (1..=22).contains(&level) => Ok(Self::Zstd(Some(level))),
                _ => Err(invalid("valid values are none, zstd, zstd:<1..=22>, lz4")),
            },
        }
    }
}

impl std::fmt::Display for ColumnCompression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("none"),
            Self::Zstd(None) => f.write_str("zstd"),
            Self::Zstd(Some(l)) => write!(f, "zstd:{l}"),
            Self::Lz4 => f.write_str("lz4"),
        }
    }
}

/// The shortest lease term: renewals start at half of it, and a term shorter than a
/// request to the store would expire while it is renewed.
pub const LEASE_TERM_MIN: Duration = Duration::from_millis(10);

/// The fewest rows per fragment compaction may aim for: a fragment is small below a
/// thirty-second of it, and that must be at least one row.
pub const TARGET_ROWS_PER_FRAGMENT_MIN: usize = 32;

/// Options of a bucket. The facade's options (`persisting::PersistingOptions`) take
/// their defaults from [`LanceOptions::default`] and their bounds from
/// [`LanceOptions::validate`], and convert into these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanceOptions {
    /// [`LanceBucket::append`] starts a flush (in the background) once this many
    /// records are buffered (default 1000; 0: never by count, only by
    /// `flush_interval`, an owner's log size, or an explicit flush).
    pub flush_threshold: usize,
    /// Column compression (default: Lance's own encodings).
    pub column_compression: ColumnCompression,
    /// A flush that leaves more small fragments than this compacts them (default 64;
    /// 0 disables automatic compaction). A fragment is small below
    /// `target_rows_per_fragment / 32` rows: flushes of that size or more make
    /// fragments reads do not suffer from, and are not rewritten on their own (a flush
    /// of at least twice that is written in parts of that size or more at once, one
    /// per core, each its own fragment).
    pub compact_fragments_max: usize,
    /// Rows per fragment that compaction aims for (default 1,048,576; at least
    /// [`TARGET_ROWS_PER_FRAGMENT_MIN`]).
    pub target_rows_per_fragment: usize,
    /// Dataset versions older than this are removed after a compaction (default 10
    /// minutes). Readers pinned to a removed version fail, so keep it above the
    /// longest read.
    pub version_retention: Duration,
    /// Options of the object store holding a remote dataset (`s3://…`), as pylance
    /// names them (`aws_endpoint`, `aws_region`, `aws_access_key_id`, …); Lance also
    /// reads the `AWS_*` environment variables. Empty by default.
    pub storage_options: HashMap<String, String>,
    /// Term of the writer's lease on a remote dataset (default 30 s; at least
    /// [`LEASE_TERM_MIN`]): renewed once
    /// half of it has passed while the writer writes; another writer may take the
    /// bucket over once it has expired. Keep it well above the clock skew between
    /// machines. Local buckets use a file lock instead (the facade's).
    pub lease_term: Duration,
    /// The name this writer holds the lease under (default: host, process and a
    /// random part). A writer that opens with the name in the lease takes it back at
    /// once, without waiting for it to expire: give the same name only to what is the
    /// same writer (the facade names it after its WAL's directory).
    pub writer_id: Option<String>,
    /// A flush is also due once the oldest record no flush holds has waited this
    /// long (default none): with a large `flush_threshold`, a busy bucket at a URI
    /// makes a few requests per interval rather than per `flush_threshold` records,
    /// and a quiet one still reaches the object store (and remote readers) in time.
    pub flush_interval: Option<Duration>,
    /// What retention keeps (nothing is removed by default; see [`Retention`]).
    pub retention: Retention,
}

/// What retention keeps of a bucket: records leave from the front only, whole
/// fragments at a time (a fragment that straddles the cut stays whole, so at least
/// what a policy asks is kept), behind a durable log start; every record left keeps
/// its offset. Each policy set says what may go; the cut is the furthest any allows,
/// held back by `keep_from` (the lowest offset a consumer group has not committed
/// past) unless `ignores_groups`. All off by default: nothing leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at least the last this many records.
    pub records: Option<u64>,
    /// Keep at most about this many bytes of data files: the oldest fragments go
    /// while the dataset's files exceed it (the newest fragment always stays).
    pub bytes: Option<u64>,
    /// Remove fragments all of whose data files were written longer ago than this
    /// (a compaction rewrites files, so it makes their records younger: they stay
    /// longer, never shorter).
    pub age: Option<Duration>,
    /// Remove records consumer groups have not committed past too.
    pub ignores_groups: bool,
}

impl Retention {
    /// Whether any policy is set.
    pub fn is_set(&self) -> bool {
        self.records.is_some() || self.bytes.is_some() || self.age.is_some()
    }
}

impl Default for LanceOptions {
    fn default() -> Self {
        Self {
            flush_threshold: 1000,
            column_compression: ColumnCompression::Default,
            compact_fragments_max: 64,
            target_rows_per_fragment: 1 << 20,
            version_retention: Duration::from_secs(600),
            storage_options: HashMap::new(),
            lease_term: Duration::from_secs(30),
            writer_id: None,
            flush_interval: None,
            retention: Retention::default(),
        }
    }
}

impl LanceOptions {
    /// Checks every option, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.target_rows_per_fragment < TARGET_ROWS_PER_FRAGMENT_MIN {
            return Err(Error::InvalidOption {
                name: "target_rows_per_fragment",
                value: self.target_rows_per_fragment.to_string(),
                reason: format!("must be at least {TARGET_ROWS_PER_FRAGMENT_MIN}"),
            });
        }
        if chrono::Duration::from_std(self.version_retention).is_err() {
            return Err(Error::InvalidOption {
                name: "version_retention",
                value: format!("{} s", self.version_retention.as_secs_f64()),
                reason: "is too long".to_owned(),
            });
        }
        if self.lease_term < LEASE_TERM_MIN {
            return Err(Error::InvalidOption {
                name: "lease_term",
                value: format!("{} s", self.lease_term.as_secs_f64()),
                reason: format!("must be at least {} s", LEASE_TERM_MIN.as_secs_f64()),
            });
        }
        if let Some(key) = self.storage_options.keys().find(|k| k.trim().is_empty()) {
            return Err(Error::InvalidOption {
                name: "storage_options",
                value: format!("{key:?}"),
                reason: "keys must not be empty".to_owned(),
            });
        }
        Ok(())
    }
}
